//! The HTTP half of the proxy: serving detected HTTP/1 and HTTP/2 connections with hyper,
//! and the Tower layers each request passes through on its way upstream.

pub mod authorize;
pub mod forward;
pub mod head;
pub mod headers;
pub mod limit;
pub mod pool;
pub mod record;
pub mod respond;
pub mod route;
pub mod serve;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use pool::PooledBody;
use std::{
    pin::Pin,
    task::{Context, Poll},
};

pin_project! {
    /// A response body: the upstream's, or one the proxy wrote itself.
    #[project = ResponseBodyProj]
    pub enum ResponseBody {
        Upstream { #[pin] body: PooledBody },
        Proxy { #[pin] body: Full<Bytes> },
    }
}

impl ResponseBody {
    /// The upstream's body.
    pub fn upstream(body: PooledBody) -> Self {
        ResponseBody::Upstream { body }
    }

    /// A body the proxy wrote.
    pub fn proxy(body: Full<Bytes>) -> Self {
        ResponseBody::Proxy { body }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project() {
            ResponseBodyProj::Upstream { body } => body.poll_frame(cx),
            ResponseBodyProj::Proxy { body } => match body.poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(frame))),
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Upstream { body } => body.is_end_stream(),
            ResponseBody::Proxy { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Upstream { body } => body.size_hint(),
            ResponseBody::Proxy { body } => body.size_hint(),
        }
    }
}
