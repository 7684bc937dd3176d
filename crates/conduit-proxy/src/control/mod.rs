//! The proxy's clients of the control plane: endpoint [`discovery`], the pod's inbound
//! [`policy`] and its [`identity`] (certificates). This module owns the connection they
//! share: one HTTP/2 connection, opened on first use and reopened after it fails, carrying
//! the gRPC calls of the generated clients (hyper's client, which the proxy already has,
//! rather than a second HTTP stack), and [`follow`], which keeps a server stream open.
//! With an identity the connection is TLS ([`ControlTls`]): the control plane must prove
//! the controller's identity before the proxy sends it anything (its token included), and
//! once the proxy has its certificate it presents it (mutual TLS) on every new connection.

pub mod discovery;
pub mod followed;
pub mod identity;
pub mod policy;
pub mod profile;

use crate::{
    control::identity::Identity,
    transport::tls::{self, TlsSetupError, UpstreamTransport},
};
use futures_util::future::BoxFuture;
use http::{uri::PathAndQuery, Request, Response, Uri};
use hyper::{body::Incoming, client::conn::http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tracing::warn;

type Sender = http2::SendRequest<tonic::body::Body>;

/// How long connecting to the control plane may take, and then its TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A gRPC transport to `host:port`.
#[derive(Clone)]
pub struct ControlPlane {
    addr: Arc<str>,
    tls: Option<ControlTls>,
    /// The open connection, and whether the proxy presented its certificate on it.
    sender: Arc<tokio::sync::Mutex<Option<(Sender, bool)>>>,
}

/// TLS to the control plane, as this proxy's identity.
#[derive(Clone)]
pub struct ControlTls {
    connector: tokio_rustls::TlsConnector,
    /// What the control plane must prove: the controller's identity. The proxy checks it
    /// itself (no SNI is sent).
    controller: ServerName<'static>,
    identity: Arc<Identity>,
    /// Calls wait for the proxy's certificate, so that they are made over mutual TLS.
    mutual_only: bool,
}

impl ControlTls {
    /// TLS to a control plane that proves `controller_id` with a certificate chained to
    /// `anchors_pem`, presenting `identity`'s certificate once it has one.
    pub fn new(
        identity: Arc<Identity>,
        anchors_pem: &str,
        controller_id: &str,
    ) -> Result<ControlTls, TlsSetupError> {
        let controller = ServerName::try_from(controller_id.to_string())
            .map_err(|e| TlsSetupError::Config(format!("{controller_id:?}: {e}")))?;
        let config = tls::control_plane_config(identity.clone(), anchors_pem)?;
        Ok(ControlTls {
            connector: tokio_rustls::TlsConnector::from(config),
            controller,
            identity,
            mutual_only: false,
        })
    }

    /// The same, for calls that must wait for the proxy's certificate: the control plane
    /// answers Destination and InboundPolicy only over mutual TLS.
    pub fn mutual(&self) -> ControlTls {
        ControlTls {
            mutual_only: true,
            ..self.clone()
        }
    }
}

/// Why a call to the control plane failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("resolving the control plane's address {addr}: {source}")]
    Resolve {
        addr: String,
        source: std::io::Error,
    },
    #[error("connecting to the control plane at {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("the control plane at {addr}: {source}")]
    Http { addr: String, source: hyper::Error },
    #[error("the control plane at {addr} did not prove it is {expected}, so the proxy sends it nothing: {source}")]
    Refused {
        addr: String,
        expected: String,
        source: std::io::Error,
    },
}

impl ControlPlane {
    /// A transport to `addr` (`host:port`), over `tls` when given; nothing connects until
    /// the first call.
    pub fn new(addr: &str, tls: Option<ControlTls>) -> ControlPlane {
        ControlPlane {
            addr: addr.into(),
            tls,
            sender: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    async fn sender(&self) -> Result<Sender, ControlError> {
        if let Some(tls) = self.tls.as_ref().filter(|t| t.mutual_only) {
            tls.identity.certified().await;
        }
        let certified = self
            .tls
            .as_ref()
            .is_some_and(|t| t.identity.certified_key().is_some());
        let mut shared = self.sender.lock().await;
        if let Some((s, mutual)) = shared.as_ref().filter(|(s, _)| !s.is_closed()) {
            // A connection opened before the certificate arrived is left to its calls.
            if *mutual || !certified {
                return Ok(s.clone());
            }
        }
        let addr = self.addr.to_string();
        let resolved = tokio::net::lookup_host(addr.as_str())
            .await
            .map_err(|source| ControlError::Resolve {
                addr: addr.clone(),
                source,
            })?
            .next()
            .ok_or_else(|| ControlError::Resolve {
                addr: addr.clone(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
            })?;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(resolved))
            .await
            .map_err(|_| ControlError::Connect {
                addr: addr.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("timed out after {CONNECT_TIMEOUT:?}"),
                ),
            })?
            .map_err(|source| ControlError::Connect {
                addr: addr.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let io = match &self.tls {
            None => UpstreamTransport::Plain(tcp),
            Some(tls) => UpstreamTransport::Tls(Box::new(self.handshake(tls, tcp).await?)),
        };
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| ControlError::Http {
                addr: addr.clone(),
                source,
            })?;
        tokio::spawn(async move {
            if let Err(error) = conn.await {
                tracing::debug!(%error, "control plane connection ended");
            }
        });
        *shared = Some((sender.clone(), certified));
        Ok(sender)
    }

    /// TLS over `tcp` with a control plane that must prove the controller's identity.
    async fn handshake(
        &self,
        tls: &ControlTls,
        tcp: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ControlError> {
        let expected = tls.controller.to_str().into_owned();
        let handshake = tls.connector.connect(tls.controller.clone(), tcp);
        let result = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(result) => result,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no TLS handshake within {HANDSHAKE_TIMEOUT:?}"),
            )),
        };
        result.map_err(|source| {
            let certificate = source
                .get_ref()
                .and_then(|e| e.downcast_ref::<rustls::Error>())
                .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)));
            if !certificate {
                // Not a question of identity: the handshake broke or stalled.
                return ControlError::Connect {
                    addr: self.addr.to_string(),
                    source,
                };
            }
            warn!(addr = %self.addr, %expected, error = %source, "refusing the control plane: it did not prove the controller's identity");
            ControlError::Refused {
                addr: self.addr.to_string(),
                expected,
                source,
            }
        })
    }
}

impl tower::Service<Request<tonic::body::Body>> for ControlPlane {
    type Response = Response<Incoming>;
    type Error = ControlError;
    type Future = BoxFuture<'static, Result<Response<Incoming>, ControlError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ControlError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            // HTTP/2 needs a scheme and an authority; the generated client gives a path.
            let path = req
                .uri()
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/"));
            if let Ok(uri) = Uri::builder()
                .scheme(if this.tls.is_some() { "https" } else { "http" })
                .authority(&*this.addr)
                .path_and_query(path)
                .build()
            {
                *req.uri_mut() = uri;
            }
            let mut sender = this.sender().await?;
            sender
                .send_request(req)
                .await
                .map_err(|source| ControlError::Http {
                    addr: this.addr.to_string(),
                    source,
                })
        })
    }
}

/// What happened to a followed stream, for the follower to act on.
pub enum Followed<T> {
    /// A message arrived.
    Message(T),
    /// The call could not be made (the control plane is unreachable, say).
    Failed(tonic::Status),
    /// An open stream ended or broke; it is reopened.
    Lost,
}

/// Follows a server-streaming call until `closed` resolves: opens it with `open`, reports
/// every message, failure and loss to `on`, and reopens it after a failure or loss with
/// backoff (250 ms, doubling to 10 s, reset by a successful open).
pub async fn follow<T, Open, Fut>(
    mut open: Open,
    mut on: impl FnMut(Followed<T>),
    closed: impl std::future::Future<Output = ()>,
) where
    Open: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>>,
{
    tokio::pin!(closed);
    let mut backoff = Duration::from_millis(250);
    loop {
        match open().await {
            Ok(rsp) => {
                let mut stream = rsp.into_inner();
                backoff = Duration::from_millis(250);
                loop {
                    tokio::select! {
                        msg = stream.message() => match msg {
                            Ok(Some(m)) => on(Followed::Message(m)),
                            Ok(None) | Err(_) => break,
                        },
                        () = &mut closed => return,
                    }
                }
                on(Followed::Lost);
            }
            Err(status) => on(Followed::Failed(status)),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = &mut closed => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(10));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use conduit_api::identity::{
        identity_client::IdentityClient,
        identity_server::{Identity as IdentityApi, IdentityServer},
        CertifyRequest, CertifyResponse,
    };
    use conduit_identity::{ca, request::LocalKey};
    use rustls::{
        pki_types::{CertificateDer, PrivateKeyDer},
        server::WebPkiClientVerifier,
        ServerConfig,
    };
    use std::{net::SocketAddr, sync::Mutex};
    use tokio::net::TcpListener;

    /// A TLS connection a test's gRPC server accepted, with the client identity its
    /// certificate proved.
    pub struct Accepted(pub tokio_rustls::server::TlsStream<tokio::net::TcpStream>);

    impl tonic::transport::server::Connected for Accepted {
        type ConnectInfo = Option<String>;
        fn connect_info(&self) -> Option<String> {
            self.0
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(|leaf| conduit_identity::cert_identity(leaf))
        }
    }

    impl tokio::io::AsyncRead for Accepted {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
        }
    }

    impl tokio::io::AsyncWrite for Accepted {
        fn poll_write(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<std::io::Result<usize>> {
            std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx)
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<std::io::Result<()>> {
            std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
        }
    }

    /// A control plane's TLS on a loopback port: a certificate for `name` from `files`'
    /// issuer, client certificates optional (checked against `files`' anchor). Every
    /// ClientHello's SNI is recorded in `snis`.
    pub async fn tls_incoming(
        files: &ca::TrustFiles,
        name: &str,
        snis: Arc<Mutex<Vec<Option<String>>>>,
    ) -> (
        SocketAddr,
        impl tokio_stream::Stream<Item = std::io::Result<Accepted>>,
    ) {
        let issuer = ca::Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap();
        let key = LocalKey::generate(name).unwrap();
        let c = issuer
            .certify(&key.csr_der().unwrap(), name, Duration::from_secs(3600))
            .unwrap();
        let chain = vec![
            CertificateDer::from(c.leaf_der),
            CertificateDer::from(c.issuer_der),
        ];
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(conduit_identity::anchors::root_store(&files.anchor_pem).unwrap());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .allow_unauthenticated()
            .build()
            .unwrap();
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, PrivateKeyDer::try_from(key.key_der()).unwrap())
            .unwrap();
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, tx, snis) = (acceptor.clone(), tx.clone(), snis.clone());
                tokio::spawn(async move {
                    let start = tokio_rustls::LazyConfigAcceptor::new(
                        rustls::server::Acceptor::default(),
                        tcp,
                    );
                    let Ok(start) = start.await else { return };
                    let sni = start.client_hello().server_name().map(str::to_string);
                    snis.lock().unwrap().push(sni);
                    if let Ok(tls) = start.into_stream(acceptor.config().clone()).await {
                        let _ = tx.send(Ok(Accepted(tls))).await;
                    }
                });
            }
        });
        (addr, tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// Signs every CSR and says which client identity asked.
    struct Signer {
        issuer: ca::Issuer,
        callers: Arc<Mutex<Vec<Option<String>>>>,
    }

    #[tonic::async_trait]
    impl IdentityApi for Signer {
        async fn certify(
            &self,
            req: tonic::Request<CertifyRequest>,
        ) -> Result<tonic::Response<CertifyResponse>, tonic::Status> {
            let caller = req.extensions().get::<Option<String>>().cloned().flatten();
            self.callers.lock().unwrap().push(caller);
            let r = req.into_inner();
            let c = self
                .issuer
                .certify(
                    &r.certificate_signing_request,
                    &r.identity,
                    Duration::from_secs(60),
                )
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            Ok(tonic::Response::new(CertifyResponse {
                leaf_certificate: c.leaf_der,
                intermediate_certificates: vec![c.issuer_der],
                valid_until_unix: c.not_after.unix_timestamp(),
            }))
        }
    }

    fn ask(identity: &Identity) -> CertifyRequest {
        CertifyRequest {
            identity: identity.name.clone(),
            token: "a token".into(),
            certificate_signing_request: identity.csr_der().unwrap(),
        }
    }

    /// The proxy calls only a control plane that proves the controller's identity, with
    /// a certificate from the mesh's anchors, sends it no SNI, and presents its own
    /// certificate on the connections it opens once it has one.
    #[tokio::test]
    async fn only_the_controllers_identity_is_spoken_to_and_mutual_tls_follows_the_certificate() {
        let files = ca::generate(Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
        let controller = conduit_identity::controller_identity("conduit");
        let web = conduit_identity::identity_name("web", "emojivoto");
        let identity = Arc::new(Identity::new(&web).unwrap());
        let tls = ControlTls::new(identity.clone(), &files.anchor_pem, &controller).unwrap();

        let serve = |name: &str, files: &ca::TrustFiles| {
            let (name, files) = (name.to_string(), files.clone());
            async move {
                let snis = Arc::new(Mutex::new(Vec::new()));
                let callers = Arc::new(Mutex::new(Vec::new()));
                let (addr, incoming) = tls_incoming(&files, &name, snis.clone()).await;
                let signer = Signer {
                    issuer: ca::Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem)
                        .unwrap(),
                    callers: callers.clone(),
                };
                tokio::spawn(
                    tonic::transport::Server::builder()
                        .add_service(IdentityServer::new(signer))
                        .serve_with_incoming(incoming),
                );
                (addr.to_string(), snis, callers)
            }
        };

        // Another name from the same issuer, and the right name from another CA: refused
        // before anything is sent, saying why.
        let other_ca = ca::generate(Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
        let impostor = conduit_identity::identity_name("conduit-controller", "elsewhere");
        for (name, files, why) in [
            (&impostor, &files, "not valid for name"),
            (&controller, &other_ca, "invalid peer certificate"),
        ] {
            let (addr, _, callers) = serve(name, files).await;
            let mut client = IdentityClient::new(ControlPlane::new(&addr, Some(tls.clone())));
            let err = client.certify(ask(&identity)).await.unwrap_err();
            let message = err.message();
            assert!(
                message.contains(&format!("did not prove it is {controller}"))
                    && message.contains(why),
                "{message}"
            );
            assert!(
                callers.lock().unwrap().is_empty(),
                "nothing reached the impostor"
            );
        }

        // The controller: server-authenticated TLS first, without SNI.
        let (addr, snis, callers) = serve(&controller, &files).await;
        let control = ControlPlane::new(&addr, Some(tls.clone()));
        let mut client = IdentityClient::new(control.clone());
        let rsp = client.certify(ask(&identity)).await.unwrap().into_inner();
        assert_eq!(callers.lock().unwrap().as_slice(), [None]);
        identity.install(identity::Certificate {
            leaf_der: rsp.leaf_certificate,
            intermediates_der: rsp.intermediate_certificates,
            valid_until: std::time::SystemTime::now() + Duration::from_secs(60),
        });
        // Certified: the next call opens a new connection, with the proxy's certificate.
        client.certify(ask(&identity)).await.unwrap();
        assert_eq!(
            callers.lock().unwrap().as_slice(),
            [None, Some(web.clone())]
        );
        // Calls that must be mutual wait for the certificate; this one has it.
        let mut mutual = IdentityClient::new(ControlPlane::new(&addr, Some(tls.mutual())));
        mutual.certify(ask(&identity)).await.unwrap();
        assert_eq!(callers.lock().unwrap().last(), Some(&Some(web.clone())));
        assert!(snis.lock().unwrap().iter().all(Option::is_none), "{snis:?}");
        assert_eq!(snis.lock().unwrap().len(), 3);
    }

    /// Calls that must be mutual are not made before the proxy has a certificate.
    #[tokio::test]
    async fn mutual_calls_wait_for_the_certificate() {
        let files = ca::generate(Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
        let controller = conduit_identity::controller_identity("conduit");
        let identity =
            Arc::new(Identity::new(&conduit_identity::identity_name("web", "emojivoto")).unwrap());
        let tls = ControlTls::new(identity.clone(), &files.anchor_pem, &controller).unwrap();
        let snis = Arc::new(Mutex::new(Vec::new()));
        let (addr, _incoming) = tls_incoming(&files, &controller, snis.clone()).await;
        let mut mutual =
            IdentityClient::new(ControlPlane::new(&addr.to_string(), Some(tls.mutual())));
        let waited =
            tokio::time::timeout(Duration::from_millis(300), mutual.certify(ask(&identity))).await;
        assert!(waited.is_err(), "the call waited");
        assert!(snis.lock().unwrap().is_empty(), "no connection was opened");
    }
}
