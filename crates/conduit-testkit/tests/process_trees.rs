//! Test pods end their whole process tree, as a kubelet ends a container's: dropping a
//! process ends what it started (a server's multiprocessing workers), and dropping a pod
//! ends whatever still runs inside it, even a process that left its session. Root only.

use conduit_netns::is_running;
use conduit_testkit::{assert_ends, read_pid, Lan};
use std::path::PathBuf;

/// A file for a command to write a pid to, removed when the test ends.
struct PidFile(PathBuf);

impl PidFile {
    fn new(name: &str) -> PidFile {
        PidFile(std::env::temp_dir().join(format!(
            "conduit-testkit-trees-{}-{name}.pid",
            std::process::id()
        )))
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("temporary paths are UTF-8")
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_dropped_process_takes_its_multiprocessing_worker_with_it() {
    let lan = Lan::new();
    let pod = lan.pod("workers");
    let file = PidFile::new("worker");
    // What hypercorn does with its workers: the parent waits on a child process.
    let script = format!(
        "import multiprocessing, time\n\
         def work():\n    time.sleep(1000)\n\
         if __name__ == '__main__':\n\
         \x20   w = multiprocessing.Process(target=work)\n\
         \x20   w.start()\n\
         \x20   open({:?}, 'w').write(str(w.pid))\n\
         \x20   w.join()\n",
        file.path()
    );
    let server = pod.spawn(&["python3", "-c", &script]);
    let worker = read_pid(&file.0);
    assert!(is_running(worker), "the worker runs");
    drop(server);
    assert_ends(worker, "the dropped process's worker");
}

#[test]
fn a_dropped_pod_takes_what_left_its_session_with_it() {
    let lan = Lan::new();
    let pod = lan.pod("escape");
    let file = PidFile::new("escaped");
    // `setsid` leaves the group the pod's command leads; `run` returns at once.
    pod.run_ok(&[
        "sh",
        "-c",
        &format!(
            "setsid sleep 1000 >/dev/null 2>&1 & echo $! > {}",
            file.path()
        ),
    ]);
    let escaped = read_pid(&file.0);
    assert!(is_running(escaped), "the escaped process runs");
    drop(pod);
    assert_ends(escaped, "the process that left its session");
}
