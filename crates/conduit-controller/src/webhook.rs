//! The proxy injector's HTTPS endpoint: the API server POSTs AdmissionReviews for new pods
//! to `/inject` (the MutatingWebhookConfiguration `conduit install` writes); the answer
//! comes from `conduit_k8s::webhook`, the same injection as `conduit inject`. TLS with the
//! serving certificate install made; whatever cannot be handled is allowed unchanged.

use crate::discovery::{SourceHealth, Workloads};
use anyhow::Context as _;
use axum::{body::Bytes, extract::State, routing::post, Json, Router};
use conduit_api::control_plane::INJECTOR_PATH;
use conduit_k8s::inject::InjectOptions;
use std::{path::Path, sync::Arc};
use tokio::{net::TcpListener, sync::watch};
use tokio_rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};
use tracing::info;

/// The certificate chain and key of `dir/tls.crt` and `dir/tls.key` (a Kubernetes TLS
/// Secret): what the injector and the API serve with.
pub fn serving_certificate(
    dir: &Path,
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    let certs = CertificateDer::pem_file_iter(&cert)
        .with_context(|| format!("reading {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{} holds no PEM certificate", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&key)
        .with_context(|| format!("reading the private key {}", key.display()))?;
    Ok((certs, key))
}

/// The TLS configuration from `dir/tls.crt` and `dir/tls.key` (a Kubernetes TLS Secret).
pub fn tls_config(dir: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let (certs, key) = serving_certificate(dir)?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the webhook's certificate and key do not fit together")
}

/// How long a review waits for discovery's first snapshot after a start (the API server
/// gives the webhook 10 s).
const FIRST_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the injector reads: its options, and discovery for namespaces' annotations.
struct Injector {
    opts: InjectOptions,
    workloads: watch::Receiver<Arc<Workloads>>,
    health: watch::Receiver<SourceHealth>,
}

/// Serves `/inject` over TLS on `listener` until the process ends.
pub async fn serve(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    opts: InjectOptions,
    workloads: watch::Receiver<Arc<Workloads>>,
    health: watch::Receiver<SourceHealth>,
) {
    let injector = Injector {
        opts,
        workloads,
        health,
    };
    let router = Router::new()
        .route(INJECTOR_PATH, post(inject))
        .with_state(Arc::new(injector));
    crate::https::serve(listener, tls, "proxy injector", move |_| router.clone()).await;
}

async fn inject(State(injector): State<Arc<Injector>>, body: Bytes) -> Json<serde_json::Value> {
    // Right after a start, namespaces' annotations are unknown until discovery's first
    // snapshot: wait for it rather than let a pod of an annotated namespace through bare.
    let mut health = injector.health.clone();
    let synced = health.wait_for(|h| h.synced);
    if tokio::time::timeout(FIRST_SNAPSHOT_WAIT, synced)
        .await
        .is_err()
    {
        tracing::warn!("answering without namespaces' annotations: discovery has no snapshot yet");
    }
    let workloads = injector.workloads.borrow().clone();
    let answer = conduit_k8s::webhook::review(&body, &injector.opts, |ns| {
        workloads.inject_namespaces.contains(ns)
    });
    let patched = answer["response"].get("patch").is_some();
    info!(uid = %answer["response"]["uid"], patched, "admission review");
    Json(answer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Over real HTTPS (curl, checking the certificate against the webhook's CA), a real
    /// AdmissionReview gets a patch that, applied with the `jsonpatch` library, gives the
    /// pod exactly what `conduit inject` gives it.
    #[tokio::test]
    async fn the_patch_over_https_equals_conduit_inject() {
        let dir = std::env::temp_dir().join(format!("conduit-webhook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (ca, cert, key) = conduit_identity::ca::serving_certificate(
            &["localhost".to_string()],
            std::time::Duration::from_secs(3600),
        )
        .unwrap();
        std::fs::write(dir.join("ca.crt"), ca).unwrap();
        std::fs::write(dir.join("tls.crt"), cert).unwrap();
        std::fs::write(dir.join("tls.key"), key).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // The pod asks for nothing: its namespace is annotated for injection, which
        // discovery learns just after the review arrives (a controller that just
        // started): the review waits for it.
        let (workloads_tx, workloads) = watch::channel(Arc::new(Workloads::default()));
        let (health_tx, health) = watch::channel(SourceHealth::default());
        tokio::spawn(serve(
            listener,
            tls_config(&dir).unwrap(),
            InjectOptions::default(),
            workloads,
            health,
        ));
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            workloads_tx.send_replace(Arc::new(Workloads {
                inject_namespaces: ["emojivoto".to_string()].into(),
                ..Workloads::default()
            }));
            health_tx.send_replace(SourceHealth {
                synced: true,
                problems: Vec::new(),
            });
        });

        let pod = serde_json::json!({
            "metadata": { "generateName": "web-5d4f8b8c7-", "namespace": "emojivoto",
                          "labels": { "app": "web" } },
            "spec": { "serviceAccountName": "web", "containers": [{ "name": "web", "image": "web:1", "ports": [{ "containerPort": 8080 }] }] },
        });
        let review = serde_json::json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": { "uid": "d2a1c3f0-0000-4000-8000-000000000001",
                         "kind": { "group": "", "version": "v1", "kind": "Pod" },
                         "resource": { "group": "", "version": "v1", "resource": "pods" },
                         "namespace": "emojivoto", "operation": "CREATE", "object": pod },
        });
        std::fs::write(dir.join("review.json"), review.to_string()).unwrap();
        let curl = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || {
                Command::new("curl")
                    .args(["-sS", "--fail", "--cacert"])
                    .arg(dir.join("ca.crt"))
                    .args(["-H", "content-type: application/json", "--data-binary"])
                    .arg(format!("@{}", dir.join("review.json").display()))
                    .arg(format!("https://localhost:{port}/inject"))
                    .output()
                    .unwrap()
            }
        })
        .await
        .unwrap();
        assert!(
            curl.status.success(),
            "{}",
            String::from_utf8_lossy(&curl.stderr)
        );
        let answer: serde_json::Value = serde_json::from_slice(&curl.stdout).unwrap();
        assert_eq!(
            answer["response"]["uid"],
            "d2a1c3f0-0000-4000-8000-000000000001"
        );
        assert_eq!(answer["response"]["allowed"], true);
        std::fs::write(dir.join("answer.json"), &curl.stdout).unwrap();
        std::fs::write(dir.join("pod.json"), pod.to_string()).unwrap();
        let apply = r#"
import base64, json, sys, jsonpatch
answer = json.load(open(sys.argv[1]))
patch = json.loads(base64.b64decode(answer["response"]["patch"]))
print(json.dumps(jsonpatch.apply_patch(json.load(open(sys.argv[2])), patch)))
"#;
        let patched = Command::new("python3")
            .args(["-c", apply])
            .arg(dir.join("answer.json"))
            .arg(dir.join("pod.json"))
            .output()
            .unwrap();
        assert!(
            patched.status.success(),
            "{}",
            String::from_utf8_lossy(&patched.stderr)
        );
        let patched: serde_json::Value = serde_json::from_slice(&patched.stdout).unwrap();

        let mut as_manifest = pod.clone();
        as_manifest["apiVersion"] = "v1".into();
        as_manifest["kind"] = "Pod".into();
        let injected =
            conduit_k8s::inject::inject(&as_manifest.to_string(), "-", &InjectOptions::default())
                .unwrap()
                .output;
        let expected = conduit_k8s::manifest::parse(&injected, "-")
            .unwrap()
            .remove(0)
            .value;
        assert_eq!(patched["spec"], expected["spec"]);
        assert_eq!(patched["metadata"], expected["metadata"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
