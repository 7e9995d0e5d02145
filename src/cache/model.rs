//! The model checker's runtime, built with `RUSTFLAGS="--cfg shuttle"`: what
//! [`sync`](super::sync) hands the cache in place of tokio's spawn, clock and
//! timers, so that shuttle can run the real refresh state machine from a few
//! threads and explore how they interleave. See `docs/model-check.md`.
//!
//! - The clock stands still until a test moves it with [`advance`], which
//!   fires the timers that it passes. The coarse clock of the hot path reads
//!   the same time.
//! - A fetch is a shuttle task. [`shut_down`] ends the tasks spawned so far
//!   as a runtime that shuts down does: a task that never ran is dropped
//!   unpolled, one that did is dropped where it waits. A model thread inside
//!   [`shutting_down`] spawns nothing: its tasks are dropped at once.
//!
//! The clock, timers and tasks are process-wide: one model test runs at a
//! time ([`serial`]).

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

pub(crate) use shuttle::future::yield_now;

/// Nanoseconds the model clock has moved in this execution.
static ELAPSED: AtomicU64 = AtomicU64::new(0);
/// Wakers of the timers waiting for the clock to move.
static TIMERS: Mutex<Vec<Waker>> = Mutex::new(Vec::new());
/// Every task spawned in this execution.
static TASKS: Mutex<Vec<shuttle::future::JoinHandle<()>>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn base() -> Instant {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    Instant::from_std(*BASE.get_or_init(std::time::Instant::now))
}

/// The model clock.
pub(crate) fn now() -> Instant {
    base() + Duration::from_nanos(ELAPSED.load(Ordering::SeqCst))
}

/// The coarse clock of the hot path: the model clock, with no lag.
pub(crate) fn coarse_now() -> u64 {
    ELAPSED.load(Ordering::SeqCst)
}

/// Moves the clock on and fires the timers it passes. A scheduling point
/// before it lets another thread act at the old time.
#[cfg(test)]
pub(crate) fn advance(by: Duration) {
    shuttle::thread::yield_now();
    let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
    ELAPSED.fetch_add(nanos, Ordering::SeqCst);
    for waker in std::mem::take(&mut *lock(&TIMERS)) {
        waker.wake();
    }
}

/// A scheduling point, where shuttle may run another thread: at each load
/// and store of the current entry, which arc-swap makes atomic without any
/// of the shim's types.
pub(crate) fn switch() {
    shuttle::sync::atomic::AtomicBool::new(false).load(Ordering::SeqCst);
}

/// A timed-out wait.
#[derive(Debug)]
pub(crate) struct Elapsed;

/// `fut`, unless the model clock reaches `at` first.
pub(crate) async fn timeout_at<F: Future>(at: Instant, fut: F) -> Result<F::Output, Elapsed> {
    let mut fut = pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        if now() >= at {
            return Poll::Ready(Err(Elapsed));
        }
        lock(&TIMERS).push(cx.waker().clone());
        Poll::Pending
    })
    .await
}

/// `fut`, unless `after` passes first on the model clock.
pub(crate) async fn timeout<F: Future>(after: Duration, fut: F) -> Result<F::Output, Elapsed> {
    match now().checked_add(after) {
        Some(at) => timeout_at(at, fut).await,
        None => Ok(fut.await),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    ShuttingDown,
}

shuttle::thread_local! {
    static RUNTIME: Cell<State> = const { Cell::new(State::Running) };
}

/// Every model thread is a runtime of its own (its id, for `sync::runtime_id`).
pub(crate) fn runtime_id(_: &Handle) -> u64 {
    usize::from(shuttle::current::me()) as u64
}

/// The runtime of the calling model thread. Every model thread has one.
#[derive(Debug)]
pub(crate) struct Handle(());

impl Handle {
    pub(crate) fn try_current() -> Result<Self, std::convert::Infallible> {
        Ok(Self(()))
    }

    pub(crate) fn spawn<F>(&self, fut: F) -> JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        if RUNTIME.with(Cell::get) == State::ShuttingDown {
            // As tokio does: the task is dropped at once, unpolled.
            drop(fut);
            return JoinHandle(None);
        }
        let task = shuttle::future::spawn(fut);
        let abort = task.abort_handle();
        lock(&TASKS).push(task);
        JoinHandle(Some(abort))
    }
}

/// A spawned task, as the cache holds it.
pub(crate) struct JoinHandle(Option<shuttle::future::AbortHandle>);

impl JoinHandle {
    pub(crate) fn is_finished(&self) -> bool {
        self.0.as_ref().is_none_or(|task| task.is_finished())
    }

    pub(crate) fn abort_handle(&self) -> AbortHandle {
        AbortHandle(self.0.clone())
    }
}

#[derive(Debug)]
pub(crate) struct AbortHandle(Option<shuttle::future::AbortHandle>);

impl AbortHandle {
    pub(crate) fn abort(&self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Runs `f` on a runtime that is shutting down: what it spawns is dropped.
#[cfg(test)]
pub(crate) fn shutting_down<T>(f: impl FnOnce() -> T) -> T {
    RUNTIME.with(|state| state.set(State::ShuttingDown));
    let output = f();
    RUNTIME.with(|state| state.set(State::Running));
    output
}

/// Ends every task spawned so far, as a runtime that shuts down does.
#[cfg(test)]
pub(crate) fn shut_down() {
    shuttle::thread::yield_now();
    for task in lock(&TASKS).iter() {
        task.abort();
    }
}

/// Waits for every task of this execution, so that none outlives it.
#[cfg(test)]
pub(crate) fn join_all() {
    loop {
        let Some(task) = lock(&TASKS).pop() else {
            return;
        };
        let _ = shuttle::future::block_on(task);
    }
}

/// One model test at a time, each execution from a clock at zero.
#[cfg(test)]
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    lock(&SERIAL)
}

/// Resets the clock, timers and tasks at the start of an execution.
#[cfg(test)]
pub(crate) fn reset() {
    ELAPSED.store(0, Ordering::SeqCst);
    lock(&TIMERS).clear();
    // Left by an execution that failed: its tasks are gone with it.
    for task in lock(&TASKS).drain(..) {
        std::mem::forget(task);
    }
}

#[cfg(test)]
mod tests;
