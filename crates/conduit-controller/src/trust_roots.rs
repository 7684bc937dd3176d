//! Publishes the mesh's trust anchors into every namespace as the ConfigMap
//! `conduit-identity-trust-roots`, which injected proxies read (a `configMapKeyRef`
//! cannot reach across namespaces), the way kube-controller-manager publishes
//! `kube-root-ca.crt`. Server-side apply creates a namespace's copy or puts an edited one
//! right; every copy is applied again every [`RESYNC`], and failures are retried.

use crate::discovery::Workloads;
use conduit_api::{
    control_plane::CONTROLLER,
    names::{CONTROL_PLANE_NS_LABEL, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY},
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use std::{collections::BTreeSet, sync::Arc, time::Duration};
use tokio::sync::watch;

/// How often every copy is applied again (repairs deleted or edited copies).
const RESYNC: Duration = Duration::from_secs(600);
/// How soon a failed namespace is tried again.
const RETRY: Duration = Duration::from_secs(5);

/// Keeps the ConfigMap in every namespace discovery knows, except the control plane's
/// own (`conduit install` writes that one), until `workloads` closes.
pub async fn publish(
    client: Client,
    mut workloads: watch::Receiver<Arc<Workloads>>,
    anchors_pem: String,
    control_plane_ns: String,
) {
    let mut published: BTreeSet<String> = BTreeSet::new();
    let mut resync = tokio::time::interval(RESYNC);
    resync.tick().await;
    loop {
        let namespaces = workloads.borrow_and_update().namespaces.clone();
        published.retain(|ns| namespaces.contains(ns));
        let mut failed = false;
        for ns in &namespaces {
            if *ns == control_plane_ns || published.contains(ns) {
                continue;
            }
            match apply(&client, ns, &anchors_pem, &control_plane_ns).await {
                Ok(()) => {
                    tracing::debug!(namespace = %ns, "trust anchors published");
                    published.insert(ns.clone());
                }
                Err(error) => {
                    tracing::warn!(namespace = %ns, %error, "could not publish the trust anchors; will retry");
                    failed = true;
                }
            }
        }
        let retry = async {
            match failed {
                true => tokio::time::sleep(RETRY).await,
                false => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = workloads.changed() => if changed.is_err() { return },
            _ = resync.tick() => published.clear(),
            () = retry => {}
        }
    }
}

async fn apply(
    client: &Client,
    namespace: &str,
    anchors_pem: &str,
    control_plane_ns: &str,
) -> Result<(), kube::Error> {
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": TRUST_ROOTS_CONFIGMAP,
            "namespace": namespace,
            "labels": { CONTROL_PLANE_NS_LABEL: control_plane_ns },
        },
        "data": { TRUST_ROOTS_KEY: anchors_pem },
    });
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams::apply(CONTROLLER).force();
    api.patch(TRUST_ROOTS_CONFIGMAP, &params, &Patch::Apply(&config_map))
        .await
        .map(drop)
}
