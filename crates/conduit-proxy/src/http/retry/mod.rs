//! Retries: the client's proxy sends a failed request again, to another endpoint than the
//! one that failed whenever there is another, within its Service's [`RetryBudget`].
//!
//! - A request on a route its profile marks retryable (any method: the user says it is
//!   safe to repeat) is retried on a 5xx, a gRPC UNAVAILABLE (trailers-only), or a
//!   failed exchange with the upstream.
//! - A request that provably never reached an application is retried whatever its route
//!   and method, since it cannot have had an effect: connecting to the endpoint failed,
//!   or the endpoint's proxy says (over mesh TLS, in [`UNSENT_HEADER`]) that it could not
//!   connect to its application.
//!
//! Request bodies are copied for replay up to [`replay::MAX_REPLAY_BYTES`]; a larger one
//! is never retried. At most [`MAX_RETRIES`] retries per request; the route's timeout
//! (the layer above) covers every attempt. Each attempt is counted (`route_attempt_total`,
//! the actual success rate), as are retries and the retries skipped, and a response that
//! took retries says how many in [`RETRIES_HEADER`]. The server's proxy does not retry;
//! it sets [`UNSENT_HEADER`] on its own answers (see `respond.rs`) and strips it from the
//! application's.

pub mod budget;
pub mod replay;

use super::{
    body::RequestBody,
    headers,
    routes::{ProfileRoute, RouteMatch},
};
use crate::{
    errors::{ProxyError, RETRIES_HEADER, UNSENT_HEADER},
    peer::{Direction, PeerTls},
    telemetry::{
        labels::Target,
        metrics::{AttemptLabels, Classification, RetryLabels, RetryMetrics},
    },
};
use budget::RetryBudget;
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use replay::{ReplayBody, MAX_REPLAY_BYTES};
use std::{
    net::SocketAddr,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tower::ServiceExt;

/// The most retries of one request (the budget usually says less).
pub const MAX_RETRIES: u32 = 5;

/// The endpoint an attempt should not go to: the one the previous attempt failed on (a
/// request extension the forwarder honours when it has another).
#[derive(Clone, Copy, Debug)]
pub struct Avoid(pub SocketAddr);

/// The endpoint that answered (a response extension).
#[derive(Clone, Copy, Debug)]
pub struct Served(pub SocketAddr);

/// Why an attempt is sent again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reason {
    /// A retryable route's request failed.
    Failure,
    /// The request never reached an application.
    Unsent,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::Failure => "failure",
            Reason::Unsent => "unsent",
        }
    }
}

/// Sends requests again when they fail and may be (outbound); inbound, one attempt each.
#[derive(Clone)]
pub struct Retry<S> {
    inner: S,
    conn: Arc<ConnRetries>,
}

struct ConnRetries {
    direction: Direction,
    /// How long an HTTP/1 request body may stall.
    body_idle: Option<Duration>,
    metrics: RetryMetrics,
    target: Target,
    /// The budget of requests whose target has no budget of its own (no control plane,
    /// or more targets than are followed).
    fallback: Arc<RetryBudget>,
}

impl<S> Retry<S> {
    /// Wraps `inner` for `direction`'s connections to `target`: HTTP/1 request bodies
    /// stalled for `body_idle` fail; retries are counted in `metrics`; requests with no
    /// budget of their own share `fallback`.
    pub fn new(
        inner: S,
        direction: Direction,
        body_idle: Option<Duration>,
        metrics: RetryMetrics,
        target: Target,
        fallback: Arc<RetryBudget>,
    ) -> Self {
        Retry {
            inner,
            conn: Arc::new(ConnRetries {
                direction,
                body_idle,
                metrics,
                target,
                fallback,
            }),
        }
    }
}

/// How one attempt went.
fn outcome<B>(
    result: &Result<Response<B>, ProxyError>,
    route: &ProfileRoute,
) -> (Classification, Option<Reason>) {
    match result {
        Err(e) if e.never_sent() => (Classification::Failure, Some(Reason::Unsent)),
        Err(ProxyError::UpstreamFailed { .. }) => (
            Classification::Failure,
            route.retryable.then_some(Reason::Failure),
        ),
        Err(_) => (Classification::Failure, None),
        Ok(rsp) => {
            let meshed = matches!(rsp.extensions().get::<PeerTls>(), Some(PeerTls::Server(_)));
            if meshed && rsp.headers().contains_key(UNSENT_HEADER) {
                return (Classification::Failure, Some(Reason::Unsent));
            }
            let grpc_unavailable = rsp
                .headers()
                .get("grpc-status")
                .is_some_and(|s| s.as_bytes() == b"14");
            if rsp.status().is_server_error() || grpc_unavailable {
                (
                    Classification::Failure,
                    route.retryable.then_some(Reason::Failure),
                )
            } else {
                (Classification::Success, None)
            }
        }
    }
}

impl ConnRetries {
    fn labels(&self, route: &ProfileRoute, reason: &'static str) -> RetryLabels {
        RetryLabels {
            direction: self.direction,
            route: route.name.clone(),
            target: self.target.clone(),
            reason,
        }
    }

    fn attempted(&self, route: &ProfileRoute, classification: Classification) {
        let labels = AttemptLabels {
            direction: self.direction,
            route: route.name.clone(),
            target: self.target.clone(),
            classification,
        };
        self.metrics.attempts.get(&labels).inc();
    }
}

impl<S, RB> tower::Service<Request<Incoming>> for Retry<S>
where
    S: tower::Service<Request<ReplayBody>, Response = Response<RB>, Error = ProxyError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    RB: Send + 'static,
{
    type Response = Response<RB>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<RB>, ProxyError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let conn = self.conn.clone();
        let body_idle = (req.version() <= http::Version::HTTP_11)
            .then_some(conn.body_idle)
            .flatten();
        let retries = conn.direction == Direction::Outbound
            && !(req.version() <= http::Version::HTTP_11 && headers::is_upgrade(&req));
        let limit = if retries { MAX_REPLAY_BYTES } else { 0 };
        let req = req.map(|body| ReplayBody::new(RequestBody::new(body, body_idle), limit));
        let inner = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, inner);
        if !retries {
            // Inbound: the application's answer never says what only this proxy may.
            let fut = inner.call(req);
            return Box::pin(async move {
                let mut rsp = fut.await?;
                rsp.headers_mut().remove(UNSENT_HEADER);
                Ok(rsp)
            });
        }
        let matched = req
            .extensions()
            .get::<RouteMatch>()
            .cloned()
            .unwrap_or_else(RouteMatch::default_route);
        let budget = matched
            .budget
            .clone()
            .unwrap_or_else(|| conn.fallback.clone());
        let policy = matched.profile.budget;
        budget.request(&policy);
        let copy = req.body().copy();
        let (parts, body) = req.into_parts();
        Box::pin(async move {
            let route = &matched.route;
            let mut body = body;
            let mut retried = 0;
            let mut avoid = None;
            loop {
                let mut attempt = Request::from_parts(parts.clone(), body);
                if let Some(addr) = avoid {
                    attempt.extensions_mut().insert(Avoid(addr));
                }
                let result = inner.clone().oneshot(attempt).await;
                let (classification, reason) = outcome(&result, route);
                conn.attempted(route, classification);
                let skipped = match reason {
                    None => None,
                    Some(_) if retried >= MAX_RETRIES => Some("limit"),
                    Some(reason) => match copy.replay() {
                        None => Some("body"),
                        Some(_) if !budget.try_retry(&policy) => Some("budget"),
                        Some(next) => {
                            conn.metrics
                                .retries
                                .get(&conn.labels(route, reason.as_str()))
                                .inc();
                            avoid = match &result {
                                Ok(rsp) => rsp.extensions().get::<Served>().map(|s| s.0),
                                Err(e) => e.upstream(),
                            };
                            retried += 1;
                            body = next;
                            continue;
                        }
                    },
                };
                if let Some(why) = skipped {
                    conn.metrics.skipped.get(&conn.labels(route, why)).inc();
                }
                copy.end();
                let mut rsp = result?;
                rsp.headers_mut().remove(UNSENT_HEADER);
                if retried > 0 {
                    rsp.headers_mut()
                        .insert(RETRIES_HEADER, HeaderValue::from(retried));
                }
                return Ok(rsp);
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(retryable: bool) -> ProfileRoute {
        ProfileRoute {
            retryable,
            ..ProfileRoute::default_route()
        }
    }

    fn rsp(status: u16, tls: PeerTls, headers: &[(&'static str, &'static str)]) -> Response<()> {
        let mut rsp = Response::builder().status(status);
        for (k, v) in headers {
            rsp = rsp.header(*k, *v);
        }
        let mut rsp = rsp.body(()).unwrap();
        rsp.extensions_mut().insert(tls);
        rsp
    }

    #[test]
    fn what_is_retried_and_why() {
        let addr: SocketAddr = "198.18.0.4:8080".parse().unwrap();
        let meshed = PeerTls::Server("web.emojivoto.serviceaccount.identity".into());
        let unsent = [(UNSENT_HEADER, "true")];
        type Case = (Result<Response<()>, ProxyError>, bool, Option<Reason>);
        let cases: Vec<Case> = vec![
            (Ok(rsp(200, PeerTls::None, &[])), true, None),
            (
                Ok(rsp(503, PeerTls::None, &[])),
                true,
                Some(Reason::Failure),
            ),
            (Ok(rsp(503, PeerTls::None, &[])), false, None),
            (
                Ok(rsp(200, PeerTls::None, &[("grpc-status", "14")])),
                true,
                Some(Reason::Failure),
            ),
            // Only a meshed endpoint's proxy is believed about what never reached its app.
            (
                Ok(rsp(502, meshed.clone(), &unsent)),
                false,
                Some(Reason::Unsent),
            ),
            (Ok(rsp(502, PeerTls::None, &unsent)), false, None),
            (
                Err(ProxyError::UpstreamRefused { addr }),
                false,
                Some(Reason::Unsent),
            ),
            (
                Err(ProxyError::UpstreamFailed {
                    addr,
                    reason: "reset".into(),
                }),
                false,
                None,
            ),
            (
                Err(ProxyError::UpstreamFailed {
                    addr,
                    reason: "reset".into(),
                }),
                true,
                Some(Reason::Failure),
            ),
            (
                Err(ProxyError::RequestBodyTimeout {
                    idle: Duration::from_secs(1),
                }),
                true,
                None,
            ),
        ];
        for (result, retryable, expected) in cases {
            let (_, reason) = outcome(&result, &route(retryable));
            assert_eq!(reason, expected, "{result:?} (retryable: {retryable})");
        }
    }
}
