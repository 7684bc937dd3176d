//! The metrics API on a real Prometheus (Debian's `prometheus`): `conduit local up
//! --prometheus` runs one beside the controller with a scrape configuration of its own;
//! it scrapes every proxy without errors and keeps every family's type; the CLI's
//! answers through it agree with a second controller's embedded store over the same
//! traffic; pods cannot reach it; a Prometheus that stops answering is a clear error,
//! not a hang. Root only.

mod common;
use common::*;
use serde_json::Value;
use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// `GET PATH` from the runtime's Prometheus (in the node namespace), as JSON.
fn prometheus(node: &str, path: &str) -> Value {
    let url = conduit_local::prometheus::Files::url();
    let text = node_curl(node, &["--globoff", &format!("{url}{path}")]);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// `GET PATH` from a controller's API socket, as JSON.
fn api(socket: &Path, path: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "20", "--unix-socket"])
        .arg(socket)
        .arg(format!("http://conduit{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
}

/// The `# TYPE` of every family a proxy serves.
fn families(node: &str, target: &str) -> BTreeMap<String, String> {
    node_curl(node, &[&format!("http://{target}/metrics")])
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(name, kind)| (name.to_string(), kind.to_string()))
        .collect()
}

/// The rows of `stat deploy -n emojivoto` by name.
fn by_name(rows: &Value) -> BTreeMap<String, Value> {
    rows.as_array()
        .expect("stat rows")
        .iter()
        .map(|r| (r["name"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Where `a` and `b` differ by more than 5% of the larger, for the sample app's servers.
fn disagreements(a: &Value, b: &Value) -> Vec<String> {
    let (a, b) = (by_name(a), by_name(b));
    let mut out = Vec::new();
    for deploy in ["web", "emoji", "voting"] {
        for field in ["request_rate", "success_rate", "latency_ms_p50"] {
            let x = a[deploy][field].as_f64();
            let y = b[deploy][field].as_f64();
            let ok = match (x, y) {
                (Some(x), Some(y)) => (x - y).abs() <= 0.05 * x.abs().max(y.abs()),
                _ => false,
            };
            if !ok {
                out.push(format!("{deploy} {field}: {x:?} vs {y:?}"));
            }
        }
    }
    out
}

#[test]
fn stat_through_a_real_prometheus_agrees_with_the_embedded_store() {
    let runtime = Runtime::new("prometheus");
    let meshed = runtime.meshed_manifest();
    let manifest = meshed.to_str().unwrap();
    runtime.ok(&["local", "up", "--prometheus", "-f", manifest]);
    let status = runtime.status();
    let control_plane = status["control_plane"].as_array().unwrap();
    let prometheus_pid = control_plane
        .iter()
        .find(|c| c["name"] == "prometheus")
        .and_then(|c| c["pid"].as_u64())
        .unwrap_or_else(|| panic!("Prometheus runs in the control plane: {control_plane:?}"));
    let node = runtime.node();

    // The source is chosen when the runtime starts, and kept.
    let other = runtime.conduit(&[
        "local",
        "up",
        "--prometheus-url",
        "http://127.0.0.1:9",
        "-f",
        manifest,
    ]);
    let said = String::from_utf8_lossy(&other.stderr);
    assert!(!other.status.success(), "{said}");
    assert!(
        said.contains("already runs with a Prometheus of its own"),
        "{said}"
    );

    // A second controller over the same pods, with its embedded store: the reference.
    let embedded_dir = runtime.dir.with_extension("embedded");
    std::fs::create_dir_all(&embedded_dir).unwrap();
    std::fs::set_permissions(&embedded_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let embedded_socket = embedded_dir.join("api.sock");
    let controller = Path::new(CONDUIT).with_file_name("conduit-controller");
    let _embedded = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &node])
            .arg(&controller)
            .arg(conduit_api::flags::LOCAL_STATE.arg(runtime.dir.join("state.json").display()))
            .arg(conduit_api::flags::API_SOCKET.arg(embedded_socket.display()))
            .arg(conduit_api::flags::SCRAPE_INTERVAL.arg("5s"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let started = Instant::now();

    // Every proxy scraped, without errors.
    let meshed_pods = status["pods"].as_array().unwrap().len();
    let targets = loop {
        let up = prometheus(&node, "/api/v1/query?query=up{job=\"conduit-proxies\"}");
        let results = up["data"]["result"].as_array().cloned().unwrap_or_default();
        if results.len() == meshed_pods && results.iter().all(|r| r["value"][1] == "1") {
            break results;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "every proxy up in Prometheus: {up}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    let health = prometheus(&node, "/api/v1/targets");
    for target in health["data"]["activeTargets"].as_array().unwrap() {
        assert_eq!(target["health"], "up", "{target}");
        assert_eq!(target["lastError"], "", "{target}");
    }

    // Every family keeps the type the proxy gave it.
    for target in &targets {
        let instance = target["metric"]["instance"].as_str().unwrap();
        let served = families(&node, instance);
        assert!(
            served.values().any(|k| k == "histogram") && served.len() > 5,
            "{instance} serves its families: {served:?}"
        );
        let query = format!(
            "/api/v1/targets/metadata?match_target={{instance=\"{instance}\",job=\"conduit-proxies\"}}"
        );
        let kept: BTreeMap<String, String> = prometheus(&node, &query)["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                let name = m["metric"].as_str().unwrap().to_string();
                (name, m["type"].as_str().unwrap().to_string())
            })
            .collect();
        for (family, kind) in &served {
            assert_eq!(
                kept.get(family),
                Some(kind),
                "{instance}: family {family} is a {kind}; Prometheus kept {kept:?}"
            );
        }
    }

    // The same traffic through both sources, after a minute of it: a window's worth.
    std::thread::sleep(Duration::from_secs(70).saturating_sub(started.elapsed()));
    let stat = "/api/v1/stat?resource=deploy&namespace=emojivoto&window=1m";
    let mut attempts = Vec::new();
    for _ in 0..3 {
        let through_prometheus: Value = serde_json::from_str(&runtime.ok(&[
            "stat",
            "deploy",
            "-n",
            "emojivoto",
            "--window",
            "1m",
            "-o",
            "json",
        ]))
        .unwrap();
        let embedded = api(&embedded_socket, stat);
        let differ = disagreements(&through_prometheus, &embedded);
        if differ.is_empty() {
            attempts.clear();
            break;
        }
        attempts.push(differ);
        std::thread::sleep(Duration::from_secs(5));
    }
    assert!(
        attempts.is_empty(),
        "stat through Prometheus and the embedded store agree within 5%: {attempts:?}"
    );

    // Edges, routes and series read it too.
    let edges = runtime.json(&["edges", "deploy", "-n", "emojivoto", "-o", "json"]);
    for dst in ["emoji", "voting"] {
        let edge = edges
            .iter()
            .find(|e| e["src"] == "web" && e["dst"] == dst)
            .unwrap_or_else(|| panic!("web -> {dst} in {edges:?}"));
        assert!(edge["request_rate"].as_f64().unwrap() > 0.0, "{edge}");
        assert!(!edge["server_ids"].as_array().unwrap().is_empty(), "{edge}");
    }
    let socket = runtime.dir.join("api.sock");
    let routes = api(
        &socket,
        "/api/v1/routes?namespace=emojivoto&deployment=web&to=emoji-svc",
    );
    let default = &routes[routes.as_array().unwrap().len() - 1];
    assert!(
        default["actual_request_rate"].as_f64().unwrap() > 0.0,
        "{routes}"
    );
    let series = api(
        &socket,
        "/api/v1/series?resource=deploy&namespace=emojivoto&name=web&window=1m&step=10s",
    );
    let points = series["points"].as_array().unwrap();
    assert!(points.len() >= 5, "{series}");
    assert!(
        points
            .iter()
            .all(|p| p["request_rate"].as_f64().unwrap() > 0.0),
        "{series}"
    );

    // Pods cannot reach it: it listens on the node namespace's loopback only.
    let node_ip = conduit_local::layout::NODE_IP;
    let port = conduit_local::prometheus::LISTEN.1;
    for addr in [format!("{node_ip}:{port}"), format!("127.0.0.1:{port}")] {
        let url = format!("http://{addr}/api/v1/query?query=up");
        let argv = ["curl", "-sS", "--fail", "--max-time", "5", &url];
        let out = runtime.conduit(&runtime.exec_args("web", &argv));
        // Refused by the kernel (curl: 7), or by the pod's own proxy, which finds nothing
        // listening there (502, curl --fail: 22); never Prometheus' answer.
        let answered = String::from_utf8_lossy(&out.stdout);
        assert!(
            matches!(out.status.code(), Some(7 | 22)) && !answered.contains("resultType"),
            "a pod is refused at {addr}: {:?} {answered} {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A Prometheus that stops answering: a clear error from the CLI in bounded time, a
    // banner in the dashboard that goes when it answers again.
    let dash = dashboard(&runtime);
    let stopped = Stopped::new(prometheus_pid);
    let stalled = runtime.conduit(&["stat", "deploy", "-n", "emojivoto"]);
    let said = String::from_utf8_lossy(&stalled.stderr);
    assert!(!stalled.status.success(), "{said}");
    let expected = "the Prometheus at http://127.0.0.1:9090 did not answer within 5s";
    assert!(said.contains(expected), "{said}");
    let mut browser = KillOnDrop(
        Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/browser/banner.py"
            ))
            .args([
                &dash.url,
                concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/dashboard"),
                expected,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 with playwright (scripts/install-test-deps installs it)"),
    );
    let mut line = String::new();
    let stdout = browser.0.stdout.take().unwrap();
    let mut stdout = std::io::BufReader::new(stdout);
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    drop(stopped);
    let ended = (|| {
        std::io::Write::write_all(browser.0.stdin.as_mut()?, b"go on\n").ok()?;
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).ok()?;
        let mut err = String::new();
        std::io::Read::read_to_string(browser.0.stderr.as_mut()?, &mut err).ok()?;
        Some((browser.0.wait().ok()?, format!("{line}{rest}{err}")))
    })();
    let (status, report) = ended.expect("the browser's report");
    assert!(
        status.success() && report.contains("the banner came and went"),
        "{report}"
    );
    runtime.ok(&["stat", "deploy", "-n", "emojivoto"]);
}

/// A process stopped (`SIGSTOP`) until dropped, so that a failing test does not leave it
/// stopped.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u64) -> Stopped {
        let pid = i32::try_from(pid).unwrap();
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGSTOP) };
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// What Kubernetes' pod discovery makes of the meshed sample app running here: a target
/// per container port of each pod, labelled as its documentation says
/// (`__meta_kubernetes_namespace`, `_pod_name`, `_pod_container_name`,
/// `_pod_container_port_name`, `_pod_container_init`), at the pod's address.
fn pod_discovery(runtime: &Runtime, manifest: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(manifest).unwrap();
    let status = runtime.status();
    let mut targets = Vec::new();
    for doc in conduit_k8s::manifest::parse(&text, "meshed").unwrap() {
        if doc.kind() != Some("Deployment") {
            continue;
        }
        let deployment = doc.name().unwrap().to_string();
        let pod = Runtime::pod(&status, &deployment);
        let spec = &doc.value["spec"]["template"]["spec"];
        for (list, init) in [("initContainers", "true"), ("containers", "false")] {
            for container in spec[list].as_array().into_iter().flatten() {
                for port in container["ports"].as_array().into_iter().flatten() {
                    targets.push(serde_json::json!({
                        "targets": [format!("{}:{}", pod["ip"].as_str().unwrap(), port["containerPort"])],
                        "labels": {
                            "__meta_kubernetes_namespace": pod["namespace"],
                            "__meta_kubernetes_pod_name": pod["name"],
                            "__meta_kubernetes_pod_container_name": container["name"],
                            "__meta_kubernetes_pod_container_port_name": port["name"].as_str().unwrap_or_default(),
                            "__meta_kubernetes_pod_container_init": init,
                        },
                    }));
                }
            }
        }
    }
    targets
}

#[test]
fn the_scrape_configuration_install_emits_keeps_every_proxy_and_nothing_else() {
    let runtime = Runtime::new("scrape-config");
    let meshed = runtime.meshed_manifest();
    runtime.ok(&["local", "up", "-f", meshed.to_str().unwrap()]);
    let node = runtime.node();

    // What `conduit install` emits, with its Kubernetes discovery replaced by a file of
    // the targets that discovery would find: Debian's Prometheus is built without
    // Kubernetes discovery, and no cluster runs here. The relabelling, the job and the
    // scraping are the real Prometheus'.
    let emitted = runtime.ok(&["install", "--prometheus-scrape-config"]);
    let mut config: Value = serde_saphyr::from_str(&emitted).unwrap();
    let job = &mut config["scrape_configs"][0];
    assert_eq!(
        job["kubernetes_sd_configs"],
        serde_json::json!([{ "role": "pod" }])
    );
    let dir = runtime.dir.with_extension("scrape");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let targets = pod_discovery(&runtime, &meshed);
    std::fs::write(
        dir.join("targets.json"),
        Value::from(targets.clone()).to_string(),
    )
    .unwrap();
    let job = job.as_object_mut().unwrap();
    job.remove("kubernetes_sd_configs");
    job.insert(
        "file_sd_configs".into(),
        serde_json::json!([{ "files": [dir.join("targets.json")] }]),
    );
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let check = Command::new("promtool")
        .args(["check", "config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "promtool accepts it: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let _prometheus = KillOnDrop(
        Command::new("ip")
            .args(["netns", "exec", &node, "prometheus"])
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg("--web.listen-address=127.0.0.1:9091")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );

    let pods = runtime.status()["pods"].as_array().unwrap().len();
    let started = Instant::now();
    let (active, dropped) = loop {
        let text = node_curl(&node, &["http://127.0.0.1:9091/api/v1/targets?state=any"]);
        let answer: Value = serde_json::from_str(&text).unwrap_or_default();
        let active = answer["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if active.len() == pods && active.iter().all(|t| t["health"] == "up") {
            let dropped = answer["data"]["droppedTargets"]
                .as_array()
                .cloned()
                .unwrap();
            break (active, dropped);
        }
        let seen: Vec<(&Value, &Value)> = active
            .iter()
            .map(|t| (&t["scrapeUrl"], &t["health"]))
            .collect();
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "a proxy per pod, each up; active targets: {seen:?}"
        );
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        targets.len() > pods,
        "the app's own ports are offered too: {targets:?}"
    );
    assert_eq!(dropped.len(), targets.len() - pods, "{dropped:?}");
    for target in &active {
        let labels = &target["labels"];
        assert_eq!(labels["job"], "conduit-proxies", "{target}");
        assert!(
            target["scrapeUrl"]
                .as_str()
                .unwrap()
                .ends_with(":4191/metrics"),
            "{target}"
        );
        let pod = labels["pod"].as_str().unwrap();
        assert!(
            runtime.status()["pods"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == pod),
            "{target}"
        );
    }
    // The proxies' own labels are kept: their deployments are on their series.
    let query =
        "http://127.0.0.1:9091/api/v1/query?query=count%20by%20(deployment)%20(response_total)";
    let deployments: Value = loop {
        let answer: Value = serde_json::from_str(&node_curl(&node, &[query])).unwrap_or_default();
        let found = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if found.len() >= 3 || started.elapsed() > Duration::from_secs(60) {
            break Value::from(found);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    for deployment in ["web", "emoji", "voting"] {
        assert!(
            deployments
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["metric"]["deployment"] == deployment),
            "{deployment} in {deployments}"
        );
    }
}
