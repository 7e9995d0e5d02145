//! [`Algorithm`]: the JWS algorithms this crate signs with.

/// A JWS algorithm for `private_key_jwt` assertions and DPoP proofs,
/// written in the header exactly as its variant is named.
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
    /// The `alg` of a JWS header.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::PS256 => "PS256",
            Self::ES256 => "ES256",
            Self::EdDSA => "EdDSA",
        }
    }
}
