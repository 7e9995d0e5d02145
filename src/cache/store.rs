//! The cache's side of a [`TokenStore`]: what the single local refresh does
//! when the cache has a store (see [`crate::store`] for the protocol and its
//! failure modes). Nothing here runs on the hot path.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::clock::{self, Limit};
use super::stats::StoreCounters;
use super::sync;
use super::timing::Timing;
use crate::source::DynSource;
use crate::store::{
    fingerprint, Fingerprint, NotShared, StoreFuture, StoreIdentity, TokenStore, MAX_CLOCK_SKEW,
};
use crate::token::{Expiry, Origin, SharedCopy};
use crate::{Token, TokenError};

/// The first pause of a replica that waits for another's fetch; it doubles
/// up to [`LAST_POLL`].
const FIRST_POLL: Duration = Duration::from_millis(10);
const LAST_POLL: Duration = Duration::from_millis(200);
/// What a lease lasts beyond its holder's bound (see [`lease_ttl`]): for
/// the scheduling of the holder's tasks.
const LEASE_SLACK: Duration = Duration::from_millis(250);

/// How long a fetch lease lasts: as long as its holder may take to write
/// the token once the lease is taken: the lease's own reply, the read that
/// checks the previous holder, the fetch, and the write, each store step
/// bounded by the op timeout; and some slack. A shorter lease could expire
/// while its holder still writes, and let another replica fetch too.
fn lease_ttl(fetch_timeout: Duration, op_timeout: Duration) -> Duration {
    fetch_timeout
        .saturating_add(op_timeout.saturating_mul(3))
        .saturating_add(LEASE_SLACK)
}

/// The longest lifetime a stored token may have: the cap on fetched OAuth2
/// tokens (`ClientCredentials::MAX_LIFETIME`), 365 days. A record claiming
/// more is a miss; a longer-lived token is stored with this lifetime.
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// A cache's store settings; shared by its clones through the config.
#[derive(Clone, Default)]
pub(crate) struct Binding {
    store: Option<Arc<dyn TokenStore>>,
    identity: Option<StoreIdentity>,
    cache_key: CacheKey,
    /// The fingerprints of the last tokens servers rejected: never taken back
    /// from the store, whether or not the background delete has landed.
    rejected: Rejected,
    warned: Arc<AtomicBool>,
}

type Rejected = Arc<Mutex<std::collections::VecDeque<Fingerprint>>>;

/// How many rejected tokens a cache remembers (32 bytes each): a token
/// rejected before the last one, written back to the store (replayed, or
/// by a replica that still held it), is not taken back either.
const REJECTED_KEPT: usize = 8;

/// What a cache adds to its identity in the stored key.
#[derive(Clone, Default)]
enum CacheKey {
    /// A single cache: nothing.
    #[default]
    Single,
    /// A key of a keyed cache, by its [`StoreKey`](crate::store::StoreKey)
    /// encoding; `None` if the keyed cache has none to give (no store yet):
    /// such a key never uses the store, for it cannot tell itself apart.
    Keyed(Option<Arc<[u8]>>),
}

impl Binding {
    pub(crate) fn set_store(&mut self, store: Arc<dyn TokenStore>) {
        self.store = Some(store);
    }

    pub(crate) fn set_identity(&mut self, identity: StoreIdentity) {
        self.identity = Some(identity);
    }

    /// The binding of one key of a keyed cache: the key's
    /// [`StoreKey`](crate::store::StoreKey) encoding, if the keyed cache
    /// has one, is part of the stored key, and rejections are the key's own.
    pub(crate) fn for_key(&self, key: Option<Vec<u8>>) -> Self {
        Self {
            store: self.store.clone(),
            identity: self.identity.clone(),
            cache_key: CacheKey::Keyed(key.map(Arc::from)),
            rejected: Rejected::default(),
            warned: Arc::default(),
        }
    }

    /// Sets the encoding of a keyed cache's key, for a key added before
    /// its keyed cache had a store.
    pub(crate) fn set_key(&mut self, key: Vec<u8>) {
        self.cache_key = CacheKey::Keyed(Some(Arc::from(key)));
    }

    /// How long one refresh may take: the wait for another replica's fetch,
    /// then a fetch of its own, and the store operations around them (at
    /// most five past the wait: a read, a lease, the read that checks the
    /// lease's predecessor, then the write and the release).
    pub(crate) fn flight_timeout(&self, fetch_timeout: Duration) -> Duration {
        match &self.store {
            None => fetch_timeout,
            Some(store) => fetch_timeout
                .saturating_mul(2)
                .saturating_add(store.op_timeout().saturating_mul(5)),
        }
    }

    /// The store and the identity `source`'s tokens are shared under, or
    /// why they are not.
    pub(crate) fn sharing(
        &self,
        source: &dyn DynSource,
    ) -> Result<(&Arc<dyn TokenStore>, StoreIdentity), NotShared> {
        let store = self.store.as_ref().ok_or(NotShared::NoStore)?;
        let identity = self.identity.clone().or_else(|| source.store_identity());
        let identity = identity.ok_or(NotShared::NoIdentity {
            source: source.type_name(),
        })?;
        Ok((store, identity))
    }

    /// The store and stored key for a fetch from `source`, if the cache has
    /// a store and the source an identity.
    pub(crate) fn fleet(
        &self,
        source: &dyn DynSource,
        counters: &Arc<StoreCounters>,
    ) -> Option<Fleet> {
        let cache_key = match &self.cache_key {
            CacheKey::Single => None,
            CacheKey::Keyed(Some(key)) => Some(&key[..]),
            // Unreachable through the public API (a keyed cache's `store`
            // gives every key its encoding): never share without one.
            CacheKey::Keyed(None) => return None,
        };
        let (store, identity) = match self.sharing(source) {
            Ok(sharing) => sharing,
            Err(NotShared::NoStore) => return None,
            Err(_not_shared) => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(
                        reason = %_not_shared,
                        "not sharing this cache's tokens through its store (see TokenCache::store_identity)"
                    );
                }
                return None;
            }
        };
        Some(Fleet {
            store: Arc::clone(store),
            key: identity.key(cache_key).into(),
            rejected: Arc::clone(&self.rejected),
            counters: Arc::clone(counters),
        })
    }
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("store", &self.store.is_some())
            .field("identity", &self.identity)
            .finish()
    }
}

/// What a replica that fetched does with the store afterwards.
enum After {
    /// Write the token, then release the lease it holds.
    Release(String),
    /// Write the token: it fetched alone after waiting for a lease holder
    /// that never wrote, the store itself answering.
    Write,
    /// Nothing: a store operation of this refresh failed, and no request
    /// waits on a failing store twice in one refresh.
    Skip,
}

/// One refresh through the store.
pub(crate) struct Fleet {
    store: Arc<dyn TokenStore>,
    key: Arc<str>,
    rejected: Rejected,
    counters: Arc<StoreCounters>,
}

/// The copy in the store of a token from a refresh through it: how to
/// delete it if a server rejects the token (the token's [`Origin`]).
struct StoredCopy {
    store: Arc<dyn TokenStore>,
    key: Arc<str>,
    fingerprint: Fingerprint,
    rejected: Rejected,
    counters: Arc<StoreCounters>,
}

impl SharedCopy for StoredCopy {
    /// A server rejected this token: never take it from the store again,
    /// and delete it there, in the background, if it is still the one
    /// stored.
    fn rejected(&self) {
        {
            let mut rejected = self.rejected.lock().unwrap_or_else(PoisonError::into_inner);
            if !rejected.contains(&self.fingerprint) {
                if rejected.len() == REJECTED_KEPT {
                    rejected.pop_front();
                }
                rejected.push_back(self.fingerprint);
            }
        }
        let Ok(runtime) = sync::Handle::try_current() else {
            return;
        };
        let (store, key, fingerprint, counters) = (
            Arc::clone(&self.store),
            Arc::clone(&self.key),
            self.fingerprint,
            Arc::clone(&self.counters),
        );
        runtime.spawn(async move {
            let delete = store.delete_if(&key, &fingerprint);
            let _ = op(&*store, &counters, "delete", delete).await;
        });
    }
}

impl Fleet {
    pub(crate) async fn fetch(
        self,
        source: Arc<dyn DynSource>,
        timing: Timing,
    ) -> Result<Token, TokenError> {
        let give_up = Limit::after(clock::now(), timing.fetch_timeout);
        match self.read(&timing).await {
            Ok(Some(token)) => return Ok(token),
            Ok(None) => {}
            Err(()) => return self.fetch_and_share(&*source, &timing, After::Skip).await,
        }
        let owner = lease_owner();
        let lease = lease_ttl(timing.fetch_timeout, self.store.op_timeout());
        let mut pause = FIRST_POLL;
        loop {
            let outcome = self.op("lease", self.store.lease(&self.key, &owner, lease));
            let won = outcome.await;
            if let Ok(won) = won {
                self.counters.lease(won);
                #[cfg(feature = "tracing")]
                tracing::debug!(won, "fleet fetch lease");
            }
            match won {
                Ok(true) => return self.fetch_as_owner(&*source, &timing, owner).await,
                Ok(false) if pause == FIRST_POLL => self.counters.wait(),
                Ok(false) => {}
                // A lease that timed out here may still land: never wait on it.
                Err(()) => return self.fetch_and_share(&*source, &timing, After::Skip).await,
            }
            let now = clock::now();
            let left = match give_up {
                Limit::At(at) if now >= at => {
                    return self.fetch_and_share(&*source, &timing, After::Write).await
                }
                Limit::At(at) => at - now,
                Limit::Never => pause,
            };
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(LAST_POLL);
            match self.read(&timing).await {
                Ok(Some(token)) => return Ok(token),
                Ok(None) => {}
                Err(()) => return self.fetch_and_share(&*source, &timing, After::Skip).await,
            }
        }
    }

    /// The lease is ours: fetch, unless the previous owner wrote its token
    /// and released the lease between our last read and our lease (checked
    /// again, else this replica would fetch a second token for the same
    /// refresh).
    async fn fetch_as_owner(
        &self,
        source: &dyn DynSource,
        timing: &Timing,
        owner: String,
    ) -> Result<Token, TokenError> {
        match self.read(timing).await {
            Ok(Some(token)) => {
                self.release(&owner).await;
                Ok(token)
            }
            Ok(None) => {
                self.fetch_and_share(source, timing, After::Release(owner))
                    .await
            }
            Err(()) => self.fetch_and_share(source, timing, After::Skip).await,
        }
    }

    /// The stored token, if it is fresh by this cache's rules: fresh even
    /// at the earliest due point its jitter could draw, so that the entry
    /// made of it is fresh too, and a due token is refreshed, not read back.
    async fn read(&self, timing: &Timing) -> Result<Option<Token>, ()> {
        let token = self.read_fresh(timing).await?;
        match &token {
            Some(_) => {
                self.counters.hit();
                #[cfg(feature = "tracing")]
                tracing::debug!("token read from the store");
            }
            None => self.counters.miss(),
        }
        Ok(token)
    }

    async fn read_fresh(&self, timing: &Timing) -> Result<Option<Token>, ()> {
        // What is left (the TTL) was measured somewhere during the read:
        // anchored at its start, the read's own latency is never credited
        // to the token as lifetime.
        let asked = clock::now();
        let Some(stored) = self.op("read", self.store.read(&self.key)).await? else {
            return Ok(None);
        };
        let value = Zeroizing::new(stored.value);
        let fingerprint = fingerprint(&value);
        let rejected = self
            .rejected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&fingerprint);
        if rejected {
            return Ok(None);
        }
        let Some((record, secret)) = Record::decode(&value) else {
            return Ok(None);
        };
        let Some((started, expiry)) = record.anchor(asked, self.store.now(), stored.ttl) else {
            return Ok(None);
        };
        let now = clock::now();
        let granularity = Duration::from_millis(u64::from(record.granularity_ms));
        let mut token = Token::new(secret);
        if let Some(expiry) = expiry {
            if timing.earliest_due(started, expiry, granularity) <= now {
                return Ok(None);
            }
            token = token.expires_at(expiry).counted_in(granularity);
        }
        token.origin = Some(self.origin(started, fingerprint));
        Ok(Some(token))
    }

    /// Fetches from the source, then does what `after` says with the store.
    ///
    /// The write and the release are part of the refresh, not a task of
    /// their own: a task spawned on a runtime driven by a `block_on` per
    /// request, or alive but idle, would not finish until that runtime's
    /// next request: the lease would stay held (and the token maybe
    /// unwritten) meanwhile, and the other replicas would wait up to the
    /// fetch timeout for it. The local waiters pay for it: two
    /// round trips to the store, each bounded by its op timeout, on a
    /// refresh they wait for (a due token's refresh is in the background).
    async fn fetch_and_share(
        &self,
        source: &dyn DynSource,
        timing: &Timing,
        after: After,
    ) -> Result<Token, TokenError> {
        if !matches!(after, After::Release(_)) {
            self.counters.fallback();
            #[cfg(feature = "tracing")]
            tracing::debug!("fetching outside the fleet's single flight");
        }
        let started = clock::now();
        let issued = self.store.now();
        let fetched = fetch_once(source, timing.fetch_timeout).await;
        let mut value = None;
        if let Ok(token) = &fetched {
            value = Record::of(token, started, issued, clock::now());
        }
        let fingerprint = value.as_ref().map(|(value, _)| fingerprint(value));
        let written = match (&after, &value) {
            (After::Skip, _) => false,
            (_, Some((value, expires_at))) => {
                let write = self.store.write(&self.key, value, *expires_at);
                self.op("write", write).await.is_ok()
            }
            // Nothing to share (the fetch failed, or its token is not for
            // other processes): release at once.
            (_, None) => true,
        };
        // After a failed write, a release would most likely fail too: the
        // lease expires on its own.
        if let (After::Release(owner), true) = (&after, written) {
            self.release(owner).await;
        }
        let mut token = fetched?;
        if let Some(fingerprint) = fingerprint {
            token.origin = Some(self.origin(started, fingerprint));
        }
        Ok(token)
    }

    async fn release(&self, owner: &str) {
        let _ = self
            .op("release", self.store.release(&self.key, owner))
            .await;
    }

    async fn op<T>(&self, what: &'static str, op: StoreFuture<'_, T>) -> Result<T, ()> {
        self::op(&*self.store, &self.counters, what, op).await
    }

    fn origin(&self, started: Instant, fingerprint: Fingerprint) -> Arc<Origin> {
        Arc::new(Origin {
            started,
            copy: Box::new(StoredCopy {
                store: Arc::clone(&self.store),
                key: Arc::clone(&self.key),
                fingerprint,
                rejected: Arc::clone(&self.rejected),
                counters: Arc::clone(&self.counters),
            }),
        })
    }
}

/// One fetch from `source`, bounded by `timeout`: for a refresh through a
/// store, which runs the source inside a longer flight.
async fn fetch_once(source: &dyn DynSource, timeout: Duration) -> Result<Token, TokenError> {
    match sync::timeout(timeout, source.fetch_boxed()).await {
        Ok(Ok(token)) => Ok(token),
        Ok(Err((error, hint))) => Err(TokenError::fetch(error, hint)),
        Err(_elapsed) => Err(TokenError::timeout(timeout)),
    }
}

/// One store operation, bounded by the store's timeout; a failure is
/// reported (never with a value) and counts as a miss.
async fn op<T>(
    store: &dyn TokenStore,
    counters: &StoreCounters,
    what: &'static str,
    op: StoreFuture<'_, T>,
) -> Result<T, ()> {
    let timeout = store.op_timeout();
    let outcome = tokio::time::timeout(timeout, op).await;
    #[cfg(not(feature = "tracing"))]
    let _ = what;
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_error)) => {
            counters.error();
            #[cfg(feature = "tracing")]
            tracing::debug!(operation = what, error = %_error, "token store failed; going on without it");
            Err(())
        }
        Err(_elapsed) => {
            counters.timeout();
            #[cfg(feature = "tracing")]
            tracing::debug!(
                operation = what,
                ?timeout,
                "token store timed out; going on without it"
            );
            Err(())
        }
    }
}

/// A random lease owner, unique across the fleet.
fn lease_owner() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No OS randomness: still unique within this host.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = (nanos ^ (u128::from(std::process::id()) << 96)).to_be_bytes();
    }
    crate::identity::hex(&bytes)
}

/// What is stored besides the token: when its fetch began and when it
/// expires, in Unix milliseconds, and the unit its lifetime was counted in.
///
/// Layout: `1` (version), issued (u64), expires (u64, `u64::MAX` for
/// never), granularity in ms (u32), all big-endian, then the token.
#[derive(Debug, PartialEq, Eq)]
struct Record {
    issued_ms: u64,
    expires_ms: Option<u64>,
    granularity_ms: u32,
}

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 8 + 4;

fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX - 1))
}

impl Record {
    /// The value to store for `token`, fetched from `started` (`issued` in
    /// Unix time), and its absolute expiry; `None` for a token not worth
    /// sharing (not a valid header value, or no lifetime left at `now`), or
    /// not usable by another process (bound by DPoP to this one's key).
    fn of(
        token: &Token,
        started: Instant,
        issued: SystemTime,
        now: Instant,
    ) -> Option<(Zeroizing<Vec<u8>>, Option<SystemTime>)> {
        let secret = token.secret();
        if secret.is_empty() || HeaderValue::from_str(secret).is_err() {
            return None;
        }
        #[cfg(feature = "dpop")]
        if token.bound().is_some() {
            return None;
        }
        let expiry = match token.expiry_kind() {
            Expiry::Never => None,
            Expiry::In(lifetime) => Some(started.checked_add(lifetime)),
            Expiry::At(at) => Some(Some(at)),
        };
        let expires_at = match expiry {
            None | Some(None) => None,
            Some(Some(at)) if at <= now => return None,
            // Readers refuse a longer lifetime: store the cap.
            Some(Some(at)) => Some(issued.checked_add((at - started).min(MAX_LIFETIME))?),
        };
        let record = Record {
            issued_ms: unix_ms(issued),
            expires_ms: expires_at.map(unix_ms),
            granularity_ms: u32::try_from(token.granularity().as_millis()).unwrap_or(u32::MAX),
        };
        Some((record.encode(secret), expires_at))
    }

    fn encode(&self, secret: &str) -> Zeroizing<Vec<u8>> {
        let mut value = Zeroizing::new(Vec::with_capacity(HEADER + secret.len()));
        value.push(VERSION);
        value.extend_from_slice(&self.issued_ms.to_be_bytes());
        value.extend_from_slice(&self.expires_ms.unwrap_or(u64::MAX).to_be_bytes());
        value.extend_from_slice(&self.granularity_ms.to_be_bytes());
        value.extend_from_slice(secret.as_bytes());
        value
    }

    /// The record and token in `value`, if it is one this version wrote
    /// and the token a valid header value.
    fn decode(value: &[u8]) -> Option<(Self, String)> {
        let (header, secret) = value.split_at_checked(HEADER)?;
        let (version, rest) = header.split_first()?;
        if *version != VERSION {
            return None;
        }
        let (issued, rest) = rest.split_at(8);
        let (expires, granularity) = rest.split_at(8);
        let secret = std::str::from_utf8(secret).ok()?;
        if secret.is_empty() || HeaderValue::from_str(secret).is_err() {
            return None;
        }
        let expires_ms = u64::from_be_bytes(expires.try_into().ok()?);
        let record = Record {
            issued_ms: u64::from_be_bytes(issued.try_into().ok()?),
            expires_ms: (expires_ms != u64::MAX).then_some(expires_ms),
            granularity_ms: u32::from_be_bytes(granularity.try_into().ok()?),
        };
        Some((record, secret.to_owned()))
    }

    /// The fetch start and expiry on this replica's clock, `now` being
    /// `unix_now` in Unix time, if the record is believable. What is left is
    /// measured by the store's clock (`ttl`) when it has one, else by ours:
    /// so replicas whose clocks disagree still agree on how much of a token
    /// is left.
    ///
    /// The store's clock is not trusted beyond the record's own times: a
    /// record is a miss if it was issued in our future or expired in our
    /// past (beyond [`MAX_CLOCK_SKEW`] either way), or if its lifetime is
    /// negative or over [`MAX_LIFETIME`]; and what is left is never more
    /// than its expiry, plus the skew, by our clock. So a value written back
    /// with a fresh time to live after its token expired is not served
    /// again.
    fn anchor(
        &self,
        now: Instant,
        unix_now: SystemTime,
        ttl: Option<Duration>,
    ) -> Option<(Instant, Option<Instant>)> {
        let issued = UNIX_EPOCH.checked_add(Duration::from_millis(self.issued_ms))?;
        if issued > unix_now.checked_add(MAX_CLOCK_SKEW)? {
            return None;
        }
        let Some(expires_ms) = self.expires_ms else {
            return Some((now, None));
        };
        let lifetime = Duration::from_millis(expires_ms.checked_sub(self.issued_ms)?);
        if lifetime > MAX_LIFETIME {
            return None;
        }
        let expires = UNIX_EPOCH.checked_add(Duration::from_millis(expires_ms))?;
        let by_our_clock = expires
            .checked_add(MAX_CLOCK_SKEW)?
            .duration_since(unix_now)
            .ok()
            .filter(|left| !left.is_zero())?;
        let remaining = match ttl {
            Some(ttl) => ttl.min(by_our_clock),
            None => expires.duration_since(unix_now).ok()?,
        };
        let expiry = now.checked_add(remaining.min(lifetime))?;
        let started = expiry.checked_sub(lifetime).unwrap_or(now).min(now);
        Some((started, Some(expiry)))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn a_record_round_trips_and_rejects_garbage() {
        let record = Record {
            issued_ms: 1_700_000_000_000,
            expires_ms: Some(1_700_000_003_600),
            granularity_ms: 1000,
        };
        let value = record.encode("abc.def");
        assert_eq!(Record::decode(&value), Some((record, "abc.def".to_owned())));
        assert_eq!(Record::decode(&value[..HEADER]), None, "no token");
        assert_eq!(Record::decode(&value[..5]), None);
        let mut other = value.to_vec();
        other[0] = 2;
        assert_eq!(Record::decode(&other), None, "another version");
        let mut bad = value.to_vec();
        bad.push(b'\n');
        assert_eq!(Record::decode(&bad), None, "not a header value");
    }

    #[test]
    fn the_store_clock_measures_what_is_left() {
        let record = Record {
            issued_ms: 10_000,
            expires_ms: Some(12_000),
            granularity_ms: 0,
        };
        let now = Instant::now();
        // Our clock says 3 s past expiry (we are ahead, within the skew
        // tolerated); the store says 1.5 s left.
        let unix = UNIX_EPOCH + Duration::from_secs(15);
        let (started, expiry) = record
            .anchor(now, unix, Some(Duration::from_millis(1500)))
            .unwrap();
        assert_eq!(expiry, Some(now + Duration::from_millis(1500)));
        assert_eq!(started, now - Duration::from_millis(500));
        // Without the store's clock, ours decides.
        assert_eq!(record.anchor(now, unix, None), None);
        let unix = UNIX_EPOCH + Duration::from_secs(11);
        let (_, expiry) = record.anchor(now, unix, None).unwrap();
        assert_eq!(expiry, Some(now + Duration::from_secs(1)));
    }

    #[test]
    fn a_record_is_believed_only_within_its_own_times() {
        let record = |issued_ms, expires_ms| Record {
            issued_ms,
            expires_ms,
            granularity_ms: 0,
        };
        let now = Instant::now();
        let unix = UNIX_EPOCH + Duration::from_secs(1_000);
        let ttl = Some(Duration::from_secs(600));
        // Expired 10 s ago by our clock, written back with a fresh TTL.
        assert_eq!(record(900_000, Some(990_000)).anchor(now, unix, ttl), None);
        // Within the skew tolerated: served, but only until expiry + skew.
        let (_, expiry) = record(900_000, Some(998_000))
            .anchor(now, unix, ttl)
            .unwrap();
        assert_eq!(expiry, Some(now + Duration::from_secs(3)));
        // Issued in our future.
        assert_eq!(
            record(1_010_000, Some(1_100_000)).anchor(now, unix, ttl),
            None
        );
        assert_eq!(record(1_010_000, None).anchor(now, unix, None), None);
        // Issued the whole skew ahead: believed; a millisecond more: not.
        let skew_ms = 1_000_000 + MAX_CLOCK_SKEW.as_millis() as u64;
        assert!(record(skew_ms, None).anchor(now, unix, None).is_some());
        assert_eq!(record(skew_ms + 1, None).anchor(now, unix, None), None);
        // A lifetime over the cap, or negative.
        let far = 999_000 + MAX_LIFETIME.as_millis() as u64 + 2_000;
        assert_eq!(record(999_000, Some(far)).anchor(now, unix, ttl), None);
        assert_eq!(
            record(999_000, Some(u64::MAX - 1)).anchor(now, unix, ttl),
            None
        );
        assert_eq!(record(999_500, Some(999_000)).anchor(now, unix, ttl), None);
        // The cap itself is fine.
        let cap = 999_000 + MAX_LIFETIME.as_millis() as u64;
        assert!(record(999_000, Some(cap)).anchor(now, unix, ttl).is_some());
        // The cap is the 365 days documented (that of `ClientCredentials`).
        let days = |n: u64| 999_000 + n * 24 * 3600 * 1000;
        assert!(record(999_000, Some(days(365)))
            .anchor(now, unix, ttl)
            .is_some());
        assert_eq!(
            record(999_000, Some(days(366))).anchor(now, unix, ttl),
            None
        );
    }

    /// What is not worth sharing has no record, and is not written: an
    /// empty token, one that is no header value, one with no lifetime left.
    #[test]
    fn a_token_not_worth_sharing_has_no_record() {
        let (now, unix) = (Instant::now(), SystemTime::now());
        let minute = Duration::from_secs(60);
        let of = |token: &str, lifetime: Duration, at: Instant| {
            Record::of(&Token::new(token).expires_in(lifetime), now, unix, at)
        };
        assert!(of("abc", minute, now).is_some());
        assert!(of("", minute, now).is_none());
        assert!(of("bad\nvalue", minute, now).is_none());
        assert!(of("abc", Duration::ZERO, now).is_none());
        // Expiring as it would be stored; a millisecond earlier, shared.
        assert!(of("abc", minute, now + minute).is_none());
        let (_, expires_at) = of("abc", minute, now + minute - Duration::from_millis(1)).unwrap();
        assert_eq!(expires_at, Some(unix + minute));
    }

    #[test]
    fn a_longer_lived_token_is_stored_with_the_capped_lifetime() {
        let (now, unix) = (Instant::now(), UNIX_EPOCH + Duration::from_secs(1_000));
        let token = Token::new("abc").expires_in(MAX_LIFETIME * 3);
        let (value, expires_at) = Record::of(&token, now, unix, now).unwrap();
        assert_eq!(expires_at, Some(unix + MAX_LIFETIME));
        let (record, _) = Record::decode(&value).unwrap();
        assert!(record.anchor(now, unix, None).is_some());
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn a_token_bound_to_this_process_is_not_shared() {
        let key = crate::dpop::ProofKey::generate().unwrap();
        let binding = crate::dpop::Binding::new(key);
        let (now, unix) = (Instant::now(), SystemTime::now());
        let token = Token::new("abc").expires_in(Duration::from_secs(60));
        assert!(Record::of(&token, now, unix, now).is_some());
        assert!(Record::of(&token.bind(&binding), now, unix, now).is_none());
    }

    /// A lease holder that never writes (its process died mid-fetch): a
    /// waiting replica gives up at its fetch timeout and fetches alone,
    /// long before the lease lapses.
    #[tokio::test(start_paused = true)]
    async fn a_silent_lease_holder_is_waited_for_only_until_the_fetch_timeout() {
        let store = Arc::new(MemoryStore::default());
        let key = StoreIdentity::new("test").key(None);
        let hour = Duration::from_secs(3600);
        assert!(store.lease(&key, "ghost", hour).await.unwrap());
        let fetches = Arc::new(AtomicUsize::new(0));
        let cache = replica(&store, &fetches).fetch_timeout(Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(cache.token().await.unwrap().secret(), "token-1");
        let waited = start.elapsed();
        let expected = Duration::from_secs(2)..Duration::from_secs(3);
        assert!(expected.contains(&waited), "waited {waited:?}");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        assert!(store.value(&key).is_some(), "the token is shared");
    }

    /// Two replicas never share a lease owner (a shared one would let both
    /// hold the lease).
    #[test]
    fn lease_owners_are_random_and_distinct() {
        let owners: std::collections::HashSet<String> = (0..100).map(|_| lease_owner()).collect();
        assert_eq!(owners.len(), 100);
        assert!(owners.iter().all(|o| o.len() == 32), "{owners:?}");
    }

    #[test]
    fn a_binding_debugs_whether_it_has_a_store_and_its_identity() {
        let binding = Binding::default();
        let debug = format!("{binding:?}");
        assert!(debug.starts_with("Store {"), "{debug}");
        assert!(debug.contains("store: false"), "{debug}");
        assert!(debug.contains("identity: "), "{debug}");
    }

    /// Replicas of a fleet in one process: each counts its fetches into
    /// `fetches` and hands out `token-<n>` for an hour.
    fn replica(store: &Arc<MemoryStore>, fetches: &Arc<AtomicUsize>) -> crate::TokenCache {
        let fetches = Arc::clone(fetches);
        crate::TokenCache::new(move || {
            let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                Ok::<_, std::io::Error>(
                    Token::new(format!("token-{n}")).expires_in(Duration::from_secs(3600)),
                )
            }
        })
        .store(Arc::clone(store))
        .store_identity(StoreIdentity::new("test"))
    }

    /// A store that answers each operation in 100 ms is used: the default
    /// op timeout (250 ms) gives it time, and the second replica reads the
    /// first one's token instead of fetching its own.
    #[tokio::test(start_paused = true)]
    async fn a_store_answering_within_the_default_op_timeout_is_shared() {
        let store = Arc::new(MemoryStore::answering_after(Duration::from_millis(100)));
        let fetches = Arc::new(AtomicUsize::new(0));
        let first = replica(&store, &fetches);
        assert_eq!(first.token().await.unwrap().secret(), "token-1");
        let second = replica(&store, &fetches);
        assert_eq!(second.token().await.unwrap().secret(), "token-1");
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        let stats = second.stats().store;
        assert_eq!((stats.hits, stats.timeouts), (1, 0), "{stats:?}");
    }
}
