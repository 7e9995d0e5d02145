//! One token for a whole fleet: a [`TokenStore`] shared by every replica
//! (Redis: [`RedisStore`]), so that N processes cost the identity provider
//! what one process costs.
//!
//! Every replica keeps its own [`TokenCache`](crate::TokenCache) as the first
//! level, and a request with a fresh token never touches the store: the hot
//! path is the same instructions with or without one. The store is consulted
//! only by the single local refresh, when the token is due or missing:
//!
//! 1. **Read.** A stored token that is fresh *by this cache's own rules* is
//!    used, with no call to the identity provider. The record holds the
//!    token, its issue time (the start of the fetch that got it) and its
//!    absolute expiry in Unix time, and the store's own remaining time to
//!    live (Redis `PTTL`) gives how much of it is left: so each replica
//!    applies its own margin, refresh point and jitter to the same lifetime,
//!    and a replica whose clock is off by seconds still agrees with the
//!    others (one clock, the store's, measures what is left). The record
//!    is [verified](self#what-the-store-is-trusted-with) first.
//! 2. **Lease.** Otherwise the replica takes the fleet's fetch lease
//!    (`SET NX PX` with a random owner, lasting as long as its holder may
//!    take to write: the fetch timeout, three op timeouts and 250 ms),
//!    reads the store once more (the previous holder may have
//!    written and released in between), fetches from the source, writes
//!    the token with a time to live equal to its remaining lifetime, and
//!    releases the lease by compare-and-delete.
//! 3. **Wait.** A replica that loses the lease polls the store (backing off
//!    from 10 ms to 200 ms) for the winner's token, for at most the fetch
//!    timeout, taking the lease itself if it falls free (a winner that failed
//!    or died); then it fetches on its own.
//!
//! A request that waits for a token (a cold cache, an expired token) waits
//! for this whole refresh: with a store, at most twice the
//! [`fetch_timeout`](crate::TokenCache::fetch_timeout) (the wait for another
//! replica, then its own fetch) plus five store timeouts. The write and the
//! release are part of the refresh (two round trips to the store), not a
//! task of their own: on a runtime driven by a `block_on` per request, or
//! alive but idle, a spawned task would not finish until the next request,
//! leaving the lease held (and the token maybe unwritten), and the other
//! replicas would wait up to the fetch timeout for it. A store operation that fails ends the store's part in that
//! refresh: nothing more is written or released, so a request waits on a
//! failing store once.
//!
//! # Failures
//!
//! - **Every store operation is bounded** by the store's
//!   [`op_timeout`](TokenStore::op_timeout) (250 ms for [`RedisStore`]): a
//!   store that is down, slow or gone counts as a miss, and the refresh
//!   fetches from the source at once, alone, as a cache without a store
//!   would (single flight within the process). Nothing ever waits on the
//!   store longer than one timeout per step, and a lease that timed out on
//!   the client (it may still land late on a slow server) is never waited
//!   on by this replica; its own time to live bounds it for the others.
//! - **Sharing resumes by itself**: each refresh tries the store again.
//!   [`RedisStore::new`] connects on first use and again after any
//!   connection error, with no backoff of its own, so a Redis that comes
//!   back is used from the next refresh on.
//! - **A `401`** evicts the token locally as always, and deletes the shared
//!   copy in the background, only if the store still holds that very token
//!   (compared by a SHA-256 fingerprint of the stored value): a late `401`
//!   for an old token never evicts its successor. The replica also never
//!   takes the rejected token back from the store.
//! - A value that cannot be read (garbage, another version, a
//!   [sealed](Sealed) value that fails to open) is a miss, and is replaced
//!   by the next write.
//!
//! # Stored keys and identities
//!
//! A stored key is never a secret: it is the hex SHA-256 of what names the
//! token (for OAuth2, the token URL, the client id, the scopes, audience and
//! resources; see [`TokenSource::store_identity`](crate::TokenSource::store_identity)) and of the key of a
//! [`KeyedTokenCache`](crate::KeyedTokenCache) (its [`StoreKey`] encoding,
//! injective and the same in every process; never its trace label), under
//! the store's prefix (`tower-bearer:` by default). A source without an
//! identity, such as a closure, must be named with
//! [`TokenCache::store_identity`](crate::TokenCache::store_identity): until
//! it is, its cache does not use the store at all (and says so once in a
//! `warn` event), so that two unrelated sources never share a token.
//!
//! An identity is derived from everything that made the token, never
//! guessed: a source that cannot derive a complete one has none. For
//! OAuth2 that includes how the client authenticates and a public
//! fingerprint of its credential: an assertion source without an identity
//! of its own (name it with [`Named`]), a custom client without a
//! [`transport_identity`](crate::oauth2::ClientCredentials::transport_identity),
//! or DPoP, leave the source unshared. The repository's `docs/store.md`
//! has the table for every source.
//!
//! # What the store is trusted with
//!
//! A record read from the store is served only if it is believable by
//! itself: issued no more than [`MAX_CLOCK_SKEW`] (5 s) in this replica's
//! future, with a lifetime of at most 365 days, an absolute expiry (plus
//! the skew) still ahead by this replica's clock whatever time to live the
//! store gives it, and not one of the last tokens a server rejected;
//! `RedisStore` also checks its fingerprint and its Redis type. Anything
//! else is a miss, overwritten by the refresh's write. So someone who can
//! write to the store can plant a token only without `Sealed` (and for at
//! most its stated lifetime), and with it can only replay a sealed value
//! until that value's own expiry. A lease none of ours could have left (no
//! time to live, or not a string) is taken over at once.
//!
//! The token is never logged; store errors are reported at `debug` level in
//! the fetch span, without any value. [`Stats::fetches`](crate::Stats)
//! counts refreshes, including those the store answered; the identity
//! provider's count is the one to watch for the fleet's cost.
//!
//! # Example
//!
//! ```no_run
//! use std::time::Duration;
//! use tower_bearer::oauth2::ClientCredentials;
//! use tower_bearer::store::RedisStore;
//! use tower_bearer::TokenCache;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // No connection yet: the fleet may start before its Redis.
//! let redis = RedisStore::new("redis://127.0.0.1:6379/")?
//!     .prefix("billing:")
//!     .op_timeout(Duration::from_millis(250));
//! let cache = TokenCache::new(ClientCredentials::try_new(
//!     "https://idp.example.com/oauth2/token",
//!     "billing-service",
//!     "client-secret",
//! )?)
//! .store(redis);
//! # let _ = cache;
//! # Ok(())
//! # }
//! ```
//!
//! A closure source names its identity:
//!
//! ```
//! # #[cfg(feature = "redis")]
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tower_bearer::store::{RedisStore, StoreIdentity};
//! use tower_bearer::{Token, TokenCache};
//!
//! let cache = TokenCache::new(|| async {
//!     Ok::<_, std::io::Error>(Token::new("abcd1234").expires_in(Duration::from_secs(3600)))
//! })
//! .store(RedisStore::new("redis://127.0.0.1:6379/")?)
//! .store_identity(StoreIdentity::new("legacy-gateway").with("tenant", "acme"));
//! # let _ = cache;
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "redis"))]
//! # fn main() {}
//! ```
//!
//! The design and every failure mode are in the repository's
//! `docs/store.md`.

#[cfg(test)]
pub(crate) mod memory;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "seal")]
mod seal;
#[cfg(all(test, feature = "redis"))]
mod tests;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

#[cfg(feature = "redis")]
#[cfg_attr(docsrs, doc(cfg(feature = "redis")))]
pub use self::redis::RedisStore;
#[cfg(feature = "seal")]
#[cfg_attr(docsrs, doc(cfg(feature = "seal")))]
pub use self::seal::{SealKey, Sealed};
#[allow(deprecated)]
pub use crate::deprecated::StoreError;
pub use crate::identity::StoreIdentity;
use crate::BoxError;

/// The future of one store operation.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, Error>> + Send + 'a>>;

/// The SHA-256 of a stored value, as written or read: what
/// [`delete_if`](TokenStore::delete_if) compares.
pub type Fingerprint = [u8; 32];

/// How far replicas' Unix clocks may disagree before a stored record's own
/// issue time and expiry are believed over the store's time to live: 5 s.
/// See [the module docs](self#what-the-store-is-trusted-with).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5);

/// The SHA-256 of `value`.
pub fn fingerprint(value: &[u8]) -> Fingerprint {
    Sha256::digest(value).into()
}

/// A store shared by the replicas of a fleet: what [`TokenCache::store`]
/// needs to give the fleet one token per lifetime. See the
/// [module docs](self) for how the cache uses it.
///
/// Values are opaque bytes (the cache encodes, and may
/// [seal](Sealed), the token); keys are the hex SHA-256 of the token's
/// identity, never a secret. Every method must be safe to call concurrently
/// from many processes; each call is bounded by [`op_timeout`](Self::op_timeout)
/// by the cache, and a failure or timeout counts as a miss.
///
/// [`TokenCache::store`]: crate::TokenCache::store
pub trait TokenStore: Send + Sync + 'static {
    /// The value stored under `key`, and how long the store will still keep
    /// it if it knows (Redis: `PTTL`).
    fn read<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>>;

    /// Stores `value` under `key` until `expires_at` (a time to live of
    /// `expires_at - now()`), or for good when `None`. Replaces any value.
    fn write<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expires_at: Option<SystemTime>,
    ) -> StoreFuture<'a, ()>;

    /// Takes the fetch lease of `key` for `owner`, for `ttl`, if nobody
    /// holds it (`SET NX PX`). Returns whether `owner` now holds it.
    fn lease<'a>(&'a self, key: &'a str, owner: &'a str, ttl: Duration) -> StoreFuture<'a, bool>;

    /// Releases the fetch lease of `key` if `owner` still holds it.
    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()>;

    /// Deletes the value of `key` if its [`fingerprint`] is still
    /// `fingerprint`. Returns whether it deleted it.
    fn delete_if<'a>(&'a self, key: &'a str, fingerprint: &'a Fingerprint)
        -> StoreFuture<'a, bool>;

    /// How long the cache waits for any one operation before counting it
    /// as failed. Default: 250 ms.
    fn op_timeout(&self) -> Duration {
        Duration::from_millis(250)
    }

    /// The Unix time by which this replica stamps what it writes. Default:
    /// the system clock.
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

impl<S: TokenStore + ?Sized> TokenStore for std::sync::Arc<S> {
    fn read<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Stored>> {
        (**self).read(key)
    }

    fn write<'a>(
        &'a self,
        key: &'a str,
        value: &'a [u8],
        expires_at: Option<SystemTime>,
    ) -> StoreFuture<'a, ()> {
        (**self).write(key, value, expires_at)
    }

    fn lease<'a>(&'a self, key: &'a str, owner: &'a str, ttl: Duration) -> StoreFuture<'a, bool> {
        (**self).lease(key, owner, ttl)
    }

    fn release<'a>(&'a self, key: &'a str, owner: &'a str) -> StoreFuture<'a, ()> {
        (**self).release(key, owner)
    }

    fn delete_if<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a Fingerprint,
    ) -> StoreFuture<'a, bool> {
        (**self).delete_if(key, fingerprint)
    }

    fn op_timeout(&self) -> Duration {
        (**self).op_timeout()
    }

    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

/// A value read from a [`TokenStore`].
#[derive(Clone)]
pub struct Stored {
    /// The bytes written.
    pub value: Vec<u8>,
    /// How much longer the store keeps it, by the store's own clock, if it
    /// knows. The cache prefers it to its own clock (one clock for the
    /// fleet), but never beyond the record's own expiry plus
    /// [`MAX_CLOCK_SKEW`] by its own clock.
    pub ttl: Option<Duration>,
}

impl fmt::Debug for Stored {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stored")
            .field("value", &"<redacted>")
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// A store operation failed: the cache counts it as a miss and goes on
/// without the store.
#[derive(Debug)]
pub struct Error {
    source: BoxError,
}

impl Error {
    /// A failure of the store, with its cause.
    pub fn new(source: impl Into<BoxError>) -> Self {
        Self {
            source: source.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "token store operation failed: {}", self.source)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

/// Why a cache does not share its tokens through a store: what
/// [`TokenCache::sharing`](crate::TokenCache::sharing) returns, for a check
/// at startup (otherwise the cache only says so in one `warn` event, at its
/// first refresh, and works alone).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotShared {
    /// The cache has no [store](crate::TokenCache::store).
    NoStore,
    /// Its source cannot derive a complete identity (a closure, a file, a
    /// client assertion or custom client that is not named, DPoP), and the
    /// cache was given none with
    /// [`TokenCache::store_identity`](crate::TokenCache::store_identity).
    NoIdentity {
        /// The source's type name.
        source: &'static str,
    },
}

impl fmt::Display for NotShared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStore => f.write_str("the token cache has no store"),
            Self::NoIdentity { source } => write!(
                f,
                "the token source {source} has no store identity, and the cache was given none"
            ),
        }
    }
}

impl std::error::Error for NotShared {}

/// A [`TokenSource`](crate::TokenSource) with a [`StoreIdentity`] the
/// application gives it: for a source that cannot derive one (a closure, a
/// [`FileToken`](crate::FileToken), an
/// [`oauth2::FileAssertion`](crate::oauth2::FileAssertion)), used where a
/// source's identity is needed inside another's: the assertion source of
/// [`ClientCredentials::client_assertion`](crate::oauth2::ClientCredentials::client_assertion),
/// the subject source of a [`TokenExchange`](crate::oauth2::TokenExchange).
///
/// Naming a source is a promise: **every process that gives the same
/// identity gets interchangeable tokens from it**. A projected service
/// account token lies at the same path in every pod, yet names a different
/// workload in each: name it after the workload (its service account), not
/// after the path.
///
/// ```
/// # #[cfg(feature = "oauth2")]
/// # fn main() -> Result<(), tower_bearer::oauth2::Error> {
/// use tower_bearer::oauth2::{ClientCredentials, FileAssertion};
/// use tower_bearer::store::{Named, StoreIdentity};
///
/// let assertion = Named::new(
///     FileAssertion::new("/var/run/secrets/tokens/idp-token"),
///     StoreIdentity::new("k8s-service-account").with("name", "billing/invoicer"),
/// );
/// let source = ClientCredentials::try_new("https://idp.example.com/token", "", "")?
///     .client_assertion(assertion);
/// # let _ = source;
/// # Ok(())
/// # }
/// # #[cfg(not(feature = "oauth2"))]
/// # fn main() {}
/// ```
#[derive(Clone, Debug)]
pub struct Named<S> {
    inner: S,
    identity: StoreIdentity,
}

impl<S: crate::TokenSource> Named<S> {
    /// `inner`, whose tokens `identity` names.
    pub fn new(inner: S, identity: StoreIdentity) -> Self {
        Self { inner, identity }
    }

    /// The source inside.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: crate::TokenSource> crate::TokenSource for Named<S> {
    type Error = S::Error;
    type Future = S::Future;

    fn fetch(&self) -> S::Future {
        self.inner.fetch()
    }

    fn retry_hint(error: &S::Error) -> crate::RetryHint {
        S::retry_hint(error)
    }

    fn store_identity(&self) -> Option<StoreIdentity> {
        Some(self.identity.clone())
    }
}

/// How a key of a [`KeyedTokenCache`](crate::KeyedTokenCache) is written
/// into its stored key: needed by
/// [`KeyedTokenCache::store`](crate::KeyedTokenCache::store), so that the
/// stored key never depends on how a key is labelled in traces.
///
/// The encoding must be **injective** (two different keys never give the
/// same bytes) and **stable** (the same key gives the same bytes in every
/// process of the fleet, in every build: never `Debug` or `Hash` output,
/// which promise neither). Two keys with the same encoding share one stored
/// token.
///
/// It is implemented for strings, integers, `bool`, `char`, and `Option`s,
/// slices, `Vec`s and tuples (up to four) of those, each written so that it
/// also tells where it ends: a tuple's parts are simply written one after
/// the other. For a key of your own, write each part the same way:
///
/// ```
/// use tower_bearer::store::StoreKey;
///
/// #[derive(Clone, PartialEq, Eq, Hash, Debug)]
/// enum Api {
///     Orders,
///     Tenant(String),
/// }
///
/// impl StoreKey for Api {
///     fn encode_store_key(&self, out: &mut Vec<u8>) {
///         match self {
///             Api::Orders => 0u8.encode_store_key(out),
///             Api::Tenant(name) => (1u8, name).encode_store_key(out),
///         }
///     }
/// }
///
/// let encode = |key: &Api| {
///     let mut out = Vec::new();
///     key.encode_store_key(&mut out);
///     out
/// };
/// assert_ne!(encode(&Api::Tenant("acme".into())), encode(&Api::Tenant("globex".into())));
/// ```
pub trait StoreKey {
    /// Appends this key's encoding to `out`.
    fn encode_store_key(&self, out: &mut Vec<u8>);
}

impl<T: StoreKey + ?Sized> StoreKey for &T {
    fn encode_store_key(&self, out: &mut Vec<u8>) {
        (**self).encode_store_key(out);
    }
}

impl StoreKey for str {
    /// Its length (8 bytes, big-endian), then its UTF-8 bytes.
    fn encode_store_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u64).to_be_bytes());
        out.extend_from_slice(self.as_bytes());
    }
}

macro_rules! store_key_as_str {
    ($($ty:ty),*) => {$(
        impl StoreKey for $ty {
            fn encode_store_key(&self, out: &mut Vec<u8>) {
                str::encode_store_key(self, out);
            }
        }
    )*};
}
store_key_as_str!(
    String,
    Box<str>,
    std::sync::Arc<str>,
    std::borrow::Cow<'_, str>
);

macro_rules! store_key_as_int {
    ($($ty:ty),*) => {$(
        impl StoreKey for $ty {
            /// Its big-endian bytes (a fixed width per type).
            fn encode_store_key(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
        }
    )*};
}
store_key_as_int!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128);

impl StoreKey for bool {
    fn encode_store_key(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl StoreKey for char {
    fn encode_store_key(&self, out: &mut Vec<u8>) {
        u32::from(*self).encode_store_key(out);
    }
}

impl<T: StoreKey> StoreKey for Option<T> {
    /// `0`, or `1` and the value.
    fn encode_store_key(&self, out: &mut Vec<u8>) {
        match self {
            None => out.push(0),
            Some(value) => {
                out.push(1);
                value.encode_store_key(out);
            }
        }
    }
}

impl<T: StoreKey> StoreKey for [T] {
    /// Its length (8 bytes, big-endian), then each item.
    fn encode_store_key(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u64).to_be_bytes());
        for item in self {
            item.encode_store_key(out);
        }
    }
}

impl<T: StoreKey> StoreKey for Vec<T> {
    fn encode_store_key(&self, out: &mut Vec<u8>) {
        self[..].encode_store_key(out);
    }
}

macro_rules! store_key_tuple {
    ($($name:ident)+) => {
        impl<$($name: StoreKey),+> StoreKey for ($($name,)+) {
            #[allow(non_snake_case)]
            fn encode_store_key(&self, out: &mut Vec<u8>) {
                let ($($name,)+) = self;
                $($name.encode_store_key(out);)+
            }
        }
    };
}
store_key_tuple!(A B);
store_key_tuple!(A B C);
store_key_tuple!(A B C D);

/// The [`StoreKey`] encoding of `key`.
pub(crate) fn encode_key<K: StoreKey>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode_store_key(&mut out);
    out
}

#[cfg(all(test, feature = "oauth2"))]
mod identity_tests {
    use crate::oauth2::ClientCredentials;
    use crate::TokenSource;

    fn key(source: &ClientCredentials) -> String {
        source.store_identity().expect("an identity").key(None)
    }

    #[test]
    fn everything_but_the_secret_changes_the_stored_key() {
        let base = || ClientCredentials::new("https://idp.example.com/token", "svc", "secret-1");
        let same = key(&base());
        assert_eq!(
            key(&ClientCredentials::new(
                "https://idp.example.com/token",
                "svc",
                "secret-2"
            )),
            same,
            "a rotated secret keeps sharing"
        );
        let others = [
            key(&ClientCredentials::new(
                "https://idp.example.com/token",
                "other",
                "secret-1",
            )),
            key(&ClientCredentials::new(
                "https://idp2.example.com/token",
                "svc",
                "secret-1",
            )),
            key(&base().scope("read")),
            key(&base().scope("write")),
            key(&base().audience("https://api.example.com")),
            key(&base().resource("https://api.example.com")),
            key(&base().param("tenant", "acme")),
        ];
        let mut all: Vec<_> = others.iter().chain([&same]).collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), others.len() + 1, "every key differs");
        assert_ne!(
            base().store_identity().unwrap().key(Some(b"k")),
            same,
            "the cache key counts"
        );
        assert!(
            !format!("{:?}", base().store_identity()).contains("svc"),
            "Debug shows field names only"
        );
    }

    #[test]
    fn how_the_client_authenticates_changes_the_stored_key() {
        use crate::oauth2::ClientAuth;
        let base = || ClientCredentials::new("https://idp.example.com/token", "svc", "s");
        let basic = key(&base());
        let post = key(&base().auth_method(ClientAuth::Post));
        assert_ne!(basic, post);
        // An assertion source without an identity: no identity at all.
        let assertion = |value: &'static str| {
            move || async move { Ok::<_, std::io::Error>(crate::Token::new(value)) }
        };
        assert!(base()
            .client_assertion(assertion("a"))
            .store_identity()
            .is_none());
        let named = |value: &'static str, workload: &str| {
            base().client_assertion(super::Named::new(
                assertion(value),
                super::StoreIdentity::new("workload").with("name", workload),
            ))
        };
        let (a, b) = (key(&named("a", "a")), key(&named("b", "b")));
        assert_ne!(a, b, "each assertion source's identity counts");
        assert!(a != basic && a != post);
        assert_eq!(a, key(&named("a2", "a")), "the identity, not the value");
        // Secret-based authentication with no client id names nobody.
        let anonymous = ClientCredentials::new("https://idp.example.com/token", "", "s");
        assert!(anonymous.store_identity().is_none());
        assert!(anonymous
            .auth_method(ClientAuth::Post)
            .store_identity()
            .is_none());
    }

    #[cfg(feature = "private-key-jwt")]
    #[test]
    fn a_signing_key_is_named_by_its_public_half() {
        use crate::oauth2::{Algorithm, PrivateKey};
        let keys = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/oidc-provider/keys/"
        );
        let read = |name: &str| std::fs::read_to_string(format!("{keys}{name}")).unwrap();
        let source = |algorithm, pem: &str| {
            ClientCredentials::new("https://idp.example.com/token", "", "")
                .private_key_jwt(PrivateKey::from_pkcs8_pem(algorithm, pem).unwrap())
        };
        let rsa = key(&source(Algorithm::RS256, &read("rsa.pem")));
        let other = key(&source(Algorithm::RS256, &read("wrong-rsa.pem")));
        let ec = key(&source(Algorithm::ES256, &read("ec.pem")));
        assert_ne!(rsa, other);
        assert_ne!(rsa, ec);
        assert_eq!(rsa, key(&source(Algorithm::RS256, &read("rsa.pem"))));
        assert_ne!(rsa, key(&source(Algorithm::PS256, &read("rsa.pem"))));
        assert_ne!(
            rsa,
            key(&source(Algorithm::RS256, &read("rsa.pem")).assertion_audience("https://idp"))
        );
    }

    #[test]
    fn a_custom_client_and_the_default_lifetime_count() {
        use std::convert::Infallible;
        use std::time::Duration;
        let base = || ClientCredentials::new("https://idp.example.com/token", "svc", "s");
        let client = tower::service_fn(
            |_: http::Request<http_body_util::Full<bytes::Bytes>>| async {
                Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(
                    bytes::Bytes::new(),
                )))
            },
        );
        assert!(base().http_client(client).store_identity().is_none());
        let named = key(&base()
            .http_client(client)
            .transport_identity("mtls:billing"));
        assert_ne!(named, key(&base()));
        assert_ne!(
            named,
            key(&base().http_client(client).transport_identity("mtls:orders"))
        );
        assert_ne!(
            key(&base()),
            key(&base().default_lifetime(Duration::from_secs(60)))
        );
    }

    #[test]
    fn a_token_exchange_is_named_by_its_subject_source() {
        let subject = |value: &'static str| {
            move || async move { Ok::<_, std::io::Error>(crate::Token::new(value)) }
        };
        let exchange = |workload: &str| {
            crate::oauth2::TokenExchange::new(
                "https://idp.example.com/token",
                "svc",
                "s",
                super::Named::new(
                    subject("subject"),
                    super::StoreIdentity::new("user").with("id", workload),
                ),
            )
        };
        let (a, b) = (
            exchange("a").store_identity().unwrap().key(None),
            exchange("b").store_identity().unwrap().key(None),
        );
        assert_ne!(a, b);
        let plain = ClientCredentials::new("https://idp.example.com/token", "svc", "s");
        assert_ne!(a, key(&plain));
    }

    #[test]
    fn a_token_exchange_has_no_identity_of_its_own() {
        let subject = || async { Ok::<_, std::io::Error>(crate::Token::new("subject")) };
        let exchange =
            crate::oauth2::TokenExchange::new("https://idp.example.com/token", "svc", "", subject);
        assert!(exchange.store_identity().is_none());
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn a_dpop_source_has_no_identity_its_tokens_are_this_process_s() {
        let key = crate::dpop::ProofKey::generate().unwrap();
        let source = ClientCredentials::new("https://idp.example.com/token", "svc", "s").dpop(key);
        assert!(source.store_identity().is_none());
    }
}

#[cfg(test)]
mod unit_tests {
    use std::error::Error as _;
    use std::time::Duration;

    use super::*;

    fn encoded(key: &(impl StoreKey + ?Sized)) -> Vec<u8> {
        let mut out = Vec::new();
        key.encode_store_key(&mut out);
        out
    }

    /// The encodings are a promise to every process of a fleet, in every
    /// build: these bytes, exactly.
    #[test]
    fn each_encoding_is_the_documented_bytes() {
        let len = |n: u64| n.to_be_bytes().to_vec();
        assert_eq!(encoded("ab"), [len(2), b"ab".to_vec()].concat());
        assert_eq!(encoded(&true), [1]);
        assert_eq!(encoded(&false), [0]);
        assert_eq!(encoded(&'é'), 0xe9u32.to_be_bytes());
        assert_eq!(encoded(&-2i16), [0xff, 0xfe]);
        assert_eq!(encoded(&None::<u8>), [0]);
        assert_eq!(encoded(&Some(7u8)), [1, 7]);
        assert_eq!(encoded(&[3u8, 4][..]), [len(2), vec![3, 4]].concat());
        assert_eq!(encoded(&vec![3u8, 4]), encoded(&[3u8, 4][..]));
        assert_eq!(
            encoded(&(1u8, "a")),
            [vec![1], len(1), b"a".to_vec()].concat()
        );
        assert_eq!(encoded(&(1u8, 2u8, 3u8, 4u8)), [1, 2, 3, 4]);
        assert_eq!(encoded(&String::from("ab")), encoded("ab"));
    }

    /// Keys that differ never share bytes, even where a naive encoding
    /// would run one part into the next.
    #[test]
    fn different_keys_encode_differently() {
        assert_ne!(encoded(&("ab", "c")), encoded(&("a", "bc")));
        assert_ne!(
            encoded(&(vec![1u8], vec![2u8])),
            encoded(&(vec![1u8, 2], Vec::<u8>::new()))
        );
        assert_ne!(encoded(&Some(0u8)), encoded(&None::<u8>));
        assert_ne!(encoded(&('a', 'b')), encoded(&('b', 'a')));
        assert_ne!(encoded(&(true, false)), encoded(&(false, true)));
    }

    #[test]
    fn a_reference_encodes_as_what_it_refers_to() {
        assert_eq!(encoded(&&"tenant"), encoded("tenant"));
        assert_eq!(encoded(&&&7u64), encoded(&7u64));
        assert!(!encoded(&&"tenant").is_empty());
    }

    #[test]
    fn a_stored_value_debugs_without_its_bytes() {
        let stored = Stored {
            value: b"s3cr3t-record".to_vec(),
            ttl: Some(Duration::from_secs(7)),
        };
        let debug = format!("{stored:?}");
        assert!(debug.starts_with("Stored {"), "{debug}");
        assert!(debug.contains("ttl: Some(7s)"), "{debug}");
        assert!(!debug.contains("s3cr3t"), "{debug}");
    }

    #[test]
    fn a_store_error_keeps_its_cause() {
        let error = Error::new(std::io::Error::other("connection reset"));
        assert_eq!(
            error.source().map(ToString::to_string).as_deref(),
            Some("connection reset")
        );
        assert!(error.to_string().ends_with("connection reset"), "{error}");
    }
}
