//! One token request on the wire: sending it with the chosen client
//! (answering a DPoP nonce challenge once), reading the answer up to
//! [`MAX_BODY`], and handing it to the response parser. Shared by every
//! grant.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::Request;
use http_body::Body as _;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::error::Error;
use super::response::{Context, MAX_BODY};
use super::transport::{HttpClient, ResponseBody};

/// A token request, the client to send it with, and what an error must
/// never quote beside the secret (assertions, a subject token).
pub(super) struct Prepared {
    pub(super) client: Arc<dyn HttpClient>,
    pub(super) request: Request<Full<Bytes>>,
    pub(super) masked: Vec<Zeroizing<String>>,
    #[cfg(feature = "dpop")]
    pub(super) dpop: Option<crate::dpop::Binding>,
}

/// One token request, from sending it to reading the answer with `read`.
pub(super) async fn send<T, R>(
    prepared: Result<Prepared, Error>,
    client_id: String,
    secret: Zeroizing<String>,
    default_lifetime: Duration,
    read: R,
) -> Result<T, Error>
where
    R: Fn(http::StatusCode, &http::HeaderMap, &[u8], &Context<'_>) -> Result<T, Error>,
{
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let Prepared {
        client,
        request,
        masked,
        #[cfg(feature = "dpop")]
        dpop,
    } = prepared?;
    #[cfg(feature = "dpop")]
    let retry = dpop.as_ref().map(|_| copy(&request));
    let (parts, body) = exchange(&*client, request).await?;
    let context = Context {
        started,
        started_wall,
        default_lifetime,
        client_id: &client_id,
        secret: &secret,
        masked: &masked,
        #[cfg(feature = "dpop")]
        binding: dpop.as_ref(),
    };
    #[cfg(feature = "dpop")]
    if let (Some(binding), Some(mut retry)) = (&dpop, retry) {
        // The nonce challenge (RFC 9449 §8): a 400 `use_dpop_nonce` with a
        // `DPoP-Nonce`, answered once, with a new proof.
        let nonce = binding.token_endpoint_nonce(&parts.headers);
        let result = read(parts.status, &parts.headers, &body, &context);
        let challenged = matches!(&result, Err(error) if nonce
            && parts.status == http::StatusCode::BAD_REQUEST
            && error.response().is_some_and(|r| r.error() == "use_dpop_nonce"));
        if !challenged {
            return result;
        }
        let proof = token_request_proof(binding, retry.uri())?;
        retry.headers_mut().insert(crate::dpop::DPOP, proof);
        let (parts, body) = exchange(&*client, retry).await?;
        binding.token_endpoint_nonce(&parts.headers);
        return read(parts.status, &parts.headers, &body, &context);
    }
    read(parts.status, &parts.headers, &body, &context)
}

/// Sends one request and reads the whole answer.
async fn exchange(
    client: &dyn HttpClient,
    request: Request<Full<Bytes>>,
) -> Result<(http::response::Parts, Bytes), Error> {
    let response = client.send(request).await.map_err(Error::transport)?;
    let (parts, body) = response.into_parts();
    Ok((parts, read_body(body).await?))
}

/// A token request's proof; failing to make one is a configuration error.
#[cfg(feature = "dpop")]
pub(super) fn token_request_proof(
    binding: &crate::dpop::Binding,
    uri: &http::Uri,
) -> Result<http::HeaderValue, Error> {
    binding
        .token_request_proof(uri)
        .map_err(|error| Error::config(format!("cannot make the DPoP proof: {error}")))
}

/// A copy of a token request, to answer a nonce challenge with.
#[cfg(feature = "dpop")]
fn copy(request: &Request<Full<Bytes>>) -> Request<Full<Bytes>> {
    let mut copy = Request::new(request.body().clone());
    *copy.method_mut() = request.method().clone();
    *copy.uri_mut() = request.uri().clone();
    *copy.headers_mut() = request.headers().clone();
    copy
}

/// The whole body, up to [`MAX_BODY`]: a bigger one is refused as soon as
/// its declared length or the data received says so.
async fn read_body(mut body: ResponseBody) -> Result<Bytes, Error> {
    // (`http_body_util::Limited` does the same, but its future trips the
    // compiler's `Send` check for boxed errors.)
    if body.size_hint().lower() > MAX_BODY as u64 {
        return Err(Error::body_too_large(MAX_BODY));
    }
    let mut collected = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Error::transport)?;
        if let Ok(data) = frame.into_data() {
            if collected.len() + data.len() > MAX_BODY {
                return Err(Error::body_too_large(MAX_BODY));
            }
            collected.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(collected))
}
