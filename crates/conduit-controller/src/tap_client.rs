//! How the controller reaches a proxy's tap server. A proxy with an identity lets in
//! only the controller, proving its identity over mesh TLS, so the controller issues
//! itself a certificate with the issuer it already holds (no CSR round trip, no token)
//! and checks that the proxy proves exactly the identity of the pod it means to tap.
//! Without an issuer, proxies have no identity either and tap is plain HTTP/2.

use conduit_api::tap::tap_client::TapClient;
use conduit_identity::{ca::Issuer, request::LocalKey};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio_rustls::rustls::{
    self,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    ClientConfig, RootCertStore,
};
use tonic::transport::{Channel, Endpoint};

/// How long the controller's own certificate is valid.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A certificate older than this is replaced before the next connection, so one that is
/// handed to TLS always has most of its life left.
const REISSUE_AFTER: Duration = Duration::from_secs(3600);
/// How long connecting to a tap server, TLS included, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The controller's side of mesh TLS to tap servers.
pub struct TapTls {
    issuer: Issuer,
    name: String,
    roots: Arc<RootCertStore>,
    /// The current client configuration and when its certificate was issued.
    current: Mutex<Option<(Arc<ClientConfig>, Instant)>>,
}

impl TapTls {
    /// Tap as identity `name` (the controller's), with certificates from `issuer`,
    /// trusting proxies whose certificates chain to `anchors_pem`.
    pub fn new(
        issuer: Issuer,
        name: String,
        anchors_pem: &str,
    ) -> Result<TapTls, conduit_identity::anchors::AnchorsError> {
        Ok(TapTls {
            issuer,
            name,
            roots: Arc::new(conduit_identity::anchors::root_store(anchors_pem)?),
            current: Mutex::new(None),
        })
    }

    /// The identity the controller taps as.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A client configuration with a certificate that has most of its life left.
    fn config(&self) -> Result<Arc<ClientConfig>, String> {
        let mut current = self.current.lock();
        if let Some((config, issued)) = &*current {
            if issued.elapsed() < REISSUE_AFTER {
                return Ok(config.clone());
            }
        }
        let key = LocalKey::generate(&self.name).map_err(|e| format!("making a key: {e}"))?;
        let csr = key.csr_der().map_err(|e| format!("making a CSR: {e}"))?;
        let certified = self
            .issuer
            .certify(&csr, &self.name, LIFETIME)
            .map_err(|e| format!("issuing the controller's own certificate: {e}"))?;
        let chain = vec![
            CertificateDer::from(certified.leaf_der),
            CertificateDer::from(certified.issuer_der),
        ];
        let key = PrivateKeyDer::try_from(key.key_der())
            .map_err(|e| format!("the controller's key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_root_certificates(self.roots.clone())
            .with_client_auth_cert(chain, key)
            .map_err(|e| format!("the controller's certificate: {e}"))?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let config = Arc::new(config);
        *current = Some((config.clone(), Instant::now()));
        Ok(config)
    }
}

/// A tap client for the proxy at `addr`, which must prove `identity` when `tls` is set.
pub async fn connect(
    tls: Option<&TapTls>,
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
    let config = tls.config()?;
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
