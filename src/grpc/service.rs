//! [`GrpcAuth`]: the service that watches each gRPC response for
//! `UNAUTHENTICATED` and evicts the token the call carried.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower_service::Service;

use super::{ResponseBody, ResponseFuture};
use crate::{auth, BoxError};

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
        ResponseFuture::new(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;

    use bytes::Bytes;
    use http::HeaderValue;
    use http_body::Frame;
    use http_body_util::BodyExt;
    use tower::{service_fn, ServiceExt};
    use tower_layer::Layer;

    use super::super::status::GRPC_STATUS;
    use super::super::testing::*;
    use super::super::{GrpcAuthLayer, ReplayBody};
    use super::*;
    use crate::{BearerAuthLayer, Token, TokenCache};

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
}
