//! The JWS compact serialization: base64url parts joined by `.`, the last
//! one the signature of the first two.

use ring::rand::SystemRandom;

use super::{b64, Error, PrivateKey};

/// The base64url of a JSON value's text: a header or payload part.
fn encode_json(value: &serde_json::Value) -> String {
    b64(value.to_string().as_bytes())
}

/// A compact JWS of `header` and `claims`, signed with `key`.
pub(crate) fn sign(
    key: &PrivateKey,
    header: serde_json::Map<String, serde_json::Value>,
    claims: &serde_json::Value,
    rng: &SystemRandom,
) -> Result<String, Error> {
    let mut jws = format!(
        "{}.{}",
        encode_json(&serde_json::Value::Object(header)),
        encode_json(claims)
    );
    key.sign_into(&mut jws, rng)
        .map_err(|_| Error::new("cannot sign the JWS"))?;
    Ok(jws)
}
