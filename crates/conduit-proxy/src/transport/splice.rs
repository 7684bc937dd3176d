//! Opaque TCP: copies bytes both ways between a client and its upstream, half-closes
//! included, until both ends close or nothing moves either way for the idle timeout (a
//! silent connection must not hold its sockets, and its slot, forever); and can tell
//! which side spoke first (for learning server-speaks-first ports).

use bytes::BytesMut;
use std::{
    io,
    pin::Pin,
    sync::atomic::{AtomicU64, Ordering},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// Which end of a fresh connection sent bytes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FirstSpeaker {
    Client,
    Server,
    /// One side closed before anyone spoke.
    Neither,
}

/// Waits until either end speaks and says which: the client's bytes are peeked at (left
/// to read), the server's are read into `said` (they must be passed on first). Read, not
/// peeked: a mesh TLS upstream's session tickets arrive before its first plaintext byte.
pub async fn first_speaker<S>(
    client: &TcpStream,
    server: &mut S,
    said: &mut BytesMut,
) -> FirstSpeaker
where
    S: AsyncRead + Unpin + ?Sized,
{
    let mut a = [0u8; 1];
    tokio::select! {
        biased;
        r = server.read_buf(said) => if matches!(r, Ok(n) if n > 0) { FirstSpeaker::Server } else { FirstSpeaker::Neither },
        r = client.peek(&mut a) => if matches!(r, Ok(n) if n > 0) { FirstSpeaker::Client } else { FirstSpeaker::Neither },
    }
}

/// Copies until both directions are closed, or until no byte moved either way for
/// `idle` (an error of kind `TimedOut`); returns bytes sent (client to server, server to
/// client). The connection is checked once per `idle`, so a silent one ends between one
/// and two idle periods after its last byte.
pub async fn splice<C, S>(client: &mut C, server: &mut S, idle: Duration) -> io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let moved = AtomicU64::new(0);
    let mut client = Active {
        io: client,
        moved: &moved,
    };
    let copy = tokio::io::copy_bidirectional(&mut client, server);
    tokio::pin!(copy);
    let mut last = 0;
    loop {
        tokio::select! {
            done = &mut copy => return done,
            () = tokio::time::sleep(idle) => {
                let now = moved.load(Ordering::Relaxed);
                if now == last {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("no bytes either way for {}", humantime::format_duration(idle)),
                    ));
                }
                last = now;
            }
        }
    }
}

/// The client's end, counting what moves through it: every byte either way does.
struct Active<'a, I: ?Sized> {
    io: &'a mut I,
    moved: &'a AtomicU64,
}

impl<I: AsyncRead + Unpin + ?Sized> AsyncRead for Active<'_, I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut *this.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            this.moved.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin + ?Sized> AsyncWrite for Active<'_, I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.moved.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::TcpListener,
    };

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        (c, s)
    }

    #[tokio::test]
    async fn tells_who_spoke_first() {
        // proxy_client is the proxy's end of the client connection, proxy_server its end
        // of the upstream connection.
        let (mut app_client, proxy_client) = pair().await;
        let (mut proxy_server, mut app_server) = pair().await;
        app_server.write_all(b"220 ready\r\n").await.unwrap();
        let mut said = BytesMut::new();
        assert_eq!(
            first_speaker(&proxy_client, &mut proxy_server, &mut said).await,
            FirstSpeaker::Server
        );
        assert_eq!(
            &said[..],
            b"220 ready\r\n",
            "what the server said, to pass on"
        );
        app_client.write_all(b"EHLO\r\n").await.unwrap();

        let (mut app_client, mut proxy_client) = pair().await;
        let (mut proxy_server, _app_server) = pair().await;
        app_client.write_all(b"PING\r\n").await.unwrap();
        let mut said = BytesMut::new();
        assert_eq!(
            first_speaker(&proxy_client, &mut proxy_server, &mut said).await,
            FirstSpeaker::Client
        );
        assert!(said.is_empty());
        let mut ping = [0u8; 6];
        proxy_client.read_exact(&mut ping).await.unwrap();
        assert_eq!(
            &ping, b"PING\r\n",
            "the client's bytes are still to be read"
        );

        let (app_client, proxy_client) = pair().await;
        let (mut proxy_server, _app_server) = pair().await;
        drop(app_client);
        assert_eq!(
            first_speaker(&proxy_client, &mut proxy_server, &mut BytesMut::new()).await,
            FirstSpeaker::Neither
        );
    }

    #[tokio::test]
    async fn a_mesh_tls_upstreams_session_ticket_is_not_the_server_speaking() {
        use crate::transport::{io::PrefixedIo, tls::tests::mesh};
        let (web, voting, name) = mesh().web_and_voting();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The server's proxy: terminates mesh TLS, then its application says nothing
        // until it has heard the client, and answers.
        let served = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut accepted = voting
                .accept(PrefixedIo::new(bytes::Bytes::new(), tcp))
                .await
                .unwrap();
            let mut ping = [0u8; 6];
            accepted.stream.read_exact(&mut ping).await.unwrap();
            accepted.stream.write_all(b"PONG\r\n").await.unwrap();
            accepted.stream.flush().await.unwrap();
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut upstream = web.connect(tcp, &name, true).await.unwrap();
        // The session ticket has arrived: the raw socket has bytes to read.
        upstream.get_ref().0.readable().await.unwrap();
        let mut peeked = [0u8; 1];
        assert_eq!(upstream.get_ref().0.peek(&mut peeked).await.unwrap(), 1);

        let (mut app_client, mut proxy_client) = pair().await;
        app_client.write_all(b"PING\r\n").await.unwrap();
        proxy_client.readable().await.unwrap();
        let mut said = BytesMut::new();
        assert_eq!(
            first_speaker(&proxy_client, &mut upstream, &mut said).await,
            FirstSpeaker::Client,
            "the ticket is not the server's application speaking"
        );
        assert!(said.is_empty());
        let mut ping = [0u8; 6];
        proxy_client.read_exact(&mut ping).await.unwrap();
        upstream.write_all(&ping).await.unwrap();
        upstream.flush().await.unwrap();
        let mut pong = [0u8; 6];
        upstream.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"PONG\r\n");
        served.await.unwrap();
    }

    #[tokio::test]
    async fn splices_with_half_close() {
        let (mut app_client, mut proxy_client) = pair().await;
        let (mut proxy_server, mut app_server) = pair().await;
        let task = tokio::spawn(async move {
            splice(
                &mut proxy_client,
                &mut proxy_server,
                Duration::from_secs(3600),
            )
            .await
        });
        app_client.write_all(b"request").await.unwrap();
        app_client.shutdown().await.unwrap();
        let mut got = Vec::new();
        app_server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"request", "the half-close reached the server");
        app_server
            .write_all(b"response after half-close")
            .await
            .unwrap();
        drop(app_server);
        let mut back = Vec::new();
        app_client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"response after half-close");
        assert_eq!(task.await.unwrap().unwrap(), (7, 25));
    }

    #[tokio::test]
    async fn a_connection_silent_for_the_idle_timeout_is_closed_and_a_busy_one_is_not() {
        let idle = Duration::from_millis(300);
        let (mut app_client, mut proxy_client) = pair().await;
        let (mut proxy_server, mut app_server) = pair().await;
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let ended = splice(&mut proxy_client, &mut proxy_server, idle).await;
            (ended, started.elapsed())
        });
        // Bytes keep it open well past the idle timeout, in either direction.
        for i in 0..8 {
            if i % 2 == 0 {
                app_client.write_all(b"ping").await.unwrap();
                let mut got = [0u8; 4];
                app_server.read_exact(&mut got).await.unwrap();
            } else {
                app_server.write_all(b"pong").await.unwrap();
                let mut got = [0u8; 4];
                app_client.read_exact(&mut got).await.unwrap();
            }
            tokio::time::sleep(idle / 3).await;
        }
        assert!(!task.is_finished(), "a busy connection stays open");
        // Then silence: the splice ends, and both ends see the connection close.
        let (ended, lasted) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("an idle connection is closed")
            .unwrap();
        assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(lasted >= idle * 8 / 3, "{lasted:?}");
        let mut rest = Vec::new();
        assert_eq!(app_client.read_to_end(&mut rest).await.unwrap(), 0);
        assert_eq!(app_server.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
