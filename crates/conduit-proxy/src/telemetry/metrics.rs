//! Every metric the proxy exports, with its label sets as types, registered in one place.
//! Names follow Linkerd's (`request_total`, `response_total`, `response_latency_ms`,
//! `tcp_open_total`, ...) so existing dashboards and queries carry over. The pod's own
//! identity (namespace, deployment, pod) is stamped on every series.

use crate::{
    config::PodIdentity,
    peer::{Direction, PeerTls},
    transport::detect::Protocol,
};
use prometheus_client::{
    encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use std::{borrow::Cow, fmt::Write as _, net::SocketAddr, sync::Arc};

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
}

/// Labels of `response_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResponseLabels {
    pub direction: Direction,
    pub authority: Arc<str>,
    pub status_code: u16,
    pub classification: Classification,
    pub grpc_status: Option<u32>,
    #[prometheus(flatten)]
    pub tls: PeerTls,
}

/// Labels of `response_latency_ms`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    pub direction: Direction,
    pub authority: Arc<str>,
    pub status_code: u16,
    #[prometheus(flatten)]
    pub tls: PeerTls,
}

/// Labels of the `tcp_*` families.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub direction: Direction,
    pub peer: Peer,
    pub target_addr: String,
    #[prometheus(flatten)]
    pub tls: PeerTls,
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
    pub requests: Family<RequestLabels, Counter>,
    pub responses: Family<ResponseLabels, Counter>,
    pub latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
}

/// The TCP families.
#[derive(Clone, Default)]
pub struct TcpMetrics {
    open: Family<TcpLabels, Counter>,
    close: Family<TcpLabels, Counter>,
    read_bytes: Family<TcpLabels, Counter>,
    write_bytes: Family<TcpLabels, Counter>,
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
    /// Counts a connection as open, returning the guard that counts its bytes and close.
    pub fn open(
        &self,
        direction: Direction,
        peer: Peer,
        target: SocketAddr,
        tls: PeerTls,
    ) -> TcpConnection {
        let labels = TcpLabels {
            direction,
            peer,
            target_addr: target.to_string(),
            tls,
        };
        self.open.get_or_create(&labels).inc();
        TcpConnection {
            bytes: ByteCounters {
                read: self.read_bytes.get_or_create_owned(&labels),
                write: self.write_bytes.get_or_create_owned(&labels),
            },
            close: self.close.get_or_create_owned(&labels),
        }
    }
}

/// All of the proxy's metrics and the registry that exports them.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    pub tcp: TcpMetrics,
    pub errors: Family<ErrorLabels, Counter>,
    pub detect: Family<DetectLabels, Counter>,
    pub server_first_ports: Family<PortLabels, Gauge>,
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
        let http = HttpMetrics {
            requests: Family::default(),
            responses: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
        };
        let tcp = TcpMetrics::default();
        let errors = Family::default();
        let detect = Family::default();
        let server_first_ports = Family::default();
        registry.register("request", "HTTP requests received", http.requests.clone());
        registry.register(
            "response",
            "HTTP responses sent, by status and success; gRPC status from trailers",
            http.responses.clone(),
        );
        registry.register(
            "response_latency_ms",
            "Time from receiving a request to sending the response head, in milliseconds",
            http.latency.clone(),
        );
        registry.register("tcp_open", "TCP connections opened", tcp.open.clone());
        registry.register("tcp_close", "TCP connections closed", tcp.close.clone());
        registry.register(
            "tcp_read_bytes",
            "Bytes read from TCP connections",
            tcp.read_bytes.clone(),
        );
        registry.register(
            "tcp_write_bytes",
            "Bytes written to TCP connections",
            tcp.write_bytes.clone(),
        );
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
            errors,
            detect,
            server_first_ports,
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
                srv_name: server.unwrap_or("default").to_string(),
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
        };
        m.http.requests.get_or_create(&labels).inc();
        m.http
            .latency
            .get_or_create(&LatencyLabels {
                direction: Direction::Inbound,
                authority: "web.emojivoto:80".into(),
                status_code: 200,
                tls: PeerTls::Client(
                    "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local".into(),
                ),
            })
            .observe(0.3);
        let conn = m.tcp.open(
            Direction::Outbound,
            Peer::Dst,
            "198.18.0.2:80".parse().unwrap(),
            PeerTls::None,
        );
        conn.bytes.read.inc_by(10);
        drop(conn);
        let text = m.encode();
        assert!(
            text.contains(
                r#"request_total{namespace="emojivoto",deployment="web",direction="inbound",authority="web.emojivoto:80"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"le="0.5",direction="inbound",authority="web.emojivoto:80",status_code="200",tls="true",client_id="vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"tcp_open_total{namespace="emojivoto",deployment="web",direction="outbound",peer="dst",target_addr="198.18.0.2:80",tls="false"} 1"#), "{text}");
        assert!(text.contains(r#"tcp_close_total{namespace="emojivoto",deployment="web",direction="outbound",peer="dst",target_addr="198.18.0.2:80",tls="false"} 1"#), "{text}");
        assert!(text.contains(r#"tcp_read_bytes_total{namespace="emojivoto",deployment="web",direction="outbound",peer="dst",target_addr="198.18.0.2:80",tls="false"} 10"#), "{text}");
        assert!(
            !text.contains("pod=\""),
            "empty identity labels are left out: {text}"
        );
    }
}
