//! A scope narrows which requests get the token; the rest pass through
//! untouched: no header, no fetch, no eviction on a 401.

mod common;

use std::time::Duration;

use common::{Echo, Script};
use http::header::{HeaderValue, AUTHORIZATION};
use http::{Method, Request, Response, StatusCode};
use tower::{service_fn, BoxError, Layer, ServiceExt};
use tower_bearer::{BearerAuth, BearerAuthLayer, Scope};

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_request_outside_the_scope_fetches_nothing_and_gets_no_header() {
    let script = Script::new(None, Duration::ZERO);
    let echo = Echo::default();
    let scope = Scope::new().require_https().hosts(["api.example.com"]);
    let client = BearerAuthLayer::from_cache(script.cache())
        .scope(scope)
        .layer(echo.clone());

    for uri in [
        "http://api.example.com/plain-text",
        "https://elsewhere.example.net/",
        "https://api.example.com.elsewhere.example.net/",
        "/a/path/only",
    ] {
        let headers = client.clone().oneshot(get(uri)).await.unwrap().into_body();
        assert!(!headers.contains_key(AUTHORIZATION), "{uri}");
    }
    assert_eq!(script.fetches(), 0, "no token was needed");

    let headers = client
        .clone()
        .oneshot(get("https://API.example.com:8443/v1"))
        .await
        .unwrap()
        .into_body();
    assert_eq!(headers[AUTHORIZATION], "Bearer token-1");
    assert!(headers[AUTHORIZATION].is_sensitive());
    assert_eq!(script.fetches(), 1);
    assert_eq!(echo.calls(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_request_outside_the_scope_keeps_its_own_header_untouched() {
    let script = Script::new(None, Duration::ZERO);
    let client = BearerAuth::new(Echo::default(), script.cache())
        .scope(Scope::new().only_if(|request| request.method() == Method::POST));
    let mut request = get("https://api.example.com/");
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_static("Basic dXNlcjpwdw=="),
    );
    let headers = client.clone().oneshot(request).await.unwrap().into_body();
    assert_eq!(headers[AUTHORIZATION], "Basic dXNlcjpwdw==");

    let request = Request::post("https://api.example.com/").body(()).unwrap();
    let headers = client.oneshot(request).await.unwrap().into_body();
    assert_eq!(headers[AUTHORIZATION], "Bearer token-1");
}

#[tokio::test(start_paused = true)]
async fn a_401_outside_the_scope_evicts_nothing() {
    let script = Script::new(None, Duration::ZERO);
    let cache = script.cache();
    // A third-party host that rejects everything.
    let inner = service_fn(|request: Request<()>| async move {
        let mut response = Response::new(());
        if request.uri().host() == Some("third-party.example") {
            *response.status_mut() = StatusCode::UNAUTHORIZED;
        }
        Ok::<_, BoxError>(response)
    });
    let client = BearerAuthLayer::from_cache(cache.clone())
        .scope(Scope::new().hosts(["api.example.com"]))
        .layer(inner);

    let token = cache.token().await.unwrap();
    let response = client
        .clone()
        .oneshot(get("https://third-party.example/"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(cache.stats().invalidations, 0);
    // Still the current token: invalidating it now succeeds.
    assert!(cache.invalidate(&token));
}

#[tokio::test(start_paused = true)]
async fn an_empty_scope_is_the_default() {
    let script = Script::new(None, Duration::ZERO);
    let client = BearerAuthLayer::from_cache(script.cache())
        .scope(Scope::new())
        .layer(Echo::default());
    let headers = client
        .oneshot(get("http://anywhere/"))
        .await
        .unwrap()
        .into_body();
    assert_eq!(headers[AUTHORIZATION], "Bearer token-1");
    let debug = format!(
        "{:?}",
        BearerAuthLayer::new(|| async { Ok::<_, std::io::Error>(tower_bearer::Token::new("t")) })
            .scope(Scope::new())
    );
    assert!(debug.contains("scope: None"), "{debug}");
}

#[tokio::test(start_paused = true)]
async fn scope_and_keep_existing_combine() {
    let script = Script::new(None, Duration::ZERO);
    let client = BearerAuthLayer::from_cache(script.cache())
        .scope(Scope::new().require_https())
        .keep_existing(true)
        .layer(Echo::default());

    let mut request = get("https://api.example.com/");
    request
        .headers_mut()
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer mine"));
    let headers = client.clone().oneshot(request).await.unwrap().into_body();
    assert_eq!(headers[AUTHORIZATION], "Bearer mine");
    assert_eq!(script.fetches(), 0);

    let headers = client
        .clone()
        .oneshot(get("https://api.example.com/"))
        .await
        .unwrap()
        .into_body();
    assert_eq!(headers[AUTHORIZATION], "Bearer token-1");
    let headers = client
        .oneshot(get("http://api.example.com/"))
        .await
        .unwrap()
        .into_body();
    assert!(!headers.contains_key(AUTHORIZATION));
}
