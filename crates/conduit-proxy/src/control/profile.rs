//! Service profiles from the control plane: for a target (`host:port`) the proxy follows a
//! GetProfile stream beside its Destination stream, and publishes the latest good
//! [`Profile`] on a watch channel. A profile the proxy cannot use (a regex that does not
//! compile, too many routes, a name no label may have) is refused and the last good one
//! kept, as it is when the control plane goes away. Which targets are followed is
//! [`FollowedTargets`]'.

use crate::{
    control::{
        self,
        discovery::Discovery,
        followed::{first_answer, FollowedTargets},
        Followed,
    },
    http::{
        backends::{self, BackendRoute, BackendRoutes, PathMatch, RequestMatch, ValueMatch},
        retry::budget::RetryBudget,
        routes::{no_profile, BudgetPolicy, Profile, ProfileRoute},
    },
};
use conduit_api::{
    destination as api,
    profile::{
        is_route_name, DEFAULT_RETRY_GRPC_CODE, MAX_BACKENDS, MAX_BACKEND_WEIGHT, MAX_ROUTES,
    },
};
use std::{sync::Arc, time::Duration};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// What is known of a target's profile: `None` until the first answer (or the news that
/// none is coming: then an empty profile).
pub type ProfileState = Option<Arc<Profile>>;

/// Why a profile from the control plane was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("{0} routes, more than the {MAX_ROUTES} a profile may have")]
    TooManyRoutes(usize),
    #[error("route {index}: {name:?} is not a route name")]
    RouteName { index: usize, name: String },
    #[error("route {name:?}: {method:?} is not an HTTP method")]
    Method { name: String, method: String },
    #[error("route {name:?}: {code} is not a gRPC status to retry on (1 to 16)")]
    GrpcCode { name: String, code: u32 },
    #[error("the path regexes do not compile: {0}")]
    Regex(#[from] regex::Error),
    #[error("{0} backend routes, more than the {MAX_ROUTES} a profile may have")]
    TooManyBackendRoutes(usize),
    #[error("HTTPRoute {route} rule {rule}: {problem}")]
    BackendRoute {
        route: String,
        rule: u32,
        problem: String,
    },
}

/// What the proxy makes of one GetProfile answer. Public so that the fuzzers (`fuzz/`)
/// run exactly this on arbitrary messages.
pub fn profile(answer: api::Profile) -> Result<Profile, ProfileError> {
    if answer.routes.len() > MAX_ROUTES {
        return Err(ProfileError::TooManyRoutes(answer.routes.len()));
    }
    let mut routes = Vec::with_capacity(answer.routes.len());
    for (index, r) in answer.routes.into_iter().enumerate() {
        if !is_route_name(&r.name) {
            return Err(ProfileError::RouteName {
                index,
                name: r.name,
            });
        }
        let method =
            match r.method.as_str() {
                "" => None,
                m => Some(http::Method::from_bytes(m.as_bytes()).map_err(|_| {
                    ProfileError::Method {
                        name: r.name.clone(),
                        method: r.method.clone(),
                    }
                })?),
            };
        let mut retry_grpc = 0u32;
        for &code in &r.retry_grpc_codes {
            if !(1..=16).contains(&code) {
                return Err(ProfileError::GrpcCode { name: r.name, code });
            }
            retry_grpc |= 1 << code;
        }
        if retry_grpc == 0 {
            retry_grpc = 1 << DEFAULT_RETRY_GRPC_CODE;
        }
        let route = ProfileRoute {
            name: r.name.into(),
            method,
            timeout: (r.timeout_ms > 0).then(|| Duration::from_millis(r.timeout_ms)),
            retryable: r.retryable,
            retry_grpc,
        };
        routes.push((route, r.path_regex));
    }
    let budget = match answer.retry_budget {
        Some(b) if b.ttl_ms > 0 => BudgetPolicy {
            ratio_permille: b.retry_ratio_permille,
            min_per_second: b.min_retries_per_second,
            ttl: Duration::from_millis(b.ttl_ms),
        },
        _ => BudgetPolicy::default(),
    };
    let backends = backend_routes(answer.backend_routes)?;
    Ok(Profile::new(routes, budget)?.with_backends(backends))
}

/// What the proxy makes of a profile's backend routes: each checked, its regexes
/// compiled within the profile's shared limit.
fn backend_routes(wire: Vec<api::BackendRoute>) -> Result<BackendRoutes, ProfileError> {
    if wire.len() > MAX_ROUTES {
        return Err(ProfileError::TooManyBackendRoutes(wire.len()));
    }
    let regexes = (wire.iter().filter_map(|r| r.r#match.as_ref()))
        .map(|m| {
            let values = m.headers.iter().chain(&m.query_params);
            usize::from(matches!(m.path, Some(api::http_match::Path::Regex(_))))
                + values
                    .filter(|v| matches!(v.value, Some(api::value_match::Value::Regex(_))))
                    .count()
        })
        .sum();
    let mut routes = Vec::with_capacity(wire.len());
    for r in wire {
        let refuse = |problem: String| ProfileError::BackendRoute {
            route: r.source.clone(),
            rule: r.rule,
            problem,
        };
        let regex = |re: &str| {
            backends::anchored_regex(re, regexes).map_err(|e| refuse(format!("{re:?}: {e}")))
        };
        let value = |v: &api::ValueMatch| match &v.value {
            Some(api::value_match::Value::Exact(s)) => Ok(ValueMatch::Exact(s.clone())),
            Some(api::value_match::Value::Regex(re)) => Ok(ValueMatch::Regex(regex(re)?)),
            None => Err(refuse(format!("{:?}: no value to match", v.name))),
        };
        let m = r
            .r#match
            .as_ref()
            .ok_or_else(|| refuse("no match".into()))?;
        let path = match &m.path {
            Some(api::http_match::Path::Exact(p)) => PathMatch::Exact(p.clone()),
            Some(api::http_match::Path::Prefix(p)) => PathMatch::prefix(p),
            Some(api::http_match::Path::Regex(re)) => PathMatch::Regex(regex(re)?),
            None => PathMatch::prefix("/"),
        };
        let method = match m.method.as_str() {
            "" => None,
            method => Some(
                http::Method::from_bytes(method.as_bytes())
                    .map_err(|_| refuse(format!("{method:?} is not an HTTP method")))?,
            ),
        };
        let mut headers = Vec::with_capacity(m.headers.len());
        for h in &m.headers {
            let name = http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| refuse(format!("{:?} is not a header name", h.name)))?;
            headers.push((name, value(h)?));
        }
        let mut query_params = Vec::with_capacity(m.query_params.len());
        for q in &m.query_params {
            query_params.push((q.name.clone(), value(q)?));
        }
        if r.backends.len() > MAX_BACKENDS {
            return Err(refuse(format!(
                "{} backends, more than {MAX_BACKENDS}",
                r.backends.len()
            )));
        }
        let mut backends = Vec::with_capacity(r.backends.len());
        for b in &r.backends {
            if b.authority.parse::<http::uri::Authority>().is_err() || b.weight > MAX_BACKEND_WEIGHT
            {
                return Err(refuse(format!(
                    "{:?} (weight {}) is not a backend",
                    b.authority, b.weight
                )));
            }
            backends.push((Arc::from(b.authority.as_str()), b.weight));
        }
        let timeout = r
            .timeout_ms
            .map(|ms| (ms > 0).then(|| Duration::from_millis(ms)));
        let matched = RequestMatch {
            path,
            method,
            headers,
            query_params,
        };
        let source = format!("HTTPRoute {} rule {}", r.source, r.rule);
        routes.push(BackendRoute::new(source.into(), matched, backends, timeout));
    }
    Ok(BackendRoutes::new(routes))
}

/// A followed target's profile, and its retry budget (which every request to it from
/// this proxy shares).
#[derive(Clone)]
pub struct FollowedProfile {
    pub rx: watch::Receiver<ProfileState>,
    pub budget: Arc<RetryBudget>,
}

impl FollowedProfile {
    /// The latest profile (none yet: no routes).
    pub fn profile(&self) -> Arc<Profile> {
        self.rx.borrow().clone().unwrap_or_else(no_profile)
    }
}

/// Every followed target's profile.
pub struct Profiles {
    discovery: Discovery,
    first_answer: Duration,
    targets: Arc<FollowedTargets<FollowedProfile>>,
}

impl Profiles {
    /// Profiles from `discovery`'s control plane; a first answer is awaited at most
    /// `first_answer`.
    pub fn new(discovery: Discovery, first_answer: Duration) -> Arc<Profiles> {
        Arc::new(Profiles {
            discovery,
            first_answer,
            targets: FollowedTargets::new(),
        })
    }

    /// Follows `target`'s profile (marking it used) and waits, boundedly, for its first
    /// answer; `None` when no more targets may be followed.
    pub async fn follow(&self, target: &str) -> Option<FollowedProfile> {
        let start = || {
            let (tx, rx) = watch::channel(None);
            tokio::spawn(follow(self.discovery.clone(), target.to_string(), tx));
            FollowedProfile {
                rx,
                budget: Arc::new(RetryBudget::default()),
            }
        };
        let mut followed = self.targets.use_or_start(target, start, |f| f.clone())?;
        first_answer(&mut followed.rx, self.first_answer, Option::is_none).await;
        Some(followed)
    }
}

/// Keeps one target's profile current until nobody asks about it any more.
async fn follow(discovery: Discovery, target: String, tx: watch::Sender<ProfileState>) {
    let request = discovery.request(&target);
    let client = discovery.client();
    let open = || {
        let (mut client, request) = (client.clone(), request.clone());
        async move { client.get_profile(request).await }
    };
    let on = |event| match event {
        Followed::Message(answer) => match profile(answer) {
            Ok(p) => {
                debug!(%target, routes = ?p.names().collect::<Vec<_>>(), "profile update");
                tx.send_replace(Some(Arc::new(p)));
            }
            Err(error) => {
                warn!(%target, %error, "refused the control plane's profile; keeping the last good one")
            }
        },
        Followed::Failed(status) => {
            debug!(%target, error = %status, "profile lookup failed");
            // Nothing known and nothing coming soon: requests go on with no routes.
            tx.send_if_modified(|p| {
                let first = p.is_none();
                if first {
                    *p = Some(no_profile());
                }
                first
            });
        }
        Followed::Lost => {
            info!(%target, "lost the profile stream; keeping the last known routes")
        }
    };
    control::follow(open, on, tx.closed()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, method: &str, path: &str) -> api::Route {
        api::Route {
            name: name.into(),
            method: method.into(),
            path_regex: path.into(),
            timeout_ms: 300,
            retryable: true,
            retry_grpc_codes: Vec::new(),
        }
    }

    #[test]
    fn reads_routes_and_refuses_what_it_cannot_use() {
        let p = profile(api::Profile {
            routes: vec![route("list", "GET", "/api/list"), route("all", "", ".*")],
            retry_budget: None,
            ..Default::default()
        })
        .unwrap();
        let list = p.route(&http::Method::GET, "/api/list");
        assert_eq!(
            (&*list.name, list.timeout, list.retryable),
            ("list", Some(Duration::from_millis(300)), true)
        );
        assert_eq!(&*p.route(&http::Method::POST, "/api/list").name, "all");
        // No codes named: UNAVAILABLE only; named: those.
        assert!(list.retries_grpc(14) && !list.retries_grpc(8));
        let mut named = route("named", "", "/");
        named.retry_grpc_codes = vec![8, 13];
        let p2 = profile(api::Profile {
            routes: vec![named],
            retry_budget: None,
            ..Default::default()
        })
        .unwrap();
        let r = p2.route(&http::Method::POST, "/");
        assert!(r.retries_grpc(8) && r.retries_grpc(13) && !r.retries_grpc(14));
        assert_eq!(p.budget, BudgetPolicy::default());

        for (bad, says) in [
            (route("x", "GET", "/api/(list"), "do not compile"),
            (route("", "GET", "/"), "is not a route name"),
            (route("a\nb", "GET", "/"), "is not a route name"),
            (route("[default]", "GET", "/"), "is not a route name"),
            (route("x", "G T", "/"), "is not an HTTP method"),
            (
                api::Route {
                    retry_grpc_codes: vec![17],
                    ..route("x", "", "/")
                },
                "is not a gRPC status",
            ),
        ] {
            let err = profile(api::Profile {
                routes: vec![bad],
                retry_budget: None,
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
        let many = vec![route("x", "", "/"); MAX_ROUTES + 1];
        assert!(matches!(
            profile(api::Profile {
                routes: many,
                retry_budget: None,
                ..Default::default()
            }),
            Err(ProfileError::TooManyRoutes(_))
        ));
    }

    fn backend_route(backends: &[(&str, u32)], timeout_ms: Option<u64>) -> api::BackendRoute {
        api::BackendRoute {
            source: "ns/canary".into(),
            rule: 1,
            r#match: Some(api::HttpMatch {
                path: Some(api::http_match::Path::Prefix("/api".into())),
                method: "GET".into(),
                headers: vec![api::ValueMatch {
                    name: "x-canary".into(),
                    value: Some(api::value_match::Value::Regex("1|yes".into())),
                }],
                query_params: Vec::new(),
            }),
            backends: (backends.iter())
                .map(|(a, w)| api::WeightedBackend {
                    authority: a.to_string(),
                    weight: *w,
                })
                .collect(),
            timeout_ms,
        }
    }

    #[test]
    fn reads_backend_routes_and_refuses_what_it_cannot_use() {
        let p = profile(api::Profile {
            routes: vec![route("list", "GET", "/api/list")],
            backend_routes: vec![backend_route(
                &[("web-canary.ns.svc.cluster.local:80", 1)],
                Some(0),
            )],
            ..Default::default()
        })
        .unwrap();
        let req = |canary: &str| {
            http::Request::get("/api/list")
                .header("x-canary", canary)
                .body(())
                .unwrap()
        };
        let matched = p
            .backends
            .route_of(&req("yes"))
            .expect("the header matches");
        assert_eq!(&*matched.source, "HTTPRoute ns/canary rule 1");
        assert_eq!(
            matched.timeout,
            Some(None),
            "0: no timeout, whatever the profile says"
        );
        assert!(p.backends.route_of(&req("no")).is_none());

        for (bad, says) in [
            (
                backend_route(&[("not an authority", 1)], None),
                "is not a backend",
            ),
            (
                backend_route(&[("web:80", MAX_BACKEND_WEIGHT + 1)], None),
                "is not a backend",
            ),
            (
                api::BackendRoute {
                    r#match: Some(api::HttpMatch {
                        path: Some(api::http_match::Path::Regex("/(api".into())),
                        ..Default::default()
                    }),
                    ..backend_route(&[], None)
                },
                "HTTPRoute ns/canary rule 1: \"/(api\"",
            ),
            (backend_route(&[("web:80", 1); 17], None), "17 backends"),
        ] {
            let err = profile(api::Profile {
                backend_routes: vec![bad],
                ..Default::default()
            })
            .unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
        }
    }
}
