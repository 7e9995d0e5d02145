//! [`RetryOnUnauthorized`]: a `tower::retry::Policy` that sends a request once more
//! after a `401 Unauthorized`, with a fresh token.
//!
//! Behind the `retry` feature (on by default).
//!
//! A `401` to a request that carried token T makes
//! [`BearerAuth`](crate::BearerAuth) evict T before the response reaches the
//! policy, so the retry waits for the single refresh and goes out with a new
//! token. Put the retry **outside** the bearer layer, so that each attempt
//! passes through it:
//!
//! ```text
//! ServiceBuilder::new().retry(RetryOnUnauthorized::new()).layer(bearer).service(client)
//! ```
//!
//! - A request is retried at most once: a second `401` is returned as it is.
//!   The retry's token comes from the cache's rules: the first token
//!   rejected soon after its fetch is replaced at once, but once fresh
//!   tokens are rejected in a row the retry fails with
//!   [`Rejected`](crate::TokenErrorKind::Rejected) (the cache paces the
//!   identity provider; see "Failures" in [`crate::cache`]).
//! - With the `dpop` feature, a DPoP nonce challenge (`401` with
//!   `WWW-Authenticate: DPoP error="use_dpop_nonce"`, RFC 9449 §9) is told
//!   apart from a rejected token: the layer does not evict the token, and
//!   the policy retries it once, on a budget of its own, so that the retry
//!   carries the server's new nonce with the same token. A nonce challenge
//!   and a rejection may thus each be retried once (three attempts at
//!   most); a second nonce challenge is returned as it is.
//! - Only a request that can be copied is retried. [`RetryOnUnauthorized::new`] copies
//!   bodies that are `Clone` (`Full<Bytes>`, `String`, `()`...);
//!   [`RetryOnUnauthorized::cloning_body_with`] takes a function for a body that can
//!   only sometimes be copied (a streaming body cannot): a request whose body
//!   it cannot copy gets its `401` back.
//! - Any other response or error is returned as it is.
//! - With the `tracing` feature, a request that reaches the policy with its
//!   `Authorization` header already set (the retry inside the bearer layer,
//!   where each attempt resends the rejected token) makes one `warn` event,
//!   once per process. A request that carries its own `Authorization` on
//!   purpose (with [`keep_existing`](crate::BearerAuthLayer::keep_existing))
//!   causes it too.
//!
//! # Example
//!
//! ```
//! use std::convert::Infallible;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use std::sync::Arc;
//! use http::{header::AUTHORIZATION, Request, Response, StatusCode};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//! use tower_bearer::{BearerAuthLayer, RetryOnUnauthorized, Token};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower_bearer::BoxError> {
//! let fetches = Arc::new(AtomicUsize::new(0));
//! let source = {
//!     let fetches = fetches.clone();
//!     move || {
//!         let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
//!         async move { Ok::<_, Infallible>(Token::new(format!("token-{n}"))) }
//!     }
//! };
//! // This server has revoked the first token.
//! let server = service_fn(|request: Request<String>| async move {
//!     let auth = request.headers()[AUTHORIZATION].to_str().unwrap().to_owned();
//!     let mut response = Response::new(auth.clone());
//!     if auth == "Bearer token-1" {
//!         *response.status_mut() = StatusCode::UNAUTHORIZED;
//!     }
//!     Ok::<_, Infallible>(response)
//! });
//!
//! let mut client = ServiceBuilder::new()
//!     .retry(RetryOnUnauthorized::new())
//!     .layer(BearerAuthLayer::new(source))
//!     .service(server);
//!
//! let response = client.ready().await?.call(Request::new(String::new())).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.body(), "Bearer token-2");
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::{ready, Ready};

use http::{Request, Response, StatusCode};
use tower::retry::Policy;

#[allow(deprecated)]
pub use crate::deprecated::RetryOn401;

/// A `tower::retry::Policy` that retries a request once after a
/// `401 Unauthorized`. See the [module docs](crate::retry).
pub struct RetryOnUnauthorized<B> {
    clone_body: fn(&B) -> Option<B>,
    budget: Budget,
}

/// The one place that decides whether a `401` is answered by sending the
/// request once more: [`RetryOnUnauthorized`] (tower) and the reqwest middleware both
/// ask it. A rejection gets one retry, a DPoP nonce challenge one of its own.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Budget {
    retried: bool,
    // A DPoP nonce challenge was retried (never set without `dpop`).
    nonce_retried: bool,
}

impl Budget {
    /// Whether a request answered with `status` and `headers` goes once
    /// more (and the budget it takes is spent).
    pub(crate) fn retry(&mut self, status: StatusCode, headers: &http::HeaderMap) -> bool {
        if status != StatusCode::UNAUTHORIZED {
            return false;
        }
        #[cfg(feature = "dpop")]
        if crate::dpop::is_nonce_challenge(headers) {
            return once(&mut self.nonce_retried);
        }
        let _ = headers;
        once(&mut self.retried)
    }

    /// Retries once if `rejected` (gRPC's `UNAUTHENTICATED`).
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn once_if(&mut self, rejected: bool) -> bool {
        rejected && once(&mut self.retried)
    }

    /// Whether no retry is left, so that no copy of a request is needed.
    pub(crate) fn spent(&self) -> bool {
        // Without `dpop` there is no nonce challenge to retry.
        self.retried && (self.nonce_retried || !cfg!(feature = "dpop"))
    }
}

impl<B: Clone> RetryOnUnauthorized<B> {
    /// A policy for requests whose body is `Clone`.
    pub fn new() -> Self {
        Self::cloning_body_with(|body| Some(body.clone()))
    }
}

impl<B: Clone> Default for RetryOnUnauthorized<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> RetryOnUnauthorized<B> {
    /// A policy that copies a request's body with `clone_body`; a request
    /// whose body it cannot copy (`None`) is not retried.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use tower_bearer::RetryOnUnauthorized;
    ///
    /// enum Body {
    ///     Bytes(Bytes),
    ///     Stream(/* a channel, say */),
    /// }
    ///
    /// let policy = RetryOnUnauthorized::cloning_body_with(|body: &Body| match body {
    ///     Body::Bytes(bytes) => Some(Body::Bytes(bytes.clone())),
    ///     Body::Stream() => None,
    /// });
    /// ```
    pub fn cloning_body_with(clone_body: fn(&B) -> Option<B>) -> Self {
        Self {
            clone_body,
            budget: Budget::default(),
        }
    }
}

impl<B> RetryOnUnauthorized<B> {
    /// Retries once if `rejected`: the one-retry rule, shared with
    /// `grpc::RetryOnUnauthenticated`.
    #[cfg_attr(not(feature = "grpc"), allow(dead_code))]
    pub(crate) fn once_if(&mut self, rejected: bool) -> Option<Ready<()>> {
        self.budget.once_if(rejected).then(|| ready(()))
    }
}

/// Whether a retry is left of a budget of one that is `spent` (and then it
/// is).
fn once(spent: &mut bool) -> bool {
    !std::mem::replace(spent, true)
}

impl<B, ResBody, E> Policy<Request<B>, Response<ResBody>, E> for RetryOnUnauthorized<B> {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request<B>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        let Ok(response) = result else { return None };
        self.budget
            .retry(response.status(), response.headers())
            .then(|| ready(()))
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        #[cfg(feature = "tracing")]
        if request.headers().contains_key(http::header::AUTHORIZATION) {
            warn_wrong_order();
        }
        if self.budget.spent() {
            return None;
        }
        let body = (self.clone_body)(request.body())?;
        let mut clone = Request::new(body);
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.version_mut() = request.version();
        *clone.headers_mut() = request.headers().clone();
        *clone.extensions_mut() = request.extensions().clone();
        Some(clone)
    }
}

/// A request reached the policy with its `Authorization` already set: the
/// retry is most likely inside the bearer layer, where every attempt
/// resends the rejected token. Said once per process.
#[cfg(feature = "tracing")]
#[cold]
fn warn_wrong_order() {
    use std::sync::atomic::{AtomicBool, Ordering};
    static WARNED: AtomicBool = AtomicBool::new(false);
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "RetryOnUnauthorized saw a request that already carries Authorization: put the retry \
             outside the bearer layer (ServiceBuilder::new().retry(..).layer(bearer)), or \
             each retry resends the rejected token"
        );
    }
}

impl<B> Clone for RetryOnUnauthorized<B> {
    fn clone(&self) -> Self {
        Self {
            clone_body: self.clone_body,
            budget: self.budget,
        }
    }
}

impl<B> fmt::Debug for RetryOnUnauthorized<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryOnUnauthorized")
            .field("retried", &self.budget.retried)
            .field("nonce_retried", &self.budget.nonce_retried)
            .finish()
    }
}

#[cfg(all(test, feature = "dpop"))]
mod tests {
    use super::*;

    type Result = std::result::Result<Response<()>, std::convert::Infallible>;

    fn unauthorized(challenge: &str) -> Result {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::UNAUTHORIZED;
        response
            .headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, challenge.parse().unwrap());
        Ok(response)
    }

    const NONCE: &str = "DPoP error=\"use_dpop_nonce\"";
    const REJECTED: &str = "DPoP error=\"invalid_token\"";

    /// Which of `responses`, in turn, the policy retries.
    fn retries(responses: &[&str]) -> Vec<bool> {
        let mut policy = RetryOnUnauthorized::<()>::new();
        let mut request = Request::new(());
        responses
            .iter()
            .map(|challenge| {
                let clone = Policy::<_, Response<()>, std::convert::Infallible>::clone_request(
                    &mut policy,
                    &request,
                );
                let retried = policy
                    .retry(&mut request, &mut unauthorized(challenge))
                    .is_some();
                assert!(!retried || clone.is_some(), "a retry needs a copy");
                retried
            })
            .collect()
    }

    #[test]
    fn a_nonce_challenge_and_a_rejection_each_get_one_retry() {
        assert_eq!(retries(&[NONCE, NONCE]), [true, false]);
        assert_eq!(retries(&[REJECTED, REJECTED]), [true, false]);
        assert_eq!(retries(&[NONCE, REJECTED, NONCE]), [true, true, false]);
        assert_eq!(retries(&[REJECTED, NONCE, REJECTED]), [true, true, false]);
    }

    #[test]
    fn no_copy_is_made_once_both_budgets_are_spent() {
        let mut policy = RetryOnUnauthorized::<()>::new();
        let mut request = Request::new(());
        policy.retry(&mut request, &mut unauthorized(NONCE));
        let clone = |policy: &mut RetryOnUnauthorized<()>| {
            Policy::<_, Response<()>, std::convert::Infallible>::clone_request(policy, &request)
        };
        assert!(clone(&mut policy).is_some());
        let mut request = Request::new(());
        policy.retry(&mut request, &mut unauthorized(REJECTED));
        assert!(clone(&mut policy).is_none());
    }
}
