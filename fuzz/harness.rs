//! The fuzzing harness for the OAuth2 token-response parser and the
//! `Retry-After` parser, shared by the cargo-fuzz targets in `fuzz/` and by
//! `tests/oauth2_fuzz.rs`, which runs it under `cargo test` with proptest.
//!
//! It drives the public API only: a `ClientCredentials` whose HTTP client
//! answers with the fuzzer's status, headers and body, fetched once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use tower_bearer::oauth2::{self, ClientCredentials};
use tower_bearer::{Token, TokenSource};

/// The client's credentials in every fetch: never to be seen in an error.
pub const CLIENT_ID: &str = "fuzz client";
pub const SECRET: &str = "fuzz-s3cret/+=%x";

/// The statuses an input's first byte picks from.
const STATUSES: [u16; 12] = [200, 201, 204, 301, 400, 401, 403, 408, 429, 500, 502, 503];

/// One answer of the token endpoint.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<Vec<u8>>,
    pub retry_after: Option<Vec<u8>>,
    pub body: Vec<u8>,
}

impl Answer {
    /// Splits raw fuzzer bytes: a status byte, then `Retry-After` and
    /// `Content-Type` up to a `\n` each, then the body.
    pub fn from_bytes(data: &[u8]) -> Self {
        let (status, rest) = data.split_first().unwrap_or((&0, &[]));
        let mut parts = rest.splitn(3, |&b| b == b'\n');
        let retry_after = parts.next().map(<[u8]>::to_vec);
        let content_type = parts.next().map(<[u8]>::to_vec);
        let body = parts.next().unwrap_or_default().to_vec();
        Self {
            status: STATUSES[usize::from(*status) % STATUSES.len()],
            content_type,
            retry_after,
            body,
        }
    }
}

/// Fetches once from a source whose endpoint gives `answer`, and checks
/// that no error shows the secret. Panics (the fuzzer's finding) if it
/// does, or if anything on the way panics.
pub fn token_response(answer: &Answer) -> Result<Token, oauth2::Error> {
    let result = fetch(answer);
    if let Err(error) = &result {
        let shown = shown(error);
        assert!(!shown.contains(SECRET), "the secret in an error: {shown}");
    }
    result
}

/// The `Retry-After` an error status with this header value gives.
pub fn retry_after(value: &[u8]) -> Option<Duration> {
    let answer = Answer {
        status: 503,
        content_type: None,
        retry_after: Some(value.to_vec()),
        body: Vec::new(),
    };
    fetch(&answer).err().and_then(|error| error.retry_after())
}

/// Everything an error shows: `Display`, `Debug`, and its `source()` chain.
pub fn shown(error: &(dyn std::error::Error + 'static)) -> String {
    let mut shown = format!("{error} {error:?}");
    let mut source = error.source();
    while let Some(error) = source {
        shown.push_str(&format!(" {error} {error:?}"));
        source = error.source();
    }
    shown
}

fn fetch(answer: &Answer) -> Result<Token, oauth2::Error> {
    let answer = answer.clone();
    let client = tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let mut response = Response::new(Full::new(Bytes::from(answer.body.clone())));
        *response.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::OK);
        for (name, value) in [
            (http::header::RETRY_AFTER, &answer.retry_after),
            (http::header::CONTENT_TYPE, &answer.content_type),
        ] {
            if let Some(value) = value
                .as_deref()
                .and_then(|v| HeaderValue::from_bytes(v).ok())
            {
                response.headers_mut().insert(name, value);
            }
        }
        std::future::ready(Ok::<_, Infallible>(response))
    });
    let source = ClientCredentials::new("https://idp.example.com/token", CLIENT_ID, SECRET)
        .http_client(client);
    block_on(source.fetch())
}

/// The fetch never waits on anything but the client above, which is ready
/// at once: polling it is enough, no runtime needed.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}
