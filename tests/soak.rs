//! A bounded soak: `ClientCredentials` behind `BearerAuthLayer` over
//! hyper-util's client, against the real OAuth2 server of
//! `tests/fixtures/oauth2-server`, with 2 s tokens, injected token-endpoint
//! failures (500 and 503) and injected 401s (tokens revoked at their first
//! use).
//!
//! The issuer rounds like real ones (`iat` floored, `exp = iat + lifetime`),
//! and the resource has no clock leeway.
//!
//! Real time, unavoidably: the server checks `exp` against its own clock.
//! 20 s by default; longer with `SOAK_SECONDS`, e.g.
//! `SOAK_SECONDS=300 cargo test --all-features --test soak -- --nocapture`.
//! `SOAK_SEED` seeds the server's faults (default 1), `SOAK_RPS` sets the
//! request rate (default 100 a second, over all tasks), and
//! `SOAK_EXP_ROUNDING=ceil` gives the client the benefit of the issuer's
//! rounding (for diagnosis only: real issuers floor).
#![cfg(feature = "oauth2")]

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{BoxError, ServiceBuilder};
use tower_bearer::{BearerAuthLayer, TokenError, TokenErrorKind};

mod common;
use common::env_or;
use common::idp::{get, http_client, MockIdp};
use common::schedule::refresh_interval;

/// Seconds; served for 0.8 s of it (see `refresh_interval`).
const TOKEN_LIFETIME: u64 = 2;
const TOKEN_FAILURE_RATE: f64 = 0.15;
const REVOKE_RATE: f64 = 0.1;
/// Concurrent callers, each sending one request at a time.
const TASKS: u32 = 4;
/// Far above a loopback request, so that only a hang reaches it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Token requests allowed beyond the bound, for the cold start and the
/// boundaries of the run.
const SLACK: u64 = 2;

/// What the requests met.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    /// 401 for a token the server revoked on purpose.
    injected_401: u64,
    /// The cache's own errors, by kind: fetches that failed (the injected
    /// 5xx) and the backoff after them.
    token_errors: BTreeMap<String, u64>,
    /// 401 for a token the server did not revoke: it should have accepted it.
    rejected: u64,
    other_status: u64,
    other_errors: u64,
    timeouts: u64,
    /// The first few unexpected outcomes, for the failure message.
    unexpected: Vec<String>,
}

impl Tally {
    fn requests(&self) -> u64 {
        self.ok
            + self.injected_401
            + self.token_errors.values().sum::<u64>()
            + self.rejected
            + self.other_status
            + self.other_errors
            + self.timeouts
    }

    fn note(&mut self, what: String) {
        if self.unexpected.len() < 10 {
            self.unexpected.push(what);
        }
    }

    fn add(&mut self, other: Tally) {
        self.ok += other.ok;
        self.injected_401 += other.injected_401;
        for (kind, n) in other.token_errors {
            *self.token_errors.entry(kind).or_default() += n;
        }
        self.rejected += other.rejected;
        self.other_status += other.other_status;
        self.other_errors += other.other_errors;
        self.timeouts += other.timeouts;
        for what in other.unexpected {
            self.note(what);
        }
    }

    fn record(&mut self, outcome: Result<Result<(StatusCode, Value), BoxError>, ()>) {
        match outcome {
            Err(()) => self.timeouts += 1,
            Ok(Ok((StatusCode::OK, _))) => self.ok += 1,
            Ok(Ok((StatusCode::UNAUTHORIZED, body))) if body["injected"] == true => {
                self.injected_401 += 1
            }
            Ok(Ok((StatusCode::UNAUTHORIZED, body))) => {
                self.rejected += 1;
                self.note(format!("401: {body}"));
            }
            Ok(Ok((status, body))) => {
                self.other_status += 1;
                self.note(format!("{status}: {body}"));
            }
            Ok(Err(error)) => match error.downcast_ref::<TokenError>() {
                Some(error) => {
                    *self
                        .token_errors
                        .entry(format!("{:?}", error.kind()))
                        .or_default() += 1
                }
                None => {
                    self.other_errors += 1;
                    self.note(format!("error: {error}"));
                }
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_short_tokens_and_injected_faults() {
    let seconds: u64 = env_or("SOAK_SECONDS", 20);
    let seed: u32 = env_or("SOAK_SEED", 1);
    let rps: u32 = env_or("SOAK_RPS", 100);
    let rounding = std::env::var("SOAK_EXP_ROUNDING").unwrap_or_else(|_| "floor".to_owned());
    let idp = MockIdp::start_with(
        TOKEN_LIFETIME,
        &[
            ("EXP_ROUNDING", rounding.clone()),
            ("TOKEN_FAILURE_RATE", TOKEN_FAILURE_RATE.to_string()),
            ("REVOKE_RATE", REVOKE_RATE.to_string()),
            ("FAULT_SEED", seed.to_string()),
        ],
    );
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(idp.source()))
        .service(http_client());

    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let period = Duration::from_secs(1) * TASKS / rps.max(1);
    let mut callers = JoinSet::new();
    for _ in 0..TASKS {
        let mut client = client.clone();
        let url = idp.protected_url.clone();
        callers.spawn(async move {
            let mut tally = Tally::default();
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
            while ticks.tick().await < end {
                let outcome = tokio::time::timeout(REQUEST_TIMEOUT, get(&mut client, &url))
                    .await
                    .map_err(|_| ());
                tally.record(outcome);
            }
            tally
        });
    }
    let mut tally = Tally::default();
    while let Some(caller) = callers.join_next().await {
        tally.add(caller.unwrap());
    }
    let elapsed = start.elapsed();

    let stats = idp.stats().await;
    let count = |name: &str| stats[name].as_u64().unwrap();
    let token_requests = count("token_requests");
    let failures = count("token_failures_injected");
    let revocations = count("revocations_injected");
    // One token request per refresh interval, one more for each injected
    // fault.
    let intervals =
        (elapsed.as_secs_f64() / refresh_interval(TOKEN_LIFETIME).as_secs_f64()).ceil() as u64;
    let bound = intervals + failures + revocations + SLACK;
    println!(
        "soak: {:.1} s, seed {seed}, exp rounding {rounding}, {} requests ({} ok, {} injected 401, token errors {:?}, \
         {} rejected, {} other statuses, {} other errors, {} timeouts); \
         {token_requests} token requests (bound {bound}: {intervals} intervals + {failures} \
         injected failures + {revocations} revocations + {SLACK}), {} tokens issued; \
         server: {} ok, {} revoked, {} rejected",
        elapsed.as_secs_f64(),
        tally.requests(),
        tally.ok,
        tally.injected_401,
        tally.token_errors,
        tally.rejected,
        tally.other_status,
        tally.other_errors,
        tally.timeouts,
        count("tokens_issued"),
        count("protected_ok"),
        count("protected_revoked"),
        count("protected_rejected"),
    );

    // Every broken promise, not only the first.
    let mut broken = Vec::new();
    if tally.timeouts > 0 {
        broken.push(format!("{} requests hung", tally.timeouts));
    }
    if tally.rejected > 0 || count("protected_rejected") > 0 {
        broken.push(format!(
            "the resource rejected {} requests it should have accepted: {}",
            count("protected_rejected"),
            stats["rejections"]
        ));
    }
    if tally.other_status + tally.other_errors > 0 {
        broken.push(format!("unexpected outcomes: {:?}", tally.unexpected));
    }
    let fault_kinds = [
        format!("{:?}", TokenErrorKind::Fetch),
        format!("{:?}", TokenErrorKind::BackingOff),
    ];
    if tally.token_errors.keys().any(|k| !fault_kinds.contains(k))
        || (failures == 0 && !tally.token_errors.is_empty())
    {
        broken.push(format!(
            "token errors the injected faults do not explain: {:?}",
            tally.token_errors
        ));
    }
    if token_requests > bound {
        broken.push(format!("{token_requests} token requests, bound {bound}"));
    }
    if tally.ok == 0 || count("tokens_issued") < elapsed.as_secs() / TOKEN_LIFETIME {
        broken.push(format!("the soak did not run: {tally:?}, {stats}"));
    }
    assert!(broken.is_empty(), "{}", broken.join("\n"));
}
