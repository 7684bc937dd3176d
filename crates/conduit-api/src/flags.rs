//! The controller's command-line flags, defined once: `conduit-controller` declares its
//! parser with these names (`#[arg(long = flags::API_ADDR.name())]`) and every launcher
//! (`conduit install`'s Deployment, the local runtime's supervisor, tests) renders its
//! arguments from them. A flag exists here or nowhere: the types cannot be made outside
//! this module, a switch cannot be given a value, and the controller's tests check that
//! its parser declares exactly [`all`].

use std::fmt;

/// A flag that takes a value: `--name=value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flag(&'static str);

/// A flag that is on when given: `--name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Switch(&'static str);

impl fmt::Display for Flag {
    /// `--name`, as messages name the flag.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{}", self.0)
    }
}

impl fmt::Display for Switch {
    /// `--name`, as messages name the switch.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{}", self.0)
    }
}

impl Flag {
    /// The long name, without `--`.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// The one argument that gives this flag `value`.
    pub fn arg(self, value: impl fmt::Display) -> String {
        format!("{self}={value}")
    }
}

impl Switch {
    /// The long name, without `--`.
    pub const fn name(self) -> &'static str {
        self.0
    }

    /// The argument that turns this switch on.
    pub fn arg(self) -> String {
        self.to_string()
    }
}

/// Discover workloads from the local runtime's state file (a path).
pub const LOCAL_STATE: Flag = Flag("local-state");
/// Discover workloads from the Kubernetes API.
pub const KUBERNETES: Switch = Switch("kubernetes");
/// Kubernetes: publish the trust anchors into every namespace.
pub const PUBLISH_TRUST_ANCHORS: Switch = Switch("publish-trust-anchors");
/// Kubernetes: the control plane's namespace.
pub const CONTROL_PLANE_NAMESPACE: Flag = Flag("control-plane-namespace");
/// The environment variable [`CONTROL_PLANE_NAMESPACE`] falls back to.
pub const CONTROL_PLANE_NAMESPACE_ENV: &str = "CONDUIT_NAMESPACE";
/// Kubernetes: the audience of proxies' ServiceAccount tokens.
pub const TOKEN_AUDIENCE: Flag = Flag("token-audience");
/// Serve the HTTP API on this unix socket.
pub const API_SOCKET: Flag = Flag("api-socket");
/// Serve the HTTP API on this TCP address: TLS, every request authenticated and
/// authorized through the Kubernetes API (needs [`KUBERNETES`] and [`API_TLS_DIR`]).
pub const API_ADDR: Flag = Flag("api-addr");
/// The API's serving certificate on TCP: a directory with tls.crt and tls.key.
pub const API_TLS_DIR: Flag = Flag("api-tls-dir");
/// Serve the gRPC APIs (Destination, InboundPolicy, Identity) on this address.
pub const DESTINATION_ADDR: Flag = Flag("destination-addr");
/// How often to scrape every proxy's metrics (a duration).
pub const SCRAPE_INTERVAL: Flag = Flag("scrape-interval");
/// [`SCRAPE_INTERVAL`]'s default, which the scrape configuration `conduit install` emits
/// for Prometheus keeps too.
pub const DEFAULT_SCRAPE_INTERVAL: &str = "10s";
/// How much metrics history to keep in memory (a duration); with [`PROMETHEUS_URL`], the
/// longest window a query may ask for.
pub const RETENTION: Flag = Flag("retention");
/// A Prometheus that scrapes the proxies (an `http://` URL): the metrics API queries it
/// instead of keeping history in memory.
pub const PROMETHEUS_URL: Flag = Flag("prometheus-url");
/// How long a query to that Prometheus may take (a duration).
pub const PROMETHEUS_TIMEOUT: Flag = Flag("prometheus-timeout");
/// The issuer certificate (PEM file) that signs proxies' certificates.
pub const IDENTITY_ISSUER_CERT: Flag = Flag("identity-issuer-cert");
/// The issuer's private key (PEM file).
pub const IDENTITY_ISSUER_KEY: Flag = Flag("identity-issuer-key");
/// The mesh's trust anchors (PEM file).
pub const IDENTITY_TRUST_ANCHORS: Flag = Flag("identity-trust-anchors");
/// The local runtime's token secret (a file), which proves pods' identities.
pub const LOCAL_TOKEN_SECRET: Flag = Flag("local-token-secret");
/// How long a proxy's certificate is valid (a duration).
pub const IDENTITY_LIFETIME: Flag = Flag("identity-lifetime");
/// The gRPC port: calls in flight on one connection; more are refused (RESOURCE_EXHAUSTED).
pub const GRPC_MAX_STREAMS_PER_CONNECTION: Flag = Flag("grpc-max-streams-per-connection");
/// The gRPC port: watches one client (identity, else address) may hold open.
pub const GRPC_MAX_WATCHES_PER_CLIENT: Flag = Flag("grpc-max-watches-per-client");
/// The cluster's default inbound policy.
pub const DEFAULT_INBOUND_POLICY: Flag = Flag("default-inbound-policy");
/// The cluster's networks (comma-separated CIDRs).
pub const CLUSTER_NETWORKS: Flag = Flag("cluster-networks");
/// The injector: the proxy's image.
pub const PROXY_IMAGE: Flag = Flag("proxy-image");
/// The injector: the proxy as a native sidecar (`true`) or the first container (`false`).
pub const PROXY_NATIVE_SIDECAR: Flag = Flag("proxy-native-sidecar");
/// The injector: the proxy's log filter.
pub const PROXY_LOG_LEVEL: Flag = Flag("proxy-log-level");
/// Serve the proxy injector (HTTPS) on this address.
pub const WEBHOOK_ADDR: Flag = Flag("webhook-addr");
/// The injector's certificate: a directory with `tls.crt` and `tls.key`.
pub const WEBHOOK_TLS_DIR: Flag = Flag("webhook-tls-dir");

/// Every flag that takes a value.
pub const FLAGS: &[Flag] = &[
    LOCAL_STATE,
    CONTROL_PLANE_NAMESPACE,
    TOKEN_AUDIENCE,
    API_SOCKET,
    API_ADDR,
    API_TLS_DIR,
    DESTINATION_ADDR,
    SCRAPE_INTERVAL,
    RETENTION,
    PROMETHEUS_URL,
    PROMETHEUS_TIMEOUT,
    IDENTITY_ISSUER_CERT,
    IDENTITY_ISSUER_KEY,
    IDENTITY_TRUST_ANCHORS,
    LOCAL_TOKEN_SECRET,
    IDENTITY_LIFETIME,
    GRPC_MAX_STREAMS_PER_CONNECTION,
    GRPC_MAX_WATCHES_PER_CLIENT,
    DEFAULT_INBOUND_POLICY,
    CLUSTER_NETWORKS,
    PROXY_IMAGE,
    PROXY_NATIVE_SIDECAR,
    PROXY_LOG_LEVEL,
    WEBHOOK_ADDR,
    WEBHOOK_TLS_DIR,
];

/// Every switch.
pub const SWITCHES: &[Switch] = &[KUBERNETES, PUBLISH_TRUST_ANCHORS];

/// The long names of every flag and switch of the controller.
pub fn all() -> impl Iterator<Item = &'static str> {
    FLAGS
        .iter()
        .map(|f| f.name())
        .chain(SWITCHES.iter().map(|s| s.name()))
}

/// The proxy's own command line: `conduit-proxy init`, which the injector's init
/// container and the test kit run, and `conduit-proxy await`, the postStart hook the
/// injector adds. The proxy's parser declares exactly these.
pub mod proxy {
    use super::{Flag, Switch};

    /// The proxy's binary, as injected pods run it.
    pub const BINARY: &str = "conduit-proxy";
    /// The subcommand that writes the pod's redirect rules.
    pub const INIT: &str = "init";
    /// The subcommand that waits until the pod's proxy is ready.
    pub const AWAIT: &str = "await";

    /// init: the UID the proxy runs as; its own traffic is not redirected.
    pub const PROXY_UID: Flag = Flag("proxy-uid");
    /// init: the proxy's inbound port.
    pub const INBOUND_PORT: Flag = Flag("inbound-port");
    /// init: the proxy's outbound port.
    pub const OUTBOUND_PORT: Flag = Flag("outbound-port");
    /// init: inbound ports not to redirect (ports and ranges).
    pub const SKIP_INBOUND_PORTS: Flag = Flag("skip-inbound-ports");
    /// init: outbound ports not to redirect (ports and ranges).
    pub const SKIP_OUTBOUND_PORTS: Flag = Flag("skip-outbound-ports");
    /// init: leave IPv6 alone.
    pub const NO_IPV6: Switch = Switch("no-ipv6");
    /// init: print the rules instead of writing them.
    pub const DRY_RUN: Switch = Switch("dry-run");
    /// Every flag and switch of `init`.
    pub const INIT_ARGS: &[&str] = &[
        PROXY_UID.name(),
        INBOUND_PORT.name(),
        OUTBOUND_PORT.name(),
        SKIP_INBOUND_PORTS.name(),
        SKIP_OUTBOUND_PORTS.name(),
        NO_IPV6.name(),
        DRY_RUN.name(),
    ];

    /// await: the proxy's admin address, whose readiness is polled.
    pub const ADMIN_ADDR: Flag = Flag("admin-addr");
    /// await: how long to wait (a duration).
    pub const TIMEOUT: Flag = Flag("timeout");
    /// Every flag of `await`.
    pub const AWAIT_ARGS: &[&str] = &[ADMIN_ADDR.name(), TIMEOUT.name()];
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn arguments_are_rendered_as_the_controller_parses_them() {
        assert_eq!(API_ADDR.arg("0.0.0.0:8085"), "--api-addr=0.0.0.0:8085");
        assert_eq!(KUBERNETES.arg(), "--kubernetes");
        assert_eq!(
            format!("give {LOCAL_STATE} FILE"),
            "give --local-state FILE"
        );
    }

    #[test]
    fn names_are_unique() {
        let names: Vec<&str> = all().collect();
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(names.len(), unique.len(), "{names:?}");
    }
}
