//! The local runtime ends a pod's whole process tree, as a kubelet does: what an init
//! container, a postStart hook or a container's run leaves behind ends with it, and a
//! removed pod takes along what ignored SIGTERM or left its session; `conduit local exec`
//! ends what its command leaves, also when it is stopped. Each command writes the pid of
//! the child it leaves to a file. Root only; the workspace's binaries must be built.

mod common;
use common::*;
use conduit_netns::is_running;
use conduit_testkit::{assert_ends, read_pid, wait_until};
use std::{path::PathBuf, time::Duration};

/// A Deployment in namespace `trees` whose processes leave children, writing their pids
/// under `pids`.
fn manifest(name: &str, replicas: u32, pids: &std::path::Path) -> String {
    let pids = pids.display();
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: trees
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      initContainers:
        - name: leaves-a-child
          image: busybox
          command: [sh, -c, "sleep 1000 >/dev/null 2>&1 & echo $! > {pids}/init"]
      containers:
        - name: fails-once
          image: busybox
          command: [sh, -c, "sleep 1000 >/dev/null 2>&1 & if [ ! -e {pids}/first-run ]; then echo $! > {pids}/first-run; exit 1; fi; wait"]
        - name: stubborn
          image: busybox
          command: [sh, -c, "(trap '' TERM; exec sleep 1000) >/dev/null 2>&1 & echo $! > {pids}/ignores-term; setsid sleep 1000 >/dev/null 2>&1 & echo $! > {pids}/own-session; wait"]
          lifecycle:
            postStart:
              exec:
                command: [sh, -c, "sleep 1000 >/dev/null 2>&1 & echo $! > {pids}/hook"]
"#
    )
}

/// A directory for pid files beside the runtime's run directory (removed with it).
fn pid_dir(rt: &Runtime) -> PathBuf {
    let dir = rt.dir.with_extension("pids");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_pods_processes_take_what_they_leave_with_them() {
    let rt = Runtime::new("trees");
    let pids = pid_dir(&rt);
    let file = rt.dir.with_extension("trees.yml");
    std::fs::write(&file, manifest("trees", 1, &pids)).unwrap();
    rt.ok(&["local", "up", "-f", file.to_str().unwrap()]);

    // Runs that ended, ended with what they started.
    assert_ends(read_pid(&pids.join("init")), "the init container's child");
    assert_ends(read_pid(&pids.join("hook")), "the postStart hook's child");
    assert_ends(read_pid(&pids.join("first-run")), "the failed run's child");
    // A running container's children run with it.
    let ignores_term = read_pid(&pids.join("ignores-term"));
    let own_session = read_pid(&pids.join("own-session"));
    assert!(is_running(ignores_term) && is_running(own_session));

    // Scaled to nothing, the pod goes with everything it ran.
    let netns = Runtime::pod(&rt.status(), "trees")["netns"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(&file, manifest("trees", 0, &pids)).unwrap();
    rt.ok(&["local", "up", "-f", file.to_str().unwrap()]);
    assert!(
        wait_until(Duration::from_secs(30), || rt.namespaces(&netns).is_empty()),
        "the pod's namespace {netns} is still there"
    );
    assert_ends(ignores_term, "the removed pod's child that ignored SIGTERM");
    assert_ends(
        own_session,
        "the removed pod's child in a session of its own",
    );
}

#[test]
fn exec_ends_what_its_command_leaves_also_when_stopped() {
    let rt = Runtime::new("exectrees");
    let pids = pid_dir(&rt);
    let file = rt.dir.with_extension("idle.yml");
    std::fs::write(
        &file,
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: idle\n  namespace: trees\nspec:\n  selector:\n    matchLabels: {app: idle}\n  template:\n    metadata:\n      labels: {app: idle}\n    spec:\n      containers:\n        - name: idle\n          image: busybox\n          command: [sleep, \"1000\"]\n",
    )
    .unwrap();
    rt.ok(&["local", "up", "-f", file.to_str().unwrap()]);

    // The command exits at once, leaving a child.
    let left = pids.join("left");
    rt.exec(
        "idle",
        &[
            "sh",
            "-c",
            &format!("sleep 1000 >/dev/null 2>&1 & echo $! > {}", left.display()),
        ],
    );
    assert_ends(read_pid(&left), "the child an exec'd command left");

    // `conduit local exec` is stopped while its command runs.
    let stopped = pids.join("stopped");
    let mut exec = rt.spawn_in(
        "idle",
        &[
            "sh",
            "-c",
            &format!(
                "sleep 1000 >/dev/null 2>&1 & echo $! > {}; wait",
                stopped.display()
            ),
        ],
    );
    let child = read_pid(&stopped);
    // SAFETY: kill has no memory-safety preconditions; `exec` is our unreaped child.
    unsafe { libc::kill(exec.id() as i32, libc::SIGTERM) };
    let _ = exec.wait();
    assert_ends(child, "the child of the command of a stopped exec");
}
