//! The admin server: `/metrics` (Prometheus/OpenMetrics text), `/ready` (503 while
//! draining), `/live`, and `POST /shutdown`, which only a client on loopback may call.

use crate::{drain, telemetry::metrics::Metrics};
use bytes::Bytes;
use conduit_api::{
    admin::{IDENTITY_PATH, LIVE_PATH, METRICS_PATH, READY_PATH, SHUTDOWN_PATH},
    proxy_env,
};
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tracing::{debug, info};

/// What the admin server reads and controls.
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub drain: Arc<drain::Signal>,
    /// The proxy's identity, when it has one to get: not ready without a certificate.
    pub identity: Option<Arc<crate::control::identity::Identity>>,
}

impl Admin {
    /// Serves until the process exits; it keeps answering while the proxy drains.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        let mut h1 = http1::Builder::new();
        h1.timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10));
        loop {
            let Ok((tcp, peer)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let admin = self.clone();
            let conn = h1.serve_connection(
                TokioIo::new(tcp),
                service_fn(move |req| {
                    let rsp = admin.respond(&req, peer);
                    async move { Ok::<_, Infallible>(rsp) }
                }),
            );
            tokio::spawn(async move {
                if let Err(error) = conn.await {
                    debug!(%error, "admin connection failed");
                }
            });
        }
    }

    fn respond(&self, req: &Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, METRICS_PATH) => {
                let mut rsp = text(StatusCode::OK, self.metrics.encode());
                rsp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    header::HeaderValue::from_static(
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    ),
                );
                rsp
            }
            (&Method::GET, LIVE_PATH) => text(StatusCode::OK, "live\n"),
            (&Method::GET, READY_PATH) if self.drain.is_draining() => {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            }
            (&Method::GET, READY_PATH) => match &self.identity {
                Some(id) if id.certificate().is_none() => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!(
                        "waiting for a certificate for {}: {}\n",
                        id.name,
                        id.last_error()
                            .unwrap_or_else(|| "no answer from the identity service yet".into())
                    ),
                ),
                _ => text(StatusCode::OK, "ready\n"),
            },
            (&Method::GET, IDENTITY_PATH) => match &self.identity {
                Some(id) => {
                    let mut rsp = text(StatusCode::OK, id.describe());
                    rsp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static("application/json"),
                    );
                    rsp
                }
                None => text(
                    StatusCode::NOT_FOUND,
                    format!(
                        "this proxy has no identity ({} is not set)\n",
                        proxy_env::IDENTITY_ADDR
                    ),
                ),
            },
            (&Method::POST, SHUTDOWN_PATH) if peer.ip().is_loopback() => {
                info!(%peer, "shutdown requested through the admin server");
                self.drain.start();
                text(StatusCode::OK, "shutting down\n")
            }
            (&Method::POST, SHUTDOWN_PATH) => text(
                StatusCode::FORBIDDEN,
                "shutdown is only allowed from loopback\n",
            ),
            (_, METRICS_PATH | LIVE_PATH | READY_PATH | IDENTITY_PATH | SHUTDOWN_PATH) => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                format!("not found: try {METRICS_PATH}, {READY_PATH}, {LIVE_PATH}, {IDENTITY_PATH} or POST {SHUTDOWN_PATH}\n"),
            ),
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    rsp
}
