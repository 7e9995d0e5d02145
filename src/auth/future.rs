use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::header::HeaderName;
use http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::present::{self, Call};
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
        // A request with a DPoP proof: its response is read for nonces.
        Proving {
            call: Call<S::Future>,
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
pub(super) struct Sent {
    cache: u64,
    generation: u64,
}

impl Sent {
    pub(super) const NOTHING: Sent = Sent {
        cache: 0,
        generation: 0,
    };

    pub(super) fn new(cache: u64, generation: u64) -> Self {
        Self { cache, generation }
    }

    /// The server rejected the token: evict it, if it is still current.
    #[cold]
    fn unauthorized(&self) {
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
        }
    }

    /// Sends `request` with the token of `entry`, through the one seam
    /// ([`present`]) that decides what a request carries for its token.
    pub(super) fn authorized(
        inner: &mut S,
        request: Request<B>,
        header: &HeaderName,
        entry: &Entry,
        sent: Sent,
    ) -> Self {
        match authorize(inner, request, header, entry) {
            Ok(state) => Self { state, sent },
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
        }
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
            let (pending, entry) = match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if response.status() == StatusCode::UNAUTHORIZED {
                        this.sent.unauthorized();
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Proving { call } => {
                    let (response, rejects) =
                        ready!(present::poll(call, cx)).map_err(Into::into)?;
                    if rejects {
                        this.sent.unauthorized();
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Waiting { token, pending } => match ready!(token.as_mut().poll(cx)) {
                    Ok(entry) => (pending.take(), entry),
                    Err(error) => return Poll::Ready(Err(error.into())),
                },
            };
            send(this.state.as_mut(), pending, &entry, this.sent)?;
        }
    }
}

/// Sends a request that waited for its token, and moves `state` on. Out of
/// line, so that the poll of a request with a fresh token stays small.
#[cold]
#[inline(never)]
fn send<S, B>(
    mut state: Pin<&mut State<S, B>>,
    pending: Option<Box<Pending<S, B>>>,
    entry: &Entry,
    sent: &mut Sent,
) -> Result<(), TokenError>
where
    S: Service<Request<B>>,
{
    let Pending {
        mut inner,
        request,
        header,
    } = *pending.expect("polled after completion");
    sent.generation = entry.generation;
    state.set(authorize(&mut inner, request, &header, entry)?);
    Ok(())
}

/// Puts the token on `request` and calls `inner` with it, unless the token
/// cannot be presented (then nothing is sent).
#[inline]
fn authorize<S, B>(
    inner: &mut S,
    request: Request<B>,
    header: &HeaderName,
    entry: &Entry,
) -> Result<State<S, B>, TokenError>
where
    S: Service<Request<B>>,
{
    let (mut parts, body) = request.into_parts();
    let proof = present::present(&mut parts.headers, header, entry, &parts.method, &parts.uri)?;
    let future = inner.call(Request::from_parts(parts, body));
    Ok(match proof {
        None => State::Calling { future },
        Some(proof) => State::Proving {
            call: present::call(future, proof),
        },
    })
}
