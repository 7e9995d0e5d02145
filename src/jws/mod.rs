//! JWS signing, the ground floor under `oauth2` (client assertions) and
//! `dpop` (proofs): keys and algorithms ([`PrivateKey`], [`Algorithm`]),
//! the JOSE header, and the compact serialization
//! `base64url(header) "." base64url(payload) "." base64url(signature)`.
//!
//! It knows nothing of OAuth2 or DPoP: each of them writes its own claims
//! and signs them here. Its own failures are one crate-private [`Error`],
//! which each caller turns into its own public error (an
//! `oauth2::Error` of kind `Config`, a `dpop::Error` of kind `Key`).
//! The module is private; its public types are re-exported as
//! `oauth2::{Algorithm, PrivateKey}`.

mod algorithm;
mod compact;
mod key;
#[cfg(test)]
pub(crate) use key::fixtures;

pub use self::algorithm::Algorithm;
pub(crate) use self::compact::sign;
pub use self::key::PrivateKey;

use std::borrow::Cow;
use std::fmt;

use base64::Engine;

/// Why a key could not be read, generated or used to sign: a message that
/// never quotes the key.
#[derive(Clone, Debug)]
pub(crate) struct Error {
    message: Cow<'static, str>,
}

impl Error {
    pub(crate) fn new(message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            message: message.into(),
        }
    }

    /// The message, for a caller that wraps it in an error of its own.
    pub(crate) fn into_message(self) -> String {
        self.message.into_owned()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// base64url without padding, as every part of a compact JWS.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Appends the base64url (no padding) of `bytes` to `out`.
pub(crate) fn b64_into(bytes: &[u8], out: &mut String) {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(bytes, out);
}
