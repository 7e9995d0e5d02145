//! [`ReplayBody`]: a request body recorded as it is sent, so that a retry
//! can send it again; and its [`Error`].

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::HeaderMap;
use http_body::{Body, Frame};

use crate::BoxError;

/// A request body that a retry can send again: tonic's bodies cannot be
/// copied, so wrap them in this before
/// [`RetryOnUnauthenticated::replaying`](super::RetryOnUnauthenticated::replaying).
///
/// The first attempt reads the inner body and records what it reads, up to
/// `max_bytes` of data. A copy ([`try_clone`](Self::try_clone)) replays the
/// recording, then, if the first attempt stopped before the end, takes over
/// reading the inner body where it stopped (the first attempt's body then
/// fails if it is polled again: its call is over). A body larger than
/// `max_bytes`, or one that failed, cannot be replayed: the policy does not
/// retry it, and a copy made earlier fails with a [`Error`].
///
/// Nothing is recorded beyond `max_bytes`, so a long client stream costs at
/// most that much memory while its call lasts.
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Recording<B>>>,
    id: u64,
    // Frames of the recording this handle has yielded.
    position: usize,
    trailers_sent: bool,
}

struct Recording<B> {
    inner: Pin<Box<B>>,
    frames: Vec<Bytes>,
    trailers: Option<HeaderMap>,
    size: usize,
    max: usize,
    // The inner body ended: the recording is whole.
    ended: bool,
    // The recording is missing a part, for good: over `max`, or a failure.
    lost: bool,
    // The handle that reads the inner body, and the last handle made.
    reader: u64,
    handles: u64,
}

/// A [`ReplayBody`] could not be sent again: it was larger than its limit,
/// it failed, or a later attempt took it over.
#[derive(Debug)]
pub struct Error(&'static str);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Error {}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    /// Wraps `body`, recording up to `max_bytes` of its data for a replay.
    pub fn new(body: B, max_bytes: usize) -> Self {
        let recording = Recording {
            inner: Box::pin(body),
            frames: Vec::new(),
            trailers: None,
            size: 0,
            max: max_bytes,
            ended: false,
            lost: false,
            reader: 0,
            handles: 1,
        };
        Self::handle(Arc::new(Mutex::new(recording)), 1)
    }

    fn handle(shared: Arc<Mutex<Recording<B>>>, id: u64) -> Self {
        Self {
            shared,
            id,
            position: 0,
            trailers_sent: false,
        }
    }

    /// A copy that sends the body again from its start; `None` if it can no
    /// longer be replayed.
    pub fn try_clone(&self) -> Option<Self> {
        let mut recording = lock(&self.shared);
        if recording.lost {
            return None;
        }
        recording.handles += 1;
        let id = recording.handles;
        drop(recording);
        Some(Self::handle(self.shared.clone(), id))
    }

    /// Whether the body can still be sent again from its start.
    pub fn replayable(&self) -> bool {
        !lock(&self.shared).lost
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Self {
            shared,
            id,
            position,
            trailers_sent,
        } = self.get_mut();
        let mut recording = lock(shared);
        if recording.reader != *id {
            if recording.reader > *id {
                return Poll::Ready(Some(Err(Error("a retry took this body over").into())));
            }
            // Not read yet by this handle: the recording first.
            if recording.lost {
                return Poll::Ready(Some(Err(Error("the body cannot be replayed").into())));
            }
            if let Some(data) = recording.frames.get(*position) {
                *position += 1;
                return Poll::Ready(Some(Ok(Frame::data(data.clone()))));
            }
            // The rest is still in the inner body: this handle reads it now.
            recording.reader = *id;
        }
        if recording.ended {
            return Poll::Ready(recording.trailers_for(trailers_sent));
        }
        let frame = match ready!(recording.inner.as_mut().poll_frame(cx)) {
            None => {
                recording.ended = true;
                return Poll::Ready(recording.trailers_for(trailers_sent));
            }
            Some(Err(error)) => {
                recording.lost = true;
                recording.frames = Vec::new();
                return Poll::Ready(Some(Err(error.into())));
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                recording.record(&data);
                *position = recording.frames.len();
                Frame::data(data)
            }
            Err(frame) => {
                if let Some(trailers) = frame.trailers_ref() {
                    recording.trailers = Some(trailers.clone());
                    *trailers_sent = true;
                }
                frame
            }
        };
        if recording.inner.is_end_stream() {
            recording.ended = true;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let recording = lock(&self.shared);
        recording.ended
            && !recording.lost
            && self.position >= recording.frames.len()
            && (recording.trailers.is_none() || self.trailers_sent)
    }
}

impl<B> Recording<B> {
    /// The end of the body for a handle that has yielded every frame: the
    /// trailers, unless it already sent them.
    fn trailers_for(&self, sent: &mut bool) -> Option<Result<Frame<Bytes>, BoxError>> {
        let trailers = self.trailers.as_ref().filter(|_| !*sent)?;
        *sent = true;
        Some(Ok(Frame::trailers(trailers.clone())))
    }

    fn record(&mut self, data: &Bytes) {
        if self.lost {
            return;
        }
        self.size = self.size.saturating_add(data.len());
        if self.size > self.max {
            self.lost = true;
            self.frames = Vec::new();
        } else {
            self.frames.push(data.clone());
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplayBody")
            .field("position", &self.position)
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use http_body::{Body, Frame};
    use http_body_util::BodyExt;

    use super::super::testing::*;
    use super::*;

    #[cfg(feature = "retry")]
    fn frames() -> Frames {
        Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"ab")),
            Frame::data(Bytes::from_static(b"cd")),
            Frame::trailers(headers(&[("x-checksum", "1")])),
        ]))
    }

    /// Polls `body` once, which must be ready.
    #[cfg(feature = "retry")]
    fn next<B: Body + Unpin>(body: &mut B) -> Option<Result<Frame<B::Data>, B::Error>> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match Pin::new(body).poll_frame(&mut cx) {
            Poll::Ready(frame) => frame,
            Poll::Pending => panic!("pending"),
        }
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_copy_replays_the_data_and_the_trailers() {
        let first = ReplayBody::new(frames(), 1024);
        let copy = first.try_clone().unwrap();
        let sent = first.collect().await.unwrap();
        assert!(!copy.is_end_stream() && copy.replayable());
        let again = copy.collect().await.unwrap();
        assert_eq!(again.trailers(), sent.trailers());
        assert_eq!(again.trailers().unwrap()["x-checksum"], "1");
        assert_eq!(again.to_bytes(), "abcd");
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_copy_takes_over_where_the_first_attempt_stopped() {
        let mut first = ReplayBody::new(frames(), 1024);
        let copy = first.try_clone().unwrap();
        let data = next(&mut first).unwrap().unwrap().into_data().unwrap();
        assert_eq!(data, "ab");
        let again = copy.collect().await.unwrap();
        assert_eq!(again.trailers().unwrap()["x-checksum"], "1");
        assert_eq!(again.to_bytes(), "abcd");
        // The first attempt's body is over.
        let error = next(&mut first).unwrap().unwrap_err();
        assert_eq!(error.to_string(), "a retry took this body over");
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_body_over_its_limit_is_not_replayable() {
        let first = ReplayBody::new(frames(), 3);
        let copy = first.try_clone().unwrap();
        let sent = first.collect().await.unwrap();
        assert_eq!(sent.to_bytes(), "abcd", "the first attempt is whole");
        assert!(!copy.replayable());
        assert!(copy.try_clone().is_none());
        let error = copy.collect().await.unwrap_err();
        assert_eq!(error.to_string(), "the body cannot be replayed");
    }

    #[cfg(feature = "retry")]
    #[tokio::test]
    async fn a_body_within_its_limit_is_replayable_to_the_byte() {
        let first = ReplayBody::new(frames(), 4);
        let copy = first.try_clone().unwrap();
        first.collect().await.unwrap();
        assert_eq!(copy.collect().await.unwrap().to_bytes(), "abcd");
    }
}
