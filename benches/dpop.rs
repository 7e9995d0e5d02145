//! The cost of a request with a DPoP-bound token (ES256 and EdDSA), against
//! the same request with a bearer token and against the proof's signature
//! alone, in one run.
//!
//! `cargo bench --features dpop --bench dpop`. See `docs/dpop.md` for the
//! figures; the goal is a DPoP request path under 1.2x the signature alone.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Uri};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use tower::util::MapRequestLayer;
use tower::{Layer, Service};
use tower_bearer::dpop::{Binding, ProofKey};
use tower_bearer::oauth2::Algorithm;
use tower_bearer::{BearerAuthLayer, Token, TokenCache};

#[path = "per_request.rs"]
mod per_request;
use per_request::{inner, TOKEN};

/// A proof's signing input is about this long: the header with its JWK
/// (about 170 base64url characters for P-256), a dot, and the claims with
/// `jti`, `htm`, `htu`, `iat` and `ath` (about 250).
const SIGNING_INPUT: usize = 420;

/// The bearer layer over the shared inner service, for requests to an
/// absolute URI (a proof needs one; both cases pay for setting it).
fn service(
    cache: TokenCache,
) -> impl Service<Request<()>, Error = tower_bearer::BoxError> + Clone + Send + 'static {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(cache.token()).unwrap();
    let uri = Uri::from_static("https://api.example.com/orders");
    let to_api = MapRequestLayer::new(move |mut request: Request<()>| {
        *request.uri_mut() = uri.clone();
        request
    });
    to_api.layer(BearerAuthLayer::from_cache(cache).layer(inner()))
}

fn cache(binding: Option<Binding>) -> TokenCache {
    TokenCache::new(move || {
        let binding = binding.clone();
        async move {
            let token = Token::new(TOKEN);
            Ok::<_, std::convert::Infallible>(match &binding {
                Some(binding) => token.bind(binding),
                None => token,
            })
        }
    })
}

fn benches(c: &mut Criterion) {
    per_request::bench(c, "dpop/", "bearer", service(cache(None)));

    let rng = SystemRandom::new();
    let message = vec![b'e'; SIGNING_INPUT];

    let key = ProofKey::generate_with(Algorithm::ES256).unwrap();
    per_request::bench(
        c,
        "dpop/",
        "ES256 request",
        service(cache(Some(Binding::new(key)))),
    );
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    c.bench_function("dpop/ES256 signature alone / 1 thread", |b| {
        b.iter(|| black_box(pair.sign(&rng, black_box(&message)).unwrap()))
    });

    let key = ProofKey::generate_with(Algorithm::EdDSA).unwrap();
    per_request::bench(
        c,
        "dpop/",
        "EdDSA request",
        service(cache(Some(Binding::new(key)))),
    );
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
    c.bench_function("dpop/EdDSA signature alone / 1 thread", |b| {
        b.iter(|| black_box(pair.sign(black_box(&message))))
    });
}

criterion_group!(group, benches);
criterion_main!(group);
