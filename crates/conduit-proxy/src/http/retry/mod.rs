//! Retries: the client's proxy sends a failed request again, to another endpoint than the
//! one that failed whenever there is another, within its Service's [`RetryBudget`].
//!
//! - A request on a route its profile marks retryable (any method: the user says it is
//!   safe to repeat) is retried on a 5xx, a gRPC status the route names (by default
//!   UNAVAILABLE; trailers-only answers, whose status comes at once), or a failed
//!   exchange with the upstream.
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
    forward::Served,
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
use futures_util::{
    future::{BoxFuture, Either},
    TryFutureExt,
};
use http::{HeaderName, HeaderValue, Request, Response};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
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
    /// Whether requests may be retried: outbound, where discovery offers other endpoints.
    retries: bool,
    /// How long an HTTP/1 request body may stall.
    body_idle: Option<Duration>,
    metrics: RetryMetrics,
    target: Target,
    /// The budget of requests whose target has no budget of its own (no control plane,
    /// or more targets than are followed).
    fallback: Arc<RetryBudget>,
    /// The attempt counters this connection used, by route name (compared by address:
    /// names are shared from the profile) and classification, so that counting an
    /// attempt builds and hashes no labels.
    counters: parking_lot::Mutex<Vec<(Arc<str>, Classification, Counter)>>,
}

/// [`UNSENT_HEADER`] as a name (a string would be parsed into one on every lookup).
static UNSENT: HeaderName = HeaderName::from_static(UNSENT_HEADER);

/// How many attempt counters a connection keeps at hand.
const CACHED_COUNTERS: usize = 16;

impl<S> Retry<S> {
    /// Wraps `inner` for `direction`'s connections to `target`, retrying when `retries`
    /// (outbound with discovery: without other endpoints a retry could only go where the
    /// attempt failed): HTTP/1 request bodies stalled for `body_idle` fail; retries are
    /// counted in `metrics`; requests with no budget of their own share `fallback`.
    pub fn new(
        inner: S,
        direction: Direction,
        retries: bool,
        body_idle: Option<Duration>,
        metrics: RetryMetrics,
        target: Target,
        fallback: Arc<RetryBudget>,
    ) -> Self {
        Retry {
            inner,
            conn: Arc::new(ConnRetries {
                direction,
                retries: retries && direction == Direction::Outbound,
                body_idle,
                metrics,
                target,
                fallback,
                counters: parking_lot::Mutex::new(Vec::new()),
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
            let served = rsp.extensions().get::<Served>();
            let meshed = served.is_some_and(|s| matches!(s.tls, PeerTls::Server(_)));
            if meshed && rsp.headers().contains_key(&UNSENT) {
                return (Classification::Failure, Some(Reason::Unsent));
            }
            // A trailers-only gRPC answer says its status at once; one in trailers comes
            // after the body, too late to retry without holding the body back.
            match headers::grpc_status(rsp.headers()) {
                Some(0) => (Classification::Success, None),
                Some(code) => (
                    Classification::Failure,
                    route.retries_grpc(code).then_some(Reason::Failure),
                ),
                None if rsp.status().is_server_error() => (
                    Classification::Failure,
                    route.retryable.then_some(Reason::Failure),
                ),
                None => (Classification::Success, None),
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
        let mut counters = self.counters.lock();
        if let Some((_, _, c)) = counters
            .iter()
            .find(|(r, k, _)| Arc::ptr_eq(r, &route.name) && *k == classification)
        {
            c.inc();
            return;
        }
        let labels = AttemptLabels {
            direction: self.direction,
            route: route.name.clone(),
            target: self.target.clone(),
            classification,
        };
        let counter = self.metrics.attempts.get(&labels);
        counter.inc();
        if counters.len() < CACHED_COUNTERS {
            counters.push((route.name.clone(), classification, counter));
        }
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
    type Future = Either<
        futures_util::future::MapOk<S::Future, fn(Response<RB>) -> Response<RB>>,
        BoxFuture<'static, Result<Response<RB>, ProxyError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let body_idle = (req.version() <= http::Version::HTTP_11)
            .then_some(self.conn.body_idle)
            .flatten();
        let retries = self.conn.retries
            && !(req.version() <= http::Version::HTTP_11 && headers::is_upgrade(&req));
        if !retries {
            // The answer never says what only this proxy may (inbound: the application's).
            let req = req.map(|body| ReplayBody::once(RequestBody::new(body, body_idle)));
            let fut = self.inner.call(req);
            return Either::Left(fut.map_ok(without_unsent));
        }
        let conn = self.conn.clone();
        let (parts, body) = req.into_parts();
        let (body, copy) = ReplayBody::new(RequestBody::new(body, body_idle), MAX_REPLAY_BYTES);
        let req = Request::from_parts(parts, body);
        // Every attempt is a clone's `oneshot`, which waits for it to be ready.
        let inner = self.inner.clone();
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
        // A retry needs the request's head again, not its extensions (which only the
        // layers above read): the first attempt takes the original.
        let head = Head::of(&req);
        Either::Right(Box::pin(async move {
            let route = &matched.route;
            let mut attempt = req;
            let mut retried = 0;
            loop {
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
                            let avoid = match &result {
                                Ok(rsp) => rsp.extensions().get::<Served>().map(|s| s.addr),
                                Err(e) => e.upstream(),
                            };
                            retried += 1;
                            attempt = head.request(next, avoid);
                            continue;
                        }
                    },
                };
                if let Some(why) = skipped {
                    conn.metrics.skipped.get(&conn.labels(route, why)).inc();
                }
                copy.end();
                let mut rsp = without_unsent(result?);
                if retried > 0 {
                    rsp.headers_mut()
                        .insert(RETRIES_HEADER, HeaderValue::from(retried));
                }
                return Ok(rsp);
            }
        }))
    }
}

/// `rsp` without the header only a server's proxy may set, and only for its client's.
fn without_unsent<B>(mut rsp: Response<B>) -> Response<B> {
    if !rsp.headers().is_empty() {
        rsp.headers_mut().remove(&UNSENT);
    }
    rsp
}

/// What a retry sends again of a request: its head.
struct Head {
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    headers: http::HeaderMap,
}

impl Head {
    fn of<B>(req: &Request<B>) -> Head {
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    /// The request again, with `body`, avoiding `avoid`.
    fn request<B>(&self, body: B, avoid: Option<SocketAddr>) -> Request<B> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        if let Some(addr) = avoid {
            req.extensions_mut().insert(Avoid(addr));
        }
        req
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
        let addr = "198.18.0.9:8080".parse().unwrap();
        rsp.extensions_mut().insert(Served { addr, tls });
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
            // Only the statuses the route names (by default UNAVAILABLE) are retried.
            (
                Ok(rsp(200, PeerTls::None, &[("grpc-status", "8")])),
                true,
                None,
            ),
            (
                Ok(rsp(200, PeerTls::None, &[("grpc-status", "0")])),
                true,
                None,
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
