//! The CLI against a Kubernetes cluster, where none can run: an in-memory API server
//! (`conduit-kube-fake`, real HTTP, payloads shaped like kube-apiserver's) holding what
//! `conduit install | kubectl apply -f -` leaves, the real controller running against it
//! as its Deployment runs (its API over TLS with the install's certificate), and the CLI
//! reaching both with a kubeconfig, through the API server's aggregator as it would on a
//! cluster (the fake authenticates the kubeconfig's token, applies RBAC and calls the
//! controller with its front-proxy certificate). `conduit check` (installed, `--pre`,
//! `--proxy`) and `stat` are checked for what they say when all is well and when not, and
//! `stat`, `tap` and `top` for users bound to the install's roles or to none, and `conduit
//! dashboard` through the API server (pages for every authenticated user, the API per role).

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
/// Commands that reach the controller have the API server check their user's RBAC, then
/// the controller check it again.
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
    let api_tls = dir.join("api-tls");
    std::fs::create_dir_all(&api_tls).expect("api-tls dir");
    for doc in conduit_k8s::manifest::parse(&manifest, "install").expect("install's YAML") {
        if doc.is_empty() {
            continue;
        }
        // The API's serving certificate, where the Deployment mounts it.
        if doc.value["kind"] == "Secret" && doc.value["metadata"]["name"] == "conduit-api-tls" {
            for file in ["tls.crt", "tls.key"] {
                let pem = doc.value["stringData"][file].as_str().expect("PEM");
                std::fs::write(api_tls.join(file), pem).expect("certificate");
            }
        }
        api.apply(doc.value);
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
                     "initContainers": [{"name": "conduit-proxy", "image": "ghcr.io/conduit/proxy", "restartPolicy": "Always",
                                         "env": [{"name": "CONDUIT_PROXY_OPAQUE_PORTS", "value": "3306,13306"}]}],
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
        .arg(format!("--api-tls-dir={}", api_tls.display()))
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
        "√ the Servers, AuthorizationPolicies, ServiceProfiles and HTTPRoutes can be used",
        "√ the control plane pods are ready (1)",
        "√ the control plane API answers",
        "√ the proxy injector is configured",
        "√ the issuer is valid, signed by the trust anchor, and holds its key",
        "√ the trust anchor is valid for at least 30 days",
        "Status check results are √",
    ] {
        assert!(said.contains(line), "{line:?} missing:\n{said}");
    }

    // stat through the aggregator: the meshed deployment the controller discovered.
    let out = conduit(&kubeconfig, &["stat", "deploy", "-n", "emojivoto"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("web"), "{}", text(&out));
    assert!(api.requests().iter().any(|r| r.starts_with(
        "GET /apis/api.conduit.io/v1alpha1/namespaces/emojivoto/stats?resource=deploy"
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
    assert!(
        said.contains("√ opaque ports, forwarded without protocol detection: 3306,13306 (emojivoto/web-5d4f8b8c7-x2x7q)"),
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

    // A ServiceProfile and an HTTPRoute the controller would refuse: named, with the
    // field.
    api.apply(json!({
        "apiVersion": "conduit.io/v1alpha1", "kind": "ServiceProfile",
        "metadata": {"name": "web-svc.emojivoto.svc.cluster.local", "namespace": "emojivoto"},
        "spec": {"routes": [{"name": "list", "condition": {"pathRegex": "/api/(list"}}]},
    }));
    api.apply(json!({
        "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "web-canary", "namespace": "emojivoto"},
        "spec": {
            "parentRefs": [{"group": "", "kind": "Service", "name": "web-svc"}],
            "rules": [{"backendRefs": [{"name": "web-canary"}]}],
        },
    }));
    let out = conduit(&kubeconfig, &["check"]).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("× the Servers, AuthorizationPolicies, ServiceProfiles and HTTPRoutes can be used
    the Kubernetes API, document 1 (ServiceProfile emojivoto/web-svc.emojivoto.svc.cluster.local): spec.routes[0].condition.pathRegex: not a regex"),
        "{said}"
    );
    assert!(
        said.contains("the Kubernetes API, document 1 (HTTPRoute emojivoto/web-canary): spec.rules[0].backendRefs[0].port: missing"),
        "{said}"
    );
    api.delete(
        "gateway.networking.k8s.io/v1",
        "HTTPRoute",
        "emojivoto",
        "web-canary",
    );
    api.delete(
        "conduit.io/v1alpha1",
        "ServiceProfile",
        "emojivoto",
        "web-svc.emojivoto.svc.cluster.local",
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

/// Asserts that `out` failed saying each of `said`.
fn refused(out: &Output, said: &[&str]) {
    let text = text(out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for s in said {
        assert!(text.contains(s), "{s:?} missing: {text}");
    }
}

/// A user's kubeconfig for the fake: `name`'s bearer token, in `groups`.
fn user(api: &FakeApiServer, dir: &Path, name: &str, groups: &[&str]) -> PathBuf {
    let token = format!("{name}-token");
    api.add_user(&token, name, groups);
    let kubeconfig = dir.join(format!("kubeconfig-{name}"));
    std::fs::write(&kubeconfig, api.kubeconfig_with(&token)).expect("kubeconfig");
    kubeconfig
}

/// Binds ClusterRole `role` in emojivoto to `name`, a user.
fn bind(api: &FakeApiServer, role: &str, name: &str) {
    api.apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": format!("{name}-{role}"), "namespace": "emojivoto"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
        "subjects": [{"kind": "User", "name": name, "apiGroup": "rbac.authorization.k8s.io"}],
    }));
}

#[tokio::test]
async fn the_public_api_is_for_users_rbac_allows() {
    let dir = std::env::temp_dir().join(format!("conduit-cluster-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _dir = TempDir(dir.clone());
    let api = FakeApiServer::start().await.expect("fake API server");
    let (_admin, _controller) = installed(&api, &dir).await;
    let stat = ["stat", "deploy", "-n", "emojivoto"];
    let tap = ["tap", "deploy/web", "-n", "emojivoto", "--max", "1"];
    let top = ["top", "deploy/web", "-n", "emojivoto", "--window", "1s"];

    // No binding: refused, with the role to bind.
    let nobody = user(&api, &dir, "mallory", &[]);
    refused(
        &conduit(&nobody, &stat).await,
        &[
            "User \"mallory\" cannot list resource \"stats\" in API group \"api.conduit.io\" in the namespace \"emojivoto\"",
            "bind the ClusterRole conduit-viewer (kubectl create rolebinding NAME -n emojivoto --clusterrole=conduit-viewer",
        ],
    );

    // The viewer: stat, but neither tap nor top.
    let viewer = user(&api, &dir, "vera", &[]);
    bind(&api, "conduit-viewer", "vera");
    let out = conduit(&viewer, &stat).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("web"), "{}", text(&out));
    for args in [&tap[..], &top[..]] {
        refused(
            &conduit(&viewer, args).await,
            &["cannot watch resource", "bind the ClusterRole conduit-tap"],
        );
    }
    // In every namespace, the viewer is refused too.
    refused(
        &conduit(&viewer, &["stat", "deploy", "-A"]).await,
        &["at the cluster scope"],
    );

    // The tap role: top answers (nothing taps here: no requests in its window).
    let tapper = user(&api, &dir, "tom", &[]);
    bind(&api, "conduit-tap", "tom");
    let out = conduit(&tapper, &top).await;
    assert!(out.status.success(), "{}", text(&out));
    refused(&conduit(&tapper, &stat).await, &["cannot list resource"]);

    // An unknown token: the API server does not authenticate it.
    let stranger = dir.join("kubeconfig-stranger");
    std::fs::write(&stranger, api.kubeconfig_with("made-up")).expect("kubeconfig");
    refused(
        &conduit(&stranger, &stat).await,
        &["did not authenticate you"],
    );
}

/// `conduit dashboard` with `kubeconfig`, on a free port: its process and URL.
async fn dashboard(kubeconfig: &Path) -> (Killed, String) {
    let mut child = Command::new(CONDUIT)
        .args(["dashboard", "--port", "0", "--show", "url", "--kubeconfig"])
        .arg(kubeconfig)
        .env(
            "CONDUIT_LOCAL_DIR",
            kubeconfig.with_file_name("no-local-runtime"),
        )
        .env_remove("SUDO_UID")
        .stdout(Stdio::piped())
        .spawn()
        .expect("conduit dashboard");
    let stdout = child.stdout.take().expect("stdout");
    let child = Killed(child);
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("a line");
        line
    })
    .await
    .expect("joined");
    let url = line
        .trim()
        .strip_prefix("Conduit dashboard available at ")
        .unwrap_or_else(|| panic!("the dashboard says where it is: {line:?}"))
        .to_string();
    (child, url)
}

/// `GET url` with curl: the status, the headers and the body.
async fn curl(url: String) -> (u16, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        Command::new("curl")
            .args(["--silent", "--max-time", "20", "--dump-header", "-"])
            .arg(url)
            .output()
            .expect("curl")
    })
    .await
    .expect("joined");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_string())
}

#[tokio::test]
async fn the_dashboard_on_a_cluster_goes_through_the_api_server() {
    let dir = std::env::temp_dir().join(format!("conduit-cluster-dash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let _dir = TempDir(dir.clone());
    let api = FakeApiServer::start().await.expect("fake API server");
    let (_admin, _controller) = installed(&api, &dir).await;
    let viewer = user(&api, &dir, "vera", &[]);
    bind(&api, "conduit-viewer", "vera");
    let (_process, url) = dashboard(&viewer).await;

    // The pages and their files, from the controller through the aggregator.
    for page in ["/", "/namespaces/emojivoto/topology"] {
        let (status, head, body) = curl(format!("{url}{page}")).await;
        assert_eq!(status, 200, "{page}: {head}{body}");
        assert!(
            head.contains("content-security-policy: default-src 'none'"),
            "{head}"
        );
        assert!(body.contains("/assets/app.js"), "{body}");
    }
    let (status, head, _) = curl(format!("{url}/assets/pages.js")).await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(api
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /apis/api.conduit.io/v1alpha1/dashboard/index.html")));

    // The API, in the viewer's namespace: answered; elsewhere, or tap: refused, saying
    // which role to bind.
    let (status, _, body) = curl(format!(
        "{url}/api/v1/stat?resource=deploy&namespace=emojivoto"
    ))
    .await;
    assert_eq!(status, 200, "{body}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&body).expect("stat rows");
    assert!(rows.iter().any(|r| r["name"] == "web"), "{body}");
    let error = |body: &str| -> String {
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        v["error"].as_str().expect("an ApiError").to_string()
    };
    let (status, _, body) = curl(format!("{url}/api/v1/stat?resource=deploy")).await;
    assert_eq!(status, 403, "{body}");
    assert!(
        error(&body)
            .contains("kubectl create clusterrolebinding NAME --clusterrole=conduit-viewer"),
        "{body}"
    );
    let (status, _, body) = curl(format!(
        "{url}/api/v1/tap?resource=deploy&namespace=emojivoto"
    ))
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(error(&body).contains("--clusterrole=conduit-tap"), "{body}");
    let (status, _, body) = curl(format!("{url}/api/v1/nothing")).await;
    assert_eq!(status, 404, "{body}");
    assert!(
        error(&body).contains("no such path: /api/v1/nothing"),
        "{body}"
    );

    // Any authenticated user gets the files (they hold no data), but not the API.
    let nobody = user(&api, &dir, "mallory", &[]);
    let (_other, other) = dashboard(&nobody).await;
    let (status, _, _) = curl(format!("{other}/")).await;
    assert_eq!(status, 200);
    let (status, _, body) = curl(format!("{other}/api/v1/namespaces")).await;
    assert_eq!(status, 403, "{body}");
    assert!(error(&body).contains("conduit-viewer"), "{body}");
    // A token the API server does not know: not even the page.
    let stranger = dir.join("kubeconfig-stranger");
    std::fs::write(&stranger, api.kubeconfig_with("made-up")).expect("kubeconfig");
    let (_third, third) = dashboard(&stranger).await;
    let (status, _, body) = curl(format!("{third}/")).await;
    assert_eq!(status, 401, "{body}");
    assert!(error(&body).contains("did not authenticate you"), "{body}");
}
