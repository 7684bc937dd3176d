//! The outbound side: connections the application makes to anywhere else.
//! [`Outbound::serve`] is their path, top to bottom: decide the protocol, then route by
//! discovery and forward. With a control plane (`CONDUIT_PROXY_DESTINATION_ADDR`), HTTP
//! requests are balanced over the endpoints of their authority and opaque connections
//! over the endpoints of their original destination (a service's virtual IP); what
//! discovery does not know, and everything without a control plane, goes to the original
//! destination. Endpoints with an identity are spoken to over mesh TLS (the connector's).

use crate::{
    balance::{
        accrual::{Change, FailureAccrual},
        endpoints::EndpointSets,
        Accrual, EndpointLoad,
    },
    connection::{Accepted, DetectProtocol, Forwarder, Forwarding, ServerFirstPorts, Shared, Side},
    drain,
    http::{
        pool::HttpVersion,
        route::{target_of, DiscoveredRoute, Route},
    },
    peer::Direction,
    telemetry::{
        labels::{KnownAuthorities, NoNames, Target, UNKNOWN},
        metrics::{EjectionLabels, Metrics},
        tap::Taps,
    },
    transport::{connect::Endpoint, tls::Transport},
};
use std::{net::SocketAddr, sync::Arc};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

/// The outbound side's stages.
pub struct Outbound {
    detect: DetectProtocol,
    /// With a control plane: every target's discovered endpoints.
    endpoints: Option<Arc<EndpointSets>>,
    /// What request metrics may be labelled with: what discovery resolved.
    names: Arc<dyn KnownAuthorities>,
    forward: Forwarder,
    /// Whether HTTP/1 to meshed endpoints is carried over HTTP/2.
    carry_http1: bool,
}

/// Outbound, a name is known when discovery resolved it.
struct DiscoveredNames(Arc<EndpointSets>);

impl KnownAuthorities for DiscoveredNames {
    fn knows(&self, authority: &str, orig_dst: SocketAddr) -> bool {
        self.0.knows(&target_of(authority, orig_dst.port()))
    }
}

impl Outbound {
    /// The outbound side.
    pub fn new(shared: &Shared) -> Arc<Outbound> {
        let config = &shared.config;
        let server_first = Arc::new(ServerFirstPorts::default());
        let endpoints = shared.discovery.as_ref().map(|discovery| {
            let accrual = accrual(
                config.failure_accrual,
                shared.metrics.clone(),
                shared.taps.clone(),
            );
            EndpointSets::new(discovery.clone(), config.discovery_timeout, accrual)
        });
        let names: Arc<dyn KnownAuthorities> = match &endpoints {
            Some(e) => Arc::new(DiscoveredNames(e.clone())),
            None => Arc::new(NoNames),
        };
        Arc::new(Outbound {
            detect: DetectProtocol::new(Direction::Outbound, shared, server_first.clone()),
            endpoints,
            names,
            forward: Forwarder::new(Direction::Outbound, shared, server_first),
            carry_http1: config.mesh_http2,
        })
    }

    /// How the requests of an HTTP connection to `orig_dst` find their endpoints.
    fn route(&self, version: HttpVersion, orig_dst: SocketAddr) -> Route {
        match &self.endpoints {
            Some(endpoints) => Route::Discovered(Arc::new(DiscoveredRoute {
                endpoints: endpoints.clone(),
                pools: self.forward.pools().clone(),
                version,
                orig_dst,
                carry_http1: self.carry_http1,
                last_target: Default::default(),
            })),
            None => Route::fixed(self.forward.pool(&Endpoint::plain(orig_dst), version)),
        }
    }

    /// With a control plane: the endpoint sets, and the target a connection to
    /// `orig_dst` is followed by (its address).
    fn followed(&self, orig_dst: SocketAddr) -> Option<(&EndpointSets, String)> {
        let endpoints = self.endpoints.as_deref()?;
        Some((endpoints, orig_dst.to_string()))
    }

    /// What a connection to `orig_dst` is labelled with: its port, and the Service that
    /// discovery says it is (`unknown`: none, or no control plane).
    async fn target(
        &self,
        orig_dst: SocketAddr,
        followed: Option<&(&EndpointSets, String)>,
    ) -> Target {
        let service = match followed {
            Some((endpoints, target)) => endpoints.service_of(target).await,
            None => None,
        };
        Target::service(orig_dst.port(), service)
    }

    /// Where an opaque connection to `orig_dst` goes: a discovered endpoint of it (a
    /// service's virtual IP, say) when there is one, else the original destination.
    async fn pick(
        &self,
        orig_dst: SocketAddr,
        followed: Option<&(&EndpointSets, String)>,
    ) -> (Endpoint, Option<Arc<EndpointLoad>>) {
        let picked = match followed {
            Some((endpoints, target)) => endpoints.pick(target, None).await,
            None => None,
        };
        let endpoint = picked
            .as_ref()
            .map_or_else(|| Endpoint::plain(orig_dst), |e| e.endpoint.clone());
        (endpoint, picked)
    }
}

/// Failure accrual after `failures` in a row, its ejections counted, logged (at most
/// once per endpoint per backoff, so the logs stay bounded) and tapped, as are
/// restorations.
fn accrual(failures: u32, metrics: Arc<Metrics>, taps: Arc<Taps>) -> Accrual {
    let on_change = move |endpoint: &Endpoint, change: Change| {
        let (addr, workload) = (
            endpoint.addr,
            endpoint.workload.as_deref().unwrap_or(UNKNOWN),
        );
        match change {
            Change::Ejected(backoff) => {
                taps.endpoint_health(addr, Some(backoff));
                let target = Target::workload(addr.port(), endpoint.workload.clone());
                let labels = EjectionLabels {
                    direction: Direction::Outbound,
                    target,
                };
                metrics.ejections.get(&labels).inc();
                warn!(
                    %addr,
                    workload,
                    backoff_ms = backoff.as_millis() as u64,
                    "endpoint failed {failures} times in a row (or its probe failed): out of its balancer for {backoff:?}"
                );
            }
            Change::Restored => {
                taps.endpoint_health(addr, None);
                info!(%addr, workload, "endpoint answered its probe: back in its balancer")
            }
        }
    };
    Accrual {
        policy: FailureAccrual { failures },
        on_change: Some(Arc::new(on_change)),
    }
}

impl Side for Outbound {
    fn direction(&self) -> Direction {
        Direction::Outbound
    }

    async fn serve(self: Arc<Self>, tcp: TcpStream, accepted: Accepted, drain: drain::Watch) {
        // Detection, labelling and opaque picks follow the same target: its name is made
        // once. Discovery may say before detection ends that its server speaks first.
        let followed = self.followed(accepted.orig_dst);
        let server_first = async {
            match &followed {
                Some((endpoints, target)) => endpoints.server_first(target).await,
                None => std::future::pending().await,
            }
        };
        let detected = self
            .detect
            .detect_hinted(accepted, tcp, false, server_first);
        let detected = match detected.await {
            Ok(detected) => detected.map_io(Transport::Plain),
            Err(error) => return debug!(%error, "reading from the client failed"),
        };
        self.detect.report(&detected);
        let target = self.target(accepted.orig_dst, followed.as_ref()).await;
        match self.forward.admit(detected, target).await {
            Some(Forwarding::Http(mut http)) => {
                if let (Some(endpoints), Some((_, target))) = (&self.endpoints, &followed) {
                    let (endpoints, target) = (endpoints.clone(), target.clone());
                    http = http.with_service_of(Arc::new(move || endpoints.known_service(&target)));
                }
                let route = self.route(http.version, accepted.orig_dst);
                let names = self.names.clone();
                self.forward
                    .serve_http(http, route, names, None, drain)
                    .await
            }
            Some(Forwarding::Opaque(opaque)) => {
                let (endpoint, load) = self.pick(accepted.orig_dst, followed.as_ref()).await;
                self.forward.splice(opaque, &endpoint, load).await
            }
            None => {}
        }
    }
}
