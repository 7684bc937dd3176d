//! The controller binary: discovery from the local runtime, scraping, and the API on a
//! unix socket (for the CLI on this host) and optionally on TCP.

use anyhow::Context as _;
use clap::Parser;
use conduit_controller::{
    api::{self, ApiState},
    discovery::{Discovery, LocalRegistry},
    scrape,
    store::Store,
};
use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

#[derive(Parser)]
#[command(
    name = "conduit-controller",
    version,
    about = "Conduit's control plane"
)]
struct Args {
    /// The local runtime's state file to discover workloads from.
    #[arg(long)]
    local_state: PathBuf,
    /// Serve the API on this unix socket.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Serve the API on this TCP address.
    #[arg(long)]
    api_addr: Option<SocketAddr>,
    /// Serve the Destination API (gRPC) to proxies on this address.
    #[arg(long)]
    destination_addr: Option<SocketAddr>,
    /// How often to scrape every proxy's metrics.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    scrape_interval: Duration,
    /// How much history to keep in memory.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    retention: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if args.api_socket.is_none() && args.api_addr.is_none() {
        anyhow::bail!(
            "nowhere to serve the API: give --api-socket PATH and/or --api-addr HOST:PORT"
        );
    }
    let discovery = LocalRegistry::spawn(args.local_state.clone(), Duration::from_millis(500));
    let store = Arc::new(Mutex::new(Store::new(args.retention)));
    scrape::spawn(discovery.watch(), store.clone(), args.scrape_interval);
    let router = api::router(ApiState {
        store,
        workloads: discovery.watch(),
        max_window: args.retention,
    });
    let mut servers = tokio::task::JoinSet::new();
    if let Some(path) = &args.api_socket {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("listening on {}", path.display()))?;
        tracing::info!(socket = %path.display(), "API listening");
        let router = router.clone();
        servers.spawn(async move { axum::serve(listener, router).await });
    }
    if let Some(addr) = args.api_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        tracing::info!(%addr, "API listening");
        servers.spawn(async move { axum::serve(listener, router).await });
    }
    if let Some(addr) = args.destination_addr {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr} for the Destination API"))?;
        tracing::info!(%addr, "Destination API listening");
        let service =
            conduit_controller::destination::DestinationService::server(discovery.watch());
        servers.spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
                .map_err(std::io::Error::other)
        });
    }
    tokio::select! {
        Some(result) = servers.join_next() => result?.context("serving the API")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(())
}
