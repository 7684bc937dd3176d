//! Serves one client connection as HTTP/1 or HTTP/2 with hyper, configured once from
//! [`Config`], and winds it down gracefully when the proxy drains.

use super::pool::HttpVersion;
use crate::{config::Config, drain};
use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use std::{convert::Infallible, future::Future, pin::Pin};
use tokio::io::{AsyncRead, AsyncWrite};

/// hyper's server settings for client connections.
#[derive(Clone)]
pub struct HttpServer {
    h1: http1::Builder,
    h2: http2::Builder<TokioExecutor>,
}

impl HttpServer {
    /// Settings from the proxy's configuration.
    pub fn new(config: &Config) -> Self {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            // hyper's timer runs from the end of one request to the head of the next, so it
            // is the keep-alive idle timeout (the first head is checked in `head.rs`). It
            // must outlast the pools of clients, another proxy's included, so that a
            // pooled connection is closed by its client rather than raced by the server.
            .header_read_timeout(config.keepalive_timeout)
            .max_buf_size(config.max_header_bytes.max(8192))
            .half_close(true);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new())
            .max_concurrent_streams(config.http2_max_concurrent_streams)
            // hyper refuses larger header lists itself; between the two limits the
            // LimitHeaders layer answers with the proxy's own 431.
            .max_header_list_size(
                u32::try_from(config.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
            )
            // Rapid reset (CVE-2023-44487): streams the client resets before they are
            // served count against this; past it the connection is closed with GOAWAY.
            .max_pending_accept_reset_streams(20)
            // No HTTP/2 keep-alive pings: the kernel's TCP keep-alive finds a vanished
            // client on every accepted connection (app.rs), at no cost per request.
            .max_local_error_reset_streams(256);
        HttpServer { h1, h2 }
    }

    /// Serves `io` until the client is done, or gracefully until in-flight requests finish
    /// once `drain` is signaled.
    pub async fn serve<I, S, B>(
        &self,
        version: HttpVersion,
        io: I,
        service: S,
        drain: drain::Watch,
    ) -> Result<(), hyper::Error>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: tower::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let service = TowerToHyperService::new(service);
        let io = TokioIo::new(io);
        match version {
            HttpVersion::Http1 => {
                let conn = self.h1.serve_connection(io, service).with_upgrades();
                until_drained(conn, drain, |c| c.graceful_shutdown()).await
            }
            HttpVersion::Http2 => {
                let conn = self.h2.serve_connection(io, service);
                until_drained(conn, drain, |c| c.graceful_shutdown()).await
            }
        }
    }
}

async fn until_drained<C>(
    conn: C,
    mut drain: drain::Watch,
    shutdown: impl FnOnce(Pin<&mut C>),
) -> C::Output
where
    C: Future,
{
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => return res,
        () = drain.signaled() => shutdown(conn.as_mut()),
    }
    conn.await
}
