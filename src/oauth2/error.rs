//! The error of a client-credentials fetch.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;

use crate::BoxError;

/// Why a token request to an OAuth2 token endpoint failed.
///
/// The cache hands it out as the [`source`](std::error::Error::source) of a
/// [`TokenError`](crate::TokenError) of kind
/// [`Fetch`](crate::TokenErrorKind::Fetch). Neither its `Display` nor its
/// `Debug` ever contains the client secret or a token: of what the server
/// sent, it quotes only the fields of an OAuth2 error response (sanitized
/// and masked, see [`ErrorResponse`]) and a short `token_type`; of any other
/// body, only its content type and length. See the
/// [module docs](super#errors).
///
/// ```
/// use tower_bearer::oauth2::{self, ErrorKind};
/// # fn check(error: &tower_bearer::TokenError) {
/// let cause = std::error::Error::source(error.last_failure())
///     .and_then(|source| source.downcast_ref::<oauth2::Error>());
/// if let Some(cause) = cause {
///     if cause.kind() == ErrorKind::Rejected {
///         println!("the IdP said {:?}", cause.response().map(|r| r.error()));
///     }
/// }
/// # }
/// ```
#[derive(Clone)]
pub struct Error {
    inner: Arc<Inner>,
}

struct Inner {
    kind: ErrorKind,
    status: Option<StatusCode>,
    response: Option<ErrorResponse>,
    retry_after: Option<Duration>,
    /// For an `Assertion` error: its source said retrying cannot help.
    permanent: bool,
    message: String,
    source: Option<BoxError>,
}

/// What kind of failure an [`Error`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The token URL is not valid or not allowed (plain `http` to a host
    /// that is not loopback), or `https` was asked of the built-in client
    /// without the `rustls` feature. Permanent.
    Config,
    /// The request could not be sent or the response could not be read:
    /// connection refused or reset, DNS, TLS. Transient.
    Transport,
    /// The token endpoint answered with an OAuth2 error response
    /// (RFC 6749 §5.2), available as [`Error::response`].
    Rejected,
    /// The token endpoint answered with an error status and no OAuth2 error
    /// in the body (an HTML error page, say).
    Status,
    /// A success response that is not a valid token response: not JSON, no
    /// `access_token`, no `token_type`, or an `expires_in` that is not a
    /// number of seconds. Transient.
    InvalidResponse,
    /// The token is not a bearer token (`token_type` is not `Bearer`).
    /// Permanent.
    UnsupportedTokenType,
    /// The response body is larger than 64 KiB. Transient.
    BodyTooLarge,
    /// The client assertion source
    /// ([`client_assertion`](super::ClientCredentials::client_assertion))
    /// failed; its error is the [`source`](std::error::Error::source).
    /// Permanent when that source said so
    /// ([`RetryHint::Permanent`](crate::RetryHint::Permanent)), otherwise
    /// transient. No request was sent.
    Assertion,
    /// The subject token source of a
    /// [`TokenExchange`](super::TokenExchange) failed; its error is the
    /// [`source`](std::error::Error::source). Permanent when that source
    /// said so, otherwise transient. No request was sent.
    SubjectToken,
    /// The refresh token's grant is gone: the token endpoint answered
    /// `invalid_grant` to a [`RefreshToken`](super::RefreshToken) refresh
    /// (revoked, expired, or reused), in this process or in another replica
    /// of the fleet. The user must authorize again. Permanent, and no
    /// further request is sent with that grant.
    GrantGone,
    /// The fleet store of a [`RefreshToken`](super::RefreshToken) could not
    /// be used (unreachable, too slow, or its lease held by another replica
    /// for too long): the refresh was refused rather than risk sending a
    /// refresh token another replica may have rotated. Transient. No request
    /// was sent.
    Store,
}

/// An OAuth2 error response (RFC 6749 §5.2), as the token endpoint sent it.
///
/// The strings come from the server. Each is sanitized before it is kept:
/// control characters become spaces; format characters (Unicode Cf, such as
/// the bidi overrides) and line and paragraph separators (Zl, Zp) are
/// removed; the client secret (raw, form-encoded, or in the base64 of the
/// Basic pair) and every other string value of 8 characters or more in the
/// same answer (a token, under whatever name) are masked as `<redacted>`;
/// and the text is cut to 80 (`error`) or 300 characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorResponse {
    pub(super) error: String,
    pub(super) description: Option<String>,
    pub(super) uri: Option<String>,
}

impl ErrorResponse {
    /// The error code, such as `invalid_client`.
    pub fn error(&self) -> &str {
        &self.error
    }

    /// The human-readable `error_description`, if any.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// The `error_uri`, if any.
    pub fn uri(&self) -> Option<&str> {
        self.uri.as_deref()
    }

    /// Whether this error code says that retrying cannot help until the
    /// configuration changes. See [`Error::is_permanent`].
    pub fn is_permanent(&self) -> bool {
        PERMANENT_CODES.contains(&self.error.as_str())
    }
}

/// The error codes of RFC 6749 §5.2 (and RFC 8707's `invalid_target`) that
/// the same request cannot get past by being sent again.
const PERMANENT_CODES: &[&str] = &[
    "invalid_request",
    "invalid_client",
    "invalid_grant",
    "unauthorized_client",
    "unsupported_grant_type",
    "invalid_scope",
    "invalid_target",
];

impl Error {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                status: None,
                response: None,
                retry_after: None,
                permanent: false,
                message: message.into(),
                source: None,
            }),
        }
    }

    fn with(mut self, set: impl FnOnce(&mut Inner)) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            set(inner);
        }
        self
    }

    pub(super) fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    pub(super) fn transport(source: BoxError) -> Self {
        Self::new(ErrorKind::Transport, "").with(|inner| inner.source = Some(source))
    }

    pub(super) fn rejected(status: StatusCode, response: ErrorResponse) -> Self {
        Self::new(ErrorKind::Rejected, "").with(|inner| {
            inner.status = Some(status);
            inner.response = Some(response);
        })
    }

    /// `body` says what the body was (its content type and length), never
    /// what it said.
    pub(super) fn bad_status(status: StatusCode, body: String) -> Self {
        Self::new(ErrorKind::Status, body).with(|inner| inner.status = Some(status))
    }

    pub(super) fn invalid_response(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidResponse, message)
    }

    /// `token_type` is `None` when it is not short and plain enough to quote.
    pub(super) fn unsupported_token_type(token_type: Option<String>) -> Self {
        Self::new(
            ErrorKind::UnsupportedTokenType,
            token_type.unwrap_or_default(),
        )
    }

    /// The assertion source's failure, and its hint.
    pub(super) fn assertion((source, hint): crate::source::FetchError) -> Self {
        Self::new(ErrorKind::Assertion, "").with(|inner| {
            inner.source = Some(source);
            inner.permanent = hint == crate::RetryHint::Permanent;
        })
    }

    /// The subject token source's failure, and its hint.
    pub(super) fn subject_token((source, hint): crate::source::FetchError) -> Self {
        Self::new(ErrorKind::SubjectToken, "").with(|inner| {
            inner.source = Some(source);
            inner.permanent = hint == crate::RetryHint::Permanent;
        })
    }

    pub(super) fn grant_gone(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::GrantGone, message)
    }

    #[cfg_attr(not(feature = "seal"), allow(dead_code))]
    pub(super) fn store(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Store, message)
    }

    pub(super) fn body_too_large(limit: usize) -> Self {
        Self::new(
            ErrorKind::BodyTooLarge,
            format!("the response body is larger than {} KiB", limit / 1024),
        )
    }

    pub(super) fn with_retry_after(self, retry_after: Option<Duration>) -> Self {
        self.with(|inner| inner.retry_after = retry_after)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The HTTP status of the response, when there was one.
    pub fn status(&self) -> Option<StatusCode> {
        self.inner.status
    }

    /// The OAuth2 error response, for a [`Rejected`](ErrorKind::Rejected)
    /// error.
    pub fn response(&self) -> Option<&ErrorResponse> {
        self.inner.response.as_ref()
    }

    /// The server's `Retry-After`, on a `429` or `503` answer that had one
    /// (in seconds or as an HTTP date). The cache waits at least this long
    /// before the next fetch.
    pub fn retry_after(&self) -> Option<Duration> {
        self.inner.retry_after
    }

    /// Whether sending the same request again cannot help until the
    /// configuration changes. Such a failure is reported to the cache as
    /// [`RetryHint::Permanent`](crate::RetryHint::Permanent).
    ///
    /// Permanent: a [`Config`](ErrorKind::Config) error; an
    /// [`UnsupportedTokenType`](ErrorKind::UnsupportedTokenType); an OAuth2
    /// error `invalid_request`, `invalid_client`, `invalid_grant`,
    /// `unauthorized_client`, `unsupported_grant_type`, `invalid_scope` or
    /// `invalid_target`; any other `3xx` or `4xx` status but `408` and `429`.
    /// Transient: connection failures, `5xx`, `408` and `429` (whatever the
    /// body says), and malformed or oversized success responses.
    pub fn is_permanent(&self) -> bool {
        let transient_status = self.inner.status.is_some_and(|status| {
            status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::REQUEST_TIMEOUT
        });
        match self.inner.kind {
            ErrorKind::Config | ErrorKind::UnsupportedTokenType | ErrorKind::GrantGone => true,
            ErrorKind::Rejected => {
                !transient_status
                    && self
                        .inner
                        .response
                        .as_ref()
                        .is_some_and(ErrorResponse::is_permanent)
            }
            ErrorKind::Status => !transient_status,
            ErrorKind::Assertion | ErrorKind::SubjectToken => self.inner.permanent,
            ErrorKind::Transport
            | ErrorKind::InvalidResponse
            | ErrorKind::BodyTooLarge
            | ErrorKind::Store => false,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        match inner.kind {
            ErrorKind::Config => write!(f, "invalid oauth2 configuration: {}", inner.message),
            ErrorKind::Transport => {
                f.write_str("cannot reach the token endpoint")?;
                // The client's own messages, outermost first, each once
                // (hyper's say little until the innermost: "tcp connect
                // error: Connection refused").
                let mut cause = self.source();
                let mut last = String::new();
                while let Some(error) = cause {
                    let message = error.to_string();
                    if !message.is_empty() && !last.contains(&message) {
                        write!(f, ": {message}")?;
                    }
                    last = message;
                    cause = error.source();
                }
                Ok(())
            }
            ErrorKind::Rejected => {
                let code = inner.response.as_ref().map_or("", |r| r.error.as_str());
                f.write_str(match code {
                    "invalid_client" => "the token endpoint rejected the client",
                    "invalid_grant" => "the token endpoint rejected the grant",
                    "invalid_scope" => "the token endpoint rejected the scope",
                    "invalid_target" => "the token endpoint rejected the resource or audience",
                    "unauthorized_client" => "the client is not allowed this grant",
                    "unsupported_grant_type" => "the token endpoint does not support this grant",
                    _ => "the token endpoint rejected the request",
                })?;
                match (code, inner.status) {
                    ("", Some(status)) => write!(f, " ({status})")?,
                    (code, Some(status)) => write!(f, " ({code}, {status})")?,
                    (code, None) => write!(f, " ({code})")?,
                }
                if let Some(description) =
                    inner.response.as_ref().and_then(|r| r.description.as_ref())
                {
                    write!(f, ": {description}")?;
                }
                Ok(())
            }
            ErrorKind::Status => {
                f.write_str("token endpoint answered")?;
                if let Some(status) = inner.status {
                    write!(f, " {status}")?;
                }
                if !inner.message.is_empty() {
                    write!(f, " ({})", inner.message)?;
                }
                Ok(())
            }
            ErrorKind::InvalidResponse => write!(f, "invalid token response: {}", inner.message),
            ErrorKind::UnsupportedTokenType if inner.message.is_empty() => {
                f.write_str("token endpoint issued a token that is not a bearer token")
            }
            ErrorKind::UnsupportedTokenType => write!(
                f,
                "token endpoint issued a token of type {:?}, not a bearer token",
                inner.message
            ),
            ErrorKind::BodyTooLarge => write!(f, "invalid token response: {}", inner.message),
            ErrorKind::Assertion => f.write_str("cannot get the client assertion"),
            ErrorKind::SubjectToken => f.write_str("cannot get the subject token to exchange"),
            ErrorKind::GrantGone => write!(
                f,
                "the refresh token's grant is gone, the user must authorize again ({})",
                inner.message
            ),
            ErrorKind::Store => write!(
                f,
                "refusing to refresh without the fleet store: {}",
                inner.message
            ),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        let mut debug = f.debug_struct("Error");
        debug.field("kind", &inner.kind);
        if let Some(status) = inner.status {
            debug.field("status", &status);
        }
        if let Some(response) = &inner.response {
            debug.field("response", response);
        }
        if let Some(retry_after) = inner.retry_after {
            debug.field("retry_after", &retry_after);
        }
        if !inner.message.is_empty() {
            debug.field("message", &inner.message);
        }
        if let Some(source) = &inner.source {
            debug.field("source", source);
        }
        debug.finish()
    }
}

impl StdError for Error {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.inner
            .source
            .as_ref()
            .map(|source| &**source as &(dyn StdError + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, code: &str) -> Error {
        let response = ErrorResponse {
            error: code.to_owned(),
            description: Some("bad".to_owned()),
            uri: None,
        };
        Error::rejected(StatusCode::from_u16(status).unwrap(), response)
    }

    #[test]
    fn credential_errors_are_permanent_and_overload_is_not() {
        for code in [
            "invalid_client",
            "unauthorized_client",
            "invalid_scope",
            "unsupported_grant_type",
            "invalid_grant",
            "invalid_request",
            "invalid_target",
        ] {
            assert!(rejected(400, code).is_permanent(), "{code}");
            assert!(rejected(401, code).is_permanent(), "{code}");
            // An overloaded server's body does not make its answer permanent.
            assert!(!rejected(503, code).is_permanent(), "{code}");
            assert!(!rejected(429, code).is_permanent(), "{code}");
        }
        assert!(!rejected(400, "temporarily_unavailable").is_permanent());
        assert!(!rejected(400, "slow_down").is_permanent());
    }

    #[test]
    fn status_errors_are_permanent_only_for_client_errors() {
        let status = |code| Error::bad_status(StatusCode::from_u16(code).unwrap(), String::new());
        assert!(status(404).is_permanent());
        assert!(status(401).is_permanent());
        assert!(!status(500).is_permanent());
        assert!(!status(502).is_permanent());
        assert!(!status(429).is_permanent());
        assert!(!status(408).is_permanent());
        assert!(Error::config("x").is_permanent());
        assert!(!Error::transport("refused".into()).is_permanent());
        assert!(!Error::invalid_response("x").is_permanent());
        assert!(Error::unsupported_token_type(Some("mac".into())).is_permanent());
        assert!(Error::unsupported_token_type(None).is_permanent());
    }

    #[test]
    fn display_names_the_oauth2_error() {
        let error = rejected(401, "invalid_client");
        assert_eq!(
            error.to_string(),
            "the token endpoint rejected the client (invalid_client, 401 Unauthorized): bad"
        );
        let error = rejected(400, "slow_down");
        assert_eq!(
            error.to_string(),
            "the token endpoint rejected the request (slow_down, 400 Bad Request): bad"
        );
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let error = Error::transport(Box::new(refused));
        assert_eq!(
            error.to_string(),
            "cannot reach the token endpoint: refused"
        );
        let error = Error::bad_status(StatusCode::BAD_GATEWAY, "text/html, 10 bytes".into());
        assert_eq!(
            error.to_string(),
            "token endpoint answered 502 Bad Gateway (text/html, 10 bytes)"
        );
    }
}
