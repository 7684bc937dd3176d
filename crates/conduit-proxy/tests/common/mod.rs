//! Shared setup for the proxy's end-to-end tests: two pods on a private network, the
//! proxy binary under test, and the real peers in `tests/peers`.
#![allow(dead_code)] // each test file uses its own subset

pub use conduit_testkit::{wait_until, Lan, Mesh, Metrics, Pod, Process};
use std::time::Duration;

/// The proxy binary under test.
pub const PROXY: &str = env!("CARGO_BIN_EXE_conduit-proxy");

/// The path of a peer script in `tests/peers`.
pub fn peer(file: &str) -> String {
    format!("{}/tests/peers/{file}", env!("CARGO_MANIFEST_DIR"))
}

/// A client pod and a server pod, each meshed with its own settings (`None`: not meshed).
pub fn pods(client: Option<Mesh>, server: Option<Mesh>) -> (Lan, Pod, Pod) {
    let lan = Lan::new();
    let mut client_pod = lan.pod("client");
    let mut server_pod = lan.pod("server");
    if let Some(mesh) = server {
        server_pod.mesh(PROXY, mesh);
    }
    if let Some(mesh) = client {
        client_pod.mesh(PROXY, mesh);
    }
    (lan, client_pod, server_pod)
}

/// Both pods meshed with default settings.
pub fn meshed_pods() -> (Lan, Pod, Pod) {
    pods(Some(Mesh::default()), Some(Mesh::default()))
}

/// hypercorn serving `peers/http_app.py` on `[::]:port` (both families) in `pod`.
pub fn http_app(pod: &Pod, port: u16) -> Process {
    let bind = format!("[::]:{port}");
    let app = format!("{}:app", peer("http_app.py"));
    let app = pod.spawn(&["python3", "-m", "hypercorn", "--bind", &bind, &app]);
    pod.wait_listening(port);
    app
}

/// redis-server on port 6379 (all addresses) in `pod`, without persistence.
pub fn redis(pod: &Pod) -> Process {
    let redis = pod.spawn(&[
        "redis-server",
        "--port",
        "6379",
        "--bind",
        "0.0.0.0",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]);
    pod.wait_listening(6379);
    redis
}

/// Runs curl in `pod` with `args`; returns (stdout, stderr) and asserts it succeeded.
pub fn curl(pod: &Pod, args: &[&str]) -> (String, String) {
    let mut argv = vec!["curl", "-sS", "--max-time", "20"];
    argv.extend_from_slice(args);
    let out = pod.run(&argv);
    assert_eq!(
        out.status,
        Some(0),
        "curl {args:?} failed: {}{}",
        out.stdout,
        out.stderr
    );
    (out.stdout, out.stderr)
}

/// Waits until `pod`'s metric `name` with `labels` reaches `at_least`, returning the scrape.
pub fn wait_metric(pod: &Pod, name: &str, labels: &[(&str, &str)], at_least: f64) -> Metrics {
    let mut last = None;
    let ok = wait_until(Duration::from_secs(10), || {
        let m = pod.metrics();
        let done = m.sum(name, labels) >= at_least;
        last = Some(m);
        done
    });
    let m = last.expect("scraped at least once");
    assert!(
        ok,
        "{name}{labels:?} never reached {at_least} in pod {}:\n{m}",
        pod.name
    );
    m
}

/// What a raw TCP exchange got back.
#[derive(Debug)]
pub struct Exchange {
    /// Everything received.
    pub received: String,
    /// Whether the peer closed the connection (rather than the read timing out).
    pub closed: bool,
}

impl Exchange {
    /// The status code of the first HTTP response received.
    pub fn status(&self) -> Option<u16> {
        self.received.split_whitespace().nth(1)?.parse().ok()
    }

    /// The value of `name` in the first response's head.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.received.split("\r\n\r\n").next()?;
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// From inside `pod`, connects to `addr`, writes each chunk after its pause, and reads
/// until the peer closes or nothing arrives for `read_timeout`.
pub fn exchange(
    pod: &Pod,
    addr: std::net::SocketAddr,
    chunks: &[(Duration, &[u8])],
    read_timeout: Duration,
) -> Exchange {
    use std::io::{Read, Write};
    pod.within(|| {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .expect("connecting");
        for (pause, bytes) in chunks {
            std::thread::sleep(*pause);
            if s.write_all(bytes).is_err() {
                break;
            }
        }
        s.set_read_timeout(Some(read_timeout)).unwrap();
        let mut received = Vec::new();
        let mut buf = [0u8; 8192];
        let closed = loop {
            match s.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => received.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
                Err(_) => break false,
            }
        };
        Exchange {
            received: String::from_utf8_lossy(&received).into_owned(),
            closed,
        }
    })
}
