//! The layer in front of hyper-util's legacy client, against the examples'
//! mock backend over loopback, on tokio's paused clock (the backend checks
//! expiry on the same clock): tokens renewed as they expire, revoked tokens
//! replaced after a burst of 401s, and a scope that keeps the token from
//! another host. `hyper_loopback.rs` covers a cold burst and a single 401.

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tower::{BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::{BearerAuth, BearerAuthLayer, Scope, TokenCache};

use support::{Backend, HttpClient};

const LIFETIME: Duration = Duration::from_secs(60);

fn cache(backend: &Backend) -> TokenCache {
    let client = support::client();
    let token_url = backend.token_url();
    TokenCache::new(move || support::fetch_token(client.clone(), token_url.clone()))
}

fn layered(layer: BearerAuthLayer) -> BearerAuth<HttpClient> {
    ServiceBuilder::new()
        .layer(layer)
        .service(support::client())
}

/// One GET: status and body.
async fn get(client: &BearerAuth<HttpClient>, uri: Uri) -> Result<(StatusCode, String), BoxError> {
    let request = Request::get(uri).body(Full::<Bytes>::default())?;
    let response = client.clone().oneshot(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8(body.to_vec())?))
}

fn ok(n: u64) -> (StatusCode, String) {
    (StatusCode::OK, format!("hello, token #{n}"))
}

#[tokio::test(start_paused = true)]
async fn tokens_are_renewed_as_they_expire() -> Result<(), BoxError> {
    // 60 s tokens: due at 30 s, no longer served from 54 s.
    let backend = Backend::start(LIFETIME).await?;
    let cache = cache(&backend);
    let client = layered(BearerAuthLayer::from_cache(cache.clone()));
    let url = backend.protected_url();

    assert_eq!(get(&client, url.clone()).await?, ok(1));
    tokio::time::sleep(Duration::from_secs(29)).await;
    assert_eq!(get(&client, url.clone()).await?, ok(1));
    assert_eq!(backend.fetch_count(), 1);

    // Idle past the expiry point: the next request waits for token #2, which
    // the backend accepts; it would have rejected #1 a few seconds later.
    tokio::time::sleep(Duration::from_secs(26)).await;
    assert_eq!(get(&client, url.clone()).await?, ok(2));
    assert_eq!(backend.fetch_count(), 2);
    assert_eq!(cache.stats().waits, 2);

    // In the due window, #2 is still sent while #3 is fetched behind it.
    tokio::time::sleep(Duration::from_secs(40)).await;
    assert_eq!(get(&client, url.clone()).await?, ok(2));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(get(&client, url.clone()).await?, ok(3));
    assert_eq!(backend.fetch_count(), 3);
    assert_eq!(cache.stats().waits, 2, "nobody waited for #3");
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_401s_for_a_revoked_token_costs_one_fetch() -> Result<(), BoxError> {
    let backend = Backend::start(LIFETIME).await?;
    let cache = cache(&backend);
    let client = layered(BearerAuthLayer::from_cache(cache.clone()));
    let url = backend.protected_url();
    assert_eq!(get(&client, url.clone()).await?, ok(1));

    backend.revoke_all();
    let mut requests = JoinSet::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), url.clone());
        requests.spawn(async move { get(&client, url).await });
    }
    let mut rejected = 0;
    while let Some(joined) = requests.join_next().await {
        let (status, body) = joined??;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::UNAUTHORIZED, "unknown token")
        );
        rejected += 1;
    }
    assert_eq!(rejected, 20);
    assert_eq!(cache.stats().invalidations, 1);

    let mut requests = JoinSet::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), url.clone());
        requests.spawn(async move { get(&client, url).await });
    }
    while let Some(joined) = requests.join_next().await {
        assert_eq!(joined??, ok(2));
    }
    assert_eq!(backend.fetch_count(), 2);
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_host_outside_the_scope_never_sees_the_token() -> Result<(), BoxError> {
    let backend = Backend::start(LIFETIME).await?;
    let cache = cache(&backend);
    let client = layered(
        BearerAuthLayer::from_cache(cache.clone()).scope(Scope::new().hosts(["127.0.0.1"])),
    );

    // The same server under another name stands in for a third party.
    let port = backend.protected_url().port_u16().ok_or("no port")?;
    let elsewhere: Uri = format!("http://localhost:{port}/protected").parse()?;
    assert_eq!(
        get(&client, elsewhere).await?,
        (StatusCode::UNAUTHORIZED, "missing bearer token".to_owned())
    );
    assert_eq!(backend.fetch_count(), 0);

    assert_eq!(get(&client, backend.protected_url()).await?, ok(1));
    assert_eq!(cache.stats().invalidations, 0);
    Ok(())
}
