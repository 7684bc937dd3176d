//! Inbound stage: authorization against the pod's latest policy, for the connection's
//! client (its address, and its mesh identity when it came over mesh TLS) and port.
//! Opaque TCP is let in or not when it arrives: a denied connection is counted, tapped
//! and closed. HTTP is let in and then authorized request by request ([`ConnAuthz`] is
//! its [`RequestGuard`]), so that a policy change applies to connections already open;
//! the pod's probe paths always pass (a plain `GET` or `HEAD` only: an upgrade or a
//! `CONNECT` would turn the probe exemption into a tunnel), and a denied request gets the
//! proxy's 403 (gRPC: PERMISSION_DENIED).

use crate::{
    connection::Detected,
    control::policy::InboundPolicy,
    errors::ProxyError,
    http::guard::{RequestGuard, RequestHead},
    peer::Direction,
    telemetry::{log_limit::LogLimit, metrics::Metrics, tap::Taps},
};
use conduit_policy::{Client, Decision, PodPolicy};
use http::Method;
use std::{net::IpAddr, sync::Arc, time::Duration};
use tracing::{debug, info};

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

impl RequestGuard for ConnAuthz {
    fn check(&self, req: &RequestHead<'_>) -> Result<(), ProxyError> {
        let policy = self.policy.latest();
        match self.decide_under(&policy) {
            Decision::Allow { .. } => Ok(()),
            Decision::Deny { .. }
                if is_probe(req) && policy.is_probe(self.port, req.uri.path()) =>
            {
                Ok(())
            }
            Decision::Deny { server, reason } => {
                self.metrics.authz_denied(true, server.as_deref());
                debug!(%reason, method = %req.method, path = req.uri.path(), "request denied by policy");
                Err(ProxyError::Unauthorized { reason })
            }
        }
    }
}

/// Whether `req` may be a kubelet probe: a `GET` or `HEAD` that asks for nothing but a
/// response. A request with `Upgrade` (HTTP/1 websocket, h2c) or a `CONNECT` (HTTP/2
/// extended CONNECT included) would get a raw tunnel to the app past the policy.
fn is_probe(req: &RequestHead<'_>) -> bool {
    (req.method == Method::GET || req.method == Method::HEAD)
        && !req.headers.contains_key(http::header::UPGRADE)
}

/// Policy closed the connection.
#[derive(Debug)]
pub struct Denied {
    pub reason: String,
}

/// Authorizes the inbound side's connections.
pub struct AuthorizeConnection {
    policy: Arc<InboundPolicy>,
    metrics: Arc<Metrics>,
    taps: Arc<Taps>,
}

impl AuthorizeConnection {
    /// Authorization under `policy`.
    pub fn new(policy: Arc<InboundPolicy>, metrics: Arc<Metrics>, taps: Arc<Taps>) -> Self {
        AuthorizeConnection {
            policy,
            metrics,
            taps,
        }
    }

    /// The pod's latest policy.
    pub fn policy(&self) -> &InboundPolicy {
        &self.policy
    }

    /// The stage: lets `detected` in, with the rule its HTTP requests must pass, or denies
    /// it (its opaque bytes may not pass). Waits for the control plane's first answer
    /// before the first decision.
    pub async fn authorize<I>(&self, detected: &Detected<I>) -> Result<Arc<ConnAuthz>, Denied> {
        self.policy.current().await;
        let accepted = detected.accepted;
        let authz = Arc::new(ConnAuthz {
            policy: self.policy.clone(),
            port: accepted.orig_dst.port(),
            client: accepted.client.ip(),
            identity: detected.peer.identity().map(Arc::from),
            metrics: self.metrics.clone(),
        });
        if detected.decided.is_http() {
            return Ok(authz);
        }
        match authz.decide_under(&self.policy.latest()) {
            Decision::Allow { .. } => Ok(authz),
            Decision::Deny { server, reason } => {
                self.metrics.authz_denied(false, server.as_deref());
                static LOG: LogLimit = LogLimit::new(Duration::from_secs(1));
                if let Some(suppressed) = LOG.admit("connection_denied") {
                    info!(client = %accepted.client, orig_dst = %accepted.orig_dst, %reason, suppressed, "connection denied by policy; closing it");
                }
                self.taps.connection_denied(
                    Direction::Inbound,
                    accepted.client,
                    accepted.orig_dst,
                    &reason,
                    detected.peer.identity(),
                );
                Err(Denied { reason })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::PodIdentity,
        connection::{protocol::tests::accepted, Decided},
        http::guard::Guard,
        peer::PeerTls,
        transport::detect::Protocol,
    };
    use bytes::BytesMut;
    use conduit_api::tap::ObserveRequest;
    use conduit_policy::{DefaultPolicy, PodPolicy, Probe};
    use http::Request;
    use tower::{service_fn, ServiceExt};

    fn detected(decided: Decided, peer: PeerTls) -> Detected<()> {
        Detected {
            accepted: accepted(8080),
            io: (),
            read: BytesMut::new(),
            decided,
            peer,
        }
    }

    fn stage(policy: Arc<InboundPolicy>) -> (AuthorizeConnection, Arc<Metrics>, Arc<Taps>) {
        let metrics = Arc::new(Metrics::new(&PodIdentity::default()));
        let taps = Taps::new(&PodIdentity::default());
        (
            AuthorizeConnection::new(policy, metrics.clone(), taps.clone()),
            metrics,
            taps,
        )
    }

    #[tokio::test]
    async fn opaque_connections_are_decided_when_they_arrive() {
        let (deny, metrics, taps) = stage(InboundPolicy::fixed(DefaultPolicy::Deny));
        let (_, mut events) = taps.observe(&ObserveRequest::default()).unwrap();
        let web =
            PeerTls::Client("web.emojivoto.serviceaccount.identity.conduit.cluster.local".into());
        let denied = deny
            .authorize(&detected(Decided::OpaquePort, web.clone()))
            .await
            .err()
            .expect("denied");
        assert!(denied.reason.contains("default policy deny"), "{denied:?}");
        assert!(metrics
            .encode()
            .contains("inbound_tcp_authz_deny_total{srv_name=\"default\"} 1"));
        let event = events.try_recv().expect("the denial is tapped");
        assert_eq!(event.destination, "198.18.0.2:8080");
        assert!(format!("{event:?}").contains("web.emojivoto"), "{event:?}");

        // HTTP is let in: its requests are decided one by one.
        let authz = deny
            .authorize(&detected(Decided::Bytes(Protocol::Http1), web.clone()))
            .await
            .expect("HTTP is answered per request");
        assert_eq!(authz.identity.as_deref(), web.identity());

        let (allow, _, _) = stage(InboundPolicy::fixed(DefaultPolicy::AllUnauthenticated));
        allow
            .authorize(&detected(Decided::Bytes(Protocol::Opaque), PeerTls::None))
            .await
            .expect("allowed");
    }

    #[tokio::test]
    async fn requests_are_denied_but_probes_get_through() {
        let (deny, metrics, _) = stage(InboundPolicy::fixed(DefaultPolicy::Deny));
        let authz = deny
            .authorize(&detected(Decided::Bytes(Protocol::Http1), PeerTls::None))
            .await
            .unwrap();
        let guarded = |authz: Arc<ConnAuthz>| {
            Guard::new(
                service_fn(|_req: Request<()>| async { Ok::<_, ProxyError>("passed") }),
                Arc::from([authz as Arc<dyn RequestGuard>]),
            )
        };
        let err = guarded(authz.clone())
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
        let svc = guarded(Arc::new(ConnAuthz {
            policy: with_probe,
            ..(*authz).clone()
        }));
        let probe = Request::get("/ready").body(()).unwrap();
        assert_eq!(svc.clone().oneshot(probe).await.unwrap(), "passed");
        let head = Request::head("/ready").body(()).unwrap();
        assert_eq!(svc.clone().oneshot(head).await.unwrap(), "passed");
        let post = Request::post("/ready").body(()).unwrap();
        assert!(
            svc.clone().oneshot(post).await.is_err(),
            "only GETs are probes"
        );
        // An upgrade on the probe path would be a tunnel to the app: it is a request like
        // any other, and the policy denies it.
        for upgrade in ["websocket", "h2c"] {
            let upgraded = Request::get("/ready")
                .header(http::header::CONNECTION, "upgrade")
                .header(http::header::UPGRADE, upgrade)
                .body(())
                .unwrap();
            let err = svc.clone().oneshot(upgraded).await.unwrap_err();
            assert_eq!(err.status().as_u16(), 403, "{upgrade}");
        }
        let connect = Request::connect("/ready").body(()).unwrap();
        assert!(svc.oneshot(connect).await.is_err(), "CONNECT is no probe");
    }
}
