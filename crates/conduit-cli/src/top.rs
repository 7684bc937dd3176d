//! `conduit top deploy/NAME`: the busiest paths of a resource, from its live traffic over
//! a window (tap, aggregated by the control plane).

use crate::{
    api::{get_json, query_value as q, ControlPlaneArgs},
    stat::print_table,
    tap::parse_target,
};
use clap::{Args, ValueEnum};
use std::io::Write;

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args)]
pub struct TopArgs {
    /// What to watch: deploy/NAME, pod/NAME or ns/NAME.
    target: String,
    #[arg(short = 'n', long = "namespace", default_value = "default")]
    namespace: String,
    /// How long to watch live traffic, like 10s.
    #[arg(long, default_value = "10s")]
    window: String,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

pub fn run(args: TopArgs) -> anyhow::Result<()> {
    let (kind, name) = parse_target(&args.target)?;
    let mut path = format!(
        "/api/top?resource={kind}&name={}&window={}",
        q(name),
        q(&args.window)
    );
    if kind != "ns" {
        path.push_str(&format!("&namespace={}", q(&args.namespace)));
    }
    let mut out = std::io::stdout().lock();
    if let Output::Table = args.output {
        writeln!(
            out,
            "watching live traffic of {} for {}...",
            args.target, args.window
        )?;
        out.flush()?;
    }
    let rows = get_json(&args.control_plane.api()?, &path)?
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Output::Json = args.output {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no requests in the window")?;
        return Ok(());
    }
    let ms = |v: &serde_json::Value| v.as_f64().map_or("-".to_string(), |x| format!("{x:.1}ms"));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                if r["direction"] == "inbound" {
                    "in".into()
                } else {
                    "out".into()
                },
                r["peer"].as_str().unwrap_or("").to_string(),
                r["authority"].as_str().unwrap_or("").to_string(),
                r["path"].as_str().unwrap_or("").to_string(),
                r["requests"].to_string(),
                r["success_rate"]
                    .as_f64()
                    .map_or("-".into(), |s| format!("{:.2}%", s * 100.0)),
                ms(&r["latency_ms_p50"]),
                ms(&r["latency_ms_max"]),
            ]
        })
        .collect();
    print_table(
        &[
            "DIR",
            "PEER",
            "AUTHORITY",
            "PATH",
            "COUNT",
            "SUCCESS",
            "LATENCY_P50",
            "LATENCY_MAX",
        ],
        &table,
        &mut out,
    )?;
    Ok(())
}
