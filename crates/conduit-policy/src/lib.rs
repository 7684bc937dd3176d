//! Authorization policy: who may connect to a meshed pod's ports. A pod's policy is a
//! default for ports no Server selects (`all-unauthenticated`, `all-authenticated`,
//! `cluster-authenticated` or `deny`) and, for each port a Server selects, the
//! AuthorizationPolicies that target that Server: a client they do not allow is denied.
//! The kubelet's (or the local runtime's) probes are always allowed. The controller
//! resolves the resources into a [`PodPolicy`] (`conduit_k8s::policy`); the proxy only
//! evaluates it.

pub mod wire;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::{borrow::Cow, net::IpAddr};

/// The default policies and probe paths are `conduit-api`'s: their names are what the
/// annotation, the controller's flag, the proxy's variable and install's value say.
pub use conduit_api::inbound::{DefaultPolicy, Probe, UnknownPolicy};

/// How a Server says its port's traffic should be treated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ServerProtocol {
    #[serde(rename = "HTTP/1")]
    Http1,
    #[serde(rename = "HTTP/2")]
    Http2,
    #[serde(rename = "gRPC")]
    Grpc,
    /// Opaque TCP: no protocol detection.
    #[serde(rename = "opaque")]
    Opaque,
    /// Detect it.
    #[serde(rename = "unknown")]
    Unknown,
}

impl ServerProtocol {
    /// The name, as in manifests.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerProtocol::Http1 => "HTTP/1",
            ServerProtocol::Http2 => "HTTP/2",
            ServerProtocol::Grpc => "gRPC",
            ServerProtocol::Opaque => "opaque",
            ServerProtocol::Unknown => "unknown",
        }
    }

    /// The protocol named `s`, as in manifests.
    pub fn parse(s: &str) -> Option<ServerProtocol> {
        [
            ServerProtocol::Http1,
            ServerProtocol::Http2,
            ServerProtocol::Grpc,
            ServerProtocol::Opaque,
            ServerProtocol::Unknown,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// One way in: clients it lets through.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorization {
    /// The AuthorizationPolicy it comes from (`namespace/name`), or a default's name.
    pub name: String,
    /// Mesh identities allowed (ServiceAccounts resolved to theirs).
    pub identities: Vec<String>,
    /// Any client with a mesh identity.
    pub all_authenticated: bool,
    /// Clients from these networks, authenticated or not.
    pub networks: Vec<IpNet>,
}

/// A port a Server selects, with what may reach it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerPolicy {
    /// The Server (`namespace/name`).
    pub name: String,
    pub port: u16,
    pub protocol: Option<ServerProtocol>,
    pub authorizations: Vec<Authorization>,
}

/// Everything a pod's inbound proxy needs to decide who may connect.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodPolicy {
    pub default: DefaultPolicy,
    pub servers: Vec<ServerPolicy>,
    pub probes: Vec<Probe>,
    /// The cluster's networks, for `cluster-authenticated`.
    pub cluster_networks: Vec<IpNet>,
    /// The Services that send to the pod.
    #[serde(default)]
    pub services: Vec<PodService>,
}

/// A Service port that sends to the pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodService {
    pub name: String,
    pub namespace: String,
    /// The port clients name.
    pub port: u16,
    /// The pod's port the Service sends to.
    pub target_port: u16,
}

impl PodService {
    /// Whether `authority` (`host[:port]`, any case) names this Service, as a client in
    /// the cluster may: `name`, `name.ns`, `name.ns.svc` or `name.ns.svc.<cluster domain>`,
    /// with the Service's port or none.
    pub fn is_named_by(&self, authority: &str) -> bool {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => match port.parse::<u16>() {
                Ok(p) => (host, Some(p)),
                Err(_) => return false,
            },
            None => (authority, None),
        };
        if port.is_some_and(|p| p != self.port) {
            return false;
        }
        let mut labels = host.split('.');
        if !labels
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(&self.name))
        {
            return false;
        }
        match labels.next() {
            None => return true,
            Some(ns) if ns.eq_ignore_ascii_case(&self.namespace) => {}
            Some(_) => return false,
        }
        match labels.next() {
            None => true,
            Some(svc) if svc.eq_ignore_ascii_case("svc") => {
                // The cluster domain, if named, is one or more non-empty DNS labels.
                labels.all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
            }
            Some(_) => false,
        }
    }
}

/// A client, as the inbound proxy knows it.
#[derive(Clone, Copy, Debug)]
pub struct Client<'a> {
    pub ip: IpAddr,
    /// The identity its mesh TLS certificate proves; `None` for plaintext.
    pub identity: Option<&'a str>,
}

/// The answer for a client on a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Let in by this authorization (a default policy's name, or `namespace/name`).
    Allow {
        server: Option<String>,
        /// Borrowed for a default policy: authorizing under one allocates nothing (it is
        /// decided on every request).
        authz: Cow<'static, str>,
    },
    /// Kept out; `reason` says why in words a user can act on.
    Deny {
        server: Option<String>,
        reason: String,
    },
}

impl Decision {
    /// Whether the client may connect.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The Server that governs the port, if one does.
    pub fn server(&self) -> Option<&str> {
        match self {
            Decision::Allow { server, .. } | Decision::Deny { server, .. } => server.as_deref(),
        }
    }
}

impl Authorization {
    fn allows(&self, client: Client<'_>) -> bool {
        let authenticated = client.identity.is_some();
        (self.all_authenticated && authenticated)
            || client
                .identity
                .is_some_and(|id| self.identities.iter().any(|i| i == id))
            || self.networks.iter().any(|n| n.contains(&client.ip))
    }
}

fn describe(client: Client<'_>) -> String {
    match client.identity {
        Some(id) => format!("client {id} (at {})", client.ip),
        None => format!("unauthenticated client {} (no mesh TLS)", client.ip),
    }
}

impl PodPolicy {
    /// The Server that selects `port`, if any.
    pub fn server(&self, port: u16) -> Option<&ServerPolicy> {
        self.servers.iter().find(|s| s.port == port)
    }

    /// Whether `authority`, arriving at the pod's `port`, names one of the Services that
    /// send to that port.
    pub fn names_own_service(&self, authority: &str, port: u16) -> bool {
        self.services
            .iter()
            .any(|s| s.target_port == port && s.is_named_by(authority))
    }

    /// Whether `path` on `port` is one of the pod's probes.
    pub fn is_probe(&self, port: u16, path: &str) -> bool {
        self.probes.iter().any(|p| p.port == port && p.path == path)
    }

    /// May `client` connect to `port`?
    pub fn authorize(&self, port: u16, client: Client<'_>) -> Decision {
        if let Some(server) = self.server(port) {
            let name = Some(server.name.clone());
            return match server.authorizations.iter().find(|a| a.allows(client)) {
                Some(a) => Decision::Allow {
                    server: name,
                    authz: Cow::Owned(a.name.clone()),
                },
                None if server.authorizations.is_empty() => Decision::Deny {
                    server: name,
                    reason: format!(
                        "Server {} selects port {port} and no AuthorizationPolicy targets it, so nobody may connect",
                        server.name
                    ),
                },
                None => Decision::Deny {
                    server: name,
                    reason: format!(
                        "{} is not allowed by any AuthorizationPolicy of Server {} (port {port})",
                        describe(client),
                        server.name
                    ),
                },
            };
        }
        let allowed = match self.default {
            DefaultPolicy::AllUnauthenticated => true,
            DefaultPolicy::AllAuthenticated => client.identity.is_some(),
            DefaultPolicy::ClusterAuthenticated => {
                client.identity.is_some()
                    || self.cluster_networks.iter().any(|n| n.contains(&client.ip))
            }
            DefaultPolicy::Deny => false,
        };
        if allowed {
            Decision::Allow {
                server: None,
                authz: Cow::Borrowed(self.default.authz_name()),
            }
        } else {
            Decision::Deny {
                server: None,
                reason: format!(
                    "{} is not allowed on port {port} by the default policy {}",
                    describe(client),
                    self.default
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &str = "web.emojivoto.serviceaccount.identity.conduit.cluster.local";
    const BOT: &str = "vote-bot.emojivoto.serviceaccount.identity.conduit.cluster.local";

    fn client(ip: &str, identity: Option<&'static str>) -> Client<'static> {
        Client {
            ip: ip.parse().unwrap(),
            identity,
        }
    }

    #[test]
    fn a_pods_own_services_are_named_in_every_form_a_client_may_use_and_nothing_else() {
        let p = PodPolicy {
            services: vec![PodService {
                name: "web-svc".into(),
                namespace: "emojivoto".into(),
                port: 80,
                target_port: 8080,
            }],
            ..PodPolicy::default()
        };
        for named in [
            "web-svc",
            "web-svc:80",
            "WEB-svc.emojivoto",
            "web-svc.emojivoto:80",
            "web-svc.emojivoto.svc",
            "web-svc.emojivoto.svc.cluster.local",
            "web-svc.emojivoto.svc.cluster.local:80",
        ] {
            assert!(p.names_own_service(named, 8080), "{named}");
            assert!(!p.names_own_service(named, 9090), "{named} on another port");
        }
        for other in [
            "web-svc:81",
            "web-svc:",
            "web-svc:http",
            "web-svc.other",
            "web-svc.emojivoto.cluster",
            "web-svc.emojivoto.svc.cluster.local.",
            "web-svc.emojivoto.svc..local",
            "web-svcx.emojivoto",
            "198.18.0.4:8080",
            "",
        ] {
            assert!(!p.names_own_service(other, 8080), "{other}");
        }
    }

    #[test]
    fn defaults_decide_ports_no_server_selects() {
        let mut p = PodPolicy {
            cluster_networks: vec!["10.0.0.0/8".parse().unwrap()],
            ..PodPolicy::default()
        };
        let (inside, outside, meshed) = (
            client("10.1.2.3", None),
            client("192.0.2.1", None),
            client("192.0.2.1", Some(WEB)),
        );
        let allowed = |p: &PodPolicy, c| p.authorize(8080, c).is_allowed();
        assert!(allowed(&p, inside) && allowed(&p, outside) && allowed(&p, meshed));
        p.default = DefaultPolicy::AllAuthenticated;
        assert!(!allowed(&p, inside) && !allowed(&p, outside) && allowed(&p, meshed));
        p.default = DefaultPolicy::ClusterAuthenticated;
        assert!(allowed(&p, inside) && !allowed(&p, outside) && allowed(&p, meshed));
        p.default = DefaultPolicy::Deny;
        assert!(!allowed(&p, inside) && !allowed(&p, outside) && !allowed(&p, meshed));
        let Decision::Deny { reason, .. } = p.authorize(8080, outside) else {
            panic!()
        };
        assert_eq!(
            reason,
            "unauthenticated client 192.0.2.1 (no mesh TLS) is not allowed on port 8080 by the default policy deny"
        );
    }

    #[test]
    fn a_server_lets_in_only_what_its_policies_allow() {
        let mut p = PodPolicy {
            servers: vec![ServerPolicy {
                name: "emojivoto/voting-grpc".into(),
                port: 8080,
                protocol: Some(ServerProtocol::Grpc),
                authorizations: vec![],
            }],
            ..PodPolicy::default()
        };
        // Selected, but no policy: nobody, whatever the default says.
        let d = p.authorize(8080, client("10.0.0.9", Some(WEB)));
        assert!(!d.is_allowed());
        assert_eq!(d.server(), Some("emojivoto/voting-grpc"));
        // Other ports keep the default.
        assert!(p.authorize(9090, client("10.0.0.9", None)).is_allowed());

        p.servers[0].authorizations.push(Authorization {
            name: "emojivoto/voting-from-web".into(),
            identities: vec![WEB.into()],
            ..Authorization::default()
        });
        assert_eq!(
            p.authorize(8080, client("10.0.0.9", Some(WEB))),
            Decision::Allow {
                server: Some("emojivoto/voting-grpc".into()),
                authz: "emojivoto/voting-from-web".into()
            }
        );
        let Decision::Deny { reason, .. } = p.authorize(8080, client("10.0.0.7", Some(BOT))) else {
            panic!()
        };
        assert!(
            reason.starts_with(&format!("client {BOT} (at 10.0.0.7) is not allowed")),
            "{reason}"
        );
        assert!(!p.authorize(8080, client("10.0.0.9", None)).is_allowed());

        p.servers[0].authorizations.push(Authorization {
            name: "emojivoto/monitoring".into(),
            networks: vec!["192.0.2.0/24".parse().unwrap()],
            ..Authorization::default()
        });
        assert!(p.authorize(8080, client("192.0.2.8", None)).is_allowed());
        p.servers[0].authorizations.push(Authorization {
            name: "emojivoto/meshed".into(),
            all_authenticated: true,
            ..Authorization::default()
        });
        assert!(p
            .authorize(8080, client("10.0.0.7", Some(BOT)))
            .is_allowed());
    }

    #[test]
    fn protocol_names_parse() {
        assert_eq!(ServerProtocol::parse("gRPC"), Some(ServerProtocol::Grpc));
        assert_eq!(ServerProtocol::parse("grpc"), None);
    }
}
