//! Turns the proxy's own failures into HTTP responses (via [`ProxyError::to_response`],
//! the one place that builds them; gRPC requests get a gRPC status instead), and reports
//! each one in logs and metrics.

use super::headers::is_grpc;
use crate::{
    errors::{ProxyError, UNSENT_HEADER},
    peer::Direction,
    telemetry::metrics::Metrics,
};
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use pin_project_lite::pin_project;
use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

/// A response body as the client receives it: the upstream's (`Left`) or one the proxy
/// wrote itself (`Right`).
pub type ResponseBody<B> = Either<B, Full<Bytes>>;

/// Marks a response the proxy wrote because policy denied the request: such requests are
/// counted as denials (`inbound_http_authz_deny_total`), not as traffic, so that a client
/// kept out cannot grow or skew the traffic metrics.
#[derive(Clone, Copy, Debug)]
pub struct DeniedByPolicy;

/// Answers for the inner service when it fails.
#[derive(Clone)]
pub struct RespondToErrors<S> {
    inner: S,
    direction: Direction,
    metrics: Arc<Metrics>,
}

impl<S> RespondToErrors<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, direction: Direction, metrics: Arc<Metrics>) -> Self {
        RespondToErrors {
            inner,
            direction,
            metrics,
        }
    }
}

impl<S, B, RB> tower::Service<Request<B>> for RespondToErrors<S>
where
    S: tower::Service<Request<B>, Response = Response<RB>, Error = ProxyError>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = Infallible;
    type Future = RespondFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let request = Failing {
            method: req.method().clone(),
            uri: req.uri().clone(),
            grpc: is_grpc(req.headers()),
            direction: self.direction,
            metrics: self.metrics.clone(),
        };
        RespondFuture {
            inner: self.inner.call(req),
            request: Some(request),
        }
    }
}

pin_project! {
    /// A request on its way, and what it takes to answer for it if it fails. (Named
    /// rather than boxed: one allocation less on every request.)
    pub struct RespondFuture<F> {
        #[pin]
        inner: F,
        request: Option<Failing>,
    }
}

/// What [`RespondToErrors`] keeps of a request in case the proxy must answer it.
struct Failing {
    method: http::Method,
    uri: http::Uri,
    grpc: bool,
    direction: Direction,
    metrics: Arc<Metrics>,
}

impl<F, RB> Future for RespondFuture<F>
where
    F: Future<Output = Result<Response<RB>, ProxyError>>,
{
    type Output = Result<Response<ResponseBody<RB>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(request) = this.request.take() else {
            return Poll::Pending; // polled after it completed
        };
        Poll::Ready(Ok(match result {
            Ok(rsp) => rsp.map(Either::Left),
            Err(err) => request.answer(err).map(Either::Right),
        }))
    }
}

impl Failing {
    /// The proxy's own response for `err`, reported.
    fn answer(self, err: ProxyError) -> Response<Full<Bytes>> {
        let Failing {
            method,
            uri,
            grpc,
            direction,
            metrics,
        } = self;
        err.report(&metrics, direction);
        tracing::debug!(%method, %uri, "request failed in the proxy");
        let mut rsp = if grpc {
            err.to_grpc_response()
        } else {
            err.to_response()
        };
        if matches!(err, ProxyError::Unauthorized { .. }) {
            rsp.extensions_mut().insert(DeniedByPolicy);
        }
        // The client's proxy may send elsewhere what never reached the app.
        if direction == Direction::Inbound && err.never_sent() {
            rsp.headers_mut()
                .insert(UNSENT_HEADER, http::HeaderValue::from_static("true"));
        }
        rsp
    }
}
