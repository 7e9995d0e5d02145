//! Plain counters of what a cache did, readable with
//! [`TokenCache::stats`](crate::TokenCache::stats).

use std::sync::atomic::{AtomicU64, Ordering};

/// What a [`TokenCache`](crate::TokenCache) has done since it was built.
///
/// Every count is bumped on a cold path only (a fetch, a wait, a 401), never
/// by a request served a fresh token, so reading them costs the hot path
/// nothing. They are read with relaxed loads: each is exact, but a snapshot
/// taken while requests are in flight may mix moments.
///
/// ```
/// use tower_bearer::{Token, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::TokenError> {
/// let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) });
/// let token = cache.token().await?;
/// cache.invalidate(&token);
///
/// let stats = cache.stats();
/// assert_eq!(stats.fetches, 1);
/// assert_eq!(stats.failures, 0);
/// assert_eq!(stats.waits, 1); // the first call waited for the first fetch
/// assert_eq!(stats.invalidations, 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Fetches started, successful or not.
    pub fetches: u64,
    /// Fetches that failed: an error, a timeout, a panic, or a token that is
    /// not a valid header value or arrived expired. A fetch abandoned with its
    /// runtime is not counted.
    pub failures: u64,
    /// Requests (and calls to [`token`](crate::TokenCache::token)) that had
    /// to wait for a fetch because no valid token was cached.
    pub waits: u64,
    /// Tokens evicted because a server rejected them (a `401` seen by the
    /// middleware) or [`invalidate`](crate::TokenCache::invalidate) was
    /// called. A rejection of a token already replaced is not counted.
    pub invalidations: u64,
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.fetches += other.fetches;
        self.failures += other.failures;
        self.waits += other.waits;
        self.invalidations += other.invalidations;
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    fetches: AtomicU64,
    failures: AtomicU64,
    waits: AtomicU64,
    invalidations: AtomicU64,
}

impl Counters {
    pub(crate) fn fetch(&self) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn invalidation(&self) {
        self.invalidations.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            fetches: self.fetches.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
        }
    }
}
