//! The last stage, which both sides share below their own: a connection its side let in
//! is counted (the `tcp_*` metrics) and [admitted](Forwarder::admit) as HTTP (its first
//! HTTP/1 head checked) or opaque TCP; HTTP is then served by hyper through the request
//! stack along the route its side chose, opaque TCP spliced to the endpoint its side
//! chose, watching who speaks first where that teaches the port something. Where traffic
//! goes is the side's decision; this module only forwards.

use super::{
    server_first::{Lesson, ServerFirstPorts, Watch},
    Accepted, Decided, Detected, Shared,
};
use crate::{
    balance::{accrual::Outcome, EndpointLoad},
    config::Config,
    control::{discovery::Discovery, profile::Profiles},
    drain,
    errors::ProxyError,
    http::{
        carried::Restore,
        forward::Forward,
        guard::{Guard, HeaderLimit, RequestGuard},
        head::{self, HeadError},
        pool::{EndpointPool, EndpointPools, HttpVersion},
        record::{ConnTap, RecordHttp, ServiceOf},
        respond::RespondToErrors,
        retry::{budget::RetryBudget, Retry},
        route::Route,
        routes::MatchRoute,
        serve::HttpServer,
        timeout::RequestTimeouts,
    },
    peer::{Direction, PeerTls},
    telemetry::{
        labels::{AuthorityLabels, KnownAuthorities, Target},
        metrics::{Metrics, Peer, PortLabels},
        tap::Taps,
    },
    transport::{
        connect::{Connector, Endpoint, Upstream},
        detect::Protocol,
        io::{CountingIo, PrefixedIo},
        splice::{self, FirstSpeaker},
        tls::ClientTransport,
    },
};
use bytes::BytesMut;
use std::{net::SocketAddr, sync::Arc};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tower::ServiceBuilder;
use tracing::{debug, info};

/// A client connection, counted.
pub type ClientIo = CountingIo<ClientTransport>;

/// What an admitted connection is forwarded as.
pub enum Forwarding {
    Http(HttpConn),
    Opaque(OpaqueConn),
}

/// An HTTP connection, ready for hyper.
pub struct HttpConn {
    pub accepted: Accepted,
    pub version: HttpVersion,
    /// The client, with what was read (the first HTTP/1 head, say) replayed first.
    io: PrefixedIo<ClientIo>,
    peer: PeerTls,
    /// What its series say of where it goes.
    target: Target,
    /// How to ask again where it goes, when that was not known as it was made.
    service_of: Option<ServiceOf>,
}

impl HttpConn {
    /// How the client proved who it is.
    pub fn peer(&self) -> &PeerTls {
        &self.peer
    }

    /// Asks `service_of` which Service the connection goes to while its series say
    /// `unknown`.
    pub fn with_service_of(self, service_of: ServiceOf) -> HttpConn {
        HttpConn {
            service_of: Some(service_of),
            ..self
        }
    }
}

/// An opaque TCP connection, ready to splice.
pub struct OpaqueConn {
    pub accepted: Accepted,
    io: ClientIo,
    /// What the client already sent: it goes upstream first.
    read: BytesMut,
    /// Whether who speaks first is watched, and why.
    watch: Option<Watch>,
}

/// Forwards one side's connections.
pub struct Forwarder {
    direction: Direction,
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    taps: Arc<Taps>,
    http: HttpServer,
    pools: Arc<EndpointPools>,
    connector: Connector,
    server_first: Arc<ServerFirstPorts>,
    /// The guards of every request: the header-list limit.
    guards: Arc<[Arc<dyn RequestGuard>]>,
    /// With a control plane: the profiles requests take their routes from.
    profiles: Option<Arc<Profiles>>,
    /// With a control plane: where learned server-speaks-first ports are reported.
    discovery: Option<Discovery>,
    /// The retry budget of requests to targets without one of their own.
    retry_budget: Arc<RetryBudget>,
}

impl Forwarder {
    /// Forwarding for `direction`; learned server-speaks-first ports go to `server_first`.
    pub fn new(
        direction: Direction,
        shared: &Shared,
        server_first: Arc<ServerFirstPorts>,
    ) -> Forwarder {
        let config = &shared.config;
        let connector = Connector::new(
            direction,
            config.connect_timeout,
            shared.metrics.tcp.clone(),
            shared.tls.clone(),
        );
        let pools = EndpointPools::new(connector.clone(), config.pool_idle_timeout);
        pools.spawn_sweeper();
        let header_limit: Arc<dyn RequestGuard> = Arc::new(HeaderLimit {
            max_bytes: config.max_header_bytes,
        });
        Forwarder {
            direction,
            http: HttpServer::new(config),
            config: config.clone(),
            metrics: shared.metrics.clone(),
            taps: shared.taps.clone(),
            pools,
            connector,
            server_first,
            guards: Arc::new([header_limit]),
            profiles: shared.profiles.clone(),
            discovery: shared.discovery.clone(),
            retry_budget: Arc::default(),
        }
    }

    /// The side's pools of upstream HTTP connections.
    pub fn pools(&self) -> &Arc<EndpointPools> {
        &self.pools
    }

    /// The pool of `endpoint` for `version`.
    pub fn pool(&self, endpoint: &Endpoint, version: HttpVersion) -> Arc<EndpointPool> {
        self.pools.get(endpoint, version)
    }

    /// Counts the connection (its series labelled with `target`) and tells how it is
    /// forwarded; `None` when it is over already (an HTTP/1 client whose first head was
    /// refused was answered with the proxy's error).
    pub async fn admit(
        &self,
        detected: Detected<ClientTransport>,
        target: Target,
    ) -> Option<Forwarding> {
        let Detected {
            accepted,
            io,
            mut read,
            decided,
            peer,
        } = detected;
        let conn = self
            .metrics
            .tcp
            .open(self.direction, Peer::Src, target.clone(), peer.clone());
        // What detection read counts as read from the client.
        conn.bytes.read.inc_by(read.len() as u64);
        let mut io = CountingIo::new(io, conn);
        let http = |version, io, read: BytesMut| {
            Some(Forwarding::Http(HttpConn {
                accepted,
                version,
                io: PrefixedIo::new(read.freeze(), io),
                peer: peer.clone(),
                target: target.clone(),
                service_of: None,
            }))
        };
        let watch = match decided {
            Decided::Bytes(Protocol::Http1) => {
                let timeout = self.config.header_read_timeout;
                let limit = self.config.max_header_bytes;
                let deadline = accepted.at + timeout;
                return match head::read(&mut io, &mut read, limit, deadline, timeout).await {
                    Ok(()) => http(HttpVersion::Http1, io, read),
                    Err(HeadError::Refused(err)) => {
                        self.refuse(io, err).await;
                        None
                    }
                    Err(error) => {
                        debug!(%error, "no request head");
                        None
                    }
                };
            }
            Decided::Bytes(Protocol::Http2) => return http(HttpVersion::Http2, io, read),
            Decided::StalledRequestLine => {
                let timeout = self.config.detect_timeout;
                self.refuse(io, ProxyError::RequestHeadTimeout { timeout })
                    .await;
                return None;
            }
            // Who speaks first can only be seen on a plaintext socket.
            _ if io.get_ref().plain().is_none() => None,
            Decided::Silence => Some(Watch::SilentClient),
            Decided::ServerFirstPort => Some(Watch::KnownPort),
            Decided::Bytes(Protocol::Tls | Protocol::Opaque)
            | Decided::OpaquePort
            | Decided::PeerSaidOpaque
            | Decided::Undecided
            | Decided::ClientClosed => None,
        };
        Some(Forwarding::Opaque(OpaqueConn {
            accepted,
            io,
            read,
            watch,
        }))
    }

    /// Answers an HTTP/1 client with the proxy's error response and closes the connection.
    async fn refuse<I: AsyncWrite + Unpin>(&self, mut io: I, err: ProxyError) {
        err.report(&self.metrics, self.direction);
        let _ = io.write_all(&err.to_http1_bytes()).await;
        let _ = io.shutdown().await;
    }

    /// Serves an HTTP connection until it ends (or drains): every request through the
    /// request stack along `route`, guarded by the header-list limit and `authorize`, its
    /// metrics labelled with the authorities in `names`.
    pub async fn serve_http(
        &self,
        conn: HttpConn,
        route: Route,
        names: Arc<dyn KnownAuthorities>,
        authorize: Option<Arc<dyn RequestGuard>>,
        drain: drain::Watch,
    ) {
        let HttpConn {
            accepted,
            version,
            io,
            peer,
            target,
            service_of,
        } = conn;
        let guards = match authorize {
            Some(authorize) => self.guards.iter().cloned().chain([authorize]).collect(),
            None => self.guards.clone(),
        };
        let (direction, metrics) = (self.direction, self.metrics.clone());
        let retries = matches!(route, Route::Discovered(_));
        // Inbound, only the pod's own Services have routes.
        let own = (direction == Direction::Inbound).then(|| names.clone());
        let labels = AuthorityLabels::new(accepted.orig_dst, names);
        let takes_carried = route.takes_carried();
        let stack = ServiceBuilder::new()
            .layer_fn(|s| Restore::new(s, takes_carried))
            .layer_fn(|s| MatchRoute::new(s, self.profiles.clone(), accepted.orig_dst, own.clone()))
            .layer_fn(|s| {
                RecordHttp::new(
                    s,
                    direction,
                    metrics.http.clone(),
                    labels.clone(),
                    target.clone(),
                )
                .with_peer(peer.clone())
                .with_service_of(service_of.clone())
                .with_tap(ConnTap {
                    taps: self.taps.clone(),
                    source: accepted.client,
                    destination: accepted.orig_dst,
                })
            })
            .layer_fn(|s| RespondToErrors::new(s, direction, metrics.clone()))
            .layer_fn(|s| Guard::new(s, guards.clone()))
            .layer_fn(|s| RequestTimeouts::new(s, direction, metrics.clone()))
            .layer_fn(|s| {
                Retry::new(
                    s,
                    direction,
                    retries,
                    Some(self.config.http1_body_idle_timeout),
                    metrics.retries.clone(),
                    target.clone(),
                    self.retry_budget.clone(),
                )
            })
            .service(Forward::new(route, self.config.tcp_idle_timeout));
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

    /// Splices an opaque connection with `endpoint` until both ends close. `load`: the
    /// endpoint's place in its balancer, counted while the connection lasts.
    pub async fn splice(
        &self,
        conn: OpaqueConn,
        endpoint: &Endpoint,
        load: Option<Arc<EndpointLoad>>,
    ) {
        let OpaqueConn {
            accepted,
            io,
            read,
            watch,
        } = conn;
        let connected = self.connector.connect(endpoint, true).await;
        if let Some(load) = &load {
            load.record(match connected {
                Ok(_) => Outcome::Success,
                Err(_) => Outcome::Failure,
            });
        }
        let mut upstream = match connected {
            Ok(upstream) => upstream,
            Err(err) => {
                // TCP has no way to say why; closing the client's connection is the answer.
                return err.report(&self.metrics, self.direction);
            }
        };
        let _in_flight = load.map(|l| l.start());
        let mut said = BytesMut::new();
        if let Some(why) = watch {
            self.learn(accepted.orig_dst, why, &io, &read, &mut upstream, &mut said)
                .await;
        }
        let mut client = PrefixedIo::new(read.freeze(), io);
        let mut upstream = PrefixedIo::new(said.freeze(), upstream);
        let idle = self.config.tcp_idle_timeout;
        if let Err(error) = splice::splice(&mut client, &mut upstream, idle).await {
            debug!(%error, "opaque connection ended with an error");
        }
    }

    /// Watches who speaks first on a fresh connection to `orig_dst` and takes the lesson
    /// for its port, telling the control plane. Bytes the client already sent (while mesh
    /// TLS was waited for) mean it spoke first; what the upstream said first goes to
    /// `said`, for the client.
    async fn learn(
        &self,
        orig_dst: SocketAddr,
        why: Watch,
        client: &ClientIo,
        read: &[u8],
        upstream: &mut Upstream,
        said: &mut BytesMut,
    ) {
        let first = match client.get_ref().plain() {
            _ if !read.is_empty() => FirstSpeaker::Client,
            Some(tcp) => splice::first_speaker(tcp, upstream, said).await,
            None => FirstSpeaker::Neither,
        };
        let port = orig_dst.port();
        let labels = PortLabels {
            direction: self.direction,
            port,
        };
        let lesson = self.server_first.observe(port, why, first);
        if let (Some(lesson), Some(discovery)) = (lesson, &self.discovery) {
            discovery.report_server_first(orig_dst, lesson == Lesson::Learned);
        }
        match lesson {
            Some(Lesson::Learned) => {
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
            Some(Lesson::Forgotten) => {
                self.metrics.server_first_ports.remove(&labels);
                info!(
                    direction = self.direction.as_str(),
                    port, "a client spoke first on a server-speaks-first port; detecting its protocol again"
                );
            }
            None => {}
        }
    }
}
