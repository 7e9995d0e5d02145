//! A scripted token source and an echoing inner service, shared by the tests.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Ready;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::AUTHORIZATION;
use http::{HeaderMap, Request, Response, StatusCode};
use tower::util::BoxCloneSyncService;
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};
use tower_bearer::{BearerAuthLayer, Token, TokenCache, TokenSource};

#[cfg(feature = "oauth2")]
pub mod idp;
#[path = "../../examples/support/schedule.rs"]
pub mod schedule;

/// What the next fetch does.
#[derive(Clone, Copy, Debug)]
pub enum Next {
    /// `token-N`, valid for the lifetime (or forever).
    Token(Option<Duration>),
    /// An error after the latency.
    Fail,
    /// Never answers.
    Hang,
    /// Panics after the latency.
    Panic,
    /// A token that is not a valid header value.
    Invalid,
}

/// A token source whose behaviour a test sets, and which counts its fetches.
#[derive(Clone)]
pub struct Script {
    fetches: Arc<AtomicUsize>,
    next: Arc<Mutex<Next>>,
    latency: Duration,
}

impl Script {
    pub fn new(lifetime: Option<Duration>, latency: Duration) -> Self {
        Self {
            fetches: Arc::default(),
            next: Arc::new(Mutex::new(Next::Token(lifetime))),
            latency,
        }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    pub fn set(&self, next: Next) {
        *self.next.lock().unwrap() = next;
    }

    pub fn source(&self) -> impl TokenSource {
        let script = self.clone();
        move || {
            let n = script.fetches.fetch_add(1, Ordering::SeqCst) + 1;
            let next = *script.next.lock().unwrap();
            let latency = script.latency;
            async move {
                tokio::time::sleep(latency).await;
                match next {
                    Next::Token(Some(lifetime)) => {
                        Ok(Token::new(format!("token-{n}")).expires_in(lifetime))
                    }
                    Next::Token(None) => Ok(Token::new(format!("token-{n}"))),
                    Next::Fail => Err(std::io::Error::other(format!("fetch {n} failed"))),
                    Next::Hang => std::future::pending().await,
                    Next::Panic => panic!("fetch {n} panicked"),
                    Next::Invalid => Ok(Token::new("bad\nvalue")),
                }
            }
        }
    }

    pub fn cache(&self) -> TokenCache {
        TokenCache::new(self.source())
    }
}

pub type Client = BoxCloneSyncService<Request<()>, Response<String>, BoxError>;

/// An inner service that answers 200 with the Authorization header it got as
/// the body, or 401 when that header is in `rejected`.
pub fn echo(rejected: Rejected) -> Client {
    echo_after(rejected, Duration::ZERO)
}

/// [`echo`], answering after `latency`.
pub fn echo_after(rejected: Rejected, latency: Duration) -> Client {
    BoxCloneSyncService::new(service_fn(move |request: Request<()>| {
        let auth = request
            .headers()
            .get(AUTHORIZATION)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let status = if rejected.lock().unwrap().contains(&auth) {
            StatusCode::UNAUTHORIZED
        } else {
            StatusCode::OK
        };
        async move {
            tokio::time::sleep(latency).await;
            let mut response = Response::new(auth);
            *response.status_mut() = status;
            Ok::<_, BoxError>(response)
        }
    }))
}

/// Header values the echo service rejects with 401.
pub type Rejected = Arc<Mutex<Vec<String>>>;

/// A client through `BearerAuth` over [`echo`].
pub fn client(cache: TokenCache, rejected: Rejected) -> Client {
    client_over(cache, echo(rejected))
}

/// A client through `BearerAuth` over `inner`.
pub fn client_over(cache: TokenCache, inner: Client) -> Client {
    BoxCloneSyncService::new(BearerAuthLayer::from_cache(cache).layer(inner))
}

/// Sends one request; returns the status and the Authorization header the
/// inner service saw.
pub async fn send(client: &Client) -> Result<(StatusCode, String), BoxError> {
    let response = client.clone().oneshot(Request::new(())).await?;
    Ok((response.status(), response.into_body()))
}

/// Sends `n` requests at once, each on a task of its own, and returns their
/// results in order.
pub async fn send_concurrently(
    client: &Client,
    n: usize,
) -> Vec<Result<(StatusCode, String), BoxError>> {
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { send(&client).await })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for request in requests {
        results.push(request.await.expect("request task panicked"));
    }
    results
}

/// The token a successful request carried.
pub async fn token_of(client: &Client) -> String {
    let (status, auth) = send(client).await.expect("request failed");
    assert_eq!(status, StatusCode::OK);
    auth.strip_prefix("Bearer ")
        .expect("bearer scheme")
        .to_owned()
}

/// Answers with the headers it received, and counts its calls.
#[derive(Clone, Debug, Default)]
pub struct Echo {
    calls: Arc<AtomicUsize>,
}

impl Echo {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<()>> for Echo {
    type Response = Response<HeaderMap>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(request.headers().clone())))
    }
}

/// The number in the environment variable `name`, or `default`; panics with
/// the variable's name if it is not a number.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
        Err(_) => default,
    }
}
