//! The controller's own identity (`conduit-controller.<ns>.serviceaccount.identity...`):
//! one certified key, issued by the mesh issuer the controller holds (no CSR round trip,
//! no token), reissued before it ages, and presented on both sides: as the server of the
//! gRPC port proxies call, and as the client of proxies' tap servers. Without an issuer
//! there is no identity and both stay plaintext.

use conduit_identity::{ca::Issuer, request::LocalKey};
use parking_lot::Mutex;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio_rustls::rustls::{
    self,
    client::ResolvesClientCert,
    pki_types::{CertificateDer, PrivateKeyDer},
    server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ClientConfig, RootCertStore, ServerConfig, SignatureScheme,
};

/// How long the controller's own certificate is valid.
const LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// A certificate older than this is replaced before the next handshake, so one that is
/// handed to TLS always has most of its life left.
const REISSUE_AFTER: Duration = Duration::from_secs(3600);

/// Why the controller's TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error(transparent)]
    Anchors(#[from] conduit_identity::anchors::AnchorsError),
    #[error("building the controller's TLS configuration: {0}")]
    Config(String),
}

/// The controller's certified key and the TLS configurations that present it.
pub struct ControllerTls {
    issuer: Issuer,
    name: String,
    roots: Arc<RootCertStore>,
    /// The current certified key and when it was issued.
    current: Mutex<Option<(Arc<CertifiedKey>, Instant)>>,
}

impl ControllerTls {
    /// The identity `name` (the controller's), certified by `issuer`, trusting peers whose
    /// certificates chain to `anchors_pem`.
    pub fn new(issuer: Issuer, name: String, anchors_pem: &str) -> Result<ControllerTls, TlsError> {
        Ok(ControllerTls {
            issuer,
            name,
            roots: Arc::new(conduit_identity::anchors::root_store(anchors_pem)?),
            current: Mutex::new(None),
        })
    }

    /// The controller's identity name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The certified key, issued again when it has aged.
    pub fn certified_key(&self) -> Result<Arc<CertifiedKey>, String> {
        let mut current = self.current.lock();
        if let Some((key, issued)) = &*current {
            if issued.elapsed() < REISSUE_AFTER {
                return Ok(key.clone());
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
        let der = PrivateKeyDer::try_from(key.key_der())
            .map_err(|e| format!("the controller's key: {e}"))?;
        let signer = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .map_err(|e| format!("the controller's key: {e}"))?;
        let certified = Arc::new(CertifiedKey::new(chain, signer));
        *current = Some((certified.clone(), Instant::now()));
        Ok(certified)
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// TLS 1.3 to proxies' HTTP/2 servers (tap), presenting the controller's certificate
    /// and checking theirs against the anchors; the caller names the identity expected.
    pub fn client_config(self: &Arc<Self>) -> Result<Arc<ClientConfig>, TlsError> {
        let mut config = ClientConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(self.roots.clone())
            .with_client_cert_resolver(Arc::new(Current(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// TLS 1.3 for the gRPC port: the controller's certificate, and a client certificate
    /// checked against the anchors when one is presented. A proxy has none before its
    /// first Certify call, so the handshake lets it in without; the services decide what
    /// an unauthenticated caller may do.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let verifier =
            WebPkiClientVerifier::builder_with_provider(self.roots.clone(), Self::provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
        let mut config = ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(Arc::new(Current(self.clone())));
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }
}

/// Hands TLS the current certified key, as client and as server.
struct Current(Arc<ControllerTls>);

impl std::fmt::Debug for Current {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Current").field(&self.0.name).finish()
    }
}

impl Current {
    fn key(&self) -> Option<Arc<CertifiedKey>> {
        self.0
            .certified_key()
            .inspect_err(|error| tracing::error!(%error, identity = %self.0.name, "no certificate to present"))
            .ok()
    }
}

impl ResolvesClientCert for Current {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for Current {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.key()
    }
}
