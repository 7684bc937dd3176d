//! Traffic split end to end on the local runtime: a Gateway API HTTPRoute attached to a
//! Service sends 10% of its requests to a canary Service, every request with a header to
//! the canary, and bounds a path with its own timeout. Real pods: two Python HTTP
//! servers, each answering its own name, behind their Services; a meshed client making
//! the requests with Python's http.client (keep-alive, as a real client would: the split
//! is per request, not per connection); both proxies the real ones. Needs root.

mod common;

use common::*;
use conduit_testkit::{require_root, wait_until};
use std::time::Duration;

/// A server that answers every path with `name`, or `/slow` after 2 s.
fn server(name: &str) -> String {
    python_deployment(
        "split",
        name,
        "",
        name,
        &[
            "ports: [{containerPort: 8080}]",
            "readinessProbe: {tcpSocket: {port: 8080}, periodSeconds: 1}",
        ],
        &format!(
            r#"import http.server, time
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path == "/slow":
            time.sleep(2)
        body = b"{name}"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("0.0.0.0", 8080), H).serve_forever()"#
        ),
    )
}

fn manifest() -> String {
    let service = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}-svc, namespace: split}}\nspec:\n  selector: {{app: {name}}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n"
        )
    };
    format!(
        r#"{web}{canary}{web_svc}{canary_svc}apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: web-split, namespace: split}}
spec:
  parentRefs: [{{group: "", kind: Service, name: web-svc, port: 80}}]
  rules:
  - matches: [{{headers: [{{name: x-canary, value: "yes"}}]}}]
    backendRefs: [{{name: canary-svc, port: 80}}]
  - backendRefs:
    - {{name: web-svc, port: 80, weight: 90}}
    - {{name: canary-svc, port: 80, weight: 10}}
  - matches: [{{path: {{type: Exact, value: /slow}}}}]
    timeouts: {{request: 300ms}}
---
{client}"#,
        web = server("web"),
        canary = server("canary"),
        web_svc = service("web"),
        canary_svc = service("canary"),
        client = sleeper_deployment("split", "client"),
    )
}

/// `n` GETs of `path` on one keep-alive connection to web-svc, with `headers`; prints how
/// many each backend answered, and any other status with its proxy error.
const REQUESTS: &str = r#"
import collections, http.client, json, sys
n, path, headers = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
seen = collections.Counter()
conn = http.client.HTTPConnection("web-svc.split", 80, timeout=10)
for _ in range(n):
    conn.request("GET", path, headers=headers)
    rsp = conn.getresponse()
    body = rsp.read().decode()
    key = body if rsp.status == 200 else "%d %s" % (rsp.status, rsp.getheader("conduit-proxy-error"))
    seen[key] += 1
print(json.dumps(seen))
"#;

fn requests(rt: &Runtime, n: u32, path: &str, headers: &str) -> serde_json::Value {
    let out = rt.exec(
        "client",
        &["python3", "-c", REQUESTS, &n.to_string(), path, headers],
    );
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn count(seen: &serde_json::Value, backend: &str) -> u64 {
    seen.get(backend).and_then(|n| n.as_u64()).unwrap_or(0)
}

#[test]
fn an_http_route_splits_by_weight_sends_matching_headers_to_the_canary_and_bounds_its_path() {
    require_root();
    let rt = Runtime::new("split");
    rt.up_meshed(&manifest());
    // Both backends serving (the canary's endpoints known to the client's proxy).
    let ready = wait_until(Duration::from_secs(30), || {
        let plain = requests(&rt, 20, "/", "{}");
        count(&requests(&rt, 1, "/", r#"{"x-canary": "yes"}"#), "canary") == 1
            && count(&plain, "web") + count(&plain, "canary") == 20
    });
    assert!(ready, "both serve: {}", requests(&rt, 10, "/", "{}"));

    // 90/10 over 1,000 requests: the canary's share within 3 points of 10%.
    let seen = requests(&rt, 1000, "/", "{}");
    let (web, canary) = (count(&seen, "web"), count(&seen, "canary"));
    assert_eq!(
        web + canary,
        1000,
        "every request answered by a backend: {seen}"
    );
    assert!(
        (70..=130).contains(&canary),
        "the canary's share is 10% ± 3: {seen}"
    );

    // The header rule takes precedence: every request with it reaches the canary.
    let seen = requests(&rt, 200, "/", r#"{"x-canary": "yes"}"#);
    assert_eq!(count(&seen, "canary"), 200, "{seen}");
    let seen = requests(&rt, 200, "/", r#"{"x-canary": "no"}"#);
    assert!(
        count(&seen, "web") > 140,
        "another value does not match: {seen}"
    );

    // The exact path's rule bounds it, naming itself; its requests go to web-svc itself.
    let seen = requests(&rt, 2, "/slow", "{}");
    let error = "504 the request timeout of HTTPRoute split/web-split rule 2 expired after 300ms: the request did not complete in time";
    let expected = format!("{{\"{error}\": 2}}");
    assert_eq!(
        seen,
        serde_json::from_str::<serde_json::Value>(&expected).unwrap()
    );
}
