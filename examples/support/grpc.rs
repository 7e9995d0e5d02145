//! A gRPC health service over loopback that requires a bearer token, and the
//! issuer of those tokens, for the tonic example and test. Not part of the
//! crate's API.

// The example and the test each use only part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};
use tonic::{Request, Status};
use tower::BoxError;
use tower_bearer::{Token, TokenSource};

/// Issues tokens and remembers which are valid until when, on tokio's clock.
#[derive(Clone)]
pub struct Issuer {
    state: Arc<State>,
}

struct State {
    lifetime: Duration,
    latency: Duration,
    failing: AtomicBool,
    issued: AtomicU64,
    checked: AtomicU64,
    live: Mutex<HashMap<String, Instant>>,
}

impl Issuer {
    /// Tokens valid for `lifetime`, each issued after `latency`.
    pub fn new(lifetime: Duration, latency: Duration) -> Self {
        Self {
            state: Arc::new(State {
                lifetime,
                latency,
                failing: AtomicBool::new(false),
                issued: AtomicU64::new(0),
                checked: AtomicU64::new(0),
                live: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The token source a client's cache fetches from.
    pub fn source(&self) -> impl TokenSource {
        let state = self.state.clone();
        move || {
            let state = state.clone();
            async move {
                tokio::time::sleep(state.latency).await;
                if state.failing.load(Ordering::SeqCst) {
                    return Err(std::io::Error::other("identity provider unavailable"));
                }
                let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
                let secret = format!("grpc-token-{n}-{:x}", n.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                let expires_at = Instant::now() + state.lifetime;
                lock(&state.live).insert(format!("Bearer {secret}"), expires_at);
                Ok(Token::new(secret).expires_in(state.lifetime))
            }
        }
    }

    /// Makes every later fetch fail (or succeed again).
    pub fn set_failing(&self, failing: bool) {
        self.state.failing.store(failing, Ordering::SeqCst);
    }

    /// Forgets every token issued so far: they are rejected from now on.
    pub fn revoke_all(&self) {
        lock(&self.state.live).clear();
    }

    /// How many tokens were issued.
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// How many calls reached the server.
    pub fn checked(&self) -> u64 {
        self.state.checked.load(Ordering::SeqCst)
    }

    /// The server side: the `authorization` metadata must be a live token.
    pub fn check(&self, request: Request<()>) -> Result<Request<()>, Status> {
        self.state.checked.fetch_add(1, Ordering::SeqCst);
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .ok_or_else(|| Status::unauthenticated("missing bearer token"))?;
        match lock(&self.state.live).get(presented) {
            Some(expires_at) if Instant::now() < *expires_at => Ok(request),
            Some(_) => Err(Status::unauthenticated("token expired")),
            None => Err(Status::unauthenticated("unknown token")),
        }
    }
}

/// Serves `grpc.health.v1.Health`, behind the issuer's check, on a free
/// port of 127.0.0.1. Abort the handle to stop it.
pub async fn serve(issuer: &Issuer) -> Result<(SocketAddr, JoinHandle<()>), BoxError> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let issuer = issuer.clone();
    let checked = InterceptedService::new(health, move |request| issuer.check(request));
    let server = Server::builder()
        .add_service(checked)
        .serve_with_incoming(TcpIncoming::from(listener));
    let handle = tokio::spawn(async move {
        // The server only stops when aborted; an error ends the example.
        if let Err(error) = server.await {
            eprintln!("grpc server: {error}");
        }
    });
    Ok((addr, handle))
}

/// A channel to `addr`.
pub async fn channel(addr: SocketAddr) -> Result<Channel, BoxError> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
