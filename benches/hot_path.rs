//! Per-request cost of `BearerAuth` with a fresh token, against the same
//! request through tower-http's static headers and through no middleware.
//!
//! `cargo bench --bench hot_path`

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::{service_fn, Layer, Service};
use tower_bearer::{BearerAuthLayer, Token, TokenCache};
use tower_http::auth::AddAuthorizationLayer;
use tower_http::set_header::SetRequestHeaderLayer;

const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.a-typical-access-token-of-some-length.signature";

fn inner() -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<()>, Infallible>>,
> + Clone {
    service_fn(|request: Request<()>| {
        black_box(&request);
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    })
}

struct Noop;
impl Wake for Noop {
    fn wake(self: Arc<Self>) {}
}

/// Every case answers at once: poll once, without a runtime in the loop.
#[inline(always)]
fn ready<F: Future>(future: F, cx: &mut Context<'_>) -> F::Output {
    match pin!(future).poll(cx) {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("the inner service answers at once"),
    }
}

/// One request: readiness, call, and the single poll of its future.
#[inline(always)]
fn request<S>(service: &mut S, cx: &mut Context<'_>)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    assert!(service.poll_ready(cx).is_ready());
    let response = ready(service.call(Request::new(())), cx);
    black_box(response.unwrap());
}

/// Each case on one thread, then on two threads, each with its own clone of
/// the service (the time is per request on each thread).
fn bench<S>(c: &mut Criterion, name: &str, mut service: S)
where
    S: Service<Request<()>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    c.bench_function(&format!("{name} / 1 thread"), |b| {
        b.iter(|| request(&mut service, &mut cx))
    });
    c.bench_function(&format!("{name} / 2 threads"), |b| {
        b.iter_custom(|iters| {
            let start = std::sync::Barrier::new(2);
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..2)
                    .map(|_| {
                        let (mut service, start) = (service.clone(), &start);
                        scope.spawn(move || {
                            let waker = Waker::from(Arc::new(Noop));
                            let mut cx = Context::from_waker(&waker);
                            start.wait();
                            let begun = std::time::Instant::now();
                            for _ in 0..iters {
                                request(&mut service, &mut cx);
                            }
                            begun.elapsed()
                        })
                    })
                    .collect();
                let times = threads.into_iter().map(|t| t.join().unwrap());
                times.max().unwrap()
            })
        })
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn per_request(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();

    bench(c, "1 bare inner service", inner());

    let add = AddAuthorizationLayer::bearer(TOKEN).as_sensitive(true);
    bench(c, "2 tower-http AddAuthorization", add.layer(inner()));

    let value = HeaderValue::from_static(
        "Bearer eyJhbGciOiJSUzI1NiJ9.a-typical-access-token-of-some-length.signature",
    );
    let set = SetRequestHeaderLayer::overriding(AUTHORIZATION, value);
    bench(
        c,
        "2b tower-http SetRequestHeader, static",
        set.layer(inner()),
    );

    let cache = TokenCache::new(|| async {
        Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
    });
    runtime.block_on(cache.token()).unwrap();
    bench(
        c,
        "3 BearerAuth, fresh token",
        BearerAuthLayer::from_cache(cache).layer(inner()),
    );
}

/// What the hot path avoids: one read of tokio's clock (inside a runtime,
/// as a request would be; `std` alone is the cost without tokio's test-util
/// feature, which dev-dependencies switch on).
fn clock(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    c.bench_function("clock read: tokio::time::Instant::now", |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    c.bench_function("clock read: std::time::Instant::now", |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
}

criterion_group!(benches, per_request, clock);
criterion_main!(benches);
