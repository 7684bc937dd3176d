//! `conduit install` and `uninstall`: every manifest, in every combination of options that
//! matters, validated strictly against the official Kubernetes 1.33 schemas (no cluster can
//! run here, so the schemas stand in for `kubectl apply --dry-run=server`), and policy
//! resources validated against the CRDs' own schemas. Bad input prints nothing.

mod common;
use common::*;
use std::process::Command;

fn conduit(args: &[&str]) -> std::process::Output {
    Command::new(CONDUIT).args(args).output().unwrap()
}

/// Validates `text` with kubernetes-validate, strictly, failing on any skipped document.
fn validate(what: &str, text: &str) {
    let path = std::env::temp_dir().join(format!(
        "conduit-install-{}-{what}.yaml",
        std::process::id()
    ));
    std::fs::write(&path, text).unwrap();
    let out = Command::new("kubernetes-validate")
        .args(["--kubernetes-version", "1.33.0", "--strict", "--quiet"])
        .arg(&path)
        .output()
        .expect("kubernetes-validate (scripts/install-test-deps installs it)");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
    assert!(
        out.status.success(),
        "{what}: kubernetes-validate rejected it:\n{printed}"
    );
    assert!(
        !printed.contains("WARN"),
        "{what}: a document was not checked:\n{printed}"
    );
}

fn ok(args: &[&str]) -> String {
    let out = conduit(args);
    assert!(
        out.status.success(),
        "conduit {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn every_install_passes_the_official_schemas() {
    let default = ok(&["install"]);
    for kind in [
        "kind: Namespace",
        "kind: CustomResourceDefinition",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: ClusterRoleBinding",
        "kind: ConfigMap",
        "kind: Secret",
        "kind: Deployment",
        "kind: Service",
        "kind: MutatingWebhookConfiguration",
        "kind: APIService",
        "kind: RoleBinding",
        "name: conduit-viewer",
        "name: conduit-tap",
        "name: conduit-api-tls",
        "name: system:auth-delegator",
        "name: extension-apiserver-authentication-reader",
        "name: httproutes.gateway.networking.k8s.io",
    ] {
        assert!(default.contains(kind), "{kind} missing");
    }
    // A cluster with the Gateway API of its own keeps its HTTPRoute CRD.
    let own = ok(&["install", "--set", "installGatewayApiCrds=false"]);
    assert!(!own.contains("name: httproutes.gateway.networking.k8s.io"));
    assert!(own.contains("name: serviceprofiles.conduit.io"));
    // The public API: an aggregated API whose ClusterRoles grant its verbs, served over
    // TLS only.
    assert!(default.contains("--api-tls-dir=/var/run/conduit/api-tls"));
    assert!(default.contains("scheme: HTTPS"));
    assert!(!default.contains("PodDisruptionBudget"));
    assert!(default.contains("failurePolicy: Ignore"));
    validate("default", &default);

    let values = std::env::temp_dir().join(format!(
        "conduit-install-{}-values.yaml",
        std::process::id()
    ));
    std::fs::write(
        &values,
        "logLevel: debug\ncontroller:\n  resources:\n    memoryLimit: 512Mi\n",
    )
    .unwrap();
    let ha = ok(&[
        "install",
        "--ha",
        "-f",
        values.to_str().unwrap(),
        "--set",
        "controller.replicas=5",
        "--set",
        "policy.defaultInbound=all-authenticated",
    ]);
    let _ = std::fs::remove_file(&values);
    assert!(ha.contains("kind: PodDisruptionBudget") && ha.contains("podAntiAffinity"));
    assert!(
        ha.contains("replicas: 5")
            && ha.contains("memory: 512Mi")
            && ha.contains("--default-inbound-policy=all-authenticated")
    );
    validate("ha", &ha);

    // Metrics from the user's Prometheus: the controller is pointed at it; the default
    // keeps the embedded store.
    let prometheus = ok(&[
        "install",
        "--set",
        "prometheusUrl=http://prometheus.monitoring:9090",
    ]);
    assert!(prometheus.contains("--prometheus-url=http://prometheus.monitoring:9090"));
    assert!(!default.contains("--prometheus-url"));
    validate("prometheus", &prometheus);

    let crds = ok(&["install", "--crds"]);
    assert_eq!(crds.matches("kind: CustomResourceDefinition").count(), 4);
    validate("crds", &crds);

    // The user's own trust anchor and issuer (made by openssl) go in as given.
    let ca = std::env::temp_dir().join(format!("conduit-install-{}-ca", std::process::id()));
    openssl_ca(&ca, "ours");
    let path = |f: &str| ca.join(f).display().to_string();
    let own = ok(&[
        "install",
        "--identity-trust-anchors-file",
        &path("anchor.pem"),
        "--identity-issuer-certificate-file",
        &path("issuer.pem"),
        "--identity-issuer-key-file",
        &path("issuer.key"),
    ]);
    let anchor = std::fs::read_to_string(ca.join("anchor.pem")).unwrap();
    let first_line = anchor.lines().nth(1).unwrap();
    assert!(
        own.contains(first_line),
        "the trust roots ConfigMap holds the user's anchor"
    );
    validate("own-identity", &own);
    // A key that is not the issuer's: refused, nothing printed.
    let bad = conduit(&[
        "install",
        "--identity-trust-anchors-file",
        &path("anchor.pem"),
        "--identity-issuer-certificate-file",
        &path("issuer.pem"),
        "--identity-issuer-key-file",
        &path("anchor.key"),
    ]);
    assert!(!bad.status.success() && bad.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("does not belong to the issuer certificate")
    );
    let _ = std::fs::remove_dir_all(&ca);

    let gone = ok(&["uninstall"]);
    for kind in [
        "MutatingWebhookConfiguration",
        "ClusterRoleBinding",
        "ClusterRole",
        "CustomResourceDefinition",
        "Namespace",
        "APIService",
        "RoleBinding",
    ] {
        assert!(gone.contains(&format!("kind: {kind}")), "{gone}");
    }
    for name in ["conduit-viewer", "conduit-tap", "v1alpha1.api.conduit.io"] {
        assert!(gone.contains(&format!("name: {name}")), "{gone}");
    }
}

#[test]
fn bad_values_are_named_and_nothing_is_printed() {
    for (args, expected) in [
        (
            vec!["install", "--set", "controller.imag=x"],
            "--set controller.imag=x: unknown field `imag`",
        ),
        (
            vec!["install", "--set", "controller.replicas=many"],
            "controller.replicas takes a number",
        ),
        (
            vec!["install", "--set", "policy.clusterNetworks=10.0.0.0"],
            "not a network in CIDR form",
        ),
        (
            vec!["install", "--set", "prometheusUrl=https://prometheus:9090"],
            "prometheusUrl: \"https://prometheus:9090\": the scheme is https; only http://",
        ),
        (
            vec!["install", "-f", "/nonexistent/values.yaml"],
            "reading the values file /nonexistent/values.yaml",
        ),
    ] {
        let out = conduit(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed something");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{args:?}: {err}");
    }
}

/// Server, AuthorizationPolicy, ServiceProfile and HTTPRoute documents checked against the CRDs' own
/// schemas (the API server would do this on apply), with `jsonschema`, which
/// kubernetes-validate brings along.
#[test]
fn policy_resources_fit_the_crd_schemas() {
    let crds = ok(&["install", "--crds"]);
    let script = r#"
import sys, yaml, jsonschema
crds = {d["spec"]["names"]["kind"]: d["spec"]["versions"][0]["schema"]["openAPIV3Schema"] for d in yaml.safe_load_all(open(sys.argv[1])) if d}
def plain(s):
    if isinstance(s, dict):
        if s.get("x-kubernetes-int-or-string"):
            return {"anyOf": [{"type": "integer"}, {"type": "string"}]}
        return {k: plain(v) for k, v in s.items()}
    return s
for i, doc in enumerate(yaml.safe_load_all(open(sys.argv[2]))):
    try:
        jsonschema.validate(doc, plain(crds[doc["kind"]]))
        print(i, "ok")
    except jsonschema.ValidationError as e:
        print(i, "invalid:", e.message)
"#;
    let docs = r#"
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto}
spec: {podSelector: {matchLabels: {app: voting}}, port: grpc, proxyProtocol: gRPC}
---
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: web-http, namespace: emojivoto}
spec: {podSelector: {matchLabels: {app: web}}, port: 8080}
---
apiVersion: policy.conduit.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-from-web, namespace: emojivoto}
spec:
  targetRef: {kind: Server, name: voting-grpc}
  allow: [{serviceAccount: {name: web}}, {network: 10.0.0.0/8}, {allAuthenticated: true}]
---
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: bad, namespace: emojivoto}
spec: {podSelector: {matchLabels: {app: web}}, port: 8080, proxyProtocol: grpc}
---
apiVersion: policy.conduit.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: bad, namespace: emojivoto}
spec:
  targetRef: {kind: Server, name: web-http}
  allow: [{identity: a, network: 10.0.0.0/8}]
---
apiVersion: conduit.io/v1alpha1
kind: ServiceProfile
metadata: {name: web-svc.emojivoto.svc.cluster.local, namespace: emojivoto}
spec:
  routes:
  - name: GET /api/list
    condition: {method: GET, pathRegex: /api/list}
    isRetryable: true
    timeout: 300ms
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
---
apiVersion: conduit.io/v1alpha1
kind: ServiceProfile
metadata: {name: bad.emojivoto.svc.cluster.local, namespace: emojivoto}
spec:
  routes: [{name: no-condition}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-canary, namespace: emojivoto}
spec:
  parentRefs: [{group: "", kind: Service, name: web-svc, port: 80}]
  rules:
  - matches: [{headers: [{name: x-canary, value: "yes"}], path: {type: PathPrefix, value: /api}, method: GET}]
    backendRefs: [{name: web-canary, port: 80}]
  - backendRefs: [{name: web-svc, port: 80, weight: 90}, {name: web-canary, port: 80, weight: 10}]
    timeouts: {request: 10s}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad, namespace: emojivoto}
spec:
  rules: [{backendRefs: [{name: web-svc, port: 80, weight: 2000000}]}]
"#;
    let dir = std::env::temp_dir();
    let (crd_file, doc_file) = (
        dir.join(format!("conduit-crds-{}.yaml", std::process::id())),
        dir.join(format!("conduit-crs-{}.yaml", std::process::id())),
    );
    std::fs::write(&crd_file, crds).unwrap();
    std::fs::write(&doc_file, docs).unwrap();
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&crd_file)
        .arg(&doc_file)
        .output()
        .unwrap();
    let _ = (
        std::fs::remove_file(crd_file),
        std::fs::remove_file(doc_file),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[..3], ["0 ok", "1 ok", "2 ok"], "{text}");
    assert!(
        lines[3].starts_with("3 invalid: 'grpc' is not one of"),
        "{text}"
    );
    assert!(
        lines[4].starts_with("4 invalid:") && lines[4].contains("too many properties"),
        "{text}"
    );
    assert_eq!(lines[5], "5 ok", "{text}");
    assert!(
        lines[6].starts_with("6 invalid: 'condition' is a required property"),
        "{text}"
    );
    assert_eq!(lines[7], "7 ok", "{text}");
    assert!(
        lines[8].starts_with("8 invalid: 2000000 is greater than the maximum of 1000000"),
        "{text}"
    );
    // What the schemas let through, the control plane reads with the same code as the
    // local runtime; the good profile is one of those.
    let profile = docs.split("---").nth(5).unwrap();
    let doc = conduit_k8s::manifest::parse(profile, "profile")
        .unwrap()
        .remove(0);
    conduit_k8s::profile::service_profile(&doc).unwrap();
    let route = docs.split("---").nth(7).unwrap();
    let doc = conduit_k8s::manifest::parse(route, "route")
        .unwrap()
        .remove(0);
    conduit_k8s::httproute::http_route(&doc).unwrap();
}
