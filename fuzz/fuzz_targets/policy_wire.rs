//! What the inbound proxy does with an InboundPolicy answer (`control/policy.rs`): any
//! bytes decoded as the `conduit.policy.v1.PodPolicy` message, read by `conduit-policy`'s
//! `wire::from_proto`, and authorized against. Checks that a policy the proxy accepts
//! survives being sent again unchanged, that a port with a Server is decided by that
//! Server (one without authorizations letting nobody in), and that the default decides
//! every other port as it says.
#![no_main]

use conduit_api::{inbound::DefaultPolicy, policy as pb};
use conduit_policy::{wire, Client, PodPolicy};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::net::IpAddr;

const MESHED: &str = "web.emojivoto.serviceaccount.identity.conduit.cluster.local";

fn clients(policy: &PodPolicy) -> Vec<Client<'_>> {
    let ip = |s: &str| s.parse::<IpAddr>().expect("a literal address");
    let mut clients = vec![
        Client {
            ip: ip("192.0.2.1"),
            identity: None,
        },
        Client {
            ip: ip("10.1.2.3"),
            identity: Some(MESHED),
        },
        Client {
            ip: ip("2001:db8::1"),
            identity: None,
        },
    ];
    // Clients the policy names, so that its authorizations are reached too.
    for a in policy.servers.iter().flat_map(|s| &s.authorizations) {
        for id in &a.identities {
            clients.push(Client {
                ip: ip("198.51.100.7"),
                identity: Some(id),
            });
        }
        for n in &a.networks {
            clients.push(Client {
                ip: n.addr(),
                identity: None,
            });
        }
    }
    clients
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = pb::PodPolicy::decode(data) else {
        return;
    };
    let Ok(policy) = wire::from_proto(message) else {
        return;
    };
    let again = pb::PodPolicy::decode(&wire::to_proto(&policy).encode_to_vec()[..])
        .expect("an encoded policy decodes");
    let again = wire::from_proto(again).expect("a policy the proxy accepted is accepted again");
    assert_eq!(
        again, policy,
        "a policy changed on its way through the wire"
    );

    let unserved = (1..=u16::MAX).find(|p| policy.server(*p).is_none());
    let ports = policy
        .servers
        .iter()
        .map(|s| s.port)
        .chain(policy.probes.iter().map(|p| p.port))
        .chain(unserved);
    for port in ports {
        for client in clients(&policy) {
            let decision = policy.authorize(port, client);
            match policy.server(port) {
                Some(server) => {
                    assert_eq!(decision.server(), Some(server.name.as_str()));
                    if server.authorizations.is_empty() {
                        assert!(!decision.is_allowed(), "{decision:?}");
                    }
                }
                None => {
                    assert_eq!(decision.server(), None);
                    match policy.default {
                        DefaultPolicy::Deny => assert!(!decision.is_allowed()),
                        DefaultPolicy::AllUnauthenticated => assert!(decision.is_allowed()),
                        DefaultPolicy::AllAuthenticated => {
                            assert_eq!(decision.is_allowed(), client.identity.is_some())
                        }
                        DefaultPolicy::ClusterAuthenticated => {}
                    }
                }
            }
        }
    }
});
