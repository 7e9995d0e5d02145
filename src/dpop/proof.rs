//! One DPoP proof (RFC 9449 §4.2), and the `htu` it names.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use http::{HeaderValue, Method, Uri};
use ring::rand::{SecureRandom, SystemRandom};

use super::error::Error;
use super::key::ProofKey;

/// Where a request goes, as DPoP names it: `scheme://authority` (the
/// origin, which keys the nonces) and the path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Target {
    /// `scheme://host[:port]`, lowercase, without a default port.
    pub(crate) origin: String,
    /// `origin` and the path, without query or fragment: the `htu`.
    pub(crate) htu: String,
}

impl Target {
    /// The target of a request URI, which must be absolute
    /// (`scheme://authority/path`): an origin-form URI (`/path`) names no
    /// scheme, and a proof for a guessed one would be refused.
    pub(crate) fn of(uri: &Uri) -> Result<Self, Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
            return Err(Error::target(
                "the request URI is not absolute: DPoP's htu needs its scheme and authority",
            ));
        };
        let scheme = scheme.to_ascii_lowercase();
        let host = authority.host().to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        };
        let mut origin = String::with_capacity(scheme.len() + 3 + authority.as_str().len());
        origin.push_str(&scheme);
        origin.push_str("://");
        origin.push_str(&host);
        if let Some(port) = authority.port_u16() {
            if Some(port) != default_port {
                let _ = write!(origin, ":{port}");
            }
        }
        let path = match uri.path() {
            "" => "/",
            path => path,
        };
        let mut htu = String::with_capacity(origin.len() + path.len());
        htu.push_str(&origin);
        htu.push_str(path);
        Ok(Self { origin, htu })
    }
}

/// What a proof says beside the method and target.
pub(crate) struct Claims<'a> {
    pub(crate) htm: &'a Method,
    pub(crate) htu: &'a str,
    /// base64url(SHA-256(token)), for a resource request.
    pub(crate) ath: Option<&'a str>,
    pub(crate) nonce: Option<&'a str>,
}

/// A signed proof, as the value of a `DPoP` header: `typ` `dpop+jwt`, the
/// key's `alg` and public `jwk` in the header; a random 128-bit `jti`, `htm`,
/// `htu`, `iat` (now), and `ath` and `nonce` when given.
pub(crate) fn sign(key: &ProofKey, claims: &Claims<'_>) -> Result<HeaderValue, Error> {
    let rng = SystemRandom::new();
    let mut jti = [0u8; 16];
    rng.fill(&mut jti).map_err(|_| Error::sign())?;
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::sign())?
        .as_secs();

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload = String::with_capacity(256);
    payload.push_str("{\"jti\":\"");
    b64.encode_string(jti, &mut payload);
    payload.push_str("\",\"htm\":");
    json_string(&mut payload, claims.htm.as_str());
    payload.push_str(",\"htu\":");
    json_string(&mut payload, claims.htu);
    let _ = write!(payload, ",\"iat\":{iat}");
    if let Some(ath) = claims.ath {
        payload.push_str(",\"ath\":");
        json_string(&mut payload, ath);
    }
    if let Some(nonce) = claims.nonce {
        payload.push_str(",\"nonce\":");
        json_string(&mut payload, nonce);
    }
    payload.push('}');

    let header = key.header();
    let mut jws = String::with_capacity(header.len() + payload.len() * 4 / 3 + 4 + 344);
    jws.push_str(header);
    b64.encode_string(payload.as_bytes(), &mut jws);
    key.private()
        .sign_into(&mut jws, &rng)
        .map_err(|_| Error::sign())?;
    let mut value = HeaderValue::try_from(jws).map_err(|_| Error::sign())?;
    // Unique per request: never worth a slot in an HPACK table.
    value.set_sensitive(true);
    Ok(value)
}

/// base64url(SHA-256(`token`)): the `ath` claim.
pub(crate) fn ath(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// Appends `text` as a JSON string.
fn json_string(out: &mut String, text: &str) {
    // A `String`'s serialization cannot fail.
    if let Ok(quoted) = serde_json::to_string(text) {
        out.push_str(&quoted);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn decode(part: &str) -> Value {
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn target(uri: &str) -> Result<Target, Error> {
        Target::of(&uri.parse().unwrap())
    }

    #[test]
    fn htu_is_scheme_authority_and_path_only() {
        let cases = [
            (
                "https://API.Example.com/a/b?q=1#f",
                "https://api.example.com",
                "/a/b",
            ),
            (
                "https://api.example.com:443/x",
                "https://api.example.com",
                "/x",
            ),
            ("http://127.0.0.1:80/x?y", "http://127.0.0.1", "/x"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080", "/"),
            ("HTTPS://[::1]:8443/p%2Fq", "https://[::1]:8443", "/p%2Fq"),
        ];
        for (uri, origin, path) in cases {
            let target = target(uri).unwrap();
            assert_eq!(target.origin, origin, "{uri}");
            assert_eq!(target.htu, format!("{origin}{path}"), "{uri}");
        }
    }

    #[test]
    fn a_uri_that_is_not_absolute_is_a_typed_error() {
        for uri in ["/orders?id=1", "*"] {
            let error = target(uri).unwrap_err();
            assert_eq!(error.kind(), super::super::ErrorKind::Target);
            assert!(error.to_string().contains("not absolute"), "{error}");
        }
    }

    #[test]
    fn ath_is_the_base64url_sha256_of_the_token() {
        // SHA-256("abc"), RFC 6234's test vector, in base64url.
        assert_eq!(ath("abc"), "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0");
    }

    #[test]
    fn a_proof_carries_the_rfc_9449_header_and_claims_and_verifies() {
        use crate::jws::Algorithm;
        use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED, ED25519};
        for algorithm in [Algorithm::ES256, Algorithm::EdDSA] {
            let key = ProofKey::generate_with(algorithm).unwrap();
            let claims = Claims {
                htm: &Method::POST,
                htu: "https://api.example.com/x\"y",
                ath: Some("ath-value"),
                nonce: Some("n-1"),
            };
            let proof = sign(&key, &claims).unwrap();
            assert!(proof.is_sensitive());
            let proof = proof.to_str().unwrap().to_owned();
            let parts: Vec<&str> = proof.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = decode(parts[0]);
            assert_eq!(header["typ"], "dpop+jwt");
            let payload = decode(parts[1]);
            assert_eq!(payload["htm"], "POST");
            assert_eq!(payload["htu"], "https://api.example.com/x\"y");
            assert_eq!(payload["ath"], "ath-value");
            assert_eq!(payload["nonce"], "n-1");
            assert_eq!(payload["jti"].as_str().unwrap().len(), 22);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            assert!(now.abs_diff(payload["iat"].as_u64().unwrap()) <= 1);

            let jwk = &header["jwk"];
            let (verify, public): (&dyn ring::signature::VerificationAlgorithm, Vec<u8>) =
                match algorithm {
                    Algorithm::ES256 => {
                        assert_eq!(header["alg"], "ES256");
                        assert_eq!((&jwk["kty"], &jwk["crv"]), (&"EC".into(), &"P-256".into()));
                        let mut point = vec![4];
                        point.extend(decode_raw(jwk["x"].as_str().unwrap()));
                        point.extend(decode_raw(jwk["y"].as_str().unwrap()));
                        (&ECDSA_P256_SHA256_FIXED, point)
                    }
                    _ => {
                        assert_eq!(header["alg"], "EdDSA");
                        assert_eq!(
                            (&jwk["kty"], &jwk["crv"]),
                            (&"OKP".into(), &"Ed25519".into())
                        );
                        (&ED25519, decode_raw(jwk["x"].as_str().unwrap()))
                    }
                };
            // No private member leaks into the header.
            assert!(jwk.get("d").is_none());
            let signature = decode_raw(parts[2]);
            UnparsedPublicKey::new(verify, public)
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .unwrap_or_else(|_| panic!("{algorithm:?} does not verify"));

            // Without ath or nonce, they are absent, not empty.
            let bare = Claims {
                htm: &Method::GET,
                htu: "https://a/",
                ath: None,
                nonce: None,
            };
            let bare = sign(&key, &bare).unwrap();
            let payload = decode(bare.to_str().unwrap().split('.').nth(1).unwrap());
            assert!(payload.get("ath").is_none() && payload.get("nonce").is_none());
        }
    }

    #[test]
    fn every_proof_has_its_own_jti() {
        let key = ProofKey::generate().unwrap();
        let claims = Claims {
            htm: &Method::GET,
            htu: "https://a/",
            ath: None,
            nonce: None,
        };
        let jtis: std::collections::HashSet<String> = (0..64)
            .map(|_| {
                let proof = sign(&key, &claims).unwrap();
                let payload = decode(proof.to_str().unwrap().split('.').nth(1).unwrap());
                payload["jti"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(jtis.len(), 64);
    }

    fn decode_raw(part: &str) -> Vec<u8> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap()
    }
}
