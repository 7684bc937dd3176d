//! The controller's HTTP JSON API, the one the CLI and the dashboard use: `GET
//! /api/stat`, `/api/edges`, `/api/workloads`, `/healthz`. Bad parameters get a 400 that
//! names the parameter and the accepted values.

use crate::{
    discovery::Workloads,
    store::{Resource, Store},
};
use axum::{
    extract::{Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Deserialize;
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::watch;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<Mutex<Store>>,
    pub workloads: watch::Receiver<Arc<Workloads>>,
    /// The longest window a query may ask for (the store's retention).
    pub max_window: Duration,
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/api/stat", get(stat))
        .route("/api/edges", get(edges))
        .route("/api/workloads", get(workloads))
        .with_state(state)
}

/// A 400 naming the parameter at fault.
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "error": self.0 })),
        )
            .into_response()
    }
}

#[derive(Deserialize)]
struct StatQuery {
    resource: String,
    namespace: Option<String>,
    name: Option<String>,
    window: Option<String>,
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

/// Parses kubectl's resource names and their short forms.
pub fn resource(raw: &str) -> Option<Resource> {
    match raw {
        "ns" | "namespace" | "namespaces" => Some(Resource::Namespace),
        "deploy" | "deployment" | "deployments" => Some(Resource::Deployment),
        "po" | "pod" | "pods" => Some(Resource::Pod),
        _ => None,
    }
}

async fn stat(
    State(s): State<ApiState>,
    Query(q): Query<StatQuery>,
) -> Result<Json<serde_json::Value>, BadRequest> {
    let resource = resource(&q.resource).ok_or_else(|| {
        BadRequest(format!(
            "resource={:?}: expected deploy, pod or ns",
            q.resource
        ))
    })?;
    let window = window(q.window.as_deref(), s.max_window)?;
    let workloads = s.workloads.borrow().clone();
    let rows = s.store.lock().unwrap_or_else(|p| p.into_inner()).stat(
        &workloads,
        resource,
        q.namespace.as_deref(),
        q.name.as_deref(),
        window,
    );
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

#[derive(Deserialize)]
struct EdgesQuery {
    namespace: Option<String>,
    window: Option<String>,
}

async fn edges(
    State(s): State<ApiState>,
    Query(q): Query<EdgesQuery>,
) -> Result<Json<serde_json::Value>, BadRequest> {
    let window = window(q.window.as_deref(), s.max_window)?;
    let workloads = s.workloads.borrow().clone();
    let rows = s.store.lock().unwrap_or_else(|p| p.into_inner()).edges(
        &workloads,
        q.namespace.as_deref(),
        window,
    );
    Ok(Json(serde_json::to_value(rows).unwrap_or_default()))
}

async fn workloads(State(s): State<ApiState>) -> Json<serde_json::Value> {
    let w = s.workloads.borrow().clone();
    Json(serde_json::to_value(&*w).unwrap_or_default())
}
