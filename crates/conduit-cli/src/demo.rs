//! `conduit demo`: the sample app, meshed, on this host, with its golden metrics. Builds
//! nothing: it runs the binaries built beside `conduit` (see the README).

use crate::{api::ApiAddr, stat};
use anyhow::Context as _;
use clap::Args;
use conduit_k8s::inject::{self, InjectOptions};
use conduit_local::{client, layout::Layout};
use std::{
    io::Write,
    time::{Duration, Instant},
};

/// The sample app's manifest, as shipped in `examples/emojivoto`.
const EMOJIVOTO: &str = include_str!("../../../examples/emojivoto/emojivoto.yml");

#[derive(Args)]
pub struct DemoArgs {
    /// How long to wait for pods and then for traffic.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    client::require_root("up (for conduit demo)")?;
    let mut out = std::io::stdout().lock();
    let layout = Layout::from_env();
    writeln!(
        out,
        "Meshing the sample app (emojivoto) with conduit inject..."
    )?;
    let injected = inject::inject(
        EMOJIVOTO,
        "examples/emojivoto/emojivoto.yml",
        &InjectOptions::default(),
    )?;
    let spec = client::load(&[("emojivoto.yml (injected)".to_string(), injected.output)])
        .context("the sample app's binaries must be built next to conduit: run `cargo build --release --workspace` first")?;
    if client::resolve_program("conduit-controller").is_none() {
        anyhow::bail!(
            "conduit-controller was not found next to conduit or on PATH: the demo needs the control plane; run `cargo build --release --workspace` first"
        );
    }
    writeln!(
        out,
        "Running it on this host (pods are network namespaces)..."
    )?;
    client::up(&layout, spec, None, args.timeout, &mut out)?;

    writeln!(
        out,
        "Waiting for traffic from the vote bot to show in the metrics..."
    )?;
    let api = ApiAddr::local();
    let start = Instant::now();
    let rows = loop {
        let rows =
            stat::fetch_stat(&api, "deploy", Some("emojivoto"), None, "1m").unwrap_or_default();
        let serving = ["web", "emoji", "voting"];
        let seen = rows
            .iter()
            .filter(|r| {
                serving.contains(&r["name"].as_str().unwrap_or(""))
                    && r["request_rate"].as_f64().unwrap_or(0.0) > 0.0
            })
            .count();
        if seen == serving.len() {
            break rows;
        }
        if start.elapsed() > args.timeout {
            anyhow::bail!("no traffic in the metrics after {}s; see `conduit local status` and the logs in {}", args.timeout.as_secs(), layout.logs().display());
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    writeln!(out, "\n$ conduit stat deploy -n emojivoto")?;
    stat::print_stat(&rows, false, &mut out)?;
    writeln!(
        out,
        "
The voting service fails every vote for :doughnut:, so its success rate (and the web's)
sits below 100%: that is the mesh seeing a real failure, with no change to the app.

Try next:
  conduit stat deploy -n emojivoto --window 30s     golden metrics, refreshed
  conduit stat pod -n emojivoto -o json             the same as JSON
  conduit edges deploy -n emojivoto                 who calls whom
  conduit tap deploy/web -n emojivoto               live requests, until Ctrl-C
  conduit top deploy/web -n emojivoto               the busiest paths
  conduit local status                              pods, services, restarts
  conduit local exec -n emojivoto POD -- curl -s web-svc/api/leaderboard
  conduit local down                                remove everything"
    )?;
    Ok(())
}
