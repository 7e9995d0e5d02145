//! One cached token: its pre-built header value and where it stands.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use http::HeaderValue;
use tokio::time::Instant;

use super::timing::{Rng, Schedule, Timing};
use crate::token::Expiry;
use crate::{Token, TokenError};

// Where a token stands. A timer task moves it along, so that the hot path
// reads one atomic instead of the clock.
const FRESH: u8 = 0;
const DUE: u8 = 1;
const EXPIRED: u8 = 2;
/// The timer is gone (its runtime shut down): ask the clock.
const UNTIMED: u8 = 3;

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
    schedule: Option<Schedule>,
    state: AtomicU8,
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
            schedule: None,
            state: AtomicU8::new(EXPIRED),
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
        let mut header = HeaderValue::try_from(header_bytes(scheme, token.secret()))
            .map_err(TokenError::invalid_token)?;
        header.set_sensitive(true);

        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let mut token = token.anchored(started);
        token.generation = generation;
        let schedule = match token.expiry_kind() {
            Expiry::At(expiry) => Some(timing.schedule(started, expiry, rng)),
            Expiry::Never | Expiry::In(_) => None,
        };
        let state = match phase_at(schedule, Instant::now()) {
            Phase::Fresh => FRESH,
            Phase::Due => DUE,
            Phase::Expired => return Err(TokenError::expired()),
        };
        Ok(Self {
            header,
            token,
            generation,
            schedule,
            state: AtomicU8::new(state),
        })
    }

    /// The hot path's only check.
    #[inline]
    pub(crate) fn is_fresh(&self) -> bool {
        self.state.load(Ordering::Relaxed) == FRESH
    }

    pub(crate) fn phase(&self, now: Instant) -> Phase {
        match self.state.load(Ordering::Relaxed) {
            FRESH => Phase::Fresh,
            DUE => Phase::Due,
            UNTIMED => phase_at(self.schedule, now),
            _ => Phase::Expired,
        }
    }

    /// Stops serving this token. Returns whether it was still being served.
    pub(crate) fn expire(&self) -> bool {
        self.state.swap(EXPIRED, Ordering::Relaxed) != EXPIRED
    }

    /// Moves a fresh entry to due, as its timer would.
    #[cfg(test)]
    pub(crate) fn mark_due(&self) {
        self.advance(FRESH, DUE);
    }

    fn advance(&self, from: u8, to: u8) {
        let _ = self
            .state
            .compare_exchange(from, to, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Spawns the task that moves this entry through its phases, if it
    /// expires. The task holds the entry weakly, so it keeps no secret alive.
    pub(crate) fn spawn_timer(self: &Arc<Self>) -> Option<tokio::task::AbortHandle> {
        let schedule = self.schedule?;
        let timer = Timer {
            entry: Arc::downgrade(self),
            done: false,
        };
        Some(tokio::spawn(timer.run(schedule)).abort_handle())
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

struct Timer {
    entry: Weak<Entry>,
    done: bool,
}

impl Timer {
    async fn run(mut self, schedule: Schedule) {
        tokio::time::sleep_until(schedule.due_at).await;
        match self.entry.upgrade() {
            Some(entry) => entry.advance(FRESH, DUE),
            None => return,
        }
        tokio::time::sleep_until(schedule.expires_at).await;
        if let Some(entry) = self.entry.upgrade() {
            entry.advance(FRESH, EXPIRED);
            entry.advance(DUE, EXPIRED);
        }
        self.done = true;
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // Dropped early: aborted because a newer token replaced this one (then
        // nobody reads this entry again), or its runtime shut down while the
        // cache lives on. Either way the clock decides from now on.
        if !self.done {
            if let Some(entry) = self.entry.upgrade() {
                entry.advance(FRESH, UNTIMED);
                entry.advance(DUE, UNTIMED);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error;
    use std::time::Duration;

    use super::*;

    fn entry(lifetime: Duration) -> Arc<Entry> {
        let token = Token::new("t").expires_in(lifetime);
        let entry = Entry::new(
            token,
            Some("Bearer"),
            Instant::now(),
            &Timing::default(),
            &mut Rng::new(),
        );
        Arc::new(entry.unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn timer_moves_the_entry_through_its_phases() {
        let entry = entry(Duration::from_secs(10));
        let _timer = entry.spawn_timer();
        assert!(entry.is_fresh());

        tokio::time::sleep(Duration::from_millis(4999)).await;
        assert!(entry.is_fresh());
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Due);
        assert!(!entry.is_fresh());

        // expired 1 s (10%) before the 10 s expiry
        tokio::time::sleep(Duration::from_millis(3998)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Due);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_timer_hands_over_to_the_clock() {
        let entry = entry(Duration::from_secs(10));
        let timer = entry.spawn_timer().unwrap();
        tokio::task::yield_now().await;
        timer.abort();
        tokio::task::yield_now().await;
        // no longer trusted as fresh without a look at the clock ...
        assert!(!entry.is_fresh());
        assert_eq!(entry.phase(Instant::now()), Phase::Fresh);
        // ... which still tells the phases apart
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Due);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Expired);
    }

    #[tokio::test(start_paused = true)]
    async fn an_expired_entry_stays_expired() {
        let entry = entry(Duration::from_secs(10));
        let _timer = entry.spawn_timer();
        assert!(entry.expire());
        assert!(!entry.expire());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(entry.phase(Instant::now()), Phase::Expired);
    }

    #[test]
    fn header_is_sensitive_and_carries_the_scheme() {
        let entry = entry(Duration::from_secs(10));
        assert_eq!(entry.header, "Bearer t");
        assert!(entry.header.is_sensitive());
        assert_eq!(entry.token.generation, entry.generation);
    }

    fn rejected(token: &str, scheme: Option<&str>) -> TokenError {
        let started = Instant::now();
        Entry::new(
            Token::new(token),
            scheme,
            started,
            &Timing::default(),
            &mut Rng::new(),
        )
        .err()
        .expect("the token was accepted")
    }

    #[test]
    fn an_empty_token_is_rejected() {
        let error = rejected("", Some("Bearer"));
        assert_eq!(error.kind(), crate::TokenErrorKind::InvalidToken);
        assert_eq!(error.source().unwrap().to_string(), "the token is empty");
    }

    #[test]
    fn token_that_is_no_header_value_is_rejected() {
        let error = rejected("line\nbreak", None);
        assert_eq!(error.kind(), crate::TokenErrorKind::InvalidToken);
    }
}
