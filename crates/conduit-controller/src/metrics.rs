//! Where the metrics API's answers come from: the embedded store (the default; the
//! controller scrapes every proxy itself) or a Prometheus (`--prometheus-url`; the
//! controller scrapes nothing and keeps no history). Both are a [`History`] that the
//! store's reductions ([`Queries`]) read, so stat, series, edges and routes answer alike
//! whichever is used.

use crate::{
    discovery::Workloads,
    prometheus::{Prometheus, PrometheusError, Scope},
    store::{History, Queries, RouteScope, Store},
};
use conduit_api::http::{EdgeRow, Resource, RouteRow, SeriesPoint, StatRow};
use parking_lot::Mutex;
use std::{sync::Arc, time::Duration};

/// The metrics API's source.
#[derive(Clone)]
pub enum MetricsSource {
    Embedded(Arc<Mutex<Store>>),
    Prometheus(Arc<Prometheus>),
}

/// What a query needs of the history: the pods in scope over one window ending now, or
/// over windows of `range` at `points` moments `step` apart.
enum Needs<'a> {
    Now(Scope<'a>, Duration),
    Over {
        scope: Scope<'a>,
        points: u32,
        step: Duration,
        range: Duration,
    },
}

impl MetricsSource {
    /// Runs `query` on the history it needs.
    async fn read<T>(
        &self,
        needs: Needs<'_>,
        query: impl FnOnce(&dyn History) -> T,
    ) -> Result<T, PrometheusError> {
        match self {
            MetricsSource::Embedded(store) => Ok(query(&*store.lock())),
            MetricsSource::Prometheus(p) => {
                let increases = match needs {
                    Needs::Now(scope, window) => p.increases(&scope, window).await?,
                    Needs::Over {
                        scope,
                        points,
                        step,
                        range,
                    } => p.increases_over_time(&scope, points, step, range).await?,
                };
                Ok(query(&increases))
            }
        }
    }

    /// [`Queries::stat`] over this source.
    pub async fn stat(
        &self,
        workloads: &Workloads,
        resource: Resource,
        namespace: Option<&str>,
        name: Option<&str>,
        window: Duration,
    ) -> Result<Vec<StatRow>, PrometheusError> {
        // Every pod: a Service's effective success is what its clients saw, and they may
        // be in any namespace.
        self.read(Needs::Now(Scope::default(), window), |h| {
            h.stat(workloads, resource, namespace, name, window)
        })
        .await
    }

    /// [`Queries::series`] over this source.
    #[allow(clippy::too_many_arguments)]
    pub async fn series(
        &self,
        workloads: &Workloads,
        resource: Resource,
        namespace: &str,
        name: &str,
        points: u32,
        step: Duration,
        range: Duration,
    ) -> Result<Vec<SeriesPoint>, PrometheusError> {
        let mut scope = Scope {
            matchers: vec![("namespace", namespace)],
        };
        match resource {
            Resource::Deployment => scope.matchers.push(("deployment", name)),
            Resource::Pod => scope.matchers.push(("pod", name)),
            Resource::Namespace => {}
        }
        let needs = Needs::Over {
            scope,
            points,
            step,
            range,
        };
        self.read(needs, |h| {
            h.series(workloads, resource, namespace, name, points, step, range)
        })
        .await
    }

    /// [`Queries::edges`] over this source.
    pub async fn edges(
        &self,
        workloads: &Workloads,
        namespace: Option<&str>,
        window: Duration,
    ) -> Result<Vec<EdgeRow>, PrometheusError> {
        // Every pod: an edge into the namespace may come from any other.
        self.read(Needs::Now(Scope::default(), window), |h| {
            h.edges(workloads, namespace, window)
        })
        .await
    }

    /// [`Queries::routes`] over this source.
    pub async fn routes(
        &self,
        workloads: &Workloads,
        namespace: &str,
        deployment: &str,
        scope: RouteScope<'_>,
        window: Duration,
    ) -> Result<Vec<RouteRow>, PrometheusError> {
        let pods = Scope {
            matchers: vec![("namespace", namespace), ("deployment", deployment)],
        };
        self.read(Needs::Now(pods, window), |h| {
            h.routes(workloads, namespace, deployment, scope, window)
        })
        .await
    }
}
