//! A fleet of client processes, for the fleet example, test and report.
//! Not part of the crate's API.
//!
//! Each member is a separate OS process (the calling binary run again, see
//! [`Fleet::spawn`]) with its own `TokenCache` of `ClientCredentials`,
//! behind `BearerAuthLayer` over hyper-util's client, and, when the fleet
//! shares tokens, a `RedisStore`. The parent passes a [`Member`] in the
//! environment; the child builds its client, says it is ready, waits for the
//! parent's go (a line on its stdin, so that every member starts at once
//! however long the others took to start), asks for its first token (timed:
//! the cold start), then sends one request every `pace` for `seconds` and
//! prints a [`Report`].
//!
//! The protocol is lines on the child's stdout that contain [`MARKER`], so
//! that the test harness's own output around them does not matter.

// The example and the tests each use only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_bearer::oauth2::ClientCredentials;
use tower_bearer::{BearerAuth, BearerAuthLayer, TokenCache};

/// Marks the protocol's lines on a child's stdout.
pub const MARKER: &str = "tower-bearer-fleet:";
/// The environment variable that carries a [`Member`] to a child.
pub const MEMBER_VAR: &str = "TOWER_BEARER_FLEET_MEMBER";
/// Far above a loopback request: only a hang reaches it.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the children may take to start, all together.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long after its `seconds` a child may take to report.
const REPORT_GRACE: Duration = Duration::from_secs(20);

/// What one member of a fleet does: the child's whole configuration. No
/// `Debug`: it holds the client secret.
#[derive(Clone)]
pub struct Member {
    pub token_url: String,
    pub protected_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// The Redis URL and key prefix of the shared store; `None`: no store,
    /// each process on its own.
    pub store: Option<(String, String)>,
    /// How long the member sends requests, from its first token.
    pub seconds: f64,
    /// One request every `pace`.
    pub pace: Duration,
}

impl Member {
    fn to_json(&self) -> String {
        json!({
            "token_url": self.token_url,
            "protected_url": self.protected_url,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "store": self.store.as_ref().map(|(url, prefix)| json!({"url": url, "prefix": prefix})),
            "seconds": self.seconds,
            "pace_ms": self.pace.as_secs_f64() * 1e3,
        })
        .to_string()
    }

    /// The member this process was started as, if it is a child.
    pub fn from_env() -> Option<Result<Self, BoxError>> {
        let text = std::env::var(MEMBER_VAR).ok()?;
        Some(Self::from_json(&text))
    }

    fn from_json(text: &str) -> Result<Self, BoxError> {
        let value: Value = serde_json::from_str(text)?;
        let string = |name: &str| {
            value[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("{MEMBER_VAR} has no string `{name}`"))
        };
        let number = |name: &str| {
            value[name]
                .as_f64()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .ok_or_else(|| format!("{MEMBER_VAR} has no number `{name}`"))
        };
        let store = match &value["store"] {
            Value::Null => None,
            store => Some((
                store["url"].as_str().ok_or("no store url")?.to_owned(),
                store["prefix"]
                    .as_str()
                    .ok_or("no store prefix")?
                    .to_owned(),
            )),
        };
        Ok(Self {
            token_url: string("token_url")?,
            protected_url: string("protected_url")?,
            client_id: string("client_id")?,
            client_secret: string("client_secret")?,
            store,
            seconds: number("seconds")?,
            pace: Duration::from_secs_f64(number("pace_ms")? / 1e3),
        })
    }

    /// This member's cache: `ClientCredentials`, and the Redis store when
    /// the fleet shares tokens.
    pub fn cache(&self) -> Result<TokenCache, BoxError> {
        let source = ClientCredentials::try_new(
            self.token_url.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
        )?;
        let cache = TokenCache::new(source);
        match &self.store {
            None => Ok(cache),
            Some((url, prefix)) => shared(cache, url, prefix),
        }
    }
}

/// `cache` sharing its tokens through the Redis at `url`, under `prefix`
/// (several URLs, comma-separated: the seed nodes of a Redis Cluster),
/// with the store's op timeout from `FLEET_OP_TIMEOUT_MS` if set.
#[cfg(feature = "redis")]
pub fn shared(cache: TokenCache, url: &str, prefix: &str) -> Result<TokenCache, BoxError> {
    let op_timeout =
        |store: tower_bearer::store::RedisStore| match std::env::var("FLEET_OP_TIMEOUT_MS") {
            Ok(ms) => Ok::<_, BoxError>(store.op_timeout(Duration::from_millis(ms.parse()?))),
            Err(_) => Ok(store),
        };
    #[cfg(feature = "redis-cluster")]
    if url.contains(',') {
        let store = tower_bearer::store::RedisStore::cluster(url.split(','))?.prefix(prefix);
        return Ok(cache.store(op_timeout(store)?));
    }
    let store = op_timeout(tower_bearer::store::RedisStore::new(url)?.prefix(prefix))?;
    Ok(cache.store(store))
}

/// Without the `redis` feature there is no store to share through.
#[cfg(not(feature = "redis"))]
pub fn shared(_: TokenCache, _: &str, _: &str) -> Result<TokenCache, BoxError> {
    Err("this build has no Redis store: enable the `redis` feature".into())
}

/// What one member saw.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// 200s.
    pub ok: u64,
    /// 401s: the resource rejected the token.
    pub rejected: u64,
    /// Any other status.
    pub other_status: u64,
    /// Requests that failed (no token, a transport error, a timeout),
    /// counting a failed first token.
    pub failed: u64,
    /// How long the first token took, from the go.
    pub first_token: Duration,
    /// The first few unexpected outcomes.
    pub unexpected: Vec<String>,
}

impl Report {
    fn note(&mut self, what: String) {
        if self.unexpected.len() < 5 {
            self.unexpected.push(what);
        }
    }

    fn to_json(&self) -> String {
        json!({
            "ok": self.ok,
            "rejected": self.rejected,
            "other_status": self.other_status,
            "failed": self.failed,
            "first_token_us": self.first_token.as_micros() as u64,
            "unexpected": self.unexpected,
        })
        .to_string()
    }

    fn from_json(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("{e}: {text}"))?;
        let count = |name: &str| value[name].as_u64().ok_or(format!("no `{name}` in {text}"));
        Ok(Self {
            ok: count("ok")?,
            rejected: count("rejected")?,
            other_status: count("other_status")?,
            failed: count("failed")?,
            first_token: Duration::from_micros(count("first_token_us")?),
            unexpected: value["unexpected"]
                .as_array()
                .map(|list| list.iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
        })
    }
}

// ===== the child =====

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Runs this process as the fleet member `member`: says it is ready, waits
/// for the go on stdin, runs, and prints its report.
pub fn run_member(member: Member) -> Result<(), BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let cache = member.cache()?;
    say("ready", "");
    let mut go = String::new();
    std::io::stdin().lock().read_line(&mut go)?;
    if go.trim() != "go" {
        return Err("the parent left before the go".into());
    }
    let report = runtime.block_on(members_run(&member, cache));
    say("report", &report.to_json());
    Ok(())
}

fn say(what: &str, payload: &str) {
    let mut stdout = std::io::stdout().lock();
    // A line of its own, whatever the test harness printed before.
    let _ = writeln!(stdout, "\n{MARKER}{what} {payload}");
    let _ = stdout.flush();
}

async fn members_run(member: &Member, cache: TokenCache) -> Report {
    let mut report = Report::default();
    let started = tokio::time::Instant::now();
    let first = cache.token().await;
    report.first_token = started.elapsed();
    if let Err(error) = first {
        report.failed += 1;
        report.note(format!("first token: {error}"));
    }

    let http: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache))
        .service(http);
    let end = started + Duration::from_secs_f64(member.seconds);
    let mut ticks = tokio::time::interval(member.pace);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    while ticks.tick().await < end {
        match tokio::time::timeout(REQUEST_TIMEOUT, get(&mut client, &member.protected_url)).await {
            Ok(Ok(StatusCode::OK)) => report.ok += 1,
            Ok(Ok(StatusCode::UNAUTHORIZED)) => {
                report.rejected += 1;
                report.note("401".to_owned());
            }
            Ok(Ok(status)) => {
                report.other_status += 1;
                report.note(status.to_string());
            }
            Ok(Err(error)) => {
                report.failed += 1;
                report.note(format!("error: {error}"));
            }
            Err(_) => {
                report.failed += 1;
                report.note(format!("no answer within {REQUEST_TIMEOUT:?}"));
            }
        }
    }
    report
}

async fn get(client: &mut BearerAuth<HttpClient>, url: &str) -> Result<StatusCode, BoxError> {
    let request = Request::get(url).body(Empty::new())?;
    let response = client.ready().await?.call(request).await?;
    let status = response.status();
    // Read the body so that the connection goes back to the pool.
    response.into_body().collect().await?;
    Ok(status)
}

// ===== the parent =====

/// A fleet of running children, killed on drop.
pub struct Fleet {
    children: Vec<Child>,
    stdins: Vec<ChildStdin>,
    lines: Receiver<(usize, String, String)>,
}

impl Fleet {
    /// Starts `n` children as `member`, each from `command()` (the calling
    /// binary, with the arguments that make it a child), and waits until
    /// every one is ready.
    pub fn spawn(
        n: usize,
        member: &Member,
        command: impl Fn() -> Command,
    ) -> Result<Self, BoxError> {
        let (sent, lines) = mpsc::channel();
        let mut fleet = Self {
            children: Vec::with_capacity(n),
            stdins: Vec::with_capacity(n),
            lines,
        };
        let json = member.to_json();
        for index in 0..n {
            let mut child = command()
                .env(MEMBER_VAR, &json)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            fleet.stdins.push(child.stdin.take().ok_or("no stdin")?);
            let stdout = child.stdout.take().ok_or("no stdout")?;
            fleet.children.push(child);
            let sent = sent.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(at) = line.find(MARKER) {
                        let message = &line[at + MARKER.len()..];
                        let (what, payload) = message.split_once(' ').unwrap_or((message, ""));
                        if sent
                            .send((index, what.to_owned(), payload.to_owned()))
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            });
        }
        // Only the readers send: when every child has closed its stdout,
        // waiting ends at once.
        drop(sent);
        let mut ready = 0;
        let deadline = Instant::now() + READY_TIMEOUT;
        while ready < n {
            let (index, what, _) = fleet.next(deadline, "ready")?;
            if what != "ready" {
                return Err(format!("child {index} said {what:?} before it was ready").into());
            }
            ready += 1;
        }
        Ok(fleet)
    }

    fn next(
        &self,
        deadline: Instant,
        waiting_for: &str,
    ) -> Result<(usize, String, String), BoxError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok(line) => Ok(line),
            Err(RecvTimeoutError::Timeout) => {
                Err(format!("the fleet's children were not all {waiting_for} in time").into())
            }
            // Every reader ended: every child closed its stdout.
            Err(RecvTimeoutError::Disconnected) => Err(format!(
                "the fleet's children exited before they were all {waiting_for}"
            )
            .into()),
        }
    }

    /// Gives every child its go.
    pub fn go(&mut self) -> Result<(), BoxError> {
        for stdin in &mut self.stdins {
            stdin.write_all(b"go\n")?;
            stdin.flush()?;
        }
        Ok(())
    }

    /// Waits for every child's report; `seconds` is how long they run.
    pub fn reports(mut self, seconds: f64) -> Result<Vec<Report>, BoxError> {
        let deadline = Instant::now() + Duration::from_secs_f64(seconds) + REPORT_GRACE;
        let mut reports = HashMap::new();
        while reports.len() < self.children.len() {
            let (index, what, payload) = self.next(deadline, "reported")?;
            if what == "report" {
                reports.insert(index, Report::from_json(&payload)?);
            }
        }
        for child in &mut self.children {
            let status = child.wait()?;
            if !status.success() {
                return Err(format!("a child exited with {status}").into());
            }
        }
        let mut reports: Vec<_> = reports.into_iter().collect();
        reports.sort_by_key(|(index, _)| *index);
        Ok(reports.into_iter().map(|(_, report)| report).collect())
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Runs fleets of `(processes, member)` side by side: starts them all, gives
/// the go when every child is ready, and returns each fleet's totals and
/// the time from the go to the last report.
pub fn run_side_by_side(
    fleets: &[(usize, &Member)],
    command: impl Fn() -> Command,
) -> Result<(Vec<Totals>, Duration), BoxError> {
    let mut running = Vec::with_capacity(fleets.len());
    for (processes, member) in fleets {
        running.push((Fleet::spawn(*processes, member, &command)?, member.seconds));
    }
    let start = Instant::now();
    for (fleet, _) in &mut running {
        fleet.go()?;
    }
    let mut totals = Vec::with_capacity(running.len());
    for (fleet, seconds) in running {
        totals.push(Totals::of(&fleet.reports(seconds)?));
    }
    Ok((totals, start.elapsed()))
}

/// The reports of a fleet, added up.
#[derive(Clone, Debug, Default)]
pub struct Totals {
    pub processes: usize,
    pub ok: u64,
    pub rejected: u64,
    pub other_status: u64,
    pub failed: u64,
    /// The children's first-token latencies, sorted.
    pub first_tokens: Vec<Duration>,
    pub unexpected: Vec<String>,
}

impl Totals {
    pub fn of(reports: &[Report]) -> Self {
        let mut totals = Self {
            processes: reports.len(),
            ..Self::default()
        };
        for report in reports {
            totals.ok += report.ok;
            totals.rejected += report.rejected;
            totals.other_status += report.other_status;
            totals.failed += report.failed;
            totals.first_tokens.push(report.first_token);
            totals.unexpected.extend(
                report
                    .unexpected
                    .iter()
                    .take(10 - totals.unexpected.len().min(10))
                    .cloned(),
            );
        }
        totals.first_tokens.sort();
        totals
    }

    /// Requests that did not get a 200.
    pub fn bad(&self) -> u64 {
        self.rejected + self.other_status + self.failed
    }

    /// The median first-token latency.
    pub fn first_token_median(&self) -> Duration {
        self.first_tokens
            .get(self.first_tokens.len() / 2)
            .copied()
            .unwrap_or_default()
    }

    /// The slowest first token.
    pub fn first_token_max(&self) -> Duration {
        self.first_tokens.last().copied().unwrap_or_default()
    }
}
