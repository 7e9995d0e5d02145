//! [`Sealed`]: tokens encrypted at rest in any [`TokenStore`], with
//! ChaCha20-Poly1305 and a key you supply.

use std::fmt;
use std::time::{Duration, SystemTime};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use zeroize::{Zeroize, Zeroizing};

use super::{fingerprint, Error, Fingerprint, StoreFuture, Stored, TokenStore};

const NONCE: usize = 12;

/// A 256-bit key for [`Sealed`]. Wiped from memory when dropped; its
/// `Debug` output is redacted.
///
/// ```
/// use tower_bearer::store::SealKey;
///
/// assert!(SealKey::from_slice(&[7; 32]).is_ok());
/// assert!(SealKey::from_slice(b"too short").is_err());
/// assert_eq!(format!("{:?}", SealKey::new([7; 32])), "SealKey(<redacted>)");
/// ```
#[derive(Clone)]
pub struct SealKey(Zeroizing<[u8; 32]>);

impl SealKey {
    /// The key `bytes` (from a secret manager, say: 32 random bytes).
    pub fn new(mut bytes: [u8; 32]) -> Self {
        let key = Self(Zeroizing::new(bytes));
        bytes.zeroize();
        key
    }

    /// The key in `bytes`, which must be exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Error::new("a seal key is 32 bytes"))?;
        Ok(Self::new(bytes))
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey(<redacted>)")
    }
}

/// A [`TokenStore`] that encrypts every value before `S` sees it, with
/// ChaCha20-Poly1305 (RustCrypto), a random 96-bit nonce per write and the
/// stored key as associated data: someone who reads the store learns
/// nothing of the token, and a value that was tampered with, moved to
/// another key or sealed with another key reads as a miss (the cache then
/// fetches a new token and overwrites it).
///
/// Every replica of the fleet needs the same key. To rotate it, give the
/// fleet the new key: values sealed with the old one read as misses and are
/// replaced, at the cost of one fetch.
///
/// ```no_run
/// use tower_bearer::store::{RedisStore, SealKey, Sealed};
/// # use tower_bearer::{oauth2::ClientCredentials, TokenCache};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let key_bytes = [0u8; 32];
/// let store = Sealed::new(RedisStore::new("redis://127.0.0.1:6379/")?, SealKey::new(key_bytes));
/// let cache = TokenCache::new(ClientCredentials::try_new("https://idp.example.com/token", "id", "secret")?)
///     .store(store);
/// # let _ = cache;
/// # Ok(())
/// # }
/// ```
pub struct Sealed<S> {
    inner: S,
    cipher: ChaCha20Poly1305,
}

impl<S: TokenStore> Sealed<S> {
    /// `inner`, with every value sealed by `key`.
    pub fn new(inner: S, key: SealKey) -> Self {
        Self {
            inner,
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key.0[..])),
        }
    }

    /// The store inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn seal(&self, key: &str, value: &[u8]) -> Result<Vec<u8>, Error> {
        let mut nonce = [0u8; NONCE];
        getrandom::getrandom(&mut nonce).map_err(|_| Error::new("no randomness for a nonce"))?;
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value,
                    aad: key.as_bytes(),
                },
            )
            .map_err(|_| Error::new("sealing failed"))?;
        let mut out = Vec::with_capacity(NONCE + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The plaintext of `sealed`, or `None` if it does not open.
    fn open(&self, key: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        let (nonce, body) = sealed.split_at_checked(NONCE)?;
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: key.as_bytes(),
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

impl<S: TokenStore> Sealed<S> {
    /// Like [`TokenStore::read`], but a value that does not open (another
    /// key, tampered with) is an error, not a miss: for a value that must
    /// never be guessed at, a refresh token.
    #[cfg_attr(not(feature = "oauth2"), allow(dead_code))]
    pub(crate) fn read_strict<'a>(
        &'a self,
        key: &'a str,
    ) -> StoreFuture<'a, Option<Zeroizing<Vec<u8>>>> {
        Box::pin(async move {
            let Some(stored) = self.inner.read(key).await? else {
                return Ok(None);
            };
            self.open(key, &stored.value).map(Some).ok_or_else(|| {
                Error::new("a sealed value that does not open (another seal key, or tampered with)")
            })
        })
    }
}

impl<S: TokenStore> TokenStore for Sealed<S> {
    fn read<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
        Box::pin(async move {
            let Some(stored) = self.inner.read(key).await? else {
                return Ok(None);
            };
            Ok(self.open(key, &stored.value).map(|value| Stored {
                value: value.to_vec(),
                ttl: stored.ttl,
            }))
        })
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expires_at: Option<SystemTime>,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let sealed = self.seal(key, value)?;
            self.inner.write(key, &sealed, expires_at).await
        })
    }

    fn lease<'a>(&'a self, key: &'a str, owner: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        self.inner.lease(key, owner, ttl)
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        self.inner.release(key, owner)
    }

    /// `fingerprint` is of the plaintext (what the cache wrote and read):
    /// the value is opened to compare it, then deleted if its sealed form is
    /// still the one stored.
    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        fingerprint_: &'a Fingerprint,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let Some(stored) = self.inner.read(key).await? else {
                return Ok(false);
            };
            match self.open(key, &stored.value) {
                Some(plain) if fingerprint(&plain) == *fingerprint_ => {
                    self.inner.delete_if(key, &fingerprint(&stored.value)).await
                }
                _ => Ok(false),
            }
        })
    }

    fn op_timeout(&self) -> Duration {
        self.inner.op_timeout()
    }

    fn now(&self) -> SystemTime {
        self.inner.now()
    }
}

impl<S: fmt::Debug> fmt::Debug for Sealed<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("inner", &self.inner)
            .field("key", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::memory::MemoryStore;

    fn sealed() -> (Sealed<Arc<MemoryStore>>, Arc<MemoryStore>) {
        let plain = Arc::new(MemoryStore::default());
        let sealed = Sealed::new(Arc::clone(&plain), SealKey::new([7; 32]));
        (sealed, plain)
    }

    /// A 401 deletes the token it names and no other: the fingerprint is
    /// of the plaintext, which only the sealed store can compare.
    #[tokio::test]
    async fn delete_if_deletes_only_the_value_named() {
        let (store, plain) = sealed();
        store.write("k", b"token-2", None).await.unwrap();
        assert_ne!(plain.value("k").unwrap(), b"token-2", "sealed at rest");
        assert!(!store
            .delete_if("k", &fingerprint(b"token-1"))
            .await
            .unwrap());
        let read = store.read("k").await.unwrap().expect("still stored");
        assert_eq!(read.value, b"token-2");
        assert!(store
            .delete_if("k", &fingerprint(b"token-2"))
            .await
            .unwrap());
        assert!(store.read("k").await.unwrap().is_none());
        assert!(!store
            .delete_if("k", &fingerprint(b"token-2"))
            .await
            .unwrap());
    }
}
