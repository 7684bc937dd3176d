//! The policy resources as users write them (`policy.conduit.io/v1alpha1` Server and
//! AuthorizationPolicy), read from manifests with every mistake named, and resolved into
//! a pod's [`PodPolicy`]: which Servers select the pod's ports, which policies target
//! them, ServiceAccounts turned into identities, and the default that applies.
//!
//! ```yaml
//! apiVersion: policy.conduit.io/v1alpha1
//! kind: Server
//! metadata: {name: voting-grpc, namespace: emojivoto}
//! spec:
//!   podSelector: {matchLabels: {app: voting-svc}}
//!   port: grpc            # a number, or a container port's name
//!   proxyProtocol: gRPC   # optional: HTTP/1, HTTP/2, gRPC, opaque or unknown
//! ---
//! apiVersion: policy.conduit.io/v1alpha1
//! kind: AuthorizationPolicy
//! metadata: {name: voting-from-web, namespace: emojivoto}
//! spec:
//!   targetRef: {kind: Server, name: voting-grpc}
//!   allow:                 # any one of these lets a client in
//!   - serviceAccount: {name: web}    # namespace: the policy's, unless given
//!   - identity: web.emojivoto.serviceaccount.identity.conduit.cluster.local
//!   - allAuthenticated: true
//!   - network: 10.0.0.0/8
//! ```

use crate::manifest::{Document, ManifestError};
use conduit_policy::{
    Authorization, DefaultPolicy, PodPolicy, Probe, ServerPolicy, ServerProtocol,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The API group and version of the policy resources.
pub const API_VERSION: &str = "policy.conduit.io/v1alpha1";

/// Every policy resource, and Namespaces' default policies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub servers: Vec<Server>,
    pub authorization_policies: Vec<AuthorizationPolicy>,
    /// Namespaces annotated with a default inbound policy.
    pub namespace_defaults: BTreeMap<String, DefaultPolicy>,
}

/// A Server: a port of the pods its selector matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub namespace: String,
    pub name: String,
    pub pod_selector: BTreeMap<String, String>,
    pub port: PortRef,
    pub protocol: Option<ServerProtocol>,
}

/// A port by number or by a container port's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

/// An AuthorizationPolicy: who may reach a Server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationPolicy {
    pub namespace: String,
    pub name: String,
    /// The Server it targets, in its namespace.
    pub server: String,
    pub allow: Vec<Allow>,
}

/// One kind of client an AuthorizationPolicy lets in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Allow {
    ServiceAccount { namespace: String, name: String },
    Identity(String),
    AllAuthenticated,
    Network(IpNet),
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ServerSpecDoc {
    pod_selector: SelectorDoc,
    port: serde_json::Value,
    #[serde(default)]
    proxy_protocol: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SelectorDoc {
    #[serde(default)]
    match_labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthzSpecDoc {
    target_ref: TargetRefDoc,
    #[serde(default)]
    allow: Vec<AllowDoc>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetRefDoc {
    #[serde(default)]
    group: Option<String>,
    kind: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AllowDoc {
    #[serde(default)]
    service_account: Option<ServiceAccountDoc>,
    #[serde(default)]
    identity: Option<String>,
    #[serde(default)]
    all_authenticated: Option<bool>,
    #[serde(default)]
    network: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceAccountDoc {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

fn name_and_namespace(doc: &Document) -> Result<(String, String), ManifestError> {
    let name = doc
        .name()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| doc.field_error("metadata.name", "missing"))?;
    Ok((
        name.to_string(),
        doc.namespace().unwrap_or("default").to_string(),
    ))
}

/// Reads a Server.
pub fn server(doc: &Document) -> Result<Server, ManifestError> {
    let (name, namespace) = name_and_namespace(doc)?;
    let s: ServerSpecDoc = doc.spec()?;
    if s.pod_selector.match_labels.is_empty() {
        return Err(doc.field_error(
            "spec.podSelector.matchLabels",
            "empty: a Server must select pods by at least one label",
        ));
    }
    let port = match &s.port {
        serde_json::Value::Number(n) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(p) if p > 0 => PortRef::Number(p),
            _ => return Err(doc.field_error("spec.port", format!("{n} is not a port (1-65535)"))),
        },
        serde_json::Value::String(s) if !s.is_empty() => match s.parse::<u16>() {
            Ok(p) if p > 0 => PortRef::Number(p),
            _ => PortRef::Name(s.clone()),
        },
        other => {
            return Err(doc.field_error(
                "spec.port",
                format!("{other} is neither a port number nor a container port's name"),
            ))
        }
    };
    let protocol = match s.proxy_protocol.as_deref() {
        None => None,
        Some(p) => Some(ServerProtocol::parse(p).ok_or_else(|| {
            doc.field_error(
                "spec.proxyProtocol",
                format!("{p:?} is not one of HTTP/1, HTTP/2, gRPC, opaque, unknown"),
            )
        })?),
    };
    Ok(Server {
        namespace,
        name,
        pod_selector: s.pod_selector.match_labels,
        port,
        protocol,
    })
}

/// Reads an AuthorizationPolicy.
pub fn authorization_policy(doc: &Document) -> Result<AuthorizationPolicy, ManifestError> {
    let (name, namespace) = name_and_namespace(doc)?;
    let s: AuthzSpecDoc = doc.spec()?;
    let group_ok = s
        .target_ref
        .group
        .as_deref()
        .is_none_or(|g| g == "policy.conduit.io");
    if s.target_ref.kind != "Server" || !group_ok {
        return Err(doc.field_error(
            "spec.targetRef",
            format!(
                "targets a {}: an AuthorizationPolicy targets a Server (kind: Server)",
                s.target_ref.kind
            ),
        ));
    }
    if s.allow.is_empty() {
        return Err(doc.field_error(
            "spec.allow",
            "empty: list the clients to allow (serviceAccount, identity, allAuthenticated or network); to deny everyone, leave the Server without policies",
        ));
    }
    let mut allow = Vec::new();
    for (i, a) in s.allow.into_iter().enumerate() {
        let field = format!("spec.allow[{i}]");
        let set = [
            a.service_account.is_some(),
            a.identity.is_some(),
            a.all_authenticated.is_some(),
            a.network.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if set != 1 {
            return Err(doc.field_error(
                &field,
                "must have exactly one of serviceAccount, identity, allAuthenticated, network",
            ));
        }
        allow.push(if let Some(sa) = a.service_account {
            Allow::ServiceAccount {
                namespace: sa.namespace.unwrap_or_else(|| namespace.clone()),
                name: sa.name,
            }
        } else if let Some(id) = a.identity {
            if conduit_identity::parse_identity(&id).is_none() {
                return Err(doc.field_error(
                    &format!("{field}.identity"),
                    format!(
                        "{id:?} is not a mesh identity (<serviceaccount>.<namespace>.{})",
                        conduit_identity::IDENTITY_SUFFIX
                    ),
                ));
            }
            Allow::Identity(id)
        } else if let Some(all) = a.all_authenticated {
            if !all {
                return Err(doc.field_error(
                    &format!("{field}.allAuthenticated"),
                    "false allows nobody: remove the entry instead",
                ));
            }
            Allow::AllAuthenticated
        } else {
            let net = a.network.unwrap_or_default();
            Allow::Network(net.parse::<IpNet>().map_err(|_| {
                doc.field_error(
                    &format!("{field}.network"),
                    format!("{net:?} is not a network in CIDR form, like 10.0.0.0/8"),
                )
            })?)
        });
    }
    Ok(AuthorizationPolicy {
        namespace,
        name,
        server: s.target_ref.name,
        allow,
    })
}

/// What the policy of a pod depends on.
pub struct PodFacts<'a> {
    pub namespace: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    /// Its containers' named ports.
    pub named_ports: &'a BTreeMap<String, u16>,
    /// HTTP paths probed, by port.
    pub probes: &'a [Probe],
    /// The pod's own default (its annotation), if set.
    pub default: Option<DefaultPolicy>,
}

/// The policy of one pod: the Servers of its namespace that select it, with the
/// policies that target them; the pod's default, else its namespace's, else the
/// cluster's.
pub fn pod_policy(
    pod: &PodFacts<'_>,
    resources: &Resources,
    cluster_default: DefaultPolicy,
    cluster_networks: &[IpNet],
) -> PodPolicy {
    let mut selected: Vec<ServerPolicy> = Vec::new();
    for s in resources
        .servers
        .iter()
        .filter(|s| s.namespace == pod.namespace)
    {
        if !s
            .pod_selector
            .iter()
            .all(|(k, v)| pod.labels.get(k) == Some(v))
        {
            continue;
        }
        let port = match &s.port {
            PortRef::Number(p) => *p,
            PortRef::Name(n) => match pod.named_ports.get(n) {
                Some(p) => *p,
                None => continue,
            },
        };
        // Two Servers on one port: the first by name wins, as a stable rule.
        if selected.iter().any(|x| x.port == port) {
            continue;
        }
        let authorizations = resources
            .authorization_policies
            .iter()
            .filter(|p| p.namespace == s.namespace && p.server == s.name)
            .map(authorization)
            .collect();
        selected.push(ServerPolicy {
            name: format!("{}/{}", s.namespace, s.name),
            port,
            protocol: s.protocol,
            authorizations,
        });
    }
    PodPolicy {
        default: pod
            .default
            .or_else(|| resources.namespace_defaults.get(pod.namespace).copied())
            .unwrap_or(cluster_default),
        servers: selected,
        probes: pod.probes.to_vec(),
        cluster_networks: cluster_networks.to_vec(),
        // Discovery's to add: Services are not policy resources.
        services: Vec::new(),
    }
}

fn authorization(p: &AuthorizationPolicy) -> Authorization {
    let mut a = Authorization {
        name: format!("{}/{}", p.namespace, p.name),
        ..Authorization::default()
    };
    for allow in &p.allow {
        match allow {
            Allow::ServiceAccount { namespace, name } => a
                .identities
                .push(conduit_identity::identity_name(name, namespace)),
            Allow::Identity(id) => a.identities.push(id.clone()),
            Allow::AllAuthenticated => a.all_authenticated = true,
            Allow::Network(n) => a.networks.push(*n),
        }
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use conduit_policy::{Client, Decision};

    const DOCS: &str = r#"
apiVersion: policy.conduit.io/v1alpha1
kind: Server
metadata: {name: voting-grpc, namespace: emojivoto}
spec:
  podSelector: {matchLabels: {app: voting-svc}}
  port: grpc
  proxyProtocol: gRPC
---
apiVersion: policy.conduit.io/v1alpha1
kind: AuthorizationPolicy
metadata: {name: voting-from-web, namespace: emojivoto}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: voting-grpc}
  allow:
  - serviceAccount: {name: web}
  - network: 192.0.2.0/24
"#;

    fn docs(text: &str) -> Vec<Document> {
        manifest::parse(text, "policy.yml").unwrap()
    }

    #[test]
    fn resources_resolve_into_a_pods_policy() {
        let d = docs(DOCS);
        let s = server(&d[0]).unwrap();
        assert_eq!(s.port, PortRef::Name("grpc".into()));
        assert_eq!(s.protocol, Some(ServerProtocol::Grpc));
        let p = authorization_policy(&d[1]).unwrap();
        assert_eq!(
            p.allow[0],
            Allow::ServiceAccount {
                namespace: "emojivoto".into(),
                name: "web".into()
            }
        );
        let labels = BTreeMap::from([("app".to_string(), "voting-svc".to_string())]);
        let ports = BTreeMap::from([("grpc".to_string(), 8080)]);
        let probes = [Probe {
            port: 8801,
            path: "/ready".into(),
        }];
        let facts = PodFacts {
            namespace: "emojivoto",
            labels: &labels,
            named_ports: &ports,
            probes: &probes,
            default: None,
        };
        let resources = Resources {
            servers: vec![s],
            authorization_policies: vec![p],
            namespace_defaults: BTreeMap::from([(
                "emojivoto".to_string(),
                DefaultPolicy::AllAuthenticated,
            )]),
        };
        let policy = pod_policy(&facts, &resources, DefaultPolicy::AllUnauthenticated, &[]);
        assert_eq!(
            policy.default,
            DefaultPolicy::AllAuthenticated,
            "the namespace's default"
        );
        assert_eq!(policy.servers.len(), 1);
        assert_eq!(policy.servers[0].port, 8080, "the named port, resolved");
        assert_eq!(
            policy.servers[0].authorizations[0].identities,
            ["web.emojivoto.serviceaccount.identity.conduit.cluster.local"]
        );
        assert!(policy
            .authorize(
                8080,
                Client {
                    ip: "10.0.0.1".parse().unwrap(),
                    identity: Some("web.emojivoto.serviceaccount.identity.conduit.cluster.local")
                }
            )
            .is_allowed());
        assert!(matches!(
            policy.authorize(
                8080,
                Client {
                    ip: "10.0.0.1".parse().unwrap(),
                    identity: Some(
                        "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local"
                    )
                }
            ),
            Decision::Deny { .. }
        ));
        assert!(policy.is_probe(8801, "/ready"));

        // Another pod (other labels, or another namespace) is not selected.
        let other = BTreeMap::from([("app".to_string(), "web-svc".to_string())]);
        let facts = PodFacts {
            labels: &other,
            default: Some(DefaultPolicy::Deny),
            ..facts
        };
        let policy = pod_policy(&facts, &resources, DefaultPolicy::AllUnauthenticated, &[]);
        assert!(policy.servers.is_empty());
        assert_eq!(
            policy.default,
            DefaultPolicy::Deny,
            "the pod's own default wins"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            (
                DOCS.replace("port: grpc", "port: 70000"),
                "spec.port",
                "70000 is not a port",
            ),
            (
                DOCS.replace("proxyProtocol: gRPC", "proxyProtocol: grpc"),
                "spec.proxyProtocol",
                "\"grpc\" is not one of",
            ),
            (
                DOCS.replace("{matchLabels: {app: voting-svc}}", "{matchLabels: {}}"),
                "spec.podSelector.matchLabels",
                "empty",
            ),
            (
                DOCS.replace("podSelector:", "podSelektor:"),
                "spec",
                "unknown field `podSelektor`",
            ),
            (
                DOCS.replace("kind: Server, name", "kind: Deployment, name"),
                "spec.targetRef",
                "targets a Deployment",
            ),
            (
                DOCS.replace("network: 192.0.2.0/24", "network: 192.0.2.0"),
                "spec.allow[1].network",
                "not a network in CIDR form",
            ),
            (
                DOCS.replace(
                    "- network: 192.0.2.0/24",
                    "- {network: 192.0.2.0/24, identity: x}",
                ),
                "spec.allow[1]",
                "exactly one of",
            ),
            (
                DOCS.replace("- network: 192.0.2.0/24", "- identity: web.emojivoto"),
                "spec.allow[1].identity",
                "not a mesh identity",
            ),
        ];
        for (text, field, problem) in cases {
            let d = docs(&text);
            let err = server(&d[0])
                .err()
                .or_else(|| authorization_policy(&d[1]).err())
                .expect("an error");
            let msg = err.to_string();
            assert!(
                msg.contains(field) && msg.contains(problem),
                "{msg} should name {field}: {problem}"
            );
        }
    }
}
