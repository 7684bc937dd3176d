//! The CLI against a Kubernetes cluster, where none can run: an in-memory API server
//! (`conduit-kube-fake`, real HTTP, payloads shaped like kube-apiserver's) holding what
//! `conduit install | kubectl apply -f -` leaves, the real controller running against it
//! as its Deployment runs, and the CLI reaching both with a kubeconfig, through the API
//! server's service proxy as it would on a cluster. `conduit check` (installed, `--pre`,
//! `--proxy`) and `stat` are checked for what they say when all is well and when not.

mod common;
use common::*;
use conduit_kube_fake::FakeApiServer;
use serde_json::json;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `conduit ARGS --kubeconfig FILE`, run off the test's runtime (which serves the fake).
async fn conduit(kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(CONDUIT);
    cmd.args(args).arg("--kubeconfig").arg(kubeconfig).env(
        "CONDUIT_LOCAL_DIR",
        kubeconfig.with_file_name("no-local-runtime"),
    );
    tokio::task::spawn_blocking(move || cmd.output().expect("conduit runs"))
        .await
        .expect("joined")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The cluster after `conduit install | kubectl apply -f -` and a meshed app, with the
/// controller running against it; returns the kubeconfig.
async fn installed(api: &FakeApiServer, dir: &Path) -> (PathBuf, Killed) {
    let out = Command::new(CONDUIT)
        .arg("install")
        .output()
        .expect("install");
    assert!(out.status.success(), "{}", text(&out));
    let manifest = String::from_utf8_lossy(&out.stdout);
    for doc in conduit_k8s::manifest::parse(&manifest, "install").expect("install's YAML") {
        if !doc.is_empty() {
            api.apply(doc.value);
        }
    }
    // What the Deployment's ReplicaSet would have made, ready.
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "conduit-controller-6c9f7b8d5-q4w2e", "namespace": "conduit",
                     "labels": {"app.kubernetes.io/name": "conduit-controller", "pod-template-hash": "6c9f7b8d5"}},
        "spec": {"containers": [{"name": "controller", "image": "ghcr.io/conduit/controller:0.1.0"}]},
        "status": {"phase": "Running", "podIP": "10.244.0.5", "conditions": [{"type": "Ready", "status": "True"}]},
    }));
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "emojivoto"}}));
    let meshed = |name: &str, ip: &str, version: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "emojivoto",
                         "labels": {"app": "web-svc", "conduit.io/proxy-deployment": "web"},
                         "annotations": {"conduit.io/proxy-version": version}},
            "spec": {"serviceAccountName": "web",
                     "initContainers": [{"name": "conduit-proxy", "image": "ghcr.io/conduit/proxy", "restartPolicy": "Always"}],
                     "containers": [{"name": "web", "image": "emojivoto-web:v11"}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}],
                       "initContainerStatuses": [{"name": "conduit-proxy", "ready": true, "restartCount": 0,
                                                  "image": "ghcr.io/conduit/proxy", "imageID": ""}]},
        })
    };
    api.apply(meshed(
        "web-5d4f8b8c7-x2x7q",
        "127.0.0.2",
        env!("CARGO_PKG_VERSION"),
    ));
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("kubeconfig");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        l.local_addr().expect("addr").port()
    };
    let controller = Path::new(CONDUIT).with_file_name("conduit-controller");
    let child = Command::new(controller)
        .args(["--kubernetes", &format!("--api-addr=127.0.0.1:{port}")])
        .env("KUBECONFIG", &kubeconfig)
        .stderr(Stdio::null())
        .spawn()
        .expect("the controller (cargo build --workspace builds it)");
    api.proxy_service("conduit", "conduit-api", ([127, 0, 0, 1], port).into());
    let start = Instant::now();
    while !conduit(&kubeconfig, &["check"]).await.status.success() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{}",
            text(&conduit(&kubeconfig, &["check"]).await)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (kubeconfig, Killed(child))
}

#[tokio::test]
async fn check_and_stat_on_a_cluster_through_the_api_server() {
    let dir = std::env::temp_dir().join(format!("conduit-cluster-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _dir = TempDir(dir.clone());
    let api = FakeApiServer::start().await.expect("fake API server");
    let (kubeconfig, _controller) = installed(&api, &dir).await;

    let out = conduit(&kubeconfig, &["check"]).await;
    let said = text(&out);
    for line in [
        "kubernetes-api\n--------------\n√ can initialize the client\n√ can query the Kubernetes API\n√ is running the minimum Kubernetes version (1.29)",
        "√ the control plane namespace conduit exists",
        "√ the CRDs are installed",
        "√ the control plane pods are ready (1)",
        "√ the control plane API answers",
        "√ the proxy injector is configured",
        "√ the issuer is valid, signed by the trust anchor, and holds its key",
        "√ the trust anchor is valid for at least 30 days",
        "Status check results are √",
    ] {
        assert!(said.contains(line), "{line:?} missing:\n{said}");
    }

    // stat through the service proxy: the meshed deployment the controller discovered.
    let out = conduit(&kubeconfig, &["stat", "deploy", "-n", "emojivoto"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("web"), "{}", text(&out));
    assert!(api.requests().iter().any(|r| r.starts_with(
        "GET /api/v1/namespaces/conduit/services/http:conduit-api:8085/proxy/api/stat?"
    )));

    // --proxy: the proxy is ready and of this version, but its certificate cannot be read
    // (nothing serves its admin port): named, with a hint.
    let out = conduit(&kubeconfig, &["check", "--proxy"]).await;
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("√ the meshed pods' proxies are ready (1)"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "√ the proxies run this version ({})",
            env!("CARGO_PKG_VERSION")
        )),
        "{said}"
    );
    assert!(
        said.contains("× every meshed proxy is certified\n    emojivoto/web-5d4f8b8c7-x2x7q: "),
        "{said}"
    );

    // --pre on an installed cluster, by a user who may not create Secrets.
    api.deny("create", "", "secrets");
    let out = conduit(&kubeconfig, &["check", "--pre"]).await;
    let said = text(&out);
    assert!(!out.status.success());
    assert!(
        said.contains("× the control plane namespace conduit does not exist yet\n    it exists"),
        "{said}"
    );
    assert!(
        said.contains("√ can create deployments") && said.contains("× can create secrets"),
        "{said}"
    );

    // A missing CRD, an old cluster.
    api.delete(
        "apiextensions.k8s.io/v1",
        "CustomResourceDefinition",
        "",
        "servers.policy.conduit.io",
    );
    api.set_version(1, 27);
    let out = conduit(&kubeconfig, &["check"]).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(
            "× is running the minimum Kubernetes version (1.29)\n    the API server is v1.27.4"
        ),
        "{said}"
    );
    assert!(
        said.contains("× the CRDs are installed\n    missing: servers.policy.conduit.io"),
        "{said}"
    );

    // The control plane gone from behind its Service: stat says where to look.
    api.proxy_service("conduit", "conduit-api", ([127, 0, 0, 1], 1).into());
    let out = conduit(&kubeconfig, &["stat", "deploy", "-n", "emojivoto"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is it installed and ready? `conduit check` tells"),
        "{}",
        text(&out)
    );
}

#[tokio::test]
async fn check_pre_passes_on_an_empty_cluster_and_a_bad_kubeconfig_is_named() {
    let dir = std::env::temp_dir().join(format!("conduit-cluster-pre-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _dir = TempDir(dir.clone());
    let api = FakeApiServer::start().await.expect("fake API server");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).expect("kubeconfig");
    let out = conduit(&kubeconfig, &["check", "--pre"]).await;
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("pre-kubernetes-setup\n--------------------\n√ the control plane namespace conduit does not exist yet\n√ can create namespaces"), "{said}");
    assert!(api
        .requests()
        .iter()
        .any(|r| r.starts_with("POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews")));

    // Not installed: named, with what to do.
    let out = conduit(&kubeconfig, &["check"]).await;
    assert!(text(&out).contains("× the control plane namespace conduit exists\n    it does not\n    hint: install the control plane"), "{}", text(&out));

    std::fs::write(&kubeconfig, "not: [a kubeconfig").expect("kubeconfig");
    let out = conduit(&kubeconfig, &["check"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("× can initialize the client\n    reading the kubeconfig"),
        "{}",
        text(&out)
    );
    let out = conduit(&kubeconfig, &["check", "--context", "nope"]).await;
    assert_eq!(out.status.code(), Some(1));
}
