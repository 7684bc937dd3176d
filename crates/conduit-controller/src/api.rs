//! The controller's public HTTP JSON API, version 1, the one the CLI and the dashboard
//! use: every endpoint of `conduit_api::http::ENDPOINTS` under `/api/v1` (namespaces,
//! stat, series, edges, routes, workloads, tap and top as streams of JSON lines or
//! windows of them, identity, version, and the OpenAPI document generated from the
//! types), its own counters at `/metrics`, and its probes `/healthz` (alive) and `/ready`
//! (discovery has a complete snapshot; says so when it is serving a stale one). Queries
//! and answers are `conduit_api::http`'s types, which the CLI reads back. Every refusal is
//! an `ApiError` in JSON: 400 naming the parameter and what it accepts, 404 for a path,
//! namespace or resource that does not exist. Who may call it, and under which paths on
//! Kubernetes, is `api_auth`'s.

use crate::{
    discovery::{PodInfo, Workloads},
    metrics::MetricsSource,
    prometheus::PrometheusError,
    store::RouteScope,
    tap::TapRequest,
    top::Top,
};
use axum::{
    extract::{FromRequestParts, Query, State},
    http::{request::Parts, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use conduit_api::{
    admin::{self, ProxyIdentity},
    http::{
        self, ApiError, EdgeRow, EdgesQuery, Endpoint, IdentityQuery, IdentityReport, IdentityRow,
        NamespaceRow, NamespacesQuery, OpenApiQuery, Resource, RouteRow, RoutesQuery, Series,
        SeriesQuery, StatQuery, StatRow, TapQuery, TopQuery, TopRow, Version, VersionQuery,
        WorkloadsQuery, MAX_SERIES_POINTS, NDJSON,
    },
};
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    /// Where stat, series, edges and routes read the proxies' metrics.
    pub metrics: MetricsSource,
    pub workloads: watch::Receiver<Arc<Workloads>>,
    /// Whether discovery's snapshots are complete and current.
    pub health: watch::Receiver<crate::discovery::SourceHealth>,
    /// The longest window a query may ask for (the store's retention, or what Prometheus
    /// is trusted to keep).
    pub max_window: Duration,
    /// How often proxies are scraped: a series' points cover at least two scrapes.
    pub scrape_interval: Duration,
    /// Certificates issued and refused.
    pub identity_counts: Arc<crate::identity::Counts>,
    /// Mesh TLS to proxies' tap servers, when the mesh has identities.
    pub tap_tls: Option<Arc<crate::tls::ControllerTls>>,
    /// The gRPC port's limits, and what they refused.
    pub grpc_limits: Arc<crate::grpc::Limits>,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    let router = Router::new()
        .route(http::HEALTHZ_PATH, get(|| async { "ok\n" }))
        .route(http::READY_PATH, get(ready))
        .route(http::METRICS_PATH, get(metrics))
        .route(NamespacesQuery::PATH, get(namespaces))
        .route(StatQuery::PATH, get(stat))
        .route(SeriesQuery::PATH, get(series))
        .route(EdgesQuery::PATH, get(edges))
        .route(RoutesQuery::PATH, get(routes))
        .route(WorkloadsQuery::PATH, get(workloads))
        .route(TapQuery::PATH, get(tap))
        .route(TopQuery::PATH, get(top))
        .route(IdentityQuery::PATH, get(identity))
        .route(VersionQuery::PATH, get(version))
        .route(OpenApiQuery::PATH, get(openapi));
    crate::dashboard::routes(router)
        .fallback(no_such_path)
        .with_state(state)
}

/// A refused request: its status and what to tell the caller.
pub(crate) struct Refused(StatusCode, String);

/// A 400 naming the parameter at fault.
fn bad_request(message: String) -> Refused {
    Refused(StatusCode::BAD_REQUEST, message)
}

/// A 503: the metrics' source (a Prometheus) failed; its error says which and why.
fn unavailable(error: PrometheusError) -> Refused {
    Refused(StatusCode::SERVICE_UNAVAILABLE, error.to_string())
}

/// A 404: no such namespace or resource.
fn not_found(message: String) -> Refused {
    Refused(StatusCode::NOT_FOUND, message)
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

pub(crate) async fn no_such_path(uri: axum::http::Uri) -> Refused {
    not_found(format!(
        "no such path: {}; the API's paths are in {}",
        uri.path(),
        OpenApiQuery::PATH
    ))
}

/// A query string read as `T`, or a 400 in JSON saying what in it was wrong.
struct ApiQuery<T>(T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Refused> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(query)) => Ok(ApiQuery(query)),
            Err(e) => Err(bad_request(format!(
                "the query string: {}",
                e.body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
            ))),
        }
    }
}

/// `namespace` if discovery knows it, else a 404 saying how to list those it knows.
fn known_namespace(w: &Workloads, namespace: &str) -> Result<(), Refused> {
    let known = w.namespaces.contains(namespace)
        || w.pods.iter().any(|p| p.namespace == namespace)
        || w.services.iter().any(|s| s.namespace == namespace);
    if known {
        Ok(())
    } else {
        Err(not_found(format!(
            "namespace {namespace:?}: no such namespace (it has no pods or Services); {} lists them",
            NamespacesQuery::PATH
        )))
    }
}

/// Every namespace with pods or Services (or a Namespace object), with its counts.
async fn namespaces(
    State(s): State<ApiState>,
    ApiQuery(_): ApiQuery<NamespacesQuery>,
) -> Json<Vec<NamespaceRow>> {
    let w = s.workloads.borrow().clone();
    let mut rows: std::collections::BTreeMap<&str, NamespaceRow> =
        std::collections::BTreeMap::new();
    let names = w
        .namespaces
        .iter()
        .map(String::as_str)
        .chain(w.pods.iter().map(|p| p.namespace.as_str()))
        .chain(w.services.iter().map(|s| s.namespace.as_str()));
    for name in names {
        rows.entry(name).or_insert_with(|| NamespaceRow {
            name: name.to_string(),
            pods: 0,
            meshed_pods: 0,
            services: 0,
            inject: w.inject_namespaces.contains(name),
        });
    }
    for pod in &w.pods {
        if let Some(row) = rows.get_mut(pod.namespace.as_str()) {
            row.pods += 1;
            row.meshed_pods += u32::from(pod.meshed);
        }
    }
    for service in &w.services {
        if let Some(row) = rows.get_mut(service.namespace.as_str()) {
            row.services += 1;
        }
    }
    Json(rows.into_values().collect())
}

async fn version(ApiQuery(_): ApiQuery<VersionQuery>) -> Json<Version> {
    Json(Version {
        version: http::VERSION.to_string(),
    })
}

async fn openapi(ApiQuery(_): ApiQuery<OpenApiQuery>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        conduit_api::openapi::document_json(),
    )
        .into_response()
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

/// The window a query asks for (`default` when absent), or a 400 saying what it accepts.
fn window(raw: Option<&str>, max: Duration) -> Result<Duration, Refused> {
    duration("window", raw, Duration::from_secs(60), max)
}

/// Parameter `param`, a duration from more than 0 to `max` (`default` when absent).
fn duration(
    param: &str,
    raw: Option<&str>,
    default: Duration,
    max: Duration,
) -> Result<Duration, Refused> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    let w = humantime::parse_duration(raw).map_err(|_| {
        bad_request(format!(
            "{param}={raw:?}: expected a duration like 1m or 30s"
        ))
    })?;
    if w.is_zero() || w > max {
        return Err(bad_request(format!(
            "{param}={raw}: must be more than 0 and at most {} (the history this controller answers for)",
            humantime::format_duration(max)
        )));
    }
    Ok(w)
}

/// The kind a query's `resource` names, or a 400 saying what it accepts.
fn resource(raw: &str) -> Result<Resource, Refused> {
    Resource::parse(raw)
        .ok_or_else(|| bad_request(format!("resource={raw:?}: expected {}", Resource::EXPECTED)))
}

async fn stat(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<StatQuery>,
) -> Result<Json<Vec<StatRow>>, Refused> {
    let resource = resource(&q.resource)?;
    let window = window(q.window.as_deref(), s.max_window)?;
    let workloads = s.workloads.borrow().clone();
    if let Some(ns) = &q.namespace {
        known_namespace(&workloads, ns)?;
    }
    let rows = s
        .metrics
        .stat(
            &workloads,
            resource,
            q.namespace.as_deref(),
            q.name.as_deref(),
            window,
        )
        .await
        .map_err(unavailable)?;
    if let (Some(name), true) = (&q.name, rows.is_empty()) {
        return Err(no_such_resource(resource, name, q.namespace.as_deref()));
    }
    Ok(Json(rows))
}

/// A 404 for `kind/name`, which has no pods in `namespace` (any namespace when `None`).
fn no_such_resource(kind: Resource, name: &str, namespace: Option<&str>) -> Refused {
    not_found(format!(
        "{}/{name}: no such {}{} (it has no pods)",
        kind.short_name(),
        kind.short_name(),
        namespace
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default()
    ))
}

/// A resource's golden metrics over time: `window` / `step` points.
async fn series(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<Json<Series>, Refused> {
    let resource = resource(&q.resource)?;
    let window = duration(
        "window",
        q.window.as_deref(),
        Duration::from_secs(600).min(s.max_window),
        s.max_window,
    )?;
    let step = duration("step", q.step.as_deref(), window / 60, window)?;
    let points = window.as_secs_f64() / step.as_secs_f64();
    if points > f64::from(MAX_SERIES_POINTS) {
        return Err(bad_request(format!(
            "step={}: {} over a window of {} is {points:.0} points, more than the {MAX_SERIES_POINTS} a series may have; take a longer step",
            q.step.as_deref().unwrap_or_default(),
            humantime::format_duration(step),
            humantime::format_duration(window),
        )));
    }
    if q.name.is_empty() {
        return Err(bad_request(
            "name: expected the name of the resource whose series to show".into(),
        ));
    }
    let namespace = match resource {
        Resource::Namespace => q.name.clone(),
        _ => q.namespace.clone().unwrap_or_else(|| "default".into()),
    };
    let workloads = s.workloads.borrow().clone();
    known_namespace(&workloads, &namespace)?;
    let member = |p: &Arc<PodInfo>| p.namespace == namespace && p.name_as(resource) == q.name;
    if !workloads.pods.iter().any(member) {
        return Err(no_such_resource(resource, &q.name, Some(&namespace)));
    }
    let range = step.max(2 * s.scrape_interval);
    let points = s
        .metrics
        .series(
            &workloads,
            resource,
            &namespace,
            &q.name,
            points.round().max(1.0) as u32,
            step,
            range,
        )
        .await
        .map_err(unavailable)?;
    Ok(Json(Series {
        namespace,
        name: q.name,
        step_seconds: step.as_secs_f64(),
        range_seconds: range.as_secs_f64(),
        points,
    }))
}

async fn edges(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<EdgesQuery>,
) -> Result<Json<Vec<EdgeRow>>, Refused> {
    let window = window(q.window.as_deref(), s.max_window)?;
    let workloads = s.workloads.borrow().clone();
    if let Some(ns) = &q.namespace {
        known_namespace(&workloads, ns)?;
    }
    let rows = s
        .metrics
        .edges(&workloads, q.namespace.as_deref(), window)
        .await
        .map_err(unavailable)?;
    Ok(Json(rows))
}

async fn routes(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<RoutesQuery>,
) -> Result<Json<Vec<RouteRow>>, Refused> {
    let window = window(q.window.as_deref(), s.max_window)?;
    let namespace = q.namespace.as_deref().unwrap_or("default");
    if q.deployment.is_empty() {
        return Err(bad_request(
            "deployment: expected the deployment whose routes to show".into(),
        ));
    }
    let scope = match q.to.as_deref() {
        None => RouteScope::Inbound,
        Some(to) => {
            let (name, ns) = to.split_once('.').unwrap_or((to, namespace));
            if name.is_empty() || ns.is_empty() || ns.contains('.') {
                return Err(bad_request(format!(
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
    known_namespace(&workloads, namespace)?;
    if !workloads
        .pods
        .iter()
        .any(|p| p.namespace == namespace && p.deployment == q.deployment)
    {
        return Err(no_such_resource(
            Resource::Deployment,
            &q.deployment,
            Some(namespace),
        ));
    }
    let rows = s
        .metrics
        .routes(&workloads, namespace, &q.deployment, scope, window)
        .await
        .map_err(unavailable)?;
    Ok(Json(rows))
}

async fn workloads(
    State(s): State<ApiState>,
    ApiQuery(_): ApiQuery<WorkloadsQuery>,
) -> Json<http::Workloads> {
    Json(listing(&s.workloads.borrow()))
}

/// What `/api/v1/workloads` shows of a discovery snapshot.
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
) -> Result<(Arc<Workloads>, Vec<Arc<PodInfo>>), Refused> {
    let kind = resource(resource_name)?;
    let workloads = s.workloads.borrow().clone();
    if let Some(ns) = namespace {
        known_namespace(&workloads, ns)?;
    }
    let pods: Vec<Arc<PodInfo>> = workloads
        .pods
        .iter()
        .filter(|p| namespace.is_none_or(|ns| ns == p.namespace))
        .filter(|p| name.is_none_or(|n| p.name_as(kind) == n))
        .cloned()
        .collect();
    let what = format!(
        "{resource_name}{}",
        name.map(|n| format!("/{n}")).unwrap_or_default()
    );
    if pods.is_empty() {
        return Err(not_found(format!(
            "no pods for {what}{}",
            namespace
                .map(|n| format!(" in namespace {n}"))
                .unwrap_or_default()
        )));
    }
    let meshed: Vec<Arc<PodInfo>> = pods.into_iter().filter(|p| p.meshed).collect();
    if meshed.is_empty() {
        return Err(bad_request(format!(
            "{what} is not meshed: it has no conduit proxy (conduit inject adds it)"
        )));
    }
    Ok((workloads, meshed))
}

/// Streams tap events of a resource's pods as JSON lines (`application/x-ndjson`).
async fn tap(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<TapQuery>,
) -> Result<Response, Refused> {
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
    Ok(([(axum::http::header::CONTENT_TYPE, NDJSON)], body).into_response())
}

/// Taps a resource for a window and answers its busiest paths.
async fn top(
    State(s): State<ApiState>,
    ApiQuery(q): ApiQuery<TopQuery>,
) -> Result<Json<Vec<TopRow>>, Refused> {
    let window = match q.window.as_deref() {
        None => Duration::from_secs(10),
        Some(raw) => match humantime::parse_duration(raw) {
            Ok(w) if !w.is_zero() && w <= Duration::from_secs(300) => w,
            _ => {
                return Err(bad_request(format!(
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
    ApiQuery(q): ApiQuery<IdentityQuery>,
) -> Result<Json<Vec<IdentityRow>>, Refused> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use http_body_util::BodyExt as _;
    use parking_lot::Mutex;
    use tower::ServiceExt as _;

    fn api() -> Router {
        let (_, workloads) = watch::channel(Arc::new(crate::discovery::tests::sample()));
        let (_, health) = watch::channel(crate::discovery::SourceHealth {
            synced: true,
            problems: Vec::new(),
        });
        router(ApiState {
            metrics: MetricsSource::Embedded(Arc::new(Mutex::new(crate::store::Store::new(
                Duration::from_secs(900),
            )))),
            workloads,
            health,
            max_window: Duration::from_secs(900),
            scrape_interval: Duration::from_secs(10),
            identity_counts: Arc::default(),
            tap_tls: None,
            grpc_limits: crate::grpc::Limits::new(8, 8),
        })
    }

    /// The status, content type and JSON body of `GET uri`.
    async fn get(uri: &str) -> (StatusCode, String, serde_json::Value) {
        let req = axum::http::Request::get(uri).body(Body::empty()).unwrap();
        let rsp = api().oneshot(req).await.unwrap();
        let status = rsp.status();
        let content_type = rsp.headers()[axum::http::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        let json = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{uri}: not JSON ({e}): {body:?}"));
        (status, content_type, json)
    }

    /// The status and the error message of a refused `GET uri`.
    async fn refused(uri: &str) -> (StatusCode, String) {
        let (status, content_type, json) = get(uri).await;
        assert_eq!(content_type, "application/json", "{uri}");
        let error: ApiError = serde_json::from_value(json).unwrap();
        (status, error.error)
    }

    #[tokio::test]
    async fn every_refusal_is_json_that_names_what_was_wrong() {
        for (uri, status, says) in [
            (
                "/api/v1/stat?resource=svc",
                400,
                "resource=\"svc\": expected deploy, pod or ns",
            ),
            ("/api/v1/stat", 400, "missing field `resource`"),
            (
                "/api/v1/tap?resource=deploy&max=many",
                400,
                "the query string: max: invalid digit",
            ),
            (
                "/api/v1/stat?resource=deploy&window=forever",
                400,
                "window=\"forever\"",
            ),
            ("/api/v1/stat?resource=deploy&window=1h", 400, "at most 15m"),
            (
                "/api/v1/stat?resource=deploy&namespace=nope",
                404,
                "namespace \"nope\": no such namespace",
            ),
            (
                "/api/v1/stat?resource=deploy&namespace=emojivoto&name=nope",
                404,
                "deploy/nope: no such deploy in namespace emojivoto",
            ),
            (
                "/api/v1/routes?deployment=web&namespace=emojivoto&to=a.b.c",
                400,
                "to=\"a.b.c\"",
            ),
            (
                "/api/v1/routes?deployment=nope&namespace=emojivoto",
                404,
                "deploy/nope",
            ),
            (
                "/api/v1/tap?resource=deploy&name=nope&namespace=emojivoto",
                404,
                "no pods for deploy/nope",
            ),
            (
                "/api/v1/series?resource=deploy&name=web&namespace=emojivoto&window=15m&step=1s",
                400,
                "900 points, more than the 720",
            ),
            (
                "/api/v1/series?resource=deploy&name=web",
                404,
                "namespace \"default\"",
            ),
            (
                "/api/v1/nothing",
                404,
                "no such path: /api/v1/nothing; the API's paths are in /api/v1/openapi.json",
            ),
            ("/api/stat?resource=deploy", 404, "no such path: /api/stat"),
        ] {
            let (got, message) = refused(uri).await;
            assert_eq!(got.as_u16(), status, "{uri}: {message}");
            assert!(
                message.contains(says),
                "{uri}: {message:?} should say {says:?}"
            );
        }
    }

    #[tokio::test]
    async fn namespaces_series_version_and_the_document() {
        let (status, _, namespaces) = get("/api/v1/namespaces").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            namespaces,
            serde_json::json!([{"name": "emojivoto", "pods": 3, "meshed_pods": 3, "services": 2, "inject": false}])
        );
        let (status, _, series) =
            get("/api/v1/series?resource=deploy&name=web&namespace=emojivoto&window=1m&step=10s")
                .await;
        assert_eq!(status, StatusCode::OK);
        let series: Series = serde_json::from_value(series).unwrap();
        assert_eq!(
            (
                series.points.len(),
                series.step_seconds,
                series.range_seconds
            ),
            (6, 10.0, 20.0),
            "a point a step, each over two scrapes at least"
        );
        assert!(series
            .points
            .iter()
            .all(|p| p.request_rate == 0.0 && p.success_rate.is_none()));
        let (_, _, version) = get(VersionQuery::PATH).await;
        assert_eq!(version["version"], http::VERSION);
        let (status, content_type, doc) = get(OpenApiQuery::PATH).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::OK, "application/json")
        );
        assert_eq!(doc["openapi"], "3.1.0");
        assert!(doc["paths"][SeriesQuery::PATH]["get"].is_object());
    }
}
