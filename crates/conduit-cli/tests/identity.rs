//! Workload identity on the local runtime, for real: every meshed proxy gets a certificate
//! for its ServiceAccount from the controller's Identity API, renews it under load, and a
//! pod cannot get another pod's identity with that pod's token. Root only; the workspace's
//! binaries must be built.

mod common;
use common::*;
use conduit_testkit::wait_until;
use serde_json::Value;
use std::{
    process::Command,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

fn certificates(rt: &Runtime) -> Vec<Value> {
    rt.json(&["identity", "ns/emojivoto", "-o", "json"])
}

fn controller_metrics(rt: &Runtime) -> String {
    let socket = rt.dir.join("api.sock");
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&socket)
        .arg("http://conduit/metrics")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_proxy_is_certified_for_its_service_account_and_renews_under_load() {
    let rt = Runtime::new("identity");
    let manifest = rt.meshed_manifest();
    let out = Command::new(CONDUIT)
        .args(["local", "up", "-f"])
        .arg(&manifest)
        .env("CONDUIT_LOCAL_DIR", &rt.dir)
        // Short-lived certificates, so that renewal happens within the test.
        .env("CONDUIT_LOCAL_IDENTITY_LIFETIME", "8s")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let first = certificates(&rt);
    assert_eq!(first.len(), 4, "{first:?}");
    for c in &first {
        let pod = c["pod"].as_str().unwrap();
        let deployment = pod.rsplit_once('-').unwrap().0;
        assert_eq!(
            c["identity"],
            format!("{deployment}.emojivoto.serviceaccount.identity.conduit.cluster.local"),
            "{c}"
        );
        assert_eq!(c["certified"], true, "{c}");
        let until = c["valid_until_unix"].as_u64().unwrap();
        assert!(until > now && until <= now + 10, "an 8 s certificate: {c}");
    }
    let table = rt.ok(&["identity", "deploy/web", "-n", "emojivoto"]);
    assert!(
        table.contains("web.emojivoto.serviceaccount.identity.conduit.cluster.local")
            && table.contains("in "),
        "{table}"
    );

    // Renewed before expiry, while the vote bot keeps the app busy, without failures.
    let web_until = |certs: &[Value]| {
        certs
            .iter()
            .find(|c| c["pod"].as_str().unwrap().starts_with("web-"))
            .unwrap()["valid_until_unix"]
            .as_u64()
            .unwrap()
    };
    let first_until = web_until(&first);
    let renewed = wait_until(Duration::from_secs(30), || {
        web_until(&certificates(&rt)) > first_until
    });
    assert!(renewed, "{:?}", certificates(&rt));
    let renewed_twice = wait_until(Duration::from_secs(30), || {
        web_until(&certificates(&rt)) > first_until + 4
    });
    assert!(renewed_twice, "{:?}", certificates(&rt));
    assert!(certificates(&rt).iter().all(|c| c["certified"] == true));
    let emoji = || {
        let stat = rt.json(&["stat", "deploy", "-n", "emojivoto", "-o", "json"]);
        stat.into_iter().find(|r| r["name"] == "emoji").unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(30), || emoji()["request_rate"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.0),
        "{}",
        emoji()
    );
    assert_eq!(emoji()["success_rate"], 1.0, "{}", emoji());
    let issued = controller_metrics(&rt);
    assert!(
        issued.contains("identity_certify_total{outcome=\"issued\"}"),
        "{issued}"
    );
}

#[test]
fn another_pods_token_cannot_claim_its_identity() {
    let rt = Runtime::new("stolen");
    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let status = rt.status();
    let web = Runtime::pod(&status, "web");
    let stolen = std::fs::read_to_string(
        rt.dir
            .join("identity/tokens")
            .join(web["netns"].as_str().unwrap()),
    )
    .unwrap();
    // From the vote bot's pod, through its proxy, a real gRPC client (grpcio) asks for the
    // web's identity with the web's token, over TLS to the controller, as a proxy would.
    let answer = rt.control_plane_call(
        "vote-bot",
        "/conduit.identity.v1.Identity/Certify",
        false,
        None,
        &[
            "web.emojivoto.serviceaccount.identity.conduit.cluster.local",
            stolen.trim(),
            "not a csr",
        ],
    );
    let web_ip = web["ip"].as_str().unwrap();
    assert!(
        answer.contains("UNAUTHENTICATED")
            && answer.contains(&format!("belongs to the pod at {web_ip}")),
        "{answer}"
    );
    let metrics = controller_metrics(&rt);
    assert!(
        metrics.contains("identity_certify_total{outcome=\"bad_token\"} 1"),
        "{metrics}"
    );
}

#[test]
fn the_runtime_takes_the_users_own_trust_anchor_and_issuer() {
    let rt = Runtime::new("own-ca");
    let (ca, other) = (
        rt.dir.with_extension("ca"),
        rt.dir.with_extension("other-ca"),
    );
    openssl_ca(&ca, "ours");
    openssl_ca(&other, "theirs");
    let manifest = rt.meshed_manifest();
    let up = |anchors: &std::path::Path, cert: &std::path::Path, key: &std::path::Path| {
        rt.conduit(&[
            "local",
            "up",
            "-f",
            manifest.to_str().unwrap(),
            "--identity-trust-anchors-file",
            anchors.to_str().unwrap(),
            "--identity-issuer-certificate-file",
            cert.to_str().unwrap(),
            "--identity-issuer-key-file",
            key.to_str().unwrap(),
        ])
    };

    // An issuer key that is not the issuer's: refused before anything starts.
    let bad = up(
        &ca.join("anchor.pem"),
        &ca.join("issuer.pem"),
        &ca.join("anchor.key"),
    );
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success());
    assert!(
        err.contains("the issuer key does not belong to the issuer certificate"),
        "{err}"
    );
    assert!(!rt.dir.join("state.json").exists(), "nothing started");
    // An issuer another anchor signed: refused too.
    let bad = up(
        &ca.join("anchor.pem"),
        &other.join("issuer.pem"),
        &other.join("issuer.key"),
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not signed by any of the trust anchors"));

    let ok = up(
        &ca.join("anchor.pem"),
        &ca.join("issuer.pem"),
        &ca.join("issuer.key"),
    );
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // The web's proxy presents a chain that openssl verifies against the user's anchor,
    // and not against another one.
    let status = rt.status();
    let node = status["node_netns"].as_str().unwrap();
    let web_ip = Runtime::pod(&status, "web")["ip"].as_str().unwrap();
    let verify = |anchor: &std::path::Path| {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                node,
                "openssl",
                "s_client",
                "-connect",
                &format!("{web_ip}:8080"),
            ])
            .args([
                "-servername",
                "web.emojivoto.serviceaccount.identity.conduit.cluster.local",
                "-CAfile",
            ])
            .arg(anchor)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours = verify(&ca.join("anchor.pem"));
    assert!(
        ours.contains("Verify return code: 0 (ok)") && ours.contains("CN = ours issuer"),
        "{ours}"
    );
    let theirs = verify(&other.join("anchor.pem"));
    assert!(!theirs.contains("Verify return code: 0 (ok)"), "{theirs}");
    // The mesh works on it: meshed traffic flows, over mTLS.
    let voting = || {
        rt.json(&["stat", "deploy", "-n", "emojivoto", "-o", "json"])
            .into_iter()
            .find(|r| r["name"] == "voting")
            .unwrap()
    };
    assert!(
        wait_until(Duration::from_secs(30), || voting()["tls_rate"]
            .as_f64()
            .unwrap_or(0.0)
            > 0.9),
        "{}",
        voting()
    );
    let _ = std::fs::remove_dir_all(ca);
    let _ = std::fs::remove_dir_all(other);
}
