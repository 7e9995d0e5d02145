//! DPoP (RFC 9449) against a real, conformant server: oidc-provider from
//! npm, in `tests/fixtures/oidc-provider`, which verifies the proofs of
//! token requests, binds client-credentials tokens to the proof key, and
//! issues nonces. Its `/resource` looks tokens up in the provider and
//! verifies resource proofs with jose (see the fixture's `server.mjs` for
//! why not userinfo).
#![cfg(feature = "dpop")]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::AUTHORIZATION;
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
use tower_bearer::dpop::{ProofKey, DPOP};
use tower_bearer::oauth2::{Algorithm, ClientCredentials};
use tower_bearer::{BearerAuthLayer, BoxError, RetryOnUnauthorized, TokenCache};

mod common;
use common::idp::{http_client, oidc_provider_dir, start_node, Running};

/// oidc-provider, stopped on drop.
struct Provider {
    _server: Running,
    token_url: String,
    resource_url: String,
    rotate_url: String,
}

impl Provider {
    fn start(env: &[(&str, &str)]) -> Self {
        let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.to_string())).collect();
        let (child, urls) = start_node(&oidc_provider_dir(), &env);
        let url = |name: &str| urls[name].as_str().expect("a URL").to_owned();
        Self {
            token_url: url("token_url"),
            resource_url: url("resource_url"),
            rotate_url: url("rotate_url"),
            _server: Running(child),
        }
    }

    fn source(&self, key: ProofKey) -> ClientCredentials {
        ClientCredentials::new(&self.token_url, "client-dpop", "dpop-secret").dpop(key)
    }

    /// A source whose token requests are counted.
    fn counted_source(&self, key: ProofKey, count: Arc<AtomicUsize>) -> ClientCredentials {
        let client = http_client();
        self.source(key).http_client(service_fn(move |request| {
            count.fetch_add(1, Ordering::SeqCst);
            client.clone().oneshot(request)
        }))
    }

    async fn rotate_resource_nonce(&self) {
        let request = Request::post(&self.rotate_url)
            .body(Full::default())
            .unwrap();
        let response = http_client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
}

/// A request's status, headers and JSON body (`Null` when it has none).
async fn send<S, B>(client: &mut S, request: Request<Full<Bytes>>) -> (StatusCode, HeaderMap, Value)
where
    S: Service<Request<Full<Bytes>>, Response = http::Response<B>>,
    S::Error: Into<BoxError> + std::fmt::Debug,
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let response = client.ready().await.unwrap().call(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
    (parts.status, parts.headers, json)
}

fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

/// The requests a service passed on, as sent (headers included).
#[derive(Clone, Default)]
struct Recorded(Arc<Mutex<Vec<(Method, Uri, HeaderMap)>>>);

impl Recorded {
    fn last(&self) -> (Method, Uri, HeaderMap) {
        self.0.lock().unwrap().last().cloned().expect("a request")
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

/// Changes a request after the layer has put its proof on it.
type Rewrite = fn(&mut Request<Full<Bytes>>);

/// The hyper client, recording what it sends, after `rewrite`.
fn recording_client(
    recorded: Recorded,
    rewrite: Rewrite,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = http::Response<hyper::body::Incoming>,
    Error = BoxError,
    Future = impl Send,
> + Clone {
    let client = http_client();
    service_fn(move |mut request: Request<Full<Bytes>>| {
        rewrite(&mut request);
        recorded.0.lock().unwrap().push((
            request.method().clone(),
            request.uri().clone(),
            request.headers().clone(),
        ));
        let client = client.clone();
        async move { client.request(request).await.map_err(BoxError::from) }
    })
}

fn payload(proof: &str) -> Value {
    use base64::Engine;
    let part = proof.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn a_bound_token_is_accepted_with_a_proof_per_request() {
    let provider = Provider::start(&[]);
    for algorithm in [Algorithm::ES256, Algorithm::EdDSA] {
        let key = ProofKey::generate_with(algorithm).unwrap();
        let cache = TokenCache::new(provider.source(key.clone()));
        let token = cache.token().await.unwrap();
        assert!(token.binding().is_some(), "the server said DPoP");

        let recorded = Recorded::default();
        let mut client = ServiceBuilder::new()
            .layer(BearerAuthLayer::from_cache(cache.clone()))
            .service(recording_client(recorded.clone(), |_| {}));
        let mut jtis = Vec::new();
        for _ in 0..3 {
            let (status, _, body) = send(&mut client, get(&provider.resource_url)).await;
            assert_eq!(status, StatusCode::OK, "{algorithm:?}: {body}");
            assert_eq!(body["scheme"], "DPoP");
            assert_eq!(body["jkt"], key.thumbprint());
            let (_, _, headers) = recorded.last();
            assert_eq!(
                headers[AUTHORIZATION],
                format!("DPoP {}", token.secret()).as_str()
            );
            jtis.push(payload(headers[DPOP].to_str().unwrap())["jti"].clone());
        }
        jtis.dedup();
        assert_eq!(jtis.len(), 3, "one jti per proof");
    }
}

#[tokio::test]
async fn a_replayed_proof_is_rejected() {
    let provider = Provider::start(&[]);
    let cache = TokenCache::new(provider.source(ProofKey::generate().unwrap()));
    let recorded = Recorded::default();
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(recording_client(recorded.clone(), |_| {}));
    let (status, _, _) = send(&mut client, get(&provider.resource_url)).await;
    assert_eq!(status, StatusCode::OK);

    // The same request, headers and proof included, once more.
    let (_, _, headers) = recorded.last();
    let mut replay = get(&provider.resource_url);
    *replay.headers_mut() = headers;
    let (status, _, body) = send(&mut http_client(), replay).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_dpop_proof");
    assert!(body["error_description"]
        .as_str()
        .unwrap()
        .contains("Replay"));
}

#[tokio::test]
async fn a_proof_for_another_url_or_method_is_rejected() {
    let provider = Provider::start(&[]);
    // Fresh tokens rejected back to back are paced (#20); a zero backoff
    // turns that off, for a test of what each rejection does.
    let cache = TokenCache::new(provider.source(ProofKey::generate().unwrap()))
        .backoff(std::time::Duration::ZERO, std::time::Duration::ZERO);
    let rewrites: [(Rewrite, &str); 2] = [
        (
            |request| {
                let uri = format!("{}/elsewhere", request.uri());
                *request.uri_mut() = uri.parse().unwrap();
            },
            "htu mismatch",
        ),
        (
            |request| *request.method_mut() = Method::POST,
            "htm mismatch",
        ),
    ];
    for (rewrite, error) in rewrites {
        let mut client = ServiceBuilder::new()
            .layer(BearerAuthLayer::from_cache(cache.clone()))
            .service(recording_client(Recorded::default(), rewrite));
        let (status, _, body) = send(&mut client, get(&provider.resource_url)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["error_description"], error);
    }
    // The query is not part of htu.
    let recorded = Recorded::default();
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(recording_client(recorded.clone(), |_| {}));
    let url = format!("{}/orders?id=7", provider.resource_url);
    let (status, _, body) = send(&mut client, get(&url)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, _, headers) = recorded.last();
    let htu = format!("{}/orders", provider.resource_url);
    assert_eq!(
        payload(headers[DPOP].to_str().unwrap())["htu"],
        htu.as_str()
    );
}

#[tokio::test]
async fn a_bound_token_sent_as_a_bearer_token_is_rejected() {
    let provider = Provider::start(&[]);
    let cache = TokenCache::new(provider.source(ProofKey::generate().unwrap()));
    let token = cache.token().await.unwrap();
    let mut request = get(&provider.resource_url);
    request.headers_mut().insert(
        AUTHORIZATION,
        format!("Bearer {}", token.secret()).parse().unwrap(),
    );
    let (status, _, body) = send(&mut http_client(), request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "invalid_token");
}

#[tokio::test]
async fn the_token_endpoints_nonce_challenge_is_answered_once_then_remembered() {
    let provider = Provider::start(&[("DPOP_REQUIRE_NONCE", "1")]);
    let requests = Arc::new(AtomicUsize::new(0));
    let cache =
        TokenCache::new(provider.counted_source(ProofKey::generate().unwrap(), requests.clone()));
    let token = cache.token().await.unwrap();
    assert!(token.binding().is_some());
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "challenged, then answered"
    );

    // The next fetch sends the nonce it was given: no challenge.
    assert!(cache.invalidate(&token));
    let next = cache.token().await.unwrap();
    assert_ne!(next.secret(), token.secret());
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_token_url_through_a_proxy_the_server_does_not_know_fails_on_htu() {
    let provider = Provider::start(&[]);
    // A path-rewriting proxy: the client's token URL is not the server's.
    let url = provider.token_url.replace("/token", "/proxy/token");
    let client = http_client();
    let proxy = service_fn(move |mut request: Request<Full<Bytes>>| {
        let uri = request.uri().to_string().replace("/proxy/token", "/token");
        *request.uri_mut() = uri.parse().unwrap();
        client.clone().oneshot(request)
    });
    let source = ClientCredentials::new(url, "client-dpop", "dpop-secret")
        .dpop(ProofKey::generate().unwrap())
        .http_client(proxy);
    let error = TokenCache::new(source).token().await.unwrap_err();
    let shown = format!("{error:?}");
    assert!(shown.contains("invalid_dpop_proof"), "{shown}");
    assert!(shown.contains("htu mismatch"), "{shown}");
}

#[tokio::test]
async fn the_resources_nonce_challenge_keeps_the_token_and_is_retried_once() {
    let provider = Provider::start(&[("RESOURCE_NONCE", "1")]);
    let fetches = Arc::new(AtomicUsize::new(0));
    let cache =
        TokenCache::new(provider.counted_source(ProofKey::generate().unwrap(), fetches.clone()));
    let token = cache.token().await.unwrap();

    // Without a retry, the challenge comes back, and the token stays.
    let recorded = Recorded::default();
    let mut plain = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(recording_client(recorded.clone(), |_| {}));
    let (status, headers, body) = send(&mut plain, get(&provider.resource_url)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "use_dpop_nonce");
    assert!(headers.contains_key("dpop-nonce"));
    // The nonce was remembered: the next request carries it.
    let (status, _, _) = send(&mut plain, get(&provider.resource_url)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, _, sent) = recorded.last();
    assert_eq!(
        payload(sent[DPOP].to_str().unwrap())["nonce"],
        headers["dpop-nonce"].to_str().unwrap()
    );

    // A stale nonce earns the challenge again; RetryOnUnauthorized answers it.
    provider.rotate_resource_nonce().await;
    let recorded = Recorded::default();
    let mut retrying = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(recording_client(recorded.clone(), |_| {}));
    let (status, _, body) = send(&mut retrying, get(&provider.resource_url)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(recorded.len(), 2, "challenged, then answered");

    // No challenge evicted the token: one fetch in all.
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
    assert_eq!(cache.token().await.unwrap().secret(), token.secret());
}

#[tokio::test]
async fn a_request_uri_that_is_not_absolute_is_a_typed_error_and_is_not_sent() {
    let provider = Provider::start(&[]);
    let cache = TokenCache::new(provider.source(ProofKey::generate().unwrap()));
    let recorded = Recorded::default();
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::from_cache(cache))
        .service(recording_client(recorded.clone(), |_| {}));
    let request = Request::get("/resource").body(Full::default()).unwrap();
    let error = client
        .ready()
        .await
        .unwrap()
        .call(request)
        .await
        .unwrap_err();
    let error = error
        .downcast_ref::<tower_bearer::TokenError>()
        .expect("a TokenError");
    assert_eq!(error.kind(), tower_bearer::TokenErrorKind::Proof);
    let source = std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tower_bearer::dpop::Error>())
        .expect("a dpop::Error");
    assert_eq!(source.kind(), tower_bearer::dpop::ErrorKind::Target);
    assert_eq!(recorded.len(), 0, "nothing was sent");
}

#[tokio::test]
async fn a_rejected_bound_token_is_evicted_and_retried_with_a_fresh_one() {
    use tower_bearer::dpop::Binding;
    use tower_bearer::{Token, TokenSource};
    let provider = Provider::start(&[]);
    let real = provider.source(ProofKey::generate().unwrap());
    let fetches = Arc::new(AtomicUsize::new(0));
    // The first token is bound but unknown to the server (as if revoked).
    let source = {
        let fetches = fetches.clone();
        move || {
            let first = fetches.fetch_add(1, Ordering::SeqCst) == 0;
            let real = real.clone();
            async move {
                if first {
                    let binding = Binding::new(ProofKey::generate().unwrap());
                    return Ok(Token::new("revoked").bind(&binding));
                }
                real.fetch().await
            }
        }
    };
    let cache = TokenCache::new(source);
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(http_client());
    let (status, _, body) = send(&mut client, get(&provider.resource_url)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "the 401 evicted the first token"
    );
}

#[cfg(feature = "reqwest-middleware")]
#[tokio::test]
async fn the_reqwest_middleware_sends_proofs_and_answers_a_nonce_challenge_with_the_same_token() {
    use tower_bearer::BearerAuthMiddleware;
    let provider = Provider::start(&[("RESOURCE_NONCE", "1")]);
    let fetches = Arc::new(AtomicUsize::new(0));
    let cache =
        TokenCache::new(provider.counted_source(ProofKey::generate().unwrap(), fetches.clone()));
    let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
        .with(BearerAuthMiddleware::from_cache(cache.clone()))
        .build();
    // The nonce challenge is answered within the call, as `RetryOnUnauthorized`
    // answers it: once more with the server's nonce and the same token.
    // Then the nonce is remembered, and the token kept.
    for _ in 0..3 {
        let response = client.get(&provider.resource_url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["scheme"], "DPoP");
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_keyed_layer_sends_proofs_for_bound_tokens_too() {
    use tower_bearer::KeyedTokenCache;
    let provider = Provider::start(&[]);
    let source = provider.source(ProofKey::generate().unwrap());
    let cache = KeyedTokenCache::new(move |_tenant: &String| source.clone());
    let mut client = ServiceBuilder::new()
        .layer(BearerAuthLayer::keyed(cache, |_| {
            Some("tenant-a".to_owned())
        }))
        .service(http_client());
    for _ in 0..2 {
        let (status, _, body) = send(&mut client, get(&provider.resource_url)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["scheme"], "DPoP");
    }
}

#[tokio::test]
async fn the_token_endpoints_nonce_is_kept_apart_from_the_resources_on_one_origin() {
    let provider = Provider::start(&[("DPOP_REQUIRE_NONCE", "1"), ("RESOURCE_NONCE", "1")]);
    let requests = Arc::new(AtomicUsize::new(0));
    let cache =
        TokenCache::new(provider.counted_source(ProofKey::generate().unwrap(), requests.clone()));
    let mut client = ServiceBuilder::new()
        .retry(RetryOnUnauthorized::new())
        .layer(BearerAuthLayer::from_cache(cache.clone()))
        .service(http_client());
    let (status, _, _) = send(&mut client, get(&provider.resource_url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        requests.load(Ordering::SeqCst),
        2,
        "one challenge at the token endpoint"
    );

    // The resource's nonce, on the same origin, is not sent to the token
    // endpoint: the next fetch carries the token endpoint's own, and is not
    // challenged.
    let token = cache.token().await.unwrap();
    assert!(cache.invalidate(&token));
    let (status, _, _) = send(&mut client, get(&provider.resource_url)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_replayed_token_request_proof_is_rejected_by_the_token_endpoint() {
    let provider = Provider::start(&[]);
    let sent: Arc<Mutex<Option<Request<Full<Bytes>>>>> = Arc::default();
    let client = {
        let sent = sent.clone();
        let client = http_client();
        service_fn(move |request: Request<Full<Bytes>>| {
            let mut copy = Request::new(request.body().clone());
            *copy.method_mut() = request.method().clone();
            *copy.uri_mut() = request.uri().clone();
            *copy.headers_mut() = request.headers().clone();
            *sent.lock().unwrap() = Some(copy);
            client.clone().oneshot(request)
        })
    };
    let source = provider
        .source(ProofKey::generate().unwrap())
        .http_client(client);
    assert!(TokenCache::new(source).token().await.is_ok());

    // The same token request, proof and all, once more.
    let replay = sent.lock().unwrap().take().unwrap();
    let (status, _, body) = send(&mut http_client(), replay).await;
    // oidc-provider says only `invalid_grant` (its "DPoP proof JWT Replay
    // detected" stays in its logs), which the crate treats as permanent:
    // hence the jti tests.
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
    // Only the replay differs: a fresh proof from the same client is taken.
    let fresh = provider.source(ProofKey::generate().unwrap());
    assert!(TokenCache::new(fresh).token().await.is_ok());
}
