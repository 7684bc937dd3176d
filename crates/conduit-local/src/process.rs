//! A container's processes, as a kubelet runs them: finding its program, launching one
//! run of it in the pod (namespace, hosts file, user, environment, log, and a session of
//! its own), restarting it with backoff, and terminating it: SIGTERM to its process
//! group, SIGKILL after the grace period. Knows nothing of pods' lifecycles, Services or
//! identity.

use crate::{
    spec::{ContainerSpec, EnvSpec, PodField},
    state::PodState,
};
use conduit_netns::{Exec, NetNs};
use parking_lot::Mutex;
use std::{
    io,
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::Arc,
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

/// Starts one run of a container's process in the pod.
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

/// SIGTERM to the container's process group, SIGKILL after the grace period.
async fn terminate(pid: Option<u32>, child: &mut Child) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill has no memory-safety preconditions; the group is the container's own.
        unsafe {
            libc::kill(-pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(GRACE_PERIOD, child.wait())
        .await
        .is_err()
    {
        if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: as above.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
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
                let pid = child.id();
                {
                    let mut s = pod.lock();
                    s.containers[i].pid = pid;
                    s.containers[i].running = true;
                }
                let ended = tokio::select! {
                    status = child.wait() => Some(status),
                    _ = stop.changed() => None,
                };
                match ended {
                    Some(status) => {
                        let how = status.map_or_else(|e| e.to_string(), describe);
                        let name = pod.lock().name.clone();
                        warn!(container = %c.name, pod = %name, "container {how}");
                        pod.lock().containers[i].last_exit = Some(how);
                    }
                    None => {
                        terminate(pid, &mut child).await;
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

/// Whether `pid` runs: it exists and is not a zombie waiting to be reaped.
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}
