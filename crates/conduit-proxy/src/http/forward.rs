//! The innermost HTTP service: sends a request to the endpoint its [`Route`] picks, with
//! hop-by-hop headers removed, and splices `Upgrade`/`CONNECT` tunnels once both ends
//! agree. The response head's arrival is the latency the balancer learns from, and its
//! status (or the failure to get one) what failure accrual counts.

use super::{
    carried, headers,
    pool::{EndpointPool, PooledBody},
    retry::{replay::ReplayBody, Avoid},
    route::Route,
};
use crate::{
    balance::accrual::Outcome, errors::ProxyError, peer::PeerTls, transport::splice::splice,
};
use futures_util::future::BoxFuture;
use http::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::{
    net::SocketAddr,
    task::{Context, Poll},
    time::Duration,
};
use tracing::debug;

/// The endpoint that answered a request and how it was authenticated (a response
/// extension: metrics label the response with it, a retry avoids the endpoint if it
/// failed).
#[derive(Clone, Debug)]
pub struct Served {
    pub addr: SocketAddr,
    pub tls: PeerTls,
}

/// Sends each request where its route says.
#[derive(Clone)]
pub struct Forward {
    route: Route,
    /// How long an upgraded connection may be silent both ways.
    tunnel_idle: Duration,
}

impl Forward {
    /// Forwards along `route`; tunnels silent for `tunnel_idle` are closed.
    pub fn new(route: Route, tunnel_idle: Duration) -> Self {
        Forward { route, tunnel_idle }
    }
}

impl tower::Service<Request<ReplayBody>> for Forward {
    type Response = Response<PooledBody>;
    type Error = ProxyError;
    type Future = BoxFuture<'static, Result<Response<PooledBody>, ProxyError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let (route, idle) = (self.route.clone(), self.tunnel_idle);
        let mut req = req;
        let target = route.target(&req);
        // Only where discovery offers endpoints can a retry go elsewhere.
        let discovered = matches!(route, Route::Discovered(_));
        let avoid = discovered
            .then(|| req.extensions().get::<Avoid>().map(|a| a.0))
            .flatten();
        Box::pin(async move {
            let carriable = carried::can_carry(&req);
            let picked = route.pick(target?, avoid, carriable).await?;
            if req.version() <= http::Version::HTTP_11 && headers::is_upgrade(&req) {
                return forward_upgrade(&picked.pool, req, idle).await;
            }
            headers::strip_hop_by_hop(req.headers_mut(), false);
            let sent_as = req.version();
            let carry = picked.carried;
            if carry {
                carried::mark(&mut req);
            }
            // A request that must open a connection first says more about connecting than
            // about the endpoint: the balancer learns only from requests on warm ones.
            let warm = picked.pool.is_warm();
            let sent = picked.pool.send(req).await;
            if let Some(in_flight) = &picked.in_flight {
                match &sent {
                    Ok(rsp) if !rsp.status().is_server_error() => {
                        if warm {
                            in_flight.complete();
                        }
                        in_flight.record(Outcome::Success);
                    }
                    _ => in_flight.record(Outcome::Failure),
                }
            }
            let mut rsp = sent?;
            if carry {
                *rsp.version_mut() = sent_as;
            }
            headers::strip_hop_by_hop(rsp.headers_mut(), false);
            // A fixed endpoint that was not authenticated is labelled as the connection
            // is: no extension, whose map would be allocated for every response.
            if discovered || *picked.pool.tls() != PeerTls::None {
                rsp.extensions_mut().insert(Served {
                    addr: picked.pool.addr(),
                    tls: picked.pool.tls().clone(),
                });
            }
            Ok(rsp)
        })
    }
}

/// Forwards a protocol switch; if the upstream accepts it, copies bytes both ways between
/// the client's and the upstream's upgraded connections until either side closes.
async fn forward_upgrade(
    endpoint: &EndpointPool,
    mut req: Request<ReplayBody>,
    idle: Duration,
) -> Result<Response<PooledBody>, ProxyError> {
    let is_connect = req.method() == Method::CONNECT;
    let client_side = hyper::upgrade::on(&mut req);
    headers::strip_hop_by_hop(req.headers_mut(), !is_connect);
    let mut rsp = endpoint.send_upgrade(req).await?;
    let switched = rsp.status() == StatusCode::SWITCHING_PROTOCOLS
        || (is_connect && rsp.status().is_success());
    headers::strip_hop_by_hop(rsp.headers_mut(), switched && !is_connect);
    if switched {
        let upstream_side = hyper::upgrade::on(&mut rsp);
        let addr = endpoint.addr();
        tokio::spawn(async move {
            match tokio::try_join!(client_side, upstream_side) {
                Ok((client, upstream)) => {
                    let (mut client, mut upstream) = (TokioIo::new(client), TokioIo::new(upstream));
                    if let Err(error) = splice(&mut client, &mut upstream, idle).await {
                        debug!(%addr, %error, "upgraded connection ended with an error");
                    }
                }
                Err(error) => debug!(%addr, %error, "protocol switch did not complete"),
            }
        });
    }
    Ok(rsp.map(PooledBody::Hyper))
}
