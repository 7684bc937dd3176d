//! Discovery from the Kubernetes API: watches on Pods, Services, EndpointSlices,
//! Namespaces, Servers, AuthorizationPolicies and ServiceProfiles. Each object is reduced on arrival to
//! what the control plane uses (memory holds no full objects), and one [`Workloads`]
//! snapshot is rebuilt after each burst of changes. kube-runtime's watcher resumes from
//! the last resourceVersion, lists again after 410 Gone and retries failures with
//! backoff; meanwhile the last snapshot is still served and [`SourceHealth`] (the
//! controller's readiness) and the logs say what fails.

use crate::discovery::{
    Discovery, EndpointInfo, PodInfo, ServiceInfo, ServicePortInfo, SourceHealth, Workloads,
};
use conduit_api::names::{
    DEFAULT_POLICY_ANNOTATION, DEPLOYMENT_LABEL, INJECT_ANNOTATION, INJECT_ENABLED, PROXY_CONTAINER,
};
use conduit_k8s::{
    httproute::{self, HttpRoute},
    manifest::Document,
    policy::{self, AuthorizationPolicy, Resources, Server},
    profile::{self, ServiceProfile},
};
use conduit_policy::{DefaultPolicy, Probe};
use futures_util::{stream::BoxStream, StreamExt};
use k8s_openapi::api::{
    core::v1::{Container, Namespace, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    api::{ApiResource, DynamicObject, GroupVersionKind},
    runtime::{watcher, WatchStreamExt},
    Api, Client, Resource, ResourceExt,
};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime},
};
use tokio::sync::watch;

/// How long to gather changes before publishing a snapshot: a burst (a rollout, a
/// re-list) becomes one snapshot, and a single change still reaches proxies at once.
const SETTLE: Duration = Duration::from_millis(5);

/// Discovery from the Kubernetes API.
pub struct KubernetesDiscovery {
    workloads: watch::Receiver<Arc<Workloads>>,
    health: watch::Receiver<SourceHealth>,
}

impl KubernetesDiscovery {
    /// Starts watching the whole cluster with `client`.
    pub fn spawn(client: Client) -> KubernetesDiscovery {
        let (workloads_tx, workloads) = watch::channel(Arc::new(Workloads::default()));
        let (health_tx, health) = watch::channel(SourceHealth::default());
        tokio::spawn(run(client, workloads_tx, health_tx));
        KubernetesDiscovery { workloads, health }
    }
}

impl Discovery for KubernetesDiscovery {
    fn watch(&self) -> watch::Receiver<Arc<Workloads>> {
        self.workloads.clone()
    }

    fn health(&self) -> watch::Receiver<SourceHealth> {
        self.health.clone()
    }
}

/// The watches, by what they watch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Pods,
    Services,
    EndpointSlices,
    Namespaces,
    Servers,
    AuthorizationPolicies,
    ServiceProfiles,
    HttpRoutes,
}

impl Source {
    const ALL: [Source; 8] = [
        Source::Pods,
        Source::Services,
        Source::EndpointSlices,
        Source::Namespaces,
        Source::Servers,
        Source::AuthorizationPolicies,
        Source::ServiceProfiles,
        Source::HttpRoutes,
    ];

    fn resource(self) -> ApiResource {
        match self {
            Source::Pods => ApiResource::erase::<Pod>(&()),
            Source::Services => ApiResource::erase::<Service>(&()),
            Source::EndpointSlices => ApiResource::erase::<EndpointSlice>(&()),
            Source::Namespaces => ApiResource::erase::<Namespace>(&()),
            Source::Servers => custom("policy.conduit.io", "v1alpha1", "Server"),
            Source::AuthorizationPolicies => {
                custom("policy.conduit.io", "v1alpha1", "AuthorizationPolicy")
            }
            Source::ServiceProfiles => custom("conduit.io", "v1alpha1", "ServiceProfile"),
            Source::HttpRoutes => custom(httproute::GROUP, "v1", "HTTPRoute"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Source::Pods => "pods",
            Source::Services => "services",
            Source::EndpointSlices => "endpointslices",
            Source::Namespaces => "namespaces",
            Source::Servers => "servers.policy.conduit.io",
            Source::AuthorizationPolicies => "authorizationpolicies.policy.conduit.io",
            Source::ServiceProfiles => "serviceprofiles.conduit.io",
            Source::HttpRoutes => "httproutes.gateway.networking.k8s.io",
        }
    }
}

/// One event of one watch (boxed: objects are large, and an event is one move).
enum Update {
    Pod(Box<watcher::Event<Pod>>),
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
    Namespace(Box<watcher::Event<Namespace>>),
    Server(Box<watcher::Event<DynamicObject>>),
    Authorization(Box<watcher::Event<DynamicObject>>),
    Profile(Box<watcher::Event<DynamicObject>>),
    HttpRoute(Box<watcher::Event<DynamicObject>>),
}

type Updates = BoxStream<'static, (Source, Result<Update, watcher::Error>)>;

fn watch_all<K>(api: Api<K>, source: Source, wrap: fn(Box<watcher::Event<K>>) -> Update) -> Updates
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, watcher::Config::default())
        .default_backoff()
        .map(move |r| (source, r.map(|e| wrap(Box::new(e)))))
        .boxed()
}

/// One of the mesh's own resources (all `v1alpha1`).
fn custom(group: &str, version: &str, kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// The cluster-wide API of what `source` watches, untyped.
fn dynamic_api(client: &Client, source: Source) -> Api<DynamicObject> {
    Api::all_with(client.clone(), &source.resource())
}

/// What the run loop reacts to: a watch's event or error, or a failing watch's resource
/// answering again.
enum Input {
    Watch(Source, Result<Update, watcher::Error>),
    Answered(Source),
}

async fn run(
    client: Client,
    workloads: watch::Sender<Arc<Workloads>>,
    health: watch::Sender<SourceHealth>,
) {
    let updates = futures_util::stream::select_all([
        watch_all(Api::all(client.clone()), Source::Pods, Update::Pod),
        watch_all(Api::all(client.clone()), Source::Services, Update::Service),
        watch_all(
            Api::all(client.clone()),
            Source::EndpointSlices,
            Update::Slice,
        ),
        watch_all(
            Api::all(client.clone()),
            Source::Namespaces,
            Update::Namespace,
        ),
        watch_all(
            dynamic_api(&client, Source::Servers),
            Source::Servers,
            Update::Server,
        ),
        watch_all(
            dynamic_api(&client, Source::AuthorizationPolicies),
            Source::AuthorizationPolicies,
            Update::Authorization,
        ),
        watch_all(
            dynamic_api(&client, Source::ServiceProfiles),
            Source::ServiceProfiles,
            Update::Profile,
        ),
        watch_all(
            dynamic_api(&client, Source::HttpRoutes),
            Source::HttpRoutes,
            Update::HttpRoute,
        ),
    ]);
    let (answered_tx, answered) = tokio::sync::mpsc::unbounded_channel();
    let mut inputs = futures_util::stream::select(
        updates.map(|(source, update)| Input::Watch(source, update)),
        tokio_stream::wrappers::UnboundedReceiverStream::new(answered).map(Input::Answered),
    );
    let mut cluster = Cluster::default();
    let mut failures = Failures {
        failing: BTreeMap::new(),
        client,
        answered: answered_tx,
    };
    while let Some(input) = inputs.next().await {
        let mut changed = false;
        let mut apply = |input: Input| match input {
            Input::Watch(source, Ok(update)) => {
                changed |= failures.recovered(source);
                changed |= cluster.apply(source, update);
            }
            Input::Watch(source, Err(error)) => {
                failures.failed(source, error.to_string());
                changed = true;
            }
            Input::Answered(source) => changed |= failures.recovered(source),
        };
        apply(input);
        // Gather whatever else is arriving before publishing.
        let settle = tokio::time::sleep(SETTLE);
        tokio::pin!(settle);
        loop {
            tokio::select! {
                next = inputs.next() => match next {
                    Some(input) => apply(input),
                    None => break,
                },
                () = &mut settle => break,
            }
        }
        if !changed {
            continue;
        }
        let synced = cluster.listed.len() == Source::ALL.len();
        health.send_if_modified(|h| {
            let next = SourceHealth {
                synced,
                problems: failures.problems(),
            };
            let modified = *h != next;
            *h = next;
            modified
        });
        if synced {
            workloads.send_if_modified(|current| {
                let next = cluster.snapshot(current);
                let modified = !same_content(current, &next);
                if modified {
                    *current = Arc::new(next);
                }
                modified
            });
        }
    }
}

/// How often a failing watch's resource is asked whether it answers again.
const RECHECK: Duration = Duration::from_secs(2);

/// The watches that fail, since when and why. A watch that resumes sends nothing until
/// something changes, so each failing resource is also listed (one item) every
/// [`RECHECK`] until the API answers for it again.
struct Failures {
    failing: BTreeMap<Source, (SystemTime, String)>,
    client: Client,
    answered: tokio::sync::mpsc::UnboundedSender<Source>,
}

impl Failures {
    fn failed(&mut self, source: Source, error: String) {
        if let Some((_, last)) = self.failing.get_mut(&source) {
            *last = error;
            return;
        }
        tracing::warn!(watch = source.name(), %error, "Kubernetes API watch failing; serving the last state meanwhile");
        self.failing.insert(source, (SystemTime::now(), error));
        let api = dynamic_api(&self.client, source);
        let answered = self.answered.clone();
        tokio::spawn(async move {
            let one = kube::api::ListParams::default().limit(1);
            while !answered.is_closed() {
                tokio::time::sleep(RECHECK).await;
                if api.list_metadata(&one).await.is_ok() {
                    let _ = answered.send(source);
                    return;
                }
            }
        });
    }

    /// Returns whether `source` was failing.
    fn recovered(&mut self, source: Source) -> bool {
        let Some((since, _)) = self.failing.remove(&source) else {
            return false;
        };
        let down_s = since.elapsed().unwrap_or_default().as_secs();
        tracing::info!(
            watch = source.name(),
            down_s,
            "Kubernetes API watch recovered"
        );
        true
    }

    fn problems(&self) -> Vec<String> {
        self.failing
            .iter()
            .map(|(source, (since, error))| SourceHealth::problem(source.name(), *since, error))
            .collect()
    }
}

/// Whether two snapshots hold the same workloads (generations aside).
fn same_content(a: &Workloads, b: &Workloads) -> bool {
    // Every field named, so that a new one cannot be left out of the comparison.
    let Workloads {
        pods,
        services,
        policy,
        profiles,
        http_routes,
        inject_namespaces,
        namespaces,
        lookup: _,
        generation: _,
        server_first: _,
    } = a;
    *pods == b.pods
        && *services == b.services
        && *policy == b.policy
        && *profiles == b.profiles
        && *http_routes == b.http_routes
        && *inject_namespaces == b.inject_namespaces
        && *namespaces == b.namespaces
}

/// One kind's objects, reduced, by namespace and name; kept in step with a watch.
struct Index<T> {
    items: BTreeMap<(String, String), T>,
    /// Objects of a list in progress: they replace `items` when it is complete.
    relisting: Option<BTreeMap<(String, String), T>>,
}

impl<T> Default for Index<T> {
    fn default() -> Self {
        Index {
            items: BTreeMap::new(),
            relisting: None,
        }
    }
}

/// What becomes of an object whose new version cannot be used.
#[derive(Clone, Copy)]
enum Refused {
    /// It is gone (what `reduce` leaves out, such as a pod without an address).
    Remove,
    /// Its last good version stays (a profile a user got wrong: the proxies keep its
    /// routes; the refusal is logged).
    KeepLastGood,
}

impl<T> Index<T> {
    /// Applies a watch event; `reduce` keeps what matters of an object (`None`: nothing,
    /// as for a pod without an address). Returns whether the visible items changed and
    /// whether a list completed.
    fn apply<K: Resource>(
        &mut self,
        event: watcher::Event<K>,
        reduce: impl Fn(&K) -> Option<T>,
    ) -> (bool, bool)
    where
        T: Clone,
    {
        self.apply_refusing(event, reduce, Refused::Remove)
    }

    /// [`apply`](Self::apply), where an object `reduce` refuses is handled as `refused`
    /// says.
    fn apply_refusing<K: Resource>(
        &mut self,
        event: watcher::Event<K>,
        reduce: impl Fn(&K) -> Option<T>,
        refused: Refused,
    ) -> (bool, bool)
    where
        T: Clone,
    {
        let key = |k: &K| (k.namespace().unwrap_or_default(), k.name_any());
        match event {
            watcher::Event::Apply(k) => {
                match (reduce(&k), refused) {
                    (Some(t), _) => {
                        self.items.insert(key(&k), t);
                    }
                    (None, Refused::Remove) => {
                        self.items.remove(&key(&k));
                    }
                    (None, Refused::KeepLastGood) => return (false, false),
                };
                (true, false)
            }
            watcher::Event::Delete(k) => (self.items.remove(&key(&k)).is_some(), false),
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                (false, false)
            }
            watcher::Event::InitApply(k) => {
                let t = match (reduce(&k), refused) {
                    (Some(t), _) => Some(t),
                    (None, Refused::KeepLastGood) => self.items.get(&key(&k)).cloned(),
                    (None, Refused::Remove) => None,
                };
                if let (Some(list), Some(t)) = (self.relisting.as_mut(), t) {
                    list.insert(key(&k), t);
                }
                (false, false)
            }
            watcher::Event::InitDone => {
                if let Some(list) = self.relisting.take() {
                    self.items = list;
                }
                (true, true)
            }
        }
    }
}

/// What discovery keeps of a Service.
#[derive(Clone, Debug, PartialEq)]
struct ServiceFacts {
    vip: IpAddr,
    /// Port names (`""` when unnamed) and numbers.
    ports: Vec<(String, u16)>,
}

/// What discovery keeps of an EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
struct SliceFacts {
    service: String,
    /// Port names (`""` when unnamed) and the numbers endpoints listen on.
    ports: Vec<(String, u16)>,
    /// Ready addresses and their pods.
    endpoints: Vec<(IpAddr, String)>,
}

/// What discovery keeps of a Namespace.
#[derive(Clone, Debug, PartialEq)]
struct NamespaceFacts {
    default_policy: Option<DefaultPolicy>,
    inject: bool,
}

/// The cluster as the watches have shown it so far.
#[derive(Default)]
struct Cluster {
    pods: Index<Arc<PodInfo>>,
    services: Index<ServiceFacts>,
    slices: Index<SliceFacts>,
    namespaces: Index<NamespaceFacts>,
    servers: Index<Server>,
    authorizations: Index<AuthorizationPolicy>,
    profiles: Index<Arc<ServiceProfile>>,
    http_routes: Index<Arc<HttpRoute>>,
    /// The watches that have completed a first list.
    listed: BTreeSet<Source>,
}

impl Cluster {
    /// Applies one event; returns whether anything visible changed.
    fn apply(&mut self, source: Source, update: Update) -> bool {
        let (changed, listed) = match update {
            Update::Pod(e) => self.pods.apply(*e, |p| pod_info(p).map(Arc::new)),
            Update::Service(e) => self.services.apply(*e, service_facts),
            Update::Slice(e) => self.slices.apply(*e, slice_facts),
            Update::Namespace(e) => self.namespaces.apply(*e, namespace_facts),
            Update::Server(e) => self
                .servers
                .apply(*e, |o| from_api(o, "Server", policy::server)),
            Update::Authorization(e) => self.authorizations.apply(*e, |o| {
                from_api(o, "AuthorizationPolicy", policy::authorization_policy)
            }),
            Update::Profile(e) => self.profiles.apply_refusing(
                *e,
                |o| from_api(o, "ServiceProfile", profile::service_profile).map(Arc::new),
                Refused::KeepLastGood,
            ),
            Update::HttpRoute(e) => self.http_routes.apply_refusing(
                *e,
                |o| from_api(o, "HTTPRoute", httproute::http_route).map(Arc::new),
                Refused::KeepLastGood,
            ),
        };
        if listed {
            self.listed.insert(source);
        }
        changed
    }

    /// The snapshot of everything seen, sharing with `previous` the parts that did not
    /// change.
    fn snapshot(&self, previous: &Workloads) -> Workloads {
        let mut slices: HashMap<(&str, &str), Vec<&SliceFacts>> = HashMap::new();
        for ((ns, _), slice) in &self.slices.items {
            slices.entry((ns, &slice.service)).or_default().push(slice);
        }
        let services = self
            .services
            .items
            .iter()
            .map(|((ns, name), svc)| {
                let slices = slices.get(&(ns.as_str(), name.as_str()));
                let built = ServiceInfo {
                    namespace: ns.clone(),
                    name: name.clone(),
                    vip: svc.vip,
                    ports: svc
                        .ports
                        .iter()
                        .map(|(port_name, port)| ServicePortInfo {
                            port: *port,
                            endpoints: endpoints(slices.map_or(&[][..], Vec::as_slice), port_name),
                        })
                        .collect(),
                };
                match previous.service(ns, name) {
                    Some(before) if **before == built => before.clone(),
                    _ => Arc::new(built),
                }
            })
            .collect();
        let namespaces = &self.namespaces.items;
        let policy = Resources {
            servers: self.servers.items.values().cloned().collect(),
            authorization_policies: self.authorizations.items.values().cloned().collect(),
            namespace_defaults: namespaces
                .iter()
                .filter_map(|((_, name), ns)| Some((name.clone(), ns.default_policy?)))
                .collect(),
        };
        Workloads {
            pods: self.pods.items.values().cloned().collect(),
            services,
            policy: if *previous.policy == policy {
                previous.policy.clone()
            } else {
                Arc::new(policy)
            },
            inject_namespaces: namespaces
                .iter()
                .filter(|(_, ns)| ns.inject)
                .map(|((_, name), _)| name.clone())
                .collect(),
            namespaces: namespaces.keys().map(|(_, name)| name.clone()).collect(),
            profiles: self.profiles.items.values().cloned().collect(),
            http_routes: self.http_routes.items.values().cloned().collect(),
            lookup: Default::default(),
            generation: previous.generation + 1,
            server_first: Default::default(),
        }
    }
}

/// The ready endpoints of a Service port (by its name) across its EndpointSlices, in
/// address order.
fn endpoints(slices: &[&SliceFacts], port_name: &str) -> Vec<EndpointInfo> {
    let mut out: Vec<EndpointInfo> = slices
        .iter()
        .filter_map(|s| {
            let port = s.ports.iter().find(|(n, _)| n == port_name)?.1;
            Some(s.endpoints.iter().map(move |(ip, pod)| EndpointInfo {
                addr: SocketAddr::new(*ip, port),
                pod: pod.clone(),
            }))
        })
        .flatten()
        .collect();
    out.sort_by_key(|e| e.addr);
    out.dedup_by_key(|e| e.addr);
    out
}

/// What discovery keeps of a pod: nothing until it has an address.
fn pod_info(pod: &Pod) -> Option<PodInfo> {
    let spec = pod.spec.as_ref()?;
    let status = pod.status.as_ref()?;
    let ip: IpAddr = status.pod_ip.as_deref()?.parse().ok()?;
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return None; // its address may already belong to another pod
    }
    let labels = pod.labels().clone();
    let annotations = pod.annotations();
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .collect();
    let named_ports: BTreeMap<String, u16> = containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| Some((p.name.clone()?, u16::try_from(p.container_port).ok()?)))
        .collect();
    let probes = containers
        .iter()
        .filter(|c| c.name != PROXY_CONTAINER)
        .flat_map(|c| [&c.readiness_probe, &c.liveness_probe, &c.startup_probe])
        .filter_map(|p| p.as_ref()?.http_get.as_ref())
        .filter_map(|get| {
            let port = match &get.port {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n) => {
                    u16::try_from(*n).ok()?
                }
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(name) => {
                    *named_ports.get(name)?
                }
            };
            Some(Probe {
                port,
                path: get.path.clone().unwrap_or_else(|| "/".into()),
            })
        })
        .collect();
    let ready = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    Some(PodInfo {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        deployment: workload_name(pod),
        ip,
        meshed: containers.iter().any(|c| c.name == PROXY_CONTAINER),
        ready,
        service_account: spec
            .service_account_name
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "default".into()),
        default_policy: annotations
            .get(DEFAULT_POLICY_ANNOTATION)
            .and_then(|p| p.parse().ok()),
        labels,
        named_ports,
        probes,
    })
}

/// The workload a pod belongs to: the deployment `conduit inject` labelled it with, the
/// Deployment behind its ReplicaSet, its other owner, or itself.
fn workload_name(pod: &Pod) -> String {
    if let Some(name) = pod.labels().get(DEPLOYMENT_LABEL) {
        return name.clone();
    }
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true));
    match owner {
        Some(o) if o.kind == "ReplicaSet" => {
            let hash = pod.labels().get("pod-template-hash");
            hash.and_then(|h| o.name.strip_suffix(&format!("-{h}")))
                .unwrap_or(&o.name)
                .to_string()
        }
        Some(o) => o.name.clone(),
        None => pod.name_any(),
    }
}

/// A TCP port's name (`""` when unnamed) and number, as Services and EndpointSlices list
/// them (the protocol defaults to TCP); `None` for another protocol or no number.
fn tcp_port(
    protocol: Option<&str>,
    name: Option<&String>,
    port: Option<i32>,
) -> Option<(String, u16)> {
    if protocol.unwrap_or("TCP") != "TCP" {
        return None;
    }
    Some((
        name.cloned().unwrap_or_default(),
        u16::try_from(port?).ok()?,
    ))
}

/// What discovery keeps of a Service: nothing for one without a virtual IP (headless,
/// ExternalName), which proxies reach by its pods' addresses instead.
fn service_facts(svc: &Service) -> Option<ServiceFacts> {
    let spec = svc.spec.as_ref()?;
    let vip: IpAddr = spec.cluster_ip.as_deref()?.parse().ok()?;
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| tcp_port(p.protocol.as_deref(), p.name.as_ref(), Some(p.port)))
        .collect();
    Some(ServiceFacts { vip, ports })
}

/// What discovery keeps of an EndpointSlice: its Service, ports and ready endpoints.
fn slice_facts(slice: &EndpointSlice) -> Option<SliceFacts> {
    let service = slice.labels().get("kubernetes.io/service-name")?.clone();
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| tcp_port(p.protocol.as_deref(), p.name.as_ref(), p.port))
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        // Unset means ready, as the API documents.
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true))
        .flat_map(|e| {
            let pod = e
                .target_ref
                .as_ref()
                .filter(|t| t.kind.as_deref() == Some("Pod"))
                .and_then(|t| t.name.clone())
                .unwrap_or_default();
            e.addresses
                .iter()
                .filter_map(move |a| Some((a.parse().ok()?, pod.clone())))
        })
        .collect();
    Some(SliceFacts {
        service,
        ports,
        endpoints,
    })
}

fn namespace_facts(ns: &Namespace) -> Option<NamespaceFacts> {
    let annotations = ns.annotations();
    let default_policy = match annotations.get(DEFAULT_POLICY_ANNOTATION) {
        None => None,
        Some(p) => match p.parse() {
            Ok(p) => Some(p),
            Err(error) => {
                tracing::warn!(namespace = %ns.name_any(), %error, "ignoring the namespace's default policy annotation");
                None
            }
        },
    };
    Some(NamespaceFacts {
        default_policy,
        inject: annotations.get(INJECT_ANNOTATION).map(String::as_str) == Some(INJECT_ENABLED),
    })
}

/// A policy resource read with the same code as manifests; one the API accepted but that
/// cannot be used (the CRD's schema lets little through) is logged and left out.
fn from_api<T>(
    object: &DynamicObject,
    kind: &str,
    read: fn(&Document) -> Result<T, conduit_k8s::manifest::ManifestError>,
) -> Option<T> {
    let namespace = object.namespace().unwrap_or_default();
    let value = serde_json::to_value(object).ok()?;
    let doc = Document::from_api(kind, &namespace, &object.name_any(), value);
    read(&doc)
        .inspect_err(|error| tracing::warn!(%error, "ignoring a resource that cannot be used"))
        .ok()
}

/// Against the in-memory API server of `conduit-kube-fake`, over real HTTP, with objects
/// shaped like kube-apiserver's (no cluster can run here): lists, watches, bookmarks,
/// 410 Gone, failing and unreachable servers.
#[cfg(test)]
mod tests {
    use super::*;
    use conduit_kube_fake::FakeApiServer;
    use serde_json::{json, Value};

    fn client(api: &FakeApiServer) -> Client {
        let url = api.url().parse().expect("the fake's URL is a URI");
        Client::try_from(kube::Config::new(url)).expect("a client for the fake")
    }

    /// Waits (up to 20 s) for a value of `rx` that satisfies `ok`.
    async fn until<T: Clone + std::fmt::Debug>(
        rx: &mut watch::Receiver<T>,
        what: &str,
        ok: impl Fn(&T) -> bool,
    ) -> T {
        let waited = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|v| ok(v)))
            .await
            .map(|r| r.map(|v| v.clone()));
        match waited {
            Ok(Ok(v)) => v,
            _ => panic!("never {what}; the last: {:#?}", rx.borrow()),
        }
    }

    fn namespace(name: &str, annotations: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}, "annotations": annotations},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"},
        })
    }

    /// A pod of Deployment `web` as the API server returns it once scheduled and ready,
    /// with the proxy injected as a native sidecar.
    fn web_pod(name: &str, ip: &str, ready: bool) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": name, "namespace": "emojivoto", "generateName": "web-5d4f8b8c7-",
                "labels": {"app": "web-svc", "pod-template-hash": "5d4f8b8c7", "version": "v11"},
                "annotations": {"conduit.io/proxy-version": "0.1.0", "config.conduit.io/default-inbound-policy": "all-authenticated"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f8b8c7",
                    "uid": "4c7e1a2b-0d6f-4f5e-9a8b-7c6d5e4f3a2b", "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": {
                "serviceAccountName": "web", "serviceAccount": "web", "nodeName": "worker-1",
                "initContainers": [
                    {"name": "conduit-init", "image": "ghcr.io/conduit/proxy:0.1.0", "args": ["init"]},
                    {"name": "conduit-proxy", "image": "ghcr.io/conduit/proxy:0.1.0", "restartPolicy": "Always",
                     "ports": [{"name": "conduit-admin", "containerPort": 4191, "protocol": "TCP"}]},
                ],
                "containers": [{
                    "name": "web-svc", "image": "docker.l5d.io/buoyantio/emojivoto-web:v11",
                    "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
                    "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http", "scheme": "HTTP"}, "periodSeconds": 10},
                    "livenessProbe": {"httpGet": {"path": "/livez", "port": 8080, "scheme": "HTTP"}},
                }],
                "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
            },
            "status": {
                "phase": "Running", "hostIP": "172.18.0.2", "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": "2026-11-26T00:00:00Z", "qosClass": "Burstable",
                "conditions": [
                    {"type": "Initialized", "status": "True", "lastTransitionTime": "2026-11-26T00:00:01Z"},
                    {"type": "Ready", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-11-26T00:00:03Z"},
                    {"type": "ContainersReady", "status": if ready { "True" } else { "False" }, "lastTransitionTime": "2026-11-26T00:00:03Z"},
                    {"type": "PodScheduled", "status": "True", "lastTransitionTime": "2026-11-26T00:00:00Z"},
                ],
            },
        })
    }

    fn web_service() -> Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web-svc", "namespace": "emojivoto"},
            "spec": {
                "type": "ClusterIP", "clusterIP": "10.96.12.34", "clusterIPs": ["10.96.12.34"],
                "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack", "selector": {"app": "web-svc"},
                "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}],
                "sessionAffinity": "None", "internalTrafficPolicy": "Cluster",
            },
            "status": {"loadBalancer": {}},
        })
    }

    /// The EndpointSlice the endpointslice controller writes for `web-svc`.
    fn web_slice(name: &str, endpoints: &[(&str, &str, bool)]) -> Value {
        let endpoints: Vec<Value> = endpoints
            .iter()
            .map(|(ip, pod, ready)| json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": ready, "terminating": false},
                "nodeName": "worker-1",
                "targetRef": {"kind": "Pod", "name": pod, "namespace": "emojivoto", "uid": format!("uid-{pod}")},
            }))
            .collect();
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": name, "namespace": "emojivoto", "generateName": "web-svc-",
                "labels": {"kubernetes.io/service-name": "web-svc", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": "web-svc", "uid": "uid-web-svc", "controller": true, "blockOwnerDeletion": true}],
            },
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        })
    }

    fn server() -> Value {
        json!({
            "apiVersion": "policy.conduit.io/v1alpha1", "kind": "Server",
            "metadata": {"name": "web-http", "namespace": "emojivoto", "generation": 1},
            "spec": {"podSelector": {"matchLabels": {"app": "web-svc"}}, "port": "http", "proxyProtocol": "HTTP/1"},
        })
    }

    fn authorization() -> Value {
        json!({
            "apiVersion": "policy.conduit.io/v1alpha1", "kind": "AuthorizationPolicy",
            "metadata": {"name": "web-from-bot", "namespace": "emojivoto", "generation": 1},
            "spec": {"targetRef": {"group": "policy.conduit.io", "kind": "Server", "name": "web-http"},
                     "allow": [{"serviceAccount": {"name": "vote-bot"}}]},
        })
    }

    fn emojivoto(api: &FakeApiServer) {
        api.apply(namespace(
            "emojivoto",
            json!({"conduit.io/inject": "enabled", "config.conduit.io/default-inbound-policy": "cluster-authenticated"}),
        ));
        api.apply(namespace("kube-system", json!({})));
        api.apply(web_pod("web-5d4f8b8c7-x2x7q", "10.244.1.7", true));
        api.apply(web_service());
        api.apply(web_slice(
            "web-svc-abcde",
            &[("10.244.1.7", "web-5d4f8b8c7-x2x7q", true)],
        ));
        api.apply(server());
        api.apply(authorization());
        api.apply(json!({
            "apiVersion": "conduit.io/v1alpha1", "kind": "ServiceProfile",
            "metadata": {"name": "web-svc.emojivoto.svc.cluster.local", "namespace": "emojivoto"},
            "spec": {"routes": [{"name": "list", "condition": {"method": "GET", "pathRegex": "/api/list"},
                                 "isRetryable": true, "timeout": "300ms"}]},
        }));
    }

    /// The fake holding emojivoto, and discovery from it with its first snapshot.
    async fn synced() -> (
        FakeApiServer,
        KubernetesDiscovery,
        watch::Receiver<Arc<Workloads>>,
    ) {
        let api = FakeApiServer::start().await.expect("fake API server");
        emojivoto(&api);
        let discovery = KubernetesDiscovery::spawn(client(&api));
        let mut rx = discovery.watch();
        until(&mut rx, "the first snapshot", |w| w.generation > 0).await;
        (api, discovery, rx)
    }

    fn endpoints_of(w: &Workloads) -> Vec<String> {
        w.services
            .iter()
            .flat_map(|s| &s.ports)
            .flat_map(|p| &p.endpoints)
            .map(|e| e.addr.to_string())
            .collect()
    }

    #[tokio::test]
    async fn discovers_what_the_api_holds_and_follows_its_changes() {
        let (api, discovery, mut rx) = synced().await;
        let w = rx.borrow().clone();

        let pod = w.pod("emojivoto", "web-5d4f8b8c7-x2x7q").expect("the pod");
        assert_eq!(
            pod.deployment, "web",
            "the Deployment behind its ReplicaSet"
        );
        assert_eq!(pod.ip, "10.244.1.7".parse::<IpAddr>().unwrap());
        assert!(pod.meshed && pod.ready);
        assert_eq!(pod.service_account, "web");
        assert_eq!(pod.named_ports.get("http"), Some(&8080));
        assert_eq!(pod.default_policy, Some(DefaultPolicy::AllAuthenticated));
        let probes: Vec<(u16, &str)> = pod
            .probes
            .iter()
            .map(|p| (p.port, p.path.as_str()))
            .collect();
        assert_eq!(probes, [(8080, "/healthz"), (8080, "/livez")]);

        let (svc, port) = w
            .resolve("web-svc.emojivoto.svc.cluster.local:80", "x")
            .expect("resolves");
        assert_eq!(svc.vip, "10.96.12.34".parse::<IpAddr>().unwrap());
        assert_eq!(
            port.endpoints,
            [EndpointInfo {
                addr: "10.244.1.7:8080".parse().unwrap(),
                pod: "web-5d4f8b8c7-x2x7q".into()
            }]
        );

        assert_eq!(w.policy.servers.len(), 1);
        assert_eq!(w.policy.authorization_policies[0].server, "web-http");
        assert_eq!(
            w.policy.namespace_defaults.get("emojivoto"),
            Some(&DefaultPolicy::ClusterAuthenticated)
        );
        assert!(
            w.inject_namespaces.contains("emojivoto")
                && !w.inject_namespaces.contains("kube-system")
        );
        let profile = w
            .profile("emojivoto", "web-svc")
            .expect("web-svc's profile");
        let route = &profile.routes[0];
        assert_eq!((route.timeout_ms, route.retryable), (Some(300), true));
        assert!(discovery.health().borrow().synced);

        // A second pod becomes ready in a second slice; an unready endpoint is left out.
        api.apply(web_pod("web-5d4f8b8c7-k9p2z", "10.244.2.9", true));
        api.apply(web_slice(
            "web-svc-fghij",
            &[
                ("10.244.2.9", "web-5d4f8b8c7-k9p2z", true),
                ("10.244.3.3", "web-5d4f8b8c7-zzzzz", false),
            ],
        ));
        let before = w.clone();
        let w = until(&mut rx, "two endpoints", |w| endpoints_of(w).len() == 2).await;
        assert_eq!(endpoints_of(&w), ["10.244.1.7:8080", "10.244.2.9:8080"]);
        // What did not change is shared with the snapshot before: streams that depend on
        // it only see that it is the very same.
        let first = |w: &Workloads| w.pod("emojivoto", "web-5d4f8b8c7-x2x7q").cloned();
        assert!(Arc::ptr_eq(&first(&before).unwrap(), &first(&w).unwrap()));
        assert!(Arc::ptr_eq(&before.policy, &w.policy));
        assert!(!Arc::ptr_eq(&before.services[0], &w.services[0]));

        // Deletions: the slice, then the pod.
        api.delete(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "emojivoto",
            "web-svc-abcde",
        );
        api.delete("v1", "Pod", "emojivoto", "web-5d4f8b8c7-x2x7q");
        // Pods and slices are separate watches: wait for the state both lead to (the
        // second pod may only now be seen, as the first one goes).
        until(&mut rx, "the first pod gone", |w| {
            w.pods.len() == 1
                && w.pods[0].name == "web-5d4f8b8c7-k9p2z"
                && endpoints_of(w) == ["10.244.2.9:8080"]
        })
        .await;

        // A policy resource the code cannot use is left out, the rest stays.
        let mut bad = authorization();
        bad["metadata"]["name"] = json!("bad");
        bad["spec"]["allow"] = json!([{"identity": "not-an-identity"}]);
        api.apply(bad);
        api.apply(
            json!({"apiVersion": "conduit.io/v1alpha1", "kind": "ServiceProfile",
            "metadata": {"name": "not-a-service-name", "namespace": "emojivoto"}, "spec": {}}),
        );
        api.apply(namespace("other", json!({"conduit.io/inject": "enabled"})));
        let w = until(&mut rx, "the other namespace", |w| {
            w.inject_namespaces.contains("other")
        })
        .await;
        assert_eq!(w.policy.authorization_policies.len(), 1, "{:?}", w.policy);
        assert_eq!(w.profiles.len(), 1, "{:?}", w.profiles);

        // A profile updated into one that cannot be used keeps its last good routes, and
        // a good update after it is taken.
        let profile = |regex: &str| {
            json!({
                "apiVersion": "conduit.io/v1alpha1", "kind": "ServiceProfile",
                "metadata": {"name": "web-svc.emojivoto.svc.cluster.local", "namespace": "emojivoto"},
                "spec": {"routes": [{"name": "list", "condition": {"method": "GET", "pathRegex": regex}}]},
            })
        };
        api.apply(profile("/api/(list"));
        api.apply(namespace("marker", json!({})));
        let w = until(&mut rx, "the marker namespace", |w| {
            w.namespaces.contains("marker")
        })
        .await;
        assert_eq!(
            w.profiles[0].routes[0].path_regex, "/api/list",
            "{:?}",
            w.profiles
        );
        api.apply(profile("/api/lists?"));
        until(&mut rx, "the good update", |w| {
            w.profiles
                .first()
                .is_some_and(|p| p.routes[0].path_regex == "/api/lists?")
        })
        .await;

        // HTTPRoutes alike: read with the creation time the API gave them, and an update
        // that cannot be used keeps the last good one.
        let route = |weight: i64| {
            json!({
                "apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
                "metadata": {"name": "web-canary", "namespace": "emojivoto"},
                "spec": {
                    "parentRefs": [{"group": "", "kind": "Service", "name": "web-svc", "port": 80}],
                    "rules": [{"backendRefs": [{"name": "web-canary", "port": 80, "weight": weight}]}],
                },
            })
        };
        api.apply(route(10));
        let w = until(&mut rx, "the HTTPRoute", |w| !w.http_routes.is_empty()).await;
        assert!(w.http_routes[0].created.is_some(), "{:?}", w.http_routes);
        assert_eq!(w.http_routes("emojivoto", "web-svc").len(), 1);
        api.apply(route(-1));
        api.apply(namespace("marker-2", json!({})));
        let w = until(&mut rx, "the second marker", |w| {
            w.namespaces.contains("marker-2")
        })
        .await;
        assert_eq!(w.http_routes[0].rules[0].backends[0].weight, 10);
    }

    fn lists_of(api: &FakeApiServer, path: &str) -> usize {
        api.requests()
            .iter()
            .filter(|r| r.starts_with(&format!("GET {path}?")) && !r.contains("watch=true"))
            .count()
    }

    #[tokio::test]
    async fn lists_again_after_410_gone_unless_a_bookmark_kept_it_current() {
        let (api, discovery, mut rx) = synced().await;
        assert_eq!(lists_of(&api, "/api/v1/pods"), 1);

        // Other kinds move the resourceVersion on; the pods' watch has seen none of it.
        api.apply(namespace("a", json!({"conduit.io/inject": "enabled"})));
        until(&mut rx, "namespace a", |w| {
            w.inject_namespaces.contains("a")
        })
        .await;
        api.expire_watches();
        api.apply(web_pod("web-5d4f8b8c7-k9p2z", "10.244.2.9", true));
        until(&mut rx, "the new pod after 410 Gone", |w| w.pods.len() == 2).await;
        assert_eq!(
            lists_of(&api, "/api/v1/pods"),
            2,
            "410 Gone makes the pods' watch list again"
        );
        let health = discovery.health().borrow().clone();
        assert!(
            health.problems.iter().all(|p| !p.starts_with("pods")),
            "{health:?}"
        );

        // With bookmarks the watches stay current and resume without listing.
        api.set_bookmark_interval(Some(Duration::from_millis(50)));
        api.apply(namespace("b", json!({})));
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let (pods, slices) = (
            lists_of(&api, "/api/v1/pods"),
            lists_of(&api, "/apis/discovery.k8s.io/v1/endpointslices"),
        );
        api.expire_watches();
        api.delete("v1", "Pod", "emojivoto", "web-5d4f8b8c7-k9p2z");
        until(&mut rx, "the pod deleted", |w| w.pods.len() == 1).await;
        assert!(api
            .requests()
            .iter()
            .any(|r| r.contains("allowWatchBookmarks=true")));
        assert_eq!(
            lists_of(&api, "/api/v1/pods"),
            pods,
            "bookmarked: resumed without a list"
        );
        assert_eq!(
            lists_of(&api, "/apis/discovery.k8s.io/v1/endpointslices"),
            slices
        );
    }

    #[tokio::test]
    async fn serves_the_last_state_while_the_api_fails_and_says_so() {
        let api = FakeApiServer::start().await.expect("fake API server");
        emojivoto(&api);
        // The first lists fail: not synced, nothing published, the errors named.
        api.fail_next(6, 500);
        let discovery = KubernetesDiscovery::spawn(client(&api));
        let mut health = discovery.health();
        let failing = until(&mut health, "failing", |h| !h.problems.is_empty()).await;
        assert!(!failing.synced);
        assert!(
            failing
                .problems
                .iter()
                .any(|p| p.contains("injected failure")),
            "{failing:?}"
        );
        let mut rx = discovery.watch();
        let before = until(&mut rx, "the first snapshot", |w| w.generation > 0).await;
        until(&mut health, "healthy", |h| {
            h.synced && h.problems.is_empty()
        })
        .await;

        // Unreachable: the snapshot stays, health names every watch that fails.
        api.set_unreachable(true);
        let down = until(&mut health, "failing", |h| {
            h.problems.len() == Source::ALL.len()
        })
        .await;
        assert!(down.synced, "still serving the last state");
        assert!(
            down.problems
                .iter()
                .any(|p| p.starts_with("pods: failing for")),
            "{down:?}"
        );
        assert!(
            same_content(&rx.borrow(), &before),
            "the last state is kept"
        );

        // Back: healthy again, and changes made meanwhile arrive.
        api.set_unreachable(false);
        api.apply(web_pod("web-5d4f8b8c7-k9p2z", "10.244.2.9", false));
        let w = until(&mut rx, "the pod made while down", |w| w.pods.len() == 2).await;
        assert!(!w.pod("emojivoto", "web-5d4f8b8c7-k9p2z").unwrap().ready);
        until(&mut health, "healthy", |h| h.problems.is_empty()).await;
    }

    #[test]
    fn reduces_pods_of_every_kind_of_owner() {
        let pod = |v: Value| serde_json::from_value::<Pod>(v).expect("a Pod");
        let mut p = web_pod("db-0", "10.244.1.8", true);
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]);
        assert_eq!(pod_info(&pod(p.clone())).unwrap().deployment, "db");
        p["metadata"]["labels"]["conduit.io/proxy-deployment"] = json!("database");
        assert_eq!(pod_info(&pod(p.clone())).unwrap().deployment, "database");
        let mut p = web_pod("lonely", "10.244.1.9", true);
        p["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("ownerReferences");
        p["spec"]["initContainers"] = json!([]);
        p["spec"]
            .as_object_mut()
            .unwrap()
            .remove("serviceAccountName");
        let info = pod_info(&pod(p.clone())).unwrap();
        assert_eq!(
            (
                info.deployment.as_str(),
                info.meshed,
                info.service_account.as_str()
            ),
            ("lonely", false, "default")
        );
        // Pending (no address yet) and finished pods are not endpoints of anything.
        p["status"].as_object_mut().unwrap().remove("podIP");
        assert!(pod_info(&pod(p.clone())).is_none());
        let mut done = web_pod("job-x", "10.244.1.10", false);
        done["status"]["phase"] = json!("Succeeded");
        assert!(pod_info(&pod(done)).is_none());
    }

    #[test]
    fn headless_and_external_services_have_no_virtual_ip() {
        let svc = |v: Value| serde_json::from_value::<Service>(v).expect("a Service");
        let mut headless = web_service();
        headless["spec"]["clusterIP"] = json!("None");
        assert!(service_facts(&svc(headless)).is_none());
        let external = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db", "namespace": "x"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        assert!(service_facts(&svc(external)).is_none());
        let mut udp = web_service();
        udp["spec"]["ports"] =
            json!([{"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 80}]);
        assert_eq!(
            service_facts(&svc(udp)).unwrap().ports,
            [(String::new(), 80)]
        );
    }
}
