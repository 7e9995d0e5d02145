//! [`BearerAuthLayer`]: the layer that wraps a service in
//! [`BearerAuth`](super::BearerAuth), and its options.

use std::fmt;

use http::header::{HeaderName, AUTHORIZATION};
use tower_layer::Layer;

use super::BearerAuth;
use crate::{Scope, TokenCache, TokenSource};

/// Layer that applies [`BearerAuth`], which authorizes every request with a
/// token from a [`TokenCache`].
///
/// Clones share one cache. See the [module docs](crate::auth) for more.
///
/// ```
/// use std::convert::Infallible;
/// use std::time::Duration;
/// use http::{Request, Response};
/// use tower::{service_fn, ServiceBuilder, ServiceExt};
/// use tower_bearer::{BearerAuthLayer, Token};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// let client = ServiceBuilder::new()
///     .layer(BearerAuthLayer::new(|| async {
///         Ok::<_, std::io::Error>(Token::new("abcd1234").expires_in(Duration::from_secs(60)))
///     }))
///     .service(service_fn(|request: Request<()>| async move {
///         assert_eq!(request.headers()["authorization"], "Bearer abcd1234");
///         Ok::<_, Infallible>(Response::new(()))
///     }));
/// client.oneshot(Request::new(())).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BearerAuthLayer {
    pub(super) cache: TokenCache,
    pub(super) header: HeaderName,
    pub(super) keep_existing: bool,
    pub(super) scope: Option<Scope>,
}

impl BearerAuthLayer {
    /// A layer with a new cache of tokens from `source`, with the default
    /// cache options. Use [`from_cache`](Self::from_cache) to set them.
    pub fn new(source: impl TokenSource) -> Self {
        Self::from_cache(TokenCache::new(source))
    }

    /// A layer that takes its tokens from `cache`, which may be shared with
    /// other layers and with code outside tower.
    pub fn from_cache(cache: TokenCache) -> Self {
        cache.shared().register();
        Self {
            cache,
            header: AUTHORIZATION,
            keep_existing: false,
            scope: None,
        }
    }

    /// The header that carries the token. Default: `Authorization`.
    ///
    /// The scheme written before the token belongs to the cache:
    /// [`TokenCache::scheme`] and [`TokenCache::no_scheme`].
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// Whether a request that already has the header keeps it, and is sent
    /// without a token from the cache. Default: `false`, the header is
    /// overwritten.
    pub fn keep_existing(mut self, keep: bool) -> Self {
        self.keep_existing = keep;
        self
    }

    /// Which requests get the token. Default: every request.
    ///
    /// A request outside the scope passes through untouched: no header, no
    /// fetch, and a `401` to it evicts nothing. See [`crate::scope`] for why
    /// one would narrow it.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = (!scope.is_everything()).then_some(scope);
        self
    }

    /// The cache this layer takes its tokens from.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }
}

// The layer's constructor on the service, as tower's middleware offer it;
// here, so that the service does not import its layer.
impl<S> BearerAuth<S> {
    /// A [`BearerAuthLayer`] with a new cache of tokens from `source`.
    pub fn layer(source: impl TokenSource) -> BearerAuthLayer {
        BearerAuthLayer::new(source)
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth::new(inner, self.cache.clone())
            .header_name(self.header.clone())
            .keep_existing(self.keep_existing)
            .with_scope(self.scope.clone())
    }
}

impl fmt::Debug for BearerAuthLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthLayer")
            .field("cache", &self.cache)
            .field("header", &self.header)
            .field("keep_existing", &self.keep_existing)
            .field("scope", &self.scope)
            .finish()
    }
}
