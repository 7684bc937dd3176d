//! A Service's routes, as the proxy holds them (its ServiceProfile, from GetProfile), and
//! which one each request takes: the first whose method and anchored path regex match it,
//! else the default route (`[default]`: no timeout, no retries). [`MatchRoute`] is the
//! layer that finds a request's [`RouteMatch`] (outbound for wherever it goes, inbound for
//! the pod's own Service) and puts it in the request's extensions, for the metrics'
//! `route` label and for the timeout and retry layers below. The routes' regexes are one
//! automaton that finds the first route whose path matches in one pass over the path,
//! however many routes there are; only when that route's method does not fit is the
//! [`RegexSet`] of them asked for every route the path matches. Outbound, the match also
//! names the request's backend route (from the Service's HTTPRoutes, [`BackendRoutes`]),
//! which decides where it goes and may set its timeout instead of the profile route.

use crate::{
    control::profile::{FollowedProfile as Followed, Profiles},
    errors::TimeoutLimit,
    http::retry::budget::RetryBudget,
    http::{
        backends::{BackendRoute, BackendRoutes},
        headers::authority_of,
        route::target_of,
    },
    telemetry::labels::KnownAuthorities,
};
use conduit_api::profile::{
    DEFAULT_MIN_RETRIES_PER_SECOND, DEFAULT_RETRY_GRPC_CODE, DEFAULT_RETRY_RATIO_PERMILLE,
    DEFAULT_RETRY_TTL_MS, DEFAULT_ROUTE,
};
use futures_util::future::{BoxFuture, Either};
use http::{Method, Request};
use parking_lot::Mutex;
use regex::{RegexSet, RegexSetBuilder};
use regex_automata::{meta, Anchored, Input};
use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
    time::Duration,
};

/// The most memory one profile's compiled regexes may take (the controller's are
/// checked one by one; together they could be larger).
pub(crate) const REGEX_SIZE_LIMIT: usize = 16 << 20;

/// One route of a profile.
#[derive(Debug, PartialEq, Eq)]
pub struct ProfileRoute {
    /// What the `route` label says.
    pub name: Arc<str>,
    /// The method a request must have; `None`: any.
    pub method: Option<Method>,
    /// How long a request on this route may take, response body included.
    pub timeout: Option<Duration>,
    /// Whether failed requests may be sent again (the user says they are safe to repeat).
    pub retryable: bool,
    /// The gRPC statuses a retryable route's calls are retried on: bit `c` for code `c`.
    pub retry_grpc: u32,
}

impl ProfileRoute {
    /// The route of requests no profile route matches.
    pub fn default_route() -> ProfileRoute {
        ProfileRoute {
            name: DEFAULT_ROUTE.into(),
            method: None,
            timeout: None,
            retryable: false,
            retry_grpc: 1 << DEFAULT_RETRY_GRPC_CODE,
        }
    }

    /// Whether a call answered gRPC status `code` may be retried on this route.
    pub fn retries_grpc(&self, code: u32) -> bool {
        self.retryable && code < 32 && self.retry_grpc & (1 << code) != 0
    }
}

/// How many retries a Service's clients may add: `ratio` of the requests of the last
/// `ttl`, plus `min_per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetPolicy {
    pub ratio_permille: u32,
    pub min_per_second: u32,
    pub ttl: Duration,
}

impl Default for BudgetPolicy {
    fn default() -> Self {
        BudgetPolicy {
            ratio_permille: DEFAULT_RETRY_RATIO_PERMILLE,
            min_per_second: DEFAULT_MIN_RETRIES_PER_SECOND,
            ttl: Duration::from_millis(DEFAULT_RETRY_TTL_MS),
        }
    }
}

/// A Service's routes, in order, its retry budget, and its backend routes.
#[derive(Debug)]
pub struct Profile {
    routes: Vec<Arc<ProfileRoute>>,
    /// The routes' path regexes, anchored, in the same order: which is the first that
    /// matches (leftmost-first: the earlier pattern wins) ...
    first: Option<meta::Regex>,
    /// ... and which all match.
    paths: RegexSet,
    default: Arc<ProfileRoute>,
    pub budget: BudgetPolicy,
    /// From its HTTPRoutes: where requests go.
    pub backends: BackendRoutes,
}

impl Profile {
    /// A profile with no routes: every request takes the default route.
    pub fn empty() -> Profile {
        Profile {
            routes: Vec::new(),
            first: None,
            paths: RegexSet::empty(),
            default: Arc::new(ProfileRoute::default_route()),
            budget: BudgetPolicy::default(),
            backends: BackendRoutes::default(),
        }
    }

    /// The same profile, its requests going where `backends` say.
    pub fn with_backends(self, backends: BackendRoutes) -> Profile {
        Profile { backends, ..self }
    }

    /// The profile of `routes`, each with its path regex (matched against the whole
    /// path), in order; fails on the first regex that does not compile.
    pub fn new(
        routes: Vec<(ProfileRoute, String)>,
        budget: BudgetPolicy,
    ) -> Result<Profile, regex::Error> {
        let anchored: Vec<String> = routes.iter().map(|(_, re)| format!("^(?:{re})$")).collect();
        let paths = RegexSetBuilder::new(&anchored)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()?;
        // Built from what the set accepted, so it fails only past its own size limit; a
        // profile without it still matches, through the set.
        let first = meta::Regex::builder()
            .configure(meta::Config::new().nfa_size_limit(Some(REGEX_SIZE_LIMIT)))
            .build_many(&anchored)
            .ok();
        Ok(Profile {
            routes: routes.into_iter().map(|(r, _)| Arc::new(r)).collect(),
            first,
            paths,
            budget,
            ..Profile::empty()
        })
    }

    /// The route of a request with `method` and `path`: the first that matches both.
    pub fn route(&self, method: &Method, path: &str) -> &Arc<ProfileRoute> {
        if self.routes.is_empty() {
            return &self.default;
        }
        if let Some(first) = &self.first {
            // Anchored at both ends, a match is the whole path, and the first route that
            // matches it is the first pattern that does.
            let route = match first.search(&Input::new(path).anchored(Anchored::Yes)) {
                Some(m) => &self.routes[m.pattern().as_usize()],
                None => return &self.default,
            };
            if route.method.as_ref().is_none_or(|m| m == method) {
                return route;
            }
        }
        self.paths
            .matches(path)
            .iter()
            .map(|i| &self.routes[i])
            .find(|r| r.method.as_ref().is_none_or(|m| m == method))
            .unwrap_or(&self.default)
    }

    /// The routes' names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|r| &*r.name)
    }
}

/// A request's route, the profile it is from, the retry budget of where it goes, and
/// its backend route if an HTTPRoute matched it (a request extension).
#[derive(Clone, Debug)]
pub struct RouteMatch {
    pub route: Arc<ProfileRoute>,
    pub profile: Arc<Profile>,
    /// `None`: the target has none of its own (it is not followed).
    pub budget: Option<Arc<RetryBudget>>,
    /// Outbound only: the HTTPRoute match that decides where it goes.
    pub backend: Option<Arc<BackendRoute>>,
}

/// The profile of a name without one (shared: requests to it allocate nothing).
pub fn no_profile() -> Arc<Profile> {
    static EMPTY: LazyLock<Arc<Profile>> = LazyLock::new(|| Arc::new(Profile::empty()));
    EMPTY.clone()
}

impl RouteMatch {
    /// The default route of no profile at all.
    pub fn default_route() -> RouteMatch {
        let profile = no_profile();
        RouteMatch {
            route: profile.default.clone(),
            profile,
            budget: None,
            backend: None,
        }
    }

    /// How long the request may take, and who said so: its HTTPRoute rule's timeout when
    /// it sets one (the Gateway API's route is the more specific), else its profile
    /// route's.
    pub fn timeout(&self) -> Option<(Duration, TimeoutLimit)> {
        match self.backend.as_ref().and_then(|b| Some((b, b.timeout?))) {
            Some((backend, timeout)) => {
                Some((timeout?, TimeoutLimit::HttpRoute(backend.source.clone())))
            }
            None => Some((
                self.route.timeout?,
                TimeoutLimit::Route(self.route.name.clone()),
            )),
        }
    }

    /// The name of the route of `req`: its match's, else the default route's.
    pub fn name_of<B>(req: &Request<B>) -> Arc<str> {
        match req.extensions().get::<RouteMatch>() {
            Some(m) => m.route.name.clone(),
            None => no_profile().default.name.clone(),
        }
    }

    /// The match of `req` in `followed`'s profile; with `split`, its backend route too.
    fn of<B>(followed: &Followed, req: &Request<B>, split: bool) -> RouteMatch {
        let profile = followed.profile();
        let backend = if split && !profile.backends.is_empty() {
            profile.backends.route_of(req).cloned()
        } else {
            None
        };
        RouteMatch {
            route: profile.route(req.method(), req.uri().path()).clone(),
            budget: Some(followed.budget.clone()),
            profile,
            backend,
        }
    }
}

/// Names each request's route from the profile of where it goes.
#[derive(Clone)]
pub struct MatchRoute<S> {
    inner: S,
    conn: Arc<ConnProfiles>,
}

/// One connection's view of the profiles: a keep-alive connection nearly always talks to
/// one target, whose profile is looked up once and then read from its watch.
struct ConnProfiles {
    profiles: Option<Arc<Profiles>>,
    orig_dst: SocketAddr,
    /// Inbound: only the pod's own Services have a profile here.
    only: Option<Arc<dyn KnownAuthorities>>,
    /// The last request's authority as it named it, its target, and its profile.
    current: Mutex<Option<(Box<str>, String, Followed)>>,
}

impl<S> MatchRoute<S> {
    /// Wraps `inner` for a connection to `orig_dst`, its routes from `profiles` (none:
    /// every request takes the default route); with `only`, for the authorities it knows
    /// alone.
    pub fn new(
        inner: S,
        profiles: Option<Arc<Profiles>>,
        orig_dst: SocketAddr,
        only: Option<Arc<dyn KnownAuthorities>>,
    ) -> Self {
        MatchRoute {
            inner,
            conn: Arc::new(ConnProfiles {
                profiles,
                orig_dst,
                only,
                current: Mutex::new(None),
            }),
        }
    }
}

impl ConnProfiles {
    /// The authority a request names, when its profile is looked up here.
    fn authority<'r, B>(&self, req: &'r Request<B>) -> Option<&'r str> {
        self.profiles.as_ref()?;
        let authority = authority_of(req)?;
        match &self.only {
            Some(only) if !only.knows(authority, self.orig_dst) => None,
            _ => Some(authority),
        }
    }

    /// The route of `req`, naming `authority`, if the connection follows its target
    /// already (compared as the client wrote it: no target is built per request).
    fn cached<B>(&self, authority: &str, req: &Request<B>) -> Option<RouteMatch> {
        let current = self.current.lock();
        let (_, _, followed) = current.as_ref().filter(|(a, _, _)| &**a == authority)?;
        Some(RouteMatch::of(followed, req, self.only.is_none()))
    }
}

impl<S, B> tower::Service<Request<B>> for MatchRoute<S>
where
    S: tower::Service<Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Either<S::Future, BoxFuture<'static, Result<S::Response, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // No route named: the layers below take the default route, and nothing is
        // allocated for it.
        let Some(authority) = self.conn.authority(&req) else {
            return Either::Left(self.inner.call(req));
        };
        if let Some(matched) = self.conn.cached(authority, &req) {
            req.extensions_mut().insert(matched);
            return Either::Left(self.inner.call(req));
        }
        let authority: Box<str> = authority.into();
        let target = target_of(&authority, self.conn.orig_dst.port());
        // A new target for this connection: follow it (waiting, boundedly, for its first
        // answer) before the request goes on.
        let (conn, inner) = (self.conn.clone(), self.inner.clone());
        let mut inner = std::mem::replace(&mut self.inner, inner);
        Either::Right(Box::pin(async move {
            let followed = match &conn.profiles {
                Some(profiles) => profiles.follow(&target).await,
                None => None,
            };
            let matched = match followed {
                Some(followed) => {
                    let matched = RouteMatch::of(&followed, &req, conn.only.is_none());
                    *conn.current.lock() = Some((authority, target, followed));
                    matched
                }
                None => RouteMatch::default_route(),
            };
            req.extensions_mut().insert(matched);
            inner.call(req).await
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, method: Option<Method>) -> ProfileRoute {
        ProfileRoute {
            name: name.into(),
            method,
            ..ProfileRoute::default_route()
        }
    }

    fn profile(routes: &[(&str, Option<Method>, &str)]) -> Profile {
        let routes = routes
            .iter()
            .map(|(n, m, re)| (route(n, m.clone()), re.to_string()))
            .collect();
        Profile::new(routes, BudgetPolicy::default()).unwrap()
    }

    #[test]
    fn a_request_takes_the_first_route_whose_method_and_whole_path_match() {
        let p = profile(&[
            ("list", Some(Method::GET), "/api/list"),
            ("vote", Some(Method::POST), "/api/vote/[^/]+"),
            ("any api", None, "/api/.*"),
        ]);
        let name = |m: Method, path: &str| p.route(&m, path).name.to_string();
        assert_eq!(name(Method::GET, "/api/list"), "list");
        // Anchored: a longer path is not the route's.
        assert_eq!(name(Method::GET, "/api/listing"), "any api");
        assert_eq!(name(Method::GET, "/x/api/list"), DEFAULT_ROUTE);
        // The method must match too; the next route that matches is taken.
        assert_eq!(name(Method::POST, "/api/list"), "any api");
        assert_eq!(name(Method::POST, "/api/vote/doughnut"), "vote");
        assert_eq!(name(Method::GET, "/api/vote/doughnut"), "any api");
        assert_eq!(name(Method::GET, "/"), DEFAULT_ROUTE);
        assert_eq!(p.names().collect::<Vec<_>>(), ["list", "vote", "any api"]);
    }

    #[test]
    fn order_decides_between_routes_that_both_match() {
        let p = profile(&[("first", None, "/a.*"), ("second", None, "/ab")]);
        assert_eq!(&*p.route(&Method::GET, "/ab").name, "first");
        let p = profile(&[("second", None, "/ab"), ("first", None, "/a.*")]);
        assert_eq!(&*p.route(&Method::GET, "/ab").name, "second");
    }

    #[test]
    fn a_regex_that_does_not_compile_is_refused() {
        let routes = vec![(route("bad", None), "/api/(list".to_string())];
        assert!(Profile::new(routes, BudgetPolicy::default()).is_err());
        // An alternation cannot escape the anchors.
        let p = profile(&[("alt", None, "/a|/b")]);
        assert_eq!(&*p.route(&Method::GET, "/b").name, "alt");
        assert_eq!(&*p.route(&Method::GET, "/bc").name, DEFAULT_ROUTE);
    }

    #[test]
    fn an_http_routes_timeout_replaces_the_profile_routes() {
        use crate::http::backends::{BackendRoute, PathMatch, RequestMatch};
        let mut matched = RouteMatch::default_route();
        matched.route = Arc::new(ProfileRoute {
            timeout: Some(Duration::from_secs(1)),
            ..route("list", None)
        });
        let backend = |timeout| {
            let any = RequestMatch {
                path: PathMatch::prefix("/"),
                method: None,
                headers: Vec::new(),
                query_params: Vec::new(),
            };
            Some(Arc::new(BackendRoute::new(
                "HTTPRoute ns/r rule 0".into(),
                any,
                Vec::new(),
                timeout,
            )))
        };
        let limit = |m: &RouteMatch| m.timeout().map(|(t, l)| (t.as_millis(), l.to_string()));
        assert_eq!(
            limit(&matched),
            Some((1000, "the timeout of route \"list\"".into()))
        );
        matched.backend = backend(None);
        assert_eq!(
            limit(&matched).unwrap().0,
            1000,
            "the rule sets none: the profile's"
        );
        matched.backend = backend(Some(Some(Duration::from_millis(200))));
        assert_eq!(
            limit(&matched),
            Some((200, "the request timeout of HTTPRoute ns/r rule 0".into()))
        );
        matched.backend = backend(Some(None));
        assert_eq!(limit(&matched), None, "0s: no timeout at all");
    }
}
