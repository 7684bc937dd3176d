//! ServiceProfiles (`conduit.io/v1alpha1`): the per-route settings of a Service, read from
//! manifests (or the API) with every mistake named. A profile is named after the Service's
//! fully qualified name and lists routes, each matched by method and a path regex, with a
//! timeout and whether a failed request may be retried, and the Service's retry budget.
//!
//! ```yaml
//! apiVersion: conduit.io/v1alpha1
//! kind: ServiceProfile
//! metadata: {name: web-svc.emojivoto.svc.cluster.local, namespace: emojivoto}
//! spec:
//!   routes:
//!   - name: GET /api/list
//!     condition: {method: GET, pathRegex: /api/list}
//!     isRetryable: true
//!     retryGrpcCodes: [UNAVAILABLE]   # the default
//!     timeout: 300ms
//!   retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
//! ```

use crate::manifest::{Document, ManifestError};
use conduit_api::profile::{grpc_code, is_route_name, DEFAULT_ROUTE, MAX_ROUTES, MAX_ROUTE_NAME};
use serde::{Deserialize, Serialize};

/// The ServiceProfile kind's `apiVersion`.
pub const API_VERSION: &str = "conduit.io/v1alpha1";

/// A Service's profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceProfile {
    pub namespace: String,
    /// The Service's fully qualified name, `<service>.<namespace>.svc.cluster.local`.
    pub name: String,
    /// In order: a request takes the first route that matches it.
    pub routes: Vec<Route>,
    pub retry_budget: Option<RetryBudget>,
}

/// One route of a profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
    /// The method a request must have, if any.
    pub method: Option<String>,
    /// A regex the whole path must match (anchored).
    pub path_regex: String,
    /// How long a request may take, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Whether a failed request may be sent again.
    pub retryable: bool,
    /// The gRPC statuses a retryable route is retried on (empty: UNAVAILABLE).
    #[serde(default)]
    pub retry_grpc_codes: Vec<u32>,
}

/// How many retries a Service's clients may add.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryBudget {
    /// Retries per original request, in thousandths (0.2 is 200).
    pub retry_ratio_permille: u32,
    pub min_retries_per_second: u32,
    /// Over how long requests are counted, in milliseconds.
    pub ttl_ms: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SpecDoc {
    #[serde(default)]
    routes: Vec<RouteDoc>,
    #[serde(default)]
    retry_budget: Option<BudgetDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RouteDoc {
    name: String,
    condition: ConditionDoc,
    #[serde(default)]
    is_retryable: bool,
    #[serde(default)]
    retry_grpc_codes: Vec<String>,
    #[serde(default)]
    timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ConditionDoc {
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    path_regex: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BudgetDoc {
    retry_ratio: f64,
    min_retries_per_second: u32,
    ttl: String,
}

/// Reads a ServiceProfile.
pub fn service_profile(doc: &Document) -> Result<ServiceProfile, ManifestError> {
    let name = doc
        .name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| doc.field_error("metadata.name", "missing"))?
        .to_string();
    let namespace = doc.namespace().unwrap_or("default").to_string();
    let service_suffix = format!(".{namespace}.svc.cluster.local");
    if !name.ends_with(&service_suffix) || name.len() == service_suffix.len() {
        return Err(doc.field_error(
            "metadata.name",
            format!("{name:?} is not a Service of namespace {namespace}: name the profile <service>{service_suffix}"),
        ));
    }
    let spec: SpecDoc = doc.spec()?;
    let duration = |field: &str, text: &str| {
        humantime::parse_duration(text)
            .ok()
            .filter(|d| !d.is_zero())
            .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
            .ok_or_else(|| {
                doc.field_error(
                    field,
                    format!("{text:?} is not a duration like 300ms or 10s"),
                )
            })
    };
    if spec.routes.len() > MAX_ROUTES {
        return Err(doc.field_error(
            "spec.routes",
            format!(
                "{} routes, more than the {MAX_ROUTES} a profile may have",
                spec.routes.len()
            ),
        ));
    }
    let mut routes: Vec<Route> = Vec::new();
    for (i, r) in spec.routes.into_iter().enumerate() {
        let field = format!("spec.routes[{i}]");
        if !is_route_name(&r.name) {
            return Err(doc.field_error(
                &format!("{field}.name"),
                format!("{:?} is not a route name: 1 to {MAX_ROUTE_NAME} printable characters, not {DEFAULT_ROUTE:?}", r.name),
            ));
        }
        if routes.iter().any(|earlier| earlier.name == r.name) {
            return Err(doc.field_error(
                &format!("{field}.name"),
                format!("{:?} names an earlier route too: route names label metrics, so each must be unique", r.name),
            ));
        }
        let path_regex = r.condition.path_regex.unwrap_or_else(|| ".*".into());
        if let Err(e) = regex::Regex::new(&format!("^(?:{path_regex})$")) {
            return Err(doc.field_error(
                &format!("{field}.condition.pathRegex"),
                format!("not a regex: {e}"),
            ));
        }
        let method = r.condition.method.map(|m| m.to_ascii_uppercase());
        if method.as_ref().is_some_and(|m| http_method_invalid(m)) {
            return Err(doc.field_error(&format!("{field}.condition.method"), "not an HTTP method"));
        }
        let timeout_ms = match &r.timeout {
            None => None,
            Some(t) => Some(duration(&format!("{field}.timeout"), t)?),
        };
        let mut retry_grpc_codes = Vec::new();
        for (j, code) in r.retry_grpc_codes.iter().enumerate() {
            let Some(c) = grpc_code(code) else {
                return Err(doc.field_error(
                    &format!("{field}.retryGrpcCodes[{j}]"),
                    format!("{code:?} is not a gRPC status: a name like UNAVAILABLE or RESOURCE_EXHAUSTED, or a code from 1 to 16"),
                ));
            };
            if !retry_grpc_codes.contains(&c) {
                retry_grpc_codes.push(c);
            }
        }
        routes.push(Route {
            name: r.name,
            method,
            path_regex,
            timeout_ms,
            retryable: r.is_retryable,
            retry_grpc_codes,
        });
    }
    let retry_budget = match spec.retry_budget {
        None => None,
        Some(b) => {
            if !(0.0..=10.0).contains(&b.retry_ratio) {
                return Err(doc.field_error(
                    "spec.retryBudget.retryRatio",
                    format!("{} is not a ratio between 0 and 10", b.retry_ratio),
                ));
            }
            Some(RetryBudget {
                retry_ratio_permille: (b.retry_ratio * 1000.0).round() as u32,
                min_retries_per_second: b.min_retries_per_second,
                ttl_ms: duration("spec.retryBudget.ttl", &b.ttl)?,
            })
        }
    };
    Ok(ServiceProfile {
        namespace,
        name,
        routes,
        retry_budget,
    })
}

fn http_method_invalid(m: &str) -> bool {
    m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = r#"
apiVersion: conduit.io/v1alpha1
kind: ServiceProfile
metadata: {name: web-svc.emojivoto.svc.cluster.local, namespace: emojivoto}
spec:
  routes:
  - name: GET /api/list
    condition: {method: get, pathRegex: /api/list}
    isRetryable: true
    retryGrpcCodes: [unavailable, RESOURCE_EXHAUSTED, "13"]
    timeout: 300ms
  - name: vote
    condition: {pathRegex: "/api/vote.*"}
  retryBudget: {retryRatio: 0.2, minRetriesPerSecond: 10, ttl: 10s}
"#;

    fn read(text: &str) -> Result<ServiceProfile, String> {
        let doc = crate::manifest::parse(text, "p.yaml").unwrap().remove(0);
        service_profile(&doc).map_err(|e| e.to_string())
    }

    #[test]
    fn reads_routes_and_the_budget() {
        let p = read(PROFILE).unwrap();
        assert_eq!(p.name, "web-svc.emojivoto.svc.cluster.local");
        assert_eq!(
            p.routes[0],
            Route {
                name: "GET /api/list".into(),
                method: Some("GET".into()),
                path_regex: "/api/list".into(),
                timeout_ms: Some(300),
                retryable: true,
                retry_grpc_codes: vec![14, 8, 13],
            }
        );
        assert_eq!(
            (
                p.routes[1].method.clone(),
                p.routes[1].timeout_ms,
                p.routes[1].retryable
            ),
            (None, None, false)
        );
        assert_eq!(
            p.retry_budget,
            Some(RetryBudget {
                retry_ratio_permille: 200,
                min_retries_per_second: 10,
                ttl_ms: 10_000
            })
        );
    }

    #[test]
    fn names_each_mistake() {
        for (from, to, says) in [
            (
                "web-svc.emojivoto.svc.cluster.local",
                "web-svc",
                "metadata.name: \"web-svc\" is not a Service of namespace emojivoto",
            ),
            (
                "pathRegex: /api/list",
                "pathRegex: \"/api/(list\"",
                "spec.routes[0].condition.pathRegex: not a regex",
            ),
            (
                "timeout: 300ms",
                "timeout: soon",
                "spec.routes[0].timeout: \"soon\" is not a duration",
            ),
            (
                "RESOURCE_EXHAUSTED",
                "RESOURCE_TIRED",
                "spec.routes[0].retryGrpcCodes[1]: \"RESOURCE_TIRED\" is not a gRPC status",
            ),
            (
                "method: get",
                "method: \"G T\"",
                "spec.routes[0].condition.method: not an HTTP method",
            ),
            (
                "retryRatio: 0.2",
                "retryRatio: -1",
                "spec.retryBudget.retryRatio: -1 is not a ratio",
            ),
            (
                "isRetryable: true",
                "retryable: true",
                "unknown field `retryable`",
            ),
            (
                "name: vote",
                "name: GET /api/list",
                "spec.routes[1].name: \"GET /api/list\" names an earlier route too",
            ),
            (
                "name: vote",
                "name: \"[default]\"",
                "spec.routes[1].name: \"[default]\" is not a route name",
            ),
        ] {
            let err = read(&PROFILE.replace(from, to)).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
    }
}
