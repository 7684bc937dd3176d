//! What the supervisor observes, written as JSON to the run directory after every change
//! and read by `status`, by `up` while it waits, and by the control plane's discovery.
//! Writes are atomic (a temporary file renamed over the old one), so a reader never sees
//! half a state.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::{collections::BTreeMap, io, net::Ipv4Addr, path::Path};

/// The whole observed state of one runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The supervisor's process id.
    pub daemon_pid: u32,
    /// Incremented on every write, so readers can tell a change.
    pub generation: u64,
    /// The namespace that holds the bridge and the control plane.
    pub node_netns: String,
    pub pods: Vec<PodState>,
    pub services: Vec<ServiceState>,
    /// The control plane's processes, supervised like a pod's containers.
    pub control_plane: Vec<ContainerState>,
    /// The authorization policy the control plane serves.
    #[serde(default)]
    pub policy: conduit_k8s::policy::Resources,
    /// The ServiceProfiles the control plane serves.
    #[serde(default)]
    pub profiles: Vec<conduit_k8s::profile::ServiceProfile>,
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
    pub probes: Vec<conduit_policy::Probe>,
    /// Its template's default inbound policy, if annotated.
    #[serde(default)]
    pub default_policy: Option<conduit_policy::DefaultPolicy>,
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

impl State {
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

    #[test]
    fn state_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("cdl-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        assert_eq!(read_json::<State>(&path).unwrap(), None);
        let state = State {
            daemon_pid: 7,
            generation: 3,
            ..State::default()
        };
        write_json(&path, &state).unwrap();
        assert_eq!(read_json::<State>(&path).unwrap(), Some(state));
        assert!(!path.with_extension("tmp").exists());
        std::fs::write(&path, b"{not json").unwrap();
        let err = read_json::<State>(&path).unwrap_err().to_string();
        assert!(err.contains("state.json"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
