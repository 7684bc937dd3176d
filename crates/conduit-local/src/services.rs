//! Services as the pods see them: each Service's endpoints (the ready pods it selects, at
//! the port it targets), and the view every pod shares of them: the current rules and
//! hosts entries, and the pods that applied them and must get every change. One lock
//! orders "a pod applies the rules" against "the rules change", so that no pod is left
//! with stale ones. Knows nothing of how pods are run; the rules themselves are `net`'s.

use crate::{
    net,
    spec::{DeploymentSpec, ServiceSpec, TargetPort},
    state::{EndpointState, PodState, ServicePortState, ServiceState},
};
use conduit_netns::NetNs;
use parking_lot::Mutex;
use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf, sync::Arc};
use tracing::warn;

/// The view, shared by the supervisor and every pod.
pub type SharedView = Arc<tokio::sync::Mutex<ServiceView>>;

/// The current Service rules and hosts entries, applied to each pod once its init
/// containers have run.
pub struct ServiceView {
    /// The Services the rules were made from.
    pub services: Vec<ServiceState>,
    rules: String,
    /// Pods that have applied rules and must get every change: namespace, pod, and the
    /// directory of its hosts file.
    applied: Vec<(Arc<NetNs>, Arc<Mutex<PodState>>, PathBuf)>,
}

impl ServiceView {
    /// A view of no Services, shared.
    pub fn shared() -> SharedView {
        Arc::new(tokio::sync::Mutex::new(ServiceView {
            services: Vec::new(),
            rules: net::service_rules(&[]),
            applied: Vec::new(),
        }))
    }

    /// Applies the current rules in the pod `ns`, which then gets every change; a pod
    /// whose rules could not be applied is left out (and logged).
    pub async fn apply(&mut self, ns: Arc<NetNs>, pod: Arc<Mutex<PodState>>, etc: PathBuf) {
        let (inside, rules) = (ns.clone(), self.rules.clone());
        match tokio::task::spawn_blocking(move || net::apply_service_rules(&inside, &rules)).await {
            Ok(Ok(())) => self.applied.push((ns, pod, etc)),
            Ok(Err(e)) => warn!(error = %e, "applying Service rules failed"),
            Err(e) => warn!(error = %e, "applying Service rules failed"),
        }
    }

    /// Forgets the pod of namespace `ns`, which is going away.
    pub fn forget(&mut self, ns: &str) {
        self.applied.retain(|(n, _, _)| n.name() != ns);
    }

    /// Makes `services` current: when they changed, rewrites every pod's rules (and hosts
    /// files, when names changed).
    pub async fn update(&mut self, services: &[ServiceState]) {
        if self.services == services {
            return;
        }
        let names_changed = names(&self.services) != names(services);
        self.rules = net::service_rules(services);
        self.services = services.to_vec();
        for (ns, pod, etc) in self.applied.clone() {
            let rules = self.rules.clone();
            let services = self.services.clone();
            let result = tokio::task::spawn_blocking(move || {
                if names_changed {
                    let text = net::hosts_file(&pod.lock().clone(), &services);
                    net::write_in_place(&etc.join("hosts"), &text)?;
                }
                net::apply_service_rules(&ns, &rules)
            })
            .await;
            if let Ok(Err(error)) | Err(error) = result.map_err(std::io::Error::other) {
                warn!(%error, "updating a pod's Service rules failed");
            }
        }
    }
}

/// Every Service's endpoints, computed from `pods` as they are now (`deployments` by
/// namespace and name, for the ports Services name).
pub fn endpoints(
    services: &[(ServiceSpec, Ipv4Addr)],
    pods: &[PodState],
    deployments: &BTreeMap<(String, String), &DeploymentSpec>,
) -> Vec<ServiceState> {
    services
        .iter()
        .map(|(s, vip)| ServiceState {
            namespace: s.namespace.clone(),
            name: s.name.clone(),
            vip: *vip,
            ports: s
                .ports
                .iter()
                .map(|p| ServicePortState {
                    name: p.name.clone(),
                    port: p.port,
                    endpoints: pods
                        .iter()
                        .filter(|pod| pod.ready && pod.namespace == s.namespace)
                        .filter(|pod| s.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v)))
                        .filter_map(|pod| {
                            let d = deployments
                                .get(&(pod.namespace.clone(), pod.deployment.clone()))?;
                            Some(EndpointState {
                                pod: pod.name.clone(),
                                ip: pod.ip,
                                port: target_port(&p.target, d)?,
                            })
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect()
}

fn names(services: &[ServiceState]) -> Vec<(&str, &str, Ipv4Addr)> {
    services
        .iter()
        .map(|s| (s.namespace.as_str(), s.name.as_str(), s.vip))
        .collect()
}

fn target_port(target: &TargetPort, d: &DeploymentSpec) -> Option<u16> {
    match target {
        TargetPort::Number(n) => Some(*n),
        TargetPort::Named(name) => d.containers.iter().find_map(|c| c.ports.get(name).copied()),
    }
}
