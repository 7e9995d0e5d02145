//! Tokens that expire under a steady stream of requests.
//!
//! The backend issues tokens that live 5 seconds and the client sends a
//! request every second for 30 seconds. The layer refreshes each token in the
//! background once it is due (half way through its life, for a token this
//! short), so only the very first request ever waits for a fetch and none is
//! rejected.
//!
//! ```text
//! cargo run --example seed_expiry
//! SEED_SECONDS=8 cargo run --example seed_expiry   # a shorter run
//! ```

mod support;

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::time::{Instant, MissedTickBehavior};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bearer::BearerAuthLayer;

use support::Backend;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let seconds: u64 = match std::env::var("SEED_SECONDS") {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("SEED_SECONDS must be a whole number, got {value:?}"))?,
        Err(_) => 30,
    };

    let backend = Backend::start(Duration::from_secs(5)).await?;
    let client = support::client();
    let start = Instant::now();

    let source = {
        let client = client.clone();
        let token_url = backend.token_url();
        move || {
            let fetch = support::fetch_token(client.clone(), token_url.clone());
            async move {
                println!("[{:5.2}s]   fetching a token...", secs(start));
                let token = fetch.await?;
                println!("[{:5.2}s]   ...got a new token", secs(start));
                Ok::<_, BoxError>(token)
            }
        }
    };

    let mut svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::new(source))
        .service(client);

    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    // A slow request should not be followed by a burst of catch-up requests.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);

    let mut rejected = 0;
    for _ in 0..seconds {
        ticks.tick().await;
        let sent = Instant::now();
        let request = Request::get(backend.protected_url()).body(Full::<Bytes>::default())?;
        let response = svc.ready().await?.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "[{:5.2}s] {status} {} ({} ms)",
            secs(start),
            String::from_utf8_lossy(&body),
            sent.elapsed().as_millis()
        );
        if status != StatusCode::OK {
            rejected += 1;
        }
    }

    println!(
        "{seconds} requests, {rejected} rejected, {} tokens fetched",
        backend.fetch_count()
    );
    if rejected > 0 {
        return Err(format!("{rejected} requests were rejected").into());
    }
    Ok(())
}

fn secs(start: Instant) -> f64 {
    start.elapsed().as_secs_f64()
}
