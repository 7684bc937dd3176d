//! `conduit check`: is the mesh healthy? Sections of checks, each `√` or `×` with a hint
//! saying what to do, and exit status 1 if any fails. Checks the local runtime when one is
//! running here (`local.rs`), else the cluster of the kubeconfig (`cluster.rs`;
//! `--kubeconfig`/`--context` choose it explicitly, `--pre` checks it can take an install).

mod cluster;
mod local;

use crate::api::ControlPlaneArgs;
use clap::Args;
use conduit_api::{
    http::{IdentityQuery, IdentityReport, Resource},
    proxy_env,
};
use conduit_identity::ca::{self, TrustFiles};
use std::{
    collections::BTreeMap,
    io::Write,
    time::{Duration, SystemTime},
};

#[derive(Args)]
pub struct CheckArgs {
    /// Check that the cluster can take `conduit install` (before installing).
    #[arg(long)]
    pre: bool,
    /// Also check every meshed pod's proxy: ready, of this version, certified.
    #[arg(long)]
    proxy: bool,
    /// With --proxy, only the proxies of this namespace.
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

/// One check's outcome.
struct Check {
    what: String,
    problem: Option<(String, String)>,
}

impl Check {
    fn ok(what: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            problem: None,
        }
    }

    fn failed(what: impl Into<String>, why: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            what: what.into(),
            problem: Some((why.into(), hint.into())),
        }
    }

    /// `ok` if `result` is, else failed with its error and `hint`.
    fn of<T, E: std::fmt::Display>(what: &str, result: &Result<T, E>, hint: &str) -> Check {
        match result {
            Ok(_) => Check::ok(what),
            Err(e) => Check::failed(what, e.to_string(), hint),
        }
    }
}

/// A titled group of checks.
type Section = (&'static str, Vec<Check>);

/// Certificates closer than this to their end fail the check.
const SOON: Duration = Duration::from_secs(30 * 86_400);

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let sections = if args.control_plane.is_cluster() || args.pre {
        cluster::checks(&args)
    } else {
        local::checks(&args)?
    };
    report(&sections)
}

/// Prints the sections; fails if any check did.
fn report(sections: &[Section]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut failed = 0;
    for (i, (title, checks)) in sections.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "{title}\n{}", "-".repeat(title.chars().count()))?;
        for c in checks {
            match &c.problem {
                None => writeln!(out, "√ {}", c.what)?,
                Some((why, hint)) => {
                    failed += 1;
                    writeln!(out, "× {}\n    {why}\n    hint: {hint}", c.what)?
                }
            }
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    writeln!(out, "\nStatus check results are √")?;
    Ok(())
}

/// The trust anchor and issuer: valid, chained, the issuer's key its own, and not close
/// to expiry. `rotate` says how to replace them where they live.
fn trust_checks(files: &TrustFiles, rotate: &str) -> Vec<Check> {
    let mut checks = vec![match files.check() {
        Ok(()) => Check::ok("the issuer is valid, signed by the trust anchor, and holds its key"),
        Err(e) => Check::failed(
            "the issuer is valid, signed by the trust anchor, and holds its key",
            e.to_string(),
            rotate,
        ),
    }];
    for (what, pem) in [
        ("the trust anchor", &files.anchor_pem),
        ("the issuer certificate", &files.issuer_cert_pem),
    ] {
        let label = format!("{what} is valid for at least 30 days");
        checks.push(match ca::not_after(pem) {
            Ok(end) if end > SystemTime::now() + SOON => Check::ok(label),
            Ok(end) => Check::failed(
                label,
                format!("it ends {}", humantime::format_rfc3339_seconds(end)),
                rotate,
            ),
            Err(e) => Check::failed(label, e.to_string(), rotate),
        });
    }
    checks
}

/// Which ports the meshed `proxies` (each a name and its `CONDUIT_PROXY_OPAQUE_PORTS`, if
/// set) forward without protocol detection: the default list, and which proxies have
/// another.
fn opaque_ports_check<'a>(proxies: impl IntoIterator<Item = (String, Option<&'a str>)>) -> Check {
    const NAMED: usize = 5;
    let mut by_list: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, set) in proxies {
        by_list
            .entry(proxy_env::opaque_ports(set))
            .or_default()
            .push(name);
    }
    let mut lists = Vec::new();
    if let Some(names) = by_list.remove(proxy_env::DEFAULT_OPAQUE_PORTS) {
        lists.push(format!(
            "{} (the default, {} proxies)",
            proxy_env::DEFAULT_OPAQUE_PORTS,
            names.len()
        ));
    }
    for (list, names) in by_list {
        let more = names.len().saturating_sub(NAMED);
        let mut named = names.into_iter().take(NAMED).collect::<Vec<_>>().join(", ");
        if more > 0 {
            named.push_str(&format!(" and {more} more"));
        }
        lists.push(format!("{list} ({named})"));
    }
    if lists.is_empty() {
        lists.push("no meshed proxies".to_string());
    }
    Check::ok(format!(
        "opaque ports, forwarded without protocol detection: {}",
        lists.join("; ")
    ))
}

/// The proxies' certificates, from the control plane's identity API: each namespace's
/// meshed pods certified and not expired.
fn proxy_certificates(api: &crate::api::ApiAddr, namespaces: &[String]) -> Check {
    let what = "every meshed proxy is certified";
    let now = SystemTime::now();
    let (mut good, mut bad) = (0, Vec::new());
    for ns in namespaces {
        let query = IdentityQuery {
            resource: Resource::Namespace.short_name().to_string(),
            name: Some(ns.clone()),
            namespace: None,
        };
        let rows = match crate::api::get(api, &query) {
            Ok(rows) => rows,
            Err(e) => return Check::failed(what, e.to_string(), "see the control plane's log"),
        };
        for r in rows {
            let pod = format!("{ns}/{}", r.pod);
            let problem = match &r.report {
                IdentityReport::Unknown { error } => Some(error.as_str()),
                IdentityReport::Reported(proxy) => {
                    let until = proxy
                        .valid_until_unix
                        .map(|u| SystemTime::UNIX_EPOCH + Duration::from_secs(u));
                    match (proxy.certified, until) {
                        (true, Some(u)) if u > now => None,
                        _ => Some(
                            proxy
                                .last_error
                                .as_deref()
                                .unwrap_or("no valid certificate"),
                        ),
                    }
                }
            };
            match problem {
                None => good += 1,
                Some(problem) => bad.push(format!("{pod}: {problem}")),
            }
        }
    }
    if bad.is_empty() {
        Check::ok(format!("{what} ({good})"))
    } else {
        Check::failed(
            what,
            bad.join("; "),
            "`conduit identity ns/NAMESPACE` shows each proxy's certificate; see the proxy's log",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opaque_ports_name_the_default_and_who_differs() {
        let proxies = [
            ("emojivoto/web".to_string(), None),
            ("emojivoto/emoji".to_string(), Some("")),
            ("db/mariadb".to_string(), Some("3306,13306")),
        ];
        assert_eq!(
            opaque_ports_check(proxies).what,
            "opaque ports, forwarded without protocol detection: \
             25,587,3306,4444,5432,6379,9300,11211 (the default, 2 proxies); 3306,13306 (db/mariadb)"
        );
        let many = (0..7).map(|i| (format!("ns/p{i}"), Some("none")));
        assert_eq!(
            opaque_ports_check(many).what,
            "opaque ports, forwarded without protocol detection: none (ns/p0, ns/p1, ns/p2, ns/p3, ns/p4 and 2 more)"
        );
    }
}
