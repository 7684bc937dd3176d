//! The control plane speaks TLS and knows who is asking, on the local runtime, for real:
//! tcpdump on the node's bridge during a proxy's start (a new key, its Certify call with
//! the pod's token, then Destination and InboundPolicy) sees no token, no identity name
//! and no gRPC method path in clear; and a proxy's identity gets its own pod's policy
//! only (grpcio, with a certificate for the vote bot's identity, asks from the vote bot's
//! pod). Root only; the workspace's binaries must be built.

mod common;
use common::*;
use conduit_testkit::wait_until;
use std::{process::Command, time::Duration};

/// How many certificates the controller has issued.
fn issued(rt: &Runtime) -> u64 {
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(rt.dir.join("api.sock"))
        .arg("http://conduit/metrics")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("identity_certify_total{outcome=\"issued\"} "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// The pid of the proxy in the pod whose network namespace is `netns`.
fn proxy_pid(netns: &str) -> Option<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", netns])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "conduit-proxy")
        })
}

#[test]
fn a_proxys_start_shows_nothing_in_clear_to_the_node() {
    let rt = Runtime::new("cp-capture");
    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let status = rt.status();
    let web = Runtime::pod(&status, "web");
    let (netns, web_ip) = (web["netns"].as_str().unwrap(), web["ip"].as_str().unwrap());
    let token = std::fs::read_to_string(rt.identity_file("tokens").join(netns)).unwrap();

    // Only the control plane's port: meshed pods' TLS names its peer's identity as SNI.
    let filter = format!("tcp port {}", conduit_api::ports::CONTROLLER_GRPC);
    let capture = Capture::start_with(&rt.node(), rt.dir.with_extension("pcap"), &filter);
    let before = issued(&rt);
    // The web's proxy dies; the runtime starts it again: a new key, a new certificate,
    // its policy and the Destination streams the web's calls need.
    let pid = proxy_pid(netns).expect("the web's proxy");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(30), || issued(&rt) > before),
        "the restarted proxy was certified"
    );
    let ready = || {
        let out = Command::new("ip")
            .args(["netns", "exec", &rt.node(), "curl", "-s", "--max-time", "2"])
            .arg(format!(
                "http://{web_ip}:{}/ready",
                conduit_api::ports::PROXY_ADMIN
            ))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout) == "ready\n"
    };
    assert!(
        wait_until(Duration::from_secs(30), ready),
        "the proxy is ready again"
    );
    // The vote bot keeps calling the web, which calls its backends: Destination streams.
    std::thread::sleep(Duration::from_secs(3));
    let packets = capture.stop();

    let pcap = rt.dir.with_extension("pcap");
    let flows = Command::new("tcpdump")
        .args(["-r"])
        .arg(&pcap)
        .args(["-nn", &format!("host {web_ip}")])
        .output()
        .unwrap();
    let flows = String::from_utf8_lossy(&flows.stdout);
    assert!(
        flows.lines().count() > 10,
        "the capture saw the proxy's control plane traffic: {flows}"
    );
    assert!(!contains(&packets, token.trim()), "the token in clear");
    assert!(
        !contains(&packets, "serviceaccount.identity.conduit.cluster.local"),
        "an identity name in clear"
    );
    assert!(
        !contains(&packets, "/conduit."),
        "a gRPC method path in clear"
    );
}

#[test]
fn a_proxy_gets_its_own_pods_policy_only() {
    let rt = Runtime::new("cp-policy");
    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let status = rt.status();
    let (bot, web) = (
        Runtime::pod(&status, "vote-bot"),
        Runtime::pod(&status, "web"),
    );
    let name = |p: &serde_json::Value| p["name"].as_str().unwrap().to_string();
    // The vote bot's own identity, as its proxy has it (minted here with the runtime's
    // issuer: the proxy's key never leaves its memory).
    let (cert, key) = conduit_testkit::openssl_identity(
        &rt.dir.with_extension("certs"),
        &rt.identity_file("issuer.pem"),
        &rt.identity_file("issuer-key.pem"),
        "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local",
        "vote-bot",
    );
    let watch = |client, pod: &str| {
        rt.control_plane_call(
            "vote-bot",
            "/conduit.policy.v1.InboundPolicy/Watch",
            true,
            client,
            &["emojivoto", pod],
        )
    };
    let own = watch(Some((&cert, &key)), &name(bot));
    assert_eq!(own.trim(), "OK", "its own pod's policy: {own}");
    let other = watch(Some((&cert, &key)), &name(web));
    assert!(
        other.starts_with("PERMISSION_DENIED")
            && other.contains(&format!(
                "is pod emojivoto/{}, not emojivoto/{}",
                name(bot),
                name(web)
            )),
        "{other}"
    );
    // Without a certificate, not even its own.
    let anonymous = watch(None, &name(bot));
    assert!(anonymous.starts_with("UNAUTHENTICATED"), "{anonymous}");
}
