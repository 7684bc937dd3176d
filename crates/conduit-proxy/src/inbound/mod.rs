//! The inbound side: connections arriving at the pod from elsewhere. [`Inbound::serve`]
//! is their path, top to bottom: decide the protocol, terminate mesh TLS meant for this
//! proxy and decide again inside ([`mesh_tls`]), authorize ([`authorize`]), then forward
//! to the application at the address and port the client asked for: the pod's own
//! address, not its loopback, so that what the app binds to loopback only (an admin or
//! debug port) stays unreachable from outside the pod, as it would be without a mesh.
//! Ports in `CONDUIT_PROXY_INBOUND_LOOPBACK_PORTS` go to loopback, for apps that need it.

pub mod authorize;
pub mod mesh_tls;

use crate::{
    config::PortSet,
    connection::{Accepted, DetectProtocol, Forwarder, Forwarding, ServerFirstPorts, Shared, Side},
    control::policy::InboundPolicy,
    drain,
    http::{pool::HttpVersion, route::Route},
    peer::{Direction, PeerTls},
    telemetry::labels::{KnownAuthorities, Target},
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
    /// Ports forwarded to loopback rather than to the pod's own address.
    loopback_ports: PortSet,
    /// What request metrics may be labelled with: the pod's own Services.
    names: Arc<dyn KnownAuthorities>,
}

/// Inbound, a name is known when it is one of the pod's own Services, for the port the
/// request arrived at (the policy lists them).
struct OwnServices(Arc<InboundPolicy>);

impl KnownAuthorities for OwnServices {
    fn knows(&self, authority: &str, orig_dst: SocketAddr) -> bool {
        self.0
            .latest()
            .names_own_service(authority, orig_dst.port())
    }
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
            names: Arc::new(OwnServices(policy.clone())),
            authorize: AuthorizeConnection::new(
                policy,
                shared.metrics.clone(),
                shared.taps.clone(),
            ),
            forward: Forwarder::new(Direction::Inbound, shared, server_first),
            loopback_ports: shared.config.inbound_loopback_ports.clone(),
        })
    }

    /// What a connection to `port` is labelled with: the port, and the Server that
    /// governs it (`default`: none).
    fn target(&self, port: u16) -> Target {
        let policy = self.authorize.policy().latest();
        Target::server(port, policy.server(port).map(|s| s.name.as_str()))
    }

    /// How an HTTP connection's requests reach the app at `app`: over one pool of
    /// `version`, and on another proxy's HTTP/2 connection, the HTTP/1 requests it
    /// carried over HTTP/1 ([`carried`](crate::http::carried)). Only a peer that proved
    /// a mesh identity is trusted to say that it carried a request.
    fn route(&self, app: &Endpoint, version: HttpVersion, peer: &PeerTls) -> Route {
        let pool = self.forward.pool(app, version);
        let carried = version == HttpVersion::Http2 && peer.identity().is_some();
        let http1 = carried.then(|| self.forward.pool(app, HttpVersion::Http1));
        Route::Fixed { pool, http1 }
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
        let app = Endpoint::plain(app_addr(accepted.orig_dst, &self.loopback_ports));
        let target = self.target(accepted.orig_dst.port());
        match self.forward.admit(detected, target).await {
            Some(Forwarding::Http(http)) => {
                let route = self.route(&app, http.version, http.peer());
                let names = self.names.clone();
                self.forward
                    .serve_http(http, route, names, Some(authz), drain)
                    .await
            }
            Some(Forwarding::Opaque(opaque)) => self.forward.splice(opaque, &app, None).await,
            None => {}
        }
    }
}

/// Where the application is reached: where the client was going (the proxy's own
/// connections are not redirected), or for `loopback` ports the loopback of that family.
fn app_addr(orig_dst: SocketAddr, loopback: &PortSet) -> SocketAddr {
    if !loopback.contains(orig_dst.port()) {
        return orig_dst;
    }
    match orig_dst {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::LOCALHOST, orig_dst.port())),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::LOCALHOST, orig_dst.port())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_to_the_pods_address_or_for_loopback_ports_to_loopback_of_the_same_family() {
        let loopback: PortSet = "80,9000-9010".parse().unwrap();
        let app = |dst: &str| app_addr(dst.parse().unwrap(), &loopback).to_string();
        assert_eq!(app("198.18.0.2:8080"), "198.18.0.2:8080");
        assert_eq!(app("198.18.0.2:9005"), "127.0.0.1:9005");
        assert_eq!(app("[2001:2::2]:80"), "[::1]:80");
        assert_eq!(app("[2001:2::2]:81"), "[2001:2::2]:81");
    }
}
