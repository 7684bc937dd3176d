//! `conduit local` for real: the sample app's Deployments and Services run as network
//! namespaces with real processes, meshed with the real proxy, and torn down without a
//! trace. Each test has its own run directory, so its namespaces never meet another's.
//! Root only; the workspace's binaries must be built (`cargo test --workspace` does).

mod common;
use common::*;
use conduit_testkit::{require_root, wait_until};
use serde_json::Value;
use std::{
    path::PathBuf,
    process::{Command, Output},
    time::Duration,
};

fn prefix_of(status: &Value) -> String {
    status["node_netns"]
        .as_str()
        .unwrap()
        .trim_end_matches("-node")
        .to_string()
}

#[test]
fn the_sample_app_runs_unmeshed_and_down_leaves_nothing() {
    let rt = Runtime::new("plain");
    let manifest = manifest();
    let up = rt.ok(&["local", "up", "-f", manifest.to_str().unwrap()]);
    assert!(up.contains("all 4 pods ready"), "{up}");
    let status = rt.status();
    let prefix = prefix_of(&status);
    assert_eq!(status["pods"].as_array().unwrap().len(), 4);
    for svc in status["services"].as_array().unwrap() {
        assert_eq!(
            svc["ports"][0]["endpoints"].as_array().unwrap().len(),
            1,
            "{svc}"
        );
    }
    // Service names resolve from a pod's hosts file, and the virtual IP reaches the web.
    let list = rt.exec(
        "vote-bot",
        &[
            "curl",
            "-sS",
            "-m",
            "5",
            "http://web-svc.emojivoto/api/list",
        ],
    );
    assert!(list.contains(":doughnut:"), "{list}");
    // The bot's votes reach the voting service through two Services.
    assert!(
        wait_until(Duration::from_secs(20), || rt
            .exec(
                "vote-bot",
                &[
                    "curl",
                    "-sS",
                    "-m",
                    "5",
                    "http://web-svc.emojivoto/api/leaderboard"
                ]
            )
            .contains("votes")),
        "no votes counted"
    );
    let table = rt.ok(&["local", "status"]);
    assert!(
        table.contains("emoji-svc") && table.contains("198.19.0."),
        "{table}"
    );
    let status = rt.status();
    let mut pids: Vec<i32> = status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            p["containers"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|c| c["pid"].as_i64())
        })
        .map(|p| p as i32)
        .collect();
    pids.push(status["daemon_pid"].as_i64().unwrap() as i32);
    assert_eq!(pids.len(), 5);

    let down = rt.ok(&["local", "down"]);
    assert!(down.contains("everything removed"), "{down}");
    assert!(
        rt.namespaces(&prefix).is_empty(),
        "namespaces left: {:?}",
        rt.namespaces(&prefix)
    );
    let alive: Vec<i32> = pids
        .into_iter()
        .filter(|p| conduit_netns::is_running(*p as u32))
        .collect();
    assert!(alive.is_empty(), "processes left: {alive:?}");
}

#[test]
fn injected_pods_run_the_real_proxy_and_its_rules() {
    let rt = Runtime::new("meshed");
    let injected = rt.meshed_manifest();
    rt.ok(&["local", "up", "-f", injected.to_str().unwrap()]);
    let status = rt.status();
    for pod in status["pods"].as_array().unwrap() {
        assert_eq!(pod["meshed"], true, "{pod}");
        assert_eq!(pod["containers"].as_array().unwrap().len(), 2, "{pod}");
    }
    // The init container wrote the redirect rules in the pod.
    let rules = rt.exec("web", &["iptables-save", "-t", "nat"]);
    assert!(
        rules.contains("CONDUIT_PROXY_OUTBOUND") && rules.contains("CONDUIT_LOCAL_SERVICES"),
        "{rules}"
    );
    // Traffic flows through the proxies: the web's proxy sees the bot's requests inbound
    // and its own gRPC calls outbound, labelled with the pod's identity.
    let seen = wait_until(Duration::from_secs(20), || {
        let m = rt.exec(
            "web",
            &["curl", "-sS", "-m", "5", "http://127.0.0.1:4191/metrics"],
        );
        m.contains(r#"deployment="web""#)
            && m.contains(r#"direction="inbound",authority="web-svc.emojivoto""#)
            && m.contains(r#"direction="outbound",authority="voting-svc.emojivoto:8080""#)
    });
    assert!(seen, "the web's proxy did not see traffic");
    let _ = std::fs::remove_file(injected);
}

#[test]
fn an_apps_init_container_reaches_the_mesh_through_the_native_sidecar() {
    let rt = Runtime::new("sidecar");
    // The bot gets an init container that needs the network: with the redirect rules in
    // place, only a proxy that is already running (a native sidecar) can carry it.
    let app = std::fs::read_to_string(manifest()).unwrap().replace(
        "      serviceAccountName: vote-bot\n      containers:\n",
        "      serviceAccountName: vote-bot\n      initContainers:\n        - name: wait-for-web\n          image: curlimages/curl\n          command: [curl, -sSf, -o, /dev/null, --retry, \"60\", --retry-delay, \"1\", --retry-all-errors, \"http://web-svc.emojivoto.svc.cluster.local/api/list\"]\n      containers:\n",
    );
    assert!(app.contains("wait-for-web"));
    let plain = rt.dir.with_extension("app.yml");
    std::fs::write(&plain, app).unwrap();
    let out = std::process::Command::new(CONDUIT)
        .arg("inject")
        .arg(&plain)
        .output()
        .unwrap();
    assert!(out.status.success());
    let meshed = rt.dir.with_extension("app-meshed.yml");
    std::fs::write(&meshed, &out.stdout).unwrap();
    let injected = String::from_utf8_lossy(&out.stdout);
    let bot_doc = injected
        .split("\n---")
        .find(|d| d.contains("wait-for-web"))
        .unwrap();
    let order: Vec<usize> = [
        "name: conduit-init\n",
        "name: conduit-proxy\n",
        "name: wait-for-web\n",
    ]
    .iter()
    .map(|n| bot_doc.find(n).unwrap())
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "init, proxy, then the app's init container"
    );

    rt.ok(&["local", "up", "-f", meshed.to_str().unwrap()]);
    let status = rt.status();
    let bot = Runtime::pod(&status, "vote-bot");
    assert_eq!(bot["ready"], true, "{bot}");
    let names: Vec<&str> = bot["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["conduit-proxy", "vote-bot"],
        "the sidecar runs beside the app"
    );
    // The init container's request went through the bot's proxy.
    let metrics = rt.exec(
        "vote-bot",
        &["curl", "-sS", "-m", "5", "http://127.0.0.1:4191/metrics"],
    );
    assert!(
        metrics.contains(r#"direction="outbound",authority="web-svc.emojivoto.svc.cluster.local""#),
        "{metrics}"
    );
}

#[test]
fn without_native_sidecars_the_post_start_hook_holds_the_app_until_the_proxy_is_ready() {
    let rt = Runtime::new("poststart");
    // A container that fails (and is restarted) unless the pod's proxy is already ready
    // when it starts: the proxy needs its certificate from the control plane first, so
    // only a hook that waits for it keeps this from failing.
    let app = std::fs::read_to_string(manifest()).unwrap().replace(
        "      serviceAccountName: vote-bot\n      containers:\n",
        "      serviceAccountName: vote-bot\n      containers:\n        - name: after-proxy\n          image: curlimages/curl\n          command: [sh, -c, \"curl -sSf -m 2 -o /dev/null http://127.0.0.1:4191/ready && exec sleep 3600\"]\n",
    );
    assert!(app.contains("after-proxy"));
    let plain = rt.dir.with_extension("app.yml");
    std::fs::write(&plain, app).unwrap();
    let meshed = rt.injected(&plain, &["--native-sidecar=false"], "app-meshed.yml");
    let injected = std::fs::read_to_string(&meshed).unwrap();
    assert!(injected.contains("postStart"), "{injected}");

    rt.ok(&["local", "up", "-f", meshed.to_str().unwrap()]);
    let status = rt.status();
    let bot = Runtime::pod(&status, "vote-bot");
    assert_eq!(bot["ready"], true, "{bot}");
    let containers = bot["containers"].as_array().unwrap();
    let names: Vec<&str> = containers
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["conduit-proxy", "after-proxy", "vote-bot"],
        "the proxy first"
    );
    let after = &containers[1];
    assert_eq!(after["running"], true, "{after}");
    assert_eq!(
        after["restarts"], 0,
        "it started once, with the proxy ready: {after}"
    );
}

#[test]
fn bad_manifests_are_refused_before_anything_starts() {
    let rt = Runtime::new("bad");
    let good = std::fs::read_to_string(manifest()).unwrap();
    let cases = [
        (
            good.replacen("          command: [\"emojivoto-web\"]\n", "", 1),
            "spec.template.spec.containers[0].command: missing",
        ),
        (
            good.replacen("kind: Service\n", "kind: Ingress\n", 1),
            "kind: v1 Ingress is not something the local runtime runs",
        ),
        (
            format!("{good}\n---\nkind: Deployment\n  bad: [\n"),
            "not valid YAML",
        ),
        (
            good.replacen("[\"emojivoto-web\"]", "[\"no-such-program\"]", 1),
            "\"no-such-program\" was not found",
        ),
        // The runtime makes log files and namespaces from names: none may climb out.
        (
            good.replace("namespace: emojivoto", "namespace: ../../../tmp/x"),
            "metadata.namespace: \"../../../tmp/x\" is not a valid namespace",
        ),
    ];
    for (text, expected) in cases {
        let file = rt.dir.with_extension("bad.yml");
        std::fs::write(&file, &text).unwrap();
        let out = rt.conduit(&["local", "up", "-f", file.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(expected),
            "{err}\n  should contain: {expected}"
        );
        assert!(
            err.contains(file.to_str().unwrap()),
            "the file is named: {err}"
        );
        assert!(!rt.dir.join("state.json").exists(), "nothing started");
        assert!(
            !std::path::Path::new("/tmp/x_web-0_web-svc.log").exists(),
            "nothing written outside the run directory"
        );
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn up_without_root_says_so() {
    require_root();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            CONDUIT,
            "local",
            "up",
            "-f",
        ])
        .arg(manifest())
        .env(
            "CONDUIT_LOCAL_DIR",
            std::env::temp_dir().join("conduit-local-test-nobody"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("conduit local up needs root") && err.contains("sudo"),
        "{err}"
    );
}

#[test]
fn exited_processes_restart_and_a_crashed_supervisor_is_cleaned_up() {
    let rt = Runtime::new("crash");
    rt.ok(&["local", "up", "-f", manifest().to_str().unwrap()]);
    let status = rt.status();
    let prefix = prefix_of(&status);
    let emoji = Runtime::pod(&status, "emoji");
    let pid = emoji["containers"][0]["pid"].as_u64().unwrap() as i32;
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let restarted = wait_until(Duration::from_secs(15), || {
        let s = rt.status();
        let c = &Runtime::pod(&s, "emoji")["containers"][0];
        c["restarts"] == 1
            && c["running"] == true
            && c["last_exit"]
                .as_str()
                .is_some_and(|e| e.contains("signal 9"))
    });
    assert!(restarted, "not restarted: {}", rt.status());

    // Kill the supervisor outright: status says so, down still removes everything.
    let daemon = rt.status()["daemon_pid"].as_u64().unwrap() as i32;
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGKILL) };
    assert!(wait_until(Duration::from_secs(5), || rt
        .ok(&["local", "status"])
        .contains("supervisor is not running")));
    rt.ok(&["local", "down"]);
    assert!(
        rt.namespaces(&prefix).is_empty(),
        "namespaces left: {:?}",
        rt.namespaces(&prefix)
    );
}

#[test]
fn parallel_ups_both_land() {
    let rt = Runtime::new("parallel");
    let text = std::fs::read_to_string(manifest()).unwrap();
    // Two manifests: the app in two namespaces, brought up at the same time.
    let files: Vec<PathBuf> = ["one", "two"]
        .iter()
        .map(|ns| {
            let f = rt.dir.with_extension(format!("{ns}.yml"));
            let text = text
                .replace("namespace: emojivoto", &format!("namespace: {ns}"))
                .replace(".emojivoto:", &format!(".{ns}:"));
            std::fs::write(&f, text).unwrap();
            f
        })
        .collect();
    let handles: Vec<_> = files
        .iter()
        .map(|f| {
            let (dir, f) = (rt.dir.clone(), f.clone());
            std::thread::spawn(move || {
                Command::new(CONDUIT)
                    .args(["local", "up", "-f"])
                    .arg(f)
                    .env("CONDUIT_LOCAL_DIR", dir)
                    .output()
                    .unwrap()
            })
        })
        .collect();
    for h in handles {
        let out = h.join().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let status = rt.status();
    let pods = status["pods"].as_array().unwrap();
    assert_eq!(pods.len(), 8, "{status}");
    assert!(pods.iter().all(|p| p["ready"] == true), "{status}");
    assert_eq!(status["services"].as_array().unwrap().len(), 6);
    for f in files {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn inject_and_uninject_read_stdin_and_report_on_stderr() {
    use std::io::Write as _;
    let original = std::fs::read_to_string(manifest()).unwrap();
    let piped = |args: &[&str], input: &str| -> Output {
        let mut child = Command::new(CONDUIT)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let run = |args: &[&str], input: &str| {
        let out = piped(args, input);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (injected, report) = run(&["inject", "-"], &original);
    assert!(
        injected.contains("name: conduit-proxy") && injected.contains("name: conduit-init"),
        "{injected}"
    );
    assert!(report.contains("deployment \"web\" injected"), "{report}");
    assert!(report.contains("service \"web-svc\" skipped"), "{report}");
    let (again, _) = run(&["inject", "-"], &injected);
    assert_eq!(again, injected, "injecting twice changes nothing");
    let (back, report) = run(&["uninject", "-"], &injected);
    assert!(report.contains("deployment \"web\" uninjected"), "{report}");
    assert!(!back.contains("conduit-proxy"), "{back}");
    // Bad input: a clear error naming the document, exit 1, nothing on stdout.
    let out = piped(&["inject", "-"], "kind: Deployment\n  bad: [\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("-, document 1: not valid YAML"), "{err}");
}
