//! The controller's HTTP JSON API, the one the CLI and the dashboard use: `GET
//! /api/stat`, `/api/edges`, `/api/workloads`, `/api/tap` (a stream of JSON lines),
//! `/api/top` and `/api/identity`, its own counters at `/metrics`, and its probes
//! `/healthz` (alive) and `/ready` (discovery has a complete snapshot; says so when it is
//! serving a stale one). Queries and answers are `conduit_api::http`'s types, which the
//! CLI reads back. Bad parameters get a 400 that names the parameter and the accepted
//! values. Who may call it, and under which paths on Kubernetes, is `api_auth`'s.

use crate::{
    discovery::{PodInfo, Workloads},
    store::{RouteScope, Store},
    tap::TapRequest,
    top::Top,
};
use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use conduit_api::{
    admin::{self, ProxyIdentity},
    http::{
        self, ApiError, EdgeRow, EdgesQuery, Endpoint, IdentityQuery, IdentityReport, IdentityRow,
        Resource, RouteRow, RoutesQuery, StatQuery, StatRow, TapQuery, TopQuery, TopRow,
        WorkloadsQuery,
    },
};
use parking_lot::Mutex;
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Mutex<Store>>,
    pub workloads: watch::Receiver<Arc<Workloads>>,
    /// Whether discovery's snapshots are complete and current.
    pub health: watch::Receiver<crate::discovery::SourceHealth>,
    /// The longest window a query may ask for (the store's retention).
    pub max_window: Duration,
    /// Certificates issued and refused.
    pub identity_counts: Arc<crate::identity::Counts>,
    /// Mesh TLS to proxies' tap servers, when the mesh has identities.
    pub tap_tls: Option<Arc<crate::tls::ControllerTls>>,
    /// The gRPC port's limits, and what they refused.
    pub grpc_limits: Arc<crate::grpc::Limits>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route(http::HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(http::READY_PATH, get(ready))
        .route(http::METRICS_PATH, get(metrics))
        .route(StatQuery::PATH, get(stat))
        .route(EdgesQuery::PATH, get(edges))
        .route(RoutesQuery::PATH, get(routes))
        .route(WorkloadsQuery::PATH, get(workloads))
        .route(TapQuery::PATH, get(tap))
        .route(TopQuery::PATH, get(top))
        .route(IdentityQuery::PATH, get(identity))
        .with_state(state)
}

/// A 400 naming the parameter at fault.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (StatusCode::BAD_REQUEST, Json(ApiError { error: self.0 })).into_response()
    }
}

/// 503 until discovery has a complete snapshot. A source that fails later keeps the
/// controller ready (proxies are better served the last state than none) and is named.
async fn ready(State(s): State<ApiState>) -> (StatusCode, String) {
    let health = s.health.borrow().clone();
    let mut body = if health.synced {
        "ready\n".to_string()
    } else {
        "not ready: discovery has no complete snapshot yet\n".to_string()
    };
    for problem in &health.problems {
        let prefix = if health.synced {
            "serving the last state; "
        } else {
            ""
        };
        body.push_str(&format!("{prefix}{problem}\n"));
    }
    let code = if health.synced {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

fn window(raw: Option<&str>, max: Duration) -> Result<Duration, BadRequest> {
    let Some(raw) = raw else {
        return Ok(Duration::from_secs(60));
    };
    let w = humantime::parse_duration(raw).map_err(|_| {
        BadRequest(format!(
            "window={raw:?}: expected a duration like 1m or 30s"
        ))
    })?;
    if w.is_zero() || w > max {
        return Err(BadRequest(format!(
            "window={raw}: must be more than 0 and at most {} (the metrics kept in memory)",
            humantime::format_duration(max)
        )));
    }
    Ok(w)
}

/// The kind a query's `resource` names, or a 400 saying what it accepts.
fn resource(raw: &str) -> Result<Resource, BadRequest> {
    Resource::parse(raw)
        .ok_or_else(|| BadRequest(format!("resource={raw:?}: expected {}", Resource::EXPECTED)))
}

async fn stat(
    State(s): State<ApiState>,
    Query(q): Query<StatQuery>,
) -> Result<Json<Vec<StatRow>>, BadRequest> {
    let resource = resource(&q.resource)?;
    let window = window(q.window.as_deref(), s.max_window)?;
    let workloads = s.workloads.borrow().clone();
    let rows = s.store.lock().stat(
        &workloads,
        resource,
        q.namespace.as_deref(),
        q.name.as_deref(),
        window,
    );
    Ok(Json(rows))
}

async fn edges(
    State(s): State<ApiState>,
    Query(q): Query<EdgesQuery>,
) -> Result<Json<Vec<EdgeRow>>, BadRequest> {
    let window = window(q.window.as_deref(), s.max_window)?;
    let workloads = s.workloads.borrow().clone();
    let rows = s
        .store
        .lock()
        .edges(&workloads, q.namespace.as_deref(), window);
    Ok(Json(rows))
}

async fn routes(
    State(s): State<ApiState>,
    Query(q): Query<RoutesQuery>,
) -> Result<Json<Vec<RouteRow>>, BadRequest> {
    let window = window(q.window.as_deref(), s.max_window)?;
    let namespace = q.namespace.as_deref().unwrap_or("default");
    if q.deployment.is_empty() {
        return Err(BadRequest(
            "deployment: expected the deployment whose routes to show".into(),
        ));
    }
    let scope = match q.to.as_deref() {
        None => RouteScope::Inbound,
        Some(to) => {
            let (name, ns) = to.split_once('.').unwrap_or((to, namespace));
            if name.is_empty() || ns.is_empty() || ns.contains('.') {
                return Err(BadRequest(format!(
                    "to={to:?}: expected a Service as name or name.namespace"
                )));
            }
            RouteScope::To {
                namespace: ns,
                name,
            }
        }
    };
    let workloads = s.workloads.borrow().clone();
    let rows = s
        .store
        .lock()
        .routes(&workloads, namespace, &q.deployment, scope, window);
    Ok(Json(rows))
}

async fn workloads(State(s): State<ApiState>) -> Json<http::Workloads> {
    Json(listing(&s.workloads.borrow()))
}

/// What `/api/workloads` shows of a discovery snapshot.
fn listing(w: &Workloads) -> http::Workloads {
    http::Workloads {
        pods: w.pods.iter().map(|p| (**p).clone()).collect(),
        services: w.services.iter().map(|s| (**s).clone()).collect(),
        inject_namespaces: w.inject_namespaces.clone(),
        namespaces: w.namespaces.clone(),
        generation: w.generation,
    }
}

/// The meshed pods a tap of `resource[/name]` in `namespace` observes, or why there are none.
fn tap_targets(
    s: &ApiState,
    resource_name: &str,
    name: Option<&str>,
    namespace: Option<&str>,
) -> Result<(Arc<Workloads>, Vec<Arc<PodInfo>>), BadRequest> {
    let kind = resource(resource_name)?;
    let workloads = s.workloads.borrow().clone();
    let pods: Vec<Arc<PodInfo>> = workloads
        .pods
        .iter()
        .filter(|p| namespace.is_none_or(|ns| ns == p.namespace))
        .filter(|p| match (name, kind) {
            (None, _) => true,
            (Some(n), Resource::Deployment) => p.deployment == n,
            (Some(n), Resource::Pod) => p.name == n,
            (Some(n), Resource::Namespace) => p.namespace == n,
        })
        .cloned()
        .collect();
    let what = format!(
        "{resource_name}{}",
        name.map(|n| format!("/{n}")).unwrap_or_default()
    );
    if pods.is_empty() {
        return Err(BadRequest(format!(
            "no pods for {what}{}",
            namespace
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default()
        )));
    }
    let meshed: Vec<Arc<PodInfo>> = pods.into_iter().filter(|p| p.meshed).collect();
    if meshed.is_empty() {
        return Err(BadRequest(format!(
            "{what} is not meshed: it has no conduit proxy (conduit inject adds it)"
        )));
    }
    Ok((workloads, meshed))
}

/// Streams tap events of a resource's pods as JSON lines (`application/x-ndjson`).
async fn tap(State(s): State<ApiState>, Query(q): Query<TapQuery>) -> Result<Response, BadRequest> {
    let (workloads, pods) =
        tap_targets(&s, &q.resource, q.name.as_deref(), q.namespace.as_deref())?;
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let request = TapRequest {
        max: q.max,
        authority: q.authority,
        path_prefix: q.path,
    };
    crate::tap::spawn(workloads, pods, request, s.tap_tls.clone(), tx);
    let lines =
        tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |l| {
            Ok::<_, std::convert::Infallible>(serde_json::to_string(&l).unwrap_or_default() + "\n")
        });
    let body = axum::body::Body::from_stream(lines);
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response())
}

/// Taps a resource for a window and answers its busiest paths.
async fn top(
    State(s): State<ApiState>,
    Query(q): Query<TopQuery>,
) -> Result<Json<Vec<TopRow>>, BadRequest> {
    let window = match q.window.as_deref() {
        None => Duration::from_secs(10),
        Some(raw) => match humantime::parse_duration(raw) {
            Ok(w) if !w.is_zero() && w <= Duration::from_secs(300) => w,
            _ => {
                return Err(BadRequest(format!(
                    "window={raw:?}: expected a duration from 1s to 5m, like 10s"
                )))
            }
        },
    };
    let (workloads, pods) =
        tap_targets(&s, &q.resource, q.name.as_deref(), q.namespace.as_deref())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
    crate::tap::spawn(
        workloads,
        pods,
        TapRequest::default(),
        s.tap_tls.clone(),
        tx,
    );
    let mut top = Top::default();
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(line)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        top.add(&line);
    }
    Ok(Json(top.rows()))
}

/// The control plane's own counters, in the Prometheus text format.
async fn metrics(State(s): State<ApiState>) -> String {
    let mut out = String::from("# HELP identity_certify_total Certificate requests, by outcome.\n# TYPE identity_certify_total counter\n");
    for (outcome, n) in s.identity_counts.snapshot() {
        out.push_str(&format!(
            "identity_certify_total{{outcome=\"{outcome}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP grpc_refused_total gRPC calls refused with RESOURCE_EXHAUSTED, by limit.\n# TYPE grpc_refused_total counter\n");
    for (limit, n) in s.grpc_limits.refused() {
        out.push_str(&format!("grpc_refused_total{{limit=\"{limit}\"}} {n}\n"));
    }
    out
}

/// The certificates of a resource's proxies, as each proxy reports it.
async fn identity(
    State(s): State<ApiState>,
    Query(q): Query<IdentityQuery>,
) -> Result<Json<Vec<IdentityRow>>, BadRequest> {
    let (_, pods) = tap_targets(&s, &q.resource, q.name.as_deref(), q.namespace.as_deref())?;
    let mut rows = Vec::new();
    for pod in pods {
        let answer = tokio::time::timeout(
            Duration::from_secs(5),
            crate::scrape::fetch(&pod, admin::IDENTITY_PATH),
        )
        .await;
        let report = match answer {
            Ok(Ok(text)) => match serde_json::from_str::<ProxyIdentity>(&text) {
                Ok(reported) => IdentityReport::Reported(reported),
                Err(e) => IdentityReport::Unknown {
                    error: format!(
                        "the proxy answered something that is not its identity as JSON: {e}"
                    ),
                },
            },
            Ok(Err(error)) => IdentityReport::Unknown { error },
            Err(_) => IdentityReport::Unknown {
                error: "the proxy did not answer within 5s".into(),
            },
        };
        rows.push(IdentityRow {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            report,
        });
    }
    Ok(Json(rows))
}
