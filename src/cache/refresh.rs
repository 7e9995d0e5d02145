//! The state behind a cache: the current entry, read lock-free, and the one
//! refresh at a time, guarded by a mutex that is never held across an await.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::entry::{Entry, Phase};
use super::observe::{self, Cause, FetchSpan};
use super::stats::Counters;
use super::timing::{Rng, Timing};
use crate::source::DynSource;
use crate::{Token, TokenError};

/// What a fetch ends with; shared by every request that waited on it.
type Outcome = Result<Arc<Entry>, TokenError>;

/// The configuration of a cache, fixed once it is in use.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) timing: Timing,
    pub(crate) scheme: Option<String>,
    /// Set when the scheme is not a valid header value: every fetch fails.
    pub(crate) scheme_error: Option<TokenError>,
}

impl Config {
    pub(crate) fn set_scheme(&mut self, scheme: Option<String>) {
        self.scheme_error = scheme
            .as_deref()
            .and_then(|scheme| http::HeaderValue::from_str(scheme).err())
            .map(TokenError::invalid_scheme);
        self.scheme = scheme;
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            timing: Timing::default(),
            scheme: Some("Bearer".to_owned()),
            scheme_error: None,
        }
    }
}

pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) current: Current,
    pub(crate) config: Config,
    pub(crate) source: Arc<dyn DynSource>,
    refresh: Mutex<Refresh>,
    /// Whether a fetch is in flight, and when the backoff ends (nanoseconds
    /// from `epoch`, 0 for none): written under the lock, read without it by
    /// requests in the due window, which only need to know whether to start
    /// a refresh.
    refreshing: AtomicBool,
    retry_at: AtomicU64,
    epoch: Instant,
    registered: AtomicBool,
    pub(crate) counters: Counters,
}

#[derive(Default)]
struct Refresh {
    /// Set while a fetch is in flight.
    flight: Option<watch::Receiver<Option<Outcome>>>,
    flight_task: Option<AbortHandle>,
    timer_task: Option<AbortHandle>,
    failures: u32,
    last_error: Option<TokenError>,
    rng: Rng,
}

/// What a request that found no fresh token does next.
pub(crate) enum Lookup {
    /// Use this entry now.
    Ready(Arc<Entry>),
    /// Wait for the fetch in flight.
    Wait(Waiter),
    /// Fail at once.
    Fail(TokenError),
}

/// A request waiting on a fetch. It keeps the cache alive, so that the fetch
/// it waits on is not abandoned.
pub(crate) struct Waiter {
    shared: Arc<Shared>,
    flight: watch::Receiver<Option<Outcome>>,
}

impl Waiter {
    pub(crate) async fn wait(mut self) -> Outcome {
        let outcome = match self.flight.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_closed) => None,
        };
        drop(self.shared);
        outcome.unwrap_or_else(|| Err(TokenError::abandoned()))
    }
}

impl Shared {
    pub(crate) fn new(source: Arc<dyn DynSource>, config: Config) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            current: Current(Arc::new(Slot(ArcSwap::from_pointee(Entry::empty())))),
            config,
            source,
            refresh: Mutex::default(),
            refreshing: AtomicBool::new(false),
            retry_at: AtomicU64::new(0),
            epoch: Instant::now(),
            registered: AtomicBool::new(false),
            counters: Counters::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Refresh> {
        // Nothing panics while holding it, but never let poison wedge the cache.
        self.refresh.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Holds the refresh lock and the registry lock, to prove that a path
    /// takes neither.
    #[cfg(test)]
    pub(crate) fn hold_locks(&self) -> impl Sized + '_ {
        (self.lock(), registry())
    }

    /// The slow path, for a request that found `seen` not fresh.
    pub(crate) fn lookup(self: &Arc<Self>, seen: &Arc<Entry>) -> Lookup {
        let now = Instant::now();
        match seen.phase(now) {
            Phase::Fresh => return Lookup::Ready(Arc::clone(seen)),
            Phase::Due if self.refresh_pending(now) => return Lookup::Ready(Arc::clone(seen)),
            Phase::Due | Phase::Expired => {}
        }
        let mut refresh = self.lock();
        // A fetch may have landed since `seen` was loaded.
        let current = self.current.load_full();
        match current.phase(now) {
            Phase::Fresh => Lookup::Ready(current),
            Phase::Due => {
                if !self.refresh_pending(now) {
                    // Without a runtime the current token is still good.
                    let _ = self.start(&mut refresh);
                }
                Lookup::Ready(current)
            }
            Phase::Expired => {
                if let Some(flight) = self.flight(&mut refresh) {
                    return self.waiter(flight);
                }
                if let Some(error) = self.backing_off(&refresh, now) {
                    return Lookup::Fail(error);
                }
                match self.start(&mut refresh) {
                    Ok(flight) => self.waiter(flight),
                    Err(error) => Lookup::Fail(error),
                }
            }
        }
    }

    /// Whether a refresh is in flight or waits for its backoff, read without
    /// the lock. A stale answer only means the slow path decides.
    pub(crate) fn refresh_pending(&self, now: Instant) -> bool {
        self.refreshing.load(Ordering::Acquire) || self.retry_at().is_some_and(|at| now < at)
    }

    /// The fetch in flight. One whose task was dropped before it ran (its
    /// runtime shut down) never settles: it is forgotten here.
    fn flight(&self, refresh: &mut Refresh) -> Option<watch::Receiver<Option<Outcome>>> {
        let flight = refresh.flight.as_ref()?;
        if flight.has_changed().is_ok() {
            return Some(flight.clone());
        }
        self.end_flight(refresh);
        None
    }

    fn end_flight(&self, refresh: &mut Refresh) {
        refresh.flight = None;
        refresh.flight_task = None;
        self.refreshing.store(false, Ordering::Release);
    }

    /// When the backoff after the last failure ends.
    fn retry_at(&self) -> Option<Instant> {
        match self.retry_at.load(Ordering::Acquire) {
            0 => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos)),
        }
    }

    fn set_retry_at(&self, retry_at: Option<Instant>) {
        let nanos = retry_at.map_or(0, |at| {
            let nanos = at.saturating_duration_since(self.epoch).as_nanos();
            u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
        });
        self.retry_at.store(nanos, Ordering::Release);
    }

    /// The error to fail with while a backoff is in force.
    fn backing_off(&self, refresh: &Refresh, now: Instant) -> Option<TokenError> {
        let retry_at = self.retry_at().filter(|at| now < *at)?;
        let last = refresh.last_error.clone()?;
        Some(TokenError::backing_off(last, retry_at))
    }

    fn waiter(self: &Arc<Self>, flight: watch::Receiver<Option<Outcome>>) -> Lookup {
        self.counters.wait();
        Lookup::Wait(Waiter {
            shared: Arc::clone(self),
            flight,
        })
    }

    /// Starts the single fetch, on a task of its own so that no request's
    /// cancellation can cancel it.
    fn start(
        self: &Arc<Self>,
        refresh: &mut Refresh,
    ) -> Result<watch::Receiver<Option<Outcome>>, TokenError> {
        if let Some(error) = &self.config.scheme_error {
            return Err(error.clone());
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| TokenError::no_runtime())?;
        let (tx, rx) = watch::channel(None);
        let flight = Flight {
            shared: Arc::downgrade(self),
            tx,
            started: Instant::now(),
            polled: false,
            settled: false,
            span: FetchSpan::new(refresh.failures.saturating_add(1)),
        };
        let task = runtime.spawn(flight.run(self.config.timing.fetch_timeout));
        if task.is_finished() {
            // The task cannot have settled: that takes the lock held here. So
            // its runtime is shutting down and dropped it unpolled.
            return Err(TokenError::abandoned());
        }
        refresh.flight = Some(rx.clone());
        refresh.flight_task = Some(task.abort_handle());
        self.refreshing.store(true, Ordering::Release);
        self.counters.fetch();
        Ok(rx)
    }

    /// Records what a fetch ended with, and returns what its waiters receive.
    fn settle(
        &self,
        result: Result<Token, TokenError>,
        started: Instant,
        counts_as_failure: bool,
    ) -> Outcome {
        let mut refresh = self.lock();
        self.end_flight(&mut refresh);
        let scheme = self.config.scheme.as_deref();
        let timing = &self.config.timing;
        let entry =
            result.and_then(|token| Entry::new(token, scheme, started, timing, &mut refresh.rng));
        match entry {
            Ok(entry) => {
                let entry = Arc::new(entry);
                self.current.store(Arc::clone(&entry));
                if let Some(timer) = refresh.timer_task.take() {
                    timer.abort();
                }
                refresh.timer_task = entry.spawn_timer();
                refresh.failures = 0;
                refresh.last_error = None;
                self.set_retry_at(None);
                Ok(entry)
            }
            Err(mut error) => {
                if counts_as_failure {
                    refresh.failures = refresh.failures.saturating_add(1);
                    let failures = refresh.failures;
                    let delay = timing.delay(failures, error.retry_hint(), &mut refresh.rng);
                    let retry_at = Instant::now() + delay;
                    self.set_retry_at(Some(retry_at));
                    error.set_retry_at(retry_at);
                    refresh.last_error = Some(error.clone());
                }
                Err(error)
            }
        }
    }

    /// Stops serving the token of `generation` if it is still the current one.
    pub(crate) fn invalidate(&self, generation: u64) -> bool {
        self.evict(generation, Cause::Invalidate)
    }

    /// A server answered `401 Unauthorized` to a request that carried the
    /// token of `generation`: the one place where the tower middleware and
    /// the reqwest middleware react to a rejection.
    pub(crate) fn unauthorized(&self, generation: u64) -> bool {
        self.evict(generation, Cause::Unauthorized)
    }

    fn evict(&self, generation: u64, cause: Cause) -> bool {
        let current = self.current.load();
        let evicted = generation != 0 && current.generation == generation && current.expire();
        if evicted {
            self.counters.invalidation();
            observe::invalidated(generation, cause);
        }
        evicted
    }

    /// Counts and reports how a fetch ended, after [`settle`](Self::settle).
    fn settled(
        &self,
        outcome: &Outcome,
        started: Instant,
        counts_as_failure: bool,
        span: &FetchSpan,
    ) {
        if outcome.is_ok() {
            span.settled(outcome, started, None, None);
            return;
        }
        if counts_as_failure {
            self.counters.failure();
        }
        let now = Instant::now();
        // An abandoned fetch set no backoff of its own.
        let retry_in = self
            .retry_at()
            .filter(|_| counts_as_failure)
            .map(|at| at.saturating_duration_since(now));
        // A failed background refresh leaves a due token in service.
        let current = self.current.load();
        let serving = match (current.phase(now), current.token.expiry()) {
            (Phase::Due, Some(expiry)) => Some(expiry.saturating_duration_since(now)),
            _ => None,
        };
        span.settled(outcome, started, retry_in, serving);
    }

    /// Makes this cache reachable by [`invalidate_by_id`].
    pub(crate) fn register(self: &Arc<Self>) {
        if !self.registered.swap(true, Ordering::Relaxed) {
            registry().insert(self.id, Arc::downgrade(self));
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let refresh = self
            .refresh
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        // The last handle is gone: nobody is left to receive a token.
        let tasks = [refresh.flight_task.take(), refresh.timer_task.take()];
        for task in tasks.into_iter().flatten() {
            task.abort();
        }
        if *self.registered.get_mut() {
            registry().remove(&self.id);
        }
    }
}

/// One fetch, run on its own task. It holds the cache weakly: when every
/// handle is gone, the fetch is aborted and nothing keeps it alive.
struct Flight {
    shared: Weak<Shared>,
    tx: watch::Sender<Option<Outcome>>,
    started: Instant,
    /// Whether the task ever ran: a runtime that is shutting down drops a new
    /// task at once, inside `spawn`, while the cache's lock is held.
    polled: bool,
    settled: bool,
    span: FetchSpan,
}

impl Flight {
    async fn run(mut self, timeout: Duration) {
        self.polled = true;
        let Some(fetch) = self
            .shared
            .upgrade()
            .map(|shared| shared.source.fetch_boxed())
        else {
            return;
        };
        let result = match tokio::time::timeout(timeout, self.span.instrument(fetch)).await {
            Ok(Ok(token)) => Ok(token),
            Ok(Err((error, hint))) => Err(TokenError::fetch(error, hint)),
            Err(_elapsed) => Err(TokenError::timeout(timeout)),
        };
        self.settle(result, true);
    }

    fn settle(&mut self, result: Result<Token, TokenError>, counts_as_failure: bool) {
        self.settled = true;
        let outcome = match self.shared.upgrade() {
            Some(shared) => {
                let outcome = shared.settle(result, self.started, counts_as_failure);
                shared.settled(&outcome, self.started, counts_as_failure, &self.span);
                outcome
            }
            None => Err(TokenError::abandoned()),
        };
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if !self.polled {
            // Dropped by its runtime before it ran, maybe inside `spawn`
            // under the cache's lock, so take no lock: only say that no
            // fetch is in flight. The next request starts a new one.
            if let Some(shared) = self.shared.upgrade() {
                shared.refreshing.store(false, Ordering::Release);
            }
            return;
        }
        // A panicking source is its failure, paced like any other; a fetch
        // dropped with its runtime is nobody's and is simply tried again.
        if std::thread::panicking() {
            self.settle(Err(TokenError::panicked()), true);
        } else {
            self.settle(Err(TokenError::abandoned()), false);
        }
    }
}

// ===== the registry =====
//
// A response future reaches its cache on a 401 through this map rather than
// through a handle of its own, so that the hot path touches no shared
// reference count. Only caches used by a middleware are registered.

type Registry = BTreeMap<u64, Weak<Shared>>;

static REGISTRY: Mutex<Registry> = Mutex::new(BTreeMap::new());

fn registry() -> MutexGuard<'static, Registry> {
    REGISTRY.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Handles a 401 to a request that carried the token of `generation` from
/// the cache `id`.
pub(crate) fn invalidate_by_id(id: u64, generation: u64) {
    // Upgrade under the lock, drop outside it: the last handle's drop takes it.
    let shared = registry().get(&id).and_then(Weak::upgrade);
    if let Some(shared) = shared {
        shared.unauthorized(generation);
    }
}

/// The current entry, shared by the cache and every service clone's view of
/// it (an `arc_swap::Cache`).
#[derive(Clone)]
pub(crate) struct Current(Arc<Slot>);

/// Alone on its cache lines: every request reads the pointer, and a write
/// to a neighbour (a reference count bumped by every request, say) would
/// otherwise take the line away from the other cores.
#[repr(align(128))]
pub(crate) struct Slot(ArcSwap<Entry>);

impl std::ops::Deref for Current {
    type Target = ArcSwap<Entry>;

    fn deref(&self) -> &ArcSwap<Entry> {
        &self.0 .0
    }
}
