//! Server-speaks-first protocols through the mesh without a stall, with a real MariaDB
//! (Debian's server and client): its client connects and waits for the server's greeting,
//! so a proxy that waited for the client's first bytes would hold every first connection
//! for the whole detection timeout (10 s). Root only; the workspace's binaries must be built.

mod common;
use common::*;
use conduit_testkit::wait_until;
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
    server + &CLIENTS.map(|c| sleeper_deployment("db", c)).concat()
}

/// The client pods, each with its own proxy: a first, and fresh ones that come later.
const CLIENTS: [&str; 3] = ["client", "client-2", "client-3"];

/// Brings up [`mariadb_app`] on `port`, its data beside the runtime's directory.
fn up_mariadb(rt: &Runtime, port: u16) {
    let data = rt.dir.with_extension("mariadb");
    std::fs::create_dir_all(&data).unwrap();
    rt.up_meshed(&mariadb_app(port, &data));
    // The TCP readiness probe is answered by the pod's proxy as soon as it runs; MariaDB
    // itself listens once its data directory is made.
    assert!(
        wait_until(Duration::from_secs(60), || rt.listening("mariadb", port)),
        "MariaDB never listened on {port}"
    );
}

/// Asserts that the outbound proxy of `deployment`'s pod decided a connection's protocol
/// by `decided_by` (`protocol_detect_total`'s label).
fn assert_outbound_decided_by(rt: &Runtime, deployment: &str, decided_by: &str) {
    let url = format!("http://{}:4191/metrics", rt.pod_ip(deployment));
    let metrics = node_curl(&rt.node(), &[&url]);
    let label = format!("decided_by=\"{decided_by}\"");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("protocol_detect_total{")
                && l.contains("direction=\"outbound\"")
                && l.contains(&label)),
        "{metrics}"
    );
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
    up_mariadb(&rt, 3306);
    let (answer, took) = query(&rt, "client", 3306);
    assert_eq!(answer, "42");
    assert!(
        took < Duration::from_secs(1),
        "the first connection took {took:?}: it waited for detection"
    );
    assert_outbound_decided_by(&rt, "client", "opaque_port");
    let node = rt.node();
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

/// On a port no list names, the first client pod's proxy waits out detection once, learns
/// that the server speaks first and tells the controller, which hands it to every proxy
/// asking about that Service port: a fresh client pod's first query answers at once. A
/// client that speaks first there (curl) makes its proxy forget the port, and the
/// controller with it.
#[test]
fn a_learned_server_first_port_is_known_to_a_fresh_client_pod() {
    let rt = Runtime::new("mariadb-learned");
    up_mariadb(&rt, 13306);
    let controller_log =
        || std::fs::read_to_string(rt.dir.join("logs/conduit_controller.log")).unwrap_or_default();
    let reported = |server_first: bool| {
        let line = format!("server_first={server_first}");
        move || {
            controller_log().lines().any(|l| {
                l.contains("a proxy reported a server-speaks-first port")
                    && l.contains(&line)
                    && l.contains("db-svc.db:13306")
            })
        }
    };

    let (answer, took) = query(&rt, "client", 13306);
    assert_eq!(answer, "42");
    assert!(
        took >= Duration::from_secs(5),
        "the first client pod waits out detection ({took:?}): nothing knew the port yet"
    );
    assert!(
        wait_until(Duration::from_secs(10), reported(true)),
        "the client's proxy reported the port: {}",
        controller_log()
    );

    // Only a proxy that proves its identity reports: an outsider's word (grpcio without
    // a certificate, saying a client spoke first there) is refused and changes nothing.
    let hosts = rt.exec("client", &["getent", "hosts", "db-svc.db"]);
    let vip = hosts
        .split_whitespace()
        .next()
        .expect("the Service's virtual IP");
    let vip_port = format!("{vip}:13306");
    let outsider = rt.control_plane_call(
        "client",
        "/conduit.destination.v1.Destination/ReportServerFirst",
        false,
        None,
        &[&vip_port],
    );
    assert!(outsider.starts_with("UNAUTHENTICATED"), "{outsider}");

    let (answer, took) = query(&rt, "client-2", 13306);
    assert_eq!(answer, "42");
    assert!(
        took < Duration::from_secs(1),
        "a fresh client pod's first connection took {took:?}"
    );
    assert_outbound_decided_by(&rt, "client-2", "server_first_port");

    // An HTTP client speaks first on the port: client-2's proxy forgets it, and tells.
    let _ = rt.exec(
        "client-2",
        &["curl", "-s", "--max-time", "5", "http://db-svc.db:13306/"],
    );
    assert!(
        wait_until(Duration::from_secs(10), reported(false)),
        "the proxy reported that it forgot the port: {}",
        controller_log()
    );
    let (answer, took) = query(&rt, "client-3", 13306);
    assert_eq!(answer, "42");
    assert!(
        took >= Duration::from_secs(5),
        "forgotten: the next fresh pod waits out detection again ({took:?})"
    );
}
