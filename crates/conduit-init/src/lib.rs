//! The pod's traffic redirection: the iptables `nat` rules that send every inbound TCP
//! connection to the proxy's inbound port and every outbound one to its outbound port,
//! except the proxy's own traffic (by UID), loopback, and the ports asked to be skipped.
//!
//! Rules live in two chains of their own, written with one `iptables-restore --noflush`
//! so that applying them is atomic and idempotent: the chains are rewritten whole, and the
//! jumps into them are added only where missing. The proxy's ports and UID come from
//! `conduit-api`, which the injector and the proxy read too. Knows nothing about the proxy
//! itself.

use conduit_api::{ports, uid};
use std::{
    fmt,
    io::Write,
    process::{Command, Stdio},
    str::FromStr,
};

/// The chain that inbound connections are redirected by.
pub const INBOUND_CHAIN: &str = "CONDUIT_PROXY_INBOUND";
/// The chain that outbound connections are redirected by.
pub const OUTBOUND_CHAIN: &str = "CONDUIT_PROXY_OUTBOUND";

/// What to redirect where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// The UID the proxy runs as; its own connections are never redirected.
    pub proxy_uid: u32,
    /// The proxy's inbound listener port.
    pub inbound_port: u16,
    /// The proxy's outbound listener port.
    pub outbound_port: u16,
    /// Inbound destination ports left alone (the proxy's admin and tap ports always are).
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports left alone.
    pub skip_outbound_ports: Vec<PortRange>,
}

impl Default for Redirect {
    fn default() -> Self {
        Redirect {
            proxy_uid: uid::PROXY,
            inbound_port: ports::PROXY_INBOUND,
            outbound_port: ports::PROXY_OUTBOUND,
            skip_inbound_ports: Vec::new(),
            skip_outbound_ports: Vec::new(),
        }
    }
}

/// Ports the proxy serves itself, never redirected inbound: tap and admin.
pub const PROXY_OWN_PORTS: [PortRange; 2] = [
    PortRange(ports::PROXY_TAP, ports::PROXY_TAP),
    PortRange(ports::PROXY_ADMIN, ports::PROXY_ADMIN),
];

/// A port or an inclusive range of ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange(pub u16, pub u16);

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a port or a range of ports like 8000-8010");
        let (lo, hi) = match s.trim().split_once(['-', ':']) {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (s.trim(), s.trim()),
        };
        let lo: u16 = lo.parse().map_err(|_| bad())?;
        let hi: u16 = hi.parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi {
            return Err(bad());
        }
        Ok(PortRange(lo, hi))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == self.1 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}:{}", self.0, self.1)
        }
    }
}

/// A comma list of ports and ranges, like `25,3306,9000-9010`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<PortRange>);

impl FromStr for PortList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map(PortList)
    }
}

/// Parses a comma list of ports and ranges, like `25,3306,9000-9010`.
pub fn parse_port_list(s: &str) -> Result<Vec<PortRange>, String> {
    s.parse::<PortList>().map(|l| l.0)
}

/// An IP family: the rules are the same, the tools differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    fn restore(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables-restore",
            Family::Ipv6 => "ip6tables-restore",
        }
    }

    fn tables(self) -> &'static str {
        match self {
            Family::Ipv4 => "iptables",
            Family::Ipv6 => "ip6tables",
        }
    }
}

/// The jump from a built-in chain into ours.
struct Jump {
    builtin: &'static str,
    chain: &'static str,
}

const JUMPS: [Jump; 2] = [
    Jump {
        builtin: "PREROUTING",
        chain: INBOUND_CHAIN,
    },
    Jump {
        builtin: "OUTPUT",
        chain: OUTBOUND_CHAIN,
    },
];

impl Jump {
    fn rule_args(&self) -> [&'static str; 4] {
        ["-p", "tcp", "-j", self.chain]
    }
}

impl Redirect {
    /// The `iptables-restore --noflush` input; `jumps_missing` says which jump rules to add.
    fn script(&self, jumps_missing: [bool; 2]) -> String {
        let mut out = String::from("*nat\n");
        out.push_str(&format!(
            ":{INBOUND_CHAIN} - [0:0]\n:{OUTBOUND_CHAIN} - [0:0]\n"
        ));
        let inbound_skips: Vec<PortRange> = PROXY_OWN_PORTS
            .iter()
            .chain(&self.skip_inbound_ports)
            .copied()
            .collect();
        for group in multiport_groups(&inbound_skips) {
            out.push_str(&format!(
                "-A {INBOUND_CHAIN} -p tcp -m multiport --dports {group} -j RETURN\n"
            ));
        }
        out.push_str(&format!(
            "-A {INBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {}\n",
            self.inbound_port
        ));
        out.push_str(&format!(
            "-A {OUTBOUND_CHAIN} -m owner --uid-owner {} -j RETURN\n",
            self.proxy_uid
        ));
        out.push_str(&format!("-A {OUTBOUND_CHAIN} -o lo -j RETURN\n"));
        for group in multiport_groups(&self.skip_outbound_ports) {
            out.push_str(&format!(
                "-A {OUTBOUND_CHAIN} -p tcp -m multiport --dports {group} -j RETURN\n"
            ));
        }
        out.push_str(&format!(
            "-A {OUTBOUND_CHAIN} -p tcp -j REDIRECT --to-ports {}\n",
            self.outbound_port
        ));
        for (jump, missing) in JUMPS.iter().zip(jumps_missing) {
            if missing {
                out.push_str(&format!(
                    "-A {} {}\n",
                    jump.builtin,
                    jump.rule_args().join(" ")
                ));
            }
        }
        out.push_str("COMMIT\n");
        out
    }

    /// What `--dry-run` prints: the input for each family's restore tool.
    pub fn dry_run(&self, families: &[Family]) -> String {
        families
            .iter()
            .map(|f| {
                format!(
                    "# {} --noflush (jumps are added only where missing)\n{}",
                    f.restore(),
                    self.script([true, true])
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Writes the rules into the current network namespace.
    pub fn apply(&self, family: Family) -> Result<(), InitError> {
        let mut missing = [true, true];
        for (jump, missing) in JUMPS.iter().zip(missing.iter_mut()) {
            *missing = !jump_exists(family, jump)?;
        }
        let script = self.script(missing);
        let mut child = Command::new(family.restore())
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| InitError::Spawn {
                tool: family.restore(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|source| InitError::Spawn {
                    tool: family.restore(),
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| InitError::Spawn {
                tool: family.restore(),
                source,
            })?;
        if !out.status.success() {
            return Err(InitError::Failed {
                tool: family.restore(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

fn jump_exists(family: Family, jump: &Jump) -> Result<bool, InitError> {
    let out = Command::new(family.tables())
        .args(["-w", "-t", "nat", "-C", jump.builtin])
        .args(jump.rule_args())
        .output()
        .map_err(|source| InitError::Spawn {
            tool: family.tables(),
            source,
        })?;
    Ok(out.status.success())
}

/// `multiport` takes at most 15 ports per rule, a range counting as two.
fn multiport_groups(ports: &[PortRange]) -> Vec<String> {
    let mut groups = Vec::new();
    let mut current: Vec<String> = Vec::new();
    let mut weight = 0;
    for p in ports {
        let w = if p.0 == p.1 { 1 } else { 2 };
        if weight + w > 15 {
            groups.push(current.join(","));
            current.clear();
            weight = 0;
        }
        current.push(p.to_string());
        weight += w;
    }
    if !current.is_empty() {
        groups.push(current.join(","));
    }
    groups
}

/// Whether this kernel has IPv6 at all (it can be disabled at boot).
pub fn ipv6_available() -> bool {
    std::path::Path::new("/proc/net/if_inet6").exists()
}

/// Why the rules could not be written.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("could not run {tool}: {source} (is the iptables package installed, and are we root or CAP_NET_ADMIN?)")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} refused the rules: {stderr}")]
    Failed { tool: &'static str, stderr: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_redirect_everything_but_the_proxy_and_skips() {
        let r = Redirect {
            skip_inbound_ports: parse_port_list("22").unwrap(),
            skip_outbound_ports: parse_port_list("25,3306-3307").unwrap(),
            ..Redirect::default()
        };
        let script = r.script([true, false]);
        let expected = "\
*nat
:CONDUIT_PROXY_INBOUND - [0:0]
:CONDUIT_PROXY_OUTBOUND - [0:0]
-A CONDUIT_PROXY_INBOUND -p tcp -m multiport --dports 4190,4191,22 -j RETURN
-A CONDUIT_PROXY_INBOUND -p tcp -j REDIRECT --to-ports 4143
-A CONDUIT_PROXY_OUTBOUND -m owner --uid-owner 2102 -j RETURN
-A CONDUIT_PROXY_OUTBOUND -o lo -j RETURN
-A CONDUIT_PROXY_OUTBOUND -p tcp -m multiport --dports 25,3306:3307 -j RETURN
-A CONDUIT_PROXY_OUTBOUND -p tcp -j REDIRECT --to-ports 4140
-A PREROUTING -p tcp -j CONDUIT_PROXY_INBOUND
COMMIT
";
        assert_eq!(script, expected);
    }

    #[test]
    fn long_skip_lists_are_split_for_multiport() {
        let ports: Vec<PortRange> = (1..=20).map(|p| PortRange(p, p)).collect();
        let groups = multiport_groups(&ports);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].split(',').count(), 15);
        let ranges: Vec<PortRange> = (0..8).map(|i| PortRange(i * 10 + 1, i * 10 + 5)).collect();
        assert!(multiport_groups(&ranges)
            .iter()
            .all(|g| g.split(',').count() <= 7));
    }

    #[test]
    fn port_lists_name_what_is_wrong() {
        assert_eq!(
            parse_port_list("80, 8000-8010").unwrap(),
            [PortRange(80, 80), PortRange(8000, 8010)]
        );
        let err = parse_port_list("80,http").unwrap_err();
        assert!(err.contains("\"http\""), "{err}");
        assert!(parse_port_list("10-1").is_err());
        assert!(parse_port_list("0").is_err());
    }
}
