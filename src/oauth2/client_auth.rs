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

use super::error::Error;
use super::form::{form_encode, Form};
use crate::source::DynSource;

#[cfg(feature = "private-key-jwt")]
pub use crate::jws::{Algorithm, PrivateKey};

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

/// The OAuth2 side of [`PrivateKey`] (the key itself is `crate::jws`'s):
/// its public constructors, which answer in this module's [`Error`], and
/// the RFC 7523 client assertion it signs.
#[cfg(feature = "private-key-jwt")]
mod private_key {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use ring::rand::{SecureRandom, SystemRandom};

    use super::super::error::Error;
    use crate::jws::{self, Algorithm, PrivateKey};

    impl PrivateKey {
        /// Reads a PKCS#8 key in PEM (`-----BEGIN PRIVATE KEY-----`) for
        /// `algorithm`: an RSA key for `RS256` and `PS256`, a P-256 key for
        /// `ES256`, an Ed25519 key for `EdDSA` (PKCS#8 v1, as OpenSSL writes
        /// it, or v2). PKCS#1 (`RSA PRIVATE KEY`), SEC1 (`EC PRIVATE KEY`)
        /// and encrypted keys are refused: convert them with
        /// `openssl pkcs8 -topk8 -nocrypt`.
        pub fn from_pkcs8_pem(algorithm: Algorithm, pem: &str) -> Result<Self, Error> {
            Self::read_pkcs8_pem(algorithm, pem).map_err(config)
        }

        /// Reads a PKCS#8 key in DER for `algorithm`; see
        /// [`from_pkcs8_pem`](Self::from_pkcs8_pem).
        pub fn from_pkcs8_der(algorithm: Algorithm, der: &[u8]) -> Result<Self, Error> {
            Self::read_pkcs8_der(algorithm, der).map_err(config)
        }

        /// The hex SHA-256 of the algorithm's name and the public key's
        /// bytes: what names the key in a store identity, no secret.
        #[cfg(feature = "store")]
        pub(in crate::oauth2) fn public_fingerprint(&self) -> String {
            crate::identity::hex(self.public_digest().as_ref())
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
            let failed = || Error::config("cannot sign the client assertion");
            let mut jti = [0u8; 16];
            rng.fill(&mut jti).map_err(|_| failed())?;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|_| Error::config("the system clock is before 1970"))?
                .as_secs();
            let claims = serde_json::json!({
                "iss": client_id,
                "sub": client_id,
                "aud": audience,
                "jti": jws::b64(&jti),
                "iat": now,
                "exp": now + lifetime.as_secs(),
            });
            jws::sign(self, self.header("JWT"), &claims, &rng).map_err(|_| failed())
        }
    }

    /// A key error, as the permanent configuration error it is here.
    fn config(error: jws::Error) -> Error {
        Error::config(error.into_message())
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use base64::Engine;
        use serde_json::Value;

        use crate::jws::fixtures::{BAD_KEYS, EC, ED25519, RSA};

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
                assert_eq!(header["typ"], "JWT");
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
                assert!(key.verifies(&jwt), "{algorithm:?} does not verify");
            }
        }

        #[test]
        fn bad_keys_are_config_errors_that_never_quote_the_key() {
            for (algorithm, pem, message) in BAD_KEYS {
                let error = PrivateKey::from_pkcs8_pem(algorithm, pem).unwrap_err();
                let shown = format!("{error} {error:?}");
                assert!(shown.contains("invalid oauth2 configuration"), "{shown}");
                assert!(shown.contains(message), "{shown}");
                assert!(!shown.contains("MII"), "{shown}");
                assert!(error.is_permanent());
            }
        }
    }
}
