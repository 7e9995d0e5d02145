//! [`PrivateKey`]: a PKCS#8 signing key (RSA, P-256 or Ed25519), what it
//! puts in a JWS header, and the one signing step.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
use zeroize::Zeroizing;

use super::{b64, Algorithm, Error};

/// A private key that signs `private_key_jwt` client assertions
/// (RFC 7523 §2.2), read from PKCS#8.
///
/// Its `Debug` never shows the key. The PEM text and DER bytes this
/// crate decodes are wiped once the key is parsed; the parsed key is
/// ring's, which does not wipe its memory on drop.
///
/// ```
/// use tower_bearer::oauth2::{Algorithm, ClientCredentials, PrivateKey};
///
/// # fn main() -> Result<(), tower_bearer::oauth2::Error> {
/// # let pem = include_str!("../../tests/fixtures/oidc-provider/keys/ec.pem");
/// // let pem = std::fs::read_to_string("client-key.pem")?;
/// let key = PrivateKey::from_pkcs8_pem(Algorithm::ES256, &pem)?.key_id("2026-11");
/// let source = ClientCredentials::try_new("https://idp.example.com/token", "my-client", "")?
///     .private_key_jwt(key);
/// assert!(!format!("{source:?}").contains("PRIVATE KEY"));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PrivateKey {
    algorithm: Algorithm,
    pair: Arc<Pair>,
    key_id: Option<String>,
    thumbprint: Option<String>,
}

enum Pair {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl PrivateKey {
    /// Reads a PKCS#8 key in PEM for `algorithm`; the public
    /// `from_pkcs8_pem` (in `oauth2`) says which keys are accepted.
    pub(crate) fn read_pkcs8_pem(algorithm: Algorithm, pem: &str) -> Result<Self, Error> {
        let der = pem_decode(pem)?;
        Self::read_pkcs8_der(algorithm, &der)
    }

    /// Reads a PKCS#8 key in DER for `algorithm`.
    pub(crate) fn read_pkcs8_der(algorithm: Algorithm, der: &[u8]) -> Result<Self, Error> {
        let rejected = |error: ring::error::KeyRejected| {
            Error::new(format!(
                "the private key is not a PKCS#8 key for {}: {error}",
                algorithm.name()
            ))
        };
        let pair = match algorithm {
            Algorithm::RS256 | Algorithm::PS256 => {
                Pair::Rsa(RsaKeyPair::from_pkcs8(der).map_err(rejected)?)
            }
            Algorithm::ES256 => Pair::Ecdsa(
                EcdsaKeyPair::from_pkcs8(
                    &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    der,
                    &SystemRandom::new(),
                )
                .map_err(rejected)?,
            ),
            // v1 carries no public key, and `from_pkcs8` refuses it.
            Algorithm::EdDSA => {
                Pair::Ed25519(Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(rejected)?)
            }
        };
        Ok(Self {
            algorithm,
            pair: Arc::new(pair),
            key_id: None,
            thumbprint: None,
        })
    }

    /// Sends `kid` in the assertion's header, so that the server picks
    /// the right one of the client's registered keys.
    pub fn key_id(mut self, kid: impl Into<String>) -> Self {
        self.key_id = Some(kid.into());
        self
    }

    /// Sends `x5t#S256`, the SHA-256 thumbprint of the key's X.509
    /// certificate, computed from the certificate's DER: how Microsoft
    /// Entra ID finds a certificate credential.
    pub fn certificate_der(mut self, certificate: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, certificate);
        self.thumbprint = Some(b64(digest.as_ref()));
        self
    }

    /// The algorithm the key signs with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The JOSE header of a JWS this key signs: `alg`, `typ`, and the
    /// `kid` and `x5t#S256` set on the key, if any.
    pub(crate) fn header(&self, typ: &str) -> serde_json::Map<String, serde_json::Value> {
        let mut header = serde_json::Map::new();
        header.insert("alg".into(), self.algorithm.name().into());
        header.insert("typ".into(), typ.into());
        if let Some(kid) = &self.key_id {
            header.insert("kid".into(), kid.as_str().into());
        }
        if let Some(thumbprint) = &self.thumbprint {
            header.insert("x5t#S256".into(), thumbprint.as_str().into());
        }
        header
    }

    /// The SHA-256 of the algorithm's name and the public key's bytes:
    /// what names the key in a store identity, no secret.
    #[cfg(feature = "store")]
    pub(crate) fn public_digest(&self) -> ring::digest::Digest {
        use ring::signature::KeyPair;
        let public = match &*self.pair {
            Pair::Rsa(pair) => pair.public_key().as_ref(),
            Pair::Ecdsa(pair) => pair.public_key().as_ref(),
            Pair::Ed25519(pair) => pair.public_key().as_ref(),
        };
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        context.update(self.algorithm.name().as_bytes());
        context.update(&[0]);
        context.update(public);
        context.finish()
    }

    /// Appends `.` and the base64url signature of `jws` (a JWS's
    /// `header.payload`) to it: the one signing step of client
    /// assertions and DPoP proofs.
    pub(crate) fn sign_into(
        &self,
        jws: &mut String,
        rng: &SystemRandom,
    ) -> Result<(), ring::error::Unspecified> {
        let mut rsa = Vec::new();
        let signature: &[u8];
        let ecdsa;
        let ed25519;
        match &*self.pair {
            Pair::Rsa(pair) => {
                let padding: &'static dyn signature::RsaEncoding = match self.algorithm {
                    Algorithm::PS256 => &signature::RSA_PSS_SHA256,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                rsa.resize(pair.public().modulus_len(), 0);
                pair.sign(padding, rng, jws.as_bytes(), &mut rsa)?;
                signature = &rsa;
            }
            Pair::Ecdsa(pair) => {
                ecdsa = pair.sign(rng, jws.as_bytes())?;
                signature = ecdsa.as_ref();
            }
            Pair::Ed25519(pair) => {
                ed25519 = pair.sign(jws.as_bytes());
                signature = ed25519.as_ref();
            }
        }
        jws.push('.');
        super::b64_into(signature, jws);
        Ok(())
    }

    #[cfg(feature = "dpop")]
    /// A new key for `algorithm`, from ring's generator: ES256 or
    /// EdDSA (ring cannot generate RSA keys). The PKCS#8 document is
    /// copied into a buffer wiped on drop; ring's own copy is not wiped.
    pub(crate) fn generate(algorithm: Algorithm) -> Result<Self, Error> {
        let rng = SystemRandom::new();
        let failed = |_| Error::new("cannot generate a key");
        let der = match algorithm {
            Algorithm::ES256 => Zeroizing::new(
                EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(failed)?
                    .as_ref()
                    .to_vec(),
            ),
            Algorithm::EdDSA => Zeroizing::new(
                Ed25519KeyPair::generate_pkcs8(&rng)
                    .map_err(failed)?
                    .as_ref()
                    .to_vec(),
            ),
            Algorithm::RS256 | Algorithm::PS256 => {
                return Err(Error::new(
                    "RSA keys cannot be generated: load one with from_pkcs8_pem",
                ))
            }
        };
        Self::read_pkcs8_der(algorithm, &der)
    }

    #[cfg(feature = "dpop")]
    /// The public half as a JWK (RFC 7517), with the members of its
    /// RFC 7638 thumbprint only, in their lexicographic order.
    pub(crate) fn public_jwk(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut jwk = serde_json::Map::new();
        let mut put = |name: &str, value: String| {
            jwk.insert(name.into(), value.into());
        };
        match &*self.pair {
            Pair::Rsa(pair) => {
                let public = ring::rsa::PublicKeyComponents::<Vec<u8>>::from(pair.public());
                put("e", b64(&public.e));
                put("kty", "RSA".into());
                put("n", b64(&public.n));
            }
            Pair::Ecdsa(pair) => {
                // Uncompressed: 0x04, then x and y, 32 bytes each.
                let point = signature::KeyPair::public_key(pair).as_ref();
                put("crv", "P-256".into());
                put("kty", "EC".into());
                put("x", b64(&point[1..33]));
                put("y", b64(&point[33..65]));
            }
            Pair::Ed25519(pair) => {
                put("crv", "Ed25519".into());
                put("kty", "OKP".into());
                put("x", b64(signature::KeyPair::public_key(pair).as_ref()));
            }
        }
        jwk
    }

    /// Whether `jws`, a compact JWS, carries a valid signature of this
    /// key: what the tests check every signature with.
    #[cfg(test)]
    pub(crate) fn verifies(&self, jws: &str) -> bool {
        let Some((signed, signature)) = jws.rsplit_once('.') else {
            return false;
        };
        let Ok(signature) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(signature)
        else {
            return false;
        };
        let (verify, public): (&dyn signature::VerificationAlgorithm, Vec<u8>) = match &*self.pair {
            Pair::Rsa(pair) => (
                if self.algorithm == Algorithm::PS256 {
                    &signature::RSA_PSS_2048_8192_SHA256
                } else {
                    &signature::RSA_PKCS1_2048_8192_SHA256
                },
                signature::KeyPair::public_key(pair).as_ref().to_vec(),
            ),
            Pair::Ecdsa(pair) => (
                &signature::ECDSA_P256_SHA256_FIXED,
                signature::KeyPair::public_key(pair).as_ref().to_vec(),
            ),
            Pair::Ed25519(pair) => (
                &signature::ED25519,
                signature::KeyPair::public_key(pair).as_ref().to_vec(),
            ),
        };
        signature::UnparsedPublicKey::new(verify, public)
            .verify(signed.as_bytes(), &signature)
            .is_ok()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .field("key_id", &self.key_id)
            .field("x5t#S256", &self.thumbprint)
            .finish()
    }
}

/// The DER inside the first `PRIVATE KEY` PEM block, wiped on drop.
fn pem_decode(pem: &str) -> Result<Zeroizing<Vec<u8>>, Error> {
    const BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
    const END: &str = "-----END PRIVATE KEY-----";
    let Some(start) = pem.find(BEGIN) else {
        let hint = if pem.contains("-----BEGIN RSA PRIVATE KEY-----")
            || pem.contains("-----BEGIN EC PRIVATE KEY-----")
        {
            "it is PKCS#1 or SEC1: convert it with `openssl pkcs8 -topk8 -nocrypt`"
        } else if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
            "it is encrypted: decrypt it with `openssl pkcs8 -topk8 -nocrypt`"
        } else {
            "no `-----BEGIN PRIVATE KEY-----` block"
        };
        return Err(Error::new(format!(
            "the private key is not a PKCS#8 PEM key: {hint}"
        )));
    };
    let body = &pem[start + BEGIN.len()..];
    let end = body
        .find(END)
        .ok_or_else(|| Error::new("the private key's PEM block has no END line"))?;
    let mut text = Zeroizing::new(String::with_capacity(end));
    text.extend(body[..end].chars().filter(|c| !c.is_ascii_whitespace()));
    let mut der = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
    base64::engine::general_purpose::STANDARD
        .decode_vec(text.as_bytes(), &mut der)
        .map_err(|_| Error::new("the private key's PEM block is not valid base64"))?;
    Ok(der)
}

/// Keys for tests: the fixture keys, and the bad ones, each with what its
/// error says (the signing layer's tests and the OAuth2 layer's use one
/// table).
#[cfg(test)]
pub(crate) mod fixtures {
    use super::Algorithm;

    pub(crate) const RSA: &str = include_str!("../../tests/fixtures/oidc-provider/keys/rsa.pem");
    pub(crate) const EC: &str = include_str!("../../tests/fixtures/oidc-provider/keys/ec.pem");
    pub(crate) const ED25519: &str =
        include_str!("../../tests/fixtures/oidc-provider/keys/ed25519.pem");

    const PKCS1: &str =
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----";

    /// Keys that are refused, and a part of the message that says why. Each
    /// holds `MII`, which no error may quote.
    pub(crate) const BAD_KEYS: [(Algorithm, &str, &str); 7] = [
        (Algorithm::RS256, PKCS1, "PKCS#1"),
        (Algorithm::RS256, "MIIEsecret", "no `-----BEGIN"),
        (Algorithm::ES256, RSA, "not a PKCS#8 key for ES256"),
        (Algorithm::RS256, EC, "not a PKCS#8 key for RS256"),
        (Algorithm::EdDSA, EC, "not a PKCS#8 key for EdDSA"),
        (
            Algorithm::RS256,
            "-----BEGIN PRIVATE KEY-----\n!!!MIIEsecret\n-----END PRIVATE KEY-----",
            "not valid base64",
        ),
        (
            Algorithm::RS256,
            "-----BEGIN PRIVATE KEY-----\nMIIEsecret",
            "no END line",
        ),
    ];
}

#[cfg(test)]
mod tests {
    use super::fixtures::{BAD_KEYS, EC, ED25519, RSA};
    use super::*;

    #[test]
    fn compact_signatures_verify_with_the_public_key() {
        let rng = SystemRandom::new();
        for (algorithm, pem) in [
            (Algorithm::RS256, RSA),
            (Algorithm::PS256, RSA),
            (Algorithm::ES256, EC),
            (Algorithm::EdDSA, ED25519),
        ] {
            let key = PrivateKey::read_pkcs8_pem(algorithm, pem).unwrap();
            let jws =
                super::super::sign(&key, key.header("JWT"), &serde_json::json!({"a": 1}), &rng)
                    .unwrap();
            assert_eq!(jws.split('.').count(), 3);
            assert!(key.verifies(&jws), "{algorithm:?} does not verify");
            let mut tampered = jws.clone();
            tampered.insert(1, 'x');
            assert!(!key.verifies(&tampered), "{algorithm:?} verifies anything");
        }
    }

    #[test]
    fn bad_keys_never_quote_the_key() {
        for (algorithm, pem, message) in BAD_KEYS {
            let error = PrivateKey::read_pkcs8_pem(algorithm, pem).unwrap_err();
            let shown = format!("{error} {error:?}");
            assert!(shown.contains(message), "{shown}");
            assert!(!shown.contains("MII"), "{shown}");
        }
    }

    #[test]
    fn debug_never_shows_the_key() {
        let key = PrivateKey::read_pkcs8_pem(Algorithm::RS256, RSA).unwrap();
        let debug = format!("{key:?} {key:#?}");
        assert!(
            debug.contains("<redacted>") && debug.contains("RS256"),
            "{debug}"
        );
        assert!(!debug.contains("MII"), "{debug}");
    }
}
