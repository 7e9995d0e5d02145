//! `oauth2::RefreshToken` against a real OpenID Provider, oidc-provider (npm,
//! `tests/fixtures/oidc-provider/refresh.mjs`), with refresh-token rotation
//! on every refresh and its reuse detection on: a consumed refresh token
//! presented again revokes the whole grant. The initial grant is made with
//! the provider's own models, as its authorization-code flow would. The
//! fleet shares one real `redis-server`, its values sealed.
#![cfg(all(feature = "oauth2", feature = "redis", feature = "seal"))]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower_bearer::oauth2::{ErrorKind, RefreshToken};
use tower_bearer::store::{RedisStore, SealKey, Sealed};
use tower_bearer::{KeyedTokenCache, TokenCache, TokenSource};

mod common;
use common::idp::{http_client, oidc_provider_dir, start_node_script, Running};

#[path = "../examples/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

const CLIENT: &str = "rt-confidential";
const SECRET: &str = "rt-secret";

/// The provider, stopped on drop.
struct Idp {
    _child: Running,
    token_url: String,
    userinfo_url: String,
    grant_url: String,
    stats_url: String,
}

impl Idp {
    fn start() -> Self {
        let (child, urls) = start_node_script(&oidc_provider_dir(), "refresh.mjs", &[]);
        let url = |name: &str| urls[name].as_str().expect("a URL").to_owned();
        Self {
            token_url: url("token_url"),
            userinfo_url: url("userinfo_url"),
            grant_url: url("grant_url"),
            stats_url: url("stats_url"),
            _child: Running(child),
        }
    }

    /// A new grant for a new user of `client`: its refresh token and the
    /// user's id.
    async fn grant(&self, client: &str) -> (String, String) {
        self.grant_bound(client, None).await
    }

    /// As [`grant`](Self::grant), its refresh token bound to the DPoP key
    /// of thumbprint `jkt` when given.
    async fn grant_bound(&self, client: &str, jkt: Option<&str>) -> (String, String) {
        let jkt = jkt.map(|jkt| format!("&jkt={jkt}")).unwrap_or_default();
        let request = Request::post(format!("{}?client={client}{jkt}", self.grant_url))
            .body(Full::<Bytes>::default())
            .unwrap();
        let body = json(http_client().request(request).await.unwrap()).await;
        (
            body["refresh_token"].as_str().unwrap().to_owned(),
            body["account"].as_str().unwrap().to_owned(),
        )
    }

    /// The provider's counters: `token_requests`, `refreshed`, `refused`,
    /// `revoked`.
    async fn stats(&self) -> Value {
        let response = http_client()
            .get(self.stats_url.parse().unwrap())
            .await
            .unwrap();
        json(response).await
    }

    /// The user the resource (userinfo) says `token` is for, or `None` if it
    /// refuses it.
    async fn user_of(&self, token: &str) -> Option<String> {
        let request = Request::get(&self.userinfo_url)
            .header("authorization", format!("Bearer {token}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = http_client().request(request).await.unwrap();
        if response.status() != StatusCode::OK {
            return None;
        }
        json(response).await["sub"].as_str().map(str::to_owned)
    }

    fn source(&self, refresh_token: &str) -> RefreshToken {
        RefreshToken::new(&self.token_url, CLIENT, SECRET, refresh_token)
    }
}

async fn json(response: http::Response<hyper::body::Incoming>) -> Value {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

fn sealed(url: &str) -> Sealed<RedisStore> {
    Sealed::new(RedisStore::new(url).unwrap(), SealKey::new([9; 32]))
}

fn count(stats: &Value, name: &str) -> u64 {
    stats[name].as_u64().unwrap()
}

/// Several replicas (each its own cache, source and runtime on its own
/// thread, as processes would be) share one grant through one Redis: each
/// round, every replica starts a new cache and asks it for a token with 250
/// concurrent requests (1,000 a round), so that they all contend for the
/// refresh. No refresh token is ever presented twice: the provider refuses
/// nothing and revokes nothing, every access token is accepted by the
/// resource, and one more refresh at the end still succeeds.
#[test]
fn a_fleet_under_heavy_concurrency_never_reuses_a_refresh_token() {
    const REPLICAS: usize = 4;
    const ROUNDS: usize = 5;
    const REQUESTS: usize = 250;
    let main = tokio::runtime::Runtime::new().unwrap();
    let idp = Idp::start();
    let redis = RedisServer::start().unwrap();
    let (seed, user) = main.block_on(idp.grant(CLIENT));
    let barrier = Arc::new(Barrier::new(REPLICAS));
    let replicas: Vec<_> = (0..REPLICAS)
        .map(|_| {
            let source = idp.source(&seed).fleet(sealed(&redis.url()), "user");
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async move {
                    let mut seen = HashSet::new();
                    for _ in 0..ROUNDS {
                        // A new cache each round: one refresh each, all at
                        // once (a cache paces forced evictions).
                        let cache = TokenCache::new(source.clone());
                        barrier.wait();
                        let mut requests = tokio::task::JoinSet::new();
                        for _ in 0..REQUESTS {
                            let cache = cache.clone();
                            requests.spawn(async move { cache.token().await });
                        }
                        while let Some(token) = requests.join_next().await {
                            let token = token.unwrap().expect("a token");
                            seen.insert(token.secret().to_owned());
                        }
                    }
                    seen
                })
            })
        })
        .collect();
    let mut tokens = HashSet::new();
    for replica in replicas {
        tokens.extend(replica.join().expect("a replica"));
    }
    main.block_on(async {
        let stats = idp.stats().await;
        assert_eq!(count(&stats, "refused"), 0, "{stats}");
        assert_eq!(count(&stats, "revoked"), 0, "{stats}");
        eprintln!("threads: {} access tokens; provider: {stats}", tokens.len());
        let refreshed = count(&stats, "refreshed");
        assert!(refreshed >= ROUNDS as u64, "{stats}");
        assert_eq!(tokens.len() as u64, refreshed, "{stats}");
        // Replicas share a fresh access token instead of each refreshing.
        assert!(refreshed < (REPLICAS * ROUNDS) as u64, "{stats}");
        for token in &tokens {
            assert_eq!(idp.user_of(token).await.as_deref(), Some(&*user));
        }
        // The grant is still alive: a replica that starts now, with the
        // stale first refresh token, takes the latest from the store and
        // refreshes with it.
        let late = idp.source(&seed).fleet(sealed(&redis.url()), "user");
        late.fetch().await.unwrap();
        let token = late.fetch().await.unwrap();
        assert_eq!(idp.user_of(token.secret()).await.as_deref(), Some(&*user));
        let stats = idp.stats().await;
        assert!(count(&stats, "refreshed") > refreshed, "{stats}");
        assert_eq!(count(&stats, "refused"), 0, "{stats}");
    });
}

/// One replica's rounds: each a new cache asked for a token by `requests`
/// concurrent requests. The access tokens it was given.
async fn replica_rounds(source: RefreshToken, rounds: usize, requests: usize) -> HashSet<String> {
    let mut seen = HashSet::new();
    for _ in 0..rounds {
        let cache = TokenCache::new(source.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..requests {
            let cache = cache.clone();
            tasks.spawn(async move { cache.token().await });
        }
        while let Some(token) = tasks.join_next().await {
            let token = token.unwrap().expect("a token");
            seen.insert(token.secret().to_owned());
        }
    }
    seen
}

/// The child of `separate_processes_never_reuse_a_refresh_token`: a replica
/// when `REFRESH_MEMBER` says so (token URL, Redis URL, first refresh
/// token), printing each access token it was given; nothing otherwise.
#[test]
fn refresh_member() {
    let Ok(spec) = std::env::var("REFRESH_MEMBER") else {
        return;
    };
    let parts: Vec<&str> = spec.split(' ').collect();
    let [token_url, redis_url, seed] = parts[..] else {
        panic!("REFRESH_MEMBER: {spec:?}");
    };
    let source =
        RefreshToken::new(token_url, CLIENT, SECRET, seed).fleet(sealed(redis_url), "user");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    for token in runtime.block_on(replica_rounds(source, 5, 1000)) {
        println!("ACCESS-TOKEN {token}");
    }
}

/// The same as separate OS processes (this test binary run again as
/// `refresh_member`), each with 1,000 concurrent requests a round.
#[test]
fn separate_processes_never_reuse_a_refresh_token() {
    const PROCESSES: usize = 4;
    let main = tokio::runtime::Runtime::new().unwrap();
    let idp = Idp::start();
    let redis = RedisServer::start().unwrap();
    let (seed, user) = main.block_on(idp.grant(CLIENT));
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..PROCESSES)
        .map(|_| {
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "refresh_member",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(
                    "REFRESH_MEMBER",
                    format!("{} {} {seed}", idp.token_url, redis.url()),
                )
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut tokens = HashSet::new();
    for child in children {
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "a member failed");
        let stdout = String::from_utf8(output.stdout).unwrap();
        tokens.extend(
            stdout
                .lines()
                // libtest's "test refresh_member ... " may start the first line.
                .filter_map(|line| line.split_once("ACCESS-TOKEN ").map(|(_, token)| token))
                .map(str::to_owned),
        );
    }
    main.block_on(async {
        let stats = idp.stats().await;
        assert_eq!(count(&stats, "refused"), 0, "{stats}");
        assert_eq!(count(&stats, "revoked"), 0, "{stats}");
        eprintln!(
            "processes: {} access tokens; provider: {stats}",
            tokens.len()
        );
        assert!(count(&stats, "refreshed") >= 5, "{stats}");
        // Every refresh's token was served (and is checked below).
        assert_eq!(tokens.len() as u64, count(&stats, "refreshed"), "{stats}");
        assert!(!tokens.is_empty());
        for token in &tokens {
            assert_eq!(idp.user_of(token).await.as_deref(), Some(&*user));
        }
        let late = idp.source(&seed).fleet(sealed(&redis.url()), "user");
        late.fetch().await.unwrap();
        let token = late.fetch().await.unwrap();
        assert_eq!(idp.user_of(token.secret()).await.as_deref(), Some(&*user));
        assert_eq!(count(&idp.stats().await, "refused"), 0);
    });
}

/// The negative control: presenting a rotated refresh token again (what a
/// replica outside the fleet's lease would do) makes the provider revoke
/// the whole grant. So the test above would catch a reuse.
#[tokio::test(flavor = "multi_thread")]
async fn an_old_refresh_token_presented_again_revokes_the_grant() {
    let idp = Idp::start();
    let (seed, user) = idp.grant(CLIENT).await;
    let current = idp.source(&seed);
    let token = current.fetch().await.unwrap();
    assert_eq!(idp.user_of(token.secret()).await.as_deref(), Some(&*user));
    // Another process that still holds the first refresh token.
    let stale = idp.source(&seed);
    let error = stale.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::GrantGone);
    assert_eq!(count(&idp.stats().await, "revoked"), 1);
    // The whole grant is gone: the rotated token too, and its access token.
    let error = current.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::GrantGone);
    assert_eq!(idp.user_of(token.secret()).await, None);
}

/// A revoked grant is a permanent error, and neither this replica nor
/// another of the fleet sends any further request for it.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_grant_is_permanent_and_no_request_follows() {
    let idp = Idp::start();
    let redis = RedisServer::start().unwrap();
    let (seed, _) = idp.grant(CLIENT).await;
    let cache = TokenCache::new(idp.source(&seed).fleet(sealed(&redis.url()), "user"));
    let token = cache.token().await.unwrap();
    // Revoked (here by the provider's reuse detection).
    let _ = idp.source(&seed).fetch().await.unwrap_err();
    cache.invalidate(&token);
    let error = cache.token().await.unwrap_err();
    assert!(error.is_permanent(), "{error}");
    assert!(
        error.to_string().contains("must authorize again"),
        "{error}"
    );
    let requests = count(&idp.stats().await, "token_requests");
    // This replica, directly, and another replica of the fleet.
    let again = idp.source(&seed).fleet(sealed(&redis.url()), "user");
    for _ in 0..3 {
        assert_eq!(
            again.fetch().await.unwrap_err().kind(),
            ErrorKind::GrantGone
        );
        let error = cache.token().await.unwrap_err();
        assert!(error.is_permanent(), "{error}");
    }
    assert_eq!(count(&idp.stats().await, "token_requests"), requests);
}

/// Without its store, a fleet's source refuses to refresh (it could send a
/// refresh token another replica has rotated): a transient error, no
/// request; once Redis is back, it refreshes.
#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_no_refresh_is_sent_and_it_resumes_when_redis_is_back() {
    let idp = Idp::start();
    let mut redis = RedisServer::start().unwrap();
    let port = redis.port();
    let (seed, user) = idp.grant(CLIENT).await;
    let source = idp.source(&seed).fleet(sealed(&redis.url()), "user");
    source.fetch().await.unwrap();
    redis.kill();
    let requests = count(&idp.stats().await, "token_requests");
    let error = source.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Store, "{error}");
    assert!(!error.is_permanent());
    assert_eq!(count(&idp.stats().await, "token_requests"), requests);
    // Back, empty (no persistence): the replica's own latest refresh token.
    let _redis = RedisServer::start_on(port).unwrap();
    let token = source.fetch().await.unwrap();
    assert_eq!(idp.user_of(token.secret()).await.as_deref(), Some(&*user));
}

/// A public client (no secret: `client_id` in the form) refreshes and
/// rotates, its rotated token handed to the hook.
#[tokio::test(flavor = "multi_thread")]
async fn a_public_client_refreshes_and_rotates() {
    let idp = Idp::start();
    let (seed, user) = idp.grant("rt-public").await;
    let persisted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let source = RefreshToken::public(&idp.token_url, "rt-public", &seed).on_rotate({
        let persisted = Arc::clone(&persisted);
        move |rotated| {
            persisted.lock().unwrap().push(rotated.secret().to_owned());
            async { Ok::<_, std::convert::Infallible>(()) }
        }
    });
    for _ in 0..3 {
        let token = source.fetch().await.unwrap();
        assert_eq!(idp.user_of(token.secret()).await.as_deref(), Some(&*user));
    }
    let persisted = persisted.lock().unwrap().clone();
    assert_eq!(persisted.len(), 3);
    assert!(!persisted.contains(&seed));
    let stats = idp.stats().await;
    assert_eq!((count(&stats, "refused"), count(&stats, "revoked")), (0, 0));
}

/// A public client whose refresh token is bound to its DPoP key: each
/// refresh carries a proof of that key, the access tokens come back bound
/// to it, and the resource (userinfo, which checks DPoP proofs itself)
/// accepts them with the layer's proofs and refuses them as bearer tokens.
/// Another key is refused the refresh ("failed jkt verification"), and its
/// source sends nothing more.
#[cfg(feature = "dpop")]
#[tokio::test(flavor = "multi_thread")]
async fn a_refresh_token_bound_to_a_dpop_key_is_refreshed_with_proofs_of_it() {
    use tower::{Service, ServiceBuilder, ServiceExt};
    use tower_bearer::dpop::ProofKey;
    use tower_bearer::BearerAuthLayer;

    let idp = Idp::start();
    let key = ProofKey::generate().unwrap();
    let (seed, user) = idp.grant_bound("rt-public", Some(key.thumbprint())).await;
    let source = RefreshToken::public(&idp.token_url, "rt-public", &seed).dpop(key.clone());
    for round in 1..=3 {
        // A new cache each round: one more refresh, one more rotation.
        let cache = TokenCache::new(source.clone());
        let token = cache.token().await.unwrap();
        assert!(
            token.binding().is_some(),
            "round {round}: a DPoP-bound token"
        );
        let mut client = ServiceBuilder::new()
            .layer(BearerAuthLayer::from_cache(cache))
            .service(http_client());
        let request = Request::get(&idp.userinfo_url)
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = client.ready().await.unwrap().call(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "round {round}");
        assert_eq!(json(response).await["sub"].as_str(), Some(&*user));
        assert_eq!(idp.user_of(token.secret()).await, None, "not as a bearer");
    }
    let stats = idp.stats().await;
    assert_eq!(
        (count(&stats, "refreshed"), count(&stats, "refused")),
        (3, 0)
    );

    let (seed, _) = idp.grant_bound("rt-public", Some(key.thumbprint())).await;
    let thief = RefreshToken::public(&idp.token_url, "rt-public", &seed)
        .dpop(ProofKey::generate().unwrap());
    let error = thief.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::GrantGone, "{error}");
    let requests = count(&idp.stats().await, "token_requests");
    assert_eq!(
        thief.fetch().await.unwrap_err().kind(),
        ErrorKind::GrantGone
    );
    assert_eq!(count(&idp.stats().await, "token_requests"), requests);
    // The grant's own key still refreshes it.
    let owner = RefreshToken::public(&idp.token_url, "rt-public", &seed).dpop(key);
    owner.fetch().await.unwrap();
}

/// A backend acting for many users: a keyed cache, one grant per user, each
/// user's grant shared through the store under its own name.
#[tokio::test(flavor = "multi_thread")]
async fn a_keyed_cache_keeps_each_users_grant_apart() {
    let idp = Idp::start();
    let redis = RedisServer::start().unwrap();
    let mut grants = HashMap::new();
    for _ in 0..3 {
        let (seed, user) = idp.grant(CLIENT).await;
        grants.insert(user, seed);
    }
    // One Redis connection for every user, as docs/refresh-tokens.md shows.
    let redis_store = Arc::new(RedisStore::new(redis.url()).unwrap());
    let (token_url, key) = (idp.token_url.clone(), SealKey::new([9; 32]));
    let seeds = grants.clone();
    let cache = KeyedTokenCache::new(move |user: &String| {
        RefreshToken::new(&token_url, CLIENT, SECRET, &seeds[user])
            .fleet(Sealed::new(Arc::clone(&redis_store), key.clone()), user)
    });
    for user in grants.keys() {
        let token = cache.token(user).await.unwrap();
        assert_eq!(idp.user_of(token.secret()).await.as_deref(), Some(&**user));
    }
}

/// A record this replica cannot open (sealed with another key, or tampered
/// with) is an error, never a miss: falling back to its own refresh token
/// could send one the fleet has rotated.
#[tokio::test(flavor = "multi_thread")]
async fn a_record_sealed_with_another_key_is_refused_not_guessed() {
    let idp = Idp::start();
    let redis = RedisServer::start().unwrap();
    let (seed, _) = idp.grant(CLIENT).await;
    let source = idp.source(&seed).fleet(sealed(&redis.url()), "user");
    source.fetch().await.unwrap();
    let store = Sealed::new(RedisStore::new(redis.url()).unwrap(), SealKey::new([1; 32]));
    let other = idp.source(&seed).fleet(store, "user");
    let requests = count(&idp.stats().await, "token_requests");
    let error = other.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Store, "{error}");
    assert_eq!(count(&idp.stats().await, "token_requests"), requests);
    // The fleet's own key still works.
    source.fetch().await.unwrap();
}

/// A replica waits for another's lease at most `lease_wait`, then fails
/// without sending anything.
#[tokio::test(flavor = "multi_thread")]
async fn a_lease_held_too_long_is_a_store_error_and_nothing_is_sent() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let redis = RedisServer::start().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let client = |calls: Arc<AtomicUsize>, hang: bool| {
        tower::service_fn(move |_: Request<Full<Bytes>>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::<Bytes>::default()))
            }
        })
    };
    let url = "http://127.0.0.1:9/token";
    let holder_calls = Arc::new(AtomicUsize::new(0));
    let holder = RefreshToken::new(url, CLIENT, SECRET, "rt-0")
        .http_client(client(Arc::clone(&holder_calls), true))
        .fleet(sealed(&redis.url()), "user");
    let held = tokio::spawn(holder.fetch());
    // The holder has the lease once its request is under way.
    while holder_calls.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let waiter = RefreshToken::new(url, CLIENT, SECRET, "rt-0")
        .http_client(client(Arc::clone(&calls), false))
        .fleet(sealed(&redis.url()), "user")
        .lease_wait(std::time::Duration::from_millis(300));
    let error = waiter.fetch().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Store, "{error}");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    held.abort();
}
