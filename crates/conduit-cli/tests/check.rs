//! `conduit check` against the local runtime, for real: all √ (exit 0) on a healthy meshed
//! app; a failing check named with its reason and a hint (exit 1); no runtime at all said
//! plainly. Root only; the workspace's binaries must be built.

mod common;
use common::*;

#[test]
fn check_passes_on_a_healthy_mesh_and_names_what_fails() {
    let rt = Runtime::new("check");
    let none = rt.conduit(&["check"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&none.stdout).contains("× a local runtime is running here"));

    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let healthy = rt.conduit(&["check", "--proxy"]);
    let text = String::from_utf8_lossy(&healthy.stdout);
    assert!(healthy.status.success(), "{text}");
    for line in [
        "√ the local runtime's supervisor is running",
        "√ the control plane answers",
        "√ the issuer is valid, signed by the trust anchor, and holds its key",
        "√ the trust anchor is valid for at least 30 days",
        "√ every pod is ready (4)",
        "√ every meshed proxy is certified (4)",
        "√ opaque ports, forwarded without protocol detection: 25,587,3306,4444,5432,6379,9300,11211 (the default, 4 proxies)",
    ] {
        assert!(text.contains(line), "{line:?} missing:\n{text}");
    }

    // A pod that never becomes ready.
    let stuck = rt.dir.with_extension("stuck.yml");
    std::fs::write(
        &stuck,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: stuck, namespace: emojivoto}\nspec:\n  selector: {matchLabels: {app: stuck}}\n  template:\n    metadata: {labels: {app: stuck}}\n    spec:\n      containers:\n      - name: idle\n        image: busybox\n        command: [sleep, infinity]\n        readinessProbe: {tcpSocket: {port: 9}, periodSeconds: 1}\n",
    )
    .unwrap();
    let up = rt.conduit(&[
        "local",
        "up",
        "-f",
        stuck.to_str().unwrap(),
        "--timeout",
        "3s",
    ]);
    assert!(!up.status.success());
    let failing = rt.conduit(&["check"]);
    let text = String::from_utf8_lossy(&failing.stdout);
    assert_eq!(failing.status.code(), Some(1), "{text}");
    assert!(text.contains("× every pod is ready"), "{text}");
    assert!(
        text.contains("emojivoto/stuck-") && text.contains("readiness probe failing"),
        "{text}"
    );
    assert!(text.contains("hint: "), "{text}");
    assert!(String::from_utf8_lossy(&failing.stderr).contains("1 check(s) failed"));
}
