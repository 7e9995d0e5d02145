//! How a token request is sent: any tower HTTP service, or the built-in
//! hyper-util client.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Buf, Bytes};
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use tower_service::Service;

use super::error::Error;
use crate::BoxError;

pub(super) type ResponseBody = UnsyncBoxBody<Bytes, BoxError>;

pub(super) type SendFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

/// A tower HTTP service with its types erased.
pub(super) trait HttpClient: Send + Sync + 'static {
    fn send(&self, request: Request<Full<Bytes>>) -> SendFuture;
}

/// A user's service. The mutex only guards the clone taken for each fetch,
/// so that services that are `Send` but not `Sync` work too.
pub(super) struct Tower<S>(Mutex<S>);

impl<S> Tower<S> {
    pub(super) fn new(service: S) -> Self {
        Self(Mutex::new(service))
    }
}

impl<S, B> HttpClient for Tower<S>
where
    S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    fn send(&self, request: Request<Full<Bytes>>) -> SendFuture {
        let mut service = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let response = service.call(request).await.map_err(Into::into)?;
            Ok(response.map(|body| {
                body.map_frame(|frame| {
                    frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))
                })
                .map_err(Into::into)
                .boxed_unsync()
            }))
        })
    }
}

/// The built-in client: hyper-util's, with https through rustls (webpki's
/// roots, the ring provider) when the `rustls` feature is on.
#[cfg(feature = "rustls")]
pub(super) fn default_client() -> Result<Arc<dyn HttpClient>, Error> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let provider = rustls::crypto::ring::default_provider();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(provider)
        .map_err(|error| Error::config(format!("cannot set up TLS: {error}")))?
        .https_or_http()
        .enable_http1()
        .build();
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    Ok(Arc::new(Tower::new(client)))
}

/// The built-in client: hyper-util's, plain http only (the `rustls`
/// feature is off).
#[cfg(not(feature = "rustls"))]
pub(super) fn default_client() -> Result<Arc<dyn HttpClient>, Error> {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    Ok(Arc::new(Tower::new(client)))
}

/// Whether the built-in client can speak https.
pub(super) const DEFAULT_CLIENT_HAS_TLS: bool = cfg!(feature = "rustls");

/// Checks the token URL: `https`, or plain `http` to a loopback host, or to
/// any host when `allow_insecure_http` is set.
pub(super) fn check_url(url: &str, allow_insecure_http: bool) -> Result<Uri, Error> {
    let uri: Uri = url
        .parse()
        .map_err(|error| Error::config(format!("the token URL is not a valid URL: {error}")))?;
    let Some(host) = uri.host() else {
        return Err(Error::config("the token URL has no host"));
    };
    match uri.scheme_str() {
        Some("https") => Ok(uri),
        Some("http") if allow_insecure_http || is_loopback(host) => Ok(uri),
        Some("http") => Err(Error::config(format!(
            "the token URL uses plain http to {host:?}, which is not a loopback host: \
             use https, or allow_insecure_http(true)"
        ))),
        Some(scheme) => Err(Error::config(format!(
            "the token URL's scheme is {scheme:?}, not https"
        ))),
        None => Err(Error::config("the token URL is not absolute")),
    }
}

/// `localhost`, `127.0.0.0/8` or `[::1]`.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_anywhere_http_only_to_loopback_unless_allowed() {
        for ok in [
            "https://idp.example.com/oauth/token",
            "https://10.0.0.1:8443/token",
            "http://127.0.0.1:8080/token",
            "http://127.3.2.1/token",
            "http://localhost:1234/token",
            "http://LOCALHOST/token",
            "http://[::1]:9000/token",
        ] {
            assert!(check_url(ok, false).is_ok(), "{ok}");
        }
        for (bad, message) in [
            (
                "http://idp.example.com/token",
                "plain http to \"idp.example.com\"",
            ),
            ("http://10.0.0.1/token", "plain http to \"10.0.0.1\""),
            ("http://localhost.evil.com/token", "plain http"),
            ("http://[::2]/token", "plain http"),
            ("ftp://idp.example.com/token", "scheme is \"ftp\""),
            ("/token", "no host"),
            ("not a url", "not a valid URL"),
            ("", "not a valid URL"),
        ] {
            let error = check_url(bad, false).unwrap_err();
            assert!(error.is_permanent());
            assert!(error.to_string().contains(message), "{bad}: {error}");
        }
        assert!(check_url("http://idp.example.com/token", true).is_ok());
        assert!(check_url("ftp://idp.example.com/token", true).is_err());
    }
}
