//! Where one local runtime keeps its things: the run directory (desired spec, observed
//! state, lock, logs, hosts files, the control plane's API socket), the names of the
//! namespaces and links it makes, and the addresses of its networks and of the control
//! plane on them. Everything the runtime creates is named from here, so that `down` can
//! find it all, also after a crash; and both `up` and the supervisor read it, so neither
//! needs the other for these facts.

use std::{
    hash::{Hash, Hasher},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

/// The default run directory (`CONDUIT_LOCAL_DIR` overrides it).
pub const DEFAULT_DIR: &str = "/var/run/conduit-local";

/// The node's address on the pod network: the gateway, and where the control plane listens.
pub const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
/// Pods get addresses in this /16 (the benchmarking range, never a real network).
pub const POD_NETWORK: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 0);
/// Services get virtual IPs in this /16.
pub const SERVICE_NETWORK: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 0);

/// The paths and names of one runtime instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    dir: PathBuf,
    prefix: String,
}

impl Layout {
    /// The runtime whose run directory is `dir`. The default directory's objects are
    /// named `cdl-*`; another directory's get a short hash, so instances never collide.
    pub fn new(dir: impl Into<PathBuf>) -> Layout {
        let dir = dir.into();
        let prefix = if dir == Path::new(DEFAULT_DIR) {
            "cdl".to_string()
        } else {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            dir.hash(&mut h);
            format!("cdl{:04x}", h.finish() & 0xffff)
        };
        Layout { dir, prefix }
    }

    /// The runtime named by `CONDUIT_LOCAL_DIR`, or the default one.
    pub fn from_env() -> Layout {
        Layout::new(
            std::env::var_os("CONDUIT_LOCAL_DIR")
                .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from),
        )
    }

    /// The run directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The prefix of every namespace this runtime makes.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What `up` asked for: the merged spec of every manifest (JSON).
    pub fn desired(&self) -> PathBuf {
        self.dir.join("desired.json")
    }

    /// Where `up` leaves the user's own trust anchor and issuer for the supervisor.
    pub fn user_trust(&self) -> PathBuf {
        self.dir().join("identity-user")
    }

    /// Where `up` leaves the metrics' source the runtime was started with (JSON,
    /// [`crate::prometheus::Metrics`]).
    pub fn metrics(&self) -> PathBuf {
        self.dir.join("metrics.json")
    }

    /// What the supervisor observes (JSON), rewritten on every change.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// Held by `up` and `down` so that two of them never interleave.
    pub fn lock(&self) -> PathBuf {
        self.dir.join("lock")
    }

    /// The supervisor's pid.
    pub fn daemon_pid(&self) -> PathBuf {
        self.dir.join("daemon.pid")
    }

    /// Process logs: `<namespace>_<pod>_<container>.log`, and the supervisor's own.
    pub fn logs(&self) -> PathBuf {
        self.dir.join("logs")
    }

    /// The log of container `container` of pod `namespace/pod`.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.logs()
            .join(format!("{namespace}_{pod}_{container}.log"))
    }

    /// The control plane's API socket, which `conduit` commands talk to.
    pub fn api_socket(&self) -> PathBuf {
        self.dir.join("api.sock")
    }

    /// Per-pod directories of `hosts` and `resolv.conf`, bound over those in `/etc` in
    /// the pod's processes.
    pub fn etc(&self) -> PathBuf {
        self.dir.join("etc")
    }

    /// The network namespace that plays the node: it holds the bridge and the supervisor.
    pub fn node_netns(&self) -> String {
        format!("{}-node", self.prefix)
    }

    /// The network namespace of the pod with index `n`.
    pub fn pod_netns(&self, n: u32) -> String {
        format!("{}-p{n}", self.prefix)
    }

    /// Whether `name` is a namespace of this runtime.
    pub fn owns_netns(&self, name: &str) -> bool {
        name.strip_prefix(&self.prefix).is_some_and(|rest| {
            rest == "-node"
                || rest
                    .strip_prefix("-p")
                    .is_some_and(|n| n.parse::<u32>().is_ok())
        })
    }
}

/// The address of pod index `n` (1-based): 198.18.0.2, 198.18.0.3, ...
pub fn pod_ip(n: u32) -> Ipv4Addr {
    offset(POD_NETWORK, n + 1)
}

/// The virtual IP of service index `n` (1-based): 198.19.0.1, ...
pub fn service_ip(n: u32) -> Ipv4Addr {
    offset(SERVICE_NETWORK, n)
}

fn offset(base: Ipv4Addr, n: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(base) + (n & 0xffff))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_owned_and_distinct_per_directory() {
        let default = Layout::new(DEFAULT_DIR);
        assert_eq!(default.node_netns(), "cdl-node");
        assert!(default.owns_netns("cdl-p12") && default.owns_netns("cdl-node"));
        assert!(
            !default.owns_netns("cdl-pods")
                && !default.owns_netns("ct1-lan")
                && !default.owns_netns("cdl1234-p1")
        );
        let other = Layout::new("/tmp/x");
        assert_ne!(other.prefix(), default.prefix());
        assert!(other.owns_netns(&other.pod_netns(3)));
        assert!(!default.owns_netns(&other.pod_netns(3)));
    }

    #[test]
    fn addresses_come_from_the_benchmarking_ranges() {
        assert_eq!(pod_ip(1).to_string(), "198.18.0.2");
        assert_eq!(pod_ip(300).to_string(), "198.18.1.45");
        assert_eq!(service_ip(1).to_string(), "198.19.0.1");
    }
}
