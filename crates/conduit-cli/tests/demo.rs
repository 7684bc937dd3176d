//! `conduit demo`, `stat` and `edges` for real: the meshed sample app on this host, its
//! proxies scraped by the real control plane, and the numbers checked for sense (rates
//! above zero, the doughnut's failures below 100%, percentiles in order). Root only;
//! the workspace's binaries must be built (`cargo test --workspace` does).

mod common;
use common::*;
use conduit_testkit::wait_until;
use serde_json::Value;
use std::{process::Command, time::Duration};

fn row<'a>(rows: &'a [Value], name: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {rows:?}"))
}

#[test]
fn the_demo_shows_golden_metrics_of_the_meshed_sample_app() {
    let demo = Runtime::new("demo");
    let out = demo.ok(&["demo"]);
    assert!(out.contains("$ conduit stat deploy -n emojivoto"), "{out}");
    assert!(out.contains("NAME       MESHED   SUCCESS   RPS"), "{out}");
    for d in ["web", "emoji", "voting", "vote-bot"] {
        assert!(
            out.lines().any(|l| l.starts_with(d) && l.contains("1/1")),
            "{d} meshed in:\n{out}"
        );
    }
    assert!(
        out.contains("conduit local down"),
        "the demo says what to try next"
    );

    // The JSON form has exactly the documented keys, with sensible values.
    let rows = demo.json(&["stat", "deploy", "-n", "emojivoto", "-o", "json"]);
    assert_eq!(rows.len(), 4);
    let keys: Vec<&str> = row(&rows, "web")
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = [
        "effective_success_rate",
        "latency_ms_p50",
        "latency_ms_p95",
        "latency_ms_p99",
        "meshed",
        "name",
        "namespace",
        "request_rate",
        "success_rate",
        "tcp_connections",
        "tls_rate",
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected);
    for name in ["web", "emoji", "voting"] {
        let r = row(&rows, name);
        assert!(r["request_rate"].as_f64().unwrap() > 0.0, "{r}");
        let (p50, p95, p99) = (
            r["latency_ms_p50"].as_f64().unwrap(),
            r["latency_ms_p95"].as_f64().unwrap(),
            r["latency_ms_p99"].as_f64().unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p95 && p95 <= p99, "{r}");
        assert!(r["tcp_connections"].as_u64().unwrap() >= 1, "{r}");
    }
    // The vote-bot and the web are meshed clients: what they saw of the Services in front
    // of web and voting (the bot's keep-alive connection to web-svc is made as the pods
    // start, before discovery knows the Service: its requests are still named by it).
    for name in ["web", "voting"] {
        let r = row(&rows, name);
        assert!(r["effective_success_rate"].as_f64().is_some(), "{r}");
    }
    // Meshed to meshed is mutual TLS (the web also answers plaintext readiness probes).
    assert!(row(&rows, "voting")["tls_rate"].as_f64().unwrap() > 0.9);
    // The bot only calls out: nothing comes in.
    assert!(row(&rows, "vote-bot")["success_rate"].is_null());

    // Votes for :doughnut: fail in the voting service: its success rate drops below 100%
    // while the emoji service stays at 100%.
    let failing = wait_until(Duration::from_secs(90), || {
        let rows = demo.json(&["stat", "deploy", "-n", "emojivoto", "-o", "json"]);
        row(&rows, "voting")["success_rate"]
            .as_f64()
            .is_some_and(|s| s < 1.0)
    });
    assert!(failing, "voting never showed a failure");
    let rows = demo.json(&["stat", "deploy", "-n", "emojivoto", "-o", "json"]);
    assert_eq!(row(&rows, "emoji")["success_rate"], 1.0);

    // Per pod and per namespace.
    let pods = demo.json(&["stat", "pod", "-n", "emojivoto", "-o", "json"]);
    assert_eq!(pods.len(), 4);
    assert!(pods
        .iter()
        .all(|p| p["name"].as_str().unwrap().contains('-')));
    let ns = demo.json(&["stat", "ns", "-A", "-o", "json"]);
    assert_eq!(row(&ns, "emojivoto")["meshed"], "4/4");

    // Who calls whom.
    let edges = demo.json(&["edges", "deploy", "-n", "emojivoto", "-o", "json"]);
    let pairs: Vec<(&str, &str)> = edges
        .iter()
        .map(|e| (e["src"].as_str().unwrap(), e["dst"].as_str().unwrap()))
        .collect();
    for pair in [("vote-bot", "web"), ("web", "emoji"), ("web", "voting")] {
        assert!(pairs.contains(&pair), "{pair:?} missing from {pairs:?}");
    }

    // Tap: live requests of the web, both directions, each with its response and end.
    // One round of the bot is five requests (list, ListAll, vote, FindByShortcode, Vote)
    // and probes come between: twenty hold at least two whole votes wherever they start.
    let out = demo.ok(&[
        "tap",
        "deploy/web",
        "-n",
        "emojivoto",
        "--max",
        "20",
        "-o",
        "json",
    ]);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("tap -o json prints JSON lines"))
        .collect();
    let ends: Vec<&Value> = events.iter().filter(|e| e["type"] == "end").collect();
    assert!(ends.len() >= 20, "{out}");
    for end in &ends {
        for kind in ["request", "response"] {
            assert!(
                events
                    .iter()
                    .any(|e| e["type"] == kind && e["id"] == end["id"]),
                "{kind} of {end} missing:\n{out}"
            );
        }
    }
    let requests: Vec<&Value> = events.iter().filter(|e| e["type"] == "request").collect();
    assert!(
        requests
            .iter()
            .any(|e| e["direction"] == "inbound" && e["src_resource"] == "deploy/vote-bot"),
        "{out}"
    );
    assert!(
        requests.iter().any(|e| e["direction"] == "outbound"
            && e["authority"]
                .as_str()
                .unwrap_or("")
                .starts_with("voting-svc")),
        "{out}"
    );
    let human = demo.ok(&["tap", "deploy/web", "-n", "emojivoto", "--max", "1"]);
    assert!(
        human
            .lines()
            .any(|l| l.starts_with("req id=web-") && l.contains(":method=")),
        "{human}"
    );

    // A failed vote shows its gRPC status in tap.
    let mut tap = Command::new(CONDUIT)
        .args(["tap", "deploy/voting", "-n", "emojivoto", "-o", "json"])
        .env("CONDUIT_LOCAL_DIR", &demo.dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufRead::lines(std::io::BufReader::new(tap.stdout.take().unwrap()));
    let mut saw_failure = false;
    for line in stdout.take(2000) {
        let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if e["type"] == "end" && e["grpc_status"] == 2 {
            saw_failure = true;
            break;
        }
    }
    let _ = tap.kill();
    let _ = tap.wait();
    assert!(saw_failure, "tap never showed a failed (doughnut) vote");

    // Top: the busiest paths over a window.
    let rows = demo.json(&[
        "top",
        "deploy/web",
        "-n",
        "emojivoto",
        "--window",
        "5s",
        "-o",
        "json",
    ]);
    let vote = rows
        .iter()
        .find(|r| r["path"] == "/api/vote" && r["direction"] == "inbound")
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert!(
        vote["requests"].as_u64().unwrap() > 0 && vote["peer"] == "deploy/vote-bot",
        "{vote}"
    );
    assert!(
        rows.iter().any(
            |r| r["path"] == "/emojivoto.v1.VotingService/Vote" && r["direction"] == "outbound"
        ),
        "{rows:?}"
    );
    let out = demo.conduit(&["tap", "deploy/nope", "-n", "emojivoto"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("no pods for deploy/nope in namespace emojivoto"));

    // The API's v1 beside the CLI: namespaces, a chart's series with traffic in it, and
    // the version, as a third party reads them with curl.
    let socket = demo.dir.join("api.sock");
    let api = |path: &str| -> Value {
        let out = Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--fail-with-body",
                "--unix-socket",
            ])
            .arg(&socket)
            .arg(format!("http://localhost{path}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}: {out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let namespaces = api("/api/v1/namespaces");
    assert_eq!(
        namespaces,
        serde_json::json!([{"name": "emojivoto", "pods": 4, "meshed_pods": 4, "services": 3, "inject": false}])
    );
    let series =
        api("/api/v1/series?resource=deploy&name=web&namespace=emojivoto&window=2m&step=10s");
    let points = series["points"].as_array().unwrap();
    assert_eq!(points.len(), 12, "{series}");
    assert!(
        points
            .iter()
            .any(|p| p["request_rate"].as_f64().unwrap() > 0.0
                && p["success_rate"].as_f64().is_some()
                && p["latency_ms_p99"].as_f64().is_some()),
        "the web's chart has points with traffic: {series}"
    );
    let version = demo.ok(&["version"]);
    let expected = format!(
        "Client version: {0}\nServer version: {0}\n",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(version, expected);

    // docs/api.md's rollout gate, run as written: it passes a healthy deployment, stops a
    // failing one, and will not judge one without traffic or that does not exist.
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let gate = doc
        .split_once("<!-- gate.sh")
        .and_then(|(_, rest)| rest.split_once("```bash\n"))
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(script, _)| script.to_string())
        .expect("docs/api.md has the gate script");
    let run_gate = |deploy: &str, min: &str| {
        let out = Command::new("bash")
            .args(["-c", &gate])
            .env("CONDUIT_LOCAL_DIR", &demo.dir)
            .env("DEPLOY", deploy)
            .env("NAMESPACE", "emojivoto")
            .env("MIN_SUCCESS", min)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), said)
    };
    let (code, said) = run_gate("emoji", "0.95");
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("deploy/emoji: success rate 1 over 1m") && said.contains("go on"),
        "{said}"
    );
    let (code, said) = run_gate("voting", "0.9999");
    assert_eq!(code, Some(1), "{said}");
    assert!(said.contains("is below 0.9999: stop the rollout"), "{said}");
    let (code, said) = run_gate("vote-bot", "0.5");
    assert_eq!(code, Some(2), "{said}");
    assert!(said.contains("no requests in the last 1m"), "{said}");
    let (code, said) = run_gate("nope", "0.5");
    assert_ne!(code, Some(0), "{said}");
    assert!(
        said.contains("deploy/nope: no such deploy in namespace emojivoto"),
        "{said}"
    );

    // Bad input gets a clear error and exit 1.
    let out = demo.conduit(&["stat", "deploy", "-n", "emojivoto", "--window", "1h"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("at most 15m"));
}

#[test]
fn version_without_a_control_plane_says_so_and_fails() {
    let dir = std::env::temp_dir().join(format!("conduit-nothing-v-{}", std::process::id()));
    let out = Command::new(CONDUIT)
        .arg("version")
        .env("CONDUIT_LOCAL_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!(
            "Client version: {}\nServer version: unavailable\n",
            env!("CARGO_PKG_VERSION")
        )
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the control plane"), "{err}");
    let client = Command::new(CONDUIT)
        .args(["version", "--client"])
        .env("CONDUIT_LOCAL_DIR", &dir)
        .output()
        .unwrap();
    assert!(client.status.success());
    assert_eq!(
        String::from_utf8_lossy(&client.stdout),
        format!("Client version: {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn stat_without_a_control_plane_says_what_to_do() {
    let dir = std::env::temp_dir().join(format!("conduit-nothing-{}", std::process::id()));
    let out = Command::new(CONDUIT)
        .args(["stat", "deploy"])
        .env("CONDUIT_LOCAL_DIR", &dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach the control plane") && err.contains("conduit local up"),
        "{err}"
    );
}
