//! What a [`BearerAuth`](super::BearerAuth) call returns: its
//! [`ResponseFuture`] (waiting for a token when it must, then the inner
//! call), and [`Sent`], which token a request carried, so that a `401` evicts
//! that one only.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::present::{self, Proof};
use crate::cache::{invalidate_by_id, Entry};
use crate::{BoxError, TokenError};

type Wait = Pin<Box<dyn Future<Output = Result<Arc<Entry>, TokenError>> + Send>>;

pin_project! {
    /// Response future of [`BearerAuth`](super::BearerAuth).
    ///
    /// With a fresh token it only wraps the inner service's future, to see
    /// a `401`; otherwise it first waits for the single refresh.
    pub struct ResponseFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S, B>,
        sent: Sent,
        // Set for a request sent with a DPoP proof; of size zero without
        // the `dpop` feature.
        proof: Option<Proof>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, B>
    where
        S: Service<Request<B>>,
    {
        Waiting {
            token: Wait,
            // Boxed: it holds a whole request, and would make every
            // response future, fresh token or not, that much larger to move.
            pending: Option<Box<Pending<S, B>>>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
    }
}

/// A request waiting for a token, with the inner service made ready for it.
pub(super) struct Pending<S, B> {
    pub(super) inner: S,
    pub(super) request: Request<B>,
    pub(super) header: HeaderName,
}

/// Which token a request carried: enough to invalidate it on a 401 without
/// holding a handle to the cache.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    cache: u64,
    generation: u64,
}

impl Sent {
    pub(crate) const NOTHING: Sent = Sent {
        cache: 0,
        generation: 0,
    };

    pub(super) fn new(cache: u64, generation: u64) -> Self {
        Self { cache, generation }
    }

    /// The server rejected the token: evict it, if it is still current.
    #[cold]
    pub(crate) fn unauthorized(&self) {
        if self.generation != 0 {
            invalidate_by_id(self.cache, self.generation);
        }
    }
}

impl<S, B> ResponseFuture<S, B>
where
    S: Service<Request<B>>,
{
    pub(super) fn calling(future: S::Future, sent: Sent) -> Self {
        Self {
            state: State::Calling { future },
            sent,
            proof: None,
        }
    }

    /// Sends `request` with the token of `entry`, through the one seam
    /// ([`present`](present::present)) that decides what a request carries
    /// for its token.
    pub(super) fn authorized(
        inner: &mut S,
        request: Request<B>,
        header: &HeaderName,
        entry: &Entry,
        sent: Sent,
    ) -> Self {
        match authorize(inner, request, header, entry) {
            Ok((future, proof)) => Self {
                state: State::Calling { future },
                sent,
                proof,
            },
            Err(error) => Self::failed(error),
        }
    }

    pub(super) fn waiting(token: Wait, pending: Pending<S, B>, cache: u64) -> Self {
        Self {
            state: State::Waiting {
                token,
                pending: Some(Box::new(pending)),
            },
            sent: Sent::new(cache, 0),
            proof: None,
        }
    }

    /// The token the request carried, once this future is ready: the seam
    /// through which `crate::grpc` sees it.
    #[cfg(feature = "grpc")]
    pub(crate) fn sent(self: Pin<&mut Self>) -> Sent {
        *self.project().sent
    }

    /// A request that fails without being sent. Shaped like a wait that
    /// ends at once, so that the state has two variants and dropping the
    /// future of a fresh token stays cheap.
    pub(super) fn failed(error: TokenError) -> Self {
        Self {
            state: State::Waiting {
                token: Box::pin(std::future::ready(Err(error))),
                pending: None,
            },
            sent: Sent::NOTHING,
            proof: None,
        }
    }
}

impl<S, B, ResBody> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline(always)]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let future = match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    let rejected = match this.proof {
                        None => response.status() == StatusCode::UNAUTHORIZED,
                        Some(proof) => {
                            present::rejects(proof, response.status(), response.headers())
                        }
                    };
                    if rejected {
                        this.sent.unauthorized();
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Waiting { token, pending } => match ready!(token.as_mut().poll(cx)) {
                    Ok(entry) => send(pending, &entry, this.sent, this.proof)?,
                    Err(error) => return Poll::Ready(Err(error.into())),
                },
            };
            this.state.set(State::Calling { future });
        }
    }
}

/// Sends a request that waited for its token. Out of line, so that the poll
/// of a request with a fresh token stays small.
#[cold]
#[inline(never)]
fn send<S, B>(
    pending: &mut Option<Box<Pending<S, B>>>,
    entry: &Entry,
    sent: &mut Sent,
    proof: &mut Option<Proof>,
) -> Result<S::Future, TokenError>
where
    S: Service<Request<B>>,
{
    let Pending {
        mut inner,
        request,
        header,
    } = *pending.take().expect("polled after completion");
    let future;
    (future, *proof) = authorize(&mut inner, request, &header, entry)?;
    sent.generation = entry.generation;
    Ok(future)
}

/// Puts the token on `request` and calls `inner` with it, unless the token
/// cannot be presented (then nothing is sent).
#[inline]
fn authorize<S, B>(
    inner: &mut S,
    mut request: Request<B>,
    header: &HeaderName,
    entry: &Entry,
) -> Result<(S::Future, Option<Proof>), TokenError>
where
    S: Service<Request<B>>,
{
    let presented = present::present(entry, request.method(), || Some(request.uri().clone()))?;
    let proof = presented.insert(request.headers_mut(), header);
    Ok((inner.call(request), proof))
}
