//! One cached token: its pre-built header value and where it stands.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Wake, Waker};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::{Instant, Sleep};

use super::clock::{self, Coarse};
use super::sync::AtomicU8;
use super::timing::{Rng, Schedule, Timing};
use crate::token::Expiry;
use crate::{Token, TokenError};

// What the hot path may trust without the clock of the slow path.
/// Fresh until `fresh_until` on the coarse clock.
const FRESH: u8 = 0;
/// Tokio's clock passed the due point (a timer said so): ask it.
const STALE: u8 = 1;
/// Evicted (or the empty entry): never served again.
const EVICTED: u8 = 2;

/// A timer further out than this is armed for this long instead; when it
/// fires the slow path takes over (tokio's timer wheel tops out at about two
/// years, and a deadline near the end of `Instant`'s range would overflow).
const LONGEST_TIMER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Unique across all caches, so a token from one cache never matches another.
static GENERATION: AtomicU64 = AtomicU64::new(1);

/// The phase of a token, as the slow path sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Serve it.
    Fresh,
    /// Serve it, and start one background refresh.
    Due,
    /// Wait for a new token.
    Expired,
}

/// Alone on its cache lines, like the [`Slot`](super::refresh::Slot) that
/// points to it: every request reads it on every core, and a neighbour's
/// reference count bumped per request would otherwise bounce the line between
/// them (measured: the two-thread benchmark fell into a slow mode in about
/// half of the runs before, none after).
#[repr(align(128))]
pub(crate) struct Entry {
    /// Scheme and token, built once, marked sensitive.
    pub(crate) header: HeaderValue,
    pub(crate) token: Token,
    /// Zero for the empty entry of a cold cache.
    pub(crate) generation: u64,
    state: AtomicU8,
    /// The last coarse reading at which the token is surely fresh.
    fresh_until: Coarse,
    schedule: Option<Schedule>,
    /// Registered with tokio's time driver at the due point; its waker moves
    /// `state` on, even inside a paused clock's `advance`.
    timer: Mutex<Option<Pin<Box<Sleep>>>>,
}

/// The header's bytes, in a buffer with room to spare: `bytes` then shares
/// it through its plain reference-counted form, whose clone (once per
/// request) is a few instructions shorter than that of an exactly sized one.
fn header_bytes(scheme: Option<&str>, secret: &str) -> Vec<u8> {
    let parts = match scheme {
        Some(scheme) => [scheme, " ", secret],
        None => ["", "", secret],
    };
    let mut bytes = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 1);
    for part in parts {
        bytes.extend_from_slice(part.as_bytes());
    }
    bytes
}

impl Entry {
    /// The entry of a cache that has no token yet.
    pub(crate) fn empty() -> Self {
        Self {
            header: HeaderValue::from_static(""),
            token: Token::new(String::new()),
            generation: 0,
            state: AtomicU8::new(EVICTED),
            fresh_until: 0,
            schedule: None,
            timer: Mutex::new(None),
        }
    }

    /// Checks and prepares a token fetched from `started`.
    pub(crate) fn new(
        token: Token,
        scheme: Option<&str>,
        started: Instant,
        timing: &Timing,
        rng: &mut Rng,
    ) -> Result<Self, TokenError> {
        if token.secret().is_empty() {
            return Err(TokenError::empty_token());
        }
        // A DPoP-bound token goes out as `DPoP <token>`, beside a proof made
        // per request: never on the hot path, which only clones the header.
        #[cfg(feature = "dpop")]
        let (scheme, bound) = match token.bound() {
            Some(_) => (Some("DPoP"), true),
            None => (scheme, false),
        };
        #[cfg(not(feature = "dpop"))]
        let bound = false;
        let mut header = HeaderValue::try_from(header_bytes(scheme, token.secret()))
            .map_err(TokenError::invalid_token)?;
        header.set_sensitive(true);

        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let granularity = token.granularity();
        let mut token = token.anchored(started);
        token.generation = generation;
        let schedule = match token.expiry_kind() {
            Expiry::At(expiry) => Some(timing.schedule(started, expiry, granularity, rng)),
            Expiry::Never | Expiry::In(_) => None,
        };
        // The coarse clock first: time lost between the two reads then makes
        // the hot path's deadline earlier, never later than the due point.
        let coarse = clock::coarse_now();
        #[cfg(test)]
        clock::skew::between_reads();
        let now = clock::now();
        let (state, fresh_until) = match (phase_at(schedule, now), schedule) {
            (Phase::Expired, _) => return Err(TokenError::expired()),
            (Phase::Due, _) => (STALE, 0),
            // Stale for the hot path from the start: its requests take the
            // slow path, which asks `present` for a proof.
            (Phase::Fresh, _) if bound => (STALE, 0),
            (Phase::Fresh, None) => (FRESH, Coarse::MAX),
            (Phase::Fresh, Some(s)) => (
                FRESH,
                clock::coarse_deadline_from(coarse, s.due_at.saturating_duration_since(now)),
            ),
        };
        Ok(Self {
            header,
            token,
            generation,
            state: AtomicU8::new(state),
            fresh_until,
            schedule,
            timer: Mutex::new(None),
        })
    }

    /// The hot path's only check: no lock, one atomic load and one read of
    /// the coarse clock. False means "ask the slow path", not "stale".
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.state.load(Ordering::Relaxed) == FRESH && clock::coarse_now() < self.fresh_until
    }

    /// The exact phase at `now`, on tokio's clock.
    pub(crate) fn phase(&self, now: Instant) -> Phase {
        match self.state.load(Ordering::Relaxed) {
            EVICTED => Phase::Expired,
            _ => phase_at(self.schedule, now),
        }
    }

    /// Where the token stops being served, if it ever does.
    #[cfg(all(test, shuttle))]
    #[cfg_attr(test, mutants::skip)] // the model check's: docs/mutants.md
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        self.schedule.map(|s| s.expires_at)
    }

    /// Stops serving this token. Returns whether it was still being served.
    pub(crate) fn expire(&self, now: Instant) -> bool {
        let was = self.state.swap(EVICTED, Ordering::Relaxed);
        was != EVICTED && phase_at(self.schedule, now) != Phase::Expired
    }

    /// An entry that is due now and expires in about 8 s, as if fetched
    /// 10 s ago with an expiry 20 s after that.
    #[cfg(test)]
    pub(crate) fn due_now() -> Arc<Self> {
        let now = clock::now();
        let started = now.checked_sub(Duration::from_secs(10)).unwrap_or(now);
        let timing = Timing {
            refresh_before: Duration::from_secs(3600),
            ..Timing::default()
        };
        let token = Token::new("due").expires_at(now + Duration::from_secs(10));
        let entry = Self::new(token, Some("Bearer"), started, &timing, &mut Rng::new());
        let entry = Arc::new(entry.expect("a due entry"));
        assert_eq!(entry.phase(now), Phase::Due);
        entry
    }

    /// Sends the hot path to the slow path, as the timer does at the due
    /// point.
    pub(crate) fn mark_stale(&self) {
        let _ = self
            .state
            .compare_exchange(FRESH, STALE, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Registers the due point with the time driver of the current runtime,
    /// if there is one with a time driver, so that a paused clock that jumps
    /// past it is seen by the very next request. The timer holds the entry
    /// weakly, so it keeps no secret alive, and is dropped with the entry.
    pub(crate) fn arm(self: &Arc<Self>) {
        let Some(schedule) = self.schedule else {
            return;
        };
        if self.state.load(Ordering::Relaxed) != FRESH
            || tokio::runtime::Handle::try_current().is_err()
        {
            return;
        }
        let now = clock::now();
        let at = match now.checked_add(LONGEST_TIMER) {
            Some(longest) => schedule.due_at.min(longest),
            None => schedule.due_at,
        };
        // `sleep_until` panics in a runtime built without the time driver;
        // then the coarse clock alone moves the phases (no paused clock).
        let sleep = std::panic::catch_unwind(|| Box::pin(tokio::time::sleep_until(at)));
        let Ok(mut sleep) = sleep else {
            return;
        };
        let waker = Waker::from(Arc::new(DueWaker {
            entry: Arc::downgrade(self),
            at,
        }));
        if sleep
            .as_mut()
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
        {
            self.mark_stale();
            return;
        }
        *self.timer.lock().unwrap_or_else(PoisonError::into_inner) = Some(sleep);
    }
}

fn phase_at(schedule: Option<Schedule>, now: Instant) -> Phase {
    match schedule {
        None => Phase::Fresh,
        Some(s) if now < s.due_at => Phase::Fresh,
        Some(s) if now < s.expires_at => Phase::Due,
        Some(_) => Phase::Expired,
    }
}

/// Woken by the time driver at the due point, or early as its runtime shuts
/// down: only a clock past the point moves the entry on.
struct DueWaker {
    entry: Weak<Entry>,
    at: Instant,
}

impl Wake for DueWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if clock::now() >= self.at {
            if let Some(entry) = self.entry.upgrade() {
                entry.mark_stale();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::time::Duration;

    use super::*;

    /// The entry of `token`, fetched now, with the default timing.
    fn made(token: Token, scheme: Option<&str>) -> Result<Entry, TokenError> {
        Entry::new(
            token,
            scheme,
            Instant::now(),
            &Timing::default(),
            &mut Rng::new(),
        )
    }

    fn entry(lifetime: Duration) -> Arc<Entry> {
        let token = Token::new("t").expires_in(lifetime);
        Arc::new(made(token, Some("Bearer")).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn the_phase_is_exact_on_the_paused_clock() {
        let entry = entry(Duration::from_secs(10));
        entry.arm();
        assert!(entry.is_fresh());

        tokio::time::advance(Duration::from_millis(4999)).await;
        assert!(entry.is_fresh());
        assert_eq!(entry.phase(Instant::now()), Phase::Fresh);
        // The jump to the due point is seen as soon as `advance` returns.
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!entry.is_fresh());
        assert_eq!(entry.phase(Instant::now()), Phase::Due);

        // expired 1 s (10%) before the 10 s expiry
        tokio::time::advance(Duration::from_millis(3999)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Due);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn one_jump_past_due_and_expiry_is_seen_at_once() {
        let entry = entry(Duration::from_secs(10));
        entry.arm();
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!entry.is_fresh());
        assert_eq!(entry.phase(Instant::now()), Phase::Expired);
    }

    #[test]
    fn without_a_timer_the_coarse_clock_ends_freshness() {
        // No runtime: nothing armed, real time only.
        let entry = entry(Duration::from_millis(200));
        assert!(entry.is_fresh());
        std::thread::sleep(Duration::from_millis(120));
        assert!(!entry.is_fresh(), "due at 100 ms");
        assert_eq!(entry.phase(Instant::now()), Phase::Due);
    }

    #[tokio::test(start_paused = true)]
    async fn an_evicted_entry_stays_expired() {
        let entry = entry(Duration::from_secs(10));
        entry.arm();
        assert!(entry.expire(Instant::now()));
        assert!(!entry.expire(Instant::now()));
        assert!(!entry.is_fresh());
        assert_eq!(entry.phase(Instant::now()), Phase::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn an_entry_expired_by_the_clock_is_not_evicted_again() {
        let entry = entry(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!entry.expire(Instant::now()));
    }

    /// Only a fresh entry registers a timer: one the hot path already
    /// hands to the slow path (due, evicted) keeps no slot in the driver.
    #[tokio::test(start_paused = true)]
    async fn only_a_fresh_entry_arms_a_timer() {
        let armed = |entry: &Arc<Entry>| {
            entry.arm();
            entry.timer.lock().unwrap().is_some()
        };
        assert!(armed(&entry(Duration::from_secs(10))));

        let evicted = entry(Duration::from_secs(10));
        evicted.expire(Instant::now());
        assert!(!armed(&evicted));

        let stale = entry(Duration::from_secs(10));
        stale.mark_stale();
        assert!(!armed(&stale));
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_woken_early_by_shutdown_moves_nothing() {
        let entry = entry(Duration::from_secs(10));
        let waker = Arc::new(DueWaker {
            entry: Arc::downgrade(&entry),
            at: Instant::now() + Duration::from_secs(5),
        });
        waker.wake_by_ref();
        assert!(entry.is_fresh());
        tokio::time::advance(Duration::from_secs(5)).await;
        Waker::from(waker).wake();
        assert!(!entry.is_fresh());
    }

    /// A far due point is armed for a year at most (tokio's timer wheel
    /// tops out at about two): the hot path serves the token all that year,
    /// and only then hands it to the slow path, which still finds it fresh.
    #[tokio::test(start_paused = true)]
    async fn a_far_due_point_is_armed_for_a_year() {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        let entry = entry(DAY * 365 * 100);
        entry.arm();
        tokio::time::advance(DAY * 364).await;
        assert!(entry.is_fresh(), "woken within the year");
        tokio::time::advance(DAY * 2).await;
        assert!(!entry.is_fresh(), "not woken after a year");
        assert_eq!(entry.phase(Instant::now()), Phase::Fresh);
    }

    #[tokio::test(start_paused = true)]
    async fn far_future_and_never_expiring_tokens_arm_without_panic() {
        for token in [
            Token::new("t"),
            Token::new("t").expires_in(Duration::MAX),
            Token::new("t").expires_in(Duration::from_secs(u64::MAX)),
            Token::new("t").expires_in(Duration::from_secs(100 * 365 * 24 * 3600)),
        ] {
            let entry = made(token, None).map(Arc::new).unwrap();
            entry.arm();
            assert!(entry.is_fresh());
            tokio::time::advance(Duration::from_secs(3 * 365 * 24 * 3600)).await;
            assert_eq!(entry.phase(Instant::now()), Phase::Fresh);
        }
    }

    /// Time lost between the two clock reads of `Entry::new` (a
    /// preemption) never lets the hot path call the token fresh past its
    /// due point: the coarse clock is read first.
    #[test]
    fn a_preemption_between_the_clock_reads_never_makes_the_deadline_late() {
        let started = clock::now();
        let token = Token::new("t").expires_at(started + Duration::from_secs(10));
        clock::skew::preempt_next_entry(Duration::from_millis(500));
        let entry = Entry::new(
            token,
            Some("Bearer"),
            started,
            &Timing::default(),
            &mut Rng::new(),
        )
        .unwrap();
        // 10 ms past the due point (5 s), 500 ms of which went by between
        // the two reads.
        clock::skew::pass(Duration::from_millis(4510));
        assert_eq!(entry.phase(clock::now()), Phase::Due);
        assert!(
            !entry.is_fresh(),
            "fresh on the hot path past its due point"
        );
    }

    #[test]
    fn header_is_sensitive_and_carries_the_scheme() {
        let entry = entry(Duration::from_secs(10));
        assert_eq!(entry.header, "Bearer t");
        assert!(entry.header.is_sensitive());
        assert_eq!(entry.token.generation, entry.generation);
    }

    fn rejected(token: Token, scheme: Option<&str>) -> TokenError {
        made(token, scheme).err().expect("the token was accepted")
    }

    #[test]
    fn an_empty_token_is_rejected() {
        let error = rejected(Token::new(""), Some("Bearer"));
        assert_eq!(error.kind(), crate::TokenErrorKind::InvalidToken);
        assert_eq!(error.source().unwrap().to_string(), "the token is empty");
    }

    #[test]
    fn token_that_is_no_header_value_is_rejected() {
        let error = rejected(Token::new("line\nbreak"), None);
        assert_eq!(error.kind(), crate::TokenErrorKind::InvalidToken);
    }

    #[test]
    fn a_token_from_the_past_or_of_no_lifetime_is_expired() {
        let now = Instant::now();
        for token in [
            Token::new("t").expires_in(Duration::ZERO),
            Token::new("t").expires_at(now),
            Token::new("t").expires_at(now.checked_sub(Duration::from_secs(3600)).unwrap_or(now)),
            Token::new("t").expires_in_secs(1),
        ] {
            assert_eq!(rejected(token, None).kind(), crate::TokenErrorKind::Expired);
        }
    }

    #[cfg(feature = "dpop")]
    #[test]
    fn a_bound_token_goes_out_as_dpop_and_never_by_the_hot_path() {
        let binding = crate::dpop::Binding::new(crate::dpop::ProofKey::generate().unwrap());
        let token = Token::new("t")
            .expires_in(Duration::from_secs(10))
            .bind(&binding);
        let entry = made(token, Some("Bearer")).unwrap();
        assert_eq!(entry.header, "DPoP t");
        assert!(entry.header.is_sensitive());
        // The slow path, which makes the proof, serves it as fresh.
        assert!(!entry.is_fresh());
        assert_eq!(entry.phase(Instant::now()), Phase::Fresh);
    }
}
