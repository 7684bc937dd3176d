//! The proxy's own identity: a private key made in memory at start (never written
//! anywhere), certified by the control plane's Identity API with the pod's token, and
//! renewed at 70% of each certificate's life, with backoff while that fails; the current
//! certificate keeps serving meanwhile. The proxy is not ready until it has one.

use crate::control::{ControlPlane, ControlTls};
use conduit_api::{
    admin::ProxyIdentity,
    identity::{identity_client::IdentityClient, CertifyRequest},
};
use conduit_identity::request::LocalKey;
use parking_lot::RwLock;
use rustls::{
    pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    sign::{CertifiedKey, SigningKey},
};
use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};
use tracing::{info, warn};

/// What the proxy needs to get certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// The Identity API (`host:port`).
    pub addr: String,
    /// Where the pod's token is (re-read for every request: tokens rotate).
    pub token_file: PathBuf,
    /// This proxy's identity name.
    pub name: String,
    /// The mesh's trust anchors (PEM): what peers' certificates must chain to.
    pub trust_anchors_pem: String,
    /// The only identity the tap server lets in: the controller's.
    pub tap_client_id: String,
    /// What the control plane must prove: the controller's identity.
    pub controller_id: String,
}

/// A certificate the proxy holds.
#[derive(Clone, Debug)]
pub struct Certificate {
    pub leaf_der: Vec<u8>,
    pub intermediates_der: Vec<Vec<u8>>,
    pub valid_until: SystemTime,
}

/// The proxy's identity as it stands.
pub struct Identity {
    pub name: String,
    key: LocalKey,
    /// The same key, for signing TLS handshakes.
    signing_key: Arc<dyn SigningKey>,
    current: RwLock<Option<Certificate>>,
    /// The current certificate with its key, as TLS wants it.
    certified_key: RwLock<Option<Arc<CertifiedKey>>>,
    /// Flips to true once the first certificate is in.
    certified: tokio::sync::watch::Sender<bool>,
    last_error: RwLock<Option<String>>,
}

impl Identity {
    /// The certificate, if one was issued.
    pub fn certificate(&self) -> Option<Certificate> {
        self.current.read().clone()
    }

    /// The current certificate chain and key, for TLS handshakes.
    pub fn certified_key(&self) -> Option<Arc<CertifiedKey>> {
        self.certified_key.read().clone()
    }

    /// Makes `cert` the one TLS handshakes present from now on.
    pub fn install(&self, cert: Certificate) {
        let chain = std::iter::once(&cert.leaf_der)
            .chain(&cert.intermediates_der)
            .map(|der| CertificateDer::from(der.clone()))
            .collect();
        let certified = Arc::new(CertifiedKey::new(chain, self.signing_key.clone()));
        *self.certified_key.write() = Some(certified);
        *self.current.write() = Some(cert);
        self.certified.send_replace(true);
    }

    /// Waits until the identity has a certificate, or `deadline`; says whether it has one.
    pub async fn wait_certified(&self, deadline: tokio::time::Instant) -> bool {
        let mut rx = self.certified.subscribe();
        tokio::time::timeout_at(deadline, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the identity has its first certificate.
    pub async fn certified(&self) {
        let mut rx = self.certified.subscribe();
        // The sender lives in `self`: the wait ends only with a certificate.
        let _ = rx.wait_for(|c| *c).await;
    }

    /// Why the last request failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().clone()
    }

    /// A fresh key for `name`, not yet certified.
    pub fn new(name: &str) -> Result<Identity, String> {
        let key = LocalKey::generate(name).map_err(|e| format!("making the proxy's key: {e}"))?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.key_der()));
        let signing_key = rustls::crypto::ring::sign::any_ecdsa_type(&der)
            .map_err(|e| format!("loading the proxy's key for TLS: {e}"))?;
        Ok(Identity {
            name: name.to_string(),
            key,
            signing_key,
            current: RwLock::new(None),
            certified_key: RwLock::new(None),
            certified: tokio::sync::watch::Sender::new(false),
            last_error: RwLock::new(None),
        })
    }

    /// A certificate signing request for the identity's name.
    pub fn csr_der(&self) -> Result<Vec<u8>, String> {
        self.key
            .csr_der()
            .map_err(|e| format!("making the CSR: {e}"))
    }

    /// JSON for the admin server's `/identity`.
    pub fn describe(&self) -> String {
        let cert = self.certificate();
        let report = ProxyIdentity {
            identity: self.name.clone(),
            certified: cert.is_some(),
            valid_until_unix: cert
                .as_ref()
                .and_then(|c| c.valid_until.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_secs()),
            last_error: self.last_error(),
        };
        // Serializing strings, numbers and booleans cannot fail.
        let mut json = serde_json::to_string(&report).unwrap_or_default();
        json.push('\n');
        json
    }
}

/// Makes the key and starts certifying it in the background, over TLS to a control plane
/// that proves the controller's identity; also returns that TLS, for the proxy's other
/// calls to the control plane.
pub fn spawn(cfg: IdentityConfig) -> Result<(Arc<Identity>, ControlTls), String> {
    let identity = Arc::new(Identity::new(&cfg.name)?);
    let tls = ControlTls::new(identity.clone(), &cfg.trust_anchors_pem, &cfg.controller_id)
        .map_err(|e| format!("{}: {e}", conduit_api::proxy_env::IDENTITY_TRUST_ANCHORS))?;
    let certify_tls = tls.clone();
    let renewing = identity.clone();
    tokio::spawn(async move {
        let identity = renewing;
        let mut client = IdentityClient::new(ControlPlane::new(&cfg.addr, Some(certify_tls)));
        let mut backoff = Duration::from_millis(500);
        loop {
            let wait = match certify(&mut client, &cfg, &identity).await {
                Ok(cert) => {
                    let life = cert
                        .valid_until
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    info!(identity = %cfg.name, valid_for = %humantime::format_duration(Duration::from_secs(life.as_secs())), "certified");
                    identity.install(cert);
                    *identity.last_error.write() = None;
                    backoff = Duration::from_millis(500);
                    life.mul_f64(0.7)
                }
                Err(error) => {
                    warn!(identity = %cfg.name, %error, retry_in = ?backoff, "certificate request failed; keeping the current certificate");
                    *identity.last_error.write() = Some(error);
                    let wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                    wait
                }
            };
            tokio::time::sleep(wait).await;
        }
    });
    Ok((identity, tls))
}

async fn certify(
    client: &mut IdentityClient<ControlPlane>,
    cfg: &IdentityConfig,
    identity: &Identity,
) -> Result<Certificate, String> {
    let token = std::fs::read_to_string(&cfg.token_file).map_err(|e| {
        format!(
            "reading the identity token {}: {e}",
            cfg.token_file.display()
        )
    })?;
    let csr = identity.csr_der()?;
    let rsp = client
        .certify(CertifyRequest {
            identity: cfg.name.clone(),
            token: token.trim().to_string(),
            certificate_signing_request: csr,
        })
        .await
        .map_err(|s| match std::error::Error::source(&s) {
            // The call never left the proxy: the transport says why (the control plane
            // was unreachable, or could not prove its identity).
            Some(_) => format!("no answer from the identity service: {}", s.message()),
            None => format!("the identity service refused: {}", s.message()),
        })?
        .into_inner();
    let valid_until =
        UNIX_EPOCH + Duration::from_secs(u64::try_from(rsp.valid_until_unix).unwrap_or(0));
    if valid_until <= SystemTime::now() {
        return Err("the identity service returned an expired certificate".into());
    }
    Ok(Certificate {
        leaf_der: rsp.leaf_certificate,
        intermediates_der: rsp.intermediate_certificates,
        valid_until,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit_api::identity::{
        identity_server::{Identity as IdentityApi, IdentityServer},
        CertifyResponse,
    };
    use conduit_identity::{ca, identity_name};
    use std::sync::atomic::{AtomicU32, Ordering};

    /// An identity service that signs anything for a short life, and can be told to fail.
    struct Signer {
        issuer: ca::Issuer,
        life: Duration,
        issued: Arc<AtomicU32>,
        failing: Arc<std::sync::atomic::AtomicBool>,
    }

    #[tonic::async_trait]
    impl IdentityApi for Signer {
        async fn certify(
            &self,
            req: tonic::Request<CertifyRequest>,
        ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
            if self.failing.load(Ordering::SeqCst) {
                return Err(tonic::Status::unavailable("down for the test"));
            }
            let r = req.into_inner();
            let c = self
                .issuer
                .certify(&r.certificate_signing_request, &r.identity, self.life)
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            self.issued.fetch_add(1, Ordering::SeqCst);
            Ok(tonic::Response::new(CertifyResponse {
                leaf_certificate: c.leaf_der,
                intermediate_certificates: vec![c.issuer_der],
                valid_until_unix: c.not_after.unix_timestamp(),
            }))
        }
    }

    #[tokio::test]
    async fn certifies_renews_and_keeps_the_certificate_while_the_service_is_down() {
        let files = ca::generate(Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
        let issued = Arc::new(AtomicU32::new(0));
        let failing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let signer = Signer {
            issuer: ca::Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap(),
            // Whole seconds: the certificate's expiry is stored to the second.
            life: Duration::from_secs(3),
            issued: issued.clone(),
            failing: failing.clone(),
        };
        let controller = conduit_identity::controller_identity("conduit");
        let snis = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (addr, incoming) = crate::control::tests::tls_incoming(&files, &controller, snis).await;
        let addr = addr.to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(IdentityServer::new(signer))
                .serve_with_incoming(incoming),
        );
        let token = std::env::temp_dir().join(format!("conduit-token-{}", std::process::id()));
        std::fs::write(&token, "a token\n").unwrap();
        let name = identity_name("web", "emojivoto");
        let (identity, _) = spawn(IdentityConfig {
            addr,
            token_file: token.clone(),
            name: name.clone(),
            trust_anchors_pem: files.anchor_pem.clone(),
            tap_client_id: controller.clone(),
            controller_id: controller,
        })
        .unwrap();
        let wait_for = |n: u32| {
            let issued = issued.clone();
            async move {
                tokio::time::timeout(Duration::from_secs(30), async {
                    while issued.load(Ordering::SeqCst) < n {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                })
                .await
                .expect("certificates were issued")
            }
        };
        wait_for(1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first = identity.certificate().expect("certified");
        assert!(identity
            .describe()
            .contains(&format!("\"identity\":\"{name}\",\"certified\":true")));
        // Renewed before it expires.
        wait_for(2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = identity.certificate().unwrap();
        assert_ne!(first.leaf_der, second.leaf_der);
        // The service goes down: the proxy keeps what it has and says why it could not renew.
        failing.store(true, Ordering::SeqCst);
        let failed = tokio::time::timeout(Duration::from_secs(30), async {
            while identity.last_error().is_none() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(failed.is_ok());
        assert!(identity.certificate().is_some());
        assert!(identity.last_error().unwrap().contains("down for the test"));
        // It comes back: renewal resumes.
        failing.store(false, Ordering::SeqCst);
        wait_for(3).await;
        let _ = std::fs::remove_file(token);
    }
}
