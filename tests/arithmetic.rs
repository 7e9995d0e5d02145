//! The extremes of every duration a user can pass, through the public API:
//! "never expires", "no cap" and "no timeout" mean what they say, and
//! nothing panics. The arithmetic behind them is property-tested next to it
//! (`src/cache/timing.rs`, `src/cache/clock.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::advance;
use tower_bearer::{RetryHint, Token, TokenCache, TokenErrorKind, TokenSource};

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

/// Counts its fetches; each returns what `make` says.
fn counting<F>(fetches: &Arc<AtomicUsize>, make: F) -> impl TokenSource
where
    F: Fn() -> Token + Send + Sync + 'static,
{
    let fetches = Arc::clone(fetches);
    move || {
        fetches.fetch_add(1, Ordering::SeqCst);
        let token = make();
        async move { Ok::<_, std::io::Error>(token) }
    }
}

#[tokio::test(start_paused = true)]
async fn a_lifetime_beyond_the_clock_never_expires() {
    let lifetimes: [fn() -> Token; 2] = [
        || Token::new("t").expires_in(Duration::MAX),
        || Token::new("t").expires_in_secs(u64::MAX),
    ];
    for make in lifetimes {
        let fetches = Arc::new(AtomicUsize::new(0));
        let cache = TokenCache::new(counting(&fetches, make));
        let token = cache.token().await.unwrap();
        assert_eq!(token.expiry(), None, "never expires");
        advance(3 * YEAR).await;
        assert_eq!(cache.token().await.unwrap().secret(), "t");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
    }
}

/// A source whose every failure is permanent.
struct Refused(Arc<AtomicUsize>);

impl TokenSource for Refused {
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Token, std::io::Error>> + Send>>;

    fn fetch(&self) -> Self::Future {
        self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Err(std::io::Error::other("bad credentials")) })
    }

    fn retry_hint(_: &std::io::Error) -> RetryHint {
        RetryHint::Permanent
    }
}

/// A permanent failure waits the whole cap, and with no cap it waits
/// forever: the identity provider is asked once.
#[tokio::test(start_paused = true)]
async fn a_permanent_failure_without_a_cap_is_never_retried() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::new(Refused(fetches.clone())).backoff(Duration::MAX, Duration::MAX);

    let first = cache.token().await.unwrap_err();
    assert_eq!(first.kind(), TokenErrorKind::Fetch);
    assert!(first.is_permanent());
    assert_eq!(first.retry_at(), None, "no retry, ever");

    advance(YEAR).await;
    let later = cache.token().await.unwrap_err();
    assert_eq!(later.kind(), TokenErrorKind::BackingOff);
    assert_eq!(later.retry_at(), None);
    assert_eq!(later.last_failure().kind(), TokenErrorKind::Fetch);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(cache.stats().failures, 1);
}

/// An uncapped backoff after ordinary failures grows past any clock: the
/// same, without a panic.
#[tokio::test(start_paused = true)]
async fn an_uncapped_backoff_from_a_huge_base_does_not_overflow() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let source = {
        let fetches = fetches.clone();
        move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            async { Err::<Token, _>(std::io::Error::other("down")) }
        }
    };
    let cache = TokenCache::new(source).backoff(Duration::MAX, Duration::MAX);
    assert_eq!(cache.token().await.unwrap_err().retry_at(), None);
    advance(YEAR).await;
    let later = cache.token().await.unwrap_err();
    assert_eq!(later.kind(), TokenErrorKind::BackingOff);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

/// A zero fetch timeout ends every fetch that has to wait for anything.
/// A source that answers at once (the fetch is still polled before its
/// timer) still gets through.
#[tokio::test(start_paused = true)]
async fn a_zero_fetch_timeout_times_out_a_fetch_that_waits() {
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, std::io::Error>(Token::new("slow"))
    };
    let cache = TokenCache::new(slow).fetch_timeout(Duration::ZERO);
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Timeout);
    assert_eq!(cache.stats().failures, 1);

    let fetches = Arc::new(AtomicUsize::new(0));
    let cache =
        TokenCache::new(counting(&fetches, || Token::new("fast"))).fetch_timeout(Duration::ZERO);
    assert_eq!(cache.token().await.unwrap().secret(), "fast");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

/// No fetch timeout: a fetch that takes a year is waited for.
#[tokio::test(start_paused = true)]
async fn an_unbounded_fetch_timeout_waits_for_the_fetch() {
    let slow = || async {
        tokio::time::sleep(YEAR).await;
        Ok::<_, std::io::Error>(Token::new("late"))
    };
    let cache = TokenCache::new(slow).fetch_timeout(Duration::MAX);
    assert_eq!(cache.token().await.unwrap().secret(), "late");
    assert_eq!(cache.stats().failures, 0);
}
