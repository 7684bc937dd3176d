//! Shared by the CLI's end-to-end tests: a local runtime with a run directory of its own,
//! driven through the real `conduit` binary and brought down when dropped.
#![allow(dead_code)] // each test file uses its own subset

use conduit_testkit::{require_root, wait_until};
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

pub const CONDUIT: &str = env!("CARGO_BIN_EXE_conduit");

/// A TCP echo server on port 7000, to run in a pod with [`Runtime::spawn_in`]: it sends
/// back a connection's first bytes and closes it.
pub const ECHO_SERVER_7000: &str = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',7000))\ns.listen()\nwhile True:\n    c,_=s.accept(); c.sendall(c.recv(100)); c.close()\n";

/// Runs `argv` in the node's network namespace (where unmeshed clients run).
pub fn in_node(node: &str, argv: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", node])
        .args(argv)
        .output()
        .expect("ip netns exec")
}

/// `curl -sS --max-time 10 ARGS` from the node (an unmeshed client): its stdout.
pub fn node_curl(node: &str, args: &[&str]) -> String {
    let argv: Vec<&str> = ["curl", "-sS", "--max-time", "10"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    String::from_utf8_lossy(&in_node(node, &argv).stdout).into_owned()
}

/// A one-replica Deployment `name` with the pod template's `annotations` (a flow
/// mapping's entries) and `containers` (the YAML list items, at the list's indentation).
fn one_replica_deployment(
    namespace: &str,
    name: &str,
    annotations: &str,
    containers: &str,
) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: {namespace}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}, annotations: {{{annotations}}}}}
    spec:
      containers:
{containers}---
"#
    )
}

/// A one-replica Deployment whose container `container` runs a Python `script`, with
/// `container_fields` (YAML mapping entries at the container's indentation, like
/// `ports: [...]`) and the pod template's `annotations` (a flow mapping's entries).
pub fn python_deployment(
    namespace: &str,
    name: &str,
    annotations: &str,
    container: &str,
    container_fields: &[&str],
    script: &str,
) -> String {
    let fields: String = container_fields
        .iter()
        .map(|f| format!("        {f}\n"))
        .collect();
    let script: String = script.lines().map(|l| format!("          {l}\n")).collect();
    let containers = format!(
        "      - name: {container}\n        image: python:3\n{fields}        command:\n        - python3\n        - -c\n        - |\n{script}"
    );
    one_replica_deployment(namespace, name, annotations, &containers)
}

/// A one-replica Deployment `name` whose only container sleeps: a client to exec in.
pub fn sleeper_deployment(namespace: &str, name: &str) -> String {
    let container =
        format!("      - {{name: {name}, image: busybox, command: [\"sleep\", \"3600\"]}}\n");
    one_replica_deployment(namespace, name, "", &container)
}

pub fn manifest() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/emojivoto/emojivoto.yml")
}

/// A child process killed and reaped when dropped, so that a test that fails while it
/// runs (a `conduit tap` it reads, say) does not leave it behind.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One local runtime with a run directory of its own, brought down when dropped.
pub struct Runtime {
    pub dir: PathBuf,
}

impl Runtime {
    pub fn new(name: &str) -> Runtime {
        require_root();
        let bin_dir = PathBuf::from(CONDUIT).parent().unwrap().to_path_buf();
        for b in [
            "conduit-proxy",
            "conduit-controller",
            "emojivoto-web",
            "emojivoto-emoji-svc",
            "emojivoto-voting-svc",
            "emojivoto-vote-bot",
        ] {
            assert!(
                bin_dir.join(b).is_file(),
                "{b} is not built next to conduit: run `cargo build --workspace` first"
            );
        }
        let dir =
            std::env::temp_dir().join(format!("conduit-local-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Runtime { dir }
    }

    /// The sample app, meshed by `conduit inject`, written next to the run directory.
    pub fn meshed_manifest(&self) -> PathBuf {
        self.injected(&manifest(), &[], "meshed.yml")
    }

    /// `manifest` after `conduit inject ARGS`, written next to the run directory with
    /// extension `name`.
    pub fn injected(&self, manifest: &std::path::Path, args: &[&str], name: &str) -> PathBuf {
        let out = Command::new(CONDUIT)
            .arg("inject")
            .args(args)
            .arg(manifest)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.with_extension(name);
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    /// Writes `manifest` beside the run directory, meshes it with `conduit inject` and
    /// brings it up (the files go with the runtime).
    pub fn up_meshed(&self, manifest: &str) {
        let plain = self.dir.with_extension("app.yml");
        std::fs::write(&plain, manifest).unwrap();
        let meshed = self.injected(&plain, &[], "app-meshed.yml");
        self.ok(&["local", "up", "-f", meshed.to_str().unwrap()]);
    }

    pub fn conduit<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        Command::new(CONDUIT)
            .args(args)
            .env("CONDUIT_LOCAL_DIR", &self.dir)
            .output()
            .expect("running conduit")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.conduit(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "conduit {args:?} failed:\n{text}\nsupervisor log:\n{}",
            self.supervisor_log()
        );
        text
    }

    pub fn supervisor_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("logs/supervisor.log")).unwrap_or_default()
    }

    pub fn status(&self) -> Value {
        serde_json::from_str(&self.ok(&["local", "status", "-o", "json"]))
            .expect("status -o json is JSON")
    }

    /// The namespaces this runtime owns, found by the prefix in its state.
    pub fn namespaces(&self, prefix: &str) -> Vec<String> {
        conduit_netns::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(prefix))
            .collect()
    }

    /// The node's network namespace, where unmeshed clients run.
    pub fn node(&self) -> String {
        self.status()["node_netns"].as_str().unwrap().to_string()
    }

    /// The address of the pod of `deployment`.
    pub fn pod_ip(&self, deployment: &str) -> String {
        Self::pod(&self.status(), deployment)["ip"]
            .as_str()
            .unwrap()
            .to_string()
    }

    pub fn pod<'a>(status: &'a Value, deployment: &str) -> &'a Value {
        status["pods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["deployment"] == deployment)
            .expect("pod of deployment")
    }

    /// Runs `argv` inside the pod of `deployment` with `conduit local exec`.
    pub fn exec(&self, deployment: &str, argv: &[&str]) -> String {
        let args = self.exec_args(deployment, argv);
        String::from_utf8_lossy(&self.conduit(&args).stdout).into_owned()
    }

    /// Starts `argv` in the background inside the pod of `deployment`; killing the
    /// returned child ends the command too.
    pub fn spawn_in(&self, deployment: &str, argv: &[&str]) -> Child {
        Command::new(CONDUIT)
            .args(self.exec_args(deployment, argv))
            .env("CONDUIT_LOCAL_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("running conduit local exec")
    }

    /// Starts `argv` as [`spawn_in`](Self::spawn_in) does and waits until something in the
    /// pod listens on TCP `port` (a server's start takes a while on a busy machine).
    pub fn spawn_listening(&self, deployment: &str, argv: &[&str], port: u16) -> Child {
        let mut child = self.spawn_in(deployment, argv);
        if !wait_until(Duration::from_secs(30), || self.listening(deployment, port)) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{argv:?} in {deployment} never listened on port {port}");
        }
        child
    }

    /// Whether something in the pod of `deployment` listens on TCP `port`.
    pub fn listening(&self, deployment: &str, port: u16) -> bool {
        let filter = format!("sport = :{port}");
        let out = self.exec(deployment, &["ss", "-Hltn", &filter]);
        !out.trim().is_empty()
    }

    /// `conduit local exec` arguments that run `argv` in the pod of `deployment`.
    pub fn exec_args(&self, deployment: &str, argv: &[&str]) -> Vec<String> {
        let status = self.status();
        let pod = Self::pod(&status, deployment);
        let mut args: Vec<String> = ["local", "exec", "-n"].map(String::from).to_vec();
        args.push(pod["namespace"].as_str().unwrap().to_string());
        args.push(pod["name"].as_str().unwrap().to_string());
        args.push("--".into());
        args.extend(argv.iter().map(|a| a.to_string()));
        args
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.conduit(&["local", "down"]);
        let _ = std::fs::remove_dir_all(&self.dir);
        // And what tests wrote beside it (`<dir>.meshed.yml`, `<dir>.pcap`, `<dir>.ca/`).
        let (Some(parent), Some(name)) = (self.dir.parent(), self.dir.file_name()) else {
            return;
        };
        let prefix = format!("{}.", name.to_string_lossy());
        for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let path = entry.path();
                let _ = std::fs::remove_file(&path).or_else(|_| std::fs::remove_dir_all(&path));
            }
        }
    }
}

/// grpcio calling one method of the control plane's gRPC port, for
/// [`Runtime::control_plane_call`]: argv is the address, the method, `1` for a server
/// stream (its first message is read), the anchors, the name the server must prove, the
/// client's certificate chain and key (empty: none), then the request's fields (1, 2, ...)
/// as strings.
const GRPC_CALL: &str = r#"
import grpc, sys
def varint(n):
    out = b""
    while n >= 0x80:
        out += bytes([n & 0x7F | 0x80])
        n >>= 7
    return out + bytes([n])
def field(n, b): return varint(n << 3 | 2) + varint(len(b)) + b
addr, method, streaming, anchors, name, cert, key = sys.argv[1:8]
req = b"".join(field(i + 1, f.encode()) for i, f in enumerate(sys.argv[8:]))
read = lambda f: open(f, "rb").read() if f else None
creds = grpc.ssl_channel_credentials(read(anchors), read(key), read(cert))
ch = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", name)])
raw = dict(request_serializer=lambda x: x, response_deserializer=lambda x: x)
try:
    if streaming == "1":
        next(ch.unary_stream(method, **raw)(req, timeout=10))
    else:
        ch.unary_unary(method, **raw)(req, timeout=10)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;

impl Runtime {
    /// The runtime's identity material: `anchor.pem`, `issuer.pem`, `issuer-key.pem`,
    /// `tokens/<pod netns>`.
    pub fn identity_file(&self, name: &str) -> PathBuf {
        self.dir.join("identity").join(name)
    }

    /// A gRPC call (grpcio, a client written by others) from inside the pod of
    /// `deployment` to the control plane's gRPC port, over TLS that checks the
    /// controller's identity against the runtime's anchor, presenting `client`
    /// (certificate chain, key) when given: `OK`, or the status code and its details.
    pub fn control_plane_call(
        &self,
        deployment: &str,
        method: &str,
        streaming: bool,
        client: Option<(&Path, &Path)>,
        fields: &[&str],
    ) -> String {
        let anchors = self.identity_file("anchor.pem").display().to_string();
        let controller =
            conduit_identity::controller_identity(conduit_api::control_plane::NAMESPACE);
        let addr =
            conduit_api::control_plane::destination_addr(conduit_api::control_plane::NAMESPACE);
        let (cert, key) = client
            .map(|(c, k)| (c.display().to_string(), k.display().to_string()))
            .unwrap_or_default();
        let mut argv = vec![
            "python3",
            "-c",
            GRPC_CALL,
            &addr,
            method,
            if streaming { "1" } else { "0" },
            &anchors,
            &controller,
            &cert,
            &key,
        ];
        argv.extend(fields);
        self.exec(deployment, &argv)
    }

    /// Runs a command that prints a JSON array, and parses it.
    pub fn json(&self, args: &[&str]) -> Vec<Value> {
        serde_json::from_str::<Vec<Value>>(&self.ok(args)).expect("-o json is a JSON array")
    }
}

/// Makes a trust anchor and an issuer it signs with openssl, as a user would, in `dir`.
pub fn openssl_ca(dir: &std::path::Path, name: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subj = format!("/CN={name} root");
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout",
            "anchor.key",
            "-out",
            "anchor.pem",
            "-days",
            "30",
            "-subj",
            &subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    ]
    .concat());
    let subj = format!("/CN={name} issuer");
    run(&[
        &["req", "-new"][..],
        &ec,
        &[
            "-keyout",
            "issuer.key",
            "-out",
            "issuer.csr",
            "-subj",
            &subj,
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext"),
        "basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "issuer.csr",
        "-CA",
        "anchor.pem",
        "-CAkey",
        "anchor.key",
        "-CAcreateserial",
        "-out",
        "issuer.pem",
        "-days",
        "30",
        "-extfile",
        "ext",
    ]);
}

/// A packet capture on the node's bridge, stopped when dropped.
pub struct Capture {
    child: Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Captures all TCP.
    pub fn start(node: &str, file: std::path::PathBuf) -> Capture {
        Capture::start_with(node, file, "tcp")
    }

    /// Captures what the pcap `filter` lets through.
    pub fn start_with(node: &str, file: std::path::PathBuf, filter: &str) -> Capture {
        let child = Command::new("ip")
            .args([
                "netns", "exec", node, "tcpdump", "-i", "br0", "-U", "-s0", "-w",
            ])
            .arg(&file)
            .args(filter.split_whitespace())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump (scripts/install-test-deps installs it)");
        assert!(
            wait_until(Duration::from_secs(10), || file.is_file()),
            "tcpdump started writing"
        );
        // tcpdump creates the file before the capture is live.
        std::thread::sleep(Duration::from_millis(500));
        Capture { child, file }
    }

    /// Stops the capture and returns the raw packets.
    pub fn stop(mut self) -> Vec<u8> {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("the capture file")
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// A running `conduit dashboard` on a free port, and its URL.
pub struct Dashboard {
    _process: KillOnDrop,
    pub url: String,
}

/// Starts `conduit dashboard` on a free port for `runtime`.
pub fn dashboard(runtime: &Runtime) -> Dashboard {
    let mut child = Command::new(CONDUIT)
        .args(["dashboard", "--port", "0", "--show", "url"])
        .env("CONDUIT_LOCAL_DIR", &runtime.dir)
        // Only root's connections, even when the tests run under sudo.
        .env_remove("SUDO_UID")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = KillOnDrop(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("Conduit dashboard available at ")
        .unwrap_or_else(|| panic!("the dashboard says where it is: {line:?}"))
        .to_string();
    Dashboard {
        _process: process,
        url,
    }
}
