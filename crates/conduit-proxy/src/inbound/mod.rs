//! The inbound side: connections arriving at the pod from elsewhere. [`Inbound::serve`]
//! is their path, top to bottom: decide the protocol, terminate mesh TLS meant for this
//! proxy and decide again inside ([`mesh_tls`]), authorize ([`authorize`]), then forward
//! to the application on the pod's loopback, at the port the client asked for.

pub mod authorize;
pub mod mesh_tls;

use crate::{
    connection::{Accepted, DetectProtocol, Forwarder, Forwarding, ServerFirstPorts, Shared, Side},
    control::policy::InboundPolicy,
    drain,
    http::route::Route,
    peer::Direction,
    transport::{connect::Endpoint, tls::Transport},
};
use authorize::AuthorizeConnection;
use conduit_policy::ServerProtocol;
use mesh_tls::TerminateMeshTls;
use std::{
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};
use tokio::net::TcpStream;
use tracing::debug;

/// The inbound side's stages.
pub struct Inbound {
    detect: DetectProtocol,
    /// With an identity: mesh TLS for this proxy is terminated.
    mesh_tls: Option<TerminateMeshTls>,
    authorize: AuthorizeConnection,
    forward: Forwarder,
}

impl Inbound {
    /// The inbound side, admitting whom `policy` allows.
    pub fn new(shared: &Shared, policy: Arc<InboundPolicy>) -> Arc<Inbound> {
        let server_first = Arc::new(ServerFirstPorts::default());
        Arc::new(Inbound {
            detect: DetectProtocol::new(Direction::Inbound, shared, server_first.clone()),
            mesh_tls: shared.tls.clone().map(|tls| {
                TerminateMeshTls::new(tls, shared.config.clone(), shared.metrics.clone())
            }),
            authorize: AuthorizeConnection::new(
                policy,
                shared.metrics.clone(),
                shared.taps.clone(),
            ),
            forward: Forwarder::new(Direction::Inbound, shared, server_first),
        })
    }

    /// Whether the Server of `port` says its traffic is opaque (no detection).
    fn server_says_opaque(&self, port: u16) -> bool {
        self.authorize
            .policy()
            .latest()
            .server(port)
            .is_some_and(|s| s.protocol == Some(ServerProtocol::Opaque))
    }
}

impl Side for Inbound {
    fn direction(&self) -> Direction {
        Direction::Inbound
    }

    async fn serve(self: Arc<Self>, tcp: TcpStream, accepted: Accepted, drain: drain::Watch) {
        let server_opaque = self.server_says_opaque(accepted.orig_dst.port());
        let detected = match self.detect.detect(accepted, tcp, server_opaque).await {
            Ok(detected) => detected,
            Err(error) => return debug!(%error, "reading from the client failed"),
        };
        let detected = match &self.mesh_tls {
            Some(mesh_tls) => {
                let terminated = mesh_tls.terminate(detected, &self.detect, server_opaque);
                let Some(detected) = terminated.await else {
                    return;
                };
                detected
            }
            None => detected.map_io(Transport::Plain),
        };
        self.detect.report(&detected);
        let Ok(authz) = self.authorize.authorize(&detected).await else {
            return;
        };
        let app = Endpoint::plain(to_local_app(accepted.orig_dst));
        match self.forward.admit(detected).await {
            Some(Forwarding::Http(http)) => {
                let route = Route::Fixed(self.forward.pool(&app, http.version));
                self.forward
                    .serve_http(http, route, Some(authz), drain)
                    .await
            }
            Some(Forwarding::Opaque(opaque)) => self.forward.splice(opaque, &app, None).await,
            None => {}
        }
    }
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
