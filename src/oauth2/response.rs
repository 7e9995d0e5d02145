//! Reading a token endpoint's answer (RFC 6749 §5.1 and §5.2).

use std::fmt;
use std::time::{Duration, SystemTime};

use http::header::CONTENT_TYPE;
use http::{HeaderMap, StatusCode};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};
use tokio::time::Instant;

use super::error::{Error, ErrorResponse};
use super::redact::{self, Redactor};
use super::retry_after::retry_after;
use crate::jwt::{self, lifetime_from_secs_f64};
use crate::Token;

/// The largest response body read; a bigger one is an error.
pub(super) const MAX_BODY: usize = 64 * 1024;

/// The longest lifetime a token is given: `ClientCredentials::MAX_LIFETIME`.
pub(super) use crate::jwt::MAX_LIFETIME;

/// What the caller knew when it sent the request.
pub(super) struct Context<'a> {
    /// When the request started, on tokio's clock: expiry counts from here.
    pub(super) started: Instant,
    /// The same moment on the wall clock, to read a JWT's `exp`.
    pub(super) started_wall: SystemTime,
    /// The lifetime of a token with neither `expires_in` nor a JWT `exp`.
    pub(super) default_lifetime: Duration,
    /// Masked with the secret when it is part of the Basic pair.
    pub(super) client_id: &'a str,
    /// Never quoted in an error.
    pub(super) secret: &'a str,
    /// Never quoted in an error either: assertions, a subject token.
    pub(super) masked: &'a [zeroize::Zeroizing<String>],
    /// The DPoP binding the request was made with: a `DPoP` token type is
    /// accepted, and binds the token to it.
    #[cfg(feature = "dpop")]
    pub(super) binding: Option<&'a crate::dpop::Binding>,
}

/// The token in a response, or why there is none.
pub(super) fn token(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    context: &Context<'_>,
) -> Result<Token, Error> {
    let json = parse(body);
    let redactor = || {
        let redactor = Redactor::new(context.client_id, context.secret).masking(context.masked);
        match &json {
            Ok(object) => redactor.with_values_of(object),
            Err(_) => redactor,
        }
    };
    if !status.is_success() {
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(headers, context.started_wall)
            }
            _ => None,
        };
        let redactor = redactor();
        let error = match json
            .as_ref()
            .ok()
            .and_then(|json| error_response(json, &redactor))
        {
            Some(response) => Error::rejected(status, response),
            None => Error::bad_status(status, describe_body(headers, body, &redactor)),
        };
        return Err(error.with_retry_after(retry_after));
    }
    let json = match &json {
        Ok(object) => object,
        Err(error) => {
            return Err(Error::invalid_response(format!(
                "{error}; {}",
                describe_body(headers, body, &redactor())
            )))
        }
    };
    // Some servers answer 200 with an error body.
    if let Some(response) = error_response(json, &redactor()) {
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
    #[cfg(feature = "dpop")]
    let mut bound_to = None;
    match json.get("token_type") {
        Some(Value::String(kind)) if kind.eq_ignore_ascii_case("bearer") => {}
        #[cfg(feature = "dpop")]
        Some(Value::String(kind))
            if kind.eq_ignore_ascii_case("dpop") && context.binding.is_some() =>
        {
            bound_to = context.binding;
        }
        Some(Value::String(kind)) => {
            return Err(Error::unsupported_token_type(token_type(kind, &redactor())))
        }
        Some(other) => {
            return Err(Error::invalid_response(format!(
                "token_type is {}, not a string",
                type_name(other)
            )))
        }
        None => return Err(Error::invalid_response("no token_type")),
    }

    // `expires_in` counts whole seconds from the issuer's clock, rounded
    // down: the token may expire up to a second early (a JWT `exp` is an
    // absolute time, and a default lifetime ours).
    let (lifetime, granularity) = match json.get("expires_in") {
        None | Some(Value::Null) => (
            jwt::lifetime(access_token, context.started_wall).unwrap_or(context.default_lifetime),
            Duration::ZERO,
        ),
        Some(value) => (expires_in(value)?, Duration::from_secs(1)),
    };
    let token = Token::new(access_token.as_str());
    #[cfg(feature = "dpop")]
    let token = match bound_to {
        Some(binding) => token.bind(binding),
        None => token,
    };
    Ok(match context.started.checked_add(lifetime) {
        Some(expiry) => token.expires_at(expiry).counted_in(granularity),
        // A default lifetime further off than the clock can count.
        None => token,
    })
}

/// Reads a refresh answer (`grant_type=refresh_token`): the token, as every grant reads it, and the
/// rotated refresh token, if any.
pub(super) fn token_and_refresh_token(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    context: &Context<'_>,
) -> Result<(Token, Option<zeroize::Zeroizing<String>>), Error> {
    let token = token(status, headers, body, context)?;
    // `response::token` has checked that it is one JSON object.
    let rotated = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut object)) => match object.remove("refresh_token") {
            Some(serde_json::Value::String(value)) if !value.is_empty() => {
                Some(zeroize::Zeroizing::new(value))
            }
            _ => None,
        },
        _ => None,
    };
    Ok((token, rotated))
}

/// Why a body is not a JSON object. Says where, never what: serde's own
/// messages can quote the body.
enum Malformed {
    NotJson { line: usize, column: usize },
    NotAnObject(&'static str),
    DuplicateKey,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotJson { line, column } => {
                write!(f, "not JSON (at line {line}, column {column})")
            }
            Self::NotAnObject(kind) => write!(f, "expected a JSON object, got {kind}"),
            Self::DuplicateKey => f.write_str("a key appears twice in the JSON object"),
        }
    }
}

/// The body as a JSON object with no key twice: a server that sends
/// `access_token` twice is not guessed at.
fn parse(body: &[u8]) -> Result<Map<String, Value>, Malformed> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(_)) => serde_json::from_slice::<Object>(body)
            .map(|object| object.0)
            .map_err(|_| Malformed::DuplicateKey),
        Ok(other) => Err(Malformed::NotAnObject(type_name(&other))),
        Err(error) => Err(Malformed::NotJson {
            line: error.line(),
            column: error.column(),
        }),
    }
}

/// A JSON object that fails on a key seen twice.
struct Object(Map<String, Value>);

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;

        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Object, A::Error> {
                let mut object = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    if object.contains_key(&key) {
                        return Err(serde::de::Error::custom("a key appears twice"));
                    }
                    let value = access.next_value()?;
                    object.insert(key, value);
                }
                Ok(Object(object))
            }
        }

        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// What an error says of a body it does not quote: its content type and
/// length.
fn describe_body(headers: &HeaderMap, body: &[u8], redactor: &Redactor) -> String {
    let content_type = headers
        .get(CONTENT_TYPE)
        .and_then(|value| redact::content_type(value.as_bytes(), redactor));
    match content_type {
        Some(content_type) => format!("{content_type}, {} bytes", body.len()),
        None => format!("{} bytes", body.len()),
    }
}

/// A `token_type` worth quoting: short, and of the characters token types
/// are made of. Anything else is not quoted at all.
fn token_type(kind: &str, redactor: &Redactor) -> Option<String> {
    let plausible = kind.len() <= 20
        && kind
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    plausible
        .then(|| redactor.quote(kind, 20))
        .filter(|quoted| !quoted.contains(redact::REDACTED))
}

/// `expires_in` as a number of seconds, or as a string of digits, at most
/// [`MAX_LIFETIME`].
fn expires_in(value: &Value) -> Result<Duration, Error> {
    let seconds = match value {
        Value::Number(number) => number.as_u64().map(lifetime_from_secs).or_else(|| {
            let seconds = number.as_f64()?;
            (seconds >= 0.0).then(|| lifetime_from_secs_f64(seconds))
        }),
        Value::String(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) => {
            // All digits, so only overflow can fail: longer than the cap.
            Some(lifetime_from_secs(text.parse().unwrap_or(u64::MAX)))
        }
        _ => None,
    };
    seconds.ok_or_else(|| {
        let shown = match value {
            Value::Number(_) => "a negative number",
            other => type_name(other),
        };
        Error::invalid_response(format!(
            "expires_in is {shown}, not a non-negative number of seconds"
        ))
    })
}

/// A lifetime of `seconds`, at most [`MAX_LIFETIME`].
fn lifetime_from_secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds).min(MAX_LIFETIME)
}

fn error_response(json: &Map<String, Value>, redactor: &Redactor) -> Option<ErrorResponse> {
    let text = |key: &str, max: usize| match json.get(key) {
        Some(Value::String(text)) => Some(redactor.quote(text, max)),
        _ => None,
    };
    Some(ErrorResponse {
        error: text("error", 80)?,
        description: text("error_description", 300),
        uri: text("error_uri", 300),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth2::ErrorKind;
    use base64::Engine as _;
    use http::header::CONTENT_TYPE;
    use std::time::UNIX_EPOCH;

    const SECRET: &str = "s3cret/+pass";

    fn context() -> Context<'static> {
        Context {
            started: Instant::now(),
            started_wall: SystemTime::now(),
            default_lifetime: Duration::from_secs(600),
            client_id: "my-client",
            secret: SECRET,
            masked: &[],
            #[cfg(feature = "dpop")]
            binding: None,
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

    /// Issue 9, scenario 9: an issuer floors its clock, so a token counted
    /// by `expires_in` may expire up to a second early; the cache is told.
    #[test]
    fn expires_in_is_counted_in_whole_seconds() {
        let counted = parse(
            200,
            r#"{"access_token":"abc","token_type":"Bearer","expires_in":2}"#,
        );
        assert_eq!(counted.unwrap().granularity(), Duration::from_secs(1));
        let default = parse(200, r#"{"access_token":"abc","token_type":"Bearer"}"#);
        assert_eq!(default.unwrap().granularity(), Duration::ZERO);
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
            (r#""1h""#, "a string"),
            ("-5", "a negative number"),
            ("-0.5", "a negative number"),
            ("true", "a boolean"),
            (r#"{"s":1}"#, "an object"),
            (r#""""#, "a string"),
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
    fn any_expiry_beyond_the_cap_is_the_cap_whatever_its_form() {
        let context = context();
        let now = context
            .started_wall
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let jwt = |exp: &str| {
            let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .encode(format!(r#"{{"exp":{exp}}}"#));
            format!("h.{payload}.s")
        };
        let beyond = MAX_LIFETIME.as_secs() + 1;
        for (token, expires_in) in [
            ("abc".to_owned(), r#""99999999999999999999999""#.to_owned()),
            ("abc".to_owned(), "99999999999999999999999".to_owned()),
            ("abc".to_owned(), "1e19".to_owned()),
            ("abc".to_owned(), "2e19".to_owned()),
            ("abc".to_owned(), "1e300".to_owned()),
            ("abc".to_owned(), "10000000000".to_owned()), // 317 years
            ("abc".to_owned(), beyond.to_string()),
            ("abc".to_owned(), format!("\"{beyond}\"")),
            (jwt("1e20"), "null".to_owned()),
            (jwt("1e300"), "null".to_owned()),
            (jwt(&(now + beyond + 10).to_string()), "null".to_owned()),
        ] {
            let body = format!(
                r#"{{"access_token":"{token}","token_type":"Bearer","expires_in":{expires_in}}}"#
            );
            let token = parse_with(200, &HeaderMap::new(), &body, &context).unwrap();
            assert_eq!(lifetime(&token, &context), Some(MAX_LIFETIME), "{body}");
        }
        // Just under the cap is kept as it is.
        let under = MAX_LIFETIME.as_secs() - 1;
        let body =
            format!(r#"{{"access_token":"abc","token_type":"Bearer","expires_in":{under}}}"#);
        let token = parse_with(200, &HeaderMap::new(), &body, &context).unwrap();
        assert_eq!(lifetime(&token, &context), Some(Duration::from_secs(under)));
    }

    #[test]
    fn a_duplicate_key_is_an_error() {
        let error = parse(
            200,
            r#"{"access_token":"first-token","token_type":"Bearer","access_token":"second-token"}"#,
        )
        .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidResponse);
        assert!(
            error
                .to_string()
                .starts_with("invalid token response: a key appears twice"),
            "{error}"
        );
        assert!(!format!("{error} {error:?}").contains("-token"));
        // Duplicates below the top level are not read, so not checked.
        assert!(parse(
            200,
            r#"{"access_token":"abc","token_type":"Bearer","x":{"a":1,"a":2}}"#
        )
        .is_ok());
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
            "invalid token response: expected a JSON object, got an array; 16 bytes"
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
    fn a_body_that_is_not_an_oauth2_error_is_described_not_quoted() {
        let page = format!(
            "<html><body>Bad Gateway {SECRET} {}</body></html>",
            "x".repeat(100)
        );
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, "text/html; charset=utf-8".parse().unwrap());
        let error = parse_with(502, &headers, &page, &context()).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Status);
        assert!(!error.is_permanent());
        assert_eq!(
            error.to_string(),
            format!(
                "token endpoint answered 502 Bad Gateway (text/html; charset=utf-8, {} bytes)",
                page.len()
            )
        );
        let error = parse(500, "").unwrap_err();
        assert_eq!(
            error.to_string(),
            "token endpoint answered 500 Internal Server Error (0 bytes)"
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_described_not_quoted() {
        for body in [
            r#"{"access_token":"eyJhbGciOiJSUzI1NiIsInR5cCI6Ik"#,
            "access_token=eyJhbGciOiJSUzI1NiIsInR5cCI6Ik&token_type=bearer",
            r#""eyJhbGciOiJSUzI1NiIsInR5cCI6Ik""#,
        ] {
            let error = parse(200, body).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::InvalidResponse);
            let text = format!("{error} {error:?}");
            assert!(!text.contains("eyJhbGci"), "{text}");
            assert!(text.contains(&format!("{} bytes", body.len())), "{text}");
        }
        let error = parse(200, r#"{"access_token":"eyJ"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid token response: not JSON (at line 1, column 20); 20 bytes"
        );
    }

    #[test]
    fn the_oauth2_fields_are_sanitized_and_masked() {
        let body = format!(
            r#"{{"error":"invalid_client\u202e","error_description":"bad secret {SECRET} for tok-0123456789 \u2066x","refresh_token":"tok-0123456789"}}"#
        );
        let error = parse(400, &body).unwrap_err();
        let response = error.response().unwrap();
        assert_eq!(response.error(), "invalid_client");
        assert_eq!(
            response.description(),
            Some("bad secret <redacted> for <redacted> x")
        );
        // JSON escapes are read before masking.
        let escaped = SECRET.replace('/', "\\/").replace('s', "\\u0073");
        let body = format!(r#"{{"error":"invalid_client","error_description":"{escaped}"}}"#);
        let error = parse(400, &body).unwrap_err();
        assert_eq!(error.response().unwrap().description(), Some("<redacted>"));
    }

    #[test]
    fn a_token_type_is_quoted_only_when_short_and_plain() {
        let error = parse(200, r#"{"access_token":"tok-123","token_type":"DPoP"}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            r#"token endpoint issued a token of type "DPoP", not a bearer token"#
        );
        for kind in ["tok-0123456789", r"a\u202eb", "a very long token type name"] {
            let body = format!(r#"{{"access_token":"tok-0123456789","token_type":"{kind}"}}"#);
            let error = parse(200, &body).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::UnsupportedTokenType);
            assert_eq!(
                error.to_string(),
                "token endpoint issued a token that is not a bearer token"
            );
        }
    }

    #[test]
    fn retry_after_is_read_on_429_and_503_only() {
        let context = context();
        let mut headers = HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
        for status in [429, 503] {
            let error = parse_with(status, &headers, "slow down", &context).unwrap_err();
            assert_eq!(error.retry_after(), Some(Duration::from_secs(120)));
        }
        let error = parse_with(500, &headers, "", &context).unwrap_err();
        assert_eq!(error.retry_after(), None);
    }
}
