//! Outbound: connections the application makes to anywhere else. With a control plane
//! (`CONDUIT_PROXY_DESTINATION_ADDR`), HTTP requests are balanced over the endpoints of
//! their authority and opaque connections over the endpoints of their original
//! destination (a service's virtual IP); what discovery does not know, and everything
//! without a control plane, goes to the original destination.

use crate::{
    config::Config,
    discovery::Discovery,
    metrics::{Direction, Metrics},
    side::{Role, Side},
    tap::Taps,
    tls::MeshTls,
};
use std::{net::SocketAddr, sync::Arc};

/// The outbound side.
pub fn side(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    taps: Arc<Taps>,
    tls: Option<Arc<MeshTls>>,
) -> Arc<Side> {
    let discovery = config
        .destination_addr
        .as_ref()
        .map(|addr| Discovery::new(addr, config.pod.namespace.clone(), config.discovery_timeout));
    Side::new(
        Role {
            direction: Direction::Outbound,
            upstream: to_original_destination,
            discovery,
            policy: None,
        },
        config,
        metrics,
        taps,
        tls,
    )
}

fn to_original_destination(orig_dst: SocketAddr) -> SocketAddr {
    orig_dst
}
