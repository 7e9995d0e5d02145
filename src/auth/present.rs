//! The one place that decides what a request carries for its token: the
//! cache entry's header, and for a DPoP-bound token a proof made for this
//! very request. The tower services and the reqwest middleware all call it.

use http::{HeaderMap, HeaderName, Method, Response, Uri};

use crate::cache::Entry;
use crate::TokenError;

/// What a response must be shown to after a request sent with a proof.
/// Behind a pointer, so that the response future of every other request
/// grows by one word only; an `Arc` rather than a `Box`, because dropping
/// an empty `Option<Arc>` is an inlined null check, and an `Option<Box>` a
/// call (measured: 9 instructions per bearer request).
#[cfg(feature = "dpop")]
pub(crate) type Proof = std::sync::Arc<crate::dpop::Sent>;
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
        return Ok(Some(std::sync::Arc::new(sent)));
    }
    let _ = (method, uri);
    headers.insert(name, entry.header.clone());
    Ok(None)
}

/// Whether the response to a request sent with `proof` rejects its token
/// (a `401` that is not a nonce challenge: that one never evicts).
/// Remembers the response's `DPoP-Nonce`.
#[cold]
pub(crate) fn rejects<B>(proof: &Proof, response: &Response<B>) -> bool {
    #[cfg(feature = "dpop")]
    return proof.rejects(response.status(), response.headers());
    #[cfg(not(feature = "dpop"))]
    {
        let _ = response;
        match *proof {}
    }
}
