//! Outbound: connections the application makes to anywhere else. For now each goes to
//! its original destination; service discovery and load balancing replace this rule.

use crate::{
    config::Config,
    metrics::{Direction, Metrics},
    side::Side,
};
use std::{net::SocketAddr, sync::Arc};

/// The outbound side.
pub fn side(config: Arc<Config>, metrics: Arc<Metrics>) -> Arc<Side> {
    Side::new(
        Direction::Outbound,
        config,
        metrics,
        to_original_destination,
    )
}

fn to_original_destination(orig_dst: SocketAddr) -> SocketAddr {
    orig_dst
}
