//! Opening upstream connections: TCP with a timeout and `TCP_NODELAY`, then mesh TLS when
//! the endpoint has an identity and this proxy has one too; byte counting; failures
//! classified into [`ProxyError`]s. Shared by the HTTP pools and opaque TCP. A meshed
//! endpoint is never spoken to in plaintext by a proxy with an identity.

use crate::{
    errors::ProxyError,
    peer::{Direction, PeerTls},
    telemetry::{
        labels::Target,
        metrics::{Peer, TcpMetrics},
    },
    transport::{
        io::CountingIo,
        tls::{MeshTls, Transport, UpstreamTransport},
    },
};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpStream;

/// An upstream connection, counted in the `tcp_*` metrics with `peer="dst"` (for mesh
/// TLS, the plaintext bytes).
pub type Upstream = CountingIo<UpstreamTransport>;

/// Where to connect: an address, the identity it must prove when it is meshed, and the
/// workload (`<deployment>.<namespace>`) discovery says serves it, for metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub identity: Option<Arc<str>>,
    pub workload: Option<Arc<str>>,
}

impl Endpoint {
    /// An endpoint nothing is known about: plaintext.
    pub fn plain(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            identity: None,
            workload: None,
        }
    }
}

/// Opens upstream connections for one side of the proxy.
#[derive(Clone)]
pub struct Connector {
    direction: Direction,
    timeout: Duration,
    metrics: TcpMetrics,
    tls: Option<Arc<MeshTls>>,
}

impl Connector {
    /// A connector that gives up after `timeout`, connecting and handshaking included;
    /// with `tls`, meshed endpoints are spoken to under mesh TLS.
    pub fn new(
        direction: Direction,
        timeout: Duration,
        metrics: TcpMetrics,
        tls: Option<Arc<MeshTls>>,
    ) -> Self {
        Connector {
            direction,
            timeout,
            metrics,
            tls,
        }
    }

    /// How a connection to `endpoint` is authenticated: mesh TLS when it has an identity
    /// and this proxy has mesh TLS.
    pub fn peer_tls(&self, endpoint: &Endpoint) -> PeerTls {
        match (&self.tls, &endpoint.identity) {
            (Some(_), Some(identity)) => PeerTls::Server(identity.clone()),
            _ => PeerTls::None,
        }
    }

    /// Connects to `endpoint`; `opaque` tells its proxy the bytes are opaque TCP.
    pub async fn connect(&self, endpoint: &Endpoint, opaque: bool) -> Result<Upstream, ProxyError> {
        let addr = endpoint.addr;
        let timed_out = || ProxyError::UpstreamConnectTimeout {
            addr,
            timeout: self.timeout,
        };
        let deadline = tokio::time::Instant::now() + self.timeout;
        if let (Some(tls), Some(identity)) = (&self.tls, &endpoint.identity) {
            // Right after start the application may call out before the first certificate
            // is in: wait for it as for a slow connect, rather than fail at once.
            if !tls.wait_certified(deadline).await {
                return Err(ProxyError::NotCertified {
                    addr,
                    identity: identity.to_string(),
                });
            }
        }
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ProxyError::from_connect(addr, e)),
            Err(_elapsed) => return Err(timed_out()),
        };
        // Latency matters more than segment count for request/response traffic.
        let _ = stream.set_nodelay(true);
        let peer = self.peer_tls(endpoint);
        let target = match self.direction {
            Direction::Inbound => Target::app(addr.port()),
            Direction::Outbound => Target::workload(addr.port(), endpoint.workload.clone()),
        };
        let transport = match (&self.tls, &endpoint.identity) {
            (Some(tls), Some(identity)) => {
                let tls_stream =
                    tokio::time::timeout_at(deadline, tls.connect(stream, identity, opaque))
                        .await
                        .map_err(|_| timed_out())?
                        .map_err(|e| ProxyError::UpstreamTls {
                            addr,
                            identity: identity.to_string(),
                            reason: tls_reason(&e),
                        })?;
                Transport::Tls(Box::new(tls_stream))
            }
            _ => Transport::Plain(stream),
        };
        Ok(CountingIo::new(
            transport,
            self.metrics.open(self.direction, Peer::Dst, target, peer),
        ))
    }
}

/// A failed handshake in plain words, with its causes.
pub fn tls_reason(e: &std::io::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refused_connections_are_named() {
        // Bind then drop a listener to find a port nothing listens on.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let c = Connector::new(
            Direction::Outbound,
            Duration::from_secs(1),
            TcpMetrics::default(),
            None,
        );
        let err = c
            .connect(&Endpoint::plain(addr), false)
            .await
            .err()
            .expect("nothing listens there");
        assert_eq!(err.code(), "upstream_refused");
        assert!(err.to_string().contains(&addr.to_string()));
    }

    #[tokio::test]
    async fn a_meshed_endpoint_that_cannot_prove_its_identity_gets_no_bytes() {
        let m = crate::transport::tls::tests::mesh();
        let hour = Duration::from_secs(3600);
        let web = Arc::new(m.proxy("web", hour));
        let emoji = Arc::new(m.proxy("emoji", hour));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The endpoint is emoji's proxy, but discovery says it must be voting.
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            emoji.accept(tcp).await.map(|_| ())
        });
        let c = Connector::new(
            Direction::Outbound,
            Duration::from_secs(5),
            TcpMetrics::default(),
            Some(web),
        );
        let voting = conduit_identity::identity_name("voting", "emojivoto");
        let endpoint = Endpoint {
            identity: Some(voting.clone().into()),
            ..Endpoint::plain(addr)
        };
        let err = c.connect(&endpoint, false).await.map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "upstream_tls_failed");
        assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY);
        let text = err.to_string();
        assert!(
            text.contains(&addr.to_string())
                && text.contains(&voting)
                && text.contains("not valid for name"),
            "the error names the endpoint, the identity it had to prove, and why: {text}"
        );
        assert!(
            server.await.unwrap().is_err(),
            "the server saw no finished handshake"
        );
    }

    #[tokio::test]
    async fn without_a_certificate_meshed_endpoints_are_not_spoken_to() {
        let m = crate::transport::tls::tests::mesh();
        let identity = Arc::new(
            crate::control::identity::Identity::new(
                "web.emojivoto.serviceaccount.identity.conduit.cluster.local",
            )
            .unwrap(),
        );
        let uncertified = Arc::new(MeshTls::new(identity, &m.anchor_pem).unwrap());
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Connector::new(
            Direction::Outbound,
            Duration::from_millis(300),
            TcpMetrics::default(),
            Some(uncertified),
        );
        let endpoint = Endpoint {
            identity: Some("voting.emojivoto.serviceaccount.identity.conduit.cluster.local".into()),
            ..Endpoint::plain(listener.local_addr().unwrap())
        };
        let err = c.connect(&endpoint, false).await.map(|_| ()).unwrap_err();
        assert_eq!(err.code(), "not_certified");
        // Not even a connection was made.
        listener.set_nonblocking(true).unwrap();
        assert_eq!(
            listener.accept().map(|_| ()).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
    }

    #[tokio::test]
    async fn connects_and_counts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Connector::new(
            Direction::Outbound,
            Duration::from_secs(1),
            TcpMetrics::default(),
            None,
        );
        let upstream = c.connect(&Endpoint::plain(addr), false).await.unwrap();
        let tcp = upstream.get_ref().plain().expect("a plaintext endpoint");
        assert!(tcp.nodelay().unwrap());
        assert_eq!(tcp.peer_addr().unwrap(), addr);
    }
}
