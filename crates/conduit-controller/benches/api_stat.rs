//! The public API's answers over a big mesh with the embedded store full: 1,000 meshed
//! pods (100 deployments of 10) scraped every 5 s for the whole retention (15 minutes,
//! 180 scrapes each), asked through the API's own router as a client would: `stat` of
//! every deployment, of every pod, and a deployment's `series` for a chart. Prints p50,
//! p99 and the maximum per query over many requests (the store's lock held per query,
//! as in the controller). `cargo bench -p conduit-controller --bench api_stat`; the
//! request count is `BENCH_REQUESTS` (default 200).

use axum::body::Body;
use conduit_api::http::{Pod, Service, ServiceEndpoint, ServicePort};
use conduit_controller::{
    api::{router, ApiState},
    discovery::{SourceHealth, Workloads},
    prom,
    store::{wanted, PodScrape, Store},
};
use http_body_util::BodyExt as _;
use parking_lot::Mutex;
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::watch;
use tower::ServiceExt as _;

const DEPLOYMENTS: usize = 100;
const PODS_PER_DEPLOYMENT: usize = 10;
const SCRAPES: u32 = 180;
const INTERVAL: Duration = Duration::from_secs(5);

fn ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(
        10,
        (i / 65536) as u8,
        (i / 256 % 256) as u8,
        (i % 256) as u8,
    ))
}

fn workloads() -> Workloads {
    let mut pods = Vec::new();
    let mut services = Vec::new();
    for d in 0..DEPLOYMENTS {
        let mut endpoints = Vec::new();
        for p in 0..PODS_PER_DEPLOYMENT {
            let i = d * PODS_PER_DEPLOYMENT + p;
            let name = format!("app{d}-{p}");
            endpoints.push(ServiceEndpoint {
                addr: SocketAddr::new(ip(i), 8080),
                pod: name.clone(),
            });
            pods.push(Arc::new(Pod {
                namespace: "bench".into(),
                name,
                deployment: format!("app{d}"),
                ip: ip(i),
                meshed: true,
                ready: true,
                service_account: format!("app{d}"),
                labels: BTreeMap::from([("app".to_string(), format!("app{d}"))]),
                named_ports: BTreeMap::new(),
                probes: Vec::new(),
                default_policy: None,
            }));
        }
        services.push(Arc::new(Service {
            namespace: "bench".into(),
            name: format!("app{d}-svc"),
            vip: IpAddr::V4(Ipv4Addr::new(10, 200, (d / 256) as u8, (d % 256) as u8)),
            ports: vec![ServicePort {
                port: 80,
                endpoints,
            }],
        }));
    }
    Workloads {
        pods,
        services,
        policy: Default::default(),
        profiles: Vec::new(),
        http_routes: Vec::new(),
        inject_namespaces: BTreeSet::new(),
        namespaces: BTreeSet::from(["bench".to_string()]),
        lookup: Default::default(),
        generation: 1,
        server_first: Default::default(),
    }
}

/// A proxy's metrics after `n` scrape intervals: inbound successes and failures with
/// latency buckets, and outbound calls to the next deployment's Service.
fn metrics(d: usize, n: u32) -> String {
    let ok = 50 * n;
    let failed = n;
    let next = (d + 1) % DEPLOYMENTS;
    let mut text = format!(
        "response_total{{direction=\"inbound\",authority=\"app{d}-svc.bench\",status_code=\"200\",classification=\"success\",tls=\"true\"}} {ok}\n\
         response_total{{direction=\"inbound\",authority=\"app{d}-svc.bench\",status_code=\"500\",classification=\"failure\",tls=\"true\"}} {failed}\n\
         response_total{{direction=\"outbound\",authority=\"app{next}-svc.bench:80\",status_code=\"200\",classification=\"success\",tls=\"true\",server_id=\"app{next}.bench.serviceaccount.identity.conduit.cluster.local\"}} {ok}\n\
         tcp_open_total{{direction=\"inbound\",peer=\"src\",target_port=\"8080\"}} 4\n"
    );
    let total = ok + failed;
    for (i, le) in ["1", "2", "5", "10", "20", "50", "100", "200", "500", "+Inf"]
        .iter()
        .enumerate()
    {
        let count = total * (i as u32 + 1).min(10) / 10;
        text.push_str(&format!(
            "response_latency_ms_bucket{{le=\"{le}\",direction=\"inbound\",authority=\"app{d}-svc.bench\",status_code=\"200\"}} {count}\n"
        ));
    }
    text
}

fn store(w: &Workloads) -> Store {
    let mut store = Store::new(Duration::from_secs(900));
    let now = Instant::now();
    for pod in &w.pods {
        let d: usize = pod
            .deployment
            .trim_start_matches("app")
            .parse()
            .unwrap_or(0);
        for n in 0..SCRAPES {
            let at = now - INTERVAL * (SCRAPES - 1 - n);
            let samples = prom::parse(&metrics(d, n), wanted);
            store.record(
                &pod.namespace,
                &pod.name,
                PodScrape::from_samples(at, &samples),
            );
        }
    }
    store
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let w = workloads();
    let started = Instant::now();
    let store = store(&w);
    eprintln!(
        "{} pods x {SCRAPES} scrapes recorded in {:.1?}",
        w.pods.len(),
        started.elapsed()
    );
    let (_, workloads) = watch::channel(Arc::new(w));
    let (_, health) = watch::channel(SourceHealth {
        synced: true,
        problems: Vec::new(),
    });
    let api = router(ApiState {
        metrics: conduit_controller::metrics::MetricsSource::Embedded(Arc::new(Mutex::new(store))),
        workloads,
        health,
        max_window: Duration::from_secs(900),
        scrape_interval: INTERVAL,
        identity_counts: Arc::default(),
        tap_tls: None,
        grpc_limits: conduit_controller::grpc::Limits::new(8, 8),
    });
    println!("| query (1,000 pods, 15 min of scrapes) | rows | p50 | p99 | max |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (what, uri) in [
        (
            "stat of every deployment, 1m",
            "/api/v1/stat?resource=deploy&namespace=bench",
        ),
        (
            "stat of every deployment, 15m",
            "/api/v1/stat?resource=deploy&namespace=bench&window=15m",
        ),
        (
            "stat of every pod, 1m",
            "/api/v1/stat?resource=pod&namespace=bench",
        ),
        (
            "stat of one deployment, 1m",
            "/api/v1/stat?resource=deploy&namespace=bench&name=app7",
        ),
        (
            "series of a deployment, 15m by 15s",
            "/api/v1/series?resource=deploy&namespace=bench&name=app7&window=15m&step=15s",
        ),
        ("edges, 1m", "/api/v1/edges?namespace=bench"),
    ] {
        let mut times = Vec::with_capacity(requests);
        let mut rows = 0;
        for _ in 0..requests {
            let req = axum::http::Request::get(uri).body(Body::empty()).unwrap();
            let start = Instant::now();
            let rsp = api.clone().oneshot(req).await.unwrap();
            assert!(rsp.status().is_success(), "{uri}: {}", rsp.status());
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            times.push(start.elapsed());
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            rows = json
                .as_array()
                .map(Vec::len)
                .or_else(|| json["points"].as_array().map(Vec::len))
                .unwrap_or(0);
        }
        times.sort();
        println!(
            "| {what} | {rows} | {:.2} ms | {:.2} ms | {:.2} ms |",
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3,
        );
    }
}
