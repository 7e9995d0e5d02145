//! [`BearerAuth`]: the service that sets `Authorization: Bearer <token>` on
//! each request, from the cache, and passes `401`s back to it.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{HeaderName, AUTHORIZATION};
use http::{Request, Response};
use tower_service::Service;

use super::future::{Pending, ResponseFuture, Sent};
use crate::cache::{Current, Entry, Lookup};
use crate::{BoxError, Scope, TokenCache};

/// Middleware that authorizes every request with a token from a
/// [`TokenCache`], as `Authorization: Bearer <token>` by default.
///
/// Usually built with [`BearerAuthLayer`](super::BearerAuthLayer); [`BearerAuth::new`] wraps a
/// service directly. See the [module docs](crate::auth) for more.
///
/// ```
/// use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, ServiceExt};
/// use tower_bearer::{BearerAuth, Token, TokenCache};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_bearer::BoxError> {
/// let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) });
/// let server = service_fn(|_: Request<()>| async {
///     // this server has revoked every token
///     let mut response = Response::new(());
///     *response.status_mut() = StatusCode::UNAUTHORIZED;
///     Ok::<_, Infallible>(response)
/// });
/// let client = BearerAuth::new(server, cache.clone());
///
/// let token = cache.token().await?;
/// let response = client.oneshot(Request::new(())).await?;
/// assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
/// // The 401 evicted the token that was sent.
/// assert!(!cache.invalidate(&token));
/// # Ok(())
/// # }
/// ```
pub struct BearerAuth<S> {
    inner: S,
    cache: TokenCache,
    // This clone's own view of the current entry: a pointer compare per
    // request while the token is unchanged.
    local: arc_swap::Cache<Current, Arc<Entry>>,
    cache_id: u64,
    header: HeaderName,
    keep_existing: bool,
    scope: Option<Scope>,
    // Another header name, `keep_existing` or a scope: the request takes the
    // slow path. One flag, so that the hot path stays one branch.
    detour: bool,
}

impl<S> BearerAuth<S> {
    /// Wraps `inner`, taking tokens from `cache`.
    pub fn new(inner: S, cache: TokenCache) -> Self {
        cache.shared().register();
        let local = arc_swap::Cache::new(cache.shared().current.clone());
        Self {
            inner,
            cache_id: cache.shared().id,
            cache,
            local,
            header: AUTHORIZATION,
            keep_existing: false,
            scope: None,
            detour: false,
        }
    }

    /// The header that carries the token. Default: `Authorization`.
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.header = header;
        self.set_detour();
        self
    }

    /// Whether a request that already has the header keeps it. Default:
    /// `false`, the header is overwritten.
    pub fn keep_existing(mut self, keep: bool) -> Self {
        self.keep_existing = keep;
        self.set_detour();
        self
    }

    /// Which requests get the token. Default: every request. See
    /// [`BearerAuthLayer::scope`](super::BearerAuthLayer::scope).
    pub fn scope(self, scope: Scope) -> Self {
        self.with_scope((!scope.is_everything()).then_some(scope))
    }

    pub(super) fn with_scope(mut self, scope: Option<Scope>) -> Self {
        self.scope = scope;
        self.set_detour();
        self
    }

    fn set_detour(&mut self) {
        self.detour = self.header != AUTHORIZATION || self.keep_existing || self.scope.is_some();
    }

    /// The cache this service takes its tokens from.
    pub fn cache(&self) -> &TokenCache {
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

impl<S, B, ResBody> Service<Request<B>> for BearerAuth<S>
where
    S: Service<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // The hot path: a fresh token and every option at its default. It
        // spells out `send` rather than calling it, which saves a copy of the
        // request once this is inlined into the caller, and names the header
        // as a constant, which saves cloning a `HeaderName`.
        let entry = self.local.load();
        if entry.is_fresh() && !self.detour {
            request
                .headers_mut()
                .insert(AUTHORIZATION, entry.header.clone());
            let sent = Sent::new(self.cache_id, entry.generation);
            return ResponseFuture::calling(self.inner.call(request), sent);
        }
        self.call_other(request)
    }
}

impl<S> BearerAuth<S> {
    /// Calls the inner service with the token of `entry`.
    #[inline]
    fn send<B>(&mut self, request: Request<B>, entry: &Entry, sent: Sent) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        ResponseFuture::authorized(&mut self.inner, request, &self.header, entry, sent)
    }

    /// Every request off the hot path (no fresh token, or an option set):
    /// kept out of line so that the hot path stays small enough to inline.
    #[cold]
    #[inline(never)]
    fn call_other<B>(&mut self, request: Request<B>) -> ResponseFuture<S, B>
    where
        S: Service<Request<B>> + Clone,
    {
        if let Some(scope) = &self.scope {
            if !scope.matches(&request) {
                return ResponseFuture::calling(self.inner.call(request), Sent::NOTHING);
            }
        }
        if self.keep_existing && request.headers().contains_key(&self.header) {
            return ResponseFuture::calling(self.inner.call(request), Sent::NOTHING);
        }
        let entry = self.local.load();
        if entry.is_fresh() {
            let entry = Arc::clone(entry);
            let sent = Sent::new(self.cache_id, entry.generation);
            return self.send(request, &entry, sent);
        }
        let cache = self.cache.shared();
        match cache.lookup(self.local.load()) {
            Lookup::Ready(entry) => {
                let sent = Sent::new(self.cache_id, entry.generation);
                self.send(request, &entry, sent)
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
                ResponseFuture::waiting(Box::pin(waiter.wait()), pending, self.cache_id)
            }
            Lookup::Fail(error) => ResponseFuture::failed(error),
        }
    }
}

impl<S: Clone> Clone for BearerAuth<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            local: self.local.clone(),
            cache_id: self.cache_id,
            header: self.header.clone(),
            keep_existing: self.keep_existing,
            scope: self.scope.clone(),
            detour: self.detour,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for BearerAuth<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("inner", &self.inner)
            .field("cache", &self.cache)
            .field("header", &self.header)
            .field("keep_existing", &self.keep_existing)
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

    /// Sends one request on another thread while this one holds every lock
    /// of the cache; fails instead of deadlocking if the request takes one.
    fn send_while_locked(cache: &TokenCache, runtime: &tokio::runtime::Runtime) {
        let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
        let service = BearerAuth::new(inner, cache.clone());
        let handle = runtime.handle().clone();
        let _locks = cache.shared().hold_locks();
        let (done, sent) = mpsc::channel();
        std::thread::spawn(move || {
            let response = handle.block_on(service.oneshot(Request::new(())));
            let _ = done.send(response.is_ok());
        });
        let sent = sent.recv_timeout(Duration::from_secs(10));
        assert_eq!(sent, Ok(true), "the request waited for a lock");
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_fresh_token_takes_no_lock() {
        let runtime = runtime();
        let cache = TokenCache::new(|| async {
            Ok::<_, Infallible>(Token::new("t").expires_in(Duration::from_secs(3600)))
        });
        runtime.block_on(cache.token()).unwrap();
        send_while_locked(&cache, &runtime);
    }

    #[test]
    fn a_due_token_takes_no_lock_while_its_refresh_is_pending() {
        let runtime = runtime();
        // Due at once (after half of its lifetime, with no margin left), and
        // its refresh never ends.
        let fetches = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cache = TokenCache::new({
            let fetches = fetches.clone();
            move || {
                let first = fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
                async move {
                    if !first {
                        std::future::pending::<()>().await;
                    }
                    Ok::<_, Infallible>(Token::new("t").expires_in(Duration::from_secs(3600)))
                }
            }
        })
        .refresh_before(Duration::from_secs(3600));
        runtime.block_on(cache.token()).unwrap();
        // A due token in place of the fresh one; the next request starts the
        // refresh, which never ends.
        let entry = crate::cache::Entry::due_now();
        cache.shared().current.store(entry.clone());
        runtime.block_on(cache.token()).unwrap();
        let now = tokio::time::Instant::now();
        assert_eq!(entry.phase(now), crate::cache::Phase::Due);
        assert!(cache.shared().refresh_pending(now));
        send_while_locked(&cache, &runtime);
    }
}
