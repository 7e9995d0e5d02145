//! Reading a token endpoint's answer (RFC 6749 §5.1 and §5.2).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderMap, StatusCode};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::error::{Error, ErrorResponse};
use crate::Token;

/// The largest response body read; a bigger one is an error.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// How many characters of a server's text an error quotes.
const EXCERPT_CHARS: usize = 120;

/// What the caller knew when it sent the request.
pub(super) struct Context<'a> {
    /// When the request started, on tokio's clock: expiry counts from here.
    pub(super) started: Instant,
    /// The same moment on the wall clock, to read a JWT's `exp`.
    pub(super) started_wall: SystemTime,
    /// The lifetime of a token with neither `expires_in` nor a JWT `exp`.
    pub(super) default_lifetime: Duration,
    /// Never quoted in an error.
    pub(super) secret: &'a str,
}

/// The token in a response, or why there is none.
pub(super) fn token(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    context: &Context<'_>,
) -> Result<Token, Error> {
    let json = serde_json::from_slice::<Value>(body);
    if !status.is_success() {
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(headers, context.started_wall)
            }
            _ => None,
        };
        let error = match json
            .ok()
            .as_ref()
            .and_then(|json| error_response(json, context.secret))
        {
            Some(response) => Error::rejected(status, response),
            None => Error::bad_status(status, excerpt(body, context.secret)),
        };
        return Err(error.with_retry_after(retry_after));
    }
    let json = match json {
        Ok(Value::Object(object)) => object,
        Ok(other) => {
            return Err(Error::invalid_response(format!(
                "expected a JSON object, got {}",
                type_name(&other)
            )))
        }
        Err(error) => {
            return Err(Error::invalid_response(format!(
                "not JSON ({error}): {:?}",
                excerpt(body, context.secret)
            )))
        }
    };
    // Some servers answer 200 with an error body.
    if let Some(response) = error_response_in(&json, context.secret) {
        return Err(Error::rejected(status, response));
    }

    let access_token = match json.get("access_token") {
        Some(Value::String(token)) if !token.is_empty() => token,
        Some(Value::String(_)) => return Err(Error::invalid_response("access_token is empty")),
        Some(other) => {
            return Err(Error::invalid_response(format!(
                "access_token is {}, not a string",
                type_name(other)
            )))
        }
        None => return Err(Error::invalid_response("no access_token")),
    };
    match json.get("token_type") {
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => {}
        Some(Value::String(kind)) => {
            return Err(Error::unsupported_token_type(safe_text(
                kind,
                context.secret,
                40,
            )))
        }
        Some(other) => {
            return Err(Error::invalid_response(format!(
                "token_type is {}, not a string",
                type_name(other)
            )))
        }
        None => return Err(Error::invalid_response("no token_type")),
    }

    let lifetime = match json.get("expires_in") {
        None | Some(Value::Null) => {
            jwt_lifetime(access_token, context.started_wall).unwrap_or(context.default_lifetime)
        }
        Some(value) => expires_in(value)?,
    };
    let token = Token::new(access_token.as_str());
    Ok(match context.started.checked_add(lifetime) {
        Some(expiry) => token.expires_at(expiry),
        // Further off than the clock can count: as good as never.
        None => token,
    })
}

/// `expires_in` as a number of seconds, or as a string of one.
fn expires_in(value: &Value) -> Result<Duration, Error> {
    let seconds = match value {
        Value::Number(number) => number.as_u64().map(Duration::from_secs).or_else(|| {
            let seconds = number.as_f64()?;
            Duration::try_from_secs_f64(seconds).ok()
        }),
        Value::String(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            // All digits, so only overflow can fail: as good as never.
            Some(Duration::from_secs(text.parse().unwrap_or(u64::MAX)))
        }
        _ => None,
    };
    seconds.ok_or_else(|| {
        let shown = match value {
            Value::String(text) => format!("{:?}", safe_text(text, "", 40)),
            other => type_name(other).to_owned(),
        };
        Error::invalid_response(format!(
            "expires_in is {shown}, not a non-negative number of seconds"
        ))
    })
}

/// The time left until a JWT's `exp` claim (decoded, not verified), if the
/// token is a JWT with one.
fn jwt_lifetime(token: &str, now: SystemTime) -> Option<Duration> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims = serde_json::from_slice::<Value>(&payload).ok()?;
    let exp = claims.get("exp")?.as_f64()?;
    let now = now.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
    // An `exp` in the past is a token that has already expired.
    Some(Duration::try_from_secs_f64(exp - now).unwrap_or(Duration::ZERO))
}

fn error_response(json: &Value, secret: &str) -> Option<ErrorResponse> {
    error_response_in(json.as_object()?, secret)
}

fn error_response_in(json: &Map<String, Value>, secret: &str) -> Option<ErrorResponse> {
    let text = |key: &str, max: usize| match json.get(key) {
        Some(Value::String(text)) => Some(safe_text(text, secret, max)),
        _ => None,
    };
    Some(ErrorResponse {
        error: text("error", 80)?,
        description: text("error_description", 300),
        uri: text("error_uri", 300),
    })
}

/// `Retry-After` as delta-seconds or an IMF-fixdate, from `now`.
fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the format
/// RFC 9110 requires senders to use; the two obsolete formats are not read.
fn http_date(text: &str) -> Option<SystemTime> {
    let (_weekday, rest) = text.split_once(", ")?;
    let mut fields = rest.split(' ');
    let day: u32 = fields.next()?.parse().ok()?;
    let month = fields.next()?;
    let year: i64 = fields.next()?.parse().ok()?;
    let time = fields.next()?;
    if fields.next()? != "GMT" || fields.next().is_some() {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let mut clock = time.split(':').map(|field| field.parse::<u64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if clock.next().is_some() || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60
    {
        return None;
    }
    let days = u64::try_from(days_from_civil(year, month, i64::from(day))).ok()?;
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The start of a body, safe to quote in an error.
pub(super) fn excerpt(body: &[u8], secret: &str) -> String {
    // Enough bytes for the excerpt and a secret that straddles its end.
    let end = body.len().min(EXCERPT_CHARS * 4 + secret.len() * 3 + 64);
    safe_text(
        &String::from_utf8_lossy(&body[..end]),
        secret,
        EXCERPT_CHARS,
    )
}

/// `text` with the secret and any token values masked, control characters
/// replaced by spaces, and cut to `max_chars` characters.
pub(super) fn safe_text(text: &str, secret: &str, max_chars: usize) -> String {
    let mut text = text.to_owned();
    if !secret.is_empty() {
        text = text.replace(secret, "<redacted>");
        let encoded = super::client_credentials::form_encode(secret);
        if encoded != secret {
            text = text.replace(&encoded, "<redacted>");
        }
    }
    for key in ["\"access_token\"", "\"refresh_token\"", "\"id_token\""] {
        text = mask_json_string_after(&text, key);
    }
    let mut safe: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(max_chars)
        .collect();
    if text.chars().nth(max_chars).is_some() {
        safe.push('…');
    }
    safe
}

/// Replaces the string value that follows each `"key":` (even cut short) by
/// `<redacted>`.
fn mask_json_string_after(text: &str, key: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(key) {
        let (before, after_key) = rest.split_at(at + key.len());
        out.push_str(before);
        let value = after_key.trim_start();
        let Some(value) = value.strip_prefix(':').map(str::trim_start) else {
            rest = after_key;
            continue;
        };
        let Some(value) = value.strip_prefix('"') else {
            rest = after_key;
            continue;
        };
        out.push_str(":\"<redacted>");
        match value.find('"') {
            Some(end) => rest = &value[end..],
            None => rest = "",
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::ErrorKind;

    const SECRET: &str = "s3cret/+pass";

    fn context() -> Context<'static> {
        Context {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            default_lifetime: Duration::from_secs(600),
            secret: SECRET,
        }
    }

    fn parse(status: u16, body: &str) -> Result<Token, Error> {
        parse_with(status, &HeaderMap::new(), body, &context())
    }

    fn parse_with(
        status: u16,
        headers: &HeaderMap,
        body: &str,
        context: &Context<'_>,
    ) -> Result<Token, Error> {
        token(
            StatusCode::from_u16(status).unwrap(),
            headers,
            body.as_bytes(),
            context,
        )
    }

    fn lifetime(token: &Token, context: &Context<'_>) -> Option<Duration> {
        token.expiry().map(|at| at - context.started)
    }

    #[test]
    fn a_bearer_token_with_expires_in_as_a_number_or_a_string() {
        let context = context();
        for body in [
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":3600}"#,
            r#"{"access_token":"abc","token_type":"bearer","expires_in":"3600"}"#,
            r#"{"access_token":"abc","token_type":"BEARER","expires_in":3600.0,"scope":"a b"}"#,
        ] {
            let token = parse_with(200, &HeaderMap::new(), body, &context).unwrap();
            assert_eq!(token.secret(), "abc");
            assert_eq!(
                lifetime(&token, &context),
                Some(Duration::from_secs(3600)),
                "{body}"
            );
        }
    }

    #[test]
    fn an_unsupported_expires_in_is_a_clear_error() {
        for (value, shown) in [
            (r#""1h""#, r#""1h""#),
            ("-5", "a number"),
            ("true", "a boolean"),
            (r#"{"s":1}"#, "an object"),
            (r#""""#, r#""""#),
        ] {
            let body =
                format!(r#"{{"access_token":"abc","token_type":"Bearer","expires_in":{value}}}"#);
            let error = parse(200, &body).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidResponse, "{value}");
            assert_eq!(
                error.to_string(),
                format!("invalid token response: expires_in is {shown}, not a non-negative number of seconds")
            );
        }
    }

    #[test]
    fn a_huge_expires_in_never_expires_instead_of_overflowing() {
        let token =
            parse(200, r#"{"access_token":"abc","token_type":"Bearer","expires_in":"99999999999999999999999"}"#)
                .unwrap();
        assert_eq!(token.expiry(), None);
        let token = parse(
            200,
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":1e300}"#,
        )
        .unwrap_err();
        assert_eq!(token.kind(), ErrorKind::InvalidResponse);
    }

    #[test]
    fn without_expires_in_the_jwt_exp_then_the_default_lifetime() {
        let context = context();
        let now = context
            .started_wall
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = format!(r#"{{"sub":"svc","exp":{}}}"#, now + 900);
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.c2lnbmF0dXJl");
        let body = format!(r#"{{"access_token":"{jwt}","token_type":"Bearer"}}"#);
        let token = parse_with(200, &HeaderMap::new(), &body, &context).unwrap();
        let left = lifetime(&token, &context).unwrap();
        // `exp` has whole seconds; the wall clock does not.
        assert!(
            left > Duration::from_secs(899) && left <= Duration::from_secs(900),
            "{left:?}"
        );

        let opaque = r#"{"access_token":"opaque","token_type":"Bearer","expires_in":null}"#;
        let token = parse_with(200, &HeaderMap::new(), opaque, &context).unwrap();
        assert_eq!(lifetime(&token, &context), Some(Duration::from_secs(600)));

        // A JWT whose payload is not JSON also gets the default.
        let body = r#"{"access_token":"a.b.c","token_type":"Bearer"}"#;
        let token = parse_with(200, &HeaderMap::new(), body, &context).unwrap();
        assert_eq!(lifetime(&token, &context), Some(Duration::from_secs(600)));
    }

    #[test]
    fn a_jwt_that_has_expired_gives_an_expired_token() {
        let context = context();
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"exp":1000}"#);
        let body = format!(r#"{{"access_token":"h.{payload}.s","token_type":"Bearer"}}"#);
        let token = parse_with(200, &HeaderMap::new(), &body, &context).unwrap();
        assert_eq!(lifetime(&token, &context), Some(Duration::ZERO));
    }

    #[test]
    fn a_token_that_is_not_bearer_is_an_error_that_does_not_quote_the_token() {
        let error = parse(200, r#"{"access_token":"tok-123","token_type":"mac"}"#).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::UnsupportedTokenType);
        assert!(error.is_permanent());
        assert_eq!(
            error.to_string(),
            r#"token endpoint issued a token of type "mac", not a bearer token"#
        );
        let error = parse(200, r#"{"access_token":"tok-123"}"#).unwrap_err();
        assert_eq!(error.to_string(), "invalid token response: no token_type");
        assert!(!format!("{error} {error:?}").contains("tok-123"));
    }

    #[test]
    fn missing_or_empty_access_token() {
        let error = parse(200, r#"{"token_type":"Bearer"}"#).unwrap_err();
        assert_eq!(error.to_string(), "invalid token response: no access_token");
        let error = parse(200, r#"{"access_token":"","token_type":"Bearer"}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid token response: access_token is empty"
        );
        let error = parse(200, r#"["access_token"]"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid token response: expected a JSON object, got an array"
        );
    }

    #[test]
    fn an_error_response_is_parsed() {
        let body = r#"{"error":"invalid_client","error_description":"Client authentication failed","error_uri":"https://idp.example/errors#client"}"#;
        let error = parse(401, body).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert_eq!(error.status(), Some(StatusCode::UNAUTHORIZED));
        let response = error.response().unwrap();
        assert_eq!(response.error(), "invalid_client");
        assert_eq!(response.description(), Some("Client authentication failed"));
        assert_eq!(response.uri(), Some("https://idp.example/errors#client"));
        assert!(error.is_permanent());

        // A 200 carrying an error is an error too.
        let error = parse(200, r#"{"error":"invalid_scope"}"#).unwrap_err();
        assert_eq!(error.response().unwrap().error(), "invalid_scope");
    }

    #[test]
    fn an_html_error_page_is_quoted_briefly_and_safely() {
        let page = format!(
            "<html>\r\n<body>\u{1b}[31mBad Gateway {SECRET} {}</body></html>",
            "x".repeat(10_000)
        );
        let error = parse(502, &page).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Status);
        assert!(!error.is_permanent());
        let text = error.to_string();
        assert!(text.starts_with(r#"token endpoint answered 502 Bad Gateway: "<html>  <body> [31mBad Gateway <redacted> xxx"#), "{text}");
        assert!(text.chars().count() < 200, "{text}");
        assert!(!text.contains(SECRET));
        assert!(!text.contains('\u{1b}') && !text.contains('\n'));
    }

    #[test]
    fn truncated_json_is_quoted_without_the_token() {
        let error = parse(200, r#"{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6Ik"#).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidResponse);
        let text = error.to_string();
        assert!(
            text.starts_with("invalid token response: not JSON (EOF while parsing a string"),
            "{text}"
        );
        assert!(
            text.ends_with(r#"{\"access_token\":\"<redacted>""#),
            "{text}"
        );
        assert!(!text.contains("eyJhbGci"));
    }

    #[test]
    fn the_secret_is_masked_raw_and_form_encoded() {
        let encoded = super::super::client_credentials::form_encode(SECRET);
        assert_ne!(encoded, SECRET);
        let text = safe_text(&format!("a {SECRET} b {encoded} c"), SECRET, 100);
        assert_eq!(text, "a <redacted> b <redacted> c");
        let body =
            format!(r#"{{"error":"invalid_client","error_description":"bad secret {SECRET}"}}"#);
        let error = parse(400, &body).unwrap_err();
        assert_eq!(
            error.response().unwrap().description(),
            Some("bad secret <redacted>")
        );
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date_on_429_and_503_only() {
        let context = context();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        for status in [429, 503] {
            let error = parse_with(status, &headers, "slow down", &context).unwrap_err();
            assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
        }
        let error = parse_with(500, &headers, "", &context).unwrap_err();
        assert_eq!(error.retry_after(), None);

        let now = UNIX_EPOCH + Duration::from_secs(784_111_717); // Sun, 06 Nov 1994 08:48:37 GMT
        assert_eq!(
            http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(now + Duration::from_secs(60))
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(60)));
        // A date in the past means now.
        assert_eq!(
            retry_after(&headers, now + Duration::from_secs(3600)),
            Some(Duration::ZERO)
        );
        for bad in [
            "soon",
            "-1",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun, 06 Nov 1994 25:49:37 GMT",
            "",
        ] {
            headers.insert(http::header::RETRY_AFTER, bad.parse().unwrap());
            assert_eq!(retry_after(&headers, now), None, "{bad}");
        }
    }

    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 26), 20_783);
    }
}
