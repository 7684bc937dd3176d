//! The API server as the aggregator of extension API servers: a request under
//! `/apis/<group>/<version>` of an `APIService` is authenticated (bearer token), authorized
//! with RBAC as the path reads (verb, resource, namespace), and sent on over TLS to the
//! Service the APIService names: the backend's certificate checked against the
//! APIService's `caBundle` for `<service>.<namespace>.svc`, this server's front-proxy
//! client certificate presented, and the user in `X-Remote-User`/`X-Remote-Group` (any
//! such header the caller sent is dropped), as kube-apiserver's aggregator does. The
//! front proxy's CA and header names are published in
//! `kube-system/extension-apiserver-authentication`.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::{json, Value};
use std::{net::SocketAddr, sync::Arc};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName},
};

/// The front proxy's client certificate's common name, the one allowed name.
pub(crate) const FRONT_PROXY_NAME: &str = "front-proxy-client";
/// The header the user's name goes in.
pub(crate) const USER_HEADER: &str = "X-Remote-User";
/// The header each of the user's groups goes in.
pub(crate) const GROUP_HEADER: &str = "X-Remote-Group";
/// The prefix of the headers of the user's extra attributes.
pub(crate) const EXTRA_PREFIX: &str = "X-Remote-Extra-";

/// The front proxy's CA and client certificate.
pub(crate) struct FrontProxy {
    pub ca_pem: String,
    cert: CertificateDer<'static>,
    key_pem: String,
}

impl FrontProxy {
    pub fn generate() -> Result<FrontProxy, rcgen::Error> {
        let ca_key = KeyPair::generate()?;
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.distinguished_name
            .push(DnType::CommonName, "front-proxy-ca");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key)?;
        let key = KeyPair::generate()?;
        let mut leaf = CertificateParams::new(Vec::<String>::new())?;
        leaf.distinguished_name
            .push(DnType::CommonName, FRONT_PROXY_NAME);
        leaf.is_ca = IsCa::ExplicitNoCa;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&key, &Issuer::new(ca, ca_key))?;
        Ok(FrontProxy {
            ca_pem: ca_cert.pem(),
            cert: cert.der().clone(),
            key_pem: key.serialize_pem(),
        })
    }

    /// `kube-system/extension-apiserver-authentication`, as kube-apiserver publishes it.
    pub fn config_map(&self) -> Value {
        let list = |v: &str| json!([v]).to_string();
        json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "extension-apiserver-authentication", "namespace": "kube-system"},
            "data": {
                "requestheader-client-ca-file": self.ca_pem,
                "requestheader-allowed-names": list(FRONT_PROXY_NAME),
                "requestheader-username-headers": list(USER_HEADER),
                "requestheader-group-headers": list(GROUP_HEADER),
                "requestheader-extra-headers-prefix": list(EXTRA_PREFIX),
            },
        })
    }

    /// A TLS connection to the backend at `addr`, whose certificate must chain to
    /// `ca_bundle_pem` and name `server_name`, presenting the front proxy's certificate.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        ca_bundle_pem: &str,
        server_name: &str,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_bundle_pem.as_bytes()) {
            let cert = cert.map_err(|e| format!("the APIService's caBundle: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the APIService's caBundle: {e}"))?;
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| format!("the front proxy's key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_client_auth_cert(vec![self.cert.clone()], key)
            .map_err(|e| e.to_string())?;
        let name = ServerName::try_from(server_name.to_string()).map_err(|e| e.to_string())?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| e.to_string())?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| format!("x509 or TLS: {e}"))
    }
}

/// What RBAC reads from an aggregated path: the namespace and resource (none for the
/// group's discovery document), and the verb.
pub(crate) struct RequestInfo {
    pub namespace: Option<String>,
    pub resource: Option<String>,
    pub verb: &'static str,
}

/// Reads `rest` (the path after `/apis/<group>/<version>`) as kube-apiserver's request
/// info does: `[/namespaces/<ns>]/<resource>[/<name>]`, GET a list (or a watch with
/// `watch=true`) or a get.
pub(crate) fn request_info(method: &http::Method, rest: &str, watch: bool) -> RequestInfo {
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (namespace, segs) = match segs.as_slice() {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        other => (None, other),
    };
    let named = segs.len() > 1;
    let verb = match *method {
        http::Method::GET if named => "get",
        http::Method::GET if watch => "watch",
        http::Method::GET => "list",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "unknown",
    };
    RequestInfo {
        namespace,
        resource: segs.first().map(|s| s.to_string()),
        verb,
    }
}
