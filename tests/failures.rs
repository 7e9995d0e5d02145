//! Behaviour 4: failures are shared by their waiters and paced by a backoff,
//! and a failed background refresh never evicts a valid token.

mod common;

use std::error::Error;
use std::time::Duration;

use common::{client, send, send_concurrently, token_of, Next, Rejected, Script};
use tokio::time::{sleep_until, Instant};
use tower_bearer::{TokenError, TokenErrorKind};

const SECOND: Duration = Duration::from_secs(1);
const TICK: Duration = Duration::from_millis(1);

fn token_error(error: tower::BoxError) -> TokenError {
    match error.downcast::<TokenError>() {
        Ok(error) => *error,
        Err(other) => panic!("not a TokenError: {other}"),
    }
}

#[tokio::test(start_paused = true)]
async fn every_waiter_gets_the_error_of_the_fetch_it_waited_on() {
    let script = Script::new(None, SECOND);
    script.set(Next::Fail);
    let client = client(script.cache(), Rejected::default());

    for result in send_concurrently(&client, 50).await {
        let error = token_error(result.unwrap_err());
        assert_eq!(error.kind(), TokenErrorKind::Fetch);
        let io = error.source().unwrap().downcast_ref::<std::io::Error>();
        assert_eq!(io.unwrap().to_string(), "fetch 1 failed");
    }
    assert_eq!(script.fetches(), 1, "no waiter fetched on its own");
}

#[tokio::test(start_paused = true)]
async fn requests_during_the_backoff_fail_fast_with_the_last_failure() {
    let script = Script::new(None, Duration::ZERO);
    script.set(Next::Fail);
    let cache = script.cache();

    // First failure: the next attempt waits 0.5 s to 1 s.
    let failed_at = Instant::now();
    assert_eq!(
        cache.token().await.unwrap_err().kind(),
        TokenErrorKind::Fetch
    );
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert_eq!(error.last_failure().kind(), TokenErrorKind::Fetch);
    let source = error
        .source()
        .unwrap()
        .downcast_ref::<TokenError>()
        .unwrap();
    assert_eq!(source.source().unwrap().to_string(), "fetch 1 failed");
    let retry_at = error.retry_at().unwrap();
    let delay = retry_at - failed_at;
    assert!(delay >= SECOND / 2 && delay <= SECOND, "{delay:?}");
    assert_eq!(failed_at.elapsed(), Duration::ZERO, "failed fast");
    assert_eq!(script.fetches(), 1);

    // Just before the backoff ends: still failing fast, no fetch.
    sleep_until(retry_at - TICK).await;
    assert_eq!(
        cache.token().await.unwrap_err().kind(),
        TokenErrorKind::BackingOff
    );
    assert_eq!(script.fetches(), 1);

    // After it: one new attempt.
    sleep_until(retry_at).await;
    assert_eq!(
        cache.token().await.unwrap_err().kind(),
        TokenErrorKind::Fetch
    );
    assert_eq!(script.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_doubles_up_to_its_cap_and_resets_on_success() {
    let script = Script::new(None, Duration::ZERO);
    script.set(Next::Fail);
    let cache = script.cache().backoff(SECOND, 8 * SECOND);

    let mut delays = Vec::new();
    for _ in 0..6 {
        let failed_at = Instant::now();
        assert_eq!(
            cache.token().await.unwrap_err().kind(),
            TokenErrorKind::Fetch
        );
        let retry_at = cache.token().await.unwrap_err().retry_at().unwrap();
        delays.push(retry_at - failed_at);
        sleep_until(retry_at).await;
    }
    for (delay, ceiling) in delays.iter().zip([1, 2, 4, 8, 8, 8]) {
        let ceiling = ceiling * SECOND;
        assert!(*delay >= ceiling / 2 && *delay <= ceiling, "{delays:?}");
    }

    // A success resets it: the next failure waits at most the base again.
    script.set(Next::Token(None));
    assert_eq!(cache.token().await.unwrap().secret(), "token-7");
    let token = cache.token().await.unwrap();
    assert!(cache.invalidate(&token));
    script.set(Next::Fail);
    let failed_at = Instant::now();
    assert_eq!(
        cache.token().await.unwrap_err().kind(),
        TokenErrorKind::Fetch
    );
    let retry_at = cache.token().await.unwrap_err().retry_at().unwrap();
    assert!(retry_at - failed_at <= SECOND);
}

#[tokio::test(start_paused = true)]
async fn a_failed_background_refresh_keeps_the_valid_token() {
    // 100 s tokens: due at 50 s, expired at 90 s.
    let script = Script::new(Some(100 * SECOND), Duration::ZERO);
    let client = client(script.cache(), Rejected::default());
    let t0 = Instant::now();
    assert_eq!(token_of(&client).await, "token-1");

    script.set(Next::Fail);
    sleep_until(t0 + 50 * SECOND + TICK).await;
    assert_eq!(token_of(&client).await, "token-1");
    tokio::task::yield_now().await;
    assert_eq!(
        script.fetches(),
        2,
        "the background refresh ran, and failed"
    );

    // Still served, and not refetched during the backoff.
    assert_eq!(token_of(&client).await, "token-1");
    assert_eq!(script.fetches(), 2);

    // After the backoff a later request tries again in the background.
    sleep_until(t0 + 52 * SECOND).await;
    assert_eq!(token_of(&client).await, "token-1");
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 3);

    // A success before expiry replaces it.
    script.set(Next::Token(Some(100 * SECOND)));
    sleep_until(t0 + 60 * SECOND).await;
    assert_eq!(token_of(&client).await, "token-1");
    tokio::task::yield_now().await;
    assert_eq!(token_of(&client).await, "token-4");
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_during_the_backoff_fails_fast() {
    let script = Script::new(Some(100 * SECOND), Duration::ZERO);
    let client = client(
        script.cache().backoff(120 * SECOND, 120 * SECOND),
        Rejected::default(),
    );
    let t0 = Instant::now();
    assert_eq!(token_of(&client).await, "token-1");

    // The background refresh at 50 s fails; the backoff outlasts the token.
    script.set(Next::Fail);
    sleep_until(t0 + 50 * SECOND + TICK).await;
    assert_eq!(token_of(&client).await, "token-1");
    tokio::task::yield_now().await;

    sleep_until(t0 + 90 * SECOND + TICK).await;
    let error = token_error(send(&client).await.unwrap_err());
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert_eq!(error.last_failure().kind(), TokenErrorKind::Fetch);
    assert_eq!(script.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn timeouts_and_invalid_tokens_count_as_failures() {
    for (next, kind) in [
        (Next::Hang, TokenErrorKind::Timeout),
        (Next::Invalid, TokenErrorKind::InvalidToken),
        (Next::Panic, TokenErrorKind::Panicked),
    ] {
        let script = Script::new(None, Duration::ZERO);
        script.set(next);
        let cache = script.cache();
        assert_eq!(cache.token().await.unwrap_err().kind(), kind);
        let error = cache.token().await.unwrap_err();
        assert_eq!(error.kind(), TokenErrorKind::BackingOff, "{kind:?}");
        assert_eq!(error.last_failure().kind(), kind);
        assert_eq!(script.fetches(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_fails_its_waiters_instead_of_hanging_them() {
    let script = Script::new(None, SECOND);
    script.set(Next::Panic);
    let client = client(script.cache(), Rejected::default());
    for result in send_concurrently(&client, 10).await {
        let error = token_error(result.unwrap_err());
        assert_eq!(error.kind(), TokenErrorKind::Panicked);
    }
    assert_eq!(script.fetches(), 1);
}

#[test]
fn outside_a_runtime_a_fetch_is_a_typed_error() {
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    let token = block_on_without_runtime(cache.token());
    assert_eq!(token.unwrap_err().kind(), TokenErrorKind::NoRuntime);
    assert_eq!(script.fetches(), 0);
}

/// Polls a future to completion without a tokio runtime.
fn block_on_without_runtime<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(output) = poll_once(future.as_mut()) {
            return output;
        }
    }
}

#[test]
fn a_runtime_that_is_shutting_down_refuses_the_fetch_without_a_deadlock() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let handle = runtime.handle().clone();
    runtime.shutdown_background();

    // Run the test on a thread of its own, so that a deadlock fails it
    // instead of hanging the suite.
    let (done, result) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _runtime = handle.enter();
        let script = Script::new(None, Duration::ZERO);
        let cache = script.cache();
        let first = block_on_without_runtime(cache.token()).map(|_| ());
        let second = block_on_without_runtime(cache.token()).map(|_| ());
        let _ = done.send((first, second));
    });
    let (first, second) = result
        .recv_timeout(Duration::from_secs(10))
        .expect("a fetch on a closed runtime deadlocked");
    assert_eq!(first.unwrap_err().kind(), TokenErrorKind::Abandoned);
    assert_eq!(second.unwrap_err().kind(), TokenErrorKind::Abandoned);
}

#[test]
fn a_fetch_dropped_with_its_runtime_before_it_ran_is_started_again() {
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };

    let first = runtime();
    {
        let _first = first.enter();
        // Starts the fetch on `first`, which is dropped before running it.
        let mut token = std::pin::pin!(cache.token());
        assert!(poll_once(token.as_mut()).is_pending());
    }
    drop(first);

    let token = runtime().block_on(cache.token()).unwrap();
    assert_eq!(token.secret(), "token-1");
    assert_eq!(script.fetches(), 1);
}

fn poll_once<F: std::future::Future>(future: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let waker = std::task::Waker::noop();
    future.poll(&mut std::task::Context::from_waker(waker))
}
