//! Network namespaces as pods on one host: create one, wire it to a bridge with a veth
//! pair, give it addresses, run processes inside it (optionally as another UID, in a
//! session of their own that can be signalled as a group), and remove it, ending every
//! process still inside, as removing a pod does. The host side is driven through
//! iproute2's `ip`, the one tool every Linux host has for this. Knows nothing about the
//! mesh; used by the local runtime and tests.

use std::{
    fs::File,
    io,
    os::{fd::AsRawFd, unix::process::CommandExt},
    path::PathBuf,
    process::{Command, Output},
};

/// Why a namespace operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("could not run `{command}`: {source} (is iproute2 installed?)")]
    Spawn { command: String, source: io::Error },
    #[error("`{command}` failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("cannot open network namespace {name}: {source} (creating namespaces needs root or CAP_SYS_ADMIN)")]
    Open { name: String, source: io::Error },
}

/// Runs a host command, returning its stdout, or its stderr as the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, NetnsError> {
    output_ok(Command::new(program).args(args), program, args)
}

fn output_ok(cmd: &mut Command, program: &str, args: &[&str]) -> Result<String, NetnsError> {
    let command = format!("{program} {}", args.join(" "));
    let out: Output = cmd.output().map_err(|source| NetnsError::Spawn {
        command: command.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(NetnsError::Failed {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How to start a process inside a namespace.
#[derive(Clone, Debug, Default)]
pub struct Exec {
    /// Run as this UID (and GID), with no supplementary groups.
    pub uid: Option<u32>,
    /// Bind this directory's `hosts` and `resolv.conf` over `/etc/hosts` and
    /// `/etc/resolv.conf` in a mount namespace of the process's own, as `ip netns exec`
    /// does with `/etc/netns/NAME/`.
    pub etc: Option<PathBuf>,
    /// Start a new session (and process group), so the process and its children can be
    /// signalled together ([`signal_group`]).
    pub new_session: bool,
    /// Kill the process when the one that started it dies (`PR_SET_PDEATHSIG`): for a
    /// command run on a user's behalf, which must not outlive the command that ran it.
    pub die_with_parent: bool,
}

/// A named network namespace (`/var/run/netns/NAME`), removed when dropped.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    file: File,
    keep: bool,
}

impl NetNs {
    /// Creates the namespace with its loopback up.
    pub fn create(name: &str) -> Result<NetNs, NetnsError> {
        run("ip", &["netns", "add", name])?;
        let mut ns = NetNs::open(name)?;
        ns.keep = false;
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Opens an existing namespace; it is left in place when dropped.
    pub fn open(name: &str) -> Result<NetNs, NetnsError> {
        let file = File::open(Self::path_of(name)).map_err(|source| NetnsError::Open {
            name: name.to_string(),
            source,
        })?;
        Ok(NetNs {
            name: name.to_string(),
            file,
            keep: true,
        })
    }

    fn path_of(name: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(name)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keeps the namespace after this handle is dropped.
    pub fn keep(mut self) -> Self {
        self.keep = true;
        self
    }

    /// Runs `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Result<String, NetnsError> {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// A command that runs inside the namespace, as root.
    pub fn command(&self, program: &str) -> Command {
        self.command_as(program, None)
    }

    /// A command that runs inside the namespace, as `uid`:`uid` with no supplementary
    /// groups when given (the proxy runs as its own UID so iptables can tell it apart).
    pub fn command_as(&self, program: &str, uid: Option<u32>) -> Command {
        self.command_with(
            program,
            &Exec {
                uid,
                ..Exec::default()
            },
        )
        .expect("no etc directory, so nothing can fail before spawn")
    }

    /// A command that runs inside the namespace as `exec` says.
    pub fn command_with(&self, program: &str, exec: &Exec) -> io::Result<Command> {
        let mut cmd = Command::new(program);
        let fd = self.file.as_raw_fd();
        let c_path = |file: &str, dir: &PathBuf| {
            std::ffi::CString::new(dir.join(file).into_os_string().into_encoded_bytes()).map_err(
                |_| {
                    io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "etc directory path has a NUL byte",
                    )
                },
            )
        };
        let etc = match &exec.etc {
            Some(dir) => Some([
                (c_path("hosts", dir)?, c"/etc/hosts"),
                (c_path("resolv.conf", dir)?, c"/etc/resolv.conf"),
            ]),
            None => None,
        };
        let (uid, new_session, die_with_parent) =
            (exec.uid, exec.new_session, exec.die_with_parent);
        let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
        // SAFETY: the closure runs in the forked child before exec and only makes raw
        // syscalls (setns, unshare, mount, setsid, setgroups, setgid, setuid), which are
        // async-signal-safe; the C strings were made before the fork. The namespace file
        // stays open in the parent for as long as `self` lives, which outlives every spawn
        // made through this handle.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(binds) = &etc {
                    // A private mount namespace, so the binds are this process's alone.
                    if libc::unshare(libc::CLONE_NEWNS) != 0
                        || libc::mount(
                            std::ptr::null(),
                            c"/".as_ptr(),
                            std::ptr::null(),
                            libc::MS_REC | libc::MS_PRIVATE,
                            std::ptr::null(),
                        ) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                    for (source, target) in binds {
                        let (fstype, data) = (std::ptr::null(), std::ptr::null());
                        let (source, target) = (source.as_ptr(), target.as_ptr());
                        if libc::mount(source, target, fstype, libc::MS_BIND, data) != 0 {
                            return Err(io::Error::last_os_error());
                        }
                    }
                }
                if new_session && libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                if let Some(uid) = uid {
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(io::Error::last_os_error());
                    }
                }
                // After the credentials change, which clears the parent-death signal; and
                // if the parent died before it was set, nothing would send it.
                if die_with_parent
                    && (libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0
                        || libc::getppid() != parent)
                {
                    return Err(io::Error::other("the parent process is gone"));
                }
                Ok(())
            });
        }
        Ok(cmd)
    }

    /// Moves the calling thread into the namespace; threads it starts afterwards are born
    /// there too. For a process that lives in one namespace, call it before any thread.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: setns on the calling thread with a descriptor `self` keeps open.
        if unsafe { libc::setns(self.file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Runs a command inside the namespace to completion, returning its stdout.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String, NetnsError> {
        output_ok(self.command(program).args(args), program, args)
    }

    /// Runs `f` on a thread that has entered the namespace (for sockets made in-process).
    pub fn within<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        let fd = self.file.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this thread only; the fd is valid while `self` lives.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(f())
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("thread inside the namespace panicked")))
        })
    }

    /// Creates a veth pair: `inner` in this namespace, `outer` in `peer`.
    pub fn veth(&self, inner: &str, peer: &NetNs, outer: &str) -> Result<(), NetnsError> {
        self.ip(&[
            "link", "add", inner, "type", "veth", "peer", "name", outer, "netns", &peer.name,
        ])?;
        self.ip(&["link", "set", inner, "up"])?;
        peer.ip(&["link", "set", outer, "up"])?;
        Ok(())
    }

    /// Creates a bridge in this namespace.
    pub fn bridge(&self, name: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "add", name, "type", "bridge"])?;
        self.ip(&["link", "set", name, "up"])?;
        Ok(())
    }

    /// Attaches `link` to `bridge`.
    pub fn attach(&self, link: &str, bridge: &str) -> Result<(), NetnsError> {
        self.ip(&["link", "set", link, "master", bridge])?;
        Ok(())
    }

    /// Adds an address with prefix, like `198.18.0.2/16`, to `dev`.
    pub fn address(&self, dev: &str, cidr: &str) -> Result<(), NetnsError> {
        let mut args = vec!["addr", "add", cidr, "dev", dev];
        if cidr.contains(':') {
            // Duplicate address detection would hold the address back for a second or two.
            args.push("nodad");
        }
        self.ip(&args)?;
        Ok(())
    }

    /// Deletes the namespace now, first ending every process still inside it.
    pub fn delete(mut self) -> Result<(), NetnsError> {
        self.keep = true;
        end_processes(&self.file);
        run("ip", &["netns", "delete", &self.name]).map(|_| ())
    }
}

/// A namespace this handle created is deleted, with every process still inside it.
impl Drop for NetNs {
    fn drop(&mut self) {
        if !self.keep {
            end_processes(&self.file);
            let _ = run("ip", &["netns", "delete", &self.name]);
        }
    }
}

/// Kills (SIGKILL) every process inside the namespace `ns` but the caller, and waits up
/// to two seconds for them to go. Deleting the name alone would leave them running in a
/// namespace nobody can find any more; this also reaches processes that left their
/// session or process group, which no signal to a group would. It finds them without
/// starting a process, which the caller's namespace (the one it deletes, perhaps) would
/// hold.
fn end_processes(ns: &File) {
    let me = std::process::id();
    kill_until_gone(|| pids_in(ns).into_iter().filter(|p| *p != me).collect());
}

/// Sends SIGKILL to every process `find` names, again every 10 ms while it names any, for
/// at most two seconds.
pub fn kill_until_gone(mut find: impl FnMut() -> Vec<u32>) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let left = find();
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return;
        }
        for pid in left {
            if let Ok(pid) = libc::pid_t::try_from(pid) {
                // SAFETY: kill has no memory-safety preconditions. Each pid was found a
                // moment ago; only its exit and the pid's reuse in between could make it
                // another process's.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Sends `signal` to the process group that `leader` (started with
/// [`Exec::new_session`]) leads: the process and whatever it started that stayed in its
/// group. The group's id stays taken while its leader is unreaped or any member lives:
/// signalled after the leader ended, the group is what the leader left behind.
pub fn signal_group(leader: u32, signal: i32) -> io::Result<()> {
    // Group 0 would be the caller's own, and 1 is init's.
    let pgid = libc::pid_t::try_from(leader)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a process group"))?;
    // SAFETY: kill has no memory-safety preconditions; a negative pid names a group.
    if unsafe { libc::kill(-pgid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The processes inside the namespace `name`.
pub fn pids(name: &str) -> Result<Vec<u32>, NetnsError> {
    let file = File::open(NetNs::path_of(name)).map_err(|source| NetnsError::Open {
        name: name.to_string(),
        source,
    })?;
    Ok(pids_in(&file))
}

/// The processes whose network namespace is the one `ns` names, as `ip netns pids` finds
/// them: the same device and inode behind `/proc/PID/ns/net`.
fn pids_in(ns: &File) -> Vec<u32> {
    use std::os::unix::fs::MetadataExt;
    let Ok(ns) = ns.metadata() else {
        return Vec::new();
    };
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| m.dev() == ns.dev() && m.ino() == ns.ino())
        })
        .collect()
}

/// What `/proc/PID/stat` says of a process: its state letter (`R`, `S`, `Z`...) and its
/// parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStat {
    pub state: char,
    pub parent: u32,
}

/// What `/proc` says of process `pid`, if it exists.
pub fn process_stat(pid: u32) -> Option<ProcessStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces and parentheses itself.
    let (_, rest) = stat.rsplit_once(") ")?;
    let mut fields = rest.split(' ');
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some(ProcessStat { state, parent })
}

/// Whether process `pid` runs: it exists and is not a zombie waiting to be reaped.
pub fn is_running(pid: u32) -> bool {
    process_stat(pid).is_some_and(|p| p.state != 'Z')
}

/// The names of every network namespace on the host.
pub fn list() -> Result<Vec<String>, NetnsError> {
    Ok(run("ip", &["netns", "list"])?
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    #[test]
    fn a_zombie_is_not_running_and_a_reaped_process_is_gone() {
        let me = process_stat(std::process::id()).expect("this process");
        // SAFETY: getppid has no preconditions.
        assert_eq!(me.parent, unsafe { libc::getppid() } as u32);
        assert!(is_running(std::process::id()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Exited but not reaped: a zombie.
        let zombie = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            process_stat(pid).is_some_and(|p| p.state == 'Z')
        });
        assert!(zombie && !is_running(pid));
        child.wait().unwrap();
        assert_eq!(process_stat(pid), None);
    }

    #[test]
    fn namespaces_are_isolated_and_removed() {
        assert!(is_root(), "network namespace tests need root");
        let name = format!("cnt-{}", std::process::id());
        let a = NetNs::create(&name).unwrap();
        let b = NetNs::create(&format!("{name}b")).unwrap();
        a.veth("eth0", &b, "eth1").unwrap();
        a.address("eth0", "198.18.7.1/24").unwrap();
        b.address("eth1", "198.18.7.2/24").unwrap();
        let addrs = a
            .exec("ip", &["-4", "-o", "addr", "show", "dev", "eth0"])
            .unwrap();
        assert!(addrs.contains("198.18.7.1/24"), "{addrs}");
        // A socket made inside a reaches the other namespace, and the host cannot see it.
        let listener = b
            .within(|| std::net::TcpListener::bind("198.18.7.2:0"))
            .unwrap()
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let connected = a
            .within(|| {
                std::net::TcpStream::connect(("198.18.7.2", port)).map(|s| s.local_addr().unwrap())
            })
            .unwrap()
            .unwrap();
        assert_eq!(connected.ip().to_string(), "198.18.7.1");
        let as_uid = a.command_as("id", Some(2102)).arg("-u").output().unwrap();
        assert_eq!(String::from_utf8_lossy(&as_uid.stdout).trim(), "2102");
        drop(a);
        drop(b);
        let left = list().unwrap();
        assert!(!left.iter().any(|n| n.starts_with(&name)), "{left:?}");
    }
}
