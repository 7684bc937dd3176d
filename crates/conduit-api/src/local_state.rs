//! The local runtime's state file (`state.json` in its run directory): what its
//! supervisor observes, rewritten after every change. `conduit-local` writes it and reads
//! it (`status`, and `up` while it waits); the control plane's local discovery reads it.
//! This module is that contract and nothing else: the types, and the two functions that
//! write and read them. Writes are atomic (a temporary file renamed over the old one), so
//! a reader never sees half a state.
//!
//! The file also carries the policy resources, ServiceProfiles and HTTPRoutes the control
//! plane serves, whose types belong to `conduit-k8s`, which builds on this crate; so
//! [`State`] takes them as parameters, and the writer and the reader name the same ones.

use crate::inbound::{DefaultPolicy, Probe};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::{collections::BTreeMap, io, net::Ipv4Addr, path::Path};

/// The whole observed state of one runtime.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct State<Policy, Profile, HttpRoute> {
    /// The supervisor's process id.
    pub daemon_pid: u32,
    /// Incremented on every write, so readers can tell a change.
    pub generation: u64,
    /// The namespace that holds the bridge and the control plane.
    pub node_netns: String,
    /// Every pod, in the order they were created.
    pub pods: Vec<PodState>,
    /// Every Service, with its ready endpoints.
    pub services: Vec<ServiceState>,
    /// The control plane's processes, supervised like a pod's containers.
    pub control_plane: Vec<ContainerState>,
    /// The authorization policy the control plane serves.
    #[serde(default)]
    pub policy: Policy,
    /// The ServiceProfiles the control plane serves.
    // A function rather than `default`, which would ask `Profile: Default` of the reader.
    #[serde(default = "Vec::new")]
    pub profiles: Vec<Profile>,
    /// The HTTPRoutes the control plane serves.
    #[serde(default = "Vec::new")]
    pub http_routes: Vec<HttpRoute>,
}

/// No runtime: what a reader sees before the first write.
impl<Policy: Default, Profile, HttpRoute> Default for State<Policy, Profile, HttpRoute> {
    fn default() -> Self {
        State {
            daemon_pid: 0,
            generation: 0,
            node_netns: String::new(),
            pods: Vec::new(),
            services: Vec::new(),
            control_plane: Vec::new(),
            policy: Policy::default(),
            profiles: Vec::new(),
            http_routes: Vec::new(),
        }
    }
}

/// One pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    pub namespace: String,
    pub name: String,
    pub deployment: String,
    pub index: u32,
    pub ip: Ipv4Addr,
    pub netns: String,
    pub meshed: bool,
    /// Its ServiceAccount, which names its identity.
    #[serde(default)]
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// Its containers' named ports (what Servers may name).
    #[serde(default)]
    pub named_ports: BTreeMap<String, u16>,
    /// The HTTP paths its readiness probes GET, which policy always allows.
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// Its template's default inbound policy, if annotated.
    #[serde(default)]
    pub default_policy: Option<DefaultPolicy>,
    /// `Pending` (initialising), `Running`, or `Failed` (an init container failed).
    pub phase: String,
    /// Every container runs and passes its readiness probe.
    pub ready: bool,
    pub containers: Vec<ContainerState>,
    /// Why the pod is not ready, in words, when it is not.
    pub message: String,
}

/// One container: a supervised process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerState {
    pub name: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub ready: bool,
    pub restarts: u32,
    /// How the last run ended, like `exited with status 1`.
    pub last_exit: Option<String>,
    /// Where its output goes.
    pub log: String,
}

/// One Service and its ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceState {
    pub namespace: String,
    pub name: String,
    pub vip: Ipv4Addr,
    pub ports: Vec<ServicePortState>,
}

/// One Service port and where it leads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortState {
    pub name: Option<String>,
    pub port: u16,
    pub endpoints: Vec<EndpointState>,
}

/// A ready pod behind a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointState {
    pub pod: String,
    pub ip: Ipv4Addr,
    pub port: u16,
}

impl<Policy, Profile, HttpRoute> State<Policy, Profile, HttpRoute> {
    /// The pods that are not ready, with why.
    pub fn unready(&self) -> Vec<&PodState> {
        self.pods.iter().filter(|p| !p.ready).collect()
    }
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads JSON from `path`; `Ok(None)` when there is no file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state without policy resources, profiles or routes.
    type Plain = State<(), (), ()>;

    #[test]
    fn state_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("cdl-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(read_json::<Plain>(&path).unwrap(), None);
        let state = Plain {
            daemon_pid: 7,
            generation: 3,
            ..State::default()
        };
        write_json(&path, &state).unwrap();
        assert_eq!(read_json::<Plain>(&path).unwrap(), Some(state));
        assert!(!path.with_extension("tmp").exists());
        std::fs::write(&path, b"{not json").unwrap();
        let err = read_json::<Plain>(&path).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
