//! gRPC awareness: `UNAUTHENTICATED` evicts the rejected token as a `401`
//! does.
//!
//! Behind the `grpc` feature (off by default).
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
//! client: `HealthClient::new(ServiceBuilder::new().layer(layer.grpc()).service(channel))`.
//!
//! # What it costs, and whom
//!
//! Nothing for HTTP clients: [`BearerAuthLayer`] alone is unchanged, its
//! response body is the inner service's own, and its response future never
//! looks for a `grpc-status`. Handling gRPC is a choice made where the
//! layer is built. With it, each response costs a look at `content-type`
//! (and at `grpc-status` for a gRPC response), and each frame of the body a
//! check whether it is the trailers. A response that is not gRPC (no
//! `application/grpc` content type) is passed on untouched, and its
//! trailers are not read.
//!
//! # Limits
//!
//! - gRPC-Web (`application/grpc-web`) carries its trailers inside the body;
//!   it is not looked at.
//! - A `UNAUTHENTICATED` in the trailers is only seen if the caller reads the
//!   body to its end, as tonic does for every call it completes.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::header::{HeaderMap, HeaderName, CONTENT_TYPE};
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
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
}
