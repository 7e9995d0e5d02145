//! [`BearerAuthMiddleware`]: the same token cache for
//! [reqwest-middleware](reqwest_middleware) clients (the `reqwest-middleware`
//! feature).
//!
//! The middleware sets `Authorization: Bearer <token>` on every request of a
//! `reqwest_middleware::ClientWithMiddleware`, with the same semantics as the
//! tower [`BearerAuth`](crate::BearerAuth): one single-flight fetch for any
//! number of concurrent requests, a refresh ahead of expiry, failures shared
//! and backed off, the header marked sensitive, and a `401 Unauthorized`
//! evicting the token that was sent if it is still the current one. Built
//! [`from_cache`](BearerAuthMiddleware::from_cache), it shares one
//! [`TokenCache`] with tower clients and with code outside either: a `401`
//! seen by one evicts the token for all. It has the layer's setters:
//! [`header_name`](BearerAuthMiddleware::header_name),
//! [`keep_existing`](BearerAuthMiddleware::keep_existing) and
//! [`scope`](BearerAuthMiddleware::scope).
//!
//! A DPoP-bound token (the `dpop` feature, see [`crate::dpop`]) is sent as
//! the tower layer sends it, through the same code: `Authorization: DPoP`
//! with a proof for the request's URL, the origin's nonce remembered from
//! each response, and a nonce challenge that does not evict the token.
//!
//! Supported versions: reqwest 0.13 and reqwest-middleware 0.5 (with older
//! ones, the compiler reports an unsatisfied `Middleware` bound).
//!
//! # 401 retry
//!
//! A request answered `401 Unauthorized` is sent once more, with the token
//! the cache gives after evicting the rejected one: the rules of the tower
//! [`RetryOnUnauthorized`](crate::RetryOnUnauthorized), decided by the same code. Once per
//! request; a DPoP nonce challenge gets one retry of its own, with the
//! server's new nonce and the same token; a second `401` is returned as it
//! is. A request whose body cannot be copied (a stream) gets its `401`
//! back. Each request is copied before it is sent, for the retry (a
//! `Bytes` body's copy is a reference count).
//! [`retry_on_unauthorized(false)`](BearerAuthMiddleware::retry_on_unauthorized)
//! turns it off.
//!
//! A failure to get a token is a `reqwest_middleware::Error::Middleware`
//! whose `anyhow::Error` is the [`TokenError`]:
//! `error.downcast_ref::<TokenError>()` on it recovers the kind and the
//! source chain.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use reqwest_middleware::ClientBuilder;
//! use tower_bearer::{BearerAuthMiddleware, Token};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let url = echo_server().await?;
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(BearerAuthMiddleware::new(|| async {
//!         // log on to the backend here
//!         Ok::<_, std::io::Error>(Token::new("abcd1234").expires_in(Duration::from_secs(3600)))
//!     }))
//!     .build();
//!
//! // The server echoes the Authorization header it received.
//! let body = client.get(url).send().await?.text().await?;
//! assert_eq!(body, "Bearer abcd1234");
//! # Ok(())
//! # }
//! # async fn echo_server() -> std::io::Result<String> {
//! #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! #     let url = format!("http://{}/", listener.local_addr()?);
//! #     tokio::spawn(async move {
//! #         let (mut stream, _) = listener.accept().await?;
//! #         let mut head = Vec::new();
//! #         while !head.ends_with(b"\r\n\r\n") {
//! #             let mut byte = [0];
//! #             stream.read_exact(&mut byte).await?;
//! #             head.push(byte[0]);
//! #         }
//! #         let head = String::from_utf8_lossy(&head);
//! #         let auth = head.lines().find_map(|l| l.strip_prefix("authorization: ")).unwrap_or("");
//! #         let response = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{auth}", auth.len());
//! #         stream.write_all(response.as_bytes()).await
//! #     });
//! #     Ok(url)
//! # }
//! ```
//!
//! # With reqwest-retry
//!
//! reqwest-middleware runs middleware in the order they are added, so add
//! the retry middleware **before** this one: each attempt then passes
//! through the auth middleware and reads the cache again, and an attempt
//! made after a token was evicted or refreshed carries the new token. Added
//! the other way round, the token is set once and every attempt resends it.
//!
//! ```
//! use reqwest_middleware::ClientBuilder;
//! use reqwest_retry::{policies::ExponentialBackoff, RetryTransientMiddleware};
//! use tower_bearer::{BearerAuthMiddleware, Token, TokenCache};
//!
//! let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) });
//! let retry = ExponentialBackoff::builder().build_with_max_retries(3);
//! let client = ClientBuilder::new(reqwest::Client::new())
//!     .with(RetryTransientMiddleware::new_with_policy(retry)) // outer: retries ...
//!     .with(BearerAuthMiddleware::from_cache(cache)) // ... each attempt reads the cache
//!     .build();
//! ```

use std::fmt;
use std::future::Future;
use std::hash::Hash;

use ::reqwest::{Request, Response, StatusCode};
use http::header::{HeaderName, AUTHORIZATION};
use http::{Extensions, Uri};
use reqwest_middleware::{Middleware, Next};

use crate::auth::keyed::KeyOf;
use crate::auth::present::{present, rejects};
use crate::cache::Entry;
use crate::retry::Budget;
use crate::{KeyedTokenCache, RequestHead, Scope, TokenCache, TokenError, TokenSource};

/// Middleware for [reqwest-middleware](reqwest_middleware) clients that
/// authorizes every request with a token from a [`TokenCache`].
///
/// Clones share one cache. See the [module docs](crate::reqwest) for an
/// example and the ordering with reqwest-retry.
#[derive(Clone)]
pub struct BearerAuthMiddleware {
    cache: TokenCache,
    options: Options,
}

/// The settings both middlewares share: where the token goes and which
/// requests get one.
#[derive(Clone, Debug)]
struct Options {
    header: HeaderName,
    keep_existing: bool,
    scope: Option<Scope>,
    retry: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            header: AUTHORIZATION,
            keep_existing: false,
            scope: None,
            retry: true,
        }
    }
}

impl Options {
    /// Whether `request` gets a token at all.
    fn wants_token(&self, request: &Request) -> bool {
        if self.keep_existing && request.headers().contains_key(&self.header) {
            return false;
        }
        let Some(scope) = &self.scope else {
            return true;
        };
        let url = request.url();
        // Only a predicate needs the URL as an `http::Uri`.
        let uri = scope
            .has_predicate()
            .then(|| url.as_str().parse::<Uri>().ok())
            .flatten();
        scope.matches_target(Some(url.scheme()), url.host_str(), || {
            let uri = uri.as_ref()?;
            Some(RequestHead::new(request.method(), uri, request.headers()))
        })
    }

    /// Sends `request` with the token `entry` gives (or fails with its
    /// error), and evicts the token from its cache on a `401`. A `401` is
    /// answered as [`RetryOnUnauthorized`](crate::RetryOnUnauthorized) answers it, by the same
    /// rules: once, with the token `entry` then gives, and once more for a
    /// DPoP nonce challenge.
    async fn send<F>(
        &self,
        mut request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
        entry: impl Fn() -> F,
    ) -> reqwest_middleware::Result<Response>
    where
        F: Future<Output = Result<(TokenCache, std::sync::Arc<Entry>), TokenError>>,
    {
        let failed = |error: TokenError| reqwest_middleware::Error::Middleware(error.into());
        let mut budget = Budget::default();
        loop {
            let (cache, entry) = entry().await.map_err(failed)?;
            // The same seam as the tower layer's: the header, and a proof for
            // a DPoP-bound token.
            let url = request.url();
            let presented = present(&entry, request.method(), || url.as_str().parse().ok());
            let proof = presented
                .map_err(failed)?
                .insert(request.headers_mut(), &self.header);
            let generation = entry.generation;
            drop(entry);
            // A streaming body cannot be sent twice: its 401 is returned.
            let copy = (self.retry && !budget.spent())
                .then(|| request.try_clone())
                .flatten();

            let response = next.clone().run(request, extensions).await?;
            let rejected = match &proof {
                None => response.status() == StatusCode::UNAUTHORIZED,
                Some(proof) => rejects(proof, response.status(), response.headers()),
            };
            if rejected {
                cache.shared().unauthorized(generation);
            }
            match copy {
                Some(copy) if budget.retry(response.status(), response.headers()) => {
                    request = copy;
                }
                _ => return Ok(response),
            }
        }
    }
}

impl BearerAuthMiddleware {
    /// A middleware with a new cache of tokens from `source`, with the
    /// default cache options. Use [`from_cache`](Self::from_cache) to set
    /// them.
    pub fn new(source: impl TokenSource) -> Self {
        Self::from_cache(TokenCache::new(source))
    }

    /// A middleware that takes its tokens from `cache`, which may be shared
    /// with tower layers and with code outside either.
    ///
    /// ```
    /// use tower_bearer::{BearerAuthLayer, BearerAuthMiddleware, Token, TokenCache};
    ///
    /// let cache = TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) });
    /// let for_reqwest = BearerAuthMiddleware::from_cache(cache.clone());
    /// let for_tower = BearerAuthLayer::from_cache(cache);
    /// ```
    pub fn from_cache(cache: TokenCache) -> Self {
        Self {
            cache,
            options: Options::default(),
        }
    }

    /// A middleware that gives each request the token of its key, from
    /// `cache`: as [`BearerAuthLayer::keyed`](crate::BearerAuthLayer::keyed)
    /// for tower. The key is the [`TokenKey<K>`](crate::TokenKey) in the
    /// request's middleware extensions
    /// (`reqwest_middleware::RequestBuilder::with_extension`) if it has one,
    /// or else `key(&head)`; `None` means no token.
    ///
    /// ```
    /// use reqwest_middleware::ClientBuilder;
    /// use tower_bearer::{BearerAuthMiddleware, KeyedTokenCache, Token};
    ///
    /// let cache = KeyedTokenCache::new(|host: &String| {
    ///     let token = format!("token-for-{host}");
    ///     move || {
    ///         let token = token.clone();
    ///         async move { Ok::<_, std::io::Error>(Token::new(token)) }
    ///     }
    /// });
    /// let client = ClientBuilder::new(reqwest::Client::new())
    ///     .with(BearerAuthMiddleware::keyed(cache, |head| {
    ///         head.uri().host().map(str::to_owned)
    ///     }))
    ///     .build();
    /// ```
    pub fn keyed<K>(
        cache: KeyedTokenCache<K>,
        key: impl Fn(&RequestHead<'_>) -> Option<K> + Send + Sync + 'static,
    ) -> KeyedBearerAuthMiddleware<K>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
    {
        KeyedBearerAuthMiddleware {
            cache,
            key: KeyOf::new(key),
            options: Options::default(),
            require_key: false,
        }
    }

    /// The header that carries the token. Default: `Authorization`.
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.options.header = header;
        self
    }

    /// Whether a request that already has the header keeps it, and is sent
    /// without a token from the cache. Default: `false`, the header is
    /// overwritten.
    pub fn keep_existing(mut self, keep: bool) -> Self {
        self.options.keep_existing = keep;
        self
    }

    /// Which requests get the token. Default: every request. See
    /// [`crate::scope`].
    pub fn scope(mut self, scope: Scope) -> Self {
        self.options.scope = (!scope.is_everything()).then_some(scope);
        self
    }

    /// Whether a request answered `401 Unauthorized` is sent once more,
    /// with the token the cache then gives, by
    /// [`RetryOnUnauthorized`](crate::RetryOnUnauthorized)'s rules (see the
    /// [module docs](crate::reqwest#401-retry)). Default: `true`.
    pub fn retry_on_unauthorized(mut self, retry: bool) -> Self {
        self.options.retry = retry;
        self
    }

    /// The cache this middleware takes its tokens from.
    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }
}

#[async_trait::async_trait]
impl Middleware for BearerAuthMiddleware {
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if !self.options.wants_token(&request) {
            return next.run(request, extensions).await;
        }
        let entry = || async {
            let entry = self.cache.entry().await?;
            Ok((self.cache.clone(), entry))
        };
        self.options.send(request, extensions, next, entry).await
    }
}

impl fmt::Debug for BearerAuthMiddleware {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuthMiddleware")
            .field("cache", &self.cache)
            .field("header", &self.options.header)
            .field("keep_existing", &self.options.keep_existing)
            .field("scope", &self.options.scope)
            .field("retry_on_unauthorized", &self.options.retry)
            .finish()
    }
}

/// [`BearerAuthMiddleware`] with a token per key, from a
/// [`KeyedTokenCache`]. Built by [`BearerAuthMiddleware::keyed`].
pub struct KeyedBearerAuthMiddleware<K> {
    cache: KeyedTokenCache<K>,
    key: KeyOf<K>,
    options: Options,
    require_key: bool,
}

impl<K> KeyedBearerAuthMiddleware<K> {
    /// As [`BearerAuthMiddleware::header_name`].
    pub fn header_name(mut self, header: HeaderName) -> Self {
        self.options.header = header;
        self
    }

    /// As [`BearerAuthMiddleware::keep_existing`].
    pub fn keep_existing(mut self, keep: bool) -> Self {
        self.options.keep_existing = keep;
        self
    }

    /// As [`BearerAuthMiddleware::scope`]: a request outside it gets no
    /// token, whatever its key.
    pub fn scope(mut self, scope: Scope) -> Self {
        self.options.scope = (!scope.is_everything()).then_some(scope);
        self
    }

    /// As [`BearerAuthMiddleware::retry_on_unauthorized`].
    pub fn retry_on_unauthorized(mut self, retry: bool) -> Self {
        self.options.retry = retry;
        self
    }

    /// As [`KeyedBearerAuthLayer::require_key`](crate::auth::KeyedBearerAuthLayer::require_key):
    /// with `true`, a request in scope without a key fails with a
    /// [`TokenError`] of kind [`NoKey`](crate::TokenErrorKind::NoKey)
    /// instead of going out without a token.
    pub fn require_key(mut self, require: bool) -> Self {
        self.require_key = require;
        self
    }

    /// The cache this middleware takes its tokens from.
    pub fn cache(&self) -> &KeyedTokenCache<K> {
        &self.cache
    }
}

impl<K> Clone for KeyedBearerAuthMiddleware<K> {
    fn clone(&self) -> Self {
        Self {
            cache: self.cache.clone(),
            key: self.key.clone(),
            options: self.options.clone(),
            require_key: self.require_key,
        }
    }
}

#[async_trait::async_trait]
impl<K> Middleware for KeyedBearerAuthMiddleware<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    async fn handle(
        &self,
        request: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let key = self
            .options
            .wants_token(&request)
            .then(|| self.key_of(&request, extensions));
        let key = match key {
            Some(Some(key)) => key,
            Some(None) if self.require_key => {
                return Err(reqwest_middleware::Error::Middleware(
                    TokenError::no_key().into(),
                ))
            }
            _ => return next.run(request, extensions).await,
        };
        let entry = || self.cache.entry(&key);
        self.options.send(request, extensions, next, entry).await
    }
}

impl<K> KeyedBearerAuthMiddleware<K>
where
    K: Clone + Send + Sync + 'static,
{
    /// The request's key: a [`TokenKey`](crate::TokenKey) in the chain's
    /// extensions (`RequestBuilder::with_extension`), else the key
    /// function's.
    fn key_of(&self, request: &Request, extensions: &Extensions) -> Option<K> {
        let uri = request.url().as_str().parse::<Uri>().unwrap_or_default();
        let head = RequestHead::new(request.method(), &uri, request.headers());
        self.key.with(head, extensions, K::clone)
    }
}

impl<K> fmt::Debug for KeyedBearerAuthMiddleware<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedBearerAuthMiddleware")
            .field("cache", &self.cache)
            .field("key", &self.key)
            .field("require_key", &self.require_key)
            .field("header", &self.options.header)
            .field("keep_existing", &self.options.keep_existing)
            .field("scope", &self.options.scope)
            .field("retry_on_unauthorized", &self.options.retry)
            .finish()
    }
}
