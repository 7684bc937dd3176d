//! The discovery benchmark (`bench/discovery`): the real `conduit-controller
//! --kubernetes` against the in-memory API server of `conduit-kube-fake` holding
//! Services whose EndpointSlices name one Pod per endpoint (1,000 and 10,000 by default),
//! with Destination streams subscribed as proxies subscribe. Then endpoints change one at
//! a time, each change timed from the API server's write to the update on the stream
//! subscribed to that Service. Reports the controller's memory (RSS after the first
//! sync, after the changes, and its peak) and the push latency (p50, p90, p99, max).
//!
//! Usage: discovery-bench CONTROLLER [--services N] [--endpoints-per-service N]
//!        [--subscribers N] [--changes N]

use anyhow::{bail, Context as _};
use conduit_api::destination::{destination_client::DestinationClient, update, GetDestination};
use conduit_kube_fake::FakeApiServer;
use serde_json::{json, Value};
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::mpsc,
};

struct Options {
    controller: String,
    services: usize,
    per_service: usize,
    subscribers: usize,
    changes: usize,
}

fn options() -> anyhow::Result<Options> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        controller: args
            .next()
            .context("usage: discovery-bench CONTROLLER [--services N] [--endpoints-per-service N] [--subscribers N] [--changes N]")?,
        services: 1000,
        per_service: 10,
        subscribers: 1000,
        changes: 500,
    };
    while let Some(flag) = args.next() {
        let value: usize = args
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{flag} needs a number"))?;
        match flag.as_str() {
            "--services" => o.services = value,
            "--endpoints-per-service" => o.per_service = value,
            "--subscribers" => o.subscribers = value,
            "--changes" => o.changes = value,
            _ => bail!("unknown option {flag}"),
        }
    }
    if o.services * o.per_service >= 65_536 || o.per_service < 2 || o.services == 0 {
        bail!("between 2 and 65,535 endpoints in all, at least 2 per service");
    }
    Ok(o)
}

fn namespace(service: usize) -> String {
    format!("bench-{}", service % 10)
}

/// Loopback addresses: whatever the controller sends to a pod (its metrics scrape) stays
/// on this host and is refused at once.
fn pod_ip(service: usize, per: usize, e: usize) -> String {
    let i = service * per + e;
    format!("127.1.{}.{}", i / 256, i % 256)
}

/// A scheduled, ready, meshed pod as the API server returns it.
fn pod(service: usize, per: usize, e: usize) -> Value {
    let ip = pod_ip(service, per, e);
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("svc-{service}-7d9c8b6f5-{e:05}"), "namespace": namespace(service),
            "labels": {"app": format!("svc-{service}"), "pod-template-hash": "7d9c8b6f5"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("svc-{service}-7d9c8b6f5"),
                                 "uid": format!("00000000-0000-4000-8000-{service:012}"), "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "serviceAccountName": format!("svc-{service}"), "nodeName": format!("worker-{}", e % 50),
            "initContainers": [{"name": "conduit-proxy", "image": "ghcr.io/conduit/proxy:0.1.0", "restartPolicy": "Always",
                                "ports": [{"name": "conduit-admin", "containerPort": 4191, "protocol": "TCP"}]}],
            "containers": [{"name": "app", "image": "registry.example/app:1.0",
                            "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}}],
        },
        "status": {
            "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "172.18.0.2",
            "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        },
    })
}

fn service(service: usize) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("svc-{service}"), "namespace": namespace(service)},
        "spec": {"type": "ClusterIP", "clusterIP": format!("10.96.{}.{}", service / 256, service % 256),
                 "selector": {"app": format!("svc-{service}")},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": "http"}]},
    })
}

/// The Service's EndpointSlice with its first `ready` endpoints.
fn slice(service: usize, per: usize, ready: usize) -> Value {
    let endpoints: Vec<Value> = (0..ready)
        .map(|e| json!({
            "addresses": [pod_ip(service, per, e)],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": format!("worker-{}", e % 50),
            "targetRef": {"kind": "Pod", "namespace": namespace(service), "name": format!("svc-{service}-7d9c8b6f5-{e:05}")},
        }))
        .collect();
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("svc-{service}-x7k2p"), "namespace": namespace(service),
                     "labels": {"kubernetes.io/service-name": format!("svc-{service}"),
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET path` over HTTP/1.0: the status code.
async fn http_status(socket: &std::path::Path, path: &str) -> Option<u16> {
    let mut tcp = tokio::net::UnixStream::connect(socket).await.ok()?;
    tcp.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.ok()?;
    out.split_whitespace().nth(1)?.parse().ok()
}

/// VmRSS and VmHWM of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let o = options()?;
    let api = FakeApiServer::start().await?;
    for s in 0..o.services {
        for e in 0..o.per_service {
            api.apply(pod(s, o.per_service, e));
        }
        api.apply(service(s));
        api.apply(slice(s, o.per_service, o.per_service));
    }
    let dir = std::env::temp_dir().join(format!("conduit-discovery-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("kubeconfig"), api.kubeconfig())?;
    // The API on its socket: only readiness is read, and TCP would need Kubernetes
    // authentication.
    let (api_socket, grpc_port) = (dir.join("api.sock"), free_port()?);
    let started = Instant::now();
    let mut controller = Command::new(&o.controller)
        .arg("--kubernetes")
        .arg(format!("--api-socket={}", api_socket.display()))
        .arg(format!("--destination-addr=127.0.0.1:{grpc_port}"))
        // Discovery alone: the metrics scrape of 10,000 pods is another benchmark's.
        .arg("--scrape-interval=1h")
        // One client stands in for every proxy: the per-client limits must not cut it.
        .arg(conduit_api::flags::GRPC_MAX_WATCHES_PER_CLIENT.arg(o.subscribers + 1))
        .arg(conduit_api::flags::GRPC_MAX_STREAMS_PER_CONNECTION.arg(o.subscribers + 1))
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", o.controller))?;
    let pid = controller.id();
    let result = run(&o, &api, &api_socket, grpc_port, pid, started).await;
    let _ = controller.kill();
    let _ = controller.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(
    o: &Options,
    api: &FakeApiServer,
    api_socket: &std::path::Path,
    grpc_port: u16,
    pid: u32,
    started: Instant,
) -> anyhow::Result<()> {
    while http_status(api_socket, "/ready").await != Some(200) {
        if started.elapsed() > Duration::from_secs(120) {
            bail!("the controller was not ready within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let synced = started.elapsed();

    // Subscribers: Destination streams, one per Service round robin, over a few channels.
    let (tx, mut rx) = mpsc::unbounded_channel::<(usize, usize, Instant)>();
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(DestinationClient::connect(format!("http://127.0.0.1:{grpc_port}")).await?);
    }
    for i in 0..o.subscribers {
        let s = i % o.services;
        let mut client = channels[i % channels.len()].clone();
        let tx = tx.clone();
        let mut stream = client
            .get(GetDestination {
                path: format!("svc-{s}.{}.svc.cluster.local:80", namespace(s)),
                context_namespace: "default".into(),
            })
            .await?
            .into_inner();
        tokio::spawn(async move {
            while let Ok(Some(u)) = stream.message().await {
                let n = match u.update {
                    Some(update::Update::Endpoints(set)) => set.endpoints.len(),
                    _ => 0,
                };
                if tx.send((s, n, Instant::now())).is_err() {
                    return;
                }
            }
        });
    }
    let mut first = vec![0usize; o.services];
    let mut waiting = o.subscribers;
    while waiting > 0 {
        let (s, n, _) = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("subscribers' first answers")?
            .context("subscribers ended")?;
        if n != o.per_service {
            bail!("svc-{s}: {n} endpoints, expected {}", o.per_service);
        }
        first[s] += 1;
        waiting -= 1;
    }
    let (rss_synced, _) = memory_kib(pid);

    // Changes, one at a time: a Service loses its last endpoint, or gets it back.
    let mut ready = vec![o.per_service; o.services];
    let mut latencies = Vec::with_capacity(o.changes);
    for k in 0..o.changes {
        let s = (k * 7919) % o.services.min(o.subscribers);
        ready[s] = if ready[s] == o.per_service {
            o.per_service - 1
        } else {
            o.per_service
        };
        let written = Instant::now();
        api.apply(slice(s, o.per_service, ready[s]));
        let seen = loop {
            let (got, n, at) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .with_context(|| format!("change {k}: no update for svc-{s} within 10 s"))?
                .context("subscribers ended")?;
            if got == s && n == ready[s] {
                break at;
            }
        };
        latencies.push(seen.duration_since(written));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (rss_after, peak) = memory_kib(pid);
    latencies.sort();
    let mib = |kib: u64| format!("{:.1} MiB", kib as f64 / 1024.0);
    println!(
        "services {} | endpoints {} | pods {} | subscribers {} | changes {}",
        o.services,
        o.services * o.per_service,
        o.services * o.per_service,
        o.subscribers,
        o.changes
    );
    println!(
        "controller ready (first complete snapshot) after {}",
        ms(synced)
    );
    println!(
        "controller RSS: {} after sync and subscriptions, {} after the changes, peak {}",
        mib(rss_synced),
        mib(rss_after),
        mib(peak)
    );
    println!(
        "push latency (API write -> subscriber's update): p50 {} | p90 {} | p99 {} | max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.90)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 1.0))
    );
    Ok(())
}
