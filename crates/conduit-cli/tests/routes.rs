//! Routes end to end on the local runtime: a ServiceProfile's routes name the requests in
//! both proxies' metrics, a route's timeout answers 504 (gRPC: DEADLINE_EXCEEDED) long
//! before a slow backend would, and a gRPC route retries the statuses it names. Real pods: a Python HTTP server behind a Service with a profile, curl in a
//! meshed client pod, both proxies the real ones. Needs root.

mod common;

use common::*;
use conduit_testkit::{require_root, wait_until};
use std::time::Duration;

/// A server answering its path after 10 ms, or for `/slow` after 2 s; its Service; the
/// Service's profile; a client.
fn manifest() -> String {
    let server = python_deployment(
        "shop",
        "catalog",
        "",
        "catalog",
        &[
            "ports: [{containerPort: 8080}]",
            "readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}",
        ],
        r#"import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        time.sleep(2 if self.path == "/slow" else 0.01)
        body = self.path.encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()"#,
    );
    let grpc = python_deployment(
        "shop",
        "pricing",
        "",
        "pricing",
        &[
            "ports: [{containerPort: 9090}]",
            "readinessProbe: {tcpSocket: {port: 9090}, periodSeconds: 1}",
        ],
        r#"import grpc, itertools, time
from concurrent import futures
calls = itertools.count()
class H(grpc.GenericRpcHandler):
    def service(self, details):
        method = details.method
        def handle(request, context):
            if method.endswith("/Slow"):
                time.sleep(2)
            if method.endswith("/Flaky"):
                n = next(calls)
                if n % 2 == 0:
                    code = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)[n // 2 % 2]
                    context.abort(code, "every other call fails")
            return b"ok"
        return grpc.unary_unary_rpc_method_handler(handle)
s = grpc.server(futures.ThreadPoolExecutor(8))
s.add_generic_rpc_handlers((H(),))
s.add_insecure_port("0.0.0.0:9090")
s.start()
s.wait_for_termination()"#,
    );
    format!(
        r#"{server}{grpc}apiVersion: v1
kind: Service
metadata: {{name: pricing-svc, namespace: shop}}
spec:
  selector: {{app: pricing}}
  ports: [{{port: 9090, targetPort: 9090}}]
---
apiVersion: conduit.io/v1alpha1
kind: ServiceProfile
metadata: {{name: pricing-svc.shop.svc.cluster.local, namespace: shop}}
spec:
  routes:
  - name: POST /shop.Pricing/Slow
    condition: {{method: POST, pathRegex: /shop\.Pricing/Slow}}
    timeout: 300ms
  - name: POST /shop.Pricing/Flaky
    condition: {{method: POST, pathRegex: /shop\.Pricing/Flaky}}
    isRetryable: true
    retryGrpcCodes: [UNAVAILABLE, RESOURCE_EXHAUSTED]
---
apiVersion: v1
kind: Service
metadata: {{name: catalog-svc, namespace: shop}}
spec:
  selector: {{app: catalog}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: conduit.io/v1alpha1
kind: ServiceProfile
metadata: {{name: catalog-svc.shop.svc.cluster.local, namespace: shop}}
spec:
  routes:
  - name: GET /items
    condition: {{method: GET, pathRegex: "/items(/[^/]+)?"}}
  - name: GET /slow
    condition: {{method: GET, pathRegex: /slow}}
    timeout: 300ms
---
{client}"#,
        client = sleeper_deployment("shop", "client")
    )
}

/// `curl` in the client: status, seconds taken, and the proxy's error header.
fn get(rt: &Runtime, path: &str) -> (u16, f64, String) {
    let url = format!("http://catalog-svc.shop{path}");
    let out = rt.exec(
        "client",
        &[
            "curl",
            "-sS",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total} %header{conduit-proxy-error}",
            &url,
        ],
    );
    let mut words = out.splitn(3, ' ');
    let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let seconds = words
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(f64::NAN);
    (
        status,
        seconds,
        words.next().unwrap_or("").trim().to_string(),
    )
}

/// A unary gRPC call from the client with grpcio (10 s deadline of its own): the status's
/// name and details, and the seconds it took.
const GRPC_CALL: &str = r#"
import grpc, sys, time
ch = grpc.insecure_channel("pricing-svc.shop:9090")
start = time.time()
try:
    ch.unary_unary(sys.argv[1], request_serializer=lambda x: x, response_deserializer=lambda x: x)(b"", timeout=10)
    print("OK", time.time() - start)
except grpc.RpcError as e:
    print(e.code().name, time.time() - start, e.details())
"#;

fn metrics(rt: &Runtime, pod: &str) -> String {
    rt.exec(
        pod,
        &["curl", "-sS", "-m", "10", "http://127.0.0.1:4191/metrics"],
    )
}

/// The value of the series of `family` whose labels include every one of `labels`.
fn value(metrics: &str, family: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn profile_routes_label_requests_and_bound_them_with_their_timeouts() {
    require_root();
    let rt = Runtime::new("routes");
    rt.up_meshed(&manifest());
    let served = wait_until(Duration::from_secs(30), || get(&rt, "/items/1").0 == 200);
    assert!(served, "the catalog serves: {:?}", get(&rt, "/items/1"));

    for path in ["/items", "/items/2", "/other"] {
        assert_eq!(get(&rt, path).0, 200, "{path}");
    }
    let client = metrics(&rt, "client");
    let outbound = |route: &str| {
        value(
            &client,
            "request_total",
            &[
                r#"direction="outbound""#,
                r#"authority="catalog-svc.shop""#,
                &format!(r#"route="{route}""#),
            ],
        )
    };
    assert!(outbound("GET /items").is_some_and(|n| n >= 3.0), "{client}");
    assert!(outbound("[default]").is_some_and(|n| n >= 1.0), "{client}");
    // The server's proxy names routes from its own Service's profile.
    let server = metrics(&rt, "catalog");
    let inbound = value(
        &server,
        "request_total",
        &[r#"direction="inbound""#, r#"route="GET /items""#],
    );
    assert!(inbound.is_some_and(|n| n >= 3.0), "{server}");

    // A 2 s backend behind a 300 ms route timeout: 504, saying which route and timeout.
    let mut times = Vec::new();
    for _ in 0..3 {
        let (status, seconds, error) = get(&rt, "/slow");
        assert_eq!(status, 504, "{error}");
        assert_eq!(
            error,
            r#"the timeout of route "GET /slow" expired after 300ms: the request did not complete in time"#
        );
        assert!(seconds < 1.9, "answered before the backend: {seconds} s");
        times.push(seconds);
    }
    times.sort_by(f64::total_cmp);
    assert!(times[1] < 0.6, "504 within 600 ms (median): {times:?}");
    let client = metrics(&rt, "client");
    let timeouts = value(
        &client,
        "response_total",
        &[r#"route="GET /slow""#, r#"status_code="504""#],
    );
    assert!(timeouts.is_some_and(|n| n >= 3.0), "{client}");
    assert!(
        value(
            &client,
            "proxy_errors_total",
            &[r#"direction="outbound""#, r#"error="request_timeout""#]
        )
        .is_some_and(|n| n >= 3.0),
        "{client}"
    );

    // gRPC: the route's timeout answers DEADLINE_EXCEEDED, long before the client's own.
    let call = |method: &str| rt.exec("client", &["python3", "-c", GRPC_CALL, method]);
    let ok = wait_until(Duration::from_secs(30), || {
        call("/shop.Pricing/Quote").starts_with("OK")
    });
    assert!(
        ok,
        "the pricing service answers: {}",
        call("/shop.Pricing/Quote")
    );
    let answer = call("/shop.Pricing/Slow");
    let words: Vec<&str> = answer.splitn(3, ' ').collect();
    assert_eq!(words[0], "DEADLINE_EXCEEDED", "{answer}");
    let seconds: f64 = words[1].parse().unwrap_or(f64::NAN);
    assert!(seconds < 1.9, "answered before the backend: {answer}");
    assert!(
        words[2].contains(r#"the timeout of route "POST /shop.Pricing/Slow" expired after 300ms"#),
        "{answer}"
    );
    // Every other call fails, UNAVAILABLE or RESOURCE_EXHAUSTED: the route retries both.
    for i in 0..8 {
        let answer = call("/shop.Pricing/Flaky");
        assert!(answer.starts_with("OK"), "call {i}: {answer}");
    }
}
