//! `BearerAuthLayer::grpc` in front of a tonic `Channel`, against a real
//! tonic server over loopback that revokes tokens mid-run: `UNAUTHENTICATED`
//! in the headers (trailers-only, from an interceptor) and in the trailers
//! (a server stream that ends with it after a message).

#[path = "../examples/support/grpc.rs"]
mod grpc;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Barrier};
use tokio::task::{JoinHandle, JoinSet};
use tonic::body::Body;
use tonic::client::GrpcService;
use tonic::codegen::tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_bearer::grpc::{GrpcAuth, ReplayBody, ResponseBody, RetryOnUnauthenticated};
use tower_bearer::{BearerAuth, BearerAuthLayer, TokenCache};

use grpc::Issuer;

type Client = HealthClient<GrpcAuth<BearerAuth<Channel>>>;

fn client(channel: Channel, cache: &TokenCache) -> Client {
    HealthClient::new(
        ServiceBuilder::new()
            .layer(BearerAuthLayer::from_cache(cache.clone()).grpc())
            .service(channel),
    )
}

async fn check(client: &mut Client) -> Result<ServingStatus, Status> {
    let response = client.check(HealthCheckRequest::default()).await?;
    Ok(response.into_inner().status())
}

// ===== the server =====

/// A health service whose `Watch` streams `SERVING`, then, once the tokens
/// are revoked, ends the call with `UNAUTHENTICATED` in the trailers.
#[derive(Clone)]
struct Revocable {
    revoked: watch::Receiver<u64>,
}

#[tonic::async_trait]
impl Health for Revocable {
    /// `SERVING` for the whole server and for [`long_name`], so that a
    /// retried call shows that its body was sent again whole.
    async fn check(
        &self,
        request: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<HealthCheckResponse>, Status> {
        let service = &request.get_ref().service;
        if service.is_empty() || *service == long_name() {
            return Ok(tonic::Response::new(serving()));
        }
        Err(Status::not_found(format!("unknown service {service:?}")))
    }

    type WatchStream = ReceiverStream<Result<HealthCheckResponse, Status>>;

    async fn watch(
        &self,
        _: tonic::Request<HealthCheckRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, Status> {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let mut revoked = self.revoked.clone();
        revoked.mark_unchanged();
        tokio::spawn(async move {
            let _ = tx.send(Ok(serving())).await;
            let _ = revoked.changed().await;
            let _ = tx.send(Err(Status::unauthenticated("token revoked"))).await;
        });
        Ok(tonic::Response::new(ReceiverStream::new(rx)))
    }
}

/// A service name of 700 bytes.
fn long_name() -> String {
    "orders.v1.Orders/".repeat(700 / 17) + "0123456"
}

fn serving() -> HealthCheckResponse {
    HealthCheckResponse {
        status: ServingStatus::Serving as i32,
    }
}

/// The server's side of a test: the issuer, the revocation signal for open
/// streams, and a gate that can hold calls until enough are in flight.
struct Backend {
    issuer: Issuer,
    revoke: watch::Sender<u64>,
    gate: Gate,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Backend {
    async fn start() -> Result<Self, BoxError> {
        let issuer = Issuer::new(Duration::from_secs(3600), Duration::from_millis(10));
        let (revoke, revoked) = watch::channel(0);
        let gate = Gate::default();
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let checker = issuer.clone();
        let health = InterceptedService::new(HealthServer::new(Revocable { revoked }), move |r| {
            checker.check(r)
        });
        let server = Server::builder()
            .layer(tower::layer::layer_fn({
                let gate = gate.clone();
                move |inner| Gated {
                    inner,
                    gate: gate.clone(),
                }
            }))
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener));
        let server = tokio::spawn(async move {
            if let Err(error) = server.await {
                eprintln!("grpc server: {error}");
            }
        });
        Ok(Self {
            issuer,
            revoke,
            gate,
            addr,
            server,
        })
    }

    /// Revokes every token issued so far, and ends every open stream with
    /// `UNAUTHENTICATED`.
    fn revoke(&self) {
        self.issuer.revoke_all();
        self.revoke.send_modify(|n| *n += 1);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Holds the next `n` calls until all `n` have arrived, so that they were
/// all sent with the same token.
#[derive(Clone, Default)]
struct Gate(Arc<Mutex<Option<Held>>>);

/// How many calls are still to be held, and where they wait.
type Held = (usize, Arc<Barrier>);

impl Gate {
    fn hold(&self, n: usize) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((n, Arc::new(Barrier::new(n))));
    }

    fn barrier(&self) -> Option<Arc<Barrier>> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let (left, barrier) = held.as_mut()?;
        let barrier = barrier.clone();
        *left -= 1;
        if *left == 0 {
            *held = None;
        }
        Some(barrier)
    }
}

#[derive(Clone)]
struct Gated<S> {
    inner: S,
    gate: Gate,
}

impl<S, B> Service<http::Request<B>> for Gated<S>
where
    S: Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let barrier = self.gate.barrier();
        let inner = self.inner.clone();
        Box::pin(async move {
            if let Some(barrier) = barrier {
                barrier.wait().await;
            }
            inner.oneshot(request).await
        })
    }
}

async fn setup() -> Result<(Backend, TokenCache, Client), BoxError> {
    let backend = Backend::start().await?;
    let cache = TokenCache::new(backend.issuer.source());
    let mut client = client(grpc::channel(backend.addr).await?, &cache);
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 1);
    Ok((backend, cache, client))
}

// ===== UNAUTHENTICATED in the headers =====

/// The interceptor rejects the revoked token: a trailers-only response. It
/// evicts the token, and the next call goes out with a new one.
#[tokio::test]
async fn unauthenticated_in_the_headers_evicts_the_token() -> Result<(), BoxError> {
    let (backend, cache, mut client) = setup().await?;
    backend.revoke();
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "unknown token");
    assert_eq!(cache.stats().invalidations, 1);

    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 2);
    Ok(())
}

/// 50 calls in flight with the revoked token, all rejected: one eviction,
/// one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rejected_calls_cause_one_eviction_and_one_refresh() -> Result<(), BoxError> {
    let (backend, cache, client) = setup().await?;
    backend.revoke();
    backend.gate.hold(50);
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let mut client = client.clone();
        calls.spawn(async move { check(&mut client).await });
    }
    while let Some(joined) = calls.join_next().await {
        assert_eq!(joined?.unwrap_err().code(), Code::Unauthenticated);
    }
    assert_eq!(cache.stats().invalidations, 1);

    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let mut client = client.clone();
        calls.spawn(async move { check(&mut client).await });
    }
    while let Some(joined) = calls.join_next().await {
        assert_eq!(joined??, ServingStatus::Serving);
    }
    assert_eq!(backend.issuer.issued(), 2);
    assert_eq!(cache.stats().fetches, 2);
    Ok(())
}

/// Without `.grpc()`, the plain layer keeps the rejected token (HTTP
/// clients pay nothing for gRPC): the same revocation evicts nothing.
#[tokio::test]
async fn the_plain_layer_does_not_look() -> Result<(), BoxError> {
    let (backend, cache, _) = setup().await?;
    let mut plain = HealthClient::new(
        ServiceBuilder::new()
            .layer(BearerAuthLayer::from_cache(cache.clone()))
            .service(grpc::channel(backend.addr).await?),
    );
    backend.revoke();
    let status = plain
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(cache.stats().invalidations, 0);
    Ok(())
}

// ===== UNAUTHENTICATED in the trailers =====

/// Streams opened with the token, each answered with a message, then
/// ended by the server with `UNAUTHENTICATED` in the trailers once the
/// token is revoked: one eviction for all 50, one refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthenticated_in_the_trailers_evicts_the_token() -> Result<(), BoxError> {
    let (backend, cache, client) = setup().await?;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut stream = client
            .clone()
            .watch(HealthCheckRequest::default())
            .await?
            .into_inner();
        let first = stream.message().await?.map(|m| m.status());
        assert_eq!(first, Some(ServingStatus::Serving));
        streams.push(stream);
    }
    assert_eq!(cache.stats().invalidations, 0, "no eviction on a message");

    backend.revoke();
    for mut stream in streams {
        let status = stream.message().await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "token revoked");
    }
    assert_eq!(cache.stats().invalidations, 1);

    let mut client = client.clone();
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 2);
    Ok(())
}

/// Two current-thread runtimes, each driven by a `block_on` per call and
/// idle in between, share one cache; the server runs on a runtime of its
/// own. A rejection seen on one runtime evicts the token for both: the
/// other's next call carries the new token without being rejected first.
#[test]
fn runtimes_driven_by_block_on_per_call_share_the_eviction() -> Result<(), BoxError> {
    let server_runtime = tokio::runtime::Runtime::new()?;
    let backend = server_runtime.block_on(Backend::start())?;
    let cache = TokenCache::new(backend.issuer.source());
    let current = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let (one, two) = (current()?, current()?);
    let connect = |runtime: &tokio::runtime::Runtime| {
        runtime.block_on(async {
            Ok::<_, BoxError>(client(grpc::channel(backend.addr).await?, &cache))
        })
    };
    let (mut a, mut b) = (connect(&one)?, connect(&two)?);
    assert_eq!(one.block_on(check(&mut a))?, ServingStatus::Serving);
    assert_eq!(two.block_on(check(&mut b))?, ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 1);

    backend.revoke();
    let status = one.block_on(check(&mut a)).unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(cache.stats().invalidations, 1);
    assert_eq!(two.block_on(check(&mut b))?, ServingStatus::Serving);
    assert_eq!(one.block_on(check(&mut a))?, ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 2);
    assert_eq!(cache.stats().invalidations, 1);
    Ok(())
}

/// A stream that carried the first token ends with `UNAUTHENTICATED` only
/// after the first token was evicted and its successor is in use: the late
/// rejection leaves the successor alone.
#[tokio::test]
async fn a_late_unauthenticated_never_evicts_the_successor() -> Result<(), BoxError> {
    let (backend, cache, mut client) = setup().await?;
    let mut late = client
        .watch(HealthCheckRequest::default())
        .await?
        .into_inner();
    assert!(late.message().await?.is_some());

    backend.revoke();
    // A unary call is rejected in the headers, which evicts the first token;
    // the next call fetches the second.
    assert_eq!(
        check(&mut client).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 2);
    let second = cache.token().await?;

    // Only now is the old stream's end read.
    assert_eq!(
        late.message().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(cache.stats().invalidations, 1);
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 2);
    assert!(cache.invalidate(&second), "the successor is still current");
    Ok(())
}

// ===== the retry policy =====

/// A client that retries a call once after `UNAUTHENTICATED` in the
/// headers, its body recorded up to `max_bytes` for the replay.
fn retrying(
    channel: Channel,
    cache: &TokenCache,
    max_bytes: usize,
) -> HealthClient<
    impl GrpcService<Body, ResponseBody = ResponseBody<Body>, Error = BoxError, Future: Send>
        + Clone
        + Send,
> {
    HealthClient::new(
        ServiceBuilder::new()
            .map_request(move |request: http::Request<Body>| {
                request.map(|body| ReplayBody::new(body, max_bytes))
            })
            .retry(RetryOnUnauthenticated::replaying())
            .map_request(|request: http::Request<ReplayBody<Body>>| request.map(Body::new))
            .layer(BearerAuthLayer::from_cache(cache.clone()).grpc())
            .service(channel),
    )
}

fn long_request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: long_name(),
    }
}

/// A call rejected in the headers is sent again, with its body, after the
/// one refresh, and succeeds.
#[tokio::test]
async fn a_rejected_call_is_retried_with_a_new_token() -> Result<(), BoxError> {
    let (backend, cache, _) = setup().await?;
    let mut client = retrying(grpc::channel(backend.addr).await?, &cache, 64 * 1024);
    backend.revoke();
    let checked = backend.issuer.checked();
    let response = client.check(long_request()).await?;
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    assert_eq!(backend.issuer.checked() - checked, 2, "sent twice");
    assert_eq!(backend.issuer.issued(), 2);
    assert_eq!(cache.stats().invalidations, 1);
    Ok(())
}

/// 50 calls in flight with the revoked token: one eviction, one refresh,
/// and all 50 retried calls succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_rejected_calls_are_retried_after_one_refresh() -> Result<(), BoxError> {
    let (backend, cache, _) = setup().await?;
    let client = retrying(grpc::channel(backend.addr).await?, &cache, 64 * 1024);
    backend.revoke();
    backend.gate.hold(50);
    let checked = backend.issuer.checked();
    let mut calls = JoinSet::new();
    for _ in 0..50 {
        let mut client = client.clone();
        calls.spawn(async move { client.check(long_request()).await });
    }
    while let Some(joined) = calls.join_next().await {
        assert_eq!(joined??.into_inner().status(), ServingStatus::Serving);
    }
    assert_eq!(backend.issuer.checked() - checked, 100, "each sent twice");
    assert_eq!(backend.issuer.issued(), 2);
    assert_eq!(cache.stats().invalidations, 1);
    assert_eq!(cache.stats().fetches, 2);
    Ok(())
}

/// A body larger than the replay limit is not sent again: the rejection
/// reaches the caller, and the token is still evicted.
#[tokio::test]
async fn a_body_over_the_limit_is_not_retried() -> Result<(), BoxError> {
    let (backend, cache, _) = setup().await?;
    let mut client = retrying(grpc::channel(backend.addr).await?, &cache, 64);
    backend.revoke();
    let checked = backend.issuer.checked();
    let status = client.check(long_request()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(backend.issuer.checked() - checked, 1);
    assert_eq!(cache.stats().invalidations, 1);
    // A small one fits: the next call goes out with a new token.
    let response = client.check(HealthCheckRequest::default()).await?;
    assert_eq!(response.into_inner().status(), ServingStatus::Serving);
    assert_eq!(backend.issuer.issued(), 2);
    Ok(())
}

/// `UNAUTHENTICATED` in the trailers arrives after the response was handed
/// to the caller and its messages read: too late to retry. It is returned,
/// and it evicts the token.
#[tokio::test]
async fn unauthenticated_in_the_trailers_is_evicted_not_retried() -> Result<(), BoxError> {
    let (backend, cache, _) = setup().await?;
    let mut client = retrying(grpc::channel(backend.addr).await?, &cache, 64 * 1024);
    let mut stream = client
        .watch(HealthCheckRequest::default())
        .await?
        .into_inner();
    assert!(stream.message().await?.is_some());
    backend.revoke();
    assert_eq!(
        stream.message().await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(cache.stats().invalidations, 1);
    assert_eq!(backend.issuer.issued(), 1, "not retried");
    Ok(())
}
