//! No way around the inbound proxy, tried as an attacker would on the local runtime:
//! the probe exemption of a port that policy closes lets a plain `GET`/`HEAD` of the
//! probe path through and nothing else (an `Upgrade` there would be a tunnel to the app),
//! and a server the app binds to loopback only stays private to the pod, unless the
//! pod's `config.conduit.io/inbound-loopback-ports` annotation asks for loopback
//! forwarding. Root only; the workspace's binaries must be built.

mod common;
use common::*;

/// An app on 8080 that answers `101 Switching Protocols` to any request asking for an
/// upgrade (as a websocket server on that path would) and `200` to others, with a second
/// server bound to 127.0.0.1:9090 only, as an admin or debug port is.
const APP: &str = r#"
import socket, threading
def serve(addr, body):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(addr); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=answer, args=(c, body), daemon=True).start()
def answer(c, body):
    try:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = c.recv(4096)
            if not chunk: return
            head += chunk
        if b"\nupgrade:" in head.lower():
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\ntunnel open\n")
        else:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
    finally:
        c.close()
threading.Thread(target=serve, args=(("127.0.0.1", 9090), b"private\n"), daemon=True).start()
serve(("0.0.0.0", 8080), b"public\n")
"#;

fn manifest() -> String {
    let deployment = |name: &str, annotations: &str| {
        python_deployment(
            "hard",
            name,
            annotations,
            "app",
            &[
                "ports: [{name: http, containerPort: 8080}]",
                "readinessProbe: {httpGet: {path: /healthz, port: 8080}, periodSeconds: 1}",
            ],
            APP,
        )
    };
    format!(
        r#"{}{}{}# The app's port 8080 is a Server that no AuthorizationPolicy opens: only its probes pass.
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {{name: app-http, namespace: hard}}
spec:
  podSelector: {{matchLabels: {{app: app}}}}
  port: http
"#,
        deployment("app", ""),
        deployment(
            "loopback-app",
            "config.conduit.io/inbound-loopback-ports: \"9090\""
        ),
        sleeper_deployment("hard", "client"),
    )
}

/// `curl -i ARGS` from the node (an unmeshed client): the response head and body.
fn node_curl_i(node: &str, args: &[&str]) -> String {
    let argv: Vec<&str> = ["-i"].into_iter().chain(args.iter().copied()).collect();
    node_curl(node, &argv)
}

#[test]
fn probes_get_through_a_closed_port_but_upgrades_on_the_probe_path_do_not_and_loopback_stays_private(
) {
    let rt = Runtime::new("bypass");
    rt.up_meshed(&manifest());
    let (node, app_ip) = (rt.node(), rt.pod_ip("app"));
    let status = rt.status();
    assert_eq!(
        Runtime::pod(&status, "app")["ready"],
        true,
        "the probe passes the closed port: {status}"
    );

    // The port is closed to this client, but its probe path is not.
    let url = format!("http://{app_ip}:8080/healthz");
    let probe = node_curl_i(&node, &[&url]);
    assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
    assert!(probe.ends_with("public\n"), "{probe}");
    let head = node_curl_i(&node, &["-I", &url]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let other = node_curl_i(&node, &[&format!("http://{app_ip}:8080/admin")]);
    assert!(other.starts_with("HTTP/1.1 403"), "{other}");

    // Asking for an upgrade on the probe path is not a probe: it is refused like any
    // other request, and the app never opens its tunnel.
    let upgrade = node_curl_i(
        &node,
        &[
            "-H",
            "Connection: Upgrade",
            "-H",
            "Upgrade: websocket",
            &url,
        ],
    );
    assert!(upgrade.starts_with("HTTP/1.1 403"), "{upgrade}");
    assert!(!upgrade.contains("tunnel open"), "{upgrade}");

    // A server bound to the app's loopback answers inside the pod...
    let inside = rt.exec(
        "app",
        &["curl", "-sS", "--max-time", "5", "http://127.0.0.1:9090/"],
    );
    assert_eq!(inside, "private\n");
    // ...but not to another pod, which reaches the pod's own address, where nothing
    // listens on 9090: the client's proxy answers that the upstream refused.
    let outside = rt.exec(
        "client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-i",
            &format!("http://{app_ip}:9090/"),
        ],
    );
    assert!(!outside.contains("private"), "{outside}");
    assert!(outside.starts_with("HTTP/1.1 502"), "{outside}");
    assert!(
        outside.contains(&format!("upstream {app_ip}:9090 refused the connection")),
        "{outside}"
    );

    // The annotation brings loopback forwarding back for the app that asks for it.
    let loopback_ip = rt.pod_ip("loopback-app");
    let opened = rt.exec(
        "client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            &format!("http://{loopback_ip}:9090/"),
        ],
    );
    assert_eq!(opened, "private\n");
}
