//! The one place that decides what a request carries for its token: the
//! cache entry's header, and for a DPoP-bound token a proof made for this
//! very request. The tower services and the reqwest middleware all call it.

use http::{HeaderMap, HeaderName, Method, StatusCode, Uri};

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

/// Whether the response to a request sent with `proof` rejects its token
/// (a `401` that is not a nonce challenge). Remembers its `DPoP-Nonce`.
#[cold]
pub(crate) fn rejects(proof: &Proof, status: StatusCode, headers: &HeaderMap) -> bool {
    #[cfg(feature = "dpop")]
    return proof.rejects(status, headers);
    #[cfg(not(feature = "dpop"))]
    {
        let _ = (status, headers);
        match *proof {}
    }
}
