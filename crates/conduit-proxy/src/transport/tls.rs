//! Mesh TLS: TLS 1.3 between proxies, both ends presenting their identity's certificate
//! and checking the other's against the mesh's trust anchors. The outbound proxy names
//! the identity it expects as the SNI and accepts exactly that identity; the inbound
//! proxy terminates connections whose SNI is its own identity and learns the client's
//! from its certificate. An outbound proxy that already decided a connection is opaque
//! says so with ALPN, so the inbound proxy does not detect it again. Certificates come
//! from [`Identity`] at each handshake, so renewals apply to new connections at once.
//! Sessions resume ([`resumption`]), within bounds.

use crate::{
    control::identity::Identity,
    transport::{io::PrefixedIo, resumption},
};
use bytes::BytesMut;
use rustls::{
    client::{danger::ServerCertVerifier, ResolvesClientCert, WebPkiServerVerifier},
    pki_types::ServerName,
    server::{Acceptor, ClientHello, ResolvesServerCert, WebPkiClientVerifier},
    sign::CertifiedKey,
    ClientConfig, HandshakeKind, ServerConfig, SignatureScheme,
};
use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// The ALPN protocol an outbound proxy offers for a connection it forwards as opaque TCP.
pub const OPAQUE_ALPN: &[u8] = b"conduit.io/opaque";

/// A client hello larger than this is not a mesh client's.
const MAX_CLIENT_HELLO: usize = 16 * 1024;

/// Why mesh TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error(transparent)]
    Anchors(#[from] conduit_identity::anchors::AnchorsError),
    #[error("building the TLS configuration: {0}")]
    Config(String),
}

/// The proxy's mesh TLS: its identity, the trust anchors, and the configurations made
/// from them once.
pub struct MeshTls {
    identity: Arc<Identity>,
    client: Arc<ClientConfig>,
    client_opaque: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    /// For HTTP/2 services of the proxy's own (tap): gRPC clients insist on ALPN `h2`.
    server_h2: Arc<ServerConfig>,
}

/// The start of a client's TLS handshake, read before deciding what to do with it.
#[derive(Debug, PartialEq, Eq)]
pub struct ClientHelloInfo {
    /// The SNI: for mesh TLS, the identity the client expects.
    pub server_name: Option<String>,
    /// Whether the client offers [`OPAQUE_ALPN`].
    pub opaque: bool,
}

/// A terminated mesh TLS connection.
pub struct Accepted<I> {
    pub stream: tokio_rustls::server::TlsStream<I>,
    /// The identity the client's certificate proves.
    pub client_id: Arc<str>,
    /// Whether the client said the connection is opaque TCP.
    pub opaque: bool,
    /// Whether the handshake resumed an earlier session.
    pub resumed: bool,
}

impl MeshTls {
    /// Mesh TLS for `identity`, trusting the certificates in `anchors_pem`.
    pub fn new(identity: Arc<Identity>, anchors_pem: &str) -> Result<MeshTls, TlsSetupError> {
        let roots = Arc::new(conduit_identity::anchors::root_store(anchors_pem)?);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = |e: rustls::Error| TlsSetupError::Config(e.to_string());
        let resolver = Arc::new(CurrentCertificate(identity.clone()));

        let verifier: Arc<dyn ServerCertVerifier> =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsSetupError::Config(e.to_string()))?;
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config)?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(resolver.clone());
        // A resumed connection skips the certificates and their signatures: opaque TCP
        // opens one mesh connection per application connection.
        client.resumption =
            rustls::client::Resumption::in_memory_sessions(resumption::CLIENT_PEERS)
                .tls12_resumption(rustls::client::Tls12Resumption::Disabled);
        let mut client_opaque = client.clone();
        client_opaque.alpn_protocols = vec![OPAQUE_ALPN.to_vec()];

        let client_verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsSetupError::Config(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(config)?
            .with_client_cert_verifier(client_verifier)
            .with_cert_resolver(resolver);
        server.alpn_protocols = vec![OPAQUE_ALPN.to_vec()];
        // Tickets arrive before any byte the application sends, so an outbound proxy
        // tells which end of a spliced connection speaks first from the plaintext it
        // reads, not from the socket (`splice::first_speaker`).
        server.send_tls13_tickets = resumption::TICKETS_PER_HANDSHAKE;
        server.session_storage = Arc::new(resumption::ExpiringSessions::new(
            resumption::SERVER_SESSIONS,
            resumption::SESSION_LIFETIME,
        ));
        let mut server_h2 = server.clone();
        server_h2.alpn_protocols = vec![b"h2".to_vec()];
        // Its clients (the control plane's) resume nothing.
        server_h2.send_tls13_tickets = 0;

        Ok(MeshTls {
            identity,
            client: Arc::new(client),
            client_opaque: Arc::new(client_opaque),
            server: Arc::new(server),
            server_h2: Arc::new(server_h2),
        })
    }

    /// This proxy's identity name.
    pub fn name(&self) -> &str {
        &self.identity.name
    }

    /// Waits until this proxy has a certificate to present, or `deadline`.
    pub async fn wait_certified(&self, deadline: tokio::time::Instant) -> bool {
        self.identity.wait_certified(deadline).await
    }

    /// Opens mesh TLS over `io` to a peer that must prove `server_id`.
    pub async fn connect<I>(
        &self,
        io: I,
        server_id: &str,
        opaque: bool,
    ) -> io::Result<tokio_rustls::client::TlsStream<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let name = ServerName::try_from(server_id.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let config = if opaque {
            &self.client_opaque
        } else {
            &self.client
        };
        tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, io)
            .await
    }

    /// Terminates mesh TLS on `io`, whose client hello [`read_client_hello`] already
    /// read: requires a client certificate from the trust anchors.
    pub async fn accept<I>(&self, io: I) -> io::Result<Accepted<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_with(self.server.clone(), io).await
    }

    /// Terminates mesh TLS for one of the proxy's own HTTP/2 services (ALPN `h2`).
    pub async fn accept_h2<I>(&self, io: I) -> io::Result<Accepted<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        self.accept_with(self.server_h2.clone(), io).await
    }

    async fn accept_with<I>(&self, config: Arc<ServerConfig>, io: I) -> io::Result<Accepted<I>>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let stream = tokio_rustls::TlsAcceptor::from(config).accept(io).await?;
        let (_, conn) = stream.get_ref();
        let refused = |why: &str| io::Error::new(io::ErrorKind::PermissionDenied, why.to_string());
        let leaf = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| conduit_identity::cert_facts(leaf));
        let (client_id, not_after) = leaf
            .and_then(|facts| Some((facts.identity?, facts.not_after)))
            .ok_or_else(|| refused("the client's certificate names no mesh identity"))?;
        let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
        // A resumed handshake verifies no certificate: the one its session was made with
        // must still be valid.
        if resumed && not_after <= SystemTime::now() {
            return Err(refused(
                "the resumed session's client certificate has expired",
            ));
        }
        let opaque = conn.alpn_protocol() == Some(OPAQUE_ALPN);
        Ok(Accepted {
            stream,
            client_id: client_id.into(),
            opaque,
            resumed,
        })
    }
}

/// TLS 1.3 to the control plane: the server must chain to `anchors_pem` and prove the name
/// the caller connects with (the controller's identity); no SNI is sent, so that no
/// identity name crosses the network in clear; the proxy presents its certificate once it
/// has one. No resumption: a session resumed from before the certificate arrived would
/// keep the connection unauthenticated.
pub fn control_plane_config(
    identity: Arc<Identity>,
    anchors_pem: &str,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let roots = Arc::new(conduit_identity::anchors::root_store(anchors_pem)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| TlsSetupError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(CurrentCertificate(identity)));
    config.enable_sni = false;
    config.resumption = rustls::client::Resumption::disabled();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Hands TLS the identity's current certificate, as client and as server.
struct CurrentCertificate(Arc<Identity>);

impl std::fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CurrentCertificate")
            .field(&self.0.name)
            .finish()
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certified_key()
    }
}

/// Reads the rest of a TLS client hello whose first bytes are in `buf` (more are
/// appended, for replaying later) and says what it asks for. `None`: the client closed,
/// stalled past `timeout`, or sent something that is not a client hello.
pub async fn read_client_hello<I>(
    io: &mut I,
    buf: &mut BytesMut,
    timeout: Duration,
) -> io::Result<Option<ClientHelloInfo>>
where
    I: AsyncRead + Unpin,
{
    let read = async {
        let mut acceptor = Acceptor::default();
        let mut fed = 0;
        loop {
            while fed < buf.len() {
                match acceptor.read_tls(&mut &buf[fed..]) {
                    Ok(0) => return Ok(None),
                    Ok(n) => fed += n,
                    Err(_) => return Ok(None),
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => {
                    let hello = accepted.client_hello();
                    return Ok(Some(ClientHelloInfo {
                        server_name: hello.server_name().map(str::to_string),
                        opaque: hello
                            .alpn()
                            .is_some_and(|mut protocols| protocols.any(|p| p == OPAQUE_ALPN)),
                    }));
                }
                Ok(None) if buf.len() < MAX_CLIENT_HELLO => {
                    if io.read_buf(buf).await? == 0 {
                        return Ok(None);
                    }
                }
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .unwrap_or(Ok(None))
}

/// A connection, in plaintext (`P`) or under mesh TLS (`T`).
pub enum Transport<P, T> {
    Plain(P),
    Tls(Box<T>),
}

/// The client side of a connection that the inbound proxy accepted over `I`, whose mesh
/// TLS (if any) it terminated.
pub type ServerTransport<I> = Transport<I, tokio_rustls::server::TlsStream<PrefixedIo<I>>>;

/// The client side of an accepted connection.
pub type ClientTransport = ServerTransport<TcpStream>;

/// A connection to an upstream endpoint.
pub type UpstreamTransport = Transport<TcpStream, tokio_rustls::client::TlsStream<TcpStream>>;

impl<P, T> Transport<P, T> {
    /// The plaintext I/O, when the connection is plaintext.
    pub fn plain(&self) -> Option<&P> {
        match self {
            Transport::Plain(io) => Some(io),
            Transport::Tls(_) => None,
        }
    }
}

impl<P: AsyncRead + Unpin, T: AsyncRead + Unpin> AsyncRead for Transport<P, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl<P: AsyncWrite + Unpin, T: AsyncWrite + Unpin> AsyncWrite for Transport<P, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(io) => io.is_write_vectored(),
            Transport::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_flush(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Transport::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use conduit_identity::{ca, identity_name};
    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpStream},
    };

    /// A trust domain: an anchor and its issuer.
    pub(crate) struct Mesh {
        pub(crate) anchor_pem: String,
        issuer: ca::Issuer,
    }

    pub(crate) fn mesh() -> Mesh {
        let d = Duration::from_secs(3600);
        let files = ca::generate(d, d).unwrap();
        Mesh {
            issuer: ca::Issuer::from_pem(&files.issuer_cert_pem, &files.issuer_key_pem).unwrap(),
            anchor_pem: files.anchor_pem,
        }
    }

    impl Mesh {
        /// Two proxies certified for an hour, web (a client) and voting (a server), with
        /// voting's identity name.
        pub(crate) fn web_and_voting(&self) -> (MeshTls, Arc<MeshTls>, String) {
            let hour = Duration::from_secs(3600);
            let voting = Arc::new(self.proxy("voting", hour));
            let name = voting.name().to_string();
            (self.proxy("web", hour), voting, name)
        }

        /// A proxy of `sa` in emojivoto, certified for `life` by this mesh's issuer.
        pub(crate) fn proxy(&self, sa: &str, life: Duration) -> MeshTls {
            let identity = Arc::new(Identity::new(&identity_name(sa, "emojivoto")).unwrap());
            let c = self
                .issuer
                .certify(&identity.csr_der().unwrap(), &identity.name, life)
                .unwrap();
            identity.install(crate::control::identity::Certificate {
                leaf_der: c.leaf_der,
                intermediates_der: vec![c.issuer_der],
                valid_until: std::time::SystemTime::now() + life,
            });
            MeshTls::new(identity, &self.anchor_pem).unwrap()
        }
    }

    /// What the server side of a handshake learned.
    #[derive(Debug)]
    struct Learned {
        client_id: String,
        opaque: bool,
        resumed: bool,
    }

    /// Connects `client` to `server` expecting `server_id`, exchanges a message and its
    /// echo; returns what the server learned, or both ends' errors.
    async fn handshake(
        client: &MeshTls,
        server: Arc<MeshTls>,
        server_id: &str,
        opaque: bool,
    ) -> Result<Learned, String> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = tokio::spawn(async move {
            let (mut tcp, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            tcp.read_buf(&mut buf).await.unwrap();
            let hello = read_client_hello(&mut tcp, &mut buf, Duration::from_secs(5))
                .await
                .unwrap()
                .expect("a client hello");
            assert_eq!(hello.server_name.as_deref(), Some(server.name()));
            let mut accepted = server
                .accept(PrefixedIo::new(buf.freeze(), tcp))
                .await
                .map_err(|e| e.to_string())?;
            let mut msg = [0u8; 5];
            accepted.stream.read_exact(&mut msg).await.unwrap();
            accepted.stream.write_all(&msg).await.unwrap();
            accepted.stream.flush().await.unwrap();
            assert_eq!(hello.opaque, accepted.opaque);
            let (_, conn) = accepted.stream.get_ref();
            assert_eq!(
                conn.handshake_kind() == Some(HandshakeKind::Resumed),
                accepted.resumed
            );
            Ok::<_, String>(Learned {
                client_id: accepted.client_id.to_string(),
                opaque: accepted.opaque,
                resumed: accepted.resumed,
            })
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let echoed = async {
            let mut stream = client.connect(tcp, server_id, opaque).await?;
            stream.write_all(b"hello").await?;
            stream.flush().await?;
            let mut echo = [0u8; 5];
            stream.read_exact(&mut echo).await?;
            assert_eq!(&echo, b"hello");
            let (_, conn) = stream.get_ref();
            Ok::<_, io::Error>(conn.handshake_kind())
        }
        .await;
        let (learned, client_saw) = match (served.await.unwrap(), echoed) {
            (Ok(learned), Ok(client_saw)) => (learned, client_saw),
            (server, client) => {
                let server = server.err().unwrap_or_default();
                let client = client.err().map(|e| e.to_string()).unwrap_or_default();
                return Err(format!("client: {client}; server: {server}"));
            }
        };
        assert_eq!(
            client_saw == Some(HandshakeKind::Resumed),
            learned.resumed,
            "both ends agree on resumption"
        );
        Ok(learned)
    }

    #[tokio::test]
    async fn proxies_of_one_mesh_prove_their_identities_to_each_other() {
        let m = mesh();
        let (web, voting, name) = m.web_and_voting();
        let learned = handshake(&web, voting.clone(), &name, false).await.unwrap();
        assert_eq!(learned.client_id, identity_name("web", "emojivoto"));
        assert!(!learned.opaque);
        let learned = handshake(&web, voting, &name, true).await.unwrap();
        assert!(learned.opaque, "ALPN carries the opaque decision");
    }

    #[tokio::test]
    async fn a_second_connection_resumes_the_session_with_the_same_identity() {
        let m = mesh();
        let (web, voting, name) = m.web_and_voting();
        let first = handshake(&web, voting.clone(), &name, true).await.unwrap();
        assert!(!first.resumed, "nothing to resume yet");
        for _ in 0..3 {
            let next = handshake(&web, voting.clone(), &name, true).await.unwrap();
            assert!(next.resumed, "each connection leaves a ticket for the next");
            assert_eq!(next.client_id, identity_name("web", "emojivoto"));
            assert!(next.opaque);
        }
        // Another server of the same name holds none of these sessions: a full handshake.
        let hour = Duration::from_secs(3600);
        let other = Arc::new(m.proxy("voting", hour));
        let full = handshake(&web, other, &name, true).await.unwrap();
        assert!(!full.resumed);
        // Nor does a session made with one identity resume with another.
        let emoji = Arc::new(m.proxy("emoji", hour));
        let emoji_name = emoji.name().to_string();
        assert!(
            !handshake(&web, emoji, &emoji_name, true)
                .await
                .unwrap()
                .resumed
        );
    }

    #[tokio::test]
    async fn a_session_whose_client_certificate_expired_is_not_resumed() {
        let m = mesh();
        // Whole seconds: certificates are valid to the second.
        let web = m.proxy("web", Duration::from_secs(2));
        let voting = Arc::new(m.proxy("voting", Duration::from_secs(3600)));
        let name = voting.name().to_string();
        assert!(
            !handshake(&web, voting.clone(), &name, false)
                .await
                .unwrap()
                .resumed
        );
        tokio::time::sleep(Duration::from_millis(3100)).await;
        let err = handshake(&web, voting, &name, false).await.unwrap_err();
        assert!(
            err.contains("resumed session's client certificate has expired"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn identities_too_long_for_a_common_name_still_prove_themselves() {
        let m = mesh();
        let hour = Duration::from_secs(3600);
        let sa = "payments-reconciliation-worker";
        let long = Arc::new(m.proxy(sa, hour));
        assert!(long.name().len() > 64, "longer than RFC 5280 lets a CN be");
        let web = Arc::new(m.proxy("web", hour));
        let name = long.name().to_string();
        let learned = handshake(&web, long.clone(), &name, false).await.unwrap();
        assert_eq!(learned.client_id, identity_name("web", "emojivoto"));
        let web_name = web.name().to_string();
        let learned = handshake(&long, web, &web_name, false).await.unwrap();
        assert_eq!(learned.client_id, identity_name(sa, "emojivoto"));
    }

    #[tokio::test]
    async fn a_peer_with_another_identity_is_refused() {
        let m = mesh();
        let hour = Duration::from_secs(3600);
        let (web, emoji) = (m.proxy("web", hour), Arc::new(m.proxy("emoji", hour)));
        // The client expects voting; emoji answers (with its own, valid certificate).
        let expected = identity_name("voting", "emojivoto");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let _ = emoji.accept(tcp).await;
        });
        let err = web
            .connect(TcpStream::connect(addr).await.unwrap(), &expected, false)
            .await
            .map(|_| ())
            .expect_err("the handshake fails");
        assert!(
            err.to_string().contains("not valid for name"),
            "the error says the certificate is for another name: {err}"
        );
    }

    #[tokio::test]
    async fn a_certificate_from_another_trust_anchor_is_refused_both_ways() {
        let (ours, theirs) = (mesh(), mesh());
        let hour = Duration::from_secs(3600);
        let web = ours.proxy("web", hour);
        let voting = Arc::new(ours.proxy("voting", hour));
        let impostor = Arc::new(theirs.proxy("voting", hour));
        let name = voting.name().to_string();
        // Our client, their server.
        let err = handshake(&web, impostor, &name, false).await.unwrap_err();
        // Both anchors bear the same name; the signature is what gives the impostor away.
        assert!(err.contains("invalid peer certificate"), "{err}");
        // Their client, our server: the server refuses the client's certificate.
        let intruder = theirs.proxy("web", hour);
        assert!(handshake(&intruder, voting, &name, false).await.is_err());
    }

    #[tokio::test]
    async fn an_expired_certificate_is_refused() {
        let m = mesh();
        let web = m.proxy("web", Duration::from_secs(3600));
        // Whole seconds: certificates are valid to the second.
        let voting = Arc::new(m.proxy("voting", Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let name = voting.name().to_string();
        let err = handshake(&web, voting, &name, false).await.unwrap_err();
        assert!(err.contains("certificate expired"), "{err}");
    }

    #[tokio::test]
    async fn other_tls_is_read_but_not_for_us() {
        // A client hello from a plain TLS client (as an application's HTTPS would send).
        let m = mesh();
        let app_client = m.proxy("web", Duration::from_secs(60));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let _ = app_client.connect(tcp, "example.com", false).await;
        });
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut buf = BytesMut::new();
        let hello = read_client_hello(&mut tcp, &mut buf, Duration::from_secs(5))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("example.com"));
        assert!(!buf.is_empty(), "the bytes are kept for passing through");

        // Not TLS at all: no hello, and nothing lost.
        let (mut a, mut b) = (
            TcpStream::connect(addr).await.unwrap(),
            listener.accept().await.unwrap().0,
        );
        a.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
        let mut buf = BytesMut::new();
        let hello = read_client_hello(&mut b, &mut buf, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(hello, None);
    }
}
