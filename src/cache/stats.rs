//! Plain counters of what a cache did, readable with
//! [`TokenCache::stats`](crate::TokenCache::stats).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    /// What the cache's refreshes did with its fleet store
    /// ([`TokenCache::store`](crate::TokenCache::store)); all zero without one.
    pub store: StoreStats,
}

/// What a cache's refreshes did with its fleet store: whether the process
/// shares its tokens with the fleet, or falls back on fetching alone. Part
/// of [`Stats`]; see the `store` module (feature `store`) for the protocol.
///
/// A refresh through the store reads it, then either takes the fleet's
/// lease (and fetches) or waits for the replica that holds it. In a fleet
/// that shares well, most refreshes are `hits` (or `waits` ending in a
/// hit), and `fallbacks` stays near zero.
///
/// ```
/// use tower_bearer::{StoreStats, Token, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::TokenError> {
/// // No store: the source answers, and the store's counters stay at zero.
/// let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) });
/// cache.token().await?;
/// assert_eq!(cache.stats().store, StoreStats::default());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Refreshes answered by a fresh token read from the store, with no
    /// call to the source.
    pub hits: u64,
    /// Reads of the store that found no token fresh by this cache's rules
    /// (none, expired or due, unreadable, or one a server rejected).
    pub misses: u64,
    /// Fetch leases this process took: it fetched for the fleet.
    pub leases_won: u64,
    /// Attempts to take the fetch lease that found another replica holding it.
    pub leases_lost: u64,
    /// Refreshes that waited for another replica's fetch (once per refresh,
    /// however many polls it took).
    pub waits: u64,
    /// Store operations that failed (a connection error, a refused command).
    pub errors: u64,
    /// Store operations that did not answer within the store's op timeout.
    pub timeouts: u64,
    /// Refreshes that fetched from the source outside the fleet's single
    /// flight: after a store error or timeout, or after waiting the whole
    /// fetch timeout for a lease holder that never wrote.
    pub fallbacks: u64,
}

impl std::ops::AddAssign for StoreStats {
    fn add_assign(&mut self, other: StoreStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.leases_won += other.leases_won;
        self.leases_lost += other.leases_lost;
        self.waits += other.waits;
        self.errors += other.errors;
        self.timeouts += other.timeouts;
        self.fallbacks += other.fallbacks;
    }
}

impl std::ops::AddAssign for Stats {
    fn add_assign(&mut self, other: Stats) {
        self.fetches += other.fetches;
        self.failures += other.failures;
        self.waits += other.waits;
        self.invalidations += other.invalidations;
        self.store += other.store;
    }
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    fetches: AtomicU64,
    failures: AtomicU64,
    waits: AtomicU64,
    invalidations: AtomicU64,
    /// Shared with the refreshes through the store, which outlive a borrow.
    store: Arc<StoreCounters>,
}

/// The live counters behind [`StoreStats`].
#[derive(Debug, Default)]
pub(crate) struct StoreCounters {
    hits: AtomicU64,
    misses: AtomicU64,
    leases_won: AtomicU64,
    leases_lost: AtomicU64,
    waits: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    fallbacks: AtomicU64,
}

#[allow(dead_code)] // Bumped by the store's refreshes only (feature `store`).
impl StoreCounters {
    pub(crate) fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn lease(&self, won: bool) {
        let counter = if won {
            &self.leases_won
        } else {
            &self.leases_lost
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn wait(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn timeout(&self) {
        self.timeouts.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> StoreStats {
        StoreStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            leases_won: self.leases_won.load(Ordering::Relaxed),
            leases_lost: self.leases_lost.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
        }
    }
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

    /// The store's counters, for a refresh through the store.
    #[allow(dead_code)] // Feature `store` only.
    pub(crate) fn store(&self) -> &Arc<StoreCounters> {
        &self.store
    }

    pub(crate) fn snapshot(&self) -> Stats {
        Stats {
            fetches: self.fetches.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
            waits: self.waits.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            store: self.store.snapshot(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_stats_add_up_field_by_field() {
        let one = StoreStats {
            hits: 1,
            misses: 2,
            leases_won: 3,
            leases_lost: 4,
            waits: 5,
            errors: 6,
            timeouts: 7,
            fallbacks: 8,
        };
        let mut sum = one;
        sum += StoreStats {
            hits: 10,
            misses: 20,
            leases_won: 30,
            leases_lost: 40,
            waits: 50,
            errors: 60,
            timeouts: 70,
            fallbacks: 80,
        };
        assert_eq!(
            sum,
            StoreStats {
                hits: 11,
                misses: 22,
                leases_won: 33,
                leases_lost: 44,
                waits: 55,
                errors: 66,
                timeouts: 77,
                fallbacks: 88,
            }
        );
        let mut total = Stats::default();
        total += Stats {
            store: one,
            ..Stats::default()
        };
        assert_eq!(total.store, one);
    }
}
