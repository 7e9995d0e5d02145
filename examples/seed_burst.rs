//! Ten simultaneous requests, one token fetch.
//!
//! Ten clones of one service send a request at the same moment, before any
//! token exists. The token endpoint takes 300 ms to answer, so every request
//! arrives while the fetch is still running; they all wait for that single
//! fetch instead of starting ten.
//!
//! ```text
//! cargo run --example seed_burst
//! ```

mod support;

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Barrier;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bearer::BearerAuthLayer;

use support::Backend;

type BoxError = Box<dyn Error + Send + Sync>;

const REQUESTS: usize = 10;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60))
        .await?
        .with_latency(Duration::from_millis(300));
    let client = support::client();
    let start = Instant::now();

    let source = {
        let client = client.clone();
        let token_url = backend.token_url();
        move || {
            println!("[{:4.2}s] fetching a token...", secs(start));
            support::fetch_token(client.clone(), token_url.clone())
        }
    };

    let svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(source))
        .service(client);

    let barrier = Arc::new(Barrier::new(REQUESTS));
    let mut requests = JoinSet::new();
    for i in 1..=REQUESTS {
        let mut svc = svc.clone();
        let barrier = barrier.clone();
        let request = Request::get(backend.protected_url()).body(Full::<Bytes>::default())?;
        requests.spawn(async move {
            barrier.wait().await;
            let response = svc.ready().await?.call(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((i, status, String::from_utf8_lossy(&body).into_owned()))
        });
    }

    let mut failed = 0;
    while let Some(joined) = requests.join_next().await {
        match joined? {
            Ok((i, status, body)) => {
                println!("[{:4.2}s] request #{i}: {status} {body}", secs(start));
                if status != StatusCode::OK {
                    failed += 1;
                }
            }
            Err(error) => {
                println!("[{:4.2}s] request failed: {error}", secs(start));
                failed += 1;
            }
        }
    }

    let fetches = backend.fetch_count();
    println!("{REQUESTS} requests, {failed} failed, {fetches} token fetch(es)");
    if fetches != 1 {
        return Err(format!("expected exactly one fetch, the backend served {fetches}").into());
    }
    if failed > 0 {
        return Err(format!("{failed} requests failed").into());
    }
    Ok(())
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
