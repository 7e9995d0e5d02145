//! The client secret is wiped: no memory block the crate frees ever still
//! holds it, raw, form-encoded or in the base64 of the Basic pair.
//!
//! This file is a test binary of its own with a global allocator that scans
//! every block as it is freed (and the old block of every reallocation), and
//! holds exactly one test. The copies the docs say are not wiped (the
//! request handed to the HTTP client: its header value and body) are leaked
//! by the test's client, so they are never freed, nor scanned.

use std::alloc::{GlobalAlloc, Layout, System};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use tower_bearer::oauth2::{ClientAuth, ClientCredentials};
use tower_bearer::{TokenCache, TokenSource};

struct Scanning;

/// Whether freed blocks are scanned.
static ARMED: AtomicBool = AtomicBool::new(false);
/// How many freed blocks held a needle.
static FOUND: AtomicUsize = AtomicUsize::new(0);
/// The secret in each form the crate builds.
static NEEDLES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();

fn scan(ptr: *const u8, size: usize) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Some(needles) = NEEDLES.get() else { return };
    // SAFETY: the block is still allocated, `size` bytes long.
    let block = unsafe { std::slice::from_raw_parts(ptr, size) };
    if needles
        .iter()
        .any(|needle| block.windows(needle.len()).any(|window| window == needle))
    {
        FOUND.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments;
// a reallocation is an allocation, a copy and a free.
unsafe impl GlobalAlloc for Scanning {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        scan(ptr, layout.size());
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = System.alloc(new_layout);
        if !new.is_null() {
            std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: Scanning = Scanning;

const SECRET: &str = "wipe-me s3cret/+:@";
const TOKEN: &str = r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#;
const REJECTED: &str = r#"{"error":"invalid_client","error_description":"no such client","refresh_token":"rt-0123456789"}"#;

type Answered = Response<Full<Bytes>>;

fn leaking_client(
    body: &'static str,
    status: u16,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Answered,
    Error = Infallible,
    Future = std::future::Ready<Result<Answered, Infallible>>,
> + Clone {
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        // The wire copies: not wiped, as the docs say.
        std::mem::forget(request);
        let mut response = Response::new(Full::from(body));
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap();
        std::future::ready(Ok(response))
    })
}

#[tokio::test]
async fn no_freed_block_holds_the_secret() {
    use base64::Engine as _;
    let encoded = "wipe-me+s3cret%2F%2B%3A%40";
    NEEDLES.get_or_init(|| {
        [
            SECRET.to_owned(),
            encoded.to_owned(),
            base64::engine::general_purpose::STANDARD_NO_PAD
                .encode(format!("my+id:{encoded}"))
                .chars()
                .take(24)
                .collect(),
        ]
        .map(String::into_bytes)
        .to_vec()
    });

    ARMED.store(true, Ordering::SeqCst);
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        for (status, body) in [(200, TOKEN), (401, REJECTED), (502, "<html>oops</html>")] {
            let source = ClientCredentials::new("https://idp.example.com/token", "my id", SECRET)
                .auth_method(auth)
                .scope("read")
                .audience("https://api.example.com")
                .param("tenant", "t-1")
                .http_client(leaking_client(body, status));
            let result = source.fetch().await;
            assert_eq!(result.is_ok(), status == 200, "{auth:?} {status}");
            let cache = TokenCache::new(source);
            let _ = cache.token().await;
            drop(cache);
        }
    }
    ARMED.store(false, Ordering::SeqCst);

    assert_eq!(
        FOUND.load(Ordering::SeqCst),
        0,
        "freed blocks held the secret"
    );
}
