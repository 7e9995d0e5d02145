//! The fleet store on a real Redis Cluster: three primaries and three
//! replicas, `redis-server` processes on loopback joined by
//! `redis-cli --cluster create`. The slot of the shared token migrates
//! (`ASK`, then `MOVED`) and its primary is killed (a failover): no request
//! fails, a replica that cannot reach the store fetches alone after its op
//! timeout, and sharing resumes once a replica is promoted.
#![cfg(feature = "redis-cluster")]

use std::time::Duration;

use tower_bearer::store::RedisStore;

mod redis_common;
#[path = "../examples/support/redis_server.rs"]
mod redis_server;

use redis_common::{acl_setuser, Idp};
use redis_server::{create_cluster, RedisServer};

/// A node of `CLUSTER NODES`: its id, port, whether it is a primary, and
/// the slots it serves.
struct Node {
    id: String,
    port: u16,
    primary: bool,
    slots: Vec<(u16, u16)>,
}

fn nodes(any: &RedisServer) -> Vec<Node> {
    let text = any.cli(&["CLUSTER", "NODES"]).unwrap();
    text.lines()
        .filter(|line| !line.contains("fail") && !line.contains("handshake"))
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = fields[1].split(['@', ':']).nth(1).unwrap().parse().unwrap();
            let slots = fields[8..]
                .iter()
                .filter(|range| !range.starts_with('['))
                .map(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    (a.parse().unwrap(), b.parse().unwrap())
                })
                .collect();
            Node {
                id: fields[0].to_owned(),
                port,
                primary: fields[2].contains("master"),
                slots,
            }
        })
        .collect()
}

fn owner(any: &RedisServer, slot: u16) -> Node {
    nodes(any)
        .into_iter()
        .find(|n| n.primary && n.slots.iter().any(|&(a, b)| (a..=b).contains(&slot)))
        .expect("a primary serves the slot")
}

fn server(servers: &[RedisServer], port: u16) -> &RedisServer {
    servers.iter().find(|s| s.port() == port).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_a_migrating_slot_and_a_failover_and_no_request_fails() {
    let dir = std::env::temp_dir().join(format!("tower-bearer-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut servers: Vec<RedisServer> = (0..6)
        .map(|_| RedisServer::start_cluster_node(&dir).unwrap())
        .collect();
    create_cluster(&servers.iter().collect::<Vec<_>>(), 1).unwrap();
    // Everything below runs as an ACL user with the rights docs/store.md
    // lists for a cluster (ACLs are per node).
    for node in &servers {
        // What a cluster client needs besides: the slot map, and `ASK`.
        let more = ["+cluster|slots", "+asking"];
        let setuser = acl_setuser("fleet", "cluster-pass", "tower-bearer:", &more);
        let setuser: Vec<&str> = setuser.iter().map(String::as_str).collect();
        assert_eq!(node.cli(&setuser).unwrap().trim(), "OK");
    }
    let seeds: Vec<String> = servers
        .iter()
        .map(|s| s.url().replace("redis://", "redis://fleet:cluster-pass@"))
        .collect();

    // One store (one cluster connection) that replicas clone, so that its
    // slot map is stale after the migration: redis-rs must follow ASK and
    // MOVED.
    let store = RedisStore::cluster(&seeds)
        .unwrap()
        .op_timeout(Duration::from_millis(500));
    let idp = Idp::default();
    let token = idp.cache(store.clone()).token().await.unwrap();
    let b = idp.cache(store.clone());
    assert_eq!(b.token().await.unwrap().secret(), token.secret());
    assert_eq!(idp.fetches(), 1, "shared through the cluster");
    assert_eq!(b.stats().store.hits, 1);

    // The token and lease keys hash to one slot.
    let key = servers
        .iter()
        .flat_map(|s| {
            s.cli(&["KEYS", "*"])
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .find(|k| !k.is_empty())
        .expect("the stored token");
    let slot_of = |k: &str| -> u16 {
        servers[0]
            .cli(&["CLUSTER", "KEYSLOT", k])
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let slot = slot_of(&key);
    assert_eq!(slot_of(&format!("{key}:lease")), slot);

    // Migrate the slot to another primary: the key moves first (ASK).
    let from = owner(&servers[0], slot);
    let to = nodes(&servers[0])
        .into_iter()
        .find(|n| n.primary && n.id != from.id)
        .unwrap();
    let (src, dst) = (server(&servers, from.port), server(&servers, to.port));
    let slot_arg = slot.to_string();
    dst.cli(&["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from.id])
        .unwrap();
    src.cli(&["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to.id])
        .unwrap();
    let port = to.port.to_string();
    let moved = src
        .cli(&["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS", &key])
        .unwrap();
    assert_eq!(moved.trim(), "OK");
    let asked = idp.cache(store.clone());
    assert_eq!(
        asked.token().await.unwrap().secret(),
        token.secret(),
        "followed ASK"
    );
    assert_eq!(asked.stats().store.hits, 1, "{:?}", asked.stats().store);

    // Then the slot itself (MOVED for the stale map).
    for node in &servers {
        node.cli(&["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to.id])
            .unwrap();
    }
    let redirected = idp.cache(store.clone());
    assert_eq!(
        redirected.token().await.unwrap().secret(),
        token.secret(),
        "followed MOVED"
    );
    assert_eq!(redirected.stats().store.hits, 1);
    assert_eq!(idp.fetches(), 1);

    // Kill the primary that now owns the key: a refresh falls back after
    // its op timeout, and gets a token.
    let killed = servers.iter().position(|s| s.port() == to.port).unwrap();
    servers[killed].kill();
    let during = idp.cache(store.clone());
    let own = during.token().await.unwrap();
    let stats = during.stats().store;
    assert_eq!(stats.fallbacks, 1, "{stats:?}");
    assert!(stats.errors + stats.timeouts >= 1, "{stats:?}");
    assert_ne!(own.secret(), token.secret(), "fetched alone");

    // The key's replica takes over; sharing resumes (the replica had the
    // token by replication).
    let survivor = servers.iter().find(|s| s.ping()).unwrap();
    let mut resumed = false;
    for _ in 0..100 {
        if survivor
            .cli(&["CLUSTER", "INFO"])
            .unwrap()
            .contains("cluster_state:ok")
        {
            let after = idp.cache(store.clone());
            after.token().await.unwrap();
            if after.stats().store.hits == 1 {
                resumed = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "sharing resumed after the failover");
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
}
