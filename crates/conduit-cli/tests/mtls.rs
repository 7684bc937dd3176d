//! Mutual TLS between meshed pods on the local runtime, for real: tcpdump on the node's
//! bridge, where all pod-to-pod traffic passes, sees no plaintext of what meshed pods send
//! each other (HTTP, gRPC or opaque TCP), while it does see what an unmeshed client sends;
//! the proxies' metrics name both ends' identities. Root only; the workspace's binaries
//! must be built.

mod common;
use common::*;
use conduit_testkit::wait_until;
use std::time::Duration;

/// Whether a line of `text` contains every one of `parts`.
fn has(text: &str, parts: &[&str]) -> bool {
    text.lines().any(|l| parts.iter().all(|p| l.contains(p)))
}

/// The meshed manifest with `name=value` in every proxy's environment.
fn with_proxy_env(rt: &Runtime, name: &str, value: &str) -> std::path::PathBuf {
    let meshed = std::fs::read_to_string(rt.meshed_manifest()).unwrap();
    let next_env = "        - name: CONDUIT_PROXY_DESTINATION_ADDR\n";
    let changed = meshed.replace(
        next_env,
        &format!("        - name: {name}\n          value: \"{value}\"\n{next_env}"),
    );
    assert_ne!(changed, meshed, "the proxies' environment was not found");
    let manifest = rt.meshed_manifest().with_extension(format!("{value}.yml"));
    std::fs::write(&manifest, changed).unwrap();
    manifest
}

/// With HTTP/1 between the proxies (`CONDUIT_PROXY_MESH_HTTP2=false`: the proxies'
/// default carries it over HTTP/2, which the last test covers), so that both ways of
/// speaking HTTP between proxies are seen on the wire to be mTLS.
#[test]
fn meshed_pods_speak_mutual_tls_and_unmeshed_clients_still_get_in() {
    let rt = Runtime::new("mtls");
    let manifest = with_proxy_env(&rt, conduit_api::proxy_env::MESH_HTTP2, "false");
    rt.ok(&["local", "up", "-f", manifest.to_str().unwrap()]);
    let (node, web_ip) = (rt.node(), rt.pod_ip("web"));
    let id = |sa: &str| format!("{sa}.emojivoto.serviceaccount.identity.conduit.cluster.local");

    // An opaque TCP echo server inside the web pod, next to the app.
    let mut echo_server = rt.spawn_in("web", &["python3", "-c", ECHO_SERVER_7000]);

    let capture = Capture::start(&node, rt.dir.with_extension("pcap"));
    let secret_http = "zz-http-secret-b1f3c9";
    // Not a token (':'), so detection knows at once that it is no HTTP request line.
    let secret_opaque = "zz:opaque:secret:77a0d2";
    let secret_plain = "zz-unmeshed-plaintext-5e1a";

    // Meshed to meshed, HTTP: curl in the vote bot's pod, through both proxies.
    let code = rt.exec(
        "vote-bot",
        &[
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
            "-d",
            secret_http,
            "http://web-svc.emojivoto/api/list",
        ],
    );
    assert!(
        code.starts_with('2') || code.starts_with('4'),
        "a real answer from web: {code}"
    );

    // Meshed to meshed, opaque TCP to the echo server: three connections, one after
    // another (each its own mesh TLS connection).
    let client = format!(
        "import socket\nfor _ in range(50):\n    try:\n        c=socket.create_connection(('{web_ip}',7000),timeout=10); c.sendall(b'{secret_opaque}'); print(c.recv(100).decode()); break\n    except OSError:\n        import time; time.sleep(0.2)\n"
    );
    let web_metrics = || node_curl(&node, &[&format!("http://{web_ip}:4191/metrics")]);
    let before = web_metrics();
    for _ in 0..3 {
        let echoed = rt.exec("vote-bot", &["python3", "-c", &client]);
        assert_eq!(
            echoed.trim(),
            secret_opaque,
            "the echo came back through both proxies"
        );
    }
    let after = web_metrics();
    let resumed = |text: &str| {
        sum(
            text,
            &["inbound_mtls_handshakes_total{", "resumed=\"true\""],
        )
    };
    assert!(
        resumed(&after) - resumed(&before) >= 2.0,
        "the second and third opaque connections resumed the first's session: {after}"
    );

    // An unmeshed client (the node itself): allowed in, in plaintext, under the default policy.
    let plain = node_curl(
        &node,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-d",
            secret_plain,
            &format!("http://{web_ip}:8080/api/leaderboard"),
        ],
    );
    assert!(plain.starts_with('2') || plain.starts_with('4'), "{plain}");

    // The app's own gRPC traffic (web to emoji and voting) keeps flowing meanwhile.
    std::thread::sleep(Duration::from_secs(2));
    let wire = capture.stop();
    let _ = echo_server.kill();
    let _ = echo_server.wait();

    assert!(
        contains(&wire, secret_plain),
        "the capture sees payloads: the unmeshed client's plaintext is there"
    );
    for secret in [
        secret_http,
        secret_opaque,
        "doughnut",
        "/api/list",
        "application/grpc",
    ] {
        assert!(
            !contains(&wire, secret),
            "{secret:?} crossed the wire in plaintext"
        );
    }
    assert!(
        contains(&wire, &id("web")),
        "mesh TLS handshakes name the server's identity (SNI)"
    );

    // Both ends know who the other is.
    let web_metrics = web_metrics();
    assert!(
        has(
            &web_metrics,
            &[
                "response_total{",
                "direction=\"inbound\"",
                "tls=\"true\"",
                &format!("client_id=\"{}\"", id("vote-bot"))
            ]
        ),
        "{web_metrics}"
    );
    assert!(
        has(
            &web_metrics,
            &[
                "response_total{",
                "direction=\"outbound\"",
                "authority=\"voting-svc.emojivoto:8080\"",
                "tls=\"true\"",
                &format!("server_id=\"{}\"", id("voting"))
            ]
        ),
        "{web_metrics}"
    );
    assert!(
        has(
            &web_metrics,
            &[
                "tcp_open_total{",
                "direction=\"inbound\"",
                "peer=\"src\"",
                "target_port=\"7000\"",
                &format!("client_id=\"{}\"", id("vote-bot"))
            ]
        ),
        "opaque TCP was mesh TLS too: {web_metrics}"
    );
    assert!(
        has(
            &web_metrics,
            &[
                "protocol_detect_total{",
                "direction=\"inbound\"",
                "decided_by=\"peer_proxy\""
            ]
        ),
        "the client's proxy said the bytes were opaque: {web_metrics}"
    );
    assert!(
        has(
            &web_metrics,
            &[
                "response_total{",
                "direction=\"inbound\"",
                "authority=\"",
                ":8080\"",
                "tls=\"false\""
            ]
        ),
        "the unmeshed client's requests count as plaintext: {web_metrics}"
    );

    // The metrics API reports it: `stat` has the share of mTLS traffic, `edges` both
    // ends' identities. (Not exactly 100%: readiness probes and the unmeshed client
    // are plaintext, and the first requests may beat discovery to the Service's VIP.)
    let edge = |src: &str, dst: &str| {
        rt.json(&["edges", "deploy", "-n", "emojivoto", "-o", "json"])
            .into_iter()
            .find(|e| e["src"] == src && e["dst"] == dst)
    };
    assert!(
        wait_until(Duration::from_secs(30), || edge("web", "voting").is_some()),
        "{:?}",
        rt.ok(&["edges", "deploy", "-n", "emojivoto"])
    );
    let e = edge("web", "voting").unwrap();
    assert!(e["tls_rate"].as_f64().unwrap() > 0.9, "{e}");
    assert_eq!(e["client_id"], id("web"), "{e}");
    assert_eq!(e["server_ids"], serde_json::json!([id("voting")]), "{e}");
    let wide = rt.ok(&["edges", "deploy", "-n", "emojivoto", "-o", "wide"]);
    assert!(
        wide.lines()
            .any(|l| l.starts_with("web ") && l.contains(&id("web")) && l.contains(&id("emoji"))),
        "{wide}"
    );
    let stat = rt.json(&["stat", "deploy", "-n", "emojivoto", "-o", "json"]);
    let voting = stat.iter().find(|r| r["name"] == "voting").unwrap();
    assert!(voting["tls_rate"].as_f64().unwrap() > 0.9, "{voting}");
    let table = rt.ok(&["stat", "deploy", "-n", "emojivoto"]);
    assert!(table.lines().next().unwrap().contains(" TLS "), "{table}");
}

/// A server-speaks-first port of a meshed pod (SMTP, aiosmtpd) learned by its inbound
/// proxy from an unmeshed client (curl), which then gets in without a detection timeout;
/// a meshed client still gets mesh TLS there; and a client that speaks first on the port
/// (HTTP) makes the proxy forget it.
#[test]
fn server_speaks_first_ports_take_mesh_tls_and_unmeshed_clients() {
    let rt = Runtime::new("mtls-smtp");
    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let (node, web_ip) = (rt.node(), rt.pod_ip("web"));
    let mut smtp = rt.spawn_listening(
        "web",
        &["python3", "-m", "aiosmtpd", "-n", "-l", "0.0.0.0:2525"],
        2525,
    );
    let mail = rt.dir.with_extension("mail.txt");
    std::fs::write(&mail, "Subject: hello\r\n\r\nthrough the mesh\r\n").unwrap();
    let smtp_url = format!("smtp://{web_ip}:2525");
    let send: Vec<&str> = vec![
        "--max-time",
        "30",
        "-w",
        "%{response_code}",
        "--mail-from",
        "a@example.com",
        "--mail-rcpt",
        "b@example.com",
        "--upload-file",
        mail.to_str().unwrap(),
        &smtp_url,
    ];
    let metrics = || node_curl(&node, &[&format!("http://{web_ip}:4191/metrics")]);
    let learned = [
        "server_speaks_first_port{",
        "direction=\"inbound\"",
        "port=\"2525\"} 1",
    ];

    // Unmeshed: the first mail waits out detection and teaches the port; the next ones
    // are spliced at once (after the short wait for a mesh ClientHello that never comes).
    assert_eq!(node_curl(&node, &send), "250");
    assert!(has(&metrics(), &learned), "{}", metrics());
    assert_eq!(node_curl(&node, &send), "250");
    let m = metrics();
    assert!(
        has(
            &m,
            &[
                "protocol_detect_total{",
                "direction=\"inbound\"",
                "decided_by=\"server_first_port\""
            ]
        ),
        "{m}"
    );

    // Meshed: the vote bot's proxy opens mesh TLS, which the web's proxy terminates on
    // this port too.
    let mut bot_send = vec!["curl", "-sS"];
    bot_send.extend_from_slice(&send);
    assert_eq!(rt.exec("vote-bot", &bot_send), "250");
    let vote_bot = "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local";
    let m = metrics();
    assert!(
        has(
            &m,
            &[
                "tcp_open_total{",
                "direction=\"inbound\"",
                "target_port=\"2525\"",
                &format!("client_id=\"{vote_bot}\"")
            ]
        ),
        "{m}"
    );

    // The port now serves HTTP, whose client speaks first: the proxy forgets the port.
    // (Killing `conduit local exec` ends aiosmtpd too, or the HTTP server could not
    // take its port.)
    let _ = smtp.kill();
    let _ = smtp.wait();
    assert!(
        wait_until(Duration::from_secs(30), || !rt.listening("web", 2525)),
        "aiosmtpd outlived its exec"
    );
    let mut http = rt.spawn_listening("web", &["python3", "-m", "http.server", "2525"], 2525);
    let code = node_curl(
        &node,
        &[
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://{web_ip}:2525/"),
        ],
    );
    let _ = http.kill();
    let _ = http.wait();
    assert_eq!(code, "200");
    assert!(
        wait_until(Duration::from_secs(5), || !has(&metrics(), &learned)),
        "{}",
        metrics()
    );
}

/// The sum of a counter's samples on the lines of `text` that contain every one of `parts`.
fn sum(text: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// By default HTTP/1 between meshed pods travels over one mesh-TLS HTTP/2 connection
/// between their proxies, and the app (hypercorn) receives each request as its client
/// (curl) sent it: version, target, `Host`. Upgrades keep a connection of their own, and
/// only another proxy may say that an HTTP/2 request was HTTP/1 (the `conduit-orig-proto`
/// mark).
#[test]
fn http1_between_meshed_pods_is_carried_over_one_http2_connection() {
    let rt = Runtime::new("mtls-carried");
    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let (node, web_ip) = (rt.node(), rt.pod_ip("web"));
    let peers = concat!(env!("CARGO_MANIFEST_DIR"), "/../conduit-proxy/tests/peers");
    let app = format!("{peers}/http_app.py:app");
    let mut hypercorn = rt.spawn_listening(
        "web",
        &["python3", "-m", "hypercorn", "--bind", "0.0.0.0:7001", &app],
        7001,
    );
    let url = format!("http://{web_ip}:7001");
    let echo = |argv: &[&str]| -> serde_json::Value {
        let out = rt.exec("vote-bot", argv);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    };
    let header = |echo: &serde_json::Value, name: &str| -> Option<String> {
        echo["headers"]
            .as_array()?
            .iter()
            .find(|h| h[0] == name)
            .and_then(|h| h[1].as_str().map(String::from))
    };

    // The app's own mark is not the proxies' to trust: it is removed on the way.
    let got = echo(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-H",
        "conduit-orig-proto: HTTP/1.0",
        "-H",
        "x-end-to-end: kept",
        &format!("{url}/echo?q=1"),
    ]);
    assert_eq!(got["http_version"], "1.1", "{got}");
    assert_eq!(got["path"], "/echo", "{got}");
    assert_eq!(got["query"], "q=1", "{got}");
    assert_eq!(
        header(&got, "host"),
        Some(format!("{web_ip}:7001")),
        "{got}"
    );
    assert_eq!(
        header(&got, "x-end-to-end").as_deref(),
        Some("kept"),
        "{got}"
    );
    assert_eq!(header(&got, "conduit-orig-proto"), None, "{got}");
    let got = echo(&[
        "curl",
        "-sS",
        "--max-time",
        "10",
        "--http1.0",
        &format!("{url}/echo"),
    ]);
    assert_eq!(got["http_version"], "1.0", "{got}");
    let head = rt.exec(
        "vote-bot",
        &["curl", "-sS", "-i", "--http1.0", &format!("{url}/echo")],
    );
    assert!(
        head.starts_with("HTTP/1.0 200"),
        "the client gets its own version back: {head}"
    );

    // Six HTTP/1 connections with a request each in flight at once: one connection
    // between the proxies.
    let parallel = format!(
        "import concurrent.futures, urllib.request\n\
         get = lambda i: urllib.request.urlopen('{url}/slow?ms=1500', timeout=20).status\n\
         with concurrent.futures.ThreadPoolExecutor(6) as pool:\n    print(list(pool.map(get, range(6))))\n"
    );
    assert_eq!(
        rt.exec("vote-bot", &["python3", "-c", &parallel]).trim(),
        "[200, 200, 200, 200, 200, 200]"
    );
    let vote_bot = "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local";
    let opened = |m: &str| {
        sum(
            m,
            &[
                "tcp_open_total{",
                "direction=\"inbound\"",
                "target_port=\"7001\"",
                &format!("client_id=\"{vote_bot}\""),
            ],
        )
    };
    let metrics = || node_curl(&node, &[&format!("http://{web_ip}:4191/metrics")]);
    let m = metrics();
    assert_eq!(opened(&m), 1.0, "{m}");
    assert_eq!(
        sum(
            &m,
            &[
                "response_total{",
                "direction=\"inbound\"",
                ":7001\"",
                "tls=\"true\""
            ]
        ),
        9.0,
        "{m}"
    );

    // A WebSocket upgrade gets a connection of its own, and works.
    let ws = rt.exec(
        "vote-bot",
        &[
            "python3",
            &format!("{peers}/ws_client.py"),
            &format!("ws://{web_ip}:7001/ws"),
            "2",
        ],
    );
    assert_eq!(
        ws.trim(),
        r#"{"replies": ["echo: message 0", "echo: message 1"]}"#
    );
    assert_eq!(opened(&metrics()), 2.0);

    // An unmeshed HTTP/2 client's mark changes nothing: its request reaches the app as
    // HTTP/2, without the mark.
    let out = node_curl(
        &node,
        &[
            "--http2-prior-knowledge",
            "-H",
            "conduit-orig-proto: HTTP/1.1",
            &format!("{url}/echo"),
        ],
    );
    let got: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(got["http_version"], "2", "{got}");
    assert_eq!(header(&got, "conduit-orig-proto"), None, "{got}");
    let _ = hypercorn.kill();
    let _ = hypercorn.wait();
}
