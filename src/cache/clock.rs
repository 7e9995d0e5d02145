//! The clocks the cache reads: a cheap coarse one for the hot path, and
//! instants kept in atomics for the lock-free checks of the due window.
//!
//! A request must know the time to know that its token is fresh. Tokio's
//! clock is the one that decides (it can be paused in tests), but reading it
//! costs about 27 ns in a release build, as much as the rest of the hot path.
//! So the hot path reads a coarse monotonic clock instead (about 6 ns on
//! Linux, with a resolution of a few milliseconds) against a deadline taken
//! conservatively, and hands anything near or past it to the slow path, which
//! asks tokio's clock. A paused clock that jumps is seen through a timer the
//! entry registers with tokio's time driver (see `entry.rs`).

use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

use super::sync::AtomicI64;

/// A reading of the coarse clock, in nanoseconds from an arbitrary origin.
pub(crate) type Coarse = u64;

/// The coarse clock now.
#[inline]
pub(crate) fn coarse_now() -> Coarse {
    #[cfg(test)]
    return imp::now().saturating_add(skew::nanos());
    #[cfg(not(test))]
    imp::now()
}

/// Tokio's clock now: the one that decides every phase (the model
/// checker's clock under `--cfg shuttle`, see `sync.rs`).
#[inline]
pub(crate) fn now() -> Instant {
    #[cfg(test)]
    return super::sync::now() + skew::get();
    #[cfg(not(test))]
    super::sync::now()
}

/// What no runtime's API can do: let real time pass on this thread without
/// any runtime's driver running its timers, as for a runtime that is idle
/// between two `block_on`s. Unit tests move both of the cache's clocks
/// ahead by a skew instead of sleeping.
#[cfg(test)]
pub(crate) mod skew {
    use std::cell::Cell;
    use std::time::Duration;

    thread_local! {
        static SKEW: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    /// Moves this thread's view of real time `by` ahead.
    pub(crate) fn pass(by: Duration) {
        SKEW.with(|skew| skew.set(skew.get() + by));
    }

    thread_local! {
        static PREEMPTED: Cell<Duration> = const { Cell::new(Duration::ZERO) };
    }

    /// Makes the next entry built on this thread lose `by` between its two
    /// clock reads, as a preemption would.
    pub(crate) fn preempt_next_entry(by: Duration) {
        PREEMPTED.with(|p| p.set(by));
    }

    /// Between an entry's two clock reads: where a preemption would hurt.
    pub(crate) fn between_reads() {
        pass(PREEMPTED.with(|p| p.replace(Duration::ZERO)));
    }

    pub(super) fn get() -> Duration {
        SKEW.with(Cell::get)
    }

    pub(super) fn nanos() -> u64 {
        u64::try_from(get().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// How far behind the real time the hot path allows the coarse clock to
/// be: five of its ticks, and at least 50 ms. Its resolution alone is not
/// enough: the tick that moves it can come late or be skipped (measured
/// here under load: lags of up to 8 ms with a 4 ms resolution).
pub(crate) fn coarse_slack() -> Duration {
    static SLACK: OnceLock<Duration> = OnceLock::new();
    *SLACK.get_or_init(|| (imp::resolution() * 5).max(Duration::from_millis(50)))
}

/// The last coarse reading at which a token that stops being fresh
/// `remaining` from now may still be called fresh: early by up to the
/// slack and the clock's lag, and never late while the lag stays within the
/// slack. Saturates at "always" for a far future.
#[cfg(test)]
pub(crate) fn coarse_deadline(remaining: Duration) -> Coarse {
    coarse_deadline_from(coarse_now(), remaining)
}

/// [`coarse_deadline`] from a coarse reading `from` taken before the
/// instant `remaining` was measured from: reading it first can only move
/// the deadline earlier (a preemption between the two reads counts against
/// the token, never for it).
pub(crate) fn coarse_deadline_from(from: Coarse, remaining: Duration) -> Coarse {
    let remaining = u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX);
    let slack = u64::try_from(coarse_slack().as_nanos()).unwrap_or(u64::MAX);
    match from.checked_add(remaining) {
        Some(deadline) => deadline.saturating_sub(slack),
        None => Coarse::MAX,
    }
}

#[cfg(all(any(target_os = "linux", target_os = "android"), not(shuttle)))]
#[allow(unsafe_code)]
mod imp {
    use std::time::Duration;

    fn timespec_nanos(ts: &libc::timespec) -> u64 {
        let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
        let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
        secs.saturating_mul(1_000_000_000).saturating_add(nanos)
    }

    #[inline]
    pub(super) fn now() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec for the duration of the
        // call, and CLOCK_MONOTONIC_COARSE exists on every Linux since 2.6.32.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        timespec_nanos(&ts)
    }

    /// The fine clock the coarse one follows (std's `Instant` reads it).
    #[cfg(test)]
    pub(super) fn fine_now() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        timespec_nanos(&ts)
    }

    pub(super) fn resolution() -> Duration {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: as above.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
        match rc {
            0 => Duration::from_nanos(timespec_nanos(&ts)),
            // Unknown: assume the coarsest tick Linux has (HZ = 100).
            _ => Duration::from_millis(10),
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", shuttle)))]
mod imp {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    /// std's monotonic clock: exact, and what a coarse one would save is
    /// not worth platform code here.
    #[inline]
    #[cfg_attr(test, mutants::skip)] // never compiled on Linux
    pub(super) fn now() -> u64 {
        static ORIGIN: OnceLock<Instant> = OnceLock::new();
        let origin = *ORIGIN.get_or_init(Instant::now);
        u64::try_from(origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    #[cfg(test)]
    pub(super) fn fine_now() -> u64 {
        now()
    }

    #[cfg_attr(test, mutants::skip)] // never compiled on Linux
    pub(super) fn resolution() -> Duration {
        Duration::ZERO
    }
}

/// The model checker's clock (see `model.rs`).
#[cfg(shuttle)]
mod imp {
    use std::time::Duration;

    pub(super) use super::super::model::coarse_now as now;

    #[cfg(test)]
    pub(super) use super::super::model::coarse_now as fine_now;

    #[cfg_attr(test, mutants::skip)] // the model check's: docs/mutants.md
    pub(super) fn resolution() -> Duration {
        Duration::ZERO
    }
}

/// An optional instant on tokio's clock in an atomic, for checks made
/// without a lock. Stored as signed nanoseconds from a process-wide origin,
/// so that instants from a paused clock far ahead and from a real clock
/// behind it are both kept as they are (a cache can be used from both).
#[derive(Debug)]
pub(crate) struct AtomicInstant(AtomicI64);

const NONE: i64 = i64::MIN;
/// An instant beyond what the store can say: never reached.
const NEVER: i64 = i64::MAX;

fn origin() -> Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    Instant::from_std(*ORIGIN.get_or_init(std::time::Instant::now))
}

impl AtomicInstant {
    pub(crate) const fn none() -> Self {
        Self(AtomicI64::new(NONE))
    }

    /// `None` clears it; `Some(Limit::Never)` is a limit never reached.
    pub(crate) fn store(&self, at: Option<Limit>) {
        let raw = match at {
            None => NONE,
            Some(Limit::Never) => NEVER,
            Some(Limit::At(at)) => {
                let origin = origin();
                let clamp = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(NEVER - 1);
                if at >= origin {
                    clamp(at - origin)
                } else {
                    // At least NONE + 1: one instant further back than ±292
                    // years is as past as any.
                    clamp(origin - at).saturating_neg().max(NONE + 1)
                }
            }
        };
        self.0.store(raw, Ordering::Release);
    }

    /// Whether `now` is before the instant stored (false when cleared).
    pub(crate) fn is_after(&self, now: Instant) -> bool {
        self.until(now).is_some()
    }

    /// How long from `now` until the instant stored, if it is still ahead
    /// (`Duration::MAX` for one never reached).
    pub(crate) fn until(&self, now: Instant) -> Option<Duration> {
        let raw = self.0.load(Ordering::Acquire);
        let at = match raw {
            NONE => return None,
            NEVER => return Some(Duration::MAX),
            raw if raw >= 0 => origin().checked_add(Duration::from_nanos(raw.unsigned_abs())),
            raw => origin().checked_sub(Duration::from_nanos(raw.unsigned_abs())),
        };
        match at {
            Some(at) => (now < at).then(|| at - now),
            // An offset the platform's instant cannot hold lies beyond every
            // `now` in its direction.
            None => (raw > 0).then_some(Duration::MAX),
        }
    }
}

/// A point in time that may never come.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    At(Instant),
    Never,
}

impl Limit {
    /// `from + after`, or `Never` past what an instant can hold.
    pub(crate) fn after(from: Instant, after: Duration) -> Self {
        from.checked_add(after).map_or(Limit::Never, Limit::At)
    }

    pub(crate) fn instant(self) -> Option<Instant> {
        match self {
            Limit::At(at) => Some(at),
            Limit::Never => None,
        }
    }

    /// The earlier of the two.
    pub(crate) fn min(self, other: Self) -> Self {
        match (self, other) {
            (Limit::At(a), Limit::At(b)) => Limit::At(a.min(b)),
            (Limit::At(at), Limit::Never) | (Limit::Never, Limit::At(at)) => Limit::At(at),
            (Limit::Never, Limit::Never) => Limit::Never,
        }
    }

    /// Whether `now` is at or past it.
    pub(crate) fn reached(self, now: Instant) -> bool {
        match self {
            Limit::At(at) => now >= at,
            Limit::Never => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_coarse_clock_is_monotonic_and_close_to_std() {
        let a = coarse_now();
        let std_before = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = coarse_now();
        assert!(b >= a);
        let elapsed = std_before.elapsed();
        let coarse = Duration::from_nanos(b - a);
        let slack = coarse_slack();
        assert!(coarse + slack >= Duration::from_millis(20), "{coarse:?}");
        assert!(coarse <= elapsed + slack, "{coarse:?} {elapsed:?}");
    }

    /// The coarse clock is never ahead of the fine one, and lags it by less
    /// than the slack: what makes a coarse deadline never late.
    #[test]
    fn the_coarse_clock_lags_the_fine_one_by_less_than_the_slack() {
        let slack = u64::try_from(coarse_slack().as_nanos()).unwrap();
        let mut worst = 0;
        for _ in 0..200_000 {
            let before = imp::fine_now();
            let coarse = coarse_now();
            let after = imp::fine_now();
            assert!(coarse <= after, "coarse ahead by {} ns", coarse - after);
            worst = worst.max(before.saturating_sub(coarse));
        }
        assert!(worst < slack, "lag {worst} ns, slack {slack} ns");
    }

    #[test]
    fn a_deadline_is_early_by_the_slack_and_never_late() {
        let remaining = Duration::from_millis(500);
        let before = imp::fine_now();
        let deadline = coarse_deadline(remaining);
        let after = imp::fine_now();
        let remaining = u64::try_from(remaining.as_nanos()).unwrap();
        let slack = u64::try_from(coarse_slack().as_nanos()).unwrap();
        // the coarse reading it started from was at most `after`
        assert!(deadline <= after + remaining - slack);
        // and at least `before` less a lag within the slack
        assert!(deadline + 2 * slack >= before + remaining);
        assert_eq!(coarse_deadline(Duration::MAX), u64::MAX);
        assert!(coarse_now() >= coarse_deadline(Duration::ZERO));
    }

    #[test]
    fn atomic_instants_keep_both_sides_of_the_origin() {
        let slot = AtomicInstant::none();
        let now = Instant::now();
        assert!(!slot.is_after(now));
        // far ahead (a paused clock that slept an hour) and behind
        for at in [
            now + Duration::from_secs(3600),
            now,
            now + Duration::from_millis(10),
        ] {
            slot.store(Some(Limit::At(at)));
            assert!(slot.is_after(at - Duration::from_nanos(1)));
            assert!(!slot.is_after(at));
        }
        let origin = origin();
        if let Some(before) = origin.checked_sub(Duration::from_secs(5)) {
            slot.store(Some(Limit::At(before)));
            assert!(slot.is_after(before - Duration::from_nanos(1)));
            assert!(!slot.is_after(before));
        }
        slot.store(Some(Limit::Never));
        assert!(slot.is_after(now + Duration::from_secs(1 << 40)));
        slot.store(None);
        assert!(!slot.is_after(now));
    }

    #[test]
    fn limits_saturate_to_never() {
        let now = Instant::now();
        assert_eq!(Limit::after(now, Duration::MAX), Limit::Never);
        assert!(!Limit::Never.reached(now));
        assert!(Limit::after(now, Duration::ZERO).reached(now));
    }

    /// What `retry_at` of a `BackingOff` error reports: the instant of a
    /// limit, and none for one never reached.
    #[test]
    fn a_limit_gives_its_instant_and_never_none() {
        let now = Instant::now();
        let later = now + Duration::from_secs(30);
        assert_eq!(
            Limit::after(now, Duration::from_secs(30)).instant(),
            Some(later)
        );
        assert_eq!(Limit::At(now).instant(), Some(now));
        assert_eq!(Limit::Never.instant(), None);
        assert_eq!(Limit::after(now, Duration::MAX).instant(), None);
    }

    /// Beyond about 292 years from the origin the nanoseconds no longer fit:
    /// a far future is kept as the furthest instant storable (ahead of any
    /// nearer `now`, but not "never"), a far past as the furthest back.
    #[test]
    fn atomic_instants_clamp_beyond_292_years() {
        const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
        let slot = AtomicInstant::none();
        let now = Instant::now();

        let Some(far) = origin().checked_add(YEAR * 300) else {
            return;
        };
        slot.store(Some(Limit::At(far)));
        assert!(slot.is_after(now));
        let until = slot.until(now).expect("ahead");
        assert!(until < Duration::MAX, "a far instant read as never");
        assert!(until > YEAR * 290, "{until:?}");

        slot.store(Some(Limit::after(now, Duration::MAX)));
        assert_eq!(slot.until(now), Some(Duration::MAX));

        if let Some(past) = origin().checked_sub(YEAR * 300) {
            slot.store(Some(Limit::At(past)));
            assert!(!slot.is_after(now));
            assert_eq!(slot.until(now), None);
            // clamped to about 292 years back, not cleared: a `now` as far
            // back as the instant itself is before it
            assert!(slot.is_after(past));
        }
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::cache::timing::tests::properties::duration;

        /// The widest offset from the origin that an `AtomicInstant` keeps
        /// exactly: about 292 years either way.
        const KEPT: Duration = Duration::from_nanos(i64::MAX as u64 - 1);

        fn around_origin() -> impl Strategy<Value = Option<Instant>> {
            (duration(), any::<bool>()).prop_map(|(offset, before)| {
                let offset = offset.min(KEPT);
                match before {
                    true => origin().checked_sub(offset),
                    false => origin().checked_add(offset),
                }
            })
        }

        proptest! {
            // Pure arithmetic: cheap enough for many more cases than the default.
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn a_limit_is_reached_exactly_at_its_instant(after in duration(), probe in duration()) {
                let from = Instant::now();
                match Limit::after(from, after) {
                    Limit::Never => prop_assert!(from.checked_add(after).is_none()),
                    Limit::At(at) => {
                        prop_assert_eq!(Some(at), from.checked_add(after));
                        prop_assert!(Limit::At(at).reached(at));
                        if let Some(before) = at.checked_sub(probe.max(Duration::from_nanos(1))) {
                            prop_assert!(!Limit::At(at).reached(before));
                        }
                    }
                }
            }


            #[test]
            fn an_atomic_instant_keeps_the_order_of_instants(
                at in around_origin(),
                now in around_origin(),
            ) {
                // An instant the platform cannot hold is never stored.
                let (Some(at), Some(now)) = (at, now) else { return Ok(()) };
                let slot = AtomicInstant::none();
                slot.store(Some(Limit::At(at)));
                prop_assert_eq!(slot.is_after(now), now < at);
                prop_assert_eq!(slot.until(now), (now < at).then(|| at - now));
                slot.store(Some(Limit::Never));
                prop_assert!(slot.is_after(now));
                slot.store(None);
                prop_assert!(!slot.is_after(now));
            }

            #[test]
            fn a_coarse_deadline_is_never_late_and_saturates(remaining in duration()) {
                let nanos = u64::try_from(remaining.as_nanos()).unwrap_or(u64::MAX);
                let slack = u64::try_from(coarse_slack().as_nanos()).unwrap();
                let before = coarse_now();
                let deadline = coarse_deadline(remaining);
                let after = coarse_now();
                match (before.checked_add(nanos), after.checked_add(nanos)) {
                    (None, _) => prop_assert_eq!(deadline, Coarse::MAX),
                    (Some(_), Some(latest)) if deadline != Coarse::MAX => {
                        prop_assert!(deadline <= latest.saturating_sub(slack));
                        prop_assert!(deadline >= (before + nanos).saturating_sub(slack));
                    }
                    _ => {}
                }
            }
        }
    }
}
