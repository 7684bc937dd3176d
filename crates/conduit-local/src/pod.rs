//! One pod's life, as a kubelet lives it: its network and hosts file, its init containers
//! in order (a native sidecar started in its turn, ready before the next one runs), the
//! Service rules, its containers in order (one with a postStart hook held until the hook
//! has run), readiness probes from the node, and on stop its processes (the application's,
//! then the sidecars that serve it), then its rules' bookkeeping, then its namespace with
//! whatever still runs inside. Knows nothing of other pods, of how Services are computed,
//! or of how a process is launched and ended ([`crate::process`]).

use crate::{
    identity::LocalIdentity,
    layout::Layout,
    net, probe,
    process::{self, Ended},
    services::SharedView,
    spec::{ContainerSpec, DeploymentSpec, EnvSpec},
    state::PodState,
};
use conduit_api::proxy_env;
use conduit_netns::NetNs;
use parking_lot::Mutex;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// A running container: what stops it, and its supervising task.
type Running = (watch::Sender<bool>, JoinHandle<()>);

/// What one pod's task works with.
pub struct PodCtx {
    pub layout: Layout,
    pub node: Arc<NetNs>,
    pub spec: DeploymentSpec,
    pub state: Arc<Mutex<PodState>>,
    pub view: SharedView,
    pub identity: Arc<LocalIdentity>,
}

impl PodCtx {
    fn set_message(&self, phase: &str, message: impl Into<String>) {
        let mut s = self.state.lock();
        s.phase = phase.into();
        s.message = message.into();
    }

    /// Runs the pod until `stop` changes, then removes it.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let (index, ip, netns) = {
            let s = self.state.lock();
            (s.index, s.ip, s.netns.clone())
        };
        let (layout, node) = (self.layout.clone(), self.node.clone());
        let ns =
            match tokio::task::spawn_blocking(move || net::create_pod(&layout, &node, index, ip))
                .await
            {
                Ok(Ok(ns)) => Arc::new(ns),
                Ok(Err(e)) => {
                    return self
                        .set_message("Failed", format!("creating the pod's network failed: {e}"))
                }
                Err(e) => {
                    return self
                        .set_message("Failed", format!("creating the pod's network failed: {e}"))
                }
            };
        let etc = self.layout.etc().join(&netns);
        let containers = self.start(&ns, &etc, &mut stop).await;
        let mut probes: Vec<ProbeTrack> = self
            .spec
            .containers
            .iter()
            .map(|_| ProbeTrack::default())
            .collect();
        let started = Instant::now();
        loop {
            if containers.is_some() {
                self.probe(ip, &mut probes, started).await;
            }
            tokio::select! {
                _ = stop.changed() => break,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        // Stop: processes first (the application's, then the sidecars that serve it), then
        // the rules' bookkeeping, then the namespace.
        if let Some(containers) = containers {
            stop_all(containers).await;
        }
        self.view.lock().await.forget(ns.name());
        let _ = std::fs::remove_dir_all(&etc);
        // Deleting the namespace also ends what escaped its container's process group
        // (a process that made a session of its own, a command `exec` left).
        if let Ok(ns) = Arc::try_unwrap(ns) {
            let _ = tokio::task::spawn_blocking(move || ns.delete()).await;
        }
        info!(pod = %self.state.lock().name, "pod removed");
    }

    /// Runs the init containers, applies the Service rules, starts the containers.
    /// `None` when the pod was stopped first.
    async fn start(
        &self,
        ns: &Arc<NetNs>,
        etc: &Path,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<Running>> {
        {
            let view = self.view.lock().await;
            let pod = self.state.lock().clone();
            let text = net::hosts_file(&pod, &view.services);
            if let Err(e) = net::write_etc(etc, &text, &pod.namespace) {
                self.set_message(
                    "Failed",
                    format!("writing the pod's /etc files failed: {e}"),
                );
                return None;
            }
        }
        let containers = self.prepare_containers();
        for c in self
            .spec
            .init_containers
            .iter()
            .filter(|c| !c.after_sidecars)
        {
            if !self.run_init(ns, etc, c, stop).await {
                return None;
            }
        }
        self.view
            .lock()
            .await
            .apply(ns.clone(), self.state.clone(), etc.to_path_buf())
            .await;
        // Native sidecars first, ready before anything after them starts; they stop last.
        let spawn = |i: usize, c: &ContainerSpec| {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(process::supervise(
                ns.clone(),
                etc.to_path_buf(),
                c.clone(),
                i,
                self.state.clone(),
                self.log(&c.name),
                rx,
            ));
            (tx, task)
        };
        let mut running: Vec<Running> = containers
            .iter()
            .enumerate()
            .filter(|(_, c)| c.sidecar)
            .map(|(i, c)| spawn(i, c))
            .collect();
        let mut ready = self.wait_sidecars(&containers, stop).await;
        for c in self
            .spec
            .init_containers
            .iter()
            .filter(|c| c.after_sidecars)
        {
            ready = ready && self.run_init(ns, etc, c, stop).await;
        }
        if !ready {
            stop_all(running).await;
            return None;
        }
        self.set_message("Running", "starting containers");
        for (i, c) in containers.iter().enumerate().filter(|(_, c)| !c.sidecar) {
            running.push(spawn(i, c));
            if let Some(hook) = &c.post_start {
                if !self.run_post_start(ns, etc, c, hook, stop).await {
                    stop_all(running).await;
                    return None;
                }
            }
        }
        Some(running)
    }

    /// Runs a container's postStart hook in the pod (the container's user and
    /// environment) to its end before the next container starts, as the kubelet does:
    /// what `--native-sidecar=false` relies on to hold the app until the proxy is ready.
    /// A failed hook is logged and named in the pod's message; the pod goes on (the
    /// kubelet would restart the container). False if the pod was stopped first.
    async fn run_post_start(
        &self,
        ns: &Arc<NetNs>,
        etc: &Path,
        c: &ContainerSpec,
        hook: &[String],
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let spec = ContainerSpec {
            argv: hook.to_vec(),
            ..c.clone()
        };
        let log = self.log(&c.name);
        let failed = |why: String| {
            warn!(container = %c.name, %why, "postStart hook failed");
            self.set_message(
                "Running",
                format!("postStart hook of {} failed: {why}", c.name),
            );
        };
        let mut child = match process::launch(ns, etc, &spec, &self.state, &log) {
            Ok(child) => child,
            Err(e) => {
                failed(e.to_string());
                return true;
            }
        };
        match process::wait_or_stop(&mut child, stop).await {
            Ended::Exited(Ok(s)) if s.success() => {}
            Ended::Exited(Ok(s)) => failed(s.to_string()),
            Ended::Exited(Err(e)) => failed(e.to_string()),
            Ended::Stopped => return false,
        }
        true
    }

    /// The containers as they will run: a meshed pod's proxy gets the token the runtime
    /// issued to the pod, and references to the mesh's trust roots get the anchors.
    fn prepare_containers(&self) -> Vec<ContainerSpec> {
        let mut containers = self.spec.containers.clone();
        if self.spec.meshed {
            let pod = self.state.lock().clone();
            match self.identity.token_for(&pod, &containers) {
                Ok(file) => {
                    // The injected path is the Kubernetes one; here the runtime hands out the token.
                    for c in containers
                        .iter_mut()
                        .filter(|c| c.name == conduit_api::names::PROXY_CONTAINER)
                    {
                        c.env.retain(|e| !matches!(e, EnvSpec::Value { name, .. } | EnvSpec::PodField { name, .. } if name == proxy_env::IDENTITY_TOKEN_FILE));
                        c.env.push(EnvSpec::Value {
                            name: proxy_env::IDENTITY_TOKEN_FILE.into(),
                            value: file.display().to_string(),
                        });
                    }
                }
                Err(e) => self.set_message(
                    "Pending",
                    format!("issuing the pod's identity token failed: {e}"),
                ),
            }
        }
        // The mesh's trust roots are the one ConfigMap a pod may refer to: the runtime has them.
        for e in containers.iter_mut().flat_map(|c| c.env.iter_mut()) {
            if let EnvSpec::MeshTrustRoots { name } = e {
                *e = EnvSpec::Value {
                    name: name.clone(),
                    value: self.identity.anchor_pem().to_string(),
                };
            }
        }
        containers
    }

    /// Runs one init container to success, retrying with backoff; false if the pod was
    /// stopped first (which ends the init container too).
    async fn run_init(
        &self,
        ns: &Arc<NetNs>,
        etc: &Path,
        c: &ContainerSpec,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = Duration::from_secs(1);
        loop {
            self.set_message("Pending", format!("running init container {}", c.name));
            let log = self.log(&c.name);
            match process::launch(ns, etc, c, &self.state, &log) {
                Ok(mut child) => match process::wait_or_stop(&mut child, stop).await {
                    Ended::Exited(Ok(status)) if status.success() => return true,
                    Ended::Exited(Ok(status)) => self.set_message(
                        "Pending",
                        format!(
                            "init container {} {}; retrying in {}s (log: {})",
                            c.name,
                            process::describe(status),
                            backoff.as_secs(),
                            log.display()
                        ),
                    ),
                    Ended::Exited(Err(e)) => {
                        self.set_message("Pending", format!("init container {}: {e}", c.name))
                    }
                    Ended::Stopped => return false,
                },
                Err(e) => self.set_message(
                    "Pending",
                    format!("init container {} could not start: {e}", c.name),
                ),
            }
            tokio::select! {
                _ = stop.changed() => return false,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Waits until every sidecar passes its readiness probe (as a kubelet waits for a
    /// native sidecar to start); false if the pod was stopped first.
    async fn wait_sidecars(
        &self,
        containers: &[ContainerSpec],
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let ip = self.state.lock().ip;
        for c in containers.iter().filter(|c| c.sidecar) {
            let Some(probe) = &c.readiness else { continue };
            loop {
                match probe::check(ip, &probe.action, Duration::from_secs(1)).await {
                    Ok(()) => break,
                    Err(e) => self.set_message(
                        "Pending",
                        format!("waiting for sidecar {} to be ready: {e}", c.name),
                    ),
                }
                tokio::select! {
                    _ = stop.changed() => return false,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        }
        true
    }

    fn log(&self, container: &str) -> PathBuf {
        let s = self.state.lock();
        self.layout.container_log(&s.namespace, &s.name, container)
    }

    /// Probes the containers whose turn it is and sets readiness.
    async fn probe(&self, ip: std::net::Ipv4Addr, probes: &mut [ProbeTrack], started: Instant) {
        let mut reasons = Vec::new();
        for (i, c) in self.spec.containers.iter().enumerate() {
            let running = self.state.lock().containers[i].running;
            let ready = match (&c.readiness, running) {
                (_, false) => {
                    reasons.push(format!("container {} is not running", c.name));
                    false
                }
                (None, true) => true,
                (Some(p), true) => {
                    let t = &mut probes[i];
                    let due = started.elapsed() >= Duration::from_secs(p.initial_delay_secs.into())
                        && t.last.is_none_or(|l| {
                            let period = if t.ready {
                                Duration::from_secs(p.period_secs.into())
                            } else {
                                Duration::from_millis(500)
                            };
                            l.elapsed() >= period
                        });
                    if due {
                        t.last = Some(Instant::now());
                        match probe::check(ip, &p.action, Duration::from_secs(1)).await {
                            Ok(()) => {
                                t.failures = 0;
                                t.ready = true;
                                t.error.clear();
                            }
                            Err(e) => {
                                t.failures += 1;
                                t.error = e;
                                if t.failures >= p.failure_threshold || !t.ready {
                                    t.ready = false;
                                }
                            }
                        }
                    }
                    if !t.ready {
                        reasons.push(format!(
                            "container {}: readiness probe failing: {}",
                            c.name,
                            if t.error.is_empty() {
                                "not yet run"
                            } else {
                                &t.error
                            }
                        ));
                    }
                    t.ready
                }
            };
            self.state.lock().containers[i].ready = ready;
        }
        let mut s = self.state.lock();
        s.ready = reasons.is_empty();
        s.message = reasons.join("; ");
    }
}

/// Stops running containers, last started first, each to its end.
async fn stop_all(running: Vec<Running>) {
    for (tx, task) in running.into_iter().rev() {
        let _ = tx.send(true);
        let _ = task.await;
    }
}

/// One container's readiness probe, between runs.
#[derive(Default)]
struct ProbeTrack {
    last: Option<Instant>,
    failures: u32,
    ready: bool,
    error: String,
}
