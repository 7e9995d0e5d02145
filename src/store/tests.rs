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
    // timeout plus a second.
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
}

impl Faulty {
    fn no_delete(redis: RedisStore) -> Self {
        Self {
            redis,
            deletes: false,
            misses: AtomicUsize::new(0),
        }
    }

    fn first_reads_miss(redis: RedisStore, misses: usize) -> Self {
        Self {
            redis,
            deletes: true,
            misses: AtomicUsize::new(misses),
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
        self.redis.lease(key, owner, ttl)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_is_never_read_back_from_the_store() {
    let redis = Redis::start();
    let idp = Idp::lifetime(Duration::from_secs(60));
    let a = idp.cache(Faulty::no_delete(store(&redis)));
    let old = a.token().await.unwrap();
    assert!(stored_token_shows_up(&redis).await);
    assert!(a.invalidate(&old));
    // The delete never lands, yet the rejected token is not taken back.
    assert_eq!(a.token().await.unwrap().secret(), "token-2");
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
    assert_eq!(a.token().await.unwrap().secret(), "token-2");
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
