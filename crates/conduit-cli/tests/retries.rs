//! Retries end to end on the local runtime: a retryable route hides a backend's failures
//! within the retry budget, a route not marked retryable and a body too large to replay
//! are never retried, and a request that never reached an application is sent elsewhere
//! on any route, profile or not. Real pods: Python HTTP servers in three replicas behind
//! Services, a Python client in a meshed pod, both proxies the real ones. Needs root.

mod common;

use common::*;
use conduit_testkit::{require_root, wait_until};
use serde_json::Value;
use std::time::Duration;

/// Three replicas of a server that writes its pid to `<dir>/<pod>.pid` and answers its
/// pod's name: GETs and POSTs fail (500) one time in five, PUTs always fail; a Service
/// in front, and with `profile`, a ServiceProfile whose `GET /` and `PUT /blob` routes
/// are retryable and whose `POST /orders` route is not; and a client.
fn manifest(dir: &str, profile: bool) -> String {
    let profile = if profile {
        r#"---
apiVersion: conduit.io/v1alpha1
kind: ServiceProfile
metadata: {name: flaky-svc.shop.svc.cluster.local, namespace: shop}
spec:
  routes:
  - name: GET /
    condition: {method: GET, pathRegex: /}
    isRetryable: true
  - name: POST /orders
    condition: {method: POST, pathRegex: /orders}
  - name: PUT /blob
    condition: {method: PUT, pathRegex: /blob}
    isRetryable: true
"#
    } else {
        ""
    };
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: flaky, namespace: shop}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: flaky}}}}
  template:
    metadata: {{labels: {{app: flaky}}}}
    spec:
      containers:
      - name: flaky
        image: python:3
        ports: [{{containerPort: 8080}}]
        readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 5, failureThreshold: 3}}
        command:
        - python3
        - -c
        - |
          import http.server, os, random
          me = os.environ["POD_NAME"]
          open("{dir}/" + me + ".pid", "w").write(str(os.getpid()))
          class H(http.server.BaseHTTPRequestHandler):
              protocol_version = "HTTP/1.1"
              def answer(self, fail):
                  n = int(self.headers.get("content-length") or 0)
                  self.rfile.read(n)
                  body = me.encode()
                  self.send_response(500 if fail else 200)
                  self.send_header("content-length", str(len(body)))
                  self.end_headers()
                  self.wfile.write(body)
              def do_GET(self):
                  self.answer(random.random() < 0.2)
              def do_POST(self):
                  self.answer(random.random() < 0.2)
              def do_PUT(self):
                  self.answer(True)
              def log_message(self, *args):
                  pass
          http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()
---
apiVersion: v1
kind: Service
metadata: {{name: flaky-svc, namespace: shop}}
spec:
  selector: {{app: flaky}}
  ports: [{{port: 80, targetPort: 8080}}]
{profile}---
{client}"#,
        client = sleeper_deployment("shop", "client")
    )
}

/// Sends `METHOD http://flaky-svc.shop/PATH` with a body of SIZE bytes at RATE requests
/// a second (four threads, a new connection each) for SECONDS; prints
/// `{"<status>": count, "retried": n}` as JSON (`retried`: answers that say they took
/// retries; statuses other than 200 and 500 come with the proxy's error).
const CLIENT: &str = r#"
import collections, json, sys, threading, time, urllib.error, urllib.request
method, path, size, rate, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
body = b"x" * size if size else None
start = time.time()
seen, lock = collections.Counter(), threading.Lock()
def run(k):
    i = 0
    while True:
        due = start + (i * 4 + k) / rate
        if due > start + seconds:
            return
        time.sleep(max(0, due - time.time()))
        i += 1
        req = urllib.request.Request("http://flaky-svc.shop" + path, data=body, method=method)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                key, retried = str(r.status), r.headers.get("conduit-proxy-retries")
                r.read()
        except urllib.error.HTTPError as e:
            key, retried = str(e.code), e.headers.get("conduit-proxy-retries")
            if e.code != 500:
                key += " " + e.headers.get("conduit-proxy-error", "")[:60]
        except Exception as e:
            key, retried = "error " + type(e).__name__, None
        with lock:
            seen[key] += 1
            if retried:
                seen["retried"] += 1
threads = [threading.Thread(target=run, args=(k,)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(seen))
"#;

fn send(
    rt: &Runtime,
    method: &str,
    path: &str,
    size: usize,
    rate: u32,
    seconds: u32,
) -> serde_json::Map<String, Value> {
    let args = [
        method.to_string(),
        path.to_string(),
        size.to_string(),
        rate.to_string(),
        seconds.to_string(),
    ];
    let mut argv = vec!["python3", "-c", CLIENT];
    argv.extend(args.iter().map(String::as_str));
    let out = rt.exec("client", &argv);
    match serde_json::from_str(&out) {
        Ok(Value::Object(seen)) => seen,
        _ => panic!("the client printed {out:?}"),
    }
}

fn count(seen: &serde_json::Map<String, Value>, key: &str) -> u64 {
    seen.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn total(seen: &serde_json::Map<String, Value>) -> u64 {
    seen.iter()
        .filter(|(k, _)| *k != "retried")
        .filter_map(|(_, v)| v.as_u64())
        .sum()
}

/// The sum of the client proxy's series of `family` whose labels include all of `labels`.
fn metric(rt: &Runtime, family: &str, labels: &[&str]) -> f64 {
    let text = rt.exec(
        "client",
        &["curl", "-sS", "-m", "10", "http://127.0.0.1:4191/metrics"],
    );
    text.lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The app up, and the directory where each replica writes its pid (it goes with the
/// runtime).
fn up(name: &str, profile: bool) -> (Runtime, std::path::PathBuf) {
    let rt = Runtime::new(name);
    let pids = rt.dir.with_extension("pids");
    std::fs::create_dir_all(&pids).unwrap();
    rt.up_meshed(&manifest(pids.to_str().unwrap(), profile));
    let ready = wait_until(Duration::from_secs(30), || {
        count(&send(&rt, "GET", "/", 0, 20, 1), "200") > 0
            && std::fs::read_dir(&pids).map_or(0, |d| d.count()) == 3
    });
    assert!(ready, "the replicas serve");
    (rt, pids)
}

/// Each replica fails a fifth of GETs: on the retryable route, clients at 100 requests a
/// second see at least 99.5% success, with retries within the default budget (20% plus
/// 10/s: at most 30% of requests here). A POST route not marked retryable is never
/// retried, whatever it answers; a body over 64 KiB is not retried, a small one is.
#[test]
fn a_retryable_route_hides_failures_within_the_budget_and_nothing_else_is_retried() {
    require_root();
    let (rt, _pids) = up("retries", true);

    let seen = send(&rt, "GET", "/", 0, 100, 15);
    let (ok, all) = (count(&seen, "200"), total(&seen));
    assert!(all >= 1400, "too few requests to judge: {seen:?}");
    assert!(
        ok as f64 >= 0.995 * all as f64,
        "{ok} of {all} succeeded: {seen:?}"
    );
    assert!(
        count(&seen, "retried") > 0,
        "answers say they took retries: {seen:?}"
    );
    let retries = metric(&rt, "route_retry_total", &[r#"route="GET /""#]);
    assert!(
        retries > 0.0 && retries <= 0.30 * all as f64,
        "{retries} retries for {all} requests"
    );
    let actual_failures = metric(
        &rt,
        "route_attempt_total",
        &[r#"route="GET /""#, r#"classification="failure""#],
    );
    assert!(
        actual_failures >= 0.1 * all as f64,
        "attempts failed: {actual_failures}"
    );

    // Not retryable: a fifth fail, none retried.
    let seen = send(&rt, "POST", "/orders", 10, 50, 4);
    let failed = count(&seen, "500");
    assert!(failed > 0, "some POSTs fail: {seen:?}");
    assert_eq!(count(&seen, "retried"), 0, "{seen:?}");
    assert_eq!(
        metric(&rt, "route_retry_total", &[r#"route="POST /orders""#]),
        0.0
    );
    assert_eq!(
        metric(&rt, "route_attempt_total", &[r#"route="POST /orders""#]),
        total(&seen) as f64
    );

    // A body too large to replay, on a retryable route that always fails: one attempt.
    let seen = send(&rt, "PUT", "/blob", 100 * 1024, 10, 2);
    assert_eq!(count(&seen, "500"), total(&seen), "{seen:?}");
    assert_eq!(count(&seen, "retried"), 0, "{seen:?}");
    let skipped = metric(
        &rt,
        "route_retry_skipped_total",
        &[r#"route="PUT /blob""#, r#"reason="body""#],
    );
    assert_eq!(skipped, total(&seen) as f64);
    // A small body is retried (until the budget or the limit says no).
    let seen = send(&rt, "PUT", "/blob", 1024, 10, 2);
    assert_eq!(count(&seen, "retried"), total(&seen), "{seen:?}");

    // `conduit routes`: what the clients saw (effective) beside every attempt (actual).
    let row = |rows: &[Value], route: &str| {
        rows.iter()
            .find(|r| r["route"] == route)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let args = [
        "routes",
        "deploy/client",
        "-n",
        "shop",
        "--to",
        "svc/flaky-svc",
        "-o",
        "json",
    ];
    let split = wait_until(Duration::from_secs(60), || {
        let get = row(&rt.json(&args), "GET /");
        let (effective, actual) = (
            get["success_rate"].as_f64(),
            get["actual_success_rate"].as_f64(),
        );
        matches!((effective, actual), (Some(e), Some(a)) if e > 0.99 && a < 0.9)
    });
    let rows = rt.json(&args);
    assert!(split, "effective near 100%, actual near 80%: {rows:?}");
    assert_eq!(
        rows.iter()
            .map(|r| r["route"].as_str().unwrap_or(""))
            .collect::<Vec<_>>(),
        ["GET /", "POST /orders", "PUT /blob", "[default]"],
        "the profile's routes in order, [default] last: {rows:?}"
    );
    let wide = rt.ok(&[
        "routes",
        "deploy/client",
        "-n",
        "shop",
        "--to",
        "svc/flaky-svc",
        "-o",
        "wide",
    ]);
    assert!(
        wide.contains("EFFECTIVE_SUCCESS") && wide.contains("ACTUAL_SUCCESS"),
        "{wide}"
    );
    // `conduit stat -o wide`: the clients' view (effective) above every attempt's.
    let stat = rt.json(&["stat", "deploy", "flaky", "-n", "shop", "-o", "json"]);
    let (effective, actual) = (
        stat[0]["effective_success_rate"].as_f64(),
        stat[0]["success_rate"].as_f64(),
    );
    assert!(
        matches!((effective, actual), (Some(e), Some(a)) if e > a + 0.1),
        "effective well above actual: {stat:?}"
    );
    let wide = rt.ok(&["stat", "deploy", "-n", "shop", "-o", "wide"]);
    assert!(
        wide.contains("EFFECTIVE_SUCCESS   ACTUAL_SUCCESS"),
        "{wide}"
    );
    // The server's side, by the routes of its own Service's profile.
    let inbound = rt.json(&["routes", "deploy/flaky", "-n", "shop", "-o", "json"]);
    let get = row(&inbound, "GET /");
    assert_eq!(get["service"], "flaky-svc.shop", "{inbound:?}");
    assert!(
        get["request_rate"].as_f64().is_some_and(|r| r > 0.0),
        "{inbound:?}"
    );
    assert!(
        get["actual_success_rate"].is_null(),
        "a server's proxy does not retry: {inbound:?}"
    );
}

/// A backend process killed under 200 requests a second, on a Service with no profile at
/// all: its pod's proxy cannot connect to it and says so, and the clients' proxies send
/// those requests to the other replicas, so that none fails for it. (Requests the process
/// was serving when it died may have had effects: only a retryable route may repeat
/// them, so up to one per client thread may fail. Without unsent retries, every request
/// sent to the dead replica until its readiness probe notices fails as refused.)
#[test]
fn a_killed_backend_fails_no_request_even_without_a_profile() {
    require_root();
    let (rt, pids) = up("unsent", false);
    let victim = std::fs::read_dir(pids)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let pid: i32 = std::fs::read_to_string(&victim).unwrap().parse().unwrap();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        // SAFETY: a plain kill(2) of the test's own server process.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    // POSTs fail a fifth of the time by design (500): count only what the kill causes.
    let seen = send(&rt, "POST", "/orders", 10, 200, 8);
    killer.join().unwrap();
    let all = total(&seen);
    assert!(all >= 1400, "too few requests to judge: {seen:?}");
    let refused: u64 = seen
        .iter()
        .filter(|(k, _)| k.contains("refused") || k.starts_with("error"))
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert_eq!(
        refused, 0,
        "requests that never reached an app failed: {seen:?}"
    );
    let lost: u64 = seen
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "200" | "500" | "retried"))
        .filter_map(|(_, v)| v.as_u64())
        .sum();
    assert!(
        lost <= 4,
        "more failed than were in flight at the kill: {seen:?}"
    );
    assert!(
        metric(&rt, "route_retry_total", &[r#"reason="unsent""#]) > 0.0,
        "the refused requests were retried as unsent: {seen:?}"
    );
}
