//! Inbound: connections arriving at the pod from elsewhere. Each is forwarded to the
//! application on loopback, at the port the client asked for.

use crate::{
    config::Config,
    metrics::{Direction, Metrics},
    policy::InboundPolicy,
    side::{Role, Side},
    tap::Taps,
    tls::MeshTls,
};
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

/// The inbound side.
pub fn side(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    taps: Arc<Taps>,
    tls: Option<Arc<MeshTls>>,
    policy: Arc<InboundPolicy>,
) -> Arc<Side> {
    Side::new(
        Role {
            direction: Direction::Inbound,
            upstream: to_local_app,
            discovery: None,
            policy: Some(policy),
        },
        config,
        metrics,
        taps,
        tls,
    )
}

/// The application listens on the pod's loopback (or on all addresses, which includes it).
fn to_local_app(orig_dst: SocketAddr) -> SocketAddr {
    match orig_dst {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, orig_dst.port())),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, orig_dst.port())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_to_loopback_of_the_same_family() {
        assert_eq!(
            to_local_app("198.18.0.2:8080".parse().unwrap()).to_string(),
            "127.0.0.1:8080"
        );
        assert_eq!(
            to_local_app("[2001:2::2]:80".parse().unwrap()).to_string(),
            "[::1]:80"
        );
    }
}
