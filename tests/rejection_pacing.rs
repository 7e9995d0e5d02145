//! A resource that rejects every token (a wrong audience, a revoked grant,
//! `nbf` ahead of the resource's clock) must not turn every request into a
//! token request (#20, item 1). Each adapter sends requests back to back
//! for 3 s of tokio's paused clock to a real loopback server that answers
//! `401` (or gRPC `UNAUTHENTICATED`) to everything: the tower layer over a
//! hyper-util client, the keyed layer (per key), `.grpc()` over a tonic
//! `Channel`, and the reqwest middleware. All of them reach the cache's one
//! eviction path, so all of them are paced by the same rule: at most 5 token
//! requests in 3 s, the requests in between failing with
//! [`TokenErrorKind::Rejected`] without being sent.

use std::convert::Infallible;
use std::error::Error;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_bearer::{
    BearerAuthLayer, KeyedTokenCache, Token, TokenCache, TokenError, TokenErrorKind, TokenSource,
};

/// Token requests allowed in 3 s of back-to-back rejected requests.
const AT_MOST: usize = 5;

/// A token source that counts its fetches. Its tokens never expire, so
/// that no timer of theirs moves the paused clock while a request is on
/// the wire.
fn counted(fetches: &Arc<AtomicUsize>) -> impl TokenSource {
    let fetches = fetches.clone();
    move || {
        let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, Infallible>(Token::new(format!("token-{n}"))) }
    }
}

/// A loopback HTTP/1 server that answers `401 Unauthorized` to everything,
/// counting the requests that reach it.
async fn rejecting_server(seen: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let reject = hyper::service::service_fn(move |_: Request<_>| {
                    seen.fetch_add(1, Ordering::SeqCst);
                    async {
                        let mut response = Response::new(Full::<Bytes>::default());
                        *response.status_mut() = StatusCode::UNAUTHORIZED;
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), reject)
                    .await;
            });
        }
    });
    addr
}

/// The [`TokenError`] somewhere in `error`'s chain.
fn token_error<'a>(mut error: &'a (dyn Error + 'static)) -> Option<&'a TokenError> {
    loop {
        if let Some(found) = error.downcast_ref::<TokenError>() {
            return Some(found);
        }
        error = error.source()?;
    }
}

/// What 3 s of back-to-back requests did.
#[derive(Debug, Default)]
struct Run {
    /// Requests the resource answered with a rejection.
    rejected: usize,
    /// Requests that failed with `Rejected` and were not sent.
    paced: usize,
}

/// Sends a request, then another 10 ms later, for 3 s of the paused clock.
/// `send` returns whether the resource rejected the request; a request
/// that fails must fail with `Rejected`.
async fn back_to_back<F, Fut>(mut send: F) -> Run
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<bool, BoxError>>,
{
    let end = Instant::now() + Duration::from_secs(3);
    let mut run = Run::default();
    while Instant::now() < end {
        match send().await {
            Ok(rejected) => {
                assert!(rejected, "the resource rejects every token");
                run.rejected += 1;
            }
            Err(error) => {
                let kind = token_error(&*error).map(TokenError::kind);
                assert_eq!(kind, Some(TokenErrorKind::Rejected), "{error}");
                run.paced += 1;
            }
        }
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    run
}

/// `sent`: the requests the resource saw (a `401` retry sends twice).
fn assert_paced(run: &Run, fetches: &AtomicUsize, sent: usize) {
    let fetches = fetches.load(Ordering::SeqCst);
    eprintln!("{fetches} token requests in 3 s: {run:?}");
    assert!(
        fetches <= AT_MOST,
        "{fetches} token requests in 3 s: {run:?}"
    );
    // The run did exercise the rule: tokens were sent and rejected, the
    // first rejection fetched at once, and requests were then held back.
    assert!(fetches >= 2, "{fetches} token requests: {run:?}");
    assert!(sent >= fetches, "{sent} sent: {run:?}");
    assert!(run.paced > 0, "{run:?}");
}

/// The tower layer over a real hyper-util client.
#[tokio::test(start_paused = true)]
async fn the_tower_layer_paces_rejections() {
    let (fetches, seen) = (Arc::default(), Arc::default());
    let addr = rejecting_server(Arc::clone(&seen)).await;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(counted(&fetches)))
        .service(client);
    let url = format!("http://{addr}/");
    let run = back_to_back(|| {
        let svc = svc.clone();
        let request = Request::get(url.as_str()).body(Full::default()).unwrap();
        async move {
            let response = svc.oneshot(request).await?;
            Ok(response.status() == StatusCode::UNAUTHORIZED)
        }
    })
    .await;
    assert_paced(&run, &fetches, seen.load(Ordering::SeqCst));
    assert_eq!(seen.load(Ordering::SeqCst), run.rejected);
}

/// The keyed layer, per key: one key's rejections pace that key only.
#[tokio::test(start_paused = true)]
async fn the_keyed_layer_paces_rejections_per_key() {
    let (fetches, other_fetches, seen) = (Arc::default(), Arc::default(), Arc::default());
    let addr = rejecting_server(Arc::clone(&seen)).await;
    let cache = KeyedTokenCache::new({
        let (fetches, other_fetches) = (Arc::clone(&fetches), Arc::clone(&other_fetches));
        move |key: &String| match key.as_str() {
            "rejected" => counted(&fetches),
            _ => counted(&other_fetches),
        }
    });
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::keyed(cache.clone(), |head| {
            Some(head.uri().path().trim_start_matches('/').to_owned())
        }))
        .service(client);
    let url = format!("http://{addr}/rejected");
    let run = back_to_back(|| {
        let svc = svc.clone();
        let request = Request::get(url.as_str()).body(Full::default()).unwrap();
        async move {
            let response = svc.oneshot(request).await?;
            Ok(response.status() == StatusCode::UNAUTHORIZED)
        }
    })
    .await;
    assert_paced(&run, &fetches, seen.load(Ordering::SeqCst));

    // Another key is not held back by the first one's backoff.
    assert_eq!(other_fetches.load(Ordering::SeqCst), 0);
    let token = cache.token(&"other".to_owned()).await.unwrap();
    assert_eq!(token.secret(), "token-1");
    let error = cache.token(&"rejected".to_owned()).await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Rejected);
}

/// `.grpc()` over a tonic `Channel`: `UNAUTHENTICATED` in a trailers-only
/// response, from a real tonic server's interceptor.
#[cfg(feature = "grpc")]
#[tokio::test(start_paused = true)]
async fn grpc_unauthenticated_is_paced() {
    use tonic::service::interceptor::InterceptedService;
    use tonic::transport::server::TcpIncoming;
    use tonic::transport::{Endpoint, Server};
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let (fetches, seen) = (Arc::<AtomicUsize>::default(), Arc::<AtomicUsize>::default());
    let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (_reporter, health) = tonic_health::server::health_reporter();
    let rejecting = InterceptedService::new(health, {
        let seen = seen.clone();
        move |_: tonic::Request<()>| {
            seen.fetch_add(1, Ordering::SeqCst);
            Err(tonic::Status::unauthenticated("wrong audience"))
        }
    });
    tokio::spawn(
        Server::builder()
            .add_service(rejecting)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let cache = TokenCache::new(counted(&fetches));
    let client = HealthClient::new(
        ServiceBuilder::new()
            .layer(BearerAuthLayer::from_cache(cache).grpc())
            .service(channel),
    );
    let run = back_to_back(|| {
        let mut client = client.clone();
        async move {
            match client.check(HealthCheckRequest::default()).await {
                Ok(_) => Ok(false),
                Err(status) if status.code() == tonic::Code::Unauthenticated => Ok(true),
                Err(status) => Err(status.into()),
            }
        }
    })
    .await;
    assert_paced(&run, &fetches, seen.load(Ordering::SeqCst));
    assert_eq!(seen.load(Ordering::SeqCst), run.rejected);
}

/// The reqwest middleware, with a real reqwest client.
#[cfg(feature = "reqwest-middleware")]
#[tokio::test(start_paused = true)]
async fn the_reqwest_middleware_paces_rejections() {
    use tower_bearer::BearerAuthMiddleware;

    let (fetches, seen) = (Arc::default(), Arc::default());
    let addr = rejecting_server(Arc::clone(&seen)).await;
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::new(counted(&fetches)))
        .build();
    let url = format!("http://{addr}/");
    let run = back_to_back(|| {
        let request = client.get(url.as_str());
        async move {
            match request.send().await {
                Ok(response) => Ok(response.status() == StatusCode::UNAUTHORIZED),
                Err(reqwest_middleware::Error::Middleware(error)) => {
                    match error.downcast_ref::<TokenError>() {
                        Some(token_error) => Err(Box::new(token_error.clone()) as BoxError),
                        None => Err(error.into()),
                    }
                }
                Err(error) => Err(error.into()),
            }
        }
    })
    .await;
    assert_paced(&run, &fetches, seen.load(Ordering::SeqCst));
    // The middleware retries a 401 once, with a new token: each token
    // fetched is sent once, and a retry that finds the backoff running
    // fails as a paced request does.
    let sent = seen.load(Ordering::SeqCst);
    assert_eq!(sent, fetches.load(Ordering::SeqCst), "{run:?}");
}

/// Readiness is unchanged: a paced request fails from `call`, after the
/// inner service was made ready, as any token error does.
#[tokio::test(start_paused = true)]
async fn a_paced_request_is_an_error_from_the_layer_not_a_hang() {
    let fetches = Arc::default();
    let cache = TokenCache::new(counted(&fetches));
    let mut svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(tower::service_fn(|_: Request<()>| async {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            Ok::<_, Infallible>(response)
        }));
    for _ in 0..2 {
        let response = svc.ready().await.unwrap().call(Request::new(())).await;
        assert_eq!(response.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    let error = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap_err();
    let error = error.downcast_ref::<TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::Rejected);
    assert!(error.retry_at().is_some_and(|at| at > Instant::now()));
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
}
