//! [`StoreIdentity`]: what names a source's tokens across processes. A
//! source derives it ([`TokenSource::store_identity`](crate::TokenSource::store_identity));
//! a store keys shared tokens by its digest. Public as
//! `store::StoreIdentity`.

use std::fmt;

use sha2::{Digest, Sha256};

/// What names a source's tokens across processes, without any secret: two
/// caches whose sources have the same identity (and the same cache key)
/// share one stored token.
///
/// [`ClientCredentials`](crate::oauth2::ClientCredentials) has one (its
/// token URL, client id, scopes, audience, resources and extra parameters).
/// Other sources name theirs with
/// [`TokenCache::store_identity`](crate::TokenCache::store_identity), or by
/// implementing [`TokenSource::store_identity`](crate::TokenSource::store_identity).
///
/// Only its SHA-256 is stored, and its `Debug` output shows the field names
/// only; still, **never put a secret in it**.
///
/// ```
/// use tower_bearer::store::StoreIdentity;
///
/// let a = StoreIdentity::new("gateway").with("tenant", "acme");
/// let b = StoreIdentity::new("gateway").with("tenant", "globex");
/// assert_ne!(a, b);
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StoreIdentity {
    name: String,
    fields: Vec<(String, String)>,
}

impl StoreIdentity {
    /// An identity named `name` (a kind of source, a service's name).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            fields: Vec::new(),
        }
    }

    /// Adds a field: anything that changes the token (a URL, a client id, an
    /// audience). Order matters.
    pub fn with(mut self, field: impl Into<String>, value: impl Into<String>) -> Self {
        self.fields.push((field.into(), value.into()));
        self
    }

    /// Adds `identity` as a field: the identity of a source this one is
    /// made from (an assertion source, a subject token's source), by its
    /// digest, so that every field of it counts.
    #[cfg(feature = "oauth2")]
    pub(crate) fn with_identity(self, field: &str, identity: &StoreIdentity) -> Self {
        self.with(
            field,
            hex(&identity.digest(b"tower-bearer/identity/v1", None)),
        )
    }

    /// The stored key of this identity with the
    /// [`StoreKey`](crate::store::StoreKey) encoding of a
    /// keyed cache's key, `cache_key`: a hex SHA-256 over length-prefixed
    /// parts, so that no two different identities give the same input.
    pub(crate) fn key(&self, cache_key: Option<&[u8]>) -> String {
        // v2: keys of a keyed cache are their `StoreKey` encoding (v1 hashed
        // a label, which need not tell keys apart).
        hex(&self.digest(b"tower-bearer/store/v2", cache_key))
    }

    fn digest(&self, domain: &[u8], cache_key: Option<&[u8]>) -> [u8; 32] {
        let mut hash = Sha256::new();
        let mut part = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_be_bytes());
            hash.update(bytes);
        };
        part(domain);
        part(self.name.as_bytes());
        for (field, value) in &self.fields {
            part(field.as_bytes());
            part(value.as_bytes());
        }
        match cache_key {
            Some(key) => {
                part(b"key");
                part(key);
            }
            None => part(b"single"),
        }
        hash.finalize().into()
    }
}

impl fmt::Debug for StoreIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreIdentity")
            .field("name", &self.name)
            .field(
                "fields",
                &self.fields.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            )
            .finish()
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}
