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
//!
//! [`BearerAuthLayer`]: crate::BearerAuthLayer
//! [`BearerAuthLayer::grpc`]: crate::BearerAuthLayer::grpc
//! [`KeyedBearerAuthLayer::grpc`]: crate::KeyedBearerAuthLayer::grpc

mod future;
mod layer;
mod replay;
#[cfg(feature = "retry")]
mod retry;
mod service;
mod status;
#[cfg(test)]
mod testing;

#[allow(deprecated)]
pub use crate::deprecated::ReplayError;

pub use self::future::{ResponseBody, ResponseFuture};
pub use self::layer::GrpcAuthLayer;
pub use self::replay::{Error, ReplayBody};
#[cfg(feature = "retry")]
pub use self::retry::RetryOnUnauthenticated;
pub use self::service::GrpcAuth;
