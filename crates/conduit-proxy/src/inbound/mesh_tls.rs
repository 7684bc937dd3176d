//! Inbound stage: terminating mesh TLS. A connection whose TLS ClientHello names this
//! proxy's identity as its SNI is terminated here (the client must present a mesh
//! certificate, whose identity becomes the connection's [`PeerTls`]), and what it carries
//! is decided afresh, unless the client's proxy said it is opaque (ALPN). Any other TLS
//! (the application's own) passes through untouched. On a port decided without reading
//! (opaque, server-speaks-first), a meshed client's ClientHello is waited for briefly
//! first: its proxy sends it at once, and the client's identity must be known before the
//! connection is authorized.

use crate::{
    config::Config,
    connection::{protocol::DetectProtocol, Decided, Detected},
    peer::{Direction, PeerTls},
    telemetry::metrics::{HandshakeLabels, Metrics},
    transport::{
        connect::tls_reason,
        detect::Protocol,
        io::PrefixedIo,
        tls::{self, MeshTls, ServerTransport, Transport},
    },
};
use bytes::BytesMut;
use std::{sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    time::Instant,
};
use tracing::{debug, info};

/// How long an inbound connection to an opaque or server-speaks-first port is watched
/// for a meshed client's ClientHello, which its proxy sends as soon as it is connected.
/// Only an unmeshed client of a server-speaks-first port waits this long for its server.
const MESH_HELLO_WAIT: Duration = Duration::from_millis(100);

/// Terminates the mesh TLS of connections meant for this proxy's identity.
pub struct TerminateMeshTls {
    tls: Arc<MeshTls>,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
}

impl TerminateMeshTls {
    /// Termination with this proxy's mesh TLS.
    pub fn new(tls: Arc<MeshTls>, config: Arc<Config>, metrics: Arc<Metrics>) -> Self {
        TerminateMeshTls {
            tls,
            config,
            metrics,
        }
    }

    /// The stage: `detected` over mesh TLS when it was meant for this proxy (decided again
    /// inside with `detect`), as it was otherwise. `None`: the connection is over (a failed
    /// handshake, say).
    pub async fn terminate<I>(
        &self,
        mut detected: Detected<I>,
        detect: &DetectProtocol,
        server_opaque: bool,
    ) -> Option<Detected<ServerTransport<I>>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        if let Decided::OpaquePort | Decided::ServerFirstPort = detected.decided {
            detected.decided = detect
                .tls_within(
                    &mut detected.io,
                    &mut detected.read,
                    MESH_HELLO_WAIT,
                    detected.decided,
                )
                .await;
        }
        if detected.decided != Decided::Bytes(Protocol::Tls) {
            return Some(detected.map_io(Transport::Plain));
        }
        let client = detected.accepted.client;
        let hello = tls::read_client_hello(
            &mut detected.io,
            &mut detected.read,
            self.config.detect_timeout,
        )
        .await;
        match hello {
            Ok(Some(hello)) if hello.server_name.as_deref() == Some(self.tls.name()) => {}
            Ok(_) => return Some(detected.map_io(Transport::Plain)),
            Err(error) => {
                debug!(%error, "reading the client hello failed");
                return None;
            }
        }
        let deadline = Instant::now() + self.config.connect_timeout;
        if !self.tls.wait_certified(deadline).await {
            self.metrics.error(Direction::Inbound, "not_certified");
            info!(%client, "a mesh TLS client arrived and this proxy still has no certificate; closing the connection");
            return None;
        }
        let Detected {
            accepted, io, read, ..
        } = detected;
        let handshake = self.tls.accept(PrefixedIo::new(read.freeze(), io));
        let terminated = match tokio::time::timeout(self.config.connect_timeout, handshake).await {
            Ok(Ok(t)) => t,
            Ok(Err(error)) => {
                self.metrics
                    .error(Direction::Inbound, "tls_handshake_failed");
                info!(%client, error = %tls_reason(&error), "mTLS handshake from a client failed");
                return None;
            }
            Err(_) => {
                self.metrics
                    .error(Direction::Inbound, "tls_handshake_failed");
                info!(%client, "mTLS handshake from a client timed out");
                return None;
            }
        };
        let resumed = terminated.resumed;
        self.metrics
            .mtls_handshakes
            .get_or_create(&HandshakeLabels { resumed })
            .inc();
        debug!(%client, client_id = %terminated.client_id, resumed, "mTLS handshake from a client");
        let mut io = Transport::Tls(Box::new(terminated.stream));
        let mut read = BytesMut::new();
        let decided = if terminated.opaque {
            Decided::PeerSaidOpaque
        } else {
            let port = accepted.orig_dst.port();
            match detect.decide(&mut io, &mut read, port, server_opaque).await {
                Ok(d) => d,
                Err(error) => {
                    debug!(%error, "reading from the mesh TLS client failed");
                    return None;
                }
            }
        };
        Some(Detected {
            accepted,
            io,
            read,
            decided,
            peer: PeerTls::Client(terminated.client_id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        connection::{protocol::tests as detection, server_first::ServerFirstPorts},
        transport::tls::tests::{mesh, Mesh},
    };
    use conduit_identity::identity_name;
    use tokio::{
        io::{AsyncWriteExt, DuplexStream},
        task::JoinHandle,
    };
    use tokio_rustls::client::TlsStream;

    /// An inbound proxy of `voting` with mesh TLS, terminating on in-memory connections.
    struct Voting {
        terminate: TerminateMeshTls,
        detect: DetectProtocol,
    }

    fn voting_proxy(m: &Mesh, config: Config) -> Voting {
        let shared = detection::shared(config);
        let tls = Arc::new(m.proxy("voting", Duration::from_secs(3600)));
        Voting {
            terminate: TerminateMeshTls::new(tls, shared.config.clone(), shared.metrics.clone()),
            detect: DetectProtocol::new(
                Direction::Inbound,
                &shared,
                Arc::new(ServerFirstPorts::default()),
            ),
        }
    }

    impl Voting {
        /// Detects and terminates the server end of a connection to port 8080.
        async fn accept(
            &self,
            server: DuplexStream,
        ) -> Option<Detected<ServerTransport<DuplexStream>>> {
            let detected = self
                .detect
                .detect(detection::accepted(8080), server, false)
                .await
                .unwrap();
            self.terminate
                .terminate(detected, &self.detect, false)
                .await
        }
    }

    /// web's proxy connecting to voting over mesh TLS (saying opaque or not) on an
    /// in-memory connection and sending `bytes`; the server end is returned at once.
    fn web_to_voting(
        m: &Mesh,
        opaque: bool,
        bytes: &'static [u8],
    ) -> (DuplexStream, JoinHandle<TlsStream<DuplexStream>>) {
        let web = m.proxy("web", Duration::from_secs(3600));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let client = tokio::spawn(async move {
            let mut tls = web
                .connect(client, &identity_name("voting", "emojivoto"), opaque)
                .await
                .unwrap();
            tls.write_all(bytes).await.unwrap();
            tls
        });
        (server, client)
    }

    #[tokio::test]
    async fn mesh_tls_for_this_proxy_is_terminated_and_decided_again_inside() {
        let m = mesh();
        let voting = voting_proxy(&m, Config::default());
        let (server, client) = web_to_voting(&m, false, b"GET / HTTP/1.1\r\nhost: voting\r\n\r\n");
        let detected = voting.accept(server).await.expect("terminated");
        assert_eq!(
            detected.peer,
            PeerTls::Client(identity_name("web", "emojivoto").into()),
            "the client's identity is its certificate's"
        );
        assert_eq!(detected.decided, Decided::Bytes(Protocol::Http1));
        assert!(
            detected.read.starts_with(b"GET / HTTP/1.1"),
            "plaintext, read inside TLS"
        );
        assert!(detected.io.plain().is_none());
        let metrics = voting.terminate.metrics.encode();
        assert!(
            metrics.contains(r#"inbound_mtls_handshakes_total{resumed="false"} 1"#),
            "{metrics}"
        );
        drop(client.await.unwrap());
    }

    #[tokio::test]
    async fn a_client_proxy_that_says_opaque_is_not_detected_again() {
        let m = mesh();
        let voting = voting_proxy(&m, Config::default());
        let (server, client) = web_to_voting(&m, true, b"GET / HTTP/1.1\r\n\r\n");
        let detected = voting.accept(server).await.expect("terminated");
        assert_eq!(detected.decided, Decided::PeerSaidOpaque);
        assert!(detected.read.is_empty(), "nothing is read to detect");
        drop(client.await.unwrap());
    }

    #[tokio::test]
    async fn tls_for_another_name_passes_through_untouched() {
        let m = mesh();
        let voting = voting_proxy(&m, Config::default());
        let web = m.proxy("web", Duration::from_secs(3600));
        let (client, server) = tokio::io::duplex(64 * 1024);
        // The application's own TLS: its SNI is not this proxy's identity.
        let _client =
            tokio::spawn(async move { web.connect(client, "voting.example.com", false).await });
        let detected = voting.accept(server).await.expect("passed through");
        assert_eq!(detected.decided, Decided::Bytes(Protocol::Tls));
        assert_eq!(detected.peer, PeerTls::None);
        assert!(detected.io.plain().is_some(), "not terminated");
        assert_eq!(
            detected.read[0], 0x16,
            "the ClientHello is kept for the application"
        );
    }

    #[tokio::test]
    async fn on_an_opaque_port_a_meshed_clients_hello_is_waited_for() {
        let m = mesh();
        let opaque = Config {
            opaque_ports: "8080".parse().unwrap(),
            ..Config::default()
        };
        let voting = voting_proxy(&m, opaque.clone());
        let (server, client) = web_to_voting(&m, true, b"*1\r\n$4\r\nPING\r\n");
        let detected = voting.accept(server).await.expect("terminated");
        assert_eq!(detected.decided, Decided::PeerSaidOpaque);
        assert_eq!(
            detected.peer,
            PeerTls::Client(identity_name("web", "emojivoto").into())
        );
        let mut tls = client.await.unwrap();

        // An unmeshed client of the same port keeps the port's decision, and its bytes.
        let voting = voting_proxy(&m, opaque);
        let (mut plain, server) = tokio::io::duplex(64 * 1024);
        plain.write_all(b"*1\r\n$4\r\nPING\r\n").await.unwrap();
        let detected = voting.accept(server).await.expect("passed through");
        assert_eq!(detected.decided, Decided::OpaquePort);
        assert_eq!(detected.peer, PeerTls::None);
        assert_eq!(&detected.read[..], b"*1\r\n$4\r\nPING\r\n");
        tls.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_client_without_a_mesh_certificate_is_refused() {
        let m = mesh();
        let voting = voting_proxy(&m, Config::default());
        // Signed by another mesh's issuer: not trusted here.
        let stranger = mesh().proxy("web", Duration::from_secs(3600));
        let (client, server) = tokio::io::duplex(64 * 1024);
        let _client = tokio::spawn(async move {
            stranger
                .connect(client, &identity_name("voting", "emojivoto"), false)
                .await
        });
        assert!(voting.accept(server).await.is_none());
        assert!(voting
            .terminate
            .metrics
            .encode()
            .contains(r#"proxy_errors_total{direction="inbound",error="tls_handshake_failed"} 1"#));
    }
}
