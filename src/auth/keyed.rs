//! The keyed middleware: a token per key, the key taken from each request.
//!
//! [`KeyedBearerAuthLayer`] is [`BearerAuthLayer`]'s sibling for a
//! [`KeyedTokenCache`]: each request's key comes from a [`TokenKey`]
//! extension on the request if it has one, else from the layer's key
//! function over the request's head, and the request gets that key's token.
//! A request without a key passes through untouched. The header, scope,
//! `keep_existing` and `401` handling are those of [`BearerAuthLayer`]; a
//! `401` evicts the rejected token from its own key only.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION};
use http::{Extensions, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

use super::future::{Pending, ResponseFuture, Sent};
use super::BearerAuthLayer;
use crate::cache::keyed::KeyMap;
use crate::cache::Lookup;
use crate::{BoxError, KeyedTokenCache, RequestHead, Scope, TokenError};

/// A request extension that names the key of its token, for keys the
/// request's head cannot show (a tenant known to the caller, say). It wins
/// over the layer's key function.
///
/// ```
/// use http::Request;
/// use tower_bearer::TokenKey;
///
/// let mut request = Request::new(());
/// request.extensions_mut().insert(TokenKey("tenant-42".to_owned()));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TokenKey<K>(pub K);

type KeyFn<K> = dyn Fn(&RequestHead<'_>) -> Option<K> + Send + Sync;

/// Which key a request's token belongs to: the one place the tower layer
/// and the reqwest middleware decide it.
pub(crate) struct KeyOf<K>(Arc<KeyFn<K>>);

impl<K: Clone + Send + Sync + 'static> KeyOf<K> {
    pub(crate) fn new(key: impl Fn(&RequestHead<'_>) -> Option<K> + Send + Sync + 'static) -> Self {
        Self(Arc::new(key))
    }

    /// Calls `with` on the request's key: the [`TokenKey`] extension's, or
    /// else the key function's. `None` when the request has no key.
    #[inline]
    pub(crate) fn with<R>(
        &self,
        head: RequestHead<'_>,
        extensions: &Extensions,
        with: impl FnOnce(&K) -> R,
    ) -> Option<R> {
        if let Some(TokenKey(key)) = extensions.get::<TokenKey<K>>() {
            return Some(with(key));
        }
        (self.0)(&head).map(|key| with(&key))
    }
}

impl<K> Clone for KeyOf<K> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<K> fmt::Debug for KeyOf<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::any::type_name::<KeyFn<K>>())
    }
}

impl BearerAuthLayer {
    /// A layer that gives each request the token of its key, from `cache`.
    ///
    /// The key is the request's [`TokenKey<K>`] extension if it has one, or
    /// else `key(&head)`; `None` means no token, and the request passes
    /// through untouched (no header, no fetch, and a `401` evicts nothing),
    /// unless [`require_key`](KeyedBearerAuthLayer::require_key) makes it a
    /// failure.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use tower::{service_fn, ServiceBuilder, ServiceExt};
    /// use tower_bearer::{BearerAuthLayer, KeyedTokenCache, Token};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bearer::BoxError> {
    /// // A token per host.
    /// let cache = KeyedTokenCache::new(|host: &String| {
    ///     let token = format!("token-for-{host}");
    ///     move || {
    ///         let token = token.clone();
    ///         async move { Ok::<_, Infallible>(Token::new(token)) }
    ///     }
    /// });
    /// let client = ServiceBuilder::new()
    ///     .layer(BearerAuthLayer::keyed(cache, |head| {
    ///         head.uri().host().map(str::to_owned)
    ///     }))
    ///     .service(service_fn(|request: Request<()>| async move {
    ///         let auth = request.headers().get("authorization").cloned();
    ///         Ok::<_, Infallible>(Response::new(auth))
    ///     }));
    ///
    /// let get = |uri: &str| client.clone().oneshot(Request::get(uri).body(()).unwrap());
    /// let orders = get("https://orders.example.com/v1").await?;
    /// assert_eq!(orders.body().as_ref().unwrap(), "Bearer token-for-orders.example.com");
    /// let relative = get("/no/host").await?;
    /// assert!(relative.body().is_none());
    /// # Ok(())
    /// # }
    /// ```
    pub fn keyed<K>(
        cache: KeyedTokenCache<K>,
        key: impl Fn(&RequestHead<'_>) -> Option<K> + Send + Sync + 'static,
    ) -> KeyedBearerAuthLayer<K>
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        KeyedBearerAuthLayer {
            cache,
            key: KeyOf::new(key),
            header: AUTHORIZATION,
            keep_existing: false,
            require_key: false,
            scope: None,
        }
    }
}

/// Layer that applies [`KeyedBearerAuth`]: each request gets the token of
/// its key from a [`KeyedTokenCache`]. Built by [`BearerAuthLayer::keyed`].
///
/// Clones share one cache. See the [module docs](crate::auth::keyed).
pub struct KeyedBearerAuthLayer<K> {
    cache: KeyedTokenCache<K>,
    key: KeyOf<K>,
    header: HeaderName,
    keep_existing: bool,
    require_key: bool,
    scope: Option<Scope>,
}

impl<K> KeyedBearerAuthLayer<K> {
    /// As [`BearerAuthLayer::header_name`].
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.header = header;
        self
    }

    /// As [`BearerAuthLayer::keep_existing`].
    pub fn keep_existing(mut self, keep: bool) -> Self {
        self.keep_existing = keep;
        self
    }

    /// As [`BearerAuthLayer::scope`]: a request outside it gets no token,
    /// whatever its key.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.scope = (!scope.is_everything()).then_some(scope);
        self
    }

    /// What a request in scope that has no key gets: with `false` (the
    /// default) it is sent without a token; with `true` it is not sent, and
    /// fails with a [`TokenError`] of kind
    /// [`NoKey`](crate::TokenErrorKind::NoKey). Choose `true` when every
    /// request must carry a token: a key function that reads the host
    /// finds none in a tonic request, whose URI is only a path.
    pub fn require_key(mut self, require: bool) -> Self {
        self.require_key = require;
        self
    }

    /// The cache this layer takes its tokens from.
    pub fn cache(&self) -> &KeyedTokenCache<K> {
        &self.cache
    }
}

impl<K> Clone for KeyedBearerAuthLayer<K> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            key: self.key.clone(),
            header: self.header.clone(),
            keep_existing: self.keep_existing,
            require_key: self.require_key,
            scope: self.scope.clone(),
        }
    }
}

impl<S, K> Layer<S> for KeyedBearerAuthLayer<K> {
    type Service = KeyedBearerAuth<S, K>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedBearerAuth {
            inner,
            local: arc_swap::Cache::new(Arc::clone(self.cache.map())),
            cache: self.cache.clone(),
            key: self.key.clone(),
            header: self.header.clone(),
            authorization: self.header == AUTHORIZATION,
            keep_existing: self.keep_existing,
            require_key: self.require_key,
            scope: self.scope.clone(),
        }
    }
}

impl<K> fmt::Debug for KeyedBearerAuthLayer<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBearerAuthLayer")
            .field("cache", &self.cache)
            .field("key", &self.key)
            .field("header", &self.header)
            .field("keep_existing", &self.keep_existing)
            .field("require_key", &self.require_key)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Middleware that authorizes each request with the token of its key, from
/// a [`KeyedTokenCache`]. Built by [`KeyedBearerAuthLayer`].
pub struct KeyedBearerAuth<S, K> {
    inner: S,
    cache: KeyedTokenCache<K>,
    // This clone's own view of the key map: a pointer compare per request
    // while no key is added or dropped.
    local: arc_swap::Cache<Arc<ArcSwap<KeyMap<K>>>, Arc<KeyMap<K>>>,
    key: KeyOf<K>,
    header: HeaderName,
    // Whether `header` is `Authorization`: then it is named as a constant,
    // which saves cloning a `HeaderName` per request.
    authorization: bool,
    keep_existing: bool,
    require_key: bool,
    scope: Option<Scope>,
}

impl<S, K> KeyedBearerAuth<S, K> {
    /// The cache this service takes its tokens from.
    pub fn cache(&self) -> &KeyedTokenCache<K> {
        &self.cache
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

/// What the hot path found for a request.
enum Found<K> {
    Fresh(HeaderValue, Sent),
    /// The key has no fresh token, or is new: the slow path.
    Other(K),
}

impl<S, K, B, ResBody> Service<Request<B>> for KeyedBearerAuth<S, K>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        if !self.wants_token(&request) {
            return ResponseFuture::calling(self.inner.call(request), Sent::NOTHING);
        }
        let epoch = self.cache.epoch();
        let map = self.local.load();
        let head = RequestHead::new(request.method(), request.uri(), request.headers());
        let found = self.key.with(head, request.extensions(), |key| {
            match map.fresh(key, epoch) {
                Some(fresh) => {
                    Found::Fresh(fresh.header, Sent::new(fresh.cache_id, fresh.generation))
                }
                None => Found::Other(key.clone()),
            }
        });
        match found {
            Some(Found::Fresh(header, sent)) => {
                if self.authorization {
                    request.headers_mut().insert(AUTHORIZATION, header);
                } else {
                    request.headers_mut().insert(&self.header, header);
                }
                ResponseFuture::calling(self.inner.call(request), sent)
            }
            Some(Found::Other(key)) => self.call_other(request, &key),
            None if self.require_key => ResponseFuture::failed(TokenError::no_key()),
            None => ResponseFuture::calling(self.inner.call(request), Sent::NOTHING),
        }
    }
}

impl<S, K> KeyedBearerAuth<S, K>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    #[inline]
    fn wants_token<B>(&self, request: &Request<B>) -> bool {
        if let Some(scope) = &self.scope {
            if !scope.matches(request) {
                return false;
            }
        }
        !(self.keep_existing && request.headers().contains_key(&self.header))
    }

    /// A request whose key has no fresh token, or is new.
    #[cold]
    #[inline(never)]
    fn call_other<B>(&mut self, request: Request<B>, key: &K) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>> + Clone,
    {
        let (cache_id, lookup) = self.cache.lookup(key);
        match lookup {
            Lookup::Ready(entry) => {
                let sent = Sent::new(cache_id, entry.generation);
                ResponseFuture::authorized(&mut self.inner, request, &self.header, &entry, sent)
            }
            Lookup::Wait(waiter) => {
                // The instance that was made ready goes with the request; this
                // service keeps a fresh clone. See "Be careful when cloning
                // inner services" in the `tower::Service` docs.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let pending = Pending {
                    inner,
                    request,
                    header: self.header.clone(),
                };
                ResponseFuture::waiting(Box::pin(waiter.wait()), pending, cache_id)
            }
            Lookup::Fail(error) => ResponseFuture::failed(error),
        }
    }
}

impl<S: Clone, K> Clone for KeyedBearerAuth<S, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            local: self.local.clone(),
            key: self.key.clone(),
            header: self.header.clone(),
            authorization: self.authorization,
            keep_existing: self.keep_existing,
            require_key: self.require_key,
            scope: self.scope.clone(),
        }
    }
}

impl<S: fmt::Debug, K> fmt::Debug for KeyedBearerAuth<S, K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBearerAuth")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .field("key", &self.key)
            .field("header", &self.header)
            .field("keep_existing", &self.keep_existing)
            .field("require_key", &self.require_key)
            .field("scope", &self.scope)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::mpsc;
    use std::time::Duration;

    use http::{Request, Response};
    use tower::{service_fn, ServiceExt};

    use super::*;
    use crate::Token;

    /// A request for a key with a fresh token, sent on another thread while
    /// this one holds the key map's write lock and every lock of the key's
    /// cache: it must not wait for any of them.
    #[test]
    fn a_fresh_key_takes_no_lock() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cache = KeyedTokenCache::new(|_: &u64| {
            || async { Ok::<_, Infallible>(Token::new("t").expires_in(Duration::from_secs(3600))) }
        });
        runtime.block_on(cache.token(&1)).unwrap();
        let inner = service_fn(|request: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(request.headers().contains_key(AUTHORIZATION)))
        });
        let service = BearerAuthLayer::keyed(cache.clone(), |_| Some(1u64)).layer(inner);
        let key_cache = cache.cache(&1);
        let _locks = (cache.hold_write_lock(), key_cache.shared().hold_locks());
        let handle = runtime.handle().clone();
        let (done, sent) = mpsc::channel();
        std::thread::spawn(move || {
            let response = handle.block_on(service.oneshot(Request::new(())));
            let _ = done.send(response.map(Response::into_body).ok());
        });
        let sent = sent.recv_timeout(Duration::from_secs(10));
        assert_eq!(sent, Ok(Some(true)), "the request waited for a lock");
    }
}
