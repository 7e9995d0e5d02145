//! The refresh storm: N requests at once against a cache whose token is
//! missing (cold start), has run out (expiry) or is due for renewal (due
//! window), with a source that takes 5 ms. Measures the time until every
//! request has its response, and fails if the storm caused more than one
//! fetch.
//!
//! `cargo bench --bench storm`; `python3 scripts/perf_report.py` draws
//! `docs/storm.svg` from the results.

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{Request, Response};
use tokio::runtime::Runtime;
use tower::{service_fn, Layer, ServiceExt};
use tower_bearer::{BearerAuthLayer, Token, TokenCache};

const LATENCY: Duration = Duration::from_millis(5);
const SIZES: [usize; 4] = [10, 100, 1_000, 10_000];

#[derive(Clone, Copy, Debug)]
enum Phase {
    /// The baseline: a fresh token, no fetch; the cost of the requests and
    /// of this harness (spawning and joining N tasks) alone.
    Fresh,
    /// No token has been fetched yet: every request waits for the one fetch.
    ColdStart,
    /// The token has run out: every request waits for the one fetch.
    Expiry,
    /// The token is due for renewal: no request waits; one refresh runs
    /// behind them.
    DueWindow,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Fresh => "fresh token (baseline)",
            Phase::ColdStart => "cold start",
            Phase::Expiry => "expiry",
            Phase::DueWindow => "due window",
        }
    }
}

/// A cache whose source takes [`LATENCY`] and hands out a first token of
/// `lifetime`, then tokens that last an hour; with its fetch counter.
fn cache(lifetime: Duration) -> (TokenCache, Arc<AtomicUsize>) {
    let fetches = Arc::new(AtomicUsize::new(0));
    let counter = fetches.clone();
    let cache = TokenCache::new(move || {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        let lifetime = if first {
            lifetime
        } else {
            Duration::from_secs(3600)
        };
        async move {
            tokio::time::sleep(LATENCY).await;
            Ok::<_, Infallible>(Token::new("storm-token").expires_in(lifetime))
        }
    })
    .expiry_margin(Duration::ZERO)
    .refresh_jitter(Duration::ZERO);
    (cache, fetches)
}

/// A cache in the state `phase` describes, and its fetch count so far.
async fn prepared(phase: Phase) -> (TokenCache, Arc<AtomicUsize>, usize) {
    let (cache, fetches) = match phase {
        Phase::Fresh | Phase::ColdStart => cache(Duration::from_secs(3600)),
        Phase::Expiry => cache(Duration::from_millis(100)),
        // Due at half its lifetime, 100 ms after it arrives.
        Phase::DueWindow => cache(Duration::from_millis(200)),
    };
    match phase {
        Phase::Fresh => {
            cache.token().await.unwrap();
        }
        Phase::ColdStart => {}
        Phase::Expiry => {
            cache.token().await.unwrap();
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
        Phase::DueWindow => {
            cache.token().await.unwrap();
            tokio::time::sleep(Duration::from_millis(110)).await;
        }
    }
    let before = fetches.load(Ordering::SeqCst);
    (cache, fetches, before)
}

/// `n` requests at once, each on its own task; returns when all have their
/// responses.
async fn storm(cache: &TokenCache, n: usize) -> Duration {
    let inner = service_fn(|_: Request<()>| async { Ok::<_, Infallible>(Response::new(())) });
    let service = BearerAuthLayer::from_cache(cache.clone()).layer(inner);
    let started = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(service.clone().oneshot(Request::new(()))))
        .collect();
    for task in tasks {
        black_box(task.await.unwrap().unwrap());
    }
    started.elapsed()
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn storms(c: &mut Criterion) {
    let runtime = runtime();
    let phases = [
        Phase::Fresh,
        Phase::ColdStart,
        Phase::Expiry,
        Phase::DueWindow,
    ];
    for phase in phases {
        let expected = if let Phase::Fresh = phase { 0 } else { 1 };
        let mut group = c.benchmark_group(format!("storm / {}", phase.name()));
        group.sample_size(20);
        for n in SIZES {
            group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            let (cache, fetches, before) = prepared(phase).await;
                            total += storm(&cache, n).await;
                            // A due window's refresh runs behind the storm.
                            if let Phase::DueWindow = phase {
                                tokio::time::sleep(LATENCY * 3).await;
                            }
                            let storm_fetches = fetches.load(Ordering::SeqCst) - before;
                            assert_eq!(storm_fetches, expected, "{} with {n}", phase.name());
                        }
                        total
                    })
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, storms);
criterion_main!(benches);
