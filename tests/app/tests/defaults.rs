//! An application on rustls's and reqwest's own defaults (aws-lc-rs) adds
//! tower-bearer with its defaults: its own TLS set-up still works, and the
//! OAuth2 client fetches over https. With a crate that turned on rustls's
//! `ring` feature, `ClientConfig::builder()` would panic here: "Could not
//! automatically determine the process-level CryptoProvider".

#[path = "../../common/https_idp.rs"]
mod https_idp;

use rustls::crypto::CryptoProvider;
use tower_bearer::oauth2::ClientCredentials;
use tower_bearer::TokenCache;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_applications_tls_and_the_oauth2_client_both_work() {
    let idp = https_idp::start(rustls::crypto::aws_lc_rs::default_provider()).await;
    let source = ClientCredentials::try_new(&idp.url, "app", "s3cret")
        .unwrap()
        .add_root_certificate_pem(&idp.ca_pem);
    let cache = TokenCache::new(source);
    assert_eq!(cache.token().await.unwrap().secret(), "tls-token");
    // tower-bearer took a provider without installing one for the process.
    assert!(CryptoProvider::get_default().is_none());

    // The application's own set-up, on the defaults.
    let _config = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let _client = reqwest::Client::new();
}
