//! No client can exhaust the mesh, tried as an attacker would on the local runtime: a
//! flood of requests with distinct `Host` headers leaves the proxy's memory and its
//! `/metrics` where they were; thousands of idle connections to one proxy do not stop
//! good traffic through it; a pod that answers the controller's scrape with a gigabyte
//! costs the controller a bounded read, and `conduit stat` keeps answering. Root only; the
//! workspace's binaries must be built.

mod common;
use common::*;
use conduit_testkit::wait_until;
use serde_json::Value;
use std::{process::Command, time::Duration};

/// An HTTP/1.1 keep-alive server on 8080 (asyncio, so thousands of connections cost it
/// little) answering every request with `ok`.
const APP: &str = r#"
import asyncio, resource
# A server meant for many connections raises its own open files limit.
_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "0.0.0.0", 8080, backlog=4096)
    await server.serve_forever()
asyncio.run(main())
"#;

/// A "proxy" that answers its pod's scrape with a gigabyte of metrics, as fast as it is
/// read, and logs how much each scrape took.
const BLOAT: &str = r#"
import socket, threading, sys
line = b'request_total{direction="inbound",authority="x"} 1\n' * 1024
def answer(c):
    sent = 0
    try:
        head = c.recv(4096)
        if b"/metrics" not in head.split(b"\r\n")[0]:
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n")
            return
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (1 << 30))
        while sent < (1 << 30):
            c.sendall(line)
            sent += len(line)
    except OSError:
        pass
    finally:
        if sent:
            print("scrape read", sent, flush=True)
        c.close()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 4191)); s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=answer, args=(c,), daemon=True).start()
"#;

/// The app, its Service and a client, to be meshed.
fn app_manifest() -> String {
    let app = python_deployment(
        "flood",
        "app",
        "",
        "app",
        &[
            "ports: [{name: http, containerPort: 8080}]",
            "readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}",
        ],
        APP,
    );
    format!(
        r#"{app}apiVersion: v1
kind: Service
metadata: {{name: app-svc, namespace: flood}}
spec:
  selector: {{app: app}}
  ports: [{{port: 80, targetPort: 8080}}]
---
{}"#,
        sleeper_deployment("flood", "client")
    )
}

/// Not `conduit inject`ed: a container that calls itself the proxy, which the controller
/// scrapes like any meshed pod's.
fn bloat_manifest() -> String {
    python_deployment(
        "flood",
        "bloat",
        "",
        "conduit-proxy",
        &["readinessProbe: {httpGet: {path: /ready, port: 4191}, periodSeconds: 1}"],
        BLOAT,
    )
}

/// Brings the flood namespace up, its app and client meshed, and the bloated pod too;
/// the runtime (and so every process of its pods) starts with a soft open files limit
/// of 1024, as a container's often is.
fn up(rt: &Runtime, with_bloat: bool) {
    let plain = rt.dir.with_extension("flood.yml");
    std::fs::write(&plain, app_manifest()).unwrap();
    let meshed = rt.injected(&plain, &[], "flood-meshed.yml");
    let mut args = vec!["local", "up", "-f", meshed.to_str().unwrap()];
    let bloat = rt.dir.with_extension("bloat.yml");
    if with_bloat {
        std::fs::write(&bloat, bloat_manifest()).unwrap();
        args.extend(["-f", bloat.to_str().unwrap()]);
    }
    let out = Command::new("prlimit")
        .arg("--nofile=1024:")
        .arg(CONDUIT)
        .args(&args)
        .env("CONDUIT_LOCAL_DIR", &rt.dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        rt.supervisor_log()
    );
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u64) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The pid of container `name` of the pod of `deployment`.
fn pid_of(status: &Value, deployment: &str, name: &str) -> u64 {
    Runtime::pod(status, deployment)["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["pid"].as_u64())
        .unwrap_or_else(|| panic!("{name} of {deployment} runs: {status}"))
}

/// Runs a python script in the node's namespace (an unmeshed client), returning stdout.
fn node_python(node: &str, script: &str, args: &[&str]) -> String {
    let argv: Vec<&str> = ["python3", "-c", script]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let out = in_node(node, &argv);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `n` requests over a few keep-alive connections, each with a `Host` of its own, 220
/// bytes long; prints how many got 200.
const HOST_FLOOD: &str = r#"
import http.client, sys
ip, start, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ok = 0
c = http.client.HTTPConnection(ip, 8080, timeout=30)
for i in range(start, start + n):
    host = ("%08d-" % i) + "h" * 200 + ".flood.example"
    c.request("GET", "/", headers={"Host": host})
    r = c.getresponse(); r.read()
    ok += r.status == 200
print(ok)
"#;

#[test]
fn distinct_host_headers_grow_neither_the_proxys_memory_nor_its_metrics() {
    let rt = Runtime::new("host-flood");
    up(&rt, false);
    let (node, app_ip) = (rt.node(), rt.pod_ip("app"));
    let proxy = pid_of(&rt.status(), "app", "conduit-proxy");
    // Warm up: buffers, pools and the allocator's arenas reach their working size.
    let warm = node_python(&node, HOST_FLOOD, &[&app_ip, "0", "1000"]);
    assert_eq!(warm.trim(), "1000");
    let before = rss_kib(proxy);
    let flood = node_python(&node, HOST_FLOOD, &[&app_ip, "1000", "10000"]);
    assert_eq!(flood.trim(), "10000", "every request is served");
    let after = rss_kib(proxy);
    assert!(
        after < before + 2048,
        "the proxy's RSS grew from {before} KiB to {after} KiB"
    );
    let metrics = rt.exec(
        "app",
        &["curl", "-sS", "-m", "10", "http://127.0.0.1:4191/metrics"],
    );
    assert!(
        metrics.len() < 100 * 1024,
        "/metrics is {} bytes",
        metrics.len()
    );
    assert!(
        !metrics.contains("flood.example"),
        "no Host value is a label"
    );
    assert!(
        metrics.contains(r#"direction="inbound",authority="unknown""#),
        "{metrics}"
    );
    // A name the pod's Service has is still its own label.
    let named = rt.exec(
        "client",
        &["curl", "-sS", "-m", "10", "http://app-svc.flood/"],
    );
    assert_eq!(named, "ok\n");
    let labelled = wait_until(Duration::from_secs(10), || {
        rt.exec(
            "app",
            &["curl", "-sS", "-m", "10", "http://127.0.0.1:4191/metrics"],
        )
        .contains(r#"direction="inbound",authority="app-svc.flood""#)
    });
    assert!(labelled, "the Service's name labels its requests");
}

/// Opens `n` connections to `ip:8080` and sends nothing on them; prints `open` once they
/// are, then holds them until stdin closes.
const IDLE_CONNECTIONS: &str = r#"
import socket, sys
ip, n = sys.argv[1], int(sys.argv[2])
held = []
for _ in range(n):
    s = socket.socket()
    s.settimeout(30)
    s.connect((ip, 8080))
    held.append(s)
print("open", len(held), flush=True)
sys.stdin.read()
"#;

#[test]
fn thousands_of_idle_connections_to_one_proxy_do_not_stop_good_traffic() {
    let rt = Runtime::new("idle-flood");
    up(&rt, false);
    let (node, app_ip) = (rt.node(), rt.pod_ip("app"));
    let mut idle = Command::new("ip")
        .args([
            "netns",
            "exec",
            &node,
            "python3",
            "-c",
            IDLE_CONNECTIONS,
            &app_ip,
            "5000",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(idle.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "open 5000");
    // Good traffic flows while they are held: before the proxy's detection gives up on
    // them (10 s), and after, when they have become opaque connections to the app.
    let good = |round: u32| {
        for i in 0..20 {
            let answer = rt.exec(
                "client",
                &["curl", "-sS", "-m", "10", "http://app-svc.flood/"],
            );
            assert_eq!(answer, "ok\n", "round {round}, request {i}");
        }
    };
    good(1);
    std::thread::sleep(Duration::from_secs(12));
    good(2);
    drop(idle.stdin.take());
    let _ = idle.kill();
    let _ = idle.wait();
}

#[test]
fn a_pod_answering_its_scrape_with_a_gigabyte_costs_the_controller_a_bounded_read() {
    let rt = Runtime::new("bloat");
    up(&rt, true);
    let status = rt.status();
    let controller = status["control_plane"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|c| c["pid"].as_u64())
        .expect("the controller runs");
    let log = |deployment: &str| {
        let pod = Runtime::pod(&status, deployment);
        let c = pod["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "conduit-proxy")
            .unwrap();
        std::fs::read_to_string(c["log"].as_str().unwrap()).unwrap_or_default()
    };
    // Two scrapes of the bloated pod (every 5 s on the local runtime).
    let scraped = wait_until(Duration::from_secs(30), || {
        log("bloat").matches("scrape read").count() >= 2
    });
    assert!(scraped, "the bloated pod was scraped: {}", log("bloat"));
    for line in log("bloat")
        .lines()
        .filter(|l| l.starts_with("scrape read"))
    {
        let read: u64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(
            read < 32 << 20,
            "the controller stopped reading near its limit (4 MiB), not at {read} bytes"
        );
    }
    assert!(
        rss_kib(controller) < 200 * 1024,
        "the controller holds {} KiB",
        rss_kib(controller)
    );
    // stat still answers, with the good pod's traffic (kept flowing: a rate needs two
    // scrapes that saw it).
    let answered = wait_until(Duration::from_secs(60), || {
        assert_eq!(
            rt.exec(
                "client",
                &["curl", "-sS", "-m", "10", "http://app-svc.flood/"]
            ),
            "ok\n"
        );
        let rows = rt.json(&["stat", "deploy", "-n", "flood", "-o", "json"]);
        rows.iter()
            .any(|r| r["name"] == "app" && r["success_rate"].as_f64() == Some(1.0))
    });
    assert!(
        answered,
        "{:?}",
        rt.json(&["stat", "deploy", "-n", "flood", "-o", "json"])
    );
}
