//! `TokenCache::stats`: fetches, failures, waits and invalidations, counted
//! on the cold paths only.

mod common;

use std::time::Duration;

use common::{
    client, client_over, echo_after, send, send_concurrently, token_of, Next, Rejected, Script,
};
use http::StatusCode;
use tower_bearer::{Stats, TokenErrorKind};

fn stats(fetches: u64, failures: u64, waits: u64, invalidations: u64) -> Stats {
    let mut stats = Stats::default();
    stats.fetches = fetches;
    stats.failures = failures;
    stats.waits = waits;
    stats.invalidations = invalidations;
    stats
}

#[tokio::test(start_paused = true)]
async fn a_cold_burst_is_one_fetch_and_one_wait_per_request() {
    let script = Script::new(None, Duration::from_secs(1));
    let cache = script.cache();
    let client = client(cache.clone(), Rejected::default());
    assert_eq!(cache.stats(), Stats::default());

    for result in send_concurrently(&client, 20).await {
        assert_eq!(result.unwrap().0, StatusCode::OK);
    }
    assert_eq!(cache.stats(), stats(1, 0, 20, 0));

    // Requests with a fresh token count nothing.
    for result in send_concurrently(&client, 50).await {
        assert_eq!(result.unwrap().0, StatusCode::OK);
    }
    assert_eq!(cache.stats(), stats(1, 0, 20, 0));
}

#[tokio::test(start_paused = true)]
async fn failures_count_once_per_fetch_and_backoff_costs_no_fetch() {
    let script = Script::new(None, Duration::ZERO);
    script.set(Next::Fail);
    let cache = script.cache();
    let client = client(cache.clone(), Rejected::default());

    assert!(send(&client).await.is_err());
    assert_eq!(cache.stats(), stats(1, 1, 1, 0));

    // During the backoff a request fails at once: no fetch, no wait.
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert_eq!(cache.stats(), stats(1, 1, 1, 0));

    // After it, a fetch that times out is a failure too.
    tokio::time::advance(Duration::from_secs(2)).await;
    script.set(Next::Hang);
    assert_eq!(
        cache.token().await.unwrap_err().kind(),
        TokenErrorKind::Timeout
    );
    assert_eq!(cache.stats(), stats(2, 2, 2, 0));

    tokio::time::advance(Duration::from_secs(4)).await;
    script.set(Next::Token(None));
    assert_eq!(token_of(&client).await, "token-3");
    assert_eq!(cache.stats(), stats(3, 2, 3, 0));
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_401s_is_one_invalidation() {
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    let rejected = Rejected::default();
    let client = client_over(
        cache.clone(),
        echo_after(rejected.clone(), Duration::from_millis(10)),
    );
    let first = cache.token().await.unwrap();
    assert_eq!(cache.stats(), stats(1, 0, 1, 0));

    rejected.lock().unwrap().push("Bearer token-1".to_owned());
    for result in send_concurrently(&client, 30).await {
        assert_eq!(result.unwrap().0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(cache.stats(), stats(1, 0, 1, 1));

    assert_eq!(token_of(&client).await, "token-2");
    // A token already replaced is not invalidated again.
    assert!(!cache.invalidate(&first));
    assert_eq!(cache.stats(), stats(2, 0, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_background_refresh_is_a_fetch_but_no_wait() {
    // Due after half of its 60 s lifetime.
    let script = Script::new(Some(Duration::from_secs(60)), Duration::from_secs(1));
    let cache = script.cache();
    let client = client(cache.clone(), Rejected::default());
    assert_eq!(token_of(&client).await, "token-1");

    tokio::time::sleep(Duration::from_secs(31)).await;
    // Served the due token at once; the refresh runs behind it.
    assert_eq!(token_of(&client).await, "token-1");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(token_of(&client).await, "token-2");
    assert_eq!(cache.stats(), stats(2, 0, 1, 0));
}
