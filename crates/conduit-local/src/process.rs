//! A container's processes, as a kubelet runs them: finding its program, launching one
//! run of it in the pod (namespace, hosts file, user, environment, log, and a session of
//! its own, so that the run's whole process tree is one group), restarting it with
//! backoff, and ending a run's whole group: SIGTERM, then SIGKILL after the grace
//! period; and SIGKILL for whatever a run left behind once its main process ended, as a
//! container's processes end with its main one. Also how `conduit local exec` ends what
//! its command leaves. Knows nothing of pods' lifecycles, Services or identity.

use crate::{
    spec::{ContainerSpec, EnvSpec, PodField},
    state::PodState,
};
use conduit_netns::{Exec, NetNs};
use parking_lot::Mutex;
use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::{
        atomic::{AtomicI32, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};
use tokio::{process::Child, sync::watch};
use tracing::warn;

/// How long a stopped container's processes have between SIGTERM and SIGKILL.
const GRACE_PERIOD: Duration = Duration::from_secs(5);

/// Finds a container's program the way the runtime will run it: a path as given, else
/// next to the running binary (so a build directory works without installing), else
/// on `PATH`.
pub fn resolve_program(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Path::new(name).is_file().then(|| PathBuf::from(name));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join(name)));
    beside
        .into_iter()
        .chain(
            std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                .map(|d| d.join(name)),
        )
        .find(|p| p.is_file())
}

/// Starts one run of a container's process in the pod, leading a process group of its
/// own.
pub fn launch(
    ns: &NetNs,
    etc: &Path,
    c: &ContainerSpec,
    pod: &Mutex<PodState>,
    log: &Path,
) -> io::Result<Child> {
    let exec = Exec {
        uid: c.run_as_user.filter(|u| *u != 0),
        etc: Some(etc.to_path_buf()),
        new_session: true,
        // Pods outlive a crashed supervisor; `down` finds and stops them.
        die_with_parent: false,
    };
    let mut cmd = ns.command_with(&c.argv[0], &exec)?;
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let pod = pod.lock().clone();
    cmd.args(&c.argv[1..])
        .envs(environment(c, &pod))
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err);
    tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .spawn()
}

/// How a run that [`wait_or_stop`] watched ended. Either way, its whole process group is
/// gone.
pub enum Ended {
    /// Its main process exited by itself.
    Exited(io::Result<ExitStatus>),
    /// It was told to stop, and was terminated.
    Stopped,
}

/// Waits until a launched run ends by itself or `stop` changes (then terminates it),
/// and ends whatever the run left behind.
pub async fn wait_or_stop(child: &mut Child, stop: &mut watch::Receiver<bool>) -> Ended {
    let pid = child.id();
    tokio::select! {
        status = child.wait() => {
            // The main process is reaped, but the group's id stays taken while anything
            // it left lives: this reaches only that.
            if let Some(pid) = pid {
                let _ = conduit_netns::signal_group(pid, libc::SIGKILL);
            }
            Ended::Exited(status)
        }
        _ = stop.changed() => {
            terminate(pid, child).await;
            Ended::Stopped
        }
    }
}

/// SIGTERM to the run's process group; once its main process has exited, or after the
/// grace period, SIGKILL to whatever is left of the group.
async fn terminate(pid: Option<u32>, child: &mut Child) {
    if let Some(pid) = pid {
        let _ = conduit_netns::signal_group(pid, libc::SIGTERM);
    }
    let exited = tokio::time::timeout(GRACE_PERIOD, child.wait())
        .await
        .is_ok();
    if let Some(pid) = pid {
        let _ = conduit_netns::signal_group(pid, libc::SIGKILL);
    }
    if !exited {
        let _ = child.wait().await;
    }
}

/// Keeps container `i` of `pod` running: restarts it with exponential backoff (1 s to
/// 30 s, reset after a minute of good health) until `stop` changes.
pub async fn supervise(
    ns: Arc<NetNs>,
    etc: PathBuf,
    c: ContainerSpec,
    i: usize,
    pod: Arc<Mutex<PodState>>,
    log: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        match launch(&ns, &etc, &c, &pod, &log) {
            Ok(mut child) => {
                {
                    let mut s = pod.lock();
                    s.containers[i].pid = child.id();
                    s.containers[i].running = true;
                }
                match wait_or_stop(&mut child, &mut stop).await {
                    Ended::Exited(status) => {
                        let how = status.map_or_else(|e| e.to_string(), describe);
                        let name = pod.lock().name.clone();
                        warn!(container = %c.name, pod = %name, "container {how}");
                        pod.lock().containers[i].last_exit = Some(how);
                    }
                    Ended::Stopped => {
                        let mut s = pod.lock();
                        s.containers[i].running = false;
                        s.containers[i].pid = None;
                        return;
                    }
                }
            }
            Err(e) => {
                pod.lock().containers[i].last_exit =
                    Some(format!("could not start {:?}: {e}", c.argv[0]))
            }
        }
        {
            let mut s = pod.lock();
            s.containers[i].running = false;
            s.containers[i].ready = false;
            s.containers[i].pid = None;
            s.containers[i].restarts += 1;
        }
        if started.elapsed() > Duration::from_secs(60) {
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// How a run ended, in words: `exited with status 1`, `was killed by signal 9`.
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        _ => "ended".to_string(),
    }
}

/// The environment of a container: the supervisor's own (so that host tools resolve as
/// they do for the user), the pod's fields, then the container's variables.
fn environment(c: &ContainerSpec, pod: &PodState) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_NAME".to_string(), pod.name.clone()),
        ("POD_NAMESPACE".to_string(), pod.namespace.clone()),
        ("POD_IP".to_string(), pod.ip.to_string()),
    ];
    for e in &c.env {
        match e {
            EnvSpec::Value { name, value } => env.push((name.clone(), value.clone())),
            EnvSpec::PodField { name, field } => env.push((
                name.clone(),
                match field {
                    PodField::Name => pod.name.clone(),
                    PodField::Namespace => pod.namespace.clone(),
                    PodField::Ip => pod.ip.to_string(),
                    PodField::ServiceAccount => pod.service_account.clone(),
                },
            )),
            // Replaced with the anchors before containers start.
            EnvSpec::MeshTrustRoots { .. } => {}
        }
    }
    env
}

/// Makes this process the parent of its descendants that lose theirs
/// (`PR_SET_CHILD_SUBREAPER`), so that what a command started still descends from this
/// process after the command has exited, for [`end_descendants`] to find.
pub fn adopt_orphans() -> io::Result<()> {
    // SAFETY: prctl with an integer argument has no memory-safety preconditions.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Kills (SIGKILL) every process descended from this one and reaps those that are its
/// children, until none is left (or two seconds have passed).
pub fn end_descendants() {
    let me = std::process::id();
    conduit_netns::kill_until_gone(|| {
        // Killed children stay in the tree as zombies until reaped.
        // SAFETY: waitpid on any child, without blocking; this process runs no other
        // child that something else waits for.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
        descendants(me)
    });
}

/// Every process descended from `root`, found through the parents `/proc` names.
fn descendants(root: u32) -> Vec<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if let Some(stat) = conduit_netns::process_stat(pid) {
            children.entry(stat.parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut next = vec![root];
    while let Some(pid) = next.pop() {
        for child in children.remove(&pid).unwrap_or_default() {
            found.push(child);
            next.push(child);
        }
    }
    found
}

/// The process that [`forward_signals`] passes signals on to (0: none yet).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// A signal that came before there was a process to pass it on to.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn forward(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel hands a SA_SIGINFO handler a valid siginfo_t.
    let code = unsafe { (*info).si_code };
    // A signal from the terminal went to the whole foreground group, the command too;
    // only those sent to this process alone (kill, si_code <= 0) need passing on.
    if code > 0 {
        return;
    }
    match FORWARD_TO.load(Ordering::SeqCst) {
        0 => PENDING.store(signal, Ordering::SeqCst),
        // SAFETY: kill is async-signal-safe.
        pid => unsafe {
            libc::kill(pid, signal);
        },
    }
}

/// From now on, SIGINT, SIGTERM and SIGHUP sent to this process do not end it but go to
/// the process [`forward_to`] names, so that this process outlives its command and can
/// end what it leaves.
pub fn forward_signals() -> io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction is a valid value to fill in; the handler only makes
        // async-signal-safe calls and uses atomics.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = forward as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Names the process [`forward_signals`] passes signals on to, and passes it one that
/// came before.
pub fn forward_to(pid: u32) {
    let Some(pid) = libc::pid_t::try_from(pid).ok().filter(|p| *p > 0) else {
        return;
    };
    FORWARD_TO.store(pid, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: kill has no memory-safety preconditions; `pid` is an unreaped child.
        unsafe {
            libc::kill(pid, pending);
        }
    }
}

/// Stops passing signals on (they are then ignored): for once the process is reaped,
/// when its pid may belong to another.
pub fn stop_forwarding() {
    FORWARD_TO.store(0, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use tokio::io::AsyncBufReadExt;

    /// Starts `script` in a process group of its own, as [`launch`] does, and returns it
    /// with the pid of the child it prints first.
    async fn group_leader(script: &str) -> (Child, u32) {
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", script])
            .stdout(std::process::Stdio::piped())
            .process_group(0);
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::io::BufReader::new(out)
            .read_line(&mut line)
            .await
            .unwrap();
        (child, line.trim().parse().unwrap())
    }

    #[tokio::test]
    async fn a_stopped_run_takes_what_ignored_sigterm_with_it() {
        let (mut run, stubborn) =
            group_leader("(trap '' TERM; exec sleep 1000) >/dev/null 2>&1 & echo $!; wait").await;
        let (tell, mut stop) = watch::channel(false);
        tell.send(true).unwrap();
        assert!(matches!(
            wait_or_stop(&mut run, &mut stop).await,
            Ended::Stopped
        ));
        conduit_testkit::assert_ends(stubborn, "the child that ignored SIGTERM");
    }
}
