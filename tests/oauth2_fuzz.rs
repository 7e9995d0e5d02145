//! The fuzzing harness of `fuzz/` run under `cargo test`, with proptest:
//! no answer of a token endpoint makes the OAuth2 source panic or show the
//! secret, and no `Retry-After` overflows. Then the property the harness
//! cannot check with a fixed secret: a random token and secret, embedded in
//! random bodies and encodings, never appear in an error.

use std::time::Duration;

use base64::Engine as _;
use proptest::prelude::*;
use tower_bearer::oauth2::ClientCredentials;
use tower_bearer::TokenSource;

#[path = "../fuzz/harness.rs"]
mod harness;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_bytes_as_an_answer(data in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = harness::token_response(&harness::Answer::from_bytes(&data));
    }

    #[test]
    fn any_json_ish_answer(
        status in prop::sample::select(vec![200u16, 400, 401, 429, 503]),
        body in json_ish(),
    ) {
        let answer = harness::Answer {
            status,
            content_type: Some(b"application/json".to_vec()),
            retry_after: None,
            body: body.into_bytes(),
        };
        let _ = harness::token_response(&answer);
    }

    #[test]
    fn any_retry_after(value in "[ -~]{0,40}") {
        let _ = harness::retry_after(value.as_bytes());
    }

    #[test]
    fn any_http_date(
        weekday in "[A-Z][a-z]{2}",
        day in 0u64..100,
        month in prop::sample::select(vec!["Jan", "Feb", "Nov", "Dec", "Xyz"]),
        year in prop_oneof![0u64..10_000, any::<u64>()],
        hour in 0u64..100,
        minute in 0u64..100,
        second in 0u64..100,
    ) {
        let date = format!("{weekday}, {day:02} {month} {year:04} {hour:02}:{minute:02}:{second:02} GMT");
        let _ = harness::retry_after(date.as_bytes());
    }

    #[test]
    fn a_random_token_and_secret_never_appear_in_an_error(
        secret in "[a-zA-Z0-9 /+=%&:_\"\\\\.~-]{8,24}",
        token in "[a-zA-Z0-9/+=_\"\\\\.~-]{16,40}",
        field in "[a-zA-Z_]{1,12}",
        template in 0usize..TEMPLATES,
        status in prop::sample::select(vec![200u16, 400, 401, 500, 503]),
    ) {
        let encoded = form_encode(&secret);
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{encoded}", form_encode("id")));
        let raw_basic = base64::engine::general_purpose::STANDARD.encode(format!("id:{secret}"));
        let body = body(template, &Embedded { secret: &secret, encoded: &encoded, basic: &basic, raw_basic: &raw_basic, token: &token, field: &field });
        let source = ClientCredentials::new("https://idp.example.com/token", "id", secret.clone())
            .http_client(answering(status, body.clone()));
        let Err(error) = block_on(source.fetch()) else {
            return Ok(());
        };
        let shown = harness::shown(&error);
        for hidden in [&secret, &token, &encoded, &basic, &raw_basic] {
            prop_assert!(!shown.contains(hidden.as_str()), "{hidden:?} in {shown:?}, from {body:?}");
        }
    }
}

#[test]
fn a_year_that_overflows_is_not_a_date() {
    assert_eq!(
        harness::retry_after(b"Sun, 06 Nov 999999999999 08:49:37 GMT"),
        None
    );
    assert_eq!(
        harness::retry_after(b"Fri, 31 Dec 9999 23:59:59 GMT").map(|d| d > Duration::ZERO),
        Some(true)
    );
    assert_eq!(
        harness::retry_after(b"99999999999999999999999"),
        Some(Duration::from_secs(u64::MAX))
    );
}

/// Text that is often JSON, around the fields a token response has.
fn json_ish() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        Just("1e400".to_owned()),
        Just("-0.0".to_owned()),
        "[0-9]{1,30}".prop_map(|digits| format!("\"{digits}\"")),
        "[ -~]{0,12}".prop_map(|text| format!("{text:?}")),
        (any::<i64>(), "[a-z]{0,4}").prop_map(|(exp, _)| jwt(&exp.to_string())),
        prop_oneof![Just("1e20"), Just("-1e20"), Just("1e308"), Just("0")].prop_map(jwt),
    ];
    let key = prop::sample::select(vec![
        "access_token",
        "token_type",
        "expires_in",
        "error",
        "error_description",
        "error_uri",
        "refresh_token",
        "scope",
    ]);
    proptest::collection::vec((key, value), 0..6).prop_map(|fields| {
        let fields: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", fields.join(","))
    })
}

fn jwt(exp: &str) -> String {
    let payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{{\"exp\":{exp}}}"));
    format!("\"h.{payload}.s\"")
}

struct Embedded<'a> {
    secret: &'a str,
    encoded: &'a str,
    basic: &'a str,
    raw_basic: &'a str,
    token: &'a str,
    field: &'a str,
}

const TEMPLATES: usize = 9;

/// A body that carries the token or the secret in one way or another.
fn body(template: usize, e: &Embedded<'_>) -> String {
    let token = json_escape(e.token);
    let secret = json_escape(e.secret);
    let field = e.field;
    match template {
        // An error that echoes the secret, raw and with every escape.
        0 => format!(
            r#"{{"error":"invalid_client","error_description":"{secret} {} {}"}}"#,
            escape_all(e.secret),
            json_escape(e.encoded)
        ),
        // An error that echoes the request's Basic header.
        1 => format!(
            r#"{{"error":"invalid_request","error_description":"Authorization: Basic {} or {}"}}"#,
            e.basic, e.raw_basic
        ),
        // A token under any name, echoed in every quoted field.
        2 => format!(
            r#"{{"{field}":"{token}","error":"{token}","error_description":"{token}","error_uri":"{token}"}}"#
        ),
        // A token that is not a bearer token, in a token type too.
        3 => format!(r#"{{"access_token":"{token}","token_type":"{token}"}}"#),
        // Form-encoded, as some servers answer.
        4 => format!(
            "access_token={}&token_type=bearer&client_secret={}",
            form_encode(e.token),
            e.encoded
        ),
        // Plain text.
        5 => format!("token {} secret {} basic {}", e.token, e.secret, e.basic),
        // Truncated JSON, with the field spelled otherwise.
        6 => format!(r#"{{"accessToken":"{token}","access\u005ftoken":"{token}"#),
        // Well-formed but not a token response.
        7 => format!(r#"{{"{field}":"{token}","token_type":"Bearer","expires_in":"{secret}"}}"#),
        // A token value with an escaped quote, cut short.
        _ => format!(r#"{{"access_token":"ab\"{token}"#),
    }
}

fn json_escape(text: &str) -> String {
    let quoted = serde_json::to_string(text).unwrap();
    quoted[1..quoted.len() - 1].to_owned()
}

/// Every character as a `\uXXXX` escape, and `/` as `\/`.
fn escape_all(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '/' => "\\/".to_owned(),
            c if (c as u32) < 0x10000 => format!("\\u{:04x}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

fn form_encode(text: &str) -> String {
    let mut encoded = String::new();
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => {
                encoded.push(char::from(byte))
            }
            b' ' => encoded.push('+'),
            _ => encoded.push_str(&format!("%{byte:02X}")),
        }
    }
    encoded
}

type Answered = http::Response<http_body_util::Full<bytes::Bytes>>;

fn answering(
    status: u16,
    body: String,
) -> impl tower::Service<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    Response = Answered,
    Error = std::convert::Infallible,
    Future = std::future::Ready<Result<Answered, std::convert::Infallible>>,
> + Clone {
    tower::service_fn(move |_| {
        let mut response = http::Response::new(http_body_util::Full::from(body.clone()));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    })
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}
