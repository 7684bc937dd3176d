//! The controller's API off Kubernetes: a unix socket only its owner (root, in the local
//! runtime) may use, however permissive the umask it was started with; a directory that
//! others could write is refused at start; and TCP without TLS and Kubernetes
//! authentication no longer exists. The client refused is Python's socket module run as
//! `nobody` (setpriv), the one allowed curl as root.

mod common;
use common::{Controller, TempDir};
use std::{
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

/// A directory of this test's, mode 0755 so that `nobody` may enter it.
fn temp_dir(name: &str) -> TempDir {
    let dir = TempDir::new(name);
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("0755");
    dir
}

/// The controller with `args`, started with umask 000 so that only its own care keeps
/// the socket private.
fn controller(args: &[String]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.args([
        "-c",
        "umask 000; exec \"$0\" \"$@\"",
        env!("CARGO_BIN_EXE_conduit-controller"),
    ])
    .args(args);
    cmd
}

/// Runs `cmd` to its end, which must come within 20 s (a controller that starts serving
/// instead is killed, and the test fails).
fn run_to_end(mut cmd: Command) -> Output {
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the controller runs");
    let mut child = Controller(child);
    let start = Instant::now();
    while child.0.try_wait().expect("wait").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the controller did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let Controller(ref mut inner) = child;
    let mut out = Output {
        status: inner.wait().expect("status"),
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    use std::io::Read as _;
    if let Some(mut s) = inner.stdout.take() {
        let _ = s.read_to_end(&mut out.stdout);
    }
    if let Some(mut s) = inner.stderr.take() {
        let _ = s.read_to_end(&mut out.stderr);
    }
    out
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Python's `connect` on `socket` as `nobody`: what it printed.
fn connect_as_nobody(socket: &Path) -> String {
    let script = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(sys.argv[1])\n    print('connected')\nexcept OSError as e:\n    print('errno', e.errno)\n";
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(socket)
        .output()
        .expect("setpriv runs python3");
    text(&out)
}

#[test]
fn the_api_socket_is_for_its_owner_only() {
    let temp = temp_dir("api-socket");
    let socket = temp.0.join("api.sock");
    let _controller = Controller(
        controller(&[
            format!("--local-state={}", temp.0.join("state.json").display()),
            format!("--api-socket={}", socket.display()),
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("the controller starts"),
    );
    let start = Instant::now();
    while !socket.exists() {
        assert!(start.elapsed() < Duration::from_secs(30), "no socket");
        std::thread::sleep(Duration::from_millis(50));
    }
    // EACCES (13) for anyone else; root is answered.
    assert_eq!(connect_as_nobody(&socket).trim(), "errno 13");
    let meta = std::fs::metadata(&socket).expect("socket");
    assert_eq!(meta.mode() & 0o777, 0o600, "mode {:o}", meta.mode());
    assert_eq!(meta.uid(), 0);
    let out = Command::new("curl")
        .args(["-sS", "--unix-socket"])
        .arg(&socket)
        .arg("http://localhost/healthz")
        .output()
        .expect("curl");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "ok\n",
        "{}",
        text(&out)
    );
}

#[test]
fn a_socket_others_could_replace_and_plain_tcp_are_refused_at_start() {
    let temp = temp_dir("api-socket-refused");
    std::fs::set_permissions(&temp.0, std::fs::Permissions::from_mode(0o1777)).expect("1777");
    let state = format!("--local-state={}", temp.0.join("state.json").display());
    let out = controller(&[
        state.clone(),
        format!("--api-socket={}", temp.0.join("api.sock").display()),
    ])
    .output()
    .expect("the controller runs");
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is writable by others (mode 1777): anyone could replace the socket; make it 0755 or 0700"),
        "{}",
        text(&out)
    );
    assert!(!temp.0.join("api.sock").exists());

    let mut cmd = controller(&["--kubernetes".into(), "--api-addr=127.0.0.1:1".into()]);
    cmd.env("KUBECONFIG", temp.0.join("no-kubeconfig"));
    let out = run_to_end(cmd);
    assert!(!out.status.success());
    let said = text(&out);
    assert!(
        said.contains("--api-addr serves the API on TCP, which needs TLS and Kubernetes authentication: give --api-tls-dir DIR"),
        "{said}"
    );
}
