//! `rediss://`: the fleet store over TLS to Debian's `redis-server` in TLS
//! mode, with a CA and certificates made here (rcgen), an ACL user's
//! password in the URL, and optionally a client certificate. TLS is made
//! with the crate's own rustls config, never by installing a process-level
//! crypto provider.
#![cfg(feature = "redis-tls")]

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tower_bearer::store::RedisStore;

mod redis_common;
#[path = "../examples/support/redis_server.rs"]
mod redis_server;

use redis_common::Idp;
use redis_server::{RedisServer, TlsFiles};

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in
/// PEM files under a directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca: String,
    client_cert: String,
    client_key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "tower-bearer-redis-tls-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // Every name distinct: OpenSSL takes a leaf named as its issuer
        // for a self-signed certificate.
        params
            .distinguished_name
            .push(DnType::CommonName, "tower-bearer test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(params, ca_key);
        let leaf = |names: Vec<String>| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(names.clone()).unwrap();
            params
                .distinguished_name
                .push(DnType::CommonName, names[0].as_str());
            let cert = params.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(vec!["127.0.0.1".into()]);
        let (client_cert, client_key) = leaf(vec!["fleet-member".into()]);
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.join("server.pem"), server_cert).unwrap();
        std::fs::write(dir.join("server.key"), server_key).unwrap();
        Self {
            dir,
            ca: ca.pem(),
            client_cert,
            client_key,
        }
    }

    fn files(&self, client_certs: bool) -> TlsFiles {
        let file = |name: &str| Path::new(&self.dir).join(name);
        TlsFiles {
            ca: file("ca.pem"),
            cert: file("server.pem"),
            key: file("server.key"),
            client_certs,
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Two replicas, each with a store of `store`, share one token: one fetch,
/// the second replica's read a hit, no store error.
async fn two_replicas_share_one_token(idp: &Idp, store: impl Fn() -> RedisStore) {
    let (a, b) = (idp.cache(store()), idp.cache(store()));
    let token = a.token().await.unwrap();
    assert_eq!(b.token().await.unwrap().secret(), token.secret());
    assert_eq!(idp.fetches(), 1, "shared over TLS");
    assert_eq!(b.stats().store.hits, 1, "{:?}", b.stats().store);
    assert_eq!(a.stats().store.errors + b.stats().store.errors, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_over_tls_as_an_acl_user_trusting_the_given_ca() {
    let pki = Pki::new("share");
    let user = ["--user", "fleet", "on", ">tls-pass-9", "~*", "+@all"];
    let redis = RedisServer::start_tls(&pki.files(false), &user).unwrap();
    let url = redis
        .url()
        .replace("rediss://", "rediss://fleet:tls-pass-9@");
    let store = || {
        RedisStore::new(&url)
            .unwrap()
            .tls_ca_pem(&pki.ca)
            .unwrap()
            .op_timeout(Duration::from_secs(1))
    };
    two_replicas_share_one_token(&Idp::default(), store).await;
    // Never a process-level provider: the application's choice, not ours.
    assert!(
        rustls::crypto::CryptoProvider::get_default().is_none(),
        "the store installed a process-level crypto provider"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_is_a_store_error_and_the_request_goes_on() {
    let pki = Pki::new("untrusted");
    let redis = RedisServer::start_tls(&pki.files(false), &[]).unwrap();
    let other = Pki::new("other-ca");
    let idp = Idp::default();
    // webpki's roots, then another CA: neither trusts this server.
    for store in [
        RedisStore::new(redis.url()).unwrap(),
        RedisStore::new(redis.url())
            .unwrap()
            .tls_ca_pem(&other.ca)
            .unwrap(),
    ] {
        let cache = idp.cache(store.op_timeout(Duration::from_secs(1)));
        cache.token().await.unwrap();
        let stats = cache.stats().store;
        assert_eq!((stats.errors, stats.fallbacks), (1, 1), "{stats:?}");
    }
    // A plain connection to a TLS port fails the same way.
    let plain = RedisStore::new(redis.url().replace("rediss", "redis")).unwrap();
    let cache = idp.cache(plain.op_timeout(Duration::from_millis(300)));
    cache.token().await.unwrap();
    assert_eq!(cache.stats().store.fallbacks, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_asks_for_a_client_certificate_gets_ours() {
    let pki = Pki::new("mtls");
    let redis = RedisServer::start_tls(&pki.files(true), &[]).unwrap();
    let idp = Idp::default();
    let without = idp.cache(
        RedisStore::new(redis.url())
            .unwrap()
            .tls_ca_pem(&pki.ca)
            .unwrap()
            .op_timeout(Duration::from_secs(1)),
    );
    without.token().await.unwrap();
    assert_eq!(
        without.stats().store.errors,
        1,
        "refused without a certificate"
    );

    let with = || {
        RedisStore::new(redis.url())
            .unwrap()
            .tls_ca_pem(&pki.ca)
            .unwrap()
            .tls_client_pem(&pki.client_cert, &pki.client_key)
            .unwrap()
            .op_timeout(Duration::from_secs(1))
    };
    two_replicas_share_one_token(&Idp::default(), with).await;
}

/// The application's own rustls config, used as it is: its provider and
/// its roots (here, the test CA alone).
#[cfg(feature = "aws-lc-rs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_application_s_own_tls_config_is_used_as_it_is() {
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    let pki = Pki::new("own-config");
    let redis = RedisServer::start_tls(&pki.files(false), &[]).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let config = Arc::new(config);
    let store = || {
        RedisStore::new(redis.url())
            .unwrap()
            .tls_config(Arc::clone(&config))
            .unwrap()
            .op_timeout(Duration::from_secs(1))
    };
    two_replicas_share_one_token(&Idp::default(), store).await;
}

#[test]
fn tls_settings_are_checked_when_given_and_never_quote_a_secret() {
    let pki = Pki::new("settings");
    let tls = || RedisStore::new("rediss://127.0.0.1:1/").unwrap();
    let error = RedisStore::new("redis://127.0.0.1:1/")
        .unwrap()
        .tls_ca_pem(&pki.ca)
        .unwrap_err();
    assert!(error.to_string().contains("rediss://"), "{error}");
    assert!(tls().tls_ca_pem("not a pem").is_err());
    // A key that is not the certificate's.
    let other = Pki::new("settings-other");
    let error = tls()
        .tls_client_pem(&pki.client_cert, &other.client_key)
        .unwrap_err();
    let shown = format!("{error} {error:?}");
    let body = other.client_key.lines().nth(1).unwrap();
    assert!(!shown.contains(body), "{shown}");
    let store = tls()
        .tls_client_pem(&pki.client_cert, &pki.client_key)
        .unwrap();
    assert!(!format!("{store:?}").contains(body));
}
