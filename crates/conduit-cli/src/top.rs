//! `conduit top deploy/NAME`: the busiest paths of a resource, from its live traffic over
//! a window (tap, aggregated by the control plane).

use crate::{
    api::{get, ControlPlaneArgs},
    stat::{percent, print_table},
    tap::{parse_target, target_namespace},
};
use clap::{Args, ValueEnum};
use conduit_api::http::TopQuery;
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
    let query = TopQuery {
        resource: kind.short_name().to_string(),
        name: Some(name.to_string()),
        window: Some(args.window.clone()),
        namespace: target_namespace(kind, &args.namespace),
    };
    let mut out = std::io::stdout().lock();
    if let Output::Table = args.output {
        writeln!(
            out,
            "watching live traffic of {} for {}...",
            args.target, args.window
        )?;
        out.flush()?;
    }
    let rows = get(&args.control_plane.api()?, &query)?;
    if let Output::Json = args.output {
        serde_json::to_writer_pretty(&mut out, &rows)?;
        writeln!(out)?;
        return Ok(());
    }
    if rows.is_empty() {
        writeln!(out, "no requests in the window")?;
        return Ok(());
    }
    let ms = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.1}ms"));
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                if r.direction == "inbound" {
                    "in".into()
                } else {
                    "out".into()
                },
                r.peer.clone(),
                r.authority.clone(),
                r.path.clone(),
                r.requests.to_string(),
                percent(r.success_rate, 2),
                ms(r.latency_ms_p50),
                ms(r.latency_ms_max),
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
