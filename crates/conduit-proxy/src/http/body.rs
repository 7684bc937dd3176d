//! The end of a body: [`WatchEnd`] is the one wrapper that notices how a body ends (read
//! to its end, failed, or dropped before its end). The pools use it to take an HTTP/1
//! connection back, the metrics and tap to count a response once it is over.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

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

    /// `inner`, watched by nobody.
    pub fn unwatched(inner: B) -> Self {
        WatchEnd {
            inner,
            watcher: None,
        }
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
