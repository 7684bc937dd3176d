//! The controller binary in Kubernetes mode (`--kubernetes`), against the in-memory API
//! server of `conduit-kube-fake` through a kubeconfig, as it would run beside a real API
//! server (none can run here): readiness, Destination answers from the API's objects,
//! identity through TokenReview, the last state kept while the API is unreachable, the
//! installed Deployment with exactly its RBAC, and its public API open only to callers
//! the Kubernetes API authenticates and RBAC allows (directly with a bearer token, or
//! through the fake's aggregator with its front-proxy certificate).

use conduit_api::{
    destination::{destination_client::DestinationClient, update, GetDestination, Update},
    identity::{identity_client::IdentityClient, CertifyRequest},
};
mod common;
use common::{Controller, TempDir};
use conduit_kube_fake::FakeApiServer;
use serde_json::json;
use std::{
    net::TcpListener,
    path::Path,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

/// A port free now and never handed out before in this process: the tests run at once,
/// and the kernel may give a port just released to the next `bind(0)`.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let _ = NEXT.compare_exchange(
        0,
        20_000 + (std::process::id() % 20_000) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let port = NEXT.fetch_add(1, Ordering::SeqCst);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// `GET /ready` with curl over TLS, as the kubelet probes (not checking the certificate):
/// the status code and body.
fn ready(port: u16) -> (String, String) {
    curl(&["-k", &format!("https://127.0.0.1:{port}/ready")])
}

/// curl with `args`: the status code and body.
fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
}

/// A serving certificate for `dns_name` in `dir` (tls.crt, tls.key); its CA.
fn serving_certificate(dir: &Path, dns_name: &str) -> conduit_k8s::install::ServingTls {
    let (ca_pem, cert_pem, key_pem) = conduit_identity::ca::serving_certificate(
        &[dns_name.to_string()],
        Duration::from_secs(3600),
    )
    .expect("a serving certificate");
    std::fs::create_dir_all(dir).expect("certificate dir");
    std::fs::write(dir.join("tls.crt"), &cert_pem).expect("tls.crt");
    std::fs::write(dir.join("tls.key"), &key_pem).expect("tls.key");
    conduit_k8s::install::ServingTls {
        ca_pem,
        cert_pem,
        key_pem,
    }
}

/// The endpoints of an update: (address, identity).
fn endpoints(u: &Update) -> Vec<(String, String)> {
    match &u.update {
        Some(update::Update::Endpoints(set)) => set
            .endpoints
            .iter()
            .map(|e| (e.addr.clone(), e.identity.clone()))
            .collect(),
        other => panic!("expected endpoints, got {other:?}"),
    }
}

/// A gRPC channel to the controller's port over TLS, as a proxy opens it: the controller
/// must prove its identity (chained to `trust`'s anchor); the client presents a
/// certificate for `client` (from `trust`'s issuer) when given, and connects from `from`
/// (a pod's loopback address, so the controller sees the pod as the caller).
async fn grpc(
    port: u16,
    trust: &conduit_identity::ca::TrustFiles,
    client: Option<&str>,
    from: &str,
) -> tonic::transport::Channel {
    use tokio_rustls::rustls::{
        self,
        pki_types::{CertificateDer, PrivateKeyDer, ServerName},
    };
    let roots = conduit_identity::anchors::root_store(&trust.anchor_pem).expect("anchors");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .with_root_certificates(roots);
    let mut config = match client {
        None => builder.with_no_client_auth(),
        Some(name) => {
            let issuer = conduit_identity::ca::Issuer::from_pem(
                &trust.issuer_cert_pem,
                &trust.issuer_key_pem,
            )
            .expect("issuer");
            let key = conduit_identity::request::LocalKey::generate(name).expect("a key");
            let c = issuer
                .certify(
                    &key.csr_der().expect("a CSR"),
                    name,
                    Duration::from_secs(600),
                )
                .expect("certified");
            builder
                .with_client_auth_cert(
                    vec![
                        CertificateDer::from(c.leaf_der),
                        CertificateDer::from(c.issuer_der),
                    ],
                    PrivateKeyDer::try_from(key.key_der()).expect("a key"),
                )
                .expect("a client certificate")
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let controller = ServerName::try_from(conduit_identity::controller_identity(
        conduit_api::control_plane::NAMESPACE,
    ))
    .expect("a name");
    let local: std::net::SocketAddr = format!("{from}:0").parse().expect("an address");
    tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("an endpoint")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let (connector, controller) = (connector.clone(), controller.clone());
            async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.bind(local)?;
                let tcp = socket.connect(([127, 0, 0, 1], port).into()).await?;
                let tls = connector.connect(controller, tcp).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("a TLS connection to the controller")
}

/// web's pod: its address, and the name its bound token is for.
const WEB_POD_IP: &str = "127.0.1.7";
const WEB_POD: &str = "web-5d4f8b8c7-x2x7q";

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Pods have loopback addresses: what the controller sends them (its metrics scrape)
/// stays on this host.
fn emojivoto(api: &FakeApiServer) {
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "emojivoto"}}));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-5d4f8b8c7-x2x7q", "namespace": "emojivoto",
                     "labels": {"app": "web-svc", "pod-template-hash": "5d4f8b8c7"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8b8c7", "uid": "u1", "controller": true}]},
        "spec": {"serviceAccountName": "web",
                 "initContainers": [{"name": "conduit-proxy", "image": "ghcr.io/conduit/proxy:0.1.0", "restartPolicy": "Always"}],
                 "containers": [{"name": "web-svc", "image": "emojivoto-web:v11", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": "127.0.1.7", "podIPs": [{"ip": "127.0.1.7"}],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }));
    api.apply(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web-svc", "namespace": "emojivoto"},
        "spec": {"clusterIP": "10.96.12.34", "selector": {"app": "web-svc"},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
    }));
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-svc-abcde", "namespace": "emojivoto",
                     "labels": {"kubernetes.io/service-name": "web-svc"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.1.7"], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "name": "web-5d4f8b8c7-x2x7q", "namespace": "emojivoto"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }));
}

/// Runs the controller against `api` with its files in `dir`.
fn start(
    api: &FakeApiServer,
    dir: &Path,
    api_port: u16,
    grpc_port: u16,
) -> (Controller, conduit_identity::ca::TrustFiles) {
    std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).expect("kubeconfig");
    let trust =
        conduit_identity::ca::generate(Duration::from_secs(3600), Duration::from_secs(3600))
            .expect("a trust anchor and issuer");
    std::fs::write(dir.join("issuer.crt"), &trust.issuer_cert_pem).expect("issuer");
    std::fs::write(dir.join("issuer.key"), &trust.issuer_key_pem).expect("issuer key");
    std::fs::write(dir.join("anchors.pem"), &trust.anchor_pem).expect("anchors");
    serving_certificate(&dir.join("api-tls"), "localhost");
    let child = Command::new(env!("CARGO_BIN_EXE_conduit-controller"))
        .arg("--kubernetes")
        .arg(format!("--api-addr=127.0.0.1:{api_port}"))
        .arg(format!("--api-tls-dir={}", dir.join("api-tls").display()))
        // The socket, root's only, serves what TCP keeps behind RBAC: the metrics.
        .arg(format!("--api-socket={}", dir.join("api.sock").display()))
        .arg(format!("--destination-addr=127.0.0.1:{grpc_port}"))
        // A client may hold two watches: the test's third is one too many.
        .arg(conduit_api::flags::GRPC_MAX_WATCHES_PER_CLIENT.arg(2))
        .arg(format!(
            "--identity-issuer-cert={}",
            dir.join("issuer.crt").display()
        ))
        .arg(format!(
            "--identity-issuer-key={}",
            dir.join("issuer.key").display()
        ))
        .arg(format!(
            "--identity-trust-anchors={}",
            dir.join("anchors.pem").display()
        ))
        .arg("--publish-trust-anchors")
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(dir.join("controller.log")).expect("log file"))
        .spawn()
        .expect("the controller starts");
    (Controller(child), trust)
}

#[tokio::test]
async fn serves_proxies_from_the_kubernetes_api_and_keeps_the_last_state_when_it_is_gone() {
    let api = FakeApiServer::start().await.expect("fake API server");
    emojivoto(&api);
    api.add_pod_token(
        "web-token",
        "emojivoto",
        "web",
        WEB_POD,
        &["identity.conduit.io"],
    );
    let (api_port, grpc_port) = (free_port(), free_port());
    let temp = TempDir::new("controller-k8s");
    let (_controller, trust) = start(&api, &temp.0, api_port, grpc_port);
    let log = || std::fs::read_to_string(temp.0.join("controller.log")).unwrap_or_default();
    wait_until("the controller ready", || {
        let ok = ready(api_port).0 == "200";
        if !ok && log().contains("Error") {
            panic!("the controller failed: {}", log());
        }
        ok
    })
    .await;
    assert_eq!(ready(api_port).1, "ready\n");

    // Destination over TLS: not without a client certificate; with one, the Service's
    // endpoints, with the identity the pod's proxy proves.
    let web = conduit_identity::identity_name("web", "emojivoto");
    let anonymous = grpc(grpc_port, &trust, None, WEB_POD_IP).await;
    let refused = DestinationClient::new(anonymous)
        .get(GetDestination {
            path: "web-svc.emojivoto.svc.cluster.local:80".into(),
            context_namespace: "default".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let mut destination =
        DestinationClient::new(grpc(grpc_port, &trust, Some(&web), WEB_POD_IP).await);
    let mut updates = destination
        .get(GetDestination {
            path: "web-svc.emojivoto.svc.cluster.local:80".into(),
            context_namespace: "default".into(),
        })
        .await
        .expect("a destination stream")
        .into_inner();
    let first = updates.message().await.expect("an update").expect("a set");
    assert_eq!(
        endpoints(&first),
        [("127.0.1.7:8080".to_string(), web.clone())]
    );

    // A new endpoint in the API reaches the stream.
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-svc-fghij", "namespace": "emojivoto",
                     "labels": {"kubernetes.io/service-name": "web-svc"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.2.9"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }));
    let second = updates.message().await.expect("an update").expect("a set");
    let addrs: Vec<String> = endpoints(&second).into_iter().map(|(a, _)| a).collect();
    assert_eq!(addrs, ["127.0.1.7:8080", "127.0.2.9:8080"]);

    // Identity through TokenReview, over server-authenticated TLS (a proxy has no
    // certificate yet): the projected token proves web's identity only, and only from
    // web's pod.
    let mut identity = IdentityClient::new(grpc(grpc_port, &trust, None, WEB_POD_IP).await);
    let key = conduit_identity::request::LocalKey::generate(&web).expect("a key");
    let certify = |identity: &str, token: &str| CertifyRequest {
        identity: identity.to_string(),
        token: token.to_string(),
        certificate_signing_request: key.csr_der().expect("a CSR"),
    };
    let issued = identity
        .certify(certify(&web, "web-token"))
        .await
        .expect("certified");
    assert!(!issued.into_inner().leaf_certificate.is_empty());
    let voting = conduit_identity::identity_name("voting", "emojivoto");
    let refused = identity
        .certify(certify(&voting, "web-token"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    let mut elsewhere = IdentityClient::new(grpc(grpc_port, &trust, None, "127.0.0.1").await);
    let replayed = elsewhere
        .certify(certify(&web, "web-token"))
        .await
        .unwrap_err();
    assert_eq!(
        replayed.code(),
        tonic::Code::Unauthenticated,
        "{replayed:?}"
    );
    assert!(
        replayed.message().contains(&format!(
            "belongs to pod emojivoto/{WEB_POD} at {WEB_POD_IP}, not to the caller at 127.0.0.1"
        )),
        "{}",
        replayed.message()
    );

    // The trust anchors are published into every namespace but the control plane's,
    // new ones included.
    let anchors = std::fs::read_to_string(temp.0.join("anchors.pem")).expect("anchors");
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "conduit"}}));
    api.apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "books"}}));
    let published = || {
        api.objects("v1", "ConfigMap")
            .iter()
            .filter(|c| c["metadata"]["name"] == "conduit-identity-trust-roots")
            .filter(|c| c["data"]["ca-bundle.crt"] == anchors.as_str())
            .map(|c| {
                c["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect::<Vec<_>>()
    };
    wait_until("the anchors in books", || {
        published().contains(&"books".to_string())
    })
    .await;
    assert_eq!(published(), ["books", "emojivoto"]);
    let applied = api.requests().into_iter().any(|r| {
        r.starts_with("PATCH /api/v1/namespaces/books/configmaps/conduit-identity-trust-roots?")
            && r.contains("fieldManager=conduit-controller")
            && r.contains("force=true")
    });
    assert!(applied, "server-side apply: {:?}", api.requests());

    // The API goes away: still ready, saying it serves the last state; proxies still
    // get answers.
    api.set_unreachable(true);
    wait_until("readiness to name the failure", || {
        ready(api_port).1.contains("serving the last state")
    })
    .await;
    let (code, body) = ready(api_port);
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("pods: failing for"), "{body}");
    let mut again = destination
        .get(GetDestination {
            path: "web-svc.emojivoto:80".into(),
            context_namespace: "default".into(),
        })
        .await
        .expect("a destination stream")
        .into_inner();
    let last = again.message().await.expect("an update").expect("a set");
    assert_eq!(endpoints(&last), endpoints(&second));
    // web's proxy holds two watches now, the most one client may: a third is refused,
    // and counted.
    let refused = destination
        .get(GetDestination {
            path: "web-svc.emojivoto:80".into(),
            context_namespace: "default".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    let socket = temp.0.join("api.sock");
    let (_, metrics) = curl(&[
        "--unix-socket",
        socket.to_str().expect("a UTF-8 path"),
        "http://localhost/metrics",
    ]);
    assert!(
        metrics.contains("grpc_refused_total{limit=\"watches_per_client\"} 1"),
        "{metrics}"
    );
    let unavailable = identity
        .certify(certify(&web, "web-token"))
        .await
        .unwrap_err();
    assert_eq!(
        unavailable.code(),
        tonic::Code::Unavailable,
        "{unavailable:?}"
    );

    api.set_unreachable(false);
    wait_until("readiness clear again", || ready(api_port).1 == "ready\n").await;
}

/// The Deployment `conduit install` writes, running as the kubelet would run it.
struct Installed {
    api: FakeApiServer,
    docs: Vec<serde_json::Value>,
    /// The container's ports, by the port it declares, moved to free loopback ports.
    ports: std::collections::HashMap<String, u16>,
    /// The controller's ClusterRole's rules.
    own_rules: serde_json::Value,
    values: conduit_k8s::install::Values,
    trust: conduit_identity::ca::TrustFiles,
    webhook_ca: String,
    api_ca: String,
    temp: TempDir,
    _controller: Controller,
}

fn find<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && (name.is_empty() || d["metadata"]["name"] == name))
        .unwrap_or_else(|| panic!("install writes no {kind} {name}"))
}

/// Runs the Deployment `conduit install` writes as the kubelet would run it: its
/// container's arguments and environment, its volumes' Secrets and ConfigMaps written
/// where it mounts them, and the API server allowing exactly what its bindings grant
/// (its ClusterRole, and the built-in roles of delegation). Returns once it is ready on
/// its readiness probe.
async fn run_installed(name: &str, sets: &[String]) -> Installed {
    use conduit_api::control_plane::{api_dns_name, webhook_dns_name};
    use conduit_k8s::install::{self, IdentityMaterial, Values};
    let trust =
        conduit_identity::ca::generate(Duration::from_secs(3600), Duration::from_secs(3600))
            .expect("trust");
    let values = Values::build(&[], sets).expect("values");
    let temp = TempDir::new(name);
    let dir = temp.0.clone();
    let webhook = serving_certificate(&dir.join("made"), &webhook_dns_name(&values.namespace));
    let api_tls = serving_certificate(&dir.join("made"), &api_dns_name(&values.namespace));
    let docs = install::render(
        &values,
        &IdentityMaterial {
            anchors_pem: trust.anchor_pem.clone(),
            issuer_cert_pem: trust.issuer_cert_pem.clone(),
            issuer_key_pem: trust.issuer_key_pem.clone(),
        },
        &webhook,
        &api_tls,
    );
    let pod = &find(&docs, "Deployment", "conduit-controller")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];

    // Volumes, as the kubelet projects them.
    let root = |path: &str| dir.join(path.trim_start_matches('/'));
    for mount in container["volumeMounts"].as_array().expect("mounts") {
        let volume = pod["volumes"]
            .as_array()
            .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
            .expect("the mount's volume");
        let data = if let Some(secret) = volume["secret"]["secretName"].as_str() {
            find(&docs, "Secret", secret)["stringData"].clone()
        } else {
            let name = volume["configMap"]["name"]
                .as_str()
                .expect("a ConfigMap volume");
            find(&docs, "ConfigMap", name)["data"].clone()
        };
        let at = root(mount["mountPath"].as_str().expect("mountPath"));
        std::fs::create_dir_all(&at).expect("mount dir");
        for (file, content) in data.as_object().expect("data") {
            std::fs::write(at.join(file), content.as_str().expect("text")).expect("file");
        }
    }
    // Ports: the container's, moved to free loopback ports.
    let mut ports = std::collections::HashMap::new();
    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| {
            let a = a.as_str().expect("string args");
            if let Some((flag, port)) = a.split_once("=0.0.0.0:") {
                let free = free_port();
                ports.insert(port.to_string(), free);
                format!("{flag}=127.0.0.1:{free}")
            } else if let Some((flag, path)) = a.split_once("=/var/run/conduit") {
                format!(
                    "{flag}={}",
                    root(&format!("/var/run/conduit{path}")).display()
                )
            } else {
                a.to_string()
            }
        })
        .collect();
    let probe = &container["readinessProbe"]["httpGet"];
    assert_eq!(probe["scheme"], "HTTPS", "the API port speaks only TLS");
    let api_port = ports[&probe["port"].to_string()];

    let api = FakeApiServer::start().await.expect("fake API server");
    emojivoto(&api);
    api.apply(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "emojivoto",
        "annotations": {"conduit.io/inject": "enabled"}}}),
    );
    api.add_pod_token(
        "web-token",
        "emojivoto",
        "web",
        WEB_POD,
        &["identity.conduit.io"],
    );
    // What the controller's bindings grant it: its ClusterRole, and the roles of the
    // cluster (the fake has them, as a cluster does) its other bindings name.
    let own_rules = find(&docs, "ClusterRole", "conduit-controller")["rules"].clone();
    let mut granted = own_rules.as_array().cloned().unwrap_or_default();
    for binding in docs
        .iter()
        .filter(|d| d["kind"] == "ClusterRoleBinding" || d["kind"] == "RoleBinding")
        .filter(|d| d["subjects"][0]["name"] == "conduit-controller")
    {
        let role = &binding["roleRef"];
        if role["name"] == "conduit-controller" {
            continue;
        }
        let kind = role["kind"].as_str().expect("a role kind");
        let held = api.objects("rbac.authorization.k8s.io/v1", kind);
        let held = held
            .iter()
            .find(|r| r["metadata"]["name"] == role["name"])
            .unwrap_or_else(|| panic!("the cluster has no {kind} {}", role["name"]));
        granted.extend(held["rules"].as_array().cloned().unwrap_or_default());
    }
    api.restrict_to(&serde_json::Value::Array(granted));
    std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).expect("kubeconfig");
    let mut child = Command::new(env!("CARGO_BIN_EXE_conduit-controller"));
    child.args(&args).env("KUBECONFIG", dir.join("kubeconfig"));
    for env in container["env"].as_array().into_iter().flatten() {
        child.env(
            env["name"].as_str().expect("name"),
            env["value"].as_str().unwrap_or(""),
        );
    }
    let controller = Controller(
        child
            .stderr(std::fs::File::create(dir.join("controller.log")).expect("log file"))
            .spawn()
            .expect("the controller starts"),
    );
    let path = probe["path"].as_str().expect("probe path");
    wait_until("ready on the readiness probe", || {
        curl(&["-k", &format!("https://127.0.0.1:{api_port}{path}")]).0 == "200"
    })
    .await;
    Installed {
        api,
        docs,
        ports,
        own_rules,
        values,
        trust,
        webhook_ca: webhook.ca_pem,
        api_ca: api_tls.ca_pem,
        temp,
        _controller: controller,
    }
}

/// The installed Deployment must become ready on its readiness probe, need no
/// permission it lacks, and use every one of its own ClusterRole (least privilege).
#[tokio::test]
async fn the_installed_deployment_runs_with_exactly_its_rbac() {
    // A proxy image of one's own, and the proxy as a regular container.
    let sets = [
        "proxy.image=registry.example/proxy:dev".to_string(),
        "proxy.nativeSidecar=false".to_string(),
    ];
    let installed = run_installed("installed", &sets).await;
    let (api, ports, trust, dir) = (
        &installed.api,
        &installed.ports,
        &installed.trust,
        installed.temp.0.clone(),
    );
    let ca_pem = installed.webhook_ca.clone();
    let values = &installed.values;

    // A proxy certifies (TokenReview); the anchors reach the namespace; the injector
    // answers for a pod of an annotated namespace.
    let grpc_port = ports["8086"];
    let mut identity = IdentityClient::new(grpc(grpc_port, trust, None, WEB_POD_IP).await);
    let web = conduit_identity::identity_name("web", "emojivoto");
    let key = conduit_identity::request::LocalKey::generate(&web).expect("a key");
    identity
        .certify(CertifyRequest {
            identity: web.clone(),
            token: "web-token".into(),
            certificate_signing_request: key.csr_der().expect("a CSR"),
        })
        .await
        .expect("certified through a TokenReview");
    wait_until("the trust anchors in emojivoto", || {
        api.objects("v1", "ConfigMap").iter().any(|c| {
            c["metadata"]["namespace"] == "emojivoto"
                && c["data"]["ca-bundle.crt"] == trust.anchor_pem.as_str()
        })
    })
    .await;
    assert_eq!(
        api.forbidden(),
        Vec::<String>::new(),
        "requests its role does not allow"
    );
    let unused: Vec<serde_json::Value> = api
        .unused_rules()
        .into_iter()
        .filter(|r| {
            installed
                .own_rules
                .as_array()
                .is_some_and(|own| own.contains(r))
        })
        .collect();
    assert!(
        unused.is_empty(),
        "rules the controller never needed: {unused:?}"
    );
    let dns = conduit_api::control_plane::webhook_dns_name(&values.namespace);
    let webhook_port = ports["8443"];
    std::fs::write(dir.join("ca.pem"), &ca_pem).expect("ca");
    let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "0b1c2d3e-0000-4000-8000-000000000002", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "namespace": "emojivoto", "operation": "CREATE",
        "object": {"metadata": {"generateName": "web-", "namespace": "emojivoto"},
                   "spec": {"containers": [{"name": "web", "image": "web:1"}]}}}});
    let out = Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(dir.join("ca.pem"))
        .args(["--resolve", &format!("{dns}:{webhook_port}:127.0.0.1")])
        .args([
            "-H",
            "content-type: application/json",
            "--data-binary",
            &review.to_string(),
        ])
        .arg(format!("https://{dns}:{webhook_port}/inject"))
        .output()
        .expect("curl");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
    use base64::Engine as _;
    let patch = base64::engine::general_purpose::STANDARD
        .decode(answer["response"]["patch"].as_str().expect("a patch"))
        .expect("base64");
    let patch: serde_json::Value = serde_json::from_slice(&patch).expect("JSON");
    let spec = patch
        .as_array()
        .and_then(|ops| ops.iter().find(|op| op["path"] == "/spec"))
        .map(|op| &op["value"])
        .expect("the patch replaces the spec");
    assert_eq!(spec["containers"][0]["name"], "conduit-proxy", "{spec}");
    assert_eq!(spec["containers"][0]["image"], "registry.example/proxy:dev");
    let env = spec["containers"][0]["env"].to_string();
    assert!(
        env.contains("conduit-destination.conduit.svc.cluster.local:8086"),
        "{env}"
    );
}

/// The public API of the installed Deployment, on its TLS port: nobody reaches an
/// endpoint without proving who they are and being allowed by RBAC. Callers with a
/// bearer token (as a CI job, or a pod, calls it directly) are reviewed with a
/// TokenReview, then a SubjectAccessReview; the API server's front proxy (the fake's
/// aggregator, with its client certificate and `X-Remote-*` headers) passes its user on;
/// a forged header without that certificate proves nothing. Kubernetes-only: against
/// `conduit-kube-fake`, whose RBAC evaluates the install's ClusterRoles. (curl blocks a
/// thread; the fake serves on another.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_api_admits_only_authenticated_and_authorized_callers() {
    let installed = run_installed("public-api", &[]).await;
    let (api, dir) = (&installed.api, installed.temp.0.clone());
    // The roles users bind and the APIService, as `kubectl apply` leaves them.
    for doc in &installed.docs {
        if doc["kind"] == "APIService"
            || (doc["kind"] == "ClusterRole" && doc["metadata"]["name"] != "conduit-controller")
        {
            api.apply(doc.clone());
        }
    }
    std::fs::write(dir.join("api-ca.pem"), &installed.api_ca).expect("CA");
    let dns = conduit_api::control_plane::api_dns_name(&installed.values.namespace);
    let port = installed.ports["8085"];
    let ca = dir.join("api-ca.pem").display().to_string();
    let resolve = format!("{dns}:{port}:127.0.0.1");
    let at = |path: &str| format!("https://{dns}:{port}/apis/api.conduit.io/v1alpha1{path}");
    let direct = |path: &str, headers: &[&str]| {
        let mut args = vec!["-m", "10", "--cacert", &ca, "--resolve", &resolve];
        for h in headers {
            args.extend(["-H", h]);
        }
        let url = at(path);
        args.push(&url);
        curl(&args)
    };
    let stats = "/namespaces/emojivoto/stats?resource=deploy";

    // Nobody known: no credentials, or a forged front-proxy header without its certificate.
    let (code, body) = direct(stats, &[]);
    assert_eq!(code, "401", "{body}");
    assert!(body.contains("not authenticated"), "{body}");
    let forged = [
        "X-Remote-User: kubernetes-admin",
        "X-Remote-Group: system:masters",
    ];
    assert_eq!(direct(stats, &forged).0, "401");
    assert_eq!(direct(stats, &["Authorization: Bearer made-up"]).0, "401");

    // A pod's ServiceAccount token: authenticated, but with no RBAC, forbidden (naming the
    // role to bind); a forged header changes nothing.
    api.add_token("pod-token", "ci", "deployer", &[]);
    let pod = "Authorization: Bearer pod-token";
    let (code, body) = direct(stats, &[pod, forged[0], forged[1]]);
    assert_eq!(code, "403", "{body}");
    assert!(
        body.contains("system:serviceaccount:ci:deployer may not list stats.api.conduit.io in namespace emojivoto: bind the ClusterRole conduit-viewer"),
        "{body}"
    );

    // The viewer role, bound in emojivoto: stat there, not elsewhere, and no tap or top.
    let bind = |name: &str, role: &str, subject: serde_json::Value| {
        api.apply(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": "emojivoto"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": [subject],
        }));
    };
    let sa = |name: &str| json!({"kind": "ServiceAccount", "name": name, "namespace": "ci"});
    bind("ci-viewer", "conduit-viewer", sa("viewer"));
    bind("ci-tapper", "conduit-tap", sa("tapper"));
    api.add_token("viewer-token", "ci", "viewer", &[]);
    api.add_token("tapper-token", "ci", "tapper", &[]);
    let viewer = "Authorization: Bearer viewer-token";
    let tapper = "Authorization: Bearer tapper-token";
    let (code, body) = direct(stats, &[viewer]);
    assert_eq!(code, "200", "{body}");
    let rows: Vec<conduit_api::http::StatRow> = serde_json::from_str(&body).expect("stat rows");
    assert!(rows.iter().all(|r| r.namespace == "emojivoto"), "{body}");
    // Its query cannot widen what the path's namespace was authorized for.
    let (code, body) = direct("/stats?resource=deploy&namespace=emojivoto", &[viewer]);
    assert_eq!(code, "403", "{body}");
    let taps = "/namespaces/emojivoto/taps?resource=deploy&name=web&watch=true";
    let tops = "/namespaces/emojivoto/tops?resource=deploy&name=web&window=1s&watch=true";
    for path in [taps, tops] {
        let (code, body) = direct(path, &[viewer]);
        assert_eq!(code, "403", "{path}: {body}");
        assert!(body.contains("bind the ClusterRole conduit-tap"), "{body}");
    }
    // The tap role: tap (a stream, cut here by curl) and top, not stat.
    let (code, body) = direct(tops, &[tapper]);
    assert_eq!(code, "200", "{body}");
    let (code, _) = curl(&[
        "-m",
        "2",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-H",
        tapper,
        &at(taps),
    ]);
    assert_eq!(code, "200");
    assert_eq!(direct(stats, &[tapper]).0, "403");

    // Through the API server: the aggregator authenticates alice, RBAC lets her group
    // list stats, and the controller reads her and her groups from the front proxy.
    api.proxy_service("conduit", "conduit-api", ([127, 0, 0, 1], port).into());
    api.add_user("alice-token", "alice", &["metrics-readers"]);
    bind(
        "readers",
        "conduit-viewer",
        json!({"kind": "Group", "name": "metrics-readers", "apiGroup": "rbac.authorization.k8s.io"}),
    );
    let (code, body) = curl(&[
        "-H",
        "Authorization: Bearer alice-token",
        &format!("{}/apis/api.conduit.io/v1alpha1{stats}", api.url()),
    ]);
    assert_eq!(code, "200", "{body}");
    serde_json::from_str::<Vec<conduit_api::http::StatRow>>(&body).expect("stat rows");
    let (code, body) = curl(&[&format!(
        "{}/apis/api.conduit.io/v1alpha1{stats}",
        api.url()
    )]);
    assert_eq!(code, "401", "{body}");
    // Her token works directly too (the controller reviews it), with her groups.
    let (code, body) = direct(stats, &["Authorization: Bearer alice-token"]);
    assert_eq!(code, "200", "{body}");
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("POST /apis/authorization.k8s.io/v1/subjectaccessreviews")),
        "the controller asked the API server"
    );
    assert_eq!(
        api.forbidden(),
        Vec::<String>::new(),
        "requests its role does not allow"
    );
}
