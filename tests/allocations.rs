//! Behaviour 2: with a fresh token, a request through `BearerAuth` allocates
//! no more than one through tower-http's static headers: `AddAuthorization`
//! and `SetRequestHeader` with a `'static` value.
//!
//! This file is a test binary of its own with a counting global allocator, and
//! holds exactly one test. It counts the allocations of the thread that sends
//! the requests (a current-thread runtime: the middleware runs nowhere else),
//! so that the test harness's own threads do not count: about one run in ten,
//! one of them allocated 4 times while a case was being measured.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderValue, Request, Response};
use tower::{service_fn, Layer, Service, ServiceExt};
use tower_bearer::{BearerAuthLayer, Token};
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

// SAFETY: every method forwards to `System` with the caller's arguments.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        bump();
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        bump();
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const TOKEN: &str = "abcd1234-fresh-token";
const WARM_UP: usize = 10;
const REQUESTS: usize = 1000;

/// Requests with room for one header, built before counting starts, so that
/// what is counted is the middleware's own work and the inner service's.
fn requests(n: usize) -> Vec<Request<()>> {
    (0..n)
        .map(|_| {
            let mut request = Request::new(());
            request.headers_mut().reserve(1);
            request
        })
        .collect()
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

    let (bearer, baseline, floor, per_request) = runtime.block_on(async {
        let layer = BearerAuthLayer::new(|| async {
            Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
        });
        let bearer = count(layer.layer(inner)).await;

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

        (bearer, baseline, floor, per_request)
    });

    println!("allocations for {REQUESTS} requests with a fresh token:");
    println!("  BearerAuth:                  {bearer}");
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
}
