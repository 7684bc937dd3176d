//! A [`PodPolicy`] on the wire (`conduit.policy.v1`) and back. Reading checks what the
//! types cannot: ports in range, networks in CIDR form, protocols by name.

use crate::{
    Authorization, DefaultPolicy, PodPolicy, PodService, Probe, ServerPolicy, ServerProtocol,
};
use conduit_api::policy as pb;
use ipnet::IpNet;

/// A policy from the wire that does not make sense.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("port {0} is out of range")]
    Port(u32),
    #[error("{0:?} is not a network in CIDR form")]
    Network(String),
    #[error("{0:?} is not a proxy protocol")]
    Protocol(String),
}

fn port(p: u32) -> Result<u16, WireError> {
    u16::try_from(p)
        .ok()
        .filter(|p| *p > 0)
        .ok_or(WireError::Port(p))
}

fn networks(nets: &[String]) -> Result<Vec<IpNet>, WireError> {
    nets.iter()
        .map(|n| n.parse().map_err(|_| WireError::Network(n.clone())))
        .collect()
}

/// The policy as sent to proxies.
pub fn to_proto(p: &PodPolicy) -> pb::PodPolicy {
    pb::PodPolicy {
        default: match p.default {
            DefaultPolicy::AllUnauthenticated => pb::DefaultPolicy::AllUnauthenticated,
            DefaultPolicy::AllAuthenticated => pb::DefaultPolicy::AllAuthenticated,
            DefaultPolicy::ClusterAuthenticated => pb::DefaultPolicy::ClusterAuthenticated,
            DefaultPolicy::Deny => pb::DefaultPolicy::Deny,
        } as i32,
        servers: p
            .servers
            .iter()
            .map(|s| pb::ServerPolicy {
                name: s.name.clone(),
                port: u32::from(s.port),
                protocol: s
                    .protocol
                    .map(|p| p.as_str().to_string())
                    .unwrap_or_default(),
                authorizations: s
                    .authorizations
                    .iter()
                    .map(|a| pb::Authorization {
                        name: a.name.clone(),
                        identities: a.identities.clone(),
                        all_authenticated: a.all_authenticated,
                        networks: a.networks.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            })
            .collect(),
        probes: p
            .probes
            .iter()
            .map(|p| pb::Probe {
                port: u32::from(p.port),
                path: p.path.clone(),
            })
            .collect(),
        cluster_networks: p.cluster_networks.iter().map(ToString::to_string).collect(),
        services: p
            .services
            .iter()
            .map(|s| pb::PodService {
                name: s.name.clone(),
                namespace: s.namespace.clone(),
                port: u32::from(s.port),
                target_port: u32::from(s.target_port),
            })
            .collect(),
    }
}

/// The policy a proxy received, checked.
pub fn from_proto(p: pb::PodPolicy) -> Result<PodPolicy, WireError> {
    let default = match pb::DefaultPolicy::try_from(p.default) {
        Ok(pb::DefaultPolicy::AllUnauthenticated) => DefaultPolicy::AllUnauthenticated,
        Ok(pb::DefaultPolicy::AllAuthenticated) => DefaultPolicy::AllAuthenticated,
        Ok(pb::DefaultPolicy::ClusterAuthenticated) => DefaultPolicy::ClusterAuthenticated,
        // An unknown (newer) default is read as the strictest.
        Ok(pb::DefaultPolicy::Deny) | Err(_) => DefaultPolicy::Deny,
    };
    let servers = p
        .servers
        .into_iter()
        .map(|s| {
            Ok(ServerPolicy {
                port: port(s.port)?,
                protocol: match s.protocol.as_str() {
                    "" => None,
                    name => Some(
                        ServerProtocol::parse(name)
                            .ok_or_else(|| WireError::Protocol(name.to_string()))?,
                    ),
                },
                authorizations: s
                    .authorizations
                    .into_iter()
                    .map(|a| {
                        Ok(Authorization {
                            networks: networks(&a.networks)?,
                            name: a.name,
                            identities: a.identities,
                            all_authenticated: a.all_authenticated,
                        })
                    })
                    .collect::<Result<_, WireError>>()?,
                name: s.name,
            })
        })
        .collect::<Result<_, WireError>>()?;
    let probes = p
        .probes
        .into_iter()
        .map(|pr| {
            Ok(Probe {
                port: port(pr.port)?,
                path: pr.path,
            })
        })
        .collect::<Result<_, WireError>>()?;
    let services = p
        .services
        .into_iter()
        .map(|s| {
            Ok(PodService {
                port: port(s.port)?,
                target_port: port(s.target_port)?,
                name: s.name,
                namespace: s.namespace,
            })
        })
        .collect::<Result<_, WireError>>()?;
    Ok(PodPolicy {
        default,
        servers,
        probes,
        cluster_networks: networks(&p.cluster_networks)?,
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_survive_the_wire_and_nonsense_does_not() {
        let p = PodPolicy {
            default: DefaultPolicy::ClusterAuthenticated,
            servers: vec![ServerPolicy {
                name: "emojivoto/voting-grpc".into(),
                port: 8080,
                protocol: Some(ServerProtocol::Grpc),
                authorizations: vec![Authorization {
                    name: "emojivoto/voting-from-web".into(),
                    identities: vec![
                        "web.emojivoto.serviceaccount.identity.conduit.cluster.local".into(),
                    ],
                    all_authenticated: false,
                    networks: vec!["192.0.2.0/24".parse().unwrap()],
                }],
            }],
            probes: vec![Probe {
                port: 8080,
                path: "/ready".into(),
            }],
            cluster_networks: vec!["10.0.0.0/8".parse().unwrap()],
            services: vec![PodService {
                name: "voting-svc".into(),
                namespace: "emojivoto".into(),
                port: 80,
                target_port: 8080,
            }],
        };
        assert_eq!(from_proto(to_proto(&p)).unwrap(), p);
        let mut bad = to_proto(&p);
        bad.services[0].target_port = 0;
        assert!(matches!(from_proto(bad), Err(WireError::Port(0))));
        let mut bad = to_proto(&p);
        bad.servers[0].port = 70000;
        assert_eq!(
            from_proto(bad).unwrap_err().to_string(),
            "port 70000 is out of range"
        );
        let mut bad = to_proto(&p);
        bad.cluster_networks[0] = "10.0.0.0".into();
        assert!(matches!(from_proto(bad), Err(WireError::Network(_))));
        let mut unknown = to_proto(&p);
        unknown.default = 42;
        assert_eq!(from_proto(unknown).unwrap().default, DefaultPolicy::Deny);
    }
}
