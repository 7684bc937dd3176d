//! Server-speaks-first protocols through the mesh without a stall, with a real MariaDB
//! (Debian's server and client): its client connects and waits for the server's greeting,
//! so a proxy that waited for the client's first bytes would hold every first connection
//! for the whole detection timeout (10 s). Root only; the workspace's binaries must be built.

mod common;
use common::*;
use std::time::Duration;

/// MariaDB listening on `port` in a meshed pod behind the Service `db-svc.db`, and a
/// client pod (a sleeper with the `mariadb` client) beside it. The server accepts anyone
/// (`--skip-grant-tables`): what is tested is the path, not MariaDB's authentication. Its
/// data goes to a new directory in `dir`.
fn mariadb_app(port: u16, dir: &std::path::Path) -> String {
    let dir = dir.display();
    let server = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: mariadb, namespace: db}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: mariadb}}}}
  template:
    metadata: {{labels: {{app: mariadb}}}}
    spec:
      containers:
      - name: mariadb
        image: mariadb:10.11
        command:
        - sh
        - -c
        - >-
          d=$(mktemp -d -p {dir}) && mariadb-install-db --datadir=$d/data --user=root --skip-test-db >$d/install.log 2>&1 &&
          exec mariadbd --no-defaults --datadir=$d/data --user=root --skip-grant-tables --skip-log-bin
          --port={port} --bind-address=0.0.0.0 --socket=$d/sock --pid-file=$d/pid
        readinessProbe: {{tcpSocket: {{port: {port}}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Service
metadata: {{name: db-svc, namespace: db}}
spec:
  selector: {{app: mariadb}}
  ports: [{{port: {port}}}]
---
"#
    );
    server + &sleeper_deployment("db", "client")
}

/// `mariadb` in the pod of `deployment` querying `db-svc.db:port`: its answer, and how
/// long the whole client took (connect, greeting, login, query), timed inside the pod.
fn query(rt: &Runtime, deployment: &str, port: u16) -> (String, Duration) {
    let script = format!(
        "a=$(date +%s%N); out=$(mariadb --no-defaults -h db-svc.db -P {port} -u root --skip-ssl \
         --connect-timeout=30 -N -e 'select 6*7') || exit 1; b=$(date +%s%N); echo \"$out $(( (b - a) / 1000 ))\""
    );
    let out = rt.exec(deployment, &["sh", "-c", &script]);
    let (answer, us) = out
        .trim()
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("mariadb failed: {out:?}"));
    let us: u64 = us.parse().unwrap_or_else(|e| panic!("{e}: {out:?}"));
    (answer.to_string(), Duration::from_micros(us))
}

/// On MariaDB's well-known port, opaque by default: a fresh client pod's first query
/// answers at once, through both proxies with mesh TLS.
#[test]
fn mariadb_on_its_default_port_answers_the_first_connection_at_once() {
    let rt = Runtime::new("mariadb");
    let data = rt.dir.with_extension("mariadb");
    std::fs::create_dir_all(&data).unwrap();
    rt.up_meshed(&mariadb_app(3306, &data));
    let (answer, took) = query(&rt, "client", 3306);
    assert_eq!(answer, "42");
    assert!(
        took < Duration::from_secs(1),
        "the first connection took {took:?}: it waited for detection"
    );
    let node = rt.node();
    let metrics = node_curl(
        &node,
        &[&format!("http://{}:4191/metrics", rt.pod_ip("client"))],
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("protocol_detect_total{")
                && l.contains("direction=\"outbound\"")
                && l.contains("decided_by=\"opaque_port\"")),
        "{metrics}"
    );
    let server = node_curl(
        &node,
        &[&format!("http://{}:4191/metrics", rt.pod_ip("mariadb"))],
    );
    assert!(
        server.lines().any(|l| l.starts_with("tcp_open_total{")
            && l.contains("direction=\"inbound\"")
            && l.contains("target_port=\"3306\"")
            && l.contains(
                "client_id=\"default.db.serviceaccount.identity.conduit.cluster.local\""
            )),
        "the client came in over mesh TLS: {server}"
    );
}
