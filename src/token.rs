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
    // How much earlier than stated the token may expire: the unit its
    // lifetime was counted in by an issuer that rounds its clock down.
    granularity: Duration,
    // The DPoP key this token is bound to, with its `ath`.
    #[cfg(feature = "dpop")]
    bound: Option<crate::dpop::Bound>,
    // A token that went through a fleet's store: when its fetch began (on
    // this process's clock) and how to delete the shared copy on a 401.
    #[cfg(feature = "store")]
    pub(crate) origin: Option<Arc<Origin>>,
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
            granularity: Duration::ZERO,
            #[cfg(feature = "dpop")]
            bound: None,
            #[cfg(feature = "store")]
            origin: None,
        }
    }

    /// Binds the token to `binding`'s DPoP key (RFC 9449): a layer or
    /// middleware then sends it as `Authorization: DPoP <token>`, with a
    /// `DPoP` proof made for each request. See [`crate::dpop`].
    ///
    /// [`ClientCredentials::dpop`](crate::oauth2::ClientCredentials::dpop)
    /// binds the tokens the server says are DPoP tokens; a source of your
    /// own binds its tokens with this.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn bind(mut self, binding: &crate::dpop::Binding) -> Self {
        self.bound = Some(crate::dpop::Bound::new(binding, &self.value));
        self
    }

    /// The DPoP binding of the token, if it is bound.
    #[cfg(feature = "dpop")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
    pub fn binding(&self) -> Option<&crate::dpop::Binding> {
        self.bound.as_ref().map(crate::dpop::Bound::binding)
    }

    #[cfg(feature = "dpop")]
    pub(crate) fn bound(&self) -> Option<&crate::dpop::Bound> {
        self.bound.as_ref()
    }

    /// The token expires `lifetime` after the fetch that produced it began.
    ///
    /// Counting from the start of the fetch rather than its end is the
    /// conservative choice: the time the response spent on the wire is not
    /// credited to the token. This is what an OAuth2 `expires_in` means.
    ///
    /// A lifetime too long for tokio's clock to hold, such as
    /// `Duration::MAX`, means the token never expires.
    pub fn expires_in(mut self, lifetime: Duration) -> Self {
        self.expiry = Expiry::In(lifetime);
        self.granularity = Duration::ZERO;
        self
    }

    /// The token expires `secs` whole seconds after the fetch began, as an
    /// issuer counts them: OAuth2's `expires_in` is one such count.
    ///
    /// An issuer that counts in whole seconds rounds its own clock down (an
    /// `iat` is the current second, floored), so the token may expire up to a
    /// second before the fetch start plus `secs`. The cache therefore stops
    /// serving it a second earlier than its
    /// [`expiry_margin`](crate::TokenCache::expiry_margin) alone would, so
    /// that the margin is still left for the request when the issuer's
    /// rounding took the whole second: a one-second token is never served,
    /// a two-second token for 0.8 s (its margin being 10% of the lifetime).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tower_bearer::Token;
    ///
    /// // what a token endpoint answered: {"access_token": "...", "expires_in": 3600}
    /// let token = Token::new("abcd1234").expires_in_secs(3600);
    /// # let _ = token;
    /// ```
    pub fn expires_in_secs(self, secs: u64) -> Self {
        self.expires_in(Duration::from_secs(secs))
            .counted_in(Duration::from_secs(1))
    }

    /// Says that the expiry was counted in units of `granularity` by an
    /// issuer that rounds down, so it may come that much early.
    pub(crate) fn counted_in(mut self, granularity: Duration) -> Self {
        self.granularity = granularity;
        self
    }

    /// The token expires at `instant`, on tokio's clock.
    pub fn expires_at(mut self, instant: Instant) -> Self {
        self.expiry = Expiry::At(instant);
        self.granularity = Duration::ZERO;
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

    pub(crate) fn granularity(&self) -> Duration {
        self.granularity
    }

    /// When the fetch that got this token began, if it is not the start of
    /// the local refresh (a token from a fleet's store).
    pub(crate) fn fetch_started(&self) -> Option<Instant> {
        #[cfg(feature = "store")]
        return self.origin.as_ref().map(|origin| origin.started);
        #[cfg(not(feature = "store"))]
        None
    }

    /// Anchors a relative lifetime to `fetch_started`; one beyond what an
    /// instant can hold never ends.
    pub(crate) fn anchored(mut self, fetch_started: Instant) -> Self {
        if let Expiry::In(lifetime) = self.expiry {
            self.expiry = fetch_started
                .checked_add(lifetime)
                .map_or(Expiry::Never, Expiry::At);
        }
        self
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("Token");
        debug
            .field("value", &"<redacted>")
            .field("expiry", &self.expiry);
        #[cfg(feature = "dpop")]
        debug.field("binding", &self.binding());
        debug.finish()
    }
}

/// Where a token came from when it is not this process's own fetch (a
/// token read from a fleet's store): when that fetch began, on this
/// process's clock, and what to do if a server rejects the token. The
/// cache's store glue (`cache::store`) makes it; the token only carries it.
#[cfg(feature = "store")]
pub(crate) struct Origin {
    pub(crate) started: Instant,
    pub(crate) copy: Box<dyn SharedCopy>,
}

#[cfg(feature = "store")]
impl Origin {
    /// A server rejected this token: tell the shared copy.
    pub(crate) fn rejected(&self) {
        self.copy.rejected();
    }
}

/// The shared copy of a token (in a fleet's store), as its [`Origin`]
/// knows it: what a rejection does to it.
#[cfg(feature = "store")]
pub(crate) trait SharedCopy: Send + Sync {
    /// Never take this token from the store again, and delete it there.
    fn rejected(&self);
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
    fn a_lifetime_beyond_the_clock_never_ends() {
        let now = Instant::now();
        for lifetime in [Duration::MAX, Duration::from_secs(u64::MAX)] {
            let token = Token::new("t").expires_in(lifetime).anchored(now);
            assert_eq!(token.expiry_kind(), Expiry::Never);
        }
        let token = Token::new("t").expires_in_secs(u64::MAX).anchored(now);
        assert_eq!(token.expiry_kind(), Expiry::Never);
    }

    #[test]
    fn only_whole_second_lifetimes_carry_a_granularity() {
        assert_eq!(
            Token::new("t").expires_in_secs(5).granularity(),
            Duration::from_secs(1)
        );
        let exact = Token::new("t")
            .expires_in_secs(5)
            .expires_in(Duration::from_secs(5));
        assert_eq!(exact.granularity(), Duration::ZERO);
    }

    #[test]
    fn never_expiring_by_default() {
        assert_eq!(Token::new("t").expiry_kind(), Expiry::Never);
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn a_bound_tokens_debug_shows_the_key_redacted_and_not_the_token() {
        let binding = crate::dpop::Binding::new(crate::dpop::ProofKey::generate().unwrap());
        let token = Token::new("s3cr3t-value").bind(&binding);
        let debug = format!("{token:?} {token:#?}");
        assert!(!debug.contains("s3cr3t-value"), "{debug}");
        assert!(
            debug.contains("ES256") && debug.contains("<redacted>"),
            "{debug}"
        );
        assert!(Token::new("t").binding().is_none());
    }
}
