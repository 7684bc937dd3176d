//! The supervisor: the local runtime's node agent. It lives in the node namespace, turns
//! the desired spec into pods (namespaces, init containers, containers as supervised host
//! processes restarted with backoff, readiness probes) and Services (virtual IPs, rules in
//! every pod), and writes what it observes to the state file after every change.
//! `SIGHUP` re-reads the desired spec; `SIGTERM` tears everything down.

use crate::{
    layout::{pod_ip, service_ip, Layout},
    net, probe,
    spec::{
        AppSpec, ContainerSpec, DeploymentSpec, EnvSpec, PodField, ProbeAction, ServiceSpec,
        TargetPort,
    },
    state::{self, ContainerState, EndpointState, PodState, ServicePortState, ServiceState, State},
};
use anyhow::Context as _;
use conduit_netns::{Exec, NetNs};
use parking_lot::Mutex;
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
    task::JoinHandle,
};
use tracing::{info, warn};

/// Runs the supervisor until `SIGTERM`; called in the detached daemon process.
pub fn run(layout: Layout) -> anyhow::Result<()> {
    std::fs::create_dir_all(layout.logs())?;
    std::fs::create_dir_all(layout.etc())?;
    std::fs::write(layout.daemon_pid(), std::process::id().to_string())?;
    let node = net::create_node(&layout).context("creating the node namespace and its bridge")?;
    // Every thread of the supervisor is born in the node namespace: probes and the
    // control plane reach pods over the bridge.
    node.enter().context("entering the node namespace")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let identity =
        LocalIdentity::create(&layout).context("making the runtime's trust anchor and issuer")?;
    let result = runtime.block_on(Supervisor::new(layout.clone(), node, identity).run());
    drop(runtime);
    // Last, so that whoever waits for the pid file to go knows everything is gone.
    let _ = std::fs::remove_file(layout.daemon_pid());
    result
}

type Shared<T> = Arc<Mutex<T>>;

/// The current Service rules and hosts entries, applied to each pod once its init
/// containers have run. One lock orders "a pod applies the rules" against "the rules
/// change", so that no pod is left with stale ones.
struct ServiceView {
    services: Vec<ServiceState>,
    rules: String,
    /// Pods that have applied rules and must get every change.
    applied: Vec<(Arc<NetNs>, Shared<PodState>, PathBuf)>,
}

struct Pod {
    deployment: DeploymentSpec,
    state: Shared<PodState>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

struct Supervisor {
    layout: Layout,
    node: Arc<NetNs>,
    desired: AppSpec,
    pods: Vec<Pod>,
    /// Services with their virtual IPs, by (namespace, name).
    services: Vec<(ServiceSpec, std::net::Ipv4Addr)>,
    view: Arc<tokio::sync::Mutex<ServiceView>>,
    next_pod: u32,
    next_vip: u32,
    written: Option<State>,
    generation: u64,
    /// The trust files and the token secret of this runtime's identities.
    identity: Arc<LocalIdentity>,
    /// The control plane, supervised like a pod's containers but in the node namespace.
    control_plane: Option<(Shared<PodState>, watch::Sender<bool>, JoinHandle<()>)>,
}

/// The runtime's identity material: a trust anchor and issuer made at start (the
/// anchor's key is never kept), and the secret that signs the tokens it gives its pods.
pub struct LocalIdentity {
    dir: PathBuf,
    /// The trust anchor, for proxies' `conduit-identity-trust-roots` ConfigMap reference.
    anchor_pem: String,
    tokens: conduit_identity::token::Tokens,
    lifetime: String,
}

impl LocalIdentity {
    /// Makes the trust files under the run directory; `CONDUIT_LOCAL_IDENTITY_LIFETIME`
    /// (default `24h`) sets how long certificates live.
    fn create(layout: &Layout) -> anyhow::Result<LocalIdentity> {
        use std::os::unix::fs::PermissionsExt;
        let dir = layout.dir().join("identity");
        std::fs::create_dir_all(dir.join("tokens"))?;
        // Proxies (their own UID) must reach their token files, but not list them.
        for d in [&dir, &dir.join("tokens")] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))?;
        }
        // The user's own anchor and issuer when `up` was given them, else new ones.
        let files = match read_user_trust(&layout.user_trust())? {
            Some(files) => files,
            None => conduit_identity::ca::generate(
                Duration::from_secs(10 * 365 * 86_400),
                Duration::from_secs(365 * 86_400),
            )?,
        };
        std::fs::write(dir.join("anchor.pem"), &files.anchor_pem)?;
        std::fs::write(dir.join("issuer.pem"), &files.issuer_cert_pem)?;
        let secret = conduit_identity::token::Tokens::generate_secret()
            .map_err(|_| anyhow::anyhow!("no randomness for the token secret"))?;
        for (name, bytes) in [
            ("issuer-key.pem", files.issuer_key_pem.as_bytes()),
            ("token-secret", &secret[..]),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, bytes)?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        let lifetime =
            std::env::var("CONDUIT_LOCAL_IDENTITY_LIFETIME").unwrap_or_else(|_| "24h".into());
        Ok(LocalIdentity {
            anchor_pem: files.anchor_pem.clone(),
            dir,
            tokens: conduit_identity::token::Tokens::new(&secret),
            lifetime,
        })
    }

    /// Writes the token of `pod` where only its proxy's UID can read it.
    fn token_for(&self, pod: &PodState, containers: &[ContainerSpec]) -> std::io::Result<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let token = self.tokens.issue(&conduit_identity::token::Claims {
            namespace: pod.namespace.clone(),
            service_account: pod.service_account.clone(),
            pod: pod.name.clone(),
            ip: std::net::IpAddr::V4(pod.ip),
        });
        let path = self.dir.join("tokens").join(&pod.netns);
        std::fs::write(&path, token)?;
        let uid = containers
            .iter()
            .find(|c| c.name == conduit_k8s::inject::PROXY_CONTAINER)
            .and_then(|c| c.run_as_user)
            .unwrap_or(2102);
        std::os::unix::fs::chown(&path, Some(uid), Some(uid))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))?;
        Ok(path)
    }
}

/// The files of the user's trust anchor and issuer, under `dir`.
const USER_TRUST_FILES: [&str; 3] = ["anchors.pem", "issuer.pem", "issuer-key.pem"];

/// Leaves the user's trust anchor and issuer for the next supervisor, or (with `None`)
/// makes sure it generates its own.
pub fn write_user_trust(
    dir: &std::path::Path,
    files: Option<&conduit_identity::ca::TrustFiles>,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(dir);
    let Some(f) = files else { return Ok(()) };
    std::fs::create_dir_all(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for (name, text) in
        USER_TRUST_FILES
            .iter()
            .zip([&f.anchor_pem, &f.issuer_cert_pem, &f.issuer_key_pem])
    {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

fn read_user_trust(
    dir: &std::path::Path,
) -> std::io::Result<Option<conduit_identity::ca::TrustFiles>> {
    if !dir.is_dir() {
        return Ok(None);
    }
    let [anchor_pem, issuer_cert_pem, issuer_key_pem] =
        USER_TRUST_FILES.map(|name| std::fs::read_to_string(dir.join(name)));
    Ok(Some(conduit_identity::ca::TrustFiles {
        anchor_pem: anchor_pem?,
        issuer_cert_pem: issuer_cert_pem?,
        issuer_key_pem: issuer_key_pem?,
    }))
}

/// How long a removed pod keeps running after leaving its Services' endpoints.
const TERMINATION_DELAY: Duration = Duration::from_secs(2);

/// Where the control plane serves the Destination API to proxies, on the node's address.
pub const DESTINATION_PORT: u16 = 8086;

/// The control plane's API socket in a run directory.
pub fn api_socket(layout: &Layout) -> PathBuf {
    layout.dir().join("api.sock")
}

impl Supervisor {
    fn new(layout: Layout, node: NetNs, identity: LocalIdentity) -> Supervisor {
        Supervisor {
            layout,
            node: Arc::new(node),
            desired: AppSpec::default(),
            pods: Vec::new(),
            services: Vec::new(),
            view: Arc::new(tokio::sync::Mutex::new(ServiceView {
                services: Vec::new(),
                rules: net::service_rules(&[]),
                applied: Vec::new(),
            })),
            next_pod: 1,
            next_vip: 1,
            written: None,
            generation: 0,
            identity: Arc::new(identity),
            control_plane: None,
        }
    }

    /// Starts `conduit-controller` next to this binary, discovering from the state file
    /// and serving its API on a socket in the run directory. Without it pods still run;
    /// only the metrics API is missing, which `status` shows.
    fn start_control_plane(&mut self) {
        let Some(controller) = crate::client::resolve_program("conduit-controller") else {
            warn!("conduit-controller was not found next to conduit or on PATH: running without a control plane");
            return;
        };
        let etc = self.layout.etc().join("node");
        if let Err(error) = net::write_etc(&etc, "127.0.0.1\tlocalhost\n", "conduit") {
            warn!(%error, "writing the node's /etc files failed");
            return;
        }
        let spec = ContainerSpec {
            name: "controller".into(),
            argv: vec![
                controller.display().to_string(),
                "--local-state".into(),
                self.layout.state().display().to_string(),
                "--api-socket".into(),
                api_socket(&self.layout).display().to_string(),
                "--scrape-interval".into(),
                "5s".into(),
                "--destination-addr".into(),
                format!("{}:{DESTINATION_PORT}", crate::layout::NODE_IP),
                "--identity-issuer-cert".into(),
                self.identity.dir.join("issuer.pem").display().to_string(),
                "--identity-issuer-key".into(),
                self.identity
                    .dir
                    .join("issuer-key.pem")
                    .display()
                    .to_string(),
                "--identity-trust-anchors".into(),
                self.identity.dir.join("anchor.pem").display().to_string(),
                "--local-token-secret".into(),
                self.identity.dir.join("token-secret").display().to_string(),
                "--identity-lifetime".into(),
                self.identity.lifetime.clone(),
                // The pod network: what cluster-authenticated trusts here.
                "--cluster-networks".into(),
                format!("{}/16", crate::layout::NODE_IP),
            ],
            env: Vec::new(),
            ports: BTreeMap::new(),
            readiness: None,
            run_as_user: None,
            sidecar: false,
            after_sidecars: false,
            post_start: None,
        };
        let log = self.layout.logs().join("conduit_controller.log");
        let state = Arc::new(Mutex::new(PodState {
            namespace: "conduit".into(),
            name: "controller".into(),
            deployment: "controller".into(),
            index: 0,
            ip: crate::layout::NODE_IP,
            netns: self.layout.node_netns(),
            meshed: false,
            service_account: String::new(),
            labels: BTreeMap::new(),
            named_ports: BTreeMap::new(),
            probes: Vec::new(),
            default_policy: None,
            phase: "Running".into(),
            ready: true,
            containers: vec![ContainerState {
                name: spec.name.clone(),
                log: log.display().to_string(),
                ..ContainerState::default()
            }],
            message: String::new(),
        }));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(supervise(
            self.node.clone(),
            etc,
            spec,
            0,
            state.clone(),
            log,
            stopped,
        ));
        self.control_plane = Some((state, stop, task));
    }

    async fn run(mut self) -> anyhow::Result<()> {
        let mut hup = signal(SignalKind::hangup())?;
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        self.start_control_plane();
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
                        .log_path(&d.namespace, &name, &c.name)
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

    fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        self.layout
            .logs()
            .join(format!("{namespace}_{pod}_{container}.log"))
    }

    /// Recomputes every Service's endpoints from the ready pods; when anything changed,
    /// rewrites every pod's rules (and hosts files, when names changed).
    /// Recomputes Services' endpoints from the pods as they are now, and applies any
    /// change to every pod's rules. Returns that snapshot of the pods with the Services
    /// computed from it, so that the state written never shows a ready pod missing from
    /// its Services' endpoints.
    async fn update_services(&mut self) -> (Vec<PodState>, Vec<ServiceState>) {
        let pods: Vec<PodState> = self.pods.iter().map(|p| p.state.lock().clone()).collect();
        let specs: BTreeMap<(String, String), &DeploymentSpec> = self
            .pods
            .iter()
            .map(|p| {
                (
                    (p.deployment.namespace.clone(), p.deployment.name.clone()),
                    &p.deployment,
                )
            })
            .collect();
        let services: Vec<ServiceState> = self
            .services
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
                            .filter(|pod| {
                                s.selector.iter().all(|(k, v)| pod.labels.get(k) == Some(v))
                            })
                            .filter_map(|pod| {
                                let d =
                                    specs.get(&(pod.namespace.clone(), pod.deployment.clone()))?;
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
            .collect();
        let mut view = self.view.lock().await;
        if view.services == services {
            return (pods, services);
        }
        let names_changed = names(&view.services) != names(&services);
        view.rules = net::service_rules(&services);
        view.services = services;
        let rules = view.rules.clone();
        let services = view.services.clone();
        for (ns, pod, etc) in view.applied.clone() {
            let rules = rules.clone();
            let services = services.clone();
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
        (pods, services)
    }

    fn write_state(&mut self, pods: Vec<PodState>, services: Vec<ServiceState>) {
        let state = State {
            daemon_pid: std::process::id(),
            generation: 0,
            node_netns: self.layout.node_netns(),
            pods,
            services,
            control_plane: self
                .control_plane
                .as_ref()
                .map(|(s, _, _)| s.lock().containers.clone())
                .unwrap_or_default(),
            policy: self.desired.policy.clone(),
            profiles: self.desired.profiles.clone(),
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
        if let Some((_, stop, task)) = self.control_plane.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let _ = std::fs::remove_file(api_socket(&self.layout));
        let _ = std::fs::remove_file(self.layout.state());
        let _ = std::fs::remove_dir_all(self.layout.etc());
        info!("torn down");
    }
}

fn names(services: &[ServiceState]) -> Vec<(&str, &str, std::net::Ipv4Addr)> {
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

/// What one pod's task works with.
struct PodCtx {
    layout: Layout,
    node: Arc<NetNs>,
    spec: DeploymentSpec,
    state: Shared<PodState>,
    view: Arc<tokio::sync::Mutex<ServiceView>>,
    identity: Arc<LocalIdentity>,
}

impl PodCtx {
    fn set_message(&self, phase: &str, message: impl Into<String>) {
        let mut s = self.state.lock();
        s.phase = phase.into();
        s.message = message.into();
    }

    async fn run(self, mut stop: watch::Receiver<bool>) {
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
            for (tx, task) in containers.into_iter().rev() {
                let _ = tx.send(true);
                let _ = task.await;
            }
        }
        self.view
            .lock()
            .await
            .applied
            .retain(|(n, _, _)| n.name() != ns.name());
        let _ = std::fs::remove_dir_all(&etc);
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
        etc: &std::path::Path,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Vec<(watch::Sender<bool>, JoinHandle<()>)>> {
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
        {
            let mut view = self.view.lock().await;
            let (ns2, rules) = (ns.clone(), view.rules.clone());
            match tokio::task::spawn_blocking(move || net::apply_service_rules(&ns2, &rules)).await
            {
                Ok(Ok(())) => {
                    view.applied
                        .push((ns.clone(), self.state.clone(), etc.to_path_buf()))
                }
                Ok(Err(e)) => warn!(error = %e, "applying Service rules failed"),
                Err(e) => warn!(error = %e, "applying Service rules failed"),
            }
        }
        // Native sidecars first, ready before anything after them starts; they stop last.
        let spawn = |i: usize, c: &ContainerSpec| {
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(supervise(
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
        let mut running: Vec<(watch::Sender<bool>, JoinHandle<()>)> = containers
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
            for (tx, task) in running {
                let _ = tx.send(true);
                let _ = task.await;
            }
            return None;
        }
        self.set_message("Running", "starting containers");
        for (i, c) in containers.iter().enumerate().filter(|(_, c)| !c.sidecar) {
            running.push(spawn(i, c));
            if let Some(hook) = &c.post_start {
                if !self.run_post_start(ns, etc, c, hook, stop).await {
                    for (tx, task) in running {
                        let _ = tx.send(true);
                        let _ = task.await;
                    }
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
        etc: &std::path::Path,
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
        let mut child = match launch(ns, etc, &spec, &self.state, &log) {
            Ok(child) => child,
            Err(e) => {
                failed(e.to_string());
                return true;
            }
        };
        tokio::select! {
            status = child.wait() => match status {
                Ok(s) if s.success() => {}
                Ok(s) => failed(s.to_string()),
                Err(e) => failed(e.to_string()),
            },
            _ = stop.changed() => return false,
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
                        .filter(|c| c.name == conduit_k8s::inject::PROXY_CONTAINER)
                    {
                        c.env.retain(|e| !matches!(e, EnvSpec::Value { name, .. } | EnvSpec::PodField { name, .. } if name == "CONDUIT_PROXY_IDENTITY_TOKEN_FILE"));
                        c.env.push(EnvSpec::Value {
                            name: "CONDUIT_PROXY_IDENTITY_TOKEN_FILE".into(),
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
                    value: self.identity.anchor_pem.clone(),
                };
            }
        }
        containers
    }

    /// Runs one init container to success, retrying with backoff; false if the pod was
    /// stopped first.
    async fn run_init(
        &self,
        ns: &Arc<NetNs>,
        etc: &std::path::Path,
        c: &ContainerSpec,
        stop: &mut watch::Receiver<bool>,
    ) -> bool {
        let mut backoff = Duration::from_secs(1);
        loop {
            self.set_message("Pending", format!("running init container {}", c.name));
            let log = self.log(&c.name);
            match launch(ns, etc, c, &self.state, &log) {
                Ok(mut child) => match child.wait().await {
                    Ok(status) if status.success() => return true,
                    Ok(status) => self.set_message(
                        "Pending",
                        format!(
                            "init container {} {}; retrying in {}s (log: {})",
                            c.name,
                            describe(status),
                            backoff.as_secs(),
                            log.display()
                        ),
                    ),
                    Err(e) => {
                        self.set_message("Pending", format!("init container {}: {e}", c.name))
                    }
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
        self.layout
            .logs()
            .join(format!("{}_{}_{container}.log", s.namespace, s.name))
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

#[derive(Default)]
struct ProbeTrack {
    last: Option<Instant>,
    failures: u32,
    ready: bool,
    error: String,
}

fn describe(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".to_string(),
    }
}

/// The environment of a container: the supervisor's own (so that host tools resolve as
/// they do for the user), the pod's fields, then the container's variables.
fn environment(c: &ContainerSpec, pod: &PodState) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_NAME".to_string(), pod.name.clone()),
        ("POD_NAMESPACE".to_string(), pod.namespace.clone()),
        ("POD_IP".to_string(), pod.ip.to_string()),
    ];
    for e in &c.env {
        match e {
            EnvSpec::Value { name, value } => env.push((name.clone(), value.clone())),
            EnvSpec::PodField { name, field } => env.push((
                name.clone(),
                match field {
                    PodField::Name => pod.name.clone(),
                    PodField::Namespace => pod.namespace.clone(),
                    PodField::Ip => pod.ip.to_string(),
                    PodField::ServiceAccount => pod.service_account.clone(),
                },
            )),
            // Replaced with the anchors before containers start.
            EnvSpec::MeshTrustRoots { .. } => {}
        }
    }
    env
}

/// Starts one run of a container's process in the pod.
fn launch(
    ns: &NetNs,
    etc: &std::path::Path,
    c: &ContainerSpec,
    pod: &Shared<PodState>,
    log: &std::path::Path,
) -> std::io::Result<tokio::process::Child> {
    let exec = Exec {
        uid: c.run_as_user.filter(|u| *u != 0),
        etc: Some(etc.to_path_buf()),
        new_session: true,
        // Pods outlive a crashed supervisor; `down` finds and stops them.
        die_with_parent: false,
    };
    let mut cmd = ns.command_with(&c.argv[0], &exec)?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let pod = pod.lock().clone();
    cmd.args(&c.argv[1..])
        .envs(environment(c, &pod))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
}

/// Keeps one container running: restarts it with exponential backoff (1 s to 30 s,
/// reset after a minute of good health) until the pod stops.
async fn supervise(
    ns: Arc<NetNs>,
    etc: PathBuf,
    c: ContainerSpec,
    i: usize,
    pod: Shared<PodState>,
    log: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match launch(&ns, &etc, &c, &pod, &log) {
            Ok(mut child) => {
                let pid = child.id();
                {
                    let mut s = pod.lock();
                    s.containers[i].pid = pid;
                    s.containers[i].running = true;
                }
                let ended = tokio::select! {
                    status = child.wait() => Some(status),
                    _ = stop.changed() => None,
                };
                match ended {
                    Some(status) => {
                        let how = status.map_or_else(|e| e.to_string(), describe);
                        warn!(container = %c.name, pod = %pod.lock().name, "container {how}");
                        pod.lock().containers[i].last_exit = Some(how);
                    }
                    None => {
                        terminate(pid, &mut child).await;
                        let mut s = pod.lock();
                        s.containers[i].running = false;
                        s.containers[i].pid = None;
                        return;
                    }
                }
            }
            Err(e) => {
                pod.lock().containers[i].last_exit =
                    Some(format!("could not start {:?}: {e}", c.argv[0]))
            }
        }
        {
            let mut s = pod.lock();
            s.containers[i].running = false;
            s.containers[i].ready = false;
            s.containers[i].pid = None;
            s.containers[i].restarts += 1;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// SIGTERM to the container's process group, SIGKILL after 5 s.
async fn terminate(pid: Option<u32>, child: &mut tokio::process::Child) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill has no memory-safety preconditions; the group is the container's own.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: as above.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = child.wait().await;
    }
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
