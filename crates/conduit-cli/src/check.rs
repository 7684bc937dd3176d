//! `conduit check`: is the mesh healthy? A list of checks, each `√` or `×` with a hint
//! saying what to do, and exit status 1 if any fails. Checks the local runtime when one is
//! running here; checking a Kubernetes cluster comes with the controller's Kubernetes mode.

use crate::api::{get_json, query_value as q, ApiAddr};
use clap::Args;
use conduit_identity::ca::{self, TrustFiles};
use conduit_local::{client, layout::Layout};
use std::{
    collections::BTreeSet,
    io::Write,
    time::{Duration, SystemTime},
};

#[derive(Args)]
pub struct CheckArgs {
    /// Also check every meshed pod's proxy: certified, and not about to expire.
    #[arg(long)]
    proxy: bool,
    /// With --proxy, only the proxies of this namespace.
    #[arg(short = 'n', long = "namespace")]
    namespace: Option<String>,
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
}

/// Certificates closer than this to their end fail the check.
const SOON: Duration = Duration::from_secs(30 * 86_400);

pub fn run(args: CheckArgs) -> anyhow::Result<()> {
    let layout = Layout::from_env();
    let mut out = std::io::stdout().lock();
    let Some((state, alive)) = client::status(&layout)? else {
        writeln!(out, "× a local runtime is running here\n    no state in {}: start one with `sudo conduit local up -f FILE`\n    (checking a Kubernetes cluster comes with the controller's Kubernetes mode)", layout.dir().display())?;
        anyhow::bail!("1 check failed");
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
    let api = ApiAddr::find(None);
    let workloads = get_json(&api, "/api/workloads");
    checks.push(match &workloads {
        Ok(_) => Check::ok("the control plane answers"),
        Err(e) => Check::failed(
            "the control plane answers",
            e.to_string(),
            format!("see its log in {}", layout.logs().display()),
        ),
    });
    if let Ok(w) = &workloads {
        let known: BTreeSet<(&str, &str)> = w["pods"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| Some((p["namespace"].as_str()?, p["name"].as_str()?)))
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
    checks.extend(trust_checks(&layout));
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
    }

    let failed = checks.iter().filter(|c| c.problem.is_some()).count();
    writeln!(out, "conduit local runtime\n---------------------")?;
    for c in &checks {
        match &c.problem {
            None => writeln!(out, "√ {}", c.what)?,
            Some((why, hint)) => writeln!(out, "× {}\n    {why}\n    hint: {hint}", c.what)?,
        }
    }
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed");
    }
    writeln!(out, "\nStatus check results are √")?;
    Ok(())
}

/// The runtime's trust anchor and issuer: valid, chained, the issuer's key its own, and
/// not close to expiry.
fn trust_checks(layout: &Layout) -> Vec<Check> {
    let dir = layout.dir().join("identity");
    let read = |f: &str| std::fs::read_to_string(dir.join(f));
    let files = match (
        read("anchor.pem"),
        read("issuer.pem"),
        read("issuer-key.pem"),
    ) {
        (Ok(anchor_pem), Ok(issuer_cert_pem), Ok(issuer_key_pem)) => TrustFiles {
            anchor_pem,
            issuer_cert_pem,
            issuer_key_pem,
        },
        (a, c, k) => {
            let e = a.err().or(c.err()).or(k.err()).map(|e| e.to_string());
            return vec![Check::failed(
                "the trust anchor and issuer can be read",
                e.unwrap_or_default(),
                "run as root (the issuer's key is readable by root only)",
            )];
        }
    };
    let mut checks = vec![match files.check() {
        Ok(()) => Check::ok("the issuer is valid, signed by the trust anchor, and holds its key"),
        Err(e) => Check::failed(
            "the issuer is valid, signed by the trust anchor, and holds its key",
            e.to_string(),
            "`conduit local down` and `up` again make new ones (or give your own files to up)",
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
                "rotate it: `conduit local down`, then `up` with new identity files",
            ),
            Err(e) => Check::failed(label, e.to_string(), "check the files in the run directory"),
        });
    }
    checks
}

/// Every meshed pod's proxy holds a certificate that is not about to expire.
fn proxy_check(
    api: &ApiAddr,
    state: &conduit_local::state::State,
    namespace: Option<&str>,
) -> Check {
    let what = "every meshed proxy is certified";
    let namespaces: BTreeSet<&str> = state
        .pods
        .iter()
        .filter(|p| p.meshed && namespace.is_none_or(|n| n == p.namespace))
        .map(|p| p.namespace.as_str())
        .collect();
    let now = SystemTime::now();
    let (mut good, mut bad) = (0, Vec::new());
    for ns in namespaces {
        let rows = match get_json(api, &format!("/api/identity?resource=ns&name={}", q(ns))) {
            Ok(rows) => rows,
            Err(e) => return Check::failed(what, e.to_string(), "see the control plane's log"),
        };
        for r in rows.as_array().into_iter().flatten() {
            let pod = format!("{ns}/{}", r["pod"].as_str().unwrap_or("?"));
            let until = r["valid_until_unix"]
                .as_u64()
                .map(|u| SystemTime::UNIX_EPOCH + Duration::from_secs(u));
            match (r["certified"].as_bool(), until) {
                (Some(true), Some(u)) if u > now => good += 1,
                _ => bad.push(format!(
                    "{pod}: {}",
                    r["last_error"]
                        .as_str()
                        .or(r["error"].as_str())
                        .unwrap_or("no valid certificate")
                )),
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
