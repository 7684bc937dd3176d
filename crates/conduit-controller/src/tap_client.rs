//! How the controller reaches a proxy's tap server. A proxy with an identity lets in
//! only the controller, proving its identity over mesh TLS with its own certificate
//! ([`ControllerTls`]), and the controller checks that the proxy proves exactly the
//! identity of the pod it means to tap.
//! Without an issuer, proxies have no identity either and tap is plain HTTP/2.

use crate::tls::ControllerTls;
use conduit_api::tap::tap_client::TapClient;
use hyper_util::rt::TokioIo;
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio_rustls::rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint};

/// How long connecting to a tap server, TLS included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A tap client for the proxy at `addr`, which must prove `identity` when `tls` is set.
pub async fn connect(
    tls: Option<&Arc<ControllerTls>>,
    addr: SocketAddr,
    identity: &str,
) -> Result<TapClient<Channel>, String> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT);
    let Some(tls) = tls else {
        let channel = endpoint.connect().await.map_err(|e| e.to_string())?;
        return Ok(TapClient::new(channel));
    };
    let config = tls.client_config().map_err(|e| e.to_string())?;
    let name = ServerName::try_from(identity.to_string())
        .map_err(|e| format!("{identity:?} is not a name TLS can check: {e}"))?;
    let connector = tower::service_fn(move |_: http::Uri| {
        let (config, name) = (config.clone(), name.clone());
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    // The endpoint's connect timeout bounds the connector, TLS handshake included.
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            // tonic's error says "transport error"; the cause says what went wrong.
            let cause = std::error::Error::source(&e).map(ToString::to_string);
            format!(
                "mesh TLS expecting {identity}: {}",
                cause.unwrap_or(e.to_string())
            )
        })?;
    Ok(TapClient::new(channel))
}
