//! The control plane on one host: `conduit-controller` found next to this binary,
//! discovering from the state file, serving its API on a socket in the run directory and
//! the Destination and Identity APIs on the node's address, with the runtime's identity
//! material; supervised like a pod's container, but in the node namespace. Knows nothing
//! of pods or Services (the controller reads them from the state file).

use crate::{
    identity::LocalIdentity,
    layout::{Layout, DESTINATION_PORT, NODE_IP},
    net, process,
    spec::ContainerSpec,
    state::{ContainerState, PodState},
};
use conduit_netns::NetNs;
use parking_lot::Mutex;
use std::{collections::BTreeMap, sync::Arc};
use tokio::{sync::watch, task::JoinHandle};
use tracing::warn;

/// The running control plane.
pub struct ControlPlane {
    state: Arc<Mutex<PodState>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl ControlPlane {
    /// Starts `conduit-controller`. Without it pods still run; only the metrics API is
    /// missing, which `status` shows: `None`, said in the log.
    pub fn start(
        layout: &Layout,
        node: Arc<NetNs>,
        identity: &LocalIdentity,
    ) -> Option<ControlPlane> {
        let Some(controller) = process::resolve_program("conduit-controller") else {
            warn!("conduit-controller was not found next to conduit or on PATH: running without a control plane");
            return None;
        };
        let etc = layout.etc().join("node");
        if let Err(error) = net::write_etc(&etc, "127.0.0.1\tlocalhost\n", "conduit") {
            warn!(%error, "writing the node's /etc files failed");
            return None;
        }
        let path = |p: std::path::PathBuf| p.display().to_string();
        let spec = ContainerSpec {
            name: "controller".into(),
            argv: vec![
                path(controller),
                "--local-state".into(),
                path(layout.state()),
                "--api-socket".into(),
                path(layout.api_socket()),
                "--scrape-interval".into(),
                "5s".into(),
                "--destination-addr".into(),
                format!("{NODE_IP}:{DESTINATION_PORT}"),
                "--identity-issuer-cert".into(),
                path(identity.issuer_cert_file()),
                "--identity-issuer-key".into(),
                path(identity.issuer_key_file()),
                "--identity-trust-anchors".into(),
                path(identity.anchor_file()),
                "--local-token-secret".into(),
                path(identity.token_secret_file()),
                "--identity-lifetime".into(),
                identity.lifetime().to_string(),
                // The pod network: what cluster-authenticated trusts here.
                "--cluster-networks".into(),
                format!("{NODE_IP}/16"),
            ],
            env: Vec::new(),
            ports: BTreeMap::new(),
            readiness: None,
            run_as_user: None,
            sidecar: false,
            after_sidecars: false,
            post_start: None,
        };
        let log = layout.logs().join("conduit_controller.log");
        let state = Arc::new(Mutex::new(PodState {
            namespace: "conduit".into(),
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
            containers: vec![ContainerState {
                name: spec.name.clone(),
                log: log.display().to_string(),
                ..ContainerState::default()
            }],
            message: String::new(),
        }));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(process::supervise(
            node,
            etc,
            spec,
            0,
            state.clone(),
            log,
            stopped,
        ));
        Some(ControlPlane { state, stop, task })
    }

    /// Its processes, as the state file shows them.
    pub fn containers(&self) -> Vec<ContainerState> {
        self.state.lock().containers.clone()
    }

    /// Stops it and waits until its processes are gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}
