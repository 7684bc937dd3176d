//! Bodies as the proxy wraps them. The end of a body: [`WatchEnd`] is the one wrapper
//! that notices how a body ends (read to its end, failed, or dropped before its end): the
//! metrics and tap use it to count a response once it is over. A client's request body:
//! [`RequestBody`], which an HTTP/1 client may not leave stalled (a slow-body client would
//! hold its connection, and the upstream's, as long as it liked).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::Sleep;

/// A client's request body on its way upstream: fails when an HTTP/1 client sends no
/// frame for the idle timeout while the body is being read. (Unpin, as hyper's HTTP/2
/// client wants: the timer is boxed, once per body that ever waits, and then reset.)
pub struct RequestBody {
    inner: Incoming,
    idle: Option<Duration>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the timer counts down from the last frame.
    armed: bool,
}

/// Why a request body could not be read to its end.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("reading the request body: {0}")]
    Client(#[from] hyper::Error),
    #[error("the client sent no part of the request body for {}", humantime::format_duration(*.0))]
    Idle(Duration),
    #[error("the request body is still being sent by an earlier attempt")]
    Held,
}

/// A body that cannot fail (a test's, say) fails no request.
impl From<std::convert::Infallible> for RequestBodyError {
    fn from(never: std::convert::Infallible) -> Self {
        match never {}
    }
}

impl RequestBody {
    /// `inner`, failing after `idle` without a frame (`None`: never, as for HTTP/2, whose
    /// streams a client may hold open on purpose and which its connection bounds).
    pub fn new(inner: Incoming, idle: Option<Duration>) -> RequestBody {
        RequestBody {
            inner,
            idle,
            timer: None,
            armed: false,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            this.armed = false;
            return Poll::Ready(frame.map(|f| f.map_err(RequestBodyError::Client)));
        }
        let Some(idle) = this.idle else {
            return Poll::Pending;
        };
        if !this.armed {
            let deadline = tokio::time::Instant::now() + idle;
            match &mut this.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => this.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            this.armed = true;
        }
        let Some(timer) = this.timer.as_mut() else {
            return Poll::Pending;
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(RequestBodyError::Idle(idle)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a body ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    /// Read to its end (trailers included).
    Complete,
    /// Reading it failed.
    Failed,
    /// Dropped before its end.
    Dropped,
}

/// What wants to see a body's frames go by and learn how it ended.
pub trait OnBodyEnd {
    /// A frame was read.
    fn frame(&mut self, _frame: &Frame<Bytes>) {}
    /// The body ended; called exactly once.
    fn end(self, end: BodyEnd);
}

pin_project! {
    /// A body that tells its watcher about each frame and, once, how it ended.
    pub struct WatchEnd<B, W: OnBodyEnd> {
        #[pin]
        inner: B,
        watcher: Option<W>,
    }

    impl<B, W: OnBodyEnd> PinnedDrop for WatchEnd<B, W> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(watcher) = this.project().watcher.take() {
                watcher.end(BodyEnd::Dropped);
            }
        }
    }
}

impl<B: Body, W: OnBodyEnd> WatchEnd<B, W> {
    /// Watches `inner`; an empty body ends at once.
    pub fn new(inner: B, watcher: W) -> Self {
        let mut body = WatchEnd {
            inner,
            watcher: Some(watcher),
        };
        if body.inner.is_end_stream() {
            if let Some(watcher) = body.watcher.take() {
                watcher.end(BodyEnd::Complete);
            }
        }
        body
    }
}

impl<B: Body<Data = Bytes>, W: OnBodyEnd> Body for WatchEnd<B, W> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        let end = match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(watcher) = this.watcher.as_mut() {
                    watcher.frame(frame);
                }
                this.inner.is_end_stream().then_some(BodyEnd::Complete)
            }
            Poll::Ready(Some(Err(_))) => Some(BodyEnd::Failed),
            Poll::Ready(None) => Some(BodyEnd::Complete),
            Poll::Pending => None,
        };
        if let Some(end) = end {
            if let Some(watcher) = this.watcher.take() {
                watcher.end(end);
            }
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::{Arc, Mutex};

    /// Records what it was told.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<(usize, Vec<BodyEnd>)>>);

    impl OnBodyEnd for Seen {
        fn frame(&mut self, _: &Frame<Bytes>) {
            self.0.lock().unwrap().0 += 1;
        }
        fn end(self, end: BodyEnd) {
            self.0.lock().unwrap().1.push(end);
        }
    }

    fn frames(
        items: Vec<Result<&'static str, &'static str>>,
    ) -> impl Body<Data = Bytes, Error = &'static str> {
        StreamBody::new(futures_util::stream::iter(
            items
                .into_iter()
                .map(|r| r.map(|s| Frame::data(Bytes::from_static(s.as_bytes())))),
        ))
    }

    #[tokio::test]
    async fn each_way_a_body_can_end_is_reported_once() {
        let seen = Seen::default();
        let body = WatchEnd::new(frames(vec![Ok("a"), Ok("b")]), seen.clone());
        body.collect().await.unwrap();
        assert_eq!(*seen.0.lock().unwrap(), (2, vec![BodyEnd::Complete]));

        let seen = Seen::default();
        let body = WatchEnd::new(frames(vec![Ok("a"), Err("reset")]), seen.clone());
        assert!(body.collect().await.is_err());
        assert_eq!(*seen.0.lock().unwrap(), (1, vec![BodyEnd::Failed]));

        let seen = Seen::default();
        let mut body = Box::pin(WatchEnd::new(frames(vec![Ok("a"), Ok("b")]), seen.clone()));
        body.frame().await.unwrap().unwrap();
        drop(body);
        assert_eq!(*seen.0.lock().unwrap(), (1, vec![BodyEnd::Dropped]));

        let seen = Seen::default();
        let body = WatchEnd::new(Full::new(Bytes::new()), seen.clone());
        assert_eq!(
            *seen.0.lock().unwrap(),
            (0, vec![BodyEnd::Complete]),
            "an empty body ends before it is read"
        );
        drop(body);
        assert_eq!(seen.0.lock().unwrap().1.len(), 1, "and only once");
    }
}
