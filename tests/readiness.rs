//! Behaviour 7: tower readiness. `poll_ready` forwards to the inner service,
//! and a request that waits for a token takes the instance that was made
//! ready with it, so that `Buffer`, `ConcurrencyLimit` and `tower_test::mock`
//! (each of which panics when called without readiness) work behind the
//! middleware. Also: inner errors pass through untouched, token failures are
//! a `TokenError`, and with a fresh token the inner service is called inside
//! `call`, before anything is awaited (behaviour 2).

use std::convert::Infallible;
use std::fmt;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::buffer::Buffer;
use tower::limit::ConcurrencyLimit;
use tower::{service_fn, BoxError, Service, ServiceExt};
use tower_bearer::{BearerAuth, Token, TokenCache, TokenError, TokenErrorKind, TokenSource};
use tower_test::mock;

mod common;

use common::Echo;

const TOKEN: &str = "t0k3n";
const BEARER: &str = "Bearer t0k3n";
const FETCH_TIME: Duration = Duration::from_secs(1);
const REQUESTS: usize = 8;

/// A token source that takes [`FETCH_TIME`] and counts its fetches.
fn slow_source(fetches: &Arc<AtomicUsize>) -> impl TokenSource {
    let fetches = Arc::clone(fetches);
    move || {
        fetches.fetch_add(1, Ordering::SeqCst);
        async {
            tokio::time::sleep(FETCH_TIME).await;
            Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
        }
    }
}

/// An error of the inner service, to be recovered by downcasting.
#[derive(Debug, PartialEq, Eq)]
struct Refused {
    code: u16,
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused with {}", self.code)
    }
}

impl std::error::Error for Refused {}

/// Polls `poll_ready` exactly once.
async fn poll_ready_once<S, R>(svc: &mut S) -> Poll<Result<(), S::Error>>
where
    S: Service<R>,
{
    poll_fn(|cx| Poll::Ready(svc.poll_ready(cx))).await
}

/// Sends [`REQUESTS`] concurrent requests at cold start through `inner`
/// (each `oneshot` on a clone, on a task of its own), calls `during_fetch`
/// halfway through the fetch, and checks that every request carried the one
/// token.
async fn burst_at_cold_start<S>(inner: S, during_fetch: impl FnOnce())
where
    S: Service<Request<()>, Response = Response<http::HeaderMap>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let fetches = Arc::default();
    let svc = BearerAuth::new(inner, TokenCache::new(slow_source(&fetches)));
    let started = Instant::now();

    let mut requests = JoinSet::new();
    for _ in 0..REQUESTS {
        requests.spawn(svc.clone().oneshot(Request::new(())));
    }
    tokio::time::sleep(FETCH_TIME / 2).await;
    during_fetch();

    while let Some(joined) = requests.join_next().await {
        let response = joined
            .expect("the inner service was called without readiness")
            .expect("every request gets the token");
        assert_eq!(response.body()[AUTHORIZATION], BEARER);
    }
    assert!(
        started.elapsed() >= FETCH_TIME,
        "the requests waited for the fetch"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn buffer_behind_waiting_requests_is_called_on_the_ready_instance() {
    let echo = Echo::default();
    // Room for every request, so that all of them wait for the token.
    let inner = Buffer::new(echo.clone(), REQUESTS);
    burst_at_cold_start(inner, || assert_eq!(echo.calls(), 0)).await;
    assert_eq!(echo.calls(), REQUESTS);
}

#[tokio::test(start_paused = true)]
async fn concurrency_limit_permits_are_held_by_the_waiting_requests() {
    // Room for every request, and for fewer than the burst.
    for permits in [REQUESTS, 2] {
        let echo = Echo::default();
        let semaphore = Arc::new(Semaphore::new(permits));
        let inner = ConcurrencyLimit::with_semaphore(echo.clone(), Arc::clone(&semaphore));
        burst_at_cold_start(inner, || {
            // Each waiting request took the permit its `poll_ready` acquired.
            assert_eq!(semaphore.available_permits(), 0);
            assert_eq!(echo.calls(), 0);
        })
        .await;
        assert_eq!(echo.calls(), REQUESTS);
        assert_eq!(semaphore.available_permits(), permits);
    }
}

#[tokio::test(start_paused = true)]
async fn the_permit_of_a_waiting_request_is_not_left_in_the_service() {
    let echo = Echo::default();
    let fetches = Arc::default();
    let mut svc = BearerAuth::new(
        ConcurrencyLimit::new(echo.clone(), 1),
        TokenCache::new(slow_source(&fetches)),
    );

    svc.ready().await.unwrap();
    let first = tokio::spawn(svc.call(Request::new(())));
    // The only permit went with the request; the service keeps an unready clone.
    assert!(poll_ready_once(&mut svc).await.is_pending());

    let response = first.await.unwrap().unwrap();
    assert_eq!(response.body()[AUTHORIZATION], BEARER);
    // The permit came back with the response.
    svc.ready().await.unwrap();
    let response = svc.call(Request::new(())).await.unwrap();
    assert_eq!(response.body()[AUTHORIZATION], BEARER);
    assert_eq!(echo.calls(), 2);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn mock_receives_the_request_once_the_token_arrives() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<&'static str>>();
    let fetches = Arc::default();
    let mut svc = BearerAuth::new(inner, TokenCache::new(slow_source(&fetches)));

    handle.allow(1);
    svc.ready().await.unwrap();
    let started = Instant::now();
    let response = svc.call(Request::new(()));
    assert!(
        handle.poll_request().is_pending(),
        "nothing is sent without a token"
    );

    let mut response = tokio::spawn(response);
    let (request, respond) = tokio::select! {
        request = handle.next_request() => request.unwrap(),
        finished = &mut response => panic!("finished without reaching the mock: {finished:?}"),
    };
    assert!(started.elapsed() >= FETCH_TIME);
    assert_eq!(request.headers()[AUTHORIZATION], BEARER);
    assert_eq!(request.headers().get_all(AUTHORIZATION).iter().count(), 1);

    respond.send_response(Response::new("done"));
    let response = response.await.unwrap().unwrap();
    assert_eq!(*response.body(), "done");
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn mock_on_the_hot_path_is_called_inside_call() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<&'static str>>();
    let fetches = Arc::default();
    let cache = TokenCache::new(slow_source(&fetches));
    cache.token().await.unwrap();
    let mut svc = BearerAuth::new(inner, cache);

    handle.allow(1);
    svc.ready().await.unwrap();
    let response = svc.call(Request::new(()));
    // Sent before the response future was ever polled.
    let Poll::Ready(Some((request, respond))) = handle.poll_request() else {
        panic!("a fresh token sends the request from within `call`");
    };
    assert_eq!(request.headers()[AUTHORIZATION], BEARER);
    respond.send_response(Response::new("done"));
    assert_eq!(*response.await.unwrap().body(), "done");

    // The one allowance is spent: the inner's `Pending` reaches the caller.
    assert!(poll_ready_once(&mut svc).await.is_pending());
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn fresh_token_calls_the_inner_service_inside_call() {
    let echo = Echo::default();
    let fetches = Arc::default();
    let mut svc = BearerAuth::new(echo.clone(), TokenCache::new(slow_source(&fetches)));

    // Cold: the request waits, the inner service is not called yet.
    let waiting = svc.ready().await.unwrap().call(Request::new(()));
    assert_eq!(echo.calls(), 0);
    waiting.await.unwrap();
    assert_eq!(echo.calls(), 1);

    // Fresh: nothing awaited before the inner service is called.
    let fresh = svc.ready().await.unwrap().call(Request::new(()));
    assert_eq!(echo.calls(), 2);
    assert_eq!(fresh.await.unwrap().body()[AUTHORIZATION], BEARER);
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn poll_ready_forwards_pending_and_errors() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let fetches = Arc::default();
    let mut svc = BearerAuth::new(inner, TokenCache::new(slow_source(&fetches)));

    handle.allow(0);
    assert!(poll_ready_once(&mut svc).await.is_pending());

    handle.allow(1);
    assert!(matches!(
        poll_ready_once(&mut svc).await,
        Poll::Ready(Ok(()))
    ));

    handle.send_error(Refused { code: 429 });
    let Poll::Ready(Err(error)) = poll_ready_once(&mut svc).await else {
        panic!("the inner's poll_ready error reaches the caller");
    };
    assert_eq!(
        error.downcast_ref::<Refused>(),
        Some(&Refused { code: 429 })
    );
    assert!(error.downcast_ref::<TokenError>().is_none());
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_unchanged() {
    let fetches = Arc::default();
    let inner =
        service_fn(|_: Request<()>| async { Err::<Response<()>, _>(Refused { code: 503 }) });
    let mut svc = BearerAuth::new(inner, TokenCache::new(slow_source(&fetches)));

    // Once after waiting for the token, once on the hot path.
    for _ in 0..2 {
        let error = svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(()))
            .await
            .unwrap_err();
        assert_eq!(
            error.downcast_ref::<Refused>(),
            Some(&Refused { code: 503 })
        );
        assert!(error.downcast_ref::<TokenError>().is_none());
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_from_the_mock_pass_through_unchanged() {
    let (inner, mut handle) = mock::pair::<Request<()>, Response<()>>();
    let fetches = Arc::default();
    let mut svc = BearerAuth::new(inner, TokenCache::new(slow_source(&fetches)));

    svc.ready().await.unwrap();
    let mut response = tokio::spawn(svc.call(Request::new(())));
    let (_, respond) = tokio::select! {
        request = handle.next_request() => request.unwrap(),
        finished = &mut response => panic!("finished without reaching the mock: {finished:?}"),
    };
    respond.send_error(Refused { code: 502 });
    let error = response.await.unwrap().unwrap_err();
    assert_eq!(
        error.downcast_ref::<Refused>(),
        Some(&Refused { code: 502 })
    );
}

#[tokio::test(start_paused = true)]
async fn token_failures_are_token_errors_and_send_nothing() {
    let echo = Echo::default();
    let source = || async {
        tokio::time::sleep(FETCH_TIME).await;
        Err::<Token, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "identity provider down",
        ))
    };
    let mut svc = BearerAuth::new(echo.clone(), TokenCache::new(source));

    let error = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    let token_error = error.downcast_ref::<TokenError>().expect("a TokenError");
    assert_eq!(token_error.kind(), TokenErrorKind::Fetch);
    let io = std::error::Error::source(token_error)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .expect("the source's error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    assert!(error.downcast_ref::<std::io::Error>().is_none());
    assert_eq!(echo.calls(), 0);

    // The service stays usable: readiness is still forwarded.
    assert!(matches!(
        poll_ready_once(&mut svc).await,
        Poll::Ready(Ok(()))
    ));
}
