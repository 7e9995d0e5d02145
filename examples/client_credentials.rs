//! OAuth2 client credentials in one line: `ClientCredentials` as the token
//! source of `BearerAuthLayer`, with `RetryOnUnauthorized` in front.
//!
//! By default it runs against the examples' local mock backend:
//!
//! ```text
//! cargo run --example client_credentials
//! ```
//!
//! Against a real identity provider, give its token URL and your client's
//! credentials (and, if you like, a space-separated SCOPE, an AUDIENCE and
//! an API_URL to call with the token):
//!
//! ```text
//! TOKEN_URL=https://idp.example.com/oauth/token CLIENT_ID=... CLIENT_SECRET=... \
//!     SCOPE="orders:read" cargo run --example client_credentials
//! ```

mod support;

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bearer::oauth2::ClientCredentials;
use tower_bearer::{BearerAuthLayer, RetryOnUnauthorized, TokenCache};

use support::Backend;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    match (
        std::env::var("TOKEN_URL"),
        std::env::var("CLIENT_ID"),
        std::env::var("CLIENT_SECRET"),
    ) {
        (Ok(url), Ok(id), Ok(secret)) => real_idp(url, id, secret).await,
        _ => local().await,
    }
}

/// Against the local mock backend: tokens live 60 s, and only
/// `demo-client` / `demo-secret` gets one.
async fn local() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60))
        .await?
        .require_client("demo-client", "demo-secret")
        .with_latency(Duration::from_millis(50));
    println!("token endpoint: {}", backend.token_url());

    // The one line: a token source for the layer.
    let source = ClientCredentials::try_new(
        backend.token_url().to_string(),
        "demo-client",
        "demo-secret",
    )?;
    println!("source: {source:?}");

    let client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::new(source))
        .service(support::client());

    // Ten requests at once on a cold cache share one token request.
    let mut burst = JoinSet::new();
    for _ in 0..10 {
        let client = client.clone();
        let request = get(backend.protected_url())?;
        burst.spawn(async move { read(client.oneshot(request).await?).await });
    }
    while let Some(joined) = burst.join_next().await {
        let (status, body) = joined??;
        expect(status, StatusCode::OK, &body)?;
    }
    println!(
        "10 concurrent requests: 200 OK, {} token request(s)",
        backend.fetch_count()
    );
    if backend.fetch_count() != 1 {
        return Err("the burst should have shared one token request".into());
    }

    // The server revokes every token: the 401 evicts ours, and RetryOnUnauthorized
    // sends the request again with a new one.
    backend.revoke_all();
    let (status, body) = read(
        client
            .clone()
            .oneshot(get(backend.protected_url())?)
            .await?,
    )
    .await?;
    println!("after a revocation: {status} {body} (retried once with a new token)");
    expect(status, StatusCode::OK, &body)?;
    if backend.fetch_count() != 2 {
        return Err("the retry should have fetched one new token".into());
    }

    // A wrong secret is a permanent error: the cache waits its maximum
    // backoff before it asks again.
    let wrong = TokenCache::new(ClientCredentials::try_new(
        backend.token_url().to_string(),
        "demo-client",
        "wrong-secret",
    )?);
    let error = wrong.token().await.expect_err("a wrong secret is refused");
    println!("with a wrong secret: {error}");
    if !error.is_permanent() {
        return Err("a wrong secret should be a permanent error".into());
    }
    Ok(())
}

/// Against a real identity provider.
async fn real_idp(url: String, id: String, secret: String) -> Result<(), BoxError> {
    let mut source = ClientCredentials::try_new(url, id, secret)?;
    if let Ok(scope) = std::env::var("SCOPE") {
        source = source.scopes(scope.split_whitespace().map(str::to_owned));
    }
    if let Ok(audience) = std::env::var("AUDIENCE") {
        source = source.audience(audience);
    }
    let cache = TokenCache::new(source);

    let token = match cache.token().await {
        Ok(token) => token,
        Err(error) => {
            println!("no token: {error}");
            return Err(error.into());
        }
    };
    let expires_in = token
        .expiry()
        .map(|at| at.saturating_duration_since(tokio::time::Instant::now()));
    // Never print the token itself.
    println!(
        "got a token of {} characters, expiring in {expires_in:?}",
        token.secret().len()
    );

    if let Ok(api) = std::env::var("API_URL") {
        let mut client = ServiceBuilder::new()
            .retry(RetryOnUnauthorized::new())
            .layer(BearerAuthLayer::from_cache(cache))
            .service(support::client());
        let response = client.ready().await?.call(get(api.parse()?)?).await?;
        println!("GET {api}: {}", response.status());
    }
    Ok(())
}

fn get(uri: Uri) -> Result<Request<Full<Bytes>>, http::Error> {
    Request::get(uri).body(Full::default())
}

async fn read(
    response: http::Response<hyper::body::Incoming>,
) -> Result<(StatusCode, String), BoxError> {
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn expect(status: StatusCode, expected: StatusCode, body: &str) -> Result<(), BoxError> {
    if status == expected {
        Ok(())
    } else {
        Err(format!("expected {expected}, got {status} {body}").into())
    }
}
