//! The proxy's configuration: every `CONDUIT_PROXY_*` environment variable, parsed once
//! at start into [`Config`]. A bad value is refused with the variable's name and the form
//! it accepts. Knows nothing about sockets or serving.

use conduit_api::{control_plane, ports, proxy_env as env};
use std::{collections::HashMap, fmt, net::SocketAddr, str::FromStr, time::Duration};

/// Everything the proxy needs to start, parsed and validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Where redirected inbound connections arrive (`CONDUIT_PROXY_INBOUND_ADDR`).
    pub inbound_addr: Listen,
    /// Where redirected outbound connections arrive (`CONDUIT_PROXY_OUTBOUND_ADDR`).
    pub outbound_addr: Listen,
    /// The admin server: metrics, readiness, liveness, shutdown (`CONDUIT_PROXY_ADMIN_ADDR`).
    pub admin_addr: Listen,
    /// The tap server: live request events over gRPC (`CONDUIT_PROXY_TAP_ADDR`).
    pub tap_addr: Listen,
    /// Destination ports whose traffic is never inspected (`CONDUIT_PROXY_OPAQUE_PORTS`).
    pub opaque_ports: PortSet,
    /// Inbound ports forwarded to the app on loopback rather than to the pod's own address
    /// (`CONDUIT_PROXY_INBOUND_LOOPBACK_PORTS`).
    pub inbound_loopback_ports: PortSet,
    /// How long opaque TCP may be silent both ways before it is closed (`CONDUIT_PROXY_TCP_IDLE_TIMEOUT`).
    pub tcp_idle_timeout: Duration,
    /// How long an HTTP/1 request body may stall (`CONDUIT_PROXY_HTTP1_BODY_IDLE_TIMEOUT`).
    pub http1_body_idle_timeout: Duration,
    /// Most connections one listener holds at once (`CONDUIT_PROXY_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// Consecutive failures that eject an endpoint (`CONDUIT_PROXY_FAILURE_ACCRUAL`; 0: never).
    pub failure_accrual: u32,
    /// How long to wait for a client's first bytes (`CONDUIT_PROXY_DETECT_TIMEOUT`).
    pub detect_timeout: Duration,
    /// How long a client may take to send a connection's first request head (`CONDUIT_PROXY_HEADER_READ_TIMEOUT`).
    pub header_read_timeout: Duration,
    /// How long an HTTP/1 client connection may sit between requests, or take to send a
    /// later request head (`CONDUIT_PROXY_KEEPALIVE_TIMEOUT`).
    pub keepalive_timeout: Duration,
    /// The largest request head accepted, in bytes (`CONDUIT_PROXY_MAX_HEADER_BYTES`).
    pub max_header_bytes: usize,
    /// How long to wait for an upstream TCP connection (`CONDUIT_PROXY_CONNECT_TIMEOUT`).
    pub connect_timeout: Duration,
    /// How long an idle pooled upstream connection is kept (`CONDUIT_PROXY_POOL_IDLE_TIMEOUT`).
    pub pool_idle_timeout: Duration,
    /// Concurrent HTTP/2 streams allowed per client connection (`CONDUIT_PROXY_HTTP2_MAX_CONCURRENT_STREAMS`).
    pub http2_max_concurrent_streams: u32,
    /// Whether HTTP/1 requests to meshed endpoints are carried over one HTTP/2 connection
    /// to the endpoint's proxy (`CONDUIT_PROXY_MESH_HTTP2`). On by default: one mTLS
    /// connection and handshake per pair of proxies rather than one per request in
    /// flight, and in `bench/mtls` 1.12-1.14x the throughput at 0.8x the CPU per request
    /// of HTTP/1 between them, for more instructions per request (its saving is in the
    /// kernel) and a p99 the same within the noise (`docs/benchmarks.md`).
    pub mesh_http2: bool,
    /// How long in-flight work may take to finish after shutdown starts (`CONDUIT_PROXY_SHUTDOWN_GRACE_PERIOD`).
    pub shutdown_grace_period: Duration,
    /// Worker threads (`CONDUIT_PROXY_CORES`); 1 runs everything on one thread.
    pub cores: usize,
    /// Log filter, like `info` or `warn,conduit_proxy=debug` (`CONDUIT_PROXY_LOG`).
    pub log: String,
    /// The pod this proxy serves, stamped on every metric.
    pub pod: PodIdentity,
    /// The control plane's Destination API (`CONDUIT_PROXY_DESTINATION_ADDR`); without it
    /// outbound traffic goes to its original destination.
    pub destination_addr: Option<String>,
    /// How long a first request to a new target waits for discovery (`CONDUIT_PROXY_DISCOVERY_TIMEOUT`).
    pub discovery_timeout: Duration,
    /// Where and how to get a certificate (`CONDUIT_PROXY_IDENTITY_*`); without it the
    /// proxy has no identity.
    pub identity: Option<crate::control::identity::IdentityConfig>,
    /// Who may connect inbound until the control plane says otherwise, or without one
    /// (`CONDUIT_PROXY_DEFAULT_INBOUND_POLICY`).
    pub default_inbound_policy: conduit_policy::DefaultPolicy,
}

/// The workload a proxy belongs to (`CONDUIT_PROXY_POD_NAMESPACE`, `_POD_DEPLOYMENT`, `_POD_NAME`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodIdentity {
    pub namespace: String,
    pub deployment: String,
    pub pod: String,
}

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{var}={value:?} is not valid: expected {expected}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What it held.
    pub value: String,
    /// The accepted form, in words.
    pub expected: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inbound_addr: Listen::dual_stack(SocketAddr::from((
                [0, 0, 0, 0],
                ports::PROXY_INBOUND,
            ))),
            outbound_addr: Listen::dual_stack(SocketAddr::from((
                [127, 0, 0, 1],
                ports::PROXY_OUTBOUND,
            ))),
            admin_addr: Listen::dual_stack(SocketAddr::from(([0, 0, 0, 0], ports::PROXY_ADMIN))),
            tap_addr: Listen::dual_stack(SocketAddr::from(([0, 0, 0, 0], ports::PROXY_TAP))),
            opaque_ports: env::DEFAULT_OPAQUE_PORTS
                .parse()
                .expect("the default opaque ports are a port list"),
            inbound_loopback_ports: PortSet::default(),
            tcp_idle_timeout: Duration::from_secs(3600),
            http1_body_idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            failure_accrual: 7,
            detect_timeout: Duration::from_secs(10),
            header_read_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(3),
            pool_idle_timeout: Duration::from_secs(20),
            http2_max_concurrent_streams: 256,
            mesh_http2: true,
            shutdown_grace_period: Duration::from_secs(30),
            cores: 1,
            log: "info".to_string(),
            pod: PodIdentity::default(),
            destination_addr: None,
            discovery_timeout: Duration::from_millis(500),
            identity: None,
            default_inbound_policy: conduit_policy::DefaultPolicy::AllUnauthenticated,
        }
    }
}

/// Every variable the proxy reads, with its default and meaning, for `--help`-style docs.
pub fn variables() -> impl Iterator<Item = (&'static str, String, &'static str)> {
    let d = Config::default();
    [
        (
            env::INBOUND_ADDR,
            d.inbound_addr,
            "listeners for redirected inbound TCP (comma list)",
        ),
        (
            env::OUTBOUND_ADDR,
            d.outbound_addr,
            "listeners for redirected outbound TCP (comma list)",
        ),
        (
            env::ADMIN_ADDR,
            d.admin_addr,
            "admin server: /metrics /ready /live /shutdown (comma list)",
        ),
        (
            env::TAP_ADDR,
            d.tap_addr,
            "tap server: live request events over gRPC (comma list)",
        ),
    ]
    .into_iter()
    .map(|(name, default, what)| (name, default.to_string(), what))
    .chain(
        VARIABLES
            .iter()
            .map(|&(name, default, what)| (name, default.to_string(), what)),
    )
}

/// The variables whose defaults are written out.
const VARIABLES: &[(&str, &str, &str)] = &[
    (
        env::OPAQUE_PORTS,
        env::DEFAULT_OPAQUE_PORTS,
        "comma list of ports or ranges never inspected, e.g. 25,3306,9000-9010; replaces the default list (none: inspect every port)",
    ),
    (
        env::INBOUND_LOOPBACK_PORTS,
        "(none)",
        "comma list of ports or ranges whose inbound traffic goes to the app on loopback, for apps that listen only there (others go to the pod's own address, so that loopback-only services stay private)",
    ),
    (
        env::TCP_IDLE_TIMEOUT,
        "1h",
        "how long an opaque TCP connection (or an upgraded HTTP one) may move no bytes either way before it is closed",
    ),
    (
        env::HTTP1_BODY_IDLE_TIMEOUT,
        "60s",
        "how long an HTTP/1 client may send no part of a request body; then it gets 408 and the connection is closed",
    ),
    (
        env::MAX_CONNECTIONS,
        "10000",
        "most connections each listener holds at once; more are closed at once and counted (proxy_errors_total{error=\"connection_limit\"})",
    ),
    (
        env::FAILURE_ACCRUAL,
        "7",
        "consecutive failures (5xx, or a failed connect) after which an outbound endpoint leaves its balancer for 1 s, doubling to 60 s while its probe requests fail (0: never)",
    ),
    (
        env::DETECT_TIMEOUT,
        "10s",
        "wait for a client's first bytes before treating the connection as opaque TCP",
    ),
    (
        env::HEADER_READ_TIMEOUT,
        "10s",
        "time a client has to send a complete request head",
    ),
    (
        env::KEEPALIVE_TIMEOUT,
        "60s",
        "idle time allowed between HTTP/1 requests on a client connection",
    ),
    (
        env::MAX_HEADER_BYTES,
        "65536",
        "largest request head accepted; larger gets 431",
    ),
    (
        env::CONNECT_TIMEOUT,
        "3s",
        "time to establish an upstream TCP connection",
    ),
    (
        env::POOL_IDLE_TIMEOUT,
        "20s",
        "how long idle upstream HTTP connections are kept",
    ),
    (
        env::HTTP2_MAX_CONCURRENT_STREAMS,
        "256",
        "concurrent streams per HTTP/2 client connection",
    ),
    (
        env::MESH_HTTP2,
        "true",
        "carry HTTP/1 requests to meshed endpoints over one HTTP/2 connection",
    ),
    (
        env::SHUTDOWN_GRACE_PERIOD,
        "30s",
        "time in-flight work gets to finish after SIGTERM",
    ),
    (env::CORES, "1", "worker threads"),
    (
        env::LOG,
        "info",
        "log filter: a level, or target=level pairs",
    ),
    (
        env::POD_NAMESPACE,
        "(empty)",
        "the pod's namespace, a label on every metric",
    ),
    (
        env::POD_DEPLOYMENT,
        "(empty)",
        "the pod's deployment, a label on every metric",
    ),
    (
        env::POD_NAME,
        "(empty)",
        "the pod's name, a label on every metric",
    ),
    (
        env::DESTINATION_ADDR,
        "(none)",
        "the control plane's Destination API, host:port; outbound traffic is balanced over discovered endpoints",
    ),
    (
        env::IDENTITY_ADDR,
        "(none)",
        "the control plane's Identity API, host:port; the proxy is not ready until it has a certificate",
    ),
    (
        env::IDENTITY_TOKEN_FILE,
        "(none)",
        "the token that proves the pod's ServiceAccount (required with CONDUIT_PROXY_IDENTITY_ADDR)",
    ),
    (
        env::IDENTITY_TRUST_ANCHORS,
        "(none)",
        "the mesh's trust anchors, PEM certificates; peers' certificates must chain to one (required with CONDUIT_PROXY_IDENTITY_ADDR)",
    ),
    (
        env::IDENTITY_SERVICE_ACCOUNT,
        "default",
        "the pod's ServiceAccount; with the namespace it names the proxy's identity",
    ),
    (
        env::TAP_CLIENT_IDENTITY,
        "conduit-controller.conduit.serviceaccount.identity.conduit.cluster.local",
        "with an identity: the only client the tap server lets in, over mesh TLS (the controller's identity)",
    ),
    (
        env::CONTROLLER_IDENTITY,
        "conduit-controller.conduit.serviceaccount.identity.conduit.cluster.local",
        "with an identity: the identity the control plane must prove over TLS before the proxy sends it anything (the controller's)",
    ),
    (
        env::DISCOVERY_TIMEOUT,
        "500ms",
        "how long a first request to a new target waits for discovery before using its original destination",
    ),
    (
        env::DEFAULT_INBOUND_POLICY,
        "all-unauthenticated",
        "who may connect inbound until the control plane's policy arrives (or without a control plane): all-unauthenticated, all-authenticated, cluster-authenticated or deny",
    ),
];

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_vars(std::env::vars())
    }

    /// Reads the configuration from name/value pairs; unknown names are ignored.
    pub fn from_vars(
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, _)| k.starts_with(env::PREFIX))
            .collect();
        let d = Config::default();
        let get = |name: &'static str| vars.get(name).map(|v| (name, v.trim()));
        Ok(Config {
            inbound_addr: parse_or(get(env::INBOUND_ADDR), d.inbound_addr, parse_addr)?,
            outbound_addr: parse_or(get(env::OUTBOUND_ADDR), d.outbound_addr, parse_addr)?,
            admin_addr: parse_or(get(env::ADMIN_ADDR), d.admin_addr, parse_addr)?,
            tap_addr: parse_or(get(env::TAP_ADDR), d.tap_addr, parse_addr)?,
            opaque_ports: parse_or(get(env::OPAQUE_PORTS), d.opaque_ports, parse_ports)?,
            inbound_loopback_ports: parse_or(
                get(env::INBOUND_LOOPBACK_PORTS),
                d.inbound_loopback_ports,
                parse_ports,
            )?,
            tcp_idle_timeout: parse_or(
                get(env::TCP_IDLE_TIMEOUT),
                d.tcp_idle_timeout,
                parse_duration,
            )?,
            http1_body_idle_timeout: parse_or(
                get(env::HTTP1_BODY_IDLE_TIMEOUT),
                d.http1_body_idle_timeout,
                parse_duration,
            )?,
            max_connections: parse_or(get(env::MAX_CONNECTIONS), d.max_connections, |v| {
                parse_in_range(v, 1, 1_000_000)
            })?,
            failure_accrual: parse_or(get(env::FAILURE_ACCRUAL), d.failure_accrual, |v| {
                parse_in_range(v, 0, 1_000_000)
            })?,
            detect_timeout: parse_or(get(env::DETECT_TIMEOUT), d.detect_timeout, parse_duration)?,
            header_read_timeout: parse_or(
                get(env::HEADER_READ_TIMEOUT),
                d.header_read_timeout,
                parse_duration,
            )?,
            keepalive_timeout: parse_or(
                get(env::KEEPALIVE_TIMEOUT),
                d.keepalive_timeout,
                parse_duration,
            )?,
            max_header_bytes: parse_or(get(env::MAX_HEADER_BYTES), d.max_header_bytes, |v| {
                parse_in_range(v, 1024, 16 * 1024 * 1024)
            })?,
            connect_timeout: parse_or(
                get(env::CONNECT_TIMEOUT),
                d.connect_timeout,
                parse_duration,
            )?,
            pool_idle_timeout: parse_or(
                get(env::POOL_IDLE_TIMEOUT),
                d.pool_idle_timeout,
                parse_duration,
            )?,
            http2_max_concurrent_streams: parse_or(
                get(env::HTTP2_MAX_CONCURRENT_STREAMS),
                d.http2_max_concurrent_streams,
                |v| parse_in_range(v, 1, 100_000),
            )?,
            mesh_http2: parse_or(get(env::MESH_HTTP2), d.mesh_http2, parse_bool)?,
            shutdown_grace_period: parse_or(
                get(env::SHUTDOWN_GRACE_PERIOD),
                d.shutdown_grace_period,
                parse_duration,
            )?,
            cores: parse_or(get(env::CORES), d.cores, |v| parse_in_range(v, 1, 1024))?,
            log: get(env::LOG).map_or(d.log, |(_, v)| v.to_string()),
            pod: PodIdentity {
                namespace: text(get(env::POD_NAMESPACE)),
                deployment: text(get(env::POD_DEPLOYMENT)),
                pod: text(get(env::POD_NAME)),
            },
            destination_addr: parse_or(get(env::DESTINATION_ADDR), None, |v| {
                match v.rsplit_once(':') {
                    Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                        Ok(Some(v.to_string()))
                    }
                    _ => Err(format!(
                        "a host:port, like {}",
                        control_plane::destination_addr(control_plane::NAMESPACE)
                    )),
                }
            })?,
            discovery_timeout: parse_or(
                get(env::DISCOVERY_TIMEOUT),
                d.discovery_timeout,
                parse_duration,
            )?,
            identity: identity_config(&get)?,
            default_inbound_policy: parse_or(
                get(env::DEFAULT_INBOUND_POLICY),
                d.default_inbound_policy,
                |v| {
                    v.parse()
                        .map_err(|_| conduit_policy::DefaultPolicy::NAMES.to_string())
                },
            )?,
        })
    }
}

fn identity_config<'a>(
    get: &impl Fn(&'static str) -> Option<(&'static str, &'a str)>,
) -> Result<Option<crate::control::identity::IdentityConfig>, ConfigError> {
    let Some(addr) = parse_or(get(env::IDENTITY_ADDR), None, |v| {
        match v.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Some(v.to_string()))
            }
            _ => Err(format!(
                "a host:port, like {}",
                control_plane::identity_addr(control_plane::NAMESPACE)
            )),
        }
    })?
    else {
        return Ok(None);
    };
    let required = |var: &'static str, what: &str| ConfigError {
        var,
        value: String::new(),
        expected: format!("{what} (required with {})", env::IDENTITY_ADDR),
    };
    let token_file = get(env::IDENTITY_TOKEN_FILE)
        .filter(|(_, v)| !v.is_empty())
        .ok_or_else(|| {
            required(
                env::IDENTITY_TOKEN_FILE,
                "the path of the pod's identity token",
            )
        })?
        .1;
    let namespace = get(env::POD_NAMESPACE)
        .filter(|(_, v)| !v.is_empty())
        .ok_or_else(|| required(env::POD_NAMESPACE, "the pod's namespace"))?
        .1;
    let anchors = get(env::IDENTITY_TRUST_ANCHORS)
        .filter(|(_, v)| !v.trim().is_empty())
        .ok_or_else(|| {
            required(
                env::IDENTITY_TRUST_ANCHORS,
                "the mesh's trust anchors as PEM certificates",
            )
        })?
        .1;
    let bad_anchors = |why: String| ConfigError {
        var: env::IDENTITY_TRUST_ANCHORS,
        value: anchors.chars().take(40).collect::<String>() + "...",
        expected: format!("PEM certificates ({why})"),
    };
    conduit_identity::anchors::root_store(anchors).map_err(|e| bad_anchors(e.to_string()))?;
    let sa = get(env::IDENTITY_SERVICE_ACCOUNT)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
        .unwrap_or("default");
    let identity_var = |var: &'static str| {
        parse_or(
            get(var),
            conduit_identity::controller_identity(control_plane::NAMESPACE),
            |v| match conduit_identity::parse_identity(v) {
                Some(_) => Ok(v.to_string()),
                None => Err(format!(
                    "an identity name, like {}",
                    conduit_identity::controller_identity(control_plane::NAMESPACE)
                )),
            },
        )
    };
    let tap_client_id = identity_var(env::TAP_CLIENT_IDENTITY)?;
    let controller_id = identity_var(env::CONTROLLER_IDENTITY)?;
    Ok(Some(crate::control::identity::IdentityConfig {
        addr,
        token_file: token_file.into(),
        name: conduit_identity::identity_name(sa, namespace),
        trust_anchors_pem: anchors.to_string(),
        tap_client_id,
        controller_id,
    }))
}

fn text(var: Option<(&'static str, &str)>) -> String {
    var.map(|(_, v)| v.to_string()).unwrap_or_default()
}

fn parse_or<T>(
    var: Option<(&'static str, &str)>,
    default: T,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<T, ConfigError> {
    match var {
        None => Ok(default),
        Some((_, "")) => Ok(default),
        Some((name, value)) => parse(value).map_err(|expected| ConfigError {
            var: name,
            value: value.to_string(),
            expected,
        }),
    }
}

fn parse_ports(v: &str) -> Result<PortSet, String> {
    if v == "none" {
        return Ok(PortSet::default());
    }
    v.parse::<PortSet>()
        .map_err(|()| "a comma list of ports or ranges, like 25,3306,9000-9010, or none".into())
}

fn parse_addr(v: &str) -> Result<Listen, String> {
    let addrs: Result<Vec<SocketAddr>, _> = v.split(',').map(|a| a.trim().parse()).collect();
    match addrs {
        Ok(addrs) => Ok(Listen {
            addrs,
            ipv6_optional: false,
        }),
        Err(_) => Err("an IP address and port, like 0.0.0.0:4143, or a comma list of them".into()),
    }
}

/// The addresses one listener binds: one socket each, IPv6 ones IPv6-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listen {
    /// Every address to bind.
    pub addrs: Vec<SocketAddr>,
    /// The default lists add the IPv6 twin of an IPv4 address; on a host without IPv6
    /// those are skipped rather than failing. Addresses given explicitly must bind.
    pub ipv6_optional: bool,
}

impl Listen {
    /// `addr` and its IPv6 twin (`0.0.0.0` becomes `::`, `127.0.0.1` becomes `::1`).
    pub fn dual_stack(addr: SocketAddr) -> Listen {
        let twin = match addr.ip() {
            std::net::IpAddr::V4(v4) if v4.is_loopback() => std::net::Ipv6Addr::LOCALHOST,
            _ => std::net::Ipv6Addr::UNSPECIFIED,
        };
        Listen {
            addrs: vec![addr, SocketAddr::from((twin, addr.port()))],
            ipv6_optional: true,
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addrs: Vec<String> = self.addrs.iter().map(ToString::to_string).collect();
        f.write_str(&addrs.join(","))
    }
}

/// Parses durations like `10s`, `500ms` or `1m`; a bare number is refused because its
/// unit would be a guess.
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let expected = || "a duration like 10s, 500ms or 1m".to_string();
    if v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(expected());
    }
    humantime::parse_duration(v).map_err(|_| expected())
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("true or false".to_string()),
    }
}

fn parse_in_range<T>(v: &str, min: T, max: T) -> Result<T, String>
where
    T: FromStr + PartialOrd + fmt::Display + Copy,
{
    match v.parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("a whole number from {min} to {max}")),
    }
}

/// A set of TCP ports, as a bitmap so that membership is one load on the data path.
#[derive(Clone, PartialEq, Eq)]
pub struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> Self {
        PortSet(Box::new([0; 1024]))
    }
}

impl PortSet {
    /// Whether `port` is in the set.
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port / 64)] & (1 << (port % 64)) != 0
    }

    /// Adds `port` to the set.
    pub fn insert(&mut self, port: u16) {
        self.0[usize::from(port / 64)] |= 1 << (port % 64);
    }

    /// The ports in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u16> + '_ {
        (0..=u16::MAX).filter(|p| self.contains(*p))
    }
}

impl fmt::Debug for PortSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromStr for PortSet {
    type Err = ();

    /// Parses `25,3306,9000-9010`; whitespace around items is ignored, port 0 is refused.
    fn from_str(s: &str) -> Result<Self, ()> {
        let mut set = PortSet::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (lo, hi) = match item.split_once('-') {
                Some((lo, hi)) => (lo.trim(), hi.trim()),
                None => (item, item),
            };
            let lo: u16 = lo.parse().map_err(|_| ())?;
            let hi: u16 = hi.parse().map_err(|_| ())?;
            if lo == 0 || lo > hi {
                return Err(());
            }
            for p in lo..=hi {
                set.insert(p);
            }
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_environment() {
        let c = Config::from_vars(vars(&[])).unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.inbound_addr.to_string(), "0.0.0.0:4143,[::]:4143");
        assert_eq!(c.outbound_addr.to_string(), "127.0.0.1:4140,[::1]:4140");
        assert_eq!(c.admin_addr.to_string(), "0.0.0.0:4191,[::]:4191");
        assert!(c.inbound_addr.ipv6_optional);
        assert_eq!(c.detect_timeout, Duration::from_secs(10));
        assert_eq!(c.cores, 1);
        assert_eq!(
            c.opaque_ports.iter().collect::<Vec<_>>(),
            [25, 587, 3306, 4444, 5432, 6379, 9300, 11211],
            "server-speaks-first protocols' well-known ports"
        );
    }

    #[test]
    fn opaque_ports_replace_the_default_list_and_none_empties_it() {
        let c = Config::from_vars(vars(&[(env::OPAQUE_PORTS, "7000")])).unwrap();
        assert_eq!(c.opaque_ports.iter().collect::<Vec<_>>(), [7000]);
        let c = Config::from_vars(vars(&[(env::OPAQUE_PORTS, "none")])).unwrap();
        assert_eq!(c.opaque_ports.iter().count(), 0);
    }

    #[test]
    fn reads_every_documented_variable() {
        let c = Config::from_vars(vars(&[
            (env::INBOUND_ADDR, "[::]:5143"),
            (env::OUTBOUND_ADDR, "127.0.0.1:5140, [::1]:5140"),
            (env::ADMIN_ADDR, "127.0.0.1:5191"),
            (env::OPAQUE_PORTS, "25, 3306,9000-9002"),
            (env::DETECT_TIMEOUT, "250ms"),
            (env::HEADER_READ_TIMEOUT, "2s"),
            (env::KEEPALIVE_TIMEOUT, "90s"),
            (env::MAX_HEADER_BYTES, "4096"),
            (env::CONNECT_TIMEOUT, "1s"),
            (env::POOL_IDLE_TIMEOUT, "1m"),
            (env::HTTP2_MAX_CONCURRENT_STREAMS, "10"),
            (env::MESH_HTTP2, "false"),
            (env::SHUTDOWN_GRACE_PERIOD, "5s"),
            (env::CORES, "2"),
            (env::LOG, "debug"),
            (env::POD_NAMESPACE, "emojivoto"),
            (env::POD_DEPLOYMENT, "web"),
            (env::POD_NAME, "web-1"),
            (env::DESTINATION_ADDR, "conduit-destination.conduit:8086"),
            (env::DISCOVERY_TIMEOUT, "1s"),
            (env::IDENTITY_ADDR, "conduit-identity.conduit:8086"),
            (env::IDENTITY_TOKEN_FILE, "/var/run/conduit/token"),
            (env::IDENTITY_SERVICE_ACCOUNT, "web"),
            (env::IDENTITY_TRUST_ANCHORS, anchor_pem()),
            ("UNRELATED", "x"),
        ]))
        .unwrap();
        assert_eq!(c.inbound_addr.to_string(), "[::]:5143");
        assert!(
            !c.inbound_addr.ipv6_optional,
            "explicit addresses must bind"
        );
        assert_eq!(c.outbound_addr.addrs.len(), 2);
        assert_eq!(
            c.opaque_ports.iter().collect::<Vec<_>>(),
            [25, 3306, 9000, 9001, 9002]
        );
        assert_eq!(c.detect_timeout, Duration::from_millis(250));
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(90));
        assert_eq!(c.max_header_bytes, 4096);
        assert_eq!(c.pool_idle_timeout, Duration::from_secs(60));
        assert!(!c.mesh_http2);
        assert_eq!(c.http2_max_concurrent_streams, 10);
        assert_eq!(c.cores, 2);
        assert_eq!(c.log, "debug");
        assert_eq!(c.pod.deployment, "web");
        assert_eq!(
            c.destination_addr.as_deref(),
            Some("conduit-destination.conduit:8086")
        );
        assert_eq!(c.discovery_timeout, Duration::from_secs(1));
        let identity = c.identity.unwrap();
        assert_eq!(
            identity.name,
            "web.emojivoto.serviceaccount.identity.conduit.cluster.local"
        );
        assert_eq!(identity.token_file.to_str(), Some("/var/run/conduit/token"));
        assert_eq!(
            identity.tap_client_id,
            "conduit-controller.conduit.serviceaccount.identity.conduit.cluster.local",
            "the default control plane's controller"
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_accepted_form() {
        let cases = [
            (env::DETECT_TIMEOUT, "10", "a duration like 10s"),
            (env::DETECT_TIMEOUT, "soon", "a duration like 10s"),
            (env::OPAQUE_PORTS, "25,http", "a comma list of ports"),
            (env::OPAQUE_PORTS, "90-80", "a comma list of ports"),
            (env::OPAQUE_PORTS, "0", "a comma list of ports"),
            (env::INBOUND_ADDR, "4143", "an IP address and port"),
            (env::CORES, "0", "a whole number from 1 to 1024"),
            (env::MAX_HEADER_BYTES, "12", "a whole number from 1024"),
            (env::DESTINATION_ADDR, "controller", "a host:port"),
            (env::IDENTITY_ADDR, "identity", "a host:port"),
        ];
        for (var, value, expected) in cases {
            let err = Config::from_vars(vars(&[(var, value)])).unwrap_err();
            assert_eq!(err.var, var);
            let msg = err.to_string();
            assert!(msg.starts_with(&format!("{var}=")), "{msg}");
            assert!(msg.contains(expected), "{msg} should contain {expected}");
        }
    }

    #[test]
    fn identity_needs_a_token_and_a_namespace() {
        let err = Config::from_vars(vars(&[(env::IDENTITY_ADDR, "id:8086")])).unwrap_err();
        assert_eq!(err.var, env::IDENTITY_TOKEN_FILE);
        assert!(
            err.to_string()
                .contains("required with CONDUIT_PROXY_IDENTITY_ADDR"),
            "{err}"
        );
        let err = Config::from_vars(vars(&[
            (env::IDENTITY_ADDR, "id:8086"),
            (env::IDENTITY_TOKEN_FILE, "/t"),
        ]))
        .unwrap_err();
        assert_eq!(err.var, env::POD_NAMESPACE);
        let with = |anchors: &'static str| {
            Config::from_vars(vars(&[
                (env::IDENTITY_ADDR, "id:8086"),
                (env::IDENTITY_TOKEN_FILE, "/t"),
                (env::POD_NAMESPACE, "emojivoto"),
                (env::IDENTITY_TRUST_ANCHORS, anchors),
            ]))
        };
        let err = with("").unwrap_err();
        assert_eq!(err.var, env::IDENTITY_TRUST_ANCHORS);
        assert!(err.to_string().contains("required with"), "{err}");
        let err = with("not a certificate").unwrap_err();
        assert!(err.to_string().contains("hold no certificate"), "{err}");
        let err =
            with("-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n").unwrap_err();
        assert!(err.to_string().contains("PEM certificates"), "{err}");
        let c = with(anchor_pem()).unwrap().identity.unwrap();
        assert_eq!(c.trust_anchors_pem.trim(), anchor_pem().trim());
    }

    /// A real trust anchor, made once.
    fn anchor_pem() -> &'static str {
        static PEM: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        PEM.get_or_init(|| {
            let d = Duration::from_secs(3600);
            conduit_identity::ca::generate(d, d).unwrap().anchor_pem
        })
    }

    #[test]
    fn empty_values_mean_default() {
        let c = Config::from_vars(vars(&[(env::DETECT_TIMEOUT, "")])).unwrap();
        assert_eq!(c.detect_timeout, Duration::from_secs(10));
    }

    #[test]
    fn port_set_membership() {
        let set: PortSet = "1,65535,100-101".parse().unwrap();
        assert!(set.contains(1) && set.contains(65535) && set.contains(100) && set.contains(101));
        assert!(!set.contains(2) && !set.contains(102) && !set.contains(0));
        assert_eq!(format!("{set:?}"), "{1, 100, 101, 65535}");
    }
}
