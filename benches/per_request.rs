//! The per-request harness that `hot_path.rs`, `keyed.rs` and
//! `prod/instructions.rs` share: one inner service, one request (readiness,
//! `call`, the poll of its future, without a runtime in the loop), and each
//! case on one thread and on two.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use criterion::Criterion;
use http::{Request, Response};
use tower::{service_fn, Service};

pub const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.a-typical-access-token-of-some-length.signature";

/// Answers at once, the same in every case.
pub fn inner() -> impl Service<
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

/// Every case answers at once, without a runtime in the loop, except a lock
/// held by the other thread: then spin until it is released.
#[inline(always)]
pub fn ready<F: Future>(future: F, cx: &mut Context<'_>) -> F::Output {
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return output;
        }
        std::hint::spin_loop();
    }
}

/// One request: readiness, call, and the poll of its future.
#[inline(always)]
pub fn request<S>(service: &mut S, cx: &mut Context<'_>)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    assert!(service.poll_ready(cx).is_ready());
    let response = ready(service.call(Request::new(())), cx);
    black_box(response.unwrap());
}

/// `{prefix}{name} / 1 thread`, then `/ 2 threads`, each thread with its own
/// clone of the service (the time is per request on each thread).
pub fn bench<S>(c: &mut Criterion, prefix: &str, name: &str, mut service: S)
where
    S: Service<Request<()>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
{
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    c.bench_function(&format!("{prefix}{name} / 1 thread"), |b| {
        b.iter(|| request(&mut service, &mut cx))
    });
    c.bench_function(&format!("{prefix}{name} / 2 threads"), |b| {
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
