//! Per-request cost of `BearerAuth` with a fresh token, against the same
//! request through no middleware, through tower-http's static headers (the
//! practical limit and the floor), and through the designs it replaces: an
//! async mutex locked per request (the seed article's), a reader-writer
//! lock, and `tower::filter::AsyncFilter` over a mutex (kube-rs's shape).
//!
//! `cargo bench --bench hot_path`: with the root's dev-dependencies, which
//! turn on tokio's `test-util` (its `Instant::now()` then asks the
//! runtime's clock).
//!
//! `cargo bench -p tower-bearer-bench-prod`: this same file in the build
//! users get, without `test-util` (`benches/prod`); its results are named
//! `prod/...` (see `docs/performance.md`).

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use http::header::AUTHORIZATION;
use http::{HeaderValue, Request};
use tower::filter::{AsyncFilter, AsyncPredicate};
use tower::util::BoxCloneService;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_bearer::{BearerAuthLayer, Token, TokenCache};
use tower_http::auth::AddAuthorizationLayer;
use tower_http::set_header::SetRequestHeaderLayer;

#[path = "../examples/support/mod.rs"]
mod support;

#[path = "per_request.rs"]
mod per_request;
use per_request::{inner, TOKEN};

/// The name of a case in this build: `prod/` before it in the build without
/// `test-util`, so that both builds' results sit side by side in
/// `target/criterion`.
fn id(name: &str) -> String {
    if env!("CARGO_PKG_NAME") == "tower-bearer-bench-prod" {
        format!("prod/{name}")
    } else {
        name.to_owned()
    }
}

/// Each case on one thread and on two, named for this build.
fn bench<S>(c: &mut Criterion, name: &str, service: S)
where
    S: Service<Request<()>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    per_request::bench(c, &id(""), name, service);
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

    bench(c, "4 seed design, tokio Mutex", seed_mutex(inner()));
    bench(c, "5 std RwLock", rw_lock(inner()));
    bench(c, "6 tower AsyncFilter, tokio Mutex", async_filter(inner()));
}

// ===== the designs BearerAuth replaces =====
//
// Each holds a token that expires in an hour, so that no case ever fetches;
// they differ only in how a request reads it.

struct Cached {
    header: HeaderValue,
    expires: std::time::Instant,
}

fn cached() -> Option<Cached> {
    let mut header = HeaderValue::try_from(format!("Bearer {TOKEN}")).unwrap();
    header.set_sensitive(true);
    let expires = std::time::Instant::now() + Duration::from_secs(3600);
    Some(Cached { header, expires })
}

/// The header value of a cached, unexpired token; where a real cache would
/// fetch, the benchmark fails.
fn header_of(cached: &Option<Cached>) -> HeaderValue {
    match cached {
        Some(c) if c.expires > std::time::Instant::now() => c.header.clone(),
        _ => unreachable!("the token lasts an hour"),
    }
}

/// The seed article's design: every request locks an async mutex around the
/// cached token and checks its expiry.
fn seed_mutex<S>(
    inner: S,
) -> impl Service<Request<()>, Response = S::Response, Error = S::Error> + Clone
where
    S: Service<Request<()>> + Clone,
{
    let state = Arc::new(tokio::sync::Mutex::new(cached()));
    service_fn(move |mut request: Request<()>| {
        let (state, mut inner) = (state.clone(), inner.clone());
        async move {
            let header = header_of(&*state.lock().await);
            request.headers_mut().insert(AUTHORIZATION, header);
            inner.call(request).await
        }
    })
}

/// A blocking reader-writer lock read by every request.
fn rw_lock<S>(
    inner: S,
) -> impl Service<Request<()>, Response = S::Response, Error = S::Error> + Clone
where
    S: Service<Request<()>> + Clone,
{
    let state = Arc::new(std::sync::RwLock::new(cached()));
    let mut inner = inner;
    service_fn(move |mut request: Request<()>| {
        let header = header_of(&state.read().unwrap());
        request.headers_mut().insert(AUTHORIZATION, header);
        inner.call(request)
    })
}

/// `tower::filter::AsyncFilter` with a mutex-guarded token, the shape
/// kube-rs uses for refreshable tokens.
fn async_filter<S>(
    inner: S,
) -> AsyncFilter<S, impl AsyncPredicate<Request<()>, Request = Request<()>> + Clone>
where
    S: Service<Request<()>> + Clone,
{
    let state = Arc::new(tokio::sync::Mutex::new(cached()));
    AsyncFilter::new(inner, move |mut request: Request<()>| {
        let state = state.clone();
        async move {
            let header = header_of(&*state.lock().await);
            request.headers_mut().insert(AUTHORIZATION, header);
            Ok::<_, Infallible>(request)
        }
    })
}

/// What the hot path may read to know the time, inside a runtime as a
/// request would be: tokio's clock (std's monotonic clock in `prod/`, the
/// runtime's clock behind `test-util` otherwise), std's, and Linux's coarse
/// monotonic clock (a few ms of resolution, no system call).
fn clock(c: &mut Criterion) {
    let runtime = runtime();
    let _guard = runtime.enter();
    c.bench_function(&id("clock read: tokio::time::Instant::now"), |b| {
        b.iter(|| black_box(tokio::time::Instant::now()))
    });
    c.bench_function(&id("clock read: std::time::Instant::now"), |b| {
        b.iter(|| black_box(std::time::Instant::now()))
    });
    #[cfg(target_os = "linux")]
    c.bench_function(&id("clock read: CLOCK_MONOTONIC_COARSE"), |b| {
        b.iter(|| black_box(monotonic_coarse()))
    });
}

#[cfg(target_os = "linux")]
fn monotonic_coarse() -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable `timespec` for the call's duration.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    debug_assert_eq!(status, 0);
    now
}

/// For scale: one real HTTP/1.1 request over loopback (hyper-util's client,
/// a hyper server on 127.0.0.1 that checks the token), through `BearerAuth`
/// and through `AddAuthorization` with the same token.
fn loopback(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let backend = runtime
        .block_on(support::Backend::start(Duration::from_secs(3600)))
        .unwrap();
    let (client, url, token_url) = (
        support::client(),
        backend.protected_url(),
        backend.token_url(),
    );
    let token = runtime
        .block_on(support::fetch_token(client.clone(), token_url.clone()))
        .unwrap();
    let source = {
        let client = client.clone();
        move || support::fetch_token(client.clone(), token_url.clone())
    };
    let request = || {
        Request::get(url.clone())
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    };
    let cases = [
        (
            "AddAuthorization",
            BoxCloneService::new(
                AddAuthorizationLayer::bearer(token.secret())
                    .as_sensitive(true)
                    .layer(client.clone())
                    .map_err(BoxError::from),
            ),
        ),
        (
            "BearerAuth",
            BoxCloneService::new(BearerAuthLayer::new(source).layer(client)),
        ),
    ];
    for (name, service) in &cases {
        c.bench_function(
            &id(&format!("reference: HTTP request over loopback, {name}")),
            |b| {
                b.to_async(&runtime).iter(|| {
                    let (mut service, request) = (service.clone(), request());
                    async move {
                        let response = service.ready().await.unwrap();
                        let response = response.call(request).await.unwrap();
                        assert_eq!(response.status(), http::StatusCode::OK);
                        black_box(response)
                    }
                })
            },
        );
    }
}

criterion_group!(benches, per_request, clock, loopback);
criterion_main!(benches);
