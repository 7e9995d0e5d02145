//! A fleet sharing its tokens through Redis costs the identity provider what
//! one process costs.
//!
//! The example starts the examples' mock backend (2-second tokens), a local
//! `redis-server`, and two fleets of separate OS processes (this example run
//! again), each process with its own `TokenCache` of `ClientCredentials`
//! behind `BearerAuthLayer`. One fleet shares its tokens through a
//! `RedisStore`, the other does not; each sends requests for a few seconds
//! against a backend of its own, and the example prints how many tokens
//! each backend issued.
//!
//! ```text
//! cargo run --example fleet --features redis
//! FLEET_PROCESSES=16 FLEET_SECONDS=10 cargo run --example fleet --features redis
//! ```
//!
//! It needs `redis-server` on `PATH` (`apt-get install redis-server`), or
//! its path in `REDIS_SERVER`.

#[path = "support/fleet.rs"]
mod fleet;
#[path = "support/redis_server.rs"]
mod redis_server;
#[path = "support/schedule.rs"]
mod schedule;
mod support;

use std::process::Command;
use std::time::Duration;

use tower::BoxError;

use fleet::Member;
use redis_server::RedisServer;
use support::Backend;

const TOKEN_LIFETIME: Duration = Duration::from_secs(2);
const CLIENT_ID: &str = "demo-client";
const CLIENT_SECRET: &str = "demo-secret";

fn main() -> Result<(), BoxError> {
    // A member of a fleet, started by the parent below.
    if let Some(member) = Member::from_env() {
        return fleet::run_member(member?);
    }

    let processes: usize = env_or("FLEET_PROCESSES", 4)?;
    let seconds: f64 = env_or("FLEET_SECONDS", 6.0)?;
    // The backends serve on this runtime's threads while the main thread
    // drives the fleets.
    let runtime = tokio::runtime::Runtime::new()?;
    let start_backend = || {
        runtime.block_on(async {
            Ok::<_, BoxError>(
                Backend::start(TOKEN_LIFETIME)
                    .await?
                    .require_client(CLIENT_ID, CLIENT_SECRET),
            )
        })
    };
    let (shared_backend, alone_backend) = (start_backend()?, start_backend()?);
    let redis = RedisServer::start()?;
    println!(
        "{processes} processes per fleet, {seconds} s, tokens of {TOKEN_LIFETIME:?}, redis-server at {}",
        redis.url()
    );

    let member = |backend: &Backend, store| Member {
        token_url: backend.token_url().to_string(),
        protected_url: backend.protected_url().to_string(),
        client_id: CLIENT_ID.to_owned(),
        client_secret: CLIENT_SECRET.to_owned(),
        store,
        seconds,
        pace: Duration::from_millis(50),
    };
    let this_example = || Command::new(std::env::current_exe().expect("the example's path"));
    let store = Some((redis.url(), "fleet-example".to_owned()));
    let (totals, elapsed) = fleet::run_side_by_side(
        &[
            (processes, &member(&shared_backend, store)),
            (processes, &member(&alone_backend, None)),
        ],
        this_example,
    )?;
    let (shared, alone) = (&totals[0], &totals[1]);

    // A process serves a 2 s token, counted in whole seconds, for 0.8 s.
    let served = schedule::refresh_interval(TOKEN_LIFETIME.as_secs());
    let one_process = (elapsed.as_secs_f64() / served.as_secs_f64()).ceil() as u64;
    let (shared_tokens, alone_tokens) = (shared_backend.fetch_count(), alone_backend.fetch_count());
    println!(
        "one process alone would cost about {one_process} tokens in {:.1} s",
        elapsed.as_secs_f64()
    );
    for (name, tokens, totals) in [
        ("sharing through Redis", shared_tokens, shared),
        ("each on its own", alone_tokens, alone),
    ] {
        println!(
            "{name:>22}: {tokens:>3} tokens issued, {} requests ok, {} not ok, first token after {:.1} ms (median)",
            totals.ok,
            totals.bad(),
            totals.first_token_median().as_secs_f64() * 1e3,
        );
    }

    if shared.bad() + alone.bad() > 0 {
        return Err(format!(
            "requests failed: {:?} {:?}",
            shared.unexpected, alone.unexpected
        )
        .into());
    }
    // A few more than one process, for the start and the end of the run.
    if shared_tokens > one_process + 2 {
        return Err(format!(
            "the shared fleet cost {shared_tokens} tokens, one process {one_process}"
        )
        .into());
    }
    Ok(())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> Result<T, BoxError> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("{name}={value:?} is not a number").into()),
        Err(_) => Ok(default),
    }
}
