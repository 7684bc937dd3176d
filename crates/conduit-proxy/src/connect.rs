//! Opening upstream TCP connections: with a timeout, `TCP_NODELAY`, byte counting, and
//! failures classified into [`ProxyError`]s. Shared by the HTTP pools and opaque TCP.

use crate::{
    errors::ProxyError,
    io::CountingIo,
    metrics::{Direction, Peer, TcpMetrics},
};
use std::{net::SocketAddr, time::Duration};
use tokio::net::TcpStream;

/// An upstream connection, counted in the `tcp_*` metrics with `peer="dst"`.
pub type Upstream = CountingIo<TcpStream>;

/// Opens upstream connections for one side of the proxy.
#[derive(Clone)]
pub struct Connector {
    direction: Direction,
    timeout: Duration,
    metrics: TcpMetrics,
}

impl Connector {
    /// A connector that gives up after `timeout`.
    pub fn new(direction: Direction, timeout: Duration, metrics: TcpMetrics) -> Self {
        Connector {
            direction,
            timeout,
            metrics,
        }
    }

    /// Connects to `addr`.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Upstream, ProxyError> {
        let stream = match tokio::time::timeout(self.timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(ProxyError::from_connect(addr, e)),
            Err(_elapsed) => {
                return Err(ProxyError::UpstreamConnectTimeout {
                    addr,
                    timeout: self.timeout,
                })
            }
        };
        // Latency matters more than segment count for request/response traffic.
        let _ = stream.set_nodelay(true);
        Ok(CountingIo::new(
            stream,
            self.metrics.open(self.direction, Peer::Dst, addr),
        ))
    }
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
        );
        let err = c.connect(addr).await.err().expect("nothing listens there");
        assert_eq!(err.code(), "upstream_refused");
        assert!(err.to_string().contains(&addr.to_string()));
    }

    #[tokio::test]
    async fn connects_and_counts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let c = Connector::new(
            Direction::Outbound,
            Duration::from_secs(1),
            TcpMetrics::default(),
        );
        let upstream = c.connect(addr).await.unwrap();
        assert!(upstream.get_ref().nodelay().unwrap());
        assert_eq!(upstream.get_ref().peer_addr().unwrap(), addr);
    }
}
