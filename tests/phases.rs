//! Behaviours 3 and 5: fresh, due and expired tokens, and the fetch timeout,
//! on tokio's paused clock.

mod common;

use std::time::Duration;

use common::{client, token_of, Next, Rejected, Script};
use tokio::time::{sleep_until, Instant};
use tower_bearer::{TokenError, TokenErrorKind};

const SECOND: Duration = Duration::from_secs(1);
/// Phases move on a timer, which fires after requests made at the very same
/// instant; tests probe one millisecond past each boundary.
const TICK: Duration = Duration::from_millis(1);

/// Sends a request at `at`, returning its token and how long it waited.
async fn token_at(client: &common::Client, at: Instant) -> (String, Duration) {
    sleep_until(at).await;
    let token = token_of(client).await;
    (token, at.elapsed())
}

#[tokio::test(start_paused = true)]
async fn fresh_then_due_then_expired() {
    // A 100 s token: due at 50 s (half its lifetime, since 5 min is more than
    // that), expired at 90 s (10 s early). Each fetch takes 1 s.
    let script = Script::new(Some(100 * SECOND), SECOND);
    let client = client(script.cache(), Rejected::default());
    let t0 = Instant::now();

    // Cold: wait for the first fetch.
    assert_eq!(token_at(&client, t0).await, ("token-1".into(), SECOND));

    // Fresh: served at once, no fetch.
    let just_before_due = t0 + Duration::from_millis(49_999);
    assert_eq!(
        token_at(&client, just_before_due).await,
        ("token-1".into(), Duration::ZERO)
    );
    assert_eq!(script.fetches(), 1);

    // Due: still served at once, and one background fetch starts ...
    let due = t0 + 50 * SECOND + TICK;
    assert_eq!(
        token_at(&client, due).await,
        ("token-1".into(), Duration::ZERO)
    );
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 2);
    // ... while later requests keep the old token and start no other.
    let during = due + SECOND / 2;
    assert_eq!(
        token_at(&client, during).await,
        ("token-1".into(), Duration::ZERO)
    );
    assert_eq!(script.fetches(), 2);
    // The new token replaces it when it lands.
    let after = due + SECOND * 2;
    assert_eq!(
        token_at(&client, after).await,
        ("token-2".into(), Duration::ZERO)
    );

    // Expired: token-2 was fetched from 50 s, so it expires at 140 s. With no
    // request in its due window, the next request waits for a fetch.
    let expired = due + 90 * SECOND + TICK;
    assert_eq!(token_at(&client, expired).await, ("token-3".into(), SECOND));
    assert_eq!(script.fetches(), 3);
}

#[tokio::test(start_paused = true)]
async fn expiry_counts_from_the_start_of_the_fetch() {
    // A 20 s token that took 10 s to fetch has 10 s left when it arrives. It
    // expires at 18 s (10% early) from the start of the fetch, not the end.
    // (No due window here, so that nothing refreshes in the background.)
    let script = Script::new(Some(20 * SECOND), 10 * SECOND);
    let cache = script.cache().refresh_before(Duration::ZERO);
    let t0 = Instant::now();
    let token = cache.token().await.unwrap();
    assert_eq!(token.expiry(), Some(t0 + 20 * SECOND));

    sleep_until(t0 + Duration::from_millis(17_999)).await;
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");
    sleep_until(t0 + 18 * SECOND + TICK).await;
    assert_eq!(cache.token().await.unwrap().secret(), "token-2");
    assert_eq!(
        t0.elapsed(),
        28 * SECOND + TICK,
        "the expired token made us wait"
    );
}

#[tokio::test(start_paused = true)]
async fn long_lived_tokens_use_the_fixed_margins() {
    // A one-hour token: due 5 min (plus at most 30 s of jitter) before its
    // expiry, expired 10 s before it.
    let script = Script::new(Some(3600 * SECOND), Duration::ZERO);
    let cache = script.cache();
    let t0 = Instant::now();
    cache.token().await.unwrap();

    sleep_until(t0 + 3269 * SECOND).await;
    cache.token().await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 1, "not due before 55 min - 30 s");

    sleep_until(t0 + 3300 * SECOND + TICK).await;
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 2, "due at 55 min");
}

#[tokio::test(start_paused = true)]
async fn the_margins_are_configurable() {
    let script = Script::new(Some(100 * SECOND), Duration::ZERO);
    let cache = script
        .cache()
        .refresh_before(20 * SECOND)
        .expiry_margin(5 * SECOND)
        .refresh_jitter(Duration::ZERO);
    let t0 = Instant::now();
    cache.token().await.unwrap();

    // Due at 80 s rather than 50 s.
    sleep_until(t0 + 79 * SECOND).await;
    cache.token().await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 1);
    sleep_until(t0 + 80 * SECOND + TICK).await;
    cache.token().await.unwrap();
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 2);

    // token-2 (from 80 s) expires at 175 s rather than 170 s.
    let cache2 = script
        .cache()
        .expiry_margin(5 * SECOND)
        .refresh_before(Duration::ZERO);
    let t1 = Instant::now();
    assert_eq!(cache2.token().await.unwrap().secret(), "token-3");
    sleep_until(t1 + Duration::from_millis(94_999)).await;
    assert_eq!(cache2.token().await.unwrap().secret(), "token-3");
    sleep_until(t1 + 95 * SECOND + TICK).await;
    assert_eq!(cache2.token().await.unwrap().secret(), "token-4");
}

#[tokio::test(start_paused = true)]
async fn jitter_spreads_the_refresh_of_a_fleet() {
    // Twenty caches with 20 min tokens: due at 15 min minus up to 30 s.
    let mut due_points = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let script = Script::new(Some(1200 * SECOND), Duration::ZERO);
        let cache = script.cache();
        let t0 = Instant::now();
        cache.token().await.unwrap();
        let mut at = t0 + 869 * SECOND;
        while script.fetches() == 1 {
            at += Duration::from_millis(500);
            sleep_until(at).await;
            cache.token().await.unwrap();
            tokio::task::yield_now().await;
        }
        let due = at - t0;
        assert!(due > 870 * SECOND && due <= 900 * SECOND, "{due:?}");
        due_points.insert(due);
    }
    assert!(due_points.len() > 5, "{due_points:?}");
}

#[tokio::test(start_paused = true)]
async fn a_fetch_that_hangs_times_out() {
    let script = Script::new(None, Duration::ZERO);
    script.set(Next::Hang);
    let cache = script.cache().fetch_timeout(3 * SECOND);
    let client = client(cache, Rejected::default());

    let t0 = Instant::now();
    let error = common::send(&client).await.unwrap_err();
    let error = error.downcast_ref::<TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::Timeout);
    assert_eq!(t0.elapsed(), 3 * SECOND);
}

#[tokio::test(start_paused = true)]
async fn the_default_fetch_timeout_is_ten_seconds() {
    let script = Script::new(None, Duration::ZERO);
    script.set(Next::Hang);
    let cache = script.cache();
    let t0 = Instant::now();
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Timeout);
    assert_eq!(t0.elapsed(), 10 * SECOND);
}
