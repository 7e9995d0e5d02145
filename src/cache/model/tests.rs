//! The model check of the refresh state machine: the real cache, driven from
//! two or three threads under shuttle. Every scenario checks:
//!
//! - at most one fetch in flight, counted by the token source itself from
//!   the start of a fetch to its end or drop;
//! - every request completes (shuttle fails a run that deadlocks);
//! - no request is served a token past its expiry point at the time of
//!   its call;
//! - a 401 evicts only the token it rejected.
//!
//! Run with `RUSTFLAGS="--cfg shuttle" cargo test --release --lib model_`
//! (see `docs/model-check.md`).

use std::future::Future;
use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use shuttle::future::block_on;
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use shuttle::{thread, Config, Runner};

use super::{advance, join_all, now, reset, serial, shut_down, shutting_down};
use crate::cache::{Entry, Phase, TokenCache};
use crate::{Token, TokenError, TokenErrorKind};

/// Schedules tried per scheduler and scenario: a bound on the run's time,
/// not a proof of exhaustion (shuttle samples schedules).
const ITERATIONS: usize = 50_000;
/// PCT's bound on preemptions that matter: enough for the races below,
/// each of which needs two or three ordered steps.
const DEPTH: usize = 3;

/// Runs `scenario` under a PCT and a random scheduler, each seeded, so a run
/// is the same every time and a failure prints a schedule to replay.
fn check(scenario: fn()) {
    let _serial = serial();
    let run = move || {
        reset();
        scenario();
        join_all();
    };
    Runner::new(
        PctScheduler::new_from_seed(0x5eed, DEPTH, ITERATIONS),
        Config::new(),
    )
    .run(run);
    Runner::new(
        RandomScheduler::new_from_seed(0x5eed, ITERATIONS),
        Config::new(),
    )
    .run(run);
}

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// What the token source saw.
#[derive(Default)]
struct Probe {
    fetches: AtomicUsize,
    live: AtomicUsize,
    /// A fetch returns once this is set.
    open: AtomicBool,
}

/// A fetch in flight, from its start to its end or drop.
struct Live(Arc<Probe>);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

type Plan = fn(usize) -> Result<Token, io::Error>;

/// A 10 s token: due at 5 s, expired at 9 s (without jitter).
fn ten_seconds(n: usize) -> Result<Token, io::Error> {
    Ok(Token::new(format!("t{n}")).expires_in(SECS(10)))
}

fn first_fails(n: usize) -> Result<Token, io::Error> {
    match n {
        0 => Err(io::Error::other("down")),
        n => ten_seconds(n),
    }
}

/// A cache of tokens from `plan`, whose fetches wait for `probe.open`.
fn cache(probe: &Arc<Probe>, plan: Plan) -> TokenCache {
    let probe = Arc::clone(probe);
    TokenCache::new(move || {
        let probe = Arc::clone(&probe);
        async move {
            let n = probe.fetches.fetch_add(1, Ordering::SeqCst);
            let before = probe.live.fetch_add(1, Ordering::SeqCst);
            assert_eq!(before, 0, "two fetches in flight");
            let _live = Live(Arc::clone(&probe));
            // In flight: let everyone else act.
            shuttle::future::yield_now().await;
            while !probe.open.load(Ordering::SeqCst) {
                shuttle::future::yield_now().await;
            }
            plan(n)
        }
    })
    .refresh_jitter(Duration::ZERO)
}

fn opened(plan: Plan) -> (Arc<Probe>, TokenCache) {
    let probe = Arc::new(Probe::default());
    probe.open.store(true, Ordering::SeqCst);
    let cache = cache(&probe, plan);
    (probe, cache)
}

/// One request, as the middleware makes it. A token served must not be
/// past its expiry point at the time of the call.
fn request(cache: &TokenCache) -> Result<Arc<Entry>, TokenError> {
    let called = now();
    let outcome = block_on(cache.entry());
    if let Ok(entry) = &outcome {
        assert_ne!(entry.generation, 0, "served the empty entry");
        let expires_at = entry.expires_at().expect("model tokens expire");
        assert!(called < expires_at, "served a token past its expiry");
    }
    outcome
}

fn token(cache: &TokenCache) -> Arc<Entry> {
    request(cache).expect("a token")
}

fn kind(outcome: &Result<Arc<Entry>, TokenError>) -> Option<TokenErrorKind> {
    outcome.as_ref().err().map(TokenError::kind)
}

fn spawn<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> thread::JoinHandle<T> {
    thread::spawn(f)
}

fn current(cache: &TokenCache) -> Arc<Entry> {
    cache.shared().current.load_full()
}

/// Two cold requests share one fetch, and a third that gives up while it
/// waits changes nothing for them.
#[test]
fn model_cold_requests_share_one_fetch() {
    check(|| {
        let (probe, cache) = opened(ten_seconds);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let cache = cache.clone();
                spawn(move || token(&cache).generation)
            })
            .collect();
        {
            let request = pin!(cache.entry());
            let _ = request.poll(&mut Context::from_waker(Waker::noop()));
        }
        let generations: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        assert_eq!(generations[0], generations[1], "one outcome for all");
        join_all();
        assert_eq!(probe.fetches.load(Ordering::SeqCst), 1);
        assert_eq!(cache.stats().fetches, 1);
    });
}

/// A 401 of the old token races the refresh that replaces it: it never
/// evicts the successor, and a request after it never gets the old token.
#[test]
fn model_a_401_races_the_refresh_that_replaces_the_token() {
    check(|| {
        let (probe, cache) = opened(ten_seconds);
        let old = token(&cache).generation;
        // Due; the refresh waits for the 401, so that the two race closely.
        advance(SECS(6));
        probe.open.store(false, Ordering::SeqCst);
        let refresh = spawn({
            let cache = cache.clone();
            move || {
                token(&cache);
                token(&cache);
            }
        });
        let rejected = spawn({
            let cache = cache.clone();
            let probe = Arc::clone(&probe);
            move || {
                probe.open.store(true, Ordering::SeqCst);
                thread::yield_now();
                cache.shared().unauthorized(old);
                assert_ne!(token(&cache).generation, old, "served an evicted token");
            }
        });
        refresh.join().unwrap();
        rejected.join().unwrap();
        join_all();
        let current = current(&cache);
        assert_ne!(current.generation, old);
        assert_eq!(
            current.phase(now()),
            Phase::Fresh,
            "the successor was evicted"
        );
        // An evicted successor would have cost a third fetch.
        assert!(
            probe.fetches.load(Ordering::SeqCst) <= 2,
            "the successor was evicted"
        );
    });
}

/// Requests race a clock that passes the due point (and the timer that
/// marks the token stale there) and then the expiry point: the token is
/// served until it expires and never after.
#[test]
fn model_a_due_refresh_races_expiry() {
    check(|| {
        let (probe, cache) = opened(ten_seconds);
        let first = token(&cache);
        let requests = spawn({
            let cache = cache.clone();
            move || {
                token(&cache);
                token(&cache);
            }
        });
        let clock = spawn({
            let first = Arc::clone(&first);
            move || {
                advance(SECS(6));
                // What the due-point timer's waker does, on the time driver.
                first.mark_stale();
                advance(Duration::from_millis(3500)); // expired at 9 s
            }
        });
        token(&cache);
        requests.join().unwrap();
        clock.join().unwrap();
        join_all();
        // The first token expired, and a refresh replaced it, once.
        assert_ne!(token(&cache).generation, first.generation);
        assert_eq!(probe.fetches.load(Ordering::SeqCst), 2);
    });
}

/// A fetch's deadline passes (seen by its waiter, and by its own timer)
/// while the fetch returns: it ends exactly once, and a late token is not
/// installed behind the waiters' backs.
#[test]
fn model_a_stalled_fetch_races_its_own_settle() {
    check(|| {
        let probe = Arc::new(Probe::default());
        let cache = cache(&probe, ten_seconds).fetch_timeout(SECS(1));
        let waiter = spawn({
            let cache = cache.clone();
            move || request(&cache)
        });
        let clock = spawn(|| advance(SECS(1)));
        shuttle::thread::yield_now();
        probe.open.store(true, Ordering::SeqCst);
        let outcome = waiter.join().unwrap();
        clock.join().unwrap();
        join_all();
        let current = current(&cache);
        match &outcome {
            Ok(entry) => assert_eq!(entry.generation, current.generation),
            // The deadline passed before the fetch's task began: it asked
            // the identity provider nothing, so it is replaced, not failed
            // (#20), and this waiter's own time is up.
            Err(error) if error.kind() == TokenErrorKind::Abandoned => {
                assert_eq!(probe.fetches.load(Ordering::SeqCst), 0);
                assert_eq!(cache.stats().failures, 0, "a fetch that never began failed");
                assert_eq!(current.generation, 0);
            }
            Err(error) => {
                assert_eq!(error.kind(), TokenErrorKind::Timeout);
                assert_eq!(current.generation, 0, "a stalled fetch installed its token");
                assert_eq!(cache.stats().failures, 1);
            }
        }
        // The fetch may have been ended before its task first ran.
        assert!(probe.fetches.load(Ordering::SeqCst) <= 1);
        assert_eq!(probe.live.load(Ordering::SeqCst), 0);
    });
}

/// The runtime of a fetch shuts down, before or while it runs, and a
/// request on a runtime that is shutting down cannot spawn one: the
/// waiters on a running runtime start a new fetch and get a token.
#[test]
fn model_an_abandoned_fetch_is_started_again() {
    check(|| {
        let (probe, cache) = opened(ten_seconds);
        let waiter = spawn({
            let cache = cache.clone();
            move || token(&cache).generation
        });
        let stopping = spawn({
            let cache = cache.clone();
            move || shutting_down(|| request(&cache))
        });
        shut_down();
        let generation = waiter.join().unwrap();
        let stopping = stopping.join().unwrap();
        assert!(matches!(
            kind(&stopping),
            None | Some(TokenErrorKind::Abandoned)
        ));
        join_all();
        assert_eq!(current(&cache).generation, generation);
        assert!(probe.fetches.load(Ordering::SeqCst) <= 2);
    });
}

/// A due refresh whose runtime drops it unpolled does not stall the due
/// window: a later request starts another.
#[test]
fn model_a_due_refresh_dropped_unpolled_is_started_again() {
    check(|| {
        let (_probe, cache) = opened(ten_seconds);
        let old = token(&cache).generation;
        advance(SECS(6)); // due
        let stopping = spawn({
            let cache = cache.clone();
            move || shutting_down(|| token(&cache))
        });
        let other = spawn({
            let cache = cache.clone();
            move || token(&cache)
        });
        stopping.join().unwrap();
        other.join().unwrap();
        join_all();
        token(&cache);
        join_all();
        assert_ne!(current(&cache).generation, old, "the due window stalled");
    });
}

/// A failed fetch is shared by its waiters and backs off: requests fail at
/// once without fetching until the backoff ends.
#[test]
fn model_a_failure_backs_off_without_fetching() {
    check(|| {
        let (probe, cache) = opened(first_fails);
        let cache = cache.backoff(SECS(1), SECS(2));
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let cache = cache.clone();
                spawn(move || kind(&request(&cache)))
            })
            .collect();
        for thread in threads {
            let kind = thread.join().unwrap();
            assert!(matches!(
                kind,
                Some(TokenErrorKind::Fetch | TokenErrorKind::BackingOff)
            ));
        }
        assert_eq!(kind(&request(&cache)), Some(TokenErrorKind::BackingOff));
        assert_eq!(
            probe.fetches.load(Ordering::SeqCst),
            1,
            "fetched while backing off"
        );
        advance(SECS(2));
        token(&cache);
        assert_eq!(probe.fetches.load(Ordering::SeqCst), 2);
        assert_eq!(cache.stats().failures, 1);
    });
}

/// Each request's token is rejected at once, from two threads (a resource
/// that rejects every token): the first rejection fetches again at once,
/// the second in a row starts a backoff, and within a backoff window at
/// most one fetch starts however the rejections and lookups interleave.
#[test]
fn model_rejections_fetch_at_most_once_per_backoff_window() {
    fn reject_all(cache: TokenCache) -> impl FnOnce() + Send + 'static {
        move || {
            for _ in 0..3 {
                match request(&cache) {
                    Ok(entry) => {
                        cache.shared().unauthorized(entry.generation);
                    }
                    Err(error) => assert_eq!(error.kind(), TokenErrorKind::Rejected),
                }
            }
        }
    }
    check(|| {
        let (probe, cache) = opened(ten_seconds);
        let cache = cache.backoff(SECS(1), SECS(30));
        let fetches = || probe.fetches.load(Ordering::SeqCst);
        let threads: Vec<_> = (0..2).map(|_| spawn(reject_all(cache.clone()))).collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        // The first rejection is free; the second paces for 2 to 4 s.
        assert_eq!(fetches(), 2, "fetched inside the first backoff window");
        assert_eq!(kind(&request(&cache)), Some(TokenErrorKind::Rejected));

        // One window later: one fetch for both threads, then 4 to 8 s more.
        advance(SECS(4));
        let threads: Vec<_> = (0..2).map(|_| spawn(reject_all(cache.clone()))).collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(fetches(), 3, "more than one fetch in a backoff window");
        advance(SECS(3));
        assert_eq!(kind(&request(&cache)), Some(TokenErrorKind::Rejected));
        assert_eq!(fetches(), 3);
    });
}
