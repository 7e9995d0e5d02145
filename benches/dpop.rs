//! The cost of a request with a DPoP-bound token (ES256 and EdDSA), against
//! the same request with a bearer token and against the proof's signature
//! alone, in one run.
//!
//! `cargo bench --features dpop --bench dpop`. See `docs/dpop.md` for the
//! figures; the goal is a DPoP request path under 1.2x the signature alone.
//!
//! Timings on a shared machine are noisy; with `DPOP_INSTRUCTIONS_CASE` set
//! (`bearer`, `es256-request`, `es256-signature`, `eddsa-request`,
//! `eddsa-signature`) and `DPOP_INSTRUCTIONS_N` (default 2,000), the binary
//! runs that case N times and exits, for callgrind to count: see
//! `docs/dpop.md` for the commands.

use std::hint::black_box;

use criterion::{criterion_group, Criterion};
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

/// One request or one signature.
type Case = Box<dyn FnMut()>;

/// The cases, by name.
fn cases() -> Vec<(&'static str, Case)> {
    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let request = |mut service: Box<dyn FnMut(&mut Context<'_>)>| -> Case {
        let waker = Waker::from(Arc::new(Noop));
        Box::new(move || service(&mut Context::from_waker(&waker)))
    };
    let serve = |cache: TokenCache| -> Box<dyn FnMut(&mut Context<'_>)> {
        let mut service = service(cache);
        Box::new(move |cx| per_request::request(&mut service, cx))
    };
    let rng = SystemRandom::new();
    let message = vec![b'e'; SIGNING_INPUT];
    let es256 = {
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
    };
    let eddsa = {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    };
    let bound = |algorithm| {
        cache(Some(Binding::new(
            ProofKey::generate_with(algorithm).unwrap(),
        )))
    };
    let es256_message = message.clone();
    vec![
        ("bearer", request(serve(cache(None)))),
        ("ES256 request", request(serve(bound(Algorithm::ES256)))),
        (
            "ES256 signature alone",
            Box::new(move || {
                black_box(es256.sign(&rng, black_box(&es256_message)).unwrap());
            }),
        ),
        ("EdDSA request", request(serve(bound(Algorithm::EdDSA)))),
        (
            "EdDSA signature alone",
            Box::new(move || {
                black_box(eddsa.sign(black_box(&message)));
            }),
        ),
    ]
}

fn benches(c: &mut Criterion) {
    per_request::bench(c, "dpop/", "bearer", service(cache(None)));
    for algorithm in [Algorithm::ES256, Algorithm::EdDSA] {
        let key = ProofKey::generate_with(algorithm).unwrap();
        let service = service(cache(Some(Binding::new(key))));
        per_request::bench(c, "dpop/", &format!("{algorithm:?} request"), service);
    }
    for (name, mut case) in cases() {
        if name.ends_with("signature alone") {
            c.bench_function(&format!("dpop/{name} / 1 thread"), |b| b.iter(&mut case));
        }
    }
}

criterion_group!(group, benches);

fn main() {
    if let Ok(wanted) = std::env::var("DPOP_INSTRUCTIONS_CASE") {
        let n: u64 = std::env::var("DPOP_INSTRUCTIONS_N")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(2_000);
        let slug = |name: &str| name.to_lowercase().replace(" alone", "").replace(' ', "-");
        let (_, mut case) = cases()
            .into_iter()
            .find(|(name, _)| slug(name) == wanted)
            .expect("an unknown case");
        for _ in 0..n {
            case();
        }
        return;
    }
    group();
    Criterion::default().configure_from_args().final_summary();
}
