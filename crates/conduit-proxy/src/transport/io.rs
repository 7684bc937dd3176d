//! Transport wrappers: [`PrefixedIo`] replays the bytes detection already read, and
//! [`CountingIo`] counts the bytes that cross a socket. Both are transparent otherwise.

use crate::telemetry::metrics::TcpConnection;
use bytes::{Buf, Bytes};
use pin_project_lite::pin_project;
use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pin_project! {
    /// An I/O whose first reads return `prefix`, then read from `inner`.
    pub struct PrefixedIo<I> {
        prefix: Bytes,
        #[pin]
        inner: I,
    }
}

impl<I> PrefixedIo<I> {
    /// Wraps `inner` so that `prefix` is read first.
    pub fn new(prefix: Bytes, inner: I) -> Self {
        PrefixedIo { prefix, inner }
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }
}

impl<I: AsyncRead> AsyncRead for PrefixedIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.prefix.has_remaining() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<I: AsyncWrite> AsyncWrite for PrefixedIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project! {
    /// An I/O that adds every byte read and written to its connection's counters, and
    /// counts the connection closed when dropped.
    pub struct CountingIo<I> {
        conn: TcpConnection,
        #[pin]
        inner: I,
    }
}

impl<I> CountingIo<I> {
    /// Wraps `inner`, counting into `conn`.
    pub fn new(inner: I, conn: TcpConnection) -> Self {
        CountingIo { conn, inner }
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &I {
        &self.inner
    }

    /// The wrapped I/O, mutably.
    pub fn get_mut(&mut self) -> &mut I {
        &mut self.inner
    }
}

impl<I: AsyncRead> AsyncRead for CountingIo<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.conn.bytes.read.inc_by(n as u64);
        }
        res
    }
}

impl<I: AsyncWrite> AsyncWrite for CountingIo<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = res {
            this.conn.bytes.write.inc_by(n as u64);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = res {
            this.conn.bytes.write.inc_by(n as u64);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{peer::Direction, telemetry::metrics::Peer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn prefix_is_read_before_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b" world").await.unwrap();
        drop(a);
        let mut io = PrefixedIo::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        io.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[tokio::test]
    async fn counts_both_ways() {
        let (mut a, b) = tokio::io::duplex(64);
        let metrics = crate::telemetry::metrics::TcpMetrics::default();
        let conn = metrics.open(
            Direction::Inbound,
            Peer::Src,
            crate::telemetry::labels::Target::server(80, None),
            crate::peer::PeerTls::None,
        );
        let counters = conn.bytes.clone();
        let mut io = CountingIo::new(b, conn);
        a.write_all(b"12345").await.unwrap();
        let mut buf = [0u8; 5];
        io.read_exact(&mut buf).await.unwrap();
        io.write_all(b"abc").await.unwrap();
        assert_eq!(counters.read.get(), 5);
        assert_eq!(counters.write.get(), 3);
    }
}
