//! Sender-constrained tokens: DPoP (RFC 9449), behind the `dpop` feature.
//!
//! A DPoP-bound token only works beside a fresh proof, signed by the
//! client's [`ProofKey`], that names the request it goes with. A stolen
//! token is useless without the key.
//!
//! - [`ClientCredentials::dpop`](crate::oauth2::ClientCredentials::dpop)
//!   asks the token endpoint for a bound token: each token request carries a
//!   proof (`htm` `POST`, `htu` the token URL), and a `token_type` of `DPoP`
//!   (any case) binds the token it gets to a [`Binding`]: the key and the
//!   nonces the servers sent.
//! - The binding travels with the [`Token`](crate::Token) through the cache.
//!   A plain [`BearerAuthLayer::from_cache`](crate::BearerAuthLayer::from_cache)
//!   (or the reqwest middleware) sends, for a bound token,
//!   `Authorization: DPoP <token>` and a `DPoP` proof with `htm`, `htu` =
//!   `scheme://authority/path`, `iat`, a random `jti`, `ath` =
//!   base64url(SHA-256(token)) and the origin's nonce. A token that is not
//!   bound is sent as a plain bearer token: the bearer path does not pay
//!   for DPoP.
//! - Nonces: the last `DPoP-Nonce` of each resource origin, from any
//!   response, and the token endpoint's, kept apart even on one origin. A
//!   token endpoint's nonce challenge (`400`, `error` `use_dpop_nonce`) is
//!   answered at once with one retry; a resource's (`401` with
//!   `WWW-Authenticate: DPoP error="use_dpop_nonce"`) never evicts the token,
//!   and [`RetryOnUnauthorized`](crate::RetryOnUnauthorized) sends the request once more, with
//!   the new nonce.
//!
//! See `docs/dpop.md` for the choices made and the measured cost.
//!
//! # Example
//!
//! ```no_run
//! use tower::{ServiceBuilder, ServiceExt, Service};
//! use tower_bearer::dpop::ProofKey;
//! use tower_bearer::oauth2::ClientCredentials;
//! use tower_bearer::{BearerAuthLayer, RetryOnUnauthorized, TokenCache};
//!
//! # async fn run<S, B>(client: S) -> Result<(), tower_bearer::BoxError>
//! # where S: Service<http::Request<String>, Response = http::Response<B>> + Clone, S::Error: Into<tower_bearer::BoxError> {
//! let key = ProofKey::generate()?;
//! let source = ClientCredentials::try_new("https://idp.example.com/token", "my-client", "s3cret")?
//!     .dpop(key);
//! let cache = TokenCache::new(source);
//! let mut client = ServiceBuilder::new()
//!     .retry(RetryOnUnauthorized::new()) // answers a resource's nonce challenge
//!     .layer(BearerAuthLayer::from_cache(cache))
//!     .service(client);
//! let request = http::Request::get("https://api.example.com/orders").body(String::new())?;
//! let response = client.ready().await?.call(request).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # `htu` at the token endpoint
//!
//! The token endpoint compares `htu` with its own URL for itself. Give
//! `ClientCredentials` the token URL exactly as the server names it (its
//! discovery document's `token_endpoint`). A server that compares with a
//! configured base URL refuses `http://localhost:8080/token` when it calls
//! itself `http://127.0.0.1:8080/token`, and any server refuses a URL that a
//! proxy rewrites on the way: an htu mismatch, which oidc-provider reports
//! as `invalid_dpop_proof` (it derives its own URL from the `Host` header,
//! so it takes either spelling of loopback, but not the proxy's path).

mod error;
mod key;
mod nonce;
mod proof;

use std::fmt;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

pub use self::error::{Error, ErrorKind};
pub use self::key::ProofKey;
pub(crate) use self::nonce::is_nonce_challenge;
use self::nonce::Nonces;
use self::proof::{Claims, Target};

/// The `DPoP` request header.
pub const DPOP: HeaderName = HeaderName::from_static("dpop");

/// A [`ProofKey`] and the nonces servers gave it: what a bound token
/// carries. Clones share the nonces.
///
/// [`ClientCredentials::dpop`](crate::oauth2::ClientCredentials::dpop)
/// makes one; a source of your own binds its tokens with
/// [`Token::bind`](crate::Token::bind).
///
/// ```
/// use tower_bearer::dpop::{Binding, ProofKey};
/// use tower_bearer::Token;
///
/// # fn main() -> Result<(), tower_bearer::dpop::Error> {
/// let binding = Binding::new(ProofKey::generate()?);
/// let token = Token::new("abcd1234").bind(&binding);
/// assert!(token.binding().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Binding {
    inner: Arc<BindingInner>,
}

struct BindingInner {
    key: ProofKey,
    nonces: Nonces,
}

impl Binding {
    /// A binding to `key`, with no nonce yet.
    pub fn new(key: ProofKey) -> Self {
        Self {
            inner: Arc::new(BindingInner {
                key,
                nonces: Nonces::default(),
            }),
        }
    }

    /// The key.
    pub fn key(&self) -> &ProofKey {
        &self.inner.key
    }

    /// A proof for a token request to `token_url` (`htm` `POST`, no `ath`),
    /// with the token endpoint's nonce.
    pub(crate) fn token_request_proof(&self, token_url: &Uri) -> Result<HeaderValue, Error> {
        let target = Target::of(token_url)?;
        let nonce = self.inner.nonces.token_endpoint();
        proof::sign(
            &self.inner.key,
            &Claims {
                htm: &Method::POST,
                htu: &target.htu,
                ath: None,
                nonce: nonce.as_deref(),
            },
        )
    }

    /// Remembers the token endpoint's `DPoP-Nonce` from `headers`, if any;
    /// whether there was one.
    pub(crate) fn token_endpoint_nonce(&self, headers: &HeaderMap) -> bool {
        self.inner.nonces.remember_token_endpoint(headers)
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

/// What a bound [`Token`](crate::Token) holds: its binding, and its `ath`,
/// hashed once.
#[derive(Clone)]
pub(crate) struct Bound {
    binding: Binding,
    ath: Arc<str>,
}

impl Bound {
    pub(crate) fn new(binding: &Binding, token: &str) -> Self {
        Self {
            binding: binding.clone(),
            ath: proof::ath(token).into(),
        }
    }

    pub(crate) fn binding(&self) -> &Binding {
        &self.binding
    }

    /// The proof for a request of `method` to `uri`, with `origin`'s nonce,
    /// and what the response must be shown to.
    pub(crate) fn prove(&self, method: &Method, uri: &Uri) -> Result<(HeaderValue, Sent), Error> {
        let Target { origin, htu } = Target::of(uri)?;
        let inner = &self.binding.inner;
        let nonce = inner.nonces.resource(&origin);
        let proof = proof::sign(
            &inner.key,
            &Claims {
                htm: method,
                htu: &htu,
                ath: Some(&self.ath),
                nonce: nonce.as_deref(),
            },
        )?;
        let sent = Sent {
            binding: self.binding.clone(),
            origin: origin.into(),
        };
        Ok((proof, sent))
    }
}

/// A request sent with a proof: its response's `DPoP-Nonce` is remembered
/// for its origin.
pub(crate) struct Sent {
    binding: Binding,
    origin: Box<str>,
}

impl Sent {
    /// Takes in the response; returns whether it rejects the token (a `401`
    /// that is not a nonce challenge), which evicts it.
    pub(crate) fn rejects(&self, status: StatusCode, headers: &HeaderMap) -> bool {
        self.binding
            .inner
            .nonces
            .remember_resource(&self.origin, headers);
        status == StatusCode::UNAUTHORIZED && !is_nonce_challenge(headers)
    }
}

impl fmt::Debug for Sent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sent")
            .field("origin", &self.origin)
            .finish()
    }
}
