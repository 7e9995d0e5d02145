//! The quickstart's local servers, on one loopback port: an OAuth2 token
//! endpoint (`POST /token`, client credentials, `client_secret_basic`) and
//! the API it protects (`GET /orders`). Not part of the crate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// `Basic base64("quickstart:s3cret")`: the only client the server knows.
const CLIENT: &str = "Basic cXVpY2tzdGFydDpzM2NyZXQ=";

pub struct Server {
    pub addr: SocketAddr,
    state: Arc<State>,
}

struct State {
    lifetime_secs: u64,
    latency: Duration,
    token_requests: AtomicU64,
    down: AtomicBool,
    /// The tokens the API accepts (a revocation empties it).
    live: Mutex<Vec<String>>,
}

impl Server {
    /// Serves on a free port of 127.0.0.1, issuing tokens of
    /// `lifetime_secs` after `latency`.
    pub async fn start(lifetime_secs: u64, latency: Duration) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let state = Arc::new(State {
            lifetime_secs,
            latency,
            token_requests: AtomicU64::new(0),
            down: AtomicBool::new(false),
            live: Mutex::new(Vec::new()),
        });
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, state.clone()));
        Ok(Self { addr, state })
    }

    /// Token requests received so far.
    pub fn token_requests(&self) -> u64 {
        self.state.token_requests.load(Ordering::SeqCst)
    }

    /// The API stops accepting every token issued so far.
    pub fn revoke_all(&self) {
        live(&self.state).clear();
    }

    /// The token endpoint answers `503 temporarily_unavailable` while down.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }
}

fn live(state: &State) -> std::sync::MutexGuard<'_, Vec<String>> {
    state.live.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of file descriptors, say: wait rather than spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::POST, "/token") => token(state, request).await,
        (&Method::GET, "/orders") => orders(state, &request),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found".into()),
    }
}

/// The token endpoint (RFC 6749 §4.4): a client-credentials grant by the one
/// known client gets an opaque token `token-N`.
async fn token(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let number = state.token_requests.fetch_add(1, Ordering::SeqCst) + 1;
    let client_ok = request
        .headers()
        .get(AUTHORIZATION)
        .is_some_and(|value| value == CLIENT);
    let body = match request.into_body().collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let grant_ok = body
        .split(|byte| *byte == b'&')
        .any(|pair| pair == b"grant_type=client_credentials");
    // An identity provider is never instant: the requests below overlap with
    // the fetch, as they would in production.
    tokio::time::sleep(state.latency).await;

    let error = |status, error: &str| {
        let body = format!(r#"{{"error":"{error}"}}"#);
        respond(status, "application/json", body)
    };
    if state.down.load(Ordering::SeqCst) {
        return error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable");
    }
    if !grant_ok {
        return error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if !client_ok {
        return error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    let access_token = format!("token-{number}");
    live(state).push(access_token.clone());
    let body = format!(
        r#"{{"access_token":"{access_token}","token_type":"Bearer","expires_in":{}}}"#,
        state.lifetime_secs
    );
    respond(StatusCode::OK, "application/json", body)
}

/// The API: `200` and the token's name to a live token, `401` otherwise.
/// (It does not check expiry itself: the client's cache never sends an
/// expired token.)
fn orders(state: &State, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let token = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match token {
        Some(token) if live(state).iter().any(|live| live == token) => {
            respond(StatusCode::OK, "text/plain", token.to_owned())
        }
        _ => {
            let mut response = respond(StatusCode::UNAUTHORIZED, "text/plain", String::new());
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                http::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
            );
            response
        }
    }
}

fn respond(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}
