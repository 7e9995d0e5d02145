//! `RetryOnUnauthorized` outside the bearer layer: a request rejected with 401 goes
//! out once more, with the fresh token the 401 made the cache fetch.
#![cfg(feature = "retry")]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{Request, Response, StatusCode};
use tower::{service_fn, BoxError, Service, ServiceBuilder, ServiceExt};
use tower_bearer::{BearerAuthLayer, RetryOnUnauthorized, TokenCache};

use common::Script;

/// What the server saw: the Authorization header of every request.
type Seen = Arc<Mutex<Vec<String>>>;

/// Answers 401 to the tokens in `rejected` (statuses other than 401 for
/// `other`), 200 otherwise, with the header it saw as the body.
fn server<B: Send + 'static>(
    rejected: Vec<&'static str>,
    status: StatusCode,
    seen: Seen,
) -> impl Service<Request<B>, Response = Response<String>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |request: Request<B>| {
        let auth = request.headers()[AUTHORIZATION]
            .to_str()
            .unwrap()
            .to_owned();
        seen.lock().unwrap().push(auth.clone());
        let mut response = Response::new(auth.clone());
        if rejected
            .iter()
            .any(|token| auth == format!("Bearer {token}"))
        {
            *response.status_mut() = status;
        }
        std::future::ready(Ok::<_, Infallible>(response))
    })
}

fn script() -> (Script, TokenCache) {
    let script = Script::new(Some(Duration::from_secs(3600)), Duration::ZERO);
    // Fresh tokens rejected back to back are paced (#20); a zero backoff
    // turns that off, for a test of what each rejection does.
    let cache = script.cache().backoff(Duration::ZERO, Duration::ZERO);
    (script, cache)
}

async fn send<S>(client: &mut S, body: String) -> Response<String>
where
    S: Service<Request<String>, Response = Response<String>, Error = BoxError>,
{
    client
        .ready()
        .await
        .unwrap()
        .call(Request::new(body))
        .await
        .unwrap()
}

#[tokio::test]
async fn a_401_is_retried_once_with_the_new_token() {
    let (script, cache) = script();
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");
    let seen = Seen::default();
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache))
        .service(server(
            vec!["token-1"],
            StatusCode::UNAUTHORIZED,
            seen.clone(),
        ));

    let response = send(&mut client, "payload".into()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.body(), "Bearer token-2");
    assert_eq!(*seen.lock().unwrap(), ["Bearer token-1", "Bearer token-2"]);
    assert_eq!(script.fetches(), 2);
}

#[tokio::test]
async fn a_second_401_is_returned_not_retried_again() {
    let (script, cache) = script();
    cache.token().await.unwrap();
    let seen = Seen::default();
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache))
        .service(server(
            vec!["token-1", "token-2", "token-3"],
            StatusCode::UNAUTHORIZED,
            seen.clone(),
        ));

    let response = send(&mut client, String::new()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.body(), "Bearer token-2");
    assert_eq!(*seen.lock().unwrap(), ["Bearer token-1", "Bearer token-2"]);
    assert_eq!(script.fetches(), 2);
}

#[tokio::test]
async fn every_request_has_its_own_retry() {
    let (_script, cache) = script();
    cache.token().await.unwrap();
    let seen = Seen::default();
    let rejected = Arc::new(Mutex::new(vec!["Bearer token-1".to_owned()]));
    let inner = {
        let (seen, rejected) = (seen.clone(), rejected.clone());
        service_fn(move |request: Request<String>| {
            let auth = request.headers()[AUTHORIZATION]
                .to_str()
                .unwrap()
                .to_owned();
            seen.lock().unwrap().push(auth.clone());
            let mut response = Response::new(auth.clone());
            if rejected.lock().unwrap().contains(&auth) {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache))
        .service(inner);

    assert_eq!(
        send(&mut client, String::new()).await.status(),
        StatusCode::OK
    );
    // The policy is copied per request: the one retry the first request
    // used is not missing from the second.
    rejected.lock().unwrap().push("Bearer token-2".to_owned());
    assert_eq!(
        send(&mut client, String::new()).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "Bearer token-1",
            "Bearer token-2",
            "Bearer token-2",
            "Bearer token-3"
        ]
    );
}

#[tokio::test]
async fn other_statuses_are_not_retried() {
    for status in [StatusCode::FORBIDDEN, StatusCode::INTERNAL_SERVER_ERROR] {
        let (script, cache) = script();
        let seen = Seen::default();
        let mut client = ServiceBuilder::new()
            .retry(RetryOnUnauthorized::new())
            .layer(BearerAuthLayer::from_cache(cache))
            .service(server(vec!["token-1"], status, seen.clone()));

        assert_eq!(send(&mut client, String::new()).await.status(), status);
        assert_eq!(seen.lock().unwrap().len(), 1);
        assert_eq!(script.fetches(), 1);
    }
}

/// A body that can be copied only while it is in memory.
#[derive(Debug)]
enum Body {
    Buffered(String),
    Streaming,
}

#[tokio::test]
async fn a_request_whose_body_cannot_be_copied_gets_its_401() {
    let (script, cache) = script();
    cache.token().await.unwrap();
    let seen = Seen::default();
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::cloning_body_with(
            |body: &Body| match body {
                Body::Buffered(text) => Some(Body::Buffered(text.clone())),
                Body::Streaming => None,
            },
        ))
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(server::<Body>(
            vec!["token-1"],
            StatusCode::UNAUTHORIZED,
            seen.clone(),
        ));

    let response = client
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::Streaming))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(*seen.lock().unwrap(), ["Bearer token-1"]);
    // The 401 still evicted the token: the next request has a new one.
    assert_eq!(cache.token().await.unwrap().secret(), "token-2");
    assert_eq!(script.fetches(), 2);

    // A buffered body is copied, and retried.
    seen.lock().unwrap().clear();
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::cloning_body_with(
            |body: &Body| match body {
                Body::Buffered(text) => Some(Body::Buffered(text.clone())),
                Body::Streaming => None,
            },
        ))
        .layer(BearerAuthLayer::from_cache(cache))
        .service(server::<Body>(
            vec!["token-2"],
            StatusCode::UNAUTHORIZED,
            seen.clone(),
        ));
    let response = client
        .ready()
        .await
        .unwrap()
        .call(Request::new(Body::Buffered("data".into())))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(*seen.lock().unwrap(), ["Bearer token-2", "Bearer token-3"]);
}

#[tokio::test]
async fn the_copy_keeps_method_uri_headers_and_body() {
    let (_script, cache) = script();
    cache.token().await.unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let inner = {
        let requests = requests.clone();
        service_fn(move |request: Request<String>| {
            let first = requests.lock().unwrap().is_empty();
            let (parts, body) = request.into_parts();
            requests.lock().unwrap().push((
                parts.method,
                parts.uri,
                parts.headers.get("x-trace").cloned(),
                parts.extensions.get::<u32>().copied(),
                body,
            ));
            let mut response = Response::new(String::new());
            if first {
                *response.status_mut() = StatusCode::UNAUTHORIZED;
            }
            std::future::ready(Ok::<_, Infallible>(response))
        })
    };
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache))
        .service(inner);
    let mut request = Request::put("http://api.example/items/7")
        .header("x-trace", "abc")
        .body("the body".to_owned())
        .unwrap();
    request.extensions_mut().insert(7u32);
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let requests = requests.lock().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], requests[1]);
    assert_eq!(requests[1].0, http::Method::PUT);
    assert_eq!(requests[1].4, "the body");
    assert_eq!(requests[1].3, Some(7));
}
