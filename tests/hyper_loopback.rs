//! The layer in front of a real hyper client, against the examples' mock
//! backend over loopback HTTP.

#[path = "../examples/support/mod.rs"]
mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::task::JoinSet;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_bearer::BearerAuthLayer;

use support::{Backend, HttpClient};

fn layered(backend: &Backend) -> tower_bearer::BearerAuth<HttpClient> {
    let client = support::client();
    let token_url = backend.token_url();
    let source = {
        let client = client.clone();
        move || support::fetch_token(client.clone(), token_url.clone())
    };
    ServiceBuilder::new()
        .layer(BearerAuthLayer::new(source))
        .service(client)
}

/// One request to the protected resource; the response head and its body.
async fn get<S>(svc: &mut S, backend: &Backend) -> Result<(Response<()>, String), BoxError>
where
    S: Service<Request<Full<Bytes>>, Response = Response<Incoming>, Error = BoxError>,
{
    let request = Request::get(backend.protected_url()).body(Full::default())?;
    let response = svc.ready().await?.call(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((
        Response::from_parts(parts, ()),
        String::from_utf8(body.to_vec())?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_one_fetch() -> Result<(), BoxError> {
    // The latency keeps the fetch in flight while all 50 requests arrive;
    // the waits count below checks that they did overlap.
    let backend = Backend::start(Duration::from_secs(60))
        .await?
        .with_latency(Duration::from_millis(100));
    let svc = layered(&backend);
    let cache = svc.cache().clone();

    let mut requests = JoinSet::new();
    for _ in 0..50 {
        let mut svc = svc.clone();
        let request = Request::get(backend.protected_url()).body(Full::<Bytes>::default())?;
        requests.spawn(async move {
            let response = svc.ready().await?.call(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, BoxError>((status, body))
        });
    }
    while let Some(joined) = requests.join_next().await {
        let (status, body) = joined??;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "hello, token #1");
    }

    assert_eq!(backend.fetch_count(), 1);
    // Every request waited on the one fetch: none came late to a cached
    // token, which would pass the counts above without testing sharing.
    let stats = cache.stats();
    assert_eq!((stats.fetches, stats.waits), (1, 50), "{stats:?}");
    Ok(())
}

#[tokio::test]
async fn revoked_token_is_replaced_after_a_401() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let mut svc = layered(&backend);

    let (response, body) = get(&mut svc, &backend).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "hello, token #1");

    backend.revoke_all();

    // The 401 reaches the caller as the backend sent it: the layer does not
    // retry or rewrite it, it only drops the token.
    let (response, body) = get(&mut svc, &backend).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        response.headers().get(header::WWW_AUTHENTICATE),
        Some(&header::HeaderValue::from_static(
            r#"Bearer error="invalid_token""#
        ))
    );
    assert_eq!(body, "unknown token");

    let (response, body) = get(&mut svc, &backend).await?;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "hello, token #2");
    assert_eq!(backend.fetch_count(), 2);
    Ok(())
}

#[tokio::test]
async fn backend_rejects_requests_without_the_layer() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60)).await?;
    let mut client = support::client();

    let request = Request::get(backend.protected_url()).body(Full::default())?;
    let response = client.ready().await?.call(request).await?;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(backend.fetch_count(), 0);
    Ok(())
}
