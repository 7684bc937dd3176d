//! What `conduit local up | down | status` do: check manifests before anything starts,
//! hand the merged spec to the supervisor (starting it when needed), wait with progress
//! until pods are ready, and tear everything down, also after a crash. A lock on the run
//! directory serialises concurrent `up`s and `down`s, so they cannot corrupt its state.
//! `exec` runs a command in a pod and ends whatever the command leaves running there.
//! Meets the supervisor only through the run directory ([`crate::layout`]).

use crate::{
    identity,
    layout::Layout,
    process,
    prometheus::{self, Metrics},
    spec::AppSpec,
    state::{self, State},
};
use anyhow::{bail, Context as _};
use conduit_api::http::{Endpoint as _, Workloads, WorkloadsQuery};
use std::{
    fs::File,
    io::Write,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

pub use crate::process::resolve_program;

/// Refuses to go on without root, saying why root is needed.
pub fn require_root(what: &str) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("conduit local {what} needs root: pods are network namespaces with their own addresses and iptables rules. Run it with sudo.");
    }
    Ok(())
}

/// An exclusive lock on the run directory, released when dropped.
pub struct DirLock {
    _held: File,
}

impl DirLock {
    /// Takes the lock, saying so on `out` when someone else holds it.
    pub fn take(layout: &Layout, out: &mut dyn Write) -> anyhow::Result<DirLock> {
        std::fs::create_dir_all(layout.dir())
            .with_context(|| format!("creating {}", layout.dir().display()))?;
        let file = File::create(layout.lock())?;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            writeln!(
                out,
                "waiting for another conduit local up or down to finish..."
            )?;
            // SAFETY: as above.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error()).context("locking the run directory");
            }
        }
        Ok(DirLock { _held: file })
    }
}

/// The supervisor's pid, if it is alive.
pub fn daemon_alive(layout: &Layout) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(layout.daemon_pid())
        .ok()?
        .trim()
        .parse()
        .ok()?;
    conduit_netns::is_running(pid).then_some(pid)
}

/// Reads and checks every manifest, resolving container programs; nothing starts if
/// any document is refused.
pub fn load(files: &[(String, String)]) -> anyhow::Result<AppSpec> {
    let mut spec = AppSpec::default();
    for (source, text) in files {
        spec.merge(AppSpec::from_manifest(text, source, &resolve_program)?);
    }
    Ok(spec)
}

/// Brings `spec` up (adding to or replacing what runs already) and waits until every
/// pod is ready or `timeout` passes. `metrics` chooses where the control plane reads
/// metrics when the runtime starts (the embedded store when `None`); a running runtime
/// keeps its own, and refuses another.
pub fn up(
    layout: &Layout,
    spec: AppSpec,
    trust: Option<&conduit_identity::ca::TrustFiles>,
    metrics: Option<&Metrics>,
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<State> {
    require_root("up")?;
    let _lock = DirLock::take(layout, out)?;
    check_metrics(layout, metrics)?;
    if let (Some(t), Some(_)) = (trust, daemon_alive(layout)) {
        let running = std::fs::read_to_string(identity::anchor_file(layout)).unwrap_or_default();
        if running.trim() != t.anchor_pem.trim() {
            bail!("the local runtime is already running with another trust anchor; run `conduit local down` first, then `up` with these identity files");
        }
    }
    let mut desired = state::read_json::<AppSpec>(&layout.desired())?.unwrap_or_default();
    desired.merge(spec);
    let want: u32 = desired.deployments.iter().map(|d| d.replicas).sum();
    writeln!(
        out,
        "conduit local up: {} deployment(s), {} pod(s), {} service(s)",
        desired.deployments.len(),
        want,
        desired.services.len()
    )?;
    let before = state::read_json::<State>(&layout.state())?.map_or(0, |s| s.generation);
    state::write_json(&layout.desired(), &desired)?;
    match daemon_alive(layout) {
        Some(pid) => {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as i32, libc::SIGHUP);
            }
        }
        None => {
            let swept = sweep(layout)?;
            if swept > 0 {
                writeln!(
                    out,
                    "cleaned up {swept} namespace(s) left by a previous run that did not shut down"
                )?;
            }
            identity::write_user_trust(&layout.user_trust(), trust)
                .context("writing the identity files for the supervisor")?;
            state::write_json(&layout.metrics(), &metrics.cloned().unwrap_or_default())
                .context("writing the metrics' source for the supervisor")?;
            start_daemon(layout)?;
        }
    }
    let state = wait_ready(layout, want, before, timeout, out)?;
    wait_control_plane(layout, state.generation, out)?;
    Ok(state)
}

/// Refuses `metrics` before anything changes when it cannot be had: a running runtime
/// chose its source when it started; `--prometheus` needs Debian's `prometheus`.
fn check_metrics(layout: &Layout, metrics: Option<&Metrics>) -> anyhow::Result<()> {
    let Some(want) = metrics else { return Ok(()) };
    if daemon_alive(layout).is_some() {
        let running = state::read_json::<Metrics>(&layout.metrics())?.unwrap_or_default();
        if running != *want {
            bail!("the local runtime already runs with {running} for metrics; run `conduit local down` first to start it again with {want}");
        }
    }
    if *want == Metrics::Run && process::resolve_program(prometheus::PROGRAM).is_none() {
        bail!("`--prometheus` runs Prometheus, but `{}` is not on PATH; install it (`apt-get install prometheus`, as scripts/install-test-deps does), or point at one with `--prometheus-url URL`", prometheus::PROGRAM);
    }
    Ok(())
}

/// Waits until the control plane has read the state that made every pod ready, so that
/// proxies asking it right after `up` find every endpoint (and its identity and policy).
fn wait_control_plane(layout: &Layout, generation: u64, out: &mut dyn Write) -> anyhow::Result<()> {
    let socket = layout.api_socket();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if control_plane_generation(&socket).is_some_and(|g| g >= generation) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    writeln!(
        out,
        "note: the control plane has not caught up yet; see its log in {}",
        layout.logs().display()
    )?;
    Ok(())
}

/// The state generation the control plane last read, from its API.
fn control_plane_generation(socket: &Path) -> Option<u64> {
    use std::io::Read;
    let mut conn = std::os::unix::net::UnixStream::connect(socket).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: conduit\r\n\r\n",
        WorkloadsQuery::PATH
    );
    conn.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    conn.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (_, body) = text.split_once("\r\n\r\n")?;
    let workloads: Workloads = serde_json::from_str(body).ok()?;
    Some(workloads.generation)
}

fn start_daemon(layout: &Layout) -> anyhow::Result<()> {
    std::fs::create_dir_all(layout.logs())?;
    let log = File::create(layout.logs().join("supervisor.log"))?;
    let exe = std::env::current_exe().context("finding the conduit binary")?;
    let mut cmd = Command::new(exe);
    cmd.args(["local", "daemon"])
        .env("CONDUIT_LOCAL_DIR", layout.dir())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the supervisor outlives this command.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    cmd.spawn()
        .context("starting the local runtime's supervisor")?;
    Ok(())
}

fn wait_ready(
    layout: &Layout,
    want: u32,
    before: u64,
    timeout: Duration,
    out: &mut dyn Write,
) -> anyhow::Result<State> {
    let start = Instant::now();
    let mut last_line = String::new();
    loop {
        let state = state::read_json::<State>(&layout.state())?;
        if let Some(state) = state.filter(|s| s.generation > before || before == 0) {
            let ready = state.pods.iter().filter(|p| p.ready).count() as u32;
            let line = format!(
                "{ready}/{want} pods ready{}",
                state
                    .unready()
                    .iter()
                    .take(3)
                    .map(|p| format!(
                        "; {}/{}: {}",
                        p.namespace,
                        p.name,
                        if p.message.is_empty() {
                            &p.phase
                        } else {
                            &p.message
                        }
                    ))
                    .collect::<String>()
            );
            if line != last_line {
                writeln!(out, "  {line}")?;
                last_line = line;
            }
            if ready >= want && state.pods.len() as u32 >= want && state.unready().is_empty() {
                writeln!(
                    out,
                    "all {want} pods ready in {:.1}s",
                    start.elapsed().as_secs_f64()
                )?;
                return Ok(state);
            }
        }
        if daemon_alive(layout).is_none() && start.elapsed() > Duration::from_secs(2) {
            let log = layout.logs().join("supervisor.log");
            let tail = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "the local runtime's supervisor exited; its log ({}) ends with:\n{}",
                log.display(),
                tail.lines()
                    .rev()
                    .take(10)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        if start.elapsed() > timeout {
            bail!("timed out after {}s waiting for pods to be ready ({last_line}); see `conduit local status` and the logs in {}", timeout.as_secs(), layout.logs().display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Stops the supervisor (which tears down what it made) and removes anything left, also
/// what a crashed supervisor left behind. Returns how many namespaces were removed by
/// the sweep.
pub fn down(layout: &Layout, out: &mut dyn Write) -> anyhow::Result<()> {
    require_root("down")?;
    let _lock = DirLock::take(layout, out)?;
    if let Some(pid) = daemon_alive(layout) {
        writeln!(out, "stopping the local runtime (supervisor pid {pid})...")?;
        // SAFETY: kill has no memory-safety preconditions.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while daemon_alive(layout).is_some() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let swept = sweep(layout)?;
    if swept > 0 {
        writeln!(out, "removed {swept} namespace(s) left behind")?;
    }
    for f in [
        layout.desired(),
        layout.state(),
        layout.daemon_pid(),
        layout.metrics(),
    ] {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(layout.etc());
    let _ = std::fs::remove_dir_all(prometheus::Files::new(layout).dir());
    writeln!(out, "conduit local down: everything removed")?;
    Ok(())
}

/// Deletes this runtime's namespaces, killing every process in them.
fn sweep(layout: &Layout) -> anyhow::Result<usize> {
    let mine: Vec<String> = conduit_netns::list()?
        .into_iter()
        .filter(|n| layout.owns_netns(n))
        .collect();
    for name in &mine {
        if let Ok(ns) = conduit_netns::NetNs::open(name) {
            let _ = ns.delete();
        }
    }
    Ok(mine.len())
}

/// Runs `command` in pod `namespace/pod` as its containers run (its network namespace
/// and hosts file), with this terminal's input and output; returns its exit status.
/// What the command leaves running ends when it does; SIGINT, SIGTERM and SIGHUP sent to
/// this process go to the command, so the same holds when it is stopped. (Killed
/// outright, this process takes only the command with it; the rest ends with the pod.)
pub fn exec(
    layout: &Layout,
    namespace: &str,
    pod: &str,
    command: &[String],
) -> anyhow::Result<i32> {
    require_root("exec")?;
    let state =
        state::read_json::<State>(&layout.state())?.context("the local runtime is not running")?;
    let Some(p) = state
        .pods
        .iter()
        .find(|p| p.namespace == namespace && p.name == pod)
    else {
        let known: Vec<String> = state
            .pods
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        bail!("no pod {namespace}/{pod}; pods: {}", known.join(", "));
    };
    let ns = conduit_netns::NetNs::open(&p.netns)?;
    let exec = conduit_netns::Exec {
        etc: Some(layout.etc().join(&p.netns)),
        // Killing `conduit local exec` ends what it runs, as with a foreground command.
        die_with_parent: true,
        ..conduit_netns::Exec::default()
    };
    process::adopt_orphans().context("becoming the parent of what the command leaves")?;
    process::forward_signals().context("passing signals on to the command")?;
    let mut child = ns
        .command_with(&command[0], &exec)?
        .args(&command[1..])
        .envs([
            ("POD_NAME", p.name.as_str()),
            ("POD_NAMESPACE", p.namespace.as_str()),
        ])
        .spawn()
        .with_context(|| format!("running {:?} in {namespace}/{pod}", command[0]))?;
    process::forward_to(child.id());
    let status = child.wait();
    process::stop_forwarding();
    process::end_descendants();
    let status = status.with_context(|| format!("waiting for {:?}", command[0]))?;
    Ok(status.code().unwrap_or(1))
}

/// The observed state, and whether its supervisor is alive.
pub fn status(layout: &Layout) -> anyhow::Result<Option<(State, bool)>> {
    Ok(state::read_json::<State>(&layout.state())?.map(|s| {
        let alive = daemon_alive(layout).is_some();
        (s, alive)
    }))
}
