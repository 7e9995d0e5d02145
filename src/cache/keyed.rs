//! [`KeyedTokenCache`]: one [`TokenCache`] per key (an audience, a scope, a
//! tenant, a host), created on first use and bounded.
//!
//! One client often talks to several APIs, each with a token of its own.
//! A keyed cache holds a cache per key, made on first use by a factory that
//! returns the key's [`TokenSource`], and every property of a single
//! [`TokenCache`] holds per key: one fetch in flight per key, failures and
//! backoff per key (one key's failing identity provider neither fails nor
//! slows the others), and a `401` evicting only the rejected token of its
//! own key, only while it is that key's current token.
//!
//! **The key must cover everything that changes the token**: if two
//! requests would need different tokens, they need different keys. A key
//! that leaves out the scopes, say, serves a token issued for the old scopes
//! after a scope is added. A token never crosses keys: each key's cache is
//! built from that key alone.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use tower_bearer::{KeyedTokenCache, Token};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::TokenError> {
//! let cache = KeyedTokenCache::new(|audience: &String| {
//!     let audience = audience.clone();
//!     // an OAuth2 source per audience, such as
//!     // `ClientCredentials::try_new(url, id, secret)?.audience(audience)`
//!     move || {
//!         let token = format!("token-for-{audience}");
//!         async move { Ok::<_, std::io::Error>(Token::new(token).expires_in(Duration::from_secs(3600))) }
//!     }
//! })
//! .max_keys(100)
//! .idle_timeout(Duration::from_secs(3600))
//! .refresh_before(Duration::from_secs(60));
//!
//! let orders = cache.token(&"https://orders.example.com".to_owned()).await?;
//! let billing = cache.token(&"https://billing.example.com".to_owned()).await?;
//! assert_eq!(orders.secret(), "token-for-https://orders.example.com");
//! assert_eq!(billing.secret(), "token-for-https://billing.example.com");
//! assert_eq!(cache.len(), 2);
//! # Ok(())
//! # }
//! ```
//!
//! The middleware takes its key from each request:
//! [`BearerAuthLayer::keyed`](crate::BearerAuthLayer::keyed) (see
//! [`crate::auth`]).
//!
//! # Bounds
//!
//! - [`max_keys`](KeyedTokenCache::max_keys) (default 1,024): a new key
//!   beyond it evicts the least recently used key first.
//! - [`idle_timeout`](KeyedTokenCache::idle_timeout) (default none): a key
//!   unused for that long is dropped, with its tasks, by a sweep that runs a
//!   few times per timeout. The sweep runs on a task, on the runtime where a
//!   key was added, and also on any runtime, or none, from the lookups
//!   that take the slow path (a new key, a token that is not fresh), from
//!   [`len`](KeyedTokenCache::len) and from the stats, whenever one is due:
//!   the timeout holds whichever runtime started the task and whether it
//!   still runs. A key never goes before `d` after its last use; while the
//!   task runs, it goes by `1.25 d`; when only lookups sweep, at the first
//!   sweep after that (a key used only by the hot path in the meantime may
//!   stay until the sweep after). The hot path itself never sweeps.
//!
//! A dropped key's fetch in flight still completes for the requests waiting
//! on it; its next request starts a new cache for the key. Its counters are
//! kept in [`total_stats`](KeyedTokenCache::total_stats) as they stood when
//! it was dropped.
//!
//! "Used" is cheap to record: every key carries a use stamp, an epoch number
//! that the cache moves on when it adds a key and at each idle sweep. A
//! request writes its key's stamp only when the epoch has moved since the
//! key's last use, so a busy key is written at most once per epoch, and a
//! request never writes a line shared with other keys. The least recently
//! used key is the one with the oldest stamp (ties broken arbitrarily).
//!
//! # Design: the key map
//!
//! The keys live in a `HashMap` behind [`arc_swap::ArcSwap`], copied on
//! write: a request reads the map lock-free (the middleware keeps its own
//! `arc_swap::Cache` of it, a pointer compare while no key is added), and a
//! new key makes a new version under a mutex. Keys are added rarely, so
//! the read side is what counts: measured against papaya and dashmap, this
//! reads as fast on one thread and faster on two (dashmap's shard lock is a
//! shared write per read), with no new dependency. The cost is on the write
//! side, kept down two ways: a version shares the bulk of the keys with the
//! previous one and copies only those added since the last rebuild (about
//! the square root of the keys), and a full cache evicts the least recently
//! used sixteenth of `max_keys` at once. Still, when more keys are active
//! than `max_keys` allows, half the requests make a new cache and fetch:
//! keep `max_keys` above the number of keys in use (the repository's
//! `docs/keyed.md` has the measurements).
//!
//! The map hashes with std's `RandomState` (SipHash-1-3, keyed per process):
//! keys may come from requests (a host, a tenant header), and a hasher
//! without a random key would let a caller choose keys that collide.
//!
//! # Observability
//!
//! Each key's fetch span and invalidation events carry a `key` field: the
//! key as its [`label`](KeyedTokenCache::label) function renders it (by
//! default its `Debug` form). Never the token. Dropping a key is a `debug`
//! event with its label and the reason.

use std::borrow::Borrow;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::clock::{self, AtomicInstant, Limit};
use super::observe;
use super::refresh::Config;
use super::{Current, Lookup, Stats, TokenCache};
use crate::source::DynSource;
use crate::{Token, TokenError, TokenSource};

const DEFAULT_MAX_KEYS: usize = 1024;

/// A full cache evicts `max_keys / EVICTION_BATCH` keys at once.
const EVICTION_BATCH: usize = 16;

/// How many keys a version holds outside `main` before `main` is rebuilt:
/// a new key copies them, and a rebuild copies every key, so about the
/// square root of the keys balances the two.
fn recent_cap(main: usize) -> usize {
    main.isqrt().max(8)
}

/// The idle sweep runs this many times per idle timeout.
const SWEEPS_PER_TIMEOUT: u32 = 4;

type Factory<K> = dyn Fn(&K) -> Arc<dyn DynSource> + Send + Sync;
type Label<K> = dyn Fn(&K) -> String + Send + Sync;

/// One [`TokenCache`] per key, created on first use from a factory, bounded
/// by [`max_keys`](Self::max_keys) and [`idle_timeout`](Self::idle_timeout).
///
/// Clones share the keys and the options. See the
/// [module docs](crate::cache::keyed) for an example, the bounds and the
/// design.
pub struct KeyedTokenCache<K> {
    inner: Arc<Keyed<K>>,
}

struct Keyed<K> {
    /// Read lock-free by every request; replaced whole under `write`.
    map: Arc<ArcSwap<KeyMap<K>>>,
    /// The use epoch (see the module docs): moved on by each new key and
    /// each idle sweep, read by every request.
    epoch: AtomicU64,
    write: Mutex<Writer<K>>,
    /// When the next idle sweep is due, read by every slow-path lookup (and
    /// `len`, `stats`): the idle timeout holds on any runtime, whichever
    /// runtime started the sweep task and whether it runs. Never without an
    /// idle timeout.
    sweep_at: AtomicInstant,
}

struct Writer<K> {
    factory: Box<Factory<K>>,
    label: Box<Label<K>>,
    /// The [`StoreKey`](crate::store::StoreKey) encoding of a key, set by
    /// [`KeyedTokenCache::store`]: a key's part of its stored key.
    #[cfg(feature = "store")]
    store_key: Option<fn(&K) -> Vec<u8>>,
    config: Config,
    max_keys: usize,
    idle_timeout: Option<Duration>,
    /// `(epoch, when)` at each idle sweep: a key whose stamp is older than
    /// the mark of `idle_timeout` ago was not used since.
    marks: VecDeque<(u64, Instant)>,
    sweeper: Option<AbortHandle>,
    /// The counters of the keys dropped so far, as they were when dropped.
    retired: Stats,
}

type Slots<K> = HashMap<K, Arc<KeySlot>>;

/// The keys and their caches, as one immutable version: most keys in
/// `main`, shared by consecutive versions, and the keys added since `main`
/// was last rebuilt in `recent`, which a new key copies. See "Design" in
/// the module docs.
pub(crate) struct KeyMap<K> {
    main: Arc<Slots<K>>,
    recent: Slots<K>,
}

/// One key's cache and its use stamp. The cache's current entry and id are
/// copied in, one dependent load nearer to the map.
pub(crate) struct KeySlot {
    current: Current,
    cache_id: u64,
    used: AtomicU64,
    cache: TokenCache,
}

impl KeySlot {
    /// Records a use in `epoch`: one load, and a write only when the epoch
    /// has moved since the last use.
    #[inline]
    fn touch(&self, epoch: u64) {
        if self.used.load(Ordering::Relaxed) < epoch {
            self.used.fetch_max(epoch, Ordering::Relaxed);
        }
    }

    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// A key's fresh token, read on the hot path.
pub(crate) struct Fresh {
    pub(crate) header: HeaderValue,
    pub(crate) cache_id: u64,
    pub(crate) generation: u64,
}

impl<K> KeyMap<K> {
    fn len(&self) -> usize {
        self.main.len() + self.recent.len()
    }

    fn slots(&self) -> impl Iterator<Item = (&K, &Arc<KeySlot>)> {
        self.main.iter().chain(&self.recent)
    }
}

impl<K: Hash + Eq> KeyMap<K> {
    /// The hot path: the fresh token of `key`, read without a lock or an
    /// allocation. `None` sends the request to the slow path (a new key, or
    /// a token that is not fresh).
    #[inline]
    pub(crate) fn fresh(&self, key: &K, epoch: u64) -> Option<Fresh> {
        let slot = self.get(key)?;
        slot.touch(epoch);
        let entry = slot.current.load();
        entry.is_fresh().then(|| Fresh {
            header: entry.header.clone(),
            cache_id: slot.cache_id,
            generation: entry.generation,
        })
    }

    /// `recent` is empty most of the time, and an empty map answers
    /// without hashing.
    #[inline]
    fn get<Q>(&self, key: &Q) -> Option<&Arc<KeySlot>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.main.get(key).or_else(|| self.recent.get(key))
    }

    fn new() -> Self {
        Self {
            main: Arc::default(),
            recent: HashMap::new(),
        }
    }
}

impl<K> KeyedTokenCache<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// A keyed cache whose key `K` gets its tokens from `factory(&key)`,
    /// called once when the key is first used (and again if the key was
    /// dropped and comes back). Nothing is fetched until a token is needed.
    ///
    /// The key is labelled in traces by its `Debug` form; see
    /// [`label`](Self::label) to change that.
    ///
    /// The factory runs while the keyed cache adds the key, under its write
    /// lock: it should only build a source, and must not call back into the
    /// same keyed cache (that would deadlock). Fetching happens later, on
    /// the source, outside any lock.
    pub fn new<F, S>(factory: F) -> Self
    where
        F: Fn(&K) -> S + Send + Sync + 'static,
        S: TokenSource,
        K: fmt::Debug,
    {
        let factory: Box<Factory<K>> =
            Box::new(move |key: &K| Arc::new(factory(key)) as Arc<dyn DynSource>);
        let sweep_at = AtomicInstant::none();
        sweep_at.store(Some(Limit::Never));
        Self {
            inner: Arc::new(Keyed {
                map: Arc::new(ArcSwap::from_pointee(KeyMap::new())),
                epoch: AtomicU64::new(0),
                write: Mutex::new(Writer {
                    factory,
                    label: Box::new(|key: &K| format!("{key:?}")),
                    #[cfg(feature = "store")]
                    store_key: None,
                    config: Config::default(),
                    max_keys: DEFAULT_MAX_KEYS,
                    idle_timeout: None,
                    marks: VecDeque::new(),
                    sweeper: None,
                    retired: Stats::default(),
                }),
                sweep_at,
            }),
        }
    }

    /// How a key appears in traces (the `key` field of its fetch spans and
    /// events). Default: its `Debug` form. Use it to leave out a part of
    /// the key that must not be logged. Applies to keys added from now on.
    ///
    /// Only traces: with a [store](Self::store), the stored key is made
    /// from the key's [`StoreKey`](crate::store::StoreKey) encoding, never
    /// from its label, so a label may redact freely.
    pub fn label(self, label: impl Fn(&K) -> String + Send + Sync + 'static) -> Self {
        self.inner.lock().label = Box::new(label);
        self
    }

    /// The most keys held at once; a new key beyond it evicts the least
    /// recently used one. Default: 1,024. At least 1.
    pub fn max_keys(self, max: usize) -> Self {
        self.inner.lock().max_keys = max.max(1);
        self
    }

    /// Drops a key unused for `idle`, with its cache and its tasks.
    /// Default: keys are only dropped by [`max_keys`](Self::max_keys).
    ///
    /// A sweep task runs on the runtime where the next key is added, a few
    /// times per `idle`; the same sweep also runs, when one is due, on the
    /// lookups that take the slow path (a new key, a token that is not
    /// fresh), in [`len`](Self::len) and in the stats: the timeout holds
    /// whatever runtime the keys were added on, and whether it still runs.
    pub fn idle_timeout(self, idle: Duration) -> Self {
        {
            let mut writer = self.inner.lock();
            writer.idle_timeout = Some(idle);
            if let Some(sweeper) = writer.sweeper.take() {
                sweeper.abort();
            }
            self.inner.sweep_at.store(Some(Limit::At(clock::now())));
        }
        self.inner.start_sweeper();
        self
    }

    fn configure(self, set: impl Fn(&mut Config)) -> Self {
        {
            let mut writer = self.inner.lock();
            set(&mut writer.config);
            for (_, slot) in self.inner.map.load().slots() {
                set(&mut slot.cache.shared().lock().config);
            }
        }
        self
    }

    /// As [`TokenCache::store`], for every key: each key's tokens are
    /// stored under its source's identity and the key's
    /// [`StoreKey`](crate::store::StoreKey) encoding, which is injective
    /// and the same in every process, so two keys never share a token (and
    /// the [`label`](Self::label) plays no part). A key type without that
    /// encoding cannot be given a store: implement `StoreKey` for it.
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn store(self, store: impl crate::store::TokenStore) -> Self
    where
        K: crate::store::StoreKey,
    {
        let store: Arc<dyn crate::store::TokenStore> = Arc::new(store);
        {
            let mut writer = self.inner.lock();
            writer.store_key = Some(crate::store::encode_key::<K>);
            writer.config.store.set_store(Arc::clone(&store));
            for (key, slot) in self.inner.map.load().slots() {
                let binding = &mut slot.cache.shared().lock().config.store;
                binding.set_store(Arc::clone(&store));
                binding.set_key(crate::store::encode_key(key));
            }
        }
        self
    }

    /// As [`TokenCache::store_identity`], for every key (each key's stored
    /// key adds the key to it).
    #[cfg(feature = "store")]
    #[cfg_attr(docsrs, doc(cfg(feature = "store")))]
    pub fn store_identity(self, identity: crate::store::StoreIdentity) -> Self {
        self.configure(|c| c.store.set_identity(identity.clone()))
    }

    /// As [`TokenCache::refresh_before`], for every key.
    pub fn refresh_before(self, before: Duration) -> Self {
        self.configure(|c| c.timing.refresh_before = before)
    }

    /// As [`TokenCache::expiry_margin`], for every key.
    pub fn expiry_margin(self, margin: Duration) -> Self {
        self.configure(|c| c.timing.expiry_margin = margin)
    }

    /// As [`TokenCache::refresh_jitter`], for every key.
    pub fn refresh_jitter(self, jitter: Duration) -> Self {
        self.configure(|c| c.timing.jitter = jitter)
    }

    /// As [`TokenCache::fetch_timeout`], for every key.
    pub fn fetch_timeout(self, timeout: Duration) -> Self {
        self.configure(|c| c.timing.fetch_timeout = timeout)
    }

    /// As [`TokenCache::backoff`], for every key: each key backs off on its
    /// own failures.
    pub fn backoff(self, base: Duration, cap: Duration) -> Self {
        self.configure(|c| {
            c.timing.backoff_base = base;
            c.timing.backoff_cap = cap;
        })
    }

    /// As [`TokenCache::scheme`], for every key.
    pub fn scheme(self, scheme: impl Into<String>) -> Self {
        let scheme = scheme.into();
        self.configure(|c| c.set_scheme(Some(scheme.clone())))
    }

    /// As [`TokenCache::no_scheme`], for every key.
    pub fn no_scheme(self) -> Self {
        self.configure(|c| c.set_scheme(None))
    }

    /// A valid token for `key`: its cached one, or a new one from the key's
    /// single refresh. The key may be given borrowed, as for a `HashMap`
    /// (`&str` for a `String` key); it is copied only when it is new.
    ///
    /// ```
    /// use tower_bearer::{KeyedTokenCache, Token};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), tower_bearer::TokenError> {
    /// let cache = KeyedTokenCache::new(|audience: &String| {
    ///     let token = format!("token-for-{audience}");
    ///     move || {
    ///         let token = token.clone();
    ///         async move { Ok::<_, std::io::Error>(Token::new(token)) }
    ///     }
    /// });
    /// assert_eq!(cache.token("orders").await?.secret(), "token-for-orders");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn token<Q>(&self, key: &Q) -> Result<Token, TokenError>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let cache = self.cache(key);
        let entry = cache.entry().await?;
        Ok(entry.token.clone())
    }

    /// Stops serving `token` for `key` if it is still that key's current
    /// token, as [`TokenCache::invalidate`] does. A token of another key, or
    /// of a key no longer held, matches nothing. Returns whether the token
    /// was evicted.
    pub fn invalidate(&self, key: &K, token: &Token) -> bool {
        self.inner
            .map
            .load()
            .get(key)
            .is_some_and(|slot| slot.cache.invalidate(token))
    }

    /// The number of keys held (after dropping those idle past the
    /// [`idle_timeout`](Self::idle_timeout), if a sweep is due).
    pub fn len(&self) -> usize {
        self.inner.sweep_if_due();
        self.inner.map.load().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What the cache of `key` has done so far, if the key is held. See
    /// [`Stats`].
    pub fn stats(&self, key: &K) -> Option<Stats> {
        self.inner.sweep_if_due();
        let map = self.inner.map.load();
        map.get(key).map(|slot| slot.cache.stats())
    }

    /// The sum of every key's [`Stats`], those dropped included (as they
    /// stood when dropped).
    pub fn total_stats(&self) -> Stats {
        self.inner.sweep_if_due();
        let mut total = self.inner.lock().retired;
        for (_, slot) in self.inner.map.load().slots() {
            total += slot.cache.stats();
        }
        total
    }

    /// The cache of `key`, made if the key is new. The slow path.
    pub(crate) fn cache<Q>(&self, key: &Q) -> TokenCache
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        self.inner.sweep_if_due();
        let epoch = self.epoch();
        if let Some(slot) = self.inner.map.load().get(key) {
            slot.touch(epoch);
            return slot.cache.clone();
        }
        self.inner.insert(&key.to_owned())
    }

    /// What a request for `key` that found no fresh token does next, and the
    /// id of the key's cache (for a `401`).
    pub(crate) fn lookup(&self, key: &K) -> (u64, Lookup) {
        let cache = self.cache(key);
        let shared = cache.shared();
        let seen = shared.current.load_full();
        (shared.id, shared.lookup(&seen))
    }

    /// The key's cache and a valid entry.
    #[cfg(feature = "reqwest-middleware")]
    pub(crate) async fn entry(
        &self,
        key: &K,
    ) -> Result<(TokenCache, Arc<super::Entry>), TokenError> {
        let cache = self.cache(key);
        let entry = cache.entry().await?;
        Ok((cache, entry))
    }
}

impl<K> KeyedTokenCache<K> {
    /// The map, for a middleware's own `arc_swap::Cache` of it.
    pub(crate) fn map(&self) -> &Arc<ArcSwap<KeyMap<K>>> {
        &self.inner.map
    }

    /// The use epoch to stamp a key with.
    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.inner.epoch.load(Ordering::Relaxed)
    }
}

impl<K> Keyed<K> {
    fn lock(&self) -> MutexGuard<'_, Writer<K>> {
        self.write.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K> Keyed<K>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    /// Adds `key`, unless a racing request just did, making room for it.
    fn insert(self: &Arc<Self>, key: &K) -> TokenCache {
        let mut writer = self.lock();
        let map = self.map.load_full();
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(slot) = map.get(key) {
            slot.touch(epoch);
            return slot.cache.clone();
        }
        let label: Arc<str> = (writer.label)(key).into();
        #[allow(unused_mut)]
        let mut config = writer.config.clone();
        #[cfg(feature = "store")]
        {
            config.store = config
                .store
                .for_key(writer.store_key.map(|encode| encode(key)));
        }
        let cache = TokenCache::from_parts((writer.factory)(key), config, Some(label));
        // A 401 reaches the key's cache by its id.
        cache.shared().register();
        let slot = Arc::new(KeySlot {
            current: cache.shared().current.clone(),
            cache_id: cache.shared().id,
            used: AtomicU64::new(epoch),
            cache: cache.clone(),
        });
        let idle = writer.idle_mark();
        let idle = idle.filter(|&idle| map.slots().any(|(_, slot)| slot.used() < idle));
        let full = map.len() >= writer.max_keys;
        let next = if full || idle.is_some() || map.recent.len() >= recent_cap(map.main.len()) {
            // Rebuild `main`, without the idle keys and, when full, without
            // the least recently used.
            let mut slots: Slots<K> = map.slots().map(|(k, s)| (k.clone(), s.clone())).collect();
            writer.drop_idle(&mut slots, idle);
            if slots.len() >= writer.max_keys {
                writer.evict_lru(&mut slots);
            }
            slots.insert(key.clone(), slot);
            KeyMap {
                main: Arc::new(slots),
                recent: HashMap::new(),
            }
        } else {
            let mut recent = map.recent.clone();
            recent.insert(key.clone(), slot);
            KeyMap {
                main: Arc::clone(&map.main),
                recent,
            }
        };
        drop(map);
        self.map.store(Arc::new(next));
        if let Some(idle) = writer.idle_timeout {
            // Keys added from here on are told apart from the new one.
            let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
            writer.mark(epoch, clock::now(), sweep_period(idle));
        }
        drop(writer);
        // Again if the runtime of the last sweep is gone.
        self.start_sweeper();
        cache
    }

    /// Sweeps if a sweep is due: cheap otherwise (one atomic load and a
    /// read of the clock), for the slow path.
    fn sweep_if_due(&self) {
        if !self.sweep_at.is_after(clock::now()) {
            self.sweep();
        }
    }

    /// Drops the keys idle past the timeout. Run by the sweep task, and by
    /// lookups when it is due.
    fn sweep(&self) {
        let mut writer = self.lock();
        let Some(timeout) = writer.idle_timeout else {
            return;
        };
        let now = clock::now();
        let period = sweep_period(timeout);
        self.sweep_at.store(Some(Limit::after(now, period)));
        let epoch = self.epoch.fetch_add(1, Ordering::Relaxed) + 1;
        writer.mark(epoch, now, period);
        let Some(idle) = writer.idle_mark() else {
            return;
        };
        let map = self.map.load();
        if map.slots().all(|(_, slot)| slot.used() >= idle) {
            return;
        }
        let mut slots: Slots<K> = map.slots().map(|(k, s)| (k.clone(), s.clone())).collect();
        drop(map);
        writer.drop_idle(&mut slots, Some(idle));
        self.map.store(Arc::new(KeyMap {
            main: Arc::new(slots),
            recent: HashMap::new(),
        }));
    }

    /// Starts the idle sweep on the current runtime, if there is a timeout,
    /// a runtime, and no sweep running.
    fn start_sweeper(self: &Arc<Self>) {
        let mut writer = self.lock();
        let Some(idle) = writer.idle_timeout else {
            return;
        };
        if writer.sweeper.as_ref().is_some_and(|s| !s.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Its timer would panic there; lookups sweep instead.
        if !super::sync::time_driver(&runtime) {
            return;
        }
        let period = sweep_period(idle);
        let keyed = Arc::downgrade(self);
        let task = runtime.spawn(sweep_every(keyed, period));
        writer.sweeper = Some(task.abort_handle());
    }
}

/// A timeout this long (about 30 years) never drops a key; the sweep still
/// runs now and then.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// How often the idle sweep runs.
fn sweep_period(idle: Duration) -> Duration {
    (idle / SWEEPS_PER_TIMEOUT).clamp(Duration::from_millis(1), MAX_PERIOD)
}

async fn sweep_every<K>(keyed: Weak<Keyed<K>>, period: Duration)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
{
    loop {
        tokio::time::sleep(period).await;
        let Some(keyed) = keyed.upgrade() else {
            return;
        };
        keyed.sweep();
    }
}

impl<K: Hash + Eq> Writer<K> {
    /// Records that the use epoch was `epoch` at `now`. Within one sweep
    /// period only the first mark and the latest are kept, so the marks stay
    /// a few per timeout however many keys are added: a replaced mark only
    /// makes its keys look used later than they were, never earlier.
    fn mark(&mut self, epoch: u64, now: Instant, period: Duration) {
        let recent = |&(_, at): &(u64, Instant)| now.saturating_duration_since(at) < period;
        let len = self.marks.len();
        let both_recent = len >= 2 && self.marks.range(len - 2..).all(recent);
        match self.marks.back_mut() {
            Some(last) if both_recent => *last = (epoch, now),
            _ => self.marks.push_back((epoch, now)),
        }
    }

    /// The epoch before which a key is idle: that of the last sweep at least
    /// `idle_timeout` ago. Forgets older marks.
    fn idle_mark(&mut self) -> Option<u64> {
        let idle = self.idle_timeout?;
        let since = clock::now().checked_sub(idle)?;
        while self.marks.get(1).is_some_and(|&(_, at)| at <= since) {
            self.marks.pop_front();
        }
        let &(epoch, at) = self.marks.front()?;
        (at <= since).then_some(epoch)
    }

    /// Evicts the least recently used sixteenth of `max_keys` (at least one
    /// key), so that a full cache rebuilds its map once per that many new
    /// keys rather than for each.
    fn evict_lru(&mut self, slots: &mut Slots<K>)
    where
        K: Clone,
    {
        let batch = (self.max_keys / EVICTION_BATCH).max(1);
        let excess = (slots.len() + 1).saturating_sub(self.max_keys);
        let count = batch.max(excess).min(slots.len());
        let mut by_use: Vec<(u64, &K)> = slots.iter().map(|(k, s)| (s.used(), k)).collect();
        if count < by_use.len() {
            by_use.select_nth_unstable_by_key(count, |&(used, _)| used);
        }
        let oldest: Vec<K> = by_use[..count].iter().map(|&(_, k)| k.clone()).collect();
        for key in oldest {
            self.retire(slots, &key, "max_keys");
        }
    }

    fn drop_idle(&mut self, slots: &mut Slots<K>, idle: Option<u64>)
    where
        K: Clone,
    {
        let Some(idle) = idle else {
            return;
        };
        let gone: Vec<K> = slots
            .iter()
            .filter(|(_, slot)| slot.used() < idle)
            .map(|(key, _)| key.clone())
            .collect();
        for key in gone {
            self.retire(slots, &key, "idle_timeout");
        }
    }

    fn retire(&mut self, slots: &mut Slots<K>, key: &K, reason: &'static str) {
        if let Some(slot) = slots.remove(key) {
            self.retired += slot.cache.stats();
            if let Some(label) = &slot.cache.shared().label {
                observe::key_dropped(label, reason);
            }
        }
    }
}

impl<K> Drop for Keyed<K> {
    fn drop(&mut self) {
        let writer = self.write.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(sweeper) = writer.sweeper.take() {
            sweeper.abort();
        }
    }
}

impl<K> Clone for KeyedTokenCache<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> fmt::Debug for KeyedTokenCache<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let writer = self.inner.lock();
        f.debug_struct("KeyedTokenCache")
            .field("factory", &std::any::type_name::<Factory<K>>())
            .field("keys", &self.inner.map.load().len())
            .field("max_keys", &writer.max_keys)
            .field("idle_timeout", &writer.idle_timeout)
            .field("timing", &writer.config.timing)
            .field("scheme", &writer.config.scheme)
            .finish()
    }
}

#[cfg(test)]
impl<K> KeyedTokenCache<K> {
    /// Holds the key map's write lock, to prove that a path takes none.
    pub(crate) fn hold_write_lock(&self) -> impl Sized + '_ {
        self.inner.lock()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn cache() -> KeyedTokenCache<u64> {
        KeyedTokenCache::new(|key: &u64| {
            let token = format!("key-{key}");
            move || {
                let token = token.clone();
                async move { Ok::<_, Infallible>(Token::new(token)) }
            }
        })
    }

    #[tokio::test]
    async fn new_keys_copy_only_the_recent_part_of_the_map() {
        let cache = cache().max_keys(100_000);
        // A rebuild copies every key into `main` and leaves `recent` empty;
        // a new key otherwise copies `recent` only.
        let (mut rebuilds, mut copied) = (0, 0);
        for key in 0..5_000u64 {
            cache.token(&key).await.unwrap();
            let map = cache.inner.map.load();
            assert!(map.recent.len() <= recent_cap(map.main.len()));
            if map.recent.is_empty() {
                rebuilds += 1;
                copied += map.main.len();
            } else {
                copied += map.recent.len();
            }
        }
        // About 2√n rebuilds, and n·√n copies in all: a rebuild at every
        // key (a cap of 0) or every other key (1) copies n²/2 and more.
        assert!(rebuilds <= 200, "{rebuilds} rebuilds");
        assert!(copied <= 1_000_000, "{copied} slots copied");
        assert_eq!(cache.len(), 5_000);
        let map = cache.inner.map.load();
        assert!(map.main.len() >= 5_000 - recent_cap(5_000));
        for key in 0..5_000u64 {
            let slot = map.get(&key).unwrap();
            assert_eq!(
                slot.cache.token().await.unwrap().secret(),
                format!("key-{key}")
            );
        }
    }

    #[tokio::test]
    async fn a_full_cache_evicts_in_batches_of_the_least_recently_used() {
        let cache = cache().max_keys(160);
        for key in 0..160u64 {
            cache.token(&key).await.unwrap();
        }
        // Keys 0 to 9 stay in use.
        for key in 0..10u64 {
            cache.token(&key).await.unwrap();
        }
        cache.token(&1000).await.unwrap();
        // A sixteenth (10 keys) made room at once.
        assert_eq!(cache.len(), 160 - 10 + 1);
        assert!((0..10).all(|key| cache.stats(&key).is_some()));
        assert!(
            (10..20).all(|key| cache.stats(&key).is_none()),
            "the oldest went"
        );
        assert!((20..160).all(|key| cache.stats(&key).is_some()));
        assert_eq!(cache.total_stats().fetches, 161);
        // Churn: far more keys than room, never more than `max_keys` held.
        for key in 2000..3000u64 {
            cache.token(&key).await.unwrap();
            assert!(cache.len() <= 160);
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// Item 5 of #20: keys added on a helper runtime that then idles (its
    /// sweep task never runs again) still go after the idle timeout, while
    /// the key in use stays.
    #[test]
    fn idle_keys_go_whichever_runtime_started_the_sweep() {
        use super::clock::skew;
        let cache = cache().idle_timeout(Duration::from_millis(100));
        let helper = runtime();
        helper.block_on(async {
            for key in 0..4u64 {
                cache.token(&key).await.unwrap();
            }
        });
        assert_eq!(cache.len(), 4);
        let app = runtime();
        // One second, with key 0 in use every 20 ms.
        for _ in 0..50 {
            skew::pass(Duration::from_millis(20));
            app.block_on(cache.token(&0)).unwrap();
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.stats(&0).is_some());
        assert_eq!(cache.total_stats().fetches, 4);
    }

    /// Item 5 of #20, with the key in use served only by the hot path: the
    /// keys idle past the timeout are gone by the time anyone counts them.
    #[test]
    fn idle_keys_go_while_the_key_in_use_stays_on_the_hot_path() {
        use super::clock::skew;
        let cache = cache().idle_timeout(Duration::from_millis(100));
        runtime().block_on(async {
            for key in 0..4u64 {
                cache.token(&key).await.unwrap();
            }
        });
        for _ in 0..50 {
            skew::pass(Duration::from_millis(20));
            let map = cache.inner.map.load();
            assert!(map.fresh(&0, cache.epoch()).is_some());
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.stats(&0).is_some());
    }

    /// A cache with a 100 ms idle timeout, and `keys` added on a runtime
    /// that is gone now, and its sweep task with it.
    fn keys_added_on_a_runtime_now_gone(keys: std::ops::Range<u64>) -> KeyedTokenCache<u64> {
        let cache = cache().idle_timeout(Duration::from_millis(100));
        runtime().block_on(async {
            for key in keys {
                cache.token(&key).await.unwrap();
            }
        });
        cache
    }

    /// A runtime without a time driver gets no sweep task (whose timer
    /// would panic); lookups sweep instead.
    #[test]
    fn idle_keys_go_on_a_runtime_without_timers() {
        use super::clock::skew;
        let cache = keys_added_on_a_runtime_now_gone(0..4);
        let timeless = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        timeless.block_on(async {
            cache.inner.start_sweeper();
            assert!(cache
                .inner
                .lock()
                .sweeper
                .as_ref()
                .is_none_or(|s| s.is_finished()));
        });
        skew::pass(Duration::from_millis(300));
        assert_eq!(cache.len(), 0);
    }

    /// A key added between two sweeps drops the keys that turned idle since
    /// the last one, rather than leaving them to the next.
    #[test]
    fn a_new_key_drops_the_keys_idle_since_the_last_sweep() {
        use super::clock::skew;
        let cache = keys_added_on_a_runtime_now_gone(0..4);
        // A sweep just before they turn idle; the next is due at 115 ms.
        skew::pass(Duration::from_millis(90));
        cache.inner.sweep();
        assert_eq!(cache.len(), 4);
        skew::pass(Duration::from_millis(15));
        runtime().block_on(cache.token(&10)).unwrap();
        assert_eq!(cache.len(), 1);
        assert!(cache.stats(&10).is_some());
    }

    /// With no request at all, the sweep task alone drops the idle keys:
    /// one task per cache, however many keys.
    #[tokio::test(start_paused = true)]
    async fn the_sweep_task_drops_idle_keys_while_no_request_comes() {
        let cache = cache().idle_timeout(Duration::from_secs(60));
        for key in 0..4u64 {
            cache.token(&key).await.unwrap();
        }
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(tasks, 1, "one sweep task");
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert_eq!(cache.inner.map.load().len(), 0);
    }

    /// A sweep task that went with its runtime is started again on the
    /// runtime of the next new key.
    #[test]
    fn a_new_key_restarts_the_sweep_task_its_runtime_took_away() {
        let cache = cache().idle_timeout(Duration::from_secs(60));
        runtime().block_on(cache.token(&0)).unwrap();
        let paused = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        paused.block_on(async {
            cache.token(&1).await.unwrap();
            tokio::time::sleep(Duration::from_secs(120)).await;
            assert_eq!(cache.inner.map.load().len(), 0);
        });
    }

    /// A key goes at the first sweep an idle timeout after its last use,
    /// even when that use came just before a sweep.
    #[test]
    fn a_key_used_just_before_a_sweep_goes_one_timeout_after_that_use() {
        use super::clock::skew;
        let cache = keys_added_on_a_runtime_now_gone(0..1);
        skew::pass(Duration::from_millis(10));
        assert!(cache.inner.map.load().fresh(&0, cache.epoch()).is_some());
        // Sweeps every 25 ms from the use on; the fourth is one timeout
        // after it.
        for _ in 0..4 {
            cache.inner.sweep();
            assert_eq!(cache.inner.map.load().len(), 1);
            skew::pass(Duration::from_millis(25));
        }
        cache.inner.sweep();
        assert_eq!(cache.inner.map.load().len(), 0);
    }

    #[test]
    fn the_sweep_runs_four_times_per_timeout_between_1_ms_and_a_day() {
        assert_eq!(
            sweep_period(Duration::from_secs(60)),
            Duration::from_secs(15)
        );
        assert_eq!(sweep_period(Duration::ZERO), Duration::from_millis(1));
        assert_eq!(sweep_period(Duration::MAX), Duration::from_secs(24 * 3600));
    }

    /// Within one sweep period only the first mark and the latest are
    /// kept; a mark a whole period after the one before it stays.
    #[test]
    fn a_mark_replaces_the_last_only_while_the_last_two_are_within_a_period() {
        let cache = cache();
        let mut writer = cache.inner.lock();
        let (t0, period) = (Instant::now(), Duration::from_millis(25));
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        for (epoch, ms) in [(1, 0), (2, 10), (3, 20), (4, 30), (5, 40), (6, 50), (7, 60)] {
            writer.mark(epoch, at(ms), period);
        }
        let marks = |writer: &Writer<u64>| writer.marks.iter().map(|&(e, _)| e).collect::<Vec<_>>();
        assert_eq!(marks(&writer), [1, 3, 5, 7]);
        // 5 (at 40 ms) is exactly a period before 65 ms: no longer recent.
        writer.mark(8, at(65), period);
        assert_eq!(marks(&writer), [1, 3, 5, 7, 8]);
        writer.mark(9, at(70), period);
        assert_eq!(marks(&writer), [1, 3, 5, 7, 9]);
    }

    /// However many keys are added, the marks stay a few per timeout.
    #[tokio::test(start_paused = true)]
    async fn idle_marks_stay_few() {
        let cache = cache().idle_timeout(Duration::from_secs(3600));
        for key in 0..2_000u64 {
            cache.token(&key).await.unwrap();
            if key % 100 == 0 {
                tokio::time::advance(Duration::from_secs(60)).await;
            }
        }
        let marks = cache.inner.lock().marks.len();
        assert!(
            marks <= 2 * (SWEEPS_PER_TIMEOUT as usize + 2),
            "{marks} marks"
        );
    }

    /// Lowering `max_keys` on a cache that holds more keys: the next new
    /// key brings it down to the new bound at once, not one batch at a time.
    #[tokio::test]
    async fn a_lowered_bound_holds_from_the_next_new_key() {
        let cache = cache();
        for key in 0..100u64 {
            cache.token(&key).await.unwrap();
        }
        let cache = cache.max_keys(10);
        cache.token(&1000).await.unwrap();
        assert_eq!(cache.len(), 10);
        assert!(cache.stats(&1000).is_some());
    }

    /// Dropping the last handle ends the sweep task at once, not at its
    /// next tick.
    #[tokio::test(start_paused = true)]
    async fn dropping_the_cache_ends_its_sweep_task() {
        let cache = cache().idle_timeout(Duration::from_secs(3600));
        cache.token(&1).await.unwrap();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        assert_eq!(tasks(), 1);
        drop(cache);
        tokio::task::yield_now().await;
        assert_eq!(tasks(), 0);
    }

    #[tokio::test]
    async fn debug_names_the_settings_and_no_token() {
        let cache = cache().max_keys(7);
        cache.token(&1).await.unwrap();
        let debug = format!("{cache:?}");
        assert!(debug.starts_with("KeyedTokenCache {"), "{debug}");
        for field in ["keys: 1", "max_keys: 7", "idle_timeout: None", "timing: "] {
            assert!(debug.contains(field), "{field} in {debug}");
        }
        assert!(!debug.contains("key-1"), "a token in {debug}");
    }

    #[tokio::test]
    async fn setters_reach_every_key() {
        let cache = cache();
        cache.token(&1).await.unwrap();
        let cache = cache.fetch_timeout(Duration::from_secs(3)).scheme("Token");
        cache.token(&2).await.unwrap();
        let map = cache.inner.map.load();
        for key in [1, 2] {
            let config = map.get(&key).unwrap().cache.shared().lock().config.clone();
            assert_eq!(config.timing.fetch_timeout, Duration::from_secs(3));
            assert_eq!(config.scheme.as_deref(), Some("Token"));
        }
    }
}
