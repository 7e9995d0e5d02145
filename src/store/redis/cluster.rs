//! Redis Cluster (feature `redis-cluster`): a [`RedisStore`] over redis-rs's
//! `cluster-async` connection, which routes each command to the primary of
//! its key's slot and follows `MOVED` and `ASK` redirections while slots
//! move or fail over.

use std::sync::Arc;
use std::time::Duration;

use redis::cluster::ClusterClientBuilder;
use redis::ConnectionInfo;

use super::{parse, Connection, RedisStore, Share, Target};
use crate::store::Error;

impl RedisStore {
    /// A store on the Redis Cluster whose seed nodes are `urls`
    /// (`redis://[<user>][:<password>@]<host>:<port>`; any of its nodes, or
    /// all: the client learns the others from them). Like
    /// [`new`](Self::new), it only parses the URLs and connects on first
    /// use. Feature `redis-cluster`.
    ///
    /// The token and its lease share a hash tag, so every command and
    /// script touches one slot. While a slot migrates or its primary fails
    /// over, redis-rs follows the cluster's redirections and retries; the
    /// cache gives up on any operation after
    /// [`op_timeout`](Self::op_timeout) and fetches alone, as with a single
    /// Redis that is down: no request fails for it.
    ///
    /// Connecting (the slot map from a seed, then a connection per node)
    /// takes a few round trips: with many processes starting at once, an
    /// op timeout of about a second lets their first refresh share rather
    /// than fall back (see the repository's `docs/fleet.md`).
    ///
    /// TLS to a cluster is not made by this constructor: use
    /// [`from_connection`](Self::from_connection) with a redis-rs
    /// `ClusterClient` built with its `tls-rustls` features (which then take
    /// rustls's process-level crypto provider).
    ///
    /// ```
    /// use tower_bearer::store::RedisStore;
    ///
    /// # fn main() -> Result<(), tower_bearer::store::Error> {
    /// let store = RedisStore::cluster([
    ///     "redis://fleet:password@10.0.0.1:6379",
    ///     "redis://fleet:password@10.0.0.2:6379",
    /// ])?
    /// .prefix("orders:");
    /// # let _ = store;
    /// # Ok(())
    /// # }
    /// ```
    #[cfg_attr(docsrs, doc(cfg(feature = "redis-cluster")))]
    pub fn cluster<I>(urls: I) -> Result<Self, Error>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let mut seeds = Vec::new();
        for url in urls {
            let (info, tls) = parse(url.as_ref())?;
            if tls {
                return Err(Error::new(
                    "TLS to a cluster: use RedisStore::from_connection (see its docs)",
                ));
            }
            seeds.push(info);
        }
        if seeds.is_empty() {
            return Err(Error::new("a cluster needs at least one seed node"));
        }
        Ok(Self::with(Connection::Lazy {
            target: Arc::new(Target::Cluster(seeds)),
            current: Arc::default(),
        }))
    }
}

/// A cluster connection: the slot map from the seeds, then a multiplexed
/// connection per node, each with `timeout` as connect and response
/// timeouts.
pub(super) async fn connect(
    seeds: &[ConnectionInfo],
    timeout: Duration,
) -> redis::RedisResult<Arc<dyn Share>> {
    let client = ClusterClientBuilder::new(seeds.to_vec())
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .build()?;
    Ok(Arc::new(client.get_async_connection().await?))
}
