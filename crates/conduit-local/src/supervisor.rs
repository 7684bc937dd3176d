//! The reconcile loop, the local runtime's node agent: turns the desired spec into pods
//! (one task each, [`crate::pod`]) and Services (virtual IPs, and their endpoints from the
//! ready pods, [`crate::services`]), keeps the control plane running
//! ([`crate::control_plane`]), and writes what it observes to the state file after every
//! change. `SIGHUP` re-reads the desired spec; `SIGTERM` tears everything down. Knows
//! nothing of how a pod starts its containers or how a process is run.

use crate::{
    control_plane::ControlPlane,
    identity::LocalIdentity,
    layout::{pod_ip, service_ip, Layout},
    pod::PodCtx,
    prometheus::Metrics,
    services::{self, ServiceView, SharedView},
    spec::{AppSpec, DeploymentSpec, ProbeAction, ServiceSpec},
    state::{self, ContainerState, PodState, ServiceState, State},
};
use conduit_netns::NetNs;
use parking_lot::Mutex;
use std::{collections::BTreeMap, sync::Arc, time::Duration};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
    task::JoinHandle,
};
use tracing::{info, warn};

/// How long a removed pod keeps running after leaving its Services' endpoints.
const TERMINATION_DELAY: Duration = Duration::from_secs(2);

/// A pod the supervisor runs.
struct Pod {
    deployment: DeploymentSpec,
    state: Arc<Mutex<PodState>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The supervisor: what runs, and what it last wrote.
pub struct Supervisor {
    layout: Layout,
    node: Arc<NetNs>,
    desired: AppSpec,
    pods: Vec<Pod>,
    /// Services with their virtual IPs, by (namespace, name).
    services: Vec<(ServiceSpec, std::net::Ipv4Addr)>,
    view: SharedView,
    next_pod: u32,
    next_vip: u32,
    written: Option<State>,
    generation: u64,
    /// The trust files and the token secret of this runtime's identities.
    identity: Arc<LocalIdentity>,
    /// The control plane, supervised like a pod's containers but in the node namespace.
    control_plane: Option<ControlPlane>,
    /// Where the control plane reads metrics from.
    metrics: Metrics,
}

impl Supervisor {
    /// A supervisor of nothing yet, on the node namespace `node`.
    pub fn new(
        layout: Layout,
        node: NetNs,
        identity: LocalIdentity,
        metrics: Metrics,
    ) -> Supervisor {
        Supervisor {
            layout,
            node: Arc::new(node),
            desired: AppSpec::default(),
            pods: Vec::new(),
            services: Vec::new(),
            view: ServiceView::shared(),
            next_pod: 1,
            next_vip: 1,
            written: None,
            generation: 0,
            identity: Arc::new(identity),
            control_plane: None,
            metrics,
        }
    }

    /// Runs until `SIGTERM` (or `SIGINT`), then tears everything down.
    pub async fn run(mut self) -> anyhow::Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        self.control_plane = ControlPlane::start(
            &self.layout,
            self.node.clone(),
            &self.identity,
            &self.metrics,
        );
        self.reload();
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        loop {
            tokio::select! {
                _ = hup.recv() => self.reload(),
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = tick.tick() => {}
            }
            let (pods, services) = self.update_services().await;
            self.write_state(pods, services);
        }
        self.teardown().await;
        Ok(())
    }

    fn reload(&mut self) {
        match state::read_json::<AppSpec>(&self.layout.desired()) {
            Ok(Some(desired)) => {
                self.desired = desired;
                self.reconcile();
            }
            Ok(None) => {}
            Err(error) => warn!(%error, "cannot read the desired spec; keeping the current one"),
        }
    }

    fn reconcile(&mut self) {
        for d in self.desired.deployments.clone() {
            let same =
                |p: &Pod| p.deployment.namespace == d.namespace && p.deployment.name == d.name;
            let changed = self.pods.iter().any(|p| {
                same(p)
                    && DeploymentSpec {
                        replicas: d.replicas,
                        ..p.deployment.clone()
                    } != d
            });
            if changed {
                info!(namespace = %d.namespace, deployment = %d.name, "pod template changed; replacing its pods");
                self.remove_pods(|p| same(p));
            }
            let have = self.pods.iter().filter(|p| same(p)).count() as u32;
            for _ in have..d.replicas {
                self.create_pod(&d);
            }
            if have > d.replicas {
                let mut extra: Vec<u32> = self
                    .pods
                    .iter()
                    .filter(|p| same(p))
                    .map(|p| p.state.lock().index)
                    .collect();
                extra.sort_unstable();
                let extra: Vec<u32> = extra.split_off(d.replicas as usize);
                self.remove_pods(|p| extra.contains(&p.state.lock().index));
            }
        }
        for s in &self.desired.services {
            match self
                .services
                .iter_mut()
                .find(|(x, _)| x.namespace == s.namespace && x.name == s.name)
            {
                Some((existing, _)) => *existing = s.clone(),
                None => {
                    self.services.push((s.clone(), service_ip(self.next_vip)));
                    self.next_vip += 1;
                }
            }
        }
    }

    fn remove_pods(&mut self, which: impl Fn(&Pod) -> bool) {
        let (gone, kept): (Vec<Pod>, Vec<Pod>) = std::mem::take(&mut self.pods)
            .into_iter()
            .partition(|p| which(p));
        self.pods = kept;
        for pod in gone {
            // Out of every Service's endpoints from now on; its processes are stopped only
            // once proxies have heard, as Kubernetes lets endpoint removal propagate, so
            // that requests in flight and the ones already routed to it still complete.
            pod.state.lock().phase = "Terminating".into();
            tokio::spawn(async move {
                tokio::time::sleep(TERMINATION_DELAY).await;
                let _ = pod.stop.send(true);
                // The pod task removes its own namespace once its processes are gone.
                let _ = pod.task.await;
            });
        }
    }

    fn create_pod(&mut self, d: &DeploymentSpec) {
        let index = self.next_pod;
        self.next_pod += 1;
        let name = format!("{}-{}", d.name, suffix(index));
        let netns = self.layout.pod_netns(index);
        let state = Arc::new(Mutex::new(PodState {
            namespace: d.namespace.clone(),
            name: name.clone(),
            deployment: d.name.clone(),
            index,
            ip: pod_ip(index),
            netns,
            meshed: d.meshed,
            service_account: d.service_account.clone(),
            labels: d.labels.clone(),
            named_ports: d.containers.iter().flat_map(|c| c.ports.clone()).collect(),
            probes: d
                .containers
                .iter()
                .filter_map(|c| match &c.readiness.as_ref()?.action {
                    ProbeAction::HttpGet { port, path } => Some(conduit_policy::Probe {
                        port: *port,
                        path: path.clone(),
                    }),
                    ProbeAction::TcpSocket { .. } => None,
                })
                .collect(),
            default_policy: d.default_policy,
            phase: "Pending".into(),
            ready: false,
            containers: d
                .containers
                .iter()
                .map(|c| ContainerState {
                    name: c.name.clone(),
                    log: self
                        .layout
                        .container_log(&d.namespace, &name, &c.name)
                        .display()
                        .to_string(),
                    ..ContainerState::default()
                })
                .collect(),
            message: "creating the pod's network".into(),
        }));
        let (stop, stopped) = watch::channel(false);
        let ctx = PodCtx {
            layout: self.layout.clone(),
            node: self.node.clone(),
            spec: d.clone(),
            state: state.clone(),
            view: self.view.clone(),
            identity: self.identity.clone(),
        };
        let task = tokio::spawn(ctx.run(stopped));
        info!(pod = %name, namespace = %d.namespace, "pod created");
        self.pods.push(Pod {
            deployment: d.clone(),
            state,
            stop,
            task,
        });
    }

    /// Recomputes Services' endpoints from the pods as they are now, and applies any
    /// change to every pod's rules. Returns that snapshot of the pods with the Services
    /// computed from it, so that the state written never shows a ready pod missing from
    /// its Services' endpoints.
    async fn update_services(&mut self) -> (Vec<PodState>, Vec<ServiceState>) {
        let pods: Vec<PodState> = self.pods.iter().map(|p| p.state.lock().clone()).collect();
        let deployments: BTreeMap<(String, String), &DeploymentSpec> = self
            .pods
            .iter()
            .map(|p| {
                (
                    (p.deployment.namespace.clone(), p.deployment.name.clone()),
                    &p.deployment,
                )
            })
            .collect();
        let services = services::endpoints(&self.services, &pods, &deployments);
        self.view.lock().await.update(&services).await;
        (pods, services)
    }

    fn write_state(&mut self, pods: Vec<PodState>, services: Vec<ServiceState>) {
        if let Some(control_plane) = &self.control_plane {
            control_plane.observe(&pods);
        }
        let state = State {
            daemon_pid: std::process::id(),
            generation: 0,
            node_netns: self.layout.node_netns(),
            pods,
            services,
            control_plane: self
                .control_plane
                .as_ref()
                .map(ControlPlane::containers)
                .unwrap_or_default(),
            policy: self.desired.policy.clone(),
            profiles: self.desired.profiles.clone(),
            http_routes: self.desired.http_routes.clone(),
        };
        if self.written.as_ref() == Some(&state) {
            return;
        }
        self.generation += 1;
        let mut out = state.clone();
        out.generation = self.generation;
        if let Err(error) = state::write_json(&self.layout.state(), &out) {
            warn!(%error, "writing the state file failed");
        }
        self.written = Some(state);
    }

    async fn teardown(mut self) {
        info!("tearing down every pod");
        let pods = std::mem::take(&mut self.pods);
        for pod in &pods {
            let _ = pod.stop.send(true);
        }
        for pod in pods {
            let _ = pod.task.await;
        }
        if let Some(control_plane) = self.control_plane.take() {
            control_plane.stop().await;
        }
        let _ = std::fs::remove_file(self.layout.api_socket());
        let _ = std::fs::remove_file(self.layout.state());
        let _ = std::fs::remove_dir_all(self.layout.etc());
        info!("torn down");
    }
}

/// A pod-name suffix like Kubernetes': five lowercase letters and digits.
fn suffix(index: u32) -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(index);
    let mut n = h.finish();
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..5)
        .map(|_| {
            let c = ALPHABET[(n % ALPHABET.len() as u64) as usize];
            n /= ALPHABET.len() as u64;
            c as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_suffixes_look_like_kubernetes() {
        let s = suffix(1);
        assert_eq!(s.len(), 5);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()),
            "{s}"
        );
    }
}
