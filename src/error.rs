//! Errors of the token cache and the middleware.
//!
//! [`BearerAuth`](crate::BearerAuth) returns [`BoxError`]: errors of the
//! inner service pass through untouched, and the crate's own failures are a
//! [`TokenError`] that can be recovered with `downcast_ref`.
//!
//! ```
//! use tower_bearer::{TokenError, TokenErrorKind};
//! # fn check(error: tower_bearer::BoxError) {
//! if let Some(error) = error.downcast_ref::<TokenError>() {
//!     if error.kind() == TokenErrorKind::BackingOff {
//!         // the identity provider failed recently; `error.source()` says how
//!     }
//! }
//! # }
//! ```
//!
//! `Display` names the kind and summarizes the cause: "token fetch failed:
//! the token endpoint rejected the client (invalid_client, 401
//! Unauthorized)", "token fetch is backing off (next try in 4.2s) after:
//! token fetch failed: ...". `Debug` shows retry times as durations.
//!
//! # Through tonic
//!
//! tonic turns an error of the service under a client into `Unknown`. One
//! `map_err` layer above the bearer layer gives the caller `UNAVAILABLE`
//! for a transient failure and `UNAUTHENTICATED` for a permanent one
//! ([`TokenError::grpc_code`]), with the summary as the message; errors of
//! the channel itself pass through:
//!
//! ```
//! use tower::{BoxError, ServiceBuilder};
//! use tower_bearer::TokenError;
//!
//! fn to_status(error: BoxError) -> BoxError {
//!     match error.downcast::<TokenError>() {
//!         Ok(error) => Box::new(tonic::Status::new(error.grpc_code().into(), error.to_string())),
//!         Err(error) => error,
//!     }
//! }
//! # fn build(channel: tonic::transport::Channel, cache: tower_bearer::TokenCache) {
//! let service = ServiceBuilder::new()
//!     .map_err(to_status)
//!     .layer(tower_bearer::BearerAuthLayer::from_cache(cache))
//!     .service(channel);
//! # let _ = tonic_health::pb::health_client::HealthClient::new(service);
//! # }
//! ```

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A type-erased error, the same as `tower::BoxError`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// Why a token could not be had.
///
/// Cloning is cheap: every request that waited on one failed fetch receives a
/// clone of the same error. The chain of [`source`](Error::source) leads to
/// the token source's own error where there is one.
#[derive(Clone)]
pub struct TokenError {
    inner: Arc<Inner>,
}

struct Inner {
    kind: TokenErrorKind,
    source: Option<Source>,
    retry_at: Option<Instant>,
    hint: RetryHint,
}

enum Source {
    Boxed(BoxError),
    Token(TokenError),
    Header(http::header::InvalidHeaderValue),
}

/// What kind of failure a [`TokenError`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TokenErrorKind {
    /// The token source returned an error; it is the [`source`](Error::source).
    Fetch,
    /// The fetch did not finish within the cache's fetch timeout.
    Timeout,
    /// The token, with its scheme, is not a valid HTTP header value (it
    /// contains a newline, say). No request was sent with it.
    InvalidToken,
    /// The scheme set with [`TokenCache::scheme`](crate::TokenCache::scheme)
    /// is not a valid header value. No fetch is made.
    InvalidScheme,
    /// The token source returned a token that had already expired.
    Expired,
    /// A recent fetch failed and the next attempt waits for a backoff. The
    /// [`source`](Error::source) is that failure.
    BackingOff,
    /// The token source panicked.
    Panicked,
    /// The fetch was dropped before it finished, as when its runtime shuts
    /// down. The next request starts a new one.
    Abandoned,
    /// A fetch was needed outside a tokio runtime.
    NoRuntime,
    /// A fetch was needed on a tokio runtime built without its time driver:
    /// build it with `enable_time()` or `enable_all()`. No fetch is made.
    NoTimeDriver,
    /// The resource keeps rejecting fresh tokens: the last token was
    /// rejected (a `401`, or [`invalidate`](crate::TokenCache::invalidate))
    /// soon after it was fetched, and the next fetch waits for a backoff
    /// that doubles with each such rejection in a row.
    /// [`retry_at`](TokenError::retry_at) says when it may start. No
    /// request was sent.
    Rejected,
    /// A keyed layer or middleware set to
    /// [`require_key`](crate::auth::KeyedBearerAuthLayer::require_key) found
    /// no key for the request. No request was sent. Permanent.
    NoKey,
    /// The token is DPoP-bound, and no proof could be made for the request
    /// (its URI is not absolute, say): the [`source`](Error::source) is the
    /// [`dpop::Error`](crate::dpop::Error). No request was sent.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    Proof,
}

impl TokenError {
    fn new(kind: TokenErrorKind, source: Option<Source>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind,
                source,
                retry_at: None,
                hint: RetryHint::Backoff,
            }),
        }
    }

    pub(crate) fn fetch(source: BoxError, hint: RetryHint) -> Self {
        let mut error = Self::new(TokenErrorKind::Fetch, Some(Source::Boxed(source)));
        if let Some(inner) = Arc::get_mut(&mut error.inner) {
            inner.hint = hint;
        }
        error
    }

    pub(crate) fn timeout(after: Duration) -> Self {
        Self::new(
            TokenErrorKind::Timeout,
            Some(Source::Boxed(Box::new(Elapsed(after)))),
        )
    }

    pub(crate) fn invalid_token(source: http::header::InvalidHeaderValue) -> Self {
        Self::new(TokenErrorKind::InvalidToken, Some(Source::Header(source)))
    }

    pub(crate) fn empty_token() -> Self {
        Self::new(
            TokenErrorKind::InvalidToken,
            Some(Source::Boxed("the token is empty".into())),
        )
    }

    pub(crate) fn invalid_scheme(source: http::header::InvalidHeaderValue) -> Self {
        Self::new(TokenErrorKind::InvalidScheme, Some(Source::Header(source)))
    }

    pub(crate) fn expired() -> Self {
        Self::new(TokenErrorKind::Expired, None)
    }

    /// `retry_at` is `None` for a backoff that never ends.
    pub(crate) fn backing_off(last: TokenError, retry_at: Option<Instant>) -> Self {
        Self {
            inner: Arc::new(Inner {
                kind: TokenErrorKind::BackingOff,
                hint: last.inner.hint,
                source: Some(Source::Token(last)),
                retry_at,
            }),
        }
    }

    pub(crate) fn panicked() -> Self {
        Self::new(TokenErrorKind::Panicked, None)
    }

    pub(crate) fn abandoned() -> Self {
        Self::new(TokenErrorKind::Abandoned, None)
    }

    #[cfg(feature = "dpop")]
    pub(crate) fn proof(source: crate::dpop::Error) -> Self {
        let mut error = Self::new(TokenErrorKind::Proof, Some(Source::Boxed(Box::new(source))));
        if let Some(inner) = Arc::get_mut(&mut error.inner) {
            inner.hint = RetryHint::Permanent;
        }
        error
    }

    pub(crate) fn no_runtime() -> Self {
        Self::new(TokenErrorKind::NoRuntime, None)
    }

    pub(crate) fn no_time_driver() -> Self {
        Self::new(TokenErrorKind::NoTimeDriver, None)
    }

    /// `retry_at` is `None` for a backoff that never ends.
    pub(crate) fn rejected(retry_at: Option<Instant>) -> Self {
        let mut error = Self::new(TokenErrorKind::Rejected, None);
        error.set_retry_at(retry_at);
        error
    }

    pub(crate) fn no_key() -> Self {
        let mut error = Self::new(TokenErrorKind::NoKey, None);
        if let Some(inner) = Arc::get_mut(&mut error.inner) {
            inner.hint = RetryHint::Permanent;
        }
        error
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> TokenErrorKind {
        self.inner.kind
    }

    /// When the next fetch may start: set on a
    /// [`BackingOff`](TokenErrorKind::BackingOff) error, and on the failure
    /// that started the backoff as its waiters receive it. It reflects the
    /// source's [`RetryHint`]. `None` on those errors means the backoff
    /// never ends: a permanent failure under a backoff with no cap
    /// ([`TokenCache::backoff`](crate::TokenCache::backoff) with
    /// `Duration::MAX`).
    pub fn retry_at(&self) -> Option<Instant> {
        self.inner.retry_at
    }

    /// Whether the token source said that trying again cannot help until the
    /// configuration changes ([`RetryHint::Permanent`]), as for an OAuth2
    /// `invalid_client`. For a [`BackingOff`](TokenErrorKind::BackingOff)
    /// error, whether its last failure was.
    pub fn is_permanent(&self) -> bool {
        self.inner.hint == RetryHint::Permanent
    }

    /// What the token source said about trying again after this failure.
    pub(crate) fn retry_hint(&self) -> RetryHint {
        self.inner.hint
    }

    /// Records when the next fetch may start, on an error that has not been
    /// handed out yet.
    pub(crate) fn set_retry_at(&mut self, retry_at: Option<Instant>) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.retry_at = retry_at;
        }
    }

    /// The failure behind a [`BackingOff`](TokenErrorKind::BackingOff) error,
    /// or this error itself for every other kind.
    pub fn last_failure(&self) -> &TokenError {
        match &self.inner.source {
            Some(Source::Token(last)) => last,
            _ => self,
        }
    }
}

impl TokenError {
    /// The gRPC status code this failure maps to: `UNAUTHENTICATED` (16)
    /// when it is [permanent](Self::is_permanent) (retrying cannot help
    /// until the configuration changes), else `UNAVAILABLE` (14), which
    /// gRPC clients treat as transient.
    ///
    /// tonic turns a service error it does not know into `Unknown`; map it
    /// with one line, as the [module docs](crate::error#through-tonic) show.
    pub fn grpc_code(&self) -> i32 {
        if self.is_permanent() {
            16
        } else {
            14
        }
    }

    /// What the kind says, without the cause.
    fn kind_message(&self) -> &'static str {
        match self.inner.kind {
            TokenErrorKind::Fetch => "token fetch failed",
            TokenErrorKind::Timeout => "token fetch timed out",
            TokenErrorKind::InvalidToken => "token is not a valid header value",
            TokenErrorKind::InvalidScheme => "token scheme is not a valid header value",
            TokenErrorKind::Expired => "token source returned an expired token",
            TokenErrorKind::BackingOff => "token fetch is backing off",
            TokenErrorKind::Panicked => "token source panicked",
            TokenErrorKind::Abandoned => "token fetch was abandoned",
            TokenErrorKind::NoRuntime => "token fetch needs a tokio runtime",
            TokenErrorKind::NoTimeDriver => {
                "token fetch needs a tokio runtime with timers: call `enable_time()` or `enable_all()` on its builder"
            }
            TokenErrorKind::Rejected => {
                "the resource keeps rejecting fresh tokens; the next fetch waits for a backoff"
            }
            TokenErrorKind::NoKey => "the request has no token key",
            #[cfg(feature = "dpop")]
            TokenErrorKind::Proof => "no DPoP proof could be made for the request",
        }
    }

    /// How long until [`retry_at`](Self::retry_at), from now (zero once it
    /// has passed), rounded to the millisecond.
    fn retry_in(&self) -> Option<Duration> {
        let left = self
            .inner
            .retry_at?
            .saturating_duration_since(Instant::now());
        Some(Duration::from_millis(
            u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
        ))
    }
}

/// The kind, then a summary of the cause: the token source's error message
/// (an [`oauth2::Error`](crate::oauth2::Error) never quotes a secret; a
/// source of your own is quoted as it wrote its message), and for a
/// backoff, how long until the next try and the failure behind it.
impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind_message())?;
        match &self.inner.source {
            Some(Source::Token(last)) => {
                match self.retry_in() {
                    Some(wait) => write!(f, " (next try in {wait:?})")?,
                    None => f.write_str(" (no next try)")?,
                }
                write!(f, " after: {last}")
            }
            Some(Source::Boxed(source)) => write!(f, ": {source}"),
            Some(Source::Header(source)) => write!(f, ": {source}"),
            None => Ok(()),
        }
    }
}

/// `retry_at` is shown as `retry_in`, a duration from now.
impl fmt::Debug for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TokenError");
        debug.field("kind", &self.inner.kind);
        if let Some(retry_in) = self.retry_in() {
            debug.field("retry_in", &retry_in);
        }
        debug.field("permanent", &self.is_permanent());
        match &self.inner.source {
            Some(Source::Boxed(source)) => debug.field("source", source),
            Some(Source::Token(source)) => debug.field("source", source),
            Some(Source::Header(source)) => debug.field("source", source),
            None => &mut debug,
        };
        debug.finish()
    }
}

impl Error for TokenError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.inner.source {
            Some(Source::Boxed(source)) => Some(&**source),
            Some(Source::Token(source)) => Some(source),
            Some(Source::Header(source)) => Some(source),
            None => None,
        }
    }
}

/// The source of a [`Timeout`](TokenErrorKind::Timeout) error.
#[derive(Debug)]
struct Elapsed(Duration);

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no token after {:?}", self.0)
    }
}

impl Error for Elapsed {}

/// What a failed fetch tells the cache about trying again; see
/// [`TokenSource::retry_hint`](crate::TokenSource::retry_hint).
///
/// It only ever lengthens the wait after a failure: the cache's own backoff
/// (see [`TokenCache::backoff`](crate::TokenCache::backoff)) is the least a
/// source waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryHint {
    /// Nothing special: the cache's own backoff decides.
    Backoff,
    /// Do not fetch again for at least this long (an HTTP `Retry-After`, say).
    /// The cache waits the longer of this and its own backoff, and at most
    /// [`RetryHint::MAX_NOT_BEFORE`], so that a hostile or mistaken server
    /// cannot switch the cache off for days.
    NotBefore(Duration),
    /// Trying again cannot help until the configuration changes (wrong
    /// credentials, say). The cache waits its maximum backoff before the next
    /// fetch, and the error says [`is_permanent`](crate::TokenError::is_permanent).
    Permanent,
}

impl RetryHint {
    /// The longest a [`NotBefore`](Self::NotBefore) hint holds the cache back:
    /// one hour.
    pub const MAX_NOT_BEFORE: Duration = Duration::from_secs(60 * 60);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_chain_reaches_the_token_source_error() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let fetch = TokenError::fetch(Box::new(io), RetryHint::Backoff);
        let backoff = TokenError::backing_off(fetch, Some(Instant::now()));

        assert_eq!(backoff.kind(), TokenErrorKind::BackingOff);
        assert_eq!(backoff.last_failure().kind(), TokenErrorKind::Fetch);
        let fetch = backoff
            .source()
            .unwrap()
            .downcast_ref::<TokenError>()
            .unwrap();
        let io = fetch
            .source()
            .unwrap()
            .downcast_ref::<std::io::Error>()
            .unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }

    #[test]
    fn display_names_the_kind_and_the_cause() {
        let error = TokenError::timeout(Duration::from_secs(10));
        assert_eq!(
            error.to_string(),
            "token fetch timed out: no token after 10s"
        );
        assert_eq!(error.source().unwrap().to_string(), "no token after 10s");
        assert_eq!(
            TokenError::expired().to_string(),
            "token source returned an expired token"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_backoff_shows_durations_not_instants() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let fetch = TokenError::fetch(Box::new(io), RetryHint::Backoff);
        let retry_at = Instant::now() + Duration::from_millis(4_250);
        let backoff = TokenError::backing_off(fetch.clone(), Some(retry_at));
        assert_eq!(
            backoff.to_string(),
            "token fetch is backing off (next try in 4.25s) after: token fetch failed: refused"
        );
        let debug = format!("{backoff:?}");
        assert!(debug.contains("retry_in: 4.25s"), "{debug}");
        assert!(!debug.contains("Instant"), "{debug}");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(backoff.to_string().contains("(next try in 0ns)"));
        let forever = TokenError::backing_off(fetch, None);
        assert!(forever.to_string().contains("(no next try)"), "{forever}");
    }

    #[test]
    fn grpc_codes_tell_transient_from_permanent() {
        let io = || Box::new(std::io::Error::other("x"));
        assert_eq!(TokenError::fetch(io(), RetryHint::Backoff).grpc_code(), 14);
        assert_eq!(
            TokenError::fetch(io(), RetryHint::Permanent).grpc_code(),
            16
        );
    }
}
