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
