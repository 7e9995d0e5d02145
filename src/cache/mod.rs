//! The [`TokenCache`]: a lock-free read of the current token and a single
//! refresh at a time.
//!
//! # How a token is served
//!
//! A token is in one of three phases:
//!
//! | phase | a request ... |
//! |---|---|
//! | fresh | gets the cached token at once: lock-free, no await, no allocation |
//! | due | gets the cached token, and the first one starts a background refresh |
//! | expired | waits for the single refresh (and so does a cold cache) |
//!
//! With the defaults, a token of lifetime `L` fetched at `t0` that expires at
//! `t0 + L`:
//!
//! - is **expired** `min(10 s, L/10)` before `t0 + L`
//!   ([`expiry_margin`](TokenCache::expiry_margin)), and a second earlier
//!   still when `L` was counted in whole seconds by an issuer that rounds
//!   down ([`Token::expires_in_secs`], as OAuth2's `expires_in` is): the
//!   rounding may already have taken that second, and the margin is left
//!   for the request;
//! - comes **due** `5 min` before `t0 + L` but not before `t0 + L/2`
//!   ([`refresh_before`](TokenCache::refresh_before)), moved earlier by a
//!   random jitter of up to `min(30 s, L/20)` so that a fleet does not
//!   refresh in lockstep ([`refresh_jitter`](TokenCache::refresh_jitter)),
//!   still never before `t0 + L/2` nor after the expiry point.
//!
//! `t0` is the instant the fetch **began**: time spent on the wire is not
//! credited to the token. A token without an expiry never expires, nor does
//! one whose lifetime tokio's clock cannot hold (`Duration::MAX`); a `401`
//! can still evict either.
//!
//! # The runtime contract
//!
//! **Phases are exact on tokio's clock.** Every request decides its phase at
//! the moment it is made, whichever runtime it is on and whatever any other
//! runtime is doing: at or past the expiry point it waits for a new token,
//! in the due window it is served and the first such request starts the one
//! refresh. This holds for a `block_on` per request, for a token fetched on a
//! runtime that is never driven again, and for tokio's paused clock: the
//! request right after `tokio::time::advance` sees the new time.
//!
//! How, and what it costs: the hot path compares a coarse monotonic clock
//! (`CLOCK_MONOTONIC_COARSE` on Linux, a few nanoseconds to read; std's clock
//! elsewhere) with a deadline taken at least 50 ms before the due point, and
//! sends anything later to the slow path, which reads tokio's clock and
//! decides exactly (still without a lock while the token is fresh or its
//! refresh pending). A paused clock's jump is seen through a timer the token
//! registers with the time driver of the runtime that fetched it: the driver
//! wakes it inside `advance`, before the next request. With a paused clock,
//! then, phases follow the clock of the runtime the token was fetched on;
//! several paused runtimes sharing one cache each keep a clock of their own.
//!
//! **No request waits longer than the fetch timeout**, whichever runtime its
//! fetch runs on, and outside any runtime too (with a fleet-wide store,
//! twice that plus five store timeouts: the wait for another process's
//! fetch, then its own). A fetch that began and is past its deadline (its
//! start plus [`fetch_timeout`](TokenCache::fetch_timeout)) is ended as a
//! [`Timeout`](crate::TokenErrorKind::Timeout) by the first request or
//! waiter that sees it, on any runtime, exactly as its own timer would have
//! ended it had its runtime been driven; like any timeout it is paced by the
//! backoff, and the next fetch starts on the runtime of the request that
//! needs it. A fetch that never began (its task was spawned on a runtime
//! that then idled) asked the identity provider nothing: a request on
//! another runtime replaces it once it has sat unpolled for a tenth of the
//! fetch timeout (at most 1 s), any request past its deadline, with no error
//! and no backoff, and that request gets a token from its own fetch (a
//! request that was already waiting on it and whose own fetch timeout is up
//! gets [`Abandoned`](crate::TokenErrorKind::Abandoned) instead, and no
//! failure is recorded). A fetch
//! dropped by a runtime that shuts down is not a failure either: a request
//! waiting on it starts a new one on its own runtime at once. There is still
//! one fetch at a time, as seen from the cache. A request made outside any
//! runtime (a sync facade on a plain executor) that waits on a fetch is
//! bounded the same way: a thread of its own wakes it at the deadline.
//!
//! **No expired token is sent late.** A request that waited for a token
//! checks its phase when it is next polled: if the token expired (or was
//! evicted) meanwhile, as when the caller polled it long after the token
//! came, it looks up again rather than send it.
//!
//! **No input makes the cache panic**: lifetimes, margins, timeouts and
//! backoffs from zero to `Duration::MAX`, and expiry instants in the past.
//! `Duration::MAX` means what it says: a token that never expires, a fetch
//! that never times out, a backoff with no cap (after a permanent failure, no
//! further fetch at all: [`TokenError::retry_at`] is then `None`).
//!
//! The cache needs a tokio runtime with the time driver enabled
//! (`enable_time` or `enable_all`) to fetch; outside a runtime it serves what
//! it has and fails with [`NoRuntime`](crate::TokenErrorKind::NoRuntime)
//! when it needs a fetch, and on a runtime without the time driver with
//! [`NoTimeDriver`](crate::TokenErrorKind::NoTimeDriver), whose message
//! says to enable it: never a panic, in the request or in a fetch task.
//! (Tokio has no way to ask whether a runtime has timers but to make one:
//! the first fetch on such a runtime makes one under `catch_unwind`, and
//! the panic hook prints that one panic message.)
//!
//! What a fresh-token request costs, against tower-http's static header and
//! a mutex, is measured in the repository's `docs/performance.md`.
//!
//! | setting | default | setter |
//! |---|---|---|
//! | expired | `min(10 s, L/10)` before `t0 + L` | [`expiry_margin`](TokenCache::expiry_margin) |
//! | due | `5 min` before `t0 + L`, never before `t0 + L/2` | [`refresh_before`](TokenCache::refresh_before) |
//! | jitter on the due point | up to `min(30 s, L/20)` earlier | [`refresh_jitter`](TokenCache::refresh_jitter) |
//! | fetch timeout | 10 s, independent of any request's | [`fetch_timeout`](TokenCache::fetch_timeout) |
//! | backoff after the n-th failure in a row | random in `[d/2, d]`, `d = min(30 s, 1 s · 2ⁿ⁻¹)` | [`backoff`](TokenCache::backoff) |
//! | scheme | `Bearer` | [`scheme`](TokenCache::scheme), [`no_scheme`](TokenCache::no_scheme) |
//!
//! The header, what happens to a request that already has one, and which
//! requests get a token are the middleware's settings: see
//! [`crate::auth`]. A token per key (audience, tenant, host), each key with
//! a cache of its own: [`keyed`].
//!
//! # Failures
//!
//! - Every request waiting on a failed fetch receives that fetch's error; none
//!   of them fetches again on its own, and none hangs: a source that panics,
//!   or a fetch dropped with its runtime, ends its waiters with a
//!   [`TokenError`] too.
//! - After a failure the next fetch waits for a backoff, exponential with
//!   jitter: the n-th delay in a row is random in `[d/2, d]` with
//!   `d = min(30 s, 1 s · 2ⁿ⁻¹)` ([`backoff`](TokenCache::backoff)). A request
//!   that needs a token meanwhile fails at once with a
//!   [`BackingOff`](crate::TokenErrorKind::BackingOff) error whose source is
//!   the last failure. A success resets the backoff. Timeouts, panics, tokens
//!   that are not valid header values and tokens that arrive already expired
//!   count as failures.
//! - A source can lengthen the wait after its failure
//!   ([`TokenSource::retry_hint`]):
//!   [`RetryHint::NotBefore`](crate::RetryHint::NotBefore) waits at least that
//!   long (at most an hour), [`RetryHint::Permanent`](crate::RetryHint::Permanent)
//!   waits the maximum backoff and marks the error
//!   [`is_permanent`](crate::TokenError::is_permanent). Both only ever
//!   lengthen the backoff; [`retry_at`](crate::TokenError::retry_at) tells
//!   when the next fetch may start.
//! - A failed background refresh never evicts a token that is still valid: it
//!   is served until it expires, and the refresh is tried again after the
//!   backoff.
//! - Each fetch runs on a task of its own with its own timeout
//!   ([`fetch_timeout`](TokenCache::fetch_timeout), 10 s), independent of any
//!   request's. Dropping the request that started it cancels nothing: the
//!   result is cached and used by the others. When every handle to the cache
//!   (cache, layers, services and waiting requests) is gone, the fetch is
//!   aborted and the due-point timer dropped: no task lingers.
//! - A `401` evicts the token it rejected, if it is still the current one
//!   (see [`crate::auth`]); [`TokenCache::invalidate`] does the same for code
//!   outside tower.
//! - **Rejections are paced.** A resource that rejects every token (a wrong
//!   audience, a revoked grant, `nbf` ahead of its clock) must not turn
//!   every request into a token request. A token rejected *soon* after its
//!   fetch (within 5 s, and within a tenth of its lifetime) counts as a
//!   rejection in a row: the first one fetches again at once (one revoked
//!   token, or one retry of a request, costs nothing), and from the second
//!   in a row the next fetch waits random in `[d, 2d]`,
//!   `d = base · 2ⁿ⁻¹` for the n-th in a row (2 to 4 s, then 4 to 8 s, ...
//!   with the default 1 s base), up to an hour (or the backoff cap, if
//!   longer). Meanwhile requests fail at once, unsent, with a
//!   [`Rejected`](crate::TokenErrorKind::Rejected) error ("the resource
//!   keeps rejecting fresh tokens") whose
//!   [`retry_at`](crate::TokenError::retry_at) says when the next fetch may
//!   start. Back-to-back rejected requests thus make at most 3 token
//!   requests in 3 s and at most `log₂(T) + 2` in `T` seconds (`T` ≥ 1 s,
//!   for the first hours; once the pause reaches its cap, one fetch per
//!   half hour to hour). A rejection later in a
//!   token's life is a revocation: it ends the run, and the next request
//!   fetches at once; so does a token replaced on schedule. The rule lives
//!   in the one eviction path, so the tower layer, `.grpc()`, each key of a
//!   keyed cache and the reqwest middleware all follow it; a zero backoff
//!   base turns it off.
//! - A token that is empty or not a valid header value (a newline in it, say)
//!   is an [`InvalidToken`](crate::TokenErrorKind::InvalidToken) error, from
//!   the middleware and from [`TokenCache::token`] alike: never a panic, and
//!   no request is sent with it. A scheme that is not a valid header value is
//!   an [`InvalidScheme`](crate::TokenErrorKind::InvalidScheme) error for
//!   every request, without a fetch.
//! - All of these are a [`TokenError`] with a
//!   [`kind`](crate::TokenError::kind) and a `source()` chain that leads to
//!   the token source's own error (see [`crate::error`]).
//! - The header value is built once per token and marked sensitive, so
//!   hyper's and tower-http's tracing redact it. The `Debug` output of
//!   [`Token`], the cache, the layer and the service never
//!   shows the token.
//!
//! # Observability
//!
//! **Counters.** [`TokenCache::stats`] returns [`Stats`]: `fetches` started,
//! `failures`, `waits` (requests and [`token`](TokenCache::token) calls that
//! had to wait for a fetch, each counted once however often it looked up
//! again) and `invalidations` (tokens evicted by a `401` or
//! [`invalidate`](TokenCache::invalidate)). Relaxed atomics, bumped on cold
//! paths only.
//!
//! **Tracing**, with the `tracing` feature (on by default):
//!
//! - a `token_fetch` span per fetch, with `attempt` (1, 2, ... within a run
//!   of failures), `outcome` (`ok` or the
//!   [`TokenErrorKind`](crate::TokenErrorKind)), `latency` and `lifetime`;
//! - inside it, the events "token fetched", "token fetch failed" (with the
//!   error chain), "backing off before the next token fetch" (`retry_in`)
//!   and "token refresh failed; serving the current token until it expires"
//!   (`expires_in`), each once per occurrence, not per request;
//! - outside it, when a token is evicted, "token invalidated after a 401;
//!   ..." or "token invalidated by the caller; ...", with the token's
//!   generation number, and a warning "the resource keeps rejecting fresh
//!   tokens; pausing token fetches" (`retry_in`) when rejections are paced.
//!
//! The token never appears in a span or an event (a test records every one
//! and checks), and a request served a fresh token emits nothing.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_bearer::{Token, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::TokenError> {
//! let cache = TokenCache::new(|| async {
//!     Ok::<_, std::io::Error>(Token::new("abcd1234").expires_in(Duration::from_secs(3600)))
//! })
//! .refresh_before(Duration::from_secs(60))
//! .fetch_timeout(Duration::from_secs(5));
//!
//! let token = cache.token().await?;
//! assert_eq!(token.secret(), "abcd1234");
//! # Ok(())
//! # }
//! ```

mod clock;
mod entry;
pub mod keyed;
#[cfg(shuttle)]
mod model;
mod observe;
mod refresh;
#[cfg(test)]
mod runtime_tests;
mod stats;
#[cfg(feature = "store")]
mod store;
mod sync;
mod timing;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use self::entry::Entry;
#[cfg(test)]
pub(crate) use self::entry::Phase;
pub use self::keyed::KeyedTokenCache;
pub(crate) use self::refresh::invalidate_by_id;
use self::refresh::{Config, Shared};
pub(crate) use self::refresh::{Current, Lookup};
pub use self::stats::{Stats, StoreStats};
#[cfg(feature = "store")]
pub(crate) use self::store::Binding;
use crate::source::DynSource;
use crate::{Token, TokenError, TokenSource};

/// A cached token, fetched from a [`TokenSource`] when it is due.
///
/// Clones share one cache, options included. Options are consuming setters,
/// best set before the cache is used: a setter called on any handle changes
/// the one cache that every clone shares and keeps its token. New timing
/// applies from the next fetch, a new scheme from the next token. See the
/// [module docs](crate::cache) for the phases, defaults and failure handling.
#[derive(Clone)]
pub struct TokenCache {
    shared: Arc<Shared>,
}

impl TokenCache {
    /// A cache of tokens from `source`, with the default options. Nothing is
    /// fetched until a token is needed.
    pub fn new(source: impl TokenSource) -> Self {
        Self {
            shared: Arc::new(Shared::new(Arc::new(source), Config::default(), None)),
        }
    }

    /// A cache of a [`KeyedTokenCache`]: its key's source, the options set
    /// on the keyed cache, and the key's label for tracing.
    pub(crate) fn from_parts(
        source: Arc<dyn DynSource>,
        config: Config,
        label: Option<Arc<str>>,
    ) -> Self {
        Self {
            shared: Arc::new(Shared::new(source, config, label)),
        }
    }

    fn configure(self, set: impl FnOnce(&mut Config)) -> Self {
        set(&mut self.shared.lock().config);
        self
    }

    /// Refresh this long before the token expires, but never before half of
    /// its lifetime has passed. Default: 5 minutes.
    pub fn refresh_before(self, before: Duration) -> Self {
        self.configure(|c| c.timing.refresh_before = before)
    }

    /// Stop serving a token this long before its stated expiry, but never
    /// more than 10% of its lifetime early. Default: 10 seconds.
    pub fn expiry_margin(self, margin: Duration) -> Self {
        self.configure(|c| c.timing.expiry_margin = margin)
    }

    /// The largest random amount by which a refresh is moved earlier, capped
    /// at 5% of the token's lifetime. `Duration::ZERO` turns jitter off.
    /// Default: 30 seconds.
    pub fn refresh_jitter(self, jitter: Duration) -> Self {
        self.configure(|c| c.timing.jitter = jitter)
    }

    /// How long one fetch may take before it fails with a
    /// [`Timeout`](crate::TokenErrorKind::Timeout). Default: 10 seconds.
    pub fn fetch_timeout(self, timeout: Duration) -> Self {
        self.configure(|c| c.timing.fetch_timeout = timeout)
    }

    /// The backoff after failed fetches: the n-th failure in a row waits a
    /// random delay in `[d/2, d]`, `d = min(cap, base · 2ⁿ⁻¹)`.
    /// Default: 1 second base, 30 seconds cap.
    pub fn backoff(self, base: Duration, cap: Duration) -> Self {
        self.configure(|c| {
            c.timing.backoff_base = base;
            c.timing.backoff_cap = cap;
        })
    }

    /// The scheme written before the token in the header value. Default:
    /// `Bearer`, as in `Authorization: Bearer <token>`.
    ///
    /// A scheme that is not a valid header value makes every request for a
    /// token fail with [`InvalidScheme`](crate::TokenErrorKind::InvalidScheme),
    /// without a fetch.
    pub fn scheme(self, scheme: impl Into<String>) -> Self {
        let scheme = scheme.into();
        self.configure(|c| c.set_scheme(Some(scheme)))
    }

    /// Write the bare token as the header value, with no scheme (as for
    /// `X-Api-Key: <token>`).
    pub fn no_scheme(self) -> Self {
        self.configure(|c| c.set_scheme(None))
    }

    /// Shares tokens with every other process that uses the same `store`
    /// and token identity: the single local refresh reads the store first,
    /// and fetches (under the fleet's lease) only when the store holds no
    /// token that is fresh by this cache's rules. Requests with a fresh
    /// token never touch the store. See [`crate::store`].
    ///
    /// ```no_run
    /// # use tower_bearer::{oauth2::ClientCredentials, store::RedisStore, TokenCache};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let cache = TokenCache::new(ClientCredentials::try_new(
    ///     "https://idp.example.com/oauth2/token",
    ///     "my-service",
    ///     "client-secret",
    /// )?)
    /// .store(RedisStore::new("redis://127.0.0.1:6379/")?);
    /// # let _ = cache;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn store(self, store: impl crate::store::TokenStore) -> Self {
        let store: Arc<dyn crate::store::TokenStore> = Arc::new(store);
        self.configure(|c| c.store.set_store(store))
    }

    /// Names this cache's tokens in the [store](Self::store), overriding
    /// the source's own [identity](TokenSource::store_identity). Needed for
    /// a source without one (a closure): its tokens are not shared until it
    /// is named. Caches with the same identity share one token; never put a
    /// secret in it.
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn store_identity(self, identity: crate::store::StoreIdentity) -> Self {
        self.configure(|c| c.store.set_identity(identity))
    }

    /// Whether this cache shares its tokens through its
    /// [store](Self::store), and if not, why: a source without a complete
    /// identity is not shared (never under a guessed one), and the cache
    /// only says so in one `warn` event at its first refresh. Check it at
    /// startup to make that a configuration error.
    ///
    /// ```
    /// # #[cfg(feature = "redis")]
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use tower_bearer::store::{NotShared, RedisStore, StoreIdentity};
    /// use tower_bearer::{Token, TokenCache};
    ///
    /// let closure = || async { Ok::<_, std::io::Error>(Token::new("abcd1234")) };
    /// let cache = TokenCache::new(closure).store(RedisStore::new("redis://127.0.0.1:6379/")?);
    /// assert!(matches!(cache.sharing(), Err(NotShared::NoIdentity { .. })));
    /// let cache = cache.store_identity(StoreIdentity::new("legacy-gateway"));
    /// assert_eq!(cache.sharing(), Ok(()));
    /// # Ok(())
    /// # }
    /// # #[cfg(not(feature = "redis"))]
    /// # fn main() {}
    /// ```
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn sharing(&self) -> Result<(), crate::store::NotShared> {
        let shared = &self.shared;
        let config = shared.lock();
        config.config.store.sharing(&*shared.source).map(|_| ())
    }

    /// A valid token: the cached one, or a new one from the single refresh.
    ///
    /// This is for code outside tower; [`BearerAuth`](crate::BearerAuth) uses
    /// the same cache.
    pub async fn token(&self) -> Result<Token, TokenError> {
        Ok(self.entry().await?.token.clone())
    }

    /// Stops serving `token` if it is still the current token of this cache,
    /// so that the next request waits for a new one. Call it when a server
    /// rejects the token. Returns whether the token was evicted.
    ///
    /// A token that has already been replaced is left alone, so a burst of
    /// rejections of one token causes one refresh, and a late rejection never
    /// evicts its successor. A token that was not returned by this cache
    /// matches nothing. Like a `401`, it is a rejection: fresh tokens
    /// rejected in a row pace the next fetch (see "Failures" in the
    /// [module docs](crate::cache)).
    ///
    /// ```
    /// # use tower_bearer::{Token, TokenCache};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bearer::TokenError> {
    /// # let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("t")) });
    /// let token = cache.token().await?;
    /// // ... the server answered 401 Unauthorized
    /// assert!(cache.invalidate(&token));
    /// assert!(!cache.invalidate(&token));
    /// # Ok(())
    /// # }
    /// ```
    pub fn invalidate(&self, token: &Token) -> bool {
        self.shared.invalidate(token.generation)
    }

    /// What this cache has done so far: fetches, failures, waits and
    /// invalidations. See [`Stats`].
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    pub(crate) async fn entry(&self) -> Result<Arc<Entry>, TokenError> {
        let seen = self.shared.current.load_full();
        if seen.is_fresh() {
            return Ok(seen);
        }
        match self.shared.lookup(&seen) {
            Lookup::Ready(entry) => Ok(entry),
            Lookup::Wait(waiter) => waiter.wait().await,
            Lookup::Fail(error) => Err(error),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }
}

impl fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shared = &self.shared;
        let config = shared.lock().config.clone();
        f.debug_struct("TokenCache")
            .field("source", &shared.source.type_name())
            .field("timing", &config.timing)
            .field("scheme", &config.scheme)
            .field("token", &shared.current.load().token)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::time::Duration;

    use super::*;

    fn cache() -> TokenCache {
        TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("t")) })
    }

    #[tokio::test]
    async fn debug_names_the_parts_and_redacts_the_token() {
        let cache =
            TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("s3cr3t-value")) });
        cache.token().await.unwrap();
        let debug = format!("{cache:?}");
        assert!(debug.starts_with("TokenCache {"), "{debug}");
        for field in ["source", "timing", "scheme", "token"] {
            assert!(debug.contains(&format!("{field}: ")), "{field} in {debug}");
        }
        assert!(!debug.contains("s3cr3t"), "the secret leaked: {debug}");
    }

    /// A due token whose background refresh was dropped with its runtime,
    /// before it ran, is refreshed again by the next request.
    #[test]
    fn a_refresh_dropped_unpolled_does_not_stall_the_due_window() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::task::{Context, Waker};

        let fetches = Arc::new(AtomicUsize::new(0));
        let cache = TokenCache::new({
            let fetches = fetches.clone();
            move || {
                fetches.fetch_add(1, Ordering::SeqCst);
                async {
                    Ok::<_, std::io::Error>(Token::new("t").expires_in(Duration::from_secs(3600)))
                }
            }
        });
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        };
        let main = runtime();
        main.block_on(cache.token()).unwrap();
        cache.shared.current.store(Entry::due_now());

        // The due token is served at once; the refresh it starts goes to a
        // runtime that is dropped before running it.
        let first = runtime();
        {
            let _first = first.enter();
            let token = std::pin::pin!(cache.token());
            let served = token.poll(&mut Context::from_waker(Waker::noop()));
            assert!(served.is_ready());
        }
        drop(first);
        assert_eq!(fetches.load(Ordering::SeqCst), 1, "that fetch never ran");

        main.block_on(async {
            cache.token().await.unwrap();
            // Let the new background refresh run.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
    }

    /// The bound on a refresh through a store, as the module docs state it,
    /// is the one `docs/design.md` states and the code applies (twice the
    /// fetch timeout plus five op timeouts); these docs said four.
    #[test]
    fn the_documented_bound_with_a_store_is_the_codes() {
        let docs = include_str!("mod.rs");
        let design = include_str!("../../docs/design.md");
        assert!(docs.contains("twice that plus five store timeouts"));
        assert!(design.contains("twice the fetch timeout plus five op timeouts"));
        assert!(!docs.contains(&["plus four", "store"].join(" ")));
        #[cfg(feature = "store")]
        assert!(include_str!("store.rs").contains("store.op_timeout().saturating_mul(5)"));
    }

    #[test]
    fn setters_configure_the_cache_in_place() {
        let cache = cache();
        let id = cache.shared.id;
        let cache = cache.fetch_timeout(Duration::from_secs(3)).scheme("token");
        assert_eq!(cache.shared.id, id);
        let config = cache.shared.lock().config.clone();
        assert_eq!(config.timing.fetch_timeout, Duration::from_secs(3));
        assert_eq!(config.scheme.as_deref(), Some("token"));
    }

    /// Scenario 8 of the core issue: a setter after the layer is gone, or
    /// while a fetch is in flight, kept neither the token nor the cache.
    #[tokio::test]
    async fn a_setter_on_a_shared_or_used_cache_keeps_its_token() {
        let cache = cache();
        let token = cache.token().await.unwrap();
        // A layer made from a clone, then dropped: the registry and timers
        // hold the cache weakly.
        drop(tower_layer::Layer::layer(
            &crate::BearerAuthLayer::from_cache(cache.clone()),
            (),
        ));
        let clone = cache.clone();
        let cache = cache.fetch_timeout(Duration::from_secs(3));
        assert_eq!(cache.shared.id, clone.shared.id);
        assert!(Arc::ptr_eq(&cache.shared, &clone.shared));
        assert_eq!(
            clone.shared.lock().config.timing.fetch_timeout,
            Duration::from_secs(3)
        );
        let again = cache.token().await.unwrap();
        assert_eq!(again.generation, token.generation, "the token was kept");
        assert_eq!(cache.stats().fetches, 1);
    }
}
