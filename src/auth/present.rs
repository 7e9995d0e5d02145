//! The one place that decides what a request carries for its token: the
//! cache entry's header, and for a DPoP-bound token a proof made for this
//! very request. The tower services and the reqwest middleware all call it.

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};

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

/// What a request carries for its token, before it is put on it.
pub(crate) struct Presented {
    header: HeaderValue,
    #[cfg(feature = "dpop")]
    proof: Option<(HeaderValue, Proof)>,
}

/// What a request of `method` to `uri()` carries for `entry`'s token: its
/// header value and, for a DPoP-bound token, a proof made for this request
/// (`uri` is only asked for then; `None` means the request's URL is no
/// valid URI). An error means the request must not be sent.
#[inline]
pub(crate) fn present(
    entry: &Entry,
    method: &Method,
    uri: impl FnOnce() -> Option<Uri>,
) -> Result<Presented, TokenError> {
    #[cfg(feature = "dpop")]
    if let Some(bound) = entry.token.bound() {
        let uri = uri().ok_or_else(|| TokenError::proof(crate::dpop::Error::invalid_uri()))?;
        let (proof, sent) = bound.prove(method, &uri).map_err(TokenError::proof)?;
        return Ok(Presented {
            header: entry.header.clone(),
            proof: Some((proof, std::sync::Arc::new(sent))),
        });
    }
    let _ = (method, uri);
    Ok(Presented {
        header: entry.header.clone(),
        #[cfg(feature = "dpop")]
        proof: None,
    })
}

impl Presented {
    /// Sets `name: <header>` and, with a proof, `DPoP: <proof>`; returns
    /// what the response must be shown to.
    #[inline]
    pub(crate) fn insert(self, headers: &mut HeaderMap, name: &HeaderName) -> Option<Proof> {
        headers.insert(name, self.header);
        #[cfg(feature = "dpop")]
        if let Some((proof, sent)) = self.proof {
            headers.insert(crate::dpop::DPOP, proof);
            return Some(sent);
        }
        None
    }
}

/// Whether the response to a request sent with `proof` rejects its token
/// (a `401` that is not a nonce challenge: that one never evicts).
/// Remembers the response's `DPoP-Nonce`.
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
