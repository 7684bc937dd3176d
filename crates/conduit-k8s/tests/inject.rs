//! `inject` and `uninject` on whole manifests: golden files, round trips, the official
//! Kubernetes schemas, and errors.
//!
//! Every `tests/golden/<case>.yaml` is injected with the default options and compared
//! exactly with `<case>.injected.yaml`. After a deliberate change, regenerate them with
//! `UPDATE_GOLDEN=1 cargo test -p conduit-k8s --test inject` and read the diff by hand.

use conduit_k8s::inject::{inject, uninject, InjectOptions, Transformed};
use conduit_k8s::manifest;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Each golden case and the report `inject` must give for it.
const CASES: &[(&str, &[&str])] = &[
    (
        "deployment-and-service",
        &[
            r#"deployment "web" injected"#,
            r#"service "web-svc" skipped: not a workload"#,
        ],
    ),
    ("statefulset", &[r#"statefulset "redis" injected"#]),
    (
        "annotations",
        &[
            r#"deployment "mysql-client" injected"#,
            r#"statefulset "mysql" injected"#,
        ],
    ),
    ("daemonset", &[r#"daemonset "log-shipper" injected"#]),
    ("pod", &[r#"pod "curl" injected"#]),
    ("cronjob", &[r#"cronjob "report" injected"#]),
    (
        "list",
        &[
            r#"deployment "emoji" injected"#,
            r#"service "emoji-svc" skipped: not a workload"#,
            r#"job "migrate" injected"#,
        ],
    ),
    (
        "already-injected",
        &[r#"deployment "web" re-injected (it was already injected)"#],
    ),
    (
        "host-network",
        &[
            r#"daemonset "node-exporter" skipped: a pod on the host network cannot be meshed: its traffic is the node's"#,
        ],
    ),
    (
        "opt-out",
        &[
            r#"deployment "legacy" skipped: annotation conduit.io/inject: disabled"#,
            r#"replicaset "batch-worker" skipped: annotation conduit.io/inject: disabled"#,
        ],
    ),
    ("init-containers", &[r#"deployment "voting" injected"#]),
];

/// Inputs that already carry the proxy: uninjecting them changes them.
const INJECTED_INPUTS: &[&str] = &["already-injected"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn input_path(case: &str) -> PathBuf {
    golden_dir().join(format!("{case}.yaml"))
}

fn injected_path(case: &str) -> PathBuf {
    golden_dir().join(format!("{case}.injected.yaml"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn inject_ok(text: &str, source: &str) -> Transformed {
    inject(text, source, &InjectOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn uninject_ok(text: &str, source: &str) -> Transformed {
    uninject(text, source).unwrap_or_else(|e| panic!("{e}"))
}

/// The documents of a manifest as JSON values.
fn values(text: &str) -> Vec<Value> {
    manifest::parse(text, "-")
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|d| d.value)
        .collect()
}

/// Panics at the first line where `actual` and `expected` differ, naming the file.
fn assert_same_text(actual: &str, expected: &str, what: &str) {
    if actual == expected {
        return;
    }
    let (a, e): (Vec<_>, Vec<_>) = (actual.lines().collect(), expected.lines().collect());
    let line = a
        .iter()
        .zip(&e)
        .position(|(a, e)| a != e)
        .unwrap_or(a.len().min(e.len()));
    panic!(
        "{what} differs at line {}:\n  got:      {:?}\n  expected: {:?}\n(rerun with UPDATE_GOLDEN=1 to regenerate, then review the diff)",
        line + 1,
        a.get(line),
        e.get(line),
    );
}

#[test]
fn every_golden_input_is_a_case() {
    let mut inputs: Vec<String> = std::fs::read_dir(golden_dir())
        .expect("tests/golden")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".yaml") && !n.ends_with(".injected.yaml"))
        .map(|n| n.trim_end_matches(".yaml").to_string())
        .collect();
    inputs.sort();
    let mut cases: Vec<String> = CASES.iter().map(|(c, _)| c.to_string()).collect();
    cases.sort();
    assert_eq!(inputs, cases);
}

#[test]
fn injected_outputs_match_the_golden_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for (case, report) in CASES {
        let input = input_path(case);
        let injected = inject_ok(&read(&input), &input.display().to_string());
        let lines: Vec<String> = injected.report.iter().map(ToString::to_string).collect();
        assert_eq!(lines, *report, "{case}: report");
        let expected = injected_path(case);
        if update {
            std::fs::write(&expected, &injected.output).expect("writing a golden file");
        } else {
            assert_same_text(
                &injected.output,
                &read(&expected),
                &expected.display().to_string(),
            );
        }
    }
}

#[test]
fn documents_that_are_not_injected_pass_through_byte_for_byte() {
    let input = read(&input_path("deployment-and-service"));
    let output = inject_ok(&input, "-").output;
    let service = input.split("---\n").nth(1).expect("the Service document");
    assert!(output.contains(service), "the Service changed:\n{output}");
    assert!(output.ends_with("---\n# A trailing document with only a comment stays too.\n"));
    for case in ["host-network", "opt-out"] {
        let input = read(&input_path(case));
        assert_eq!(inject_ok(&input, "-").output, input, "{case}");
    }
}

#[test]
fn uninject_takes_out_exactly_what_inject_put_in() {
    for (case, _) in CASES {
        let input = read(&input_path(case));
        let injected = inject_ok(&input, case).output;
        let back = uninject_ok(&injected, case).output;
        let clean = uninject_ok(&input, case).output;
        assert_eq!(
            values(&back),
            values(&clean),
            "{case}: uninject(inject(x)) != uninject(x)"
        );
        if !INJECTED_INPUTS.contains(case) {
            assert_eq!(
                clean, input,
                "{case}: uninject changed a manifest with no proxy"
            );
        }
    }
}

#[test]
fn injecting_twice_is_injecting_once() {
    for (case, _) in CASES {
        let once = inject_ok(&read(&input_path(case)), case).output;
        let twice = inject_ok(&once, case).output;
        assert_same_text(
            &twice,
            &once,
            &format!("{case}: inject(inject(x)) vs inject(x)"),
        );
    }
}

#[test]
fn an_injected_deployment_uninjects_to_the_plain_one() {
    let plain = values(&read(&input_path("deployment-and-service")));
    let injected = read(&input_path("already-injected"));
    let back = uninject_ok(&injected, "already-injected.yaml");
    assert_eq!(back.report[0].to_string(), r#"deployment "web" uninjected"#);
    assert_eq!(values(&back.output)[0], plain[0]);

    let fresh = inject_ok(&read(&input_path("deployment-and-service")), "-").output;
    let again = inject_ok(&injected, "-").output;
    assert!(
        fresh.starts_with(&again),
        "re-injecting does not give a fresh injection"
    );
}

/// Validates the golden inputs and the injected outputs against Kubernetes 1.33's
/// official OpenAPI schemas with the PyPI tool `kubernetes-validate`, strictly (an
/// unknown field is an error). A real cluster (`kubectl apply --dry-run=server`) can't
/// run here, so the official schemas stand in for it. The tool must be installed: this
/// test fails, rather than skips, without it.
#[test]
fn injected_outputs_pass_the_official_schemas() {
    let mut files = Vec::new();
    for (case, _) in CASES {
        for path in [input_path(case), injected_path(case)] {
            files.push(with_list_items_as_documents(&path));
        }
    }
    let run = Command::new("kubernetes-validate")
        .args(["--kubernetes-version", "1.33.0", "--strict", "--quiet"])
        .args(&files)
        .output();
    let hint = "install it with `pip install kubernetes-validate`";
    let out = match run {
        Ok(out) => out,
        Err(e) => panic!("cannot run kubernetes-validate ({e}): {hint}"),
    };
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(
        out.status.code(),
        Some(127),
        "kubernetes-validate is missing: {hint}\n{printed}"
    );
    assert!(
        out.status.success(),
        "kubernetes-validate rejected a manifest:\n{printed}"
    );
    // A warning means a document was not checked (no schema for its kind).
    assert!(
        !printed.contains("WARN"),
        "kubernetes-validate skipped a document:\n{printed}"
    );
}

/// `kubernetes-validate` has no schema for `v1 List` and would skip it: a copy of the
/// file with each item as a document of its own, or the file itself if it has no List.
fn with_list_items_as_documents(path: &Path) -> PathBuf {
    let docs =
        manifest::parse(&read(path), &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"));
    if !docs.iter().any(|d| d.kind() == Some("List")) {
        return path.to_path_buf();
    }
    let mut texts = Vec::new();
    for doc in docs {
        match doc.value.get("items").and_then(Value::as_array) {
            Some(items) if doc.kind() == Some("List") => {
                texts.extend(items.iter().map(manifest::to_yaml));
            }
            _ => texts.push(doc.text),
        }
    }
    let name = path.file_name().expect("a file name");
    let split = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&split, manifest::join(texts.iter().map(String::as_str)))
        .expect("writing a temporary file");
    split
}

#[test]
fn bad_yaml_names_the_document_and_nothing_is_output() {
    let text =
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\n---\nkind: Deployment\n  bad: [\n";
    let err = inject(text, "app.yaml", &InjectOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("app.yaml, document 2: not valid YAML"),
        "{msg}"
    );
    assert!(uninject(text, "app.yaml").is_err());
}

#[test]
fn a_deployment_without_a_pod_template_names_the_field() {
    let text =
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 1\n";
    let err = inject(text, "web.yaml", &InjectOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "web.yaml, document 1 (Deployment web): spec.template: missing: a Deployment needs a pod template"
    );
}

#[test]
fn bad_pod_templates_name_the_field() {
    let cases = [
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: {name: app}\n",
            "x.yaml, document 1 (Pod p): spec.containers: expected a list of containers, found a mapping",
        ),
        (
            "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec:\n  template:\n    spec:\n      containers: []\n      initContainers: wait\n",
            "x.yaml, document 1 (StatefulSet s): spec.template.spec.initContainers: expected a list, found a string",
        ),
        (
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n  template:\n    metadata:\n      labels: [a]\n    spec:\n      containers: []\n",
            "x.yaml, document 1 (DaemonSet d): spec.template.metadata.labels: expected a mapping, found a list",
        ),
        (
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n- apiVersion: batch/v1\n  kind: Job\n  metadata: {name: j}\n  spec: {template: {}}\n",
            "x.yaml, document 1 (List): items[1].spec.template.spec: missing: a pod needs a spec",
        ),
        (
            "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      containers: []\n",
            "x.yaml, document 1 (Deployment): metadata.name: missing: the proxy reports the Deployment's name",
        ),
    ];
    for (text, expected) in cases {
        let err = inject(text, "x.yaml", &InjectOptions::default()).unwrap_err();
        assert_eq!(err.to_string(), expected);
    }
}
