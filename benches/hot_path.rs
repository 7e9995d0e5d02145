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

fn bench<S>(c: &mut Criterion, name: &str, mut service: S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    c.bench_function(name, |b| {
        b.iter(|| {
            assert!(service.poll_ready(&mut cx).is_ready());
            let response = ready(service.call(Request::new(())), &mut cx);
            black_box(response.unwrap());
        })
    });
}

fn per_request(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
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

criterion_group!(benches, per_request);
criterion_main!(benches);
