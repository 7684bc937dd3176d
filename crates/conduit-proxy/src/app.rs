//! The running proxy: binds its three listeners, serves the inbound and outbound sides and
//! the admin server, and on shutdown stops accepting and drains within the grace period.

use crate::{admin::Admin, config::Config, drain, inbound, metrics::Metrics, outbound};
use std::{future::Future, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} for the {listener} listener ({var}): {source}")]
pub struct BindError {
    listener: &'static str,
    var: &'static str,
    addr: SocketAddr,
    source: std::io::Error,
}

/// A proxy with its listeners bound, ready to serve.
pub struct Bound {
    config: Arc<Config>,
    inbound: TcpListener,
    outbound: TcpListener,
    admin: TcpListener,
}

impl Bound {
    /// Binds every listener, naming the one that failed.
    pub async fn bind(config: Config) -> Result<Bound, BindError> {
        async fn listen(
            listener: &'static str,
            var: &'static str,
            addr: SocketAddr,
        ) -> Result<TcpListener, BindError> {
            TcpListener::bind(addr).await.map_err(|source| BindError {
                listener,
                var,
                addr,
                source,
            })
        }
        Ok(Bound {
            inbound: listen("inbound", "CONDUIT_PROXY_INBOUND_ADDR", config.inbound_addr).await?,
            outbound: listen(
                "outbound",
                "CONDUIT_PROXY_OUTBOUND_ADDR",
                config.outbound_addr,
            )
            .await?,
            admin: listen("admin", "CONDUIT_PROXY_ADMIN_ADDR", config.admin_addr).await?,
            config: Arc::new(config),
        })
    }

    /// The address the admin server listens on.
    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// Serves until `shutdown` resolves or `POST /shutdown` arrives, then drains.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
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
        let inbound = inbound::side(config.clone(), metrics.clone());
        tokio::spawn(inbound.serve(self.inbound, watch.clone()));
        let outbound = outbound::side(config.clone(), metrics.clone());
        tokio::spawn(outbound.serve(self.outbound, watch));
        let admin = Arc::new(Admin {
            metrics,
            drain: signal.clone(),
        });
        tokio::spawn(admin.serve(self.admin));

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
    }
}
