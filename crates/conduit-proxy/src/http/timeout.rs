//! Request timeouts: a request's route (its [`RouteMatch`]) may bound how long the whole
//! request takes, response body included, and a gRPC client's `grpc-timeout` bounds it
//! too; the earlier deadline wins. Expiry before the response head is a
//! [`ProxyError::RequestTimeout`] (504, or DEADLINE_EXCEEDED for gRPC); expiry during the
//! body ends it (gRPC: with DEADLINE_EXCEEDED trailers; otherwise the stream is reset).
//! Either way what is in flight upstream is dropped, which frees its connection. The
//! client's proxy enforces timeouts: the outbound side.

use super::{headers::is_grpc, routes::RouteMatch};
use crate::{
    errors::{ProxyError, TimeoutLimit},
    peer::Direction,
    telemetry::metrics::Metrics,
};
use bytes::Bytes;
use futures_util::future::{BoxFuture, Either};
use http::{HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};
use tokio::time::{Instant, Sleep};

/// The longest `grpc-timeout` taken as a deadline; longer ones (up to 10^8 hours) mean
/// none, in effect.
const MAX_GRPC_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// Bounds each request by its timeout.
#[derive(Clone)]
pub struct RequestTimeouts<S> {
    inner: S,
    /// `None`: timeouts are not this side's to enforce.
    report: Option<Arc<Report>>,
}

/// Where expiries are counted.
struct Report {
    direction: Direction,
    metrics: Arc<Metrics>,
}

impl<S> RequestTimeouts<S> {
    /// Wraps `inner`; expiries are counted in `metrics` under `direction`. Only the
    /// client's proxy enforces timeouts: inbound, requests pass untimed.
    pub fn new(inner: S, direction: Direction, metrics: Arc<Metrics>) -> Self {
        let report =
            (direction == Direction::Outbound).then(|| Arc::new(Report { direction, metrics }));
        RequestTimeouts { inner, report }
    }
}

/// The timeout of `req`, and what set it: its route's or its `grpc-timeout`, the shorter.
pub fn timeout_of<B>(req: &Request<B>) -> Option<(Duration, TimeoutLimit)> {
    let route = req
        .extensions()
        .get::<RouteMatch>()
        .and_then(RouteMatch::timeout);
    let grpc = is_grpc(req.headers())
        .then(|| req.headers().get("grpc-timeout").and_then(grpc_timeout))
        .flatten()
        .map(|t| (t, TimeoutLimit::Grpc));
    match (route, grpc) {
        (Some(r), Some(g)) => Some(if g.0 < r.0 { g } else { r }),
        (r, g) => r.or(g),
    }
}

/// A `grpc-timeout` value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let bytes = value.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let timeout = match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    };
    Some(timeout.min(MAX_GRPC_TIMEOUT))
}

impl<S, B, RB> tower::Service<Request<B>> for RequestTimeouts<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>, Error = ProxyError>,
    S::Future: Send + 'static,
    RB: Body<Data = Bytes> + Send + Unpin + 'static,
{
    type Response = Response<TimedBody<RB>>;
    type Error = ProxyError;
    type Future = Either<
        futures_util::future::MapOk<S::Future, fn(Response<RB>) -> Response<TimedBody<RB>>>,
        BoxFuture<'static, Result<Response<TimedBody<RB>>, ProxyError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use futures_util::TryFutureExt;
        let timed = match &self.report {
            Some(report) => timeout_of(&req).map(|t| (report.clone(), t)),
            None => None,
        };
        let Some((report, (timeout, limit))) = timed else {
            let untimed: fn(Response<RB>) -> Response<TimedBody<RB>> =
                |rsp| rsp.map(TimedBody::untimed);
            return Either::Left(self.inner.call(req).map_ok(untimed));
        };
        let grpc = is_grpc(req.headers());
        // One timer serves the head and then the body.
        let mut sleep = Box::pin(tokio::time::sleep_until(Instant::now() + timeout));
        let fut = self.inner.call(req);
        Either::Right(Box::pin(async move {
            let expired = || ProxyError::RequestTimeout { limit, timeout };
            tokio::select! {
                biased;
                result = fut => result.map(|rsp| rsp.map(|body| TimedBody {
                    inner: Some(body),
                    deadline: Some(Expiry {
                        sleep,
                        error: expired(),
                        grpc,
                        report,
                    }),
                })),
                // Dropping the call drops the request upstream, and its connection.
                () = &mut sleep => Err(expired()),
            }
        }))
    }
}

/// What a body does when its request's deadline passes.
struct Expiry {
    sleep: Pin<Box<Sleep>>,
    error: ProxyError,
    grpc: bool,
    report: Arc<Report>,
}

/// A response body that ends when its request's deadline passes; the upstream's body is
/// dropped then (and with it, its connection).
pub struct TimedBody<B> {
    /// `None` once ended early.
    inner: Option<B>,
    deadline: Option<Expiry>,
}

impl<B> TimedBody<B> {
    /// `inner`, with no deadline.
    pub fn untimed(inner: B) -> TimedBody<B> {
        TimedBody {
            inner: Some(inner),
            deadline: None,
        }
    }
}

/// Why a timed body ended early.
#[derive(Debug, thiserror::Error)]
pub enum TimedBodyError<E> {
    #[error(transparent)]
    Inner(E),
    #[error("{0}")]
    Expired(ProxyError),
}

impl<B: Body<Data = Bytes> + Unpin> Body for TimedBody<B> {
    type Data = Bytes;
    type Error = TimedBodyError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            if frame.is_none() {
                this.deadline = None;
            }
            return Poll::Ready(frame.map(|f| f.map_err(TimedBodyError::Inner)));
        }
        let Some(expiry) = this.deadline.as_mut() else {
            return Poll::Pending;
        };
        if expiry.sleep.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.inner = None;
        let Some(Expiry {
            error,
            grpc,
            report,
            ..
        }) = this.deadline.take()
        else {
            return Poll::Ready(None);
        };
        error.report(&report.metrics, report.direction);
        if grpc {
            // The client hears DEADLINE_EXCEEDED, as if its own deadline had passed.
            Poll::Ready(Some(Ok(Frame::trailers(error.to_grpc_trailers()))))
        } else {
            Poll::Ready(Some(Err(TimedBodyError::Expired(error))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Some(inner) => inner.size_hint(),
            None => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::PodIdentity,
        http::routes::{no_profile, ProfileRoute},
    };
    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use std::convert::Infallible;
    use tower::{service_fn, Service, ServiceExt};

    type Frames =
        StreamBody<futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>>;

    /// An upstream whose response head comes after `head` and whose body then sends one
    /// chunk and stalls for `stall`.
    fn upstream(
        head: Duration,
        stall: Duration,
    ) -> tower::util::BoxCloneService<Request<()>, Response<Frames>, ProxyError> {
        tower::util::BoxCloneService::new(service_fn(move |_: Request<()>| async move {
            tokio::time::sleep(head).await;
            let frames = futures_util::stream::once(async { Ok(Frame::data(Bytes::from("a"))) })
                .chain(futures_util::stream::once(async move {
                    tokio::time::sleep(stall).await;
                    Ok(Frame::data(Bytes::from("b")))
                }));
            Ok::<_, ProxyError>(Response::new(StreamBody::new(frames.boxed())))
        }))
    }

    fn on_route(timeout: Option<Duration>, grpc: bool) -> Request<()> {
        let mut req = Request::post("/api/list");
        if grpc {
            req = req.header("content-type", "application/grpc");
        }
        let mut req = req.body(()).unwrap();
        req.extensions_mut().insert(RouteMatch {
            route: Arc::new(ProfileRoute {
                name: "list".into(),
                method: None,
                timeout,
                retryable: false,
                retry_grpc: 1 << 14,
            }),
            profile: no_profile(),
            budget: None,
            backend: None,
        });
        req
    }

    fn layer<S>(inner: S, direction: Direction) -> (RequestTimeouts<S>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new(&PodIdentity::default()));
        (
            RequestTimeouts::new(inner, direction, metrics.clone()),
            metrics,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_later_than_the_route_timeout_is_a_504() {
        let ms = Duration::from_millis;
        let (mut svc, _) = layer(upstream(ms(2000), ms(0)), Direction::Outbound);
        let started = Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(on_route(Some(ms(300)), false))
            .await
            .err()
            .expect("timed out");
        assert_eq!(started.elapsed(), ms(300));
        assert_eq!(err.status(), http::StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            err.to_string(),
            "the timeout of route \"list\" expired after 300ms: the request did not complete in time"
        );
        assert_eq!(err.grpc_status(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn the_timeout_covers_the_body_too() {
        let ms = Duration::from_millis;
        // Plain HTTP: the body fails (the client sees its stream reset).
        let (mut svc, metrics) = layer(upstream(ms(100), ms(5000)), Direction::Outbound);
        let rsp = svc
            .ready()
            .await
            .unwrap()
            .call(on_route(Some(ms(300)), false))
            .await
            .unwrap();
        let started = Instant::now();
        let err = rsp.into_body().collect().await.expect_err("cut short");
        assert!(matches!(err, TimedBodyError::Expired(_)), "{err}");
        assert_eq!(started.elapsed(), ms(200));
        assert!(
            metrics
                .encode()
                .contains(r#"proxy_errors_total{direction="outbound",error="request_timeout"} 1"#),
            "{}",
            metrics.encode()
        );
        // gRPC: the body ends with DEADLINE_EXCEEDED trailers.
        let (mut svc, _) = layer(upstream(ms(100), ms(5000)), Direction::Outbound);
        let rsp = svc
            .ready()
            .await
            .unwrap()
            .call(on_route(Some(ms(300)), true))
            .await
            .unwrap();
        let collected = rsp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["grpc-status"], "4");
        assert_eq!(collected.to_bytes(), "a");
    }

    #[tokio::test(start_paused = true)]
    async fn grpc_timeout_is_honoured_and_the_shorter_deadline_wins() {
        let ms = Duration::from_millis;
        let with_grpc = |route: Option<Duration>, grpc: &'static str| {
            let mut req = on_route(route, true);
            req.headers_mut()
                .insert("grpc-timeout", HeaderValue::from_static(grpc));
            req
        };
        let t = |req: &Request<()>| timeout_of(req).map(|(t, l)| (t, l == TimedOut::Grpc));
        type TimedOut = TimeoutLimit;
        assert_eq!(t(&with_grpc(None, "250m")), Some((ms(250), true)));
        assert_eq!(t(&with_grpc(Some(ms(300)), "1S")), Some((ms(300), false)));
        assert_eq!(
            t(&with_grpc(Some(ms(300)), "100000u")),
            Some((ms(100), true))
        );
        // Not a grpc-timeout: ignored.
        for bad in ["", "m", "12", "1x", "123456789S", "-1S"] {
            assert_eq!(t(&with_grpc(None, bad)), None, "{bad:?}");
        }
        let (mut svc, _) = layer(upstream(ms(2000), ms(0)), Direction::Outbound);
        let started = Instant::now();
        let err = svc
            .ready()
            .await
            .unwrap()
            .call(with_grpc(None, "250m"))
            .await
            .err()
            .expect("timed out");
        assert_eq!(started.elapsed(), ms(250));
        assert!(err.to_string().contains("grpc-timeout"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn inbound_requests_pass_untimed_the_clients_proxy_enforces() {
        let ms = Duration::from_millis;
        let (mut svc, _) = layer(upstream(ms(2000), ms(0)), Direction::Inbound);
        let rsp = svc
            .ready()
            .await
            .unwrap()
            .call(on_route(Some(ms(300)), false))
            .await
            .unwrap();
        assert_eq!(rsp.into_body().collect().await.unwrap().to_bytes(), "ab");
    }
}
