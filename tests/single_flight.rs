//! Behaviours 1 and 6: one fetch for any number of concurrent requests, and a
//! fetch that outlives the request that started it, but not the cache.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{client, send, token_of, Next, Rejected, Script};
use tokio::sync::Notify;
use tower_bearer::{Token, TokenCache};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_requests_at_cold_start_cause_one_fetch() {
    const N: usize = 10_000;
    let fetches = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let cache = TokenCache::new({
        let (fetches, release) = (fetches.clone(), release.clone());
        move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            let release = release.clone();
            async move {
                // Held until every request has been sent.
                release.notified().await;
                Ok::<_, std::io::Error>(Token::new("the-token"))
            }
        }
    });
    let client = client(cache, Rejected::default());

    let started = Arc::new(AtomicUsize::new(0));
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..N {
        let (client, started) = (client.clone(), started.clone());
        requests.spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            send(&client).await
        });
    }
    while started.load(Ordering::SeqCst) < N {
        tokio::task::yield_now().await;
    }
    // The fetch may not have started yet; keep releasing until it is done.
    let releaser = tokio::spawn(async move {
        loop {
            release.notify_waiters();
            tokio::task::yield_now().await;
        }
    });

    let mut served = 0;
    while let Some(result) = requests.join_next().await {
        let (status, auth) = result.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(auth, "Bearer the-token");
        served += 1;
    }
    releaser.abort();
    assert_eq!(served, N);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn concurrent_token_calls_share_one_fetch() {
    let script = Script::new(None, Duration::from_secs(1));
    let cache = script.cache();
    let tokens: Vec<_> = (0..100)
        .map(|_| {
            let cache = cache.clone();
            tokio::spawn(async move { cache.token().await })
        })
        .collect();
    for token in tokens {
        assert_eq!(token.await.unwrap().unwrap().secret(), "token-1");
    }
    assert_eq!(script.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn dropping_the_request_that_started_the_fetch_cancels_nothing() {
    let script = Script::new(None, Duration::from_secs(5));
    let client = client(script.cache(), Rejected::default());

    // The first request starts the fetch and is then abandoned.
    let first = tokio::time::timeout(Duration::from_secs(1), send(&client)).await;
    assert!(first.is_err(), "the first request should still be waiting");

    // A second request joins the same fetch, which finishes on time.
    let before = tokio::time::Instant::now();
    assert_eq!(token_of(&client).await, "token-1");
    assert_eq!(before.elapsed(), Duration::from_secs(4));
    assert_eq!(script.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_finishes_even_when_nobody_waits_for_it() {
    let script = Script::new(None, Duration::from_secs(5));
    let client = client(script.cache(), Rejected::default());

    let first = tokio::time::timeout(Duration::from_secs(1), send(&client)).await;
    assert!(first.is_err());
    tokio::time::sleep(Duration::from_secs(10)).await;

    // The result was cached: no wait, no second fetch.
    let before = tokio::time::Instant::now();
    assert_eq!(token_of(&client).await, "token-1");
    assert_eq!(before.elapsed(), Duration::ZERO);
    assert_eq!(script.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_request_timeout_does_not_bound_the_fetch() {
    use tower::ServiceExt;

    let script = Script::new(None, Duration::from_secs(5));
    let client = client(script.cache(), Rejected::default());
    let impatient = tower::timeout::Timeout::new(client.clone(), Duration::from_secs(1));

    let error = impatient.oneshot(http::Request::new(())).await.unwrap_err();
    assert!(error.is::<tower::timeout::error::Elapsed>());

    // The fetch it started runs on with its own, longer timeout.
    assert_eq!(token_of(&client).await, "token-1");
    assert_eq!(script.fetches(), 1);
}

fn alive_tasks() -> usize {
    tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks()
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn no_task_lingers_once_every_handle_is_gone() {
    let script = Script::new(None, Duration::ZERO);
    script.set(Next::Hang);
    let cache = script.cache();
    let client = client(cache.clone(), Rejected::default());

    let request = tokio::spawn({
        let client = client.clone();
        async move { send(&client).await }
    });
    settle().await;
    assert_eq!(alive_tasks(), 2, "the request and the fetch");

    request.abort();
    settle().await;
    assert_eq!(alive_tasks(), 1, "the fetch outlives the request");

    drop((cache, client));
    settle().await;
    assert_eq!(alive_tasks(), 0, "the fetch is abandoned with the cache");
}

#[tokio::test(start_paused = true)]
async fn a_cached_token_keeps_no_task_alive() {
    // Its due point is a timer registered with the runtime's driver, not a
    // task, and it goes with the entry.
    let script = Script::new(Some(Duration::from_secs(3600)), Duration::ZERO);
    let cache = script.cache();
    cache.token().await.unwrap();
    settle().await;
    assert_eq!(alive_tasks(), 0);
    drop(cache);
    tokio::time::advance(Duration::from_secs(7200)).await;
    assert_eq!(alive_tasks(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_keeps_its_fetch_alive() {
    let script = Script::new(None, Duration::from_secs(2));
    let cache = script.cache();
    let waiting = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token().await }
    });
    settle().await;
    // Every other handle goes; the waiting request still gets its token.
    drop(cache);
    let token = waiting.await.unwrap().unwrap();
    assert_eq!(token.secret(), "token-1");
}
