//! What the refresh state machine needs from the outside world: a lock,
//! atomics, tokio's clock, and a runtime to spawn a fetch on and time a wait
//! with.
//!
//! In every normal build these are the std and tokio items themselves,
//! re-exported: nothing is wrapped, and the hot path compiles to the same
//! code as without the model check.
//! Built with `RUSTFLAGS="--cfg shuttle"`, they are the model checker's
//! (see `model.rs` and `docs/model-check.md`), so that the
//! real cache runs under shuttle's scheduler on a clock the test moves.

#[cfg(not(shuttle))]
pub(crate) use std::sync::atomic::{AtomicI64, AtomicU8};
#[cfg(not(shuttle))]
pub(crate) use std::sync::{Mutex, MutexGuard};
#[cfg(not(shuttle))]
pub(crate) use tokio::runtime::Handle;
#[cfg(not(shuttle))]
pub(crate) use tokio::task::{yield_now, AbortHandle};
#[cfg(not(shuttle))]
pub(crate) use tokio::time::{timeout, timeout_at};

#[cfg(shuttle)]
pub(crate) use super::model::{now, timeout, timeout_at, yield_now, AbortHandle, Handle};
#[cfg(shuttle)]
pub(crate) use shuttle::sync::atomic::{AtomicI64, AtomicU8};
#[cfg(shuttle)]
pub(crate) use shuttle::sync::{Mutex, MutexGuard};

/// Tokio's clock now: the one that decides a token's phase.
#[cfg(not(shuttle))]
#[inline(always)]
pub(crate) fn now() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// Which runtime a handle drives: a fetch spawned on one runtime and not yet
/// run is replaced by a request on another (see `refresh.rs`).
#[cfg(not(shuttle))]
pub(crate) type RuntimeId = tokio::runtime::Id;
#[cfg(shuttle)]
pub(crate) type RuntimeId = u64;

#[cfg(not(shuttle))]
pub(crate) fn runtime_id(handle: &Handle) -> RuntimeId {
    handle.id()
}
#[cfg(shuttle)]
pub(crate) use super::model::runtime_id;

/// Whether the runtime of `handle` has its time driver, without the panic
/// that tokio's timers raise on one built without `enable_time`.
///
/// Tokio has no method that asks, so a timer is made under `catch_unwind`
/// once per runtime that lacks one (the panic hook still prints that one
/// panic); the runtimes found without timers are remembered, a few dozen at
/// most, so that their requests do not print it again.
pub(crate) fn time_driver(handle: &tokio::runtime::Handle) -> bool {
    use std::sync::PoisonError;
    static WITHOUT: std::sync::Mutex<Vec<tokio::runtime::Id>> = std::sync::Mutex::new(Vec::new());
    const REMEMBERED: usize = 64;

    let id = handle.id();
    let without = |id| {
        WITHOUT
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&id)
    };
    if without(id) {
        return false;
    }
    let _enter = handle.enter();
    let timers = std::panic::catch_unwind(|| drop(tokio::time::sleep(std::time::Duration::ZERO)));
    if timers.is_err() {
        let mut without = WITHOUT.lock().unwrap_or_else(PoisonError::into_inner);
        if without.len() >= REMEMBERED {
            without.remove(0);
        }
        without.push(id);
    }
    timers.is_ok()
}

/// [`time_driver`], for the runtime a fetch would be spawned on.
#[cfg(not(shuttle))]
pub(crate) fn has_time_driver(handle: &Handle) -> bool {
    time_driver(handle)
}
/// The model's runtimes all time their waits.
#[cfg(shuttle)]
#[cfg_attr(test, mutants::skip)] // the model check's: docs/mutants.md
pub(crate) fn has_time_driver(_: &Handle) -> bool {
    true
}

/// `fut`, unless `now` (the cache's clock) reaches `at` first, for a waiter with no runtime
/// timer (outside any runtime, or on one without a time driver): a thread
/// of its own sleeps until `at` and wakes it. A cold path: once per such
/// wait. `Err` when the time is up.
#[cfg(not(shuttle))]
pub(crate) async fn timeout_at_without_runtime<F: std::future::Future>(
    at: tokio::time::Instant,
    now: fn() -> tokio::time::Instant,
    fut: F,
) -> Result<F::Output, ()> {
    use std::sync::{Arc, PoisonError};
    use std::task::{Poll, Waker};

    let mut fut = std::pin::pin!(fut);
    let slot: Arc<Mutex<Option<Waker>>> = Arc::default();
    let mut sleeping = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = fut.as_mut().poll(cx) {
            return Poll::Ready(Ok(output));
        }
        let now = now();
        if now >= at {
            return Poll::Ready(Err(()));
        }
        *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(cx.waker().clone());
        if !sleeping {
            let slot = Arc::clone(&slot);
            let wait = at - now;
            let spawned = std::thread::Builder::new()
                .name("tower-bearer-wait".into())
                .spawn(move || {
                    std::thread::sleep(wait);
                    let waker = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                });
            // No thread to be had: give up now rather than wait unbounded.
            if spawned.is_err() {
                return Poll::Ready(Err(()));
            }
            sleeping = true;
        }
        Poll::Pending
    })
    .await
}
#[cfg(shuttle)]
#[cfg_attr(test, mutants::skip)] // the model check's: docs/mutants.md
pub(crate) async fn timeout_at_without_runtime<F: std::future::Future>(
    at: tokio::time::Instant,
    _now: fn() -> tokio::time::Instant,
    fut: F,
) -> Result<F::Output, ()> {
    timeout_at(at, fut).await.map_err(|_| ())
}
