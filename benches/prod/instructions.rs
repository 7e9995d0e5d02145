//! Instructions per request, counted by valgrind's callgrind rather than
//! timed: repeatable to the instruction for the same binary, whatever else
//! the machine is doing. Run by `scripts/instructions.sh`, which counts a
//! loop of N requests and one of 2N and takes the difference over N, so that
//! start-up and the one fetch cancel out.
//!
//! `INSTRUCTIONS_CASE` is `bare`, `add-authorization`, `bearer`,
//! `bearer-grpc` (`BearerAuthLayer::grpc()`) or `keyed-100`
//! (`BearerAuthLayer::keyed`, the requests cycling over 100 keys, each with
//! a fresh token);
//! `INSTRUCTIONS_N` the number of requests. Without them (as under `cargo
//! bench`), it does nothing.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::Request;
use tower::{Layer, Service};
use tower_bearer::{BearerAuthLayer, KeyedTokenCache, Token, TokenCache};
use tower_http::auth::AddAuthorizationLayer;

#[path = "../per_request.rs"]
mod per_request;
use per_request::{inner, TOKEN};

#[inline(never)]
fn run<S>(mut service: S, n: u64)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..n {
        assert!(service.poll_ready(&mut cx).is_ready());
        let future = pin!(service.call(Request::new(())));
        match future.poll(&mut cx) {
            Poll::Ready(response) => {
                black_box(response.unwrap());
            }
            Poll::Pending => unreachable!("every case answers at once"),
        }
    }
}

fn main() {
    let (Ok(case), Ok(n)) = (
        std::env::var("INSTRUCTIONS_CASE"),
        std::env::var("INSTRUCTIONS_N"),
    ) else {
        eprintln!(
            "instructions: set INSTRUCTIONS_CASE and INSTRUCTIONS_N (see scripts/instructions.sh)"
        );
        return;
    };
    let n: u64 = n.parse().expect("INSTRUCTIONS_N is a number");
    let inner = inner();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    match case.as_str() {
        "bare" => run(inner, n),
        "add-authorization" => run(
            AddAuthorizationLayer::bearer(TOKEN)
                .as_sensitive(true)
                .layer(inner),
            n,
        ),
        "bearer" => {
            let cache = TokenCache::new(|| async {
                Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
            });
            runtime.block_on(cache.token()).unwrap();
            run(BearerAuthLayer::from_cache(cache).layer(inner), n);
        }
        "bearer-grpc" => {
            // `BearerAuthLayer::grpc()`: what handling gRPC costs a request
            // whose response is not gRPC (no content type to match).
            let cache = TokenCache::new(|| async {
                Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
            });
            runtime.block_on(cache.token()).unwrap();
            run(BearerAuthLayer::from_cache(cache).grpc().layer(inner), n);
        }
        "keyed-100" => {
            let cache = KeyedTokenCache::new(|_: &u64| {
                || async {
                    Ok::<_, Infallible>(Token::new(TOKEN).expires_in(Duration::from_secs(3600)))
                }
            });
            for key in 0..100 {
                runtime.block_on(cache.token(&key)).unwrap();
            }
            let next = std::sync::atomic::AtomicU64::new(0);
            let layer = BearerAuthLayer::keyed(cache, move |_| {
                let key = next.load(std::sync::atomic::Ordering::Relaxed);
                next.store((key + 1) % 100, std::sync::atomic::Ordering::Relaxed);
                Some(key)
            });
            run(layer.layer(inner), n);
        }
        other => panic!("unknown case {other:?}"),
    }
}
