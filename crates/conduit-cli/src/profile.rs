//! `conduit profile`: ServiceProfiles ready to apply, written for the user: a commented
//! template (`--template`), the routes of an OpenAPI 3 document (`--open-api`: each path
//! and method a route, `{param}` segments matching one path segment; `x-conduit-retryable`
//! and `x-conduit-timeout` on an operation carry over), or the methods of a `.proto`'s
//! gRPC services (`--proto`: `POST /package.Service/Method`). What it prints is read
//! back by the same reader `conduit local up` and the controller use, so it never prints
//! a profile they would refuse.

use anyhow::{bail, Context};
use clap::Args;
use conduit_api::names::is_dns_label;
use conduit_k8s::{manifest, profile};
use serde_json::Value;
use std::{fmt::Write as _, io::Write as _, path::PathBuf};

#[derive(Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["template", "open_api", "proto"]))]
pub struct ProfileArgs {
    /// The Service the profile is for.
    service: String,
    /// Its namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// A template to fill in.
    #[arg(long)]
    template: bool,
    /// Routes from an OpenAPI 3 document (JSON or YAML).
    #[arg(long = "open-api", value_name = "FILE")]
    open_api: Option<PathBuf>,
    /// Routes from the gRPC services of a .proto file (its imports are looked up beside it).
    #[arg(long, value_name = "FILE")]
    proto: Option<PathBuf>,
}

/// One route to print.
#[derive(Debug, PartialEq)]
struct RouteSpec {
    name: String,
    method: String,
    path_regex: String,
    retryable: bool,
    timeout: Option<String>,
}

pub fn run(args: ProfileArgs) -> anyhow::Result<()> {
    for (what, name) in [("service", &args.service), ("namespace", &args.namespace)] {
        if !is_dns_label(name) {
            bail!("{what} {name:?} is not a Kubernetes name (lowercase letters, digits and '-', at most 63)");
        }
    }
    let text = if args.template {
        template(&args.service, &args.namespace)
    } else {
        let routes = match (&args.open_api, &args.proto) {
            (Some(file), _) => {
                let text = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                open_api_routes(&text).with_context(|| format!("{}", file.display()))?
            }
            (None, Some(file)) => proto_routes(file)?,
            (None, None) => unreachable!("clap requires a source"),
        };
        render(&args.service, &args.namespace, &routes)
    };
    // What is printed must be what the readers accept.
    let docs = manifest::parse(&text, "the generated profile")?;
    for doc in &docs {
        profile::service_profile(doc)?;
    }
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

fn metadata(service: &str, namespace: &str) -> String {
    format!(
        "apiVersion: {}\nkind: ServiceProfile\nmetadata:\n  name: {service}.{namespace}.svc.cluster.local\n  namespace: {namespace}\n",
        profile::API_VERSION
    )
}

fn template(service: &str, namespace: &str) -> String {
    format!(
        r#"{}spec:
  # A request takes the first route whose method and path regex (the whole path, not the
  # query) match it; other requests take [default]. Each route names the requests in the
  # metrics (`route` label, `conduit routes`).
  routes:
  - name: GET /books/{{id}}
    condition:
      method: GET
      pathRegex: /books/[^/]+
    # Failed requests (5xx, a failed exchange) are sent again: only for requests that
    # are safe to repeat.
    isRetryable: true
    # The whole request, every attempt and the response body: 504 after it.
    timeout: 300ms
  - name: POST /books
    condition:
      method: POST
      pathRegex: /books
    timeout: 1s
  # Retries may add this much to the Service's load (the default).
  retryBudget:
    retryRatio: 0.2
    minRetriesPerSecond: 10
    ttl: 10s
"#,
        metadata(service, namespace)
    )
}

/// YAML's double-quoted form of `s` (JSON's, which YAML reads alike).
fn quoted(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

fn render(service: &str, namespace: &str, routes: &[RouteSpec]) -> String {
    let mut out = metadata(service, namespace);
    out.push_str("spec:\n  routes:\n");
    if routes.is_empty() {
        out.truncate(out.len() - "  routes:\n".len());
        out.push_str("  routes: []\n");
    }
    for r in routes {
        let _ = writeln!(out, "  - name: {}", quoted(&r.name));
        let _ = writeln!(out, "    condition:");
        let _ = writeln!(out, "      method: {}", r.method);
        let _ = writeln!(out, "      pathRegex: {}", quoted(&r.path_regex));
        if r.retryable {
            let _ = writeln!(out, "    isRetryable: true");
        }
        if let Some(t) = &r.timeout {
            let _ = writeln!(out, "    timeout: {}", quoted(t));
        }
    }
    out
}

/// A path template's regex: literal text escaped, each `{param}` one path segment.
fn path_regex(template: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&regex_escape(&rest[..open]));
        let Some(close) = rest[open..].find('}') else {
            bail!("path {template:?}: a '{{' without its '}}'");
        };
        out.push_str("[^/]+");
        rest = &rest[open + close + 1..];
    }
    out.push_str(&regex_escape(rest));
    Ok(out)
}

fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The routes of an OpenAPI 3 document: every path and method, concrete paths before
/// templated ones that could match the same requests (`/books/new` before
/// `/books/{id}`), as OpenAPI says they match.
fn open_api_routes(text: &str) -> anyhow::Result<Vec<RouteSpec>> {
    let doc: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => serde_saphyr::from_str(text)
            .map_err(|e| anyhow::anyhow!("neither JSON nor YAML: {e}"))?,
    };
    let version = doc.get("openapi").and_then(Value::as_str).unwrap_or("");
    if !version.starts_with('3') {
        bail!("not an OpenAPI 3 document (its `openapi` field says {version:?}; Swagger 2 is not read)");
    }
    let Some(paths) = doc.get("paths").and_then(Value::as_object) else {
        bail!("no `paths` object");
    };
    // Segment by segment, literal before templated.
    let order = |path: &str| -> Vec<(bool, String)> {
        path.split('/')
            .map(|seg| (seg.contains('{'), seg.to_string()))
            .collect()
    };
    let mut paths: Vec<(&String, &Value)> = paths.iter().collect();
    paths.sort_by_key(|(path, _)| order(path));
    let mut routes = Vec::new();
    for (path, item) in paths {
        if !path.starts_with('/') {
            bail!("paths.{path:?}: a path starts with '/'");
        }
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let method = method.to_ascii_uppercase();
            let timeout = match op.get("x-conduit-timeout") {
                None => None,
                Some(Value::String(t)) => Some(t.clone()),
                Some(other) => bail!(
                    "paths.{path:?}.{}: x-conduit-timeout {other} is not a duration like \"300ms\"",
                    method.to_ascii_lowercase()
                ),
            };
            routes.push(RouteSpec {
                name: format!("{method} {path}"),
                path_regex: path_regex(path)?,
                method,
                retryable: op.get("x-conduit-retryable").and_then(Value::as_bool) == Some(true),
                timeout,
            });
        }
    }
    Ok(routes)
}

/// The routes of a `.proto`'s gRPC services: one per method, as gRPC calls it.
fn proto_routes(file: &std::path::Path) -> anyhow::Result<Vec<RouteSpec>> {
    let dir = file.parent().filter(|d| !d.as_os_str().is_empty());
    let dir = dir.unwrap_or(std::path::Path::new("."));
    let name = file
        .file_name()
        .with_context(|| format!("{}: not a file", file.display()))?;
    let set =
        protox::compile([name], [dir]).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let wanted = name.to_string_lossy();
    let mut routes = Vec::new();
    for f in set.file.iter().filter(|f| f.name() == wanted) {
        let package = f.package();
        for service in &f.service {
            let full = if package.is_empty() {
                service.name().to_string()
            } else {
                format!("{package}.{}", service.name())
            };
            for method in &service.method {
                let path = format!("/{full}/{}", method.name());
                routes.push(RouteSpec {
                    name: format!("POST {path}"),
                    method: "POST".into(),
                    path_regex: regex_escape(&path),
                    retryable: false,
                    timeout: None,
                });
            }
        }
    }
    if routes.is_empty() {
        bail!("{}: no gRPC service with methods", file.display());
    }
    Ok(routes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(text: &str) -> profile::ServiceProfile {
        let doc = manifest::parse(text, "t").unwrap().remove(0);
        profile::service_profile(&doc).unwrap()
    }

    #[test]
    fn the_template_is_a_profile_the_readers_accept() {
        let p = read_back(&template("web-svc", "emojivoto"));
        assert_eq!(p.name, "web-svc.emojivoto.svc.cluster.local");
        assert_eq!(p.routes.len(), 2);
        assert!(p.routes[0].retryable);
    }

    #[test]
    fn open_api_paths_become_routes_with_their_parameters_as_segments() {
        let doc = r#"
openapi: 3.0.3
info: {title: books, version: "1"}
paths:
  /books/{id}:
    get:
      x-conduit-retryable: true
      x-conduit-timeout: 300ms
    delete: {}
  /books.json:
    post: {}
  /books/new:
    get: {}
"#;
        let routes = open_api_routes(doc).unwrap();
        let names: Vec<&str> = routes.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "GET /books/new",
                "GET /books/{id}",
                "DELETE /books/{id}",
                "POST /books.json"
            ]
        );
        assert_eq!(routes[1].path_regex, "/books/[^/]+");
        assert_eq!(routes[3].path_regex, r"/books\.json");
        assert_eq!(
            (routes[1].retryable, routes[1].timeout.as_deref()),
            (true, Some("300ms"))
        );
        let p = read_back(&render("books", "shop", &routes));
        assert_eq!(p.routes[1].timeout_ms, Some(300));
        let set = regex::Regex::new(&format!("^(?:{})$", p.routes[1].path_regex)).unwrap();
        assert!(set.is_match("/books/17") && !set.is_match("/books/17/pages"));
        // Not OpenAPI 3: said so.
        let err = open_api_routes("swagger: \"2.0\"\npaths: {}\n").unwrap_err();
        assert!(
            err.to_string().contains("not an OpenAPI 3 document"),
            "{err}"
        );
    }

    #[test]
    fn grpc_methods_become_post_routes() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/emojivoto/proto");
        let routes = proto_routes(&dir.join("voting.proto")).unwrap();
        assert!(!routes.is_empty());
        for r in &routes {
            assert_eq!(r.method, "POST");
            assert!(
                r.name.starts_with("POST /") && r.name.contains('.'),
                "{r:?}"
            );
        }
        let p = read_back(&render("voting-svc", "emojivoto", &routes));
        assert_eq!(p.routes.len(), routes.len());
    }
}
