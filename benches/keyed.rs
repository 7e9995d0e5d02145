//! Per-request cost of `KeyedBearerAuth` with a fresh token, at 1, 100 and
//! 10,000 keys, against the unkeyed `BearerAuth` and tower-http's
//! `AddAuthorization` in the same run; and the cost of a miss when more keys
//! are active than `max_keys` allows (churn).
//!
//! `cargo bench --bench keyed`. See `docs/keyed.md` for the method and the
//! numbers.

use std::cell::Cell;
use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::Request;
use tower::{Layer, Service};
use tower_bearer::{BearerAuthLayer, KeyedTokenCache, Token, TokenCache};
use tower_http::auth::AddAuthorizationLayer;

#[path = "per_request.rs"]
mod per_request;
use per_request::{inner, TOKEN};

/// Each case on one thread and on two.
fn bench<S>(c: &mut Criterion, name: &str, service: S)
where
    S: Service<Request<()>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    per_request::bench(c, "keyed/", name, service);
}

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0x9e37_79b9_7f4a_7c15) };
}

/// A random key below `keys` (xorshift, per thread: about a nanosecond).
#[inline(always)]
fn random_key(keys: u64) -> u64 {
    RNG.with(|rng| {
        let mut x = rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        rng.set(x);
        x % keys
    })
}

fn keyed_cache(max_keys: usize) -> KeyedTokenCache<u64> {
    KeyedTokenCache::new(|_: &u64| {
        || async { Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600))) }
    })
    .max_keys(max_keys)
}

fn per_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();

    let add = AddAuthorizationLayer::bearer(TOKEN).as_sensitive(true);
    bench(c, "AddAuthorization", add.layer(inner()));

    let cache = TokenCache::new(|| async {
        Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
    });
    runtime.block_on(cache.token()).unwrap();
    bench(
        c,
        "BearerAuth, unkeyed",
        BearerAuthLayer::from_cache(cache).layer(inner()),
    );

    for keys in [1u64, 100, 10_000] {
        let cache = keyed_cache(20_000);
        for key in 0..keys {
            runtime.block_on(cache.token(&key)).unwrap();
        }
        let layer = BearerAuthLayer::keyed(cache, move |_| Some(random_key(keys)));
        bench(
            c,
            &format!("KeyedBearerAuth, {keys} keys"),
            layer.layer(inner()),
        );
    }
}

/// A request for a key the cache holds, against one for a key it had to
/// evict: 2,048 keys in random use through a cache of 1,024 (the default
/// `max_keys`), each miss a new cache and a fetch (an immediate one).
fn churn(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cache = keyed_cache(1024);
    for key in 0..1024 {
        runtime.block_on(cache.token(&key)).unwrap();
    }
    c.bench_function("keyed/token(), 1,024 keys held, no churn", |b| {
        b.iter(|| runtime.block_on(cache.token(&random_key(1024))).unwrap())
    });
    c.bench_function("keyed/token(), 2,048 keys through max_keys 1,024", |b| {
        b.iter(|| runtime.block_on(cache.token(&random_key(2048))).unwrap())
    });
    let stats = cache.total_stats();
    println!(
        "churn: {} fetches, {} keys held",
        stats.fetches,
        cache.len()
    );
}

/// The map alone: a random key's value (a `u64` behind an `Arc`, as a key's
/// slot is), through the keyed cache's design (a `HashMap` behind arc-swap,
/// read through a per-reader `arc_swap::Cache`) and through the concurrent
/// maps of the ecosystem, at 100 and 10,000 keys, all with std's SipHash;
/// on one thread, then on two reading the same map.
fn map_read(c: &mut Criterion) {
    use std::collections::HashMap;

    use arc_swap::ArcSwap;

    type Cow = Arc<ArcSwap<HashMap<u64, Arc<u64>>>>;

    /// `read` is made once per thread, then called once per iteration.
    fn case<R: FnMut(u64) -> u64>(
        c: &mut Criterion,
        name: &str,
        keys: u64,
        reader: impl Fn() -> R + Sync,
    ) {
        c.bench_function(
            &format!("keyed/map read, {keys} keys: {name} / 1 thread"),
            |b| {
                let mut read = reader();
                b.iter(|| black_box(read(random_key(keys))))
            },
        );
        c.bench_function(
            &format!("keyed/map read, {keys} keys: {name} / 2 threads"),
            |b| {
                b.iter_custom(|iters| {
                    let start = std::sync::Barrier::new(2);
                    std::thread::scope(|scope| {
                        let threads: Vec<_> = (0..2)
                            .map(|_| {
                                let (start, reader) = (&start, &reader);
                                scope.spawn(move || {
                                    let mut read = reader();
                                    start.wait();
                                    let begun = std::time::Instant::now();
                                    for _ in 0..iters {
                                        black_box(read(random_key(keys)));
                                    }
                                    begun.elapsed()
                                })
                            })
                            .collect();
                        threads
                            .into_iter()
                            .map(|t| t.join().unwrap())
                            .max()
                            .unwrap()
                    })
                })
            },
        );
    }

    for keys in [100u64, 10_000] {
        let values = |k: u64| (k, Arc::new(k));
        let cow: Cow = Arc::new(ArcSwap::from_pointee((0..keys).map(values).collect()));
        case(c, "HashMap behind arc-swap, cached", keys, || {
            let mut cached = arc_swap::Cache::new(Arc::clone(&cow));
            move |key| **cached.load().get(&key).unwrap()
        });
        case(c, "HashMap behind arc-swap, load", keys, || {
            let cow = Arc::clone(&cow);
            move |key| **cow.load().get(&key).unwrap()
        });
        let papaya: papaya::HashMap<u64, Arc<u64>> = (0..keys).map(values).collect();
        case(c, "papaya", keys, || {
            |key| **papaya.pin().get(&key).unwrap()
        });
        let dashmap: dashmap::DashMap<u64, Arc<u64>> = (0..keys).map(values).collect();
        case(c, "dashmap", keys, || |key| **dashmap.get(&key).unwrap());
    }
}

criterion_group!(benches, per_request, churn, map_read);
criterion_main!(benches);
