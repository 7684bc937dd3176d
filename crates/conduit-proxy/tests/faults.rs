//! Bad input and faults: every response the proxy makes up itself says why in a
//! `conduit-proxy-error` header, the reason is counted, and nothing hangs or panics.
//! Real clients (curl, the h2 library, raw sockets for malformed bytes) against real
//! proxies in network namespaces. Root only.

mod common;
use common::*;
use std::time::Duration;

const NOW: Duration = Duration::ZERO;

fn proxy_errors(pod: &Pod, error: &str) -> f64 {
    pod.metrics().sum("proxy_errors_total", &[("error", error)])
}

#[test]
fn malformed_requests_get_400_with_the_reason_and_the_connection_closes() {
    let (_lan, client, server) = meshed_pods();
    let _app = http_app(&server, 8080);
    let got = exchange(
        &client,
        server.addr(8080),
        &[(NOW, b"GET / HTTP/1.1\r\nHost: a\r\nbad header line\r\n\r\n")],
        Duration::from_secs(10),
    );
    assert_eq!(got.status(), Some(400), "{got:?}");
    let reason = got
        .header("conduit-proxy-error")
        .expect("the proxy says why");
    assert!(reason.starts_with("malformed HTTP request"), "{reason}");
    assert!(
        got.closed,
        "the connection is closed after a malformed request"
    );
    assert_eq!(proxy_errors(&client, "malformed_request"), 1.0);

    let got = exchange(
        &client,
        server.addr(8080),
        &[(
            NOW,
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        )],
        Duration::from_secs(10),
    );
    assert_eq!(got.status(), Some(400), "{got:?}");
    assert!(
        got.header("conduit-proxy-error")
            .unwrap()
            .contains("conflicting content-length"),
        "{got:?}"
    );

    // A malformed request later on a keep-alive connection: hyper answers 400 itself (its
    // own minimal response), closes, and the proxy still counts it.
    let got = exchange(
        &client,
        server.addr(8080),
        &[
            (NOW, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n"),
            (
                Duration::from_millis(300),
                b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
            ),
        ],
        Duration::from_secs(10),
    );
    assert!(got.received.starts_with("HTTP/1.1 200"), "{got:?}");
    assert!(got.received.contains("HTTP/1.1 400"), "{got:?}");
    assert!(got.closed);
    assert!(
        wait_until(Duration::from_secs(5), || proxy_errors(
            &client,
            "malformed_request"
        ) == 3.0),
        "{}",
        client.metrics()
    );
    // Nothing malformed reached the server.
    assert_eq!(server.metrics().sum("request_total", &[]), 1.0);
}

#[test]
fn oversized_headers_get_431_over_http1_and_http2() {
    let mesh = Mesh::default().env("CONDUIT_PROXY_MAX_HEADER_BYTES", "4096");
    let (_lan, client, server) = pods(Some(mesh), Some(Mesh::default()));
    let _app = http_app(&server, 8080);
    let big = format!("X-Big: {}", "a".repeat(5000));
    let url = format!("http://{}:8080/echo", server.ip);
    for http2 in [false, true] {
        let mut args = vec!["-i", "-H", &big, &url];
        if http2 {
            args.insert(0, "--http2-prior-knowledge");
        }
        let (out, _) = curl(&client, &args);
        let status = out.lines().next().unwrap_or_default();
        assert!(status.contains(" 431"), "http2={http2}: {out}");
        assert!(out.contains("conduit-proxy-error: the request head is larger than the proxy's limit of 4096 bytes"), "{out}");
    }
    assert_eq!(proxy_errors(&client, "headers_too_large"), 2.0);
    // A long request line is refused as 414.
    let long = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "p".repeat(5000));
    let got = exchange(
        &client,
        server.addr(8080),
        &[(NOW, long.as_bytes())],
        Duration::from_secs(10),
    );
    assert_eq!(got.status(), Some(414), "{got:?}");
    // Requests within the limit pass.
    let (out, _) = curl(
        &client,
        &["-H", &format!("X-Fits: {}", "a".repeat(3000)), &url],
    );
    assert!(out.contains("x-fits"), "{out}");
}

#[test]
fn clients_that_send_headers_too_slowly_are_cut_off_with_408() {
    let mesh = Mesh::default()
        .env("CONDUIT_PROXY_HEADER_READ_TIMEOUT", "1s")
        .env("CONDUIT_PROXY_DETECT_TIMEOUT", "1s");
    let (_lan, client, server) = pods(Some(mesh), Some(Mesh::default()));
    let _app = http_app(&server, 8080);
    // The request line arrives, the rest of the head never does.
    let got = exchange(
        &client,
        server.addr(8080),
        &[(NOW, b"GET /echo HTTP/1.1\r\nHost: a\r\n")],
        Duration::from_secs(10),
    );
    assert_eq!(got.status(), Some(408), "{got:?}");
    assert!(
        got.header("conduit-proxy-error")
            .unwrap()
            .contains("nothing for 1s"),
        "{got:?}"
    );
    assert!(got.closed);
    // Even the request line stalls.
    let got = exchange(
        &client,
        server.addr(8080),
        &[(NOW, b"GET /ech")],
        Duration::from_secs(10),
    );
    assert_eq!(got.status(), Some(408), "{got:?}");
    assert!(got.closed);
    assert_eq!(proxy_errors(&client, "request_head_timeout"), 2.0);
}

#[test]
fn idle_keep_alive_connections_are_closed_quietly() {
    let mesh = Mesh::default().env("CONDUIT_PROXY_KEEPALIVE_TIMEOUT", "1s");
    let (_lan, client, server) = pods(Some(mesh), Some(Mesh::default()));
    let _app = http_app(&server, 8080);
    // One request, then silence: the proxy closes the idle connection after 1s.
    let got = exchange(
        &client,
        server.addr(8080),
        &[(NOW, b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")],
        Duration::from_secs(10),
    );
    assert_eq!(got.status(), Some(200), "{got:?}");
    assert!(got.closed, "the idle connection was closed by the proxy");
    // That is how keep-alive ends, not a failure.
    let m = client.metrics();
    assert_eq!(m.sum("proxy_errors_total", &[]), 0.0, "{m}");
}

#[test]
fn an_unreachable_upstream_gives_502_or_504_for_http_and_a_closed_connection_for_tcp() {
    let mesh = Mesh::default().env("CONDUIT_PROXY_CONNECT_TIMEOUT", "500ms");
    let (_lan, client, server) = pods(Some(mesh), None);

    // Nothing listens: refused.
    let (out, _) = curl(&client, &["-i", &format!("http://{}:9999/", server.ip)]);
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(
        out.contains(&format!(
            "conduit-proxy-error: upstream {}:9999 refused the connection",
            server.ip
        )),
        "{out}"
    );

    // Packets vanish: the connect times out.
    server.run_ok(&[
        "iptables", "-A", "INPUT", "-p", "tcp", "--dport", "9998", "-j", "DROP",
    ]);
    let (out, _) = curl(&client, &["-i", &format!("http://{}:9998/", server.ip)]);
    assert!(out.starts_with("HTTP/1.1 504"), "{out}");
    assert!(out.contains("timed out after 500ms"), "{out}");

    // Opaque TCP has no way to say why: the client's connection is closed.
    let redis = client.run(&[
        "redis-cli",
        "-h",
        &server.ip.to_string(),
        "-p",
        "9999",
        "PING",
    ]);
    assert!(!redis.stdout.contains("PONG"), "{redis:?}");
    let m = client.metrics();
    assert_eq!(
        m.sum("proxy_errors_total", &[("error", "upstream_refused")]),
        2.0,
        "{m}"
    );
    assert_eq!(
        m.sum(
            "proxy_errors_total",
            &[("error", "upstream_connect_timeout")]
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        m.sum(
            "response_total",
            &[("status_code", "502"), ("classification", "failure")]
        ),
        1.0,
        "{m}"
    );
    assert!(
        client.proxy_logs().contains("refused the connection"),
        "the reason is logged too"
    );
}

#[test]
fn the_inbound_proxy_reports_a_dead_local_app_with_502() {
    let (_lan, client, server) = meshed_pods();
    let (out, _) = curl(&client, &["-i", &format!("http://{}:7000/", server.ip)]);
    assert!(out.starts_with("HTTP/1.1 502"), "{out}");
    assert!(
        out.contains(&format!(
            "conduit-proxy-error: upstream {}:7000 refused the connection",
            server.ip
        )),
        "{out}"
    );
    assert_eq!(
        server.metrics().sum(
            "proxy_errors_total",
            &[("direction", "inbound"), ("error", "upstream_refused")]
        ),
        1.0
    );
}

#[test]
fn http2_rapid_reset_floods_are_cut_off() {
    let (_lan, client, server) = meshed_pods();
    let _app = http_app(&server, 8080);
    let out = client.run_ok(&[
        "python3",
        &peer("h2_rapid_reset.py"),
        &server.ip.to_string(),
        "8080",
        "5000",
    ]);
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    // GOAWAY with ENHANCE_YOUR_CALM (0xb), and the connection is closed.
    assert_eq!(report["goaway"], 11, "{report}");
    assert!(
        report["closed"].as_bool().unwrap() || report["send_failed"].as_bool().unwrap(),
        "{report}"
    );
    let m = wait_metric(
        &client,
        "proxy_errors_total",
        &[("error", "http2_flood")],
        1.0,
    );
    assert!(
        m.sum("request_total", &[]) <= 64.0,
        "the flood's work is bounded: {m}"
    );
    // The proxy still serves everyone else.
    let (out, _) = curl(
        &client,
        &[
            "--http2-prior-knowledge",
            &format!("http://{}:8080/echo", server.ip),
        ],
    );
    assert!(out.contains("\"http_version\": \"2\""), "{out}");
}

#[test]
fn connections_to_the_proxy_port_itself_are_refused_not_looped() {
    let (_lan, client, server) = pods(None, Some(Mesh::default()));
    let got = exchange(
        &client,
        server.addr(4143),
        &[(NOW, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")],
        Duration::from_secs(10),
    );
    assert!(got.closed && got.received.is_empty(), "{got:?}");
    assert_eq!(
        server
            .metrics()
            .sum("proxy_errors_total", &[("error", "not_redirected")]),
        1.0
    );
}

#[test]
fn sigterm_drains_in_flight_requests_then_exits() {
    let mesh = Mesh::default().env("CONDUIT_PROXY_SHUTDOWN_GRACE_PERIOD", "10s");
    let (_lan, client, mut server) = pods(None, Some(mesh));
    let _app = http_app(&server, 8080);
    let slow = client.spawn(&[
        "curl",
        "-sS",
        "--max-time",
        "20",
        &format!("http://{}:8080/slow?ms=2000", server.ip),
    ]);
    // The request is in flight once the proxy has opened its connection to the app (it is
    // counted in request_total only when its response head is known).
    wait_metric(
        &server,
        "tcp_open_total",
        &[("direction", "inbound"), ("peer", "dst")],
        1.0,
    );
    server.proxy().signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || server
            .admin_get("/ready")
            .map(|r| r.0)
            == Some(503)),
        "not draining"
    );
    // New connections are no longer accepted...
    let refused = client.run(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{}:8080/echo", server.ip),
    ]);
    assert_ne!(refused.status, Some(0), "{refused:?}");
    // ...while the one in flight completes, and then the proxy exits cleanly.
    let mut slow = slow;
    assert_eq!(
        slow.wait_exit(Duration::from_secs(15)),
        Some(0),
        "{}",
        slow.logs()
    );
    assert!(
        slow.logs().contains("\"slept_ms\": 2000"),
        "{}",
        slow.logs()
    );
    assert_eq!(
        server.proxy().wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.proxy_logs()
    );
    assert!(
        server.proxy_logs().contains("drained; exiting"),
        "{}",
        server.proxy_logs()
    );
}

#[test]
fn shutdown_endpoint_only_answers_loopback() {
    let (_lan, client, mut server) = pods(None, Some(Mesh::default()));
    let (out, _) = curl(
        &client,
        &[
            "-i",
            "-X",
            "POST",
            &format!("http://{}:4191/shutdown", server.ip),
        ],
    );
    assert!(out.starts_with("HTTP/1.1 403"), "{out}");
    assert!(server.proxy().is_running());
    let (status, _) = server.admin_request("POST", "/shutdown").unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        server.proxy().wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        server.proxy_logs()
    );
}

#[test]
fn bad_configuration_is_refused_with_the_variable_named() {
    let out = std::process::Command::new(PROXY)
        .env("CONDUIT_PROXY_DETECT_TIMEOUT", "10")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "CONDUIT_PROXY_DETECT_TIMEOUT=\"10\" is not valid: expected a duration like 10s"
        ),
        "{err}"
    );

    // A port already taken names the listener and its variable.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = std::process::Command::new(PROXY)
        .env("CONDUIT_PROXY_INBOUND_ADDR", "127.0.0.1:0")
        .env(
            "CONDUIT_PROXY_OUTBOUND_ADDR",
            taken.local_addr().unwrap().to_string(),
        )
        .env("CONDUIT_PROXY_ADMIN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("for the outbound listener (CONDUIT_PROXY_OUTBOUND_ADDR)"),
        "{err}"
    );
}

#[test]
fn a_proxy_with_an_identity_to_get_is_not_ready_without_a_certificate() {
    let lan = Lan::new();
    let pod = lan.pod("noid");
    let token = std::env::temp_dir().join(format!("conduit-noid-token-{}", std::process::id()));
    std::fs::write(&token, "token").unwrap();
    let day = Duration::from_secs(86_400);
    let anchors = conduit_identity::ca::generate(day, day).unwrap().anchor_pem;
    let env: Vec<(String, String)> = [
        ("CONDUIT_PROXY_IDENTITY_ADDR", "127.0.0.1:1"),
        ("CONDUIT_PROXY_IDENTITY_TRUST_ANCHORS", anchors.as_str()),
        ("CONDUIT_PROXY_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
        ("CONDUIT_PROXY_POD_NAMESPACE", "emojivoto"),
        ("CONDUIT_PROXY_IDENTITY_SERVICE_ACCOUNT", "web"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let _proxy = pod.spawn_with(&[PROXY], Some(conduit_testkit::PROXY_UID), &env);
    let waiting = wait_until(Duration::from_secs(10), || {
        pod.admin_get("/ready").is_some_and(|(status, body)| {
            status == 503 && body.contains("waiting for a certificate for web.emojivoto.serviceaccount.identity.conduit.cluster.local") && body.contains("connecting to the control plane at 127.0.0.1:1")
        })
    });
    assert!(waiting, "{:?}", pod.admin_get("/ready"));
    let (status, body) = pod.admin_get("/identity").unwrap();
    assert_eq!(status, 200);
    assert!(
        body.contains("\"certified\":false") && body.contains("\"last_error\":\""),
        "{body}"
    );
    let _ = std::fs::remove_file(token);
}

/// Opens three idle connections, then a fourth (which the proxy at its limit closes at
/// once), closes one of the three and makes a request on a fresh connection.
const CONNECTION_LIMIT_CLIENT: &str = r#"
import socket, sys, time
ip = sys.argv[1]
held = [socket.create_connection((ip, 8080), timeout=10) for _ in range(3)]
time.sleep(0.5)
extra = socket.create_connection((ip, 8080), timeout=10)
try:
    print("fourth:", "closed" if extra.recv(1) == b"" else "open")
except ConnectionResetError:
    print("fourth: closed")
except socket.timeout:
    print("fourth: open")
held.pop().close()
# The slot frees once the proxy has seen the close through to the app.
for _ in range(50):
    time.sleep(0.2)
    try:
        c = socket.create_connection((ip, 8080), timeout=10)
        c.sendall(b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        head = c.recv(12)
    except ConnectionResetError:
        continue
    if head:
        print("after:", head.decode())
        break
"#;

#[test]
fn a_listener_at_its_connection_limit_closes_more_at_once_and_counts_them() {
    let limited = Mesh::default().env(conduit_api::proxy_env::MAX_CONNECTIONS, "3");
    let (_lan, client, server) = pods(None, Some(limited));
    let _app = http_app(&server, 8080);
    let out = client.run_ok(&[
        "python3",
        "-c",
        CONNECTION_LIMIT_CLIENT,
        &server.ip.to_string(),
    ]);
    assert!(out.contains("fourth: closed"), "{out}");
    assert!(
        out.contains("after: HTTP/1.1 200"),
        "a freed slot serves: {out}"
    );
    let m = wait_metric(
        &server,
        "proxy_errors_total",
        &[("direction", "inbound"), ("error", "connection_limit")],
        1.0,
    );
    assert!(
        m.sum("proxy_errors_total", &[("error", "connection_limit")]) >= 1.0,
        "{m}"
    );
}

/// Sends a POST whose body stalls after its first bytes, and one whose body trickles
/// steadily: prints each response's status line.
const SLOW_BODY_CLIENT: &str = r#"
import socket, sys, time
ip = sys.argv[1]
def post(pause, parts):
    c = socket.create_connection((ip, 8080), timeout=30)
    c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % parts)
    for _ in range(parts):
        c.sendall(b"x")
        time.sleep(pause)
    got = b""
    while b"\r\n" not in got:
        chunk = c.recv(4096)
        if not chunk:
            break
        got += chunk
    return got.split(b"\r\n")[0].decode()
# Stalls: one byte of three, then 5 s of nothing (the proxy allows 1 s).
c = socket.create_connection((ip, 8080), timeout=30)
c.sendall(b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nx")
head = c.recv(4096).decode(errors="replace")
print("stalled:", head.split("\r\n")[0])
print("reason:", [l for l in head.split("\r\n") if l.startswith("conduit-proxy-error")])
print("closed:", c.recv(100) == b"")
# Trickles: a byte every 0.3 s for 3 s, never idle for 1 s.
print("steady:", post(0.3, 10))
"#;

#[test]
fn an_http1_request_body_that_stalls_gets_408_and_a_steady_slow_one_passes() {
    let strict = Mesh::default().env(conduit_api::proxy_env::HTTP1_BODY_IDLE_TIMEOUT, "1s");
    let (_lan, client, server) = pods(None, Some(strict));
    let _app = http_app(&server, 8080);
    let out = client.run_ok(&["python3", "-c", SLOW_BODY_CLIENT, &server.ip.to_string()]);
    assert!(out.contains("stalled: HTTP/1.1 408"), "{out}");
    assert!(
        out.contains("sent part of an HTTP/1 request body and then nothing for 1s"),
        "{out}"
    );
    assert!(out.contains("closed: True"), "{out}");
    assert!(out.contains("steady: HTTP/1.1 200"), "{out}");
    let m = wait_metric(
        &server,
        "proxy_errors_total",
        &[("error", "request_body_timeout")],
        1.0,
    );
    assert_eq!(
        m.sum("proxy_errors_total", &[("error", "request_body_timeout")]),
        1.0,
        "{m}"
    );
}
