//! What the local runtime is asked to run, read from Kubernetes manifests and checked
//! before anything starts: Deployments (their pod templates), Services, and the
//! authorization policy its control plane serves (Servers, AuthorizationPolicies, default
//! policy annotations). Anything the runtime cannot honour is refused with the document
//! and the field named.

use conduit_api::{
    inbound::DefaultPolicy,
    names::{DEFAULT_POLICY_ANNOTATION, PROXY_CONTAINER, TRUST_ROOTS_CONFIGMAP, TRUST_ROOTS_KEY},
};
use conduit_k8s::manifest::{self, is_dns_label, is_dns_subdomain, Document, ManifestError};
use conduit_k8s::{
    httproute::{self, HttpRoute},
    policy::{self, Resources},
    profile::{self, ServiceProfile},
};
use k8s_openapi::{
    api::{
        apps::v1::Deployment,
        core::v1::{Container, Probe, Service},
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything to run: the sum of every manifest given to `up`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub deployments: Vec<DeploymentSpec>,
    pub services: Vec<ServiceSpec>,
    /// Authorization policy, served to the pods' proxies by the control plane.
    #[serde(default)]
    pub policy: Resources,
    /// ServiceProfiles, served to the pods' proxies by the control plane.
    #[serde(default)]
    pub profiles: Vec<ServiceProfile>,
    /// HTTPRoutes, served to the pods' proxies by the control plane.
    #[serde(default)]
    pub http_routes: Vec<HttpRoute>,
}

/// A Deployment, reduced to what the runtime runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentSpec {
    pub namespace: String,
    pub name: String,
    pub replicas: u32,
    /// The pod template's labels (what Services select on).
    pub labels: BTreeMap<String, String>,
    pub init_containers: Vec<ContainerSpec>,
    pub containers: Vec<ContainerSpec>,
    /// Whether the template carries the sidecar `conduit inject` adds.
    pub meshed: bool,
    /// The pod template's ServiceAccount (`default` when unset): its mesh identity.
    #[serde(default = "default_service_account")]
    pub service_account: String,
    /// The pod template's default inbound policy annotation.
    #[serde(default)]
    pub default_policy: Option<DefaultPolicy>,
}

fn default_service_account() -> String {
    "default".to_string()
}

/// A container: a host process started in the pod's network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    pub name: String,
    /// `command` followed by `args`.
    pub argv: Vec<String>,
    pub env: Vec<EnvSpec>,
    /// Named ports, for probes and Services that refer to ports by name.
    pub ports: BTreeMap<String, u16>,
    pub readiness: Option<ProbeSpec>,
    /// `securityContext.runAsUser`; root when absent.
    pub run_as_user: Option<u32>,
    /// A native sidecar (an init container with `restartPolicy: Always`): it starts
    /// during initialisation, must be ready before what follows it starts, keeps running
    /// beside the containers, and stops after them.
    #[serde(default)]
    pub sidecar: bool,
    /// An init container listed after a sidecar: it runs once the sidecars are ready.
    #[serde(default)]
    pub after_sidecars: bool,
    /// `lifecycle.postStart.exec.command`: run in the pod once the container has
    /// started; the containers after it start when it has finished, as the kubelet does.
    #[serde(default)]
    pub post_start: Option<Vec<String>>,
}

/// An environment variable: a literal, a field of the pod, or the mesh's trust anchors.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvSpec {
    Value {
        name: String,
        value: String,
    },
    PodField {
        name: String,
        field: PodField,
    },
    /// `valueFrom.configMapKeyRef` to the mesh's trust roots, which the runtime holds.
    MeshTrustRoots {
        name: String,
    },
}

/// Pod fields the runtime can fill in (`valueFrom.fieldRef`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodField {
    Name,
    Namespace,
    Ip,
    ServiceAccount,
}

/// A readiness probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    pub action: ProbeAction,
    pub initial_delay_secs: u32,
    pub period_secs: u32,
    pub failure_threshold: u32,
}

/// How a probe checks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeAction {
    HttpGet { port: u16, path: String },
    TcpSocket { port: u16 },
}

/// A Service: a virtual IP and ports in front of the ready pods it selects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub namespace: String,
    pub name: String,
    pub selector: BTreeMap<String, String>,
    pub ports: Vec<ServicePortSpec>,
}

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortSpec {
    pub name: Option<String>,
    pub port: u16,
    pub target: TargetPort,
}

/// Where a Service port leads in the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TargetPort {
    Number(u16),
    Named(String),
}

/// Finds a program by name, as the runtime will run it.
pub type Resolve = dyn Fn(&str) -> Option<std::path::PathBuf>;

impl AppSpec {
    /// Reads every document of `text`; `source` names the file in errors. `resolve`
    /// finds each container's program (`command[0]`), which must exist.
    pub fn from_manifest(
        text: &str,
        source: &str,
        resolve: &Resolve,
    ) -> Result<AppSpec, ManifestError> {
        let mut spec = AppSpec::default();
        for doc in manifest::parse(text, source)? {
            if doc.is_empty() {
                continue;
            }
            match (doc.api_version(), doc.kind()) {
                (Some("apps/v1"), Some("Deployment")) => spec.deployments.push(deployment(&doc, resolve)?),
                (Some("v1"), Some("Service")) => spec.services.push(service(&doc)?),
                (Some("v1"), Some("Namespace")) => {
                    if let Some(p) = default_policy(&doc, "metadata.annotations", doc.annotation(DEFAULT_POLICY_ANNOTATION))? {
                        spec.policy.namespace_defaults.insert(require_name(&doc)?, p);
                    }
                }
                // ServiceAccounts need nothing local: pods name theirs.
                (Some("v1"), Some("ServiceAccount")) => {}
                (Some(policy::API_VERSION), Some("Server")) => {
                    spec.policy.servers.push(policy::server(&doc)?)
                }
                (Some(policy::API_VERSION), Some("AuthorizationPolicy")) => spec
                    .policy
                    .authorization_policies
                    .push(policy::authorization_policy(&doc)?),
                (Some(profile::API_VERSION), Some("ServiceProfile")) => {
                    spec.profiles.push(profile::service_profile(&doc)?)
                }
                (Some(httproute::API_VERSION), Some("HTTPRoute")) => {
                    spec.http_routes.push(httproute::http_route(&doc)?)
                }
                (_, None) => return Err(doc.field_error("kind", "missing: every document needs apiVersion and kind")),
                (api, Some(kind)) => {
                    return Err(doc.field_error(
                        "kind",
                        format!(
                            "{} {kind} is not something the local runtime runs: it runs apps/v1 Deployments and v1 Services, and accepts Namespaces, ServiceAccounts, {} Servers and AuthorizationPolicies, {} ServiceProfiles and {} HTTPRoutes",
                            api.unwrap_or("(no apiVersion)"),
                            policy::API_VERSION,
                            profile::API_VERSION,
                            httproute::API_VERSION,
                        ),
                    ))
                }
            }
        }
        Ok(spec)
    }

    /// Adds `other`, replacing objects with the same namespace, kind and name.
    pub fn merge(&mut self, other: AppSpec) {
        /// Puts `new` into `list`, each replacing the one with its namespace and name.
        fn replace<T>(list: &mut Vec<T>, new: Vec<T>, key: impl Fn(&T) -> (&str, &str)) {
            for item in new {
                list.retain(|x| key(x) != key(&item));
                list.push(item);
            }
        }
        replace(&mut self.deployments, other.deployments, |d| {
            (&d.namespace, &d.name)
        });
        replace(&mut self.services, other.services, |s| {
            (&s.namespace, &s.name)
        });
        let policy = &mut self.policy;
        replace(&mut policy.servers, other.policy.servers, |s| {
            (&s.namespace, &s.name)
        });
        replace(
            &mut policy.authorization_policies,
            other.policy.authorization_policies,
            |a| (&a.namespace, &a.name),
        );
        policy
            .namespace_defaults
            .extend(other.policy.namespace_defaults);
        replace(&mut self.profiles, other.profiles, |p| {
            (&p.namespace, &p.name)
        });
        replace(&mut self.http_routes, other.http_routes, |r| {
            (&r.namespace, &r.name)
        });
    }
}

/// The object's namespace, checked as Kubernetes checks it: the runtime makes file and
/// namespace names from it, so `../x` must never get that far.
fn namespace_of(doc: &Document) -> Result<String, ManifestError> {
    let namespace = doc.namespace().unwrap_or("default");
    if !is_dns_label(namespace) {
        return Err(doc.field_error(
            "metadata.namespace",
            format!("{namespace:?} is not a valid namespace: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"),
        ));
    }
    Ok(namespace.to_string())
}

/// The object's name, checked as Kubernetes checks it (a DNS-1123 subdomain).
fn require_name(doc: &Document) -> Result<String, ManifestError> {
    match doc.name() {
        Some(n) if is_dns_subdomain(n) => Ok(n.to_string()),
        Some(n) if !n.is_empty() => Err(doc.field_error(
            "metadata.name",
            format!("{n:?} is not a valid name: at most 253 lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit"),
        )),
        _ => Err(doc.field_error("metadata.name", "missing")),
    }
}

fn deployment(doc: &Document, resolve: &Resolve) -> Result<DeploymentSpec, ManifestError> {
    let name = require_name(doc)?;
    let d: Deployment = doc.to_typed()?;
    let spec = d.spec.ok_or_else(|| doc.field_error("spec", "missing"))?;
    let replicas = spec.replicas.unwrap_or(1);
    let replicas = u32::try_from(replicas)
        .map_err(|_| doc.field_error("spec.replicas", "must not be negative"))?;
    let template_meta = spec.template.metadata.unwrap_or_default();
    let labels = template_meta.labels.unwrap_or_default();
    let pod = spec
        .template
        .spec
        .ok_or_else(|| doc.field_error("spec.template.spec", "missing"))?;
    if pod.host_network == Some(true) {
        return Err(doc.field_error(
            "spec.template.spec.hostNetwork",
            "pods on the host network are not supported locally: every pod gets its own network namespace",
        ));
    }
    // Native sidecars run among the containers, ahead of them; the other init containers
    // note whether a sidecar came before them.
    let (mut init_containers, mut sidecars) = (Vec::new(), Vec::new());
    for (i, c) in pod.init_containers.iter().flatten().enumerate() {
        let field = format!("spec.template.spec.initContainers[{i}]");
        let mut spec = container(doc, &field, c, resolve)?;
        match c.restart_policy.as_deref() {
            Some("Always") => {
                spec.sidecar = true;
                sidecars.push(spec);
            }
            None => {
                spec.after_sidecars = !sidecars.is_empty();
                init_containers.push(spec);
            }
            Some(other) => {
                return Err(doc.field_error(
                    &format!("{field}.restartPolicy"),
                    format!(
                    "{other:?}: an init container's restartPolicy can only be Always (a sidecar)"
                ),
                ))
            }
        }
    }
    if pod.containers.is_empty() {
        return Err(doc.field_error(
            "spec.template.spec.containers",
            "empty: a pod needs at least one container",
        ));
    }
    let containers = sidecars
        .into_iter()
        .map(Ok)
        .chain(pod.containers.iter().enumerate().map(|(i, c)| {
            container(
                doc,
                &format!("spec.template.spec.containers[{i}]"),
                c,
                resolve,
            )
        }))
        .collect::<Result<Vec<_>, _>>()?;
    let meshed = containers.iter().any(|c| c.name == PROXY_CONTAINER);
    let service_account = pod
        .service_account_name
        .clone()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(default_service_account);
    let default_policy = default_policy(
        doc,
        "spec.template.metadata.annotations",
        template_meta
            .annotations
            .as_ref()
            .and_then(|a| a.get(DEFAULT_POLICY_ANNOTATION))
            .map(String::as_str),
    )?;
    Ok(DeploymentSpec {
        namespace: namespace_of(doc)?,
        name,
        replicas,
        labels,
        init_containers,
        containers,
        meshed,
        service_account,
        default_policy,
    })
}

/// The default inbound policy an object's annotations set, if they set one.
fn default_policy(
    doc: &Document,
    field: &str,
    value: Option<&str>,
) -> Result<Option<DefaultPolicy>, ManifestError> {
    let Some(value) = value else {
        return Ok(None);
    };
    value
        .parse()
        .map(Some)
        .map_err(|e: conduit_policy::UnknownPolicy| {
            doc.field_error(
                &format!("{field}[\"{DEFAULT_POLICY_ANNOTATION}\"]"),
                e.to_string(),
            )
        })
}

fn port_number(doc: &Document, field: &str, n: i32) -> Result<u16, ManifestError> {
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| doc.field_error(field, format!("{n} is not a port number (1-65535)")))
}

fn container(
    doc: &Document,
    field: &str,
    c: &Container,
    resolve: &Resolve,
) -> Result<ContainerSpec, ManifestError> {
    if !is_dns_label(&c.name) {
        return Err(doc.field_error(
            &format!("{field}.name"),
            format!("{:?} is not a valid container name: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit", c.name),
        ));
    }
    let mut argv = c.command.clone().unwrap_or_default();
    if argv.is_empty() {
        return Err(doc.field_error(
            &format!("{field}.command"),
            format!(
                "missing in container {:?}: the local runtime does not run images, it runs the container's command as a host process",
                c.name
            ),
        ));
    }
    match resolve(&argv[0]) {
        Some(path) => argv[0] = path.display().to_string(),
        None => {
            return Err(doc.field_error(
                &format!("{field}.command[0]"),
                format!(
                    "{:?} was not found next to the conduit binary or on PATH: build or install it first",
                    argv[0]
                ),
            ))
        }
    }
    argv.extend(c.args.clone().unwrap_or_default());
    let mut ports = BTreeMap::new();
    for (i, p) in c.ports.iter().flatten().enumerate() {
        let n = port_number(
            doc,
            &format!("{field}.ports[{i}].containerPort"),
            p.container_port,
        )?;
        if let Some(name) = &p.name {
            ports.insert(name.clone(), n);
        }
    }
    let mut env = Vec::new();
    for (i, e) in c.env.iter().flatten().enumerate() {
        let f = format!("{field}.env[{i}]");
        match (&e.value, &e.value_from) {
            (_, Some(from))
                if from.config_map_key_ref.as_ref().is_some_and(|r| {
                    r.name == TRUST_ROOTS_CONFIGMAP && r.key == TRUST_ROOTS_KEY
                }) =>
            {
                env.push(EnvSpec::MeshTrustRoots {
                    name: e.name.clone(),
                })
            }
            (_, Some(from)) => {
                let path = from.field_ref.as_ref().map(|r| r.field_path.as_str());
                let field = match path {
                    Some("metadata.name") => PodField::Name,
                    Some("metadata.namespace") => PodField::Namespace,
                    Some("status.podIP") => PodField::Ip,
                    Some("spec.serviceAccountName") => PodField::ServiceAccount,
                    _ => {
                        return Err(doc.field_error(
                            &format!("{f}.valueFrom"),
                            format!("only fieldRef to metadata.name, metadata.namespace, status.podIP or spec.serviceAccountName, and configMapKeyRef to the mesh's trust roots ({TRUST_ROOTS_CONFIGMAP}), are supported locally"),
                        ))
                    }
                };
                env.push(EnvSpec::PodField {
                    name: e.name.clone(),
                    field,
                });
            }
            (value, None) => env.push(EnvSpec::Value {
                name: e.name.clone(),
                value: value.clone().unwrap_or_default(),
            }),
        }
    }
    let readiness = c
        .readiness_probe
        .as_ref()
        .map(|p| probe(doc, &format!("{field}.readinessProbe"), p, &ports))
        .transpose()?;
    let run_as_user = c
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user)
        .map(|u| {
            u32::try_from(u).map_err(|_| {
                doc.field_error(
                    &format!("{field}.securityContext.runAsUser"),
                    "out of range",
                )
            })
        })
        .transpose()?;
    let post_start = match c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
        None => None,
        Some(hook) => match hook.exec.as_ref().and_then(|e| e.command.clone()) {
            Some(mut command) if !command.is_empty() => {
                let path = resolve(&command[0]).ok_or_else(|| {
                    doc.field_error(
                        &format!("{field}.lifecycle.postStart.exec.command[0]"),
                        format!(
                            "{:?} was not found next to the conduit binary or on PATH",
                            command[0]
                        ),
                    )
                })?;
                command[0] = path.display().to_string();
                Some(command)
            }
            _ => {
                return Err(doc.field_error(
                    &format!("{field}.lifecycle.postStart"),
                    "only exec hooks with a command are supported locally",
                ))
            }
        },
    };
    Ok(ContainerSpec {
        name: c.name.clone(),
        argv,
        env,
        ports,
        readiness,
        run_as_user,
        sidecar: false,
        after_sidecars: false,
        post_start,
    })
}

fn resolve_port(
    doc: &Document,
    field: &str,
    port: &IntOrString,
    named: &BTreeMap<String, u16>,
) -> Result<u16, ManifestError> {
    match port {
        IntOrString::Int(n) => port_number(doc, field, *n),
        IntOrString::String(name) => named
            .get(name)
            .copied()
            .ok_or_else(|| doc.field_error(field, format!("no container port is named {name:?}"))),
    }
}

fn probe(
    doc: &Document,
    field: &str,
    p: &Probe,
    ports: &BTreeMap<String, u16>,
) -> Result<ProbeSpec, ManifestError> {
    let action = if let Some(h) = &p.http_get {
        ProbeAction::HttpGet {
            port: resolve_port(doc, &format!("{field}.httpGet.port"), &h.port, ports)?,
            path: h.path.clone().unwrap_or_else(|| "/".to_string()),
        }
    } else if let Some(t) = &p.tcp_socket {
        ProbeAction::TcpSocket {
            port: resolve_port(doc, &format!("{field}.tcpSocket.port"), &t.port, ports)?,
        }
    } else {
        return Err(doc.field_error(
            field,
            "only httpGet and tcpSocket probes are supported locally",
        ));
    };
    let secs =
        |v: Option<i32>, default: u32| v.and_then(|v| u32::try_from(v).ok()).unwrap_or(default);
    Ok(ProbeSpec {
        action,
        initial_delay_secs: secs(p.initial_delay_seconds, 0),
        period_secs: secs(p.period_seconds, 10).max(1),
        failure_threshold: secs(p.failure_threshold, 3).max(1),
    })
}

fn service(doc: &Document) -> Result<ServiceSpec, ManifestError> {
    let name = require_name(doc)?;
    let s: Service = doc.to_typed()?;
    let spec = s.spec.ok_or_else(|| doc.field_error("spec", "missing"))?;
    let selector = spec.selector.unwrap_or_default();
    if selector.is_empty() {
        return Err(doc.field_error(
            "spec.selector",
            "missing: the local runtime finds a Service's pods by its selector",
        ));
    }
    let mut ports = Vec::new();
    for (i, p) in spec.ports.iter().flatten().enumerate() {
        let field = format!("spec.ports[{i}]");
        if p.protocol.as_deref().is_some_and(|proto| proto != "TCP") {
            return Err(doc.field_error(
                &format!("{field}.protocol"),
                "only TCP is supported locally",
            ));
        }
        let port = port_number(doc, &format!("{field}.port"), p.port)?;
        let target = match &p.target_port {
            None => TargetPort::Number(port),
            Some(IntOrString::Int(n)) => {
                TargetPort::Number(port_number(doc, &format!("{field}.targetPort"), *n)?)
            }
            Some(IntOrString::String(n)) => TargetPort::Named(n.clone()),
        };
        ports.push(ServicePortSpec {
            name: p.name.clone(),
            port,
            target,
        });
    }
    if ports.is_empty() {
        return Err(doc.field_error("spec.ports", "missing: a Service needs at least one port"));
    }
    Ok(ServiceSpec {
        namespace: namespace_of(doc)?,
        name,
        selector,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: demo
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: example/web:v1
        command: ["web-server"]
        args: ["--port", "8080"]
        env:
        - {name: MODE, value: fast}
        - name: MY_POD
          valueFrom: {fieldRef: {fieldPath: metadata.name}}
        ports:
        - {name: http, containerPort: 8080}
        readinessProbe:
          httpGet: {path: /healthz, port: http}
          periodSeconds: 2
---
apiVersion: v1
kind: Service
metadata:
  name: web-svc
  namespace: demo
spec:
  selector: {app: web}
  ports:
  - {port: 80, targetPort: http}
"#;

    fn anywhere(name: &str) -> Option<std::path::PathBuf> {
        (name != "missing-program").then(|| format!("/opt/bin/{name}").into())
    }

    #[test]
    fn reads_deployments_and_services() {
        let spec = AppSpec::from_manifest(APP, "app.yaml", &anywhere).unwrap();
        let d = &spec.deployments[0];
        assert_eq!(
            (d.namespace.as_str(), d.name.as_str(), d.replicas),
            ("demo", "web", 2)
        );
        assert!(!d.meshed);
        let c = &d.containers[0];
        assert_eq!(c.argv, ["/opt/bin/web-server", "--port", "8080"]);
        assert_eq!(
            c.env[1],
            EnvSpec::PodField {
                name: "MY_POD".into(),
                field: PodField::Name
            }
        );
        assert_eq!(
            c.readiness.as_ref().unwrap().action,
            ProbeAction::HttpGet {
                port: 8080,
                path: "/healthz".into()
            }
        );
        let s = &spec.services[0];
        assert_eq!(s.ports[0].target, TargetPort::Named("http".into()));
        assert_eq!(s.selector["app"], "web");
    }

    #[test]
    fn refuses_what_it_cannot_run_naming_document_and_field() {
        let cases = [
            (APP.replace("        command: [\"web-server\"]\n", ""), "document 2 (Deployment web): spec.template.spec.containers[0].command: missing"),
            (APP.replace("kind: Service", "kind: ConfigMap"), "document 3 (ConfigMap web-svc): kind: v1 ConfigMap is not something the local runtime runs"),
            (APP.replace("port: http}\n          periodSeconds", "port: nope}\n          periodSeconds"), "readinessProbe.httpGet.port: no container port is named \"nope\""),
            (APP.replace("replicas: 2", "replicas: two"), "document 2 (Deployment web)"),
            (APP.replace("  selector: {app: web}\n  ports", "  ports"), "spec.selector: missing"),
            ("a: [1\n".to_string(), "not valid YAML"),
            (APP.replace("[\"web-server\"]", "[\"missing-program\"]"), "containers[0].command[0]: \"missing-program\" was not found"),
            // Names become file and namespace names: nothing a path could be made of.
            (APP.replace("  name: web\n  namespace: demo", "  name: web\n  namespace: ../../x"), "metadata.namespace: \"../../x\" is not a valid namespace"),
            (APP.replace("  name: web\n  namespace: demo", "  name: ../web\n  namespace: demo"), "metadata.name: \"../web\" is not a valid name"),
            (APP.replace("  name: web\n  namespace: demo", "  name: a..b\n  namespace: demo"), "metadata.name: \"a..b\" is not a valid name"),
            (APP.replace("      - name: web\n", "      - name: web/../../etc\n"), "containers[0].name: \"web/../../etc\" is not a valid container name"),
            (APP.replace("  name: web-svc\n  namespace: demo", "  name: web-svc\n  namespace: Demo"), "document 3 (Service web-svc): metadata.namespace: \"Demo\" is not a valid namespace"),
        ];
        for (text, expected) in cases {
            let err = AppSpec::from_manifest(&text, "app.yaml", &anywhere)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{err}\n  should contain: {expected}"
            );
        }
    }

    const POLICY: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: demo
  annotations: {config.conduit.io/default-inbound-policy: all-authenticated}
---
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: web-http, namespace: demo}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
---
apiVersion: policy.conduit.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: web-from-bot, namespace: demo}
spec:
  targetRef: {kind: Server, name: web-http}
  allow:
  - serviceAccount: {name: bot}
"#;

    #[test]
    fn reads_post_start_exec_hooks_and_refuses_others() {
        let hooked = |hook: &str| {
            APP.replace(
                "        readinessProbe:\n",
                &format!("        lifecycle: {{postStart: {hook}}}\n        readinessProbe:\n"),
            )
        };
        let spec = AppSpec::from_manifest(
            &hooked("{exec: {command: [conduit-proxy, await]}}"),
            "app.yaml",
            &anywhere,
        )
        .unwrap();
        assert_eq!(
            spec.deployments[0].containers[0].post_start,
            Some(vec![
                "/opt/bin/conduit-proxy".to_string(),
                "await".to_string()
            ])
        );
        let err = AppSpec::from_manifest(
            &hooked("{httpGet: {path: /, port: 80}}"),
            "app.yaml",
            &anywhere,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("spec.template.spec.containers[0].lifecycle.postStart: only exec hooks with a command are supported locally"),
            "{err}"
        );
        let err = AppSpec::from_manifest(
            &hooked("{exec: {command: [missing-program]}}"),
            "app.yaml",
            &anywhere,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("postStart.exec.command[0]: \"missing-program\" was not found"),
            "{err}"
        );
    }

    #[test]
    fn reads_policy_and_default_policy_annotations() {
        let text = APP.replace(
            "      labels: {app: web}\n",
            "      labels: {app: web}\n      annotations: {config.conduit.io/default-inbound-policy: deny}\n",
        ) + "---" + POLICY;
        let spec = AppSpec::from_manifest(&text, "app.yaml", &anywhere).unwrap();
        assert_eq!(
            spec.deployments[0].default_policy,
            Some(DefaultPolicy::Deny)
        );
        assert_eq!(
            spec.policy.namespace_defaults["demo"],
            DefaultPolicy::AllAuthenticated
        );
        assert_eq!(spec.policy.servers[0].name, "web-http");
        let profile = "apiVersion: conduit.io/v1alpha1\nkind: ServiceProfile\nmetadata: {name: web-svc.demo.svc.cluster.local, namespace: demo}\nspec:\n  routes: [{name: all, condition: {pathRegex: /.*}, timeout: 1s}]\n";
        let mut merged = spec.clone();
        merged.merge(AppSpec::from_manifest(profile, "profile.yaml", &anywhere).unwrap());
        assert_eq!(merged.profiles[0].routes[0].timeout_ms, Some(1000));
        let route = |weight: i32| {
            format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: split, namespace: demo}}\nspec:\n  parentRefs: [{{group: \"\", kind: Service, name: web-svc}}]\n  rules: [{{backendRefs: [{{name: canary, port: 80, weight: {weight}}}]}}]\n")
        };
        merged.merge(AppSpec::from_manifest(&route(5), "route.yaml", &anywhere).unwrap());
        merged.merge(AppSpec::from_manifest(&route(7), "route.yaml", &anywhere).unwrap());
        assert_eq!(merged.http_routes.len(), 1, "replaced by name");
        assert_eq!(merged.http_routes[0].rules[0].backends[0].weight, 7);
        let err = AppSpec::from_manifest(&route(-7), "route.yaml", &anywhere).unwrap_err();
        assert!(err.to_string().contains("route.yaml, document 1 (HTTPRoute split): spec.rules[0].backendRefs[0].weight: -7 is not a weight"), "{err}");
        assert_eq!(spec.policy.authorization_policies[0].server, "web-http");

        let bad = POLICY.replace("all-authenticated}", "everyone}");
        let err = AppSpec::from_manifest(&bad, "p.yaml", &anywhere)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("document 1 (Namespace demo): metadata.annotations[\"config.conduit.io/default-inbound-policy\"]: unknown default inbound policy \"everyone\""),
            "{err}"
        );
        let bad = POLICY.replace("port: http", "port: -1");
        let err = AppSpec::from_manifest(&bad, "p.yaml", &anywhere)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("document 2 (Server web-http): spec.port"),
            "{err}"
        );
    }

    #[test]
    fn merging_replaces_objects_by_name() {
        let mut a = AppSpec::from_manifest(APP, "a.yaml", &anywhere).unwrap();
        let b = AppSpec::from_manifest(
            &APP.replace("replicas: 2", "replicas: 3"),
            "b.yaml",
            &anywhere,
        )
        .unwrap();
        a.merge(b);
        assert_eq!(a.deployments.len(), 1);
        assert_eq!(a.deployments[0].replicas, 3);
        assert_eq!(a.services.len(), 1);
    }
}
