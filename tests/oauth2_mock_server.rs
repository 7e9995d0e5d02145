//! `ClientCredentials` against a real third-party OAuth2 server: the npm
//! package `oauth2-mock-server`, run by `tests/fixtures/oauth2-server`, with a
//! protected resource that verifies every token's signature (against the
//! server's JWKS), issuer and expiry.
//!
//! Needs Node 20.19+; the first test to start the server runs `npm ci` in
//! the fixture (see `tests/common/idp.rs`).
#![cfg(feature = "oauth2")]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use tokio::task::JoinSet;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bearer::oauth2::{self, ClientAuth, ClientCredentials, ErrorKind};
use tower_bearer::{BearerAuth, BearerAuthLayer, TokenError, TokenErrorKind};

mod common;
use common::idp::{get, http_client, HttpClient, MockIdp, CLIENT_ID};

fn client(source: ClientCredentials) -> BearerAuth<HttpClient> {
    ServiceBuilder::new()
        .layer(BearerAuthLayer::new(source))
        .service(http_client())
}

#[tokio::test]
async fn a_token_is_fetched_and_accepted_by_a_server_that_verifies_it() {
    for auth in [ClientAuth::Basic, ClientAuth::Post] {
        let idp = MockIdp::start(3600);
        let mut client = client(
            idp.source()
                .scope("orders:read orders:write")
                .auth_method(auth),
        );

        let (status, body) = get(&mut client, &idp.protected_url).await.unwrap();
        assert_eq!(status, StatusCode::OK, "{auth:?}: {body}");
        assert_eq!(body["client_id"], CLIENT_ID);
        assert_eq!(body["scope"], "orders:read orders:write");
        let (status, _) = get(&mut client, &idp.protected_url).await.unwrap();
        assert_eq!(status, StatusCode::OK);

        let stats = idp.stats().await;
        assert_eq!(stats["tokens_issued"], 1, "{stats}");
        assert_eq!(stats["protected_ok"], 2, "{stats}");
        assert_eq!(stats["protected_rejected"], 0, "{stats}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_requests_at_cold_start_make_one_token_request() {
    let idp = MockIdp::start(3600);
    let client = client(idp.source());

    let mut requests = JoinSet::new();
    for _ in 0..100 {
        let mut client = client.clone();
        let url = idp.protected_url.clone();
        requests.spawn(async move { get(&mut client, &url).await });
    }
    while let Some(result) = requests.join_next().await {
        let (status, body) = result.unwrap().unwrap();
        assert_eq!(status, StatusCode::OK, "{body}");
    }

    let stats = idp.stats().await;
    assert_eq!(stats["token_requests"], 1, "{stats}");
    assert_eq!(stats["protected_ok"], 100, "{stats}");
}

/// Real time, unavoidably: the server checks `exp` against its own clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_expiring_every_two_seconds_are_renewed_in_time() {
    use std::sync::{Arc, Mutex};

    let idp = MockIdp::start(2);
    // The Authorization header of every request, in the order they are
    // sent, recorded below the layer.
    let sent = Arc::new(Mutex::new(Vec::<String>::new()));
    let layer = BearerAuthLayer::new(idp.source());
    let cache = layer.cache().clone();
    let client = ServiceBuilder::new()
        .layer(layer)
        .map_request({
            let sent = sent.clone();
            move |request: Request<Full<Bytes>>| {
                let auth = request.headers()[http::header::AUTHORIZATION]
                    .to_str()
                    .unwrap()
                    .to_owned();
                sent.lock().unwrap().push(auth);
                request
            }
        })
        .service(http_client());

    // Two callers, each sending a request every 25 ms for 5 s.
    let mut callers = JoinSet::new();
    for _ in 0..2 {
        let mut client = client.clone();
        let url = idp.protected_url.clone();
        callers.spawn(async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(5);
            while tokio::time::Instant::now() < end {
                let request = Request::get(&url).body(Full::default()).unwrap();
                let response = client.ready().await.unwrap().call(request).await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
    }
    while let Some(caller) = callers.join_next().await {
        caller.unwrap();
    }

    let stats = idp.stats().await;
    assert_eq!(stats["protected_rejected"], 0, "{stats}");
    let issued = stats["tokens_issued"].as_u64().unwrap();
    // Due at half of each 2 s lifetime: about 5 over 5 s.
    assert!((4..=7).contains(&issued), "{stats}");
    assert_eq!(cache.stats().fetches, issued, "{stats}");

    // Every token issued was used, and one at a time: once a token's
    // successor has been sent, the token is never sent again.
    let sent = sent.lock().unwrap();
    let mut order: Vec<&str> = Vec::new();
    for auth in sent.iter() {
        match order.iter().position(|seen| seen == auth) {
            Some(at) => assert_eq!(at, order.len() - 1, "{auth} came back after its successor"),
            None => order.push(auth),
        }
    }
    assert_eq!(order.len() as u64, issued, "distinct tokens sent");
}

#[tokio::test]
async fn a_wrong_secret_is_a_permanent_error() {
    let idp = MockIdp::start(3600);
    let mut client = client(ClientCredentials::new(
        &idp.token_url,
        CLIENT_ID,
        "not-the-secret",
    ));

    let error = get(&mut client, &idp.protected_url).await.unwrap_err();
    let error = error.downcast_ref::<TokenError>().expect("a TokenError");
    assert_eq!(error.kind(), TokenErrorKind::Fetch);
    assert!(error.is_permanent());
    let cause = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<oauth2::Error>())
        .expect("an oauth2::Error");
    assert_eq!(cause.kind(), ErrorKind::Rejected);
    assert_eq!(cause.status(), Some(StatusCode::UNAUTHORIZED));
    let response = cause.response().unwrap();
    assert_eq!(response.error(), "invalid_client");
    assert_eq!(response.description(), Some("Client authentication failed"));
    assert_eq!(
        cause.to_string(),
        "the token endpoint rejected the client (invalid_client, 401 Unauthorized): Client authentication failed"
    );
    assert!(!format!("{error:?} {cause}").contains("not-the-secret"));

    // The next request does not try again before the maximum backoff.
    let error = get(&mut client, &idp.protected_url).await.unwrap_err();
    let error = error.downcast_ref::<TokenError>().unwrap();
    assert_eq!(error.kind(), TokenErrorKind::BackingOff);
    assert!(error.is_permanent());
    let stats = idp.stats().await;
    assert_eq!(stats["token_requests"], 1, "{stats}");
    assert_eq!(stats["token_rejected"], 1, "{stats}");
}
