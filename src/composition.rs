//! Stacking the middleware with other tower layers: redirects, retries,
//! timeouts, buffers, and migrating from tower-http's `AddAuthorization`.
//!
//! This module holds documentation only. Every example runs as a test.
//!
//! In a [`ServiceBuilder`](https://docs.rs/tower/latest/tower/struct.ServiceBuilder.html)
//! the first layer added is the outermost: it sees the request first and
//! the response last.
//!
//! # Redirects: tower-http's `FollowRedirect`
//!
//! What tower-http 0.6 does, checked by `tests/follow_redirect.rs`: its
//! default policy (`Standard`, which includes `FilterCredentials::new()`)
//! rebuilds every hop of a redirect chain from the **original** request's
//! headers, then removes `Authorization`, `Cookie` and `Proxy-Authorization`
//! when that hop's origin (scheme, host, port) differs from the **previous**
//! hop's. So with this middleware outside `FollowRedirect`:
//!
//! - a redirect within your API keeps the token;
//! - a redirect from your API to another origin is sent without it;
//! - but a further redirect **within that other origin** is same-origin with
//!   the hop before it, and is sent with the original headers, token
//!   included;
//! - and a `401` from the other origin (which got no token) reaches this
//!   middleware as the answer to your token, and evicts it.
//!
//! Placing the middleware **inside** `FollowRedirect`, with a
//! [`Scope`](crate::Scope) naming your API's hosts, closes both holes: every
//! hop passes through the middleware, which sets the token on the hops to
//! your hosts only, and ignores the `401`s of the others. This is the
//! composition we recommend. (Inside without a scope, every hop gets the
//! token: never do that.)
//!
//! ```
//! use std::convert::Infallible;
//! use http::{header::{AUTHORIZATION, LOCATION}, Request, Response, StatusCode};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Scope, Token};
//! use tower_http::follow_redirect::FollowRedirectLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! // api.example.com redirects to a CDN, which redirects within itself.
//! let servers = service_fn(|request: Request<String>| async move {
//!     let mut response = Response::new(String::new());
//!     let next = match request.uri().to_string().as_str() {
//!         "https://api.example.com/report" => Some("https://cdn.example.net/a"),
//!         "https://cdn.example.net/a" => Some("https://cdn.example.net/b"),
//!         _ => None,
//!     };
//!     match next {
//!         Some(location) => {
//!             *response.status_mut() = StatusCode::FOUND;
//!             response.headers_mut().insert(LOCATION, location.parse().unwrap());
//!         }
//!         None => *response.body_mut() = format!("{:?}", request.headers().get(AUTHORIZATION)),
//!     }
//!     Ok::<_, Infallible>(response)
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(FollowRedirectLayer::new())
//!     .layer(
//!         BearerAuthLayer::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) })
//!             .scope(Scope::new().require_https().hosts(["api.example.com"])),
//!     )
//!     .service(servers);
//!
//! let request = Request::get("https://api.example.com/report").body(String::new())?;
//! let response = client.oneshot(request).await?;
//! assert_eq!(response.body(), "None"); // the CDN never saw the token
//! # Ok(())
//! # }
//! ```
//!
//! # Retries: tower's `Retry`
//!
//! Put `Retry` **outside** the middleware, so that each attempt passes
//! through it and reads the cache again: an attempt made after a `401`
//! evicted the token waits for the single refresh and carries the new
//! token, and an attempt in a token's due window still goes out at once.
//! Inside, the token would be set once and every attempt would resend it.
//! The middleware itself never retries; a retry policy (for transient
//! errors, or one that retries a `401` once) is the caller's choice. For a
//! `401`, the crate ships one: `RetryOnUnauthorized` (feature `retry`), used as
//! `ServiceBuilder::new().retry(RetryOnUnauthorized::new()).layer(bearer)`.
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::{Arc, Mutex};
//! use http::{header::AUTHORIZATION, Request, Response, StatusCode};
//! use tower::retry::{Policy, RetryLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Token, TokenCache};
//!
//! /// Retries a `503 Service Unavailable`, up to a number of times.
//! #[derive(Clone)]
//! struct RetryUnavailable(usize);
//!
//! impl<E> Policy<Request<()>, Response<()>, E> for RetryUnavailable {
//!     type Future = std::future::Ready<()>;
//!
//!     fn retry(
//!         &mut self,
//!         _: &mut Request<()>,
//!         result: &mut Result<Response<()>, E>,
//!     ) -> Option<Self::Future> {
//!         match result {
//!             Ok(response) if response.status() == StatusCode::SERVICE_UNAVAILABLE && self.0 > 0 => {
//!                 self.0 -= 1;
//!                 Some(std::future::ready(()))
//!             }
//!             _ => None,
//!         }
//!     }
//!
//!     fn clone_request(&mut self, request: &Request<()>) -> Option<Request<()>> {
//!         let mut clone = Request::new(());
//!         *clone.uri_mut() = request.uri().clone();
//!         *clone.headers_mut() = request.headers().clone();
//!         Some(clone)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) });
//! // The first attempt is answered 503, after the server rotated its keys.
//! let attempts = Arc::new(Mutex::new(Vec::new()));
//! let server = service_fn({
//!     let (attempts, cache) = (attempts.clone(), cache.clone());
//!     move |request: Request<()>| {
//!         let (attempts, cache) = (attempts.clone(), cache.clone());
//!         async move {
//!             let mut attempts = attempts.lock().unwrap();
//!             attempts.push(request.headers()[AUTHORIZATION].clone());
//!             let mut response = Response::new(());
//!             if attempts.len() == 1 {
//!                 // The server rotated its keys; tell the cache, as a 401 would.
//!                 cache.invalidate(&cache.token().await.unwrap());
//!                 *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
//!             }
//!             Ok::<_, Infallible>(response)
//!         }
//!     }
//! });
//!
//! let client = ServiceBuilder::new()
//!     .layer(RetryLayer::new(RetryUnavailable(2))) // outer: each attempt ...
//!     .layer(BearerAuthLayer::from_cache(cache.clone())) // ... reads the cache
//!     .service(server);
//!
//! let response = client.oneshot(Request::new(())).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(attempts.lock().unwrap().len(), 2);
//! assert_eq!(cache.stats().fetches, 2); // the retry carried a new token
//! # Ok(())
//! # }
//! ```
//!
//! # Timeouts: tower's `Timeout`
//!
//! Put `Timeout` **outside** the middleware to bound the whole request,
//! including any wait for a token. A request that times out while waiting
//! cancels nothing: the fetch runs on a task of its own, bounded by the
//! cache's own [`fetch_timeout`](crate::TokenCache::fetch_timeout) (10 s by
//! default), and its token serves the next requests. A `Timeout` inside the
//! middleware bounds only the inner service's call.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Token, TokenCache, TokenErrorKind};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! // An identity provider that never answers.
//! let cache = TokenCache::new(|| std::future::pending::<Result<Token, std::io::Error>>())
//!     .fetch_timeout(Duration::from_secs(5));
//! let client = ServiceBuilder::new()
//!     .timeout(Duration::from_secs(1))
//!     .layer(BearerAuthLayer::from_cache(cache.clone()))
//!     .service(service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) }));
//!
//! let error = client.oneshot(Request::new(())).await.unwrap_err();
//! assert!(error.is::<tower::timeout::error::Elapsed>());
//!
//! // The fetch went on, and failed after its own 5 s (we are at 5.2 s).
//! tokio::time::sleep(Duration::from_millis(4200)).await;
//! let error = cache.token().await.unwrap_err();
//! assert_eq!(error.kind(), TokenErrorKind::BackingOff);
//! assert_eq!(error.last_failure().kind(), TokenErrorKind::Timeout);
//! assert_eq!(cache.stats().fetches, 1);
//! # }
//! ```
//!
//! # Buffers: tower's `Buffer` and tonic's `Channel`
//!
//! Either order works. A `Buffer` (tonic's `Channel` is one) hands out
//! clones that must each be made ready before they are called; the
//! middleware forwards `poll_ready` and calls the very instance that was
//! made ready, also when a request first waits for a token. With the
//! middleware outside the buffer, as over a `Channel`, the token is set on
//! the caller's task and each clone keeps its own view of the cache; with
//! the buffer outside, one middleware sits behind the buffer's worker.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{header::AUTHORIZATION, Request, Response};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Token, TokenCache};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) });
//! let client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::from_cache(cache.clone()))
//!     .buffer(16)
//!     .service(service_fn(|request: Request<()>| async move {
//!         Ok::<_, Infallible>(Response::new(request.headers()[AUTHORIZATION].clone()))
//!     }));
//!
//! let requests = (0..100).map(|_| client.clone().oneshot(Request::new(())));
//! for response in futures_join_all(requests).await {
//!     assert_eq!(response?.body(), "Bearer abcd1234");
//! }
//! assert_eq!(cache.stats().fetches, 1);
//! # Ok(())
//! # }
//! # async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
//! # where F::Output: Send + 'static {
//! #     let handles: Vec<_> = futures.map(tokio::spawn).collect();
//! #     let mut outputs = Vec::new();
//! #     for handle in handles { outputs.push(handle.await.unwrap()); }
//! #     outputs
//! # }
//! ```
//!
//! # Migrating from tower-http's `AddAuthorization`
//!
//! `AddAuthorization` sets a token fixed when the layer is built: it is the
//! right tool when the token never changes. Where the token has to be
//! fetched, and renewed, swap the layer; a request with a fresh token costs
//! about the same through either (measured in the repository's
//! `docs/performance.md`):
//!
//! ```
//! # use std::convert::Infallible;
//! # use http::{Request, Response};
//! # use tower::{service_fn, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, Token};
//! use tower_http::auth::AddAuthorizationLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! # let client = service_fn(|request: Request<()>| async move {
//! #     Ok::<_, Infallible>(Response::new(request.headers()["authorization"].clone()))
//! # });
//! // Before: a token known up front.
//! let before = ServiceBuilder::new()
//!     .layer(AddAuthorizationLayer::bearer("abcd1234").as_sensitive(true))
//!     .service(client.clone());
//!
//! // After: a token fetched when needed, and again before it expires.
//! let after = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(|| async {
//!         // log on here; with an expiry, the token is renewed ahead of it
//!         Ok::<_, std::io::Error>(Token::new("abcd1234"))
//!     }))
//!     .service(client);
//!
//! let before = before.oneshot(Request::new(())).await?;
//! let after = after.oneshot(Request::new(())).await?;
//! assert_eq!(before.body(), after.body());
//! assert!(after.body().is_sensitive());
//! # Ok(())
//! # }
//! ```
//!
//! What changes:
//!
//! - **Errors.** `AddAuthorization` passes the inner service's error type
//!   through; `BearerAuth` returns [`BoxError`](crate::BoxError), with the
//!   inner error untouched inside it and the crate's own failures as a
//!   [`TokenError`](crate::TokenError).
//! - **Bad tokens.** `AddAuthorizationLayer::bearer` panics on a token that
//!   is not a valid header value; here it is an
//!   [`InvalidToken`](crate::TokenErrorKind::InvalidToken) error and no
//!   request is sent.
//! - **Sensitivity.** `AddAuthorization` marks the header sensitive only with
//!   `as_sensitive(true)`; `BearerAuth` always does.
//! - **The inner service** must be `Clone` (a request that waits for a token
//!   takes the instance that was made ready with it) and answer
//!   `http::Response`s (to see a `401`).
//! - **Other schemes.** `AddAuthorization::basic(user, password)` becomes a
//!   cache with [`scheme("Basic")`](crate::TokenCache::scheme) and the
//!   base64 of `user:password` as its token; a custom header uses
//!   [`header_name`](crate::BearerAuthLayer::header_name).
//! - **A `401`** now evicts the token, and the next request fetches a new
//!   one: for a token that never changes this costs one needless fetch per
//!   `401`.
