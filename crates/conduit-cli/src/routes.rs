//! `conduit routes`: golden metrics per route of a deployment, from its Services'
//! ServiceProfiles (inbound), or of its requests to one Service (`--to`, outbound), where
//! `-o wide` splits the success rate into the effective one (what the clients saw, after
//! retries) and the actual one (every attempt), as `linkerd viz routes -o wide` does.

use crate::{
    api::{get, ControlPlaneArgs},
    stat::{ms, percent, print_table, Output},
    tap::parse_target,
};
use anyhow::bail;
use clap::Args;
use conduit_api::http::{Resource, RouteRow, RoutesQuery};
use std::io::Write;

#[derive(Args)]
pub struct RoutesArgs {
    /// The deployment, as deploy/NAME.
    target: String,
    /// The namespace.
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// Only the deployment's requests to this Service (svc/NAME, NAME or NAME.NAMESPACE),
    /// by the routes of that Service's profile.
    #[arg(long)]
    to: Option<String>,
    /// The time window the metrics cover, like 30s, 1m, 10m.
    #[arg(long, default_value = "1m")]
    window: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

pub fn run(args: RoutesArgs) -> anyhow::Result<()> {
    let (kind, name) = parse_target(&args.target)?;
    if kind != Resource::Deployment {
        bail!(
            "{}: routes are shown for a deployment: deploy/NAME",
            args.target
        );
    }
    let to = match args.to.as_deref() {
        None => None,
        Some(to) => {
            let service = match to.split_once('/') {
                Some(("svc" | "service" | "services", name)) => name,
                Some(_) => bail!("--to {to:?}: expected a Service: svc/NAME"),
                None => to,
            };
            Some(service.to_string())
        }
    };
    let query = RoutesQuery {
        deployment: name.to_string(),
        namespace: Some(args.namespace.clone()),
        to,
        window: Some(args.window.clone()),
    };
    let rows = get(&args.control_plane.api()?, &query)?;
    let mut out = std::io::stdout().lock();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut out, &rows)?;
            writeln!(out)?;
        }
        Output::Table | Output::Wide if rows.is_empty() => writeln!(
            out,
            "No routes: deploy/{name} in namespace {} has no traffic in the last {} and no ServiceProfile names any.",
            args.namespace, args.window
        )?,
        Output::Table => print_routes(&rows, false, &mut out)?,
        Output::Wide => print_routes(&rows, true, &mut out)?,
    }
    Ok(())
}

fn rps(rate: Option<f64>, traffic: bool) -> String {
    match rate {
        Some(r) if traffic => format!("{r:.1}rps"),
        _ => "-".into(),
    }
}

/// Prints route rows as `conduit routes` shows them; `wide`: effective and actual.
pub fn print_routes(rows: &[RouteRow], wide: bool, out: &mut dyn Write) -> std::io::Result<()> {
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let traffic = r.success_rate.is_some();
            let mut row = vec![
                r.route.clone(),
                r.service.clone().unwrap_or_else(|| "-".into()),
                percent(r.success_rate, 2),
                rps(Some(r.request_rate), traffic),
            ];
            if wide {
                row.push(percent(r.actual_success_rate, 2));
                row.push(rps(r.actual_request_rate, r.actual_success_rate.is_some()));
            }
            row.push(ms(r.latency_ms_p50));
            row.push(ms(r.latency_ms_p95));
            row.push(ms(r.latency_ms_p99));
            row
        })
        .collect();
    let header: Vec<&str> = if wide {
        vec![
            "ROUTE",
            "SERVICE",
            "EFFECTIVE_SUCCESS",
            "EFFECTIVE_RPS",
            "ACTUAL_SUCCESS",
            "ACTUAL_RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
        ]
    } else {
        vec![
            "ROUTE",
            "SERVICE",
            "SUCCESS",
            "RPS",
            "LATENCY_P50",
            "LATENCY_P95",
            "LATENCY_P99",
        ]
    };
    print_table(&header, &table, out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(route: &str, success: Option<f64>, actual: Option<f64>) -> RouteRow {
        RouteRow {
            route: route.into(),
            service: Some("web-svc.emojivoto".into()),
            request_rate: 2.0,
            success_rate: success,
            actual_request_rate: actual.map(|_| 2.5),
            actual_success_rate: actual,
            latency_ms_p50: success.map(|_| 1.5),
            latency_ms_p95: success.map(|_| 4.0),
            latency_ms_p99: success.map(|_| 12.0),
        }
    }

    #[test]
    fn wide_tables_show_effective_and_actual_and_idle_routes_show_dashes() {
        let rows = [
            row("GET /api/list", Some(1.0), Some(0.8)),
            row("GET /api/vote", None, None),
        ];
        let mut out = Vec::new();
        print_routes(&rows, true, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ROUTE"), "{text}");
        assert!(
            lines[0].contains("EFFECTIVE_SUCCESS   EFFECTIVE_RPS   ACTUAL_SUCCESS"),
            "{text}"
        );
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "GET",
                "/api/list",
                "web-svc.emojivoto",
                "100.00%",
                "2.0rps",
                "80.00%",
                "2.5rps",
                "1.5ms",
                "4.0ms",
                "12ms"
            ]
        );
        let idle: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(idle[3..], ["-", "-", "-", "-", "-", "-", "-"]);
        let mut out = Vec::new();
        print_routes(&rows, false, &mut out).unwrap();
        assert!(!String::from_utf8(out).unwrap().contains("ACTUAL"));
    }
}
