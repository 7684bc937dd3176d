//! One side of the proxy, inbound or outbound: what happens to a redirected connection,
//! top to bottom. Accept; find the original destination; decide the protocol (configured
//! opaque port, learned server-speaks-first port, or detection); then serve it as HTTP
//! through the request stack, or splice it as opaque TCP. Where a connection goes is the
//! side's [`Upstream`] rule, the one thing inbound and outbound differ in so far.

use crate::{
    balance::InFlight,
    config::Config,
    connect::{Connector, Endpoint},
    detect::{self, Detection, Protocol},
    discovery::Discovery,
    drain,
    errors::ProxyError,
    http::{
        authorize::{Authorize, ConnAuthz},
        forward::Forward,
        head::{self, HeadError},
        limit::LimitHeaders,
        pool::{EndpointPools, HttpVersion},
        record::{ConnTap, RecordHttp},
        respond::RespondToErrors,
        route::{DiscoveredRoute, Route},
        serve::HttpServer,
    },
    io::{CountingIo, PrefixedIo},
    metrics::{DetectLabels, Direction, Metrics, Peer, PeerTls, PortLabels},
    orig_dst::original_dst,
    policy::InboundPolicy,
    server_first::ServerFirstPorts,
    tap::Taps,
    tcp::{self, FirstSpeaker},
    tls::{self, ClientTransport, MeshTls, Transport},
};
use bytes::BytesMut;
use conduit_policy::{Decision, ServerProtocol};
use std::{net::SocketAddr, sync::Arc, time::Duration};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tower::ServiceBuilder;
use tracing::{debug, info, warn, Instrument};

/// Where a side sends a connection, given its original destination.
pub type Upstream = fn(SocketAddr) -> SocketAddr;

/// What makes a side inbound or outbound.
pub struct Role {
    pub direction: Direction,
    /// Where a connection goes when nothing is discovered for it.
    pub upstream: Upstream,
    /// Outbound with a control plane: each connection or request goes to a discovered
    /// endpoint of what it names.
    pub discovery: Option<Arc<Discovery>>,
    /// Inbound: who may connect.
    pub policy: Option<Arc<InboundPolicy>>,
}

/// How long an inbound connection to an opaque or server-speaks-first port is watched
/// for a meshed client's ClientHello, which its proxy sends as soon as it is connected.
/// Only an unmeshed client of a server-speaks-first port waits this long for its server.
const MESH_HELLO_WAIT: Duration = Duration::from_millis(100);

/// An accepted, redirected connection.
#[derive(Clone, Copy, Debug)]
pub struct Accepted {
    pub client: SocketAddr,
    pub orig_dst: SocketAddr,
    pub at: Instant,
}

/// How the protocol of a connection was decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decided {
    Bytes(Protocol),
    OpaquePort,
    ServerFirstPort,
    /// The client stayed silent: maybe the server speaks first.
    Silence,
    /// The client sent bytes that decide nothing, then waited.
    Undecided,
    /// The client closed its side before the protocol was clear.
    ClientClosed,
    /// The client's proxy said over mesh TLS that the connection is opaque.
    PeerSaidOpaque,
    /// The client stalled in the middle of an HTTP/1 request line.
    StalledRequestLine,
}

/// Everything one side needs, shared by its connections.
pub struct Side {
    direction: Direction,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    http: HttpServer,
    pools: Arc<EndpointPools>,
    connector: Connector,
    server_first: ServerFirstPorts,
    upstream: Upstream,
    /// Outbound with a control plane: where services' endpoints are found.
    discovery: Option<Arc<Discovery>>,
    /// Live request events, for whoever observes.
    taps: Arc<Taps>,
    /// Mesh TLS, when the proxy has an identity: outbound it secures connections to
    /// meshed endpoints; inbound it terminates them.
    tls: Option<Arc<MeshTls>>,
    /// Inbound: who may connect.
    policy: Option<Arc<InboundPolicy>>,
}

impl Side {
    /// A side playing `role`; mesh TLS with `tls`, live request events to `taps`.
    pub fn new(
        role: Role,
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        taps: Arc<Taps>,
        tls: Option<Arc<MeshTls>>,
    ) -> Arc<Side> {
        let connector = Connector::new(
            role.direction,
            config.connect_timeout,
            metrics.tcp.clone(),
            tls.clone(),
        );
        let pools = EndpointPools::new(connector.clone(), config.pool_idle_timeout);
        Arc::new(Side {
            direction: role.direction,
            http: HttpServer::new(&config),
            config,
            metrics,
            pools,
            connector,
            server_first: ServerFirstPorts::default(),
            upstream: role.upstream,
            discovery: role.discovery,
            taps,
            tls,
            policy: role.policy,
        })
    }

    /// Accepts connections until the drain starts; each connection keeps a drain watch.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, mut drain: drain::Watch) {
        self.pools.spawn_sweeper();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = drain.signaled() => return,
            };
            match accepted {
                Ok((tcp, client)) => {
                    let side = self.clone();
                    let span =
                        tracing::debug_span!("conn", direction = self.direction.as_str(), %client);
                    let drain = drain.clone();
                    tokio::spawn(
                        async move { side.serve_connection(tcp, client, drain).await }
                            .instrument(span),
                    );
                }
                Err(error) => {
                    // Out of file descriptors, most likely: back off instead of spinning.
                    warn!(direction = self.direction.as_str(), %error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        mut tcp: TcpStream,
        client: SocketAddr,
        drain: drain::Watch,
    ) {
        let at = Instant::now();
        let orig_dst = match (original_dst(&tcp), tcp.local_addr()) {
            (Ok(dst), Ok(local)) if dst != crate::orig_dst::canonical(local) => dst,
            (dst, _) => {
                // Not redirected: someone connected to the proxy port itself. Forwarding
                // would loop back here, so refuse.
                self.metrics.error(self.direction, "not_redirected");
                info!(direction = self.direction.as_str(), %client, ?dst, "connection was not redirected by iptables; closing it");
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let accepted = Accepted {
            client,
            orig_dst,
            at,
        };
        let mut buf = BytesMut::new();
        let decided = match self.decide(&mut tcp, &mut buf, orig_dst.port()).await {
            Ok(port @ (Decided::OpaquePort | Decided::ServerFirstPort))
                if self.takes_mesh_tls() =>
            {
                self.mesh_tls_on_port(&mut tcp, &mut buf, port).await
            }
            Ok(d) => d,
            Err(error) => return debug!(%error, "reading from the client failed"),
        };
        let (transport, decided, mut buf, peer) = match decided {
            Decided::Bytes(Protocol::Tls) => {
                match self.terminate_mesh_tls(accepted, tcp, buf).await {
                    Some(terminated) => terminated,
                    None => return,
                }
            }
            _ => (Transport::Plain(tcp), decided, buf, PeerTls::None),
        };
        let (protocol, decided_by) = match decided {
            Decided::Bytes(p) => (p, "bytes"),
            Decided::OpaquePort => (Protocol::Opaque, "opaque_port"),
            Decided::ServerFirstPort => (Protocol::Opaque, "server_first_port"),
            Decided::PeerSaidOpaque => (Protocol::Opaque, "peer_proxy"),
            Decided::Silence | Decided::StalledRequestLine | Decided::Undecided => {
                (Protocol::Opaque, "timeout")
            }
            Decided::ClientClosed => (Protocol::Opaque, "client_closed"),
        };
        self.metrics
            .detect
            .get_or_create(&DetectLabels {
                direction: self.direction,
                protocol,
                decided_by,
            })
            .inc();
        debug!(%orig_dst, protocol = protocol.as_str(), decided_by, client_id = peer.identity(), "accepted");
        let authz = match &self.policy {
            Some(policy) => {
                // Wait for the control plane's first answer before the first decision.
                policy.current().await;
                Some(Arc::new(ConnAuthz {
                    policy: policy.clone(),
                    port: orig_dst.port(),
                    client: client.ip(),
                    identity: peer.identity().map(Arc::from),
                    metrics: self.metrics.clone(),
                }))
            }
            None => None,
        };
        let is_http = matches!(
            decided,
            Decided::Bytes(Protocol::Http1 | Protocol::Http2) | Decided::StalledRequestLine
        );
        if let (Some(authz), false) = (&authz, is_http) {
            // HTTP is answered request by request; anything else is let in or not now.
            if let Decision::Deny { server, reason } = authz.decide() {
                self.metrics.authz_denied(false, server.as_deref());
                info!(%client, %orig_dst, %reason, "connection denied by policy; closing it");
                self.taps.connection_denied(
                    self.direction,
                    client,
                    orig_dst,
                    &reason,
                    peer.identity(),
                );
                return;
            }
        }
        let conn = self
            .metrics
            .tcp
            .open(self.direction, Peer::Src, orig_dst, peer.clone());
        // What detection read counts as read from the client.
        conn.bytes.read.inc_by(buf.len() as u64);
        let mut io = CountingIo::new(transport, conn);

        match decided {
            Decided::Bytes(Protocol::Http1) => {
                let deadline = at + self.config.header_read_timeout;
                let limit = self.config.max_header_bytes;
                match head::read(
                    &mut io,
                    &mut buf,
                    limit,
                    deadline,
                    self.config.header_read_timeout,
                )
                .await
                {
                    Ok(()) => {}
                    Err(HeadError::Refused(err)) => return self.refuse(io, err).await,
                    Err(error) => return debug!(%error, "no request head"),
                }
                self.serve_http(
                    accepted,
                    HttpVersion::Http1,
                    PrefixedIo::new(buf.freeze(), io),
                    peer,
                    authz,
                    drain,
                )
                .await
            }
            Decided::Bytes(Protocol::Http2) => {
                self.serve_http(
                    accepted,
                    HttpVersion::Http2,
                    PrefixedIo::new(buf.freeze(), io),
                    peer,
                    authz,
                    drain,
                )
                .await
            }
            Decided::StalledRequestLine => {
                let timeout = self.config.detect_timeout;
                self.refuse(io, ProxyError::RequestHeadTimeout { timeout })
                    .await
            }
            Decided::Silence | Decided::ServerFirstPort if io.get_ref().plain().is_some() => {
                self.splice_and_learn(accepted, io, buf, decided).await
            }
            Decided::Bytes(Protocol::Tls | Protocol::Opaque)
            | Decided::OpaquePort
            | Decided::PeerSaidOpaque
            | Decided::Silence
            | Decided::ServerFirstPort
            | Decided::Undecided
            | Decided::ClientClosed => {
                self.splice(accepted, PrefixedIo::new(buf.freeze(), io))
                    .await
            }
        }
    }

    /// Inbound, a TLS connection meant for this proxy's identity (its SNI says so) is
    /// terminated here: the client must present a mesh certificate, and what it sends
    /// inside is decided afresh. Any other TLS (the application's own) passes through
    /// untouched. `None`: the connection is over.
    async fn terminate_mesh_tls(
        &self,
        accepted: Accepted,
        mut tcp: TcpStream,
        mut buf: BytesMut,
    ) -> Option<(ClientTransport, Decided, BytesMut, PeerTls)> {
        let passthrough = |tcp, buf| {
            Some((
                Transport::Plain(tcp),
                Decided::Bytes(Protocol::Tls),
                buf,
                PeerTls::None,
            ))
        };
        let Some(tls) = self
            .tls
            .as_ref()
            .filter(|_| self.direction == Direction::Inbound)
        else {
            return passthrough(tcp, buf);
        };
        let hello =
            match tls::read_client_hello(&mut tcp, &mut buf, self.config.detect_timeout).await {
                Ok(hello) => hello,
                Err(error) => {
                    debug!(%error, "reading the client hello failed");
                    return None;
                }
            };
        if hello.as_ref().and_then(|h| h.server_name.as_deref()) != Some(tls.name()) {
            return passthrough(tcp, buf);
        }
        let deadline = Instant::now() + self.config.connect_timeout;
        if !tls.wait_certified(deadline).await {
            self.metrics.error(self.direction, "not_certified");
            info!(client = %accepted.client, "a mesh TLS client arrived and this proxy still has no certificate; closing the connection");
            return None;
        }
        let handshake = tls.accept(PrefixedIo::new(buf.freeze(), tcp));
        let terminated = match tokio::time::timeout(self.config.connect_timeout, handshake).await {
            Ok(Ok(t)) => t,
            Ok(Err(error)) => {
                self.metrics.error(self.direction, "tls_handshake_failed");
                info!(client = %accepted.client, error = %crate::connect::tls_reason(&error), "mTLS handshake from a client failed");
                return None;
            }
            Err(_) => {
                self.metrics.error(self.direction, "tls_handshake_failed");
                info!(client = %accepted.client, "mTLS handshake from a client timed out");
                return None;
            }
        };
        let mut stream = Transport::Tls(Box::new(terminated.stream));
        let mut buf = BytesMut::new();
        let decided = if terminated.opaque {
            Decided::PeerSaidOpaque
        } else {
            match self
                .decide(&mut stream, &mut buf, accepted.orig_dst.port())
                .await
            {
                Ok(d) => d,
                Err(error) => {
                    debug!(%error, "reading from the mesh TLS client failed");
                    return None;
                }
            }
        };
        Some((stream, decided, buf, PeerTls::Client(terminated.client_id)))
    }

    /// Whether meshed clients reach this side over mesh TLS: inbound, with an identity.
    fn takes_mesh_tls(&self) -> bool {
        self.direction == Direction::Inbound && self.tls.is_some()
    }

    /// On a port whose protocol is known without reading (opaque or server-speaks-first),
    /// a meshed client's proxy still opens mesh TLS, and its ClientHello follows the
    /// connection at once: waited for briefly, it is terminated like on any other port.
    /// Anything else keeps the port's decision (with what was read kept in `buf`).
    async fn mesh_tls_on_port(
        &self,
        tcp: &mut TcpStream,
        buf: &mut BytesMut,
        port: Decided,
    ) -> Decided {
        let limit = self.config.max_header_bytes;
        match detect::detect(tcp, buf, MESH_HELLO_WAIT, limit).await {
            Ok(Detection::Detected(Protocol::Tls)) => Decided::Bytes(Protocol::Tls),
            _ => port,
        }
    }

    async fn decide<I: AsyncRead + Unpin>(
        &self,
        io: &mut I,
        buf: &mut BytesMut,
        port: u16,
    ) -> std::io::Result<Decided> {
        if self.config.opaque_ports.contains(port) {
            return Ok(Decided::OpaquePort);
        }
        if self.server_first.contains(port) {
            return Ok(Decided::ServerFirstPort);
        }
        let server_says_opaque = self.policy.as_ref().is_some_and(|p| {
            p.latest()
                .server(port)
                .is_some_and(|s| s.protocol == Some(ServerProtocol::Opaque))
        });
        if server_says_opaque {
            return Ok(Decided::OpaquePort);
        }
        let limit = self.config.max_header_bytes;
        Ok(
            match detect::detect(io, buf, self.config.detect_timeout, limit).await? {
                Detection::Detected(p) => Decided::Bytes(p),
                Detection::TimedOutSilent => Decided::Silence,
                // Only a known method makes a stalled line an HTTP client worth a 408; other
                // protocols that merely look like a request line are passed through.
                Detection::TimedOutHttp1 if starts_with_known_method(buf) => {
                    Decided::StalledRequestLine
                }
                Detection::TimedOutHttp1 | Detection::TimedOutPartial => Decided::Undecided,
                Detection::Closed => Decided::ClientClosed,
            },
        )
    }

    /// Answers an HTTP/1 client with the proxy's error response and closes the connection.
    async fn refuse<I: AsyncWrite + Unpin>(&self, mut io: I, err: ProxyError) {
        err.report(&self.metrics, self.direction);
        let _ = io.write_all(&err.to_http1_bytes()).await;
        let _ = io.shutdown().await;
    }

    async fn serve_http<I>(
        &self,
        accepted: Accepted,
        version: HttpVersion,
        io: I,
        peer: PeerTls,
        authz: Option<Arc<ConnAuthz>>,
        drain: drain::Watch,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let upstream = (self.upstream)(accepted.orig_dst);
        let route = match &self.discovery {
            Some(discovery) => Route::Discovered(Arc::new(DiscoveredRoute {
                discovery: discovery.clone(),
                pools: self.pools.clone(),
                version,
                orig_dst: upstream,
            })),
            None => Route::Fixed(self.pools.get(&Endpoint::plain(upstream), version)),
        };
        let (direction, metrics) = (self.direction, self.metrics.clone());
        let fallback_authority: Arc<str> = accepted.orig_dst.to_string().into();
        let stack = ServiceBuilder::new()
            .layer_fn(|s| {
                RecordHttp::new(
                    s,
                    direction,
                    metrics.http.clone(),
                    fallback_authority.clone(),
                )
                .with_peer(peer.clone())
                .with_tap(ConnTap {
                    taps: self.taps.clone(),
                    source: accepted.client,
                    destination: accepted.orig_dst,
                })
            })
            .layer_fn(|s| RespondToErrors::new(s, direction, metrics.clone()))
            .layer_fn(|s| LimitHeaders::new(s, self.config.max_header_bytes))
            .layer_fn(|s| Authorize::new(s, authz.clone()))
            .service(Forward::new(route));
        if let Err(error) = self.http.serve(version, io, stack, drain).await {
            self.report_http_error(&error);
        }
    }

    /// hyper answered a bad request on a keep-alive connection itself, or closed a
    /// connection that flooded it (HTTP/2 rapid reset); count it under the same names the
    /// proxy's own responses use.
    fn report_http_error(&self, error: &hyper::Error) {
        let h2_reason = std::error::Error::source(error)
            .and_then(|e| e.downcast_ref::<h2::Error>())
            .and_then(h2::Error::reason);
        let code = if h2_reason == Some(h2::Reason::ENHANCE_YOUR_CALM) {
            "http2_flood"
        } else if error.is_parse_too_large() {
            "headers_too_large"
        } else if error.is_parse() {
            "malformed_request"
        } else {
            // Includes hyper's keep-alive timeout closing an idle connection: not an error.
            return debug!(%error, "HTTP connection ended with an error");
        };
        self.metrics.error(self.direction, code);
        info!(
            direction = self.direction.as_str(),
            error = code,
            "HTTP connection closed: {error}"
        );
    }

    /// Connects upstream for opaque TCP: to a discovered endpoint of the original
    /// destination (a service's virtual IP, say) when there is one, else to the original
    /// destination. The connection counts in the endpoint's load while the guard lives.
    async fn connect(
        &self,
        accepted: Accepted,
    ) -> Option<(crate::connect::Upstream, Option<InFlight>)> {
        let orig = (self.upstream)(accepted.orig_dst);
        let picked = match &self.discovery {
            Some(d) => d.pick(&orig.to_string()).await,
            None => None,
        };
        let endpoint = picked
            .as_ref()
            .map_or_else(|| Endpoint::plain(orig), |e| e.endpoint.clone());
        match self.connector.connect(&endpoint, true).await {
            Ok(upstream) => Some((upstream, picked.map(|e| e.start()))),
            Err(err) => {
                // TCP has no way to say why; closing the client's connection is the answer.
                err.report(&self.metrics, self.direction);
                None
            }
        }
    }

    async fn splice<I>(&self, accepted: Accepted, mut client: I)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let Some((mut upstream, _load)) = self.connect(accepted).await else {
            return;
        };
        if let Err(error) = tcp::splice(&mut client, &mut upstream).await {
            debug!(%error, "opaque connection ended with an error");
        }
    }

    /// Splices a connection whose protocol was not read from it, watching who speaks
    /// first: a server that does makes its port known as server-speaks-first; a client
    /// that does on a port thought server-speaks-first makes the port forgotten. `read`
    /// is what the client already sent (on a server-speaks-first port, while mesh TLS
    /// was waited for), which goes upstream first.
    async fn splice_and_learn(
        &self,
        accepted: Accepted,
        client: CountingIo<ClientTransport>,
        read: BytesMut,
        decided: Decided,
    ) {
        let Some((mut upstream, _load)) = self.connect(accepted).await else {
            return;
        };
        let port = accepted.orig_dst.port();
        let labels = PortLabels {
            direction: self.direction,
            port,
        };
        let first = match client.get_ref().plain() {
            // Bytes already read (while mesh TLS was waited for): the client spoke first.
            _ if !read.is_empty() => FirstSpeaker::Client,
            Some(tcp) => tcp::first_speaker(tcp, upstream.get_ref().tcp()).await,
            None => FirstSpeaker::Neither,
        };
        match (decided, first) {
            (Decided::Silence, FirstSpeaker::Server) if self.server_first.learn(port) => {
                self.metrics
                    .server_first_ports
                    .get_or_create(&labels)
                    .set(1);
                info!(
                    direction = self.direction.as_str(),
                    port,
                    "learned a server-speaks-first port; detection is skipped for it from now on"
                );
            }
            (Decided::ServerFirstPort, FirstSpeaker::Client) if self.server_first.forget(port) => {
                self.metrics.server_first_ports.remove(&labels);
                info!(
                    direction = self.direction.as_str(),
                    port, "a client spoke first on a server-speaks-first port; detecting its protocol again"
                );
            }
            _ => {}
        }
        let mut client = PrefixedIo::new(read.freeze(), client);
        if let Err(error) = tcp::splice(&mut client, &mut upstream).await {
            debug!(%error, "opaque connection ended with an error");
        }
    }
}

fn starts_with_known_method(buf: &[u8]) -> bool {
    const METHODS: [&[u8]; 9] = [
        b"GET ",
        b"HEAD ",
        b"POST ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"PATCH ",
        b"CONNECT ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| buf.starts_with(m))
}
