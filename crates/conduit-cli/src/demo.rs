//! `conduit demo`: the sample app, meshed, on this host, with its golden metrics. Builds
//! nothing: it runs the binaries built beside `conduit` (see the README).

use crate::{api::ApiAddr, stat};
use anyhow::Context as _;
use clap::Args;
use conduit_api::{control_plane, http::StatRow};
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

/// How long the demo waits for the first failed vote before showing the table.
const DOUGHNUT_PATIENCE: Duration = Duration::from_secs(30);

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
    if client::resolve_program(control_plane::CONTROLLER).is_none() {
        anyhow::bail!(
            "conduit-controller was not found next to conduit or on PATH: the demo needs the control plane; run `cargo build --release --workspace` first"
        );
    }
    writeln!(
        out,
        "Running it on this host (pods are network namespaces)..."
    )?;
    client::up(&layout, spec, None, None, args.timeout, &mut out)?;

    writeln!(
        out,
        "Waiting for traffic from the vote bot to show in the metrics..."
    )?;
    let api = ApiAddr::local();
    let start = Instant::now();
    let fetch =
        || stat::fetch_stat(&api, "deploy", Some("emojivoto"), None, "1m").unwrap_or_default();
    let serving = ["web", "emoji", "voting"];
    let mut rows = loop {
        let rows = fetch();
        let seen = rows
            .iter()
            .filter(|r| serving.contains(&r.name.as_str()) && r.request_rate > 0.0)
            .count();
        if seen == serving.len() {
            break rows;
        }
        if start.elapsed() > args.timeout {
            anyhow::bail!("no traffic in the metrics after {}s; see `conduit local status` and the logs in {}", args.timeout.as_secs(), layout.logs().display());
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    // The bot votes for :doughnut: about once in 40 votes: give it a little while, so
    // that the table shows what the text below says.
    let voting_fails = |rows: &[StatRow]| {
        rows.iter()
            .any(|r| r.name == "voting" && r.success_rate.is_some_and(|s| s < 1.0))
    };
    let patience = Instant::now();
    while !voting_fails(&rows) && patience.elapsed() < DOUGHNUT_PATIENCE {
        std::thread::sleep(Duration::from_secs(1));
        rows = fetch();
    }
    writeln!(out, "\n$ conduit stat deploy -n emojivoto")?;
    stat::print_stat(&rows, false, false, &mut out)?;
    let failures = if voting_fails(&rows) {
        "so its success rate (and the web's)\nsits below 100%"
    } else {
        "so once the bot has voted for it, the\nsuccess rate of voting (and of the web) drops below 100%"
    };
    writeln!(
        out,
        "
The voting service fails every vote for :doughnut:, {failures}: that is the mesh seeing a real failure, with no change to the app.

Try next:
  conduit dashboard                                 the web dashboard, on http://localhost:50750
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
