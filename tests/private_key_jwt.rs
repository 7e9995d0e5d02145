//! `private_key_jwt` against a real, conformant server: oidc-provider from
//! npm (a certified OpenID Provider), in `tests/fixtures/oidc-provider`,
//! installed on first use. It verifies the assertion's signature, `iss`,
//! `sub`, `aud`, `exp` and `jti`, and remembers each `jti`.
#![cfg(feature = "private-key-jwt")]

use std::error::Error as _;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::service_fn;
use tower_bearer::oauth2::{self, Algorithm, ClientCredentials, ErrorKind, PrivateKey};
use tower_bearer::{TokenCache, TokenError, TokenErrorKind};

mod common;
use common::idp::start_node;

/// oidc-provider, stopped on drop.
struct Provider {
    child: Child,
    issuer: String,
    token_url: String,
}

impl Provider {
    fn start() -> Self {
        Self::with_clock_skew(0)
    }

    /// The server's clock `seconds` ahead of ours.
    fn with_clock_skew(seconds: u64) -> Self {
        let (child, urls) = start_node(
            &fixture_dir(),
            &[("CLOCK_SKEW_SECONDS", seconds.to_string())],
        );
        let url = |name: &str| urls[name].as_str().expect("a URL").to_owned();
        Self {
            issuer: url("issuer"),
            token_url: url("token_url"),
            child,
        }
    }

    /// A source for the client registered for `algorithm`, signing with
    /// `key_file`.
    fn source(&self, algorithm: Algorithm, key_file: &str) -> ClientCredentials {
        let pem = std::fs::read_to_string(fixture_dir().join("keys").join(key_file)).unwrap();
        let key = PrivateKey::from_pkcs8_pem(algorithm, &pem)
            .unwrap()
            .key_id("test-key");
        ClientCredentials::new(&self.token_url, format!("client-{algorithm:?}"), "")
            .private_key_jwt(key)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/oidc-provider")
}

const KEYS: [(Algorithm, &str); 4] = [
    (Algorithm::RS256, "rsa.pem"),
    (Algorithm::PS256, "rsa.pem"),
    (Algorithm::ES256, "ec.pem"),
    (Algorithm::EdDSA, "ed25519.pem"),
];

/// The server's verdict, from the cache's error.
fn rejection(error: &TokenError) -> &oauth2::Error {
    assert_eq!(error.kind(), TokenErrorKind::Fetch, "{error:?}");
    error
        .source()
        .and_then(|source| source.downcast_ref::<oauth2::Error>())
        .unwrap_or_else(|| panic!("not an oauth2 error: {error:?}"))
}

fn assert_invalid_client(error: &TokenError) {
    assert!(error.is_permanent(), "{error:?}");
    let cause = rejection(error);
    assert_eq!(cause.kind(), ErrorKind::Rejected, "{cause:?}");
    assert_eq!(cause.response().unwrap().error(), "invalid_client");
    assert!(cause.is_permanent());
}

#[tokio::test]
async fn every_algorithm_is_accepted_with_a_fresh_assertion_per_request() {
    let provider = Provider::start();
    for (algorithm, key_file) in KEYS {
        let cache = TokenCache::new(provider.source(algorithm, key_file));
        let first = cache
            .token()
            .await
            .unwrap_or_else(|e| panic!("{algorithm:?}: {e:?} {:?}", e.source()));
        // A second request gets past the replay check: a new `jti`.
        cache.invalidate(&first);
        let second = cache.token().await.unwrap();
        assert_ne!(first.secret(), second.secret(), "{algorithm:?}");
    }
}

#[tokio::test]
async fn the_issuer_is_accepted_as_audience_too() {
    let provider = Provider::start();
    let source = provider
        .source(Algorithm::ES256, "ec.pem")
        .assertion_audience(&provider.issuer);
    TokenCache::new(source).token().await.unwrap();
}

#[tokio::test]
async fn a_key_the_client_did_not_register_is_a_permanent_invalid_client() {
    let provider = Provider::start();
    let error = TokenCache::new(provider.source(Algorithm::RS256, "wrong-rsa.pem"))
        .token()
        .await
        .unwrap_err();
    assert_invalid_client(&error);
    // An EC key for the RSA client fails the same way.
    let pem = std::fs::read_to_string(fixture_dir().join("keys/ec.pem")).unwrap();
    let key = PrivateKey::from_pkcs8_pem(Algorithm::ES256, &pem).unwrap();
    let source =
        ClientCredentials::new(&provider.token_url, "client-RS256", "").private_key_jwt(key);
    assert_invalid_client(&TokenCache::new(source).token().await.unwrap_err());
}

#[tokio::test]
async fn an_expired_assertion_is_a_permanent_invalid_client() {
    // Two minutes ahead: our one-minute assertion has expired there, past
    // the server's 15 s tolerance.
    let provider = Provider::with_clock_skew(120);
    let error = TokenCache::new(provider.source(Algorithm::ES256, "ec.pem"))
        .token()
        .await
        .unwrap_err();
    assert_invalid_client(&error);
    // The same key with a five-minute assertion is still valid there.
    let source = provider
        .source(Algorithm::ES256, "ec.pem")
        .assertion_lifetime(std::time::Duration::from_secs(300));
    TokenCache::new(source).token().await.unwrap();
}

#[tokio::test]
async fn a_replayed_assertion_is_a_permanent_invalid_client() {
    let provider = Provider::start();
    // An HTTP client that sends the first token request's body again in
    // place of every later one, as an attacker replaying it would.
    let first_body: Arc<Mutex<Option<Bytes>>> = Arc::default();
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let replaying = service_fn(move |request: Request<Full<Bytes>>| {
        let (http, first_body) = (http.clone(), first_body.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await.unwrap().to_bytes();
            let body = first_body.lock().unwrap().get_or_insert(body).clone();
            http.request(Request::from_parts(parts, Full::new(body)))
                .await
        }
    });
    let cache = TokenCache::new(
        provider
            .source(Algorithm::EdDSA, "ed25519.pem")
            .http_client(replaying),
    );
    let token = cache.token().await.unwrap();
    cache.invalidate(&token);
    // The same bytes were accepted a moment ago: only the replay differs.
    // (oidc-provider says "client authentication failed", whatever the
    // reason.)
    assert_invalid_client(&cache.token().await.unwrap_err());
}
