//! What a [`GrpcAuth`](super::GrpcAuth) call returns: its
//! [`ResponseFuture`], which reads the verdict in the response headers, and
//! its [`ResponseBody`], which reads it in the trailers.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::status::{is_grpc, is_unauthenticated};
use crate::auth::{self, Sent};
use crate::BoxError;

pin_project! {
    /// Response future of [`GrpcAuth`].
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        inner: auth::ResponseFuture<S, B>,
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn new(inner: auth::ResponseFuture<S, B>) -> Self {
        Self { inner }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Response<ResponseBody<ResBody>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut inner = self.project().inner;
        let response = ready!(inner.as_mut().poll(cx))?;
        // A `401` was handled by the bearer future itself.
        let mut sent = inner.sent();
        if !is_grpc(response.headers()) {
            sent = Sent::NOTHING;
        } else if is_unauthenticated(response.headers()) {
            sent.unauthorized();
            sent = Sent::NOTHING;
        }
        Poll::Ready(Ok(response.map(|body| ResponseBody { inner: body, sent })))
    }
}

impl<S, B> fmt::Debug for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

// ===== the body =====

pin_project! {
    /// Response body of [`GrpcAuth`]: the inner body, unchanged, watched for
    /// `grpc-status: 16` in its trailers, which evicts the token the request
    /// carried if it is still the current one.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        // Whom to tell; `NOTHING` once told, or for a response that is not
        // gRPC or whose status came in its headers.
        sent: Sent,
    }
}

impl<B> ResponseBody<B> {
    /// A reference to the inner body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Consumes `self`, returning the inner body; its trailers are no longer
    /// watched.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(frame)) = &frame {
            if let Some(trailers) = frame.trailers_ref() {
                if is_unauthenticated(trailers) {
                    this.sent.unauthorized();
                    *this.sent = Sent::NOTHING;
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B: fmt::Debug> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}
