//! Sidecar injection and its reverse, on manifest text. [`inject`] adds Conduit's init
//! container (the iptables redirect) and proxy container to the pod template of every
//! workload in a manifest; [`uninject`] takes out exactly what `inject` added. Documents
//! that are not workloads, and workloads that are skipped, pass through byte for byte;
//! changed documents are written anew from their values (their comments are lost).
//! Knows nothing about clusters, admission webhooks or how pods are run.
//!
//! One difference survives a round trip: an empty (or null) `metadata`, `annotations`,
//! `labels`, `initContainers` or `volumes` written in a pod template comes back absent
//! from `uninject(inject(x))`, which Kubernetes reads the same way.

use crate::manifest::{self, Document, ManifestError};
use conduit_api::{
    admin, control_plane,
    flags::proxy as cli,
    names::{
        CONFIG_PREFIX, CONTROL_PLANE_NS_LABEL, DEPLOYMENT_LABEL, IDENTITY_AUDIENCE, INIT_CONTAINER,
        INJECT_ANNOTATION, INJECT_DISABLED, PROXY_ADMIN_PORT_NAME, PROXY_CONTAINER,
        TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY, VERSION_ANNOTATION,
    },
    ports, proxy_env, uid,
};
use serde_json::{json, Map, Value};
use std::fmt;

/// The version of the proxy that `inject` adds: this crate's.
pub const PROXY_VERSION: &str = env!("CARGO_PKG_VERSION");
/// An `emptyDir` mounted at the init container's `/run`, where iptables keeps its lock
/// file: the init container's root filesystem is read-only.
pub const INIT_LOCK_VOLUME: &str = "conduit-init-xtables-lock";
/// The volume with the proxy's identity token: a projected ServiceAccount token for the
/// mesh's audience, which only the identity service accepts.
pub const IDENTITY_TOKEN_VOLUME: &str = "conduit-identity-token";
/// Where the proxy finds its identity token.
pub const IDENTITY_TOKEN_DIR: &str = "/var/run/secrets/conduit.io/identity";

const HOST_NETWORK: &str = "a pod on the host network cannot be meshed: its traffic is the node's";

/// The kinds whose pods get a proxy, and the path to their pod template (empty: the
/// object is the pod).
const WORKLOADS: &[(&str, &str, &[&str])] = &[
    ("apps/v1", "Deployment", &["spec", "template"]),
    ("apps/v1", "StatefulSet", &["spec", "template"]),
    ("apps/v1", "DaemonSet", &["spec", "template"]),
    ("apps/v1", "ReplicaSet", &["spec", "template"]),
    ("batch/v1", "Job", &["spec", "template"]),
    (
        "batch/v1",
        "CronJob",
        &["spec", "jobTemplate", "spec", "template"],
    ),
    ("v1", "Pod", &[]),
];

/// What `inject` puts into a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InjectOptions {
    /// The image of both injected containers (it holds `conduit-proxy` and its `init`).
    pub proxy_image: String,
    /// The control plane's destination service, `host:port`.
    pub destination_addr: String,
    /// The control plane's identity service, `host:port`.
    pub identity_addr: String,
    /// The controller's identity: what proxies require the control plane to prove, and
    /// the only client their tap servers let in.
    pub controller_id: String,
    /// The UID the proxy runs as; the redirect leaves this UID's traffic alone.
    pub proxy_uid: u32,
    /// Inbound ports not redirected to the proxy, as given: `22`, `9000-9010`.
    pub skip_inbound_ports: Vec<String>,
    /// Outbound ports not redirected to the proxy, as given: `25`, `3306-3310`.
    pub skip_outbound_ports: Vec<String>,
    /// The proxy's log filter (`CONDUIT_PROXY_LOG`).
    pub log: String,
    /// The proxy as a native sidecar (an init container that keeps running, Kubernetes
    /// 1.29+): it is ready before the application's own init containers and containers
    /// start, and it does not keep a Job from completing. Otherwise it is the first
    /// regular container, with a postStart hook that holds the others until it is ready.
    pub native_sidecar: bool,
}

impl Default for InjectOptions {
    fn default() -> Self {
        InjectOptions::for_control_plane(control_plane::NAMESPACE)
    }
}

impl InjectOptions {
    /// The defaults, for proxies of the control plane installed in `namespace`.
    pub fn for_control_plane(namespace: &str) -> Self {
        InjectOptions {
            proxy_image: format!("ghcr.io/conduit-mesh/proxy:{PROXY_VERSION}"),
            destination_addr: control_plane::destination_addr(namespace),
            identity_addr: control_plane::identity_addr(namespace),
            controller_id: conduit_identity::controller_identity(namespace),
            proxy_uid: uid::PROXY,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
            log: "info".into(),
            native_sidecar: true,
        }
    }
}

/// A manifest after `inject` or `uninject`, with what happened to each object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transformed {
    /// The manifest to apply.
    pub output: String,
    /// One line per object (the items of a `List` each have theirs), in order.
    pub report: Vec<Outcome>,
}

/// What happened to one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The object's kind as written (`Deployment`); empty if it has none.
    pub kind: String,
    /// The object's name; empty if it has none.
    pub name: String,
    /// What was done.
    pub action: Action,
}

/// What `inject` or `uninject` did to an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// The proxy was added.
    Injected,
    /// The proxy was there already and was replaced by the current one.
    Reinjected,
    /// Left unchanged, for this reason.
    Skipped(String),
    /// The proxy was taken out.
    Uninjected,
    /// `uninject` found nothing of Conduit's to take out.
    NotInjected,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind.as_str() {
            "" => "object".to_string(),
            kind => kind.to_lowercase(),
        };
        match self.name.as_str() {
            "" => write!(f, "{kind} ")?,
            name => write!(f, "{kind} {name:?} ")?,
        }
        match &self.action {
            Action::Injected => f.write_str("injected"),
            Action::Reinjected => f.write_str("re-injected (it was already injected)"),
            Action::Skipped(reason) => write!(f, "skipped: {reason}"),
            Action::Uninjected => f.write_str("uninjected"),
            Action::NotInjected => f.write_str("not injected, left as is"),
        }
    }
}

/// Adds the proxy to every workload in `text` (read from `source`, for messages).
pub fn inject(
    text: &str,
    source: &str,
    opts: &InjectOptions,
) -> Result<Transformed, ManifestError> {
    transform(text, source, Mode::Inject(opts))
}

/// Takes the proxy out of every workload in `text` (read from `source`, for messages).
pub fn uninject(text: &str, source: &str) -> Result<Transformed, ManifestError> {
    transform(text, source, Mode::Uninject)
}

/// Whether a pod spec carries the Conduit proxy container.
pub fn is_injected(pod_spec: &Value) -> bool {
    ["initContainers", "containers"].iter().any(|list| {
        pod_spec
            .get(list)
            .and_then(Value::as_array)
            .is_some_and(|cs| cs.iter().any(|c| has_name(c, PROXY_CONTAINER)))
    })
}

#[derive(Clone, Copy)]
enum Mode<'a> {
    Inject(&'a InjectOptions),
    Uninject,
}

fn transform(text: &str, source: &str, mode: Mode<'_>) -> Result<Transformed, ManifestError> {
    let docs = manifest::parse(text, source)?;
    let mut texts = Vec::with_capacity(docs.len());
    let mut report = Vec::new();
    for doc in &docs {
        texts.push(match transform_document(doc, mode, &mut report)? {
            Some(changed) => manifest::to_yaml(&changed),
            None => doc.text.clone(),
        });
    }
    Ok(Transformed {
        output: manifest::join(texts.iter().map(String::as_str)),
        report,
    })
}

/// The document's new value, or `None` to keep its text.
fn transform_document(
    doc: &Document,
    mode: Mode<'_>,
    report: &mut Vec<Outcome>,
) -> Result<Option<Value>, ManifestError> {
    if doc.is_empty() {
        return Ok(None);
    }
    if !(doc.api_version() == Some("v1") && doc.kind() == Some("List")) {
        let (changed, outcome) = transform_object(doc, &doc.value, "", mode)?;
        report.push(outcome);
        return Ok(changed);
    }
    let items = match doc.value.get("items") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(doc.field_error("items", "expected a list of objects")),
    };
    let mut list = doc.value.clone();
    let mut changed_any = false;
    for (i, item) in items.iter().enumerate() {
        let at = format!("items[{i}]");
        if !item.is_object() {
            return Err(doc.field_error(&at, "expected a Kubernetes object"));
        }
        let (changed, outcome) = transform_object(doc, item, &at, mode)?;
        report.push(outcome);
        if let Some(changed) = changed {
            list["items"][i] = changed;
            changed_any = true;
        }
    }
    Ok(changed_any.then_some(list))
}

/// One object (a document, or an item of a `List` at field `at`): its new value if it
/// changed, and what happened.
fn transform_object(
    doc: &Document,
    object: &Value,
    at: &str,
    mode: Mode<'_>,
) -> Result<(Option<Value>, Outcome), ManifestError> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or_default().to_string();
    let kind = text(object.get("kind"));
    let name = text(object.get("metadata").and_then(|m| m.get("name")));
    let api_version = text(object.get("apiVersion"));
    let outcome = |action| Outcome {
        kind: kind.clone(),
        name: name.clone(),
        action,
    };
    let Some(template_path) = template_path(&api_version, &kind) else {
        return Ok((
            None,
            outcome(Action::Skipped(not_a_workload(&api_version, &kind))),
        ));
    };
    let deployment = if kind == "Deployment" {
        if name.is_empty() {
            let field = field(at, "metadata.name");
            return Err(doc.field_error(&field, "missing: the proxy reports the Deployment's name"));
        }
        Some(name.as_str())
    } else {
        None
    };
    let workload_disabled = object.as_object().is_some_and(opted_out);

    let original = object;
    let mut object = object.clone();
    let template = pod_template(doc, &mut object, at, &kind, template_path)?;
    match mode {
        Mode::Inject(opts) => {
            if workload_disabled || opted_out(template) {
                let reason = format!("annotation {INJECT_ANNOTATION}: {INJECT_DISABLED}");
                return Ok((None, outcome(Action::Skipped(reason))));
            }
            let spec = template.get("spec").unwrap_or(&Value::Null);
            if spec.get("hostNetwork") == Some(&Value::Bool(true)) {
                return Ok((None, outcome(Action::Skipped(HOST_NETWORK.into()))));
            }
            let action = if is_injected(spec) {
                Action::Reinjected
            } else {
                Action::Injected
            };
            let overrides = Overrides::read(doc, at, template_path, original)?;
            remove_proxy(template);
            add_proxy(template, deployment, opts, &overrides);
            Ok((Some(object), outcome(action)))
        }
        Mode::Uninject => {
            if remove_proxy(template) {
                Ok((Some(object), outcome(Action::Uninjected)))
            } else {
                Ok((None, outcome(Action::NotInjected)))
            }
        }
    }
}

fn template_path(api_version: &str, kind: &str) -> Option<&'static [&'static str]> {
    WORKLOADS
        .iter()
        .find(|(v, k, _)| *v == api_version && *k == kind)
        .map(|(_, _, path)| *path)
}

fn not_a_workload(api_version: &str, kind: &str) -> String {
    match WORKLOADS.iter().find(|(_, k, _)| *k == kind) {
        Some((expected, _, _)) => {
            format!(
                "apiVersion {api_version:?} is not supported for a {kind} (expected {expected})"
            )
        }
        None => "not a workload".to_string(),
    }
}

/// Whether an object's (or a pod template's) annotations opt it out of injection.
fn opted_out(object: &Map<String, Value>) -> bool {
    object
        .get("metadata")
        .and_then(|m| m.get("annotations"))
        .and_then(|a| a.get(INJECT_ANNOTATION))
        .and_then(Value::as_str)
        == Some(INJECT_DISABLED)
}

/// `a.b` under the prefix `at` (a `List` item's position), for messages.
fn field(at: &str, path: &str) -> String {
    match (at.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => at.to_string(),
        (false, false) => format!("{at}.{path}"),
    }
}

/// Finds the pod template at `path`, checked by [`check_template`].
fn pod_template<'v>(
    doc: &Document,
    object: &'v mut Value,
    at: &str,
    kind: &str,
    path: &[&str],
) -> Result<&'v mut Map<String, Value>, ManifestError> {
    let full = field(at, &path.join("."));
    let mut node = object;
    for (depth, key) in path.iter().enumerate() {
        let Value::Object(map) = node else {
            let here = field(at, &path[..depth].join("."));
            let problem = format!("expected a mapping, found {}", type_of(node));
            return Err(doc.field_error(&here, problem));
        };
        node = match map.get_mut(*key) {
            None | Some(Value::Null) => {
                let problem = format!("missing: a {kind} needs a pod template");
                return Err(doc.field_error(&full, problem));
            }
            Some(next) => next,
        };
    }
    let Value::Object(template) = node else {
        let problem = format!("expected a pod template, found {}", type_of(node));
        return Err(doc.field_error(&full, problem));
    };
    check_template(doc, &full, template)?;
    Ok(template)
}

/// Checks the parts of a pod template (at field `at`) that injection reads or changes,
/// so that the changes cannot meet a surprise.
fn check_template(
    doc: &Document,
    at: &str,
    template: &Map<String, Value>,
) -> Result<(), ManifestError> {
    let check = |value: Option<&Value>, path: &str, want: &str, ok: fn(&Value) -> bool| match value
    {
        Some(v) if !ok(v) => {
            let problem = format!("expected {want}, found {}", type_of(v));
            Err(doc.field_error(&field(at, path), problem))
        }
        _ => Ok(()),
    };
    let map_or_null = |v: &Value| v.is_object() || v.is_null();
    let list_or_null = |v: &Value| v.is_array() || v.is_null();

    let metadata = template.get("metadata");
    check(metadata, "metadata", "a mapping", map_or_null)?;
    for key in ["annotations", "labels"] {
        let value = metadata.and_then(|m| m.get(key));
        check(value, &format!("metadata.{key}"), "a mapping", map_or_null)?;
    }
    let Some(spec) = template.get("spec").filter(|s| !s.is_null()) else {
        return Err(doc.field_error(&field(at, "spec"), "missing: a pod needs a spec"));
    };
    check(Some(spec), "spec", "a mapping", Value::is_object)?;
    let containers = spec.get("containers");
    if !containers.is_some_and(Value::is_array) {
        let found = containers.map_or("nothing", type_of);
        let problem = format!("expected a list of containers, found {found}");
        return Err(doc.field_error(&field(at, "spec.containers"), problem));
    }
    for key in ["containers", "initContainers", "volumes"] {
        let path = format!("spec.{key}");
        let value = spec.get(key);
        check(value, &path, "a list", list_or_null)?;
        let items = value.and_then(Value::as_array).into_iter().flatten();
        for (i, item) in items.enumerate() {
            let path = format!("{path}[{i}]");
            check(Some(item), &path, "a mapping", Value::is_object)?;
        }
    }
    Ok(())
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// One workload's changes to its proxy, from `config.conduit.io/*` annotations on its pod
/// template (or, failing that, on the workload itself), each checked.
#[derive(Debug, Default, PartialEq, Eq)]
struct Overrides {
    opaque_ports: Option<String>,
    skip_inbound_ports: Option<String>,
    skip_outbound_ports: Option<String>,
    inbound_loopback_ports: Option<String>,
    /// `(requests|limits, cpu|memory, quantity)`.
    resources: Vec<(&'static str, &'static str, String)>,
    default_inbound_policy: Option<String>,
}

/// The annotations `Overrides` reads, what each must look like, and where it goes.
const OVERRIDES: &[(&str, Expect)] = &[
    ("opaque-ports", Expect::Ports),
    ("skip-inbound-ports", Expect::Ports),
    ("skip-outbound-ports", Expect::Ports),
    ("inbound-loopback-ports", Expect::Ports),
    ("proxy-cpu-request", Expect::Quantity("requests", "cpu")),
    ("proxy-cpu-limit", Expect::Quantity("limits", "cpu")),
    (
        "proxy-memory-request",
        Expect::Quantity("requests", "memory"),
    ),
    ("proxy-memory-limit", Expect::Quantity("limits", "memory")),
    ("default-inbound-policy", Expect::Policy),
];

#[derive(Debug, Clone, Copy)]
enum Expect {
    Ports,
    Quantity(&'static str, &'static str),
    Policy,
}

impl Overrides {
    fn read(
        doc: &Document,
        at: &str,
        template_path: &[&str],
        workload: &Value,
    ) -> Result<Overrides, ManifestError> {
        let annotations = |v: Option<&Value>| {
            v.and_then(|t| t.get("metadata"))
                .and_then(|m| m.get("annotations"))
                .cloned()
                .unwrap_or(Value::Null)
        };
        let template_annotations =
            annotations(template_path.iter().try_fold(workload, |v, k| v.get(*k)));
        let workload_annotations = annotations(Some(workload));
        let template_field = if template_path.is_empty() {
            "metadata.annotations".to_string()
        } else {
            format!("{}.metadata.annotations", template_path.join("."))
        };
        let mut o = Overrides::default();
        for (name, expect) in OVERRIDES {
            let key = format!("{CONFIG_PREFIX}{name}");
            let found = [
                (&template_annotations, template_field.as_str()),
                (&workload_annotations, "metadata.annotations"),
            ]
            .into_iter()
            .find_map(|(a, f)| Some((a.get(&key)?, f)));
            let Some((value, place)) = found else {
                continue;
            };
            let bad = |expected: &str| {
                doc.field_error(
                    &field(at, &format!("{place}[\"{key}\"]")),
                    format!("{value} is not valid: expected {expected}"),
                )
            };
            let text = value
                .as_str()
                .ok_or_else(|| bad("a string"))?
                .trim()
                .to_string();
            match expect {
                Expect::Ports if !is_port_list(&text) => {
                    return Err(bad("ports and ranges, like 25,3306,9000-9010"))
                }
                Expect::Quantity(..) if !is_quantity(&text) => {
                    return Err(bad("a Kubernetes quantity, like 100m, 0.5, 64Mi or 1Gi"))
                }
                Expect::Policy if text.parse::<conduit_policy::DefaultPolicy>().is_err() => {
                    return Err(bad(conduit_policy::DefaultPolicy::NAMES))
                }
                _ => {}
            }
            match (*name, expect) {
                ("opaque-ports", _) => o.opaque_ports = Some(text),
                ("skip-inbound-ports", _) => o.skip_inbound_ports = Some(text),
                ("skip-outbound-ports", _) => o.skip_outbound_ports = Some(text),
                ("inbound-loopback-ports", _) => o.inbound_loopback_ports = Some(text),
                (_, Expect::Quantity(section, resource)) => {
                    o.resources.push((section, resource, text))
                }
                _ => o.default_inbound_policy = Some(text),
            }
        }
        Ok(o)
    }
}

/// `25`, `3306,9000-9010`: ports (1-65535) and ascending ranges, comma separated.
fn is_port_list(s: &str) -> bool {
    let port = |p: &str| p.trim().parse::<u16>().ok().filter(|p| *p > 0);
    !s.is_empty()
        && s.split(',').all(|part| match part.split_once('-') {
            Some((a, b)) => matches!((port(a), port(b)), (Some(a), Some(b)) if a <= b),
            None => port(part).is_some(),
        })
}

/// A Kubernetes resource quantity: a non-negative decimal with a binary (`Ki`..`Ei`) or
/// decimal (`m`, `k`..`E`) suffix or a decimal exponent (`1e3`): `100m`, `0.5`, `64Mi`.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 14] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "m", "k", "M", "G", "T", "P", "E", "",
    ];
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    let decimal = |n: &str| {
        let (int, frac) = n.split_once('.').unwrap_or((n, "0"));
        digits(int) && digits(frac)
    };
    let exponent = |n: &str| {
        n.split_once(['e', 'E'])
            .is_some_and(|(m, e)| decimal(m) && digits(e.strip_prefix(['+', '-']).unwrap_or(e)))
    };
    exponent(s)
        || SUFFIXES
            .iter()
            .any(|suffix| s.strip_suffix(suffix).is_some_and(decimal))
}

/// Adds the init container, the proxy, the lock volume, the annotation and the labels.
fn add_proxy(
    template: &mut Map<String, Value>,
    deployment: Option<&str>,
    opts: &InjectOptions,
    overrides: &Overrides,
) {
    let metadata = map_at(template, "metadata");
    map_at(metadata, "annotations").insert(VERSION_ANNOTATION.into(), PROXY_VERSION.into());
    let labels = map_at(metadata, "labels");
    labels.insert(
        CONTROL_PLANE_NS_LABEL.into(),
        control_plane::NAMESPACE.into(),
    );
    if let Some(deployment) = deployment {
        labels.insert(DEPLOYMENT_LABEL.into(), deployment.into());
    }
    let spec = map_at(template, "spec");
    let init = list_at(spec, "initContainers");
    init.insert(0, init_container(opts, overrides));
    let mut proxy = proxy_container(deployment, opts, overrides);
    if opts.native_sidecar {
        proxy["restartPolicy"] = json!("Always");
        // The kubelet starts nothing after a native sidecar until it has started.
        proxy["startupProbe"] = json!({
            "httpGet": { "path": admin::READY_PATH, "port": ports::PROXY_ADMIN },
            "periodSeconds": 1, "failureThreshold": 120,
        });
        init.insert(1, proxy);
    } else {
        // The kubelet starts the next container only once this hook returns.
        proxy["lifecycle"] =
            json!({ "postStart": { "exec": { "command": [cli::BINARY, cli::AWAIT] } } });
        list_at(spec, "containers").insert(0, proxy);
    }
    let volume = json!({ "name": INIT_LOCK_VOLUME, "emptyDir": {} });
    list_at(spec, "volumes").insert(0, volume);
    let token = json!({
        "name": IDENTITY_TOKEN_VOLUME,
        "projected": { "sources": [{ "serviceAccountToken": {
            "audience": IDENTITY_AUDIENCE, "expirationSeconds": 86400, "path": "token",
        } }] },
    });
    list_at(spec, "volumes").insert(1, token);
}

/// Removes what [`add_proxy`] adds, wherever it is; says whether there was any.
fn remove_proxy(template: &mut Map<String, Value>) -> bool {
    let mut removed = false;
    if let Some(Value::Object(metadata)) = template.get_mut("metadata") {
        removed |= remove_keys(metadata, "annotations", &[VERSION_ANNOTATION]);
        removed |= remove_keys(
            metadata,
            "labels",
            &[CONTROL_PLANE_NS_LABEL, DEPLOYMENT_LABEL],
        );
        if removed && metadata.is_empty() {
            template.remove("metadata");
        }
    }
    if let Some(Value::Object(spec)) = template.get_mut("spec") {
        removed |= remove_named(spec, "containers", PROXY_CONTAINER, false);
        removed |= remove_named(spec, "initContainers", PROXY_CONTAINER, true);
        removed |= remove_named(spec, "initContainers", INIT_CONTAINER, true);
        removed |= remove_named(spec, "volumes", INIT_LOCK_VOLUME, true);
        removed |= remove_named(spec, "volumes", IDENTITY_TOKEN_VOLUME, true);
    }
    removed
}

/// Removes `keys` from the mapping `map[field]`, and the mapping if that empties it.
fn remove_keys(map: &mut Map<String, Value>, field: &str, keys: &[&str]) -> bool {
    let Some(Value::Object(inner)) = map.get_mut(field) else {
        return false;
    };
    let before = inner.len();
    for key in keys {
        inner.remove(*key);
    }
    let removed = inner.len() < before;
    if removed && inner.is_empty() {
        map.remove(field);
    }
    removed
}

/// Removes the items called `name` from the list `map[field]`, and the list if that
/// empties it and `drop_empty`.
fn remove_named(map: &mut Map<String, Value>, field: &str, name: &str, drop_empty: bool) -> bool {
    let Some(Value::Array(items)) = map.get_mut(field) else {
        return false;
    };
    let before = items.len();
    items.retain(|item| !has_name(item, name));
    let removed = items.len() < before;
    if removed && drop_empty && items.is_empty() {
        map.remove(field);
    }
    removed
}

fn has_name(item: &Value, name: &str) -> bool {
    item.get("name").and_then(Value::as_str) == Some(name)
}

/// The mapping at `map[key]`, made if it is missing or null.
fn map_at<'m>(map: &'m mut Map<String, Value>, key: &str) -> &'m mut Map<String, Value> {
    let slot = map.entry(key).or_insert(Value::Null);
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("a mapping was just put here")
}

/// The list at `map[key]`, made if it is missing or null.
fn list_at<'m>(map: &'m mut Map<String, Value>, key: &str) -> &'m mut Vec<Value> {
    let slot = map.entry(key).or_insert(Value::Null);
    if !slot.is_array() {
        *slot = Value::Array(Vec::new());
    }
    slot.as_array_mut().expect("a list was just put here")
}

fn init_container(opts: &InjectOptions, overrides: &Overrides) -> Value {
    let mut args = vec![
        cli::PROXY_UID.to_string(),
        opts.proxy_uid.to_string(),
        cli::INBOUND_PORT.to_string(),
        ports::PROXY_INBOUND.to_string(),
        cli::OUTBOUND_PORT.to_string(),
        ports::PROXY_OUTBOUND.to_string(),
    ];
    for (flag, ports, more) in [
        (
            cli::SKIP_INBOUND_PORTS,
            &opts.skip_inbound_ports,
            &overrides.skip_inbound_ports,
        ),
        (
            cli::SKIP_OUTBOUND_PORTS,
            &opts.skip_outbound_ports,
            &overrides.skip_outbound_ports,
        ),
    ] {
        let all: Vec<&str> = ports
            .iter()
            .map(String::as_str)
            .chain(more.as_deref())
            .collect();
        if !all.is_empty() {
            args.extend([flag.to_string(), all.join(",")]);
        }
    }
    json!({
        "name": INIT_CONTAINER,
        "image": opts.proxy_image,
        "command": [cli::BINARY, cli::INIT],
        "args": args,
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "capabilities": { "add": ["NET_ADMIN", "NET_RAW"] },
            "privileged": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": false,
            "runAsUser": 0,
        },
        "volumeMounts": [{ "name": INIT_LOCK_VOLUME, "mountPath": "/run" }],
    })
}

fn proxy_container(deployment: Option<&str>, opts: &InjectOptions, overrides: &Overrides) -> Value {
    let from_field = |name: &str, path: &str| json!({ "name": name, "valueFrom": { "fieldRef": { "fieldPath": path } } });
    let value = |name: &str, value: &str| json!({ "name": name, "value": value });
    let mut env = vec![
        from_field(proxy_env::POD_NAMESPACE, "metadata.namespace"),
        from_field(proxy_env::POD_NAME, "metadata.name"),
    ];
    if let Some(deployment) = deployment {
        env.push(value(proxy_env::POD_DEPLOYMENT, deployment));
    }
    env.push(value(proxy_env::DESTINATION_ADDR, &opts.destination_addr));
    env.push(value(proxy_env::IDENTITY_ADDR, &opts.identity_addr));
    env.push(value(
        proxy_env::IDENTITY_TOKEN_FILE,
        &format!("{IDENTITY_TOKEN_DIR}/token"),
    ));
    env.push(from_field(
        proxy_env::IDENTITY_SERVICE_ACCOUNT,
        "spec.serviceAccountName",
    ));
    env.push(json!({
        "name": proxy_env::IDENTITY_TRUST_ANCHORS,
        "valueFrom": { "configMapKeyRef": { "name": TRUST_ROOTS_CONFIGMAP, "key": TRUST_ROOTS_KEY } },
    }));
    env.push(value(proxy_env::TAP_CLIENT_IDENTITY, &opts.controller_id));
    env.push(value(proxy_env::CONTROLLER_IDENTITY, &opts.controller_id));
    env.push(value(proxy_env::LOG, &opts.log));
    if let Some(ports) = &overrides.opaque_ports {
        env.push(value(proxy_env::OPAQUE_PORTS, ports));
    }
    if let Some(ports) = &overrides.inbound_loopback_ports {
        env.push(value(proxy_env::INBOUND_LOOPBACK_PORTS, ports));
    }
    if let Some(policy) = &overrides.default_inbound_policy {
        env.push(value(proxy_env::DEFAULT_INBOUND_POLICY, policy));
    }
    let port =
        |name: &str, port: u16| json!({ "name": name, "containerPort": port, "protocol": "TCP" });
    let probe = |path: &str, delay: u32| json!({ "httpGet": { "path": path, "port": ports::PROXY_ADMIN }, "initialDelaySeconds": delay });
    let mut resources = Map::new();
    for (section, resource, quantity) in &overrides.resources {
        map_at(&mut resources, section).insert(resource.to_string(), json!(quantity));
    }
    let mut container = json!({
        "name": PROXY_CONTAINER,
        "image": opts.proxy_image,
        "command": [cli::BINARY],
        "env": env,
        "ports": [
            port("conduit-proxy", ports::PROXY_INBOUND),
            port(PROXY_ADMIN_PORT_NAME, ports::PROXY_ADMIN),
            port("conduit-tap", ports::PROXY_TAP),
        ],
        "volumeMounts": [{ "name": IDENTITY_TOKEN_VOLUME, "mountPath": IDENTITY_TOKEN_DIR, "readOnly": true }],
        "readinessProbe": probe(admin::READY_PATH, 1),
        "livenessProbe": probe(admin::LIVE_PATH, 10),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "runAsUser": opts.proxy_uid,
        },
    });
    if !resources.is_empty() {
        container["resources"] = Value::Object(resources);
    }
    container
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - {name: app, image: app:1}
";

    fn injected(text: &str, opts: &InjectOptions) -> Value {
        let out = inject(text, "-", opts).unwrap().output;
        manifest::parse(&out, "-").unwrap().remove(0).value
    }

    #[test]
    fn bad_config_annotations_are_named_and_nothing_is_written() {
        let with = |key: &str, value: &str| {
            DEPLOYMENT.replace(
                "  template:\n",
                &format!("  template:\n    metadata:\n      annotations: {{config.conduit.io/{key}: \"{value}\"}}\n"),
            )
        };
        let cases = [
            ("opaque-ports", "3306,mysql", "ports and ranges"),
            ("skip-inbound-ports", "9010-9000", "ports and ranges"),
            ("proxy-memory-limit", "64MB", "a Kubernetes quantity"),
            ("proxy-cpu-request", "-1", "a Kubernetes quantity"),
            (
                "default-inbound-policy",
                "allow-all",
                "all-unauthenticated, all-authenticated",
            ),
        ];
        for (key, value, expected) in cases {
            let err = inject(&with(key, value), "app.yaml", &InjectOptions::default())
                .map(|t| t.output)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(&format!(
                    "spec.template.metadata.annotations[\"config.conduit.io/{key}\"]: \"{value}\" is not valid: expected {expected}"
                )),
                "{err}"
            );
        }
        // Good values pass.
        let good = with("proxy-cpu-limit", "1.5");
        let pod = &injected(&good, &InjectOptions::default())["spec"]["template"]["spec"];
        assert_eq!(
            pod["initContainers"][1]["resources"]["limits"]["cpu"],
            "1.5"
        );
        assert!(is_port_list("1,65535,100-101") && !is_port_list("0") && !is_port_list(""));
        assert!(is_quantity("100m") && is_quantity("2") && is_quantity("1.5Gi"));
        assert!(is_quantity("1e3") && is_quantity("1E") && is_quantity("2.5e-1"));
        assert!(
            !is_quantity("Mi") && !is_quantity("1.") && !is_quantity("1MB") && !is_quantity("e3")
        );
    }

    #[test]
    fn options_reach_the_containers() {
        let opts = InjectOptions {
            proxy_image: "proxy:dev".into(),
            destination_addr: "dst:8086".into(),
            identity_addr: "id:8086".into(),
            controller_id: "ctl.cp.serviceaccount.identity.conduit.cluster.local".into(),
            proxy_uid: 999,
            skip_inbound_ports: vec!["22".into(), "9000-9010".into()],
            skip_outbound_ports: vec!["25".into()],
            log: "debug".into(),
            native_sidecar: false,
        };
        let pod = &injected(DEPLOYMENT, &opts)["spec"]["template"]["spec"];
        let init = &pod["initContainers"][0];
        assert_eq!(init["image"], "proxy:dev");
        assert_eq!(
            init["args"],
            json!([
                "--proxy-uid",
                "999",
                "--inbound-port",
                "4143",
                "--outbound-port",
                "4140",
                "--skip-inbound-ports",
                "22,9000-9010",
                "--skip-outbound-ports",
                "25"
            ])
        );
        let proxy = &pod["containers"][0];
        assert_eq!(proxy["name"], PROXY_CONTAINER);
        assert_eq!(proxy["securityContext"]["runAsUser"], 999);
        let env = proxy["env"].as_array().unwrap();
        let var = |name: &str| env.iter().find(|e| e["name"] == name).map(|e| &e["value"]);
        assert_eq!(var("CONDUIT_PROXY_POD_DEPLOYMENT"), Some(&json!("web")));
        assert_eq!(
            var("CONDUIT_PROXY_DESTINATION_ADDR"),
            Some(&json!("dst:8086"))
        );
        assert_eq!(var("CONDUIT_PROXY_LOG"), Some(&json!("debug")));
        for name in [
            proxy_env::TAP_CLIENT_IDENTITY,
            proxy_env::CONTROLLER_IDENTITY,
        ] {
            assert_eq!(
                var(name),
                Some(&json!(
                    "ctl.cp.serviceaccount.identity.conduit.cluster.local"
                )),
                "{name}"
            );
        }
        assert!(is_injected(pod));
        assert_eq!(pod["containers"][1]["name"], "app");
        // Not a native sidecar: the first container, holding the app until it is ready.
        assert_eq!(
            proxy["lifecycle"]["postStart"]["exec"]["command"],
            json!(["conduit-proxy", "await"])
        );
        assert!(proxy.get("restartPolicy").is_none());
    }

    #[test]
    fn the_proxy_is_a_native_sidecar_by_default() {
        let pod = &injected(DEPLOYMENT, &InjectOptions::default())["spec"]["template"]["spec"];
        let init = pod["initContainers"].as_array().unwrap();
        assert_eq!(init[0]["name"], INIT_CONTAINER, "the rules come first");
        assert_eq!(init[1]["name"], PROXY_CONTAINER);
        assert_eq!(init[1]["restartPolicy"], "Always");
        assert_eq!(init[1]["startupProbe"]["httpGet"]["path"], "/ready");
        assert!(init[1].get("lifecycle").is_none());
        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1, "the app's containers, untouched");
        assert!(is_injected(pod));
        // Uninject takes it out of the init containers too.
        let text = inject(DEPLOYMENT, "-", &InjectOptions::default())
            .unwrap()
            .output;
        let back = uninject(&text, "-").unwrap();
        assert!(!back.output.contains(PROXY_CONTAINER), "{}", back.output);
    }

    #[test]
    fn only_deployments_name_their_deployment() {
        let set = DEPLOYMENT.replace("Deployment", "StatefulSet");
        let template = &injected(&set, &InjectOptions::default())["spec"]["template"];
        assert_eq!(
            template["metadata"]["labels"],
            json!({ CONTROL_PLANE_NS_LABEL: "conduit" })
        );
        let env = template["spec"]["initContainers"][1]["env"]
            .as_array()
            .unwrap();
        assert!(env
            .iter()
            .all(|e| e["name"] != "CONDUIT_PROXY_POD_DEPLOYMENT"));
    }

    #[test]
    fn uninject_keeps_what_it_did_not_empty() {
        let text = "\
apiVersion: v1
kind: Pod
metadata:
  name: p
  annotations: {}
spec:
  initContainers: []
  containers:
  - {name: app}
";
        let out = uninject(text, "-").unwrap();
        assert_eq!(out.output, text);
        assert_eq!(
            out.report[0].to_string(),
            r#"pod "p" not injected, left as is"#
        );
        assert!(!is_injected(&json!({ "containers": [{ "name": "app" }] })));
    }

    #[test]
    fn other_objects_are_reported_and_kept() {
        let text = "\
apiVersion: extensions/v1beta1
kind: Deployment
metadata: {name: old}
---
apiVersion: example.com/v1
kind: Widget
---
kind: ConfigMap
apiVersion: v1
metadata: {name: settings}   # kept as written
";
        let out = inject(text, "-", &InjectOptions::default()).unwrap();
        assert_eq!(out.output, text);
        let lines: Vec<String> = out.report.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            [
                r#"deployment "old" skipped: apiVersion "extensions/v1beta1" is not supported for a Deployment (expected apps/v1)"#,
                r#"widget skipped: not a workload"#,
                r#"configmap "settings" skipped: not a workload"#,
            ]
        );
    }
}
