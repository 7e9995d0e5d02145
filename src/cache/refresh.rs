//! The state behind a cache: the current entry, read lock-free, and the one
//! refresh at a time, guarded by a mutex that is never held across an await.
//!
//! A fetch ends exactly once, with one outcome that all its waiters share,
//! by whichever of these comes first:
//!
//! - its task settles it (a token, an error, its own timeout, a panic);
//! - its deadline (start + fetch timeout) passes, seen by a request or a
//!   waiter on any runtime: it ends as a timeout, even when its own runtime
//!   is idle and its timer never fires;
//! - its task is dropped by a runtime that shuts down: it ends abandoned,
//!   and its waiters start a new fetch on their own runtime;
//! - its task never ran, and a request on another runtime needs a token, or
//!   its deadline passes: it is replaced (abandoned, not failed: the
//!   identity provider was never asked), and the request starts a new fetch
//!   on its own runtime.
//!
//! A rejection (`unauthorized`, `invalidate`) evicts a token; one that comes
//! soon after the token was fetched counts as a rejection in a row and
//! paces the next fetch (see `evict`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::time::Instant;

use super::clock::{self, AtomicInstant, Limit};
use super::entry::{Entry, Phase};
use super::observe::{self, Cause, FetchSpan};
use super::stats::Counters;
use super::sync::{self, AbortHandle, Handle, Mutex, MutexGuard, RuntimeId};
use super::timing::{Rng, Timing};
use crate::source::DynSource;
use crate::{Token, TokenError, TokenErrorKind};

/// What a fetch ends with; shared by every request that waited on it.
type Outcome = Result<Arc<Entry>, TokenError>;

/// A token rejected within this long of its fetch (and within a tenth of
/// its lifetime) counts as rejected "soon": the resource keeps rejecting
/// fresh tokens, and the next fetch is paced. Later, a rejection is a
/// revocation, and the next request fetches at once.
pub(crate) const SOON: Duration = Duration::from_secs(5);

/// How long a fetch may sit unpolled on its runtime before a request on
/// another runtime replaces it (at most a tenth of the fetch timeout).
const UNPOLLED_GRACE: Duration = Duration::from_secs(1);

/// The configuration of a cache.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) timing: Timing,
    pub(crate) scheme: Option<String>,
    /// Set when the scheme is not a valid header value: every fetch fails.
    pub(crate) scheme_error: Option<TokenError>,
    #[cfg(feature = "store")]
    pub(crate) store: super::Binding,
}

impl Config {
    /// How long one refresh may take before it ends as a timeout: the
    /// fetch timeout, and with a store the wait for another replica too.
    fn flight_timeout(&self) -> Duration {
        #[cfg(feature = "store")]
        return self.store.flight_timeout(self.timing.fetch_timeout);
        #[cfg(not(feature = "store"))]
        self.timing.fetch_timeout
    }

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
            #[cfg(feature = "store")]
            store: super::Binding::default(),
        }
    }
}

pub(crate) struct Shared {
    pub(crate) id: u64,
    pub(crate) current: Current,
    pub(crate) source: Arc<dyn DynSource>,
    refresh: Mutex<Refresh>,
    /// Mirrors of the flight's deadline and the backoff's end, written under
    /// the lock and read without it by requests in the due window, which
    /// only need to know whether a refresh is pending. A stale answer only
    /// sends a request to the slow path, which decides under the lock.
    flight_deadline: AtomicInstant,
    retry_at: AtomicInstant,
    registered: AtomicBool,
    pub(crate) counters: Counters,
    /// The key of a [`KeyedTokenCache`](crate::KeyedTokenCache)'s cache, as
    /// its label function renders it, for tracing.
    pub(crate) label: Option<Arc<str>>,
}

#[derive(Default)]
pub(crate) struct Refresh {
    pub(crate) config: Config,
    flight: Option<InFlight>,
    flights: u64,
    failures: u32,
    last_error: Option<TokenError>,
    retry_at: Option<Limit>,
    rng: Rng,
    /// Tokens rejected soon after their fetch, in a row.
    rejections: u32,
    /// The generation of the last token rejected soon after its fetch.
    rejected: u64,
    /// The current token's generation, and until when a rejection of it
    /// comes "soon" after its fetch.
    soon: Option<(u64, Instant)>,
}

/// The fetch in flight, as the cache sees it.
struct InFlight {
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
    started: Instant,
    deadline: Limit,
    timeout: Duration,
    task: AbortHandle,
    span: FetchSpan,
    /// The runtime its task was spawned on.
    runtime: RuntimeId,
    /// Whether its task began (set under the lock): until then, it has not
    /// asked the identity provider anything and may be replaced.
    began: bool,
}

impl InFlight {
    fn watch(&self) -> Watch {
        Watch {
            id: self.id,
            rx: self.tx.subscribe(),
            deadline: self.deadline,
        }
    }
}

/// What a waiter holds of a fetch.
struct Watch {
    id: u64,
    rx: watch::Receiver<Option<Outcome>>,
    deadline: Limit,
}

/// Hands `outcome` to the waiters of a fetch, unless it already has one.
fn deliver(tx: &watch::Sender<Option<Outcome>>, outcome: Outcome) {
    tx.send_if_modified(|slot| {
        if slot.is_some() {
            return false;
        }
        *slot = Some(outcome);
        true
    });
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
    watch: Watch,
    /// Never waits past this: its arrival plus the fetch timeout.
    give_up: Limit,
    timeout: Duration,
}

impl Waiter {
    pub(crate) async fn wait(mut self) -> Outcome {
        // Tokio's timers need a runtime with a time driver; without one, a
        // thread of its own bounds the wait.
        let timed = Handle::try_current().is_ok_and(|runtime| sync::has_time_driver(&runtime));
        let mut yielded = false;
        loop {
            let until = match (self.watch.deadline, self.give_up) {
                (Limit::At(a), Limit::At(b)) => Some(a.min(b)),
                (Limit::At(a), Limit::Never) | (Limit::Never, Limit::At(a)) => Some(a),
                (Limit::Never, Limit::Never) => None,
            };
            let received = {
                let rx = &mut self.watch.rx;
                let outcome = async move {
                    match rx.wait_for(Option::is_some).await {
                        Ok(outcome) => outcome.clone(),
                        Err(_closed) => None,
                    }
                };
                match until {
                    Some(at) if timed => sync::timeout_at(at, outcome).await.ok(),
                    Some(at) => sync::timeout_at_without_runtime(at, clock::now, outcome)
                        .await
                        .ok(),
                    None => Some(outcome.await),
                }
            };
            let outcome = match received {
                Some(Some(outcome)) => outcome,
                // Every sender gone without an outcome: only a panic inside
                // the cache's own bookkeeping does that. Not retried.
                Some(None) => Err(TokenError::panicked()),
                None if !yielded => {
                    // The fetch's own timer may have fired in the same turn:
                    // let its task go first, then look again.
                    yielded = true;
                    sync::yield_now().await;
                    continue;
                }
                None => {
                    let now = clock::now();
                    if self.watch.deadline.reached(now) {
                        // Its own runtime did not end it in time: end it
                        // here. A fetch that began since (the deadline was
                        // the grace of one that had not) goes on: wait for
                        // its own deadline.
                        if let Some(deadline) = self.shared.stall(self.watch.id, now) {
                            self.watch.deadline = deadline;
                        }
                        continue;
                    }
                    return Err(TokenError::timeout(self.timeout));
                }
            };
            let now = clock::now();
            let again = match &outcome {
                // The fetch's runtime went away, or its task never ran: ask
                // again, which starts a new fetch on this runtime.
                Err(e) => e.kind() == TokenErrorKind::Abandoned && !self.give_up.reached(now),
                // Polled late (the token came while nobody polled this
                // request): an expired token is never handed out. The wait
                // was the caller's, so a new one starts from here.
                Ok(entry) if entry.phase(now) == Phase::Expired => {
                    self.give_up = Limit::after(now, self.timeout);
                    true
                }
                Ok(_) => false,
            };
            if !again {
                return outcome;
            }
            let current = self.shared.current.load_full();
            match self.shared.lookup_with(&current, false) {
                Lookup::Ready(entry) => return Ok(entry),
                Lookup::Wait(waiter) => {
                    self.watch = waiter.watch;
                    yielded = false;
                }
                Lookup::Fail(error) => return Err(error),
            }
        }
    }
}

impl Shared {
    pub(crate) fn new(source: Arc<dyn DynSource>, config: Config, label: Option<Arc<str>>) -> Self {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            current: Current(Arc::new(Slot(ArcSwap::from_pointee(Entry::empty())))),
            source,
            refresh: Mutex::new(Refresh {
                config,
                ..Refresh::default()
            }),
            flight_deadline: AtomicInstant::none(),
            retry_at: AtomicInstant::none(),
            registered: AtomicBool::new(false),
            counters: Counters::default(),
            label,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Refresh> {
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
        self.lookup_with(seen, true)
    }

    /// [`lookup`](Self::lookup); a waiter that asks again is not counted
    /// as a new wait.
    fn lookup_with(self: &Arc<Self>, seen: &Arc<Entry>, count: bool) -> Lookup {
        let now = clock::now();
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
                let idle = self.flight(&mut refresh, now).is_none()
                    && self.backing_off(&refresh, now).is_none();
                if idle {
                    // Without a runtime the current token is still good.
                    let _ = self.start(&mut refresh, now);
                }
                Lookup::Ready(current)
            }
            Phase::Expired => {
                if let Some(watch) = self.flight(&mut refresh, now) {
                    return self.waiter(&refresh, watch, now, count);
                }
                if let Some(error) = self.backing_off(&refresh, now) {
                    return Lookup::Fail(error);
                }
                match self.start(&mut refresh, now) {
                    Ok(watch) => self.waiter(&refresh, watch, now, count),
                    Err(error) => Lookup::Fail(error),
                }
            }
        }
    }

    /// Whether a refresh is in flight or waits for its backoff, read without
    /// the lock.
    pub(crate) fn refresh_pending(&self, now: Instant) -> bool {
        self.flight_deadline.is_after(now) || self.retry_at.is_after(now)
    }

    /// The fetch in flight, if it can still deliver. One that ended without
    /// the lock (dropped by its runtime) is forgotten; one whose task never
    /// ran is replaced when asked from another runtime or past its deadline;
    /// one that ran past its deadline is ended as a timeout.
    fn flight(&self, refresh: &mut Refresh, now: Instant) -> Option<Watch> {
        let flight = refresh.flight.as_ref()?;
        if flight.tx.borrow().is_some() {
            refresh.flight = None;
            self.flight_deadline.store(None);
            return None;
        }
        if !flight.began {
            // Another runtime that is driven gets a token from its own fetch
            // once this one has sat unpolled a while; the grace keeps
            // runtimes that all start at once from replacing each other's.
            let grace = (flight.timeout / 10).min(UNPOLLED_GRACE);
            let graced = now.saturating_duration_since(flight.started) >= grace;
            let elsewhere = Handle::try_current()
                .is_ok_and(|runtime| sync::runtime_id(&runtime) != flight.runtime);
            if (elsewhere && graced) || flight.deadline.reached(now) {
                let id = flight.id;
                self.replace_unstarted(refresh, id);
                return None;
            }
            if elsewhere {
                // Wait out the grace only: then the waiter ends the fetch
                // (`stall`) and starts its own.
                let mut watch = flight.watch();
                watch.deadline = watch.deadline.min(Limit::after(flight.started, grace));
                return Some(watch);
            }
        }
        if flight.deadline.reached(now) {
            let id = flight.id;
            self.stall_locked(refresh, id, now);
            return None;
        }
        Some(flight.watch())
    }

    /// The error to fail with while a backoff is in force: after rejections,
    /// the rejection itself; after a failure, `BackingOff` with the failure.
    fn backing_off(&self, refresh: &Refresh, now: Instant) -> Option<TokenError> {
        let retry_at = refresh.retry_at.filter(|at| !at.reached(now))?;
        let last = refresh.last_error.clone()?;
        if last.kind() == TokenErrorKind::Rejected {
            return Some(last);
        }
        Some(TokenError::backing_off(last, retry_at.instant()))
    }

    fn waiter(
        self: &Arc<Self>,
        refresh: &Refresh,
        watch: Watch,
        now: Instant,
        count: bool,
    ) -> Lookup {
        if count {
            self.counters.wait();
        }
        let timeout = refresh.config.flight_timeout();
        Lookup::Wait(Waiter {
            shared: Arc::clone(self),
            watch,
            give_up: Limit::after(now, timeout),
            timeout,
        })
    }

    /// Starts the single fetch, on a task of its own so that no request's
    /// cancellation can cancel it.
    fn start(self: &Arc<Self>, refresh: &mut Refresh, now: Instant) -> Result<Watch, TokenError> {
        if let Some(error) = &refresh.config.scheme_error {
            return Err(error.clone());
        }
        let runtime = Handle::try_current().map_err(|_| TokenError::no_runtime())?;
        // Its timeout would panic on a runtime without timers.
        if !sync::has_time_driver(&runtime) {
            return Err(TokenError::no_time_driver());
        }
        let timeout = refresh.config.flight_timeout();
        refresh.flights += 1;
        let id = refresh.flights;
        let (tx, _) = watch::channel(None);
        let span = FetchSpan::new(refresh.failures.saturating_add(1), self.label.as_deref());
        let flight = Flight {
            shared: Arc::downgrade(self),
            id,
            tx: tx.clone(),
            polled: false,
            settled: false,
            span: span.clone(),
        };
        let task = runtime.spawn(flight.run(timeout));
        if task.is_finished() {
            // The task cannot have settled: that takes the lock held here. So
            // its runtime is shutting down and dropped it unpolled.
            return Err(TokenError::abandoned());
        }
        let deadline = Limit::after(now, timeout);
        let flight = InFlight {
            id,
            tx,
            started: now,
            deadline,
            timeout,
            task: task.abort_handle(),
            span,
            runtime: sync::runtime_id(&runtime),
            began: false,
        };
        let watch = flight.watch();
        refresh.flight = Some(flight);
        self.flight_deadline.store(Some(deadline));
        self.counters.fetch();
        Ok(watch)
    }

    /// Ends the fetch `id` with what its task returned, unless it already
    /// ended another way.
    fn settle(&self, id: u64, result: Result<Token, TokenError>, counts_as_failure: bool) {
        let mut refresh = self.lock();
        let Some(flight) = refresh.flight.take_if(|flight| flight.id == id) else {
            return;
        };
        self.flight_deadline.store(None);
        let outcome = self.record(&mut refresh, result, flight.started, counts_as_failure);
        drop(refresh);
        self.report(&outcome, &flight, counts_as_failure);
        deliver(&flight.tx, outcome);
    }

    /// The task of fetch `id` begins: whether it is still the fetch in
    /// flight (it may have been replaced before it ran).
    fn begin(&self, id: u64) -> bool {
        let mut refresh = self.lock();
        match refresh.flight.as_mut() {
            Some(flight) if flight.id == id => {
                flight.began = true;
                true
            }
            _ => false,
        }
    }

    /// Forgets fetch `id`, whose task never ran: not a failure, since the
    /// identity provider was never asked. Its waiters get `Abandoned` and
    /// ask again, which starts a new fetch on their own runtime; its task,
    /// if it ever runs, finds itself replaced and fetches nothing.
    fn replace_unstarted(&self, refresh: &mut Refresh, id: u64) {
        let Some(flight) = refresh.flight.take_if(|flight| flight.id == id) else {
            return;
        };
        self.flight_deadline.store(None);
        deliver(&flight.tx, Err(TokenError::abandoned()));
        flight.task.abort();
    }

    /// A waiter saw the deadline of fetch `id` pass: end it, if nothing else
    /// has. The deadline of the fetch if it goes on.
    fn stall(&self, id: u64, now: Instant) -> Option<Limit> {
        let mut refresh = self.lock();
        self.stall_locked(&mut refresh, id, now);
        let flight = refresh.flight.as_ref().filter(|flight| flight.id == id)?;
        Some(flight.deadline)
    }

    fn stall_locked(&self, refresh: &mut Refresh, id: u64, now: Instant) {
        if refresh
            .flight
            .as_ref()
            .is_some_and(|flight| flight.id == id && !flight.began)
        {
            return self.replace_unstarted(refresh, id);
        }
        let Some(flight) = refresh
            .flight
            .take_if(|flight| flight.id == id && flight.deadline.reached(now))
        else {
            return;
        };
        self.flight_deadline.store(None);
        let timeout = Err(TokenError::timeout(flight.timeout));
        let outcome = self.record(refresh, timeout, flight.started, true);
        self.report(&outcome, &flight, true);
        deliver(&flight.tx, outcome);
        // Only after delivering: a task that the abort drops unpolled, on
        // another thread at once, delivers `Abandoned` without the lock.
        flight.task.abort();
    }

    /// Applies what a fetch that began at `started` ended with: a new
    /// current token, or a failure and its backoff.
    fn record(
        &self,
        refresh: &mut Refresh,
        result: Result<Token, TokenError>,
        started: Instant,
        counts_as_failure: bool,
    ) -> Outcome {
        let Refresh { config, rng, .. } = refresh;
        let entry = result.and_then(|token| {
            let started = token.fetch_started().unwrap_or(started);
            Entry::new(
                token,
                config.scheme.as_deref(),
                started,
                &config.timing,
                rng,
            )
        });
        match entry {
            Ok(entry) => {
                let entry = Arc::new(entry);
                entry.arm();
                // A token replaced without a rejection soon after its fetch
                // ends a run of rejections.
                if self.current.load().generation != refresh.rejected {
                    refresh.rejections = 0;
                }
                let now = clock::now();
                let soon = entry.token.expiry().map_or(SOON, |expiry| {
                    (expiry.saturating_duration_since(now) / 10).min(SOON)
                });
                refresh.soon = Some((entry.generation, now.checked_add(soon).unwrap_or(now)));
                self.current.store(Arc::clone(&entry));
                refresh.failures = 0;
                refresh.last_error = None;
                refresh.retry_at = None;
                self.retry_at.store(None);
                Ok(entry)
            }
            Err(mut error) => {
                if counts_as_failure {
                    refresh.failures = refresh.failures.saturating_add(1);
                    let delay =
                        config
                            .timing
                            .delay(refresh.failures, error.retry_hint(), &mut refresh.rng);
                    let retry_at = Limit::after(clock::now(), delay);
                    refresh.retry_at = Some(retry_at);
                    self.retry_at.store(Some(retry_at));
                    error.set_retry_at(retry_at.instant());
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

    /// Evicts the token of `generation` if it is still the current one: the
    /// one place every rejection goes through (the tower layer, `.grpc()`,
    /// each key of a keyed cache, the reqwest middleware, `invalidate`).
    ///
    /// A token rejected soon after its fetch (see [`SOON`]) means the
    /// resource may keep rejecting fresh tokens (a wrong audience, a revoked
    /// grant, a clock ahead of ours). The first such rejection fetches at
    /// once; from the second in a row, the next fetch waits a doubling
    /// backoff ([`Timing::rejection_delay`]), during which requests fail
    /// with [`TokenErrorKind::Rejected`]. A rejection later in a token's
    /// life is a revocation: it ends the run, and the next request fetches
    /// at once.
    fn evict(&self, generation: u64, cause: Cause) -> bool {
        if generation == 0 {
            return false;
        }
        // Under the lock, so that no fetch lands between the compare and the
        // eviction, and the pacing is set before the next lookup.
        let mut refresh = self.lock();
        let current = self.current.load_full();
        let now = clock::now();
        if current.generation != generation || !current.expire(now) {
            return false;
        }
        let soon = matches!(refresh.soon, Some((g, until)) if g == generation && now < until);
        refresh.rejections = match soon {
            true => refresh.rejections.saturating_add(1),
            false => 0,
        };
        // The first is free: one revoked token, or one retry of a request
        // (`RetryOnUnauthorized`), fetches at once.
        let paced = if refresh.rejections >= 2 {
            refresh.rejected = generation;
            let Refresh {
                config,
                rng,
                rejections,
                ..
            } = &mut *refresh;
            let delay = config.timing.rejection_delay(*rejections, rng);
            let retry_at = Limit::after(now, delay);
            refresh.retry_at = Some(retry_at);
            self.retry_at.store(Some(retry_at));
            refresh.last_error = Some(TokenError::rejected(retry_at.instant()));
            Some(delay)
        } else {
            refresh.rejected = if soon { generation } else { 0 };
            None
        };
        drop(refresh);
        #[cfg(feature = "store")]
        if let Some(origin) = &current.token.origin {
            origin.rejected();
        }
        self.counters.invalidation();
        observe::invalidated(generation, cause, self.label.as_deref());
        if let Some(delay) = paced {
            observe::rejections_paced(delay, self.label.as_deref());
        }
        true
    }

    /// Counts and reports how a fetch ended.
    fn report(&self, outcome: &Outcome, flight: &InFlight, counts_as_failure: bool) {
        if outcome.is_ok() {
            flight.span.settled(outcome, flight.started, None, None);
            return;
        }
        if counts_as_failure {
            self.counters.failure();
        }
        let now = clock::now();
        // An abandoned fetch set no backoff of its own.
        let retry_in = match self.retry_at.until(now) {
            Some(retry_in) if counts_as_failure => Some(retry_in),
            _ => None,
        };
        // A failed background refresh leaves a due token in service.
        let current = self.current.load();
        let serving = match (current.phase(now), current.token.expiry()) {
            (Phase::Due, Some(expiry)) => Some(expiry.saturating_duration_since(now)),
            _ => None,
        };
        flight
            .span
            .settled(outcome, flight.started, retry_in, serving);
    }

    /// One fetch from the source, or through the store when the cache has
    /// one: what a flight runs.
    fn fetch(&self) -> Pin<Box<dyn Future<Output = Result<Token, TokenError>> + Send>> {
        #[cfg(feature = "store")]
        {
            let (binding, timing) = {
                let refresh = self.lock();
                (refresh.config.store.clone(), refresh.config.timing.clone())
            };
            if let Some(fleet) = binding.fleet(&*self.source, self.counters.store()) {
                return Box::pin(fleet.fetch(Arc::clone(&self.source), timing));
            }
        }
        let fetch = self.source.fetch_boxed();
        Box::pin(async move {
            fetch
                .await
                .map_err(|(error, hint)| TokenError::fetch(error, hint))
        })
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
        if let Some(flight) = refresh.flight.take() {
            flight.task.abort();
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
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
    /// Whether the task ever ran: a runtime that is shutting down drops a new
    /// task at once, inside `spawn`, while the cache's lock is held.
    polled: bool,
    settled: bool,
    span: FetchSpan,
}

impl Flight {
    async fn run(mut self, timeout: Duration) {
        self.polled = true;
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        if !shared.begin(self.id) {
            // Replaced before it ran: its waiters were told, and another
            // fetch is in flight.
            self.settled = true;
            return;
        }
        let fetch = shared.fetch();
        drop(shared);
        let result = match sync::timeout(timeout, self.span.instrument(fetch)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(TokenError::timeout(timeout)),
        };
        self.settle(result, true, TokenError::abandoned());
    }

    /// Hands `result` to the cache; if the cache delivers nothing (it is
    /// gone, or a panic inside it), the waiters get `fallback`.
    fn settle(
        &mut self,
        result: Result<Token, TokenError>,
        counts_as_failure: bool,
        fallback: TokenError,
    ) {
        if let Some(shared) = self.shared.upgrade() {
            shared.settle(self.id, result, counts_as_failure);
        }
        // Set only once the cache is done, so that a panic in there still
        // ends the wait from `drop`.
        self.settled = true;
        // Nobody delivered (the cache is gone): still end the wait.
        deliver(&self.tx, Err(fallback));
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if !self.polled {
            // Dropped by its runtime before it ran, maybe inside `spawn`
            // under the cache's lock, so take no lock: end the wait, and let
            // the due window know that nothing is in flight. The next lookup
            // forgets this fetch and starts a new one.
            deliver(&self.tx, Err(TokenError::abandoned()));
            if let Some(shared) = self.shared.upgrade() {
                shared.flight_deadline.store(None);
            }
            return;
        }
        // A panicking source is its failure, paced like any other; a fetch
        // dropped with its runtime is nobody's and is simply tried again.
        if std::thread::panicking() {
            self.settle(Err(TokenError::panicked()), true, TokenError::panicked());
        } else {
            self.settle(Err(TokenError::abandoned()), false, TokenError::abandoned());
        }
    }
}

// ===== the registry =====
//
// A response future reaches its cache on a 401 through this map rather than
// through a handle of its own, so that the hot path touches no shared
// reference count. Only caches used by a middleware are registered.

type Registry = BTreeMap<u64, Weak<Shared>>;

static REGISTRY: std::sync::Mutex<Registry> = std::sync::Mutex::new(BTreeMap::new());

fn registry() -> std::sync::MutexGuard<'static, Registry> {
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
        // The model check explores interleavings at every load and store.
        #[cfg(shuttle)]
        super::model::switch();
        &self.0 .0
    }
}
