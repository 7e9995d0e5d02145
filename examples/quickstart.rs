//! Wraps a hyper client with `BearerAuthLayer` and talks to a local mock
//! backend whose tokens live 3 seconds.
//!
//! ```text
//! cargo run --example quickstart
//! ```

mod support;

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bearer::BearerAuthLayer;

use support::Backend;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A little latency on the token endpoint makes the concurrent burst below
    // overlap with the fetch, as it would against a real identity provider.
    let backend = Backend::start(Duration::from_secs(3))
        .await?
        .with_latency(Duration::from_millis(100));
    println!("backend listening on {}", backend.base_url());
    let start = Instant::now();

    let client = support::client();

    // The source is any closure returning a future of `Result<Token, _>`; the
    // layer calls it only when the cached token is missing or due.
    let source = {
        let client = client.clone();
        let token_url = backend.token_url();
        move || {
            println!("[{:4.1}s] fetching a token...", secs(start));
            support::fetch_token(client.clone(), token_url.clone())
        }
    };

    let mut svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(source))
        .service(client.clone());

    // Without the layer the backend turns us away.
    let mut bare = client.clone();
    let response = bare
        .ready()
        .await?
        .call(get(backend.protected_url())?)
        .await?;
    let (status, body) = read(response).await?;
    println!("[{:4.1}s] without the layer: {status} {body}", secs(start));
    expect(status, StatusCode::UNAUTHORIZED)?;

    // Five requests at once, before any token exists: they all wait on the
    // same fetch.
    let mut burst = JoinSet::new();
    for i in 1..=5 {
        let mut svc = svc.clone();
        let request = get(backend.protected_url())?;
        burst.spawn(async move {
            let response = svc.ready().await?.call(request).await?;
            Ok::<_, BoxError>((i, read(response).await?))
        });
    }
    while let Some(joined) = burst.join_next().await {
        let (i, (status, body)) = joined??;
        println!("[{:4.1}s] burst #{i}: {status} {body}", secs(start));
        expect(status, StatusCode::OK)?;
    }
    println!(
        "[{:4.1}s] tokens fetched so far: {}",
        secs(start),
        backend.fetch_count()
    );
    if backend.fetch_count() != 1 {
        return Err("the burst should have shared a single fetch".into());
    }

    // A request a second. The token becomes due half way through its
    // 3 second life: from then on the next request starts a refresh in the
    // background and is still served with the current token.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let response = svc
            .ready()
            .await?
            .call(get(backend.protected_url())?)
            .await?;
        let (status, body) = read(response).await?;
        println!("[{:4.1}s] {status} {body}", secs(start));
        expect(status, StatusCode::OK)?;
    }
    println!(
        "[{:4.1}s] tokens fetched in total: {}",
        secs(start),
        backend.fetch_count()
    );

    Ok(())
}

fn get(uri: Uri) -> Result<Request<Full<Bytes>>, http::Error> {
    Request::get(uri).body(Full::default())
}

async fn read(response: Response<Incoming>) -> Result<(StatusCode, String), BoxError> {
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn expect(status: StatusCode, expected: StatusCode) -> Result<(), BoxError> {
    if status == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {status}").into())
    }
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
