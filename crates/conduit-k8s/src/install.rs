//! `conduit install`: every manifest of the control plane, from typed values (defaults,
//! then `-f values.yaml` files, then `--set key=value`, each checked and named when wrong):
//! the namespace, the CRDs with their schemas, the controller's ServiceAccount and
//! least-privilege RBAC (with the delegation of authentication and authorization an
//! aggregated API needs), its configuration, the identity trust roots and issuer, the
//! injector webhook's and the API's serving certificates, the controller Deployment
//! (probes, resources, a locked down security context) and its Services, the public API
//! as an APIService with the ClusterRoles users bind to use it (`conduit-viewer`,
//! `conduit-tap`), and with `ha` more replicas, anti-affinity and a PodDisruptionBudget.

use crate::inject::{InjectOptions, PROXY_VERSION};
use conduit_api::{
    admin,
    control_plane::{
        self, API_SERVICE, API_TLS_SECRET, CONTROLLER, DESTINATION_SERVICE, IDENTITY_SERVICE,
        INJECTOR_PATH, INJECTOR_WEBHOOK, ISSUER_SECRET, WEBHOOK_SERVICE, WEBHOOK_TLS_SECRET,
    },
    dashboard, flags, http,
    names::{
        CONTROL_PLANE_NS_LABEL, IDENTITY_AUDIENCE, INJECT_ANNOTATION, INJECT_DISABLED,
        IS_CONTROL_PLANE_LABEL, PROXY_ADMIN_PORT_NAME, PROXY_CONTAINER, TRUST_ROOTS_CONFIGMAP,
        TRUST_ROOTS_KEY,
    },
    ports,
    prometheus::PrometheusUrl,
    public_api,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Everything `install` can be told, with its defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Values {
    /// The control plane's namespace.
    pub namespace: String,
    /// The controller's log filter.
    pub log_level: String,
    /// Three controller replicas spread over nodes, and a PodDisruptionBudget.
    pub ha: bool,
    pub controller: ControllerValues,
    /// What the injector gives meshed pods.
    pub proxy: ProxyValues,
    pub identity: IdentityValues,
    pub policy: PolicyValues,
    /// Whether to install the HTTPRoute CRD (`false` on a cluster that has the Gateway
    /// API already).
    pub install_gateway_api_crds: bool,
    /// A Prometheus that scrapes every proxy ([`scrape_config`]), like
    /// `http://prometheus.monitoring:9090`: the metrics API queries it instead of keeping
    /// history in the controller's memory.
    pub prometheus_url: Option<String>,
}

/// The controller Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ControllerValues {
    pub image: String,
    /// Replicas; `ha` makes it at least 3.
    pub replicas: u32,
    pub resources: ResourceValues,
}

/// The proxy the injector adds to pods.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ProxyValues {
    pub image: String,
    /// A native sidecar (Kubernetes 1.29+); `false`: the first container, holding the
    /// others until it is ready.
    pub native_sidecar: bool,
    /// The proxy's log filter.
    pub log_level: String,
}

impl Default for ProxyValues {
    fn default() -> Self {
        let inject = InjectOptions::default();
        ProxyValues {
            image: inject.proxy_image,
            native_sidecar: inject.native_sidecar,
            log_level: inject.log,
        }
    }
}

/// A container's requests and limits, as Kubernetes quantities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ResourceValues {
    pub cpu_request: String,
    pub memory_request: String,
    pub memory_limit: String,
}

/// Workload certificates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct IdentityValues {
    /// How long a proxy's certificate is valid, like `24h`.
    pub certificate_lifetime: String,
}

/// Authorization defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct PolicyValues {
    /// The cluster's default inbound policy.
    pub default_inbound: String,
    /// The cluster's networks (comma-separated CIDRs), for `cluster-authenticated`.
    pub cluster_networks: String,
}

impl Default for Values {
    fn default() -> Self {
        Values {
            namespace: control_plane::NAMESPACE.into(),
            log_level: "info".into(),
            ha: false,
            controller: ControllerValues::default(),
            proxy: ProxyValues::default(),
            identity: IdentityValues::default(),
            policy: PolicyValues::default(),
            install_gateway_api_crds: true,
            prometheus_url: None,
        }
    }
}

impl Default for ControllerValues {
    fn default() -> Self {
        ControllerValues {
            image: format!("ghcr.io/conduit-mesh/controller:{PROXY_VERSION}"),
            replicas: 1,
            resources: ResourceValues::default(),
        }
    }
}

impl Default for ResourceValues {
    fn default() -> Self {
        ResourceValues {
            cpu_request: "100m".into(),
            memory_request: "64Mi".into(),
            memory_limit: "256Mi".into(),
        }
    }
}

impl Default for IdentityValues {
    fn default() -> Self {
        IdentityValues {
            certificate_lifetime: "24h".into(),
        }
    }
}

impl Default for PolicyValues {
    fn default() -> Self {
        PolicyValues {
            default_inbound: "all-unauthenticated".into(),
            cluster_networks: "10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8"
                .into(),
        }
    }
}

/// Values that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ValuesError {
    #[error("{origin}: {message}")]
    Bad { origin: String, message: String },
}

fn bad(origin: &str, message: impl Into<String>) -> ValuesError {
    ValuesError::Bad {
        origin: origin.to_string(),
        message: message.into(),
    }
}

impl Values {
    /// Defaults, overlaid with each values document (YAML or JSON, `source` naming it),
    /// then each `key.path=value`; the result checked.
    pub fn build(files: &[(String, String)], sets: &[String]) -> Result<Values, ValuesError> {
        let mut merged =
            serde_json::to_value(Values::default()).map_err(|e| bad("defaults", e.to_string()))?;
        for (source, text) in files {
            let overlay: Value =
                serde_saphyr::from_str(text).map_err(|e| bad(source, format!("not YAML: {e}")))?;
            if !overlay.is_object() && !overlay.is_null() {
                return Err(bad(source, "expected a mapping of values"));
            }
            merge(&mut merged, overlay);
            check(&merged, source)?;
        }
        for set in sets {
            let source = format!("--set {set}");
            let (path, raw) = set
                .split_once('=')
                .ok_or_else(|| bad(&source, "expected key=value, like controller.replicas=2"))?;
            let mut slot = &mut merged;
            for key in path.split('.') {
                if key.is_empty() {
                    return Err(bad(&source, "an empty key"));
                }
                slot = slot
                    .as_object_mut()
                    .ok_or_else(|| bad(&source, format!("{path} is not a mapping of values")))?
                    .entry(key)
                    .or_insert(Value::Null);
            }
            *slot = match (&*slot, raw) {
                (Value::Bool(_), "true" | "false") => Value::Bool(raw == "true"),
                (Value::Number(_), n) => n
                    .parse::<u64>()
                    .map(Value::from)
                    .map_err(|_| bad(&source, format!("{path} takes a number, not {raw:?}")))?,
                _ => Value::String(raw.to_string()),
            };
            check(&merged, &source)?;
        }
        let values: Values =
            serde_json::from_value(merged).map_err(|e| bad("values", e.to_string()))?;
        values.validate()?;
        Ok(values)
    }

    fn validate(&self) -> Result<(), ValuesError> {
        if self
            .policy
            .default_inbound
            .parse::<conduit_policy::DefaultPolicy>()
            .is_err()
        {
            return Err(bad(
                "policy.defaultInbound",
                format!(
                    "{:?} is not a default policy: expected {}",
                    self.policy.default_inbound,
                    conduit_policy::DefaultPolicy::NAMES
                ),
            ));
        }
        for net in self.policy.cluster_networks.split(',') {
            if net.trim().parse::<ipnet::IpNet>().is_err() {
                return Err(bad(
                    "policy.clusterNetworks",
                    format!("{net:?} is not a network in CIDR form, like 10.0.0.0/8"),
                ));
            }
        }
        if humantime::parse_duration(&self.identity.certificate_lifetime).is_err() {
            return Err(bad(
                "identity.certificateLifetime",
                format!(
                    "{:?} is not a duration, like 24h",
                    self.identity.certificate_lifetime
                ),
            ));
        }
        if let Some(url) = &self.prometheus_url {
            url.parse::<PrometheusUrl>()
                .map_err(|e| bad("prometheusUrl", e))?;
        }
        if self.namespace.is_empty() || self.controller.image.is_empty() {
            return Err(bad(
                "values",
                "namespace and controller.image must not be empty",
            ));
        }
        Ok(())
    }

    fn replicas(&self) -> u32 {
        if self.ha {
            self.controller.replicas.max(3)
        } else {
            self.controller.replicas.max(1)
        }
    }
}

/// Deep-merges `overlay` into `base` (mappings key by key; anything else replaces).
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (_, Value::Null) => {}
        (b, o) => *b = o,
    }
}

/// Names an unknown or mistyped key as soon as it appears.
fn check(merged: &Value, source: &str) -> Result<(), ValuesError> {
    serde_json::from_value::<Values>(merged.clone())
        .map(|_| ())
        .map_err(|e| bad(source, e.to_string()))
}

/// The identity material install puts in the cluster: the trust anchors every proxy
/// trusts, and the issuer the controller signs with.
pub struct IdentityMaterial {
    pub anchors_pem: String,
    pub issuer_cert_pem: String,
    pub issuer_key_pem: String,
}

/// A serving certificate (the injector's, the API's) and the CA the API server checks it
/// with.
pub struct ServingTls {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where the controller's container mounts the issuer Secret.
const ISSUER_MOUNT: &str = "/var/run/conduit/identity";
/// Where it mounts the injector's serving certificate.
const WEBHOOK_TLS_MOUNT: &str = "/var/run/conduit/webhook-tls";
/// Where it mounts the API's serving certificate.
const API_TLS_MOUNT: &str = "/var/run/conduit/api-tls";
/// Where it mounts the trust roots ConfigMap.
const TRUST_ROOTS_MOUNT: &str = "/var/run/conduit/trust-roots";
/// The port of the injector's Service, which the API server calls.
const WEBHOOK_SERVICE_PORT: u16 = 443;

/// The CustomResourceDefinitions: Server, AuthorizationPolicy, ServiceProfile, and the
/// Gateway API's HTTPRoute ([`http_route_crd`]).
pub fn crds() -> Vec<Value> {
    let crd = |group: &str,
               kind: &str,
               plural: &str,
               version: &str,
               spec: Value,
               short: &[&str]| {
        json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": format!("{plural}.{group}"), "labels": { CONTROL_PLANE_NS_LABEL: control_plane::NAMESPACE } },
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": { "kind": kind, "plural": plural, "singular": kind.to_lowercase(), "shortNames": short },
                "versions": [{
                    "name": version, "served": true, "storage": true,
                    "schema": { "openAPIV3Schema": {
                        "type": "object",
                        "required": ["spec"],
                        "properties": { "spec": spec },
                    } },
                }],
            },
        })
    };
    let string = json!({ "type": "string" });
    let labels = json!({ "type": "object", "additionalProperties": { "type": "string" } });
    let server = json!({
        "type": "object",
        "required": ["podSelector", "port"],
        "properties": {
            "podSelector": {
                "type": "object",
                "required": ["matchLabels"],
                "properties": { "matchLabels": labels },
            },
            "port": { "x-kubernetes-int-or-string": true, "description": "a port number, or a container port's name" },
            "proxyProtocol": { "type": "string", "enum": ["HTTP/1", "HTTP/2", "gRPC", "opaque", "unknown"] },
        },
    });
    let authz = json!({
        "type": "object",
        "required": ["targetRef", "allow"],
        "properties": {
            "targetRef": {
                "type": "object",
                "required": ["kind", "name"],
                "properties": { "group": string, "kind": { "type": "string", "enum": ["Server"] }, "name": string },
            },
            "allow": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "minProperties": 1,
                    "maxProperties": 1,
                    "properties": {
                        "serviceAccount": {
                            "type": "object",
                            "required": ["name"],
                            "properties": { "name": string, "namespace": string },
                        },
                        "identity": string,
                        "allAuthenticated": { "type": "boolean", "enum": [true] },
                        "network": string,
                    },
                },
            },
        },
    });
    let profile = json!({
        "type": "object",
        "properties": {
            "routes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "condition"],
                    "properties": {
                        "name": string,
                        "condition": {
                            "type": "object",
                            "properties": { "method": string, "pathRegex": string },
                        },
                        "isRetryable": { "type": "boolean" },
                        "retryGrpcCodes": { "type": "array", "items": string },
                        "timeout": string,
                    },
                },
            },
            "retryBudget": {
                "type": "object",
                "properties": {
                    "retryRatio": { "type": "number" },
                    "minRetriesPerSecond": { "type": "integer" },
                    "ttl": string,
                },
            },
        },
    });
    vec![
        crd(
            "policy.conduit.io",
            "Server",
            "servers",
            "v1alpha1",
            server,
            &["srv"],
        ),
        crd(
            "policy.conduit.io",
            "AuthorizationPolicy",
            "authorizationpolicies",
            "v1alpha1",
            authz,
            &["authzpolicy"],
        ),
        crd(
            "conduit.io",
            "ServiceProfile",
            "serviceprofiles",
            "v1alpha1",
            profile,
            &["sp"],
        ),
        http_route_crd(),
    ]
}

/// The Gateway API's HTTPRoute (`gateway.networking.k8s.io/v1`, standard channel), for
/// clusters without the Gateway API installed. The parts Conduit reads carry the upstream
/// schema's validations (enums, limits, patterns, defaults); the parts it does not
/// (filters, status) are kept as they are, so that this CRD accepts whatever the upstream
/// one does and replacing either with the other loses no route.
pub fn http_route_crd() -> Value {
    use crate::httproute::{
        GROUP, MAX_HEADER_MATCHES, MAX_MATCHES, MAX_PARENT_REFS, MAX_PATH, MAX_RULES,
    };
    use conduit_api::profile::{MAX_BACKENDS, MAX_BACKEND_WEIGHT};
    let name = |max: u32| json!({ "type": "string", "minLength": 1, "maxLength": max });
    let kept = json!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true });
    let port = json!({ "type": "integer", "format": "int32", "minimum": 1, "maximum": 65535 });
    let duration = json!({ "type": "string", "pattern": "^([0-9]{1,5}(h|m|s|ms)){1,4}$" });
    let value_match = |name_pattern: Option<&str>| {
        let mut field_name = name(256);
        if let Some(p) = name_pattern {
            field_name["pattern"] = json!(p);
        }
        json!({
            "type": "array",
            "maxItems": MAX_HEADER_MATCHES,
            "items": {
                "type": "object",
                "required": ["name", "value"],
                "properties": {
                    "type": { "type": "string", "enum": ["Exact", "RegularExpression"], "default": "Exact" },
                    "name": field_name,
                    "value": name(4096),
                },
            },
        })
    };
    let matched = json!({
        "type": "object",
        "properties": {
            "path": {
                "type": "object",
                "default": { "type": "PathPrefix", "value": "/" },
                "properties": {
                    "type": { "type": "string", "enum": ["Exact", "PathPrefix", "RegularExpression"], "default": "PathPrefix" },
                    "value": { "type": "string", "maxLength": MAX_PATH, "default": "/" },
                },
            },
            "headers": value_match(Some("^[A-Za-z0-9!#$%&'*+\\-.^_\\x60|~]+$")),
            "queryParams": value_match(None),
            "method": { "type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"] },
        },
    });
    let spec = json!({
        "type": "object",
        "properties": {
            "parentRefs": {
                "type": "array",
                "maxItems": MAX_PARENT_REFS,
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "group": { "type": "string", "maxLength": 253, "default": GROUP },
                        "kind": { "type": "string", "maxLength": 63, "minLength": 1, "default": "Gateway" },
                        "namespace": name(63),
                        "name": name(253),
                        "sectionName": name(253),
                        "port": port,
                    },
                },
            },
            "hostnames": { "type": "array", "maxItems": 16, "items": name(253) },
            "rules": {
                "type": "array",
                "maxItems": MAX_RULES,
                "default": [{ "matches": [{ "path": { "type": "PathPrefix", "value": "/" } }] }],
                "items": {
                    "type": "object",
                    "properties": {
                        "name": name(253),
                        "matches": {
                            "type": "array",
                            "maxItems": MAX_MATCHES,
                            "default": [{ "path": { "type": "PathPrefix", "value": "/" } }],
                            "items": matched,
                        },
                        "filters": { "type": "array", "maxItems": 16, "items": kept },
                        "backendRefs": {
                            "type": "array",
                            "maxItems": MAX_BACKENDS,
                            "items": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "group": { "type": "string", "maxLength": 253, "default": "" },
                                    "kind": { "type": "string", "maxLength": 63, "minLength": 1, "default": "Service" },
                                    "name": name(253),
                                    "namespace": name(63),
                                    "port": port,
                                    "weight": { "type": "integer", "format": "int32", "minimum": 0, "maximum": MAX_BACKEND_WEIGHT, "default": 1 },
                                    "filters": { "type": "array", "maxItems": 16, "items": kept },
                                },
                            },
                        },
                        "timeouts": {
                            "type": "object",
                            "properties": { "request": duration, "backendRequest": duration },
                        },
                    },
                },
            },
        },
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("httproutes.{GROUP}"),
            "labels": { CONTROL_PLANE_NS_LABEL: control_plane::NAMESPACE },
            "annotations": { "gateway.networking.k8s.io/channel": "standard" },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": { "kind": "HTTPRoute", "listKind": "HTTPRouteList", "plural": "httproutes", "singular": "httproute", "categories": ["gateway-api"] },
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": { "spec": spec, "status": kept },
                } },
            }],
        },
    })
}

/// Every manifest of the control plane, in the order `kubectl apply` needs them.
pub fn render(
    values: &Values,
    identity: &IdentityMaterial,
    webhook: &ServingTls,
    api: &ServingTls,
) -> Vec<Value> {
    let ns = values.namespace.as_str();
    let labels = json!({ "app.kubernetes.io/name": CONTROLLER, "app.kubernetes.io/part-of": "conduit", CONTROL_PLANE_NS_LABEL: ns });
    let selector = json!({ "app.kubernetes.io/name": CONTROLLER });
    let meta = |name: &str| json!({ "name": name, "namespace": ns, "labels": labels });
    let mut docs = vec![json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": ns, "labels": { IS_CONTROL_PLANE_LABEL: "true" }, "annotations": { INJECT_ANNOTATION: INJECT_DISABLED } },
    })];
    let http_route = http_route_crd();
    let crds = crds().into_iter();
    docs.extend(crds.filter(|crd| values.install_gateway_api_crds || *crd != http_route));
    // Exactly what the controller does: watch what discovery reads and server-side apply
    // the trust roots ConfigMap into namespaces; and as a delegating API server, review
    // tokens (proxies' and its API callers') and its callers' access
    // (system:auth-delegator) and read the front proxy's CA (a Role in kube-system).
    let watch = ["list", "watch"];
    let rbac = "rbac.authorization.k8s.io";
    docs.extend([
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(CONTROLLER) }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": CONTROLLER, "labels": labels },
            "rules": [
                { "apiGroups": [""], "resources": ["pods", "services", "namespaces"], "verbs": watch },
                { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": watch },
                { "apiGroups": ["policy.conduit.io"], "resources": ["servers", "authorizationpolicies"], "verbs": watch },
                { "apiGroups": ["conduit.io"], "resources": ["serviceprofiles"], "verbs": watch },
                { "apiGroups": ["gateway.networking.k8s.io"], "resources": ["httproutes"], "verbs": watch },
                { "apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"] },
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": CONTROLLER, "labels": labels },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROLLER },
            "subjects": [{ "kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns }],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": control_plane::AUTH_DELEGATOR_BINDING, "labels": labels },
            "roleRef": { "apiGroup": rbac, "kind": "ClusterRole", "name": public_api::AUTH_DELEGATOR_ROLE },
            "subjects": [{ "kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns }],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": { "name": control_plane::AUTHENTICATION_READER_BINDING, "namespace": public_api::AUTHENTICATION_NAMESPACE, "labels": labels },
            "roleRef": { "apiGroup": rbac, "kind": "Role", "name": public_api::AUTHENTICATION_READER_ROLE },
            "subjects": [{ "kind": "ServiceAccount", "name": CONTROLLER, "namespace": ns }],
        }),
    ]);
    docs.extend(user_roles(&labels));
    docs.extend([
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta("conduit-config"),
            "data": { "values.json": serde_json::to_string_pretty(values).unwrap_or_default() },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": meta(TRUST_ROOTS_CONFIGMAP),
            "data": { TRUST_ROOTS_KEY: identity.anchors_pem },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": meta(ISSUER_SECRET),
            "stringData": { "tls.crt": identity.issuer_cert_pem, "tls.key": identity.issuer_key_pem },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": meta(WEBHOOK_TLS_SECRET),
            "stringData": { "tls.crt": webhook.cert_pem, "tls.key": webhook.key_pem },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/tls",
            "metadata": meta(API_TLS_SECRET),
            "stringData": { "tls.crt": api.cert_pem, "tls.key": api.key_pem },
        }),
    ]);
    let port =
        |name: &str, port: u16| json!({ "name": name, "containerPort": port, "protocol": "TCP" });
    // The probes are the API port's only paths without authentication.
    let probe = |path: &str| json!({ "httpGet": { "path": path, "port": ports::CONTROLLER_API, "scheme": "HTTPS" }, "periodSeconds": 10 });
    let mut pod_spec = json!({
        "serviceAccountName": CONTROLLER,
        "automountServiceAccountToken": true,
        "securityContext": { "runAsNonRoot": true, "runAsUser": 2103, "runAsGroup": 2103, "seccompProfile": { "type": "RuntimeDefault" } },
        "containers": [{
            "name": "controller",
            "image": values.controller.image,
            "command": [CONTROLLER],
            "args": [
                flags::KUBERNETES.arg(),
                flags::API_ADDR.arg(format!("0.0.0.0:{}", ports::CONTROLLER_API)),
                flags::API_TLS_DIR.arg(API_TLS_MOUNT),
                flags::DESTINATION_ADDR.arg(format!("0.0.0.0:{}", ports::CONTROLLER_GRPC)),
                flags::WEBHOOK_ADDR.arg(format!("0.0.0.0:{}", ports::CONTROLLER_WEBHOOK)),
                flags::WEBHOOK_TLS_DIR.arg(WEBHOOK_TLS_MOUNT),
                flags::IDENTITY_ISSUER_CERT.arg(format!("{ISSUER_MOUNT}/tls.crt")),
                flags::IDENTITY_ISSUER_KEY.arg(format!("{ISSUER_MOUNT}/tls.key")),
                flags::IDENTITY_LIFETIME.arg(&values.identity.certificate_lifetime),
                flags::TOKEN_AUDIENCE.arg(IDENTITY_AUDIENCE),
                flags::IDENTITY_TRUST_ANCHORS.arg(format!("{TRUST_ROOTS_MOUNT}/{TRUST_ROOTS_KEY}")),
                flags::PUBLISH_TRUST_ANCHORS.arg(),
                flags::CONTROL_PLANE_NAMESPACE.arg(ns),
                flags::PROXY_IMAGE.arg(&values.proxy.image),
                flags::PROXY_NATIVE_SIDECAR.arg(values.proxy.native_sidecar),
                flags::PROXY_LOG_LEVEL.arg(&values.proxy.log_level),
                flags::DEFAULT_INBOUND_POLICY.arg(&values.policy.default_inbound),
                flags::CLUSTER_NETWORKS.arg(&values.policy.cluster_networks),
            ],
            "env": [{ "name": "RUST_LOG", "value": values.log_level }],
            "ports": [
                port("grpc", ports::CONTROLLER_GRPC),
                port("api", ports::CONTROLLER_API),
                port("webhook", ports::CONTROLLER_WEBHOOK),
            ],
            "readinessProbe": probe(http::READY_PATH),
            "livenessProbe": probe(http::HEALTHZ_PATH),
            "resources": {
                "requests": { "cpu": values.controller.resources.cpu_request, "memory": values.controller.resources.memory_request },
                "limits": { "memory": values.controller.resources.memory_limit },
            },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
            },
            "volumeMounts": [
                { "name": "identity-issuer", "mountPath": ISSUER_MOUNT, "readOnly": true },
                { "name": "webhook-tls", "mountPath": WEBHOOK_TLS_MOUNT, "readOnly": true },
                { "name": "api-tls", "mountPath": API_TLS_MOUNT, "readOnly": true },
                { "name": "trust-roots", "mountPath": TRUST_ROOTS_MOUNT, "readOnly": true },
            ],
        }],
        "volumes": [
            { "name": "identity-issuer", "secret": { "secretName": ISSUER_SECRET } },
            { "name": "webhook-tls", "secret": { "secretName": WEBHOOK_TLS_SECRET } },
            { "name": "api-tls", "secret": { "secretName": API_TLS_SECRET } },
            { "name": "trust-roots", "configMap": { "name": TRUST_ROOTS_CONFIGMAP } },
        ],
    });
    if let (Some(url), Some(args)) = (
        &values.prometheus_url,
        pod_spec["containers"][0]["args"].as_array_mut(),
    ) {
        args.push(json!(flags::PROMETHEUS_URL.arg(url)));
    }
    if values.ha {
        pod_spec["affinity"] = json!({ "podAntiAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": { "matchLabels": selector },
            "topologyKey": "kubernetes.io/hostname",
        }] } });
    }
    docs.push(json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta(CONTROLLER),
        "spec": {
            "replicas": values.replicas(),
            "selector": { "matchLabels": selector },
            "template": { "metadata": { "labels": labels }, "spec": pod_spec },
        },
    }));
    let service = |name: &str, port: u16| {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(name),
            "spec": { "selector": selector, "ports": [{ "name": "grpc", "port": port, "targetPort": port, "protocol": "TCP" }] },
        })
    };
    // The names `conduit inject` points proxies at, and the webhook's.
    docs.push(service(DESTINATION_SERVICE, ports::CONTROLLER_GRPC));
    docs.push(service(IDENTITY_SERVICE, ports::CONTROLLER_GRPC));
    let mut webhook_svc = service(WEBHOOK_SERVICE, WEBHOOK_SERVICE_PORT);
    webhook_svc["spec"]["ports"][0] = json!({ "name": "webhook", "port": WEBHOOK_SERVICE_PORT, "targetPort": ports::CONTROLLER_WEBHOOK, "protocol": "TCP" });
    docs.push(webhook_svc);
    let mut api_svc = service(API_SERVICE, ports::CONTROLLER_API);
    api_svc["spec"]["ports"][0]["name"] = json!("https");
    docs.push(api_svc);
    // The public API, through the API server: its authentication, then RBAC on the
    // ClusterRoles below, then the controller's own checks (api_auth.rs).
    docs.push(json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": { "name": public_api::API_SERVICE, "labels": labels },
        "spec": {
            "group": public_api::GROUP,
            "version": public_api::VERSION,
            "groupPriorityMinimum": 1000,
            "versionPriority": 100,
            "service": { "name": API_SERVICE, "namespace": ns, "port": ports::CONTROLLER_API },
            "caBundle": base64(api.ca_pem.as_bytes()),
        },
    }));
    if values.ha {
        docs.push(json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": meta(CONTROLLER),
            "spec": { "maxUnavailable": 1, "selector": { "matchLabels": selector } },
        }));
    }
    docs.push(json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": INJECTOR_WEBHOOK, "labels": labels },
        "webhooks": [{
            "name": "proxy-injector.conduit.io",
            "admissionReviewVersions": ["v1"],
            "sideEffects": "None",
            "failurePolicy": "Ignore",
            "timeoutSeconds": 10,
            "clientConfig": {
                "service": { "name": WEBHOOK_SERVICE, "namespace": ns, "path": INJECTOR_PATH, "port": WEBHOOK_SERVICE_PORT },
                "caBundle": base64(webhook.ca_pem.as_bytes()),
            },
            "rules": [{ "operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], "scope": "Namespaced" }],
            "namespaceSelector": { "matchExpressions": [{ "key": IS_CONTROL_PLANE_LABEL, "operator": "DoesNotExist" }] },
        }],
    }));
    docs
}

/// The ClusterRoles users bind to use the public API: one per role of
/// `conduit_api::public_api`, each granting its endpoints' verbs on their resources; and
/// the dashboard's files' role, bound to every authenticated user (the files hold no
/// data: what the pages show comes from the API under each user's own roles).
pub fn user_roles(labels: &Value) -> Vec<Value> {
    let accesses: Vec<public_api::Access> = http::ENDPOINTS
        .iter()
        .map(|(_, a)| *a)
        .chain([dashboard::ACCESS])
        .collect();
    let mut docs: Vec<Value> = [
        public_api::VIEWER_ROLE,
        public_api::TAP_ROLE,
        public_api::DASHBOARD_ROLE,
    ]
    .into_iter()
    .map(|role| {
        let granted = accesses.iter().filter(|a| a.role == role);
        let mut verbs: Vec<&str> = granted.clone().map(|a| a.verb).collect();
        verbs.dedup();
        let resources: Vec<&str> = granted.map(|a| a.resource).collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": role, "labels": labels },
            "rules": [{ "apiGroups": [public_api::GROUP], "resources": resources, "verbs": verbs }],
        })
    })
    .collect();
    docs.push(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": public_api::DASHBOARD_ROLE, "labels": labels },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": public_api::DASHBOARD_ROLE },
        "subjects": [{ "kind": "Group", "name": public_api::AUTHENTICATED_GROUP, "apiGroup": "rbac.authorization.k8s.io" }],
    }));
    docs
}

/// Standard base64 with padding, as `caBundle` and admission patches want it.
pub(crate) fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The Prometheus scrape configuration that finds every meshed proxy on Kubernetes: pod
/// discovery, kept to the proxy container's admin port, as job [`admin::SCRAPE_JOB`]
/// (what the controller's `--prometheus-url` queries). The proxies label their own
/// series with their namespace, deployment and pod, which `honor_labels` keeps; the same
/// names come from discovery for what a proxy does not label (its `up`, for one).
pub fn scrape_config() -> Value {
    let relabel = |from: &str, to: &str| json!({ "source_labels": [format!("__meta_kubernetes_{from}")], "target_label": to });
    json!({ "scrape_configs": [{
        "job_name": admin::SCRAPE_JOB,
        "scrape_interval": flags::DEFAULT_SCRAPE_INTERVAL,
        "metrics_path": admin::METRICS_PATH,
        "honor_labels": true,
        "kubernetes_sd_configs": [{ "role": "pod" }],
        "relabel_configs": [
            {
                "source_labels": ["__meta_kubernetes_pod_container_name", "__meta_kubernetes_pod_container_port_name"],
                "action": "keep",
                "regex": format!("{PROXY_CONTAINER};{PROXY_ADMIN_PORT_NAME}"),
            },
            relabel("namespace", "namespace"),
            relabel("pod_name", "pod"),
        ],
    }] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_layer_and_mistakes_are_named() {
        let file = (
            "values.yaml".to_string(),
            "controller:\n  replicas: 2\nlogLevel: debug\n".to_string(),
        );
        let v = Values::build(
            &[file],
            &["controller.image=example/ctl:1".into(), "ha=true".into()],
        )
        .unwrap();
        assert_eq!(v.controller.replicas, 2);
        assert_eq!(v.log_level, "debug");
        assert_eq!(v.controller.image, "example/ctl:1");
        assert_eq!(v.replicas(), 3, "ha means at least three");
        let err = |files: &[(String, String)], sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Values::build(files, &sets).unwrap_err().to_string()
        };
        assert!(err(&[], &["controller.imag=x"])
            .starts_with("--set controller.imag=x: unknown field `imag`"));
        assert!(err(&[], &["controller.replicas=two"]).contains("takes a number"));
        assert!(err(&[], &["ha"]).contains("expected key=value"));
        assert!(err(&[], &["policy.defaultInbound=open"]).contains("not a default policy"));
        assert!(err(&[("v.yaml".into(), "nope: 1\n".into())], &[])
            .starts_with("v.yaml: unknown field `nope`"));
        assert!(err(&[], &["identity.certificateLifetime=soon"]).contains("not a duration"));
    }

    #[test]
    fn base64_matches_the_standard() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
