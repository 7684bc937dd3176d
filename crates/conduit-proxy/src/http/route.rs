//! Where each request goes. Inbound, and outbound without a control plane, every request
//! of a connection goes to one endpoint. Outbound with discovery, each request goes to an
//! endpoint of its authority picked by the balancer; a name discovery does not know (or
//! cannot answer for yet) goes to the connection's original destination. A request an
//! HTTPRoute matched goes to the backend Service its rule picks for each attempt, and
//! fails when that one has no endpoints: there is no original destination to fall back
//! on.

use super::{
    backends::Pick,
    headers::authority_of,
    pool::{EndpointPool, EndpointPools, HttpVersion},
    routes::RouteMatch,
};
use crate::{
    balance::{endpoints::EndpointSets, InFlight},
    errors::ProxyError,
    transport::connect::Endpoint,
};
use http::Request;
use parking_lot::Mutex;
use std::{fmt::Write, net::SocketAddr, sync::Arc};

/// How a connection's requests find their endpoint.
#[derive(Clone)]
pub enum Route {
    /// Every request to this endpoint; on an HTTP/2 connection from another proxy, the
    /// HTTP/1 requests it carried over it go to `http1`, the pool that speaks HTTP/1 to
    /// the endpoint ([`carried`](super::carried)).
    Fixed {
        pool: Arc<EndpointPool>,
        http1: Option<Arc<EndpointPool>>,
    },
    /// Each request to a discovered endpoint of its authority.
    Discovered(Arc<DiscoveredRoute>),
}

/// What a discovered route needs.
pub struct DiscoveredRoute {
    pub endpoints: Arc<EndpointSets>,
    pub pools: Arc<EndpointPools>,
    pub version: HttpVersion,
    pub orig_dst: SocketAddr,
    /// Whether HTTP/1 requests to meshed endpoints are carried over HTTP/2.
    pub carry_http1: bool,
    /// The target of the authority the connection's requests last named.
    pub last_target: LastTarget,
}

/// The target of the authority a connection's requests last named: they nearly always
/// name one, and building a target allocates. A function of the authority and the
/// connection's port only, so nothing discovery or policy says can make it stale.
#[derive(Default)]
pub struct LastTarget(Mutex<Option<(Box<str>, Arc<str>)>>);

impl LastTarget {
    /// [`target_of`] `authority` on a connection to `port`.
    fn of(&self, authority: &str, port: u16) -> Arc<str> {
        let mut last = self.0.lock();
        if let Some((sent, target)) = &*last {
            if **sent == *authority {
                return target.clone();
            }
        }
        let target: Arc<str> = target_of(authority, port).into();
        *last = Some((authority.into(), target.clone()));
        target
    }
}

/// What discovery is asked about for one attempt of a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// The authority the client sent it to, as `host:port`.
    Sent(Arc<str>),
    /// The backend an HTTPRoute rule (`route`) chose.
    Backend { route: Arc<str>, target: Arc<str> },
}

/// The endpoint chosen for one request, and its place in the endpoint's load.
pub struct Picked {
    pub pool: Arc<EndpointPool>,
    pub in_flight: Option<InFlight>,
    /// The request is HTTP/1 carried over the pool's HTTP/2 connection to another proxy:
    /// it travels marked ([`mark`](super::carried::mark)).
    pub carried: bool,
}

impl Route {
    /// Every request to `pool`.
    pub fn fixed(pool: Arc<EndpointPool>) -> Route {
        Route::Fixed { pool, http1: None }
    }

    /// Whether the connection's HTTP/2 requests may be HTTP/1 that another proxy carried
    /// (it has a pool to send them on as HTTP/1).
    pub fn takes_carried(&self) -> bool {
        matches!(self, Route::Fixed { http1: Some(_), .. })
    }

    /// The target an attempt of a request is routed by: the backend its HTTPRoute rule
    /// picks, else its authority as `host:port` (the port taken from the original
    /// destination when the authority names none). Fails when its rule sends nowhere.
    pub fn target<B>(&self, req: &Request<B>) -> Result<Option<Target>, ProxyError> {
        let Route::Discovered(route) = self else {
            return Ok(None);
        };
        let backend = req.extensions().get::<RouteMatch>();
        if let Some(backend) = backend.and_then(|m| m.backend.as_ref()) {
            match backend.pick() {
                Pick::Backend(target) => {
                    return Ok(Some(Target::Backend {
                        route: backend.source.clone(),
                        target: target.clone(),
                    }))
                }
                Pick::Nowhere => {
                    let route = backend.source.clone();
                    return Err(ProxyError::NoBackend { route });
                }
                Pick::Sent => {}
            }
        }
        let port = route.orig_dst.port();
        let sent = authority_of(req).map(|a| Target::Sent(route.last_target.of(a, port)));
        Ok(sent)
    }

    /// Picks the endpoint for a request with `target`, another than `avoid` if there is
    /// one; fails when `target` is a backend without endpoints. `carriable`: the request
    /// is HTTP/1 that may travel over HTTP/2 ([`can_carry`](super::carried::can_carry)).
    pub async fn pick(
        &self,
        target: Option<Target>,
        avoid: Option<SocketAddr>,
        carriable: bool,
    ) -> Result<Picked, ProxyError> {
        let route = match self {
            Route::Fixed { pool, http1 } => {
                let pool = match http1 {
                    Some(http1) if carriable => http1,
                    _ => pool,
                };
                return Ok(Picked {
                    pool: pool.clone(),
                    in_flight: None,
                    carried: false,
                });
            }
            Route::Discovered(route) => route,
        };
        let endpoint = match target {
            Some(Target::Sent(t)) => route.endpoints.pick(&t, avoid).await,
            Some(Target::Backend {
                route: rule,
                target,
            }) => match route.endpoints.pick(&target, avoid).await {
                Some(endpoint) => Some(endpoint),
                None => {
                    let backend = target;
                    return Err(ProxyError::BackendUnavailable {
                        route: rule,
                        backend,
                    });
                }
            },
            None => None,
        };
        Ok(match endpoint {
            Some(ep) => {
                let carry = carriable && route.carry_http1 && route.pools.is_meshed(&ep.endpoint);
                let version = if carry {
                    HttpVersion::Http2
                } else {
                    route.version
                };
                Picked {
                    pool: route.pools.get(&ep.endpoint, version),
                    in_flight: Some(ep.start()),
                    carried: carry,
                }
            }
            None => Picked {
                pool: (route.pools).get(&Endpoint::plain(route.orig_dst), route.version),
                in_flight: None,
                carried: false,
            },
        })
    }
}

/// The target discovery is asked about for `authority` on a connection to `port`.
pub fn target_of(authority: &str, port: u16) -> String {
    let mut target = String::with_capacity(authority.len() + 6);
    target.push_str(authority);
    target.make_ascii_lowercase();
    if !has_port(authority) {
        // Writing to a String cannot fail.
        let _ = write!(target, ":{port}");
    }
    target
}

/// Whether `authority` names a port (`[v6]:port` and `host:port` forms alike).
fn has_port(authority: &str) -> bool {
    match authority.rfind(':') {
        Some(i) => {
            !authority[..i].is_empty()
                && (authority.starts_with('[') == authority[..i].ends_with(']'))
                && authority[i + 1..].bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities_get_the_original_port_when_they_name_none() {
        assert_eq!(target_of("web-svc.emojivoto", 80), "web-svc.emojivoto:80");
        assert_eq!(
            target_of("web-svc.emojivoto:8080", 80),
            "web-svc.emojivoto:8080"
        );
        assert_eq!(target_of("198.19.0.3", 80), "198.19.0.3:80");
        assert_eq!(target_of("[2001:2::2]", 80), "[2001:2::2]:80");
        assert_eq!(target_of("[2001:2::2]:81", 80), "[2001:2::2]:81");
        assert_eq!(target_of("Web-Svc.EmojiVoto", 80), "web-svc.emojivoto:80");
    }

    #[test]
    fn the_last_target_follows_the_authority_each_request_names() {
        let last = LastTarget::default();
        for (authority, target) in [
            ("web-svc", "web-svc:8080"),
            ("web-svc", "web-svc:8080"),
            ("Emoji-Svc:80", "emoji-svc:80"),
            ("web-svc", "web-svc:8080"),
            ("web-svc:81", "web-svc:81"),
        ] {
            assert_eq!(&*last.of(authority, 8080), target, "{authority}");
        }
    }
}
