//! Behaviour 8: a 401 evicts the token that was sent, if it is still the
//! current one.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{
    client, client_over, echo, echo_after, send, send_concurrently, token_of, Next, Rejected,
    Script,
};
use http::{header::AUTHORIZATION, Request, Response, StatusCode};
use tokio::sync::Notify;
use tokio::time::{sleep_until, Instant};
use tower::{service_fn, BoxError, Layer, ServiceExt};
use tower_bearer::{BearerAuthLayer, TokenError, TokenErrorKind};

fn reject(rejected: &Rejected, token: &str) {
    rejected.lock().unwrap().push(format!("Bearer {token}"));
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_401s_causes_one_refresh() {
    let script = Script::new(None, Duration::from_secs(1));
    let rejected = Rejected::default();
    // Answers take a moment, so that all 100 requests go out with token-1.
    let inner = echo_after(rejected.clone(), Duration::from_millis(10));
    let client = client_over(script.cache(), inner);
    assert_eq!(token_of(&client).await, "token-1");

    reject(&rejected, "token-1");
    for result in send_concurrently(&client, 100).await {
        // The 401 goes back to the caller unchanged.
        let (status, auth) = result.unwrap();
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(auth, "Bearer token-1");
    }
    assert_eq!(script.fetches(), 1, "a 401 does not fetch by itself");

    // Later requests wait for the single refresh.
    for result in send_concurrently(&client, 100).await {
        assert_eq!(
            result.unwrap(),
            (StatusCode::OK, "Bearer token-2".to_owned())
        );
    }
    assert_eq!(script.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_late_401_never_evicts_the_successor() {
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    // token-1 is answered 401; a request marked `slow` only when released.
    let release = Arc::new(Notify::new());
    let inner = service_fn({
        let release = release.clone();
        move |request: Request<()>| {
            let auth = request.headers()[AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            let slow = request.headers().contains_key("slow");
            let release = release.clone();
            async move {
                if slow {
                    release.notified().await;
                }
                let mut response = Response::new(auth.clone());
                if auth == "Bearer token-1" {
                    *response.status_mut() = StatusCode::UNAUTHORIZED;
                }
                Ok::<_, BoxError>(response)
            }
        }
    });
    let client = BearerAuthLayer::from_cache(cache.clone()).layer(inner);
    // token-1 first, so that both requests below are sent with it: a request
    // still waiting when its token is evicted looks up again (#20).
    cache.token().await.unwrap();

    let mut request = Request::new(());
    request.headers_mut().insert("slow", "1".parse().unwrap());
    let slow = tokio::spawn(client.clone().oneshot(request));
    let fast = tokio::spawn(client.clone().oneshot(Request::new(())));
    assert_eq!(fast.await.unwrap().unwrap().status(), 401);
    // token-1 is evicted; the next request gets token-2.
    let response = client.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.body(), "Bearer token-2");

    // The late 401 for token-1 leaves token-2 alone.
    release.notify_one();
    let late = slow.await.unwrap().unwrap();
    assert_eq!(
        (late.status(), late.body().as_str()),
        (StatusCode::UNAUTHORIZED, "Bearer token-1")
    );
    let response = client.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.body(), "Bearer token-2");
    assert_eq!(script.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_401_does_not_bypass_the_backoff() {
    // 100 s tokens: the background refresh at 50 s fails and backs off.
    let script = Script::new(Some(Duration::from_secs(100)), Duration::ZERO);
    let rejected = Rejected::default();
    let client = client(
        script
            .cache()
            .backoff(Duration::from_secs(20), Duration::from_secs(20)),
        rejected.clone(),
    );
    let t0 = Instant::now();
    assert_eq!(token_of(&client).await, "token-1");
    script.set(Next::Fail);
    sleep_until(t0 + Duration::from_secs(50) + Duration::from_millis(1)).await;
    assert_eq!(token_of(&client).await, "token-1");
    tokio::task::yield_now().await;
    assert_eq!(script.fetches(), 2);

    // The server now rejects token-1: it is evicted, and during the backoff
    // the next request fails fast instead of fetching.
    reject(&rejected, "token-1");
    assert_eq!(send(&client).await.unwrap().0, StatusCode::UNAUTHORIZED);
    let error = send(&client).await.unwrap_err();
    let error = error.downcast_ref::<TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert_eq!(script.fetches(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_401_to_a_request_with_its_own_header_evicts_nothing() {
    let script = Script::new(None, Duration::ZERO);
    let rejected = Rejected::default();
    reject(&rejected, "theirs");
    let cache = script.cache();
    let client = BearerAuthLayer::from_cache(cache.clone())
        .keep_existing(true)
        .layer(echo(rejected));
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");

    let mut request = Request::new(());
    request
        .headers_mut()
        .insert(AUTHORIZATION, "Bearer theirs".parse().unwrap());
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");
    assert_eq!(script.fetches(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalidate_evicts_only_the_current_token() {
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    let first = cache.token().await.unwrap();
    assert!(cache.invalidate(&first));
    assert!(!cache.invalidate(&first), "already evicted");
    let second = cache.token().await.unwrap();
    assert_eq!(second.secret(), "token-2");
    assert!(
        !cache.invalidate(&first),
        "a stale token leaves its successor"
    );
    assert_eq!(cache.token().await.unwrap().secret(), "token-2");

    // A token of another cache, or made by hand, matches nothing.
    let other = script.cache().token().await.unwrap();
    assert!(!cache.invalidate(&other));
    assert!(!cache.invalidate(&tower_bearer::Token::new("token-2")));
    assert_eq!(script.fetches(), 3);
}

/// Many threads, a server that revokes each token after a while: every
/// revocation costs exactly one fetch, however many requests see the 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_load_each_revoked_token_causes_exactly_one_refresh() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const TASKS: usize = 16;
    const REQUESTS: usize = 500;
    const USES: usize = 50;

    struct Server {
        uses: Mutex<std::collections::HashMap<String, usize>>,
        revoked: AtomicUsize,
    }
    let server = Arc::new(Server {
        uses: Mutex::default(),
        revoked: AtomicUsize::new(0),
    });
    let inner = service_fn({
        let server = server.clone();
        move |request: Request<()>| {
            let auth = request.headers()[AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            let mut uses = server.uses.lock().unwrap();
            let count = uses.entry(auth.clone()).or_default();
            *count += 1;
            // The USES-th use revokes the token; it and later ones get 401.
            let status = if *count < USES {
                StatusCode::OK
            } else {
                if *count == USES {
                    server.revoked.fetch_add(1, Ordering::SeqCst);
                }
                StatusCode::UNAUTHORIZED
            };
            drop(uses);
            let mut response = Response::new(auth);
            *response.status_mut() = status;
            async move {
                // Let other requests overtake this one, so that 401s arrive
                // late, after their token was replaced.
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                Ok::<_, std::convert::Infallible>(response)
            }
        }
    });
    let script = Script::new(None, Duration::ZERO);
    // Fresh tokens rejected back to back are paced (#20); a zero backoff
    // turns that off, for a test of what each rejection does.
    let cache = script.cache().backoff(Duration::ZERO, Duration::ZERO);
    let client = BearerAuthLayer::from_cache(cache.clone()).layer(inner);

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..TASKS {
        let client = client.clone();
        tasks.spawn(async move {
            let mut unauthorized = 0;
            for _ in 0..REQUESTS {
                let response = client.clone().oneshot(Request::new(())).await.unwrap();
                if response.status() == StatusCode::UNAUTHORIZED {
                    unauthorized += 1;
                }
            }
            unauthorized
        });
    }
    let mut unauthorized = 0;
    while let Some(task) = tasks.join_next().await {
        unauthorized += task.unwrap();
    }

    let revoked = server.revoked.load(Ordering::SeqCst);
    assert!(
        revoked > 10,
        "the test should revoke many tokens: {revoked}"
    );
    // More 401s than revocations: some tokens were answered 401 several
    // times, the case this test is about...
    assert!(
        unauthorized > revoked,
        "{unauthorized} 401s for {revoked} revocations: no token saw two"
    );
    // ...and yet each revoked token was evicted once, late 401s none.
    assert_eq!(cache.stats().invalidations, revoked as u64);
    // The current token may be revoked by the very last request, with no
    // request after it to fetch a new one.
    let fetches = script.fetches();
    assert!(
        fetches == revoked || fetches == revoked + 1,
        "{fetches} fetches for {revoked} revocations"
    );
}
