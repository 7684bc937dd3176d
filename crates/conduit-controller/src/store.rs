//! The metrics API's memory: every scrape of every meshed proxy, reduced to the counters
//! queries need and kept for a retention window (15 minutes by default), and the queries
//! themselves ([`Queries`], over any [`History`]: this store, or a Prometheus' answers):
//! golden metrics per namespace, deployment or pod (stat), their history (series), who
//! calls whom (edges) and by route (routes). Rates are increases over the window, counter
//! resets included, as Prometheus' `increase` computes them; latency percentiles come
//! from histogram buckets as `histogram_quantile` computes them.

use crate::{
    discovery::{split_authority, Workloads},
    prom::Sample,
};
use conduit_api::{
    http::{EdgeRow, Resource, RouteRow, SeriesPoint, StatRow},
    profile::DEFAULT_ROUTE,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// The proxies' series the metrics API reads, whichever source scraped them.
pub mod series {
    /// Responses, by classification, TLS and the server's identity.
    pub const RESPONSES: &str = "response_total";
    /// The latency histogram's buckets.
    pub const LATENCY_BUCKETS: &str = "response_latency_ms_bucket";
    /// Outbound attempts by route, retries included.
    pub const ROUTE_ATTEMPTS: &str = "route_attempt_total";
    /// Connections opened.
    pub const TCP_OPEN: &str = "tcp_open_total";
    /// Connections closed.
    pub const TCP_CLOSE: &str = "tcp_close_total";
}

/// Request traffic of one direction (or one outbound authority) as counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    pub responses: f64,
    pub successes: f64,
    /// Responses to requests that came (inbound) or went (outbound) over mutual TLS.
    pub tls_responses: f64,
    /// Outbound: the identities the servers proved.
    pub server_ids: BTreeSet<String>,
    /// Cumulative latency buckets: (upper bound in ms, count), ascending, `+Inf` last.
    pub buckets: Vec<(f64, f64)>,
}

impl Traffic {
    fn add_bucket(&mut self, le: f64, count: f64) {
        match self.buckets.iter_mut().find(|(b, _)| *b == le) {
            Some((_, c)) => *c += count,
            None => {
                self.buckets.push((le, count));
                self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
        }
    }
}

/// One route's traffic: its responses as the clients saw them, and (outbound) every
/// attempt, retries included.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteTraffic {
    pub traffic: Traffic,
    pub attempts: f64,
    pub attempt_successes: f64,
}

/// One scrape of one proxy, reduced.
#[derive(Clone, Debug)]
pub struct PodScrape {
    pub at: Instant,
    pub inbound: Traffic,
    /// Outbound traffic by authority.
    pub outbound: BTreeMap<String, Traffic>,
    /// Inbound traffic by route.
    pub inbound_routes: BTreeMap<String, RouteTraffic>,
    /// Outbound traffic by destination Service (`dst_service`, `name.namespace`) and route.
    pub outbound_routes: BTreeMap<(String, String), RouteTraffic>,
    pub tcp_open: f64,
    pub tcp_close: f64,
}

impl PodScrape {
    /// Reduces a proxy's samples.
    pub fn from_samples(at: Instant, samples: &[Sample]) -> PodScrape {
        let mut s = PodScrape {
            at,
            inbound: Traffic::default(),
            outbound: BTreeMap::new(),
            inbound_routes: BTreeMap::new(),
            outbound_routes: BTreeMap::new(),
            tcp_open: 0.0,
            tcp_close: 0.0,
        };
        for sample in samples {
            let inbound = sample.label("direction") == Some("inbound");
            match sample.name.as_str() {
                series::RESPONSES => {
                    let count = |t: &mut Traffic| {
                        t.responses += sample.value;
                        if sample.label("classification") == Some("success") {
                            t.successes += sample.value;
                        }
                        if sample.label("tls") == Some("true") {
                            t.tls_responses += sample.value;
                        }
                        if let Some(id) = sample.label("server_id") {
                            t.server_ids.insert(id.to_string());
                        }
                    };
                    if let Some(t) = s.traffic_of(sample) {
                        count(t);
                    }
                    if let Some(r) = s.route_of(sample) {
                        count(&mut r.traffic);
                    }
                }
                series::ROUTE_ATTEMPTS => {
                    if let Some(r) = s.route_of(sample) {
                        r.attempts += sample.value;
                        if sample.label("classification") == Some("success") {
                            r.attempt_successes += sample.value;
                        }
                    }
                }
                series::LATENCY_BUCKETS => {
                    let le = match sample.label("le") {
                        Some("+Inf") => f64::INFINITY,
                        Some(v) => match v.parse() {
                            Ok(v) => v,
                            Err(_) => continue,
                        },
                        None => continue,
                    };
                    if let Some(t) = s.traffic_of(sample) {
                        t.add_bucket(le, sample.value);
                    }
                    if let Some(r) = s.route_of(sample) {
                        r.traffic.add_bucket(le, sample.value);
                    }
                }
                series::TCP_OPEN if inbound && sample.label("peer") == Some("src") => {
                    s.tcp_open += sample.value
                }
                series::TCP_CLOSE if inbound && sample.label("peer") == Some("src") => {
                    s.tcp_close += sample.value
                }
                _ => {}
            }
        }
        s
    }

    /// The traffic a sample counts toward: inbound, or outbound to its authority.
    fn traffic_of(&mut self, sample: &Sample) -> Option<&mut Traffic> {
        match sample.label("direction")? {
            "inbound" => Some(&mut self.inbound),
            "outbound" => Some(
                self.outbound
                    .entry(sample.label("authority")?.to_string())
                    .or_default(),
            ),
            _ => None,
        }
    }
}

/// Which series the metrics API keeps from a scrape.
pub fn wanted(name: &str) -> bool {
    matches!(
        name,
        series::RESPONSES
            | series::LATENCY_BUCKETS
            | series::ROUTE_ATTEMPTS
            | series::TCP_OPEN
            | series::TCP_CLOSE
    )
}

impl PodScrape {
    /// The route traffic a sample counts toward: inbound by its route, outbound by its
    /// destination Service and route.
    fn route_of(&mut self, sample: &Sample) -> Option<&mut RouteTraffic> {
        let route = sample.label("route")?.to_string();
        match sample.label("direction")? {
            "inbound" => Some(self.inbound_routes.entry(route).or_default()),
            "outbound" => {
                let service = sample.label("dst_service")?.to_string();
                Some(self.outbound_routes.entry((service, route)).or_default())
            }
            _ => None,
        }
    }
}

/// An edge: source namespace and deployment, destination namespace and deployment.
type EdgeKey = (String, String, String, String);

/// Every pod's recent scrapes.
pub struct Store {
    retention: Duration,
    pods: HashMap<(String, String), Vec<PodScrape>>,
}

impl Store {
    /// A store that keeps `retention` of history.
    pub fn new(retention: Duration) -> Store {
        Store {
            retention,
            pods: HashMap::new(),
        }
    }

    /// Adds a scrape of pod `namespace/name`, dropping what is older than the retention.
    pub fn record(&mut self, namespace: &str, name: &str, scrape: PodScrape) {
        let now = scrape.at;
        let series = self
            .pods
            .entry((namespace.to_string(), name.to_string()))
            .or_default();
        series.push(scrape);
        let expired = series
            .iter()
            .take_while(|s| now.duration_since(s.at) > self.retention)
            .count();
        series.drain(..expired);
    }

    /// Forgets pods that are gone.
    pub fn retain_pods(&mut self, keep: impl Fn(&str, &str) -> bool) {
        self.pods.retain(|(ns, name), _| keep(ns, name));
    }
}

/// Where the queries read pods' scrapes from: the store's memory, or what a Prometheus
/// answered ([`crate::prometheus`]), reduced to the same scrapes so that both give the
/// same answers.
pub trait History {
    /// The scrapes of pod `namespace/name` that cover the `window` before `now`, oldest
    /// first: their increases over the window are the pod's traffic in it.
    fn window(&self, namespace: &str, name: &str, now: Instant, window: Duration) -> &[PodScrape];
}

impl History for Store {
    /// The scrapes of a pod that cover the `window` before `now`: the newest one at or
    /// before the window's start (if any) and every later one up to `now`.
    fn window(&self, namespace: &str, name: &str, now: Instant, window: Duration) -> &[PodScrape] {
        let Some(series) = self.pods.get(&(namespace.to_string(), name.to_string())) else {
            return &[];
        };
        let start = now.checked_sub(window).unwrap_or(now);
        let end = series.partition_point(|s| s.at <= now);
        let first = series[..end]
            .iter()
            .rposition(|s| s.at <= start)
            .unwrap_or(0);
        &series[first.min(end)..end]
    }
}

/// The metrics API's queries, over any [`History`].
impl<H: History + ?Sized> Queries for H {}

/// The metrics API's queries: stat, series, edges and routes.
pub trait Queries: History {
    /// The golden metrics of `resource`s in `namespace` (all when `None`), optionally only
    /// the one named `name`, over `window`.
    fn stat(
        &self,
        workloads: &Workloads,
        resource: Resource,
        namespace: Option<&str>,
        name: Option<&str>,
        window: Duration,
    ) -> Vec<StatRow> {
        let now = Instant::now();
        let effective = match resource {
            Resource::Pod => HashMap::new(),
            _ => effective_success(self, workloads, resource, now, window),
        };
        groups(self, workloads, resource, namespace, name, now, window)
            .into_iter()
            .map(|(key, agg)| {
                let effective = effective.get(&key).and_then(|&(responses, successes)| {
                    (responses > 0.0).then(|| successes / responses)
                });
                StatRow {
                    effective_success_rate: effective,
                    ..agg.row(key.0, key.1)
                }
            })
            .collect()
    }

    /// The golden metrics of the resource `namespace/name` at `points` moments `step`
    /// apart, the last one now, each over the `range` before it; oldest first. Moments
    /// before the controller's clock began are left out.
    #[allow(clippy::too_many_arguments)]
    fn series(
        &self,
        workloads: &Workloads,
        resource: Resource,
        namespace: &str,
        name: &str,
        points: u32,
        step: Duration,
        range: Duration,
    ) -> Vec<SeriesPoint> {
        let (now, wall_now) = (Instant::now(), SystemTime::now());
        (0..points)
            .rev()
            .filter_map(|back| {
                let ago = step.checked_mul(back)?;
                let at = now.checked_sub(ago)?;
                let wall = wall_now.checked_sub(ago)?.duration_since(UNIX_EPOCH).ok()?;
                let row = groups(
                    self,
                    workloads,
                    resource,
                    Some(namespace),
                    Some(name),
                    at,
                    range,
                )
                .into_values()
                .next()
                .unwrap_or_default()
                .row(namespace.to_string(), name.to_string());
                Some(SeriesPoint {
                    time_unix_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
                    request_rate: row.request_rate,
                    success_rate: row.success_rate,
                    latency_ms_p50: row.latency_ms_p50,
                    latency_ms_p95: row.latency_ms_p95,
                    latency_ms_p99: row.latency_ms_p99,
                })
            })
            .collect()
    }

    /// Who calls whom among deployments in `namespace` (all when `None`), over `window`:
    /// each source's outbound traffic, its authority resolved to the Service's pods.
    fn edges(
        &self,
        workloads: &Workloads,
        namespace: Option<&str>,
        window: Duration,
    ) -> Vec<EdgeRow> {
        let now = Instant::now();
        let mut groups: BTreeMap<EdgeKey, Agg> = BTreeMap::new();
        // The source's identity and the identities the destination proved, per edge.
        let mut ids: BTreeMap<EdgeKey, (String, BTreeSet<String>)> = BTreeMap::new();
        for pod in &workloads.pods {
            let scrapes = self.window(&pod.namespace, &pod.name, now, window);
            let Some(last) = scrapes.last() else { continue };
            for authority in last.outbound.keys() {
                let Some((dst_ns, dst)) = destination_of(workloads, authority, &pod.namespace)
                else {
                    continue;
                };
                if namespace.is_some_and(|ns| ns != pod.namespace && ns != dst_ns) {
                    continue;
                }
                let key = (pod.namespace.clone(), pod.deployment.clone(), dst_ns, dst);
                let (_, servers) = ids.entry(key.clone()).or_insert_with(|| {
                    (
                        conduit_identity::identity_name(&pod.service_account, &pod.namespace),
                        BTreeSet::new(),
                    )
                });
                servers.extend(last.outbound[authority].server_ids.iter().cloned());
                groups
                    .entry(key)
                    .or_default()
                    .add(scrapes, |s| s.outbound.get(authority));
            }
        }
        groups
            .into_iter()
            .filter(|(_, agg)| agg.responses > 0.0)
            .map(|(key, agg)| {
                let (client, servers) = ids.remove(&key).unwrap_or_default();
                let secured = agg.tls_responses > 0.0;
                let (src_namespace, src, dst_namespace, dst) = key;
                EdgeRow {
                    src_namespace,
                    src,
                    dst_namespace,
                    dst,
                    request_rate: agg.rate,
                    success_rate: Some(agg.successes / agg.responses),
                    tls_rate: agg.tls_responses / agg.responses,
                    client_id: secured.then_some(client),
                    server_ids: servers.into_iter().collect(),
                }
            })
            .collect()
    }

    /// The golden metrics by route of deployment `namespace/deployment` over `window`:
    /// the routes of the profile (inbound: of each Service that selects its pods; `To`:
    /// of that Service) in their order, with or without traffic, then any others seen,
    /// `[default]` last.
    fn routes(
        &self,
        workloads: &Workloads,
        namespace: &str,
        deployment: &str,
        scope: RouteScope<'_>,
        window: Duration,
    ) -> Vec<RouteRow> {
        let now = Instant::now();
        let pods: Vec<_> = workloads
            .pods
            .iter()
            .filter(|p| p.namespace == namespace && p.deployment == deployment)
            .collect();
        // The Services whose profiles name the routes, as `name.namespace`.
        let services: Vec<(String, String)> = match scope {
            RouteScope::To { namespace, name } => vec![(namespace.into(), name.into())],
            RouteScope::Inbound => workloads
                .services
                .iter()
                .filter(|s| {
                    s.ports.iter().flat_map(|p| &p.endpoints).any(|e| {
                        pods.iter()
                            .any(|p| p.name == e.pod && p.namespace == s.namespace)
                    })
                })
                .map(|s| (s.namespace.clone(), s.name.clone()))
                .collect(),
        };
        // (route, service) in the order rows are shown.
        let mut keys: Vec<(String, Option<String>)> = Vec::new();
        for (ns, name) in &services {
            if let Some(profile) = workloads.profile(ns, name) {
                for r in &profile.routes {
                    keys.push((r.name.clone(), Some(format!("{name}.{ns}"))));
                }
            }
        }
        let dst = match scope {
            RouteScope::To { namespace, name } => Some(format!("{name}.{namespace}")),
            RouteScope::Inbound => None,
        };
        let mut groups: BTreeMap<String, (Agg, f64, f64, f64)> = BTreeMap::new();
        for pod in &pods {
            let scrapes = self.window(&pod.namespace, &pod.name, now, window);
            let Some(last) = scrapes.last() else { continue };
            let seen: Vec<String> = match &dst {
                None => last.inbound_routes.keys().cloned().collect(),
                Some(d) => last
                    .outbound_routes
                    .keys()
                    .filter(|(svc, _)| svc == d)
                    .map(|(_, r)| r.clone())
                    .collect(),
            };
            for route in seen {
                let d = dst.as_deref();
                let (agg, attempts, successes, secs) = groups.entry(route.clone()).or_default();
                agg.add(scrapes, |s| route_traffic(s, d, &route).map(|r| &r.traffic));
                let counter = |f: fn(&RouteTraffic) -> f64| {
                    increase(
                        scrapes
                            .iter()
                            .map(|s| route_traffic(s, d, &route).map_or(0.0, f)),
                    )
                };
                *attempts += counter(|r| r.attempts);
                *successes += counter(|r| r.attempt_successes);
                if let (Some(first), Some(last)) = (scrapes.first(), scrapes.last()) {
                    *secs = secs.max(last.at.duration_since(first.at).as_secs_f64());
                }
                if !keys.iter().any(|(r, _)| *r == route) {
                    let service = (route != DEFAULT_ROUTE).then(|| dst.clone()).flatten();
                    keys.push((route, service));
                }
            }
        }
        // `[default]` always, and last.
        if !keys.iter().any(|(r, _)| r == DEFAULT_ROUTE) {
            keys.push((DEFAULT_ROUTE.to_string(), None));
        }
        keys.sort_by_key(|(r, _)| r == DEFAULT_ROUTE);
        keys.into_iter()
            .map(|(route, service)| {
                let (agg, attempts, successes, secs) = groups.remove(&route).unwrap_or_default();
                let q = |q| histogram_quantile(q, &agg.buckets);
                let outbound = dst.is_some();
                RouteRow {
                    service: service.or_else(|| dst.clone()),
                    request_rate: agg.rate,
                    success_rate: (agg.responses > 0.0).then(|| agg.successes / agg.responses),
                    actual_request_rate: (outbound && secs > 0.0).then(|| attempts / secs),
                    actual_success_rate: (outbound && attempts > 0.0).then(|| successes / attempts),
                    latency_ms_p50: q(0.5),
                    latency_ms_p95: q(0.95),
                    latency_ms_p99: q(0.99),
                    route,
                }
            })
            .collect()
    }
}

/// The inbound traffic of `resource`s in `namespace` (all when `None`), optionally
/// only the one named `name`, over the `window` before `now`, by namespace and name.
fn groups<H: History + ?Sized>(
    history: &H,
    workloads: &Workloads,
    resource: Resource,
    namespace: Option<&str>,
    name: Option<&str>,
    now: Instant,
    window: Duration,
) -> BTreeMap<(String, String), Agg> {
    let mut groups: BTreeMap<(String, String), Agg> = BTreeMap::new();
    for pod in &workloads.pods {
        if namespace.is_some_and(|ns| ns != pod.namespace) {
            continue;
        }
        let group = pod.name_as(resource);
        if name.is_some_and(|n| n != group) {
            continue;
        }
        let key = (pod.namespace.clone(), group.to_string());
        let agg = groups.entry(key).or_default();
        agg.pods += 1;
        agg.meshed += u32::from(pod.meshed);
        let scrapes = history.window(&pod.namespace, &pod.name, now, window);
        agg.add(scrapes, |s| Some(&s.inbound));
        if let Some(last) = scrapes.last() {
            agg.tcp += (last.tcp_open - last.tcp_close).max(0.0);
        }
    }
    groups
}

/// What meshed clients saw of the Services in front of each namespace or deployment
/// (by namespace and name): their outbound responses to those Services, after
/// retries, as (responses, successes). One pass over the clients, then one over the
/// Services' endpoints, so that its cost does not grow with groups times pods.
fn effective_success<H: History + ?Sized>(
    history: &H,
    workloads: &Workloads,
    resource: Resource,
    now: Instant,
    window: Duration,
) -> HashMap<(String, String), (f64, f64)> {
    let mut seen: HashMap<&str, (f64, f64)> = HashMap::new();
    for client in &workloads.pods {
        let scrapes = history.window(&client.namespace, &client.name, now, window);
        let Some(last) = scrapes.last() else { continue };
        for (dst, route) in last.outbound_routes.keys() {
            let of = |f: fn(&Traffic) -> f64| {
                increase(
                    scrapes
                        .iter()
                        .map(|s| route_traffic(s, Some(dst), route).map_or(0.0, |r| f(&r.traffic))),
                )
            };
            let entry = seen.entry(dst.as_str()).or_default();
            entry.0 += of(|t| t.responses);
            entry.1 += of(|t| t.successes);
        }
    }
    let mut by_group: HashMap<(String, String), (f64, f64)> = HashMap::new();
    if seen.is_empty() {
        return by_group;
    }
    for service in &workloads.services {
        let Some(&(responses, successes)) =
            seen.get(format!("{}.{}", service.name, service.namespace).as_str())
        else {
            continue;
        };
        let groups: BTreeSet<(String, String)> = service
            .ports
            .iter()
            .flat_map(|p| &p.endpoints)
            .filter_map(|e| workloads.pod(&service.namespace, &e.pod))
            .map(|p| (p.namespace.clone(), p.name_as(resource).to_string()))
            .collect();
        for group in groups {
            let entry = by_group.entry(group).or_default();
            entry.0 += responses;
            entry.1 += successes;
        }
    }
    by_group
}

/// Where `conduit routes` looks: a deployment's inbound traffic, or its outbound traffic
/// to one Service.
pub enum RouteScope<'a> {
    Inbound,
    /// To the Service `name` in `namespace`.
    To {
        namespace: &'a str,
        name: &'a str,
    },
}

/// A scrape's traffic of `route`: inbound, or outbound to the Service `dst`.
fn route_traffic<'s>(s: &'s PodScrape, dst: Option<&str>, route: &str) -> Option<&'s RouteTraffic> {
    match dst {
        None => s.inbound_routes.get(route),
        Some(d) => s.outbound_routes.get(&(d.to_string(), route.to_string())),
    }
}

/// The deployment an authority leads to: through a Service, or straight to a pod's IP.
fn destination_of(
    workloads: &Workloads,
    authority: &str,
    context_ns: &str,
) -> Option<(String, String)> {
    if let Some((_, port)) = workloads.resolve(authority, context_ns) {
        let pod = port.endpoints.first()?;
        let p = workloads.pod_by_ip(pod.addr.ip())?;
        return Some((p.namespace.clone(), p.deployment.clone()));
    }
    let (host, _) = split_authority(authority)?;
    let p = workloads.pod_by_ip(host.parse().ok()?)?;
    Some((p.namespace.clone(), p.deployment.clone()))
}

/// Sums over pods.
#[derive(Default)]
struct Agg {
    pods: u32,
    meshed: u32,
    responses: f64,
    successes: f64,
    tls_responses: f64,
    rate: f64,
    buckets: Vec<(f64, f64)>,
    tcp: f64,
}

impl Agg {
    /// Adds the increases of one pod's traffic over its scrapes.
    fn add(&mut self, scrapes: &[PodScrape], traffic: impl Fn(&PodScrape) -> Option<&Traffic>) {
        let (Some(first), Some(last)) = (scrapes.first(), scrapes.last()) else {
            return;
        };
        let secs = last.at.duration_since(first.at).as_secs_f64();
        if secs <= 0.0 {
            return;
        }
        let get = |s: &PodScrape, f: &dyn Fn(&Traffic) -> f64| traffic(s).map_or(0.0, f);
        let responses = increase(scrapes.iter().map(|s| get(s, &|t| t.responses)));
        self.responses += responses;
        self.successes += increase(scrapes.iter().map(|s| get(s, &|t| t.successes)));
        self.tls_responses += increase(scrapes.iter().map(|s| get(s, &|t| t.tls_responses)));
        self.rate += responses / secs;
        let bounds: Vec<f64> = traffic(last)
            .map(|t| t.buckets.iter().map(|(le, _)| *le).collect())
            .unwrap_or_default();
        for le in bounds {
            let inc = increase(scrapes.iter().map(|s| {
                traffic(s)
                    .and_then(|t| t.buckets.iter().find(|(b, _)| *b == le))
                    .map_or(0.0, |(_, c)| *c)
            }));
            match self.buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += inc,
                None => {
                    self.buckets.push((le, inc));
                    self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
                }
            }
        }
    }

    fn row(self, namespace: String, name: String) -> StatRow {
        let q = |q| histogram_quantile(q, &self.buckets);
        StatRow {
            namespace,
            name,
            meshed: format!("{}/{}", self.meshed, self.pods),
            success_rate: (self.responses > 0.0).then(|| self.successes / self.responses),
            request_rate: self.rate,
            latency_ms_p50: q(0.5),
            latency_ms_p95: q(0.95),
            latency_ms_p99: q(0.99),
            tls_rate: (self.responses > 0.0).then(|| self.tls_responses / self.responses),
            tcp_connections: self.tcp.round() as u64,
            effective_success_rate: None,
        }
    }
}

/// The increase of a counter over consecutive samples; a drop is a reset (the proxy
/// restarted), after which the new value counts from zero.
pub fn increase(values: impl Iterator<Item = f64>) -> f64 {
    let mut total = 0.0;
    let mut prev: Option<f64> = None;
    for v in values {
        if let Some(p) = prev {
            total += if v >= p { v - p } else { v };
        }
        prev = Some(v);
    }
    total
}

/// The `q`-quantile from cumulative buckets `(upper bound, count)`, ascending with `+Inf`
/// last, as Prometheus' `histogram_quantile`: linear interpolation inside the bucket the
/// rank falls in (from 0 for the first); the highest finite bound when it falls in `+Inf`.
/// `None` without observations.
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for &(bound, count) in buckets {
        if count >= rank {
            if bound.is_infinite() {
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(bound);
            }
            return Some(prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket);
        }
        prev_bound = bound;
        prev_count = count;
    }
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{discovery::tests::sample, prom};

    #[test]
    fn quantiles_match_prometheus() {
        // 100 observations: 50 <= 1 ms, 40 in (1, 2], 10 in (2, 5].
        let buckets = [
            (1.0, 50.0),
            (2.0, 90.0),
            (5.0, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(histogram_quantile(0.5, &buckets), Some(1.0));
        assert_eq!(histogram_quantile(0.25, &buckets), Some(0.5));
        assert_eq!(histogram_quantile(0.7, &buckets), Some(1.5));
        assert!((histogram_quantile(0.95, &buckets).unwrap() - 3.5).abs() < 1e-9);
        let tail = [(1.0, 10.0), (f64::INFINITY, 20.0)];
        assert_eq!(
            histogram_quantile(0.99, &tail),
            Some(1.0),
            "+Inf answers the highest finite bound"
        );
        assert_eq!(
            histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]),
            None
        );
    }

    #[test]
    fn increases_survive_counter_resets() {
        assert_eq!(increase([1.0, 4.0, 10.0].into_iter()), 9.0);
        assert_eq!(increase([5.0, 8.0, 2.0, 3.0].into_iter()), 3.0 + 2.0 + 1.0);
        assert_eq!(increase([7.0].into_iter()), 0.0);
    }

    fn scrape(at: Instant, text: &str) -> PodScrape {
        PodScrape::from_samples(at, &prom::parse(text, wanted))
    }

    fn metrics(inbound_ok: u32, inbound_fail: u32, out_ok: u32, tcp_open: u32) -> String {
        format!(
            r#"response_total{{direction="inbound",authority="web-svc.emojivoto",status_code="200",classification="success",tls="true",client_id="vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local"}} {inbound_ok}
response_total{{direction="inbound",authority="web-svc.emojivoto",status_code="500",classification="failure",tls="false"}} {inbound_fail}
response_latency_ms_bucket{{le="1.0",direction="inbound",authority="web-svc.emojivoto",status_code="200"}} {}
response_latency_ms_bucket{{le="10.0",direction="inbound",authority="web-svc.emojivoto",status_code="200"}} {}
response_latency_ms_bucket{{le="+Inf",direction="inbound",authority="web-svc.emojivoto",status_code="200"}} {}
response_total{{direction="outbound",authority="voting-svc.emojivoto:8080",status_code="200",classification="success",grpc_status="0",tls="true",server_id="voting.emojivoto.serviceaccount.identity.conduit.cluster.local"}} {out_ok}
tcp_open_total{{direction="inbound",peer="src",target_port="8080",srv_name="default"}} {tcp_open}
tcp_open_total{{direction="inbound",peer="dst",target_port="8080"}} 99
tcp_close_total{{direction="inbound",peer="src",target_port="8080",srv_name="default"}} 1
"#,
            inbound_ok / 2,
            inbound_ok,
            inbound_ok + inbound_fail,
        )
    }

    #[test]
    fn series_points_cover_only_the_range_before_each_moment() {
        let w = sample();
        let mut store = Store::new(Duration::from_secs(900));
        let now = Instant::now();
        let ago = |secs| now - Duration::from_secs(secs);
        // 10 rps, then idle, then 30 rps with a third failing, then 20 rps all good.
        for (at, ok, failed) in [
            (40, 0, 0),
            (30, 100, 0),
            (20, 100, 0),
            (10, 300, 100),
            (0, 500, 100),
        ] {
            store.record(
                "emojivoto",
                "web-1",
                scrape(ago(at), &metrics(ok, failed, 0, 1)),
            );
        }
        let tenth = Duration::from_secs(10);
        let points = store.series(
            &w,
            Resource::Deployment,
            "emojivoto",
            "web",
            4,
            tenth,
            tenth,
        );
        let seen: Vec<(f64, Option<f64>)> = points
            .iter()
            .map(|p| ((p.request_rate * 1e6).round() / 1e6, p.success_rate))
            .collect();
        assert_eq!(
            seen,
            [
                (10.0, Some(1.0)),
                (0.0, None),
                (30.0, Some(200.0 / 300.0)),
                (20.0, Some(1.0))
            ]
        );
        let times: Vec<u64> = points.iter().map(|p| p.time_unix_ms).collect();
        assert!(
            times.windows(2).all(|t| t[1] - t[0] == 10_000),
            "a step apart, oldest first: {times:?}"
        );
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(wall - times[3] < 5_000, "the last point is now");
        assert!(store
            .series(
                &w,
                Resource::Deployment,
                "emojivoto",
                "voting",
                4,
                tenth,
                tenth
            )
            .iter()
            .all(|p| p.request_rate == 0.0 && p.latency_ms_p50.is_none()));
    }

    #[test]
    fn effective_success_is_what_clients_saw_of_the_services_in_front() {
        let w = sample();
        let mut store = Store::new(Duration::from_secs(900));
        let now = Instant::now();
        let calls = |ok: u32, failed: u32| {
            format!(
                "response_total{{direction=\"outbound\",authority=\"voting-svc.emojivoto:8080\",dst_service=\"voting-svc.emojivoto\",route=\"[default]\",classification=\"success\"}} {ok}\n\
                 response_total{{direction=\"outbound\",authority=\"voting-svc.emojivoto:8080\",dst_service=\"voting-svc.emojivoto\",route=\"[default]\",classification=\"failure\"}} {failed}\n"
            )
        };
        let bot = "vote-bot-1";
        store.record(
            "emojivoto",
            bot,
            scrape(now - Duration::from_secs(10), &calls(10, 0)),
        );
        store.record("emojivoto", bot, scrape(now, &calls(30, 10)));
        let window = Duration::from_secs(60);
        let deploys = store.stat(&w, Resource::Deployment, None, None, window);
        let effective = |name: &str| {
            deploys
                .iter()
                .find(|r| r.name == name)
                .unwrap()
                .effective_success_rate
        };
        assert_eq!(effective("voting"), Some(20.0 / 30.0));
        assert_eq!(effective("web"), None, "nobody called the web's Service");
        let ns = store.stat(&w, Resource::Namespace, None, None, window);
        assert_eq!(ns[0].effective_success_rate, Some(20.0 / 30.0));
        let pods = store.stat(&w, Resource::Pod, None, None, window);
        assert!(pods.iter().all(|p| p.effective_success_rate.is_none()));
    }

    #[test]
    fn stat_and_edges_from_two_scrapes() {
        let w = sample();
        let mut store = Store::new(Duration::from_secs(900));
        let now = Instant::now();
        let t0 = now - Duration::from_secs(10);
        store.record("emojivoto", "web-1", scrape(t0, &metrics(100, 0, 40, 2)));
        store.record("emojivoto", "web-1", scrape(now, &metrics(180, 20, 80, 3)));
        let rows = store.stat(
            &w,
            Resource::Deployment,
            Some("emojivoto"),
            None,
            Duration::from_secs(60),
        );
        let web = rows.iter().find(|r| r.name == "web").unwrap();
        assert_eq!(web.meshed, "1/1");
        assert!((web.request_rate - 10.0).abs() < 1e-9, "{web:?}");
        assert!((web.success_rate.unwrap() - 0.8).abs() < 1e-9, "{web:?}");
        // Increases: 40 at <= 1 ms, 80 at <= 10 ms of 100: p50 falls in (1, 10].
        assert!(
            (web.latency_ms_p50.unwrap() - (1.0 + 9.0 * 10.0 / 40.0)).abs() < 1e-9,
            "{web:?}"
        );
        assert_eq!(web.tcp_connections, 2);
        // 80 of the 100 new responses were to mutual TLS requests.
        assert!((web.tls_rate.unwrap() - 0.8).abs() < 1e-9, "{web:?}");
        let idle = rows.iter().find(|r| r.name == "voting").unwrap();
        assert_eq!(
            (idle.success_rate, idle.request_rate, idle.latency_ms_p99),
            (None, 0.0, None)
        );
        let ns = store.stat(&w, Resource::Namespace, None, None, Duration::from_secs(60));
        assert_eq!(ns.len(), 1);
        assert_eq!(ns[0].meshed, "3/3");

        let edges = store.edges(&w, Some("emojivoto"), Duration::from_secs(60));
        assert_eq!(edges.len(), 1, "{edges:?}");
        assert_eq!(
            (edges[0].src.as_str(), edges[0].dst.as_str()),
            ("web", "voting")
        );
        assert!((edges[0].request_rate - 4.0).abs() < 1e-9);
        assert_eq!(edges[0].tls_rate, 1.0);
        assert_eq!(
            edges[0].client_id.as_deref(),
            Some("web.emojivoto.serviceaccount.identity.conduit.cluster.local")
        );
        assert_eq!(
            edges[0].server_ids,
            ["voting.emojivoto.serviceaccount.identity.conduit.cluster.local"]
        );
    }

    #[test]
    fn routes_effective_and_actual_in_profile_order() {
        use conduit_k8s::profile::{Route, ServiceProfile};
        let mut w = sample();
        let route = |name: &str| Route {
            name: name.into(),
            method: None,
            path_regex: "/".into(),
            timeout_ms: None,
            retryable: true,
            retry_grpc_codes: Vec::new(),
        };
        w.profiles = vec![std::sync::Arc::new(ServiceProfile {
            namespace: "emojivoto".into(),
            name: "voting-svc.emojivoto.svc.cluster.local".into(),
            routes: vec![route("vote"), route("results")],
            retry_budget: None,
        })];
        // web calls voting: 100 responses (all successes, after retries) from 125 attempts.
        let text = |responses: u32, attempts: u32, failed: u32| {
            format!(
                r#"response_total{{direction="outbound",authority="voting-svc.emojivoto:8080",route="vote",dst_service="voting-svc.emojivoto",status_code="200",classification="success"}} {responses}
route_attempt_total{{direction="outbound",route="vote",dst_service="voting-svc.emojivoto",classification="success"}} {}
route_attempt_total{{direction="outbound",route="vote",dst_service="voting-svc.emojivoto",classification="failure"}} {failed}
response_total{{direction="outbound",authority="voting-svc.emojivoto:8080",route="vote",dst_service="other.emojivoto",status_code="200",classification="success"}} 999
response_total{{direction="inbound",authority="web-svc.emojivoto",route="[default]",status_code="200",classification="success"}} {responses}
"#,
                attempts - failed
            )
        };
        let mut store = Store::new(Duration::from_secs(900));
        let now = Instant::now();
        store.record(
            "emojivoto",
            "web-1",
            scrape(now - Duration::from_secs(10), &text(0, 0, 0)),
        );
        store.record("emojivoto", "web-1", scrape(now, &text(100, 125, 25)));
        let to = RouteScope::To {
            namespace: "emojivoto",
            name: "voting-svc",
        };
        let rows = store.routes(&w, "emojivoto", "web", to, Duration::from_secs(60));
        let names: Vec<&str> = rows.iter().map(|r| r.route.as_str()).collect();
        assert_eq!(names, ["vote", "results", "[default]"]);
        let vote = &rows[0];
        assert_eq!(vote.service.as_deref(), Some("voting-svc.emojivoto"));
        assert!((vote.request_rate - 10.0).abs() < 1e-9, "{vote:?}");
        assert_eq!(vote.success_rate, Some(1.0));
        assert!(
            (vote.actual_request_rate.unwrap() - 12.5).abs() < 1e-9,
            "{vote:?}"
        );
        assert!(
            (vote.actual_success_rate.unwrap() - 0.8).abs() < 1e-9,
            "{vote:?}"
        );
        // A route with no traffic is still shown, with nothing to say.
        assert_eq!((rows[1].success_rate, rows[1].request_rate), (None, 0.0));
        // Inbound: no retries, so no actual figures.
        let rows = store.routes(
            &w,
            "emojivoto",
            "web",
            RouteScope::Inbound,
            Duration::from_secs(60),
        );
        let default = rows.iter().find(|r| r.route == "[default]").unwrap();
        assert_eq!(
            (default.success_rate, default.actual_success_rate),
            (Some(1.0), None)
        );
    }
}
