//! The gRPC port proxies call (Destination, InboundPolicy, Identity): its connections, who
//! is calling on each, and what one caller may hold. With the controller's identity
//! ([`ControllerTls`]) every connection is TLS 1.3 and a proxy that has its certificate
//! presents it, so each call knows its caller's address and verified identity
//! ([`Caller`]); without an issuer the port stays plaintext and only addresses are known.
//! [`Limits`] bounds the calls in flight per connection and the watches per client (its
//! identity, else its address), refusing the excess with RESOURCE_EXHAUSTED.

use crate::tls::ControllerTls;
use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, HashMap},
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{mpsc, Semaphore},
};
use tokio_stream::Stream;
use tonic::{transport::server::Connected, Status};

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait to be accepted, so a flood of
/// idle TCP connections cannot hold the controller's memory.
const MAX_HANDSHAKES: usize = 256;

/// Who is calling, as one connection proved it.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The client's address.
    pub addr: SocketAddr,
    /// The mesh identity its certificate proves, when it presented one (TLS only).
    pub identity: Option<Arc<str>>,
    /// Calls in flight on this connection.
    calls: Arc<AtomicUsize>,
}

impl Caller {
    /// The caller of `req`, as the connection it came on knows it.
    pub fn of<T>(req: &tonic::Request<T>) -> Option<&Caller> {
        req.extensions().get::<Caller>()
    }

    /// The key its watches are counted by: its identity, else its address.
    fn client(&self) -> String {
        match &self.identity {
            Some(id) => id.to_string(),
            None => self.addr.ip().to_string(),
        }
    }
}

/// A connection to the gRPC port.
pub enum Conn {
    Plain(TcpStream, Caller),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>, Caller),
}

impl Connected for Conn {
    type ConnectInfo = Caller;

    fn connect_info(&self) -> Caller {
        match self {
            Conn::Plain(_, c) | Conn::Tls(_, c) => c.clone(),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io, _) => Pin::new(io).poll_read(cx, buf),
            Conn::Tls(io, _) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(io, _) => Pin::new(io).poll_write(cx, buf),
            Conn::Tls(io, _) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io, _) => Pin::new(io).poll_flush(cx),
            Conn::Tls(io, _) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(io, _) => Pin::new(io).poll_shutdown(cx),
            Conn::Tls(io, _) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connections accepted on `listener`: TLS with the controller's identity when `tls`
/// is set (each handshake in a task of its own, so a slow client delays no one), else
/// plaintext. Ends when the receiver is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ControllerTls>>,
) -> Result<impl Stream<Item = io::Result<Conn>>, crate::tls::TlsError> {
    let acceptor = tls
        .map(|t| t.server_config().map(tokio_rustls::TlsAcceptor::from))
        .transpose()?;
    let (tx, rx) = mpsc::channel(64);
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else {
                return;
            };
            let (tcp, addr) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(error) => {
                        // Out of file descriptors, say: wait rather than spin.
                        tracing::warn!(%error, "accepting a gRPC connection failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = tx.closed() => return,
            };
            // Answers are streams of small messages: none may wait for a proxy's delayed
            // ACK of the one before (40 ms on Linux).
            let _ = tcp.set_nodelay(true);
            // On a dual-stack listener an IPv4 client shows as ::ffff:a.b.c.d; pods are
            // known by their plain addresses.
            let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
            let caller = Caller {
                addr,
                identity: None,
                calls: Arc::default(),
            };
            let Some(acceptor) = acceptor.clone() else {
                drop(permit);
                if tx.send(Ok(Conn::Plain(tcp, caller))).await.is_err() {
                    return;
                }
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await;
                drop(permit);
                let stream = match handshake {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::info!(client = %addr, %error, "gRPC TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(client = %addr, timeout = ?HANDSHAKE_TIMEOUT, "gRPC TLS handshake timed out");
                        return;
                    }
                };
                let identity = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|certs| certs.first())
                    .and_then(|leaf| conduit_identity::cert_identity(leaf));
                let caller = Caller {
                    identity: identity.map(Arc::from),
                    ..caller
                };
                let _ = tx.send(Ok(Conn::Tls(Box::new(stream), caller))).await;
            });
        }
    });
    Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// What one caller may hold on the gRPC port.
pub struct Limits {
    per_connection: usize,
    per_client: usize,
    watches: Mutex<HashMap<String, usize>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
}

/// A call admitted by [`Limits::admit`]; dropping it (with the call's answer) frees its
/// place.
pub struct Admitted {
    limits: Arc<Limits>,
    calls: Arc<AtomicUsize>,
    client: Option<String>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.calls.fetch_sub(1, Ordering::AcqRel);
        if let Some(client) = &self.client {
            let mut watches = self.limits.watches.lock();
            if let Some(n) = watches.get_mut(client) {
                *n -= 1;
                if *n == 0 {
                    watches.remove(client);
                }
            }
        }
    }
}

impl Limits {
    /// At most `per_connection` calls in flight on one connection, and `per_client`
    /// watches (server streams) open for one client.
    pub fn new(per_connection: usize, per_client: usize) -> Arc<Limits> {
        Arc::new(Limits {
            per_connection,
            per_client,
            watches: Mutex::default(),
            refused: Mutex::default(),
        })
    }

    /// Admits a call from `caller` (a watch when `watch`), or refuses it with
    /// RESOURCE_EXHAUSTED, counted by which limit it hit.
    pub fn admit(self: &Arc<Self>, caller: &Caller, watch: bool) -> Result<Admitted, Status> {
        let calls = caller.calls.fetch_add(1, Ordering::AcqRel) + 1;
        let mut admitted = Admitted {
            limits: self.clone(),
            calls: caller.calls.clone(),
            client: None,
        };
        if calls > self.per_connection {
            return Err(self.refuse(
                "streams_per_connection",
                caller,
                format!(
                    "more than {} calls in flight on one connection: wait for one to end",
                    self.per_connection
                ),
            ));
        }
        if watch {
            let client = caller.client();
            let mut watches = self.watches.lock();
            let n = watches.entry(client.clone()).or_default();
            if *n >= self.per_client {
                drop(watches);
                return Err(self.refuse(
                    "watches_per_client",
                    caller,
                    format!(
                        "{client} already holds {} watches, the most one client may",
                        self.per_client
                    ),
                ));
            }
            *n += 1;
            admitted.client = Some(client);
        }
        Ok(admitted)
    }

    fn refuse(&self, limit: &'static str, caller: &Caller, why: String) -> Status {
        *self.refused.lock().entry(limit).or_default() += 1;
        tracing::warn!(limit, client = %caller.addr, identity = caller.identity.as_deref().unwrap_or(""), "gRPC call refused: {why}");
        Status::resource_exhausted(why)
    }

    /// How many calls each limit refused.
    pub fn refused(&self) -> BTreeMap<&'static str, u64> {
        self.refused.lock().clone()
    }
}

/// A server stream that holds its [`Admitted`] place for as long as it is open.
pub fn holding<S: Stream + Send + 'static>(
    stream: S,
    admitted: Admitted,
) -> Pin<Box<dyn Stream<Item = S::Item> + Send>>
where
    Admitted: Send,
{
    use tokio_stream::StreamExt as _;
    Box::pin(stream.map(move |item| {
        let _held = &admitted;
        item
    }))
}

/// How the services treat their callers: the limits, and whether the port has identities
/// (then watches need a caller that proved one).
#[derive(Clone)]
pub struct Access {
    pub limits: Arc<Limits>,
    /// The port is TLS with the controller's identity, and proxies have identities.
    pub identities: bool,
}

impl Access {
    /// The caller of `req` with its call admitted (not a watch).
    pub fn call<T>(&self, req: &tonic::Request<T>) -> Result<(Caller, Admitted), Status> {
        let caller = Self::caller(req)?;
        let admitted = self.limits.admit(&caller, false)?;
        Ok((caller, admitted))
    }

    /// The caller of `req` with its watch admitted; with identities, only a caller that
    /// proved one with its certificate.
    pub fn watch<T>(
        &self,
        req: &tonic::Request<T>,
        api: &str,
    ) -> Result<(Caller, Admitted), Status> {
        let caller = Self::caller(req)?;
        if self.identities && caller.identity.is_none() {
            tracing::info!(client = %caller.addr, api, "refused: no client certificate");
            return Err(Status::unauthenticated(format!(
                "{api} answers only proxies that prove their identity: connect with the \
                 proxy's certificate (mutual TLS) once the Identity API has issued it"
            )));
        }
        let admitted = self.limits.admit(&caller, true)?;
        Ok((caller, admitted))
    }

    fn caller<T>(req: &tonic::Request<T>) -> Result<Caller, Status> {
        Caller::of(req).cloned().ok_or_else(|| {
            Status::internal("the caller is unknown: the gRPC port must serve grpc::incoming")
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{
        destination::DestinationService,
        discovery::{tests::sample, Workloads},
        policy::{ClusterPolicy, PolicyService},
    };
    use conduit_api::{
        destination::{destination_client::DestinationClient, GetDestination},
        policy::{inbound_policy_client::InboundPolicyClient, WatchPod},
    };
    use conduit_identity::{ca, identity_name, request::LocalKey};
    use tokio::sync::watch;
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    };
    use tonic::transport::{Channel, Endpoint};

    /// Plaintext, no identities, limits no test reaches.
    pub fn open() -> Access {
        Access {
            limits: Limits::new(1000, 1000),
            identities: false,
        }
    }

    /// Destination and InboundPolicy on a loopback port, as `main` serves them; web-1 is
    /// the pod at 127.0.0.1, the tests' address.
    async fn serve(tls: Option<Arc<ControllerTls>>, limits: Arc<Limits>) -> SocketAddr {
        let mut w: Workloads = sample();
        Arc::make_mut(&mut w.pods[0]).ip = "127.0.0.1".parse().unwrap();
        let (tx, rx) = watch::channel(Arc::new(w));
        let access = Access {
            limits,
            identities: tls.is_some(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cluster = ClusterPolicy {
            default: conduit_policy::DefaultPolicy::AllUnauthenticated,
            networks: Vec::new(),
        };
        let router = tonic::transport::Server::builder()
            .add_service(DestinationService::server(rx.clone(), access.clone()))
            .add_service(PolicyService::server(rx, cluster, access));
        let incoming = incoming(listener, tls).unwrap();
        tokio::spawn(async move {
            let _keep = tx;
            router.serve_with_incoming(incoming).await
        });
        addr
    }

    /// A channel to `addr` over TLS expecting the controller, as `client` (an identity
    /// certified by `issuer`) or with no certificate.
    async fn channel(addr: SocketAddr, files: &ca::TrustFiles, client: Option<&str>) -> Channel {
        let roots = Arc::new(conduit_identity::anchors::root_store(&files.anchor_pem).unwrap());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client {
            None => builder.with_no_client_auth(),
            Some(name) => {
                let issuer =
                    ca::Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap();
                let key = LocalKey::generate(name).unwrap();
                let c = issuer
                    .certify(&key.csr_der().unwrap(), name, Duration::from_secs(600))
                    .unwrap();
                builder
                    .with_client_auth_cert(
                        vec![
                            CertificateDer::from(c.leaf_der),
                            CertificateDer::from(c.issuer_der),
                        ],
                        PrivateKeyDer::try_from(key.key_der()).unwrap(),
                    )
                    .unwrap()
            }
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let name = ServerName::try_from(conduit_identity::controller_identity("conduit")).unwrap();
        Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: http::Uri| {
                let (connector, name) = (connector.clone(), name.clone());
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(tls))
                }
            }))
            .await
            .unwrap()
    }

    fn pod(name: &str) -> WatchPod {
        WatchPod {
            namespace: "emojivoto".into(),
            pod: name.into(),
        }
    }

    fn web_svc() -> GetDestination {
        GetDestination {
            path: "web-svc.emojivoto:80".into(),
            context_namespace: "emojivoto".into(),
        }
    }

    /// With identities: no watch without a client certificate; a proxy gets its own
    /// pod's policy only (the pod at its address, with the identity it proved); and one
    /// client's watches are bounded, the excess refused and counted, a place freed when a
    /// watch ends.
    #[tokio::test]
    async fn callers_are_known_by_their_certificates_and_bounded() {
        let files = ca::generate(Duration::from_secs(3600), Duration::from_secs(3600)).unwrap();
        let issuer = ca::Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap();
        let tls = Arc::new(
            ControllerTls::new(
                issuer,
                conduit_identity::controller_identity("conduit"),
                &files.anchor_pem,
            )
            .unwrap(),
        );
        let limits = Limits::new(100, 2);
        let addr = serve(Some(tls), limits.clone()).await;
        let web = identity_name("web", "emojivoto");

        let anonymous = channel(addr, &files, None).await;
        let err = DestinationClient::new(anonymous.clone())
            .get(web_svc())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        assert!(err.message().contains("mutual TLS"), "{}", err.message());
        let err = InboundPolicyClient::new(anonymous)
            .watch(pod("web-1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");

        let as_web = channel(addr, &files, Some(&web)).await;
        let mut policy = InboundPolicyClient::new(as_web.clone());
        let mut own = policy.watch(pod("web-1")).await.unwrap().into_inner();
        assert!(
            own.message().await.unwrap().is_some(),
            "its own pod's policy"
        );
        let err = policy.watch(pod("voting-1")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(
            err.message()
                .contains("the caller at 127.0.0.1 is pod emojivoto/web-1, not emojivoto/voting-1"),
            "{}",
            err.message()
        );
        // Another identity from the pod's address.
        let as_voting = channel(addr, &files, Some(&identity_name("voting", "emojivoto"))).await;
        let err = InboundPolicyClient::new(as_voting)
            .watch(pod("web-1"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains(&format!("runs as {web}")),
            "{}",
            err.message()
        );

        // web holds one watch; a second is let in, a third is one too many.
        let mut destination = DestinationClient::new(as_web.clone());
        let second = destination.get(web_svc()).await.unwrap().into_inner();
        let err = destination.get(web_svc()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message()
                .contains(&format!("{web} already holds 2 watches")),
            "{}",
            err.message()
        );
        assert_eq!(limits.refused().get("watches_per_client"), Some(&1));
        // One ends: its place is free again (the server sees the stream reset).
        drop(second);
        let again = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                if destination.get(web_svc()).await.is_ok() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(again.is_ok(), "a freed place is taken again");
        drop(own);
    }

    /// Calls in flight on one connection are bounded; another connection is not
    /// affected (plaintext: without identities the limits hold all the same).
    #[tokio::test]
    async fn calls_per_connection_are_bounded() {
        let limits = Limits::new(1, 100);
        let addr = serve(None, limits.clone()).await;
        let connect = || async {
            DestinationClient::new(
                Endpoint::from_shared(format!("http://{addr}"))
                    .unwrap()
                    .connect()
                    .await
                    .unwrap(),
            )
        };
        let mut first = connect().await;
        let _open = first.get(web_svc()).await.unwrap().into_inner();
        let err = first.get(web_svc()).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err:?}");
        assert!(
            err.message().contains("more than 1 calls in flight"),
            "{}",
            err.message()
        );
        assert_eq!(limits.refused().get("streams_per_connection"), Some(&1));
        let mut second = connect().await;
        assert!(second.get(web_svc()).await.is_ok());
    }
}
