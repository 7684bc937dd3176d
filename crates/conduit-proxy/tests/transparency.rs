//! End-to-end transparency: real clients and servers that no one here wrote talk through
//! a client pod's outbound proxy and a server pod's inbound proxy, each pod's traffic
//! redirected by the real `conduit-proxy init` rules, as on Kubernetes. Root only.

mod common;
use common::*;

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn header<'a>(echo: &'a serde_json::Value, name: &str) -> Option<&'a str> {
    echo["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str() == Some(name))
        .and_then(|h| h[1].as_str())
}

#[test]
fn http1_keep_alive_chunked_and_hop_by_hop_headers() {
    let (_lan, client, server) = meshed_pods();
    let _app = http_app(&server, 8080);
    let url = format!("http://{}:8080", server.ip);

    // Two requests on one client connection: keep-alive survives the proxy.
    let (out, err) = curl(
        &client,
        &[
            "-v",
            &format!("{url}/echo"),
            &format!("{url}/echo?second=1"),
        ],
    );
    assert!(err.contains("Re-using existing connection"), "{err}");
    assert_eq!(out.matches("\"method\": \"GET\"").count(), 2, "{out}");

    // A chunked request body arrives whole; hop-by-hop headers do not cross the proxy.
    let (out, _) = curl(
        &client,
        &[
            "-H",
            "Transfer-Encoding: chunked",
            "-H",
            "Connection: keep-alive, X-Hop",
            "-H",
            "X-Hop: secret",
            "-H",
            "Keep-Alive: timeout=5",
            "-H",
            "X-End-To-End: kept",
            "--data-binary",
            "hello through two proxies",
            &format!("{url}/echo"),
        ],
    );
    let echo = json(&out);
    assert_eq!(echo["body"], "hello through two proxies");
    assert_eq!(echo["http_version"], "1.1");
    assert_eq!(header(&echo, "transfer-encoding"), Some("chunked"));
    assert_eq!(header(&echo, "x-end-to-end"), Some("kept"));
    assert_eq!(header(&echo, "x-hop"), None, "{out}");
    assert_eq!(header(&echo, "keep-alive"), None, "{out}");
    assert_eq!(header(&echo, "host"), Some(&*format!("{}:8080", server.ip)));

    // A chunked response streams back chunked.
    let (out, err) = curl(&client, &["-v", &format!("{url}/chunked?n=5")]);
    assert_eq!(out, "chunk 0\nchunk 1\nchunk 2\nchunk 3\nchunk 4\n");
    assert!(
        err.to_lowercase().contains("transfer-encoding: chunked"),
        "{err}"
    );

    // Both proxies counted every request, by authority, as successes.
    let authority = format!("{}:8080", server.ip);
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let m = wait_metric(
            pod,
            "response_total",
            &[("direction", direction), ("authority", &authority)],
            4.0,
        );
        assert_eq!(
            m.sum(
                "request_total",
                &[("direction", direction), ("authority", &authority)]
            ),
            4.0,
            "{m}"
        );
        assert_eq!(
            m.sum(
                "response_total",
                &[("direction", direction), ("classification", "success")]
            ),
            4.0,
            "{m}"
        );
        assert_eq!(
            m.sum(
                "response_latency_ms_count",
                &[("direction", direction), ("status_code", "200")]
            ),
            4.0,
            "{m}"
        );
        assert!(
            m.sum(
                "tcp_read_bytes_total",
                &[("direction", direction), ("peer", "src")]
            ) > 0.0,
            "{m}"
        );
    }
    // The client's outbound proxy reused one pooled upstream connection for all four.
    let m = client.metrics();
    assert_eq!(
        m.sum(
            "request_total",
            &[("pod", "client"), ("direction", "outbound")]
        ),
        4.0,
        "pod identity: {m}"
    );
    assert_eq!(
        m.sum(
            "tcp_open_total",
            &[("direction", "outbound"), ("peer", "dst")]
        ),
        1.0,
        "{m}"
    );
}

#[test]
fn http2_prior_knowledge_with_curl() {
    // The client's proxy runs the multi-threaded runtime; the server's the default one.
    let (_lan, client, server) = pods(
        Some(Mesh::default().env("CONDUIT_PROXY_CORES", "2")),
        Some(Mesh::default()),
    );
    let _app = http_app(&server, 8080);
    let (out, err) = curl(
        &client,
        &[
            "-v",
            "--http2-prior-knowledge",
            "--data-binary",
            "h2 body",
            &format!("http://{}:8080/echo", server.ip),
        ],
    );
    assert!(err.contains("HTTP/2 200"), "{err}");
    let echo = json(&out);
    assert_eq!(echo["http_version"], "2");
    assert_eq!(echo["body"], "h2 body");
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let m = wait_metric(
            pod,
            "response_total",
            &[("direction", direction), ("status_code", "200")],
            1.0,
        );
        assert_eq!(
            m.sum(
                "protocol_detect_total",
                &[("direction", direction), ("protocol", "http/2")]
            ),
            1.0,
            "{m}"
        );
    }
}

#[test]
fn grpc_unary_streaming_and_failures_with_grpcio() {
    let (_lan, client, server) = meshed_pods();
    let grpc = peer("grpc_peer.py");
    let _server = server.spawn(&["python3", &grpc, "serve", "50051"]);
    server.wait_listening(50051);
    let addr = format!("{}:50051", server.ip);
    let call = |mode: &str| {
        json(
            client
                .run_ok(&["python3", &grpc, "call", &addr, mode])
                .trim(),
        )
    };

    assert_eq!(call("unary")["messages"], serde_json::json!(["echo:hello"]));
    assert_eq!(
        call("server-stream")["messages"],
        serde_json::json!(["item-0", "item-1", "item-2", "item-3", "item-4"])
    );
    assert_eq!(
        call("bidi")["messages"],
        serde_json::json!(["echo:one", "echo:two", "echo:three"])
    );
    let failed = call("fail");
    assert_eq!(failed["ok"], false);
    assert_eq!(failed["code"], "UNAVAILABLE");
    assert_eq!(failed["details"], "asked to fail");

    // gRPC status comes from trailers: three successes and one UNAVAILABLE (14) failure.
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let m = wait_metric(pod, "response_total", &[("direction", direction)], 4.0);
        let d = ("direction", direction);
        assert_eq!(
            m.sum(
                "response_total",
                &[d, ("grpc_status", "0"), ("classification", "success")]
            ),
            3.0,
            "{m}"
        );
        assert_eq!(
            m.sum(
                "response_total",
                &[d, ("grpc_status", "14"), ("classification", "failure")]
            ),
            1.0,
            "{m}"
        );
        assert_eq!(
            m.sum("response_total", &[d, ("status_code", "200")]),
            4.0,
            "{m}"
        );
    }
}

#[test]
fn websocket_upgrade_passes_through() {
    let (_lan, client, server) = meshed_pods();
    let _app = http_app(&server, 8080);
    let out = client.run_ok(&[
        "python3",
        &peer("ws_client.py"),
        &format!("ws://{}:8080/ws", server.ip),
        "3",
    ]);
    assert_eq!(
        json(out.trim())["replies"],
        serde_json::json!(["echo: message 0", "echo: message 1", "echo: message 2"])
    );
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        wait_metric(
            pod,
            "response_total",
            &[("direction", direction), ("status_code", "101")],
            1.0,
        );
    }
}

/// Redis's port is opaque by default: no detection, the bytes pass through untouched.
#[test]
fn redis_is_opaque_by_default() {
    let (_lan, client, server) = meshed_pods();
    let _redis = redis(&server);
    let host = server.ip.to_string();
    assert_eq!(
        client
            .run_ok(&["redis-cli", "-h", &host, "SET", "mesh", "conduit"])
            .trim(),
        "OK"
    );
    assert_eq!(
        client
            .run_ok(&["redis-cli", "-h", &host, "GET", "mesh"])
            .trim(),
        "conduit"
    );
    let big = "x".repeat(100_000);
    assert_eq!(
        client
            .run_ok(&["redis-cli", "-h", &host, "SET", "big", &big])
            .trim(),
        "OK"
    );
    assert_eq!(
        client
            .run_ok(&["redis-cli", "-h", &host, "STRLEN", "big"])
            .trim(),
        "100000"
    );
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let m = pod.metrics();
        let labels = [
            ("direction", direction),
            ("protocol", "opaque"),
            ("decided_by", "opaque_port"),
        ];
        assert_eq!(m.sum("protocol_detect_total", &labels), 4.0, "{m}");
        assert!(
            m.sum(
                "tcp_read_bytes_total",
                &[("direction", direction), ("peer", "src")]
            ) > 100_000.0,
            "{m}"
        );
        assert_eq!(m.sum("request_total", &[]), 0.0, "redis is not HTTP: {m}");
    }
}

/// Configured opaque ports replace the default list: the client's proxy, configured
/// without 6379, detects redis by its bytes; the server's, with the default, does not.
#[test]
fn configured_opaque_ports_replace_the_default() {
    let mesh = Mesh::default().env("CONDUIT_PROXY_OPAQUE_PORTS", "7000-7010");
    let (_lan, client, server) = pods(Some(mesh), Some(Mesh::default()));
    let _redis = redis(&server);
    assert_eq!(
        client
            .run_ok(&["redis-cli", "-h", &server.ip.to_string(), "PING"])
            .trim(),
        "PONG"
    );
    for (pod, decided_by) in [(&client, "bytes"), (&server, "opaque_port")] {
        let m = pod.metrics();
        assert_eq!(
            m.sum(
                "protocol_detect_total",
                &[("protocol", "opaque"), ("decided_by", decided_by)]
            ),
            1.0,
            "{m}"
        );
    }
}

/// SMTP: the client waits for the server's greeting. The first connection waits out the
/// detection timeout; after it, the port is known as server-speaks-first and later
/// connections skip detection. A client-first protocol on that port unlearns it.
#[test]
fn server_speaks_first_ports_are_learned_and_unlearned() {
    let mesh = || Mesh::default().env("CONDUIT_PROXY_DETECT_TIMEOUT", "1s");
    let (_lan, client, server) = pods(Some(mesh()), Some(mesh()));
    let smtp = server.spawn(&["python3", "-m", "aiosmtpd", "-n", "-l", "0.0.0.0:2525"]);
    server.wait_listening(2525);
    let mail = std::env::temp_dir().join(format!("conduit-mail-{}.txt", std::process::id()));
    std::fs::write(&mail, "Subject: hello\r\n\r\nthrough the mesh\r\n").unwrap();
    let send_mail = || {
        curl(
            &client,
            &[
                &format!("smtp://{}:2525", server.ip),
                "--mail-from",
                "a@example.com",
                "--mail-rcpt",
                "b@example.com",
                "--upload-file",
                mail.to_str().unwrap(),
            ],
        )
    };
    send_mail();
    for pod in [&client, &server] {
        let m = wait_metric(pod, "server_speaks_first_port", &[("port", "2525")], 1.0);
        assert_eq!(
            m.sum("protocol_detect_total", &[("decided_by", "timeout")]),
            1.0,
            "{m}"
        );
    }
    send_mail();
    send_mail();
    for pod in [&client, &server] {
        let m = pod.metrics();
        assert_eq!(
            m.sum("protocol_detect_total", &[("decided_by", "timeout")]),
            1.0,
            "no new timeouts: {m}"
        );
        assert_eq!(
            m.sum(
                "protocol_detect_total",
                &[("decided_by", "server_first_port")]
            ),
            2.0,
            "{m}"
        );
    }
    assert!(smtp.logs().contains("through the mesh"), "{}", smtp.logs());

    // The port now carries HTTP, whose client speaks first: the proxies forget the port.
    drop(smtp);
    let _app = http_app(&server, 2525);
    let (out, _) = curl(&client, &[&format!("http://{}:2525/echo", server.ip)]);
    assert!(out.contains("\"method\": \"GET\""), "{out}");
    for pod in [&client, &server] {
        let ok = wait_until(std::time::Duration::from_secs(5), || {
            pod.metrics()
                .sum("server_speaks_first_port", &[("port", "2525")])
                == 0.0
        });
        assert!(
            ok,
            "port 2525 still marked server-first in {}:\n{}",
            pod.name,
            pod.metrics()
        );
    }
    curl(&client, &[&format!("http://{}:2525/echo", server.ip)]);
    let m = wait_metric(&client, "request_total", &[("direction", "outbound")], 1.0);
    assert_eq!(
        m.sum(
            "protocol_detect_total",
            &[("protocol", "http/1"), ("decided_by", "bytes")]
        ),
        1.0,
        "{m}"
    );
    let _ = std::fs::remove_file(mail);
}

#[test]
fn tls_is_passed_through_untouched() {
    let (_lan, client, server) = meshed_pods();
    let dir = std::env::temp_dir().join(format!("conduit-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (key, cert) = (dir.join("key.pem"), dir.join("cert.pem"));
    server.run_ok(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=server.test",
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let _tls = server.spawn(&[
        "openssl",
        "s_server",
        "-accept",
        "8443",
        "-www",
        "-key",
        key.to_str().unwrap(),
        "-cert",
        cert.to_str().unwrap(),
    ]);
    server.wait_listening(8443);
    let (out, _) = curl(&client, &["-k", &format!("https://{}:8443/", server.ip)]);
    assert!(out.contains("s_server"), "{out}");
    for (pod, direction) in [(&client, "outbound"), (&server, "inbound")] {
        let m = pod.metrics();
        assert_eq!(
            m.sum(
                "protocol_detect_total",
                &[("direction", direction), ("protocol", "tls")]
            ),
            1.0,
            "{m}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ipv6_original_destination() {
    let (_lan, client, server) = meshed_pods();
    let _app = http_app(&server, 8080);
    let url = format!("http://[{}]:8080/echo", server.ip6);
    let (out, _) = curl(&client, &["-g", &url]);
    let echo = json(&out);
    assert_eq!(
        header(&echo, "host"),
        Some(&*format!("[{}]:8080", server.ip6))
    );
    // Without a control plane nothing is named: the port says where.
    for (pod, direction, name) in [
        (&client, "outbound", ("dst_service", "unknown")),
        (&server, "inbound", ("srv_name", "default")),
    ] {
        let m = wait_metric(pod, "response_total", &[("direction", direction)], 1.0);
        assert_eq!(
            m.sum(
                "tcp_open_total",
                &[
                    ("direction", direction),
                    ("peer", "src"),
                    ("target_port", "8080"),
                    name
                ]
            ),
            1.0,
            "{m}"
        );
    }
}

#[test]
fn connect_tunnels_pass_through_an_http_proxy() {
    let (_lan, client, server) = meshed_pods();
    let _app = http_app(&server, 8080);
    let conf = std::env::temp_dir().join(format!("conduit-tinyproxy-{}.conf", std::process::id()));
    // The inbound proxy connects to the pod's own address, so the app sees it from there.
    std::fs::write(
        &conf,
        format!(
            "Port 8888\nListen 0.0.0.0\nAllow {}\nConnectPort 8080\nLogLevel Info\n",
            server.ip
        ),
    )
    .unwrap();
    let _proxy = server.spawn(&["tinyproxy", "-d", "-c", conf.to_str().unwrap()]);
    server.wait_listening(8888);
    let (out, err) = curl(
        &client,
        &[
            "-v",
            "--proxytunnel",
            "-x",
            &format!("http://{}:8888", server.ip),
            &format!("http://{}:8080/echo", server.ip),
        ],
    );
    assert!(err.contains("CONNECT"), "{err}");
    assert!(err.contains("200 Connection established"), "{err}");
    assert_eq!(json(&out)["path"], "/echo");
    let _ = std::fs::remove_file(conf);
}
