//! `conduit check` of the local runtime running here: its supervisor, control plane, trust
//! anchor and issuer, pods, and (`--proxy`) proxies' certificates.

use super::{opaque_ports_check, proxy_certificates, trust_checks, Check, CheckArgs, Section};
use crate::api::{get, ApiAddr};
use conduit_api::{http::WorkloadsQuery, names::PROXY_CONTAINER, proxy_env};
use conduit_identity::ca::TrustFiles;
use conduit_local::{
    client,
    layout::Layout,
    spec::{AppSpec, EnvSpec},
    state,
};
use std::collections::BTreeSet;

pub(super) fn checks(args: &CheckArgs) -> anyhow::Result<Vec<Section>> {
    let layout = Layout::from_env();
    let Some((state, alive)) = client::status(&layout)? else {
        return Ok(vec![("conduit local runtime", vec![Check::failed(
            "a local runtime is running here",
            format!("no state in {}", layout.dir().display()),
            "start one with `sudo conduit local up -f FILE`, or check a cluster with --kubeconfig FILE / --context NAME",
        )])]);
    };
    let mut checks = vec![if alive {
        Check::ok("the local runtime's supervisor is running")
    } else {
        Check::failed(
            "the local runtime's supervisor is running",
            "it is gone",
            "`sudo conduit local down` cleans up, then `conduit local up -f FILE`",
        )
    }];
    let api = ApiAddr::local();
    let workloads = get(&api, &WorkloadsQuery {});
    checks.push(match &workloads {
        Ok(_) => Check::ok("the control plane answers"),
        Err(e) => Check::failed(
            "the control plane answers",
            e.to_string(),
            format!("see its log in {}", layout.logs().display()),
        ),
    });
    if let Ok(w) = &workloads {
        let known: BTreeSet<(&str, &str)> = w
            .pods
            .iter()
            .map(|p| (p.namespace.as_str(), p.name.as_str()))
            .collect();
        let missing: Vec<String> = state
            .pods
            .iter()
            .filter(|p| !known.contains(&(p.namespace.as_str(), p.name.as_str())))
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        checks.push(if missing.is_empty() {
            Check::ok("the control plane knows every pod")
        } else {
            Check::failed(
                "the control plane knows every pod",
                format!("it does not know {}", missing.join(", ")),
                "wait a moment and check again; if it stays, see the control plane's log",
            )
        });
    }
    checks.extend(local_trust_checks(&layout));
    let unready: Vec<String> = state
        .unready()
        .iter()
        .map(|p| format!("{}/{}: {}", p.namespace, p.name, p.message))
        .collect();
    checks.push(if unready.is_empty() {
        Check::ok(format!("every pod is ready ({})", state.pods.len()))
    } else {
        Check::failed(
            "every pod is ready",
            unready.join("; "),
            "`conduit local status` and the logs in the run directory say more",
        )
    });
    if args.proxy {
        checks.push(proxy_check(&api, &state, args.namespace.as_deref()));
        checks.push(local_opaque_ports(&layout, args.namespace.as_deref()));
    }

    Ok(vec![("conduit local runtime", checks)])
}

/// The runtime's trust anchor and issuer, from its run directory.
fn local_trust_checks(layout: &Layout) -> Vec<Check> {
    let dir = layout.dir().join("identity");
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    match (
        read("anchor.pem"),
        read("issuer.pem"),
        read("issuer-key.pem"),
    ) {
        (Ok(anchor_pem), Ok(issuer_cert_pem), Ok(issuer_key_pem)) => trust_checks(
            &TrustFiles {
                anchor_pem,
                issuer_cert_pem,
                issuer_key_pem,
            },
            "`conduit local down`, then `up` (with your own identity files, if you give them)",
        ),
        (a, c, k) => {
            let e = a.err().or(c.err()).or(k.err()).map(|e| e.to_string());
            vec![Check::failed(
                "the trust anchor and issuer can be read",
                e.unwrap_or_default(),
                "run as root (the issuer's key is readable by root only)",
            )]
        }
    }
}

/// The opaque ports of each meshed Deployment's proxies, from what the runtime runs.
fn local_opaque_ports(layout: &Layout, namespace: Option<&str>) -> Check {
    let what = "the proxies' opaque ports can be read";
    let spec = match state::read_json::<AppSpec>(&layout.desired()) {
        Ok(spec) => spec.unwrap_or_default(),
        Err(e) => return Check::failed(what, e.to_string(), "run as root"),
    };
    let proxies = spec
        .deployments
        .iter()
        .filter(|d| d.meshed && namespace.is_none_or(|n| n == d.namespace))
        .map(|d| {
            let set = d
                .init_containers
                .iter()
                .chain(&d.containers)
                .filter(|c| c.name == PROXY_CONTAINER)
                .flat_map(|c| &c.env)
                .find_map(|e| match e {
                    EnvSpec::Value { name, value } if name == proxy_env::OPAQUE_PORTS => {
                        Some(value.as_str())
                    }
                    _ => None,
                });
            (format!("{}/{}", d.namespace, d.name), set)
        });
    opaque_ports_check(proxies)
}

/// Every meshed pod's proxy holds a certificate that is not about to expire.
fn proxy_check(
    api: &ApiAddr,
    state: &conduit_local::state::State,
    namespace: Option<&str>,
) -> Check {
    let namespaces: BTreeSet<&str> = state
        .pods
        .iter()
        .filter(|p| p.meshed && namespace.is_none_or(|n| n == p.namespace))
        .map(|p| p.namespace.as_str())
        .collect();
    let namespaces: Vec<String> = namespaces.into_iter().map(str::to_string).collect();
    proxy_certificates(api, &namespaces)
}
