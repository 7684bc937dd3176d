//! The proxy's environment, as the injector, the local runtime and the test kit write it
//! and the proxy reads it (once, into its `Config`): the name of every `CONDUIT_PROXY_*`
//! variable. What each accepts and its default are the proxy's (`conduit-proxy --help`).

/// What every variable's name starts with.
pub const PREFIX: &str = "CONDUIT_PROXY_";

/// Listeners for redirected inbound TCP.
pub const INBOUND_ADDR: &str = "CONDUIT_PROXY_INBOUND_ADDR";
/// Listeners for redirected outbound TCP.
pub const OUTBOUND_ADDR: &str = "CONDUIT_PROXY_OUTBOUND_ADDR";
/// Admin server: /metrics /ready /live /shutdown.
pub const ADMIN_ADDR: &str = "CONDUIT_PROXY_ADMIN_ADDR";
/// Tap server: live request events over gRPC.
pub const TAP_ADDR: &str = "CONDUIT_PROXY_TAP_ADDR";
/// Comma list of ports or ranges never inspected, e.g. 25,3306,9000-9010 (replaces
/// [`DEFAULT_OPAQUE_PORTS`]; `none`: every port is inspected).
pub const OPAQUE_PORTS: &str = "CONDUIT_PROXY_OPAQUE_PORTS";
/// The ports opaque when [`OPAQUE_PORTS`] is unset: the well-known ports of protocols
/// whose server speaks first (SMTP 25 and 587, MySQL and MariaDB 3306, Galera 4444,
/// PostgreSQL 5432, Redis 6379, Elasticsearch 9300, memcached 11211), whose first
/// connection would otherwise wait out protocol detection.
pub const DEFAULT_OPAQUE_PORTS: &str = "25,587,3306,4444,5432,6379,9300,11211";

/// The opaque ports of a proxy whose [`OPAQUE_PORTS`] is `set`: its value, else the
/// default list (as the proxy reads it: an empty value is unset).
pub fn opaque_ports(set: Option<&str>) -> &str {
    match set {
        None | Some("") => DEFAULT_OPAQUE_PORTS,
        Some(ports) => ports,
    }
}
/// Comma list of ports or ranges whose inbound traffic goes to the app on loopback (for apps that bind only there); others go to the pod's own address.
pub const INBOUND_LOOPBACK_PORTS: &str = "CONDUIT_PROXY_INBOUND_LOOPBACK_PORTS";
/// How long an opaque TCP connection (or an upgraded HTTP one) may move no bytes either way before it is closed.
pub const TCP_IDLE_TIMEOUT: &str = "CONDUIT_PROXY_TCP_IDLE_TIMEOUT";
/// How long an HTTP/1 client may send no part of a request body it is sending; then it gets 408.
pub const HTTP1_BODY_IDLE_TIMEOUT: &str = "CONDUIT_PROXY_HTTP1_BODY_IDLE_TIMEOUT";
/// Most connections one listener holds at once; more are refused (closed at once) and counted.
pub const MAX_CONNECTIONS: &str = "CONDUIT_PROXY_MAX_CONNECTIONS";
/// Consecutive failures that take an endpoint out of its balancer for a while (0: never).
pub const FAILURE_ACCRUAL: &str = "CONDUIT_PROXY_FAILURE_ACCRUAL";
/// Wait for a client's first bytes before treating the connection as opaque TCP.
pub const DETECT_TIMEOUT: &str = "CONDUIT_PROXY_DETECT_TIMEOUT";
/// Time a client has to send a complete request head.
pub const HEADER_READ_TIMEOUT: &str = "CONDUIT_PROXY_HEADER_READ_TIMEOUT";
/// How long an HTTP/1 client connection may sit between requests.
pub const KEEPALIVE_TIMEOUT: &str = "CONDUIT_PROXY_KEEPALIVE_TIMEOUT";
/// Largest request head accepted; larger gets 431.
pub const MAX_HEADER_BYTES: &str = "CONDUIT_PROXY_MAX_HEADER_BYTES";
/// Time to establish an upstream TCP connection.
pub const CONNECT_TIMEOUT: &str = "CONDUIT_PROXY_CONNECT_TIMEOUT";
/// How long idle upstream HTTP connections are kept.
pub const POOL_IDLE_TIMEOUT: &str = "CONDUIT_PROXY_POOL_IDLE_TIMEOUT";
/// Concurrent streams per HTTP/2 client connection.
pub const HTTP2_MAX_CONCURRENT_STREAMS: &str = "CONDUIT_PROXY_HTTP2_MAX_CONCURRENT_STREAMS";
/// Whether HTTP/1 requests to meshed endpoints travel over one shared HTTP/2 connection to the endpoint's proxy (true or false).
pub const MESH_HTTP2: &str = "CONDUIT_PROXY_MESH_HTTP2";
/// Time in-flight work gets to finish after SIGTERM.
pub const SHUTDOWN_GRACE_PERIOD: &str = "CONDUIT_PROXY_SHUTDOWN_GRACE_PERIOD";
/// Worker threads.
pub const CORES: &str = "CONDUIT_PROXY_CORES";
/// Log filter: a level, or target=level pairs.
pub const LOG: &str = "CONDUIT_PROXY_LOG";
/// The pod's namespace, a label on every metric.
pub const POD_NAMESPACE: &str = "CONDUIT_PROXY_POD_NAMESPACE";
/// The pod's deployment, a label on every metric.
pub const POD_DEPLOYMENT: &str = "CONDUIT_PROXY_POD_DEPLOYMENT";
/// The pod's name, a label on every metric.
pub const POD_NAME: &str = "CONDUIT_PROXY_POD_NAME";
/// The control plane's Destination API, host:port; outbound traffic is balanced over discovered endpoints.
pub const DESTINATION_ADDR: &str = "CONDUIT_PROXY_DESTINATION_ADDR";
/// The control plane's Identity API, host:port; the proxy is not ready until it has a certificate.
pub const IDENTITY_ADDR: &str = "CONDUIT_PROXY_IDENTITY_ADDR";
/// The token that proves the pod's ServiceAccount (required with CONDUIT_PROXY_IDENTITY_ADDR).
pub const IDENTITY_TOKEN_FILE: &str = "CONDUIT_PROXY_IDENTITY_TOKEN_FILE";
/// The mesh's trust anchors, PEM certificates; peers' certificates must chain to one (required with CONDUIT_PROXY_IDENTITY_ADDR).
pub const IDENTITY_TRUST_ANCHORS: &str = "CONDUIT_PROXY_IDENTITY_TRUST_ANCHORS";
/// The pod's ServiceAccount; with the namespace it names the proxy's identity.
pub const IDENTITY_SERVICE_ACCOUNT: &str = "CONDUIT_PROXY_IDENTITY_SERVICE_ACCOUNT";
/// With an identity: the only client the tap server lets in, over mesh TLS (the controller's identity).
pub const TAP_CLIENT_IDENTITY: &str = "CONDUIT_PROXY_TAP_CLIENT_IDENTITY";
/// With an identity: the identity the control plane must prove over TLS before the proxy sends it anything (the controller's).
pub const CONTROLLER_IDENTITY: &str = "CONDUIT_PROXY_CONTROLLER_IDENTITY";
/// How long a first request to a new target waits for discovery before using its original destination.
pub const DISCOVERY_TIMEOUT: &str = "CONDUIT_PROXY_DISCOVERY_TIMEOUT";
/// Who may connect inbound until the control plane's policy arrives (or without a control plane): all-unauthenticated, all-authenticated, cluster-authenticated or deny.
pub const DEFAULT_INBOUND_POLICY: &str = "CONDUIT_PROXY_DEFAULT_INBOUND_POLICY";
