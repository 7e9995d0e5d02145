//! `BearerAuthMiddleware` in a real reqwest client, against the examples'
//! mock backend over loopback HTTP.

#[path = "../examples/support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Extensions, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use reqwest_middleware::{ClientBuilder, ClientWithMiddleware, Middleware, Next};
use reqwest_retry::policies::ExponentialBackoff;
use reqwest_retry::RetryTransientMiddleware;
use tokio::task::JoinSet;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::{
    BearerAuthLayer, BearerAuthMiddleware, Scope, Token, TokenCache, TokenError, TokenErrorKind,
};

use support::Backend;

/// A cache of tokens from the backend's token endpoint.
fn cache(backend: &Backend) -> TokenCache {
    let client = support::client();
    let token_url = backend.token_url();
    TokenCache::new(move || support::fetch_token(client.clone(), token_url.clone()))
}

fn reqwest_client(middleware: BearerAuthMiddleware) -> ClientWithMiddleware {
    ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build()
}

/// GETs the protected resource: status and body.
async fn get(
    client: &ClientWithMiddleware,
    backend: &Backend,
) -> Result<(StatusCode, String), BoxError> {
    let response = client
        .get(backend.protected_url().to_string())
        .send()
        .await?;
    Ok((response.status(), response.text().await?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_fetch() -> Result<(), BoxError> {
    // The latency keeps the fetch in flight while all 50 requests arrive;
    // the waits count below checks that they did overlap.
    let backend = Arc::new(
        Backend::start(Duration::from_secs(60))
            .await?
            .with_latency(Duration::from_millis(100)),
    );
    let cache = cache(&backend);
    let client = reqwest_client(BearerAuthMiddleware::from_cache(cache.clone()));

    let mut requests = JoinSet::new();
    for _ in 0..50 {
        let (client, backend) = (client.clone(), backend.clone());
        requests.spawn(async move { get(&client, &backend).await });
    }
    while let Some(joined) = requests.join_next().await {
        assert_eq!(joined??, (StatusCode::OK, "hello, token #1".to_owned()));
    }
    assert_eq!(backend.fetch_count(), 1);
    let stats = cache.stats();
    assert_eq!((stats.fetches, stats.waits), (1, 50), "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn a_revoked_token_is_replaced_after_a_401() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let client = reqwest_client(BearerAuthMiddleware::from_cache(cache(&backend)));
    assert_eq!(
        get(&client, &backend).await?,
        (StatusCode::OK, "hello, token #1".into())
    );

    backend.revoke_all();
    // The 401 evicts the token, and the request goes once more with a new
    // one, as `RetryOnUnauthorized` sends it for tower.
    assert_eq!(
        get(&client, &backend).await?,
        (StatusCode::OK, "hello, token #2".into())
    );
    assert_eq!(backend.fetch_count(), 2);

    // Without the retry, the 401 reaches the caller, and the next request
    // carries a new token.
    let client = reqwest_client(
        BearerAuthMiddleware::from_cache(cache(&backend)).retry_on_unauthorized(false),
    );
    assert_eq!(get(&client, &backend).await?.0, StatusCode::OK);
    backend.revoke_all();
    assert_eq!(
        get(&client, &backend).await?,
        (StatusCode::UNAUTHORIZED, "unknown token".into())
    );
    assert_eq!(
        get(&client, &backend).await?,
        (StatusCode::OK, "hello, token #4".into())
    );
    Ok(())
}

/// Answers every request `401` without sending it, and counts them.
struct AlwaysUnauthorized(Arc<std::sync::atomic::AtomicUsize>);

#[async_trait::async_trait]
impl Middleware for AlwaysUnauthorized {
    async fn handle(
        &self,
        _request: reqwest::Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.fetch_add(1, Ordering::SeqCst);
        let mut unauthorized = http::Response::new("");
        *unauthorized.status_mut() = StatusCode::UNAUTHORIZED;
        Ok(unauthorized.into())
    }
}

/// A second 401 is returned as it is: one retry per request.
#[tokio::test]
async fn a_second_401_is_returned_as_it_is() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let attempts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::from_cache(cache(&backend)))
        .with(AlwaysUnauthorized(attempts.clone()))
        .build();
    let url = backend.protected_url().to_string();
    let response = client.get(&url).send().await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert_eq!(backend.fetch_count(), 2, "the retry waited for a new token");

    Ok(())
}

#[tokio::test]
async fn one_cache_feeds_a_reqwest_client_and_a_tower_client() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let cache = cache(&backend);
    // Without its 401 retry, so that the tower client is the one to fetch.
    let reqwest = reqwest_client(
        BearerAuthMiddleware::from_cache(cache.clone()).retry_on_unauthorized(false),
    );
    let tower = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(support::client());
    let tower_get = || async {
        let request = Request::get(backend.protected_url()).body(Full::<Bytes>::default())?;
        let response = tower.clone().oneshot(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, BoxError>((status, String::from_utf8(body.to_vec())?))
    };

    assert_eq!(
        get(&reqwest, &backend).await?,
        (StatusCode::OK, "hello, token #1".into())
    );
    assert_eq!(
        tower_get().await?,
        (StatusCode::OK, "hello, token #1".into())
    );
    assert_eq!(backend.fetch_count(), 1);

    // A 401 seen by the reqwest client evicts the token for the tower client.
    backend.revoke_all();
    assert_eq!(get(&reqwest, &backend).await?.0, StatusCode::UNAUTHORIZED);
    assert_eq!(
        tower_get().await?,
        (StatusCode::OK, "hello, token #2".into())
    );
    assert_eq!(
        get(&reqwest, &backend).await?,
        (StatusCode::OK, "hello, token #2".into())
    );
    assert_eq!(backend.fetch_count(), 2);
    assert_eq!(cache.stats().invalidations, 1);
    Ok(())
}

#[tokio::test]
async fn a_token_failure_is_a_middleware_error_carrying_the_token_error() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let client = reqwest_client(BearerAuthMiddleware::new(|| async {
        Err::<Token, _>(std::io::Error::other("identity provider down"))
    }));

    let error = get(&client, &backend).await.unwrap_err();
    let error = error.downcast::<reqwest_middleware::Error>().unwrap();
    let reqwest_middleware::Error::Middleware(error) = *error else {
        panic!("not a middleware error: {error}");
    };
    let token_error = error.downcast_ref::<TokenError>().unwrap();
    assert_eq!(token_error.kind(), TokenErrorKind::Fetch);
    assert_eq!(
        std::error::Error::source(token_error).unwrap().to_string(),
        "identity provider down"
    );

    // The next request, during the backoff, fails at once.
    let error = get(&client, &backend).await.unwrap_err();
    let error = error.downcast::<reqwest_middleware::Error>().unwrap();
    let reqwest_middleware::Error::Middleware(error) = *error else {
        panic!("not a middleware error: {error}");
    };
    let kind = error.downcast_ref::<TokenError>().unwrap().kind();
    assert_eq!(kind, TokenErrorKind::BackingOff);
    Ok(())
}

/// Answers every request itself, keeping the headers it carried.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<http::HeaderMap>>>);

#[async_trait::async_trait]
impl Middleware for Capture {
    async fn handle(
        &self,
        request: reqwest::Request,
        _: &mut Extensions,
        _: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        self.0.lock().unwrap().push(request.headers().clone());
        Ok(http::Response::new("").into())
    }
}

#[tokio::test]
async fn header_name_and_keep_existing_mirror_the_layer() -> Result<(), BoxError> {
    let cache =
        TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("k-123")) }).no_scheme();
    let capture = Capture::default();
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(
            BearerAuthMiddleware::from_cache(cache.clone())
                .header_name(http::HeaderName::from_static("x-api-key"))
                .keep_existing(true),
        )
        .with(capture.clone())
        .build();

    client.get("http://127.0.0.1:9/").send().await?;
    client
        .get("http://127.0.0.1:9/")
        .header("x-api-key", "mine")
        .send()
        .await?;
    let seen = capture.0.lock().unwrap().clone();
    assert_eq!(seen[0]["x-api-key"], "k-123");
    assert!(seen[0]["x-api-key"].is_sensitive());
    assert!(!seen[0].contains_key(AUTHORIZATION));
    assert_eq!(seen[1]["x-api-key"], "mine");
    assert_eq!(cache.stats().fetches, 1);
    Ok(())
}

#[tokio::test]
async fn debug_never_shows_the_token() -> Result<(), BoxError> {
    let middleware =
        BearerAuthMiddleware::new(|| async { Ok::<_, std::io::Error>(Token::new("s3cr3t-token")) })
            .scope(Scope::new().require_https());
    assert_eq!(middleware.cache().token().await?.secret(), "s3cr3t-token");
    let debug = format!("{middleware:?} {middleware:#?}");
    assert!(!debug.contains("s3cr3t-token"), "{debug}");
    assert!(debug.contains("<redacted>"), "{debug}");
    assert!(debug.contains("https: true"), "{debug}");
    Ok(())
}

#[tokio::test]
async fn a_request_outside_the_scope_gets_no_token() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let cache = cache(&backend);
    let client = reqwest_client(
        BearerAuthMiddleware::from_cache(cache.clone()).scope(Scope::new().hosts(["localhost"])),
    );

    // 127.0.0.1 is not in the scope: no token, no fetch, and its 401
    // evicts nothing.
    assert_eq!(
        get(&client, &backend).await?,
        (StatusCode::UNAUTHORIZED, "missing bearer token".into())
    );
    assert_eq!(backend.fetch_count(), 0);

    let port = backend.protected_url().port_u16().unwrap();
    let url = format!("http://localhost:{port}/protected");
    let response = client.get(url).send().await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await?, "hello, token #1");
    assert_eq!(cache.stats().invalidations, 0);
    Ok(())
}

/// Below the auth middleware: on the first attempt, revokes the token at the
/// backend and in the cache and answers 503, as a flaky gateway might after
/// a key rotation; lets later attempts through. Records what each attempt
/// carried.
struct RotateOnce {
    backend: Arc<Backend>,
    cache: TokenCache,
    rotated: AtomicBool,
    carried: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Middleware for RotateOnce {
    async fn handle(
        &self,
        request: reqwest::Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<reqwest::Response> {
        let auth = &request.headers()[AUTHORIZATION];
        assert!(auth.is_sensitive());
        let auth = auth.to_str().unwrap_or_default().to_owned();
        self.carried.lock().unwrap().push(auth);
        if self.rotated.swap(true, Ordering::SeqCst) {
            return next.run(request, extensions).await;
        }
        self.backend.revoke_all();
        let token = self
            .cache
            .token()
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        self.cache.invalidate(&token);
        let mut unavailable = http::Response::new("");
        *unavailable.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        Ok(unavailable.into())
    }
}

async fn retry_then_get(
    auth_inside_retry: bool,
) -> Result<(StatusCode, String, Vec<String>), BoxError> {
    let backend = Arc::new(Backend::start(Duration::from_secs(60)).await?);
    let cache = cache(&backend);
    let carried = Arc::new(Mutex::new(Vec::new()));
    let rotate = RotateOnce {
        backend: backend.clone(),
        cache: cache.clone(),
        rotated: AtomicBool::new(false),
        carried: carried.clone(),
    };
    let policy = ExponentialBackoff::builder()
        .retry_bounds(Duration::from_millis(1), Duration::from_millis(10))
        .build_with_max_retries(2);
    let retry = RetryTransientMiddleware::new_with_policy(policy);
    let auth = BearerAuthMiddleware::from_cache(cache);
    let client = if auth_inside_retry {
        ClientBuilder::new(reqwest::Client::new())
            .with(retry)
            .with(auth)
    } else {
        ClientBuilder::new(reqwest::Client::new())
            .with(auth)
            .with(retry)
    }
    .with(rotate)
    .build();

    let (status, body) = get(&client, &backend).await?;
    let carried = carried.lock().unwrap().clone();
    Ok((status, body, carried))
}

#[tokio::test]
async fn after_retry_each_attempt_reads_the_cache() -> Result<(), BoxError> {
    let (status, body, carried) = retry_then_get(true).await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello, token #2"));
    assert_eq!(carried.len(), 2);
    assert_ne!(carried[0], carried[1], "the retry carried the new token");
    Ok(())
}

/// reqwest-retry's attempts under the auth middleware resend the first
/// token; only the middleware's own 401 retry brings the new one.
#[tokio::test]
async fn before_retry_every_attempt_resends_the_first_token() -> Result<(), BoxError> {
    let (status, body, carried) = retry_then_get(false).await?;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "hello, token #2"));
    assert_eq!(carried.len(), 3);
    assert_eq!(carried[0], carried[1]);
    assert_ne!(carried[1], carried[2]);
    Ok(())
}

#[tokio::test]
async fn require_https_and_only_if_hold_through_reqwest() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let cache = cache(&backend);

    // The backend is plain http: require_https keeps the token off it.
    let client = reqwest_client(
        BearerAuthMiddleware::from_cache(cache.clone()).scope(Scope::new().require_https()),
    );
    assert_eq!(
        get(&client, &backend).await?,
        (StatusCode::UNAUTHORIZED, "missing bearer token".into())
    );
    assert_eq!(backend.fetch_count(), 0);

    // only_if sees the request: the header decides.
    let client = reqwest_client(
        BearerAuthMiddleware::from_cache(cache.clone())
            .scope(Scope::new().only_if(|request| request.headers().contains_key("x-auth"))),
    );
    assert_eq!(
        get(&client, &backend).await?,
        (StatusCode::UNAUTHORIZED, "missing bearer token".into())
    );
    assert_eq!(backend.fetch_count(), 0);
    let response = client
        .get(backend.protected_url().to_string())
        .header("x-auth", "1")
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await?, "hello, token #1");
    assert_eq!(backend.fetch_count(), 1);
    Ok(())
}

/// `BearerAuthMiddleware::keyed`: a token per audience, the audience read
/// from the URL or named by a `TokenKey` extension; a 401 evicts within its
/// audience only.
#[tokio::test]
async fn a_keyed_middleware_sends_each_audience_its_own_token() -> Result<(), BoxError> {
    use tower_bearer::{KeyedTokenCache, TokenKey};

    let backend = Arc::new(Backend::start(Duration::from_secs(60)).await?);
    let cache = KeyedTokenCache::new({
        let backend = backend.clone();
        move |audience: &String| {
            let (http, url) = (support::client(), backend.token_url_for(audience));
            move || support::fetch_token(http.clone(), url.clone())
        }
    });
    let middleware = BearerAuthMiddleware::keyed(cache.clone(), |head| {
        let path = head.uri().path().strip_prefix("/api/")?;
        Some(path.split('/').next()?.to_owned())
    });
    let client = ClientBuilder::new(reqwest::Client::new())
        .with(middleware)
        .build();
    let get = |audience: &str| client.get(backend.api_url(audience).to_string());

    for audience in ["orders", "billing", "orders"] {
        let response = get(audience).send().await?;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response
            .text()
            .await?
            .starts_with(&format!("hello {audience},")));
    }
    assert_eq!(backend.fetch_count(), 2);

    // A key the URL cannot show: the extension names it.
    let url = format!("{}/protected", backend.base_url());
    let response = client
        .get(url.clone())
        .with_extension(TokenKey("orders".to_owned()))
        .send()
        .await?;
    assert_eq!(response.status(), StatusCode::OK);
    // No key: no token.
    let response = client.get(&url).send().await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(backend.fetch_count(), 2);
    // Unless a key is required: then the request fails and is not sent.
    let strict = ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::keyed(cache.clone(), |_| None::<String>).require_key(true))
        .build();
    let error = strict.get(&url).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(error) = error else {
        panic!("{error:?}")
    };
    let error = error.downcast_ref::<TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::NoKey);

    // A revoked token is evicted from its own audience only.
    let billing = cache.token(&"billing".to_owned()).await?;
    backend.revoke_all();
    // The 401 evicts, and the retry carries the audience's new token.
    assert_eq!(get("orders").send().await?.status(), StatusCode::OK);
    assert_eq!(cache.stats(&"orders".to_owned()).unwrap().invalidations, 1);
    assert_eq!(cache.stats(&"billing".to_owned()).unwrap().invalidations, 0);
    assert!(cache.invalidate(&"billing".to_owned(), &billing));
    Ok(())
}
