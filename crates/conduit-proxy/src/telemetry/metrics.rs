//! Every metric the proxy exports, with its label sets as types, registered in one place.
//! Names follow Linkerd's (`request_total`, `response_total`, `response_latency_ms`,
//! `tcp_open_total`, ...) so existing dashboards and queries carry over. The pod's own
//! identity (namespace, deployment, pod) is stamped on every series.
//!
//! Label values come from bounded sets (`authority` and [`Target`]: `telemetry::labels`), and
//! as a last line every family whose labels come from traffic is [`Capped`]: past
//! [`MAX_SERIES`] label sets, new ones are counted in one overflow series, so that no
//! client can grow the proxy's memory or its `/metrics` without bound.

use crate::{
    config::PodIdentity,
    peer::{Direction, PeerTls},
    telemetry::labels::{Target, DEFAULT_SERVER, OVERFLOW},
    transport::detect::Protocol,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{
        counter::Counter,
        family::{Family, MetricConstructor},
        gauge::Gauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use std::{
    borrow::Cow,
    fmt::Write as _,
    hash::Hash,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

/// The most label sets one family holds; the rest share its overflow series.
pub const MAX_SERIES: usize = 1000;

/// What a label set becomes once its family is full: the same set with the values that
/// vary (an authority, a port, a destination's name) replaced by `overflow`.
pub trait Overflow {
    fn overflow(&self) -> Self;
}

/// A peer's identity in an overflow series: whether it had one, not which (identities
/// would make the overflow series many again).
fn overflow_tls(tls: &PeerTls) -> PeerTls {
    match tls {
        PeerTls::None => PeerTls::None,
        PeerTls::Client(_) => PeerTls::Client(OVERFLOW.into()),
        PeerTls::Server(_) => PeerTls::Server(OVERFLOW.into()),
    }
}

/// Labels of `metric_series_overflow_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    pub family: &'static str,
}

/// A family that holds at most [`MAX_SERIES`] label sets, counting the label sets it
/// turned away in `metric_series_overflow_total{family}`.
#[derive(Clone)]
pub struct Capped<L, M, C = fn() -> M> {
    family: Family<L, M, C>,
    /// Label sets created (the family never forgets one).
    created: Arc<AtomicUsize>,
    overflowed: Counter,
}

impl<L, M, C> Capped<L, M, C>
where
    L: Clone + Hash + Eq + Overflow,
    M: Clone,
    C: MetricConstructor<M>,
{
    /// The series of `labels`, or the overflow series when the family is full.
    pub fn get(&self, labels: &L) -> M {
        if let Some(series) = self.family.get(labels) {
            return M::clone(&series);
        }
        if self.created.load(Ordering::Relaxed) >= MAX_SERIES {
            self.overflowed.inc();
            return self.family.get_or_create_owned(&labels.overflow());
        }
        self.created.fetch_add(1, Ordering::Relaxed);
        self.family.get_or_create_owned(labels)
    }
}

impl EncodeLabelValue for Protocol {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Whether a response counts toward the success rate.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Classification {
    Success,
    Failure,
}

impl EncodeLabelValue for Classification {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Classification::Success => "success",
            Classification::Failure => "failure",
        })
    }
}

/// Which end of a proxied TCP connection: the client (`src`) or the upstream (`dst`).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Peer {
    Src,
    Dst,
}

impl EncodeLabelValue for Peer {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        encoder.write_str(match self {
            Peer::Src => "src",
            Peer::Dst => "dst",
        })
    }
}

/// Labels of `request_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub direction: Direction,
    pub authority: Arc<str>,
    /// The request's route in its profile, or `[default]`.
    pub route: Arc<str>,
    #[prometheus(flatten)]
    pub target: Target,
}

impl Overflow for RequestLabels {
    fn overflow(&self) -> Self {
        RequestLabels {
            authority: OVERFLOW.into(),
            route: OVERFLOW.into(),
            target: self.target.overflow(),
            ..self.clone()
        }
    }
}

/// Labels of `response_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub direction: Direction,
    pub authority: Arc<str>,
    /// The request's route in its profile, or `[default]`.
    pub route: Arc<str>,
    #[prometheus(flatten)]
    pub target: Target,
    pub status_code: u16,
    pub classification: Classification,
    pub grpc_status: Option<u32>,
    #[prometheus(flatten)]
    pub tls: PeerTls,
}

impl Overflow for ResponseLabels {
    fn overflow(&self) -> Self {
        ResponseLabels {
            authority: OVERFLOW.into(),
            route: OVERFLOW.into(),
            target: self.target.overflow(),
            tls: overflow_tls(&self.tls),
            ..self.clone()
        }
    }
}

/// Labels of `response_latency_ms`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub direction: Direction,
    pub authority: Arc<str>,
    /// The request's route in its profile, or `[default]`.
    pub route: Arc<str>,
    #[prometheus(flatten)]
    pub target: Target,
    pub status_code: u16,
    #[prometheus(flatten)]
    pub tls: PeerTls,
}

impl Overflow for LatencyLabels {
    fn overflow(&self) -> Self {
        LatencyLabels {
            authority: OVERFLOW.into(),
            route: OVERFLOW.into(),
            target: self.target.overflow(),
            tls: overflow_tls(&self.tls),
            ..self.clone()
        }
    }
}

/// Labels of the `tcp_*` families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: Direction,
    pub peer: Peer,
    #[prometheus(flatten)]
    pub target: Target,
    #[prometheus(flatten)]
    pub tls: PeerTls,
}

impl Overflow for TcpLabels {
    fn overflow(&self) -> Self {
        TcpLabels {
            target: self.target.overflow(),
            tls: overflow_tls(&self.tls),
            ..self.clone()
        }
    }
}

/// Labels of `route_attempt_total`: each attempt of a request (retries included) on its
/// route, and how it went: the actual success rate, where `response_total` is the
/// effective one.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub direction: Direction,
    pub route: Arc<str>,
    #[prometheus(flatten)]
    pub target: Target,
    pub classification: Classification,
}

impl Overflow for AttemptLabels {
    fn overflow(&self) -> Self {
        AttemptLabels {
            route: OVERFLOW.into(),
            target: self.target.overflow(),
            ..self.clone()
        }
    }
}

/// Labels of `route_retry_total` (`reason`: why it was retried) and
/// `route_retry_skipped_total` (`reason`: why it was not).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub direction: Direction,
    pub route: Arc<str>,
    #[prometheus(flatten)]
    pub target: Target,
    pub reason: &'static str,
}

impl Overflow for RetryLabels {
    fn overflow(&self) -> Self {
        RetryLabels {
            route: OVERFLOW.into(),
            target: self.target.overflow(),
            ..self.clone()
        }
    }
}

/// Labels of `endpoint_ejections_total`: the endpoint's port and workload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EjectionLabels {
    pub direction: Direction,
    #[prometheus(flatten)]
    pub target: Target,
}

impl Overflow for EjectionLabels {
    fn overflow(&self) -> Self {
        EjectionLabels {
            direction: self.direction,
            target: self.target.overflow(),
        }
    }
}

/// Labels of `proxy_errors_total`: `error` is a short stable code, such as `upstream_refused`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub direction: Direction,
    pub error: &'static str,
}

/// Labels of `protocol_detect_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DetectLabels {
    pub direction: Direction,
    pub protocol: Protocol,
    /// What decided: `bytes`, `timeout`, `client_closed`, `opaque_port` or `server_first_port`.
    pub decided_by: &'static str,
}

/// Labels of `inbound_mtls_handshakes_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// Whether the handshake resumed an earlier session (no certificates exchanged).
    pub resumed: bool,
}

/// Labels of `inbound_http_authz_deny_total` and `inbound_tcp_authz_deny_total`: the
/// Server that governs the port, or `default`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    pub srv_name: String,
}

/// Labels of `server_speaks_first_port`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PortLabels {
    pub direction: Direction,
    pub port: u16,
}

/// Latency bucket bounds in milliseconds: sub-millisecond resolution first, because the
/// mesh's own overhead lives there, then Linkerd's bounds.
pub const LATENCY_BUCKETS_MS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0,
    400.0, 500.0, 1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0,
    50000.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS_MS.iter().copied())
}

/// The HTTP families.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Capped<RequestLabels, Counter, fn() -> Counter>,
    pub responses: Capped<ResponseLabels, Counter, fn() -> Counter>,
    pub latency: Capped<LatencyLabels, Histogram, fn() -> Histogram>,
}

/// The TCP families.
#[derive(Clone)]
pub struct TcpMetrics {
    open: Capped<TcpLabels, Counter, fn() -> Counter>,
    close: Capped<TcpLabels, Counter, fn() -> Counter>,
    read_bytes: Capped<TcpLabels, Counter, fn() -> Counter>,
    write_bytes: Capped<TcpLabels, Counter, fn() -> Counter>,
}

/// Families no registry exports, for tests of what counts connections.
impl Default for TcpMetrics {
    fn default() -> Self {
        let family = || Capped {
            family: Family::new_with_constructor(Counter::default as fn() -> Counter),
            created: Arc::default(),
            overflowed: Counter::default(),
        };
        TcpMetrics {
            open: family(),
            close: family(),
            read_bytes: family(),
            write_bytes: family(),
        }
    }
}

/// Where a connection's bytes are counted.
#[derive(Clone, Debug, Default)]
pub struct ByteCounters {
    /// Bytes read from the socket.
    pub read: Counter,
    /// Bytes written to the socket.
    pub write: Counter,
}

/// A counted TCP connection: counted open on creation, closed on drop.
pub struct TcpConnection {
    /// Where the connection's bytes are counted.
    pub bytes: ByteCounters,
    close: Counter,
}

impl Drop for TcpConnection {
    fn drop(&mut self) {
        self.close.inc();
    }
}

impl TcpMetrics {
    /// Counts a connection to `target` as open, returning the guard that counts its bytes
    /// and close.
    pub fn open(
        &self,
        direction: Direction,
        peer: Peer,
        target: Target,
        tls: PeerTls,
    ) -> TcpConnection {
        let labels = TcpLabels {
            direction,
            peer,
            target,
            tls,
        };
        self.open.get(&labels).inc();
        TcpConnection {
            bytes: ByteCounters {
                read: self.read_bytes.get(&labels),
                write: self.write_bytes.get(&labels),
            },
            close: self.close.get(&labels),
        }
    }
}

/// Registers `family` as `name`, capped, its overflow counted in `overflowed`.
fn register_capped<L, M, C>(
    registry: &mut Registry,
    overflowed: &Family<OverflowLabels, Counter>,
    family: Family<L, M, C>,
    name: &'static str,
    help: &str,
) -> Capped<L, M, C>
where
    Family<L, M, C>: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, family.clone());
    Capped {
        family,
        created: Arc::default(),
        overflowed: overflowed.get_or_create_owned(&OverflowLabels { family: name }),
    }
}

/// A capped counter family, registered as `name`.
fn capped<L>(
    registry: &mut Registry,
    overflowed: &Family<OverflowLabels, Counter>,
    name: &'static str,
    help: &str,
) -> Capped<L, Counter, fn() -> Counter>
where
    L: Clone + Hash + Eq,
    Family<L, Counter, fn() -> Counter>: prometheus_client::registry::Metric + Clone,
{
    let family = Family::new_with_constructor(Counter::default as fn() -> Counter);
    register_capped(registry, overflowed, family, name, help)
}

/// What the retry layer counts (outbound).
#[derive(Clone)]
pub struct RetryMetrics {
    pub attempts: Capped<AttemptLabels, Counter, fn() -> Counter>,
    pub retries: Capped<RetryLabels, Counter, fn() -> Counter>,
    pub skipped: Capped<RetryLabels, Counter, fn() -> Counter>,
}

/// All of the proxy's metrics and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub tcp: TcpMetrics,
    /// Endpoints taken out of their balancer (failure accrual).
    pub ejections: Capped<EjectionLabels, Counter, fn() -> Counter>,
    pub retries: RetryMetrics,
    pub errors: Family<ErrorLabels, Counter>,
    pub detect: Family<DetectLabels, Counter>,
    pub server_first_ports: Family<PortLabels, Gauge>,
    /// Mesh TLS handshakes the inbound proxy completed.
    pub mtls_handshakes: Family<HandshakeLabels, Counter>,
    http_authz_deny: Family<AuthzLabels, Counter>,
    tcp_authz_deny: Family<AuthzLabels, Counter>,
}

impl Metrics {
    /// Registers every family, labelled with the pod's identity where it is known.
    pub fn new(pod: &PodIdentity) -> Metrics {
        let identity = [
            ("namespace", &pod.namespace),
            ("deployment", &pod.deployment),
            ("pod", &pod.pod),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (Cow::Borrowed(k), Cow::Owned(v.clone())));
        let mut registry = Registry::with_labels(identity);
        let overflowed = Family::<OverflowLabels, Counter>::default();
        let tcp = TcpMetrics {
            open: capped(
                &mut registry,
                &overflowed,
                "tcp_open",
                "TCP connections opened",
            ),
            close: capped(
                &mut registry,
                &overflowed,
                "tcp_close",
                "TCP connections closed",
            ),
            read_bytes: capped(
                &mut registry,
                &overflowed,
                "tcp_read_bytes",
                "Bytes read from TCP connections",
            ),
            write_bytes: capped(
                &mut registry,
                &overflowed,
                "tcp_write_bytes",
                "Bytes written to TCP connections",
            ),
        };
        let http = HttpMetrics {
            requests: capped(
                &mut registry,
                &overflowed,
                "request",
                "HTTP requests received (and let in by policy)",
            ),
            responses: capped(
                &mut registry,
                &overflowed,
                "response",
                "HTTP responses sent, by status and success; gRPC status from trailers",
            ),
            latency: register_capped(
                &mut registry,
                &overflowed,
                Family::new_with_constructor(latency_histogram),
                "response_latency_ms",
                "Time from receiving a request to sending the response head, in milliseconds",
            ),
        };
        let ejections = capped(
            &mut registry,
            &overflowed,
            "endpoint_ejections",
            "Endpoints taken out of their balancer for a backoff, after consecutive failures or a failed probe",
        );
        let retries = RetryMetrics {
            attempts: capped(
                &mut registry,
                &overflowed,
                "route_attempt",
                "Attempts of HTTP requests by route (retries included), by how each went: the actual success rate",
            ),
            retries: capped(
                &mut registry,
                &overflowed,
                "route_retry",
                "Requests sent again, by why (failure: a retryable route failed; unsent: the request never reached an application)",
            ),
            skipped: capped(
                &mut registry,
                &overflowed,
                "route_retry_skipped",
                "Retries not made, by why (budget: the Service's retry budget was spent; body: the request body was too large to replay; limit: too many attempts)",
            ),
        };
        registry.register(
            "metric_series_overflow",
            "Label sets a full metric family turned away (counted in its series labelled overflow)",
            overflowed,
        );
        let errors = Family::default();
        let detect = Family::default();
        let server_first_ports = Family::default();
        registry.register(
            "proxy_errors",
            "Failures the proxy met itself, by reason (see the conduit-proxy-error header)",
            errors.clone(),
        );
        registry.register(
            "protocol_detect",
            "Accepted connections by detected protocol and what decided it",
            detect.clone(),
        );
        registry.register(
            "server_speaks_first_port",
            "Destination ports learned to be server-speaks-first; detection is skipped for them",
            server_first_ports.clone(),
        );
        let mtls_handshakes = Family::default();
        registry.register(
            "inbound_mtls_handshakes",
            "Mesh TLS handshakes completed with clients, by whether they resumed a session",
            mtls_handshakes.clone(),
        );
        let http_authz_deny = Family::default();
        let tcp_authz_deny = Family::default();
        registry.register(
            "inbound_http_authz_deny",
            "HTTP requests denied by policy (answered 403, or gRPC PERMISSION_DENIED)",
            http_authz_deny.clone(),
        );
        registry.register(
            "inbound_tcp_authz_deny",
            "Inbound connections denied by policy and closed",
            tcp_authz_deny.clone(),
        );
        Metrics {
            registry,
            http,
            tcp,
            ejections,
            retries,
            errors,
            detect,
            server_first_ports,
            mtls_handshakes,
            http_authz_deny,
            tcp_authz_deny,
        }
    }

    /// Counts one failure the proxy met itself.
    pub fn error(&self, direction: Direction, error: &'static str) {
        self.errors
            .get_or_create(&ErrorLabels { direction, error })
            .inc();
    }

    /// Counts a denial by policy: an HTTP request, or a TCP connection.
    pub fn authz_denied(&self, http: bool, server: Option<&str>) {
        let family = if http {
            &self.http_authz_deny
        } else {
            &self.tcp_authz_deny
        };
        family
            .get_or_create(&AuthzLabels {
                srv_name: server.unwrap_or(DEFAULT_SERVER).to_string(),
            })
            .inc();
    }

    /// Everything, in the Prometheus/OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            // Writing to a String cannot fail; if the encoder ever does, say so in-band.
            let _ = writeln!(out, "# metrics encoding failed");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_carry_pod_identity_and_linkerd_names() {
        let m = Metrics::new(&PodIdentity {
            namespace: "emojivoto".into(),
            deployment: "web".into(),
            pod: String::new(),
        });
        let labels = RequestLabels {
            direction: Direction::Inbound,
            authority: "web.emojivoto:80".into(),
            route: "GET /api/list".into(),
            target: Target::server(80, Some("web-http")),
        };
        m.http.requests.get(&labels).inc();
        m.http
            .latency
            .get(&LatencyLabels {
                direction: Direction::Inbound,
                authority: "web.emojivoto:80".into(),
                route: "[default]".into(),
                target: Target::server(80, None),
                status_code: 200,
                tls: PeerTls::Client(
                    "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local".into(),
                ),
            })
            .observe(0.3);
        let conn = m.tcp.open(
            Direction::Outbound,
            Peer::Dst,
            Target::workload(80, Some("voting.emojivoto".into())),
            PeerTls::None,
        );
        conn.bytes.read.inc_by(10);
        drop(conn);
        let text = m.encode();
        assert!(
            text.contains(
                r#"request_total{namespace="emojivoto",deployment="web",direction="inbound",authority="web.emojivoto:80",route="GET /api/list",target_port="80",srv_name="web-http"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"le="0.5",direction="inbound",authority="web.emojivoto:80",route="[default]",target_port="80",srv_name="default",status_code="200",tls="true",client_id="vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"tcp_open_total{namespace="emojivoto",deployment="web",direction="outbound",peer="dst",target_port="80",dst_workload="voting.emojivoto",tls="false"} 1"#), "{text}");
        assert!(text.contains(r#"tcp_close_total{namespace="emojivoto",deployment="web",direction="outbound",peer="dst",target_port="80",dst_workload="voting.emojivoto",tls="false"} 1"#), "{text}");
        assert!(text.contains(r#"tcp_read_bytes_total{namespace="emojivoto",deployment="web",direction="outbound",peer="dst",target_port="80",dst_workload="voting.emojivoto",tls="false"} 10"#), "{text}");
        assert!(
            !text.contains("pod=\""),
            "empty identity labels are left out: {text}"
        );
    }

    #[test]
    fn a_full_family_sends_new_label_sets_to_its_overflow_series_and_counts_them() {
        let m = Metrics::new(&PodIdentity::default());
        let client = PeerTls::Client("a.b.serviceaccount.identity.conduit.cluster.local".into());
        for port in 1..=(MAX_SERIES as u16 + 50) {
            let dst = Target::server(port, Some("web-http"));
            drop(
                m.tcp
                    .open(Direction::Inbound, Peer::Src, dst, client.clone()),
            );
        }
        let text = m.encode();
        let open: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("tcp_open_total{"))
            .collect();
        assert_eq!(
            open.len(),
            MAX_SERIES + 1,
            "the cap and one overflow series"
        );
        assert!(text.contains(r#"tcp_open_total{direction="inbound",peer="src",target_port="overflow",srv_name="overflow",tls="true",client_id="overflow"} 50"#), "{text}");
        assert!(
            text.contains(r#"metric_series_overflow_total{family="tcp_open"} 50"#),
            "{text}"
        );
        // A label set the family already holds is still its own.
        drop(m.tcp.open(
            Direction::Inbound,
            Peer::Src,
            Target::server(7, Some("web-http")),
            client,
        ));
        assert!(m.encode().contains(r#"target_port="7",srv_name="web-http",tls="true",client_id="a.b.serviceaccount.identity.conduit.cluster.local"} 2"#));
    }
}
