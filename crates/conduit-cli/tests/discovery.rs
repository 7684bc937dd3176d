//! Discovery and balancing for real: the meshed sample app with two voting pods. The web
//! keeps one HTTP/2 connection to the voting Service, which DNAT alone would pin to one
//! pod; its proxy balances each request over both. Killing the control plane while traffic
//! flows loses no request to known endpoints, and the restarted control plane rebuilds its
//! state. Root only; the workspace's binaries must be built.

mod common;
use common::*;
use conduit_testkit::wait_until;
use serde_json::Value;
use std::{process::Command, time::Duration};

fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| {
            l.starts_with(name)
                && labels
                    .iter()
                    .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

fn pods_of<'a>(status: &'a Value, deployment: &str) -> Vec<&'a Value> {
    status["pods"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["deployment"] == deployment)
        .collect()
}

fn proxy_metrics(rt: &Runtime, pod: &Value) -> String {
    let (ns, name) = (
        pod["namespace"].as_str().unwrap(),
        pod["name"].as_str().unwrap(),
    );
    String::from_utf8_lossy(
        &rt.conduit(&[
            "local",
            "exec",
            "-n",
            ns,
            name,
            "--",
            "curl",
            "-sS",
            "http://127.0.0.1:4191/metrics",
        ])
        .stdout,
    )
    .into_owned()
}

#[test]
fn requests_are_balanced_per_request_and_survive_the_control_plane() {
    let rt = Runtime::new("balance");
    let text = std::fs::read_to_string(manifest()).unwrap();
    let at = text
        .find("kind: Deployment\nmetadata:\n  name: voting\n")
        .unwrap();
    let replicas = at + text[at..].find("replicas: 1").unwrap();
    let two_voting = format!(
        "{}replicas: 2{}",
        &text[..replicas],
        &text[replicas + "replicas: 1".len()..]
    );
    let plain = rt.dir.with_extension("two.yml");
    std::fs::write(&plain, two_voting).unwrap();
    let out = Command::new(CONDUIT)
        .arg("inject")
        .arg(&plain)
        .output()
        .unwrap();
    let meshed = rt.dir.with_extension("two-meshed.yml");
    std::fs::write(&meshed, &out.stdout).unwrap();
    rt.ok(&["local", "up", "-f", meshed.to_str().unwrap()]);

    let status = rt.status();
    let voting = pods_of(&status, "voting");
    let web = pods_of(&status, "web")[0].clone();
    assert_eq!(voting.len(), 2);
    let both_serve = wait_until(Duration::from_secs(60), || {
        voting.iter().all(|p| {
            metric(
                &proxy_metrics(&rt, p),
                "request_total",
                &[("direction", "inbound")],
            ) >= 3.0
        })
    });
    assert!(
        both_serve,
        "both voting pods should serve requests:\n{}\n{}",
        proxy_metrics(&rt, voting[0]),
        proxy_metrics(&rt, voting[1])
    );
    // The web's proxy connects to the pods themselves (their workload, as discovery
    // names it), never through the virtual IP (an endpoint discovery does not know).
    let web_metrics = proxy_metrics(&rt, &web);
    let to_voting = [
        ("peer", "dst"),
        ("target_port", "8080"),
        ("dst_workload", "voting.emojivoto"),
    ];
    assert!(
        metric(&web_metrics, "tcp_open_total", &to_voting) >= 2.0,
        "{web_metrics}"
    );
    assert!(
        !web_metrics.contains(r#"peer="dst",target_port="8080",dst_workload="unknown""#),
        "{web_metrics}"
    );

    // Kill the control plane while the bot keeps voting.
    let controller = &rt.status()["control_plane"][0];
    let pid = controller["pid"].as_i64().unwrap() as i32;
    // Requests the voting pods have served, counted by their own proxies.
    let served = || -> f64 {
        voting
            .iter()
            .map(|p| {
                metric(
                    &proxy_metrics(&rt, p),
                    "request_total",
                    &[("direction", "inbound")],
                )
            })
            .sum()
    };
    let served_before = served();
    let errors_before = metric(&proxy_metrics(&rt, &web), "proxy_errors_total", &[]);
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_secs(5));
    let served_after = served();
    assert!(
        served_after > served_before + 5.0,
        "traffic kept flowing: {served_before} -> {served_after}"
    );
    let web_after = proxy_metrics(&rt, &web);
    assert_eq!(
        metric(&web_after, "proxy_errors_total", &[]),
        errors_before,
        "no request failed in the proxy:\n{web_after}"
    );
    assert_eq!(
        metric(
            &web_after,
            "response_total",
            &[("direction", "outbound"), ("status_code", "502")]
        ),
        0.0,
        "{web_after}"
    );

    // The supervisor restarted it, and it rebuilt its state: fresh numbers for every pod.
    let restarted = wait_until(Duration::from_secs(30), || {
        let s = rt.status();
        s["control_plane"][0]["restarts"] == 1 && s["control_plane"][0]["running"] == true
    });
    assert!(restarted, "{}", rt.status());
    let rebuilt = wait_until(Duration::from_secs(60), || {
        let rows = rt.json(&[
            "stat",
            "pod",
            "-n",
            "emojivoto",
            "-o",
            "json",
            "--window",
            "30s",
        ]);
        rows.iter()
            .filter(|r| r["request_rate"].as_f64().unwrap_or(0.0) > 0.0)
            .count()
            >= 4
    });
    assert!(
        rebuilt,
        "stat after the restart: {}",
        rt.ok(&["stat", "pod", "-n", "emojivoto"])
    );

    // Scale voting down to one pod while traffic flows: the removed endpoint drains, and
    // no request fails because of it (only the doughnut's own gRPC errors remain).
    let web_before = proxy_metrics(&rt, &web);
    rt.ok(&["local", "up", "-f", rt.meshed_manifest().to_str().unwrap()]);
    let one_left = wait_until(Duration::from_secs(30), || {
        pods_of(&rt.status(), "voting").len() == 1
    });
    assert!(one_left, "{}", rt.status());
    std::thread::sleep(Duration::from_secs(5));
    let web_after = proxy_metrics(&rt, &web);
    let to_voting = [
        ("direction", "outbound"),
        ("authority", "voting-svc.emojivoto:8080"),
    ];
    let grew = metric(&web_after, "response_total", &to_voting)
        - metric(&web_before, "response_total", &to_voting);
    assert!(grew > 5.0, "votes kept flowing: {grew}");
    let failed = |m: &str| {
        metric(
            m,
            "response_total",
            &[
                ("direction", "outbound"),
                ("authority", "voting-svc.emojivoto:8080"),
                ("classification", "failure"),
            ],
        ) - metric(
            m,
            "response_total",
            &[
                ("direction", "outbound"),
                ("authority", "voting-svc.emojivoto:8080"),
                ("grpc_status", "2"),
            ],
        )
    };
    assert_eq!(
        failed(&web_after),
        failed(&web_before),
        "only doughnut votes failed:\n{web_after}"
    );
    assert_eq!(
        metric(&web_after, "proxy_errors_total", &[]),
        metric(&web_before, "proxy_errors_total", &[]),
        "{web_after}"
    );
    let _ = std::fs::remove_file(plain);
    let _ = std::fs::remove_file(meshed);
}

/// Opaque TCP to a Service's virtual IP is balanced the same way: the client's proxy
/// connects to the pod behind it, never to the virtual IP.
#[test]
fn opaque_tcp_to_a_service_goes_to_its_pods() {
    let rt = Runtime::new("opaque");
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis, namespace: cache}
spec:
  replicas: 1
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
      - name: redis
        image: redis:7
        command: ["redis-server", "--port", "6379", "--save", "", "--protected-mode", "no"]
        readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: redis-svc, namespace: cache}
spec:
  selector: {app: redis}
  ports: [{port: 6379}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: client, namespace: cache}
spec:
  replicas: 1
  selector: {matchLabels: {app: client}}
  template:
    metadata: {labels: {app: client}}
    spec:
      containers:
      - {name: client, image: busybox, command: ["sleep", "3600"]}
"#;
    let plain = rt.dir.with_extension("redis.yml");
    std::fs::write(&plain, manifest).unwrap();
    let out = Command::new(CONDUIT)
        .arg("inject")
        .arg(&plain)
        .output()
        .unwrap();
    let meshed = rt.dir.with_extension("redis-meshed.yml");
    std::fs::write(&meshed, &out.stdout).unwrap();
    rt.ok(&["local", "up", "-f", meshed.to_str().unwrap()]);

    let status = rt.status();
    let client = pods_of(&status, "client")[0].clone();
    let name = client["name"].as_str().unwrap().to_string();
    let set = || {
        let answer = rt.conduit(&[
            "local",
            "exec",
            "-n",
            "cache",
            &name,
            "--",
            "redis-cli",
            "-h",
            "redis-svc",
            "SET",
            "k",
            "v",
        ]);
        assert_eq!(
            String::from_utf8_lossy(&answer.stdout).trim(),
            "OK",
            "{answer:?}"
        );
    };
    // Upstream connections name the workload discovery says serves the endpoint: the
    // pod's Deployment, or `unknown` for the virtual IP itself.
    let (to_pod, to_vip) = ("redis.cache", "unknown");
    let opened = |to: &str| {
        metric(
            &proxy_metrics(&rt, &client),
            "tcp_open_total",
            &[
                ("direction", "outbound"),
                ("peer", "dst"),
                ("target_port", "6379"),
                ("dst_workload", to),
            ],
        )
    };
    // Right after `up` the control plane may not have seen the endpoint yet, and a first
    // connection then goes to the virtual IP (kube-proxy style); once it has, every
    // connection goes to the pod.
    let routed = wait_until(Duration::from_secs(20), || {
        set();
        opened(to_pod) >= 1.0
    });
    assert!(routed, "{}", proxy_metrics(&rt, &client));
    let (pod_before, vip_before) = (opened(to_pod), opened(to_vip));
    for _ in 0..3 {
        set();
    }
    assert_eq!(
        opened(to_pod),
        pod_before + 3.0,
        "{}",
        proxy_metrics(&rt, &client)
    );
    assert_eq!(
        opened(to_vip),
        vip_before,
        "{}",
        proxy_metrics(&rt, &client)
    );
    // The client's side of each connection names the Service it dialled.
    assert!(
        metric(
            &proxy_metrics(&rt, &client),
            "tcp_open_total",
            &[
                ("direction", "outbound"),
                ("peer", "src"),
                ("target_port", "6379"),
                ("dst_service", "redis-svc.cache"),
            ],
        ) >= 3.0,
        "{}",
        proxy_metrics(&rt, &client)
    );
    let _ = std::fs::remove_file(plain);
    let _ = std::fs::remove_file(meshed);
}
