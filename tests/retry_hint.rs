//! A source's `RetryHint` lengthens the cache's backoff: `NotBefore` holds
//! the next fetch back at least that long (capped), `Permanent` waits the
//! maximum backoff and says so on the error.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{advance, Instant};
use tower_bearer::{RetryHint, Token, TokenCache, TokenError, TokenErrorKind, TokenSource};

#[derive(Debug)]
struct Refused(RetryHint);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "refused ({:?})", self.0)
    }
}

impl std::error::Error for Refused {}

/// Fails every fetch with `hint`, and counts fetches.
#[derive(Clone)]
struct Refusing {
    hint: RetryHint,
    fetches: Arc<AtomicUsize>,
}

impl TokenSource for Refusing {
    type Error = Refused;
    type Future = Pin<Box<dyn Future<Output = Result<Token, Refused>> + Send>>;

    fn fetch(&self) -> Self::Future {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let hint = self.hint;
        Box::pin(async move { Err(Refused(hint)) })
    }

    fn retry_hint(error: &Refused) -> RetryHint {
        error.0
    }
}

fn refusing(hint: RetryHint) -> (TokenCache, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let source = Refusing {
        hint,
        fetches: fetches.clone(),
    };
    (TokenCache::new(source), fetches)
}

async fn fail(cache: &TokenCache) -> TokenError {
    cache.token().await.expect_err("every fetch fails")
}

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(start_paused = true)]
async fn not_before_holds_the_next_fetch_back_longer_than_the_backoff() {
    let (cache, fetches) = refusing(RetryHint::NotBefore(SECS(60)));
    let start = Instant::now();

    let error = fail(&cache).await;
    assert_eq!(error.kind(), TokenErrorKind::Fetch);
    assert!(!error.is_permanent());
    assert_eq!(error.retry_at(), Some(start + SECS(60)));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    // The backoff alone (at most 1 s after a first failure) would have
    // allowed a fetch long before this.
    advance(SECS(59)).await;
    let error = fail(&cache).await;
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert_eq!(error.retry_at(), Some(start + SECS(60)));
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    advance(SECS(1)).await;
    assert_eq!(fail(&cache).await.kind(), TokenErrorKind::Fetch);
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn not_before_is_capped_at_an_hour() {
    let (cache, fetches) = refusing(RetryHint::NotBefore(SECS(10 * 24 * 3600)));
    let start = Instant::now();

    let error = fail(&cache).await;
    assert_eq!(error.retry_at(), Some(start + RetryHint::MAX_NOT_BEFORE));
    assert_eq!(RetryHint::MAX_NOT_BEFORE, SECS(3600));

    advance(SECS(3600)).await;
    fail(&cache).await;
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_short_not_before_never_shortens_the_backoff() {
    let (cache, _) = refusing(RetryHint::NotBefore(Duration::from_millis(1)));
    let cache = cache.backoff(SECS(10), SECS(10));
    let start = Instant::now();

    let error = fail(&cache).await;
    let wait = error.retry_at().expect("a backoff") - start;
    // The first backoff is random in [5 s, 10 s].
    assert!(wait >= SECS(5) && wait <= SECS(10), "{wait:?}");
}

#[tokio::test(start_paused = true)]
async fn permanent_waits_the_maximum_backoff_and_says_so() {
    let (cache, fetches) = refusing(RetryHint::Permanent);
    let start = Instant::now();

    let error = fail(&cache).await;
    assert_eq!(error.kind(), TokenErrorKind::Fetch);
    assert!(error.is_permanent());
    // Straight to the 30 s cap, not the 1 s of a first failure.
    assert_eq!(error.retry_at(), Some(start + SECS(30)));

    advance(SECS(29)).await;
    let error = fail(&cache).await;
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert!(error.is_permanent());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);

    advance(SECS(1)).await;
    assert!(fail(&cache).await.is_permanent());
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn closures_keep_the_plain_backoff() {
    let fetches = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::new({
        let fetches = fetches.clone();
        move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            async { Err::<Token, _>(std::io::Error::other("down")) }
        }
    });
    let start = Instant::now();
    let error = fail(&cache).await;
    assert!(!error.is_permanent());
    let wait = error.retry_at().expect("a backoff") - start;
    assert!(
        wait >= Duration::from_millis(500) && wait <= SECS(1),
        "{wait:?}"
    );
}
