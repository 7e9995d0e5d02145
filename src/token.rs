//! The [`Token`] a [`TokenSource`](crate::TokenSource) hands to the cache.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// A bearer token and, optionally, when it expires.
///
/// The value is kept behind an [`Arc`], so cloning a token is cheap. Its
/// `Debug` output never shows the value.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::Token;
///
/// let token = Token::new("abcd1234").expires_in(Duration::from_secs(3600));
/// assert_eq!(token.secret(), "abcd1234");
/// assert!(!format!("{token:?}").contains("abcd1234"));
/// ```
#[derive(Clone)]
pub struct Token {
    value: Arc<str>,
    expiry: Expiry,
    // Set by the cache that issued this token, so that `TokenCache::invalidate`
    // can tell this token from a later one with the same value. Zero: not issued.
    pub(crate) generation: u64,
}

/// When a token stops being valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expiry {
    Never,
    /// Relative to the moment the fetch began; the cache anchors it.
    In(Duration),
    At(Instant),
}

impl Token {
    /// A token that never expires.
    ///
    /// Use [`expires_in`](Self::expires_in) or [`expires_at`](Self::expires_at)
    /// to give it a lifetime.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: Arc::from(value.into()),
            expiry: Expiry::Never,
            generation: 0,
        }
    }

    /// The token expires `lifetime` after the fetch that produced it began.
    ///
    /// Counting from the start of the fetch rather than its end is the
    /// conservative choice: the time the response spent on the wire is not
    /// credited to the token. This is what an OAuth2 `expires_in` means.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expiry = Expiry::In(lifetime);
        self
    }

    /// The token expires at `instant`, on tokio's clock.
    pub fn expires_at(mut self, instant: Instant) -> Self {
        self.expiry = Expiry::At(instant);
        self
    }

    /// The token itself. Treat it as a secret.
    pub fn secret(&self) -> &str {
        &self.value
    }

    /// When the token expires, if it does.
    ///
    /// For a token returned by [`TokenCache::token`](crate::TokenCache::token)
    /// this is always an absolute instant (a relative lifetime has been
    /// anchored to the start of its fetch). For a token built with
    /// [`expires_in`](Self::expires_in) and not yet cached, it is `None`
    /// until the cache anchors it.
    pub fn expiry(&self) -> Option<Instant> {
        match self.expiry {
            Expiry::At(instant) => Some(instant),
            Expiry::Never | Expiry::In(_) => None,
        }
    }

    pub(crate) fn expiry_kind(&self) -> Expiry {
        self.expiry
    }

    /// Anchors a relative lifetime to `fetch_started`.
    pub(crate) fn anchored(mut self, fetch_started: Instant) -> Self {
        if let Expiry::In(lifetime) = self.expiry {
            self.expiry = Expiry::At(fetch_started + lifetime);
        }
        self
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expiry", &self.expiry)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let token = Token::new("s3cr3t-value").expires_in(Duration::from_secs(5));
        let debug = format!("{token:?} {token:#?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[tokio::test(start_paused = true)]
    async fn relative_expiry_is_anchored_to_fetch_start() {
        let started = Instant::now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let token = Token::new("t").expires_in(Duration::from_secs(10));
        assert_eq!(token.expiry(), None);
        let anchored = token.anchored(started);
        assert_eq!(anchored.expiry(), Some(started + Duration::from_secs(10)));
    }

    #[test]
    fn never_expiring_by_default() {
        assert_eq!(Token::new("t").expiry_kind(), Expiry::Never);
    }
}
