//! Gateway API HTTPRoutes (`gateway.networking.k8s.io/v1`) attached to Services, as the
//! GAMMA initiative defines them for meshes: which requests to a Service (by path, method,
//! headers, query parameters) go to which backend Services, in what proportions, and with
//! what timeout. Read from manifests (or the API) with every mistake named, and ordered
//! by the Gateway API's precedence ([`attached`]).
//!
//! ```yaml
//! apiVersion: gateway.networking.k8s.io/v1
//! kind: HTTPRoute
//! metadata: {name: web-canary, namespace: emojivoto}
//! spec:
//!   parentRefs: [{group: "", kind: Service, name: web-svc, port: 80}]
//!   rules:
//!   - matches: [{headers: [{name: x-canary, value: "1"}]}]
//!     backendRefs: [{name: web-svc-canary, port: 80}]
//!   - backendRefs:
//!     - {name: web-svc, port: 80, weight: 90}
//!     - {name: web-svc-canary, port: 80, weight: 10}
//!     timeouts: {request: 2s}
//! ```
//!
//! What a mesh has no use for is accepted and ignored (`hostnames`, parents that are
//! Gateways); what Conduit does not do is refused by name (filters, per-attempt timeouts,
//! references across namespaces), so that a route never half-applies silently.

use crate::manifest::{is_dns_label, Document, ManifestError};
use conduit_api::profile::{MAX_BACKENDS, MAX_BACKEND_WEIGHT};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;

/// The HTTPRoute kind's `apiVersion`.
pub const API_VERSION: &str = "gateway.networking.k8s.io/v1";
/// The Gateway API's group.
pub const GROUP: &str = "gateway.networking.k8s.io";
/// The upstream limits (the CRD's `maxItems`) on a route's parts.
pub const MAX_PARENT_REFS: usize = 32;
pub const MAX_RULES: usize = 16;
pub const MAX_MATCHES: usize = 64;
pub const MAX_HEADER_MATCHES: usize = 16;
/// The longest path a match may name.
pub const MAX_PATH: usize = 1024;

/// An HTTPRoute, as much of it as concerns a mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpRoute {
    pub namespace: String,
    pub name: String,
    /// `metadata.creationTimestamp` (RFC 3339), which breaks ties between routes; `None`
    /// in manifests, which are ordered by name.
    pub created: Option<String>,
    /// The Services (of its namespace) it is attached to.
    pub parents: Vec<ParentService>,
    pub rules: Vec<Rule>,
}

/// A Service a route is attached to: requests sent to it follow the route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentService {
    pub name: String,
    /// `None`: every port of the Service.
    pub port: Option<u16>,
}

/// One rule: the requests it matches go to its backends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Any of these; never empty (the Gateway API's default is every path).
    pub matches: Vec<RequestMatch>,
    /// Empty: the parent Service itself.
    pub backends: Vec<Backend>,
    /// `timeouts.request` in milliseconds; `Some(0)`: none, whatever the profile says.
    pub timeout_ms: Option<u64>,
}

/// What a request must have to match.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMatch {
    pub path: PathMatch,
    pub method: Option<String>,
    /// Every one must match; names are compared ignoring case.
    pub headers: Vec<ValueMatch>,
    pub query_params: Vec<ValueMatch>,
}

/// How a request's path is matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    Exact(String),
    /// By whole segments: `/api` matches `/api` and `/api/list`, not `/apis`.
    Prefix(String),
    /// A regex the whole path must match.
    Regex(String),
}

/// A header or query parameter that must be present with a value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValueMatch {
    pub name: String,
    pub value: StringMatch,
}

/// How a value is matched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StringMatch {
    Exact(String),
    /// A regex the whole value must match.
    Regex(String),
}

/// A Service (of the route's namespace) a rule sends a share of its requests to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backend {
    pub service: String,
    pub port: u16,
    /// Its share is its weight over the rule's total.
    pub weight: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecDoc {
    #[serde(default)]
    parent_refs: Vec<ParentRefDoc>,
    /// Ignored: a mesh route matches what is sent to its parent Service, whatever name.
    #[serde(default)]
    #[allow(dead_code)]
    hostnames: Vec<String>,
    #[serde(default)]
    rules: Option<Vec<RuleDoc>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ParentRefDoc {
    group: Option<String>,
    kind: Option<String>,
    namespace: Option<String>,
    name: String,
    section_name: Option<String>,
    port: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RuleDoc {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    matches: Vec<MatchDoc>,
    #[serde(default)]
    filters: Vec<serde_json::Value>,
    #[serde(default)]
    backend_refs: Vec<BackendRefDoc>,
    #[serde(default)]
    timeouts: Option<TimeoutsDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MatchDoc {
    path: Option<PathDoc>,
    method: Option<String>,
    #[serde(default)]
    headers: Vec<ValueDoc>,
    #[serde(default)]
    query_params: Vec<ValueDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PathDoc {
    #[serde(rename = "type")]
    kind: Option<String>,
    value: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ValueDoc {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: String,
    value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BackendRefDoc {
    group: Option<String>,
    kind: Option<String>,
    name: String,
    namespace: Option<String>,
    port: Option<i64>,
    weight: Option<i64>,
    #[serde(default)]
    filters: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TimeoutsDoc {
    request: Option<String>,
    backend_request: Option<String>,
}

/// The methods a match may name (the CRD's enum).
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Reads an HTTPRoute.
pub fn http_route(doc: &Document) -> Result<HttpRoute, ManifestError> {
    let name = doc
        .name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| doc.field_error("metadata.name", "missing"))?
        .to_string();
    let namespace = doc.namespace().unwrap_or("default").to_string();
    if !is_dns_label(&namespace) {
        return Err(doc.field_error(
            "metadata.namespace",
            format!("{namespace:?} is not a namespace name"),
        ));
    }
    let service_name = |field: String, name: &str| {
        if is_dns_label(name) {
            Ok(name.to_string())
        } else {
            Err(doc.field_error(&field, format!("{name:?} is not a Service name")))
        }
    };
    let created = (doc.value.get("metadata"))
        .and_then(|m| m.get("creationTimestamp"))
        .and_then(|t| t.as_str())
        .map(str::to_string);
    let spec: SpecDoc = doc.spec()?;
    let at = |field: String, problem: String| doc.field_error(&field, problem);
    let too_many = |field: &str, n: usize, max: usize| {
        (n > max).then(|| doc.field_error(field, format!("{n} items, more than the {max} allowed")))
    };
    if let Some(e) = too_many("spec.parentRefs", spec.parent_refs.len(), MAX_PARENT_REFS) {
        return Err(e);
    }
    let mut parents = Vec::new();
    for (i, p) in spec.parent_refs.iter().enumerate() {
        let field = format!("spec.parentRefs[{i}]");
        let group = p.group.as_deref().unwrap_or(GROUP);
        let kind = p.kind.as_deref().unwrap_or("Gateway");
        if kind != "Service" {
            continue; // a Gateway's, say: not the mesh's to follow
        }
        if !is_core(group) {
            return Err(at(
                format!("{field}.group"),
                format!("{group:?}: a Service is in the core group: write group: \"\""),
            ));
        }
        if p.namespace.as_deref().is_some_and(|ns| ns != namespace) {
            return Err(at(format!("{field}.namespace"), "a Service of another namespace: Conduit attaches routes only to Services of their own namespace (the producer routes of GAMMA)".into()));
        }
        if p.section_name.is_some() {
            return Err(at(
                format!("{field}.sectionName"),
                "not supported for Services: name the port with `port`".into(),
            ));
        }
        let port = match p.port {
            None => None,
            Some(port) => Some(port_number(port).ok_or_else(|| {
                at(
                    format!("{field}.port"),
                    format!("{port} is not a port from 1 to 65535"),
                )
            })?),
        };
        parents.push(ParentService {
            name: service_name(format!("{field}.name"), &p.name)?,
            port,
        });
    }
    // The Gateway API's default: one rule sending every request to the parent.
    let rule_docs = spec.rules.unwrap_or_else(|| {
        vec![RuleDoc {
            name: None,
            matches: Vec::new(),
            filters: Vec::new(),
            backend_refs: Vec::new(),
            timeouts: None,
        }]
    });
    if let Some(e) = too_many("spec.rules", rule_docs.len(), MAX_RULES) {
        return Err(e);
    }
    let mut rules = Vec::new();
    for (i, r) in rule_docs.iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        if let Some(n) = &r.name {
            if !is_dns_label(n) {
                return Err(at(
                    format!("{field}.name"),
                    format!("{n:?} is not a DNS label"),
                ));
            }
        }
        if !r.filters.is_empty() {
            return Err(at(
                format!("{field}.filters"),
                "not supported by Conduit: a rule may match and split requests, not change them"
                    .into(),
            ));
        }
        if let Some(e) = too_many(&format!("{field}.matches"), r.matches.len(), MAX_MATCHES) {
            return Err(e);
        }
        let mut matches = Vec::new();
        for (j, m) in r.matches.iter().enumerate() {
            matches.push(request_match(doc, &format!("{field}.matches[{j}]"), m)?);
        }
        if matches.is_empty() {
            matches.push(RequestMatch {
                path: PathMatch::Prefix("/".into()),
                method: None,
                headers: Vec::new(),
                query_params: Vec::new(),
            });
        }
        if let Some(e) = too_many(
            &format!("{field}.backendRefs"),
            r.backend_refs.len(),
            MAX_BACKENDS,
        ) {
            return Err(e);
        }
        let mut backends = Vec::new();
        for (j, b) in r.backend_refs.iter().enumerate() {
            let field = format!("{field}.backendRefs[{j}]");
            let (group, kind) = (
                b.group.as_deref().unwrap_or(""),
                b.kind.as_deref().unwrap_or("Service"),
            );
            if kind != "Service" || !is_core(group) {
                return Err(at(
                    format!("{field}.kind"),
                    format!(
                        "{group}/{kind}: a backend must be a Service (group \"\", kind Service)"
                    ),
                ));
            }
            if b.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                return Err(at(format!("{field}.namespace"), "a Service of another namespace: that needs a ReferenceGrant, which Conduit does not read; use a Service of the route's namespace".into()));
            }
            if !b.filters.is_empty() {
                return Err(at(
                    format!("{field}.filters"),
                    "not supported by Conduit".into(),
                ));
            }
            let port = b.port.ok_or_else(|| {
                at(
                    format!("{field}.port"),
                    "missing: a Service backend needs its port".into(),
                )
            })?;
            let port = port_number(port).ok_or_else(|| {
                at(
                    format!("{field}.port"),
                    format!("{port} is not a port from 1 to 65535"),
                )
            })?;
            let weight = b.weight.unwrap_or(1);
            let weight = u32::try_from(weight)
                .ok()
                .filter(|w| *w <= MAX_BACKEND_WEIGHT)
                .ok_or_else(|| {
                    at(
                        format!("{field}.weight"),
                        format!("{weight} is not a weight from 0 to {MAX_BACKEND_WEIGHT}"),
                    )
                })?;
            backends.push(Backend {
                service: service_name(format!("{field}.name"), &b.name)?,
                port,
                weight,
            });
        }
        let timeout_ms = match &r.timeouts {
            None => None,
            Some(t) => {
                if t.backend_request.is_some() {
                    return Err(at(format!("{field}.timeouts.backendRequest"), "not supported by Conduit, which bounds the whole request, retries included: use timeouts.request".into()));
                }
                match &t.request {
                    None => None,
                    Some(text) => Some(gateway_duration(text).ok_or_else(|| {
                        at(
                            format!("{field}.timeouts.request"),
                            format!(
                                "{text:?} is not a Gateway API duration like 500ms, 10s or 1m30s"
                            ),
                        )
                    })?),
                }
            }
        };
        rules.push(Rule {
            matches,
            backends,
            timeout_ms,
        });
    }
    Ok(HttpRoute {
        namespace,
        name,
        created,
        parents,
        rules,
    })
}

fn request_match(doc: &Document, field: &str, m: &MatchDoc) -> Result<RequestMatch, ManifestError> {
    let path = match &m.path {
        None => PathMatch::Prefix("/".into()),
        Some(p) => {
            let value = p.value.clone().unwrap_or_else(|| "/".into());
            if value.len() > MAX_PATH {
                return Err(doc.field_error(
                    &format!("{field}.path.value"),
                    format!("longer than {MAX_PATH} characters"),
                ));
            }
            let kind = p.kind.as_deref().unwrap_or("PathPrefix");
            let absolute = || {
                if value.starts_with('/') {
                    Ok(())
                } else {
                    Err(doc.field_error(
                        &format!("{field}.path.value"),
                        format!("{value:?} does not start with /"),
                    ))
                }
            };
            match kind {
                "Exact" => {
                    absolute()?;
                    PathMatch::Exact(value)
                }
                "PathPrefix" => {
                    absolute()?;
                    PathMatch::Prefix(value)
                }
                "RegularExpression" => {
                    check_regex(doc, &format!("{field}.path.value"), &value)?;
                    PathMatch::Regex(value)
                }
                other => {
                    return Err(doc.field_error(
                        &format!("{field}.path.type"),
                        format!("{other:?}: one of Exact, PathPrefix, RegularExpression"),
                    ))
                }
            }
        }
    };
    let method = match &m.method {
        Some(method) if !METHODS.contains(&method.as_str()) => {
            return Err(doc.field_error(
                &format!("{field}.method"),
                format!("{method:?}: one of {}", METHODS.join(", ")),
            ))
        }
        method => method.clone(),
    };
    let values =
        |part: &str, docs: &[ValueDoc], header: bool| -> Result<Vec<ValueMatch>, ManifestError> {
            let field = format!("{field}.{part}");
            if docs.len() > MAX_HEADER_MATCHES {
                return Err(doc.field_error(
                    &field,
                    format!(
                        "{} items, more than the {MAX_HEADER_MATCHES} allowed",
                        docs.len()
                    ),
                ));
            }
            let mut out: Vec<ValueMatch> = Vec::new();
            for (k, v) in docs.iter().enumerate() {
                let field = format!("{field}[{k}]");
                let valid_name = !v.name.is_empty()
                    && v.name.len() <= 256
                    && (!header || v.name.bytes().all(is_token_byte));
                if !valid_name {
                    return Err(doc.field_error(
                        &format!("{field}.name"),
                        format!(
                            "{:?} is not a {} name",
                            v.name,
                            if header { "header" } else { "query parameter" }
                        ),
                    ));
                }
                let name = if header {
                    v.name.to_ascii_lowercase()
                } else {
                    v.name.clone()
                };
                // The Gateway API: a name given twice counts once, the first time.
                if out.iter().any(|o| o.name == name) {
                    continue;
                }
                let value = match v.kind.as_deref().unwrap_or("Exact") {
                    "Exact" => StringMatch::Exact(v.value.clone()),
                    "RegularExpression" => {
                        check_regex(doc, &format!("{field}.value"), &v.value)?;
                        StringMatch::Regex(v.value.clone())
                    }
                    other => {
                        return Err(doc.field_error(
                            &format!("{field}.type"),
                            format!("{other:?}: one of Exact, RegularExpression"),
                        ))
                    }
                };
                out.push(ValueMatch { name, value });
            }
            Ok(out)
        };
    Ok(RequestMatch {
        path,
        method,
        headers: values("headers", &m.headers, true)?,
        query_params: values("queryParams", &m.query_params, false)?,
    })
}

fn check_regex(doc: &Document, field: &str, re: &str) -> Result<(), ManifestError> {
    regex::Regex::new(&format!("^(?:{re})$"))
        .map(|_| ())
        .map_err(|e| doc.field_error(field, format!("not a regex: {e}")))
}

fn is_core(group: &str) -> bool {
    group.is_empty() || group == "core"
}

fn port_number(port: i64) -> Option<u16> {
    u16::try_from(port).ok().filter(|p| *p != 0)
}

/// An HTTP token character (RFC 9110), what a header name is made of.
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A Gateway API duration (GEP-2257: `^([0-9]{1,5}(h|m|s|ms)){1,4}$`) in milliseconds.
pub fn gateway_duration(text: &str) -> Option<u64> {
    let (mut rest, mut total, mut parts) = (text, 0u64, 0);
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit_ms, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total += n * unit_ms;
        parts += 1;
    }
    (1..=4).contains(&parts).then_some(total)
}

/// One match of a rule attached to a Service, with where its requests go.
#[derive(Clone, Copy, Debug)]
pub struct AttachedMatch<'a> {
    pub route: &'a HttpRoute,
    /// The rule's index in its route.
    pub rule: usize,
    pub matched: &'a RequestMatch,
}

impl AttachedMatch<'_> {
    /// The rule the match is of.
    pub fn rule(&self) -> &Rule {
        &self.route.rules[self.rule]
    }
}

/// The matches of every rule of `routes` attached to Service `service` (of their
/// namespace) on `port`, in the Gateway API's order of precedence, which a request takes
/// the first of: an exact path first, then a regex path (longest first: the Gateway
/// API leaves regexes to the implementation), then the longest prefix; then a method
/// before none, more headers, more query parameters; then the oldest route, the first
/// by `namespace/name`, and the first rule and match within a route.
pub fn attached<'a>(
    routes: impl IntoIterator<Item = &'a HttpRoute>,
    service: &str,
    port: u16,
) -> Vec<AttachedMatch<'a>> {
    let mut matches: Vec<AttachedMatch> = routes
        .into_iter()
        .filter(|r| {
            r.parents
                .iter()
                .any(|p| p.name == service && p.port.is_none_or(|p| p == port))
        })
        .flat_map(|route| {
            route.rules.iter().enumerate().flat_map(move |(rule, r)| {
                r.matches.iter().map(move |matched| AttachedMatch {
                    route,
                    rule,
                    matched,
                })
            })
        })
        .collect();
    // A stable sort: rules and matches keep their order within a route.
    matches.sort_by_cached_key(|m| {
        let (kind, len) = match &m.matched.path {
            PathMatch::Exact(p) => (0, p.len()),
            PathMatch::Regex(p) => (1, p.len()),
            PathMatch::Prefix(p) => (2, p.trim_end_matches('/').len()),
        };
        (
            kind,
            Reverse(len),
            m.matched.method.is_none(),
            Reverse(m.matched.headers.len()),
            Reverse(m.matched.query_params.len()),
            // Routes without a timestamp (manifests) after those with one.
            m.route.created.is_none(),
            m.route.created.clone(),
            (m.route.namespace.clone(), m.route.name.clone()),
        )
    });
    matches
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-canary, namespace: emojivoto}
spec:
  parentRefs:
  - {group: "", kind: Service, name: web-svc, port: 80}
  - {name: public-gateway}
  hostnames: [web-svc.emojivoto.svc.cluster.local]
  rules:
  - matches:
    - headers: [{name: X-Canary, value: "1"}]
      queryParams: [{type: RegularExpression, name: v, value: "2|3"}]
    backendRefs: [{name: web-svc-canary, port: 80}]
  - matches: [{path: {type: Exact, value: /api/list}, method: GET}]
    backendRefs:
    - {name: web-svc, port: 80, weight: 90}
    - {name: web-svc-canary, port: 80, weight: 10}
    timeouts: {request: 1m30s}
  - timeouts: {request: 0s}
"#;

    fn read(text: &str) -> Result<HttpRoute, String> {
        let doc = crate::manifest::parse(text, "r.yaml").unwrap().remove(0);
        http_route(&doc).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_parents_matches_backends_and_timeouts() {
        let r = read(ROUTE).unwrap();
        // The Gateway parent is not the mesh's; the hostnames are ignored.
        assert_eq!(
            r.parents,
            [ParentService {
                name: "web-svc".into(),
                port: Some(80)
            }]
        );
        assert_eq!(
            r.rules[0].matches,
            [RequestMatch {
                path: PathMatch::Prefix("/".into()),
                method: None,
                headers: vec![ValueMatch {
                    name: "x-canary".into(),
                    value: StringMatch::Exact("1".into())
                }],
                query_params: vec![ValueMatch {
                    name: "v".into(),
                    value: StringMatch::Regex("2|3".into())
                }],
            }]
        );
        assert_eq!(r.rules[0].backends[0].weight, 1, "the default weight");
        assert_eq!(r.rules[1].backends[0].weight, 90);
        assert_eq!(r.rules[1].timeout_ms, Some(90_000));
        // No matches: every path; a 0s timeout: explicitly none.
        assert_eq!(r.rules[2].matches[0].path, PathMatch::Prefix("/".into()));
        assert_eq!(
            (r.rules[2].timeout_ms, r.rules[2].backends.len()),
            (Some(0), 0)
        );
    }

    #[test]
    fn names_each_mistake() {
        for (from, to, says) in [
            ("group: \"\", kind: Service", "kind: Service", "spec.parentRefs[0].group: \"gateway.networking.k8s.io\": a Service is in the core group"),
            ("name: web-svc, port: 80}", "name: web-svc, port: 0}", "spec.parentRefs[0].port: 0 is not a port"),
            ("name: web-svc, port: 80, weight: 90", "name: web-svc, port: 80, weight: -1", "spec.rules[1].backendRefs[0].weight: -1 is not a weight"),
            ("name: web-svc-canary, port: 80}]", "name: web-svc-canary}]", "spec.rules[0].backendRefs[0].port: missing"),
            ("name: web-svc-canary, port: 80}]", "name: web-svc-canary, port: 80, namespace: other}]", "spec.rules[0].backendRefs[0].namespace: a Service of another namespace"),
            ("value: \"2|3\"", "value: \"(2\"", "spec.rules[0].matches[0].queryParams[0].value: not a regex"),
            ("type: Exact, value: /api/list", "type: Exact, value: api/list", "spec.rules[1].matches[0].path.value: \"api/list\" does not start with /"),
            ("type: Exact, value: /api/list", "type: Glob, value: /api/*", "spec.rules[1].matches[0].path.type: \"Glob\""),
            ("method: GET", "method: get", "spec.rules[1].matches[0].method: \"get\": one of GET"),
            ("name: X-Canary", "name: \"X Canary\"", "spec.rules[0].matches[0].headers[0].name: \"X Canary\" is not a header name"),
            ("request: 1m30s", "request: 90 seconds", "spec.rules[1].timeouts.request: \"90 seconds\" is not a Gateway API duration"),
            ("request: 1m30s", "backendRequest: 1s", "spec.rules[1].timeouts.backendRequest: not supported"),
            ("timeouts: {request: 0s}", "filters: [{type: RequestHeaderModifier}]", "spec.rules[2].filters: not supported"),
            ("hostnames:", "hostname:", "unknown field `hostname`"),
            ("name: web-svc-canary, port: 80}]", "name: Web_Canary, port: 80}]", "spec.rules[0].backendRefs[0].name: \"Web_Canary\" is not a Service name"),
        ] {
            assert!(ROUTE.contains(from), "{from}");
            let err = read(&ROUTE.replacen(from, to, 1)).unwrap_err();
            assert!(err.contains(says), "{to}: {err}");
            assert!(err.contains("HTTPRoute web-canary"), "{err}");
        }
    }

    #[test]
    fn durations_follow_gep_2257() {
        assert_eq!(gateway_duration("500ms"), Some(500));
        assert_eq!(gateway_duration("1h2m3s4ms"), Some(3_723_004));
        assert_eq!(gateway_duration("0s"), Some(0));
        for bad in ["", "1", "1.5s", "100000s", "1h1m1s1ms1h", "-1s", "1d", "s"] {
            assert_eq!(gateway_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn matches_are_ordered_by_the_gateway_apis_precedence() {
        let route = |name: &str, created: Option<&str>, matches: Vec<RequestMatch>| HttpRoute {
            namespace: "ns".into(),
            name: name.into(),
            created: created.map(str::to_string),
            parents: vec![ParentService {
                name: "web".into(),
                port: None,
            }],
            rules: vec![Rule {
                matches,
                backends: Vec::new(),
                timeout_ms: None,
            }],
        };
        let m = |path: PathMatch, method: Option<&str>, headers: usize| RequestMatch {
            path,
            method: method.map(str::to_string),
            headers: (0..headers)
                .map(|i| ValueMatch {
                    name: format!("h{i}"),
                    value: StringMatch::Exact("x".into()),
                })
                .collect(),
            query_params: Vec::new(),
        };
        let prefix = |p: &str| PathMatch::Prefix(p.into());
        let routes = [
            route(
                "b-newer",
                Some("2026-02-01T00:00:00Z"),
                vec![m(prefix("/"), None, 0)],
            ),
            route(
                "a",
                None,
                vec![
                    m(prefix("/api"), None, 0),
                    m(prefix("/api/"), Some("GET"), 0),
                    m(prefix("/"), None, 2),
                    m(PathMatch::Regex("/api/.*".into()), None, 0),
                    m(PathMatch::Exact("/".into()), None, 0),
                ],
            ),
            route(
                "c-older",
                Some("2026-01-01T00:00:00Z"),
                vec![m(prefix("/"), None, 0)],
            ),
            HttpRoute {
                parents: vec![ParentService {
                    name: "web".into(),
                    port: Some(8080),
                }],
                ..route(
                    "other-port",
                    None,
                    vec![m(PathMatch::Exact("/x".into()), None, 0)],
                )
            },
        ];
        let order: Vec<String> = attached(&routes, "web", 80)
            .iter()
            .map(|a| format!("{}:{:?}", a.route.name, a.matched.path))
            .collect();
        assert_eq!(
            order,
            [
                "a:Exact(\"/\")",
                "a:Regex(\"/api/.*\")",
                // Equal prefixes (a trailing slash does not count): the method first.
                "a:Prefix(\"/api/\")",
                "a:Prefix(\"/api\")",
                "a:Prefix(\"/\")",
                "c-older:Prefix(\"/\")",
                "b-newer:Prefix(\"/\")",
            ]
        );
        assert!(attached(&routes, "other", 80).is_empty());
        assert_eq!(attached(&routes, "web", 8080).len(), 8);
    }
}
