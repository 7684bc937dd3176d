//! The controller binary in Kubernetes mode (`--kubernetes`), against the in-memory API
//! server of `conduit-kube-fake` through a kubeconfig, as it would run beside a real API
//! server (none can run here): readiness, Destination answers from the API's objects,
//! identity through TokenReview, and the last state kept while the API is unreachable.

use conduit_api::{
    destination::{destination_client::DestinationClient, update, GetDestination, Update},
    identity::{identity_client::IdentityClient, CertifyRequest},
};
use conduit_kube_fake::FakeApiServer;
use serde_json::json;
use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// The controller process, killed when dropped.
struct Controller {
    child: Child,
    dir: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET /ready` with curl: the status code and body.
fn ready(port: u16) -> (String, String) {
    let out = Command::new("curl")
        .args([
            "-sS",
            "-w",
            "\n%{http_code}",
            &format!("http://127.0.0.1:{port}/ready"),
        ])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.to_string())
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
        "status": {"phase": "Running", "podIP": "10.244.1.7", "podIPs": [{"ip": "10.244.1.7"}],
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
        "endpoints": [{"addresses": ["10.244.1.7"], "conditions": {"ready": true},
                       "targetRef": {"kind": "Pod", "name": "web-5d4f8b8c7-x2x7q", "namespace": "emojivoto"}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }));
}

fn start(api: &FakeApiServer, api_port: u16, grpc_port: u16) -> Controller {
    let dir = std::env::temp_dir().join(format!("conduit-controller-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(dir.join("kubeconfig"), api.kubeconfig()).expect("kubeconfig");
    let trust =
        conduit_identity::ca::generate(Duration::from_secs(3600), Duration::from_secs(3600))
            .expect("a trust anchor and issuer");
    std::fs::write(dir.join("issuer.crt"), &trust.issuer_cert_pem).expect("issuer");
    std::fs::write(dir.join("issuer.key"), &trust.issuer_key_pem).expect("issuer key");
    let child = Command::new(env!("CARGO_BIN_EXE_conduit-controller"))
        .arg("--kubernetes")
        .arg(format!("--api-addr=127.0.0.1:{api_port}"))
        .arg(format!("--destination-addr=127.0.0.1:{grpc_port}"))
        .arg(format!(
            "--identity-issuer-cert={}",
            dir.join("issuer.crt").display()
        ))
        .arg(format!(
            "--identity-issuer-key={}",
            dir.join("issuer.key").display()
        ))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("RUST_LOG", "info")
        .stderr(Stdio::null())
        .spawn()
        .expect("the controller starts");
    Controller { child, dir }
}

#[tokio::test]
async fn serves_proxies_from_the_kubernetes_api_and_keeps_the_last_state_when_it_is_gone() {
    let api = FakeApiServer::start().await.expect("fake API server");
    emojivoto(&api);
    api.add_token("web-token", "emojivoto", "web", &["identity.conduit.io"]);
    let (api_port, grpc_port) = (free_port(), free_port());
    let _controller = start(&api, api_port, grpc_port);
    wait_until("the controller ready", || ready(api_port).0 == "200").await;
    assert_eq!(ready(api_port).1, "ready\n");

    // Destination: the Service's endpoints, with the identity the pod's proxy proves.
    let mut destination = DestinationClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .expect("Destination API");
    let mut updates = destination
        .get(GetDestination {
            path: "web-svc.emojivoto.svc.cluster.local:80".into(),
            context_namespace: "default".into(),
        })
        .await
        .expect("a destination stream")
        .into_inner();
    let first = updates.message().await.expect("an update").expect("a set");
    let web = conduit_identity::identity_name("web", "emojivoto");
    assert_eq!(
        endpoints(&first),
        [("10.244.1.7:8080".to_string(), web.clone())]
    );

    // A new endpoint in the API reaches the stream.
    api.apply(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-svc-fghij", "namespace": "emojivoto",
                     "labels": {"kubernetes.io/service-name": "web-svc"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.244.2.9"], "conditions": {"ready": true}}],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }));
    let second = updates.message().await.expect("an update").expect("a set");
    let addrs: Vec<String> = endpoints(&second).into_iter().map(|(a, _)| a).collect();
    assert_eq!(addrs, ["10.244.1.7:8080", "10.244.2.9:8080"]);

    // Identity through TokenReview: the projected token proves web's identity only.
    let mut identity = IdentityClient::connect(format!("http://127.0.0.1:{grpc_port}"))
        .await
        .expect("Identity API");
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
