//! Discovery: what workloads exist, behind one trait with a backend per platform. The
//! local runtime's backend reads the state file its supervisor writes; a Kubernetes
//! backend (watchers on Pods, Services, EndpointSlices) implements the same trait.
//! Also resolves the names a proxy asks about (`svc`, `svc.ns`, `svc.ns.svc.cluster.local`,
//! or a virtual IP) to Services.

use conduit_api::local_state;
use conduit_k8s::{httproute::HttpRoute, policy::Resources, profile::ServiceProfile};
use std::{
    collections::{BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};
use tokio::sync::watch;

/// A snapshot of every workload. Its parts are shared (`Arc`) with the snapshot before
/// it where they did not change, so that what depends on them can tell by identity
/// ([`Input`]) instead of recomputing.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workloads {
    pub pods: Vec<Arc<PodInfo>>,
    pub services: Vec<Arc<ServiceInfo>>,
    /// Servers, AuthorizationPolicies and Namespaces' default policies.
    pub policy: Arc<Resources>,
    /// ServiceProfiles.
    pub profiles: Vec<Arc<ServiceProfile>>,
    /// HTTPRoutes attached to Services.
    pub http_routes: Vec<Arc<HttpRoute>>,
    /// Namespaces annotated `conduit.io/inject: enabled`, whose new pods the injector
    /// meshes.
    pub inject_namespaces: BTreeSet<String>,
    /// Every Namespace (Kubernetes; the local runtime has no Namespace objects).
    pub namespaces: BTreeSet<String>,
    /// Lookups by name and address, built on first use.
    pub lookup: Lookup,
    /// The source's version of this snapshot (the local state's generation), so that a
    /// client can tell the control plane has caught up with a change.
    pub generation: u64,
    /// Service ports whose server speaks first, as proxies reported (not the source's:
    /// the Destination API adds them, [`crate::destination`]).
    pub server_first: Arc<BTreeSet<ServicePortKey>>,
}

/// A Service port: its namespace, name and port.
pub type ServicePortKey = (String, String, u16);

/// A pod as discovery sees it is what the HTTP API lists of it, so discovery keeps it as
/// the API's type.
pub use conduit_api::http::Pod as PodInfo;

/// Services, their ports and their ready endpoints are what the HTTP API lists of them,
/// so discovery keeps them as the API's types.
pub use conduit_api::http::{
    Service as ServiceInfo, ServiceEndpoint as EndpointInfo, ServicePort as ServicePortInfo,
};

/// Where each Service and pod is in a snapshot, by name and address: every proxy's
/// stream asks again after every change, and a scan of thousands would cost each of them.
/// Built once per snapshot, on first use, so a snapshot is not changed after a lookup
/// (published ones never are); not part of a snapshot's value (always equal, and a clone
/// starts empty).
#[derive(Default)]
pub struct Lookup {
    /// Services by (namespace, name).
    services: OnceLock<HashMap<(String, String), usize>>,
    /// Services by virtual IP.
    vips: OnceLock<HashMap<IpAddr, usize>>,
    /// Pods by IP (the first with an address keeps it, as a scan would find it).
    pods: OnceLock<HashMap<IpAddr, usize>>,
    /// Pods by (namespace, name).
    pod_names: OnceLock<HashMap<(String, String), usize>>,
    /// ServiceProfiles by name (the Service's fully qualified name).
    profiles: OnceLock<HashMap<String, usize>>,
    /// The HTTPRoutes attached to each Service, by (namespace, name).
    http_routes: OnceLock<HashMap<(String, String), Vec<usize>>>,
}

/// Positions by key, the first of equal keys winning.
fn positions<K: std::hash::Hash + Eq, T>(items: &[T], key: impl Fn(&T) -> K) -> HashMap<K, usize> {
    let mut map = HashMap::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        map.entry(key(item)).or_insert(i);
    }
    map
}

impl Clone for Lookup {
    fn clone(&self) -> Self {
        Lookup::default()
    }
}

impl PartialEq for Lookup {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Lookup {}

impl std::fmt::Debug for Lookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lookup")
    }
}

impl Workloads {
    /// The Service port an authority (`host[:port]`) names, from a pod in `context_ns`.
    /// The port defaults to 80, as HTTP's does.
    pub fn resolve(
        &self,
        authority: &str,
        context_ns: &str,
    ) -> Option<(&Arc<ServiceInfo>, &ServicePortInfo)> {
        let (service, port) = self.service_of(authority, context_ns)?;
        let port = service.ports.iter().find(|p| p.port == port)?;
        Some((service, port))
    }

    /// The Service an authority names, whichever of its ports it names (what a Service's
    /// profile is looked up by: a server's proxy sees its pod's port, not the Service's),
    /// and the port it names.
    pub fn service_of(
        &self,
        authority: &str,
        context_ns: &str,
    ) -> Option<(&Arc<ServiceInfo>, u16)> {
        let (host, port) = split_authority(authority)?;
        let service = match host.parse::<IpAddr>() {
            Ok(ip) => {
                let vips = self
                    .lookup
                    .vips
                    .get_or_init(|| positions(&self.services, |s| s.vip));
                &self.services[*vips.get(&ip)?]
            }
            Err(_) => {
                let host = host.trim_end_matches('.');
                let host = host
                    .strip_suffix(".svc.cluster.local")
                    .or_else(|| host.strip_suffix(".svc"))
                    .unwrap_or(host);
                let (name, ns) = host.split_once('.').unwrap_or((host, context_ns));
                if ns.contains('.') {
                    return None;
                }
                self.service(ns, name)?
            }
        };
        Some((service, port))
    }

    /// The Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceInfo>> {
        let key = (namespace.to_string(), name.to_string());
        let names = (self.lookup.services)
            .get_or_init(|| positions(&self.services, |s| (s.namespace.clone(), s.name.clone())));
        Some(&self.services[*names.get(&key)?])
    }

    /// The profile of Service `namespace/name`, if it has one.
    pub fn profile(&self, namespace: &str, name: &str) -> Option<&Arc<ServiceProfile>> {
        let names =
            (self.lookup.profiles).get_or_init(|| positions(&self.profiles, |p| p.name.clone()));
        let fqdn = conduit_api::control_plane::service_fqdn(name, namespace);
        Some(&self.profiles[*names.get(&fqdn)?])
    }

    /// The HTTPRoutes attached to Service `namespace/name` (on any of its ports).
    pub fn http_routes(&self, namespace: &str, name: &str) -> Vec<Arc<HttpRoute>> {
        let attached = self.lookup.http_routes.get_or_init(|| {
            let mut map: HashMap<(String, String), Vec<usize>> = HashMap::new();
            for (i, r) in self.http_routes.iter().enumerate() {
                let mut parents: Vec<&str> = r.parents.iter().map(|p| p.name.as_str()).collect();
                parents.sort_unstable();
                parents.dedup();
                for parent in parents {
                    map.entry((r.namespace.clone(), parent.to_string()))
                        .or_default()
                        .push(i);
                }
            }
            map
        });
        let key = (namespace.to_string(), name.to_string());
        (attached.get(&key).into_iter().flatten())
            .map(|&i| self.http_routes[i].clone())
            .collect()
    }

    /// The pod with this IP.
    pub fn pod_by_ip(&self, ip: IpAddr) -> Option<&Arc<PodInfo>> {
        let ips = self
            .lookup
            .pods
            .get_or_init(|| positions(&self.pods, |p| p.ip));
        Some(&self.pods[*ips.get(&ip)?])
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<&Arc<PodInfo>> {
        let key = (namespace.to_string(), name.to_string());
        let names = (self.lookup.pod_names)
            .get_or_init(|| positions(&self.pods, |p| (p.namespace.clone(), p.name.clone())));
        Some(&self.pods[*names.get(&key)?])
    }
}

/// Splits `host:port`, `[v6]:port` or `host` (port 80).
pub fn split_authority(authority: &str) -> Option<(&str, u16)> {
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        let host = authority
            .rsplit_once(':')?
            .0
            .trim_start_matches('[')
            .trim_end_matches(']');
        return Some((host, addr.port()));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => Some((host, port.parse().ok()?)),
        _ if !authority.is_empty() => Some((authority, 80)),
        _ => None,
    }
}

/// A source of workload snapshots.
pub trait Discovery: Send + Sync + 'static {
    /// The current snapshot, updated as workloads change.
    fn watch(&self) -> watch::Receiver<Arc<Workloads>>;

    /// Whether the snapshots are complete and current.
    fn health(&self) -> watch::Receiver<SourceHealth>;
}

/// How current a discovery source's snapshots are: the controller's readiness.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceHealth {
    /// A first complete snapshot has been published.
    pub synced: bool,
    /// What is failing, if anything; the snapshot is then the last good one.
    pub problems: Vec<String>,
}

impl SourceHealth {
    /// A problem as readiness shows it: what fails, since when, and why.
    pub fn problem(what: &str, since: SystemTime, error: &str) -> String {
        let secs = since.elapsed().unwrap_or_default().as_secs();
        format!("{what}: failing for {secs}s: {error}")
    }
}

/// Discovery from the local runtime's state file, re-read when it changes.
pub struct LocalRegistry {
    rx: watch::Receiver<Arc<Workloads>>,
    health: watch::Receiver<SourceHealth>,
}

impl LocalRegistry {
    /// Polls `state_file` every `interval` and publishes what changed.
    pub fn spawn(state_file: PathBuf, interval: Duration) -> LocalRegistry {
        let (tx, rx) = watch::channel(Arc::new(Workloads::default()));
        let (health_tx, health) = watch::channel(SourceHealth::default());
        tokio::spawn(async move {
            let mut seen: Option<SystemTime> = None;
            let mut failing_since: Option<SystemTime> = None;
            loop {
                let modified = std::fs::metadata(&state_file)
                    .and_then(|m| m.modified())
                    .ok();
                if modified != seen {
                    seen = modified;
                    let problems = match read_local_state(&state_file) {
                        Ok(w) => {
                            failing_since = None;
                            tx.send_if_modified(|cur| {
                                let changed = **cur != w;
                                if changed {
                                    *cur = Arc::new(w);
                                }
                                changed
                            });
                            Vec::new()
                        }
                        Err(error) => {
                            tracing::debug!(%error, "local state not readable");
                            let since = *failing_since.get_or_insert_with(SystemTime::now);
                            let what = format!("the local state {}", state_file.display());
                            vec![SourceHealth::problem(&what, since, &error.to_string())]
                        }
                    };
                    health_tx.send_if_modified(|h| {
                        // Synced once a state was read; the last one is served after.
                        let next = SourceHealth {
                            synced: h.synced || problems.is_empty(),
                            problems,
                        };
                        let changed = *h != next;
                        *h = next;
                        changed
                    });
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(interval).await;
            }
        });
        LocalRegistry { rx, health }
    }
}

impl Discovery for LocalRegistry {
    fn watch(&self) -> watch::Receiver<Arc<Workloads>> {
        self.rx.clone()
    }

    fn health(&self) -> watch::Receiver<SourceHealth> {
        self.health.clone()
    }
}

/// The local runtime's state file, with the policy resources and profiles its supervisor
/// writes into it.
type LocalState = local_state::State<Resources, ServiceProfile, HttpRoute>;

fn read_local_state(path: &std::path::Path) -> std::io::Result<Workloads> {
    let state = local_state::read_json::<LocalState>(path)?.unwrap_or_default();
    Ok(Workloads {
        pods: state
            .pods
            .iter()
            .map(|p| {
                Arc::new(PodInfo {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    deployment: p.deployment.clone(),
                    ip: IpAddr::V4(p.ip),
                    meshed: p.meshed,
                    ready: p.ready,
                    service_account: p.service_account.clone(),
                    labels: p.labels.clone(),
                    named_ports: p.named_ports.clone(),
                    probes: p.probes.clone(),
                    default_policy: p.default_policy,
                })
            })
            .collect(),
        services: state
            .services
            .iter()
            .map(|s| {
                Arc::new(ServiceInfo {
                    namespace: s.namespace.clone(),
                    name: s.name.clone(),
                    vip: IpAddr::V4(s.vip),
                    ports: s
                        .ports
                        .iter()
                        .map(|p| ServicePortInfo {
                            port: p.port,
                            endpoints: p
                                .endpoints
                                .iter()
                                .map(|e| EndpointInfo {
                                    addr: SocketAddr::new(IpAddr::V4(e.ip), e.port),
                                    pod: e.pod.clone(),
                                })
                                .collect(),
                        })
                        .collect(),
                })
            })
            .collect(),
        policy: Arc::new(state.policy),
        profiles: state.profiles.into_iter().map(Arc::new).collect(),
        http_routes: state.http_routes.into_iter().map(Arc::new).collect(),
        inject_namespaces: BTreeSet::new(),
        namespaces: BTreeSet::new(),
        lookup: Lookup::default(),
        generation: state.generation,
        server_first: Default::default(),
    })
}

/// A part of a snapshot an answer was computed from.
#[derive(Clone, Debug)]
pub enum Input {
    Pod(Option<Arc<PodInfo>>),
    Service(Option<Arc<ServiceInfo>>),
    Policy(Arc<Resources>),
    Profile(Option<Arc<ServiceProfile>>),
    HttpRoutes(Vec<Arc<HttpRoute>>),
    /// Whether the name's server speaks first, as proxies reported.
    ServerFirst(bool),
}

impl Input {
    /// The very same part (held, so its address cannot be reused by another).
    fn same(&self, other: &Input) -> bool {
        fn same<T>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
            match (a, b) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
        }
        match (self, other) {
            (Input::Pod(a), Input::Pod(b)) => same(a, b),
            (Input::Service(a), Input::Service(b)) => same(a, b),
            (Input::Policy(a), Input::Policy(b)) => Arc::ptr_eq(a, b),
            (Input::Profile(a), Input::Profile(b)) => same(a, b),
            (Input::HttpRoutes(a), Input::HttpRoutes(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| Arc::ptr_eq(a, b))
            }
            (Input::ServerFirst(a), Input::ServerFirst(b)) => a == b,
            _ => false,
        }
    }
}

/// `answer`, computed again only when one of the parts `inputs` names is not the very
/// same as last time: with thousands of streams, most changes concern none of them.
pub fn when_changed<T>(
    inputs: impl Fn(&Workloads) -> Vec<Input> + Send + 'static,
    answer: impl Fn(&Workloads) -> Option<T> + Send + 'static,
) -> impl FnMut(&Workloads) -> Option<T> + Send + 'static {
    let mut last: Option<Vec<Input>> = None;
    move |w| {
        let now = inputs(w);
        let unchanged = last.as_ref().is_some_and(|last| {
            last.len() == now.len() && last.iter().zip(&now).all(|(a, b)| a.same(b))
        });
        if unchanged {
            return None;
        }
        last = Some(now);
        answer(w)
    }
}

/// A stream of what `answer` makes of each snapshot of `workloads`: the first answer at
/// once, then a new one whenever a change makes it differ. `None` sends nothing (yet).
/// Ends when the receiver goes away.
pub fn follow<T>(
    mut workloads: watch::Receiver<Arc<Workloads>>,
    mut answer: impl FnMut(&Workloads) -> Option<T> + Send + 'static,
) -> std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>
where
    T: Clone + PartialEq + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            let next = answer(&workloads.borrow_and_update());
            if let Some(next) = next.filter(|n| last.as_ref() != Some(n)) {
                if tx.send(Ok(next.clone())).await.is_err() {
                    return; // the proxy went away
                }
                last = Some(next);
            }
            tokio::select! {
                changed = workloads.changed() => if changed.is_err() { return },
                () = tx.closed() => return,
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub fn sample() -> Workloads {
        let pod = |ns: &str, name: &str, dep: &str, ip: [u8; 4]| PodInfo {
            namespace: ns.into(),
            name: name.into(),
            deployment: dep.into(),
            ip: IpAddr::from(ip),
            meshed: true,
            ready: true,
            service_account: dep.into(),
            labels: BTreeMap::from([("app".to_string(), format!("{dep}-svc"))]),
            named_ports: BTreeMap::new(),
            probes: Vec::new(),
            default_policy: None,
        };
        Workloads {
            pods: vec![
                Arc::new(pod("emojivoto", "web-1", "web", [198, 18, 0, 4])),
                Arc::new(pod("emojivoto", "voting-1", "voting", [198, 18, 0, 3])),
                Arc::new(pod("emojivoto", "vote-bot-1", "vote-bot", [198, 18, 0, 5])),
            ],
            services: vec![
                Arc::new(ServiceInfo {
                    namespace: "emojivoto".into(),
                    name: "web-svc".into(),
                    vip: IpAddr::from([198, 19, 0, 3]),
                    ports: vec![ServicePortInfo {
                        port: 80,
                        endpoints: vec![EndpointInfo {
                            addr: "198.18.0.4:8080".parse().unwrap(),
                            pod: "web-1".into(),
                        }],
                    }],
                }),
                Arc::new(ServiceInfo {
                    namespace: "emojivoto".into(),
                    name: "voting-svc".into(),
                    vip: IpAddr::from([198, 19, 0, 2]),
                    ports: vec![ServicePortInfo {
                        port: 8080,
                        endpoints: vec![EndpointInfo {
                            addr: "198.18.0.3:8080".parse().unwrap(),
                            pod: "voting-1".into(),
                        }],
                    }],
                }),
            ],
            policy: Arc::new(Resources::default()),
            profiles: Vec::new(),
            http_routes: Vec::new(),
            inject_namespaces: BTreeSet::new(),
            namespaces: BTreeSet::new(),
            lookup: Lookup::default(),
            generation: 0,
            server_first: Default::default(),
        }
    }

    #[test]
    fn resolves_every_form_of_a_service_name() {
        let w = sample();
        for authority in [
            "web-svc",
            "web-svc:80",
            "web-svc.emojivoto",
            "web-svc.emojivoto:80",
            "web-svc.emojivoto.svc:80",
            "web-svc.emojivoto.svc.cluster.local:80",
            "web-svc.emojivoto.svc.cluster.local.:80",
            "198.19.0.3:80",
        ] {
            let (s, p) = w
                .resolve(authority, "emojivoto")
                .unwrap_or_else(|| panic!("{authority}"));
            assert_eq!((s.name.as_str(), p.port), ("web-svc", 80), "{authority}");
        }
        assert!(
            w.resolve("web-svc", "default").is_none(),
            "short names resolve in the asking namespace"
        );
        assert!(
            w.resolve("web-svc:81", "emojivoto").is_none(),
            "no such port"
        );
        assert!(w.resolve("example.com:80", "emojivoto").is_none());
        assert_eq!(
            w.resolve("voting-svc:8080", "emojivoto")
                .unwrap()
                .1
                .endpoints
                .len(),
            1
        );
    }

    #[test]
    fn answers_again_only_when_their_inputs_change() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let mut answer = when_changed(
            |w: &Workloads| vec![Input::Pod(w.pod("emojivoto", "web-1").cloned())],
            move |w: &Workloads| {
                counted.fetch_add(1, Ordering::Relaxed);
                Some(w.pods.len())
            },
        );
        let w = sample();
        assert_eq!(answer(&w), Some(3));
        // Another snapshot sharing the pod, another pod changed: no new answer.
        let mut other = w.clone();
        Arc::make_mut(&mut other.pods[1]).ready = false;
        assert_eq!(answer(&other), None);
        // The pod itself changed (an equal copy is not the very same): answered again.
        let mut changed = other.clone();
        changed.pods[0] = Arc::new((*changed.pods[0]).clone());
        assert_eq!(answer(&changed), Some(3));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn splits_authorities() {
        assert_eq!(split_authority("a:1"), Some(("a", 1)));
        assert_eq!(split_authority("a"), Some(("a", 80)));
        assert_eq!(split_authority("[::1]:8080"), Some(("::1", 8080)));
        assert_eq!(split_authority("198.18.0.1:9"), Some(("198.18.0.1", 9)));
        assert_eq!(split_authority(""), None);
    }
}
