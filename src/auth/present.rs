//! The one place that decides what a request carries for its token: the
//! cache entry's header, and for a DPoP-bound token a proof made for this
//! very request. The tower services and the reqwest middleware all call it.

use std::future::Future;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, Method, Response, Uri};

use crate::cache::Entry;
use crate::TokenError;

/// What a response must be shown to after a request sent with a proof.
#[cfg(feature = "dpop")]
pub(crate) type Proof = crate::dpop::Sent;
/// Without the `dpop` feature no request carries a proof.
#[cfg(not(feature = "dpop"))]
pub(crate) type Proof = std::convert::Infallible;

/// Puts `entry`'s token on a request of `method` to `uri`: `name: <header>`
/// and, for a bound token, `DPoP: <proof>`. On an error nothing is set, and
/// the request must not be sent.
#[inline]
pub(crate) fn present(
    headers: &mut HeaderMap,
    name: &HeaderName,
    entry: &Entry,
    method: &Method,
    uri: &Uri,
) -> Result<Option<Proof>, TokenError> {
    #[cfg(feature = "dpop")]
    if let Some(bound) = entry.token.bound() {
        let (proof, sent) = bound.prove(method, uri).map_err(TokenError::proof)?;
        headers.insert(name, entry.header.clone());
        headers.insert(crate::dpop::DPOP, proof);
        return Ok(Some(sent));
    }
    let _ = (method, uri);
    headers.insert(name, entry.header.clone());
    Ok(None)
}

#[cfg(feature = "dpop")]
pin_project_lite::pin_project! {
    /// The inner service's future for a request sent with a proof.
    pub(crate) struct Proving<F> {
        #[pin]
        future: F,
        proof: Proof,
    }
}

/// Without the `dpop` feature there is none: uninhabited and of size zero,
/// so that the response future's state has no room or branch for it.
#[cfg(not(feature = "dpop"))]
pub(crate) struct Proving<F>(
    std::convert::Infallible,
    std::marker::PhantomData<fn() -> F>,
);

/// What the response future holds for a request sent with a proof: boxed,
/// so that the future of every other request stays as small as it was (its
/// size is paid on every bearer request; the box only on proven ones).
#[cfg(feature = "dpop")]
pub(crate) type Call<F> = std::pin::Pin<Box<Proving<F>>>;
/// What the response future holds for a request sent with a proof.
#[cfg(not(feature = "dpop"))]
pub(crate) type Call<F> = Proving<F>;

/// The call of a request sent with `proof`.
#[cfg(feature = "dpop")]
pub(crate) fn call<F>(future: F, proof: Proof) -> Call<F> {
    Box::pin(Proving { future, proof })
}

/// The call of a request sent with `proof`.
#[cfg(not(feature = "dpop"))]
pub(crate) fn call<F>(_future: F, proof: Proof) -> Call<F> {
    match proof {}
}

/// The response, and whether it rejects the token (a `401` that is not a
/// nonce challenge, which evicts it). Remembers its `DPoP-Nonce`.
pub(crate) fn poll<F, B, E>(
    call: &mut Call<F>,
    cx: &mut Context<'_>,
) -> Poll<Result<(Response<B>, bool), E>>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    #[cfg(feature = "dpop")]
    {
        let this = call.as_mut().project();
        let response = std::task::ready!(this.future.poll(cx))?;
        let rejects = this.proof.rejects(response.status(), response.headers());
        Poll::Ready(Ok((response, rejects)))
    }
    #[cfg(not(feature = "dpop"))]
    {
        let _ = cx;
        match call.0 {}
    }
}
