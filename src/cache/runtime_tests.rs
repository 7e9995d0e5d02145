//! The scenarios of the core issue (#9), each as a new user drives tokio:
//! a `block_on` per request, runtimes that go idle, several runtimes sharing
//! one cache, the paused clock, and extreme inputs. Each failed on the
//! design before it.
//!
//! Real time that passes while no runtime runs its timers cannot be made
//! with tokio's API (a paused clock only moves inside `advance`, which runs
//! them), so these tests move the cache's clocks ahead on their thread with
//! [`skew::pass`] instead of sleeping.

use std::convert::Infallible;
use std::future::Future;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{Request, Response};
use tokio::runtime::{Builder, Runtime};
use tower::{service_fn, ServiceExt};

use super::clock::skew;
use crate::{BearerAuth, RetryHint, Token, TokenCache, TokenErrorKind, TokenSource};

const MS: Duration = Duration::from_millis(1);
const SECOND: Duration = Duration::from_secs(1);

/// What the next fetch of a [`Scripted`] source does.
#[derive(Clone, Copy, Debug)]
enum Next {
    /// `token-N`, expiring after this lifetime.
    Token(Duration),
    /// `token-N`, expiring `expires_in_secs` whole seconds.
    WholeSeconds(u64),
    /// Never answers.
    Hang,
    /// Fails, with this hint.
    Fail(RetryHint),
}

/// A token source whose next answer a test sets, counting its fetches.
#[derive(Clone)]
struct Scripted {
    fetches: Arc<AtomicUsize>,
    next: Arc<Mutex<Next>>,
}

#[derive(Debug)]
struct Failed(RetryHint);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "failed ({:?})", self.0)
    }
}

impl std::error::Error for Failed {}

impl Scripted {
    fn new(next: Next) -> Self {
        Self {
            fetches: Arc::default(),
            next: Arc::new(Mutex::new(next)),
        }
    }

    fn set(&self, next: Next) {
        *self.next.lock().unwrap() = next;
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn cache(&self) -> TokenCache {
        TokenCache::new(self.clone())
    }
}

impl TokenSource for Scripted {
    type Error = Failed;
    type Future = Pin<Box<dyn Future<Output = Result<Token, Failed>> + Send>>;

    fn fetch(&self) -> Self::Future {
        let n = self.fetches.fetch_add(1, Ordering::SeqCst) + 1;
        let next = *self.next.lock().unwrap();
        Box::pin(async move {
            let name = format!("token-{n}");
            match next {
                Next::Token(lifetime) => Ok(Token::new(name).expires_in(lifetime)),
                Next::WholeSeconds(secs) => Ok(Token::new(name).expires_in_secs(secs)),
                Next::Hang => std::future::pending().await,
                Next::Fail(hint) => Err(Failed(hint)),
            }
        })
    }

    fn retry_hint(error: &Failed) -> RetryHint {
        error.0
    }
}

type Echo = BearerAuth<tower::util::BoxCloneSyncService<Request<()>, Response<String>, Infallible>>;

/// The middleware over a service that answers with the header it got,
/// after one trip through the scheduler, as a real client's I/O would.
fn client(cache: &TokenCache) -> Echo {
    let echo = service_fn(|request: Request<()>| async move {
        let sent = request.headers().get(AUTHORIZATION);
        let sent = sent.map(|v| v.to_str().unwrap().to_owned());
        tokio::task::yield_now().await;
        Ok::<_, Infallible>(Response::new(sent.unwrap_or_default()))
    });
    BearerAuth::new(tower::util::BoxCloneSyncService::new(echo), cache.clone())
}

/// The token a request carried, or the kind of error it failed with.
async fn send(client: &Echo) -> Result<String, TokenErrorKind> {
    match client.clone().oneshot(Request::new(())).await {
        Ok(response) => Ok(response.into_body()),
        Err(error) => Err(error.downcast_ref::<crate::TokenError>().unwrap().kind()),
    }
}

fn current_thread() -> Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

fn paused() -> Runtime {
    Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Scenario 1: a sync facade keeps one current_thread runtime and calls
/// `block_on` once per request. `block_on` polls its future before the
/// runtime runs its timers, so a timer alone sent the expired token.
#[test]
fn a_block_on_per_request_never_sends_an_expired_token() {
    let script = Scripted::new(Next::Token(300 * MS));
    let cache = script.cache();
    let client = client(&cache);
    let runtime = current_thread();
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-1".into()));

    skew::pass(600 * MS); // idle: the token expired at 270 ms
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-2".into()));
    assert_eq!(script.fetches(), 2);
}

/// Scenario 1, the due window: the first request after the due point is
/// served and starts the one refresh, which the next `block_on` runs.
#[test]
fn a_block_on_per_request_starts_the_refresh_in_the_due_window() {
    let script = Scripted::new(Next::Token(10 * SECOND));
    let cache = script.cache();
    let client = client(&cache);
    let runtime = current_thread();
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-1".into()));

    skew::pass(6 * SECOND); // due at 5 s, expired at 9 s
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-1".into()));
    assert_eq!(
        cache.stats().fetches,
        2,
        "the due request started the refresh"
    );
    // The next `block_on` runs the refresh while its request is on the wire.
    runtime.block_on(send(&client)).unwrap();
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-2".into()));
    assert_eq!(script.fetches(), 2);
}

/// Scenario 2: the first token was fetched on a runtime that is never
/// driven again (its timer never fires); the application runs on another.
#[test]
fn a_token_fetched_on_an_idle_runtime_expires_on_time_elsewhere() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache();
    let client = client(&cache);
    let start_up = current_thread();
    assert_eq!(
        start_up.block_on(send(&client)),
        Ok("Bearer token-1".into())
    );

    let app = current_thread();
    skew::pass(5 * SECOND);
    assert_eq!(app.block_on(send(&client)), Ok("Bearer token-2".into()));
    assert_eq!(script.fetches(), 2);
}

/// Scenario 2, the due window: a refresh started on a runtime that then
/// goes idle is never run. The token still expires on time for the other
/// runtime, which replaces the stalled refresh once its deadline has passed.
#[test]
fn a_refresh_parked_on_an_idle_runtime_neither_serves_the_expired_token_nor_hangs() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache().fetch_timeout(500 * MS);
    let client = client(&cache);
    let app = current_thread();
    assert_eq!(app.block_on(send(&client)), Ok("Bearer token-1".into()));

    // Due at 1 s: served on a helper runtime, which starts the refresh and
    // is never driven again, so the refresh never ends (nor does its timer
    // fire).
    let helper = current_thread();
    skew::pass(1200 * MS);
    script.set(Next::Hang);
    assert_eq!(helper.block_on(send(&client)), Ok("Bearer token-1".into()));
    assert_eq!(script.fetches(), 2);
    script.set(Next::Token(2 * SECOND));

    // Expired at 1.8 s, and the parked refresh is past its 500 ms deadline:
    // it ends as a timeout (paced by the backoff like any other), and no
    // request carries the expired token.
    skew::pass(800 * MS);
    let error = app.block_on(send(&client)).unwrap_err();
    assert_eq!(error, TokenErrorKind::BackingOff);
    assert_eq!(cache.stats().failures, 1);

    // After the backoff (at most 1 s) the app's runtime fetches anew.
    skew::pass(SECOND);
    assert_eq!(app.block_on(send(&client)), Ok("Bearer token-3".into()));
    assert_eq!(script.fetches(), 3);
}

/// Scenario 3: a request on runtime A starts a fetch, gives up on its own
/// timeout, and A goes idle. Requests on runtime B waited on that fetch
/// forever; now none waits longer than the fetch timeout.
#[test]
fn no_waiter_outlives_the_fetch_timeout_of_a_fetch_parked_elsewhere() {
    let script = Scripted::new(Next::Hang);
    let cache = script.cache().fetch_timeout(500 * MS);
    let client = client(&cache);

    let a = paused();
    let gave_up = a.block_on(async { tokio::time::timeout(100 * MS, send(&client)).await });
    assert!(gave_up.is_err(), "the request gave up on its own timeout");
    assert_eq!(script.fetches(), 1);

    let b = paused();
    script.set(Next::Token(60 * SECOND));
    let (waited, result) = b.block_on(async {
        let started = tokio::time::Instant::now();
        let result = tokio::time::timeout(60 * SECOND, send(&client)).await;
        (started.elapsed(), result)
    });
    assert_eq!(
        result.expect("the waiter hung"),
        Err(TokenErrorKind::Timeout)
    );
    assert!(waited <= 500 * MS, "waited {waited:?}");
    assert_eq!(script.fetches(), 1, "still one fetch at a time");

    // The next fetch starts on B, the runtime of the request that needs it.
    let token = b.block_on(async {
        tokio::time::sleep(SECOND).await; // the backoff
        send(&client).await
    });
    assert_eq!(token, Ok("Bearer token-2".into()));
}

/// Scenario 3, after a 401: the token is evicted while its due refresh is
/// parked on an idle runtime; the requests that then wait on it are bounded
/// by its deadline.
#[test]
fn after_a_401_the_wait_on_a_parked_refresh_is_bounded() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache().fetch_timeout(500 * MS);
    let client = client(&cache);
    let b = paused();
    let token = b.block_on(cache.token()).unwrap();

    skew::pass(1200 * MS);
    script.set(Next::Hang);
    let helper = current_thread();
    assert_eq!(helper.block_on(send(&client)), Ok("Bearer token-1".into()));
    assert_eq!(script.fetches(), 2);
    assert!(cache.invalidate(&token), "as a 401 would");

    let result = b.block_on(async { tokio::time::timeout(60 * SECOND, send(&client)).await });
    assert_eq!(
        result.expect("the waiter hung"),
        Err(TokenErrorKind::Timeout)
    );
}

/// A fetch whose runtime shut down is replaced at once by a waiter on its
/// own runtime, within that waiter's fetch timeout.
#[test]
fn a_waiter_replaces_a_fetch_whose_runtime_is_gone() {
    let script = Scripted::new(Next::Hang);
    let cache = script.cache();
    let client = client(&cache);
    let doomed = current_thread();
    let gave_up = doomed.block_on(async { tokio::time::timeout(10 * MS, send(&client)).await });
    assert!(gave_up.is_err());

    let app = paused();
    script.set(Next::Token(60 * SECOND));
    let result = app.block_on(async {
        let waiting = tokio::spawn({
            let client = client.clone();
            async move { send(&client).await }
        });
        tokio::task::yield_now().await;
        // Shut down (on a thread of its own: not inside this runtime),
        // dropping the fetch it was running.
        std::thread::spawn(move || drop(doomed)).join().unwrap();
        waiting.await.unwrap()
    });
    assert_eq!(result, Ok("Bearer token-2".into()));
    assert_eq!(script.fetches(), 2);
    assert_eq!(cache.stats().failures, 0, "a fetch abandoned is no failure");
    // The request that gave up, and the one that asked again: two waits.
    assert_eq!(
        cache.stats().waits,
        2,
        "a waiter that asked again counted twice"
    );
}

/// Scenario 4: with tokio's paused clock, the request right after `advance`
/// sees the new time.
#[tokio::test(start_paused = true)]
async fn after_advance_the_next_request_sees_the_new_phase() {
    let script = Scripted::new(Next::Token(10 * SECOND));
    let cache = script.cache();
    let client = client(&cache);
    assert_eq!(send(&client).await, Ok("Bearer token-1".into()));

    // Into the due window: served, and the refresh starts with this request.
    tokio::time::advance(5 * SECOND).await;
    assert_eq!(send(&client).await, Ok("Bearer token-1".into()));
    assert_eq!(cache.stats().fetches, 2);
    tokio::task::yield_now().await;
    assert_eq!(send(&client).await, Ok("Bearer token-2".into()));

    // Past the expiry (10 s after 5 s, 1 s early): the request waits.
    tokio::time::advance(9 * SECOND).await;
    assert_eq!(send(&client).await, Ok("Bearer token-3".into()));
}

/// Scenario 4: one jump across both the due point and the expiry point.
#[tokio::test(start_paused = true)]
async fn one_advance_past_due_and_expiry_makes_the_next_request_wait() {
    let script = Scripted::new(Next::Token(10 * SECOND));
    let client = client(&script.cache());
    assert_eq!(send(&client).await, Ok("Bearer token-1".into()));
    tokio::time::advance(9 * SECOND).await;
    assert_eq!(send(&client).await, Ok("Bearer token-2".into()));
}

/// Scenario 4 through `TokenCache::token`, the path outside tower.
#[tokio::test(start_paused = true)]
async fn after_advance_token_sees_the_new_phase() {
    let script = Scripted::new(Next::Token(10 * SECOND));
    let cache = script.cache();
    assert_eq!(cache.token().await.unwrap().secret(), "token-1");
    tokio::time::advance(9 * SECOND).await;
    assert_eq!(cache.token().await.unwrap().secret(), "token-2");
}

/// Scenario 5: "never expires" spelled as the longest lifetimes.
#[test]
fn a_token_that_never_expires_is_served_without_a_panic() {
    for lifetime in [Duration::MAX, Duration::from_secs(u64::MAX)] {
        let script = Scripted::new(Next::Token(lifetime));
        let client = client(&script.cache());
        let runtime = paused();
        for _ in 0..3 {
            assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-1".into()));
            skew::pass(Duration::from_secs(3 * 365 * 24 * 3600));
            runtime.block_on(async {
                tokio::time::advance(Duration::from_secs(3 * 365 * 24 * 3600)).await;
            });
        }
        assert_eq!(script.fetches(), 1);
    }
    let script = Scripted::new(Next::WholeSeconds(u64::MAX));
    let client = client(&script.cache());
    let runtime = current_thread();
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-1".into()));
}

/// Scenario 6: a backoff with no cap, after a permanent failure or a huge
/// base, paces the source instead of overflowing (and fetching again on
/// every request).
#[tokio::test(start_paused = true)]
async fn a_backoff_with_no_cap_is_paced_without_a_panic() {
    for (base, hint) in [
        (SECOND, RetryHint::Permanent),
        (Duration::MAX, RetryHint::Backoff),
        (Duration::MAX, RetryHint::NotBefore(Duration::MAX)),
    ] {
        let script = Scripted::new(Next::Fail(hint));
        let cache = script.cache().backoff(base, Duration::MAX);
        let client = client(&cache);
        assert_eq!(send(&client).await, Err(TokenErrorKind::Fetch));
        for _ in 0..10 {
            assert_eq!(send(&client).await, Err(TokenErrorKind::BackingOff));
            tokio::time::advance(Duration::from_secs(3600)).await;
        }
        assert_eq!(script.fetches(), 1, "{base:?} {hint:?}");
        let error = cache.token().await.unwrap_err();
        if hint == RetryHint::Permanent || base == Duration::MAX {
            assert_eq!(error.retry_at(), None, "never");
        }
    }
}

/// Scenario 7: a cache first touched on a paused clock an hour ahead, then
/// used on a real clock with a 10 ms backoff: the backoff lasts 10 ms.
#[test]
fn a_backoff_is_measured_on_the_clock_of_its_failure() {
    let script = Scripted::new(Next::Token(60 * SECOND));
    let ahead = paused();
    let cache = ahead.block_on(async {
        tokio::time::advance(Duration::from_secs(3600)).await;
        let cache = script.cache().backoff(10 * MS, 10 * MS);
        cache.token().await.unwrap();
        cache
    });
    let client = client(&cache);
    let token = cache.token();
    let runtime = current_thread();
    let token = runtime.block_on(token).unwrap();
    assert!(cache.invalidate(&token));

    script.set(Next::Fail(RetryHint::Backoff));
    assert_eq!(runtime.block_on(send(&client)), Err(TokenErrorKind::Fetch));
    assert_eq!(
        runtime.block_on(send(&client)),
        Err(TokenErrorKind::BackingOff)
    );
    script.set(Next::Token(60 * SECOND));
    skew::pass(20 * MS);
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-3".into()));
}

/// Scenario 9: a lifetime in whole seconds may end a second early (the
/// issuer floors its clock), so the cache stops a second earlier than its
/// margin alone would: 2 s is served for 2 s - 0.2 s - 1 s.
#[tokio::test(start_paused = true)]
async fn a_lifetime_in_whole_seconds_is_served_a_second_less() {
    let script = Scripted::new(Next::WholeSeconds(2));
    let client = client(&script.cache());
    assert_eq!(send(&client).await, Ok("Bearer token-1".into()));
    tokio::time::advance(799 * MS).await;
    assert_eq!(send(&client).await, Ok("Bearer token-1".into()));
    tokio::time::advance(MS).await;
    assert_eq!(send(&client).await, Ok("Bearer token-2".into()));

    // One second is no usable lifetime at all: it arrives expired.
    script.set(Next::WholeSeconds(1));
    tokio::time::advance(SECOND).await;
    assert_eq!(send(&client).await, Err(TokenErrorKind::Expired));
}

/// Extremes: a fetch timeout of zero fails each fetch (paced), and one of
/// `Duration::MAX` never ends a fetch that answers.
#[tokio::test(start_paused = true)]
async fn fetch_timeouts_of_zero_and_forever() {
    let script = Scripted::new(Next::Hang);
    let cache = script.cache().fetch_timeout(Duration::ZERO);
    let zero = client(&cache);
    assert_eq!(send(&zero).await, Err(TokenErrorKind::Timeout));
    assert_eq!(send(&zero).await, Err(TokenErrorKind::BackingOff));
    assert_eq!(script.fetches(), 1);

    let script = Scripted::new(Next::Token(60 * SECOND));
    let cache = script.cache().fetch_timeout(Duration::MAX);
    assert_eq!(send(&client(&cache)).await, Ok("Bearer token-1".into()));
}

/// Several runtimes, on threads of their own, share one cache through a
/// storm of expiries: one fetch per token, and never an expired token.
#[test]
fn runtimes_on_several_threads_share_one_cache() {
    let script = Scripted::new(Next::Token(60 * SECOND));
    let cache = script.cache();
    let client = client(&cache);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            let client = client.clone();
            scope.spawn(move || {
                let runtime = current_thread();
                for _ in 0..100 {
                    let sent = runtime.block_on(send(&client)).unwrap();
                    assert!(sent.starts_with("Bearer token-"));
                }
            });
        }
    });
    assert_eq!(script.fetches(), 1);
}

// ===== round 3 (#20): never hammer the identity provider, never strand a caller =====

/// Runs `future` on this thread with no tokio runtime at all, as a sync
/// facade on a plain executor does.
fn block_on_without_runtime<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
        std::thread::park();
    }
}

/// Item 2: a due refresh spawned on a runtime that then idles never ran,
/// so the identity provider was never asked. Past its deadline, the next
/// request replaces it on its own runtime: a token, no failure, no backoff.
#[test]
fn a_refresh_that_never_ran_is_replaced_past_its_deadline_without_a_failure() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache().fetch_timeout(500 * MS);
    let client = client(&cache);
    let app = current_thread();
    assert_eq!(app.block_on(send(&client)), Ok("Bearer token-1".into()));

    // Due at 1 s: a helper runtime serves the due token and spawns the
    // refresh, then is never driven again (its task never runs).
    let helper = current_thread();
    skew::pass(1200 * MS);
    assert_eq!(helper.block_on(cache.token()).unwrap().secret(), "token-1");
    assert_eq!(script.fetches(), 1, "the refresh never ran");

    skew::pass(2 * SECOND); // expired, and the refresh past its deadline
    assert_eq!(app.block_on(send(&client)), Ok("Bearer token-2".into()));
    assert_eq!(cache.stats().failures, 0);
    assert_eq!(script.fetches(), 2);
}

/// Item 2, before the deadline: a request on another runtime does not wait
/// for a fetch that has not begun on a runtime nobody drives.
#[test]
fn a_refresh_that_never_ran_is_replaced_at_once_from_another_runtime() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache(); // a 10 s fetch timeout
    let client = client(&cache);
    let app = current_thread();
    assert_eq!(app.block_on(send(&client)), Ok("Bearer token-1".into()));

    let helper = current_thread();
    skew::pass(1200 * MS);
    assert_eq!(helper.block_on(cache.token()).unwrap().secret(), "token-1");

    // Expired, the refresh unpolled for 1.5 s (past the 1 s grace), and its
    // deadline 8.5 s away.
    skew::pass(1500 * MS);
    let result = app.block_on(async { tokio::time::timeout(SECOND, send(&client)).await });
    assert_eq!(
        result.expect("waited on a fetch that never began"),
        Ok("Bearer token-2".into())
    );
    assert_eq!(cache.stats().failures, 0);
    // The replaced task, if its runtime ever runs it, fetches nothing.
    helper.block_on(async {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    });
    assert_eq!(script.fetches(), 2);
}

/// Token-1 (2 s) fetched on a paused runtime, then a refresh spawned at
/// 1.2 s on a helper runtime that is never driven again (its task has not
/// begun; it will do `refresh`), then 900 ms more: expired, and the refresh
/// unpolled for 900 ms. The helper runtime is returned, to run the refresh
/// later.
fn refresh_parked_for_900_ms(
    script: &Scripted,
    cache: &TokenCache,
    refresh: Next,
) -> (Echo, Runtime, Runtime) {
    let client = client(cache);
    let app = paused();
    assert_eq!(app.block_on(send(&client)), Ok("Bearer token-1".into()));
    script.set(refresh);
    let helper = current_thread();
    skew::pass(1200 * MS);
    assert_eq!(helper.block_on(cache.token()).unwrap().secret(), "token-1");
    skew::pass(900 * MS);
    (client, app, helper)
}

/// What a request on `app` got, and how long it took on `app`'s clock.
fn timed_send(app: &Runtime, client: &Echo) -> (Result<String, TokenErrorKind>, Duration) {
    app.block_on(async {
        let start = tokio::time::Instant::now();
        (send(client).await, start.elapsed())
    })
}

/// The grace before another runtime replaces a fetch that has not begun
/// is a tenth of the fetch timeout when that is under the 1 s cap.
#[test]
fn a_short_fetch_timeout_shortens_the_grace_before_a_replacement() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache().fetch_timeout(2 * SECOND); // a 200 ms grace
    let (client, app, _helper) =
        refresh_parked_for_900_ms(&script, &cache, Next::Token(2 * SECOND));
    let (sent, waited) = timed_send(&app, &client);
    assert_eq!(sent, Ok("Bearer token-2".into()));
    assert!(waited < 100 * MS, "waited {waited:?} past the grace");
    assert_eq!(script.fetches(), 2);
}

/// Within the grace, a request on another runtime waits for the fetch that
/// has not begun (its runtime may be about to run it), and replaces it only
/// when the grace is over.
#[test]
fn within_the_grace_another_runtime_waits_before_replacing() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache(); // a 10 s fetch timeout: a 1 s grace
    let (client, app, _helper) =
        refresh_parked_for_900_ms(&script, &cache, Next::Token(2 * SECOND));
    let (sent, waited) = timed_send(&app, &client);
    assert_eq!(sent, Ok("Bearer token-2".into()));
    assert!(waited >= 100 * MS, "replaced {waited:?} into the wait");
    assert_eq!(script.fetches(), 2);
}

/// A request that waits out the grace of a fetch that had not begun, which
/// then begins (its runtime ran it meanwhile) and hangs: the request waits
/// for that fetch's own deadline, and ends with its timeout, without
/// spinning on the grace that has passed.
#[test]
fn a_fetch_that_begins_within_the_grace_is_waited_for_until_its_deadline() {
    let script = Scripted::new(Next::Token(2 * SECOND));
    let cache = script.cache(); // a 10 s fetch timeout: a 1 s grace
    let (client, app, helper) = refresh_parked_for_900_ms(&script, &cache, Next::Hang);
    let (sent, waited) = app.block_on(async {
        let mut request = std::pin::pin!(send(&client));
        std::future::poll_fn(|cx| {
            assert!(request.as_mut().poll(cx).is_pending(), "waits");
            std::task::Poll::Ready(())
        })
        .await;
        // The helper runs the fetch, which begins and hangs.
        std::thread::scope(|scope| {
            scope.spawn(|| helper.block_on(tokio::task::yield_now()));
        });
        assert_eq!(script.fetches(), 2);
        let start = tokio::time::Instant::now();
        (request.await, start.elapsed())
    });
    assert_eq!(sent, Err(TokenErrorKind::Timeout));
    assert!(
        waited > 5 * SECOND,
        "gave up {waited:?} before the deadline"
    );
    assert_eq!(script.fetches(), 2);
}

/// Item 3: a request outside any runtime that waits on a fetch stalled on
/// an idle runtime returns within the fetch timeout, with a typed error.
#[test]
fn a_waiter_outside_any_runtime_returns_within_the_fetch_timeout() {
    let script = Scripted::new(Next::Hang);
    let cache = script.cache().fetch_timeout(300 * MS);
    let a = current_thread();
    // A request on A starts the fetch (which runs, and hangs) and gives up;
    // A then idles.
    let gave_up = a.block_on(async { tokio::time::timeout(10 * MS, cache.token()).await });
    assert!(gave_up.is_err());
    assert_eq!(script.fetches(), 1);

    let (done, result) = mpsc::channel();
    let waiter = cache.clone();
    std::thread::spawn(move || {
        let _ = done.send(block_on_without_runtime(waiter.token()).map_err(|e| e.kind()));
    });
    // A guard against a hang, not a measure of time: the wait is bounded
    // by the 300 ms fetch timeout.
    let result = result.recv_timeout(10 * SECOND).expect("the waiter hung");
    assert_eq!(result.unwrap_err(), TokenErrorKind::Timeout);
    assert_eq!(script.fetches(), 1);
}

/// Item 3, when the fetch ends in time: a request outside any runtime
/// that waits on a fetch running elsewhere gets its token, not a timeout.
#[test]
fn a_waiter_outside_any_runtime_gets_the_token_of_a_fetch_that_ends_in_time() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let cache = TokenCache::new({
        let gate = Arc::clone(&gate);
        move || {
            let gate = Arc::clone(&gate);
            async move {
                gate.notified().await;
                Ok::<_, Infallible>(Token::new("token-1").expires_in(60 * SECOND))
            }
        }
    });
    // The fetch runs on A's worker thread, and waits for the gate.
    let a = Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let first = a.spawn({
        let cache = cache.clone();
        async move { cache.token().await.map(|token| token.secret().to_owned()) }
    });
    while cache.stats().fetches < 1 {
        std::thread::yield_now();
    }

    let (waiting, waits) = mpsc::channel();
    let (done, result) = mpsc::channel();
    let waiter = cache.clone();
    std::thread::spawn(move || {
        let mut token = pin!(waiter.token());
        let mut waiting = Some(waiting);
        let token = block_on_without_runtime(std::future::poll_fn(|cx| {
            let poll = token.as_mut().poll(cx);
            if poll.is_pending() {
                waiting.take().map(|waiting| waiting.send(()));
            }
            poll
        }));
        let _ = done.send(token.map(|token| token.secret().to_owned()));
    });
    // Guards against a hang, not measures of time.
    waits.recv_timeout(10 * SECOND).expect("the waiter waits");
    gate.notify_one();
    let result = result.recv_timeout(10 * SECOND).expect("the waiter hung");
    assert_eq!(result.map_err(|e| e.kind()), Ok("token-1".to_owned()));
    assert_eq!(a.block_on(first).unwrap().unwrap(), "token-1");
}

/// Item 4: a runtime built without `enable_time` gets a typed error that
/// says so, not a panic in the request or in the fetch task.
#[test]
fn a_runtime_without_a_time_driver_gets_a_typed_error() {
    let script = Scripted::new(Next::Token(60 * SECOND));
    let cache = script.cache();
    let client = client(&cache);
    let runtime = Builder::new_current_thread().build().unwrap();
    let error = runtime.block_on(cache.token()).unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::NoTimeDriver);
    assert!(error.to_string().contains("enable_time"), "{error}");
    assert_eq!(
        runtime.block_on(send(&client)),
        Err(TokenErrorKind::NoTimeDriver)
    );
    assert_eq!(script.fetches(), 0, "no fetch task to panic");

    // A token fetched elsewhere is still served there.
    assert_eq!(
        current_thread().block_on(send(&client)),
        Ok("Bearer token-1".into())
    );
    assert_eq!(runtime.block_on(send(&client)), Ok("Bearer token-1".into()));
}

/// Item 4, for a waiter: a request on a runtime without timers that
/// waits on a fetch running elsewhere is bounded by the fetch's deadline
/// like any other (no panic from a timer it cannot have).
#[test]
fn a_waiter_on_a_runtime_without_timers_is_bounded_without_a_panic() {
    let script = Scripted::new(Next::Hang);
    let cache = script.cache().fetch_timeout(300 * MS);
    let a = current_thread();
    let gave_up = a.block_on(async { tokio::time::timeout(10 * MS, cache.token()).await });
    assert!(gave_up.is_err(), "the fetch runs on A and hangs");

    let (done, result) = mpsc::channel();
    let waiter = cache.clone();
    std::thread::spawn(move || {
        let timeless = Builder::new_current_thread().build().unwrap();
        let _ = done.send(timeless.block_on(waiter.token()).map_err(|e| e.kind()));
    });
    let result = result
        .recv_timeout(10 * SECOND)
        .expect("the waiter hung or panicked");
    assert_eq!(result.unwrap_err(), TokenErrorKind::Timeout);
}

/// Item 6: a request that waited for a token and is polled again only
/// after that token expired looks it up again instead of sending it.
#[tokio::test(start_paused = true)]
async fn a_waiting_request_polled_late_never_sends_an_expired_token() {
    let script = Scripted::new(Next::Token(10 * SECOND));
    let client = client(&script.cache());
    let mut late = pin!(client.clone().oneshot(Request::new(())));
    let poll = late.as_mut().poll(&mut Context::from_waker(Waker::noop()));
    assert!(poll.is_pending(), "it waits for the first fetch");
    for _ in 0..10 {
        tokio::task::yield_now().await; // the fetch delivers token-1
    }
    assert_eq!(script.fetches(), 1);
    tokio::time::advance(30 * SECOND).await; // token-1 expired at 9 s
    let sent = late.await.unwrap().into_body();
    assert_eq!(sent, "Bearer token-2");
}

/// Sends back-to-back requests for `secs` seconds of the paused clock to a
/// resource that rejects every token, through `TokenCache::token` and the
/// one eviction path (`unauthorized`) every adapter uses. Returns the
/// fetches made.
async fn rejected_back_to_back(script: &Scripted, cache: &TokenCache, secs: u32) -> usize {
    let before = script.fetches();
    let end = tokio::time::Instant::now() + SECOND * secs;
    while tokio::time::Instant::now() < end {
        match cache.token().await {
            Ok(token) => {
                cache.shared().unauthorized(token.generation);
            }
            Err(error) => {
                assert_eq!(error.kind(), TokenErrorKind::Rejected);
                assert!(error.retry_at().is_some());
            }
        }
        tokio::time::advance(10 * MS).await;
    }
    script.fetches() - before
}

/// Item 1: a resource that rejects every token gets at most 5 token
/// requests in 3 s, and at most log2(T) + 2 in T seconds.
#[tokio::test(start_paused = true)]
async fn rejections_soon_after_the_fetch_are_paced() {
    let script = Scripted::new(Next::Token(3600 * SECOND));
    let fetches = rejected_back_to_back(&script, &script.cache(), 3).await;
    assert!(fetches <= 5, "{fetches} token requests in 3 s");
    assert!(fetches >= 2, "the first rejection fetches at once");

    for secs in [10, 60, 600] {
        let script = Scripted::new(Next::Token(3600 * SECOND));
        let fetches = rejected_back_to_back(&script, &script.cache(), secs).await;
        let bound = (secs as f64).log2() + 2.0;
        assert!(fetches as f64 <= bound, "{fetches} in {secs} s");
    }
}

/// Item 1: a token that served a while and is then rejected was revoked:
/// the next request fetches at once, and a run of rejections ends with it.
#[tokio::test(start_paused = true)]
async fn a_rejection_after_a_while_refetches_at_once() {
    let script = Scripted::new(Next::Token(3600 * SECOND));
    let cache = script.cache();
    // A run of rejections first: the backoff has grown.
    rejected_back_to_back(&script, &cache, 10).await;
    tokio::time::advance(60 * SECOND).await;
    let token = cache.token().await.unwrap();
    let fetches = script.fetches();

    tokio::time::advance(60 * SECOND).await; // served for a minute
    assert!(cache.shared().unauthorized(token.generation));
    let next = cache.token().await.unwrap();
    assert_eq!(script.fetches(), fetches + 1);
    // Its own rejection, soon after its fetch, is the first of a new run:
    // fetched at once too.
    assert!(cache.shared().unauthorized(next.generation));
    cache.token().await.unwrap();
    assert_eq!(script.fetches(), fetches + 2);
    // The second in a row is paced.
    let third = cache.token().await.unwrap();
    assert!(cache.shared().unauthorized(third.generation));
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Rejected);
    assert_eq!(script.fetches(), fetches + 2);
}

/// "Soon after its fetch" is a tenth of a short token's lifetime (under the
/// 5 s cap): tokens of 10 s each rejected 2 s into their life are revoked
/// ones, each fetched again at once, never paced.
#[tokio::test(start_paused = true)]
async fn a_short_token_rejected_past_a_tenth_of_its_life_is_not_paced() {
    let script = Scripted::new(Next::Token(10 * SECOND));
    let cache = script.cache();
    for n in 1..=4 {
        let token = cache.token().await.unwrap();
        assert_eq!(token.secret(), format!("token-{n}"));
        tokio::time::advance(2 * SECOND).await;
        assert!(cache.shared().unauthorized(token.generation));
    }
    cache.token().await.unwrap();
    assert_eq!(script.fetches(), 5);
}

/// Item 1 as a sync facade drives it: a `block_on` per request, on two
/// current_thread runtimes sharing the cache, against a resource that
/// rejects every token; real time passes between requests (the skew).
#[test]
fn rejections_are_paced_across_runtimes_driven_by_block_on() {
    let script = Scripted::new(Next::Token(3600 * SECOND));
    let cache = script.cache();
    let rejecting = service_fn(|_: Request<()>| async {
        let mut response = Response::new(String::new());
        *response.status_mut() = http::StatusCode::UNAUTHORIZED;
        Ok::<_, Infallible>(response)
    });
    let client = BearerAuth::new(
        tower::util::BoxCloneSyncService::new(rejecting),
        cache.clone(),
    );
    let runtimes = [current_thread(), current_thread()];
    let mut paced = 0;
    for i in 0..300 {
        let runtime = &runtimes[i % 2];
        match runtime.block_on(client.clone().oneshot(Request::new(()))) {
            Ok(response) => assert_eq!(response.status(), 401),
            Err(error) => {
                let kind = error.downcast_ref::<crate::TokenError>().unwrap().kind();
                assert_eq!(kind, TokenErrorKind::Rejected);
                paced += 1;
            }
        }
        skew::pass(10 * MS);
    }
    let fetches = script.fetches();
    assert!(fetches <= 5, "{fetches} token requests in 3 s");
    assert!(
        fetches >= 2 && paced > 0,
        "{fetches} fetches, {paced} paced"
    );
}
