//! The store against real `redis-server` processes, started here on free
//! ports so that a test can kill and restart them. Two caches, each with a
//! `RedisStore` of its own, stand in for two replicas.
//!
//! Real Redis means real time (its TTLs, its timeouts): durations are kept
//! small, and no assertion depends on how long anything took beyond what
//! the test itself arranged (a token's lifetime, a paused server).

use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{RedisStore, StoreIdentity, TokenStore};
use crate::{Token, TokenCache};

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

// The fleet's helper, shared; its `pub`s are for the examples and tests.
#[allow(unreachable_pub)]
#[path = "../../examples/support/redis_server.rs"]
mod redis_server;

/// A real `redis-server`, and what the tests ask of it beyond the fleet's.
struct Redis(redis_server::RedisServer);

impl Redis {
    fn start() -> Self {
        Self(redis_server::RedisServer::start().expect("redis-server"))
    }

    fn start_on(port: u16) -> Self {
        Self(redis_server::RedisServer::start_on(port).expect("redis-server"))
    }

    fn port(&self) -> u16 {
        self.0.port()
    }

    fn url(&self) -> String {
        self.0.url()
    }

    fn kill(&mut self) {
        self.0.kill();
    }

    async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// The raw value at `key`, as Redis holds it.
    async fn raw(&self, key: &str) -> Vec<u8> {
        redis::cmd("GET")
            .arg(key)
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }

    async fn flush(&self) {
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut self.conn().await)
            .await
            .unwrap();
    }

    async fn keys(&self) -> Vec<String> {
        redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut self.conn().await)
            .await
            .unwrap()
    }
}

/// A token endpoint stand-in: counts fetches, hands out `token-<n>`.
#[derive(Clone, Default)]
struct Idp {
    fetches: Arc<AtomicUsize>,
    lifetime: Option<Duration>,
    delay: Duration,
}

impl Idp {
    fn lifetime(lifetime: Duration) -> Self {
        Self {
            lifetime: Some(lifetime),
            ..Self::default()
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn cache(&self, store: impl TokenStore) -> TokenCache {
        let idp = self.clone();
        TokenCache::new(move || {
            let n = idp.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let (lifetime, delay) = (idp.lifetime, idp.delay);
            async move {
                tokio::time::sleep(delay).await;
                let token = Token::new(format!("token-{n}"));
                Ok::<_, std::io::Error>(match lifetime {
                    Some(lifetime) => token.expires_in(lifetime),
                    None => token,
                })
            }
        })
        .fetch_timeout(Duration::from_secs(2))
        .store(store)
        .store_identity(identity())
    }
}

fn identity() -> StoreIdentity {
    StoreIdentity::new("test").with("client_id", "fleet")
}

fn store(redis: &Redis) -> RedisStore {
    RedisStore::new(redis.url()).unwrap()
}

/// The stored key of `identity()`, with the default prefix.
fn token_key() -> String {
    format!("tower-bearer:{{{}}}", identity().key(None))
}

/// Polls until `check` holds, for at most `tries` × 20 ms.
async fn eventually(tries: u32, mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..tries {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

async fn exists(redis: &Redis, key: &str) -> bool {
    redis::cmd("EXISTS")
        .arg(key)
        .query_async::<bool>(&mut redis.conn().await)
        .await
        .unwrap()
}

async fn stored_token_shows_up(redis: &Redis) -> bool {
    let key = token_key();
    eventually(100, async || exists(redis, &key).await).await
}

/// What the store writes it reads back, with its expiry: an empty value,
/// a value that never expires (no TTL), one with a minute left. A value
/// already expired, or with less than a millisecond left (Redis refuses a
/// `PX` of 0), is not written, and is no error.
#[tokio::test]
async fn values_round_trip_with_their_expiry() {
    use std::time::SystemTime;
    let redis = Redis::start();
    let store = store(&redis);
    store.write("empty", b"", None).await.unwrap();
    let read = store.read("empty").await.unwrap().expect("an empty value");
    assert!(read.value.is_empty());
    assert_eq!(read.ttl, None, "no expiry");

    let minute = SystemTime::now() + Duration::from_secs(60);
    store.write("minute", b"v", Some(minute)).await.unwrap();
    let read = store.read("minute").await.unwrap().unwrap();
    assert_eq!(read.value, b"v");
    let ttl = read.ttl.expect("a TTL");
    assert!(
        ttl > Duration::from_secs(55) && ttl <= Duration::from_secs(60),
        "{ttl:?}"
    );

    // Deleted only while the value is the one named.
    let other = super::fingerprint(b"w");
    assert!(!store.delete_if("minute", &other).await.unwrap());
    assert!(store.read("minute").await.unwrap().is_some());
    assert!(store
        .delete_if("minute", &super::fingerprint(b"v"))
        .await
        .unwrap());
    assert!(store.read("minute").await.unwrap().is_none());

    let now = SystemTime::now();
    for (key, at) in [
        ("soon", now + Duration::from_micros(900)),
        ("past", now - Duration::from_secs(1)),
    ] {
        store.write(key, b"v", Some(at)).await.unwrap();
        assert!(store.read(key).await.unwrap().is_none(), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_token() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let a = idp.cache(store(&redis));
    let b = idp.cache(store(&redis));

    let first = a.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    let second = b.token().await.unwrap();
    assert_eq!(second.secret(), first.secret());
    assert_eq!(idp.fetches(), 1, "the second replica read the store");
    // The expiry came along: read from the store, not re-anchored to now.
    let (a_expiry, b_expiry) = (first.expiry().unwrap(), second.expiry().unwrap());
    assert!(b_expiry <= a_expiry + Duration::from_millis(50));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_fleet_costs_one_fetch() {
    let redis = Redis::start();
    let idp = Idp {
        delay: Duration::from_millis(300),
        ..Idp::lifetime(Duration::from_secs(60))
    };
    let replicas: Vec<_> = (0..4).map(|_| idp.cache(store(&redis))).collect();
    let tokens = futures_join(replicas.iter().map(|cache| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.token().await })
    }))
    .await;
    let secrets: Vec<_> = tokens.iter().map(|t| t.secret().to_owned()).collect();
    assert_eq!(
        idp.fetches(),
        1,
        "the losers waited for the winner: {secrets:?}"
    );
    assert!(secrets.iter().all(|s| s == "token-1"));
}

async fn futures_join(
    tasks: impl Iterator<Item = tokio::task::JoinHandle<Result<Token, crate::TokenError>>>,
) -> Vec<Token> {
    let mut tokens = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        tokens.push(task.await.unwrap().unwrap());
    }
    tokens
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_keys_and_values_name_no_secret() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let cache = idp.cache(store(&redis).prefix("svc:"));
    cache.token().await.unwrap();
    let key = format!("svc:{{{}}}", identity().key(None));
    assert!(eventually(100, async || exists(&redis, &key).await).await);
    for key in redis.keys().await {
        let hash = key.strip_prefix("svc:").unwrap();
        let hash = hash.strip_suffix(":lease").unwrap_or(hash);
        let hash = hash.strip_prefix('{').and_then(|h| h.strip_suffix('}'));
        let hash = hash.unwrap_or_else(|| panic!("a hash tag: {key}"));
        assert_eq!(hash.len(), 64, "{key}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{key}");
        assert!(!key.contains("token-") && !key.contains("fleet"), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_at_start_then_sharing_resumes() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    // One store handle for the whole fleet's life, made while Redis is down.
    let store = RedisStore::new(url).unwrap();
    let idp = Idp::lifetime(Duration::from_secs(60));

    let a = idp.cache(store.clone());
    a.token().await.unwrap();
    let b = idp.cache(store.clone());
    b.token().await.unwrap();
    assert_eq!(idp.fetches(), 2, "no store: each process alone");

    let redis = Redis::start_on(port);
    let c = idp.cache(store.clone());
    c.token().await.unwrap();
    assert_eq!(idp.fetches(), 3);
    assert!(
        stored_token_shows_up(&redis).await,
        "the same handle connected"
    );
    let d = idp.cache(store.clone());
    assert_eq!(d.token().await.unwrap().secret(), "token-3");
    assert_eq!(idp.fetches(), 3, "shared again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_and_restarted_empty() {
    let mut redis = Redis::start();
    let port = redis.port();
    let store = store(&redis);
    let idp = Idp::lifetime(Duration::from_secs(60));

    let a = idp.cache(store.clone());
    let token = a.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    redis.kill();

    // The replica that has a token serves it without Redis.
    assert_eq!(a.token().await.unwrap().secret(), token.secret());
    // A new one fetches alone.
    let b = idp.cache(store.clone());
    assert_eq!(b.token().await.unwrap().secret(), "token-2");

    let redis = Redis::start_on(port);
    assert!(redis.keys().await.is_empty(), "restarted empty");
    let c = idp.cache(store.clone());
    assert_eq!(c.token().await.unwrap().secret(), "token-3");
    assert!(stored_token_shows_up(&redis).await);
    let d = idp.cache(store.clone());
    assert_eq!(d.token().await.unwrap().secret(), "token-3");
    assert_eq!(idp.fetches(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_redis_is_a_miss_after_the_op_timeout() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let store = store(&redis).op_timeout(Duration::from_millis(100));
    // Connect while Redis answers, then pause every client for 5 s.
    let warm = idp.cache(store.clone());
    warm.token().await.unwrap();
    let pause = Duration::from_secs(5);
    let paused_at = Instant::now();
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause.as_millis() as u64)
        .arg("ALL")
        .query_async::<()>(&mut redis.conn().await)
        .await
        .unwrap();

    let cold = idp.cache(store.clone());
    assert_eq!(cold.token().await.unwrap().secret(), "token-2");
    assert!(
        paused_at.elapsed() < pause,
        "the token came while Redis was still paused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_that_dies_mid_fetch_is_taken_over() {
    let redis = Redis::start();
    // The first replica's source never answers; its lease lasts its fetch
    // timeout, three op timeouts and 250 ms.
    let started = Arc::new(tokio::sync::Notify::new());
    let dying = TokenCache::new({
        let started = started.clone();
        move || {
            started.notify_one();
            std::future::pending::<Result<Token, std::io::Error>>()
        }
    })
    .fetch_timeout(Duration::from_secs(1))
    .store(store(&redis))
    .store_identity(identity());
    let task = tokio::spawn({
        let dying = dying.clone();
        async move { dying.token().await }
    });
    // The source is called after the lease is taken.
    started.notified().await;
    let asked = Instant::now();
    let pttl: u64 = redis::cmd("PTTL")
        .arg(format!("{}:lease", token_key()))
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    let lease_gone = asked + Duration::from_millis(pttl);
    // The process dies: its fetch is gone, its lease is not released.
    task.abort();
    drop(dying);

    let fetched_at = Arc::new(std::sync::Mutex::new(None));
    let heir = TokenCache::new({
        let fetched_at = fetched_at.clone();
        move || {
            *fetched_at.lock().unwrap() = Some(Instant::now());
            async {
                Ok::<_, std::io::Error>(Token::new("heir").expires_in(Duration::from_secs(60)))
            }
        }
    })
    .fetch_timeout(Duration::from_secs(4))
    .store(store(&redis))
    .store_identity(identity());
    assert_eq!(heir.token().await.unwrap().secret(), "heir");
    let fetched_at = fetched_at.lock().unwrap().unwrap();
    assert!(
        fetched_at >= lease_gone,
        "the heir waited for the lease to expire"
    );
    assert!(stored_token_shows_up(&redis).await);
}

/// Replicas whose clocks are 4 s apart, with 2 s tokens: each measures what
/// is left by Redis's clock, so neither fetches again nor serves late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_with_skewed_clocks_agree_on_what_is_left() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(2));
    let ahead = idp.cache(store(&redis).skewed(2_000));
    let behind = idp.cache(store(&redis).skewed(-2_000));

    let first = ahead.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let read_at = Instant::now();
    let second = behind.token().await.unwrap();
    assert_eq!(second.secret(), first.secret());
    assert_eq!(idp.fetches(), 1);
    // At most 1.5 s was left; a reader trusting its own clock (2 s behind)
    // would have seen the whole 2 s.
    assert!(second.expiry().unwrap() <= read_at + Duration::from_millis(1500));

    // And the replica ahead reads a token the other one wrote.
    let third = idp.cache(store(&redis).skewed(2_000));
    assert_eq!(third.token().await.unwrap().secret(), first.secret());
    assert_eq!(idp.fetches(), 1);
}

/// A Redis store with faults injected: deletes that never land (what a
/// replica sees before its background delete after a 401 has run), or the
/// first reads missing (what a replica sees when it read just before
/// another's write).
struct Faulty {
    redis: RedisStore,
    deletes: bool,
    misses: AtomicUsize,
    /// The time to live of every lease asked for.
    leases: std::sync::Mutex<Vec<Duration>>,
}

impl Faulty {
    fn no_delete(redis: RedisStore) -> Self {
        Self {
            redis,
            deletes: false,
            misses: AtomicUsize::new(0),
            leases: Default::default(),
        }
    }

    fn first_reads_miss(redis: RedisStore, misses: usize) -> Self {
        Self {
            redis,
            deletes: true,
            misses: AtomicUsize::new(misses),
            leases: Default::default(),
        }
    }
}

impl TokenStore for Faulty {
    fn read<'a>(&'a self, key: &'a str) -> super::StoreFuture<'a, Option<super::Stored>> {
        let miss = self
            .misses
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        if miss {
            return Box::pin(async { Ok(None) });
        }
        self.redis.read(key)
    }
    fn write<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expires_at: Option<std::time::SystemTime>,
    ) -> super::StoreFuture<'a, ()> {
        self.redis.write(key, value, expires_at)
    }
    fn lease<'a>(
        &'a self,
        key: &'a str,
        owner: &'a str,
        ttl: Duration,
    ) -> super::StoreFuture<'a, bool> {
        self.leases.lock().unwrap().push(ttl);
        self.redis.lease(key, owner, ttl)
    }
    fn op_timeout(&self) -> Duration {
        TokenStore::op_timeout(&self.redis)
    }
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> super::StoreFuture<'a, ()> {
        self.redis.release(key, owner)
    }
    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a super::Fingerprint,
    ) -> super::StoreFuture<'a, bool> {
        if !self.deletes {
            return Box::pin(async { Ok(false) });
        }
        self.redis.delete_if(key, fingerprint)
    }
}

/// A replica whose read missed the token another wrote just after, and
/// which then takes the lease that other released: it reads again, and
/// does not fetch a second token for the same refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_won_after_the_token_landed_reads_it_instead_of_fetching() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let first = idp.cache(store(&redis)).token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    // The lease is released after the write; wait for that too.
    let lease = format!("{}:lease", token_key());
    assert!(eventually(100, async || !exists(&redis, &lease).await).await);

    let late = idp.cache(Faulty::first_reads_miss(store(&redis), 1));
    assert_eq!(late.token().await.unwrap().secret(), first.secret());
    assert_eq!(idp.fetches(), 1, "the lease's winner read the store again");
    // It released the lease it did not need.
    assert!(eventually(100, async || !exists(&redis, &lease).await).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_401_deletes_the_shared_token_only_while_it_is_stored() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let a = idp.cache(store(&redis));
    let b = idp.cache(store(&redis));
    let old = a.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    let old_b = b.token().await.unwrap();
    assert_eq!(idp.fetches(), 1);

    // A server rejects the token at replica a: the shared copy goes too.
    assert!(a.invalidate(&old));
    let key = token_key();
    assert!(eventually(100, async || !exists(&redis, &key).await).await);
    let new = a.token().await.unwrap();
    assert_eq!(new.secret(), "token-2");
    assert!(stored_token_shows_up(&redis).await);

    // A late 401 for the old token at replica b evicts b's copy, and not
    // the successor in the store: b then reads the successor.
    assert!(b.invalidate(&old_b));
    assert_eq!(b.token().await.unwrap().secret(), "token-2");
    assert_eq!(idp.fetches(), 2);
    let stored = redis.conn().await;
    let mut stored = stored;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let value: Vec<u8> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut stored)
            .await
            .unwrap();
        assert!(value.ends_with(b"token-2"), "the successor stays");
    }
}

/// Nor is an older rejected token, written back to the store (issue 21:
/// only the last one was remembered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_never_read_back_from_the_store() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    // Fresh tokens rejected back to back are paced (#20); a zero backoff
    // turns that off, for a test of what each rejection does.
    let a = idp
        .cache(Faulty::no_delete(store(&redis)))
        .backoff(Duration::ZERO, Duration::ZERO);
    let old = a.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    let raw = redis.raw(&token_key()).await;
    assert!(a.invalidate(&old));
    // The delete never lands, yet the rejected token is not taken back.
    let second = a.token().await.unwrap();
    assert_eq!(second.secret(), "token-2");
    assert!(a.invalidate(&second));
    // The first token, written back.
    plant(&redis, &token_key(), &raw, Some(60_000)).await;
    assert_eq!(a.token().await.unwrap().secret(), "token-3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_without_identity_shares_nothing() {
    let redis = Redis::start();
    let fetches = Arc::new(AtomicUsize::new(0));
    let cache = || {
        let fetches = fetches.clone();
        TokenCache::new(move || {
            fetches.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, std::io::Error>(Token::new("t").expires_in(Duration::from_secs(60))) }
        })
        .store(store(&redis))
    };
    cache().token().await.unwrap();
    cache().token().await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert!(redis.keys().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_replicas_share_per_key_and_never_across_keys() {
    let redis = Redis::start();
    let fetches = Arc::new(AtomicUsize::new(0));
    let replica = || {
        let fetches = fetches.clone();
        crate::KeyedTokenCache::new(move |audience: &String| {
            let audience = audience.clone();
            let fetches = fetches.clone();
            move || {
                let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
                let token = format!("{audience}-{n}");
                async move {
                    Ok::<_, std::io::Error>(Token::new(token).expires_in(Duration::from_secs(60)))
                }
            }
        })
        .store(store(&redis))
        .store_identity(identity())
    };
    let (one, two) = (replica(), replica());
    let orders = one.token(&"orders".to_owned()).await.unwrap();
    let billing = one.token(&"billing".to_owned()).await.unwrap();
    assert!(eventually(100, async || redis.keys().await.len() == 2).await);
    assert_eq!(
        two.token(&"orders".to_owned()).await.unwrap().secret(),
        orders.secret()
    );
    assert_eq!(
        two.token(&"billing".to_owned()).await.unwrap().secret(),
        billing.secret()
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    assert!(orders.secret().starts_with("orders-"));
    assert!(billing.secret().starts_with("billing-"));
}

/// A cache that will not share says why, up front, before any refresh.
#[test]
fn a_cache_says_whether_it_shares_and_why_not() {
    use super::NotShared;
    let closure = || async { Ok::<_, std::io::Error>(Token::new("t")) };
    let unconnected = || RedisStore::new("redis://127.0.0.1:1/").unwrap();
    assert_eq!(TokenCache::new(closure).sharing(), Err(NotShared::NoStore));
    let cache = TokenCache::new(closure).store(unconnected());
    assert!(matches!(cache.sharing(), Err(NotShared::NoIdentity { .. })));
    assert_eq!(cache.store_identity(identity()).sharing(), Ok(()));
    #[cfg(feature = "oauth2")]
    {
        use crate::oauth2::ClientCredentials;
        let source = || ClientCredentials::new("https://idp.example.com/token", "svc", "s");
        let cache = TokenCache::new(source()).store(unconnected());
        assert_eq!(cache.sharing(), Ok(()));
        let cache = TokenCache::new(source().client_assertion(closure)).store(unconnected());
        let error = cache.sharing().unwrap_err();
        assert!(error.to_string().contains("no store identity"), "{error}");
    }
}

/// A keyed cache whose key is a tenant, each with its own token.
fn per_tenant() -> crate::KeyedTokenCache<String> {
    crate::KeyedTokenCache::new(|tenant: &String| {
        let tenant = tenant.clone();
        move || {
            let token = format!("token-of-{tenant}");
            async move { Ok::<_, std::io::Error>(Token::new(token).expires_in(Duration::from_secs(60))) }
        }
    })
}

/// Issue 21: a label that redacts the tenant, as the `label` docs advise,
/// must not make two tenants share a stored token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redacting_label_never_shares_a_token_between_tenants() {
    let redis = Redis::start();
    let replica = || {
        per_tenant()
            .label(|_tenant: &String| "tenant-<redacted>".to_owned())
            .store(store(&redis))
            .store_identity(StoreIdentity::new("gateway"))
    };
    let (one, two) = (replica(), replica());
    let acme = one.token(&"acme".to_owned()).await.unwrap();
    assert_eq!(acme.secret(), "token-of-acme");
    assert!(stored_token_shows_up_anywhere(&redis, 1).await);
    let globex = two.token(&"globex".to_owned()).await.unwrap();
    assert_eq!(globex.secret(), "token-of-globex");
    let globex = one.token(&"globex".to_owned()).await.unwrap();
    assert_eq!(globex.secret(), "token-of-globex");
    // Yet the fleet still shares per tenant.
    assert_eq!(
        two.token(&"acme".to_owned()).await.unwrap().secret(),
        "token-of-acme"
    );
}

/// A keyed cache given its store after keys were added: those keys get
/// their own stored keys too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_added_before_the_store_get_their_own_stored_keys() {
    let redis = Redis::start();
    let cache = per_tenant().store_identity(StoreIdentity::new("gateway"));
    let (acme, globex) = ("acme".to_owned(), "globex".to_owned());
    let old = [
        cache.token(&acme).await.unwrap(),
        cache.token(&globex).await.unwrap(),
    ];
    let cache = cache.store(store(&redis));
    assert!(cache.invalidate(&acme, &old[0]) && cache.invalidate(&globex, &old[1]));
    cache.token(&acme).await.unwrap();
    cache.token(&globex).await.unwrap();
    assert!(stored_token_shows_up_anywhere(&redis, 2).await);
}

/// A real token endpoint over loopback HTTP that issues each client a
/// token named after what authenticated it (its `client_assertion`, else
/// its client id), and counts the tokens it issued.
#[cfg(feature = "oauth2")]
struct TokenEndpoint {
    url: String,
    issued: Arc<AtomicUsize>,
    server: tokio::task::JoinHandle<()>,
}

#[cfg(feature = "oauth2")]
impl TokenEndpoint {
    async fn start() -> Self {
        use http_body_util::BodyExt;
        use hyper::server::conn::http1;
        use hyper_util::rt::TokioIo;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        let issued = Arc::new(AtomicUsize::new(0));
        let counter = issued.clone();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let issued = counter.clone();
                let service = hyper::service::service_fn(
                    move |request: http::Request<hyper::body::Incoming>| {
                        let issued = issued.clone();
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            let form = String::from_utf8_lossy(&body).into_owned();
                            let field = |name: &str| {
                                form.split('&')
                                    .find_map(|pair| pair.strip_prefix(&format!("{name}=")[..]))
                                    .map(str::to_owned)
                            };
                            let client = field("client_assertion")
                                .or_else(|| field("client_id"))
                                .unwrap_or_default();
                            let n = issued.fetch_add(1, Ordering::SeqCst) + 1;
                            let json = format!(
                                r#"{{"access_token":"token-for-{client}-{n}","token_type":"Bearer","expires_in":60}}"#
                            );
                            Ok::<_, hyper::Error>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(json),
                            )))
                        }
                    },
                );
                tokio::spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            issued,
            server,
        }
    }
}

#[cfg(feature = "oauth2")]
impl Drop for TokenEndpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Issue 21: two workloads authenticated by their own client assertions,
/// with the same (empty) client id, as the `client_assertion` docs show
/// it (RFC 7523 §3 makes the client id optional). Neither is ever served
/// the other's token; each still shares with its own replicas once its
/// assertion source is named.
#[cfg(feature = "oauth2")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_with_their_own_assertions_never_share_a_token() {
    use crate::oauth2::ClientCredentials;
    let redis = Redis::start();
    let idp = TokenEndpoint::start().await;
    let assertion =
        |value: &'static str| move || async move { Ok::<_, std::io::Error>(Token::new(value)) };
    // As documented: a closure (or a FileAssertion) as the assertion source.
    let workload = |value: &'static str| {
        TokenCache::new(ClientCredentials::new(&idp.url, "", "").client_assertion(assertion(value)))
            .store(store(&redis))
    };
    let a = workload("assertion-a").token().await.unwrap();
    assert_eq!(a.secret(), "token-for-assertion-a-1");
    let b = workload("assertion-b").token().await.unwrap();
    assert_eq!(b.secret(), "token-for-assertion-b-2");
    // Named by the application: shared within a workload, never across.
    let named = |value: &'static str, name: &str| {
        let source = super::Named::new(
            assertion(value),
            StoreIdentity::new("workload").with("name", name),
        );
        TokenCache::new(ClientCredentials::new(&idp.url, "", "").client_assertion(source))
            .store(store(&redis))
    };
    let a = named("assertion-a", "a").token().await.unwrap();
    assert_eq!(a.secret(), "token-for-assertion-a-3");
    assert!(stored_token_shows_up_anywhere(&redis, 1).await);
    let b = named("assertion-b", "b").token().await.unwrap();
    assert_eq!(b.secret(), "token-for-assertion-b-4");
    assert!(stored_token_shows_up_anywhere(&redis, 2).await);
    let a2 = named("assertion-a", "a").token().await.unwrap();
    assert_eq!(a2.secret(), a.secret(), "a's replicas share");
    assert_eq!(idp.issued.load(Ordering::SeqCst), 4);
}

/// The raw value `RedisStore` would write for a record: the fingerprint,
/// then version 1, issued and expiry in Unix ms, granularity, the token.
fn raw_record(issued_ms: u64, expires_ms: u64, token: &str) -> Vec<u8> {
    let mut record = vec![1];
    record.extend_from_slice(&issued_ms.to_be_bytes());
    record.extend_from_slice(&expires_ms.to_be_bytes());
    record.extend_from_slice(&0u32.to_be_bytes());
    record.extend_from_slice(token.as_bytes());
    let mut raw = super::fingerprint(&record).to_vec();
    raw.extend_from_slice(&record);
    raw
}

fn unix_ms_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

async fn plant(redis: &Redis, key: &str, raw: &[u8], ttl_ms: Option<u64>) {
    let mut set = redis::cmd("SET");
    set.arg(key).arg(raw);
    if let Some(ms) = ttl_ms {
        set.arg("PX").arg(ms);
    }
    set.query_async::<()>(&mut redis.conn().await)
        .await
        .unwrap();
}

/// Issue 21: a record is served only if it is believable by itself: a
/// lifetime within the cap, a fingerprint that matches, an expiry not past
/// by our clock (beyond the skew tolerated), whatever TTL Redis gives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbelievable_record_is_a_miss_and_is_overwritten() {
    let redis = Redis::start();
    let now = unix_ms_now();
    let year = 365 * 24 * 3_600_000u64;
    let good = raw_record(now - 1_000, now + 59_000, "planted");
    let mut bad_fingerprint = good.clone();
    bad_fingerprint[0] ^= 1;
    let cases = [
        // 500 million years.
        (
            "a lifetime over the cap",
            raw_record(now, now + 500_000_000 * year, "planted"),
            60_000,
        ),
        ("a fingerprint that does not match", bad_fingerprint, 60_000),
        // Expired a minute ago, written back with a fresh TTL.
        (
            "an expiry past",
            raw_record(now - 120_000, now - 60_000, "planted"),
            60_000,
        ),
    ];
    for (case, raw, ttl) in cases {
        redis.flush().await;
        plant(&redis, &token_key(), &raw, Some(ttl)).await;
        let idp = Idp::lifetime(Duration::from_secs(60));
        let token = idp.cache(store(&redis)).token().await.unwrap();
        assert_eq!(token.secret(), "token-1", "{case}: served");
        assert!(
            eventually(100, async || idp
                .cache(store(&redis))
                .token()
                .await
                .unwrap()
                .secret()
                == "token-1")
            .await,
            "{case}: overwritten"
        );
        assert_eq!(idp.fetches(), 1, "{case}");
    }
    // The same record, believable, is served: the cases above differ only
    // in what is checked.
    plant(&redis, &token_key(), &good, Some(60_000)).await;
    let idp = Idp::lifetime(Duration::from_secs(60));
    assert_eq!(
        idp.cache(store(&redis)).token().await.unwrap().secret(),
        "planted"
    );
}

#[cfg(feature = "seal")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_sealed_value_is_not_served_after_its_expiry() {
    use super::{SealKey, Sealed};
    let redis = Redis::start();
    let sealed = |skew_ms| Sealed::new(store(&redis).skewed(skew_ms), SealKey::new([9; 32]));
    let idp = Idp::lifetime(Duration::from_secs(30));
    idp.cache(sealed(0)).token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    // Captured, then written back with a fresh, longer TTL.
    let raw = redis.raw(&token_key()).await;
    plant(&redis, &token_key(), &raw, Some(600_000)).await;
    // A replica 40 s later (by its clock): the token expired 10 s ago.
    let later = idp.cache(sealed(40_000)).token().await.unwrap();
    assert_eq!(later.secret(), "token-2");
    assert_eq!(idp.fetches(), 2);
}

/// Issue 21: a token key of another Redis type is a miss, and the next
/// write replaces it: sharing resumes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_of_another_type_is_a_miss_and_is_overwritten() {
    let redis = Redis::start();
    redis::cmd("HSET")
        .arg(token_key())
        .arg("field")
        .arg("value")
        .query_async::<()>(&mut redis.conn().await)
        .await
        .unwrap();
    let idp = Idp::lifetime(Duration::from_secs(60));
    assert_eq!(
        idp.cache(store(&redis)).token().await.unwrap().secret(),
        "token-1"
    );
    let kind: String = redis::cmd("TYPE")
        .arg(token_key())
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(kind, "string");
    assert_eq!(
        idp.cache(store(&redis)).token().await.unwrap().secret(),
        "token-1"
    );
    assert_eq!(idp.fetches(), 1);
}

/// Issue 21: a lease no holder of ours could have left (no TTL, or not a
/// string) is taken over at once, not waited on for the fetch timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_without_a_ttl_or_of_another_type_is_repaired() {
    let redis = Redis::start();
    let lease = format!("{}:lease", token_key());
    for plant_lease in ["SET", "HSET"] {
        redis.flush().await;
        let mut cmd = redis::cmd(plant_lease);
        cmd.arg(&lease);
        if plant_lease == "HSET" {
            cmd.arg("field");
        }
        cmd.arg("planted")
            .query_async::<()>(&mut redis.conn().await)
            .await
            .unwrap();
        let idp = Idp::lifetime(Duration::from_secs(60));
        let cache = idp
            .cache(store(&redis))
            .fetch_timeout(Duration::from_secs(30));
        assert_eq!(cache.token().await.unwrap().secret(), "token-1");
        // Taken, then released by compare-and-delete: without the repair
        // the planted lease would still be there (after a 30 s stall).
        assert!(!exists(&redis, &lease).await, "{plant_lease}");
    }
}

/// Issue 21: the lease outlasts its holder's real bound: with a 600 ms op
/// timeout, the lease, the read, the fetch and the write may take the fetch
/// timeout and 1.8 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_outlasts_its_holder_s_bound() {
    let redis = Redis::start();
    let faulty = Arc::new(Faulty::no_delete(
        store(&redis).op_timeout(Duration::from_millis(600)),
    ));
    let idp = Idp::lifetime(Duration::from_secs(60));
    idp.cache(Arc::clone(&faulty)).token().await.unwrap();
    let leases = faulty.leases.lock().unwrap().clone();
    assert_eq!(leases.len(), 1);
    // The cache's fetch timeout is 2 s (`Idp::cache`).
    assert!(
        leases[0] >= Duration::from_millis(2_000 + 3 * 600),
        "{:?}",
        leases[0]
    );
}

async fn stored_token_shows_up_anywhere(redis: &Redis, keys: usize) -> bool {
    eventually(100, async || redis.keys().await.len() == keys).await
}

#[cfg(feature = "seal")]
mod sealed {
    use super::super::{SealKey, Sealed};
    use super::*;

    fn sealed(redis: &Redis, key: u8) -> Sealed<RedisStore> {
        Sealed::new(store(redis), SealKey::new([key; 32]))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sealed_values_are_shared_and_unreadable_in_redis() {
        let redis = Redis::start();
        let idp = Idp::lifetime(Duration::from_secs(60));
        let a = idp.cache(sealed(&redis, 1));
        let token = a.token().await.unwrap();
        assert!(stored_token_shows_up(&redis).await);
        let raw: Vec<u8> = redis::cmd("GET")
            .arg(token_key())
            .query_async(&mut redis.conn().await)
            .await
            .unwrap();
        assert!(!raw.windows(7).any(|w| w == b"token-1"), "sealed at rest");
        let b = idp.cache(sealed(&redis, 1));
        assert_eq!(b.token().await.unwrap().secret(), token.secret());
        assert_eq!(idp.fetches(), 1);
        // Another key opens nothing: a miss, and a fetch.
        let c = idp.cache(sealed(&redis, 2));
        assert_eq!(c.token().await.unwrap().secret(), "token-2");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tampered_value_is_a_miss() {
        let redis = Redis::start();
        let idp = Idp::lifetime(Duration::from_secs(60));
        let a = idp.cache(sealed(&redis, 1));
        a.token().await.unwrap();
        assert!(stored_token_shows_up(&redis).await);
        // Flip one byte of the ciphertext (after the 32-byte fingerprint
        // and the 12-byte nonce).
        let mut conn = redis.conn().await;
        let mut raw: Vec<u8> = redis::cmd("GET")
            .arg(token_key())
            .query_async(&mut conn)
            .await
            .unwrap();
        raw[50] ^= 1;
        redis::cmd("SET")
            .arg(token_key())
            .arg(&raw)
            .arg("KEEPTTL")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
        let b = idp.cache(sealed(&redis, 1));
        assert_eq!(b.token().await.unwrap().secret(), "token-2");
        assert_eq!(idp.fetches(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_401_deletes_a_sealed_token() {
        let redis = Redis::start();
        let idp = Idp::lifetime(Duration::from_secs(60));
        let a = idp.cache(sealed(&redis, 1));
        let token = a.token().await.unwrap();
        assert!(stored_token_shows_up(&redis).await);
        assert!(a.invalidate(&token));
        let key = token_key();
        assert!(eventually(100, async || !exists(&redis, &key).await).await);
    }
}

/// The replica whose token comes due fetches the successor: it does not
/// read back the token it is refreshing (fresh for a reader that just
/// started, but due by this replica's rules).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_token_is_refreshed_not_read_back() {
    let redis = Redis::start();
    // 3 s tokens: due at 1.5 s, expired at 2.7 s.
    let idp = Idp::lifetime(Duration::from_secs(3));
    let a = idp.cache(store(&redis));
    let first = a.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Served the due token, and the refresh starts.
    assert_eq!(a.token().await.unwrap().secret(), first.secret());
    let mut conn = redis.conn().await;
    let key = token_key();
    let successor = eventually(100, async || {
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        value.is_some_and(|v| v.ends_with(b"token-2"))
    })
    .await;
    assert!(successor);
    assert!(
        Instant::now() < first.expiry().unwrap(),
        "before the old one expired"
    );
    // The write lands just before the refresh hands the token over.
    assert!(eventually(100, async || a.token().await.unwrap().secret() == "token-2").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_their_own_connection_managers_share() {
    use redis::aio::{ConnectionManager, ConnectionManagerConfig};

    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let replica = || {
        let client = redis::Client::open(redis.url()).unwrap();
        let config = ConnectionManagerConfig::new().set_max_delay(Duration::from_millis(200));
        let manager = ConnectionManager::new_lazy_with_config(client, config).unwrap();
        idp.cache(RedisStore::from_connection(manager))
    };
    let first = replica().token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    assert_eq!(replica().token().await.unwrap().secret(), first.secret());
    assert_eq!(idp.fetches(), 1);
}

/// Everything the cache tells `tracing` while it shares, fails over and
/// deletes: never the token.
#[cfg(feature = "tracing")]
#[tokio::test]
async fn store_events_never_show_the_token() {
    use tracing::field::{Field, Visit};

    #[derive(Clone, Default)]
    struct Recorder(Arc<std::sync::Mutex<String>>, Arc<AtomicUsize>);

    impl Visit for Recorder {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            let mut seen = self.0.lock().unwrap();
            seen.push_str(&format!("{}={value:?}\n", field.name()));
        }
    }

    impl tracing::Subscriber for Recorder {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            span.record(&mut self.clone());
            tracing::span::Id::from_u64(self.1.fetch_add(1, Ordering::SeqCst) as u64 + 1)
        }
        fn record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>) {
            values.record(&mut self.clone());
        }
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            event.record(&mut self.clone());
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    let recorder = Recorder::default();
    let _guard = tracing::subscriber::set_default(recorder.clone());
    let mut redis = Redis::start();
    let port = redis.port();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let shared = store(&redis);
    let a = idp.cache(shared.clone());
    let token = a.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    let b = idp.cache(shared.clone());
    b.token().await.unwrap();
    assert!(a.invalidate(&token));
    a.token().await.unwrap();
    redis.kill();
    idp.cache(shared.clone()).token().await.unwrap();
    let _redis = Redis::start_on(port);
    idp.cache(shared.clone()).token().await.unwrap();
    // A closure without identity: the warning.
    TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("token-x")) })
        .store(shared)
        .token()
        .await
        .unwrap();

    let seen = recorder.0.lock().unwrap().clone();
    assert!(
        seen.contains("token store"),
        "the failures were reported: {seen}"
    );
    assert!(seen.contains("no store identity"), "{seen}");
    // What the store's counters count, as events too.
    for event in [
        "token read from the store",
        "fleet fetch lease",
        "won=true",
        "fetching outside the fleet's single flight",
    ] {
        assert!(seen.contains(event), "{event}: {seen}");
    }
    assert!(!seen.contains("token-"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_expiry_is_shared_without_a_ttl() {
    let redis = Redis::start();
    let idp = Idp::default();
    let first = idp.cache(store(&redis)).token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    let pttl: i64 = redis::cmd("PTTL")
        .arg(token_key())
        .query_async(&mut redis.conn().await)
        .await
        .unwrap();
    assert_eq!(pttl, -1);
    let second = idp.cache(store(&redis)).token().await.unwrap();
    assert_eq!(second.secret(), first.secret());
    assert_eq!(second.expiry(), None);
    assert_eq!(idp.fetches(), 1);
}

/// Three replicas asking for a token every 20 ms for 4 s, with 2 s tokens
/// whose lifetime is counted in whole seconds (as OAuth2's `expires_in`):
/// each token is served for a second, so one process fetches about once a
/// second, and so does the fleet. Without the store it would be three
/// times that. No request fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_fleet_costs_what_one_process_costs() {
    let redis = Redis::start();
    let fetches = Arc::new(AtomicUsize::new(0));
    let replica = || {
        let fetches = fetches.clone();
        TokenCache::new(move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, std::io::Error>(Token::new(format!("token-{n}")).expires_in_secs(2))
            }
        })
        .store(store(&redis))
        .store_identity(identity())
    };
    let run = Duration::from_secs(4);
    let until = Instant::now() + run;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let cache = replica();
        tasks.push(tokio::spawn(async move {
            let mut served = 0;
            while Instant::now() < until {
                cache.token().await.unwrap();
                served += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            served
        }));
    }
    for task in tasks {
        assert!(task.await.unwrap() > 0);
    }
    let fetches = fetches.load(Ordering::SeqCst);
    // One a second, plus the first and a hand-over or two; alone, each
    // replica would have made four or five.
    assert!(fetches <= 7, "{fetches} fetches");
}

/// Two replicas, each a current-thread runtime driven by a `block_on` per
/// call, idle in between: the first one's write and release land before
/// its call returns, so the second reads the token, and no lease is left
/// held until it expires.
#[test]
fn replicas_driven_by_block_on_per_call_share_and_release_at_once() {
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let (a_runtime, b_runtime) = (runtime(), runtime());
    let (a, b) = (idp.cache(store(&redis)), idp.cache(store(&redis)));

    let first = a_runtime.block_on(a.token()).unwrap();
    // `a_runtime` is idle from here on: nothing of `a` runs any more. Its
    // lease is already released, so the next refresh of any replica can
    // take it without waiting for it to expire.
    let lease = format!("{}:lease", token_key());
    assert!(
        !b_runtime.block_on(exists(&redis, &lease)),
        "the lease is held"
    );
    let second = b_runtime.block_on(b.token()).unwrap();
    assert_eq!(second.secret(), first.secret());
    assert_eq!(
        idp.fetches(),
        1,
        "the second replica read the first's token"
    );
}
