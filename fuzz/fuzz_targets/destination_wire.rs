//! What the outbound proxy does with a Destination update (`control/discovery.rs`): any
//! bytes decoded as the `conduit.destination.v1.Update` message, turned into a resolution
//! by the proxy's own `resolution`, and handed to a balancer as `balance/endpoints.rs`
//! does. Checks that every endpoint kept is one the update sent (an address that parses,
//! an identity only for a meshed endpoint that named one, a workload only named from
//! Kubernetes names), that the set's Service is named only from Kubernetes names, that
//! the balancer holds exactly those endpoints, and that it picks one of them whenever
//! there is any.
#![no_main]

use conduit_api::{
    destination::{label, update, Update},
    names::is_dns_label,
};
use conduit_proxy::{
    balance::Balancer,
    control::discovery::{resolution, Resolution},
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::{collections::HashMap, net::SocketAddr, sync::Arc};

/// What a metric label may say of `labels`: `<key's value>.<namespace>`, both Kubernetes
/// names, or nothing.
fn expected_name(labels: &HashMap<String, String>, key: &str) -> Option<String> {
    let name = labels.get(key).filter(|n| is_dns_label(n))?;
    let namespace = labels.get(label::NAMESPACE).filter(|n| is_dns_label(n))?;
    Some(format!("{name}.{namespace}"))
}

fn text(name: &Option<Arc<str>>) -> Option<String> {
    name.as_deref().map(str::to_string)
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Update::decode(data) else {
        return;
    };
    let sent = message.clone();
    let Some(resolved) = resolution(message) else {
        assert!(sent.update.is_none(), "an update with content was ignored");
        return;
    };
    let endpoints = match (&sent.update, resolved) {
        (
            Some(update::Update::Endpoints(set)),
            Resolution::Endpoints {
                service,
                endpoints,
                opaque,
            },
        ) => {
            assert_eq!(opaque, set.opaque);
            assert_eq!(text(&service), expected_name(&set.labels, label::SERVICE));
            assert!(endpoints.len() <= set.endpoints.len());
            for e in &endpoints {
                let from = set.endpoints.iter().find(|s| {
                    s.addr.parse::<SocketAddr>().ok() == Some(e.addr)
                        && match &e.identity {
                            Some(id) => s.meshed && s.identity == **id,
                            None => !s.meshed || s.identity.is_empty(),
                        }
                        && text(&e.workload) == expected_name(&s.labels, label::DEPLOYMENT)
                });
                assert!(from.is_some(), "{e:?} is not an endpoint the update sent");
            }
            let parsable = set
                .endpoints
                .iter()
                .filter(|s| s.addr.parse::<SocketAddr>().is_ok())
                .count();
            assert_eq!(
                endpoints.len(),
                parsable,
                "an endpoint with an address was dropped"
            );
            endpoints
        }
        (Some(update::Update::NoEndpoints(n)), r) => {
            let expected = if n.exists {
                Resolution::Endpoints {
                    service: None,
                    endpoints: Vec::new(),
                    opaque: false,
                }
            } else {
                Resolution::Unknown
            };
            assert_eq!(r, expected);
            return;
        }
        (sent, r) => panic!("{sent:?} resolved to {r:?}"),
    };

    let balancer = Balancer::default();
    balancer.update(&endpoints);
    let addrs: Vec<SocketAddr> = endpoints.iter().map(|e| e.addr).collect();
    assert_eq!(balancer.addrs(), addrs);
    for _ in 0..4 {
        match balancer.pick() {
            Some(picked) => assert!(endpoints.contains(&picked.endpoint)),
            None => assert!(endpoints.is_empty(), "no pick among {addrs:?}"),
        }
    }
    // An update with the same endpoints keeps them.
    balancer.update(&endpoints);
    assert_eq!(balancer.addrs(), addrs);
});
