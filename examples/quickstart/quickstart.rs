//! The whole story in ten seconds: `ClientCredentials` behind
//! `BearerAuthLayer` and `RetryOnUnauthorized`, against a local OAuth2 server that
//! issues 6-second tokens and takes 300 ms to answer.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! It prints each phase of a token as it happens: fresh (served at once),
//! due (the old token still served while one background refresh runs),
//! expired (requests wait for the one refresh); then a `401` answered by a
//! retry with a fresh token, and a failed token request shared by every
//! request that waited on it. It exits with an error if any of it does not
//! happen as told.

mod server;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant};
use tower::{ServiceBuilder, ServiceExt};
use tower_bearer::oauth2::ClientCredentials;
use tower_bearer::{BearerAuthLayer, BoxError, RetryOnUnauthorized, TokenError};

use server::Server;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let server = Server::start(6, Duration::from_millis(300)).await?;
    let token_url = format!("http://{}/token", server.addr);
    let orders = format!("http://{}/orders", server.addr);
    println!("OAuth2 server at {token_url}: 6 s tokens, 300 ms a token request");
    println!("with the defaults a 6 s token is due 3.0 s after its fetch began (half its life),");
    println!("and expired at 4.4 s (a margin of 0.6 s, and 1 s for `expires_in`'s rounding)\n");

    // The client: a hyper-util client, the token layer, and a retry after a 401.
    let source = ClientCredentials::try_new(&token_url, "quickstart", "s3cret")?;
    let client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::new(source))
        .service(Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>());
    let get = || {
        let client = client.clone();
        let orders = orders.clone();
        async move {
            let request = Request::get(orders).body(Full::default())?;
            let response = client.oneshot(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            check(
                status == StatusCode::OK,
                &format!("the API answered {status}"),
            )?;
            Ok::<_, BoxError>(String::from_utf8_lossy(&body).into_owned())
        }
    };
    let start = Instant::now();
    let log = |what: &str| println!("[{:4.1} s] {what}", start.elapsed().as_secs_f64());
    let at = |secs: f64| sleep_until(start + Duration::from_secs_f64(secs));

    println!("== cold: no token yet, three requests at once wait for one token request");
    for (token, waited) in burst(3, &get).await? {
        log(&format!("200 with {token}, after {waited} ms"));
        check(token == "token-1", "the burst shares the first token")?;
    }
    check(
        server.token_requests() == 1,
        "one token request for the burst",
    )?;

    at(1.0).await;
    println!("\n== fresh: the cached token, at once, no token request");
    let (token, took) = timed(get()).await?;
    log(&format!("200 with {token}, after {took} ms"));
    check(token == "token-1", "a fresh token is served")?;
    check(server.token_requests() == 1, "no token request while fresh")?;

    at(3.2).await;
    println!("\n== due: the old token is served at once, and one refresh runs in the background");
    let (token, took) = timed(get()).await?;
    log(&format!(
        "200 with {token}, after {took} ms: this request started the refresh"
    ));
    check(token == "token-1", "a due token is still served")?;
    let (token, took) = timed(get()).await?;
    log(&format!(
        "200 with {token}, after {took} ms: the refresh is still running"
    ));
    check(
        token == "token-1",
        "the old token is served during the refresh",
    )?;
    at(3.8).await;
    let (token, took) = timed(get()).await?;
    log(&format!(
        "200 with {token}, after {took} ms: the refresh has landed"
    ));
    check(token == "token-2", "the refreshed token is served")?;
    check(
        server.token_requests() == 2,
        "one token request for the refresh",
    )?;

    // token-2's fetch began at 3.2 s: expired at 7.6 s. No request comes
    // while it is due, so nothing refreshes it.
    at(8.0).await;
    println!("\n== expired: three requests at once wait for the one refresh");
    for (token, waited) in burst(3, &get).await? {
        log(&format!("200 with {token}, after {waited} ms"));
        check(token == "token-3", "the waiters share the new token")?;
    }
    check(
        server.token_requests() == 3,
        "one token request for the waiters",
    )?;

    println!("\n== 401: the API revokes every token; the 401 evicts token-3, and");
    println!("   RetryOnUnauthorized sends the request once more, with a token fetched for it");
    server.revoke_all();
    let (token, took) = timed(get()).await?;
    log(&format!("200 with {token}, after {took} ms"));
    check(token == "token-4", "the retry carries a new token")?;

    // token-4 serves a second before the API revokes it too: a token
    // rejected right after its fetch, twice in a row, would be the resource
    // rejecting fresh tokens, and its next fetch would wait for a backoff
    // (docs/design.md, "Never hammer the identity provider").
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("\n== failure: the token endpoint is down (503) and the API revokes every token;");
    println!("   three requests at once are rejected, retried, and wait for one token request");
    server.set_down(true);
    server.revoke_all();
    let mut requests = JoinSet::new();
    for _ in 0..3 {
        requests.spawn(get());
    }
    let mut retry_at = None;
    while let Some(result) = requests.join_next().await {
        let error = match result? {
            Ok(token) => return Err(format!("expected a failure, got {token}").into()),
            Err(error) => error,
        };
        let error = error.downcast::<TokenError>()?;
        log(&format!("error: {error}"));
        retry_at = error.retry_at();
    }
    check(
        server.token_requests() == 5,
        "one token request for the three",
    )?;
    let error = get().await.expect_err("the cache is backing off");
    log(&format!("error: {error}"));
    log("  (no token request: the next one waits for a backoff of 0.5 s to 1 s)");
    check(
        server.token_requests() == 5,
        "no token request while backing off",
    )?;

    server.set_down(false);
    sleep_until(retry_at.ok_or("a transient failure has an end to its backoff")?).await;
    let (token, took) = timed(get()).await?;
    log(&format!(
        "the server is back, the backoff over: 200 with {token}, after {took} ms"
    ));
    check(token == "token-6", "a new token after the backoff")?;
    println!("\n{} token requests in all", server.token_requests());
    Ok(())
}

/// `n` requests at once: the token each was served and how long it took.
async fn burst<F, Fut>(n: usize, get: &F) -> Result<Vec<(String, u128)>, BoxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<String, BoxError>> + Send + 'static,
{
    let mut requests = JoinSet::new();
    for _ in 0..n {
        requests.spawn(timed(get()));
    }
    let mut served = Vec::new();
    while let Some(result) = requests.join_next().await {
        served.push(result??);
    }
    Ok(served)
}

async fn timed(
    request: impl std::future::Future<Output = Result<String, BoxError>>,
) -> Result<(String, u128), BoxError> {
    let start = Instant::now();
    let token = request.await?;
    Ok((token, start.elapsed().as_millis()))
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("the story did not happen as told: {what}").into())
    }
}
