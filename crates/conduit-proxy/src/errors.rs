//! The failures the proxy meets itself, and the one place that turns them into responses.
//!
//! Every response the proxy makes up (not the application's) carries a
//! `conduit-proxy-error` header saying in plain words what went wrong; the same words are
//! logged, and the short [`ProxyError::code`] labels the `proxy_errors_total` counter.

use crate::{
    peer::Direction,
    telemetry::{log_limit::LogLimit, metrics::Metrics},
};
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use std::{io, net::SocketAddr, time::Duration};

/// The header on every response the proxy generates.
pub const PROXY_ERROR_HEADER: &str = "conduit-proxy-error";

/// Set by a server's proxy on its error response when the request provably never reached
/// the application (the proxy could not connect to it), so that the client's proxy may
/// send it elsewhere whatever its method. Believed only over mesh TLS, and never passed
/// on to a client.
pub const UNSENT_HEADER: &str = "conduit-proxy-unsent";

/// On a response that took more than one attempt: how many retries it took.
pub const RETRIES_HEADER: &str = "conduit-proxy-retries";

/// A failure of the proxy's own, as opposed to an application's error response.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("the client sent part of an HTTP request head and then nothing for {}", humantime::format_duration(*.timeout))]
    RequestHeadTimeout { timeout: Duration },
    #[error("the client sent part of an HTTP/1 request body and then nothing for {} (CONDUIT_PROXY_HTTP1_BODY_IDLE_TIMEOUT)", humantime::format_duration(*.idle))]
    RequestBodyTimeout { idle: Duration },
    #[error("malformed HTTP request: {reason}")]
    MalformedRequest { reason: String },
    #[error("the request head is larger than the proxy's limit of {limit} bytes (CONDUIT_PROXY_MAX_HEADER_BYTES)")]
    HeadersTooLarge { limit: usize },
    #[error("the request line is longer than the proxy's limit of {limit} bytes (CONDUIT_PROXY_MAX_HEADER_BYTES)")]
    UriTooLong { limit: usize },
    #[error("upstream {addr} refused the connection: nothing listens on that port")]
    UpstreamRefused { addr: SocketAddr },
    #[error("connecting to upstream {addr} timed out after {}", humantime::format_duration(*.timeout))]
    UpstreamConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("upstream {addr} is unreachable: {source}")]
    UpstreamUnreachable { addr: SocketAddr, source: io::Error },
    #[error("upstream {addr} failed: {reason}")]
    UpstreamFailed { addr: SocketAddr, reason: String },
    #[error(
        "the mTLS handshake with {addr} failed; it had to prove identity {identity}: {reason}"
    )]
    UpstreamTls {
        addr: SocketAddr,
        identity: String,
        reason: String,
    },
    #[error("this proxy has no certificate yet (the identity service has not issued one), and meshed {addr} ({identity}) is only spoken to over mTLS")]
    NotCertified { addr: SocketAddr, identity: String },
    #[error("forbidden by policy: {reason}")]
    Unauthorized { reason: String },
    #[error("{limit} expired after {}: the request did not complete in time", humantime::format_duration(*.timeout))]
    RequestTimeout {
        limit: TimeoutLimit,
        timeout: Duration,
    },
    #[error("{route}: every backend of the rule has weight 0, so no request it matches is sent")]
    NoBackend { route: std::sync::Arc<str> },
    #[error("{route}: its backend {backend} has no ready endpoints (or is no Service)")]
    BackendUnavailable {
        route: std::sync::Arc<str>,
        backend: std::sync::Arc<str>,
    },
}

/// What set a request's timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimeoutLimit {
    /// The route's, in its Service's profile.
    Route(std::sync::Arc<str>),
    /// The gRPC client's own deadline (`grpc-timeout`).
    Grpc,
    /// An HTTPRoute rule's `timeouts.request` (named as `HTTPRoute ns/name rule N`).
    HttpRoute(std::sync::Arc<str>),
}

impl std::fmt::Display for TimeoutLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TimeoutLimit::Route(name) => write!(f, "the timeout of route {name:?}"),
            TimeoutLimit::Grpc => f.write_str("the client's grpc-timeout"),
            TimeoutLimit::HttpRoute(source) => write!(f, "the request timeout of {source}"),
        }
    }
}

impl ProxyError {
    /// The status code of the response that reports this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::RequestHeadTimeout { .. } | ProxyError::RequestBodyTimeout { .. } => {
                StatusCode::REQUEST_TIMEOUT
            }
            ProxyError::MalformedRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::HeadersTooLarge { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ProxyError::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            ProxyError::UpstreamRefused { .. }
            | ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamTls { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::NotCertified { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unauthorized { .. } => StatusCode::FORBIDDEN,
            ProxyError::UpstreamConnectTimeout { .. } | ProxyError::RequestTimeout { .. } => {
                StatusCode::GATEWAY_TIMEOUT
            }
            // What the Gateway API asks of a rule that can send nowhere.
            ProxyError::NoBackend { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            ProxyError::BackendUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short stable name for metrics labels.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::RequestHeadTimeout { .. } => "request_head_timeout",
            ProxyError::RequestBodyTimeout { .. } => "request_body_timeout",
            ProxyError::MalformedRequest { .. } => "malformed_request",
            ProxyError::HeadersTooLarge { .. } => "headers_too_large",
            ProxyError::UriTooLong { .. } => "uri_too_long",
            ProxyError::UpstreamRefused { .. } => "upstream_refused",
            ProxyError::UpstreamConnectTimeout { .. } => "upstream_connect_timeout",
            ProxyError::UpstreamUnreachable { .. } => "upstream_unreachable",
            ProxyError::UpstreamFailed { .. } => "upstream_failed",
            ProxyError::UpstreamTls { .. } => "upstream_tls_failed",
            ProxyError::NotCertified { .. } => "not_certified",
            ProxyError::Unauthorized { .. } => "unauthorized",
            ProxyError::RequestTimeout { .. } => "request_timeout",
            ProxyError::NoBackend { .. } => "no_backend",
            ProxyError::BackendUnavailable { .. } => "backend_unavailable",
        }
    }

    /// Whether the request was provably never sent: connecting to the upstream failed.
    pub fn never_sent(&self) -> bool {
        matches!(
            self,
            ProxyError::UpstreamRefused { .. }
                | ProxyError::UpstreamConnectTimeout { .. }
                | ProxyError::UpstreamUnreachable { .. }
                | ProxyError::UpstreamTls { .. }
        )
    }

    /// The upstream this error happened with, if any.
    pub fn upstream(&self) -> Option<SocketAddr> {
        match self {
            ProxyError::UpstreamRefused { addr }
            | ProxyError::UpstreamConnectTimeout { addr, .. }
            | ProxyError::UpstreamUnreachable { addr, .. }
            | ProxyError::UpstreamFailed { addr, .. }
            | ProxyError::UpstreamTls { addr, .. }
            | ProxyError::NotCertified { addr, .. } => Some(*addr),
            _ => None,
        }
    }

    /// Classifies a failed upstream connect.
    pub fn from_connect(addr: SocketAddr, err: io::Error) -> ProxyError {
        match err.kind() {
            io::ErrorKind::ConnectionRefused => ProxyError::UpstreamRefused { addr },
            _ => ProxyError::UpstreamUnreachable { addr, source: err },
        }
    }

    /// The response that reports this error to an HTTP client.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let text = self.to_string();
        let mut rsp = Response::new(Full::new(Bytes::from(format!("{text}\n"))));
        *rsp.status_mut() = self.status();
        let headers = rsp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        headers.insert(PROXY_ERROR_HEADER, header_value(&text));
        if self.closes_connection() {
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        rsp
    }

    /// The gRPC status that reports this error to a gRPC client.
    pub fn grpc_status(&self) -> u32 {
        match self {
            ProxyError::Unauthorized { .. } => 7, // PERMISSION_DENIED
            ProxyError::UpstreamConnectTimeout { .. }
            | ProxyError::RequestTimeout { .. }
            | ProxyError::RequestHeadTimeout { .. }
            | ProxyError::RequestBodyTimeout { .. } => {
                4 // DEADLINE_EXCEEDED
            }
            ProxyError::HeadersTooLarge { .. } | ProxyError::UriTooLong { .. } => 8, // RESOURCE_EXHAUSTED
            ProxyError::MalformedRequest { .. } => 13,                               // INTERNAL
            ProxyError::UpstreamRefused { .. }
            | ProxyError::UpstreamUnreachable { .. }
            | ProxyError::UpstreamFailed { .. }
            | ProxyError::UpstreamTls { .. }
            | ProxyError::NotCertified { .. }
            | ProxyError::BackendUnavailable { .. } => 14, // UNAVAILABLE
            ProxyError::NoBackend { .. } => 13,                                      // INTERNAL
        }
    }

    /// The response that reports this error to a gRPC client: trailers-only, HTTP 200,
    /// the status and message in `grpc-status` and `grpc-message`.
    pub fn to_grpc_response(&self) -> Response<Full<Bytes>> {
        let text = self.to_string();
        let mut rsp = Response::new(Full::new(Bytes::new()));
        let headers = rsp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        headers.extend(self.to_grpc_trailers());
        headers.insert(PROXY_ERROR_HEADER, header_value(&text));
        rsp
    }

    /// The status that ends a gRPC response this error cut short, as trailers.
    pub fn to_grpc_trailers(&self) -> HeaderMap {
        let mut trailers = HeaderMap::with_capacity(2);
        trailers.insert("grpc-status", HeaderValue::from(self.grpc_status()));
        trailers.insert("grpc-message", grpc_message(&self.to_string()));
        trailers
    }

    /// Counts the error in `proxy_errors_total` and logs it, at most once a second per
    /// kind (a client can make the proxy answer with errors as fast as it likes).
    pub fn report(&self, metrics: &Metrics, direction: Direction) {
        static LOG: LogLimit = LogLimit::new(Duration::from_secs(1));
        metrics.error(direction, self.code());
        if let Some(suppressed) = LOG.admit(self.code()) {
            tracing::info!(
                direction = direction.as_str(),
                error = self.code(),
                suppressed,
                "{self}"
            );
        }
    }

    /// Whether the client's connection is unusable after this error.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            ProxyError::RequestHeadTimeout { .. }
                | ProxyError::RequestBodyTimeout { .. }
                | ProxyError::MalformedRequest { .. }
                | ProxyError::HeadersTooLarge { .. }
                | ProxyError::UriTooLong { .. }
        )
    }

    /// The response as HTTP/1.1 bytes, for errors found before an HTTP server exists.
    pub fn to_http1_bytes(&self) -> Vec<u8> {
        let text = self.to_string();
        let body = format!("{text}\n");
        let status = self.status();
        let mut out = format!(
            "HTTP/1.1 {} {}\r\ncontent-length: {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or(""),
            body.len()
        );
        for (name, value) in self.to_response().headers() {
            out.push_str(name.as_str());
            out.push_str(": ");
            out.push_str(value.to_str().unwrap_or(""));
            out.push_str("\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&body);
        out.into_bytes()
    }
}

/// `grpc-message`: percent-encoded as gRPC requires (everything but printable ASCII
/// other than `%`).
fn grpc_message(text: &str) -> HeaderValue {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("proxy error"))
}

/// A header value from free text, with anything a header cannot carry replaced.
fn header_value(text: &str) -> HeaderValue {
    let clean: String = text
        .chars()
        .map(|c| {
            if c == '\t' || (' '..='~').contains(&c) {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&clean).unwrap_or_else(|_| HeaderValue::from_static("proxy error"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_says_what_happened_in_its_header() {
        let addr: SocketAddr = "198.18.0.2:8080".parse().unwrap();
        let cases = [
            (ProxyError::UpstreamRefused { addr }, 502, "refused"),
            (
                ProxyError::UpstreamConnectTimeout {
                    addr,
                    timeout: Duration::from_secs(3),
                },
                504,
                "timed out after 3s",
            ),
            (
                ProxyError::RequestTimeout {
                    limit: TimeoutLimit::Route("GET /api/list".into()),
                    timeout: Duration::from_millis(300),
                },
                504,
                "the timeout of route \"GET /api/list\" expired after 300ms",
            ),
            (
                ProxyError::HeadersTooLarge { limit: 1024 },
                431,
                "larger than",
            ),
            (
                ProxyError::MalformedRequest {
                    reason: "invalid header name".into(),
                },
                400,
                "invalid header",
            ),
            (
                ProxyError::RequestHeadTimeout {
                    timeout: Duration::from_secs(10),
                },
                408,
                "nothing for 10s",
            ),
        ];
        for (err, status, words) in cases {
            let rsp = err.to_response();
            assert_eq!(rsp.status().as_u16(), status);
            let header = rsp.headers()[PROXY_ERROR_HEADER].to_str().unwrap();
            assert!(header.contains(words), "{header}");
        }
    }

    #[test]
    fn http1_bytes_are_a_complete_response() {
        let err = ProxyError::HeadersTooLarge { limit: 1024 };
        let bytes = err.to_http1_bytes();
        let mut headers = [httparse::EMPTY_HEADER; 8];
        let mut rsp = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = rsp.parse(&bytes).unwrap() else {
            panic!("incomplete response");
        };
        assert_eq!(rsp.code, Some(431));
        let len: usize = rsp
            .headers
            .iter()
            .find(|h| h.name == "content-length")
            .map(|h| std::str::from_utf8(h.value).unwrap().parse().unwrap())
            .unwrap();
        assert_eq!(bytes.len() - head_len, len);
        assert!(rsp.headers.iter().any(|h| h.name == PROXY_ERROR_HEADER));
        assert!(rsp
            .headers
            .iter()
            .any(|h| h.name == "connection" && h.value == b"close"));
    }

    #[test]
    fn header_values_never_fail() {
        assert_eq!(header_value("bad\r\nheader é"), "bad??header ?");
    }
}
