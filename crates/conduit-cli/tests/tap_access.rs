//! A meshed proxy's tap server lets in only the controller, for real: grpcio from the
//! node calls a web proxy's tap port in plaintext, then over TLS with certificates that
//! openssl signs with the runtime's own issuer, one for another workload's identity and
//! one for the controller's. Only the last one sees the web's requests; `conduit tap`
//! (the controller's way in) keeps working, and says why when a proxy lets in another
//! identity. Root only; the workspace's binaries must be built.

mod common;
use common::*;
use std::{path::Path, process::Command};

/// Calls Tap.Observe (limit 1) at `argv[1]`; prints `EVENT` when one arrives, else the
/// gRPC status. With certificate files, over TLS expecting the server's identity.
const OBSERVE: &str = r#"
import grpc, sys
target = sys.argv[1]
if len(sys.argv) == 2:
    ch = grpc.insecure_channel(target)
else:
    ca, chain, key = (open(f, "rb").read() for f in sys.argv[2:5])
    creds = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)
    ch = grpc.secure_channel(target, creds, options=[("grpc.ssl_target_name_override", sys.argv[5])])
observe = ch.unary_stream("/conduit.tap.v1.Tap/Observe", request_serializer=lambda x: x, response_deserializer=lambda x: x)
try:
    for event in observe(b"\x08\x01", timeout=15):
        print("EVENT", len(event))
        break
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;

fn id(sa: &str, ns: &str) -> String {
    format!("{sa}.{ns}.serviceaccount.identity.conduit.cluster.local")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A key and a certificate for `identity` signed by the runtime's issuer, with openssl:
/// `(chain, key)` files, the chain being the certificate and the issuer's.
fn mint(identity_dir: &Path, out: &Path, identity: &str) -> (String, String) {
    let file = |suffix: &str| out.join(format!("{identity}.{suffix}"));
    let (key, csr, cert, ext, chain) = (
        file("key"),
        file("csr"),
        file("crt"),
        file("ext"),
        file("chain"),
    );
    std::fs::write(
        &ext,
        format!("subjectAltName=DNS:{identity}\nextendedKeyUsage=clientAuth,serverAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=critical,CA:FALSE\n"),
    )
    .unwrap();
    run(Command::new("openssl")
        .args([
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
        ])
        .arg(&key));
    run(Command::new("openssl")
        // The identity is the SAN; a common name may not be that long.
        .args(["req", "-new", "-subj", "/O=conduit-tests", "-key"])
        .arg(&key)
        .arg("-out")
        .arg(&csr));
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "1", "-set_serial", "7", "-in"])
        .arg(&csr)
        .arg("-CA")
        .arg(identity_dir.join("issuer.pem"))
        .arg("-CAkey")
        .arg(identity_dir.join("issuer-key.pem"))
        .arg("-extfile")
        .arg(&ext)
        .arg("-out")
        .arg(&cert));
    let issuer = std::fs::read_to_string(identity_dir.join("issuer.pem")).unwrap();
    std::fs::write(&chain, std::fs::read_to_string(&cert).unwrap() + &issuer).unwrap();
    (chain.display().to_string(), key.display().to_string())
}

#[test]
fn only_the_controller_may_tap_a_meshed_proxy() {
    let rt = Runtime::new("tap-access");
    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let (node, web_ip) = (rt.node(), rt.pod_ip("web"));
    let target = format!("{web_ip}:4190");
    let identity_dir = rt.dir.join("identity");
    let anchor = identity_dir.join("anchor.pem").display().to_string();
    let out = rt.dir.with_extension("certs");
    std::fs::create_dir_all(&out).unwrap();
    let observe = |extra: &[&str]| {
        run(Command::new("ip")
            .args(["netns", "exec", &node, "python3", "-c", OBSERVE, &target])
            .args(extra))
    };

    let plain = observe(&[]);
    assert!(plain.starts_with("UNAVAILABLE"), "plaintext: {plain}");

    let web = id("web", "emojivoto");
    let (chain, key) = mint(&identity_dir, &out, &id("vote-bot", "emojivoto"));
    let other = observe(&[&anchor, &chain, &key, &web]);
    assert!(
        other.starts_with("UNAVAILABLE"),
        "another workload's identity: {other}"
    );

    let (chain, key) = mint(&identity_dir, &out, &id("conduit-controller", "conduit"));
    let controller = observe(&[&anchor, &chain, &key, &web]);
    assert!(
        controller.starts_with("EVENT"),
        "the controller's identity, over TLS from grpcio: {controller}"
    );

    // Which is what `conduit tap` goes through.
    let tapped = rt.ok(&["tap", "deploy/web", "-n", "emojivoto", "--max", "1"]);
    assert!(tapped.contains("req id="), "{tapped}");
}

#[test]
fn a_proxy_that_lets_in_another_identity_makes_tap_say_so() {
    let rt = Runtime::new("tap-other");
    let meshed = std::fs::read_to_string(rt.meshed_manifest()).unwrap();
    let controller = id("conduit-controller", "conduit");
    // Only the tap server's client: the control plane must still prove the controller.
    let mut tap_client = false;
    let other: String = meshed
        .lines()
        .map(|l| {
            let line = if tap_client {
                l.replace(&controller, &id("someone-else", "conduit"))
            } else {
                l.to_string()
            };
            tap_client = l.contains(conduit_api::proxy_env::TAP_CLIENT_IDENTITY);
            line + "\n"
        })
        .collect();
    assert_ne!(
        other, meshed,
        "inject names the controller as the tap client"
    );
    let manifest = rt.dir.with_extension("other-tap-client.yml");
    std::fs::write(&manifest, other).unwrap();
    rt.ok(&["local", "up", "-f", manifest.to_str().unwrap()]);

    let out = rt.conduit(&["tap", "deploy/web", "-n", "emojivoto", "--max", "1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("error pod=web-")
            && text.contains(&format!(
                "did not let the controller ({controller}) observe"
            ))
            && text.contains("CONDUIT_PROXY_TAP_CLIENT_IDENTITY"),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
