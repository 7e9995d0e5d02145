//! What the gRPC tests share: a counting cache, a body of ready frames,
//! and headers from pairs.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName};
use http::HeaderValue;
use http_body::{Body, Frame};

use crate::{Token, TokenCache};

pub(super) fn counting_cache() -> TokenCache {
    let fetches = Arc::new(AtomicUsize::new(0));
    TokenCache::new(move || {
        let n = fetches.fetch_add(1, Ordering::SeqCst) + 1;
        async move { Ok::<_, Infallible>(Token::new(format!("t{n}"))) }
    })
}

/// A body of the given frames, all ready at once.
pub(super) struct Frames(pub(super) VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }
}

pub(super) type Pairs = &'static [(&'static str, &'static str)];

pub(super) fn headers(pairs: Pairs) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

pub(super) const GRPC: (&str, &str) = ("content-type", "application/grpc");
pub(super) const UNAUTHENTICATED: (&str, &str) = ("grpc-status", "16");
