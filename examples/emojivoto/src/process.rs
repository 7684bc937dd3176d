//! What every emojivoto program does around its work: logs to stderr, stops on SIGTERM or
//! Ctrl-C, and turns an error into a logged message and exit status 1.

use std::future::Future;
use std::io::IsTerminal;
use std::process::ExitCode;

/// Runs a program's body with logging set up; an error is logged and gives exit status 1.
pub async fn run(body: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
    match body.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Watches SIGTERM and SIGINT from now on; the future resolves when either arrives.
/// Call it first thing, so that an early signal still stops the process cleanly.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: stopping"),
            _ = int.recv() => tracing::info!("SIGINT: stopping"),
        }
    })
}

/// The connections of a gRPC server's `listener`, with Nagle's algorithm off: a response
/// is several small writes (headers, data, trailers), and a later one must not wait for
/// the client's delayed ACK of an earlier one (40 ms on Linux).
pub fn grpc_incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Binds `0.0.0.0:port` (0 picks a free port) and logs the address actually bound.
pub async fn listen(port: u16) -> anyhow::Result<tokio::net::TcpListener> {
    use anyhow::Context as _;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .with_context(|| format!("cannot listen on 0.0.0.0:{port}"))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    Ok(listener)
}
