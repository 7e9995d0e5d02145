//! The fleet costs the identity provider what one process costs.
//!
//! N separate OS processes (this test binary run again as `fleet_member`),
//! each with its own `TokenCache` of `ClientCredentials` behind
//! `BearerAuthLayer` over hyper-util's client, send requests to the
//! protected resource of the real OAuth2 server of
//! `tests/fixtures/oauth2-server`, with 2 s tokens whose `exp` the issuer
//! rounds down like real ones. One fleet shares its tokens through a real
//! `redis-server`; a second fleet, in the same run against a second server,
//! does not. The harness is `examples/support/fleet.rs`, shared with
//! `examples/fleet.rs`.
//!
//! Real time, unavoidably: the server checks `exp` against its own clock.
//! `FLEET_PROCESSES` (default 8) and `FLEET_SECONDS` (default 20) size it:
//! `FLEET_PROCESSES=64 cargo test --all-features --test fleet -- --nocapture`.
//!
//! `fleet_report` (ignored) is the benchmark of `docs/fleet.md`: token
//! requests per token lifetime for 1, 4, 16 and 64 processes with and without
//! the store, and the cold start through Redis and through the identity
//! provider. `scripts/fleet_report.sh` runs it.
#![cfg(all(feature = "redis", feature = "oauth2"))]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tower::BoxError;

mod common;
use common::env_or;
use common::idp::{MockIdp, CLIENT_ID, CLIENT_SECRET};
use common::schedule::refresh_interval;

#[path = "../examples/support/fleet.rs"]
mod fleet;
#[path = "../examples/support/redis_server.rs"]
mod redis_server;

use fleet::{Fleet, Member, Totals};
use redis_server::RedisServer;

/// Seconds; served for 0.8 s of it (see `refresh_interval`).
const TOKEN_LIFETIME: u64 = 2;
/// Token requests allowed beyond one per refresh interval, for the cold
/// start and the boundaries of the run (as in `tests/soak.rs`).
const SLACK: u64 = 2;
/// One more for the fleet sharing through Redis, for its cold start: every
/// member connects to Redis at once, against a server whose first token is
/// slow, and a member whose first store call outlasts the op timeout on a
/// loaded machine fetches alone, by design. Seen since the lease's winner
/// reads the store again: 25 token requests in each of 12 runs of 20 s, the
/// bound being 28 or 29 with this.
const COLD_START_RACE: u64 = 1;
/// Every member sends one request at least this often...
const FASTEST_PACE: Duration = Duration::from_millis(40);
/// ...and a fleet about this many a second at most, so that 64 processes
/// on a small machine stay paced by their timers, not by the CPU.
const FLEET_RATE: u64 = 200;
/// The most processes the two fleets run side by side (two fleets of 8 on
/// 2 cores); larger fleets run one after the other.
const SIDE_BY_SIDE: usize = 16;

/// The child: runs as a fleet member when the parent says so, and does
/// nothing otherwise.
#[test]
fn fleet_member() -> Result<(), BoxError> {
    match Member::from_env() {
        Some(member) => fleet::run_member(member?),
        None => Ok(()),
    }
}

/// This test binary, as a fleet member.
fn member_command() -> Command {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut command = Command::new(exe);
    command.args(["--exact", "fleet_member", "--nocapture", "--test-threads=1"]);
    command
}

/// A member of a fleet of `n` against `idp`, sharing through `store` if any.
fn member(idp: &MockIdp, n: usize, seconds: f64, store: Option<(String, String)>) -> Member {
    let pace = FASTEST_PACE.max(Duration::from_secs(1) * n as u32 / FLEET_RATE as u32);
    Member {
        token_url: idp.token_url.clone(),
        protected_url: idp.protected_url.clone(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        store,
        seconds,
        pace,
    }
}

/// The Redis the sharing fleet uses, and its URL: one `redis-server`, or
/// with `FLEET_REDIS=cluster` (feature `redis-cluster`) a Redis Cluster of
/// three primaries on loopback, its nodes' URLs comma-separated.
fn shared_redis() -> Result<(Vec<RedisServer>, String), BoxError> {
    if std::env::var("FLEET_REDIS").as_deref() != Ok("cluster") {
        let redis = RedisServer::start()?;
        let url = redis.url();
        return Ok((vec![redis], url));
    }
    #[cfg(feature = "redis-cluster")]
    {
        let dir = std::env::temp_dir().join(format!("tower-bearer-fleet-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let nodes = (0..3)
            .map(|_| RedisServer::start_cluster_node(&dir))
            .collect::<Result<Vec<_>, _>>()?;
        redis_server::create_cluster(&nodes.iter().collect::<Vec<_>>(), 0)?;
        let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
        Ok((nodes, urls.join(",")))
    }
    #[cfg(not(feature = "redis-cluster"))]
    Err("FLEET_REDIS=cluster needs the feature `redis-cluster`".into())
}

/// An identity provider with 2 s tokens whose `exp` is floored.
fn idp() -> MockIdp {
    MockIdp::start_with(TOKEN_LIFETIME, &[("EXP_ROUNDING", "floor".to_owned())])
}

/// One token request per refresh interval (0.8 s for 2 s tokens), and the
/// slack.
fn one_process_bound(elapsed: Duration) -> u64 {
    (elapsed.as_secs_f64() / refresh_interval(TOKEN_LIFETIME).as_secs_f64()).ceil() as u64 + SLACK
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The server's counter `name`.
fn count(stats: &Value, name: &str) -> u64 {
    stats[name]
        .as_u64()
        .unwrap_or_else(|| panic!("no {name} in {stats}"))
}

#[test]
fn a_fleet_sharing_through_redis_costs_one_process() -> Result<(), BoxError> {
    let n: usize = env_or("FLEET_PROCESSES", 8);
    let seconds: f64 = env_or("FLEET_SECONDS", 20.0);
    let (_redis, url) = shared_redis()?;
    // Two servers, so that the fleets run at once and count apart.
    let (shared_idp, alone_idp) = (idp(), idp());
    let store = Some((url, "fleet-test".to_owned()));

    let shared_member = member(&shared_idp, n, seconds, store);
    let alone_member = member(&alone_idp, n, seconds, None);
    // Side by side while the machine can take both fleets at once; one
    // after the other beyond, so that a large fleet measures the store,
    // not a starved CPU.
    let fleets = [(n, &shared_member), (n, &alone_member)];
    let (totals, elapsed) = if 2 * n <= SIDE_BY_SIDE {
        let (totals, elapsed) = fleet::run_side_by_side(&fleets, member_command)?;
        (totals, [elapsed; 2])
    } else {
        let (mut shared, shared_elapsed) = fleet::run_side_by_side(&fleets[..1], member_command)?;
        let (alone, alone_elapsed) = fleet::run_side_by_side(&fleets[1..], member_command)?;
        shared.extend(alone);
        (shared, [shared_elapsed, alone_elapsed])
    };
    let (shared, alone) = (&totals[0], &totals[1]);

    let runtime = runtime();
    let shared_stats = runtime.block_on(shared_idp.stats());
    let alone_stats = runtime.block_on(alone_idp.stats());
    let shared_tokens = count(&shared_stats, "token_requests");
    let alone_tokens = count(&alone_stats, "token_requests");
    let bound = one_process_bound(elapsed[0]) + COLD_START_RACE;
    let alone_bound = one_process_bound(elapsed[1]);
    println!(
        "fleet of {n} for {:.1} s: with the store {shared_tokens} token requests \
         (one process's bound {bound}), {} ok, {} not ok, first token median {:?}; \
         without it {alone_tokens} token requests ({:.1}x), {} ok, {} not ok",
        elapsed[0].as_secs_f64(),
        shared.ok,
        shared.bad(),
        shared.first_token_median(),
        alone_tokens as f64 / shared_tokens.max(1) as f64,
        alone.ok,
        alone.bad(),
    );

    let expected = (n as f64 * seconds / alone_member.pace.as_secs_f64()) as u64;
    let mut broken = Vec::new();
    for (name, totals, stats) in [
        ("with the store", shared, &shared_stats),
        ("without it", alone, &alone_stats),
    ] {
        if totals.bad() > 0 {
            broken.push(format!(
                "{name}: {} rejected, {} other statuses, {} failed: {:?}",
                totals.rejected, totals.other_status, totals.failed, totals.unexpected
            ));
        }
        if count(stats, "protected_rejected") > 0 {
            broken.push(format!(
                "{name}: the resource rejected {}: {}",
                count(stats, "protected_rejected"),
                stats["rejections"]
            ));
        }
        // Every process sent requests through the whole run.
        if totals.ok < expected / 2 {
            broken.push(format!(
                "{name}: only {} requests succeeded, expected about {expected}",
                totals.ok
            ));
        }
    }
    if shared_tokens > bound {
        broken.push(format!(
            "the fleet with the store made {shared_tokens} token requests, one process's bound is {bound}"
        ));
    }
    if (alone_tokens as f64) <= n as f64 / 2.0 * alone_bound as f64 {
        broken.push(format!(
            "the fleet without the store made only {alone_tokens} token requests: \
             not about {n} processes' worth (bound {alone_bound} each); the comparison proves nothing"
        ));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
    Ok(())
}

/// One row of the report.
struct Row {
    processes: usize,
    shared_per_lifetime: f64,
    alone_per_lifetime: f64,
    shared_first: Totals,
    alone_first: Totals,
}

/// Runs a fleet of `n` against `idp` for `seconds`, and returns its totals
/// and the server's token requests per token lifetime during the run. With
/// a store, the parent puts a token in it first (counted), so that the
/// members' first tokens come from Redis.
fn measure(
    idp: &MockIdp,
    n: usize,
    seconds: f64,
    store: Option<(String, String)>,
) -> Result<(Totals, f64), BoxError> {
    let member = member(idp, n, seconds, store);
    let mut fleet = Fleet::spawn(n, &member, member_command)?;
    // Multi-threaded: the seed's write to the store and the release of its
    // lease run in the background, after `token()` returns.
    let runtime = tokio::runtime::Runtime::new()?;
    let before = count(&runtime.block_on(idp.stats()), "token_requests");
    let start = Instant::now();
    if member.store.is_some() {
        runtime.block_on(member.cache()?.token())?;
        // Time for that write to land (a loopback round trip), so that the
        // members read the token rather than wait on the seed's lease.
        std::thread::sleep(Duration::from_millis(100));
    }
    fleet.go()?;
    let totals = Totals::of(&fleet.reports(seconds)?);
    let elapsed = start.elapsed();
    let requests = count(&runtime.block_on(idp.stats()), "token_requests") - before;
    if totals.bad() > 0 {
        return Err(format!(
            "{n} processes: {} requests not ok: {:?}",
            totals.bad(),
            totals.unexpected
        )
        .into());
    }
    let lifetimes = elapsed.as_secs_f64() / TOKEN_LIFETIME as f64;
    Ok((totals, requests as f64 / lifetimes))
}

/// The benchmark of `docs/fleet.md`: `scripts/fleet_report.sh`.
#[test]
#[ignore = "a benchmark of a few minutes: scripts/fleet_report.sh"]
fn fleet_report() -> Result<(), BoxError> {
    let sizes: Vec<usize> = std::env::var("FLEET_REPORT_SIZES")
        .unwrap_or_else(|_| "1,4,16,64".to_owned())
        .split(',')
        .map(|n| n.trim().parse())
        .collect::<Result<_, _>>()?;
    let seconds: f64 = env_or("FLEET_REPORT_SECONDS", 10.0);
    let redis = RedisServer::start()?;
    let (shared_idp, alone_idp) = (idp(), idp());
    // A server's first token costs it a warm-up that no later one does.
    let runtime = runtime();
    for idp in [&shared_idp, &alone_idp] {
        runtime.block_on(tower_bearer::TokenCache::new(idp.source()).token())?;
    }
    let mut rows = Vec::new();
    for (run, &n) in sizes.iter().enumerate() {
        let store = Some((redis.url(), format!("fleet-report-{run}")));
        let (shared_first, shared_per_lifetime) = measure(&shared_idp, n, seconds, store)?;
        let (alone_first, alone_per_lifetime) = measure(&alone_idp, n, seconds, None)?;
        println!(
            "{n} processes: {shared_per_lifetime:.2} token requests per lifetime sharing, \
             {alone_per_lifetime:.2} each on its own"
        );
        rows.push(Row {
            processes: n,
            shared_per_lifetime,
            alone_per_lifetime,
            shared_first,
            alone_first,
        });
    }

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rows: Vec<Value> = rows
        .iter()
        .map(|row| {
            json!({
                "processes": row.processes,
                "shared_per_lifetime": row.shared_per_lifetime,
                "alone_per_lifetime": row.alone_per_lifetime,
                "redis_first_ms": [ms(row.shared_first.first_token_median()), ms(row.shared_first.first_token_max())],
                "idp_first_ms": [ms(row.alone_first.first_token_median()), ms(row.alone_first.first_token_max())],
            })
        })
        .collect();
    let report = json!({ "seconds": seconds, "token_lifetime": TOKEN_LIFETIME, "rows": rows });
    let path = std::env::var("FLEET_REPORT_JSON").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/target/fleet-report.json").to_owned()
    });
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)?;
    println!("{report:#}\nwritten to {path}; `python3 scripts/fleet_chart.py {path}` makes the table and the chart");
    Ok(())
}
