//! How a token request is sent: any tower HTTP service, the application's
//! `reqwest::Client`, or the built-in hyper-util client (its proxy, and the
//! roots and crypto provider of `crate::tls`). A source never knows which.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioExecutor;
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

/// The application's `reqwest::Client` (the `reqwest` feature).
#[cfg(feature = "reqwest")]
pub(super) struct Reqwest(pub(super) ::reqwest::Client);

#[cfg(feature = "reqwest")]
impl HttpClient for Reqwest {
    fn send(&self, request: Request<Full<Bytes>>) -> SendFuture {
        let client = self.0.clone();
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            // A `Full` body is one frame, ready at once.
            let body = match body.collect().await {
                Ok(body) => body,
                Err(never) => match never {},
            };
            let request = Request::from_parts(parts, body.to_bytes());
            let request = ::reqwest::Request::try_from(request)?;
            let response = http::Response::from(client.execute(request).await?);
            Ok(response.map(|body| body.map_err(Into::into).boxed_unsync()))
        })
    }
}

/// How the built-in client reaches a token endpoint through a proxy.
///
/// Set with [`ClientCredentials::proxy`](super::ClientCredentials::proxy).
/// Only `http://` proxies are supported; an https token URL is reached
/// through one with a `CONNECT` tunnel, and so is a plain `http` one (the
/// proxy never sees the request, only where it goes).
#[derive(Clone, Default)]
#[non_exhaustive]
pub enum Proxy {
    /// The environment, read when the client is built (the first fetch), as
    /// curl and reqwest read it: `HTTPS_PROXY` for an https token URL,
    /// `HTTP_PROXY` for an http one, `ALL_PROXY` for either, and `NO_PROXY`
    /// for the hosts to reach directly (each in upper or lower case). The
    /// default.
    #[default]
    FromEnv,
    /// No proxy, whatever the environment says.
    Direct,
    /// This proxy (`http://host:port`, with `user:password@` for Basic
    /// authentication) for every token request, whatever the environment
    /// says.
    Url(String),
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FromEnv => f.write_str("FromEnv"),
            Self::Direct => f.write_str("Direct"),
            // The URL may hold a password.
            Self::Url(url) => match url.rsplit_once('@') {
                Some((_, host)) => write!(f, "Url(\"<redacted>@{host}\")"),
                None => f.debug_tuple("Url").field(url).finish(),
            },
        }
    }
}

/// The settings of the built-in client: its proxy and the roots it trusts
/// beside the platform's.
#[derive(Clone, Debug, Default)]
pub(super) struct Builtin {
    pub(super) proxy: Proxy,
    pub(super) roots_pem: Vec<Arc<[u8]>>,
}

impl Builtin {
    fn matcher(&self) -> Option<Matcher> {
        match &self.proxy {
            Proxy::FromEnv => Some(Matcher::from_env()),
            Proxy::Direct => None,
            Proxy::Url(url) => Some(Matcher::builder().all(url.clone()).build()),
        }
    }
}

/// A TCP connector that goes through a `CONNECT` tunnel when the proxy
/// matcher says so.
#[derive(Clone)]
struct Connector {
    http: HttpConnector,
    proxy: Option<Arc<Matcher>>,
}

type Stream = <HttpConnector as Service<Uri>>::Response;

type ConnectFuture = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // `HttpConnector` is always ready; each call gets a clone of it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> ConnectFuture {
        let mut http = self.http.clone();
        let intercept = self.proxy.as_ref().and_then(|proxy| proxy.intercept(&dst));
        let Some(intercept) = intercept else {
            return Box::pin(async move { http.call(dst).await.map_err(Into::into) });
        };
        if intercept.uri().scheme_str() != Some("http") {
            return Box::pin(std::future::ready(Err(
                "the proxy's URL is not http://host:port (only http proxies are supported)".into(),
            )));
        }
        let mut tunnel = Tunnel::new(intercept.uri().clone(), http);
        if let Some(auth) = intercept.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move {
            std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
            Ok(tunnel.call(dst).await?)
        })
    }
}

fn connector(settings: &Builtin) -> Connector {
    let mut http = HttpConnector::new();
    // https URLs reach it too: TLS is layered on top.
    http.enforce_http(false);
    Connector {
        http,
        proxy: settings.matcher().map(Arc::new),
    }
}

/// The built-in client: hyper-util's, with https through rustls when the
/// `rustls` feature is on (the provider and roots of [`crate::tls`]), and
/// the proxy of `settings`.
#[cfg(feature = "rustls")]
pub(super) fn default_client(settings: &Builtin) -> Result<Arc<dyn HttpClient>, Error> {
    let roots = crate::tls::root_store(&settings.roots_pem)
        .map_err(|error| Error::config(error.to_string()))?;
    let config =
        crate::tls::client_config(roots).map_err(|error| Error::config(error.to_string()))?;
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector(settings));
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector);
    Ok(Arc::new(Tower::new(client)))
}

/// The built-in client: hyper-util's, plain http only (the `rustls`
/// feature is off), with the proxy of `settings`.
#[cfg(not(feature = "rustls"))]
pub(super) fn default_client(settings: &Builtin) -> Result<Arc<dyn HttpClient>, Error> {
    let client = Client::builder(TokioExecutor::new()).build::<_, Full<Bytes>>(connector(settings));
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
