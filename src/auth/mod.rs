//! Middleware that authorizes requests with a cached bearer token.
//!
//! [`BearerAuthLayer`] wraps any service of `http::Request<B>` (a hyper-util
//! client, a tonic `Channel`, anything stacked with
//! `ServiceBuilder::layer(..)`) and sets `Authorization: Bearer <token>` on
//! every request, with the token from a [`TokenCache`](crate::TokenCache).
//!
//! - While the token is fresh, a request reads it lock-free and awaits
//!   nothing before the inner service is called: it clones a `HeaderValue`
//!   built once per token and marked sensitive.
//! - A request that must wait for a token takes the inner service that
//!   `poll_ready` made ready into its future, so readiness holds for
//!   `Buffer`, `ConcurrencyLimit` and tonic's `Channel`.
//! - When the inner service answers `401 Unauthorized` to a request that
//!   carried token T, T is evicted if it is still the current token, and
//!   later requests wait for the single refresh: a burst of 100 `401`s for
//!   one token causes one refresh, and a late `401` never evicts its
//!   successor. The `401` goes back to the caller unchanged, and it does not
//!   bypass an active backoff. Retrying is the caller's choice:
//!   `RetryOnUnauthorized` (the `retry` feature) retries once.
//! - A resource that keeps rejecting fresh tokens is not hammered: from the
//!   second token in a row rejected soon after its fetch, the next fetch
//!   waits a doubling backoff, and requests meanwhile fail at once with
//!   [`Rejected`](crate::TokenErrorKind::Rejected). The keyed layer paces
//!   each key on its own. See "Failures" in [`crate::cache`].
//! - The crate's own failures are a [`TokenError`](crate::TokenError) in the
//!   `BoxError`; errors of the inner service pass through untouched.
//! - A [`Scope`](crate::Scope) ([`BearerAuthLayer::scope`]) narrows which
//!   requests get the token; the others pass through untouched. See
//!   [`crate::composition`] for stacking the layer with redirects, retries,
//!   timeouts and buffers.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{header::AUTHORIZATION, Request, Response};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Token};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! // Stands in for a hyper-util client or a tonic Channel.
//! let client = service_fn(|request: Request<String>| async move {
//!     let auth = request.headers()[AUTHORIZATION].to_str().unwrap().to_owned();
//!     Ok::<_, Infallible>(Response::new(auth))
//! });
//!
//! let mut client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(|| async {
//!         // log on to the backend here
//!         Ok::<_, std::io::Error>(Token::new("abcd1234").expires_in(Duration::from_secs(3600)))
//!     }))
//!     .service(client);
//!
//! let response = client.ready().await?.call(Request::new(String::new())).await?;
//! assert_eq!(response.body(), "Bearer abcd1234");
//! # Ok(())
//! # }
//! ```
//!
//! # Options
//!
//! | setting | default | setter |
//! |---|---|---|
//! | header | `Authorization` | [`BearerAuthLayer::header_name`] |
//! | a request that already has the header | overwritten | [`BearerAuthLayer::keep_existing`] |
//! | which requests get the token | all | [`BearerAuthLayer::scope`] |
//!
//! A request kept with `keep_existing(true)` needs no token: it neither
//! waits for nor triggers a fetch, and its `401` evicts nothing. The token's
//! phases, scheme, timeouts and backoff are the cache's settings: see
//! [`crate::cache`].
//!
//! # A token per key
//!
//! One client that talks to several APIs, each with its own token (an
//! audience, a tenant, a host): [`BearerAuthLayer::keyed`] takes the key from
//! each request and its token from a
//! [`KeyedTokenCache`](crate::KeyedTokenCache). See [`keyed`].
//!
//! # Another header or scheme
//!
//! ```
//! use http::HeaderName;
//! use tower_bearer::{BearerAuthLayer, Token, TokenCache};
//!
//! // X-Api-Key: <token>
//! let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("k")) }).no_scheme();
//! let layer = BearerAuthLayer::from_cache(cache)
//!     .header_name(HeaderName::from_static("x-api-key"));
//! ```

mod future;
pub mod keyed;
mod layer;
pub(crate) mod present;
mod service;

pub use self::future::ResponseFuture;
#[cfg(feature = "grpc")]
pub(crate) use self::future::Sent;
pub use self::keyed::{KeyedBearerAuth, KeyedBearerAuthLayer, TokenKey};
pub use self::layer::BearerAuthLayer;
pub use self::service::BearerAuth;
