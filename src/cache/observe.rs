//! What the cache tells `tracing` (with the `tracing` feature): a span per
//! fetch and an event for each turn worth knowing about. Everything here
//! runs on a cold path, and nothing here ever sees a token's value: only
//! generations, durations and error messages.
//!
//! Without the feature every function is an empty inline one.

use std::time::Duration;

use tokio::time::Instant;

use super::entry::Entry;
use crate::TokenError;

/// Why a token was evicted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A server answered `401 Unauthorized` to a request that carried it.
    Unauthorized,
    /// [`TokenCache::invalidate`](crate::TokenCache::invalidate) was called.
    Invalidate,
}

/// The span of one fetch.
#[derive(Clone)]
pub(crate) struct FetchSpan {
    #[cfg(feature = "tracing")]
    span: tracing::Span,
}

impl FetchSpan {
    /// `attempt` counts from 1, and from 1 again after a success; `key` is
    /// the label of a keyed cache's key.
    #[inline]
    pub(crate) fn new(attempt: u32, key: Option<&str>) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = (attempt, key);
        Self {
            #[cfg(feature = "tracing")]
            span: tracing::info_span!(
                "token_fetch",
                attempt,
                key,
                outcome = tracing::field::Empty,
                latency = tracing::field::Empty,
                lifetime = tracing::field::Empty,
            ),
        }
    }

    /// Runs the token source's future inside the span, so that its own
    /// events nest under the fetch.
    #[cfg(feature = "tracing")]
    pub(crate) fn instrument<F: std::future::Future>(
        &self,
        fetch: F,
    ) -> tracing::instrument::Instrumented<F> {
        tracing::Instrument::instrument(fetch, self.span.clone())
    }

    #[cfg(not(feature = "tracing"))]
    #[cfg_attr(test, mutants::skip)] // built only without `tracing`: docs/mutants.md
    #[inline]
    pub(crate) fn instrument<F: std::future::Future>(&self, fetch: F) -> F {
        fetch
    }

    /// Records how the fetch that began at `started` ended.
    ///
    /// `retry_in` is the backoff now in force after a failure, and `serving`
    /// the current token's remaining time when a failed refresh leaves it in
    /// service.
    pub(crate) fn settled(
        &self,
        outcome: &Result<std::sync::Arc<Entry>, TokenError>,
        started: Instant,
        retry_in: Option<Duration>,
        serving: Option<Duration>,
    ) {
        #[cfg(feature = "tracing")]
        {
            let span = &self.span;
            span.record("latency", tracing::field::debug(started.elapsed()));
            match outcome {
                Ok(entry) => {
                    span.record("outcome", "ok");
                    match entry.token.expiry() {
                        Some(expiry) => span.record(
                            "lifetime",
                            tracing::field::debug(expiry.saturating_duration_since(started)),
                        ),
                        None => span.record("lifetime", "never expires"),
                    };
                    tracing::debug!(parent: span, generation = entry.generation, "token fetched");
                }
                Err(error) => {
                    span.record("outcome", tracing::field::debug(error.kind()));
                    tracing::warn!(parent: span, error = %error, "token fetch failed");
                    if let Some(retry_in) = retry_in {
                        tracing::warn!(
                            parent: span,
                            retry_in = ?retry_in,
                            "backing off before the next token fetch"
                        );
                    }
                    if let Some(expires_in) = serving {
                        tracing::warn!(
                            parent: span,
                            expires_in = ?expires_in,
                            "token refresh failed; serving the current token until it expires"
                        );
                    }
                }
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (outcome, started, retry_in, serving);
    }
}

/// A token was evicted; `key` is the label of a keyed cache's key.
#[inline]
pub(crate) fn invalidated(generation: u64, cause: Cause, key: Option<&str>) {
    #[cfg(feature = "tracing")]
    match cause {
        Cause::Unauthorized => tracing::info!(
            generation,
            key,
            "token invalidated after a 401; the next request waits for a new one"
        ),
        Cause::Invalidate => tracing::info!(
            generation,
            key,
            "token invalidated by the caller; the next request waits for a new one"
        ),
    }
    #[cfg(not(feature = "tracing"))]
    let _ = (generation, cause, key);
}

/// A token was rejected soon after its fetch, again: the next fetch waits
/// `retry_in`. Once per rejection, not per request.
#[inline]
pub(crate) fn rejections_paced(retry_in: Duration, key: Option<&str>) {
    #[cfg(feature = "tracing")]
    tracing::warn!(
        ?retry_in,
        key,
        "the resource keeps rejecting fresh tokens; pausing token fetches"
    );
    #[cfg(not(feature = "tracing"))]
    let _ = (retry_in, key);
}

/// A keyed cache dropped a key: `reason` is `"max_keys"` or
/// `"idle_timeout"`.
#[inline]
pub(crate) fn key_dropped(key: &str, reason: &'static str) {
    #[cfg(feature = "tracing")]
    tracing::debug!(key, reason, "keyed token cache dropped a key");
    #[cfg(not(feature = "tracing"))]
    let _ = (key, reason);
}
