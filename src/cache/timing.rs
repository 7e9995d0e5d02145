//! When a token comes due, when it counts as expired, and how long to back
//! off after a failure.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

use crate::RetryHint;

/// The cache's clock settings. See the defaults on [`TokenCache`](crate::TokenCache).
#[derive(Clone, Debug)]
pub(crate) struct Timing {
    pub(crate) refresh_before: Duration,
    pub(crate) expiry_margin: Duration,
    pub(crate) jitter: Duration,
    pub(crate) fetch_timeout: Duration,
    pub(crate) backoff_base: Duration,
    pub(crate) backoff_cap: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            refresh_before: Duration::from_secs(5 * 60),
            expiry_margin: Duration::from_secs(10),
            jitter: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(30),
        }
    }
}

/// The two instants that matter for a token with an expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// From here on the token is still served, and one refresh starts.
    pub(crate) due_at: Instant,
    /// From here on the token is no longer served.
    pub(crate) expires_at: Instant,
}

impl Timing {
    /// The schedule of a token fetched from `started` that expires at
    /// `expiry`, give or take `granularity` (see [`Token::expires_in_secs`]).
    ///
    /// - expired: `expiry_margin` before `expiry`, but at most 10% of the
    ///   lifetime early, and `granularity` earlier still;
    /// - due: `refresh_before` before `expiry`, minus a random jitter of at
    ///   most `jitter` and 5% of the lifetime, never before half the lifetime
    ///   and never after the expiry point.
    ///
    /// Total over every input: an instant that would fall outside tokio's
    /// clock is clamped to `started` or `expiry`.
    ///
    /// [`Token::expires_in_secs`]: crate::Token::expires_in_secs
    pub(crate) fn schedule(
        &self,
        started: Instant,
        expiry: Instant,
        granularity: Duration,
        rng: &mut Rng,
    ) -> Schedule {
        self.schedule_drawn(started, expiry, granularity, |max| rng.below(max))
    }

    /// The earliest due point [`schedule`](Self::schedule) can draw: a token
    /// fresh by it is fresh whatever the jitter.
    #[cfg(feature = "store")]
    pub(crate) fn earliest_due(
        &self,
        started: Instant,
        expiry: Instant,
        granularity: Duration,
    ) -> Instant {
        self.schedule_drawn(started, expiry, granularity, |max| max)
            .due_at
    }

    fn schedule_drawn(
        &self,
        started: Instant,
        expiry: Instant,
        granularity: Duration,
        draw: impl FnOnce(Duration) -> Duration,
    ) -> Schedule {
        let lifetime = expiry.saturating_duration_since(started);
        let half = started.checked_add(lifetime / 2).unwrap_or(expiry);
        // The granularity is what the issuer's rounding may already have
        // taken; the margin is for the request itself, on top of it.
        let margin = self
            .expiry_margin
            .min(lifetime / 10)
            .saturating_add(granularity);
        let expires_at = expiry
            .checked_sub(margin)
            .map_or(started, |at| at.max(started))
            .min(expiry);
        let due_at = expiry
            .checked_sub(self.refresh_before)
            .unwrap_or(half)
            .max(half);
        let jitter = draw(self.jitter.min(lifetime / 20));
        let due_at = due_at
            .checked_sub(jitter)
            .unwrap_or(half)
            .max(half)
            .min(expires_at);
        Schedule { due_at, expires_at }
    }

    /// How long to wait after the `failures`-th failure in a row (from 1):
    /// random in `[d/2, d]`, with `d = min(cap, base * 2^(failures - 1))`.
    pub(crate) fn backoff(&self, failures: u32, rng: &mut Rng) -> Duration {
        // In nanoseconds: a factor of at most `u32::MAX` stopped the
        // doubling after 32 failures when the cap is far above the base.
        let base = self.backoff_base.as_nanos();
        let doubled = match 1u128.checked_shl(failures.saturating_sub(1)) {
            _ if base == 0 => Some(0),
            Some(factor) => base.checked_mul(factor),
            None => None,
        };
        let ceiling = match doubled {
            Some(nanos) if nanos < self.backoff_cap.as_nanos() => from_nanos(nanos),
            _ => self.backoff_cap,
        };
        ceiling / 2 + rng.below(ceiling - ceiling / 2)
    }
}

/// `Duration::from_nanos_u128` (Rust 1.93) for our MSRV; `nanos` is below a
/// `Duration`'s nanoseconds, so its seconds fit a `u64`.
fn from_nanos(nanos: u128) -> Duration {
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    let secs = u64::try_from(nanos / NANOS_PER_SEC).unwrap_or(u64::MAX);
    // Below 10^9, so the cast is exact.
    Duration::new(secs, (nanos % NANOS_PER_SEC) as u32)
}

impl Timing {
    /// How long to wait after the `failures`-th failure in a row, given what
    /// the source said about it: the backoff, at least a `NotBefore` hint
    /// (itself capped at [`RetryHint::MAX_NOT_BEFORE`]), or the whole cap for
    /// a permanent failure.
    pub(crate) fn delay(&self, failures: u32, hint: RetryHint, rng: &mut Rng) -> Duration {
        match hint {
            RetryHint::Permanent => self.backoff_cap,
            RetryHint::NotBefore(at_least) => self
                .backoff(failures, rng)
                .max(at_least.min(RetryHint::MAX_NOT_BEFORE)),
            RetryHint::Backoff => self.backoff(failures, rng),
        }
    }
}

/// The longest pause after rejections, unless the backoff cap is longer.
pub(crate) const REJECTION_CAP: Duration = Duration::from_secs(60 * 60);

impl Timing {
    /// How long to wait before the next fetch after the `rejections`-th
    /// rejection in a row (from 2; the first is not paced) of a token soon
    /// after its fetch: random in `[d, 2d]`, `d = base * 2^(rejections - 1)`,
    /// up to an hour (or the backoff cap, if longer). Never less than `d`,
    /// so that the `n`-th fetch of a run comes at least `2^(n-1) - 2` bases
    /// after the first: at most `log2(T / base) + 2` fetches in `T >= base`.
    pub(crate) fn rejection_delay(&self, rejections: u32, rng: &mut Rng) -> Duration {
        let doubling = Timing {
            backoff_cap: self.backoff_cap.max(REJECTION_CAP),
            ..self.clone()
        };
        // `backoff(n + 1)` is random in `[d, 2d]` for `d = base * 2^(n-1)`.
        doubling.backoff(rejections.saturating_add(1), rng)
    }
}

/// A small xorshift generator for jitter; no need for a cryptographic one,
/// only for fleets that do not move in lockstep.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Default for Rng {
    fn default() -> Self {
        Self::new()
    }
}

impl Rng {
    /// Seeded from std's per-process random hash keys.
    pub(crate) fn new() -> Self {
        let seed = RandomState::new().build_hasher().finish();
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A random duration in `[0, max]`.
    pub(crate) fn below(&mut self, max: Duration) -> Duration {
        let max = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        let scaled = (u128::from(self.next()) * (u128::from(max) + 1)) >> 64;
        Duration::from_nanos(scaled as u64)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const SECS: fn(u64) -> Duration = Duration::from_secs;

    fn schedule_of(lifetime: Duration) -> (Duration, Duration) {
        let started = Instant::now();
        let s = Timing::default().schedule(
            started,
            started + lifetime,
            Duration::ZERO,
            &mut Rng::new(),
        );
        (s.due_at - started, s.expires_at - started)
    }

    #[test]
    fn one_hour_token_uses_the_fixed_margins() {
        for _ in 0..100 {
            let (due, expired) = schedule_of(SECS(3600));
            assert_eq!(expired, SECS(3590));
            // 5 minutes early, plus at most 30 s of jitter
            assert!(due <= SECS(3300) && due >= SECS(3270), "{due:?}");
        }
    }

    #[test]
    fn short_token_is_capped_by_its_lifetime() {
        for _ in 0..100 {
            // 5 s: expired 10% early, due at half the lifetime
            let (due, expired) = schedule_of(SECS(5));
            assert_eq!(expired, Duration::from_millis(4500));
            assert_eq!(due, Duration::from_millis(2500));
        }
    }

    #[test]
    fn jitter_stays_within_five_percent_and_half_the_lifetime() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            // 10 min: due at 5 min (half the lifetime bound), jitter can't go earlier
            let (due, _) = schedule_of(SECS(600));
            assert_eq!(due, SECS(300));
            // 20 min: due at 15 min minus up to min(30 s, 60 s) of jitter
            let (due, _) = schedule_of(SECS(1200));
            assert!(due <= SECS(900) && due >= SECS(870), "{due:?}");
            seen.insert(due);
        }
        assert!(seen.len() > 100, "jitter should spread the refresh point");
    }

    #[test]
    fn already_expired_token_has_an_empty_schedule() {
        let started = Instant::now();
        let s = Timing::default().schedule(started, started, Duration::ZERO, &mut Rng::new());
        assert_eq!(s.due_at, started);
        assert_eq!(s.expires_at, started);
    }

    #[test]
    fn backoff_doubles_within_jitter_bounds_up_to_the_cap() {
        let timing = Timing::default();
        let mut rng = Rng::new();
        for (failures, ceiling) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 16), (6, 30), (60, 30)] {
            for _ in 0..50 {
                let delay = timing.backoff(failures, &mut rng);
                let ceiling = SECS(ceiling);
                assert!(
                    delay >= ceiling / 2 && delay <= ceiling,
                    "{failures}: {delay:?}"
                );
            }
        }
    }

    /// `min(cap, base * 2^(failures - 1))`, by doubling until the cap.
    fn ceiling(timing: &Timing, failures: u32) -> Duration {
        let mut d = timing.backoff_base;
        for _ in 1..failures {
            if d >= timing.backoff_cap || d.is_zero() {
                break;
            }
            d = d.saturating_mul(2);
        }
        d.min(timing.backoff_cap)
    }

    #[test]
    fn backoff_keeps_doubling_past_32_failures() {
        let timing = Timing {
            backoff_base: Duration::from_nanos(1),
            backoff_cap: Duration::MAX,
            ..Timing::default()
        };
        let delay = timing.backoff(40, &mut Rng::new());
        assert!(delay >= Duration::from_nanos(1 << 38), "{delay:?}");
    }

    #[test]
    fn random_below_covers_the_range() {
        let mut rng = Rng::new();
        let max = Duration::from_millis(10);
        let draws: Vec<_> = (0..1000).map(|_| rng.below(max)).collect();
        assert!(draws.iter().all(|d| *d <= max));
        assert!(draws.iter().any(|d| *d < max / 4));
        assert!(draws.iter().any(|d| *d > max * 3 / 4));
        assert_eq!(rng.below(Duration::ZERO), Duration::ZERO);
    }

    /// A fleet of caches, each seeded as a cache seeds its generator and
    /// drawing again from it at every refresh: the refresh points stay
    /// spread at every round. A generator that converges (a `|=` for a `^=`
    /// in `next`) would line the fleet up after a few refreshes, the herd
    /// that jitter exists to prevent.
    #[test]
    fn a_fleet_drawing_from_one_generator_each_stays_spread() {
        const CACHES: usize = 64;
        const REFRESHES: usize = 50;
        let timing = Timing::default();
        let started = Instant::now();
        let expiry = started + SECS(3600);
        // due 5 minutes early, minus up to 30 s of jitter
        let (earliest, latest) = (SECS(3270), SECS(3300));
        let mut fleet: Vec<Rng> = (0..CACHES).map(|_| Rng::new()).collect();
        let mut per_cache = vec![std::collections::BTreeSet::new(); CACHES];
        let mut sum = 0.0;
        for round in 0..REFRESHES {
            let dues: Vec<Duration> = fleet
                .iter_mut()
                .map(|rng| timing.schedule(started, expiry, Duration::ZERO, rng).due_at - started)
                .collect();
            let distinct: std::collections::BTreeSet<_> = dues.iter().collect();
            assert!(distinct.len() >= CACHES - 4, "round {round}: {dues:?}");
            let span = latest - earliest;
            let low = dues.iter().filter(|d| **d < earliest + span / 4).count();
            let high = dues.iter().filter(|d| **d > latest - span / 4).count();
            assert!(low > 0 && high > 0, "round {round}: bunched {dues:?}");
            for (seen, due) in per_cache.iter_mut().zip(dues) {
                assert!(due >= earliest && due <= latest, "{due:?}");
                sum += (latest - due).as_secs_f64() / span.as_secs_f64();
                seen.insert(due);
            }
        }
        // Centred in the window, not leaning to one end: a uniform mean of
        // 3200 draws is 0.5 within 0.03 (six standard deviations), and a
        // generator that only ORs bits in leans late (0.56 or more).
        let mean = sum / (CACHES * REFRESHES) as f64;
        assert!((mean - 0.5).abs() < 0.03, "mean jitter {mean}");
        for seen in per_cache {
            assert!(
                seen.len() >= REFRESHES - 2,
                "one cache repeats itself: {seen:?}"
            );
        }

        // Over a jitter of a few nanoseconds the fleet lands on every point,
        // both ends included: `below(max)` reaches `max`.
        let tiny = Timing {
            jitter: Duration::from_nanos(7),
            ..Timing::default()
        };
        let mut seen = std::collections::BTreeSet::new();
        for rng in &mut fleet {
            for _ in 0..REFRESHES {
                let due = tiny.schedule(started, expiry, Duration::ZERO, rng).due_at;
                seen.insert(SECS(3300) - (due - started));
            }
        }
        let every: std::collections::BTreeSet<_> = (0..=7).map(Duration::from_nanos).collect();
        assert_eq!(seen, every);
    }

    pub(crate) mod properties {
        use proptest::prelude::*;

        use super::super::Rng;
        use super::super::*;
        use super::ceiling;

        /// Every duration, biased towards the edges: zero, one nanosecond,
        /// whole seconds, `u64::MAX` seconds and `Duration::MAX`.
        pub(crate) fn duration() -> impl Strategy<Value = Duration> {
            prop_oneof![
                Just(Duration::ZERO),
                Just(Duration::from_nanos(1)),
                Just(Duration::from_secs(u64::MAX)),
                Just(Duration::MAX),
                (0u64..100_000).prop_map(Duration::from_secs),
                any::<u64>().prop_map(Duration::from_secs),
                any::<u64>().prop_map(Duration::from_nanos),
                (any::<u64>(), 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            ]
        }

        fn failures() -> impl Strategy<Value = u32> {
            prop_oneof![
                Just(0u32),
                Just(1),
                Just(32),
                Just(33),
                Just(u32::MAX),
                1u32..80,
                any::<u32>(),
            ]
        }

        fn hint() -> impl Strategy<Value = RetryHint> {
            prop_oneof![
                Just(RetryHint::Backoff),
                Just(RetryHint::Permanent),
                duration().prop_map(RetryHint::NotBefore),
            ]
        }

        fn timing() -> impl Strategy<Value = Timing> {
            (
                duration(),
                duration(),
                duration(),
                duration(),
                duration(),
                duration(),
            )
                .prop_map(|(a, b, c, d, e, f)| Timing {
                    refresh_before: a,
                    expiry_margin: b,
                    jitter: c,
                    fetch_timeout: d,
                    backoff_base: e,
                    backoff_cap: f,
                })
        }

        fn rng() -> impl Strategy<Value = Rng> {
            any::<u64>().prop_map(|seed| Rng(seed | 1))
        }

        proptest! {
            // Pure arithmetic: cheap enough for many more cases than the default.
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn a_schedule_is_ordered_for_every_lifetime(
                timing in timing(),
                lifetime in duration(),
                past in any::<bool>(),
                granularity in prop_oneof![Just(Duration::ZERO), Just(Duration::from_secs(1)), duration()],
                mut rng in rng(),
            ) {
                let started = Instant::now();
                // An expiry beyond tokio's clock never expires and has no schedule.
                let expiry = if past { started.checked_sub(lifetime) } else { started.checked_add(lifetime) };
                let Some(expiry) = expiry else { return Ok(()) };
                let s = timing.schedule(started, expiry, granularity, &mut rng);

                prop_assert!(s.due_at <= s.expires_at);
                prop_assert!(s.expires_at <= expiry);
                let lifetime = expiry.saturating_duration_since(started);
                if lifetime > granularity {
                    prop_assert!(s.expires_at >= started, "served before it was fetched");
                    // due no earlier than half the lifetime, unless the
                    // margin (a granularity over half of it) expires it first
                    prop_assert!(s.due_at >= (started + lifetime / 2).min(s.expires_at));
                } else {
                    prop_assert!(s.expires_at <= started, "not immediately expired");
                }
                // the margin comes on top of the lifetime's granularity: the
                // token is served until then, or never
                let margin = timing.expiry_margin.min(lifetime / 10).saturating_add(granularity);
                match expiry.checked_sub(margin) {
                    Some(latest) if latest >= started => prop_assert!(s.expires_at <= latest),
                    _ => prop_assert!(s.expires_at <= started, "served after its margin"),
                }
            }

            #[test]
            fn a_backoff_is_within_half_and_all_of_its_ceiling(
                timing in timing(),
                failures in failures(),
                mut rng in rng(),
            ) {
                let d = ceiling(&timing, failures);
                let delay = timing.backoff(failures, &mut rng);
                prop_assert!(delay >= d / 2 && delay <= d, "{delay:?} outside [{:?}, {d:?}]", d / 2);
            }

            #[test]
            fn a_delay_honours_the_hint(
                timing in timing(),
                failures in failures(),
                hint in hint(),
                mut rng in rng(),
            ) {
                let d = ceiling(&timing, failures);
                let delay = timing.delay(failures, hint, &mut rng);
                match hint {
                    RetryHint::Permanent => prop_assert_eq!(delay, timing.backoff_cap),
                    RetryHint::NotBefore(at_least) => {
                        prop_assert!(delay >= at_least.min(RetryHint::MAX_NOT_BEFORE));
                        prop_assert!(delay >= d / 2);
                        prop_assert!(delay <= d.max(RetryHint::MAX_NOT_BEFORE));
                    }
                    _ => prop_assert!(delay >= d / 2 && delay <= d),
                }
            }

            #[test]
            fn random_below_stays_below(max in duration(), mut rng in rng()) {
                prop_assert!(rng.below(max) <= max);
            }
        }
    }
}
