//! Test pods for end-to-end tests: a [`Lan`] is a private network (a bridge in a namespace
//! of its own), a [`Pod`] is a namespace wired to it with an address from the benchmarking
//! ranges (198.18.0.0/15, 2001:2::/48), and [`Pod::mesh`] runs the real `conduit-proxy init`
//! and the real proxy in it, exactly as a meshed pod would. Everything is torn down when
//! dropped, also when a test fails: a [`Process`] ends with its whole process group (a
//! server's workers too), a [`Pod`] with every process still inside it, and a started
//! process dies with the test that started it.

use conduit_api::{admin, flags::proxy as cli, ports, proxy_env, uid};
use conduit_netns::{Exec, NetNs};
use std::{
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
    time::{Duration, Instant},
};

/// The UID the proxy runs as in tests, as in production.
pub const PROXY_UID: u32 = uid::PROXY;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Panics with a clear message unless the tests run as root (namespaces need it).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces and iptables rules: run them as root"
    );
}

/// Removes namespaces left by test processes that no longer exist (a killed test run),
/// with whatever still runs in them.
fn remove_stale_namespaces() {
    for name in conduit_netns::list().unwrap_or_default() {
        let Some(pid) = name.strip_prefix("ct").and_then(|r| r.split('-').next()) else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            if let Ok(ns) = NetNs::open(&name) {
                let _ = ns.delete();
            }
        }
    }
}

/// A private network for one test: a bridge in a namespace of its own.
pub struct Lan {
    prefix: String,
    ns: NetNs,
    pods: AtomicUsize,
    logs: PathBuf,
}

/// The proxies' logs stay for a test that failed (the panic message names them) and go
/// with one that passed.
impl Drop for Lan {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }
}

impl Lan {
    /// A new, empty network.
    pub fn new() -> Lan {
        require_root();
        remove_stale_namespaces();
        let prefix = format!(
            "ct{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        let ns =
            NetNs::create(&format!("{prefix}-lan")).expect("creating the test network namespace");
        ns.bridge("br0").expect("creating the test bridge");
        let logs = std::env::temp_dir().join("conduit-tests").join(&prefix);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("creating the test log directory");
        Lan {
            prefix,
            ns,
            pods: AtomicUsize::new(0),
            logs,
        }
    }

    /// A new pod on this network, with `198.18.0.N/16` and `2001:2::N/64`.
    pub fn pod(&self, name: &str) -> Pod {
        let n = self.pods.fetch_add(1, Ordering::SeqCst) + 1;
        let ns =
            NetNs::create(&format!("{}-{name}", self.prefix)).expect("creating a pod namespace");
        let outer = format!("p{n}");
        ns.veth("eth0", &self.ns, &outer)
            .expect("wiring the pod to the test network");
        self.ns
            .attach(&outer, "br0")
            .expect("attaching the pod to the bridge");
        let ip = Ipv4Addr::new(198, 18, 0, n as u8);
        let ip6 = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, n as u16);
        ns.address("eth0", &format!("{ip}/16"))
            .expect("addressing the pod");
        ns.address("eth0", &format!("{ip6}/64"))
            .expect("addressing the pod (IPv6)");
        Pod {
            name: name.to_string(),
            ns,
            ip,
            ip6,
            logs: self.logs.clone(),
            proxy: None,
        }
    }
}

impl Default for Lan {
    fn default() -> Self {
        Lan::new()
    }
}

/// A network namespace standing in for a Kubernetes pod. Dropping it ends every process
/// still inside, also those that left their process group.
pub struct Pod {
    // Dropped first: the proxy dies before its namespace is removed.
    proxy: Option<Process>,
    pub name: String,
    pub ns: NetNs,
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
    logs: PathBuf,
}

/// How to run a pod's proxy.
#[derive(Clone, Debug, Default)]
pub struct Mesh {
    /// `CONDUIT_PROXY_*` variables for the proxy.
    pub env: Vec<(String, String)>,
    /// Extra arguments to `conduit-proxy init`.
    pub init_args: Vec<String>,
}

impl Mesh {
    /// Sets one proxy variable.
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.to_string(), v.to_string()));
        self
    }

    /// Adds arguments to `conduit-proxy init`.
    pub fn init_args(mut self, args: &[&str]) -> Self {
        self.init_args.extend(args.iter().map(|a| a.to_string()));
        self
    }
}

impl Pod {
    /// The pod's IPv4 address and `port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.ip, port))
    }

    /// Starts `argv` in the pod as root, logging to the test's log directory.
    pub fn spawn(&self, argv: &[&str]) -> Process {
        self.spawn_with(argv, None, &[])
    }

    /// Starts `argv` in the pod as `uid`, with extra environment variables.
    pub fn spawn_with(&self, argv: &[&str], uid: Option<u32>, env: &[(String, String)]) -> Process {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let program = std::path::Path::new(argv[0])
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or("proc");
        let log = self.logs.join(format!("{}-{program}-{n}.log", self.name));
        let out = File::create(&log).expect("creating a process log");
        let err = out.try_clone().expect("cloning a log handle");
        // A group of its own, so that dropping the process ends what it started.
        let mut cmd = self.command(
            argv[0],
            &Exec {
                uid,
                new_session: true,
                ..Exec::default()
            },
        );
        cmd.args(&argv[1..])
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?} in pod {}: {e}", self.name));
        Process {
            child,
            log,
            argv: argv.join(" "),
        }
    }

    /// Runs `argv` in the pod to completion.
    pub fn run(&self, argv: &[&str]) -> Output {
        let mut cmd = self.command(argv[0], &Exec::default());
        cmd.args(&argv[1..]).stdin(Stdio::null());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("running {argv:?} in pod {}: {e}", self.name));
        Output {
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs `argv` in the pod and returns its stdout, panicking (with its stderr) on failure.
    pub fn run_ok(&self, argv: &[&str]) -> String {
        let out = self.run(argv);
        assert_eq!(
            out.status,
            Some(0),
            "{argv:?} failed in pod {}: {}{}",
            self.name,
            out.stdout,
            out.stderr
        );
        out.stdout
    }

    /// A command for `program` in the pod, as `exec` says, that dies with the test.
    fn command(&self, program: &str, exec: &Exec) -> Command {
        let exec = Exec {
            die_with_parent: true,
            ..exec.clone()
        };
        self.ns
            .command_with(program, &exec)
            .expect("no etc directory, so nothing can fail before spawn")
    }

    /// Runs `f` on a thread inside the pod's network namespace, as root (so outbound
    /// connections it makes are redirected like an application's).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        self.ns
            .within(f)
            .expect("entering the pod's network namespace")
    }

    /// Waits until something in the pod accepts connections on `port` (checked on loopback,
    /// which the redirect rules leave alone).
    pub fn wait_listening(&self, port: u16) {
        let ok = wait_until(Duration::from_secs(20), || {
            self.within(|| {
                TcpStream::connect_timeout(
                    &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
        });
        assert!(
            ok,
            "nothing listens on port {port} in pod {} after 20s",
            self.name
        );
    }

    /// Meshes the pod: writes the redirect rules with `conduit-proxy init`, starts the
    /// proxy as its own UID, and waits until it is ready.
    pub fn mesh(&mut self, proxy_bin: &str, mesh: Mesh) {
        let mut init = vec![proxy_bin, cli::INIT];
        init.extend(mesh.init_args.iter().map(String::as_str));
        self.run_ok(&init);
        let mut env = vec![
            (
                proxy_env::LOG.to_string(),
                "info,conduit_proxy=debug".to_string(),
            ),
            (proxy_env::POD_NAME.to_string(), self.name.clone()),
        ];
        env.extend(mesh.env);
        let proxy = self.spawn_with(&[proxy_bin], Some(PROXY_UID), &env);
        self.proxy = Some(proxy);
        let ok = wait_until(Duration::from_secs(20), || {
            self.admin_get(admin::READY_PATH)
                .is_some_and(|(status, _)| status == 200)
        });
        assert!(
            ok,
            "the proxy in pod {} did not become ready:\n{}",
            self.name,
            self.proxy_logs()
        );
    }

    /// The proxy process, if the pod is meshed.
    pub fn proxy(&mut self) -> &mut Process {
        self.proxy.as_mut().expect("the pod is not meshed")
    }

    /// The proxy's log so far.
    pub fn proxy_logs(&self) -> String {
        self.proxy.as_ref().map(Process::logs).unwrap_or_default()
    }

    /// `GET path` on the proxy's admin server over loopback: status and body.
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        self.admin_request("GET", path)
    }

    /// A request to the proxy's admin server over loopback: status and body.
    pub fn admin_request(&self, method: &str, path: &str) -> Option<(u16, String)> {
        self.within(|| {
            http_request(
                SocketAddr::from((Ipv4Addr::LOCALHOST, ports::PROXY_ADMIN)),
                method,
                path,
            )
        })
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> Metrics {
        let (status, text) = self
            .admin_get(admin::METRICS_PATH)
            .expect("the proxy's admin server answers");
        assert_eq!(status, 200, "{text}");
        Metrics(text)
    }
}

/// A minimal HTTP/1.1 request with `Connection: close`, for admin endpoints.
pub fn http_request(addr: SocketAddr, method: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let status = raw.split_whitespace().nth(1)?.parse().ok()?;
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A process started in a pod, leading a process group of its own: killed with its
/// group when dropped, its output in a log file.
pub struct Process {
    child: Child,
    log: PathBuf,
    argv: String,
}

impl Process {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends `signal` (like `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(self.child.id() as i32, signal);
        }
    }

    /// Waits up to `timeout` for the process to exit, returning its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The command line.
    pub fn argv(&self) -> &str {
        &self.argv
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The group before reaping the leader, whose unreaped pid keeps the group's id
        // from being taken by anyone else.
        let _ = conduit_netns::signal_group(self.child.id(), libc::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pid a command under test wrote to `file` (like `sleep 1000 & echo $! > FILE`),
/// waiting up to 10 s for it to appear.
pub fn read_pid(file: &std::path::Path) -> u32 {
    let mut pid = None;
    wait_until(Duration::from_secs(10), || {
        pid = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        pid.is_some()
    });
    pid.unwrap_or_else(|| panic!("no pid was written to {}", file.display()))
}

/// Asserts that process `pid` (`what` it is, for the message) ends within 5 s. If it
/// does not, it is killed before the panic, so that the failing test leaves nothing.
pub fn assert_ends(pid: u32, what: &str) {
    if wait_until(Duration::from_secs(5), || !conduit_netns::is_running(pid)) {
        return;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    // SAFETY: kill has no memory-safety preconditions; the process was just seen running.
    unsafe {
        libc::kill(pid as i32, libc::SIGKILL);
    }
    panic!(
        "{what} (pid {pid}: {}) is still running",
        String::from_utf8_lossy(&cmdline).replace('\0', " ").trim()
    );
}

/// Polls `check` until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A scrape of Prometheus text, with lookups by name and labels.
#[derive(Clone, Debug)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every series named `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
                if n != name {
                    return None;
                }
                let all = labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
                all.then(|| value.parse::<f64>().ok()).flatten()
            })
            .sum()
    }
}

impl std::fmt::Display for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Makes, with openssl as a user would, a P-256 key and a certificate for identity `name`
/// (its DNS name) signed by the issuer in `issuer_cert` and `issuer_key` (PEM files), in
/// `dir`: `<file>.key`, and `<file>.pem` with the issuer's certificate after the leaf.
/// For clients and servers that present a mesh identity they did not get from the mesh.
pub fn openssl_identity(
    dir: &std::path::Path,
    issuer_cert: &std::path::Path,
    issuer_key: &std::path::Path,
    name: &str,
    file: &str,
) -> (PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("a directory for the certificate");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let (key, csr, leaf, ext) = (
        format!("{file}.key"),
        format!("{file}.csr"),
        format!("{file}.leaf"),
        format!("{file}.ext"),
    );
    // An identity is longer than a CN may be: the name is the SAN only.
    run(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
        "-subj",
        "/O=conduit-test",
    ]);
    std::fs::write(dir.join(&ext), format!("subjectAltName=DNS:{name}\n")).expect("ext file");
    let (ca, ca_key) = (
        issuer_cert.display().to_string(),
        issuer_key.display().to_string(),
    );
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &leaf,
        "-days",
        "1",
        "-extfile",
        &ext,
    ]);
    let chain = std::fs::read_to_string(dir.join(&leaf)).expect("the leaf")
        + &std::fs::read_to_string(issuer_cert).expect("the issuer");
    let pem = dir.join(format!("{file}.pem"));
    std::fs::write(&pem, chain).expect("the chain");
    (pem, dir.join(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sums_match_labels_exactly_by_name() {
        let m = Metrics(
            "# HELP request x\nrequest_total{direction=\"inbound\",authority=\"a:1\"} 2\nrequest_total{direction=\"outbound\",authority=\"a:1\"} 3\nrequest_total_other{direction=\"inbound\"} 7\n"
                .into(),
        );
        assert_eq!(m.sum("request_total", &[]), 5.0);
        assert_eq!(m.sum("request_total", &[("direction", "inbound")]), 2.0);
        assert_eq!(m.sum("request_total", &[("direction", "none")]), 0.0);
    }
}
