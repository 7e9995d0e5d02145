//! The fleet store on a real `redis-server` as deployments use it: the
//! store's counters in `Stats`, a key prefix per application, and an ACL
//! user limited to what `docs/store.md` lists.
#![cfg(feature = "redis")]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tower_bearer::store::{RedisStore, TokenStore};
use tower_bearer::StoreStats;

mod redis_common;
#[path = "../examples/support/redis_server.rs"]
mod redis_server;

use redis_common::{acl_setuser, Idp};
use redis_server::RedisServer;

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn command(url: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut connect(url).await).await
}

fn counted(f: impl FnOnce(&mut StoreStats)) -> StoreStats {
    let mut stats = StoreStats::default();
    f(&mut stats);
    stats
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_show_a_replica_sharing_and_one_falling_back() {
    let redis = RedisServer::start().unwrap();
    let idp = Idp::slow(Duration::from_millis(300));
    let (a, b) = (
        idp.cache(RedisStore::new(redis.url()).unwrap()),
        idp.cache(RedisStore::new(redis.url()).unwrap()),
    );
    let (first, second) = tokio::join!(a.token(), async {
        // `a` takes the lease first: `b` waits for its token.
        tokio::time::sleep(Duration::from_millis(100)).await;
        b.token().await
    });
    assert_eq!(first.unwrap().secret(), second.unwrap().secret());
    assert_eq!(idp.fetches(), 1);
    assert_eq!(
        a.stats().store,
        counted(|s| {
            s.misses = 2; // the read, and the read after the lease
            s.leases_won = 1;
        })
    );
    let b = b.stats().store;
    assert_eq!((b.hits, b.waits, b.leases_won), (1, 1, 0), "{b:?}");
    assert!(b.leases_lost >= 1 && b.misses >= 1, "{b:?}");
    assert_eq!((b.errors, b.timeouts, b.fallbacks), (0, 0, 0), "{b:?}");

    // A replica whose Redis is gone fetches alone, and says so.
    let mut gone = RedisServer::start().unwrap();
    let store = RedisStore::new(gone.url()).unwrap();
    gone.kill();
    let alone = idp.cache(store);
    alone.token().await.unwrap();
    assert_eq!(
        alone.stats().store,
        counted(|s| {
            s.errors = 1;
            s.fallbacks = 1;
        })
    );

    // A paused Redis: one timeout, then the same fallback.
    let paused = RedisServer::start().unwrap();
    let store = RedisStore::new(paused.url())
        .unwrap()
        .op_timeout(Duration::from_millis(100));
    command(&paused.url(), &["CLIENT", "PAUSE", "2000", "ALL"])
        .await
        .unwrap();
    let slow = idp.cache(store);
    slow.token().await.unwrap();
    assert_eq!(
        slow.stats().store,
        counted(|s| {
            s.timeouts = 1;
            s.fallbacks = 1;
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_applications_with_their_own_prefix_share_one_redis_apart() {
    let redis = RedisServer::start().unwrap();
    let idp = Idp::default();
    let orders = idp.cache(RedisStore::new(redis.url()).unwrap().prefix("orders:"));
    let billing = idp.cache(RedisStore::new(redis.url()).unwrap().prefix("billing:"));
    let (o, b) = (
        orders.token().await.unwrap(),
        billing.token().await.unwrap(),
    );
    assert_ne!(o.secret(), b.secret(), "same identity, but apart by prefix");
    assert_eq!(idp.fetches(), 2);
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut connect(&redis.url()).await)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(keys.len(), 2, "{keys:?}");
    assert!(keys[0].starts_with("billing:{") && keys[1].starts_with("orders:{"));
    // Each application's replicas still share.
    let orders2 = idp.cache(RedisStore::new(redis.url()).unwrap().prefix("orders:"));
    assert_eq!(orders2.token().await.unwrap().secret(), o.secret());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acl_user_limited_to_the_documented_commands_shares_and_may_do_nothing_more() {
    let redis = RedisServer::start().unwrap();
    let admin = redis.url();
    let setuser = acl_setuser("fleet", "fleet-pass-42", "app:", &[]);
    let setuser: Vec<&str> = setuser.iter().map(String::as_str).collect();
    command(&admin, &setuser).await.unwrap();
    let user = format!("redis://fleet:fleet-pass-42@127.0.0.1:{}/", redis.port());

    let idp = Idp::default();
    let store = || RedisStore::new(&user).unwrap().prefix("app:");
    let (a, b) = (idp.cache(store()), idp.cache(store()));
    let token = a.token().await.unwrap();
    assert_eq!(b.token().await.unwrap().secret(), token.secret());
    assert_eq!(idp.fetches(), 1, "shared under the limited user");
    for stats in [a.stats().store, b.stats().store] {
        assert_eq!(stats.errors + stats.timeouts, 0, "{stats:?}");
    }
    // A 401 deletes the shared copy, with the same rights.
    a.invalidate(&token);
    let key = format!("app:{{{}}}", "*");
    let gone = async || {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&key)
            .query_async(&mut connect(&admin).await)
            .await
            .unwrap();
        keys.is_empty()
    };
    let mut deleted = false;
    for _ in 0..100 {
        if gone().await {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(deleted, "the 401's compare-and-delete ran as the ACL user");

    // Anything more is refused.
    for refused in [
        &["GET", "other:key"][..],
        &["SET", "other:key", "x"],
        &["KEYS", "*"],
        &["FLUSHALL"],
        &["CONFIG", "GET", "*"],
        &["EXPIRE", "app:x", "10"],
        &["EVAL", "return 1", "0"],
    ] {
        let error = command(&user, refused).await.unwrap_err();
        assert_eq!(error.code(), Some("NOPERM"), "{refused:?}: {error}");
    }
    // Nor can a script reach past the prefix, or call anything else.
    for script in [
        "return redis.call('GET', 'other:key')",
        "return redis.call('KEYS', '*')",
    ] {
        let sha = command(&user, &["SCRIPT", "LOAD", script]).await.unwrap();
        let redis::Value::BulkString(sha) = sha else {
            panic!("a sha: {sha:?}")
        };
        let sha = String::from_utf8(sha).unwrap();
        let error = command(&user, &["EVALSHA", &sha, "0"]).await.unwrap_err();
        let refused = error.to_string();
        assert!(
            refused.contains("The user executing the script can't"),
            "{script}: {refused}"
        );
    }
    // A store outside its prefix counts errors and falls back; no request fails.
    let outside = idp.cache(RedisStore::new(&user).unwrap().prefix("other:"));
    outside.token().await.unwrap();
    let stats = outside.stats().store;
    assert!(stats.errors >= 1 && stats.fallbacks == 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_shows_in_no_error_nor_debug() {
    let redis = RedisServer::start().unwrap();
    command(
        &redis.url(),
        &["ACL", "SETUSER", "fleet", "on", ">right-pass"],
    )
    .await
    .unwrap();
    let url = format!("redis://fleet:wrong-pass-77@127.0.0.1:{}/", redis.port());
    let store = RedisStore::new(&url).unwrap();
    let error = store.read("k").await.unwrap_err();
    let shown = format!("{error} {error:?} {store:?}");
    assert!(
        shown.contains("WRONGPASS") || shown.contains("AuthenticationFailed"),
        "{shown}"
    );
    assert!(
        !shown.contains("wrong-pass-77") && !shown.contains("fleet:"),
        "{shown}"
    );
}

/// A TCP proxy to `port` that holds each new connection for `delay` before
/// passing bytes: a Redis slow to connect to (a cluster's slot map and
/// connections on a loaded host, a far-away TLS handshake).
async fn slow_proxy(port: u16, delay: Duration) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let mut server = tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .unwrap();
                let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
            });
        }
    });
    proxy
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_slower_than_the_op_timeout_is_left_to_finish() {
    let redis = RedisServer::start().unwrap();
    // Slower than the op timeout, within redis-rs's own (twice it).
    let port = slow_proxy(redis.port(), Duration::from_millis(300)).await;
    let store = RedisStore::new(format!("redis://127.0.0.1:{port}/"))
        .unwrap()
        .op_timeout(Duration::from_millis(200));
    let idp = Idp::default();
    let first = idp.cache(store.clone());
    first.token().await.unwrap();
    assert_eq!(
        first.stats().store.timeouts,
        1,
        "the first operation gave up"
    );
    // The connect went on without it; the next refresh finds the connection.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = idp.cache(store.clone());
    let shared = second.token().await.unwrap();
    let stats = second.stats().store;
    assert_eq!((stats.timeouts, stats.leases_won), (0, 1), "{stats:?}");
    let third = idp.cache(store);
    assert_eq!(third.token().await.unwrap().secret(), shared.secret());
    assert_eq!(third.stats().store.hits, 1);
}

/// A TCP proxy to Redis that counts the connections made through it and,
/// on cue, hands the client bytes that are not RESP in place of Redis's
/// next reply: a broken middlebox, or a server that is not Redis.
struct GarblingProxy {
    port: u16,
    connections: Arc<AtomicUsize>,
    garble: Arc<AtomicBool>,
}

impl GarblingProxy {
    async fn start(redis_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = Self {
            port: listener.local_addr().unwrap().port(),
            connections: Arc::default(),
            garble: Arc::default(),
        };
        let (connections, garble) = (proxy.connections.clone(), proxy.garble.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                connections.fetch_add(1, Ordering::SeqCst);
                let server = tokio::net::TcpStream::connect(("127.0.0.1", redis_port))
                    .await
                    .unwrap();
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut from_client, &mut to_server).await;
                });
                let garble = garble.clone();
                tokio::spawn(async move {
                    let mut reply = [0; 4096];
                    while let Ok(n @ 1..) = from_server.read(&mut reply).await {
                        let bytes = match garble.swap(false, Ordering::SeqCst) {
                            true => &b"@not resp\r\n"[..],
                            false => &reply[..n],
                        };
                        if to_client.write_all(bytes).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        proxy
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

/// A reply that is not RESP leaves the connection out of step with Redis:
/// the store drops it (redis-rs files the error as a parse error, not an
/// I/O one), and the next operation connects again and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_is_not_resp_drops_the_connection() {
    let redis = RedisServer::start().unwrap();
    let proxy = GarblingProxy::start(redis.port()).await;
    let store = RedisStore::new(proxy.url()).unwrap();
    store.write("k", b"value", None).await.unwrap();
    assert_eq!(proxy.connections.load(Ordering::SeqCst), 1);

    proxy.garble.store(true, Ordering::SeqCst);
    let error = store.read("k").await.unwrap_err();
    assert!(!error.to_string().contains("value"), "{error}");

    let stored = store.read("k").await.unwrap().expect("the value written");
    assert_eq!(stored.value, b"value");
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst),
        2,
        "a new connection after the broken reply"
    );
}
