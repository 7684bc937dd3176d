//! The first stage: accepting redirected connections. Each connection's original
//! destination is read; one that was not redirected (someone connected to the proxy's own
//! port) is refused, since forwarding it would loop back here. A listener holds at most
//! `CONDUIT_PROXY_MAX_CONNECTIONS` connections: one more is closed at once and counted, so
//! that a flood of connections costs the proxy a bounded amount of memory and descriptors.
//! What happens next is the [`Side`]'s. Knows nothing of protocols.

use super::Accepted;
use crate::{
    drain,
    peer::Direction,
    telemetry::{log_limit::LogLimit, metrics::Metrics},
    transport::orig_dst::{canonical, original_dst},
};
use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::Semaphore,
    time::Instant,
};
use tracing::{info, warn, Instrument};

/// A side of the proxy, as the accept loop sees it.
pub trait Side: Send + Sync + 'static {
    /// Which side this is.
    fn direction(&self) -> Direction;

    /// Serves one accepted connection to its end.
    fn serve(
        self: Arc<Self>,
        tcp: TcpStream,
        accepted: Accepted,
        drain: drain::Watch,
    ) -> impl Future<Output = ()> + Send;
}

/// Refusals at the connection limit are logged at most this often.
static LIMIT_LOG: LogLimit = LogLimit::new(Duration::from_secs(10));

/// Accepts connections for `side` until the drain starts, holding at most
/// `max_connections` at once; each keeps a drain watch.
pub async fn serve<S: Side>(
    side: Arc<S>,
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut drain: drain::Watch,
    max_connections: usize,
) {
    let direction = side.direction();
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = drain.signaled() => return,
        };
        match accepted {
            Ok((tcp, client)) => {
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    // Closed at once: the kernel's backlog must not fill with what waits.
                    drop(tcp);
                    metrics.error(direction, "connection_limit");
                    if let Some(suppressed) = LIMIT_LOG.admit("connection_limit") {
                        warn!(direction = direction.as_str(), %client, max_connections, suppressed, "at the connection limit: refusing connections");
                    }
                    continue;
                };
                let span = tracing::debug_span!("conn", direction = direction.as_str(), %client);
                let (side, metrics, drain) = (side.clone(), metrics.clone(), drain.clone());
                tokio::spawn(
                    async move {
                        let _slot = slot;
                        let at = Instant::now();
                        let Some(accepted) = redirected(&tcp, client, at) else {
                            metrics.error(direction, "not_redirected");
                            return;
                        };
                        // TCP_NODELAY and keep-alive come from the listener (app.rs).
                        side.serve(tcp, accepted, drain).await
                    }
                    .instrument(span),
                );
            }
            Err(error) => {
                // Out of file descriptors, most likely: back off instead of spinning.
                warn!(direction = direction.as_str(), %error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The connection as accepted, if iptables redirected it here.
fn redirected(tcp: &TcpStream, client: SocketAddr, at: Instant) -> Option<Accepted> {
    let dst = tcp
        .local_addr()
        .and_then(|local| Ok((original_dst(tcp, local)?, local)));
    match dst {
        Ok((orig_dst, local)) if orig_dst != canonical(local) => Some(Accepted {
            client,
            orig_dst,
            at,
        }),
        dst => {
            let dst = dst.map(|(orig_dst, _)| orig_dst);
            info!(%client, ?dst, "connection was not redirected by iptables; closing it");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PodIdentity;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::AsyncReadExt;

    /// Counts the connections it is handed.
    #[derive(Default)]
    struct CountingSide(AtomicUsize);

    impl Side for CountingSide {
        fn direction(&self) -> Direction {
            Direction::Outbound
        }

        async fn serve(self: Arc<Self>, _: TcpStream, _: Accepted, _: drain::Watch) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_connection_to_the_proxy_port_itself_is_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let side = Arc::new(CountingSide::default());
        let metrics = Arc::new(Metrics::new(&PodIdentity::default()));
        let (_signal, watch) = drain::channel();
        tokio::spawn(serve(side.clone(), listener, metrics.clone(), watch, 100));
        // No iptables rule sent this here: its original destination is the listener.
        let mut client = TcpStream::connect(addr).await.unwrap();
        let mut buf = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("the proxy closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "nothing is forwarded");
        assert_eq!(side.0.load(Ordering::SeqCst), 0, "the side never sees it");
        assert!(metrics
            .encode()
            .contains(r#"proxy_errors_total{direction="outbound",error="not_redirected"} 1"#));
    }
}
