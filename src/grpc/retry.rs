//! [`RetryOnUnauthenticated`]: the retry policy that sends a rejected gRPC
//! call once more, with a fresh token.

use std::fmt;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;

use super::status::{is_grpc, is_unauthenticated};
use super::ReplayBody;
use crate::BoxError;

/// A `tower::retry::Policy` for gRPC: sends a call once more, with a fresh
/// token, after `UNAUTHENTICATED` in the response headers (or an HTTP
/// `401`). See [Retrying](crate::grpc#retrying).
///
/// It is [`RetryOnUnauthorized`](crate::RetryOnUnauthorized) with gRPC's rejection added: the
/// same one retry, the same copy of the request.
pub struct RetryOnUnauthenticated<B> {
    once: crate::RetryOnUnauthorized<B>,
    can_replay: fn(&B) -> bool,
}

impl<B: Clone> RetryOnUnauthenticated<B> {
    /// A policy for requests whose body is `Clone`.
    pub fn new() -> Self {
        Self::cloning_body_with(|body| Some(body.clone()))
    }
}

impl<B: Clone> Default for RetryOnUnauthenticated<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> RetryOnUnauthenticated<B> {
    /// A policy that copies a request's body with `clone_body`; a request
    /// whose body it cannot copy (`None`) is not retried. As
    /// [`RetryOnUnauthorized::cloning_body_with`](crate::RetryOnUnauthorized::cloning_body_with).
    pub fn cloning_body_with(clone_body: fn(&B) -> Option<B>) -> Self {
        Self {
            once: crate::RetryOnUnauthorized::cloning_body_with(clone_body),
            can_replay: |_| true,
        }
    }
}

impl<B> RetryOnUnauthenticated<ReplayBody<B>>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// A policy for requests whose body is a [`ReplayBody`], as tonic's
    /// are once wrapped: a call is retried if its body was recorded whole
    /// (within the body's limit).
    pub fn replaying() -> Self {
        Self {
            once: crate::RetryOnUnauthorized::cloning_body_with(ReplayBody::try_clone),
            can_replay: ReplayBody::replayable,
        }
    }
}

impl<B, ResBody, E> tower::retry::Policy<Request<B>, Response<ResBody>, E>
    for RetryOnUnauthenticated<B>
{
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        request: &mut Request<B>,
        result: &mut Result<Response<ResBody>, E>,
    ) -> Option<Self::Future> {
        let rejected = matches!(result, Ok(response) if rejected(response));
        self.once
            .once_if(rejected && (self.can_replay)(request.body()))
    }

    fn clone_request(&mut self, request: &Request<B>) -> Option<Request<B>> {
        tower::retry::Policy::<Request<B>, Response<ResBody>, E>::clone_request(
            &mut self.once,
            request,
        )
    }
}

impl<B> Clone for RetryOnUnauthenticated<B> {
    fn clone(&self) -> Self {
        Self {
            once: self.once.clone(),
            can_replay: self.can_replay,
        }
    }
}

impl<B> fmt::Debug for RetryOnUnauthenticated<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryOnUnauthenticated")
            .field("once", &self.once)
            .finish_non_exhaustive()
    }
}

/// Whether a response's own headers reject the call: HTTP `401`, or a
/// trailers-only gRPC `UNAUTHENTICATED`.
fn rejected<B>(response: &Response<B>) -> bool {
    response.status() == http::StatusCode::UNAUTHORIZED
        || (is_grpc(response.headers()) && is_unauthenticated(response.headers()))
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tower::{service_fn, ServiceExt};

    use super::super::testing::*;
    use super::*;
    use crate::BearerAuthLayer;

    /// How many calls reached a server answering with `head`, through the
    /// retry policy and `BearerAuthLayer::grpc`.
    async fn attempts(head: Pairs, status: http::StatusCode) -> usize {
        let calls = Arc::new(AtomicUsize::new(0));
        let server = service_fn({
            let calls = calls.clone();
            move |_: Request<()>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let mut response = Response::new(Frames(VecDeque::new()));
                    *response.headers_mut() = headers(head);
                    *response.status_mut() = status;
                    Ok::<_, Infallible>(response)
                }
            }
        });
        let client = tower::ServiceBuilder::new()
            .retry(RetryOnUnauthenticated::new())
            .layer(BearerAuthLayer::from_cache(counting_cache()).grpc())
            .service(server);
        client.oneshot(Request::new(())).await.unwrap();
        calls.load(Ordering::SeqCst)
    }

    #[tokio::test]
    async fn the_policy_retries_a_rejection_in_the_headers_once() {
        use http::StatusCode;
        assert_eq!(attempts(&[GRPC, UNAUTHENTICATED], StatusCode::OK).await, 2);
        assert_eq!(attempts(&[], StatusCode::UNAUTHORIZED).await, 2);
        assert_eq!(
            attempts(&[GRPC, ("grpc-status", "7")], StatusCode::OK).await,
            1
        );
        assert_eq!(attempts(&[GRPC], StatusCode::OK).await, 1);
        // Not gRPC: its grpc-status means nothing.
        assert_eq!(attempts(&[UNAUTHENTICATED], StatusCode::OK).await, 1);
    }
}
