//! One hyper client, two APIs, a token for each: `BearerAuthLayer::keyed`
//! over a `KeyedTokenCache` keyed by audience, against the local mock
//! backend, whose `/api/<audience>/...` accepts only tokens issued for that
//! audience.
//!
//! ```text
//! cargo run --example multi_audience
//! ```

mod support;

use std::error::Error;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use tokio::task::JoinSet;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bearer::{BearerAuthLayer, KeyedTokenCache};

use support::Backend;

type BoxError = Box<dyn Error + Send + Sync>;

/// The audience of a request: the first segment after `/api/`.
fn audience_of(uri: &Uri) -> Option<String> {
    let rest = uri.path().strip_prefix("/api/")?;
    Some(rest.split('/').next()?.to_owned())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let backend = Backend::start(Duration::from_secs(60))
        .await?
        .with_latency(Duration::from_millis(50));
    println!("backend listening on {}", backend.base_url());
    let client = support::client();

    // A token source per audience, made when the audience is first used.
    // With OAuth2 this reads
    // `ClientCredentials::try_new(url, id, secret)?.audience(audience)`.
    let cache = KeyedTokenCache::new({
        let (client, base) = (client.clone(), backend.base_url());
        move |audience: &String| {
            let client = client.clone();
            let url: Uri = format!("{base}/token?audience={audience}")
                .parse()
                .expect("an audience is a URL-safe word");
            println!("new audience {audience:?}: its own cache and source");
            move || {
                println!("  fetching a token for {url}");
                support::fetch_token(client.clone(), url.clone())
            }
        }
    })
    .max_keys(16);

    let svc = ServiceBuilder::new()
        .layer(BearerAuthLayer::keyed(cache.clone(), |head| {
            audience_of(head.uri())
        }))
        .service(client.clone());

    // Requests to both APIs at once: one fetch per audience.
    let mut requests = JoinSet::new();
    for i in 0..6 {
        let audience = if i % 2 == 0 { "orders" } else { "billing" };
        let (svc, url) = (svc.clone(), backend.api_url(audience));
        requests.spawn(async move { (audience, get(svc, url).await) });
    }
    while let Some(joined) = requests.join_next().await {
        let (audience, sent) = joined?;
        let (status, body) = sent?;
        println!("{audience:>8}: {status} {body}");
        expect(status, StatusCode::OK)?;
    }
    expect_eq(backend.fetch_count(), 2, "fetches")?;

    // The server revokes every token: each audience's 401 evicts that
    // audience's token only, and its next request fetches a new one.
    backend.revoke_all();
    let (status, _) = get(svc.clone(), backend.api_url("orders")).await?;
    println!("after revocation, orders: {status}");
    expect(status, StatusCode::UNAUTHORIZED)?;
    let (status, body) = get(svc.clone(), backend.api_url("orders")).await?;
    println!("then orders: {status} {body}");
    expect(status, StatusCode::OK)?;

    let orders = cache.stats(&"orders".to_owned()).unwrap_or_default();
    let billing = cache.stats(&"billing".to_owned()).unwrap_or_default();
    println!("orders: {orders:?}\nbilling: {billing:?}");
    expect_eq(orders.invalidations, 1, "orders invalidations")?;
    expect_eq(billing.invalidations, 0, "billing invalidations")?;
    expect_eq(backend.crossed(), 0, "tokens sent to the wrong audience")?;
    println!("{} audiences held; no token crossed audiences", cache.len());
    Ok(())
}

async fn get<S>(mut svc: S, url: Uri) -> Result<(StatusCode, String), BoxError>
where
    S: Service<
        Request<Full<Bytes>>,
        Response = http::Response<hyper::body::Incoming>,
        Error = tower::BoxError,
    >,
{
    let request = Request::get(url).body(Full::default())?;
    let response = svc.ready().await?.call(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn expect(status: StatusCode, wanted: StatusCode) -> Result<(), BoxError> {
    expect_eq(status, wanted, "status")
}

fn expect_eq<T: PartialEq + std::fmt::Debug>(
    got: T,
    wanted: T,
    what: &str,
) -> Result<(), BoxError> {
    if got == wanted {
        Ok(())
    } else {
        Err(format!("{what}: expected {wanted:?}, got {got:?}").into())
    }
}
