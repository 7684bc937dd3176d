//! `conduit-proxy init` against real iptables in a fresh network namespace: the rules it
//! writes, that writing them twice changes nothing, that `--dry-run` writes nothing, and
//! that skipped ports really bypass the proxy. Root only.

mod common;
use common::*;

/// The nat table without comments and counters, for comparing rule sets.
fn nat_rules(pod: &Pod, tool: &str) -> String {
    pod.run_ok(&[tool, "-t", "nat"])
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l).to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn init_is_idempotent_for_both_families() {
    let lan = Lan::new();
    let pod = lan.pod("init");
    pod.run_ok(&[
        PROXY,
        "init",
        "--skip-outbound-ports",
        "25,3306-3310",
        "--skip-inbound-ports",
        "22",
    ]);
    for tool in ["iptables-save", "ip6tables-save"] {
        let first = nat_rules(&pod, tool);
        assert!(
            first.contains("-A PREROUTING -p tcp -j CONDUIT_PROXY_INBOUND"),
            "{tool}: {first}"
        );
        assert!(
            first.contains("-A OUTPUT -p tcp -j CONDUIT_PROXY_OUTBOUND"),
            "{first}"
        );
        assert!(
            first.contains("-A CONDUIT_PROXY_OUTBOUND -m owner --uid-owner 2102 -j RETURN"),
            "{first}"
        );
        assert!(
            first.contains("-A CONDUIT_PROXY_OUTBOUND -o lo -j RETURN"),
            "{first}"
        );
        assert!(first.contains("--dports 25,3306:3310 -j RETURN"), "{first}");
        assert!(first.contains("--dports 4190,4191,22 -j RETURN"), "{first}");
        assert!(
            first.contains("-A CONDUIT_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143"),
            "{first}"
        );
        assert!(
            first.contains("-A CONDUIT_PROXY_OUTBOUND -p tcp -j REDIRECT --to-ports 4140"),
            "{first}"
        );
        pod.run_ok(&[
            PROXY,
            "init",
            "--skip-outbound-ports",
            "25,3306-3310",
            "--skip-inbound-ports",
            "22",
        ]);
        assert_eq!(
            nat_rules(&pod, tool),
            first,
            "{tool}: a second run changed the rules"
        );
    }
    // Running again with other settings replaces the chains' rules rather than adding.
    pod.run_ok(&[PROXY, "init", "--outbound-port", "5140"]);
    let changed = nat_rules(&pod, "iptables-save");
    assert_eq!(changed.matches("REDIRECT").count(), 2, "{changed}");
    assert!(
        changed.contains("--to-ports 5140") && !changed.contains("--dports 25"),
        "{changed}"
    );
    assert_eq!(
        changed.matches("-j CONDUIT_PROXY_OUTBOUND").count(),
        1,
        "{changed}"
    );
}

#[test]
fn dry_run_prints_and_writes_nothing() {
    let lan = Lan::new();
    let pod = lan.pod("dry");
    let before = nat_rules(&pod, "iptables-save");
    let printed = pod.run_ok(&[PROXY, "init", "--dry-run", "--proxy-uid", "999"]);
    assert!(
        printed.contains("# iptables-restore --noflush"),
        "{printed}"
    );
    assert!(printed.contains("--uid-owner 999 -j RETURN"), "{printed}");
    assert_eq!(nat_rules(&pod, "iptables-save"), before);
}

#[test]
fn bad_init_arguments_are_refused() {
    let out = std::process::Command::new(PROXY)
        .args(["init", "--dry-run", "--skip-outbound-ports", "25,smtp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "bad usage exits 2");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("\"smtp\" is not a port or a range of ports"),
        "{err}"
    );
}

#[test]
fn skipped_ports_bypass_the_proxy() {
    let client_mesh = Mesh::default().init_args(&["--skip-outbound-ports", "6379"]);
    let server_mesh = Mesh::default().init_args(&["--skip-inbound-ports", "6379"]);
    let (_lan, client, server) = pods(Some(client_mesh), Some(server_mesh));
    let _redis = redis(&server);
    let _app = http_app(&server, 8080);
    assert_eq!(
        client
            .run_ok(&["redis-cli", "-h", &server.ip.to_string(), "PING"])
            .trim(),
        "PONG"
    );
    curl(&client, &[&format!("http://{}:8080/echo", server.ip)]);
    for pod in [&client, &server] {
        let m = wait_metric(pod, "request_total", &[], 1.0);
        assert_eq!(
            m.sum("tcp_open_total", &[("peer", "src")]),
            1.0,
            "only the HTTP connection was proxied: {m}"
        );
    }
}
