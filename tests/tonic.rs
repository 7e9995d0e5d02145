//! The layer in front of a tonic `Channel`, calling a real gRPC health
//! service over loopback that checks the `authorization` metadata.

#[path = "../examples/support/grpc.rs"]
mod grpc;

use std::error::Error;
use std::time::Duration;

use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tower::{BoxError, ServiceBuilder};
use tower_bearer::{BearerAuth, BearerAuthLayer, TokenCache, TokenError, TokenErrorKind};

use grpc::Issuer;

type Client = HealthClient<BearerAuth<Channel>>;

fn client(channel: Channel, cache: &TokenCache) -> Client {
    HealthClient::new(
        ServiceBuilder::new()
            .layer(BearerAuthLayer::from_cache(cache.clone()))
            .service(channel),
    )
}

/// One health check of the whole server.
async fn check(client: &mut Client) -> Result<ServingStatus, Status> {
    let response = client.check(HealthCheckRequest::default()).await?;
    Ok(response.into_inner().status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_on_clones_of_a_channel_share_one_fetch() -> Result<(), BoxError> {
    // The latency keeps the fetch in flight while all 200 calls arrive;
    // the waits count below checks that they did overlap.
    let issuer = Issuer::new(Duration::from_secs(3600), Duration::from_millis(100));
    let (addr, server) = grpc::serve(&issuer).await?;
    let cache = TokenCache::new(issuer.source());
    // The Channel is a Buffer: a clone that was not made ready panics if
    // called, so every call must go through the instance it made ready.
    let client = client(grpc::channel(addr).await?, &cache);

    let mut calls = JoinSet::new();
    for _ in 0..200 {
        let mut client = client.clone();
        calls.spawn(async move { check(&mut client).await });
    }
    while let Some(joined) = calls.join_next().await {
        assert_eq!(joined??, ServingStatus::Serving);
    }
    assert_eq!(issuer.issued(), 1);
    assert_eq!(issuer.checked(), 200);
    let stats = cache.stats();
    assert_eq!((stats.fetches, stats.waits), (1, 200), "{stats:?}");
    server.abort();
    Ok(())
}

/// tonic turns the layer's `BoxError` into a `Status` with
/// `Status::from_error`: code `Unknown`, the `TokenError`'s message, and the
/// `TokenError` as its source.
#[tokio::test]
async fn a_token_failure_reaches_the_caller_as_a_status() -> Result<(), BoxError> {
    let issuer = Issuer::new(Duration::from_secs(3600), Duration::ZERO);
    issuer.set_failing(true);
    let (addr, server) = grpc::serve(&issuer).await?;
    let cache = TokenCache::new(issuer.source());
    let mut client = client(grpc::channel(addr).await?, &cache);

    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(
        status.message(),
        "token fetch failed: identity provider unavailable"
    );
    let error = status
        .source()
        .unwrap()
        .downcast_ref::<TokenError>()
        .unwrap();
    assert_eq!(error.kind(), TokenErrorKind::Fetch);
    assert_eq!(
        error.source().unwrap().to_string(),
        "identity provider unavailable"
    );

    // During the backoff the call fails at once, with its own message.
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unknown);
    assert!(
        status
            .message()
            .starts_with("token fetch is backing off (next try in "),
        "{}",
        status.message()
    );
    assert_eq!(issuer.checked(), 0, "no call was sent without a token");
    server.abort();
    Ok(())
}

/// The documented one-line mapping (`tower_bearer::error`): a transient
/// failure reaches the caller as `UNAVAILABLE`, a permanent one as
/// `UNAUTHENTICATED`, each with the summary of its cause.
#[tokio::test]
async fn mapped_token_failures_are_unavailable_or_unauthenticated() -> Result<(), BoxError> {
    struct Refused;
    impl tower_bearer::TokenSource for Refused {
        type Error = std::io::Error;
        type Future = std::future::Ready<Result<tower_bearer::Token, std::io::Error>>;
        fn fetch(&self) -> Self::Future {
            std::future::ready(Err(std::io::Error::other("the client was rejected")))
        }
        fn retry_hint(_: &std::io::Error) -> tower_bearer::RetryHint {
            tower_bearer::RetryHint::Permanent
        }
    }
    fn to_status(error: BoxError) -> BoxError {
        match error.downcast::<TokenError>() {
            Ok(error) => Box::new(Status::new(error.grpc_code().into(), error.to_string())),
            Err(error) => error,
        }
    }

    let issuer = Issuer::new(Duration::from_secs(3600), Duration::ZERO);
    issuer.set_failing(true);
    let (addr, server) = grpc::serve(&issuer).await?;
    let channel = grpc::channel(addr).await?;
    for (cache, code, cause) in [
        (
            TokenCache::new(issuer.source()),
            Code::Unavailable,
            "identity provider unavailable",
        ),
        (
            TokenCache::new(Refused),
            Code::Unauthenticated,
            "the client was rejected",
        ),
    ] {
        let mut client = HealthClient::new(
            ServiceBuilder::new()
                .map_err(to_status)
                .layer(BearerAuthLayer::from_cache(cache))
                .service(channel.clone()),
        );
        let status = client
            .check(HealthCheckRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert_eq!(status.message(), format!("token fetch failed: {cause}"));
    }
    server.abort();
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_is_refreshed() -> Result<(), BoxError> {
    // A 60 s token: due at 30 s, no longer served from 54 s. The server
    // checks expiry on the same paused clock.
    let issuer = Issuer::new(Duration::from_secs(60), Duration::from_millis(10));
    let (addr, server) = grpc::serve(&issuer).await?;
    let cache = TokenCache::new(issuer.source());
    let mut client = client(grpc::channel(addr).await?, &cache);

    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(issuer.issued(), 1);

    // Idle through the due window: the next call waits for a new token.
    tokio::time::sleep(Duration::from_secs(35)).await;
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(issuer.issued(), 2);
    assert_eq!(cache.stats().waits, 2);

    // In the due window, the call goes out with the current token and a
    // refresh runs behind it.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(issuer.issued(), 3);
    assert_eq!(cache.stats().waits, 2);
    server.abort();
    Ok(())
}

/// A gRPC server rejects a call with `UNAUTHENTICATED` in an HTTP 200
/// response, so the plain layer, which evicts on HTTP 401 only, keeps the
/// token; a caller without `BearerAuthLayer::grpc()` (`tests/grpc.rs`) can
/// evict it with `TokenCache::invalidate`.
#[tokio::test]
async fn a_rejected_call_is_unauthenticated_and_the_caller_evicts() -> Result<(), BoxError> {
    let issuer = Issuer::new(Duration::from_secs(3600), Duration::ZERO);
    let (addr, server) = grpc::serve(&issuer).await?;
    let cache = TokenCache::new(issuer.source());
    let mut client = client(grpc::channel(addr).await?, &cache);
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);

    issuer.revoke_all();
    let status = check(&mut client).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    assert_eq!(status.message(), "unknown token");
    assert_eq!(cache.stats().invalidations, 0);

    let rejected = cache.token().await?;
    assert!(cache.invalidate(&rejected));
    assert_eq!(check(&mut client).await?, ServingStatus::Serving);
    assert_eq!(issuer.issued(), 2);
    server.abort();
    Ok(())
}
