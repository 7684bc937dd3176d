//! Where a request to a Service goes when HTTPRoutes are attached to it: the rules'
//! matches (on path, method, headers and query parameters) in the order the controller
//! sent them (the Gateway API's precedence), the first that matches a request deciding
//! its backends and perhaps its timeout. [`BackendRoute::pick`] chooses one backend
//! Service per attempt, by weight, so that a retry may land elsewhere. Only a client's
//! proxy splits: the matching happens in [`MatchRoute`](super::routes::MatchRoute)
//! and the pick where the request is forwarded ([`Route`](super::route::Route)).

use super::routes::REGEX_SIZE_LIMIT;
use crate::balance::random::Random;
use http::{header::HeaderName, Method, Request};
use regex::{Regex, RegexBuilder};
use std::{sync::Arc, time::Duration};

/// How a path is matched.
#[derive(Debug)]
pub enum PathMatch {
    Exact(String),
    /// By whole segments; held without its trailing `/` ([`PathMatch::prefix`]).
    Prefix(String),
    /// Anchored.
    Regex(Regex),
}

impl PathMatch {
    /// A prefix match of `prefix`, a trailing `/` ignored (as the Gateway API says), so
    /// that requests need not trim it.
    pub fn prefix(prefix: &str) -> PathMatch {
        PathMatch::Prefix(prefix.trim_end_matches('/').to_string())
    }
}

/// How a header's or query parameter's value is matched.
#[derive(Debug)]
pub enum ValueMatch {
    Exact(String),
    /// Anchored.
    Regex(Regex),
}

impl ValueMatch {
    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueMatch::Exact(s) => s.as_bytes() == value,
            ValueMatch::Regex(re) => std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)),
        }
    }
}

/// What a request must have to take a route.
#[derive(Debug)]
pub struct RequestMatch {
    pub path: PathMatch,
    pub method: Option<Method>,
    pub headers: Vec<(HeaderName, ValueMatch)>,
    pub query_params: Vec<(String, ValueMatch)>,
}

impl RequestMatch {
    /// Whether `req` has everything this asks for.
    pub fn matches<B>(&self, req: &Request<B>) -> bool {
        let path = req.uri().path();
        let path_ok = match &self.path {
            PathMatch::Exact(p) => p == path,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathMatch::Regex(re) => re.is_match(path),
        };
        path_ok
            && self.method.as_ref().is_none_or(|m| m == req.method())
            && self.headers.iter().all(|(name, value)| {
                (req.headers().get_all(name).iter()).any(|v| value.matches(v.as_bytes()))
            })
            && self.query_params.iter().all(|(name, value)| {
                // The first parameter of the name counts, as the Gateway API says.
                let query = req.uri().query().unwrap_or("");
                (query.split('&'))
                    .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                    .find(|(n, _)| n == name)
                    .is_some_and(|(_, v)| value.matches(v.as_bytes()))
            })
    }
}

/// One match of an HTTPRoute rule, and where its requests go.
#[derive(Debug)]
pub struct BackendRoute {
    /// `HTTPRoute ns/name rule N`, for errors and logs.
    pub source: Arc<str>,
    pub matched: RequestMatch,
    /// Targets (`host:port`) and their weights; empty: where the request was sent.
    backends: Vec<(Arc<str>, u32)>,
    total_weight: u64,
    /// `Some`: replaces the profile route's timeout (`Some(None)`: no timeout at all).
    pub timeout: Option<Option<Duration>>,
    random: Random,
}

/// Where one attempt of a request goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// Where the client sent it.
    Sent,
    /// This backend target.
    Backend(&'a Arc<str>),
    /// Nowhere: every backend weighs 0.
    Nowhere,
}

impl BackendRoute {
    /// A route sending what `matched` matches to `backends` (target, weight).
    pub fn new(
        source: Arc<str>,
        matched: RequestMatch,
        backends: Vec<(Arc<str>, u32)>,
        timeout: Option<Option<Duration>>,
    ) -> BackendRoute {
        let total_weight = backends.iter().map(|(_, w)| u64::from(*w)).sum();
        BackendRoute {
            source,
            matched,
            backends,
            total_weight,
            timeout,
            random: Random::default(),
        }
    }

    /// The backend of the next attempt, each with its weight's share.
    pub fn pick(&self) -> Pick<'_> {
        if self.backends.is_empty() {
            return Pick::Sent;
        }
        if self.total_weight == 0 {
            return Pick::Nowhere;
        }
        let mut at = self.random.below(self.total_weight);
        for (target, weight) in &self.backends {
            let weight = u64::from(*weight);
            if at < weight {
                return Pick::Backend(target);
            }
            at -= weight;
        }
        Pick::Nowhere // unreachable: the weights sum to the total
    }
}

/// A Service's backend routes, in order.
#[derive(Debug, Default)]
pub struct BackendRoutes(Vec<Arc<BackendRoute>>);

impl BackendRoutes {
    /// The routes, in the order requests try them.
    pub fn new(routes: Vec<BackendRoute>) -> BackendRoutes {
        BackendRoutes(routes.into_iter().map(Arc::new).collect())
    }

    /// The first route that matches `req`, if any.
    pub fn route_of<B>(&self, req: &Request<B>) -> Option<&Arc<BackendRoute>> {
        self.0.iter().find(|r| r.matched.matches(req))
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An anchored regex for one of the `count` that a Service's HTTPRoutes hold, within the
/// memory limit they share (a profile's).
pub fn anchored_regex(re: &str, count: usize) -> Result<Regex, regex::Error> {
    RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(REGEX_SIZE_LIMIT / count.max(1))
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::builder().method(method).uri(uri);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        req.body(()).unwrap()
    }

    fn path(path: PathMatch) -> RequestMatch {
        RequestMatch {
            path,
            method: None,
            headers: Vec::new(),
            query_params: Vec::new(),
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let api = path(PathMatch::prefix("/api/"));
        let get = |uri: &str| request(Method::GET, uri, &[]);
        assert!(api.matches(&get("/api")));
        assert!(api.matches(&get("/api/")));
        assert!(api.matches(&get("/api/list?x=1")));
        assert!(!api.matches(&get("/apis")));
        assert!(!api.matches(&get("/")));
        assert!(path(PathMatch::prefix("/")).matches(&get("/anything")));
        let exact = path(PathMatch::Exact("/api".into()));
        assert!(exact.matches(&get("/api")) && !exact.matches(&get("/api/")));
        let regex = path(PathMatch::Regex(anchored_regex("/api/[0-9]+", 1).unwrap()));
        assert!(regex.matches(&get("/api/42")) && !regex.matches(&get("/api/42/x")));
    }

    #[test]
    fn methods_headers_and_query_parameters_must_all_match() {
        let m = RequestMatch {
            path: PathMatch::prefix("/"),
            method: Some(Method::GET),
            headers: vec![
                (
                    HeaderName::from_static("x-canary"),
                    ValueMatch::Exact("1".into()),
                ),
                (
                    HeaderName::from_static("user-agent"),
                    ValueMatch::Regex(anchored_regex("curl/.*", 2).unwrap()),
                ),
            ],
            query_params: vec![("v".into(), ValueMatch::Exact("2".into()))],
        };
        let canary = [("X-Canary", "1"), ("user-agent", "curl/8.5")];
        assert!(m.matches(&request(Method::GET, "/x?a=b&v=2", &canary)));
        // The first `v` counts.
        assert!(!m.matches(&request(Method::GET, "/x?v=1&v=2", &canary)));
        assert!(!m.matches(&request(Method::POST, "/x?v=2", &canary)));
        assert!(!m.matches(&request(Method::GET, "/x?v=2", &canary[..1])));
        let other = [("x-canary", "0"), ("user-agent", "curl/8.5")];
        assert!(!m.matches(&request(Method::GET, "/x?v=2", &other)));
        assert!(!m.matches(&request(Method::GET, "/x", &canary)));
    }

    #[test]
    fn backends_are_picked_by_weight() {
        let route = |backends: &[(&str, u32)]| {
            BackendRoute::new(
                "HTTPRoute ns/r rule 0".into(),
                path(PathMatch::prefix("/")),
                backends.iter().map(|(t, w)| (Arc::from(*t), *w)).collect(),
                None,
            )
        };
        let split = route(&[("web:80", 90), ("canary:80", 10), ("never:80", 0)]);
        let mut canary = 0;
        for _ in 0..10_000 {
            match split.pick() {
                Pick::Backend(t) if &**t == "canary:80" => canary += 1,
                Pick::Backend(t) => assert_eq!(&**t, "web:80"),
                other => panic!("{other:?}"),
            }
        }
        assert!((800..1200).contains(&canary), "{canary} of 10000");
        assert_eq!(route(&[]).pick(), Pick::Sent);
        assert_eq!(route(&[("a:80", 0)]).pick(), Pick::Nowhere);
    }
}
