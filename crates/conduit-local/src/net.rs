//! The pod network: a node namespace with a bridge (198.18.0.1/16), a namespace per pod
//! wired to it with a veth pair, each pod's hosts file (service and control-plane names),
//! and each pod's Service rules. Services work as kube-proxy makes them work on a node,
//! with the pod as the node: `nat OUTPUT` DNATs a virtual IP to a ready endpoint, chosen
//! at random, and a virtual IP with no endpoint is refused at once. Nothing here touches
//! the host's own network namespace.

use crate::{
    layout::{Layout, NODE_IP},
    state::{PodState, ServiceState},
};
use conduit_api::control_plane::{
    service_fqdn, API_SERVICE, DESTINATION_SERVICE, IDENTITY_SERVICE, NAMESPACE,
};
use conduit_netns::{NetNs, NetnsError};
use std::{
    fmt::Write as _,
    io::{self, Write as _},
    net::Ipv4Addr,
    path::Path,
    process::Stdio,
};

const BRIDGE: &str = "br0";
/// The chain of Service DNAT rules in each pod's `nat` table.
pub const SERVICES_CHAIN: &str = "CONDUIT_LOCAL_SERVICES";
/// The chain that refuses virtual IPs without endpoints, in each pod's `filter` table.
pub const REJECT_CHAIN: &str = "CONDUIT_LOCAL_REJECT";
/// Names of the control plane, resolved to the node in every pod: each of its Services
/// as `name.namespace.svc.cluster.local` and `name.namespace`.
pub fn control_plane_names() -> Vec<String> {
    [DESTINATION_SERVICE, IDENTITY_SERVICE, API_SERVICE]
        .into_iter()
        .flat_map(|service| {
            [
                service_fqdn(service, NAMESPACE),
                format!("{service}.{NAMESPACE}"),
            ]
        })
        .collect()
}

/// Creates the node namespace with its bridge.
pub fn create_node(layout: &Layout) -> Result<NetNs, NetnsError> {
    let node = NetNs::create(&layout.node_netns())?;
    node.bridge(BRIDGE)?;
    node.address(BRIDGE, &format!("{NODE_IP}/16"))?;
    Ok(node)
}

/// Creates the namespace of pod index `index` with address `ip`, wired to the bridge.
pub fn create_pod(
    layout: &Layout,
    node: &NetNs,
    index: u32,
    ip: Ipv4Addr,
) -> Result<NetNs, NetnsError> {
    let ns = NetNs::create(&layout.pod_netns(index))?;
    let outer = format!("v{index}");
    ns.veth("eth0", node, &outer)?;
    node.attach(&outer, BRIDGE)?;
    ns.address("eth0", &format!("{ip}/16"))?;
    ns.ip(&["route", "add", "default", "via", &NODE_IP.to_string()])?;
    Ok(ns)
}

/// The hosts file of `pod`: itself, the control plane, and every Service by its names
/// (the short name only for Services in the pod's own namespace, as cluster DNS does).
pub fn hosts_file(pod: &PodState, services: &[ServiceState]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    let _ = writeln!(out, "{}\t{}", pod.ip, pod.name);
    let _ = writeln!(out, "{NODE_IP}\t{}", control_plane_names().join(" "));
    for s in services {
        let mut names = vec![
            service_fqdn(&s.name, &s.namespace),
            format!("{}.{}", s.name, s.namespace),
        ];
        if s.namespace == pod.namespace {
            names.push(s.name.clone());
        }
        let _ = writeln!(out, "{}\t{}", s.vip, names.join(" "));
    }
    out
}

/// The `resolv.conf` of a pod in `namespace`. Names resolve from the hosts file; the
/// runtime runs no DNS server, and a nameserver on the pod's own loopback refuses at
/// once, so resolvers that also ask DNS (c-ares in gRPC, for SRV and TXT records) fail
/// fast instead of waiting on, or leaking queries to, the host's resolver.
pub fn resolv_conf(namespace: &str) -> String {
    format!("search {namespace}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.1\n")
}

/// Writes the directory whose `hosts` and `resolv.conf` a pod's processes see in `/etc`.
pub fn write_etc(dir: &Path, hosts: &str, namespace: &str) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_in_place(&dir.join("hosts"), hosts)?;
    write_in_place(&dir.join("resolv.conf"), &resolv_conf(namespace))
}

/// Rewrites a hosts file in place: running processes see it through a bind mount of
/// this very inode, which a rename would leave behind.
pub fn write_in_place(path: &Path, text: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The `iptables-restore --noflush` input that makes a pod's Service rules.
pub fn service_rules(services: &[ServiceState]) -> String {
    let mut nat = format!("*nat\n:{SERVICES_CHAIN} - [0:0]\n");
    let mut filter = format!("*filter\n:{REJECT_CHAIN} - [0:0]\n");
    for s in services {
        for p in &s.ports {
            let k = p.endpoints.len();
            for (i, e) in p.endpoints.iter().enumerate() {
                let _ = write!(
                    nat,
                    "-A {SERVICES_CHAIN} -d {}/32 -p tcp --dport {}",
                    s.vip, p.port
                );
                if i + 1 < k {
                    // The i-th rule takes 1/(k-i) of what the earlier rules left: uniform.
                    let _ = write!(
                        nat,
                        " -m statistic --mode random --probability {:.6}",
                        1.0 / (k - i) as f64
                    );
                }
                let _ = writeln!(nat, " -j DNAT --to-destination {}:{}", e.ip, e.port);
            }
        }
        // Whatever was not DNAT-ed above (no endpoint, or a port the Service lacks).
        let _ = writeln!(
            filter,
            "-A {REJECT_CHAIN} -d {}/32 -p tcp -j REJECT --reject-with tcp-reset",
            s.vip
        );
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

/// Writes the Service rules into a pod and makes sure its `OUTPUT` chains jump to them.
/// The jumps are appended, after the proxy's redirect if the pod is meshed: an
/// application's connection to a virtual IP reaches its proxy first, and the proxy's own
/// connection (which the redirect skips) is then DNAT-ed like any other.
pub fn apply_service_rules(ns: &NetNs, rules: &str) -> io::Result<()> {
    restore(ns, rules)?;
    for (table, chain) in [("nat", SERVICES_CHAIN), ("filter", REJECT_CHAIN)] {
        let exists = ns
            .command("iptables")
            .args(["-w", "-t", table, "-C", "OUTPUT", "-j", chain])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success();
        if !exists {
            ns.exec(
                "iptables",
                &["-w", "-t", table, "-A", "OUTPUT", "-j", chain],
            )
            .map_err(io::Error::other)?;
        }
    }
    Ok(())
}

fn restore(ns: &NetNs, input: &str) -> io::Result<()> {
    let mut child = ns
        .command("iptables-restore")
        .args(["-w", "--noflush"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "iptables-restore in {} refused the Service rules: {}",
            ns.name(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{EndpointState, ServicePortState};

    fn service(ns: &str, name: &str, vip: [u8; 4], endpoints: &[[u8; 4]]) -> ServiceState {
        ServiceState {
            namespace: ns.into(),
            name: name.into(),
            vip: vip.into(),
            ports: vec![ServicePortState {
                name: None,
                port: 80,
                endpoints: endpoints
                    .iter()
                    .map(|ip| EndpointState {
                        pod: "p".into(),
                        ip: (*ip).into(),
                        port: 8080,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn rules_spread_connections_uniformly_and_refuse_empty_services() {
        let rules = service_rules(&[
            service(
                "demo",
                "web",
                [198, 19, 0, 1],
                &[[198, 18, 0, 2], [198, 18, 0, 3], [198, 18, 0, 4]],
            ),
            service("demo", "empty", [198, 19, 0, 2], &[]),
        ]);
        let expected = "\
*nat
:CONDUIT_LOCAL_SERVICES - [0:0]
-A CONDUIT_LOCAL_SERVICES -d 198.19.0.1/32 -p tcp --dport 80 -m statistic --mode random --probability 0.333333 -j DNAT --to-destination 198.18.0.2:8080
-A CONDUIT_LOCAL_SERVICES -d 198.19.0.1/32 -p tcp --dport 80 -m statistic --mode random --probability 0.500000 -j DNAT --to-destination 198.18.0.3:8080
-A CONDUIT_LOCAL_SERVICES -d 198.19.0.1/32 -p tcp --dport 80 -j DNAT --to-destination 198.18.0.4:8080
COMMIT
*filter
:CONDUIT_LOCAL_REJECT - [0:0]
-A CONDUIT_LOCAL_REJECT -d 198.19.0.1/32 -p tcp -j REJECT --reject-with tcp-reset
-A CONDUIT_LOCAL_REJECT -d 198.19.0.2/32 -p tcp -j REJECT --reject-with tcp-reset
COMMIT
";
        assert_eq!(rules, expected);
    }

    #[test]
    fn hosts_files_name_services_as_cluster_dns_would() {
        let pod = PodState {
            namespace: "demo".into(),
            name: "web-abc12".into(),
            deployment: "web".into(),
            index: 1,
            ip: [198, 18, 0, 2].into(),
            netns: "cdl-p1".into(),
            meshed: false,
            service_account: "default".into(),
            labels: Default::default(),
            named_ports: Default::default(),
            probes: vec![],
            default_policy: None,
            phase: "Running".into(),
            ready: true,
            containers: vec![],
            message: String::new(),
        };
        let hosts = hosts_file(
            &pod,
            &[
                service("demo", "web-svc", [198, 19, 0, 1], &[]),
                service("other", "db", [198, 19, 0, 2], &[]),
            ],
        );
        assert!(hosts.contains("198.18.0.2\tweb-abc12\n"), "{hosts}");
        assert!(
            hosts.contains("198.19.0.1\tweb-svc.demo.svc.cluster.local web-svc.demo web-svc\n"),
            "{hosts}"
        );
        assert!(
            hosts.contains("198.19.0.2\tdb.other.svc.cluster.local db.other\n"),
            "{hosts}"
        );
        assert!(
            hosts.contains("198.18.0.1\tconduit-destination.conduit.svc.cluster.local"),
            "{hosts}"
        );
    }
}
