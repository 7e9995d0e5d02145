//! [`ProofKey`]: the key a client proves possession of.

use std::fmt;
use std::sync::Arc;

use super::error::Error;
use crate::jws::{self, Algorithm, PrivateKey};

/// The private key that signs DPoP proofs, and whose public half the
/// server binds tokens to.
///
/// ES256 by default ([`generate`](Self::generate)); EdDSA and RS256 too
/// ([`generate_with`](Self::generate_with), or a PKCS#8 PEM key of your own
/// with [`from_pkcs8_pem`](Self::from_pkcs8_pem)). It is a secret: its
/// `Debug` shows the algorithm and the public thumbprint only, and the PEM
/// text and DER bytes this crate decodes or generates are wiped once parsed
/// (ring's parsed key does not wipe its own memory on drop).
///
/// Clones share one key.
///
/// ```
/// use tower_bearer::dpop::ProofKey;
///
/// # fn main() -> Result<(), tower_bearer::dpop::Error> {
/// let key = ProofKey::generate()?;
/// assert_eq!(key.thumbprint().len(), 43);
/// assert!(format!("{key:?}").contains("ES256"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ProofKey {
    inner: Arc<Inner>,
}

struct Inner {
    key: PrivateKey,
    /// `base64url(header) "."`: the same for every proof of this key.
    header: String,
    /// The RFC 7638 JWK SHA-256 thumbprint, base64url: the `jkt` of the
    /// tokens bound to it.
    thumbprint: String,
}

impl ProofKey {
    /// A new ES256 (P-256) key.
    pub fn generate() -> Result<Self, Error> {
        Self::generate_with(Algorithm::ES256)
    }

    /// A new key for `algorithm`: [`ES256`](Algorithm::ES256) or
    /// [`EdDSA`](Algorithm::EdDSA). RSA keys cannot be generated (ring has
    /// no RSA key generator): load one with
    /// [`from_pkcs8_pem`](Self::from_pkcs8_pem).
    pub fn generate_with(algorithm: Algorithm) -> Result<Self, Error> {
        Self::new(PrivateKey::generate(algorithm).map_err(Error::key)?)
    }

    /// Reads a PKCS#8 PEM key (`-----BEGIN PRIVATE KEY-----`) for
    /// `algorithm`: a P-256 key for `ES256`, an Ed25519 key for `EdDSA`, an
    /// RSA key of 2048 bits or more for `RS256`. As
    /// [`PrivateKey::from_pkcs8_pem`], whose parser it shares; a key that
    /// cannot be read is an [`ErrorKind::Key`](super::ErrorKind::Key) error
    /// that never quotes the key.
    ///
    /// ```
    /// use tower_bearer::dpop::{ErrorKind, ProofKey};
    /// use tower_bearer::oauth2::Algorithm;
    ///
    /// let error = ProofKey::from_pkcs8_pem(Algorithm::ES256, "not a key").unwrap_err();
    /// assert_eq!(error.kind(), ErrorKind::Key);
    /// ```
    pub fn from_pkcs8_pem(algorithm: Algorithm, pem: &str) -> Result<Self, Error> {
        if algorithm == Algorithm::PS256 {
            // Servers verify DPoP proofs with ES256, EdDSA and RS256; PS256
            // is rarely among their `dpop_signing_alg_values_supported`.
            return Err(Error::key_message(
                "DPoP proofs are signed with ES256, EdDSA or RS256",
            ));
        }
        Self::new(PrivateKey::read_pkcs8_pem(algorithm, pem).map_err(Error::key)?)
    }

    fn new(key: PrivateKey) -> Result<Self, Error> {
        let jwk = key.public_jwk();
        // `public_jwk` holds the required members only, sorted: its JSON is
        // the thumbprint's input.
        let canonical = serde_json::Value::Object(jwk.clone()).to_string();
        let thumbprint =
            jws::b64(ring::digest::digest(&ring::digest::SHA256, canonical.as_bytes()).as_ref());
        let mut header = key.header("dpop+jwt");
        header.insert("jwk".into(), jwk.into());
        let mut header = jws::b64(serde_json::Value::Object(header).to_string().as_bytes());
        header.push('.');
        Ok(Self {
            inner: Arc::new(Inner {
                key,
                header,
                thumbprint,
            }),
        })
    }

    /// The algorithm the key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.inner.key.algorithm()
    }

    /// The key's JWK SHA-256 thumbprint (RFC 7638), base64url: what a
    /// server records as the `jkt` of the tokens bound to this key. Public
    /// information.
    pub fn thumbprint(&self) -> &str {
        &self.inner.thumbprint
    }

    /// The base64url header, with its trailing `.`.
    pub(super) fn header(&self) -> &str {
        &self.inner.header
    }

    pub(super) fn private(&self) -> &PrivateKey {
        &self.inner.key
    }
}

impl fmt::Debug for ProofKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProofKey")
            .field("algorithm", &self.algorithm())
            .field("key", &"<redacted>")
            .field("thumbprint", &self.inner.thumbprint)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpop::ErrorKind;

    const RSA: &str = include_str!("../../tests/fixtures/oidc-provider/keys/rsa.pem");
    const EC: &str = include_str!("../../tests/fixtures/oidc-provider/keys/ec.pem");
    const ED25519: &str = include_str!("../../tests/fixtures/oidc-provider/keys/ed25519.pem");

    #[test]
    fn keys_load_from_pkcs8_pem_and_show_no_secret() {
        for (algorithm, pem) in [
            (Algorithm::ES256, EC),
            (Algorithm::EdDSA, ED25519),
            (Algorithm::RS256, RSA),
        ] {
            let key = ProofKey::from_pkcs8_pem(algorithm, pem).unwrap();
            assert_eq!(key.algorithm(), algorithm);
            let debug = format!("{key:?} {key:#?}");
            assert!(debug.contains("<redacted>"), "{debug}");
            assert!(!debug.contains("MII") && !debug.contains("MC4"), "{debug}");
            // The same key, the same thumbprint; another key, another.
            let again = ProofKey::from_pkcs8_pem(algorithm, pem).unwrap();
            assert_eq!(key.thumbprint(), again.thumbprint());
        }
        let generated = ProofKey::generate().unwrap();
        assert_eq!(generated.algorithm(), Algorithm::ES256);
        assert_ne!(
            generated.thumbprint(),
            ProofKey::generate().unwrap().thumbprint()
        );
    }

    #[test]
    fn the_jwk_holds_the_thumbprint_members_only_in_order() {
        // RFC 7638 §3.2: the required members, lexicographically; what the
        // server's thumbprint of the proof's `jwk` is checked against is in
        // tests/dpop.rs (`jkt` equals `thumbprint()`).
        for (algorithm, pem, members) in [
            (Algorithm::RS256, RSA, &["e", "kty", "n"][..]),
            (Algorithm::ES256, EC, &["crv", "kty", "x", "y"]),
            (Algorithm::EdDSA, ED25519, &["crv", "kty", "x"]),
        ] {
            let key = ProofKey::from_pkcs8_pem(algorithm, pem).unwrap();
            let jwk = key.private().public_jwk();
            let names: Vec<&str> = jwk.keys().map(String::as_str).collect();
            assert_eq!(names, members);
        }
    }

    #[test]
    fn bad_keys_are_typed_errors_that_never_quote_the_key() {
        let cases = [
            (Algorithm::ES256, "not a key at all"),
            (
                Algorithm::ES256,
                "-----BEGIN PRIVATE KEY-----\nMIIEsecret\n-----END PRIVATE KEY-----",
            ),
            (Algorithm::ES256, RSA),
            (Algorithm::EdDSA, EC),
            (Algorithm::PS256, RSA),
        ];
        for (algorithm, pem) in cases {
            let error = ProofKey::from_pkcs8_pem(algorithm, pem).unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Key);
            let mut shown = format!("{error} {error:?}");
            if let Some(source) = std::error::Error::source(&error) {
                shown.push_str(&source.to_string());
            }
            assert!(!shown.contains("MII"), "{shown}");
        }
        let error = ProofKey::generate_with(Algorithm::RS256).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Key);
        let source = std::error::Error::source(&error).unwrap().to_string();
        assert!(source.contains("cannot be generated"), "{source}");
    }
}
