//! The proxy talks to the control plane only once it has proven the controller's
//! identity: a fake controller (openssl's `s_server`, with a certificate from the mesh's
//! issuer for another name, or for the controller's name from another CA) is refused in
//! the TLS handshake, before the proxy sends it anything; the proxy says why in its log
//! and on `/ready`, and is not ready. Real proxies in network namespaces. Root only.

mod common;
use common::*;
use conduit_api::proxy_env as env;
use conduit_identity::{ca, controller_identity, identity_name};
use std::time::Duration;

/// A directory of the test's, removed when dropped.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_control_plane_that_cannot_prove_the_controllers_identity_is_refused() {
    let day = Duration::from_secs(86_400);
    let mesh = ca::generate(day, day).unwrap();
    let other_ca = ca::generate(day, day).unwrap();
    let controller = controller_identity("conduit");
    let impostor = identity_name("conduit-controller", "elsewhere");
    for (i, (case, files, name, why)) in [
        (
            "another name from the mesh's issuer",
            &mesh,
            &impostor,
            "not valid for name",
        ),
        (
            "the controller's name from another CA",
            &other_ca,
            &controller,
            "invalid peer certificate",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = TempDir(std::env::temp_dir().join(format!(
            "conduit-fake-controller-{}-{i}",
            std::process::id()
        )));
        let dir = &dir.0;
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("issuer.pem"), &files.issuer_cert_pem).unwrap();
        std::fs::write(dir.join("issuer.key"), &files.issuer_key_pem).unwrap();
        let (cert, key) = conduit_testkit::openssl_identity(
            dir,
            &dir.join("issuer.pem"),
            &dir.join("issuer.key"),
            name,
            "fake-controller",
        );
        std::fs::write(dir.join("token"), "a token").unwrap();

        let lan = Lan::new();
        let fake = lan.pod("fake");
        let file = |f: &str| dir.join(f).display().to_string();
        let _server = fake.spawn(&[
            "openssl",
            "s_server",
            "-accept",
            "8086",
            "-tls1_3",
            "-www",
            "-cert",
            cert.to_str().unwrap(),
            "-key",
            key.to_str().unwrap(),
            "-cert_chain",
            &file("issuer.pem"),
        ]);
        fake.wait_listening(8086);
        let pod = lan.pod("web");
        let addr = format!("{}:8086", fake.ip);
        let vars: Vec<(String, String)> = [
            (env::IDENTITY_ADDR, addr.as_str()),
            (env::DESTINATION_ADDR, addr.as_str()),
            (env::POD_NAME, "web-1"),
            (env::IDENTITY_TRUST_ANCHORS, mesh.anchor_pem.as_str()),
            (env::IDENTITY_TOKEN_FILE, &file("token")),
            (env::POD_NAMESPACE, "emojivoto"),
            (env::IDENTITY_SERVICE_ACCOUNT, "web"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let proxy = pod.spawn_with(&[PROXY], Some(conduit_testkit::PROXY_UID), &vars);

        let expected = format!("did not prove it is {controller}");
        let refused = wait_until(Duration::from_secs(15), || {
            pod.admin_get("/ready").is_some_and(|(status, body)| {
                status == 503 && body.contains(&expected) && body.contains(why)
            })
        });
        assert!(refused, "{case}: {:?}", pod.admin_get("/ready"));
        let logs = proxy.logs();
        assert!(
            logs.contains("refusing the control plane") && logs.contains(&addr),
            "{case}: {logs}"
        );
    }
}
