//! `ClientCredentials` against an in-process hyper token endpoint that
//! misbehaves on purpose.
#![cfg(feature = "oauth2")]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{HeaderValue, AUTHORIZATION};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::{advance, Instant};
use tower_bearer::oauth2::{self, ClientCredentials, ErrorKind};
use tower_bearer::{TokenCache, TokenError, TokenErrorKind};

const SECRET: &str = "s3cret-value";
const TOKEN: &str = r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":3600}"#;

/// What the endpoint does with the next request.
enum Reply {
    Status(u16, Vec<(&'static str, &'static str)>, &'static str),
    /// Never answers.
    Hang,
    /// Waits, then answers.
    After(Duration, &'static str),
    /// A body of this many bytes, without a declared length.
    Endless(usize),
    /// A body of this many bytes, with its length declared.
    Huge(usize),
}

fn ok(body: &'static str) -> Reply {
    Reply::Status(200, vec![("content-type", "application/json")], body)
}

/// What the endpoint received.
#[derive(Debug)]
struct Received {
    headers: HeaderMap,
    body: String,
}

struct Endpoint {
    addr: SocketAddr,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
    server: JoinHandle<()>,
}

impl Endpoint {
    async fn start(replies: impl IntoIterator<Item = Reply>) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let replies = Arc::new(Mutex::new(replies.into_iter().collect::<VecDeque<_>>()));
        let received = Arc::new(Mutex::new(Vec::new()));
        let server = tokio::spawn({
            let (replies, received) = (replies.clone(), received.clone());
            async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let (replies, received) = (replies.clone(), received.clone());
                    tokio::spawn(async move {
                        let service = service_fn(move |request| {
                            answer(request, replies.clone(), received.clone())
                        });
                        let _ = http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        });
        Self {
            addr,
            replies,
            received,
            server,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    fn source(&self) -> ClientCredentials {
        ClientCredentials::new(self.url(), "client", SECRET)
    }

    fn requests(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    fn then(&self, reply: Reply) {
        self.replies.lock().unwrap().push_back(reply);
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    replies: Arc<Mutex<VecDeque<Reply>>>,
    received: Arc<Mutex<Vec<Received>>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    received.lock().unwrap().push(Received {
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    });
    let reply = replies.lock().unwrap().pop_front().unwrap_or(Reply::Hang);
    let (status, headers, body) = match reply {
        Reply::Status(status, headers, body) => (status, headers, Full::from(body).boxed()),
        Reply::Hang => std::future::pending().await,
        Reply::After(delay, body) => {
            tokio::time::sleep(delay).await;
            (200, vec![], Full::from(body).boxed())
        }
        Reply::Endless(size) => (200, vec![], Chunks(size).boxed()),
        Reply::Huge(size) => (200, vec![], Full::from(vec![b'{'; size]).boxed()),
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    Ok(response)
}

/// `n` bytes of JSON-ish text in 8 KiB chunks, with no declared length.
struct Chunks(usize);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let chunk = self.0.min(8192);
        if chunk == 0 {
            return Poll::Ready(None);
        }
        self.0 -= chunk;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(vec![b' '; chunk])))))
    }
}

/// The oauth2 error behind a failed fetch.
fn cause(error: &TokenError) -> &oauth2::Error {
    std::error::Error::source(error.last_failure())
        .and_then(|source| source.downcast_ref::<oauth2::Error>())
        .unwrap_or_else(|| panic!("not an oauth2 error: {error:?}"))
}

async fn fails(cache: &TokenCache) -> TokenError {
    let error = cache.token().await.expect_err("the fetch fails");
    let text = format!("{error:?} {} {}", error, cause(&error));
    assert!(!text.contains(SECRET), "{text}");
    error
}

const SECS: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(start_paused = true)]
async fn a_500_then_success() {
    let endpoint = Endpoint::start([
        Reply::Status(
            500,
            vec![("content-type", "text/html")],
            "<html><h1>Internal Server Error</h1></html>",
        ),
        ok(TOKEN),
    ])
    .await;
    let cache = TokenCache::new(endpoint.source());

    let error = fails(&cache).await;
    assert_eq!(error.kind(), TokenErrorKind::Fetch);
    assert!(!error.is_permanent());
    let cause = cause(&error);
    assert_eq!(cause.kind(), ErrorKind::Status);
    assert_eq!(cause.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        cause.to_string(),
        "token endpoint answered 500 Internal Server Error (text/html, 43 bytes)"
    );

    // The first backoff is at most a second.
    advance(SECS(1)).await;
    let token = cache.token().await.unwrap();
    assert_eq!(token.secret(), "tok-1");
    assert_eq!(endpoint.requests(), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_on_429_and_503_holds_the_next_fetch_back() {
    for status in [429, 503] {
        let endpoint = Endpoint::start([
            Reply::Status(
                status,
                vec![("retry-after", "120")],
                r#"{"error":"slow_down"}"#,
            ),
            ok(TOKEN),
        ])
        .await;
        let cache = TokenCache::new(endpoint.source());
        let start = Instant::now();

        let error = fails(&cache).await;
        assert!(!error.is_permanent());
        assert_eq!(cause(&error).retry_after(), Some(SECS(120)));
        assert_eq!(cause(&error).response().unwrap().error(), "slow_down");
        let retry_at = error.retry_at().unwrap();
        assert!(retry_at >= start + SECS(120), "{status}");

        // Long past the cache's own backoff, still waiting for the server.
        advance(SECS(100)).await;
        assert_eq!(fails(&cache).await.kind(), TokenErrorKind::BackingOff);
        assert_eq!(endpoint.requests(), 1);

        advance(retry_at - Instant::now()).await;
        assert_eq!(cache.token().await.unwrap().secret(), "tok-1");
        assert_eq!(endpoint.requests(), 2);
    }
}

/// Real time: the request must really reach the server before the timeout.
#[tokio::test]
async fn a_server_that_hangs_meets_the_fetch_timeout() {
    let endpoint = Endpoint::start([Reply::Hang]).await;
    let cache = TokenCache::new(endpoint.source()).fetch_timeout(Duration::from_millis(300));

    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Timeout);
    assert_eq!(endpoint.requests(), 1);
}

#[tokio::test(start_paused = true)]
async fn expiry_counts_from_the_start_of_the_request() {
    let endpoint = Endpoint::start([Reply::After(SECS(3), TOKEN)]).await;
    let cache = TokenCache::new(endpoint.source());
    let start = Instant::now();

    let token = cache.token().await.unwrap();
    assert!(Instant::now() >= start + SECS(3));
    // 3600 s from when the request started, not from when it was answered.
    assert_eq!(token.expiry(), Some(start + SECS(3600)));
}

#[tokio::test(start_paused = true)]
async fn garbage_and_truncated_json_are_clear_errors() {
    for (body, expected) in [
        (
            "Hello, world!",
            "invalid token response: not JSON (at line 1, column 1); application/json, 13 bytes",
        ),
        (
            r#"{"access_token":"tok-secret-part","token_type":"Bea"#,
            "invalid token response: not JSON (at line 1, column 51); application/json, 51 bytes",
        ),
        (
            "<!DOCTYPE html>\n<title>Sign in</title>",
            "invalid token response: not JSON (at line 1, column 1); application/json, 38 bytes",
        ),
        (
            "access_token=tok-secret-part&token_type=bearer",
            "invalid token response: not JSON (at line 1, column 1); application/json, 46 bytes",
        ),
    ] {
        let endpoint = Endpoint::start([ok(body)]).await;
        let cache = TokenCache::new(endpoint.source());
        let error = fails(&cache).await;
        assert!(!error.is_permanent());
        let cause = cause(&error);
        assert_eq!(cause.kind(), ErrorKind::InvalidResponse);
        assert_eq!(cause.to_string(), expected);
    }
}

#[tokio::test(start_paused = true)]
async fn a_token_that_is_not_bearer_is_a_permanent_error() {
    let endpoint = Endpoint::start([ok(
        r#"{"access_token":"tok-1","token_type":"N_A","expires_in":60}"#,
    )])
    .await;
    let cache = TokenCache::new(endpoint.source());
    let start = Instant::now();

    let error = fails(&cache).await;
    assert!(error.is_permanent());
    // Permanent: straight to the maximum backoff.
    assert_eq!(error.retry_at(), Some(start + SECS(30)));
    assert_eq!(cause(&error).kind(), ErrorKind::UnsupportedTokenType);
    assert!(!cause(&error).to_string().contains("tok-1"));
}

#[tokio::test(start_paused = true)]
async fn a_body_over_64_kib_is_refused() {
    for reply in [Reply::Huge(64 * 1024 + 1), Reply::Endless(10 * 1024 * 1024)] {
        let endpoint = Endpoint::start([reply]).await;
        let cache = TokenCache::new(endpoint.source());
        let error = fails(&cache).await;
        assert_eq!(cause(&error).kind(), ErrorKind::BodyTooLarge);
        assert_eq!(
            cause(&error).to_string(),
            "invalid token response: the response body is larger than 64 KiB"
        );
    }
    // 64 KiB of padding around a token is still read.
    let mut padded = String::from(TOKEN);
    padded.insert_str(1, &" ".repeat(64 * 1024 - TOKEN.len()));
    let endpoint = Endpoint::start([ok(padded.leak())]).await;
    assert_eq!(
        TokenCache::new(endpoint.source())
            .token()
            .await
            .unwrap()
            .secret(),
        "tok-1"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unsupported_expires_in_is_a_clear_error() {
    let endpoint = Endpoint::start([ok(
        r#"{"access_token":"tok-1","token_type":"Bearer","expires_in":"1 hour"}"#,
    )])
    .await;
    let cache = TokenCache::new(endpoint.source());
    let error = fails(&cache).await;
    assert_eq!(cause(&error).kind(), ErrorKind::InvalidResponse);
    assert_eq!(
        cause(&error).to_string(),
        "invalid token response: expires_in is a string, not a non-negative number of seconds"
    );
    // A numeric string is fine.
    endpoint.then(ok(
        r#"{"access_token":"tok-2","token_type":"bearer","expires_in":"60"}"#,
    ));
    advance(SECS(1)).await;
    let start = Instant::now();
    let token = cache.token().await.unwrap();
    assert_eq!(token.expiry(), Some(start + SECS(60)));
}

#[tokio::test(start_paused = true)]
async fn the_request_on_the_wire() {
    let endpoint = Endpoint::start([ok(TOKEN)]).await;
    let source = ClientCredentials::new(endpoint.url(), "my id", "pa:ss word")
        .scopes(["a", "b"])
        .audience("https://api.example");
    TokenCache::new(source).token().await.unwrap();

    let received = endpoint.received.lock().unwrap();
    let request = &received[0];
    assert_eq!(
        request.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    assert_eq!(request.headers["accept"], "application/json");
    let basic = request.headers[AUTHORIZATION].to_str().unwrap();
    let basic = base64::engine::general_purpose::STANDARD
        .decode(basic.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(basic, b"my+id:pa%3Ass+word");
    assert_eq!(
        request.body,
        "grant_type=client_credentials&scope=a+b&audience=https%3A%2F%2Fapi.example"
    );
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    // Bound but not listening: the port stays ours, and a connection to it
    // is refused, for as long as the socket lives.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let cache = TokenCache::new(ClientCredentials::new(
        format!("http://{addr}/token"),
        "id",
        SECRET,
    ));
    let error = fails(&cache).await;
    assert!(!error.is_permanent());
    assert_eq!(cause(&error).kind(), ErrorKind::Transport);
    let refused = std::error::Error::source(cause(&error))
        .map(|source| format!("{source:?}"))
        .unwrap_or_default();
    assert!(refused.contains("ConnectionRefused"), "{refused}");
    drop(socket);
}

type Answered = Response<Full<Bytes>>;

/// A client that counts the requests it is asked to send, and answers a
/// token.
fn counting_client(
    sent: Arc<AtomicUsize>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Answered,
    Error = Infallible,
    Future = std::future::Ready<Result<Answered, Infallible>>,
> + Clone {
    tower::service_fn(move |_request| {
        sent.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(Full::from(TOKEN))))
    })
}

#[tokio::test]
async fn a_url_that_is_not_allowed_fails_without_a_request() {
    let sent = Arc::new(AtomicUsize::new(0));
    let cache = TokenCache::new(
        ClientCredentials::new("http://idp.example.com/token", "id", SECRET)
            .http_client(counting_client(sent.clone())),
    );
    let error = fails(&cache).await;
    assert!(error.is_permanent());
    assert_eq!(cause(&error).kind(), ErrorKind::Config);
    assert_eq!(sent.load(Ordering::SeqCst), 0);

    // The same client is used once the URL is allowed.
    let cache = TokenCache::new(
        ClientCredentials::new("http://idp.example.com/token", "id", SECRET)
            .allow_insecure_http(true)
            .http_client(counting_client(sent.clone())),
    );
    assert_eq!(cache.token().await.unwrap().secret(), "tok-1");
    assert_eq!(sent.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_that_arrives_already_expired_is_a_failure() {
    let endpoint = Endpoint::start([
        ok(r#"{"access_token":"tok-0","token_type":"Bearer","expires_in":0}"#),
        ok(TOKEN),
    ])
    .await;
    let cache = TokenCache::new(endpoint.source());
    let error = cache.token().await.unwrap_err();
    assert_eq!(error.kind(), TokenErrorKind::Expired, "{error:?}");
    assert_eq!(cache.stats().failures, 1);
    assert!(error.retry_at().is_some(), "it backs off like any failure");
    // The usual backoff, then a good token.
    advance(SECS(1)).await;
    assert_eq!(cache.token().await.unwrap().secret(), "tok-1");
}

#[tokio::test(start_paused = true)]
async fn invalid_request_and_invalid_target_are_permanent() {
    for code in [
        r#"{"error":"invalid_request"}"#,
        r#"{"error":"invalid_target"}"#,
    ] {
        let endpoint = Endpoint::start([Reply::Status(400, vec![], code)]).await;
        let cache = TokenCache::new(endpoint.source());
        let start = Instant::now();
        let error = fails(&cache).await;
        assert!(error.is_permanent(), "{code}");
        assert_eq!(cause(&error).kind(), ErrorKind::Rejected);
        assert_eq!(error.retry_at(), Some(start + SECS(30)), "{code}");
    }
    // Whereas a code that is not in the list is not.
    let endpoint = Endpoint::start([Reply::Status(400, vec![], r#"{"error":"slow_down"}"#)]).await;
    assert!(!fails(&TokenCache::new(endpoint.source()))
        .await
        .is_permanent());
}

#[tokio::test(start_paused = true)]
async fn a_redirect_is_permanent_and_not_followed() {
    for status in [301, 302, 307, 308] {
        let endpoint = Endpoint::start([Reply::Status(
            status,
            vec![("location", "http://127.0.0.1:1/elsewhere")],
            "",
        )])
        .await;
        let cache = TokenCache::new(endpoint.source());
        let error = fails(&cache).await;
        assert!(error.is_permanent(), "{status}");
        assert_eq!(cause(&error).kind(), ErrorKind::Status);
        assert_eq!(cause(&error).status().map(|s| s.as_u16()), Some(status));
        assert_eq!(endpoint.requests(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn refresh_and_id_tokens_are_masked_wherever_they_are_quoted() {
    const REFRESH: &str = "rt-8f14e45fceea167a";
    const ID_TOKEN: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.";
    for body in [
        // Echoed in the description.
        r#"{"error":"invalid_grant","error_description":"rt-8f14e45fceea167a and eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0. are not for you","refresh_token":"rt-8f14e45fceea167a","id_token":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."}"#,
        // Cut short.
        r#"{"refresh_token":"rt-8f14e45fceea167a","id_token":"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."#,
    ] {
        let endpoint = Endpoint::start([Reply::Status(400, vec![], body)]).await;
        let error = fails(&TokenCache::new(endpoint.source())).await;
        let cause = cause(&error);
        let text = format!("{error} {error:?} {cause} {cause:?}");
        assert!(
            !text.contains(REFRESH) && !text.contains(ID_TOKEN),
            "{text}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn the_default_lifetime_is_an_hour_and_can_be_set() {
    let opaque = r#"{"access_token":"opaque-1","token_type":"Bearer"}"#;
    let endpoint = Endpoint::start([ok(opaque), ok(opaque)]).await;
    let start = Instant::now();
    let token = TokenCache::new(endpoint.source()).token().await.unwrap();
    assert_eq!(token.expiry(), Some(start + SECS(3600)));
    assert_eq!(ClientCredentials::DEFAULT_LIFETIME, SECS(3600));

    let source = endpoint.source().default_lifetime(SECS(600));
    let token = TokenCache::new(source).token().await.unwrap();
    assert_eq!(token.expiry(), Some(start + SECS(600)));
}

/// Without `rustls`, the built-in client cannot speak https: the fetch
/// fails with a permanent `Config` error, before any connection. Run with
/// `cargo test --no-default-features --features oauth2 --test oauth2_faults`.
#[cfg(not(feature = "rustls"))]
#[tokio::test]
async fn https_without_rustls_is_a_config_error() {
    let endpoint = Endpoint::start([ok(TOKEN)]).await;
    let url = format!("https://{}/token", endpoint.addr);
    let cache = TokenCache::new(ClientCredentials::new(url, "id", SECRET));
    let error = fails(&cache).await;
    assert!(error.is_permanent());
    assert_eq!(cause(&error).kind(), ErrorKind::Config);
    assert!(cause(&error).to_string().contains("`rustls` feature"));
    assert_eq!(endpoint.requests(), 0);
}

/// https goes through rustls: a plain-http server on the other end fails
/// the handshake.
#[cfg(feature = "rustls")]
#[tokio::test]
async fn https_uses_tls() {
    let endpoint = Endpoint::start([ok(TOKEN)]).await;
    let url = format!("https://{}/token", endpoint.addr);
    let cache = TokenCache::new(ClientCredentials::new(url, "id", SECRET));
    let error = fails(&cache).await;
    assert_eq!(cause(&error).kind(), ErrorKind::Transport);
    assert_eq!(endpoint.requests(), 0);
}
