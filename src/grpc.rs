//! gRPC awareness: `UNAUTHENTICATED` evicts the rejected token as a `401`
//! does.
//!
//! Behind the `grpc` feature (on by default; it adds no crate to the
//! default build, and nothing to a request unless `.grpc()` is called).
//!
//! A gRPC server rejects a token with status `UNAUTHENTICATED` (code 16)
//! inside an HTTP `200`, in one of two places:
//!
//! - **in the response headers** of a trailers-only response: what tonic
//!   sends when an interceptor or a unary handler returns
//!   `Status::unauthenticated`;
//! - **in the trailers**, after the response body: what a streaming call
//!   ends with when the server gives up on it midway.
//!
//! [`BearerAuthLayer`] sees only HTTP `401`s. [`BearerAuthLayer::grpc`]
//! (and [`KeyedBearerAuthLayer::grpc`]) wraps it in a [`GrpcAuthLayer`],
//! whose [`GrpcAuth`] service sees both places: the `grpc-status` header of
//! a gRPC response (its `content-type` is `application/grpc`, or
//! `application/grpc+proto` and the like), and the trailers, through a
//! [`ResponseBody`] that watches the frames going by. Either evicts the
//! token the request carried, if it is still the current one (a generation
//! check, as for a `401`): fifty calls rejected at once cause one eviction
//! and one refresh, and a late `UNAUTHENTICATED` for an old token never
//! evicts its successor. The response reaches the caller unchanged.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use http::{Request, Response};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Token, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let fetches = Arc::new(AtomicUsize::new(0));
//! let cache = TokenCache::new({
//!     let fetches = fetches.clone();
//!     move || {
//!         let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
//!         async move { Ok::<_, Infallible>(Token::new(format!("token-{n}"))) }
//!     }
//! });
//! // Stands in for a tonic `Channel` to a server that rejects every token,
//! // as tonic does: a trailers-only response.
//! let channel = service_fn(|_: Request<String>| async {
//!     let response = Response::builder()
//!         .header("content-type", "application/grpc")
//!         .header("grpc-status", "16")
//!         .body(String::new())
//!         .unwrap();
//!     Ok::<_, Infallible>(response)
//! });
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::from_cache(cache.clone()).grpc())
//!     .service(channel);
//!
//! let token = cache.token().await?;
//! let response = client.ready().await?.call(Request::new(String::new())).await?;
//! assert_eq!(response.headers()["grpc-status"], "16");
//! // The rejected token was evicted: the next call waits for a new one.
//! assert!(!cache.invalidate(&token));
//! assert_eq!(cache.token().await?.secret(), "token-2");
//! # Ok(())
//! # }
//! ```
//!
//! With tonic, wrap the `Channel` and hand the service to the generated
//! client, as `tests/grpc.rs` and `examples/tonic_health.rs` do:
//!
//! ```text
//! HealthClient::new(ServiceBuilder::new().layer(BearerAuthLayer::from_cache(cache).grpc()).service(channel))
//! ```
//!
//! The client's type is then `HealthClient<GrpcAuth<BearerAuth<Channel>>>`,
//! and its response body a [`ResponseBody`] around tonic's.
//!
//! # Retrying
//!
//! [`RetryOnUnauthenticated`] (with the `retry` feature) is a
//! `tower::retry::Policy` that sends a call once more after
//! `UNAUTHENTICATED`, with the fresh token: the rejection evicted the token
//! before the policy saw it, so the second attempt waits for the single
//! refresh. It is [`RetryOnUnauthorized`](crate::RetryOnUnauthorized)'s rule (one retry, a
//! second rejection is returned as it is) with gRPC's rejection added, and
//! it retries an HTTP `401` too. What it can and cannot retry:
//!
//! - **A rejection in the headers** (trailers-only), the way tonic's
//!   interceptors and unary handlers answer: retried. A tower retry policy
//!   sees the response before its body is read, and this is all it needs.
//! - **A rejection in the trailers**, after the server streamed messages:
//!   not retried, only evicted. By the time the trailers are read, the
//!   response and its messages were handed to the caller; replaying the
//!   call would deliver them twice. The next call gets the new token.
//! - **Only a request it can copy.** tonic's request body
//!   (`tonic::body::Body`) cannot be cloned, so wrap it in a [`ReplayBody`],
//!   which records what the first attempt sends (up to a limit you choose)
//!   and replays it; [`RetryOnUnauthenticated::replaying`] retries a call
//!   only if its body was recorded whole. A body over the limit (a long
//!   client stream, say) is not retried: its rejection reaches the caller,
//!   and the token is evicted all the same. Bodies that are `Clone` need no
//!   wrapper: [`RetryOnUnauthenticated::new`].
//!
//! Put the retry **outside** the bearer layer, so that each attempt reads
//! the cache again. With tonic, the body goes into a [`ReplayBody`] before
//! the retry and back into a `tonic::body::Body` after it:
//!
//! ```
//! # #[cfg(feature = "retry")]
//! # mod example {
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use http::{header::AUTHORIZATION, Request, Response};
//! use tonic::body::Body;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bearer::grpc::{ReplayBody, RetryOnUnauthenticated};
//! use tower_bearer::{BearerAuthLayer, Token};
//!
//! # pub async fn main() -> Result<(), tower_bearer::BoxError> {
//! let fetches = Arc::new(AtomicUsize::new(0));
//! let source = move || {
//!     let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
//!     async move { Ok::<_, Infallible>(Token::new(format!("token-{n}"))) }
//! };
//! // Stands in for a tonic `Channel` to a server that revoked the first token.
//! let channel = service_fn(|request: Request<Body>| async move {
//!     let revoked = request.headers()[AUTHORIZATION] == "Bearer token-1";
//!     let status = if revoked { "16" } else { "0" };
//!     let response = Response::builder()
//!         .header("content-type", "application/grpc")
//!         .header("grpc-status", status)
//!         .body(())
//!         .unwrap();
//!     Ok::<_, Infallible>(response)
//! });
//!
//! let client = ServiceBuilder::new()
//!     // Record up to 64 KiB of each call's body, for the replay.
//!     .map_request(|request: Request<Body>| request.map(|body| ReplayBody::new(body, 64 * 1024)))
//!     .retry(RetryOnUnauthenticated::replaying())
//!     .map_request(|request: Request<ReplayBody<Body>>| request.map(Body::new))
//!     .layer(BearerAuthLayer::new(source).grpc())
//!     .service(channel);
//! // With tonic: `HealthClient::new(client)`.
//!
//! let response = client.oneshot(Request::new(Body::empty())).await?;
//! assert_eq!(response.headers()["grpc-status"], "0");
//! # Ok(())
//! # }
//! # }
//! # #[cfg(feature = "retry")]
//! # tokio::runtime::Runtime::new().unwrap().block_on(example::main()).unwrap();
//! ```
//!
//! # What it costs, and whom
//!
//! Nothing for HTTP clients: [`BearerAuthLayer`] alone does not look at
//! gRPC at all, its response body is the inner service's own, and its response future never
//! looks for a `grpc-status` (the instruction count of its hot path is the
//! same, see `docs/performance.md`). Handling gRPC is a choice made where
//! the layer is built, rather than a `content-type` check on every
//! response of every client: the trailers need a body wrapper, which would
//! change the response type of HTTP clients. With it, each response costs a
//! look at `content-type` (and at `grpc-status` for a gRPC response), and
//! each frame of the body a check whether it is the trailers. A response
//! that is not gRPC (no `application/grpc` content type) is passed on
//! untouched, and its trailers are not read.
//!
//! # Other clients
//!
//! - **Keyed caches**: [`KeyedBearerAuthLayer::grpc`] evicts the rejected
//!   token from its own key only.
//! - **reqwest** ([`BearerAuthMiddleware`](crate#integrations)) is an HTTP
//!   client and does not speak gRPC: nothing changes there.
//!
//! # Limits
//!
//! - gRPC-Web (`application/grpc-web`) carries its trailers inside the body;
//!   it is not looked at.
//! - A `UNAUTHENTICATED` in the trailers is only seen if the caller reads the
//!   body to its end, as tonic does for every call it completes.
//! - Every `UNAUTHENTICATED` counts as a rejected token, as every `401`
//!   does. A server that answers `UNAUTHENTICATED` for another reason (a
//!   missing header of its own, say) causes a refresh per generation, not
//!   per call: the generation check keeps it to one.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, CONTENT_TYPE};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

#[allow(deprecated)]
pub use crate::deprecated::ReplayError;
use tower_layer::Layer;
use tower_service::Service;

use crate::auth::{self, Sent};
use crate::{BearerAuthLayer, BoxError, KeyedBearerAuthLayer};

const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether `headers` say `content-type: application/grpc`, alone or with a
/// suffix (`+proto`, `; charset=...`), in any case.
fn is_grpc(headers: &HeaderMap) -> bool {
    const GRPC: &[u8] = b"application/grpc";
    let Some(value) = headers.get(CONTENT_TYPE) else {
        return false;
    };
    let value = value.as_bytes();
    value.len() >= GRPC.len()
        && value[..GRPC.len()].eq_ignore_ascii_case(GRPC)
        && matches!(value.get(GRPC.len()), None | Some(b'+' | b';'))
}

/// Whether `headers` (a response's, or its trailers) carry
/// `grpc-status: 16`, `UNAUTHENTICATED`.
fn is_unauthenticated(headers: &HeaderMap) -> bool {
    headers
        .get(GRPC_STATUS)
        .is_some_and(|status| status.as_bytes() == b"16")
}

// ===== the layer =====

impl BearerAuthLayer {
    /// This layer, with gRPC's `UNAUTHENTICATED` handled like a `401`: see
    /// [`crate::grpc`].
    pub fn grpc(self) -> GrpcAuthLayer<Self> {
        GrpcAuthLayer { inner: self }
    }
}

impl<K> KeyedBearerAuthLayer<K> {
    /// This layer, with gRPC's `UNAUTHENTICATED` handled like a `401`: it
    /// evicts the rejected token from its own key. See [`crate::grpc`].
    pub fn grpc(self) -> GrpcAuthLayer<Self> {
        GrpcAuthLayer { inner: self }
    }
}

/// Layer that applies [`GrpcAuth`] around a bearer layer: built by
/// [`BearerAuthLayer::grpc`] or [`KeyedBearerAuthLayer::grpc`]. See the
/// [module docs](crate::grpc).
#[derive(Clone, Debug)]
pub struct GrpcAuthLayer<L> {
    inner: L,
}

impl<L> GrpcAuthLayer<L> {
    /// The bearer layer inside.
    pub fn get_ref(&self) -> &L {
        &self.inner
    }
}

impl<S, L: Layer<S>> Layer<S> for GrpcAuthLayer<L> {
    type Service = GrpcAuth<L::Service>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcAuth::new(self.inner.layer(inner))
    }
}

// ===== the service =====

/// A [`BearerAuth`](crate::BearerAuth) or
/// [`KeyedBearerAuth`](crate::KeyedBearerAuth) whose token is evicted on a
/// gRPC `UNAUTHENTICATED` too, in the headers or in the trailers. See the
/// [module docs](crate::grpc).
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response};
/// use tower::service_fn;
/// use tower_bearer::{BearerAuth, GrpcAuth, Token, TokenCache};
///
/// let cache = TokenCache::new(|| async { Ok::<_, Infallible>(Token::new("t")) });
/// let channel = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
/// let client = GrpcAuth::new(BearerAuth::new(channel, cache));
/// # let _ = client;
/// ```
#[derive(Clone, Debug)]
pub struct GrpcAuth<S> {
    inner: S,
}

impl<S> GrpcAuth<S> {
    /// Wraps a bearer service.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }

    /// A reference to the bearer service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the bearer service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the bearer service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<T, S, B, ResBody> Service<Request<B>> for GrpcAuth<T>
where
    T: Service<
        Request<B>,
        Response = Response<ResBody>,
        Error = BoxError,
        Future = auth::ResponseFuture<S, B>,
    >,
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ResponseFuture {
            inner: self.inner.call(request),
        }
    }
}

pin_project! {
    /// Response future of [`GrpcAuth`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        inner: auth::ResponseFuture<S, B>,
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let response = ready!(inner.as_mut().poll(cx))?;
        // A `401` was handled by the bearer future itself.
        let mut sent = inner.sent();
        if !is_grpc(response.headers()) {
            sent = Sent::NOTHING;
        } else if is_unauthenticated(response.headers()) {
            sent.unauthorized();
            sent = Sent::NOTHING;
        }
        Poll::Ready(Ok(response.map(|body| ResponseBody { inner: body, sent })))
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

// ===== the body =====

pin_project! {
    /// Response body of [`GrpcAuth`]: the inner body, unchanged, watched for
    /// `grpc-status: 16` in its trailers, which evicts the token the request
    /// carried if it is still the current one.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        // Whom to tell; `NOTHING` once told, or for a response that is not
        // gRPC or whose status came in its headers.
        sent: Sent,
    }
}

impl<B> ResponseBody<B> {
    /// A reference to the inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Consumes `self`, returning the inner body; its trailers are no longer
    /// watched.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(trailers) = frame.trailers_ref() {
                if is_unauthenticated(trailers) {
                    this.sent.unauthorized();
                    *this.sent = Sent::NOTHING;
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

// ===== the retry policy =====

/// A `tower::retry::Policy` for gRPC: sends a call once more, with a fresh
/// token, after `UNAUTHENTICATED` in the response headers (or an HTTP
/// `401`). See [Retrying](crate::grpc#retrying).
///
/// It is [`RetryOnUnauthorized`](crate::RetryOnUnauthorized) with gRPC's rejection added: the
/// same one retry, the same copy of the request.
#[cfg(feature = "retry")]
pub struct RetryOnUnauthenticated<B> {
    once: crate::RetryOnUnauthorized<B>,
    can_replay: fn(&B) -> bool,
}

#[cfg(feature = "retry")]
impl<B: Clone> RetryOnUnauthenticated<B> {
    /// A policy for requests whose body is `Clone`.
    pub fn new() -> Self {
        Self::cloning_body_with(|body| Some(body.clone()))
    }
}

#[cfg(feature = "retry")]
impl<B: Clone> Default for RetryOnUnauthenticated<B> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "retry")]
impl<B> RetryOnUnauthenticated<B> {
    /// A policy that copies a request's body with `clone_body`; a request
    /// whose body it cannot copy (`None`) is not retried. As
    /// [`RetryOnUnauthorized::cloning_body_with`](crate::RetryOnUnauthorized::cloning_body_with).
    pub fn cloning_body_with(clone_body: fn(&B) -> Option<B>) -> Self {
        Self {
            once: crate::RetryOnUnauthorized::cloning_body_with(clone_body),
            can_replay: |_| true,
        }
    }
}

#[cfg(feature = "retry")]
impl<B> RetryOnUnauthenticated<ReplayBody<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// A policy for requests whose body is a [`ReplayBody`], as tonic's
    /// are once wrapped: a call is retried if its body was recorded whole
    /// (within the body's limit).
    pub fn replaying() -> Self {
        Self {
            once: crate::RetryOnUnauthorized::cloning_body_with(ReplayBody::try_clone),
            can_replay: ReplayBody::replayable,
        }
    }
}

#[cfg(feature = "retry")]
impl<B, ResBody, E> tower::retry::Policy<Request<B>, Response<ResBody>, E>
    for RetryOnUnauthenticated<B>
{
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        let rejected = matches!(result, Ok(response) if rejected(response));
        self.once
            .once_if(rejected && (self.can_replay)(request.body()))
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        tower::retry::Policy::<Request<B>, Response<ResBody>, E>::clone_request(
            &mut self.once,
            request,
        )
    }
}

#[cfg(feature = "retry")]
impl<B> Clone for RetryOnUnauthenticated<B> {
    fn clone(&self) -> Self {
        Self {
            once: self.once.clone(),
            can_replay: self.can_replay,
        }
    }
}

#[cfg(feature = "retry")]
impl<B> fmt::Debug for RetryOnUnauthenticated<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryOnUnauthenticated")
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

/// Whether a response's own headers reject the call: HTTP `401`, or a
/// trailers-only gRPC `UNAUTHENTICATED`.
#[cfg(feature = "retry")]
fn rejected<B>(response: &Response<B>) -> bool {
    response.status() == http::StatusCode::UNAUTHORIZED
        || (is_grpc(response.headers()) && is_unauthenticated(response.headers()))
}

// ===== the replayable body =====

/// A request body that a retry can send again: tonic's bodies cannot be
/// copied, so wrap them in this before [`RetryOnUnauthenticated::replaying`].
///
/// The first attempt reads the inner body and records what it reads, up to
/// `max_bytes` of data. A copy ([`try_clone`](Self::try_clone)) replays the
/// recording, then, if the first attempt stopped before the end, takes over
/// reading the inner body where it stopped (the first attempt's body then
/// fails if it is polled again: its call is over). A body larger than
/// `max_bytes`, or one that failed, cannot be replayed: the policy does not
/// retry it, and a copy made earlier fails with a [`Error`].
///
/// Nothing is recorded beyond `max_bytes`, so a long client stream costs at
/// most that much memory while its call lasts.
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Recording<B>>>,
    id: u64,
    // Frames of the recording this handle has yielded.
    position: usize,
    trailers_sent: bool,
}

struct Recording<B> {
    inner: Pin<Box<B>>,
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
    max: usize,
    // The inner body ended: the recording is whole.
    ended: bool,
    // The recording is missing a part, for good: over `max`, or a failure.
    lost: bool,
    // The handle that reads the inner body, and the last handle made.
    reader: u64,
    handles: u64,
}

/// A [`ReplayBody`] could not be sent again: it was larger than its limit,
/// it failed, or a later attempt took it over.
#[derive(Debug)]
pub struct Error(&'static str);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Error {}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Wraps `body`, recording up to `max_bytes` of its data for a replay.
    pub fn new(body: B, max_bytes: usize) -> Self {
        let recording = Recording {
            inner: Box::pin(body),
            frames: Vec::new(),
            trailers: None,
            size: 0,
            max: max_bytes,
            ended: false,
            lost: false,
            reader: 0,
            handles: 1,
        };
        Self::handle(Arc::new(Mutex::new(recording)), 1)
    }

    fn handle(shared: Arc<Mutex<Recording<B>>>, id: u64) -> Self {
        Self {
            shared,
            id,
            position: 0,
            trailers_sent: false,
        }
    }

    /// A copy that sends the body again from its start; `None` if it can no
    /// longer be replayed.
    pub fn try_clone(&self) -> Option<Self> {
        let mut recording = lock(&self.shared);
        if recording.lost {
            return None;
        }
        recording.handles += 1;
        let id = recording.handles;
        drop(recording);
        Some(Self::handle(self.shared.clone(), id))
    }

    /// Whether the body can still be sent again from its start.
    pub fn replayable(&self) -> bool {
        !lock(&self.shared).lost
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Self {
            shared,
            id,
            position,
            trailers_sent,
        } = self.get_mut();
        let mut recording = lock(shared);
        if recording.reader != *id {
            if recording.reader > *id {
                return Poll::Ready(Some(Err(Error("a retry took this body over").into())));
            }
            // Not read yet by this handle: the recording first.
            if recording.lost {
                return Poll::Ready(Some(Err(Error("the body cannot be replayed").into())));
            }
            if let Some(data) = recording.frames.get(*position) {
                *position += 1;
                return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
            }
            // The rest is still in the inner body: this handle reads it now.
            recording.reader = *id;
        }
        if recording.ended {
            return Poll::Ready(recording.trailers_for(trailers_sent));
        }
        let frame = match ready!(recording.inner.as_mut().poll_frame(cx)) {
            None => {
                recording.ended = true;
                return Poll::Ready(recording.trailers_for(trailers_sent));
            }
            Some(Err(error)) => {
                recording.lost = true;
                recording.frames = Vec::new();
                return Poll::Ready(Some(Err(error.into())));
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                recording.record(&data);
                *position = recording.frames.len();
                Frame::data(data)
            }
            Err(frame) => {
                if let Some(trailers) = frame.trailers_ref() {
                    recording.trailers = Some(trailers.clone());
                    *trailers_sent = true;
                }
                frame
            }
        };
        if recording.inner.is_end_stream() {
            recording.ended = true;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let recording = lock(&self.shared);
        recording.ended
            && !recording.lost
            && self.position >= recording.frames.len()
            && (recording.trailers.is_none() || self.trailers_sent)
    }
}

impl<B> Recording<B> {
    /// The end of the body for a handle that has yielded every frame: the
    /// trailers, unless it already sent them.
    fn trailers_for(&self, sent: &mut bool) -> Option<Result<Frame<Bytes>, BoxError>> {
        let trailers = self.trailers.as_ref().filter(|_| !*sent)?;
        *sent = true;
        Some(Ok(Frame::trailers(trailers.clone())))
    }

    fn record(&mut self, data: &Bytes) {
        if self.lost {
            return;
        }
        self.size = self.size.saturating_add(data.len());
        if self.size > self.max {
            self.lost = true;
            self.frames = Vec::new();
        } else {
            self.frames.push(data.clone());
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use std::collections::VecDeque;

    use bytes::Bytes;
    use http::HeaderValue;
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::{Token, TokenCache};

    #[test]
    fn grpc_content_types() {
        let grpc = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, value.parse().unwrap());
            is_grpc(&headers)
        };
        assert!(grpc("application/grpc"));
        assert!(grpc("application/grpc+proto"));
        assert!(grpc("Application/GRPC; charset=utf-8"));
        assert!(!grpc("application/grpc-web"));
        assert!(!grpc("application/grpcx"));
        assert!(!grpc("application/json"));
        assert!(!grpc("application/grp"));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn only_status_16_is_unauthenticated() {
        let status = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_STATUS, value.parse().unwrap());
            is_unauthenticated(&headers)
        };
        assert!(status("16"));
        for other in ["0", "7", "1", "160", "6"] {
            assert!(!status(other), "{other}");
        }
        assert!(!is_unauthenticated(&HeaderMap::new()));
    }

    fn counting_cache() -> TokenCache {
        let fetches = Arc::new(AtomicUsize::new(0));
        TokenCache::new(move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok::<_, Infallible>(Token::new(format!("t{n}"))) }
        })
    }

    /// A body of the given frames, all ready at once.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    type Pairs = &'static [(&'static str, &'static str)];

    fn headers(pairs: Pairs) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_static(name),
                    HeaderValue::from_static(value),
                )
            })
            .collect()
    }

    /// One call through `BearerAuthLayer::grpc` to a server answering with
    /// `head` and a body of one message then `trailers`, if any.
    async fn call(
        cache: &TokenCache,
        head: Pairs,
        trailers: Option<Pairs>,
    ) -> Response<ResponseBody<Frames>> {
        let server = service_fn(move |_: Request<()>| async move {
            let mut frames = VecDeque::from([Frame::data(Bytes::from_static(b"message"))]);
            frames.extend(trailers.map(|pairs| Frame::trailers(headers(pairs))));
            let mut response = Response::new(Frames(frames));
            *response.headers_mut() = headers(head);
            Ok::<_, Infallible>(response)
        });
        let client = BearerAuthLayer::from_cache(cache.clone())
            .grpc()
            .layer(server);
        client.oneshot(Request::new(())).await.unwrap()
    }

    const GRPC: (&str, &str) = ("content-type", "application/grpc");
    const UNAUTHENTICATED: (&str, &str) = ("grpc-status", "16");

    #[tokio::test]
    async fn unauthenticated_in_the_headers_evicts() {
        let cache = counting_cache();
        let token = cache.token().await.unwrap();
        let response = call(&cache, &[GRPC, UNAUTHENTICATED], None).await;
        assert_eq!(response.headers()[GRPC_STATUS], "16", "passed on unchanged");
        assert!(!cache.invalidate(&token), "evicted by the response");
        assert_eq!(cache.stats().invalidations, 1);
    }

    #[tokio::test]
    async fn unauthenticated_in_the_trailers_evicts_once_they_are_read() {
        let cache = counting_cache();
        let token = cache.token().await.unwrap();
        let response = call(&cache, &[GRPC], Some(&[UNAUTHENTICATED])).await;
        assert_eq!(cache.stats().invalidations, 0, "not before the trailers");
        let body = response.into_body().collect().await.unwrap();
        assert_eq!(body.trailers().unwrap()[GRPC_STATUS], "16", "unchanged");
        assert_eq!(body.to_bytes(), "message");
        assert!(!cache.invalidate(&token), "evicted by the trailers");
        assert_eq!(cache.stats().invalidations, 1);
    }

    #[tokio::test]
    async fn other_statuses_and_other_content_types_evict_nothing() {
        let cache = counting_cache();
        let token = cache.token().await.unwrap();
        let cases: [(Pairs, Option<Pairs>); 5] = [
            (&[GRPC], Some(&[("grpc-status", "0")])),
            (&[GRPC, ("grpc-status", "7")], None),
            (&[GRPC], None),
            (&[("content-type", "text/plain")], None),
            // Not gRPC: neither its headers nor its trailers are read.
            (
                &[("content-type", "application/json"), UNAUTHENTICATED],
                Some(&[UNAUTHENTICATED]),
            ),
        ];
        for (head, trailers) in cases {
            let response = call(&cache, head, trailers).await;
            response.into_body().collect().await.unwrap();
        }
        assert_eq!(cache.stats().invalidations, 0);
        assert!(cache.invalidate(&token), "still the current token");
    }

    #[tokio::test]
    async fn a_late_unauthenticated_never_evicts_the_successor() {
        let cache = counting_cache();
        let first = cache.token().await.unwrap();
        let late = call(&cache, &[GRPC], Some(&[UNAUTHENTICATED])).await;
        // Meanwhile the first token was replaced.
        assert!(cache.invalidate(&first));
        let second = cache.token().await.unwrap();
        assert_eq!(second.secret(), "t2");
        late.into_body().collect().await.unwrap();
        assert!(cache.invalidate(&second), "the successor was still current");
        assert_eq!(cache.stats().invalidations, 2);
    }

    /// The keyed service shares the future: a rejection evicts the token of
    /// the call's own key, and no other.
    #[tokio::test]
    async fn keyed_unauthenticated_evicts_its_own_key_only() {
        let cache = crate::KeyedTokenCache::new(|key: &String| {
            let key = key.clone();
            move || {
                let key = key.clone();
                async move { Ok::<_, Infallible>(Token::new(key)) }
            }
        });
        let (a, b) = (cache.token("a").await, cache.token("b").await);
        let server = service_fn(|request: Request<()>| async move {
            let mut response = Response::new(Frames(VecDeque::new()));
            *response.headers_mut() = headers(&[GRPC]);
            if request.uri().path() == "/a" {
                response
                    .headers_mut()
                    .insert(GRPC_STATUS, HeaderValue::from_static("16"));
            }
            Ok::<_, Infallible>(response)
        });
        let client = BearerAuthLayer::keyed(cache.clone(), |head| {
            Some(head.uri().path().trim_start_matches('/').to_owned())
        })
        .grpc()
        .layer(server);
        for path in ["/a", "/b"] {
            let request = Request::get(path).body(()).unwrap();
            client.clone().oneshot(request).await.unwrap();
        }
        assert!(!cache.invalidate(&"a".into(), &a.unwrap()), "evicted");
        assert!(cache.invalidate(&"b".into(), &b.unwrap()), "untouched");
    }

    #[test]
    fn the_middleware_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        type Inner = tower::util::ServiceFn<
            fn(Request<String>) -> std::future::Ready<Result<Response<Frames>, Infallible>>,
        >;
        send_sync::<GrpcAuthLayer<BearerAuthLayer>>();
        send_sync::<GrpcAuth<crate::BearerAuth<Inner>>>();
        send::<ResponseFuture<Inner, String>>();
        send_sync::<ResponseBody<Frames>>();
        send_sync::<ReplayBody<Frames>>();
    }

    #[tokio::test]
    async fn a_401_still_evicts() {
        let cache = counting_cache();
        let token = cache.token().await.unwrap();
        let server = service_fn(|_: Request<()>| async {
            let mut response = Response::new(Frames(VecDeque::new()));
            *response.status_mut() = http::StatusCode::UNAUTHORIZED;
            Ok::<_, Infallible>(response)
        });
        let client = BearerAuthLayer::from_cache(cache.clone())
            .grpc()
            .layer(server);
        client.oneshot(Request::new(())).await.unwrap();
        assert!(!cache.invalidate(&token));
        assert_eq!(cache.stats().invalidations, 1);
    }
    // ===== the retry policy and the replayable body =====

    /// How many calls reached a server answering with `head`, through the
    /// retry policy and `BearerAuthLayer::grpc`.
    #[cfg(feature = "retry")]
    async fn attempts(head: Pairs, status: http::StatusCode) -> usize {
        let calls = Arc::new(AtomicUsize::new(0));
        let server = service_fn({
            let calls = calls.clone();
            move |_: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut response = Response::new(Frames(VecDeque::new()));
                    *response.headers_mut() = headers(head);
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let client = tower::ServiceBuilder::new()
            .retry(RetryOnUnauthenticated::new())
            .layer(BearerAuthLayer::from_cache(counting_cache()).grpc())
            .service(server);
        client.oneshot(Request::new(())).await.unwrap();
        calls.load(Ordering::SeqCst)
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn the_policy_retries_a_rejection_in_the_headers_once() {
        use http::StatusCode;
        assert_eq!(attempts(&[GRPC, UNAUTHENTICATED], StatusCode::OK).await, 2);
        assert_eq!(attempts(&[], StatusCode::UNAUTHORIZED).await, 2);
        assert_eq!(
            attempts(&[GRPC, ("grpc-status", "7")], StatusCode::OK).await,
            1
        );
        assert_eq!(attempts(&[GRPC], StatusCode::OK).await, 1);
        // Not gRPC: its grpc-status means nothing.
        assert_eq!(attempts(&[UNAUTHENTICATED], StatusCode::OK).await, 1);
    }

    #[cfg(feature = "retry")]
    fn frames() -> Frames {
        Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::trailers(headers(&[("x-checksum", "1")])),
        ]))
    }

    /// Polls `body` once, which must be ready.
    #[cfg(feature = "retry")]
    fn next<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => panic!("pending"),
        }
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_copy_replays_the_data_and_the_trailers() {
        let first = ReplayBody::new(frames(), 1024);
        let copy = first.try_clone().unwrap();
        let sent = first.collect().await.unwrap();
        assert!(!copy.is_end_stream() && copy.replayable());
        let again = copy.collect().await.unwrap();
        assert_eq!(again.trailers(), sent.trailers());
        assert_eq!(again.trailers().unwrap()["x-checksum"], "1");
        assert_eq!(again.to_bytes(), "abcd");
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_copy_takes_over_where_the_first_attempt_stopped() {
        let mut first = ReplayBody::new(frames(), 1024);
        let copy = first.try_clone().unwrap();
        let data = next(&mut first).unwrap().unwrap().into_data().unwrap();
        assert_eq!(data, "ab");
        let again = copy.collect().await.unwrap();
        assert_eq!(again.trailers().unwrap()["x-checksum"], "1");
        assert_eq!(again.to_bytes(), "abcd");
        // The first attempt's body is over.
        let error = next(&mut first).unwrap().unwrap_err();
        assert_eq!(error.to_string(), "a retry took this body over");
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_body_over_its_limit_is_not_replayable() {
        let first = ReplayBody::new(frames(), 3);
        let copy = first.try_clone().unwrap();
        let sent = first.collect().await.unwrap();
        assert_eq!(sent.to_bytes(), "abcd", "the first attempt is whole");
        assert!(!copy.replayable());
        assert!(copy.try_clone().is_none());
        let error = copy.collect().await.unwrap_err();
        assert_eq!(error.to_string(), "the body cannot be replayed");
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_body_within_its_limit_is_replayable_to_the_byte() {
        let first = ReplayBody::new(frames(), 4);
        let copy = first.try_clone().unwrap();
        first.collect().await.unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "abcd");
    }
}
