//! `conduit inject` over a directory of manifests, YAML and JSON alike: every file in name
//! order, one manifest out, and nothing printed when any file is wrong.

use std::process::Command;

const CONDUIT: &str = env!("CARGO_BIN_EXE_conduit");

#[test]
fn a_directory_of_yaml_and_json_is_injected_as_one_manifest() {
    let dir = std::env::temp_dir().join(format!("conduit-inject-dir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a-web.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: web:1}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web-svc}\nspec: {selector: {app: web}, ports: [{port: 80}]}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b-worker.json"),
        r#"{"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "worker"},
            "spec": {"serviceName": "worker", "selector": {"matchLabels": {"app": "worker"}},
                     "template": {"metadata": {"labels": {"app": "worker"}},
                                  "spec": {"containers": [{"name": "worker", "image": "worker:1"}]}}}}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a manifest").unwrap();

    let out = Command::new(CONDUIT)
        .arg("inject")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        report.lines().collect::<Vec<_>>(),
        [
            r#"deployment "web" injected"#,
            r#"service "web-svc" skipped: not a workload"#,
            r#"statefulset "worker" injected"#,
        ]
    );
    let manifest = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        manifest.matches("name: conduit-init\n").count(),
        2,
        "{manifest}"
    );
    assert_eq!(
        manifest.matches("\n---\n").count(),
        2,
        "three documents: {manifest}"
    );

    // Uninject takes the whole directory's output back.
    std::fs::write(dir.join("meshed.out"), manifest.as_bytes()).unwrap();
    let back = Command::new(CONDUIT)
        .args(["uninject"])
        .arg(dir.join("meshed.out"))
        .output()
        .unwrap();
    assert!(back.status.success());
    assert!(!String::from_utf8_lossy(&back.stdout).contains("conduit-proxy"));

    // One bad file: its name in the error, nothing on stdout.
    std::fs::write(
        dir.join("c-bad.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: [1]\n",
    )
    .unwrap();
    let bad = Command::new(CONDUIT)
        .arg("inject")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(bad.stdout.is_empty());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("c-bad.yaml"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
