//! The crate's TLS policy, in one place: which rustls crypto provider and
//! which root certificates any TLS connection the crate makes uses (the
//! built-in OAuth2 client's, and any other the crate sets up).
//!
//! # The crypto provider
//!
//! The crate never picks rustls's process-level provider: it never calls
//! `CryptoProvider::install_default`, and builds every configuration with
//! `ClientConfig::builder_with_provider`, so that an application's own
//! `ClientConfig::builder()` behaves as it would without this crate.
//!
//! 1. The application's provider, when one is installed
//!    (`CryptoProvider::get_default()`).
//! 2. Otherwise the one a feature of this crate names: `aws-lc-rs` (on by
//!    default, as it is for rustls, hyper-rustls and reqwest 0.13, so an
//!    application on those defaults builds no second provider), else
//!    `ring`. With both on, `aws-lc-rs`.
//! 3. With neither feature, the application must install one: until then an
//!    https token request fails with a permanent configuration error, never
//!    a panic.
//!
//! See `docs/tls.md`.

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};

/// The provider the crate's TLS uses: the process default when the
/// application installed one, else the one this crate's features name.
pub(crate) fn crypto_provider() -> Result<Arc<CryptoProvider>, TlsError> {
    if let Some(installed) = CryptoProvider::get_default() {
        return Ok(Arc::clone(installed));
    }
    feature_provider().map(Arc::new).ok_or_else(|| {
        TlsError(
            "no rustls crypto provider: the application installed none \
             (rustls::crypto::CryptoProvider::install_default) and neither of \
             tower-bearer's `aws-lc-rs` and `ring` features is on"
                .to_owned(),
        )
    })
}

#[allow(unreachable_code)]
fn feature_provider() -> Option<CryptoProvider> {
    #[cfg(feature = "aws-lc-rs")]
    return Some(rustls::crypto::aws_lc_rs::default_provider());
    #[cfg(feature = "ring")]
    return Some(rustls::crypto::ring::default_provider());
    None
}

/// The roots a client trusts: the platform's (`native-roots`), Mozilla's
/// (`webpki-roots`), and every certificate of `extra_pem`.
pub(crate) fn root_store(extra_pem: &[Arc<[u8]>]) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    #[cfg(feature = "webpki-roots")]
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    #[cfg(feature = "native-roots")]
    {
        // A certificate the platform store holds but rustls cannot parse is
        // skipped, as reqwest does.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    for pem in extra_pem {
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|error| {
                TlsError(format!(
                    "an added root certificate is not valid PEM: {error}"
                ))
            })?;
            roots.add(cert).map_err(|error| {
                TlsError(format!("an added root certificate is not valid: {error}"))
            })?;
            added += 1;
        }
        if added == 0 {
            return Err(TlsError(
                "an added root certificate PEM holds no CERTIFICATE block".to_owned(),
            ));
        }
    }
    if roots.is_empty() {
        return Err(TlsError(
            "no root certificates: the platform has none, and neither webpki-roots nor an \
             added root certificate is there"
                .to_owned(),
        ));
    }
    Ok(roots)
}

/// A client configuration on [`crypto_provider`] that trusts `roots`.
pub(crate) fn client_config(roots: RootCertStore) -> Result<ClientConfig, TlsError> {
    Ok(ClientConfig::builder_with_provider(crypto_provider()?)
        .with_safe_default_protocol_versions()
        .map_err(|error| TlsError(format!("cannot set up TLS: {error}")))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// Why TLS could not be set up: a configuration error.
#[derive(Debug)]
pub(crate) struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_added_root_is_a_clear_error() {
        let error = root_store(&[Arc::from(&b"not a pem"[..])]).unwrap_err();
        assert!(
            error.to_string().contains("no CERTIFICATE block"),
            "{error}"
        );
        let garbage = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let error = root_store(&[Arc::from(&garbage[..])]).unwrap_err();
        assert!(error.to_string().contains("not valid"), "{error}");
    }

    #[cfg(any(feature = "aws-lc-rs", feature = "ring"))]
    #[test]
    fn a_feature_provider_stands_in_when_none_is_installed() {
        assert!(crypto_provider().is_ok());
    }

    /// `--no-default-features --features rustls` (in `.ci/run`): no provider
    /// is a clear error, not rustls's panic.
    #[cfg(not(any(feature = "aws-lc-rs", feature = "ring")))]
    #[test]
    fn no_provider_is_a_configuration_error() {
        let error = client_config(RootCertStore::empty()).unwrap_err();
        assert!(
            error.to_string().contains("no rustls crypto provider"),
            "{error}"
        );
    }
}
