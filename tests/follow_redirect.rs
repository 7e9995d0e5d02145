//! The layer with tower-http's `FollowRedirect`: what reaches each hop of a
//! redirect chain, for the two orders the composition docs discuss.
//!
//! These tests pin tower-http's behaviour (0.6): its `FilterCredentials`
//! policy compares each hop with the one before it, and rebuilds every hop
//! from the original request's headers. So a hop from our host to another
//! origin is stripped, but a further hop within that other origin gets the
//! original `Authorization` back.

use std::sync::{Arc, Mutex};

use http::header::{AUTHORIZATION, LOCATION};
use http::{Request, Response, StatusCode};
use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
use tower_bearer::{BearerAuthLayer, Scope, Token, TokenCache};
use tower_http::follow_redirect::FollowRedirectLayer;

/// Each hop as `(uri, carried a token)`.
type Hops = Arc<Mutex<Vec<(String, bool)>>>;

/// `api.example.com/same` redirects within the API, `/away` to a third party
/// that redirects once more within itself; everything else answers 200.
fn servers(
    hops: Hops,
) -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    service_fn(move |request: Request<String>| {
        let uri = request.uri().to_string();
        let carried = request.headers().contains_key(AUTHORIZATION);
        hops.lock().unwrap().push((uri.clone(), carried));
        let location = match uri.as_str() {
            "https://api.example.com/same" => Some("https://api.example.com/done"),
            "https://api.example.com/away" => Some("https://third.example/a"),
            "https://third.example/a" => Some("https://third.example/b"),
            _ => None,
        };
        async move {
            let mut response = Response::new(String::new());
            if let Some(location) = location {
                *response.status_mut() = StatusCode::TEMPORARY_REDIRECT;
                response
                    .headers_mut()
                    .insert(LOCATION, location.parse().unwrap());
            }
            Ok::<_, BoxError>(response)
        }
    })
}

fn cache() -> TokenCache {
    TokenCache::new(|| async { Ok::<_, std::io::Error>(Token::new("abcd1234")) })
}

async fn follow<S>(client: S, uri: &str) -> Result<StatusCode, BoxError>
where
    S: tower::Service<Request<String>, Response = Response<String>>,
    S::Error: Into<BoxError>,
{
    let request = Request::get(uri).body(String::new())?;
    let response = client.oneshot(request).await.map_err(Into::into)?;
    Ok(response.status())
}

fn hops(hops: &Hops) -> Vec<(String, bool)> {
    std::mem::take(&mut *hops.lock().unwrap())
}

fn hop(uri: &str, carried: bool) -> (String, bool) {
    (uri.to_owned(), carried)
}

#[tokio::test]
async fn outside_follow_redirect_only_the_first_cross_origin_hop_is_stripped(
) -> Result<(), BoxError> {
    let seen = Hops::default();
    let client = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache()))
        .layer(FollowRedirectLayer::new())
        .service(servers(seen.clone()));

    // Same origin: the token follows.
    assert_eq!(
        follow(client.clone(), "https://api.example.com/same").await?,
        StatusCode::OK
    );
    assert_eq!(
        hops(&seen),
        [
            hop("https://api.example.com/same", true),
            hop("https://api.example.com/done", true)
        ]
    );

    // To another origin: stripped on that hop, but tower-http rebuilds the
    // next hop, within the other origin, from the original headers: the
    // third origin gets the token. This pins that gap, which is why the
    // layer belongs inside `FollowRedirect` (the next test).
    assert_eq!(
        follow(client, "https://api.example.com/away").await?,
        StatusCode::OK
    );
    assert_eq!(
        hops(&seen),
        [
            hop("https://api.example.com/away", true),
            hop("https://third.example/a", false),
            hop("https://third.example/b", true),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn inside_follow_redirect_a_scope_judges_every_hop() -> Result<(), BoxError> {
    let seen = Hops::default();
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(BearerAuthLayer::from_cache(cache()).scope(Scope::new().hosts(["api.example.com"])))
        .service(servers(seen.clone()));

    assert_eq!(
        follow(client.clone(), "https://api.example.com/same").await?,
        StatusCode::OK
    );
    assert_eq!(
        hops(&seen),
        [
            hop("https://api.example.com/same", true),
            hop("https://api.example.com/done", true)
        ]
    );

    assert_eq!(
        follow(client, "https://api.example.com/away").await?,
        StatusCode::OK
    );
    assert_eq!(
        hops(&seen),
        [
            hop("https://api.example.com/away", true),
            hop("https://third.example/a", false),
            hop("https://third.example/b", false),
        ]
    );
    Ok(())
}

#[tokio::test]
async fn inside_follow_redirect_without_a_scope_every_hop_gets_the_token() -> Result<(), BoxError> {
    let seen = Hops::default();
    let client = ServiceBuilder::new()
        .layer(FollowRedirectLayer::new())
        .layer(BearerAuthLayer::from_cache(cache()))
        .service(servers(seen.clone()));

    assert_eq!(
        follow(client, "https://api.example.com/away").await?,
        StatusCode::OK
    );
    assert!(hops(&seen).iter().all(|(_, carried)| *carried));
    Ok(())
}
