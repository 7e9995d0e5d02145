//! [`RedisStore`]: the [`TokenStore`] on Redis (or Valkey), with redis-rs.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use redis::aio::ConnectionLike;
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, IntoConnectionInfo,
    Pipeline, RedisFuture, Script, Value,
};

use super::{Error, Fingerprint, StoreFuture, Stored, TokenStore};

#[cfg(feature = "redis-cluster")]
mod cluster;
#[cfg(feature = "redis-tls")]
mod tls;

const DEFAULT_PREFIX: &str = "tower-bearer:";
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(250);

/// A token store on Redis: `SET PX` for tokens, `SET NX PX` for leases, and
/// Lua compare-and-delete scripts for releases and `401` deletes. See
/// [`crate::store`] for how the cache uses it.
///
/// - [`new`](Self::new) parses a URL (`redis://`, `unix://`, or
///   `rediss://` with the feature `redis-tls`, see
///   [`tls_ca_pem`](Self::tls_ca_pem)), with an ACL user and password if
///   you give one, and connects on first use, so a fleet may start before
///   its Redis. It keeps one multiplexed connection, drops it on any
///   connection error and connects again on the next operation, with no
///   backoff of its own: sharing resumes at the first refresh after Redis
///   is back.
/// - `cluster` (feature `redis-cluster`) does the same for a Redis
///   Cluster, from its seed nodes.
/// - [`from_connection`](Self::from_connection) uses your own redis-rs
///   connection: a `ConnectionManager`, a sentinel connection, a cluster
///   over redis-rs's own TLS. Reconnection is then the connection's
///   own: configure a `ConnectionManager` with a short `max_delay` (say
///   500 ms), or its default backoff may keep it from seeing a restarted
///   Redis for several seconds.
///
/// Keys are `<prefix>{<hex SHA-256 of the token's identity>}` for the
/// token and the same with `:lease` for the fetch lease: the braces are a
/// Redis Cluster hash tag, so that both keys are in one slot. Each value is the
/// SHA-256 of what the cache wrote, then what it wrote, so that a delete
/// after a `401` compares 32 bytes on the server; a read checks it, and a
/// key of another Redis type reads as a miss.
///
/// ```
/// use std::time::Duration;
/// use tower_bearer::store::RedisStore;
///
/// # fn main() -> Result<(), tower_bearer::store::Error> {
/// // Parsed only: nothing listens there, and nothing needs to yet.
/// let store = RedisStore::new("redis://127.0.0.1:1/")?
///     .prefix("orders:")
///     .op_timeout(Duration::from_millis(100));
/// assert!(RedisStore::new("not a url").is_err());
/// # let _ = store;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    connection: Connection,
    prefix: Arc<str>,
    timeout: Duration,
    /// Test only: this replica's Unix clock, off by this many milliseconds.
    #[cfg(test)]
    skew_ms: i64,
}

#[derive(Clone)]
enum Connection {
    /// Ours, made from URLs on first use, and again after a connection error.
    Lazy {
        target: Arc<Target>,
        current: Arc<Mutex<Option<Arc<dyn Share>>>>,
    },
    /// The user's.
    Theirs(Arc<dyn Share>),
}

/// What a store made from URLs connects to.
enum Target {
    /// One server (or a proxy in front of several).
    Node(Node),
    /// The seed nodes of a Redis Cluster.
    #[cfg(feature = "redis-cluster")]
    Cluster(Vec<ConnectionInfo>),
}

/// One server's address and credentials, and TLS for `rediss://`.
struct Node {
    info: ConnectionInfo,
    #[cfg(feature = "redis-tls")]
    tls: Option<tls::Tls>,
}

impl Node {
    async fn connect(&self, config: &AsyncConnectionConfig) -> redis::RedisResult<Arc<dyn Share>> {
        #[cfg(feature = "redis-tls")]
        if let Some(tls) = &self.tls {
            return Ok(Arc::new(tls.connect(&self.info, config.clone()).await?));
        }
        let client = Client::open(self.info.clone())?;
        let conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await?;
        Ok(Arc::new(conn))
    }
}

/// A Redis URL's connection info, and whether it asks for TLS (`rediss://`,
/// `valkeys://`): we make TLS connections ourselves (see `tls.rs`), so
/// redis-rs parses the URL as a plain one. A message never quotes the URL
/// (it may hold a password).
fn parse(url: &str) -> Result<(ConnectionInfo, bool), Error> {
    let (scheme, rest) = url.split_once("://").unwrap_or((url, ""));
    let tls = scheme.eq_ignore_ascii_case("rediss") || scheme.eq_ignore_ascii_case("valkeys");
    let info = if tls {
        format!("redis://{rest}").into_connection_info()
    } else {
        url.into_connection_info()
    }
    .map_err(error)?;
    if tls && !matches!(info.addr(), ConnectionAddr::Tcp(..)) {
        return Err(Error::new("a rediss:// URL needs a host"));
    }
    Ok((info, tls))
}

/// A user's connection, cloned for each operation.
trait Share: Send + Sync {
    fn handle(&self) -> Boxed;
}

impl<C: ConnectionLike + Clone + Send + Sync + 'static> Share for C {
    fn handle(&self) -> Boxed {
        Boxed(Box::new(self.clone()))
    }
}

struct Boxed(Box<dyn ConnectionLike + Send + Sync>);

impl ConnectionLike for Boxed {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.0.req_packed_command(cmd)
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.0.req_packed_commands(pipeline, offset, count)
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

impl RedisStore {
    /// A store on the Redis at `url`:
    /// `redis://[<user>][:<password>@]<host>[:<port>][/<db>]`, `unix://`,
    /// or `rediss://` for TLS (feature `redis-tls`; see
    /// [`tls_ca_pem`](Self::tls_ca_pem)). The user and password are
    /// those of a Redis 6+ ACL user (see `docs/store.md` for the rights the
    /// store needs); neither ever shows in `Debug`, errors or events.
    ///
    /// Only parses the URL: it connects on first use, and needs no runtime
    /// until then. A URL that does not parse is an error whose message does
    /// not quote it.
    pub fn new(url: impl AsRef<str>) -> Result<Self, Error> {
        let (info, tls) = parse(url.as_ref())?;
        #[cfg(not(feature = "redis-tls"))]
        if tls {
            return Err(Error::new("rediss:// needs the feature `redis-tls`"));
        }
        let node = Node {
            info,
            #[cfg(feature = "redis-tls")]
            tls: tls.then(tls::Tls::default),
        };
        Ok(Self::with(Connection::Lazy {
            target: Arc::new(Target::Node(node)),
            current: Arc::default(),
        }))
    }

    /// A store on your own redis-rs connection (a `ConnectionManager`, a
    /// `MultiplexedConnection`, a cluster connection: anything
    /// `ConnectionLike + Clone`), cloned for each operation. Its own
    /// timeouts and reconnection apply; the cache still gives up on each
    /// operation after [`op_timeout`](Self::op_timeout).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use redis::aio::{ConnectionManager, ConnectionManagerConfig};
    /// use tower_bearer::store::RedisStore;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> redis::RedisResult<()> {
    /// let client = redis::Client::open("rediss://user:password@redis.internal:6380/")?;
    /// // Retry quickly, so that a restarted Redis is seen within a second.
    /// let config = ConnectionManagerConfig::new()
    ///     .set_min_delay(Duration::from_millis(50))
    ///     .set_max_delay(Duration::from_millis(500))
    ///     .set_connection_timeout(Some(Duration::from_millis(250)))
    ///     .set_response_timeout(Some(Duration::from_millis(250)));
    /// let manager = ConnectionManager::new_lazy_with_config(client, config)?;
    /// let store = RedisStore::from_connection(manager);
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_connection<C>(connection: C) -> Self
    where
        C: ConnectionLike + Clone + Send + Sync + 'static,
    {
        Self::with(Connection::Theirs(Arc::new(connection)))
    }

    /// Trusts only the CA certificates in `pem` (PEM, one or more) for a
    /// `rediss://` store, instead of webpki's compiled-in roots: the CA of a
    /// self-run Redis, say. The server's certificate must name the URL's
    /// host (a DNS name or an IP address). Feature `redis-tls`.
    ///
    /// TLS is made with rustls and the application's process-level crypto
    /// provider when it installed one, else ring; this crate never installs
    /// a provider. An error (a PEM that does not parse, a store that is not
    /// `rediss://`) never quotes the PEM.
    ///
    /// ```no_run
    /// use tower_bearer::store::RedisStore;
    ///
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let store = RedisStore::new("rediss://fleet:password@redis.internal:6380/")?
    ///     .tls_ca_pem(std::fs::read("/etc/redis/ca.pem")?)?
    ///     .tls_client_pem(
    ///         std::fs::read("/etc/redis/client.pem")?,
    ///         std::fs::read("/etc/redis/client.key")?,
    ///     )?;
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_ca_pem(self, pem: impl AsRef<[u8]>) -> Result<Self, Error> {
        self.map_tls(|tls| tls.with_ca_pem(pem.as_ref()))
    }

    /// Presents a client certificate (mutual TLS) on a `rediss://` store:
    /// the chain in `chain_pem`, leaf first, and its private key in
    /// `key_pem` (PKCS#8, PKCS#1 or SEC1). Feature `redis-tls`.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_client_pem(
        self,
        chain_pem: impl AsRef<[u8]>,
        key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, Error> {
        self.map_tls(|tls| tls.with_client_pem(chain_pem.as_ref(), key_pem.as_ref()))
    }

    /// Uses your own rustls config for a `rediss://` store, as it is (its
    /// provider, roots, client certificate), instead of
    /// [`tls_ca_pem`](Self::tls_ca_pem) and
    /// [`tls_client_pem`](Self::tls_client_pem). Feature `redis-tls`.
    #[cfg(feature = "redis-tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-tls")))]
    pub fn tls_config(self, config: Arc<rustls::ClientConfig>) -> Result<Self, Error> {
        self.map_tls(|tls| Ok(tls.with_config(config)))
    }

    #[cfg(feature = "redis-tls")]
    fn map_tls(
        mut self,
        f: impl FnOnce(tls::Tls) -> Result<tls::Tls, Error>,
    ) -> Result<Self, Error> {
        let Connection::Lazy { target, .. } = &self.connection else {
            return Err(Error::new("TLS settings need a rediss:// URL"));
        };
        let Target::Node(Node {
            info,
            tls: Some(tls),
        }) = &**target
        else {
            return Err(Error::new("TLS settings need a rediss:// URL"));
        };
        let node = Node {
            info: info.clone(),
            tls: Some(f(tls.clone())?),
        };
        self.connection = Connection::Lazy {
            target: Arc::new(Target::Node(node)),
            current: Arc::default(),
        };
        Ok(self)
    }

    fn with(connection: Connection) -> Self {
        Self {
            connection,
            prefix: DEFAULT_PREFIX.into(),
            timeout: DEFAULT_TIMEOUT,
            #[cfg(test)]
            skew_ms: 0,
        }
    }

    /// What every key starts with. Default: `tower-bearer:`. Applications
    /// that share one Redis stay apart by prefix, and an ACL user's key
    /// pattern names it (`~orders:*`). The hash after it is in braces (a
    /// Redis Cluster hash tag): keep braces out of the prefix unless you
    /// mean every token of the application to share one slot (`{orders}:`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into().into();
        self
    }

    /// How long any one operation (connecting included) may take before it
    /// counts as failed and the cache goes on without the store. Keep it
    /// short: a request that waits for a token may wait this long for each
    /// step of a refresh. Default: 250 ms.
    pub fn op_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Test only: a replica whose Unix clock is `ms` milliseconds off.
    #[cfg(test)]
    pub(crate) fn skewed(mut self, ms: i64) -> Self {
        self.skew_ms = ms;
        self
    }

    /// `<prefix>{<key>}`: the braces are a Redis Cluster hash tag, so that
    /// the token and its lease live in one slot (on one node), whatever the
    /// prefix.
    fn token_key(&self, key: &str) -> String {
        format!("{}{{{key}}}", self.prefix)
    }

    /// `<prefix>{<key>}:lease`: the token's key and a suffix, so that its
    /// first hash tag is the token's.
    fn lease_key(&self, key: &str) -> String {
        format!("{}:lease", self.token_key(key))
    }

    async fn run<T>(
        &self,
        job: impl AsyncFnOnce(&mut Boxed) -> redis::RedisResult<T>,
    ) -> Result<T, Error> {
        let (mut conn, current) = match &self.connection {
            Connection::Theirs(theirs) => (theirs.handle(), None),
            Connection::Lazy { target, current } => {
                let cached = current
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                let conn = match cached {
                    Some(conn) => conn,
                    None => self.connect(target, current).await?,
                };
                (conn.handle(), Some(current))
            }
        };
        let result = job(&mut conn).await;
        if let (Err(error), Some(current)) = (&result, current) {
            // An I/O error covers a dropped connection too (redis-rs 1.8:
            // every error that carries an `io::Error` is of kind `Io`).
            if error.is_io_error() || error.is_unrecoverable_error() {
                // Connect again next time.
                *current.lock().unwrap_or_else(PoisonError::into_inner) = None;
            }
        }
        result.map_err(error)
    }
}

// ===== connecting =====

impl RedisStore {
    /// A new connection to `target`, kept in `current`, made by a task of
    /// its own: an operation that gives up after its op timeout leaves it
    /// to finish, and the next operation finds the connection. (A cluster's
    /// connection, the slot map and then a connection per node, can take
    /// longer than one op timeout on a loaded host: cancelled with each
    /// operation, it would never be made.) redis-rs's own timeouts bound it.
    async fn connect(
        &self,
        target: &Arc<Target>,
        current: &Arc<Mutex<Option<Arc<dyn Share>>>>,
    ) -> Result<Arc<dyn Share>, Error> {
        let (target, current) = (Arc::clone(target), Arc::clone(current));
        let timeout = self.inner_timeout();
        let task = tokio::spawn(async move {
            let conn = connect(&target, timeout).await?;
            *current.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&conn));
            Ok::<_, redis::RedisError>(conn)
        });
        match task.await {
            Ok(conn) => conn.map_err(error),
            Err(_) => Err(Error::new("connecting to redis ended abruptly")),
        }
    }

    /// redis-rs's own connect and response timeouts: past the op timeout,
    /// so that the cache's bound on each operation fires first (a slow
    /// Redis counts as a timeout in [`StoreStats`](crate::StoreStats)), and
    /// still bounded should an operation be left to finish on its own.
    fn inner_timeout(&self) -> Duration {
        self.timeout.saturating_mul(2)
    }
}

/// A new connection to `target`, with `timeout` as redis-rs's connect and
/// response timeouts.
async fn connect(target: &Target, timeout: Duration) -> redis::RedisResult<Arc<dyn Share>> {
    match target {
        Target::Node(node) => {
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout));
            node.connect(&config).await
        }
        #[cfg(feature = "redis-cluster")]
        Target::Cluster(seeds) => cluster::connect(seeds, timeout).await,
    }
}

/// A redis-rs error as a [`Error`], with no value in it: a type
/// error's message quotes the response, which may hold a token.
fn error(error: redis::RedisError) -> Error {
    // A timeout, a refusal and a dropped connection are I/O errors too
    // (redis-rs 1.8: every error that carries an `io::Error` is of kind
    // `Io`), and none quotes a reply.
    if error.is_io_error() {
        return Error::new(error);
    }
    Error::new(match error.code() {
        Some(code) => format!("redis error {code} ({:?})", error.kind()),
        None => format!("redis error ({:?})", error.kind()),
    })
}

/// The value and its remaining time to live, in one round trip. A key of
/// another type (a hash, a list: planted, or another tool's) is a miss,
/// not a `WRONGTYPE` error, so that the next write (`SET`, which replaces
/// a key of any type) repairs it.
const READ: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return false end
local v = redis.call('GET', KEYS[1])
return {v, redis.call('PTTL', KEYS[1])}
";

/// Takes the lease (`SET NX PX`), after deleting a lease no holder of ours
/// could have left: one without a time to live, or not a string. Such a
/// key would otherwise stall every cold refresh for the fetch timeout, for
/// good. 1 if taken, else 0.
const LEASE: &str = r"
local t = redis.call('TYPE', KEYS[1]).ok
if t ~= 'none' and (t ~= 'string' or redis.call('PTTL', KEYS[1]) < 0) then
  redis.call('DEL', KEYS[1])
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// Deletes the lease only if `owner` holds it.
const RELEASE: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Deletes the token only if its value starts with the fingerprint given.
const DELETE_IF: &str = r"
if redis.call('TYPE', KEYS[1]).ok ~= 'string' then return 0 end
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, 32) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl TokenStore for RedisStore {
    fn read<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
        Box::pin(async move {
            let key = self.token_key(key);
            let found: Option<(Vec<u8>, i64)> = self
                .run(async |conn| Script::new(READ).key(&key).invoke_async(conn).await)
                .await?;
            let Some((mut value, pttl)) = found else {
                return Ok(None);
            };
            if value.len() < 32 {
                return Ok(None);
            }
            let rest = value.split_off(32);
            // What was written is the fingerprint, then the value: anything
            // else was not written by a `RedisStore`, and is a miss.
            if value[..] != super::fingerprint(&rest)[..] {
                return Ok(None);
            }
            let value = rest;
            // -1: no expiry.
            let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
            let ttl = if pttl == -1 {
                None
            } else {
                Some(ttl.unwrap_or(Duration::ZERO))
            };
            Ok(Some(Stored { value, ttl }))
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expires_at: Option<SystemTime>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let ttl = match expires_at {
                None => None,
                Some(at) => match at.duration_since(self.now()) {
                    Ok(ttl) if ttl.as_millis() > 0 => Some(ttl),
                    // Expired already: nothing to share.
                    _ => return Ok(()),
                },
            };
            let mut stored = zeroize::Zeroizing::new(Vec::with_capacity(32 + value.len()));
            stored.extend_from_slice(&super::fingerprint(value));
            stored.extend_from_slice(value);
            let key = self.token_key(key);
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(&stored[..]);
            if let Some(ttl) = ttl {
                set.arg("PX")
                    .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
            }
            self.run(async |conn| set.query_async::<()>(conn).await)
                .await
        })
    }

    fn lease<'a>(&'a self, key: &'a str, owner: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = self.lease_key(key);
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            let taken: i64 = self
                .run(async |conn| {
                    Script::new(LEASE)
                        .key(&key)
                        .arg(owner)
                        .arg(ms)
                        .invoke_async(conn)
                        .await
                })
                .await?;
            Ok(taken == 1)
        })
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let key = self.lease_key(key);
            self.run(async |conn| {
                Script::new(RELEASE)
                    .key(&key)
                    .arg(owner)
                    .invoke_async::<i64>(conn)
                    .await
            })
            .await?;
            Ok(())
        })
    }

    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let key = self.token_key(key);
            let deleted: i64 = self
                .run(async |conn| {
                    Script::new(DELETE_IF)
                        .key(&key)
                        .arg(&fingerprint[..])
                        .invoke_async(conn)
                        .await
                })
                .await?;
            Ok(deleted == 1)
        })
    }

    fn op_timeout(&self) -> Duration {
        self.timeout
    }

    fn now(&self) -> SystemTime {
        #[cfg(test)]
        return self.skewed_now();
        #[cfg(not(test))]
        SystemTime::now()
    }
}

#[cfg(test)]
impl RedisStore {
    /// The system clock moved by the skew of [`skewed`](Self::skewed).
    fn skewed_now(&self) -> SystemTime {
        let skew = Duration::from_millis(self.skew_ms.unsigned_abs());
        let now = SystemTime::now();
        if self.skew_ms >= 0 {
            now + skew
        } else {
            now - skew
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let connection = match &self.connection {
            // The URL may carry a password: show neither.
            Connection::Lazy { target, .. } => match &**target {
                #[cfg(feature = "redis-tls")]
                Target::Node(Node { tls: Some(_), .. }) => "rediss url",
                Target::Node(_) => "url",
                #[cfg(feature = "redis-cluster")]
                Target::Cluster(_) => "cluster urls",
            },
            Connection::Theirs(_) => "user's connection",
        };
        f.debug_struct("RedisStore")
            .field("connection", &connection)
            .field("prefix", &self.prefix)
            .field("op_timeout", &self.timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neither_debug_nor_errors_show_the_url_or_its_password() {
        let store = RedisStore::new("redis://user:hunter2@redis.internal:6379/").unwrap();
        let debug = format!("{store:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("redis.internal"),
            "{debug}"
        );
        assert!(
            debug.starts_with("RedisStore {") && debug.contains("connection: \"url\""),
            "{debug}"
        );
        let error = RedisStore::new("redis://user:hunter2@[bad/").unwrap_err();
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    /// A failure to reach Redis keeps its cause; a reply from Redis is
    /// reduced to its code and kind, since its message may quote a value.
    #[test]
    fn a_transport_error_keeps_its_cause_and_a_reply_only_its_kind() {
        use std::error::Error as _;
        let io = error(std::io::Error::other("link flapped").into());
        assert!(
            io.source()
                .is_some_and(|s| s.to_string().contains("link flapped")),
            "{io}"
        );
        // What `run` and `error` lean on: redis-rs files a timeout, a
        // refusal and a dropped connection under I/O.
        use std::io::ErrorKind::{BrokenPipe, ConnectionRefused, ConnectionReset, TimedOut};
        for kind in [TimedOut, ConnectionRefused, BrokenPipe, ConnectionReset] {
            let cause = redis::RedisError::from(std::io::Error::from(kind));
            assert!(cause.is_io_error(), "{kind:?}");
            assert!(error(cause).source().is_some(), "{kind:?}");
        }
        let reply = error(redis::RedisError::from((
            redis::ErrorKind::Parse,
            "unexpected reply",
            "token-abc".to_owned(),
        )));
        assert!(
            !format!("{reply} {reply:?}").contains("token-abc"),
            "{reply:?}"
        );
    }

    /// What Redis Cluster hashes of a key: its first non-empty `{...}`.
    fn hash_tag(key: &str) -> &str {
        let Some(open) = key.find('{') else {
            return key;
        };
        match key[open + 1..].find('}') {
            Some(0) | None => key,
            Some(len) => &key[open + 1..open + 1 + len],
        }
    }

    #[test]
    fn a_token_and_its_lease_hash_to_one_slot_whatever_the_prefix() {
        let hash = "0a1b".repeat(16);
        for prefix in ["tower-bearer:", "", "orders:", "}{", "{app}:", "x{"] {
            let store = RedisStore::new("redis://127.0.0.1:1/")
                .unwrap()
                .prefix(prefix);
            let (token, lease) = (store.token_key(&hash), store.lease_key(&hash));
            assert!(token.starts_with(prefix) && lease.starts_with(&token));
            assert_ne!(hash_tag(&token), token, "{token} has a hash tag");
            assert_eq!(hash_tag(&token), hash_tag(&lease), "{prefix:?}");
        }
        let store = RedisStore::new("redis://127.0.0.1:1/").unwrap();
        assert_eq!(
            hash_tag(&store.token_key(&hash)),
            hash,
            "one slot per token"
        );
    }

    #[cfg(feature = "seal")]
    #[test]
    fn a_sealed_store_redacts_its_key() {
        let store = RedisStore::new("redis://127.0.0.1:1/").unwrap();
        let sealed = super::super::Sealed::new(store, super::super::SealKey::new([42; 32]));
        let debug = format!("{sealed:?}");
        assert!(
            debug.contains("<redacted>") && !debug.contains("42"),
            "{debug}"
        );
        let key = super::super::SealKey::new([42; 32]);
        assert_eq!(format!("{key:?}"), "SealKey(<redacted>)");
    }
}
