//! The running proxy: binds its three listeners, serves the inbound and outbound sides and
//! the admin server, and on shutdown stops accepting and drains within the grace period.

use crate::{
    config::{Config, Listen},
    connection::{accept, Shared},
    control::{discovery::Discovery, policy::InboundPolicy, profile::Profiles},
    drain,
    inbound::Inbound,
    outbound::Outbound,
    telemetry::{
        admin::Admin,
        metrics::Metrics,
        tap::{TapAccess, Taps},
    },
    transport::tls::MeshTls,
};
use std::{future::Future, io, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {listener} listener ({var}): {source}")]
pub struct BindError {
    listener: &'static str,
    var: &'static str,
    addr: SocketAddr,
    source: io::Error,
}

/// Binds every address of `listen`; IPv6 sockets are IPv6-only so that an IPv4 twin can
/// bind the same port. Default IPv6 twins are skipped on a host without IPv6.
fn listen(
    listener: &'static str,
    var: &'static str,
    listen: &Listen,
) -> Result<Vec<TcpListener>, BindError> {
    let mut bound = Vec::new();
    for &addr in &listen.addrs {
        match bind_one(addr) {
            Ok(l) => bound.push(l),
            Err(e) if addr.is_ipv6() && listen.ipv6_optional && ipv6_unavailable(&e) => {
                info!(%addr, "IPv6 is not available here; not listening on it");
            }
            Err(source) => {
                return Err(BindError {
                    listener,
                    var,
                    addr,
                    source,
                })
            }
        }
    }
    Ok(bound)
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EAFNOSUPPORT) | Some(libc::EADDRNOTAVAIL)
    )
}

/// How long an accepted connection may be silent before the kernel probes its peer, how
/// often it probes, and how many unanswered probes close it: a peer that vanished
/// (its node gone, no FIN or RST) is found within 50 s, on every connection, HTTP/2 ones
/// included, with nothing for the proxy to do per request (hyper's HTTP/2 keep-alive
/// pings read the clock and polled a timer on every frame).
const KEEPALIVE: socket2::TcpKeepalive = socket2::TcpKeepalive::new()
    .with_time(std::time::Duration::from_secs(20))
    .with_interval(std::time::Duration::from_secs(10))
    .with_retries(3);

/// A listening socket; what its connections need set is set here, once, as Linux
/// copies it to every connection accepted (TCP_NODELAY, keep-alive).
fn bind_one(addr: SocketAddr) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    // Latency matters more than segment count for request/response traffic.
    socket.set_tcp_nodelay(true)?;
    socket.set_tcp_keepalive(&KEEPALIVE)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// A proxy with its listeners bound, ready to serve.
pub struct Bound {
    config: Arc<Config>,
    inbound: Vec<TcpListener>,
    outbound: Vec<TcpListener>,
    admin: Vec<TcpListener>,
    tap: Vec<TcpListener>,
}

impl Bound {
    /// Binds every listener, naming the one that failed.
    pub async fn bind(config: Config) -> Result<Bound, BindError> {
        Ok(Bound {
            inbound: listen(
                "inbound",
                "CONDUIT_PROXY_INBOUND_ADDR",
                &config.inbound_addr,
            )?,
            outbound: listen(
                "outbound",
                "CONDUIT_PROXY_OUTBOUND_ADDR",
                &config.outbound_addr,
            )?,
            admin: listen("admin", "CONDUIT_PROXY_ADMIN_ADDR", &config.admin_addr)?,
            tap: listen("tap", "CONDUIT_PROXY_TAP_ADDR", &config.tap_addr)?,
            config: Arc::new(config),
        })
    }

    /// The addresses the admin server listens on.
    pub fn admin_addrs(&self) -> Vec<SocketAddr> {
        self.admin
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Serves until `shutdown` resolves or `POST /shutdown` arrives, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> Result<(), String> {
        let config = self.config;
        let metrics = Arc::new(Metrics::new(&config.pod));
        let (signal, watch) = drain::channel();
        let signal = Arc::new(signal);

        info!(
            inbound = %config.inbound_addr,
            outbound = %config.outbound_addr,
            admin = %config.admin_addr,
            cores = config.cores,
            "conduit-proxy serving"
        );
        let (identity, control) = match config.identity.clone() {
            Some(cfg) => {
                let (identity, control) = crate::control::identity::spawn(cfg)?;
                (Some(identity), Some(control))
            }
            None => (None, None),
        };
        let tls = match (&identity, &config.identity) {
            (Some(identity), Some(cfg)) => Some(Arc::new(
                MeshTls::new(identity.clone(), &cfg.trust_anchors_pem)
                    .map_err(|e| format!("CONDUIT_PROXY_IDENTITY_TRUST_ANCHORS: {e}"))?,
            )),
            _ => None,
        };
        let taps = Taps::new(&config.pod);
        let access = match (&tls, &config.identity) {
            (Some(tls), Some(cfg)) => TapAccess::MeshTls {
                tls: tls.clone(),
                client: cfg.tap_client_id.as_str().into(),
            },
            _ => TapAccess::Open,
        };
        for listener in self.tap {
            tokio::spawn(crate::telemetry::tap::serve(
                listener,
                taps.clone(),
                access.clone(),
            ));
        }
        let policy = match &config.destination_addr {
            Some(addr) if !config.pod.pod.is_empty() => InboundPolicy::follow(
                addr,
                control.clone(),
                &config.pod.namespace,
                &config.pod.pod,
                config.default_inbound_policy,
                config.discovery_timeout,
            ),
            _ => InboundPolicy::fixed(config.default_inbound_policy),
        };
        // Both sides ask the Destination API over one connection.
        let discovery = config
            .destination_addr
            .as_ref()
            .map(|addr| Discovery::new(addr, config.pod.namespace.clone(), control.clone()));
        let profiles = discovery
            .as_ref()
            .map(|d| Profiles::new(d.clone(), config.discovery_timeout));
        let shared = Shared {
            config: config.clone(),
            metrics: metrics.clone(),
            taps,
            tls,
            control,
            discovery,
            profiles,
        };
        let inbound = Inbound::new(&shared, policy);
        for listener in self.inbound {
            let accepting = accept::serve(
                inbound.clone(),
                listener,
                metrics.clone(),
                watch.clone(),
                config.max_connections,
            );
            tokio::spawn(accepting);
        }
        let outbound = Outbound::new(&shared);
        for listener in self.outbound {
            let accepting = accept::serve(
                outbound.clone(),
                listener,
                metrics.clone(),
                watch.clone(),
                config.max_connections,
            );
            tokio::spawn(accepting);
        }
        drop(watch);
        let admin = Arc::new(Admin {
            metrics,
            drain: signal.clone(),
            identity,
        });
        for listener in self.admin {
            tokio::spawn(admin.clone().serve(listener));
        }

        tokio::select! {
            () = shutdown => info!("shutdown signal received"),
            () = signal.started() => {}
        }
        signal.start();
        info!(grace_period = %humantime::format_duration(config.shutdown_grace_period), "draining: no new connections; waiting for in-flight work");
        match tokio::time::timeout(config.shutdown_grace_period, signal.drained()).await {
            Ok(()) => info!("drained; exiting"),
            Err(_) => warn!("grace period over with connections still open; closing them"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::SockRef;
    use std::time::Duration;

    /// What the listener sets reaches the connections it accepts (Linux copies it), so no
    /// connection costs a system call for it.
    #[tokio::test]
    async fn accepted_connections_have_nodelay_and_keepalive_from_the_listener() {
        let listener = bind_one("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let accepted = SockRef::from(&accepted);
        assert!(accepted.tcp_nodelay().unwrap());
        assert!(accepted.keepalive().unwrap());
        assert_eq!(
            accepted.tcp_keepalive_time().unwrap(),
            Duration::from_secs(20)
        );
        assert_eq!(
            accepted.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(accepted.tcp_keepalive_retries().unwrap(), 3);
    }
}
