//! `conduit identity`: the certificate each proxy of a resource holds, its identity and
//! when it expires, as the proxies themselves report it.

use crate::{
    api::{get, ControlPlaneArgs},
    stat::print_table,
    tap::{parse_target, target_namespace},
};
use clap::{Args, ValueEnum};
use conduit_api::http::{IdentityQuery, IdentityReport};
use std::{
    io::Write,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args)]
pub struct IdentityArgs {
    /// Whose certificates: deploy/NAME, pod/NAME or ns/NAME.
    target: String,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

/// "in 23h 59m" or "expired 2m ago", from a Unix time.
fn expiry(unix: u64, now: SystemTime) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix);
    match at.duration_since(now) {
        Ok(left) => format!(
            "in {}",
            humantime::format_duration(Duration::from_secs(left.as_secs() / 60 * 60))
        ),
        Err(e) => format!(
            "expired {} ago",
            humantime::format_duration(Duration::from_secs(e.duration().as_secs()))
        ),
    }
}

pub fn run(args: IdentityArgs) -> anyhow::Result<()> {
    let (kind, name) = parse_target(&args.target)?;
    let query = IdentityQuery {
        resource: kind.short_name().to_string(),
        name: Some(name.to_string()),
        namespace: target_namespace(kind, &args.namespace),
    };
    let rows = get(&args.control_plane.api()?, &query)?;
    let mut out = std::io::stdout().lock();
    if let Output::Json = args.output {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    let now = SystemTime::now();
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (identity, status) = match &r.report {
                IdentityReport::Unknown { error } => ("-".to_string(), format!("unknown: {error}")),
                IdentityReport::Reported(proxy) => {
                    let status = if proxy.certified {
                        proxy
                            .valid_until_unix
                            .map_or("certified".into(), |u| expiry(u, now))
                    } else {
                        format!(
                            "no certificate: {}",
                            proxy
                                .last_error
                                .as_deref()
                                .unwrap_or("waiting for the identity service")
                        )
                    };
                    (proxy.identity.clone(), status)
                }
            };
            vec![r.pod.clone(), identity, status]
        })
        .collect();
    print_table(
        &["POD", "IDENTITY", "CERTIFICATE EXPIRES"],
        &table,
        &mut out,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_reads_naturally() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(expiry(1_000_000 + 86_400 - 30, now), "in 23h 59m");
        assert_eq!(expiry(1_000_000 - 120, now), "expired 2m ago");
    }
}
