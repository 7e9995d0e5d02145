//! Tower middleware that sends a bearer token it has to fetch.
//!
//! Many clients must send `Authorization: Bearer <token>` with a token they
//! first fetch from somewhere: an OAuth2 token endpoint, a log-on call, a
//! file. Fetching is slow and often rate limited, so the token is cached, and
//! when many requests find the cache empty at once only one of them should
//! fetch while the others wait for its result.
//!
//! [`BearerAuthLayer`] does that for any tower service of `http::Request<B>`:
//!
//! - reads are lock-free and cost about as much as inserting a static
//!   header;
//! - one single-flight refresh runs when the token is due, in the background
//!   while the old token is still valid, so a thousand simultaneous requests
//!   cause one fetch;
//! - failures are shared by the requests that waited on them and paced by a
//!   backoff with jitter, fetches have their own timeout and are never
//!   cancelled by the request that started them, and a 401 evicts exactly the
//!   token that was rejected.
//!
//! See [`cache`] for the phases of a token, the defaults and the failure
//! handling, and [`auth`] for the middleware.
//!
//! # Features
//!
//! | feature | default | gives | pulls in |
//! |---|---|---|---|
//! | `oauth2` | on | `oauth2::ClientCredentials` and `oauth2::TokenExchange`, token sources for the OAuth2 client-credentials grant and RFC 8693, with a built-in HTTP client that honours `HTTPS_PROXY`/`NO_PROXY` (`oauth2::Proxy`) | hyper, hyper-util, http-body(-util), bytes, serde, serde_json, base64, zeroize |
//! | `rustls` | on | https for the built-in HTTP client (implies `oauth2`), with no crypto provider of its own: the application's installed one, else the one `aws-lc-rs` or `ring` names (see `docs/tls.md`) | hyper-rustls, rustls |
//! | `aws-lc-rs` | on | rustls's aws-lc-rs provider, used when the application installed none (rustls's, hyper-rustls's and reqwest 0.13's default) | aws-lc-rs |
//! | `ring` | off | rustls's ring provider instead, used when the application installed none and `aws-lc-rs` is off | ring |
//! | `native-roots` | on | the platform's root certificates for the built-in client | rustls-native-certs |
//! | `webpki-roots` | on | Mozilla's root certificates, compiled in | webpki-roots |
//! | `private-key-jwt` | on | `private_key_jwt` client authentication for `oauth2::ClientCredentials`, assertions signed with ring (RS256, PS256, ES256, EdDSA) (implies `oauth2`) | ring |
//! | `retry` | on | `RetryOnUnauthorized`, a `tower::retry::Policy` that retries a request once after a 401 | tower (`retry`) |
//! | `tracing` | on | a span per fetch (attempt, outcome, latency, lifetime) and events for failures, backoff, a failed refresh that leaves the current token in service, and invalidations; never the token, and only cold paths emit anything | tracing |
//! | `file` | on | `FileToken`, a token read from a file (a Kubernetes projected service-account token, a Vault agent sink) | base64, serde_json |
//! | `grpc` | on | `BearerAuthLayer::grpc()`: gRPC's `UNAUTHENTICATED`, in the headers or the trailers, evicts the token as a 401 does; with `retry`, `grpc::RetryOnUnauthenticated` retries the call once | http-body, bytes |
//! | `reqwest-middleware` | off | [`BearerAuthMiddleware`], for reqwest 0.13 through reqwest-middleware 0.5, with the `401` retry (implies `retry`) | reqwest, reqwest-middleware, async-trait |
//! | `reqwest` | off | `reqwest_client(..)` on the OAuth2 sources: token requests through the application's `reqwest::Client` (implies `oauth2`) | reqwest |
//! | `secrecy` | off | `client_secret(&SecretString)` on the OAuth2 sources (implies `oauth2`) | secrecy |
//! | `dpop` | off | `dpop`: sender-constrained tokens (RFC 9449), `oauth2::ClientCredentials::dpop`, a signed proof per request (implies `private-key-jwt`) | nothing more |
//! | `store` | off | `store`: one token for a whole fleet through a shared store, the `store::TokenStore` trait and `TokenCache::store` | sha2, getrandom, zeroize |
//! | `redis` | off | `store::RedisStore`, the Redis backend of `store` (implies `store`) | redis |
//! | `redis-tls` | off | `rediss://` for `store::RedisStore`, with a CA and a client certificate of your own, under the same provider rule as `rustls` (implies `redis`, `rustls`) | tokio-rustls |
//! | `redis-cluster` | off | `store::RedisStore::cluster`: Redis Cluster (implies `redis`) | redis (`cluster-async`) |
//! | `seal` | off | `store::Sealed`: tokens encrypted at rest (ChaCha20-Poly1305) in any store (implies `store`) | chacha20poly1305, zeroize |
//!
//! Without them the crate is the cache and the middleware alone, on
//! arc-swap, http, tokio, pin-project-lite and tower's two interface crates.
//! Every feature builds with Rust 1.85 but two: at their newest versions,
//! `reqwest-middleware`'s URL crates (icu 2) and `redis` (redis 1.8) need
//! 1.88.
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
//! let mut client = ServiceBuilder::new()
//!     .layer(BearerAuthLayer::new(|| async {
//!         Ok::<_, std::io::Error>(Token::new("abcd1234").expires_in(Duration::from_secs(3600)))
//!     }))
//!     .service(service_fn(|request: Request<()>| async move {
//!         Ok::<_, Infallible>(Response::new(request.headers()[AUTHORIZATION].clone()))
//!     }));
//!
//! let response = client.ready().await?.call(Request::new(())).await?;
//! assert_eq!(response.body(), "Bearer abcd1234");
//! assert!(response.body().is_sensitive());
//! # Ok(())
//! # }
//! ```
//!
//! The token source is any closure returning a future of `Result<Token, E>`
//! (`E` converts into [`BoxError`]), or a type implementing [`TokenSource`],
//! such as `oauth2::ClientCredentials` or `FileToken`. To share one cache between several
//! clients, or to use it outside tower, build a [`TokenCache`] and pass it to
//! [`BearerAuthLayer::from_cache`]: clones of a cache share it, and
//! `cache.token().await` returns the current token.
//!
//! # Integrations
//!
//! - **hyper-util's client**, **tonic's `Channel`**, and any tower service
//!   of `http::Request<B>`: through [`BearerAuthLayer`] (see [`auth`]).
//! - **reqwest**, through reqwest-middleware: [`BearerAuthMiddleware`] (the
//!   `reqwest-middleware` feature), over the same [`TokenCache`], so one
//!   cache can feed a reqwest client and a tower client at once.
//! - **Other tower layers**: [`composition`] says where the layer goes
//!   relative to redirects, retries, timeouts and buffers, and how to
//!   migrate from tower-http's `AddAuthorization`.
//!
//! **One client, many tokens** (an audience, a tenant or a host each):
//! [`KeyedTokenCache`] holds a cache per key and
//! [`BearerAuthLayer::keyed`] gives each request its key's token (see
//! [`cache::keyed`]).
//!
//! [`scope`] narrows which requests get the token (only `https`, only given
//! hosts, or a predicate). [`TokenCache::stats`] and the `tracing` feature
//! say what the cache did (see [the cache's
//! observability](cache#observability)).
//!
//! Each integration is tested with real parts over loopback: hyper-util's
//! client against a local token endpoint and resource, a tonic client
//! against a tonic server that checks the token, and reqwest against the
//! examples' mock backend.
//!
//! ## tonic
//!
//! Wrap the `Channel`:
//! `HealthClient::new(ServiceBuilder::new().layer(BearerAuthLayer::new(source)).service(channel))`.
//! tonic's interceptors are synchronous and cannot wait for a token; a layer
//! around the `Channel` can. The `Channel` is a `Buffer`, so clone the client
//! for concurrent calls: calling a clone that was not made ready panics
//! (see [`composition`]). The repository's `examples/tonic_health.rs` runs a
//! client and a server that checks the token.
//!
//! - **A token failure** reaches the caller as the `tonic::Status` that tonic
//!   makes of the layer's error (`Status::from_error`): code `Unknown`, the
//!   [`TokenError`]'s message (`"token fetch failed: <cause>"`, ...), and
//!   the `TokenError` as its `source()`. One `map_err` gives `UNAVAILABLE`
//!   or `UNAUTHENTICATED` instead ([`TokenError::grpc_code`], see
//!   [`error`](crate::error#through-tonic)).
//! - **A rejected token.** A gRPC server rejects a token with
//!   `UNAUTHENTICATED` inside an HTTP `200`, in the headers or in the
//!   trailers. With the `grpc` feature, `BearerAuthLayer::grpc()` evicts
//!   the rejected token in both cases, as a `401` does, and
//!   `grpc::RetryOnUnauthenticated` sends the call once more with a fresh
//!   token: see the `grpc` module. The plain layer evicts on HTTP `401`
//!   only, so that HTTP clients pay nothing for gRPC.
//! - **Scope.** tonic's generated clients send a path only unless built
//!   `with_origin`; see [`scope`] before narrowing by host.
//!
#![cfg_attr(
    not(feature = "reqwest-middleware"),
    doc = "[`BearerAuthMiddleware`]: https://docs.rs/tower-bearer/latest/tower_bearer/struct.BearerAuthMiddleware.html"
)]
//!
//! # Runtime
//!
//! Fetches run on tokio tasks, so the cache fetches from within a tokio
//! runtime with the time driver enabled (as `#[tokio::main]` sets up); a
//! fetch needed outside any runtime fails with [`TokenErrorKind::NoRuntime`].
//! Within that, the cache keeps its promises however tokio is driven: a
//! `block_on` per request, several runtimes sharing one cache, a runtime
//! that goes idle, the paused clock. See
//! [the runtime contract](cache#the-runtime-contract).

#![deny(missing_docs, unreachable_pub, unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(rust_2018_idioms)]

pub mod auth;
pub mod cache;
pub mod composition;
#[allow(deprecated)]
mod deprecated;
#[cfg(feature = "dpop")]
#[cfg_attr(docsrs, doc(cfg(feature = "dpop")))]
pub mod dpop;
pub mod error;
#[cfg(feature = "file")]
#[cfg_attr(docsrs, doc(cfg(feature = "file")))]
pub mod file;
#[cfg(feature = "grpc")]
#[cfg_attr(docsrs, doc(cfg(feature = "grpc")))]
pub mod grpc;
#[cfg(feature = "store")]
mod identity;
#[cfg(feature = "private-key-jwt")]
mod jws;
#[cfg(any(feature = "oauth2", feature = "file"))]
mod jwt;
#[cfg(feature = "oauth2")]
#[cfg_attr(docsrs, doc(cfg(feature = "oauth2")))]
pub mod oauth2;
#[cfg(feature = "reqwest-middleware")]
#[cfg_attr(docsrs, doc(cfg(feature = "reqwest-middleware")))]
pub mod reqwest;
#[cfg(feature = "retry")]
#[cfg_attr(docsrs, doc(cfg(feature = "retry")))]
pub mod retry;
pub mod scope;
mod source;
#[cfg(feature = "store")]
#[cfg_attr(docsrs, doc(cfg(feature = "store")))]
pub mod store;
#[cfg(feature = "rustls")]
pub(crate) mod tls;
mod token;

#[doc(inline)]
pub use self::auth::{
    BearerAuth, BearerAuthLayer, KeyedBearerAuth, KeyedBearerAuthLayer, TokenKey,
};
#[doc(inline)]
pub use self::cache::{KeyedTokenCache, Stats, StoreStats, TokenCache};
#[doc(inline)]
#[cfg(feature = "retry")]
#[allow(deprecated)]
pub use self::deprecated::RetryOn401;
#[doc(inline)]
pub use self::error::{BoxError, RetryHint, TokenError, TokenErrorKind};
#[cfg(feature = "file")]
#[doc(inline)]
pub use self::file::FileToken;
#[cfg(feature = "grpc")]
#[doc(inline)]
pub use self::grpc::{GrpcAuth, GrpcAuthLayer};
#[cfg(feature = "reqwest-middleware")]
#[doc(inline)]
pub use self::reqwest::{BearerAuthMiddleware, KeyedBearerAuthMiddleware};
#[cfg(feature = "retry")]
#[doc(inline)]
pub use self::retry::RetryOnUnauthorized;
#[doc(inline)]
pub use self::scope::{InvalidHost, RequestHead, Scope};
pub use self::source::TokenSource;
pub use self::token::Token;

// The README's examples compile as doctests too, where every crate they use
// is there (all features); `scripts/readme_examples.py` builds each one as a
// crate of its own, with exactly the dependencies the README lists.
#[cfg(all(
    doctest,
    feature = "oauth2",
    feature = "retry",
    feature = "reqwest-middleware"
))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::{Request, Response};

    use super::*;

    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    /// What tonic, hyper and `tower::buffer::Buffer` require of a layer, its
    /// service and its future.
    #[test]
    fn the_middleware_is_send_and_sync() {
        type Inner = tower::util::ServiceFn<
            fn(Request<String>) -> std::future::Ready<Result<Response<()>, Infallible>>,
        >;
        send_sync::<Token>();
        send_sync::<TokenCache>();
        send_sync::<TokenError>();
        send_sync::<BearerAuthLayer>();
        send_sync::<BearerAuth<Inner>>();
        send::<auth::ResponseFuture<Inner, String>>();
        send_sync::<KeyedTokenCache<String>>();
        send_sync::<KeyedBearerAuthLayer<String>>();
        send_sync::<KeyedBearerAuth<Inner, String>>();
        send_sync::<TokenKey<String>>();
    }
}
