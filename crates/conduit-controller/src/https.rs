//! HTTPS serving for the controller's HTTP endpoints on TCP (the injector, the public
//! API): the TLS handshake of each connection, then HTTP/1 with a service made for that
//! connection from its verified client certificate, if it presented one. Knows nothing
//! about what is served.

use axum::response::Response;
use hyper::{body::Incoming, Request};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use std::{convert::Infallible, sync::Arc};
use tokio::net::TcpListener;
use tokio_rustls::rustls::{self, pki_types::CertificateDer};
use tracing::debug;

/// Serves `listener` over TLS until the process ends; `what` names it in logs.
pub async fn serve<F, S>(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    what: &'static str,
    service_for: F,
) where
    F: Fn(Option<CertificateDer<'static>>) -> S + Send + Sync + 'static,
    S: tower::Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let service_for = Arc::new(service_for);
    loop {
        let Ok((tcp, peer)) = listener.accept().await else {
            continue;
        };
        let (acceptor, service_for) = (acceptor.clone(), service_for.clone());
        tokio::spawn(async move {
            let tls = match acceptor.accept(tcp).await {
                Ok(tls) => tls,
                Err(error) => return debug!(%peer, %error, what, "TLS handshake failed"),
            };
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first().cloned());
            let service = TowerToHyperService::new(service_for(certificate));
            if let Err(error) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await
            {
                debug!(%peer, %error, what, "connection ended with an error");
            }
        });
    }
}
