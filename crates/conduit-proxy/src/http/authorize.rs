//! Inbound authorization of HTTP requests: each request is checked against the pod's
//! latest policy for its connection's client and port, so that a policy change applies
//! to connections already open. The pod's probe paths always pass (GET only). A denied
//! request gets the proxy's 403 (gRPC: PERMISSION_DENIED) and is counted.

use crate::{errors::ProxyError, metrics::Metrics, policy::InboundPolicy};
use conduit_policy::{Client, Decision, PodPolicy};
use futures_util::future::{self, Either, Ready};
use http::{Method, Request};
use std::{
    net::IpAddr,
    sync::Arc,
    task::{Context, Poll},
};
use tracing::debug;

/// Who is asking, and where: what a decision needs of the connection.
#[derive(Clone)]
pub struct ConnAuthz {
    pub policy: Arc<InboundPolicy>,
    pub port: u16,
    pub client: IpAddr,
    /// The client's mesh identity, for mesh TLS connections.
    pub identity: Option<Arc<str>>,
    pub metrics: Arc<Metrics>,
}

impl ConnAuthz {
    /// The decision for this connection under the latest policy.
    pub fn decide(&self) -> Decision {
        self.decide_under(&self.policy.latest())
    }

    /// The decision for this connection under `policy`.
    fn decide_under(&self, policy: &PodPolicy) -> Decision {
        policy.authorize(
            self.port,
            Client {
                ip: self.client,
                identity: self.identity.as_deref(),
            },
        )
    }
}

/// Passes authorized requests; without a [`ConnAuthz`] (outbound), every request.
#[derive(Clone)]
pub struct Authorize<S> {
    inner: S,
    authz: Option<Arc<ConnAuthz>>,
}

impl<S> Authorize<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, authz: Option<Arc<ConnAuthz>>) -> Self {
        Authorize { inner, authz }
    }
}

impl<S, B> tower::Service<Request<B>> for Authorize<S>
where
    S: tower::Service<Request<B>, Error = ProxyError>,
{
    type Response = S::Response;
    type Error = ProxyError;
    type Future = Either<Ready<Result<S::Response, ProxyError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(authz) = &self.authz else {
            return Either::Right(self.inner.call(req));
        };
        let policy = authz.policy.latest();
        match authz.decide_under(&policy) {
            Decision::Allow { .. } => Either::Right(self.inner.call(req)),
            Decision::Deny { .. }
                if req.method() == Method::GET && policy.is_probe(authz.port, req.uri().path()) =>
            {
                Either::Right(self.inner.call(req))
            }
            Decision::Deny { server, reason } => {
                authz.metrics.authz_denied(true, server.as_deref());
                debug!(%reason, method = %req.method(), path = req.uri().path(), "request denied by policy");
                Either::Left(future::ready(Err(ProxyError::Unauthorized { reason })))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PodIdentity;
    use conduit_policy::{DefaultPolicy, PodPolicy, Probe};
    use tower::{service_fn, ServiceExt};

    #[tokio::test]
    async fn denies_but_lets_probes_through() {
        let policy = InboundPolicy::fixed(DefaultPolicy::Deny);
        let metrics = Arc::new(Metrics::new(&PodIdentity::default()));
        let authz = Arc::new(ConnAuthz {
            policy,
            port: 8080,
            client: "198.18.0.1".parse().unwrap(),
            identity: None,
            metrics: metrics.clone(),
        });
        let svc = Authorize::new(
            service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>("passed") }),
            Some(authz.clone()),
        );
        let err = svc
            .clone()
            .oneshot(Request::get("/api/list").body(()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(err.status().as_u16(), 403);
        assert_eq!(err.code(), "unauthorized");
        assert!(err.to_string().contains("default policy deny"), "{err}");
        assert!(metrics
            .encode()
            .contains("inbound_http_authz_deny_total{srv_name=\"default\"} 1"));
        // No control plane here: the fallback has no probes. With one listed, it passes.
        let with_probe = InboundPolicy::fixed_policy(PodPolicy {
            default: DefaultPolicy::Deny,
            probes: vec![Probe {
                port: 8080,
                path: "/ready".into(),
            }],
            ..PodPolicy::default()
        });
        let svc = Authorize::new(
            service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>("passed") }),
            Some(Arc::new(ConnAuthz {
                policy: with_probe,
                ..(*authz).clone()
            })),
        );
        let probe = Request::get("/ready").body(()).unwrap();
        assert_eq!(svc.clone().oneshot(probe).await.unwrap(), "passed");
        let post = Request::post("/ready").body(()).unwrap();
        assert!(svc.oneshot(post).await.is_err(), "only GETs are probes");
        // Outbound: no authorization at all.
        let open = Authorize::new(
            service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>("passed") }),
            None,
        );
        assert_eq!(
            open.oneshot(Request::get("/").body(()).unwrap())
                .await
                .unwrap(),
            "passed"
        );
    }
}
