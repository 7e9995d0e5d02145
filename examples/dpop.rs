//! Sender-constrained tokens (DPoP, RFC 9449): `ClientCredentials::dpop`
//! as the token source of a plain `BearerAuthLayer`, with `RetryOnUnauthorized` in
//! front to answer the resource's nonce challenge.
//!
//! It runs against the oidc-provider fixture (`tests/fixtures/oidc-provider`,
//! a certified OpenID Provider from npm, installed on first use; Node 20.19
//! or later), with nonces required at the token endpoint and at the
//! resource, so that both challenges happen:
//!
//! ```text
//! cargo run --features dpop --example dpop
//! ```

#[path = "../tests/common/idp.rs"]
#[allow(dead_code)]
mod idp;

use std::error::Error;

use base64::Engine;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_bearer::dpop::{ProofKey, DPOP};
use tower_bearer::oauth2::ClientCredentials;
use tower_bearer::{BearerAuthLayer, RetryOnUnauthorized, TokenCache};

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let env = [
        ("DPOP_REQUIRE_NONCE", "1".to_owned()),
        ("RESOURCE_NONCE", "1".to_owned()),
    ];
    let (server, urls) = idp::start_node(&idp::oidc_provider_dir(), &env);
    let _server = idp::Running(server);
    run(&urls).await
}

async fn run(urls: &Value) -> Result<(), BoxError> {
    let url = |name: &str| urls[name].as_str().unwrap_or_default().to_owned();
    let (token_url, resource_url) = (url("token_url"), url("resource_url"));
    println!("token endpoint: {token_url}");

    // The key the tokens are bound to: ES256, generated in memory.
    let key = ProofKey::generate()?;
    println!("proof key: {key:?}");
    let source = ClientCredentials::try_new(&token_url, "client-dpop", "dpop-secret")?.dpop(key);
    let cache = TokenCache::new(source);

    // A plain layer: the token is bound, so each request gets a proof.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        let client = idp::http_client();
        tower::service_fn(move |request: Request<Full<Bytes>>| {
            if let Some(proof) = request.headers().get(&DPOP) {
                seen.lock()
                    .unwrap()
                    .push(proof.to_str().unwrap_or("").to_owned());
            }
            client.clone().oneshot(request)
        })
    };
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(recorder);

    for i in 1..=3 {
        let request =
            Request::get(format!("{resource_url}/orders?page={i}")).body(Full::default())?;
        let response = client.ready().await?.call(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "GET /resource/orders?page={i}: {status} {}",
            String::from_utf8_lossy(&body)
        );
        if status != StatusCode::OK {
            return Err(format!("the resource answered {status}").into());
        }
    }

    // What went out: the first request met the nonce challenge and was sent
    // again with the nonce; every proof has its own jti.
    let seen = seen.lock().unwrap().clone();
    for proof in &seen {
        let claims = proof.split('.').nth(1).unwrap_or_default();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims)?;
        let claims: Value = serde_json::from_slice(&claims)?;
        println!(
            "proof: htm={} htu={} nonce={} jti={}",
            claims["htm"], claims["htu"], claims["nonce"], claims["jti"]
        );
    }
    let stats = cache.stats();
    println!("{} requests with proofs, {stats:?}", seen.len());
    if seen.len() != 4 {
        return Err("expected one nonce challenge and three successes".into());
    }
    Ok(())
}
