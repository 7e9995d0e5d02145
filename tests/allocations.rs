//! Behaviour 2: with a fresh token, a request through `BearerAuth` allocates
//! no more than one through tower-http's static headers: `AddAuthorization`
//! and `SetRequestHeader` with a `'static` value. The same holds for
//! `KeyedBearerAuth` with a key that reads without allocating (a `u64` from
//! a header), over 1 and 100 keys; and the memory a key holds is measured.
//!
//! This file is a test binary of its own with a counting global allocator, and
//! holds exactly one test. It counts the allocations of the thread that sends
//! the requests (a current-thread runtime: the middleware runs nowhere else),
//! so that the test harness's own threads do not count: about one run in ten,
//! one of them allocated 4 times while a case was being measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_bearer::{BearerAuthLayer, KeyedTokenCache, RequestHead, Token};
use tower_http::auth::AddAuthorization;
use tower_http::set_header::SetRequestHeader;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn bump() {
    // `try_with`: a thread being torn down has no counter left.
    let _ = ALLOCATIONS.try_with(|count| count.set(count.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}
/// Bytes allocated and not yet freed, by every thread.
static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TOKEN: &str = "abcd1234-fresh-token";
const WARM_UP: usize = 10;
const REQUESTS: usize = 1000;

/// Requests with room for one more header, built before counting starts, so
/// that what is counted is the middleware's own work and the inner
/// service's. Each names a key in `x-key` (0 to 99), which only the keyed
/// middleware reads.
fn requests(n: usize) -> Vec<Request<()>> {
    (0..n)
        .map(|i| {
            let mut request = Request::new(());
            request.headers_mut().reserve(2);
            request
                .headers_mut()
                .insert("x-key", HeaderValue::from(i % 100));
            request
        })
        .collect()
}

/// A keyed cache of hour-long tokens, the same token for every key.
fn keyed_cache() -> KeyedTokenCache<u64> {
    KeyedTokenCache::new(|_: &u64| {
        || async { Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600))) }
    })
}

fn key_of(head: &RequestHead<'_>) -> Option<u64> {
    head.headers().get("x-key")?.to_str().ok()?.parse().ok()
}

/// Sends [`REQUESTS`] requests through `svc` after a warm-up, and returns the
/// allocations counted while the requests were sent.
async fn count<S>(mut svc: S) -> usize
where
    S: Service<Request<()>, Response = Response<usize>>,
    S::Error: std::fmt::Debug,
{
    for request in requests(WARM_UP) {
        svc.ready().await.unwrap().call(request).await.unwrap();
    }

    let requests = requests(REQUESTS);
    let mut header_bytes = 0;
    let before = allocations();
    for request in requests {
        let response = svc.ready().await.unwrap().call(request).await.unwrap();
        header_bytes += response.into_body();
    }
    let counted = allocations() - before;

    // Every request carried the token.
    assert_eq!(header_bytes, REQUESTS * format!("Bearer {TOKEN}").len());
    counted
}

#[test]
fn fresh_token_allocates_no_more_than_a_static_header() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();

    // Answers at once with the length of the header it received.
    let inner = service_fn(|request: Request<()>| {
        let value = request.headers().get(AUTHORIZATION);
        std::future::ready(Ok::<_, Infallible>(Response::new(
            value.map_or(0, HeaderValue::len),
        )))
    });

    let (bearer, keyed, baseline, floor, per_request) = runtime.block_on(async {
        let layer = BearerAuthLayer::new(|| async {
            Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
        });
        let bearer = count(layer.layer(inner)).await;

        // Keyed, over 1 key and over 100 (every key warmed first).
        let one_key = BearerAuthLayer::keyed(keyed_cache(), |_| Some(7u64));
        let keyed_1 = count(one_key.layer(inner)).await;
        let cache = keyed_cache();
        for key in 0..100 {
            cache.token(&key).await.unwrap();
        }
        let keyed_100 = count(BearerAuthLayer::keyed(cache, key_of).layer(inner)).await;

        // What a key holds: 10,000 keys, each with its cache and a token.
        let cache = keyed_cache().max_keys(20_000);
        let before = LIVE.load(Ordering::SeqCst);
        for key in 0..10_000 {
            cache.token(&key).await.unwrap();
        }
        let per_key = (LIVE.load(Ordering::SeqCst) - before) / 10_000;
        println!(
            "memory per key holding a {}-byte token: {per_key} bytes",
            TOKEN.len()
        );
        drop(cache);

        let baseline = count(AddAuthorization::bearer(inner, TOKEN).as_sensitive(true)).await;
        let value = HeaderValue::from_static("Bearer abcd1234-fresh-token");
        let floor = count(SetRequestHeader::overriding(inner, AUTHORIZATION, value)).await;

        // The harness must see an allocation per request: a header value
        // formatted for each one.
        let formatting = {
            let mut inner = inner;
            service_fn(move |mut request: Request<()>| {
                let value = HeaderValue::try_from(format!("Bearer {TOKEN}")).unwrap();
                request.headers_mut().insert(AUTHORIZATION, value);
                inner.call(request)
            })
        };
        let per_request = count(formatting).await;

        (bearer, (keyed_1, keyed_100), baseline, floor, per_request)
    });

    println!("allocations for {REQUESTS} requests with a fresh token:");
    println!("  BearerAuth:                  {bearer}");
    println!("  KeyedBearerAuth, 1 key:      {}", keyed.0);
    println!("  KeyedBearerAuth, 100 keys:   {}", keyed.1);
    println!("  AddAuthorization (baseline): {baseline}");
    println!("  SetRequestHeader, static:    {floor}");
    println!("  format! per request (check): {per_request}");

    assert!(
        per_request >= baseline + REQUESTS,
        "the harness misses per-request allocations: {per_request} vs {baseline}"
    );
    assert!(
        bearer <= baseline && bearer <= floor,
        "BearerAuth allocated {bearer} times, AddAuthorization {baseline}, \
         SetRequestHeader {floor}"
    );
    assert!(
        keyed.0 <= baseline && keyed.1 <= baseline,
        "KeyedBearerAuth allocated {keyed:?} times, AddAuthorization {baseline}"
    );
}
