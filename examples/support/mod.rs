//! A tiny token server and protected resource for the examples and the
//! loopback tests. Not part of the crate's API.
//!
//! `POST /token` (or `GET`) issues an opaque token for a fixed lifetime, in
//! the shape of an OAuth2 client-credentials response. With
//! [`Backend::require_client`] it answers like an OAuth2 token endpoint:
//! only to a `grant_type=client_credentials` POST that authenticates with
//! HTTP Basic (`client_secret_basic`), and `401 invalid_client` otherwise. `GET /protected`
//! answers 200 only with a known, unexpired bearer token and 401 otherwise.
//!
//! Audiences: `/token?audience=A` issues a token for audience `A` alone, and
//! `GET /api/A/...` answers 200 only to a live token issued for `A` (a token
//! for another audience is a 401 that the backend also counts, see
//! [`Backend::crossed`]).

// Each example and test compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::convert::Infallible;
use std::hash::{BuildHasher, Hasher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tower::BoxError;
use tower_bearer::Token;

/// The plain HTTP client the examples wrap with the layer.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A new plain HTTP client.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A running mock backend. Dropping it stops the server.
pub struct Backend {
    addr: SocketAddr,
    token_url: Uri,
    protected_url: Uri,
    state: Arc<State>,
    server: JoinHandle<()>,
}

struct State {
    lifetime: Duration,
    /// The `Authorization` value the token endpoint requires, if any.
    client: Mutex<Option<String>>,
    latency: Mutex<Duration>,
    /// Each fetch waits a further random `[0, max]`, drawn from this seed.
    jitter: Mutex<Option<(Duration, u64)>>,
    tokens: Mutex<Tokens>,
}

#[derive(Default)]
struct Tokens {
    issued: u64,
    live: HashMap<String, Issued>,
    /// Requests to an audience's API with another audience's token.
    crossed: u64,
}

struct Issued {
    number: u64,
    expires_at: Instant,
    audience: Option<String>,
}

impl Backend {
    /// Binds a free port on 127.0.0.1 and serves on the current tokio runtime.
    ///
    /// `expires_in` is sent in whole seconds, so give `token_lifetime` whole
    /// seconds too; the backend itself enforces the exact lifetime.
    pub async fn start(token_lifetime: Duration) -> Result<Self, BoxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            lifetime: token_lifetime,
            client: Mutex::new(None),
            latency: Mutex::new(Duration::ZERO),
            jitter: Mutex::new(None),
            tokens: Mutex::new(Tokens::default()),
        });
        let server = tokio::spawn(serve(listener, state.clone()));
        Ok(Self {
            addr,
            token_url: format!("http://{addr}/token").parse()?,
            protected_url: format!("http://{addr}/protected").parse()?,
            state,
            server,
        })
    }

    /// Makes the token endpoint wait this long before answering, so that
    /// concurrent callers really do overlap with the fetch.
    pub fn with_latency(self, latency: Duration) -> Self {
        *lock(&self.state.latency) = latency;
        self
    }

    /// Makes each fetch wait a further random delay in `[0, max]`, drawn
    /// from `seed`, so that concurrent fetches finish in a shuffled order.
    pub fn with_random_latency(self, max: Duration, seed: u64) -> Self {
        *lock(&self.state.jitter) = Some((max, seed));
        self
    }

    /// The token endpoint for `audience`.
    pub fn token_url_for(&self, audience: &str) -> Uri {
        format!("http://{}/token?audience={audience}", self.addr)
            .parse()
            .expect("an audience is a URL-safe word")
    }

    /// A resource of `audience`'s API, which accepts only that audience's
    /// tokens.
    pub fn api_url(&self, audience: &str) -> Uri {
        format!("http://{}/api/{audience}/items", self.addr)
            .parse()
            .expect("an audience is a URL-safe word")
    }

    /// How many requests reached an audience's API with a token issued for
    /// another audience.
    pub fn crossed(&self) -> u64 {
        lock(&self.state.tokens).crossed
    }

    /// Makes the token endpoint an OAuth2 client-credentials endpoint that
    /// only issues tokens to this client, authenticated with HTTP Basic. Keep
    /// the id and secret to letters, digits and `-._*`, which form-encoding
    /// leaves as they are.
    pub fn require_client(self, id: &str, secret: &str) -> Self {
        let basic = format!("Basic {}", base64(format!("{id}:{secret}").as_bytes()));
        *lock(&self.state.client) = Some(basic);
        self
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> Uri {
        self.token_url.clone()
    }

    /// The resource that requires a bearer token.
    pub fn protected_url(&self) -> Uri {
        self.protected_url.clone()
    }

    /// How many tokens the token endpoint has issued.
    pub fn fetch_count(&self) -> u64 {
        lock(&self.state.tokens).issued
    }

    /// Forgets every token issued so far, as a server-side revocation would:
    /// they are rejected with 401 from now on.
    pub fn revoke_all(&self) {
        lock(&self.state.tokens).live.clear();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        // The connection tasks live in a `JoinSet` owned by this task, so
        // aborting it closes them as well.
        self.server.abort();
    }
}

/// Asks the token endpoint for a token, the way an OAuth2 client would.
///
/// This is what the examples use as the layer's token source.
pub async fn fetch_token(client: HttpClient, token_url: Uri) -> Result<Token, BoxError> {
    let request = Request::post(token_url).body(Full::default())?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status != StatusCode::OK {
        return Err(format!("token endpoint answered {status}").into());
    }
    let body = std::str::from_utf8(&body)?;
    let access_token = json_string(body, "access_token").ok_or("no access_token in response")?;
    let expires_in = json_u64(body, "expires_in").ok_or("no expires_in in response")?;
    Ok(Token::new(access_token).expires_in(Duration::from_secs(expires_in)))
}

// ===== server =====

async fn serve(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}

        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Usually transient (out of file descriptors): back off
                // instead of spinning or giving up.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let state = state.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, request).await) }
            });
            // A client hanging up mid-request is not the backend's problem.
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let audience = request
        .uri()
        .query()
        .and_then(|query| query.strip_prefix("audience="))
        .map(str::to_owned);
    match (request.method(), request.uri().path()) {
        (&Method::POST | &Method::GET, "/token") => {
            if let Some(rejection) = check_client(state, request).await {
                return rejection;
            }
            issue_token(state, audience).await
        }
        (&Method::GET, "/protected") => protected(state, &request, None),
        (&Method::GET, path) if path.starts_with("/api/") => {
            let audience = path["/api/".len()..].split('/').next().unwrap_or("");
            protected(state, &request, Some(audience))
        }
        _ => text(StatusCode::NOT_FOUND, "not found"),
    }
}

/// With [`Backend::require_client`], the OAuth2 error response (RFC 6749
/// §5.2) for a request that is not a client-credentials grant by that client.
async fn check_client(state: &State, request: Request<Incoming>) -> Option<Response<Full<Bytes>>> {
    let expected = lock(&state.client).clone()?;
    let authorized = request
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|value| value.as_bytes() == expected.as_bytes());
    let post = request.method() == Method::POST;
    let body = request.into_body().collect().await.ok()?.to_bytes();
    let grant = body
        .split(|b| *b == b'&')
        .any(|pair| pair == b"grant_type=client_credentials");
    let (status, error) = match (post && grant, authorized) {
        (false, _) => (StatusCode::BAD_REQUEST, "unsupported_grant_type"),
        (true, false) => (StatusCode::UNAUTHORIZED, "invalid_client"),
        (true, true) => return None,
    };
    let body = format!(r#"{{"error":"{error}"}}"#);
    let mut response = text(status, body);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Some(response)
}

/// Standard base64, padded.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn issue_token(state: &State, audience: Option<String>) -> Response<Full<Bytes>> {
    let mut latency = *lock(&state.latency);
    if let Some((max, seed)) = lock(&state.jitter).as_mut() {
        *seed = splitmix(*seed);
        let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
        latency += Duration::from_nanos(*seed % nanos.saturating_add(1));
    }
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }

    let now = Instant::now();
    let mut tokens = lock(&state.tokens);
    tokens.live.retain(|_, issued| issued.expires_at > now);
    tokens.issued += 1;
    let number = tokens.issued;
    let access_token = match &audience {
        Some(audience) => format!("tok-{audience}-{number}-{:016x}", random_u64(number)),
        None => format!("tok-{number}-{:016x}", random_u64(number)),
    };
    tokens.live.insert(
        access_token.clone(),
        Issued {
            number,
            expires_at: now + state.lifetime,
            audience,
        },
    );
    drop(tokens);

    let body = format!(
        r#"{{"access_token":"{access_token}","token_type":"Bearer","expires_in":{}}}"#,
        state.lifetime.as_secs()
    );
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// With `audience`, only a token issued for it is accepted.
fn protected(
    state: &State,
    request: &Request<Incoming>,
    audience: Option<&str>,
) -> Response<Full<Bytes>> {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let Some(presented) = presented else {
        return unauthorized("missing bearer token");
    };

    let mut tokens = lock(&state.tokens);
    if let (Some(wanted), Some(issued)) = (audience, tokens.live.get(presented)) {
        if issued.audience.as_deref() != Some(wanted) {
            tokens.crossed += 1;
            return unauthorized("token for another audience");
        }
    }
    match tokens.live.get(presented) {
        Some(issued) if Instant::now() < issued.expires_at => match audience {
            Some(audience) => text(
                StatusCode::OK,
                format!("hello {audience}, token #{}", issued.number),
            ),
            None => text(StatusCode::OK, format!("hello, token #{}", issued.number)),
        },
        Some(_) => unauthorized("token expired"),
        None => unauthorized("unknown token"),
    }
}

fn unauthorized(reason: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::UNAUTHORIZED, reason);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer error="invalid_token""#),
    );
    response
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

// Every `RandomState` gets fresh random keys: unguessable enough for a mock,
// without pulling in a random number crate.
fn random_u64(seed: u64) -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(seed);
    hasher.finish()
}

fn splitmix(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// A handler that panicked cannot leave the maps half-updated in a way that
// matters here, so a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

// ===== minimal JSON field extraction =====

/// The string value of `"key": "..."` in a flat JSON object. Escapes are not
/// decoded: tokens are opaque ASCII.
fn json_string<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let rest = json_value(json, key)?.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

/// The unsigned integer value of `"key": 123` in a flat JSON object.
fn json_u64(json: &str, key: &str) -> Option<u64> {
    let rest = json_value(json, key)?;
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What follows `"key":`, with leading whitespace removed.
fn json_value<'a>(json: &'a str, key: &str) -> Option<&'a str> {
    let quoted = format!("\"{key}\"");
    let after_key = &json[json.find(&quoted)? + quoted.len()..];
    let after_colon = after_key.trim_start().strip_prefix(':')?;
    Some(after_colon.trim_start())
}
