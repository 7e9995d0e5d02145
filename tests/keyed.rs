//! Keyed caches: every property of the single cache, per key, and no token
//! ever crossing keys.

#[path = "../examples/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::util::BoxCloneService;
use tower::{service_fn, BoxError, Layer, ServiceBuilder, ServiceExt};
use tower_bearer::{BearerAuthLayer, KeyedTokenCache, Token, TokenErrorKind, TokenKey};

/// Fetches per key, and a source per key whose n-th token is `key-<k>-<n>`.
#[derive(Clone, Default)]
struct Fetches(Arc<Mutex<HashMap<u64, u64>>>);

impl Fetches {
    fn of(&self, key: u64) -> u64 {
        self.0.lock().unwrap().get(&key).copied().unwrap_or(0)
    }

    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }

    /// A keyed cache of hour-long tokens, each fetch taking `latency`; the
    /// keys in `failing` fail every fetch.
    fn cache(&self, latency: Duration, failing: &[u64]) -> KeyedTokenCache<u64> {
        let (fetches, failing) = (self.clone(), failing.to_vec());
        KeyedTokenCache::new(move |key: &u64| {
            let (key, fetches, fails) = (*key, fetches.clone(), failing.contains(key));
            move || {
                let n = {
                    let mut all = fetches.0.lock().unwrap();
                    let n = all.entry(key).or_insert(0);
                    *n += 1;
                    *n
                };
                async move {
                    tokio::time::sleep(latency).await;
                    if fails {
                        return Err(format!("identity provider of key {key} is down"));
                    }
                    Ok(Token::new(format!("key-{key}-{n}")).expires_in(Duration::from_secs(3600)))
                }
            }
        })
    }
}

type Client = BoxCloneService<Request<()>, Response<Option<String>>, BoxError>;

/// The keyed layer over an echo of the `Authorization` header; the key is
/// the `x-key` header. `reject` answers 401 to the keys it holds.
fn client(cache: &KeyedTokenCache<u64>, reject: Arc<Mutex<Vec<u64>>>) -> Client {
    let echo = service_fn(move |request: Request<()>| {
        let reject = reject.clone();
        async move {
            let auth = request
                .headers()
                .get(AUTHORIZATION)
                .map(|v| v.to_str().unwrap().to_owned());
            let mut response = Response::new(auth);
            let key = key_of(&request);
            if key.is_some_and(|key| reject.lock().unwrap().contains(&key)) {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            Ok::<_, Infallible>(response)
        }
    });
    let layer = BearerAuthLayer::keyed(cache.clone(), |head| {
        head.headers().get("x-key")?.to_str().ok()?.parse().ok()
    });
    BoxCloneService::new(layer.layer(echo))
}

fn key_of(request: &Request<()>) -> Option<u64> {
    let header = request.headers().get("x-key")?.to_str().ok()?.parse().ok();
    header.or_else(|| request.extensions().get::<TokenKey<u64>>().map(|k| k.0))
}

fn request(key: u64) -> Request<()> {
    Request::get("/").header("x-key", key).body(()).unwrap()
}

async fn send(client: &Client, key: u64) -> Result<(StatusCode, Option<String>), BoxError> {
    send_owned(client.clone(), key).await
}

async fn send_owned(client: Client, key: u64) -> Result<(StatusCode, Option<String>), BoxError> {
    let response = client.oneshot(request(key)).await?;
    Ok((response.status(), response.into_body()))
}

fn bearer(key: u64, n: u64) -> Option<String> {
    Some(format!("Bearer key-{key}-{n}"))
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_requests_over_a_hundred_keys_cause_a_hundred_fetches() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::from_millis(100), &[]);
    let client = client(&cache, Arc::default());

    let mut requests = JoinSet::new();
    for i in 0..10_000u64 {
        let client = client.clone();
        requests.spawn(async move { (i % 100, send_owned(client, i % 100).await) });
    }
    while let Some(done) = requests.join_next().await {
        let (key, sent) = done.unwrap();
        assert_eq!(sent.unwrap(), (StatusCode::OK, bearer(key, 1)));
    }
    assert_eq!(fetches.total(), 100);
    assert!((0..100).all(|key| fetches.of(key) == 1));
    assert_eq!(cache.len(), 100);
    let total = cache.total_stats();
    assert_eq!(total.fetches, 100);
    assert_eq!(total.waits, 10_000);
    assert_eq!(cache.stats(&7).unwrap().fetches, 1);
}

#[tokio::test(start_paused = true)]
async fn one_keys_failing_source_neither_fails_nor_slows_the_others() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::from_millis(10), &[0]);
    let client = client(&cache, Arc::default());

    let error = send(&client, 0).await.unwrap_err();
    let error = error.downcast_ref::<tower_bearer::TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::Fetch);

    // While key 0 backs off, the others fetch at once and take only their
    // own fetch's time.
    let began = Instant::now();
    let mut requests = JoinSet::new();
    for key in 1..=20u64 {
        let client = client.clone();
        requests.spawn(async move { (key, send_owned(client, key).await) });
    }
    let error = send(&client, 0).await.unwrap_err();
    let error = error.downcast_ref::<tower_bearer::TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    while let Some(done) = requests.join_next().await {
        let (key, sent) = done.unwrap();
        assert_eq!(sent.unwrap(), (StatusCode::OK, bearer(key, 1)));
    }
    assert_eq!(began.elapsed(), Duration::from_millis(10));
    assert_eq!(fetches.of(0), 1, "key 0 is backing off");
    assert_eq!(cache.stats(&0).unwrap().failures, 1);
    assert!((1..=20).all(|key| cache.stats(&key).unwrap().failures == 0));
    assert_eq!(cache.total_stats().failures, 1);
}

#[tokio::test(start_paused = true)]
async fn a_401_evicts_only_its_keys_token_and_only_while_current() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::ZERO, &[]);
    let reject = Arc::new(Mutex::new(vec![]));
    let client = client(&cache, reject.clone());
    assert_eq!(send(&client, 1).await.unwrap().1, bearer(1, 1));
    assert_eq!(send(&client, 2).await.unwrap().1, bearer(2, 1));

    reject.lock().unwrap().push(1);
    let (status, sent) = send(&client, 1).await.unwrap();
    assert_eq!((status, sent), (StatusCode::UNAUTHORIZED, bearer(1, 1)));
    reject.lock().unwrap().clear();

    assert_eq!(send(&client, 1).await.unwrap().1, bearer(1, 2));
    assert_eq!(send(&client, 2).await.unwrap().1, bearer(2, 1));
    assert_eq!(cache.stats(&1).unwrap().invalidations, 1);
    assert_eq!(cache.stats(&2).unwrap().invalidations, 0);

    // A token of another key, or already replaced, matches nothing.
    let one = cache.token(&1).await.unwrap();
    let two = cache.token(&2).await.unwrap();
    assert!(!cache.invalidate(&2, &one));
    assert!(!cache.invalidate(&3, &one));
    assert!(cache.invalidate(&2, &two));
    assert!(!cache.invalidate(&2, &two));
    assert_eq!(cache.token(&1).await.unwrap().secret(), "key-1-2");
}

#[tokio::test(start_paused = true)]
async fn a_late_401_never_evicts_its_keys_successor() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::ZERO, &[]);
    let release = Arc::new(Notify::new());
    // Answers 401 once released.
    let slow = {
        let release = release.clone();
        service_fn(move |_: Request<()>| {
            let release = release.clone();
            async move {
                release.notified().await;
                let mut response = Response::new(());
                *response.status_mut() = StatusCode::UNAUTHORIZED;
                Ok::<_, Infallible>(response)
            }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::keyed(cache.clone(), |_| Some(1u64)))
        .service(slow);
    let first = cache.token(&1).await.unwrap();
    let late = tokio::spawn(svc.oneshot(Request::new(())));
    tokio::task::yield_now().await;

    assert!(cache.invalidate(&1, &first));
    assert_eq!(cache.token(&1).await.unwrap().secret(), "key-1-2");
    release.notify_one();
    assert_eq!(
        late.await.unwrap().unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(cache.token(&1).await.unwrap().secret(), "key-1-2");
    assert_eq!(cache.stats(&1).unwrap().invalidations, 1);
    assert_eq!(fetches.of(1), 2);
}

#[tokio::test(start_paused = true)]
async fn a_request_without_a_key_passes_untouched_and_an_extension_names_the_key() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::ZERO, &[]);
    let client = client(&cache, Arc::default());

    let response = client.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.into_body(), None);
    assert_eq!(fetches.total(), 0);
    assert!(cache.is_empty());

    let mut request = Request::new(());
    request.extensions_mut().insert(TokenKey(5u64));
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.into_body(), bearer(5, 1));
    assert!(!cache.is_empty());
    assert_eq!(cache.len(), 1);

    // The extension wins over the key function.
    let mut request = request_with_key(6);
    request.extensions_mut().insert(TokenKey(7u64));
    let response = client.clone().oneshot(request).await.unwrap();
    assert_eq!(response.into_body(), bearer(7, 1));
    assert_eq!(fetches.of(6), 0);
}

fn request_with_key(key: u64) -> Request<()> {
    request(key)
}

#[tokio::test(start_paused = true)]
async fn scope_and_keep_existing_work_as_unkeyed() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::ZERO, &[]);
    let echo = service_fn(|request: Request<()>| async move {
        let auth = request.headers().get("x-api-key").cloned();
        Ok::<_, Infallible>(Response::new(auth))
    });
    let svc = ServiceBuilder::new()
        .layer(
            BearerAuthLayer::keyed(cache.clone(), |head| head.uri().port_u16().map(u64::from))
                .header_name(http::HeaderName::from_static("x-api-key"))
                .keep_existing(true)
                .scope(tower_bearer::Scope::new().require_https()),
        )
        .service(echo);

    let get = |uri: &str| svc.clone().oneshot(Request::get(uri).body(()).unwrap());
    let response = get("https://a.example:8001/").await.unwrap();
    assert_eq!(response.into_body().unwrap(), "Bearer key-8001-1");
    let response = get("http://a.example:8002/").await.unwrap();
    assert_eq!(response.into_body(), None, "out of scope");

    let request = Request::get("https://a.example:8003/")
        .header("x-api-key", "mine")
        .body(())
        .unwrap();
    let response = svc.clone().oneshot(request).await.unwrap();
    assert_eq!(response.into_body().unwrap(), "mine");
    assert_eq!(fetches.total(), 1);
}

#[tokio::test(start_paused = true)]
async fn max_keys_evicts_the_least_recently_used_key() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::ZERO, &[]).max_keys(3);
    for key in [1, 2, 3, 1] {
        cache.token(&key).await.unwrap();
    }
    cache.token(&4).await.unwrap();
    assert_eq!(cache.len(), 3);
    assert!(cache.stats(&2).is_none(), "2 was used least recently");
    assert!(cache.stats(&1).is_some() && cache.stats(&3).is_some());
    // A dropped key comes back with a cache of its own. (Uses between two
    // new keys count as one moment: 1 is used again so that 3 is the
    // oldest.)
    cache.token(&1).await.unwrap();
    assert_eq!(cache.token(&2).await.unwrap().secret(), "key-2-2");
    assert!(cache.stats(&3).is_none());
    assert_eq!(cache.total_stats().fetches, 5);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_drops_unused_keys_with_their_tasks() {
    let alive = Arc::new(());
    let cache = KeyedTokenCache::new({
        let alive = alive.clone();
        move |key: &u64| {
            let (key, alive) = (*key, alive.clone());
            move || {
                let _alive = &alive;
                async move { Ok::<_, Infallible>(Token::new(format!("key-{key}"))) }
            }
        }
    })
    .idle_timeout(Duration::from_secs(60));
    cache.token(&1).await.unwrap();
    cache.token(&2).await.unwrap();
    // The factory's and one per key's source.
    assert_eq!(Arc::strong_count(&alive), 4);

    for _ in 0..10 {
        tokio::time::sleep(Duration::from_secs(10)).await;
        cache.token(&1).await.unwrap();
    }
    assert_eq!(cache.len(), 1, "key 2 was idle for 100 s");
    assert!(cache.stats(&2).is_none());
    assert_eq!(Arc::strong_count(&alive), 3, "key 2's source was dropped");
    assert_eq!(cache.total_stats().fetches, 2);
}

#[tokio::test(start_paused = true)]
async fn an_evicted_keys_fetch_still_completes_for_its_waiters() {
    let fetches = Fetches::default();
    let cache = fetches.cache(Duration::from_secs(1), &[]).max_keys(1);
    let waiting = tokio::spawn({
        let cache = cache.clone();
        async move { cache.token(&1).await }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    cache.token(&2).await.unwrap();
    assert!(cache.stats(&1).is_none(), "key 1 was evicted");
    assert_eq!(waiting.await.unwrap().unwrap().secret(), "key-1-1");
}

// ===== no token crosses keys =====

/// Real HTTP over loopback: 24 audiences (8 of them busy) through a cache
/// that holds 12 of them, fetches of seeded random latency racing each other, and tokens
/// revoked now and then (401s). The backend checks that every request to an
/// audience's API carries a token issued for that audience.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_crosses_keys_under_races_evictions_and_401s() -> Result<(), BoxError> {
    const AUDIENCES: u64 = 24;
    let backend = support::Backend::start(Duration::from_secs(60))
        .await?
        .with_random_latency(Duration::from_millis(20), 0x5eed);
    let backend = Arc::new(backend);
    let http = support::client();
    let cache = KeyedTokenCache::new({
        let (http, backend) = (http.clone(), backend.clone());
        move |audience: &String| {
            let (http, url) = (http.clone(), backend.token_url_for(audience));
            move || support::fetch_token(http.clone(), url.clone())
        }
    })
    .max_keys(12)
    // Fresh tokens rejected back to back are paced (#20); a zero backoff
    // turns that off, for a test of what each rejection does.
    .backoff(Duration::ZERO, Duration::ZERO);
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::keyed(cache.clone(), |head| {
            let path = head.uri().path().strip_prefix("/api/")?;
            Some(path.split('/').next()?.to_owned())
        }))
        .service(http);

    let mut rng = 0x5eed_u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let revoked = Arc::new(AtomicBool::new(false));
    let (mut ok, mut rejected) = (0, 0);
    for _round in 0..40 {
        let mut requests = JoinSet::new();
        for _ in 0..50 {
            let audience = match next() % 5 {
                0 => format!("aud{}", 8 + next() % (AUDIENCES - 8)),
                _ => format!("aud{}", next() % 8),
            };
            let request = Request::get(backend.api_url(&audience)).body(Full::<Bytes>::default())?;
            let client = client.clone();
            requests.spawn(async move {
                let response = client.oneshot(request).await?;
                let status = response.status();
                let body = response.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>((audience, status, String::from_utf8(body.to_vec())?))
            });
        }
        if next() % 4 == 0 {
            backend.revoke_all();
            revoked.store(true, Ordering::Relaxed);
        }
        while let Some(done) = requests.join_next().await {
            let (audience, status, body) = done??;
            match status {
                StatusCode::OK => {
                    assert!(body.starts_with(&format!("hello {audience},")), "{body}");
                    ok += 1;
                }
                StatusCode::UNAUTHORIZED => {
                    assert_eq!(body, "unknown token", "for {audience}");
                    rejected += 1;
                }
                status => panic!("{status}: {body}"),
            }
        }
    }
    assert_eq!(
        backend.crossed(),
        0,
        "a token reached another audience's API"
    );
    assert!(
        revoked.load(Ordering::Relaxed) && rejected > 0,
        "no 401 was exercised"
    );
    assert!(ok > 1000, "{ok} requests succeeded");
    let stats = cache.total_stats();
    assert!(stats.invalidations > 0, "{stats:?}");
    assert!(
        stats.fetches > AUDIENCES,
        "evictions refetch some audiences: {stats:?}"
    );
    assert!(cache.len() <= 12);
    Ok(())
}

/// "No key" is a choice: by default the request goes out without a token;
/// with `require_key(true)` it fails with `NoKey`, and is not sent.
#[tokio::test]
async fn a_request_without_a_key_is_sent_bare_or_fails_as_chosen() {
    let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = {
        let sent = sent.clone();
        service_fn(move |request: Request<()>| {
            sent.fetch_add(1, Ordering::SeqCst);
            let auth = request.headers().get(AUTHORIZATION).cloned();
            async move { Ok::<_, Infallible>(Response::new(auth)) }
        })
    };
    let cache = KeyedTokenCache::new(|host: &String| {
        let token = format!("token-for-{host}");
        move || {
            let token = token.clone();
            async move { Ok::<_, Infallible>(Token::new(token)) }
        }
    });
    let by_host = |head: &tower_bearer::RequestHead<'_>| head.uri().host().map(str::to_owned);
    // A tonic request's URI is a path: no host.
    let request = || {
        Request::get("/grpc.health.v1.Health/Check")
            .body(())
            .unwrap()
    };

    let bare = BearerAuthLayer::keyed(cache.clone(), by_host).layer(server.clone());
    let response = bare.oneshot(request()).await.unwrap();
    assert!(response.body().is_none());
    assert_eq!(sent.load(Ordering::SeqCst), 1);

    let strict = BearerAuthLayer::keyed(cache, by_host)
        .require_key(true)
        .layer(server);
    let error = strict.oneshot(request()).await.unwrap_err();
    let error = error.downcast_ref::<tower_bearer::TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::NoKey);
    assert!(error.is_permanent());
    assert_eq!(sent.load(Ordering::SeqCst), 1, "not sent");
}
