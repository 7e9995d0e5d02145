//! How a client authenticates to the token endpoint: [`ClientAuth`], and
//! what each method needs beside it (the secret, a [`PrivateKey`], an
//! assertion source).
//!
//! `ClientAuth` is a plain `Copy + Eq` tag: the key or the assertion source
//! is held beside it, set with
//! [`ClientCredentials::private_key_jwt`](super::ClientCredentials::private_key_jwt)
//! or [`ClientCredentials::client_assertion`](super::ClientCredentials::client_assertion).
//! A key inside the enum would make it neither `Copy` nor `Eq` (a key has
//! no meaningful equality), for no gain to an `auth_method(ClientAuth::Post)`
//! caller.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use http::header::HeaderValue;
use zeroize::Zeroizing;

use super::client_credentials::{form_encode, Form};
use super::error::Error;
use crate::source::DynSource;

#[cfg(feature = "private-key-jwt")]
pub use self::private_key::{Algorithm, PrivateKey};

/// The `client_assertion_type` of a JWT client assertion (RFC 7523 §2.2).
pub(super) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How the client authenticates to the token endpoint (RFC 6749 §2.3,
/// RFC 7523 §2.2).
///
/// A `Copy + Eq` tag. The key of
/// `PrivateKeyJwt` and the source
/// of [`Assertion`](Self::Assertion) are set beside it, with
/// [`private_key_jwt`](super::ClientCredentials::private_key_jwt) and
/// [`client_assertion`](super::ClientCredentials::client_assertion), which
/// select the method too. Selecting one of those two with
/// [`auth_method`](super::ClientCredentials::auth_method) and no key or
/// source makes every fetch fail with a permanent
/// [`Config`](super::ErrorKind::Config) error.
///
/// Why beside and not inside: a key in the enum would make it neither
/// `Copy` nor `Eq` (a private key has no useful equality), breaking every
/// caller that compares or copies it, and the enum would need a variant per
/// kind of key source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic authentication, with the id and
    /// secret each form-encoded before they are joined and base64-encoded,
    /// as §2.3.1 requires. The default.
    #[default]
    Basic,
    /// `client_secret_post`: `client_id` and `client_secret` in the form
    /// body.
    Post,
    /// `private_key_jwt`: a JWT signed with the client's private key, made
    /// afresh for each token request (see [`PrivateKey`]).
    #[cfg(feature = "private-key-jwt")]
    #[cfg_attr(docsrs, doc(cfg(feature = "private-key-jwt")))]
    PrivateKeyJwt,
    /// A client assertion (a JWT) from a source of your own, asked for on
    /// each token request: a federated token file
    /// ([`FileAssertion`](super::FileAssertion)), say.
    Assertion,
    /// `none`: a public client (RFC 6749 §2.1), which has no credential:
    /// only `client_id` in the form. For a
    /// [`RefreshToken`](super::RefreshToken) of a native or browser app.
    None,
}

/// What the client authentication needs beside the [`ClientAuth`] tag.
#[derive(Clone)]
pub(super) struct Credentials {
    pub(super) secret: Zeroizing<String>,
    #[cfg(feature = "private-key-jwt")]
    pub(super) key: Option<PrivateKey>,
    /// The `aud` of a signed assertion; the token URL when `None`.
    pub(super) audience: Option<String>,
    pub(super) lifetime: Duration,
    pub(super) assertion: Option<Arc<dyn DynSource>>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Credentials");
        #[cfg(feature = "private-key-jwt")]
        debug.field("key", &self.key);
        debug
            .field("assertion_audience", &self.audience)
            .field("assertion_lifetime", &self.lifetime)
            .field(
                "assertion_source",
                &self.assertion.as_ref().map(|source| source.type_name()),
            )
            .finish()
    }
}

impl Credentials {
    /// The default lifetime of a signed assertion: one minute, which keeps
    /// the servers' replay caches small.
    pub(super) const DEFAULT_ASSERTION_LIFETIME: Duration = Duration::from_secs(60);
    /// The longest: five minutes.
    pub(super) const MAX_ASSERTION_LIFETIME: Duration = Duration::from_secs(5 * 60);

    pub(super) fn new(secret: String) -> Self {
        Self {
            secret: Zeroizing::new(secret),
            #[cfg(feature = "private-key-jwt")]
            key: None,
            audience: None,
            lifetime: Self::DEFAULT_ASSERTION_LIFETIME,
            assertion: None,
        }
    }

    /// Adds what `auth` sends to `form`, and returns the `Authorization`
    /// header it needs, if any. `assertion` is what the assertion source
    /// returned for this request.
    pub(super) fn authenticate(
        &self,
        auth: ClientAuth,
        client_id: &str,
        token_url: &str,
        assertion: Option<&str>,
        form: &mut Form,
        masked: &mut Vec<Zeroizing<String>>,
    ) -> Result<Option<HeaderValue>, Error> {
        match auth {
            ClientAuth::Basic => return self.basic_auth(client_id).map(Some),
            ClientAuth::Post => {
                form.pair("client_id", client_id);
                form.pair("client_secret", &self.secret);
            }
            #[cfg(feature = "private-key-jwt")]
            ClientAuth::PrivateKeyJwt => {
                let key = self.key.as_ref().ok_or_else(|| {
                    Error::config("ClientAuth::PrivateKeyJwt needs a key: use private_key_jwt(key)")
                })?;
                let audience = self.audience.as_deref().unwrap_or(token_url);
                let jwt = Zeroizing::new(key.assertion(client_id, audience, self.lifetime)?);
                form.pair("client_id", client_id);
                form.pair("client_assertion_type", JWT_BEARER);
                form.pair("client_assertion", &jwt);
                masked.push(jwt);
            }
            ClientAuth::Assertion => {
                let assertion = assertion.ok_or_else(|| {
                    Error::config(
                        "ClientAuth::Assertion needs a source: use client_assertion(source)",
                    )
                })?;
                form.pair("client_id", client_id);
                form.pair("client_assertion_type", JWT_BEARER);
                form.pair("client_assertion", assertion);
                masked.push(Zeroizing::new(assertion.to_owned()));
            }
            ClientAuth::None => form.pair("client_id", client_id),
        }
        let _ = token_url;
        Ok(None)
    }

    /// Adds to `identity` how `auth` authenticates the client, and a
    /// fingerprint of its credential that is no secret: `None` when nothing
    /// derivable names the client, so that its tokens are not shared.
    ///
    /// - `client_secret_basic` and `client_secret_post`: the client id names
    ///   the client and the secret only proves it (a rotated secret keeps
    ///   sharing); without a client id, nothing names it.
    /// - `private_key_jwt`: the SHA-256 of the public key, and the
    ///   assertion's audience.
    /// - an assertion: the assertion source's own identity (RFC 7523 §3
    ///   makes the client id optional: the assertion is what names the
    ///   client); a source without one has none to give.
    #[cfg(feature = "store")]
    pub(super) fn identify(
        &self,
        auth: ClientAuth,
        client_id: &str,
        identity: crate::store::StoreIdentity,
    ) -> Option<crate::store::StoreIdentity> {
        match auth {
            ClientAuth::Basic | ClientAuth::Post | ClientAuth::None if client_id.is_empty() => None,
            ClientAuth::None => Some(identity.with("client_auth", "none")),
            ClientAuth::Basic => Some(identity.with("client_auth", "client_secret_basic")),
            ClientAuth::Post => Some(identity.with("client_auth", "client_secret_post")),
            #[cfg(feature = "private-key-jwt")]
            ClientAuth::PrivateKeyJwt => {
                let key = self.key.as_ref()?;
                Some(
                    identity
                        .with("client_auth", "private_key_jwt")
                        .with("public_key", key.public_fingerprint())
                        .with(
                            "assertion_audience",
                            self.audience.as_deref().unwrap_or("(token url)"),
                        ),
                )
            }
            ClientAuth::Assertion => {
                let source = self.assertion.as_ref()?.store_identity()?;
                Some(
                    identity
                        .with("client_auth", "client_assertion")
                        .with_identity("assertion_source", &source),
                )
            }
        }
    }

    /// `Basic base64(form(id) ":" form(secret))`, marked sensitive. Every
    /// buffer is sized exactly, so none reallocates, and wiped on drop; the
    /// `HeaderValue` is the copy for the wire.
    fn basic_auth(&self, client_id: &str) -> Result<HeaderValue, Error> {
        let id = form_encode(client_id);
        let secret = form_encode(&self.secret);
        let mut pair = Zeroizing::new(String::with_capacity(id.len() + 1 + secret.len()));
        pair.push_str(&id);
        pair.push(':');
        pair.push_str(&secret);
        const SCHEME: &str = "Basic ";
        let encoded_len = base64::encoded_len(pair.len(), true)
            .ok_or_else(|| Error::config("the client credentials do not fit in a header"))?;
        let mut header = Zeroizing::new(String::with_capacity(SCHEME.len() + encoded_len));
        header.push_str(SCHEME);
        base64::engine::general_purpose::STANDARD.encode_string(pair.as_bytes(), &mut header);
        let mut value = HeaderValue::from_str(&header)
            .map_err(|_| Error::config("the client credentials do not fit in a header"))?;
        value.set_sensitive(true);
        Ok(value)
    }
}

#[cfg(feature = "private-key-jwt")]
mod private_key {
    use std::fmt;
    use std::sync::Arc;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use base64::Engine;
    use ring::rand::{SecureRandom, SystemRandom};
    use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair};
    use zeroize::Zeroizing;

    use super::super::error::Error;

    /// A JWS algorithm for `private_key_jwt` assertions, written in the
    /// header exactly as its variant is named.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[non_exhaustive]
    pub enum Algorithm {
        /// RSASSA-PKCS1-v1_5 with SHA-256, an RSA key of 2048 bits or more.
        RS256,
        /// RSASSA-PSS with SHA-256, a plain `rsaEncryption` RSA key.
        PS256,
        /// ECDSA on P-256 with SHA-256.
        ES256,
        /// Ed25519 (the header says `EdDSA`: servers refuse `Ed25519`).
        EdDSA,
    }

    impl Algorithm {
        fn name(self) -> &'static str {
            match self {
                Self::RS256 => "RS256",
                Self::PS256 => "PS256",
                Self::ES256 => "ES256",
                Self::EdDSA => "EdDSA",
            }
        }
    }

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
        /// Reads a PKCS#8 key in PEM (`-----BEGIN PRIVATE KEY-----`) for
        /// `algorithm`: an RSA key for `RS256` and `PS256`, a P-256 key for
        /// `ES256`, an Ed25519 key for `EdDSA` (PKCS#8 v1, as OpenSSL writes
        /// it, or v2). PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`)
        /// and encrypted keys are refused: convert them with
        /// `openssl pkcs8 -topk8 -nocrypt`.
        pub fn from_pkcs8_pem(algorithm: Algorithm, pem: &str) -> Result<Self, Error> {
            let der = pem_decode(pem)?;
            Self::from_pkcs8_der(algorithm, &der)
        }

        /// Reads a PKCS#8 key in DER for `algorithm`; see
        /// [`from_pkcs8_pem`](Self::from_pkcs8_pem).
        pub fn from_pkcs8_der(algorithm: Algorithm, der: &[u8]) -> Result<Self, Error> {
            let rejected = |error: ring::error::KeyRejected| {
                Error::config(format!(
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
                Algorithm::EdDSA => Pair::Ed25519(
                    Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(rejected)?,
                ),
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

        /// The hex SHA-256 of the algorithm's name and the public key's
        /// bytes: what names the key in a store identity, no secret.
        #[cfg(feature = "store")]
        pub(in crate::oauth2) fn public_fingerprint(&self) -> String {
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
            crate::store::hex(context.finish().as_ref())
        }

        /// A signed assertion: `iss` = `sub` = `client_id`, `aud`, a random
        /// `jti`, `iat` now and `exp` `lifetime` later.
        pub(in crate::oauth2) fn assertion(
            &self,
            client_id: &str,
            audience: &str,
            lifetime: Duration,
        ) -> Result<String, Error> {
            let rng = SystemRandom::new();
            let failed = |_| Error::config("cannot sign the client assertion");
            let mut jti = [0u8; 16];
            rng.fill(&mut jti).map_err(failed)?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Error::config("the system clock is before 1970"))?
                .as_secs();
            let mut header = serde_json::Map::new();
            header.insert("alg".into(), self.algorithm.name().into());
            header.insert("typ".into(), "JWT".into());
            if let Some(kid) = &self.key_id {
                header.insert("kid".into(), kid.as_str().into());
            }
            if let Some(thumbprint) = &self.thumbprint {
                header.insert("x5t#S256".into(), thumbprint.as_str().into());
            }
            let claims = serde_json::json!({
                "iss": client_id,
                "sub": client_id,
                "aud": audience,
                "jti": b64(&jti),
                "iat": now,
                "exp": now + lifetime.as_secs(),
            });
            let mut jwt = format!(
                "{}.{}",
                b64(serde_json::Value::Object(header).to_string().as_bytes()),
                b64(claims.to_string().as_bytes())
            );
            self.sign_into(&mut jwt, &rng).map_err(failed)?;
            Ok(jwt)
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
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(signature, jws);
            Ok(())
        }

        #[cfg(feature = "dpop")]
        /// A new key for `algorithm`, from ring's generator: ES256 or
        /// EdDSA (ring cannot generate RSA keys). The PKCS#8 document is
        /// copied into a buffer wiped on drop; ring's own copy is not wiped.
        pub(crate) fn generate(algorithm: Algorithm) -> Result<Self, Error> {
            let rng = SystemRandom::new();
            let failed = |_| Error::config("cannot generate a key");
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
                    return Err(Error::config(
                        "RSA keys cannot be generated: load one with from_pkcs8_pem",
                    ))
                }
            };
            Self::from_pkcs8_der(algorithm, &der)
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

        #[cfg(feature = "dpop")]
        /// The algorithm's name in a JWS header.
        pub(crate) fn algorithm_name(&self) -> &'static str {
            self.algorithm.name()
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

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
            return Err(Error::config(format!(
                "the private key is not a PKCS#8 PEM key: {hint}"
            )));
        };
        let body = &pem[start + BEGIN.len()..];
        let end = body
            .find(END)
            .ok_or_else(|| Error::config("the private key's PEM block has no END line"))?;
        let mut text = Zeroizing::new(String::with_capacity(end));
        text.extend(body[..end].chars().filter(|c| !c.is_ascii_whitespace()));
        let mut der = Zeroizing::new(Vec::with_capacity(text.len() / 4 * 3 + 3));
        base64::engine::general_purpose::STANDARD
            .decode_vec(text.as_bytes(), &mut der)
            .map_err(|_| Error::config("the private key's PEM block is not valid base64"))?;
        Ok(der)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::Value;

        const RSA: &str = include_str!("../../tests/fixtures/oidc-provider/keys/rsa.pem");
        const EC: &str = include_str!("../../tests/fixtures/oidc-provider/keys/ec.pem");
        const ED25519: &str = include_str!("../../tests/fixtures/oidc-provider/keys/ed25519.pem");

        fn decode(part: &str) -> Value {
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap();
            serde_json::from_slice(&bytes).unwrap()
        }

        #[test]
        fn assertions_carry_the_rfc_7523_claims_and_verify() {
            for (algorithm, pem) in [
                (Algorithm::RS256, RSA),
                (Algorithm::PS256, RSA),
                (Algorithm::ES256, EC),
                (Algorithm::EdDSA, ED25519),
            ] {
                let key = PrivateKey::from_pkcs8_pem(algorithm, pem)
                    .unwrap()
                    .key_id("k1")
                    .certificate_der(b"not really a certificate");
                let jwt = key
                    .assertion("my-client", "https://idp/token", Duration::from_secs(60))
                    .unwrap();
                let parts: Vec<&str> = jwt.split('.').collect();
                assert_eq!(parts.len(), 3);
                let header = decode(parts[0]);
                assert_eq!(header["alg"], algorithm.name());
                assert_eq!(header["kid"], "k1");
                assert_eq!(header["x5t#S256"].as_str().unwrap().len(), 43);
                let claims = decode(parts[1]);
                assert_eq!(claims["iss"], "my-client");
                assert_eq!(claims["sub"], "my-client");
                assert_eq!(claims["aud"], "https://idp/token");
                assert_eq!(
                    claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
                    60
                );
                let other = key
                    .assertion("my-client", "https://idp/token", Duration::from_secs(60))
                    .unwrap();
                assert_ne!(
                    claims["jti"],
                    decode(other.split('.').nth(1).unwrap())["jti"]
                );

                // The signature verifies with the public key.
                let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(parts[2])
                    .unwrap();
                let signed = format!("{}.{}", parts[0], parts[1]);
                let (verify, public): (&dyn signature::VerificationAlgorithm, Vec<u8>) =
                    match &*key.pair {
                        Pair::Rsa(pair) => (
                            if algorithm == Algorithm::PS256 {
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
                    .unwrap_or_else(|_| panic!("{algorithm:?} does not verify"));
            }
        }

        #[test]
        fn bad_keys_are_config_errors_that_never_quote_the_key() {
            let pkcs1 =
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEsecret\n-----END RSA PRIVATE KEY-----";
            let cases = [
                (Algorithm::RS256, pkcs1, "PKCS#1"),
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
            for (algorithm, pem, message) in cases {
                let error = PrivateKey::from_pkcs8_pem(algorithm, pem).unwrap_err();
                let shown = format!("{error} {error:?}");
                assert!(shown.contains(message), "{shown}");
                assert!(!shown.contains("MII"), "{shown}");
                assert!(error.is_permanent());
            }
        }

        #[test]
        fn debug_never_shows_the_key() {
            let key = PrivateKey::from_pkcs8_pem(Algorithm::RS256, RSA).unwrap();
            let debug = format!("{key:?} {key:#?}");
            assert!(
                debug.contains("<redacted>") && debug.contains("RS256"),
                "{debug}"
            );
            assert!(!debug.contains("MII"), "{debug}");
        }
    }
}
