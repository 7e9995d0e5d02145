//! A tonic gRPC client whose `Channel` is wrapped in `BearerAuthLayer`,
//! calling a local `grpc.health.v1.Health` server that checks the
//! `authorization` metadata. Tokens live 2 seconds. Midway, the server
//! revokes every token: the call it rejects with `UNAUTHENTICATED` evicts
//! the token and is sent once more with a new one.
//!
//! ```text
//! cargo run --example tonic_health
//! ```

#[path = "support/grpc.rs"]
mod grpc;

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tonic::body::Body;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::{BoxError, ServiceBuilder};
use tower_bearer::grpc::{ReplayBody, RetryOnUnauthenticated};
use tower_bearer::{BearerAuthLayer, TokenCache};

use grpc::Issuer;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let issuer = Issuer::new(Duration::from_secs(2), Duration::from_millis(50));
    let (addr, server) = grpc::serve(&issuer).await?;
    println!("gRPC health server on {addr}");
    let start = Instant::now();

    // Interceptors are synchronous and cannot wait for a token; a tower
    // layer around the Channel can.
    let cache = TokenCache::new(issuer.source());
    let channel = grpc::channel(addr).await?;
    // `.grpc()`: UNAUTHENTICATED evicts the token, as a 401 does. The retry
    // sends a rejected call once more with a new token; tonic's request
    // body is recorded (up to 64 KiB) so that it can be sent again.
    let client = HealthClient::new(
        ServiceBuilder::new()
            .map_request(|request: http::Request<Body>| {
                request.map(|body| ReplayBody::new(body, 64 * 1024))
            })
            .retry(RetryOnUnauthenticated::replaying())
            .map_request(|request: http::Request<ReplayBody<Body>>| request.map(Body::new))
            .layer(BearerAuthLayer::from_cache(cache.clone()).grpc())
            .service(channel),
    );

    // 100 concurrent calls on clones of one client: one token fetch.
    let mut calls = JoinSet::new();
    for _ in 0..100 {
        let mut client = client.clone();
        calls.spawn(async move { client.check(HealthCheckRequest::default()).await });
    }
    let mut serving = 0;
    while let Some(call) = calls.join_next().await {
        call??;
        serving += 1;
    }
    println!(
        "[{:4.1}s] {serving} concurrent checks answered, {} token(s) issued",
        start.elapsed().as_secs_f64(),
        issuer.issued()
    );

    // One call every 400 ms for 3 s: the token is renewed as it comes due.
    let mut client = client.clone();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let status = client.check(HealthCheckRequest::default()).await?;
        println!(
            "[{:4.1}s] {:?}, {} token(s) issued so far",
            start.elapsed().as_secs_f64(),
            status.into_inner().status(),
            issuer.issued()
        );
    }

    // The server revokes every token. The next call is rejected with
    // UNAUTHENTICATED, which evicts the token, and is retried with a new one.
    issuer.revoke_all();
    let issued = issuer.issued();
    let status = client.check(HealthCheckRequest::default()).await?;
    println!(
        "[{:4.1}s] after a revocation: {:?}, {} new token, {} eviction(s)",
        start.elapsed().as_secs_f64(),
        status.into_inner().status(),
        issuer.issued() - issued,
        cache.stats().invalidations
    );

    // When the identity provider is down, the call fails with a Status.
    issuer.set_failing(true);
    cache.invalidate(&cache.token().await?);
    let status = client
        .check(HealthCheckRequest::default())
        .await
        .unwrap_err();
    println!(
        "identity provider down: {:?} \"{}\"",
        status.code(),
        status.message()
    );

    println!("{:?}", cache.stats());
    server.abort();
    Ok(())
}
