//! Opaque TCP: copies bytes both ways between a client and its upstream, half-closes
//! included, and can tell which side spoke first (for learning server-speaks-first ports).

use std::io;
use tokio::{
    io::{AsyncRead, AsyncWrite},
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

/// Waits until either end has bytes to read (without consuming them) and says which.
pub async fn first_speaker(client: &TcpStream, server: &TcpStream) -> FirstSpeaker {
    let (mut a, mut b) = ([0u8; 1], [0u8; 1]);
    tokio::select! {
        biased;
        r = server.peek(&mut b) => if matches!(r, Ok(n) if n > 0) { FirstSpeaker::Server } else { FirstSpeaker::Neither },
        r = client.peek(&mut a) => if matches!(r, Ok(n) if n > 0) { FirstSpeaker::Client } else { FirstSpeaker::Neither },
    }
}

/// Copies until both directions are closed; returns bytes sent (client to server, server to client).
pub async fn splice<C, S>(client: &mut C, server: &mut S) -> io::Result<(u64, u64)>
where
    C: AsyncRead + AsyncWrite + Unpin + ?Sized,
    S: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    tokio::io::copy_bidirectional(client, server).await
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
        let (proxy_server, mut app_server) = pair().await;
        app_server.write_all(b"220 ready\r\n").await.unwrap();
        assert_eq!(
            first_speaker(&proxy_client, &proxy_server).await,
            FirstSpeaker::Server
        );
        app_client.write_all(b"EHLO\r\n").await.unwrap();

        let (mut app_client, proxy_client) = pair().await;
        let (proxy_server, _app_server) = pair().await;
        app_client.write_all(b"PING\r\n").await.unwrap();
        assert_eq!(
            first_speaker(&proxy_client, &proxy_server).await,
            FirstSpeaker::Client
        );

        let (app_client, proxy_client) = pair().await;
        let (proxy_server, _app_server) = pair().await;
        drop(app_client);
        assert_eq!(
            first_speaker(&proxy_client, &proxy_server).await,
            FirstSpeaker::Neither
        );
    }

    #[tokio::test]
    async fn splices_with_half_close() {
        let (mut app_client, mut proxy_client) = pair().await;
        let (mut proxy_server, mut app_server) = pair().await;
        let task = tokio::spawn(async move { splice(&mut proxy_client, &mut proxy_server).await });
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
}
