//! A request body that can be sent again: [`ReplayBody`] passes the client's body through
//! to the first attempt while keeping a copy of what went by, up to [`MAX_REPLAY_BYTES`];
//! a retry replays the copy and then goes on reading the client's body where the failed
//! attempt left it (an attempt that fails before its body is read, such as a refused
//! connect, hands the body back when it is dropped). A body larger than the limit stops
//! being copied, and its request cannot be retried. The copy is dropped as soon as no
//! retry can need it.

use super::super::body::{RequestBody, RequestBodyError};
use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;
use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

/// The most of a request body kept for a retry.
pub const MAX_REPLAY_BYTES: usize = 64 * 1024;

/// What the attempts of one request share.
struct Shared<B> {
    /// The data sent so far, while it fits the limit.
    data: Vec<Bytes>,
    bytes: usize,
    trailers: Option<HeaderMap>,
    /// Copying stopped (the body is larger than the limit, or no retry may follow).
    overflowed: bool,
    /// The client's body was read to its end.
    complete: bool,
    /// The client's body, when no attempt holds it.
    rest: Option<B>,
    limit: usize,
    /// How many retries replayed the copy.
    replays: usize,
}

/// One attempt's request body.
pub struct ReplayBody<B = RequestBody> {
    /// `None`: the body is only passed through (nothing may retry it).
    shared: Option<Arc<Mutex<Shared<B>>>>,
    /// How many of the copied chunks this attempt sent.
    replayed: usize,
    trailers_sent: bool,
    /// The client's body, while this attempt reads from it.
    rest: Option<B>,
}

impl<B> ReplayBody<B> {
    /// `body`, passed through: no retry may send it again.
    pub fn once(body: B) -> ReplayBody<B> {
        ReplayBody {
            shared: None,
            replayed: 0,
            trailers_sent: false,
            rest: Some(body),
        }
    }

    /// The first attempt's body: `body`, copied up to `limit` bytes for a retry, and the
    /// handle on the copy that makes the retries' bodies and ends the copy once no retry
    /// may follow.
    pub fn new(body: B, limit: usize) -> (ReplayBody<B>, ReplayCopy<B>) {
        let shared = Arc::new(Mutex::new(Shared {
            data: Vec::new(),
            bytes: 0,
            trailers: None,
            overflowed: limit == 0,
            complete: false,
            rest: None,
            limit,
            replays: 0,
        }));
        let first = ReplayBody {
            shared: Some(shared.clone()),
            replayed: 0,
            trailers_sent: false,
            rest: Some(body),
        };
        (first, ReplayCopy(shared))
    }
}

/// The copy a request's attempts share.
pub struct ReplayCopy<B = RequestBody>(Arc<Mutex<Shared<B>>>);

impl<B> ReplayCopy<B> {
    /// The body of another attempt, if the request can be sent again: everything sent
    /// so far is copied, and the rest is back from the attempt that read it.
    pub fn replay(&self) -> Option<ReplayBody<B>> {
        let mut shared = self.0.lock();
        if shared.overflowed || !(shared.complete || shared.rest.is_some()) {
            return None;
        }
        shared.replays += 1;
        Some(ReplayBody {
            shared: Some(self.0.clone()),
            replayed: 0,
            trailers_sent: false,
            rest: None,
        })
    }

    /// No retry will follow: nothing more is copied, and the copy is dropped unless a
    /// retry still running may be sending it (then it goes with that attempt's body).
    pub fn end(&self) {
        let mut shared = self.0.lock();
        shared.overflowed = true;
        if shared.replays == 0 {
            shared.data = Vec::new();
            shared.trailers = None;
        }
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let (Some(rest), Some(shared)) = (self.rest.take(), &self.shared) {
            shared.lock().rest = Some(rest);
        }
    }
}

/// A retry found the client's body still held by an earlier attempt.
#[derive(Debug)]
pub struct BodyHeld;

impl From<BodyHeld> for RequestBodyError {
    fn from(_: BodyHeld) -> Self {
        RequestBodyError::Held
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: From<BodyHeld>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let Some(shared) = &this.shared else {
            return match this.rest.as_mut() {
                Some(rest) => Pin::new(rest).poll_frame(cx),
                None => Poll::Ready(None),
            };
        };
        let mut shared = shared.lock();
        // A retry sends the copy first (empty for the first attempt).
        if this.rest.is_none() {
            if let Some(chunk) = shared.data.get(this.replayed) {
                this.replayed += 1;
                return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
            }
            if shared.complete {
                if this.trailers_sent {
                    return Poll::Ready(None);
                }
                this.trailers_sent = true;
                return Poll::Ready(shared.trailers.clone().map(|t| Ok(Frame::trailers(t))));
            }
            match shared.rest.take() {
                Some(rest) => this.rest = Some(rest),
                None => return Poll::Ready(Some(Err(BodyHeld.into()))),
            }
        }
        let Some(rest) = this.rest.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if !shared.overflowed {
                    if let Some(data) = frame.data_ref() {
                        if shared.bytes + data.len() <= shared.limit {
                            shared.bytes += data.len();
                            shared.data.push(data.clone());
                            this.replayed = shared.data.len();
                        } else {
                            shared.overflowed = true;
                            shared.data = Vec::new();
                        }
                    } else if let Some(trailers) = frame.trailers_ref() {
                        shared.trailers = Some(trailers.clone());
                        this.trailers_sent = true;
                    }
                }
            }
            Poll::Ready(None) => {
                shared.complete = true;
                this.trailers_sent = true;
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        let Some(shared) = &self.shared else {
            return self.rest.as_ref().is_none_or(Body::is_end_stream);
        };
        let shared = shared.lock();
        if self.replayed < shared.data.len() {
            return false;
        }
        match &self.rest {
            Some(rest) => rest.is_end_stream(),
            None if shared.complete => self.trailers_sent || shared.trailers.is_none(),
            None => shared.rest.as_ref().is_some_and(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let Some(shared) = &self.shared else {
            return self
                .rest
                .as_ref()
                .map_or(SizeHint::with_exact(0), Body::size_hint);
        };
        let shared = shared.lock();
        let copied: u64 = shared.data[self.replayed.min(shared.data.len())..]
            .iter()
            .map(|d| d.len() as u64)
            .sum();
        if self.rest.is_none() && shared.complete {
            return SizeHint::with_exact(copied);
        }
        let rest = match self.rest.as_ref().or(shared.rest.as_ref()) {
            Some(rest) => rest.size_hint(),
            None => SizeHint::default(),
        };
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + copied);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + copied);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = StreamBody<
        futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, RequestBodyError>>>,
    >;

    fn client(chunks: &[&'static str], trailers: bool) -> Frames {
        let mut frames: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        if trailers {
            let mut t = HeaderMap::new();
            t.insert("grpc-status", http::HeaderValue::from_static("0"));
            frames.push(Ok(Frame::trailers(t)));
        }
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read<B>(body: ReplayBody<B>) -> (Bytes, Option<HeaderMap>)
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: From<BodyHeld> + std::fmt::Debug,
    {
        let collected = body.collect().await.unwrap();
        let trailers = collected.trailers().cloned();
        (collected.to_bytes(), trailers)
    }

    #[tokio::test]
    async fn a_retry_sends_the_same_body_and_trailers() {
        let (first, copy) = ReplayBody::new(client(&["ab", "cd"], true), MAX_REPLAY_BYTES);
        let (bytes, trailers) = read(first).await;
        assert_eq!(bytes, "abcd");
        for _ in 0..2 {
            let again = copy.replay().expect("replayable");
            assert!(!again.is_end_stream());
            assert_eq!(again.size_hint().exact(), Some(4));
            let (b, t) = read(again).await;
            assert_eq!((b, t.clone()), (Bytes::from("abcd"), trailers.clone()));
        }
    }

    #[tokio::test]
    async fn an_attempt_that_never_read_the_body_hands_it_to_the_retry() {
        let (first, copy) = ReplayBody::new(client(&["ab", "cd"], false), MAX_REPLAY_BYTES);
        // A refused connect: the request, body unread, is dropped.
        drop(first);
        let (bytes, trailers) = read(copy.replay().expect("replayable")).await;
        assert_eq!((bytes, trailers), (Bytes::from("abcd"), None));
    }

    #[tokio::test]
    async fn a_body_read_in_part_is_replayed_then_read_on() {
        let (mut first, copy) =
            ReplayBody::new(client(&["ab", "cd", "ef"], false), MAX_REPLAY_BYTES);
        let chunk = first.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(chunk, "ab");
        drop(first);
        let (bytes, _) = read(copy.replay().expect("replayable")).await;
        assert_eq!(bytes, "abcdef");
    }

    #[tokio::test]
    async fn a_body_over_the_limit_cannot_be_replayed() {
        let (first, copy) = ReplayBody::new(client(&["abc", "def"], false), 5);
        assert_eq!(
            read(first).await.0,
            "abcdef",
            "the first attempt gets it all"
        );
        assert!(copy.replay().is_none());
        // One that fits exactly can.
        let (first, copy) = ReplayBody::new(client(&["abc", "de"], false), 5);
        read(first).await;
        assert!(copy.replay().is_some());
    }

    #[tokio::test]
    async fn once_ended_the_copy_is_dropped_and_nothing_replays() {
        let (first, copy) = ReplayBody::new(client(&["abc"], false), MAX_REPLAY_BYTES);
        read(first).await;
        copy.end();
        assert!(copy.replay().is_none());
        assert!(copy.0.lock().data.is_empty());
    }

    #[tokio::test]
    async fn a_retry_while_an_attempt_still_holds_the_body_fails_rather_than_truncates() {
        let (mut first, copy) = ReplayBody::new(client(&["ab", "cd"], false), MAX_REPLAY_BYTES);
        first.frame().await.unwrap().unwrap();
        // Not offered: the body is neither complete nor handed back.
        assert!(copy.replay().is_none());
        drop(first);
        assert!(copy.replay().is_some());
    }
}
