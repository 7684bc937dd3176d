//! Authorization policy on the local runtime, for real: Servers and AuthorizationPolicies
//! from the same YAML as the app let one ServiceAccount in and keep another out, for HTTP
//! (403), gRPC (PERMISSION_DENIED, from grpcio) and opaque TCP (closed); every denial is
//! counted and shows in tap; the default policy lets unmeshed clients in, and
//! `all-authenticated` keeps them out while probes still pass. Root only; the workspace's
//! binaries must be built.

mod common;
use common::*;
use conduit_testkit::wait_until;
use serde_json::Value;
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

const POLICY: &str = r#"
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto}
spec:
  podSelector: {matchLabels: {app: voting}}
  port: grpc
  proxyProtocol: gRPC
---
apiVersion: policy.conduit.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-from-web, namespace: emojivoto}
spec:
  targetRef: {kind: Server, name: voting-grpc}
  allow:
  - serviceAccount: {name: web}
---
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: web-http, namespace: emojivoto}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
---
apiVersion: policy.conduit.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-from-bot, namespace: emojivoto}
spec:
  targetRef: {kind: Server, name: web-http}
  allow:
  - serviceAccount: {name: vote-bot}
---
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: web-echo, namespace: emojivoto}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 7000
  proxyProtocol: opaque
---
apiVersion: policy.conduit.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: echo-from-emoji, namespace: emojivoto}
spec:
  targetRef: {kind: Server, name: web-echo}
  allow:
  - serviceAccount: {name: emoji}
"#;

/// Brings up the meshed sample app with `extra` applied alongside it.
fn up_with(rt: &Runtime, extra: &str) -> PathBuf {
    let policy = rt.dir.with_extension("policy.yml");
    std::fs::write(&policy, extra).unwrap();
    rt.ok(&[
        "local",
        "up",
        "-f",
        rt.meshed_manifest().to_str().unwrap(),
        "-f",
        policy.to_str().unwrap(),
    ]);
    policy
}

/// `curl` from the node (an unmeshed client): the response head.
fn node_head(node: &str, url: &str) -> String {
    node_curl(node, &["-D", "-", "-o", "/dev/null", url])
}

/// `curl` from the vote bot's pod (a meshed client, through its proxy): the response head.
fn bot_curl(rt: &Runtime, url: &str) -> String {
    rt.exec(
        "vote-bot",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-D",
            "-",
            "-o",
            "/dev/null",
            url,
        ],
    )
}

fn proxy_metrics(node: &str, ip: &str) -> String {
    node_curl(node, &[&format!("http://{ip}:4191/metrics")])
}

fn counter(metrics: &str, prefix: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

const GRPC_CALL: &str = r#"
import grpc, sys
ch = grpc.insecure_channel(sys.argv[1])
try:
    ch.unary_unary(sys.argv[2], request_serializer=lambda x: x, response_deserializer=lambda x: x)(b"", timeout=10)
    print("OK")
except grpc.RpcError as e:
    print(e.code().name, e.details())
"#;

#[test]
fn servers_and_policies_let_one_service_account_in_and_keep_others_out() {
    let rt = Runtime::new("policy");
    up_with(&rt, POLICY);
    let node = rt.node();
    let status = rt.status();
    let (web_ip, voting_ip) = (rt.pod_ip("web"), rt.pod_ip("voting"));

    // All pods became ready: the runtime's probes pass policy.
    assert!(
        status["pods"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["ready"] == true),
        "{status}"
    );

    // HTTP: vote-bot's ServiceAccount is allowed into the web...
    let answer = bot_curl(&rt, "http://web-svc.emojivoto/api/list");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // ...an unmeshed client is not, and is told why.
    let denied = node_head(&node, &format!("http://{web_ip}:8080/api/list"));
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert!(
        denied.contains("conduit-proxy-error: forbidden by policy: unauthenticated client 198.18.0.1 (no mesh TLS) is not allowed by any AuthorizationPolicy of Server emojivoto/web-http"),
        "{denied}"
    );

    // gRPC: the web's votes reach voting, but the vote bot calling voting directly gets
    // PERMISSION_DENIED from its own grpcio client.
    let answer = rt.exec(
        "vote-bot",
        &[
            "python3",
            "-c",
            GRPC_CALL,
            "voting-svc.emojivoto:8080",
            "/emojivoto.v1.VotingService/Results",
        ],
    );
    assert!(
        answer.starts_with("PERMISSION_DENIED forbidden by policy: client vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local"),
        "{answer}"
    );
    let web_calls = || {
        counter(
            &proxy_metrics(&node, &voting_ip),
            "response_total{namespace=\"emojivoto\",deployment=\"voting\"",
        )
    };
    let before = web_calls();
    assert!(
        wait_until(Duration::from_secs(20), || web_calls() > before + 3.0),
        "the web's calls keep reaching voting"
    );
    let voting_metrics = proxy_metrics(&node, &voting_ip);
    assert!(
        voting_metrics
            .lines()
            .any(|l| l.contains("direction=\"inbound\"")
                && l.contains("classification=\"success\"")
                && l.contains(
                    "client_id=\"web.emojivoto.serviceaccount.identity.conduit.cluster.local\""
                )),
        "{voting_metrics}"
    );
    assert!(
        counter(
            &voting_metrics,
            "inbound_http_authz_deny_total{namespace=\"emojivoto\",deployment=\"voting\",pod="
        ) >= 1.0
            && voting_metrics.contains("srv_name=\"emojivoto/voting-grpc\""),
        "{voting_metrics}"
    );

    // Opaque TCP, on a port its Server declares opaque (so the inbound proxy reads no
    // protocol): the emoji service's proxy gets through over mesh TLS and is echoed; the
    // vote bot's connection is closed without an answer.
    let mut echo_server = rt.spawn_in("web", &["python3", "-c", ECHO_SERVER_7000]);
    std::thread::sleep(Duration::from_millis(500));
    let client = format!(
        "import socket\nc=socket.create_connection(('{web_ip}',7000),timeout=10)\nc.sendall(b'knock:knock')\nprint(repr(c.recv(100)))\n"
    );
    let got = rt.exec("emoji", &["python3", "-c", &client]);
    assert_eq!(got.trim(), "b'knock:knock'", "echoed to the allowed client");
    let got = rt.exec("vote-bot", &["python3", "-c", &client]);
    assert_eq!(got.trim(), "b''", "closed, with nothing echoed");
    let web_metrics = proxy_metrics(&node, &web_ip);
    assert!(
        web_metrics
            .lines()
            .any(|l| l.starts_with("inbound_tcp_authz_deny_total{")
                && l.contains("srv_name=\"emojivoto/web-echo\"")),
        "{web_metrics}"
    );
    assert!(
        web_metrics
            .lines()
            .any(|l| l.starts_with("inbound_http_authz_deny_total{")
                && l.contains("srv_name=\"emojivoto/web-http\"")),
        "{web_metrics}"
    );

    // Tap shows both kinds of denial: a request that ended in 403 with the proxy's
    // reason, and a TCP connection kept out, with the client's identity.
    let mut tap = KillOnDrop(
        Command::new(CONDUIT)
            .args(["tap", "deploy/web", "-n", "emojivoto", "-o", "json"])
            .env("CONDUIT_LOCAL_DIR", &rt.dir)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = std::io::BufRead::lines(std::io::BufReader::new(tap.0.stdout.take().unwrap()));
    let url = format!("http://{web_ip}:8080/api/denied-for-tap");
    let done = std::sync::atomic::AtomicBool::new(false);
    let (denied_request, denied_connection) = std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..20 {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                node_head(&node, &url);
                rt.exec("vote-bot", &["python3", "-c", &client]);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        let (mut request, mut connection) = (None, None);
        for line in lines.take(5000) {
            let e: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if e["type"] == "end"
                && e["proxy_error"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("forbidden by policy"))
            {
                request = Some(e);
            } else if e["type"] == "denied" {
                connection = Some(e);
            }
            if request.is_some() && connection.is_some() {
                break;
            }
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        drop(tap);
        (request, connection)
    });
    let _ = echo_server.kill();
    let _ = echo_server.wait();
    let denied_request = denied_request.expect("tap showed a denied request");
    assert_eq!(
        denied_request["dst"],
        format!("{web_ip}:8080"),
        "{denied_request}"
    );
    let denied_connection = denied_connection.expect("tap showed a denied connection");
    assert_eq!(
        (
            denied_connection["dst"].as_str(),
            denied_connection["src_resource"].as_str(),
            denied_connection["client_id"].as_str(),
        ),
        (
            Some(format!("{web_ip}:7000").as_str()),
            Some("deploy/vote-bot"),
            Some("vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local")
        ),
        "{denied_connection}"
    );
    assert!(
        denied_connection["proxy_error"]
            .as_str()
            .is_some_and(|r| r.contains("emojivoto/web-echo")),
        "{denied_connection}"
    );
}

#[test]
fn all_authenticated_keeps_unmeshed_clients_out_and_the_default_lets_them_in() {
    // The default policy first: an unmeshed client gets in.
    let rt = Runtime::new("default-policy");
    let policy: PathBuf = up_with(
        &rt,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: emojivoto}\n",
    );
    let (node, web_ip) = (rt.node(), rt.pod_ip("web"));
    let open = node_head(&node, &format!("http://{web_ip}:8080/api/list"));
    assert!(open.starts_with("HTTP/1.1 200"), "{open}");

    // The namespace says all-authenticated: the same client is kept out, meshed ones
    // are not, and the probes still pass.
    std::fs::write(
        &policy,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: emojivoto\n  annotations: {config.conduit.io/default-inbound-policy: all-authenticated}\n",
    )
    .unwrap();
    rt.ok(&["local", "up", "-f", Path::new(&policy).to_str().unwrap()]);
    let kept_out = wait_until(Duration::from_secs(20), || {
        node_head(&node, &format!("http://{web_ip}:8080/api/list")).starts_with("HTTP/1.1 403")
    });
    assert!(
        kept_out,
        "{}",
        node_head(&node, &format!("http://{web_ip}:8080/api/list"))
    );
    let denied = node_head(&node, &format!("http://{web_ip}:8080/api/list"));
    assert!(
        denied.contains("by the default policy all-authenticated"),
        "{denied}"
    );
    let answer = bot_curl(&rt, "http://web-svc.emojivoto/api/list");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    std::thread::sleep(Duration::from_secs(3));
    let status = rt.status();
    assert!(
        status["pods"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["ready"] == true),
        "probes pass under all-authenticated: {status}"
    );
}
