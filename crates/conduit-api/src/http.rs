//! The controller's HTTP JSON API, as both ends see it: every endpoint's path, its query
//! and its answer, and the body of a refused request. The controller serves these types
//! and the CLI reads them back, so neither spells a key. Answers carry every field, `null`
//! where there is no value, except tap lines, which leave out what their kind has not.
//! Knows nothing about how the answers are computed.

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
    /// What it answers: the JSON body, or, for a stream (`/api/tap`), each of its lines.
    type Answer: Serialize + DeserializeOwned;
}

/// Every endpoint's path and access: what the controller serves behind authorization.
pub const ENDPOINTS: &[(&str, Access)] = &[
    (StatQuery::PATH, StatQuery::ACCESS),
    (EdgesQuery::PATH, EdgesQuery::ACCESS),
    (RoutesQuery::PATH, RoutesQuery::ACCESS),
    (WorkloadsQuery::PATH, WorkloadsQuery::ACCESS),
    (TapQuery::PATH, TapQuery::ACCESS),
    (TopQuery::PATH, TopQuery::ACCESS),
    (IdentityQuery::PATH, IdentityQuery::ACCESS),
];

/// The body of a refused request (a 400): what was wrong, naming the parameter.
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

    /// Reads kubectl's names of a kind and their short forms (`deploy`, `deployment`,
    /// `deployments`, `po`, `pod`, `pods`, `ns`, `namespace`, `namespaces`).
    pub fn parse(raw: &str) -> Option<Resource> {
        match raw {
            "ns" | "namespace" | "namespaces" => Some(Resource::Namespace),
            "deploy" | "deployment" | "deployments" => Some(Resource::Deployment),
            "po" | "pod" | "pods" => Some(Resource::Pod),
            _ => None,
        }
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

/// `GET /api/stat`: golden metrics per namespace, deployment or pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatQuery {
    /// The kind to group by, as the user wrote it (see [`Resource::parse`]); the
    /// controller names a kind it does not know.
    pub resource: String,
    /// The window rates cover, like `1m` (the default) or `30s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Only this namespace's (every namespace's when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only the resource of this name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Endpoint for StatQuery {
    const PATH: &'static str = "/api/stat";
    const ACCESS: Access = Access::viewer("stats");
    type Answer = Vec<StatRow>;
}

/// One row of `conduit stat`: a resource's golden metrics over the window.
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

/// `GET /api/routes`: golden metrics per route: a deployment's inbound requests by the
/// routes of its own Services' profiles, or with `to`, its outbound requests to that
/// Service by the routes of that Service's profile.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesQuery {
    /// The deployment.
    pub deployment: String,
    /// Its namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Only its requests to this Service (`name` or `name.namespace`; the deployment's
    /// namespace by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// The window rates cover, like `1m` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
}

impl Endpoint for RoutesQuery {
    const PATH: &'static str = "/api/routes";
    const ACCESS: Access = Access::viewer("routes");
    type Answer = Vec<RouteRow>;
}

/// One row of `conduit routes`: a route's golden metrics over the window. Effective
/// figures are what the clients saw (after retries); actual ones count every attempt,
/// retries included (outbound only: a server's proxy does not retry).
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

/// `GET /api/edges`: who calls whom among deployments.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgesQuery {
    /// The window rates cover, like `1m` (the default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// Only edges from or to this namespace (all when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Endpoint for EdgesQuery {
    const PATH: &'static str = "/api/edges";
    const ACCESS: Access = Access::viewer("edges");
    type Answer = Vec<EdgeRow>;
}

/// One row of `conduit edges`: a source deployment calling a destination deployment.
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

/// `GET /api/workloads`: what discovery knows, and which version of it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadsQuery {}

impl Endpoint for WorkloadsQuery {
    const PATH: &'static str = "/api/workloads";
    const ACCESS: Access = Access::viewer("workloads");
    type Answer = Workloads;
}

/// The workloads discovery knows.
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
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pod {
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub name: String,
    /// The Deployment it belongs to.
    pub deployment: String,
    /// The pod's address.
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
    /// Where the pod's proxy serves its admin server.
    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, ports::PROXY_ADMIN)
    }
}

/// A Service with its ready endpoints per port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The Service's namespace.
    pub namespace: String,
    /// The Service's name.
    pub name: String,
    /// Its virtual IP.
    pub vip: IpAddr,
    /// Its ports.
    pub ports: Vec<ServicePort>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePort {
    /// The port clients connect to.
    pub port: u16,
    /// The ready pods behind it.
    pub endpoints: Vec<ServiceEndpoint>,
}

/// A ready pod behind a Service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEndpoint {
    /// The pod's address and target port.
    pub addr: SocketAddr,
    /// The pod's name.
    pub pod: String,
}

/// `GET /api/tap`: live events of a resource's meshed pods, streamed as JSON lines
/// (`application/x-ndjson`), one [`TapLine`] each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapQuery {
    /// The kind of the resource to tap (see [`Resource::parse`]).
    pub resource: String,
    /// Its name (every pod of the kind when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
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
    pub namespace: Option<String>,
}

impl Endpoint for TapQuery {
    const PATH: &'static str = "/api/tap";
    const ACCESS: Access = Access::tap("taps");
    type Answer = TapLine;
}

/// What a tap line tells.
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

/// `GET /api/top`: a resource's busiest paths, from its live traffic over a window.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopQuery {
    /// The kind of the resource to watch (see [`Resource::parse`]).
    pub resource: String,
    /// Its name (every pod of the kind when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// How long to watch, from 1s to 5m (10s when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The resource's namespace (every namespace when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Endpoint for TopQuery {
    const PATH: &'static str = "/api/top";
    const ACCESS: Access = Access::tap("tops");
    type Answer = Vec<TopRow>;
}

/// One row of `conduit top`: requests to one path, in one direction, with one peer.
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

/// `GET /api/identity`: the certificate of each proxy of a resource.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityQuery {
    /// The kind of the resource (see [`Resource::parse`]).
    pub resource: String,
    /// Its name (every pod of the kind when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The resource's namespace (every namespace when absent).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl Endpoint for IdentityQuery {
    const PATH: &'static str = "/api/identity";
    const ACCESS: Access = Access::viewer("identities");
    type Answer = Vec<IdentityRow>;
}

/// One meshed pod's certificate, as its proxy reports it.
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
