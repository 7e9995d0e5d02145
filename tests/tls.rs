//! The built-in client's TLS: the roots it is given, and the application's
//! crypto provider when one is installed (see docs/tls.md). One test: the
//! installed provider is process-wide state.

#[path = "common/https_idp.rs"]
mod https_idp;

use rustls::crypto::aws_lc_rs;
use tower_bearer::oauth2::{ClientCredentials, ErrorKind, RefreshToken};
use tower_bearer::{TokenCache, TokenError};

fn cause(error: &TokenError) -> &tower_bearer::oauth2::Error {
    std::error::Error::source(error.last_failure())
        .and_then(|source| source.downcast_ref())
        .expect("an oauth2 error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_added_ca_is_trusted_and_an_installed_provider_is_used() {
    // The server speaks only ChaCha20-Poly1305.
    let mut server = aws_lc_rs::default_provider();
    server
        .cipher_suites
        .retain(|suite| suite.suite() == rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    let idp = https_idp::start(server).await;

    // Without the test CA, the certificate is refused.
    let untrusted = TokenCache::new(ClientCredentials::try_new(&idp.url, "id", "secret").unwrap());
    let error = untrusted.token().await.unwrap_err();
    assert_eq!(cause(&error).kind(), ErrorKind::Transport);
    // The summary says why, from the innermost cause.
    assert!(format!("{error}").contains("UnknownIssuer"), "{error}");

    let trusting = || {
        TokenCache::new(
            ClientCredentials::try_new(&idp.url, "id", "secret")
                .unwrap()
                .add_root_certificate_pem(&idp.ca_pem),
        )
    };
    assert_eq!(trusting().token().await.unwrap().secret(), "tls-token");
    assert_eq!(idp.answered.load(std::sync::atomic::Ordering::SeqCst), 1);
    // The refresh-token grant takes the same roots.
    let refresh = RefreshToken::try_new(&idp.url, "id", "secret", "rt-0")
        .unwrap()
        .add_root_certificate_pem(&idp.ca_pem);
    let token = TokenCache::new(refresh).token().await.unwrap();
    assert_eq!(token.secret(), "tls-token");
    assert_eq!(idp.answered.load(std::sync::atomic::Ordering::SeqCst), 2);

    // The application installs a provider without ChaCha20: the crate uses
    // it, so the handshake fails.
    let mut installed = aws_lc_rs::default_provider();
    installed
        .cipher_suites
        .retain(|suite| suite.suite() != rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    installed.install_default().unwrap();
    let error = trusting().token().await.unwrap_err();
    assert_eq!(cause(&error).kind(), ErrorKind::Transport, "{error}");
}
