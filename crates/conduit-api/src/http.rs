//! The controller's public HTTP JSON API, version 1, as every client sees it: each
//! endpoint's path (under [`V1`]), its query and its answer, and the body of a refused
//! request. The controller serves these types, the CLI and the dashboard read them back,
//! and the OpenAPI document (`crate::openapi`, feature `openapi`) is generated from them,
//! so nobody spells a key. Answers carry every field, `null` where there is no value,
//! except tap lines, which leave out what their kind has not. Knows nothing about how the
//! answers are computed.

use crate::{
    admin::ProxyIdentity,
    inbound::{DefaultPolicy, Probe},
    ports,
    public_api::Access,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

/// The controller's liveness probe: 200 while it runs.
pub const HEALTHZ_PATH: &str = "/healthz";
/// The controller's readiness probe: 200 once discovery has a complete snapshot, and the
/// problems of its sources, if any, as text.
pub const READY_PATH: &str = "/ready";
/// The controller's own counters, in the Prometheus text format.
pub const METRICS_PATH: &str = "/metrics";

/// The prefix of every path of the API, version 1.
pub const V1: &str = "/api/v1";

/// A path of the API, version 1: `v1!("stat")` is `/api/v1/stat`.
macro_rules! v1 {
    ($resource:literal) => {
        concat!("/api/v1/", $resource)
    };
}

/// The query parameter of the namespace a query is limited to; on Kubernetes the path's
/// namespace replaces it (see `public_api`).
pub const NAMESPACE_PARAM: &str = "namespace";

/// An endpoint of the API: its query, the path it is sent to and what it answers.
pub trait Endpoint: Serialize + DeserializeOwned {
    /// The endpoint's path.
    const PATH: &'static str;
    /// What RBAC must grant to call it on Kubernetes, where its path is
    /// [`Access::path`].
    const ACCESS: Access;
    /// What it answers: the JSON body, or, for a stream ([`Endpoint::STREAM`]), each of
    /// its lines.
    type Answer: Serialize + DeserializeOwned;
    /// Whether the answer is a stream of JSON lines (`application/x-ndjson`), one
    /// [`Endpoint::Answer`] each, rather than one JSON body.
    const STREAM: bool = false;
}

/// Every endpoint's path and access: what the controller serves behind authorization.
pub const ENDPOINTS: &[(&str, Access)] = &[
    (NamespacesQuery::PATH, NamespacesQuery::ACCESS),
    (StatQuery::PATH, StatQuery::ACCESS),
    (SeriesQuery::PATH, SeriesQuery::ACCESS),
    (EdgesQuery::PATH, EdgesQuery::ACCESS),
    (RoutesQuery::PATH, RoutesQuery::ACCESS),
    (WorkloadsQuery::PATH, WorkloadsQuery::ACCESS),
    (TapQuery::PATH, TapQuery::ACCESS),
    (TopQuery::PATH, TopQuery::ACCESS),
    (IdentityQuery::PATH, IdentityQuery::ACCESS),
    (VersionQuery::PATH, VersionQuery::ACCESS),
    (OpenApiQuery::PATH, OpenApiQuery::ACCESS),
];

/// The content type of a streamed answer: one JSON document per line.
pub const NDJSON: &str = "application/x-ndjson";

/// The body of every refused request (400: a bad parameter, naming it; 404: no such
/// path, namespace or resource; 503: the metrics' source cannot answer): what was wrong
/// and what to do.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What was wrong and what is accepted.
    pub error: String,
}

/// What a query selects or groups by: kubectl's resource kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// `ns`: a namespace's pods.
    Namespace,
    /// `deploy`: a Deployment's pods.
    Deployment,
    /// `pod`: one pod.
    Pod,
}

impl Resource {
    /// The kinds a `resource` parameter accepts, as error messages name them.
    pub const EXPECTED: &'static str = "deploy, pod or ns";

    /// Every name of every kind: kubectl's, with their short forms.
    pub const NAMES: &'static [(&'static str, Resource)] = &[
        ("deploy", Resource::Deployment),
        ("deployment", Resource::Deployment),
        ("deployments", Resource::Deployment),
        ("po", Resource::Pod),
        ("pod", Resource::Pod),
        ("pods", Resource::Pod),
        ("ns", Resource::Namespace),
        ("namespace", Resource::Namespace),
        ("namespaces", Resource::Namespace),
    ];

    /// Reads one of [`Resource::NAMES`].
    pub fn parse(raw: &str) -> Option<Resource> {
        Self::NAMES
            .iter()
            .find(|(name, _)| *name == raw)
            .map(|(_, kind)| *kind)
    }

    /// The short name: `deploy`, `pod` or `ns`.
    pub fn short_name(self) -> &'static str {
        match self {
            Resource::Namespace => "ns",
            Resource::Deployment => "deploy",
            Resource::Pod => "pod",
        }
    }
}

/// `GET /api/v1/namespaces`: every namespace with pods or Services, and how much of it
/// is meshed.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespacesQuery {}

impl Endpoint for NamespacesQuery {
    const PATH: &'static str = v1!("namespaces");
    const ACCESS: Access = Access::viewer("namespaces");
    type Answer = Vec<NamespaceRow>;
}

/// A namespace, as the overview lists it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceRow {
    /// The namespace.
    pub name: String,
    /// Its pods.
    pub pods: u32,
    /// Those of them with a proxy.
    pub meshed_pods: u32,
    /// Its Services.
    pub services: u32,
    /// Whether the injector meshes its new pods (annotated `conduit.io/inject: enabled`).
    pub inject: bool,
}

/// `GET /api/v1/stat`: golden metrics per namespace, deployment or pod.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatQuery {
    /// The kind to group by: `deploy`, `pod` or `ns` (or kubectl's other names of them).
    #[cfg_attr(
        feature = "openapi",
        param(value_type = crate::openapi::ResourceName, inline)
    )]
    pub resource: String,
    /// The window rates cover, like `1m` (the default) or `30s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "1m"))]
    pub window: Option<String>,
    /// Only this namespace's (every namespace's when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "emojivoto"))]
    pub namespace: Option<String>,
    /// Only the resource of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "web"))]
    pub name: Option<String>,
}

impl Endpoint for StatQuery {
    const PATH: &'static str = v1!("stat");
    const ACCESS: Access = Access::viewer("stats");
    type Answer = Vec<StatRow>;
}

/// One row of `conduit stat`: a resource's golden metrics over the window.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatRow {
    /// The resource's namespace (a namespace's own name for `ns` rows).
    pub namespace: String,
    /// The namespace, deployment or pod.
    pub name: String,
    /// Meshed pods out of all pods, like `1/1`.
    pub meshed: String,
    /// 0..1; `null` without traffic.
    pub success_rate: Option<f64>,
    /// Requests per second.
    pub request_rate: f64,
    /// The median latency to the response's head, in milliseconds; `null` without
    /// traffic.
    pub latency_ms_p50: Option<f64>,
    /// The 95th percentile, likewise.
    pub latency_ms_p95: Option<f64>,
    /// The 99th percentile, likewise.
    pub latency_ms_p99: Option<f64>,
    /// 0..1: the share of responses whose requests came over mutual TLS; `null` without
    /// traffic.
    pub tls_rate: Option<f64>,
    /// Open TCP connections into the resource.
    pub tcp_connections: u64,
    /// 0..1: what meshed clients saw of the responses of the Services in front of the
    /// resource, after their proxies' retries (`success_rate` counts every attempt that
    /// reached it); `null` without such traffic, and for pods (clients call Services).
    pub effective_success_rate: Option<f64>,
}

/// `GET /api/v1/series`: a resource's golden metrics over time, one point per step, for
/// charts: each point covers the step before it (at least twice the scrape interval, so
/// that every point has two scrapes to compute rates from).
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeriesQuery {
    /// The kind of the resource: `deploy`, `pod` or `ns` (or kubectl's other names of
    /// them).
    #[cfg_attr(
        feature = "openapi",
        param(value_type = crate::openapi::ResourceName, inline)
    )]
    pub resource: String,
    /// Its name.
    #[cfg_attr(feature = "openapi", param(example = "web"))]
    pub name: String,
    /// Its namespace (`default` when absent; for `ns`, the name).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "emojivoto"))]
    pub namespace: Option<String>,
    /// How far back the series goes, like `15m` (`10m` when absent), at most the metrics'
    /// retention.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "1m"))]
    pub window: Option<String>,
    /// The time between points, like `30s` (`window` / 60 when absent); at most
    /// 720 points.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "30s"))]
    pub step: Option<String>,
}

/// The most points a series answers: a client cannot make the controller compute (or
/// hold) more.
pub const MAX_SERIES_POINTS: u32 = 720;
const _: () = assert!(MAX_SERIES_POINTS == 720, "SeriesQuery::step's doc says 720");

impl Endpoint for SeriesQuery {
    const PATH: &'static str = v1!("series");
    const ACCESS: Access = Access::viewer("series");
    type Answer = Series;
}

/// A resource's golden metrics over time, oldest point first.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The resource's namespace.
    pub namespace: String,
    /// The resource.
    pub name: String,
    /// The time between points, in seconds.
    pub step_seconds: f64,
    /// What each point's rates cover, in seconds: the step, or twice the scrape
    /// interval when that is longer.
    pub range_seconds: f64,
    /// The points, oldest first.
    pub points: Vec<SeriesPoint>,
}

/// The golden metrics over the range before one moment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The moment, in milliseconds since the Unix epoch.
    pub time_unix_ms: u64,
    /// Requests per second.
    pub request_rate: f64,
    /// 0..1; `null` without traffic.
    pub success_rate: Option<f64>,
    /// The median latency to the response's head, in milliseconds; `null` without
    /// traffic.
    pub latency_ms_p50: Option<f64>,
    /// The 95th percentile, likewise.
    pub latency_ms_p95: Option<f64>,
    /// The 99th percentile, likewise.
    pub latency_ms_p99: Option<f64>,
}

/// `GET /api/v1/routes`: golden metrics per route: a deployment's inbound requests by the
/// routes of its own Services' profiles, or with `to`, its outbound requests to that
/// Service by the routes of that Service's profile.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesQuery {
    /// The deployment.
    #[cfg_attr(feature = "openapi", param(example = "web"))]
    pub deployment: String,
    /// Its namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "emojivoto"))]
    pub namespace: Option<String>,
    /// Only its requests to this Service (`name` or `name.namespace`; the deployment's
    /// namespace by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "voting-svc"))]
    pub to: Option<String>,
    /// The window rates cover, like `1m` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "1m"))]
    pub window: Option<String>,
}

impl Endpoint for RoutesQuery {
    const PATH: &'static str = v1!("routes");
    const ACCESS: Access = Access::viewer("routes");
    type Answer = Vec<RouteRow>;
}

/// One row of `conduit routes`: a route's golden metrics over the window. Effective
/// figures are what the clients saw (after retries); actual ones count every attempt,
/// retries included (outbound only: a server's proxy does not retry).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteRow {
    /// The route's name in the profile, or `[default]`.
    pub route: String,
    /// The Service (`name.namespace`) whose profile names it; `null` when unknown.
    pub service: Option<String>,
    /// Requests per second.
    pub request_rate: f64,
    /// 0..1; `null` without traffic.
    pub success_rate: Option<f64>,
    /// Attempts per second, retries included; `null` inbound.
    pub actual_request_rate: Option<f64>,
    /// 0..1 per attempt; `null` inbound or without traffic.
    pub actual_success_rate: Option<f64>,
    /// Latency percentiles to the response's head, in milliseconds; `null` without
    /// traffic.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p95: Option<f64>,
    pub latency_ms_p99: Option<f64>,
}

/// `GET /api/v1/edges`: who calls whom among deployments.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgesQuery {
    /// The window rates cover, like `1m` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "1m"))]
    pub window: Option<String>,
    /// Only edges from or to this namespace (all when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "emojivoto"))]
    pub namespace: Option<String>,
}

impl Endpoint for EdgesQuery {
    const PATH: &'static str = v1!("edges");
    const ACCESS: Access = Access::viewer("edges");
    type Answer = Vec<EdgeRow>;
}

/// One row of `conduit edges`: a source deployment calling a destination deployment.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeRow {
    /// The source deployment's namespace.
    pub src_namespace: String,
    /// The source deployment.
    pub src: String,
    /// The destination deployment's namespace.
    pub dst_namespace: String,
    /// The destination deployment.
    pub dst: String,
    /// Requests per second.
    pub request_rate: f64,
    /// 0..1.
    pub success_rate: Option<f64>,
    /// 0..1: the share of responses whose requests went over mutual TLS.
    pub tls_rate: f64,
    /// The identity the source's proxy presented, when the traffic was mutual TLS.
    pub client_id: Option<String>,
    /// The identities the destination's proxies proved.
    pub server_ids: Vec<String>,
}

/// `GET /api/v1/workloads`: what discovery knows, and which version of it.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadsQuery {}

impl Endpoint for WorkloadsQuery {
    const PATH: &'static str = v1!("workloads");
    const ACCESS: Access = Access::viewer("workloads");
    type Answer = Workloads;
}

/// The workloads discovery knows.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Workloads {
    /// Every pod, meshed or not.
    pub pods: Vec<Pod>,
    /// Every Service.
    pub services: Vec<Service>,
    /// Namespaces annotated `conduit.io/inject: enabled`, whose new pods the injector
    /// meshes.
    pub inject_namespaces: BTreeSet<String>,
    /// Every Namespace (Kubernetes; the local runtime has no Namespace objects).
    pub namespaces: BTreeSet<String>,
    /// The source's version of what discovery read (the local state's generation), so a
    /// client can tell the control plane has caught up with a change.
    pub generation: u64,
}

/// A pod, as discovery sees it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The Deployment it belongs to.
    pub deployment: String,
    /// The pod's address.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "198.18.0.4"))]
    pub ip: IpAddr,
    /// Whether it has a proxy.
    pub meshed: bool,
    /// Whether it passes its readiness probes.
    pub ready: bool,
    /// Its ServiceAccount, which with the namespace names its proxy's identity.
    pub service_account: String,
    /// The pod's labels.
    pub labels: BTreeMap<String, String>,
    /// Its containers' ports by name.
    pub named_ports: BTreeMap<String, u16>,
    /// The HTTP paths its probes GET.
    pub probes: Vec<Probe>,
    /// Its own default inbound policy (annotation), if any.
    pub default_policy: Option<DefaultPolicy>,
}

impl Pod {
    /// The name of the `kind` of resource the pod is part of: its namespace, its
    /// Deployment, or its own.
    pub fn name_as(&self, kind: Resource) -> &str {
        match kind {
            Resource::Namespace => &self.namespace,
            Resource::Deployment => &self.deployment,
            Resource::Pod => &self.name,
        }
    }

    /// Where the pod's proxy serves its admin server.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, ports::PROXY_ADMIN)
    }
}

/// A Service with its ready endpoints per port.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Its virtual IP.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "198.19.0.1"))]
    pub vip: IpAddr,
    /// Its ports.
    pub ports: Vec<ServicePort>,
}

/// One port of a Service.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// The port clients connect to.
    pub port: u16,
    /// The ready pods behind it.
    pub endpoints: Vec<ServiceEndpoint>,
}

/// A ready pod behind a Service port.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// The pod's address and target port.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, example = "198.18.0.4:8080")
    )]
    pub addr: SocketAddr,
    /// The pod's name.
    pub pod: String,
}

/// `GET /api/v1/tap`: live events of a resource's meshed pods, streamed as JSON lines
/// (`application/x-ndjson`), one [`TapLine`] each.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapQuery {
    /// The kind of the resource to tap: `deploy`, `pod` or `ns` (or kubectl's other names of
    /// them).
    #[cfg_attr(
        feature = "openapi",
        param(value_type = crate::openapi::ResourceName, inline)
    )]
    pub resource: String,
    /// Its name (every pod of the kind when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "web"))]
    pub name: Option<String>,
    /// Only requests whose path starts with this.
    #[serde(default)]
    pub path: String,
    /// Only requests whose authority contains this.
    #[serde(default)]
    pub authority: String,
    /// End the stream after this many requests (0: when the client goes away).
    #[serde(default)]
    pub max: u32,
    /// The resource's namespace (every namespace when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "emojivoto"))]
    pub namespace: Option<String>,
}

impl Endpoint for TapQuery {
    const PATH: &'static str = v1!("tap");
    const ACCESS: Access = Access::tap("taps");
    type Answer = TapLine;
    const STREAM: bool = true;
}

/// What a tap line tells.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TapLineKind {
    /// A request's head arrived.
    Request,
    /// Its response's head.
    Response,
    /// The response ended (or failed).
    End,
    /// Policy kept a connection out.
    Denied,
    /// A client's proxy took an endpoint out of its balancer (failure accrual).
    Ejected,
    /// It put the endpoint back (its probe succeeded).
    Restored,
    /// A pod could not be observed.
    Error,
}

/// One tap event, as the API streams it. Fields a kind has not are left out.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapLine {
    /// What the line tells.
    #[serde(rename = "type")]
    pub kind: TapLineKind,
    /// Unique per request: the observed pod and the proxy's request number.
    #[serde(default)]
    pub id: String,
    /// `inbound` or `outbound`, as the observed pod's proxy saw it.
    #[serde(default)]
    pub direction: String,
    /// The observed pod's namespace.
    #[serde(default)]
    pub namespace: String,
    /// The observed pod.
    #[serde(default)]
    pub pod: String,
    /// The source address.
    #[serde(default)]
    pub src: String,
    /// The workload behind the source address, when known (`deploy/name` or `svc/name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src_resource: Option<String>,
    /// The destination address.
    #[serde(default)]
    pub dst: String,
    /// The workload behind the destination address, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_resource: Option<String>,
    /// Requests: the method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Requests: the authority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Requests: the path, with its query.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Responses: the status code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u32>,
    /// Responses: microseconds from the request's head to the response's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// Ends: the gRPC status, for gRPC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_status: Option<u32>,
    /// Ends: microseconds from the request's head to the response's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    /// Ends: the response body's length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_bytes: Option<u64>,
    /// Ends and denials: the error the proxy made up, or why it denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_error: Option<String>,
    /// Denials: the client's mesh identity, when it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Ejections: how long the endpoint is out before its probe, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<u64>,
    /// Errors: why a pod could not be observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TapLine {
    /// A line of `kind` with nothing else known yet.
    pub fn new(kind: TapLineKind) -> TapLine {
        TapLine {
            kind,
            id: String::new(),
            direction: String::new(),
            namespace: String::new(),
            pod: String::new(),
            src: String::new(),
            src_resource: None,
            dst: String::new(),
            dst_resource: None,
            method: None,
            authority: None,
            path: None,
            status: None,
            latency_us: None,
            grpc_status: None,
            duration_us: None,
            response_bytes: None,
            proxy_error: None,
            client_id: None,
            backoff_ms: None,
            error: None,
        }
    }
}

/// `GET /api/v1/top`: a resource's busiest paths, from its live traffic over a window.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopQuery {
    /// The kind of the resource to watch: `deploy`, `pod` or `ns` (or kubectl's other names of
    /// them).
    #[cfg_attr(
        feature = "openapi",
        param(value_type = crate::openapi::ResourceName, inline)
    )]
    pub resource: String,
    /// Its name (every pod of the kind when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "web"))]
    pub name: Option<String>,
    /// How long to watch, from 1s to 5m (10s when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "1m"))]
    pub window: Option<String>,
    /// The resource's namespace (every namespace when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "emojivoto"))]
    pub namespace: Option<String>,
}

impl Endpoint for TopQuery {
    const PATH: &'static str = v1!("top");
    const ACCESS: Access = Access::tap("tops");
    type Answer = Vec<TopRow>;
}

/// One row of `conduit top`: requests to one path, in one direction, with one peer.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopRow {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// The source workload (or address) for inbound rows, the destination for outbound.
    pub peer: String,
    /// The requests' authority.
    pub authority: String,
    /// The path without its query string.
    pub path: String,
    /// Requests seen in the window.
    pub requests: u64,
    /// 0..1, over the requests that ended in the window.
    pub success_rate: Option<f64>,
    /// The median latency to the response's head, in milliseconds.
    pub latency_ms_p50: Option<f64>,
    /// The longest, likewise.
    pub latency_ms_max: Option<f64>,
}

/// `GET /api/v1/identity`: the certificate of each proxy of a resource.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityQuery {
    /// The kind of the resource: `deploy`, `pod` or `ns` (or kubectl's other names of
    /// them).
    #[cfg_attr(
        feature = "openapi",
        param(value_type = crate::openapi::ResourceName, inline)
    )]
    pub resource: String,
    /// Its name (every pod of the kind when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "web"))]
    pub name: Option<String>,
    /// The resource's namespace (every namespace when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", param(example = "emojivoto"))]
    pub namespace: Option<String>,
}

impl Endpoint for IdentityQuery {
    const PATH: &'static str = v1!("identity");
    const ACCESS: Access = Access::viewer("identities");
    type Answer = Vec<IdentityRow>;
}

/// One meshed pod's certificate, as its proxy reports it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRow {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// What its proxy said, or why it could not be asked.
    #[serde(flatten)]
    pub report: IdentityReport,
}

/// What the controller learned of a proxy's identity.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum IdentityReport {
    /// The proxy's own answer.
    Reported(ProxyIdentity),
    /// The proxy did not answer, or not with its identity.
    Unknown {
        /// Why.
        error: String,
    },
}

/// `GET /api/v1/version`: the control plane's version.
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionQuery {}

impl Endpoint for VersionQuery {
    const PATH: &'static str = v1!("version");
    const ACCESS: Access = Access::viewer("versions");
    type Answer = Version;
}

/// A part's version.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Like `0.1.0`: every Conduit part of one release has the same.
    pub version: String,
}

/// The version every part of this build reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /api/v1/openapi.json`: this API's OpenAPI 3 document, generated from the types
/// of this module (a copy is `docs/openapi.json`).
#[cfg_attr(
    feature = "openapi",
    derive(utoipa::IntoParams, utoipa::ToSchema),
    into_params(parameter_in = Query)
)]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenApiQuery {}

impl Endpoint for OpenApiQuery {
    const PATH: &'static str = v1!("openapi.json");
    const ACCESS: Access = Access::viewer("openapi");
    type Answer = serde_json::Value;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `value` as JSON, and read back from that JSON.
    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
        value: &T,
    ) -> serde_json::Value {
        let text = serde_json::to_string(value).unwrap();
        assert_eq!(&serde_json::from_str::<T>(&text).unwrap(), value, "{text}");
        serde_json::from_str(&text).unwrap()
    }

    #[test]
    fn stat_rows_keep_their_documented_keys_and_nulls() {
        let idle = StatRow {
            namespace: "emojivoto".into(),
            name: "vote-bot".into(),
            meshed: "0/1".into(),
            success_rate: None,
            request_rate: 0.0,
            latency_ms_p50: None,
            latency_ms_p95: None,
            latency_ms_p99: None,
            tls_rate: None,
            tcp_connections: 0,
            effective_success_rate: None,
        };
        assert_eq!(
            round_trip(&idle),
            json!({"namespace":"emojivoto","name":"vote-bot","meshed":"0/1","success_rate":null,"request_rate":0.0,
                   "latency_ms_p50":null,"latency_ms_p95":null,"latency_ms_p99":null,"tls_rate":null,"tcp_connections":0,
                   "effective_success_rate":null})
        );
        let busy = StatRow {
            name: "voting".into(),
            meshed: "1/1".into(),
            success_rate: Some(0.9667),
            request_rate: 2.04,
            latency_ms_p50: Some(0.73),
            latency_ms_p95: Some(4.2),
            latency_ms_p99: Some(12.6),
            tls_rate: Some(0.996),
            tcp_connections: 2,
            effective_success_rate: Some(1.0),
            ..idle
        };
        assert_eq!(
            round_trip(&busy),
            json!({"namespace":"emojivoto","name":"voting","meshed":"1/1","success_rate":0.9667,"request_rate":2.04,
                   "latency_ms_p50":0.73,"latency_ms_p95":4.2,"latency_ms_p99":12.6,"tls_rate":0.996,"tcp_connections":2,
                   "effective_success_rate":1.0})
        );
    }

    #[test]
    fn edge_rows_keep_their_keys() {
        let edge = EdgeRow {
            src_namespace: "emojivoto".into(),
            src: "web".into(),
            dst_namespace: "emojivoto".into(),
            dst: "legacy".into(),
            request_rate: 1.0,
            success_rate: Some(1.0),
            tls_rate: 0.0,
            client_id: None,
            server_ids: Vec::new(),
        };
        assert_eq!(
            round_trip(&edge),
            json!({"src":"web","dst":"legacy","src_namespace":"emojivoto","dst_namespace":"emojivoto",
                   "request_rate":1.0,"success_rate":1.0,"tls_rate":0.0,"client_id":null,"server_ids":[]})
        );
    }

    #[test]
    fn tap_lines_are_the_bytes_they_always_were() {
        let mut request = TapLine::new(TapLineKind::Request);
        request.id = "web-1:3".into();
        request.direction = "inbound".into();
        request.namespace = "emojivoto".into();
        request.pod = "web-1".into();
        request.src = "198.18.0.6:4000".into();
        request.src_resource = Some("deploy/vote-bot".into());
        request.dst = "198.18.0.4:8080".into();
        request.method = Some("GET".into());
        request.authority = Some("web-svc.emojivoto".into());
        request.path = Some("/api/list".into());
        round_trip(&request);
        assert_eq!(
            serde_json::to_string(&request).unwrap(),
            r#"{"type":"request","id":"web-1:3","direction":"inbound","namespace":"emojivoto","pod":"web-1","src":"198.18.0.6:4000","src_resource":"deploy/vote-bot","dst":"198.18.0.4:8080","method":"GET","authority":"web-svc.emojivoto","path":"/api/list"}"#
        );
        let mut error = TapLine::new(TapLineKind::Error);
        error.namespace = "emojivoto".into();
        error.pod = "web-1".into();
        error.error = Some("cannot reach the proxy's tap server".into());
        round_trip(&error);
        assert_eq!(
            serde_json::to_string(&error).unwrap(),
            r#"{"type":"error","id":"","direction":"","namespace":"emojivoto","pod":"web-1","src":"","dst":"","error":"cannot reach the proxy's tap server"}"#
        );
    }

    #[test]
    fn top_rows_keep_their_keys() {
        let row = TopRow {
            direction: "inbound".into(),
            peer: "deploy/vote-bot".into(),
            authority: "web-svc".into(),
            path: "/api/vote".into(),
            requests: 3,
            success_rate: Some(1.0),
            latency_ms_p50: Some(2.0),
            latency_ms_max: None,
        };
        assert_eq!(
            round_trip(&row),
            json!({"direction":"inbound","peer":"deploy/vote-bot","authority":"web-svc","path":"/api/vote",
                   "requests":3,"success_rate":1.0,"latency_ms_p50":2.0,"latency_ms_max":null})
        );
    }

    #[test]
    fn identity_rows_are_the_proxys_answer_with_the_pod_or_an_error() {
        let certified = IdentityRow {
            namespace: "emojivoto".into(),
            pod: "web-1".into(),
            report: IdentityReport::Reported(ProxyIdentity {
                identity: "web.emojivoto.serviceaccount.identity.conduit.cluster.local".into(),
                certified: true,
                valid_until_unix: Some(1_700_000_000),
                last_error: None,
            }),
        };
        assert_eq!(
            round_trip(&certified),
            json!({"namespace":"emojivoto","pod":"web-1","identity":"web.emojivoto.serviceaccount.identity.conduit.cluster.local",
                   "certified":true,"valid_until_unix":1700000000,"last_error":null})
        );
        let unknown = IdentityRow {
            namespace: "emojivoto".into(),
            pod: "web-2".into(),
            report: IdentityReport::Unknown {
                error: "the proxy did not answer within 5s".into(),
            },
        };
        assert_eq!(
            round_trip(&unknown),
            json!({"namespace":"emojivoto","pod":"web-2","error":"the proxy did not answer within 5s"})
        );
    }

    #[test]
    fn workloads_and_errors_round_trip() {
        let workloads = Workloads {
            pods: vec![Pod {
                namespace: "emojivoto".into(),
                name: "web-1".into(),
                deployment: "web".into(),
                ip: "198.18.0.4".parse().unwrap(),
                meshed: true,
                ready: true,
                service_account: "web".into(),
                labels: BTreeMap::from([("app".into(), "web".into())]),
                named_ports: BTreeMap::from([("http".into(), 8080)]),
                probes: vec![Probe {
                    port: 8080,
                    path: "/ready".into(),
                }],
                default_policy: Some(DefaultPolicy::AllAuthenticated),
            }],
            services: vec![Service {
                namespace: "emojivoto".into(),
                name: "web-svc".into(),
                vip: "198.19.0.1".parse().unwrap(),
                ports: vec![ServicePort {
                    port: 80,
                    endpoints: vec![ServiceEndpoint {
                        addr: "198.18.0.4:8080".parse().unwrap(),
                        pod: "web-1".into(),
                    }],
                }],
            }],
            inject_namespaces: BTreeSet::new(),
            namespaces: BTreeSet::from(["emojivoto".into()]),
            generation: 7,
        };
        let json = round_trip(&workloads);
        assert_eq!(json["generation"], 7);
        assert_eq!(json["pods"][0]["ip"], "198.18.0.4");
        assert_eq!(json["pods"][0]["default_policy"], "all-authenticated");
        assert_eq!(
            json["services"][0]["ports"][0]["endpoints"][0]["addr"],
            "198.18.0.4:8080"
        );
        assert_eq!(
            round_trip(&ApiError {
                error: "window=\"x\": expected a duration like 1m or 30s".into()
            }),
            json!({"error": "window=\"x\": expected a duration like 1m or 30s"})
        );
    }

    #[test]
    fn resources_read_kubectls_names() {
        for (raw, kind) in [
            ("deploy", Resource::Deployment),
            ("deployments", Resource::Deployment),
            ("po", Resource::Pod),
            ("namespace", Resource::Namespace),
        ] {
            assert_eq!(Resource::parse(raw), Some(kind));
            assert_eq!(Resource::parse(kind.short_name()), Some(kind));
        }
        assert_eq!(Resource::parse("svc"), None);
    }
}
