//! The control plane on one host: `conduit-controller` found next to this binary,
//! discovering from the state file, serving its API on a socket in the run directory and
//! the Destination and Identity APIs on the node's address, with the runtime's identity
//! material; supervised like a pod's container, but in the node namespace. With
//! [`Metrics::Run`] a Prometheus runs beside it (its second container), whose targets
//! follow the meshed pods ([`ControlPlane::observe`]), and the controller queries it.
//! Knows nothing else of pods or Services (the controller reads them from the state file).

use crate::{
    identity::LocalIdentity,
    layout::{Layout, NODE_IP},
    net, process,
    prometheus::{self, Metrics},
    spec::ContainerSpec,
    state::{ContainerState, PodState},
};
use conduit_api::{
    control_plane::{CONTROLLER, NAMESPACE},
    flags, ports,
};
use conduit_netns::NetNs;
use parking_lot::Mutex;
use std::{collections::BTreeMap, sync::Arc};
use tokio::{sync::watch, task::JoinHandle};
use tracing::warn;

/// How often the proxies are scraped here, by the controller or by its Prometheus.
pub const SCRAPE_INTERVAL: &str = "5s";

/// The running control plane.
pub struct ControlPlane {
    state: Arc<Mutex<PodState>>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    /// The Prometheus' files and the targets last written, when one runs.
    prometheus: Option<(prometheus::Files, Mutex<Option<serde_json::Value>>)>,
}

impl ControlPlane {
    /// Starts `conduit-controller` (and Prometheus, when `metrics` says so). Without the
    /// controller pods still run; only the metrics API is missing, which `status` shows:
    /// `None`, said in the log.
    pub fn start(
        layout: &Layout,
        node: Arc<NetNs>,
        identity: &LocalIdentity,
        metrics: &Metrics,
    ) -> Option<ControlPlane> {
        let Some(controller) = process::resolve_program(CONTROLLER) else {
            warn!("{CONTROLLER} was not found next to conduit or on PATH: running without a control plane");
            return None;
        };
        let etc = layout.etc().join("node");
        if let Err(error) = net::write_etc(&etc, "127.0.0.1\tlocalhost\n", NAMESPACE) {
            warn!(%error, "writing the node's /etc files failed");
            return None;
        }
        let path = |p: std::path::PathBuf| p.display().to_string();
        let mut argv = vec![
            path(controller),
            flags::LOCAL_STATE.arg(path(layout.state())),
            flags::API_SOCKET.arg(path(layout.api_socket())),
            flags::SCRAPE_INTERVAL.arg(SCRAPE_INTERVAL),
            flags::DESTINATION_ADDR.arg(format!("{NODE_IP}:{}", ports::CONTROLLER_GRPC)),
            flags::IDENTITY_ISSUER_CERT.arg(path(identity.issuer_cert_file())),
            flags::IDENTITY_ISSUER_KEY.arg(path(identity.issuer_key_file())),
            flags::IDENTITY_TRUST_ANCHORS.arg(path(identity.anchor_file())),
            flags::LOCAL_TOKEN_SECRET.arg(path(identity.token_secret_file())),
            flags::IDENTITY_LIFETIME.arg(identity.lifetime()),
            // The pod network: what cluster-authenticated trusts here.
            flags::CLUSTER_NETWORKS.arg(format!("{NODE_IP}/16")),
        ];
        argv.extend(
            metrics
                .prometheus_url()
                .map(|u| flags::PROMETHEUS_URL.arg(u)),
        );
        let mut specs = vec![(
            container("controller", argv),
            layout.logs().join("conduit_controller.log"),
        )];
        let files = prometheus::Files::new(layout);
        let prometheus = match metrics {
            Metrics::Run => match process::resolve_program(prometheus::PROGRAM)
                .ok_or_else(|| std::io::Error::other("not found on PATH"))
                .and_then(|program| files.write_config().map(|()| program))
            {
                Ok(program) => {
                    specs.push((
                        container("prometheus", files.argv(&program)),
                        layout.logs().join("prometheus.log"),
                    ));
                    Some((files, Mutex::new(None)))
                }
                Err(error) => {
                    warn!(%error, "cannot run Prometheus: the controller will find none");
                    None
                }
            },
            _ => None,
        };
        let state = Arc::new(Mutex::new(PodState {
            namespace: NAMESPACE.into(),
            name: "controller".into(),
            deployment: "controller".into(),
            index: 0,
            ip: NODE_IP,
            netns: layout.node_netns(),
            meshed: false,
            service_account: String::new(),
            labels: BTreeMap::new(),
            named_ports: BTreeMap::new(),
            probes: Vec::new(),
            default_policy: None,
            phase: "Running".into(),
            ready: true,
            containers: specs
                .iter()
                .map(|(spec, log)| ContainerState {
                    name: spec.name.clone(),
                    log: log.display().to_string(),
                    ..ContainerState::default()
                })
                .collect(),
            message: String::new(),
        }));
        let (stop, stopped) = watch::channel(false);
        let tasks = specs
            .into_iter()
            .enumerate()
            .map(|(i, (spec, log))| {
                tokio::spawn(process::supervise(
                    node.clone(),
                    etc.clone(),
                    spec,
                    i,
                    state.clone(),
                    log,
                    stopped.clone(),
                ))
            })
            .collect();
        Some(ControlPlane {
            state,
            stop,
            tasks,
            prometheus,
        })
    }

    /// Points the Prometheus (if one runs) at the meshed pods among `pods`.
    pub fn observe(&self, pods: &[PodState]) {
        let Some((files, written)) = &self.prometheus else {
            return;
        };
        let targets = prometheus::targets(pods);
        let mut written = written.lock();
        if written.as_ref() == Some(&targets) {
            return;
        }
        match files.write_targets(&targets) {
            Ok(()) => *written = Some(targets),
            Err(error) => warn!(%error, "writing Prometheus' targets failed"),
        }
    }

    /// Its processes, as the state file shows them.
    pub fn containers(&self) -> Vec<ContainerState> {
        self.state.lock().containers.clone()
    }

    /// Stops it and waits until its processes are gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// A control-plane container: a command line, run as root in the node namespace.
fn container(name: &str, argv: Vec<String>) -> ContainerSpec {
    ContainerSpec {
        name: name.into(),
        argv,
        env: Vec::new(),
        ports: BTreeMap::new(),
        readiness: None,
        run_as_user: None,
        sidecar: false,
        after_sidecars: false,
        post_start: None,
    }
}
