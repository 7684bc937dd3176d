//! `conduit local up | down | status`: the mesh on this host (see `conduit-local`).

use crate::inject::read_input;
use crate::trust::IdentityFiles;
use clap::{Args, Subcommand, ValueEnum};
use conduit_local::{client, layout::Layout, prometheus::Metrics, state::State};
use std::{io::Write, time::Duration};

#[derive(Args)]
pub struct LocalArgs {
    #[command(subcommand)]
    command: LocalCommand,
}

#[derive(Subcommand)]
enum LocalCommand {
    /// Run the Deployments and Services of manifests (adding to what runs); waits until ready.
    Up {
        /// Manifest files (multi-document YAML), or - for standard input.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
        /// How long to wait for every pod to be ready.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// The user's trust anchor and issuer, used when the runtime starts.
        #[command(flatten)]
        identity: IdentityFiles,
        /// Run a Prometheus in the runtime that scrapes every proxy, and point the
        /// control plane's metrics API at it (Debian's `prometheus`; used when the runtime
        /// starts).
        #[arg(long, conflicts_with = "prometheus_url")]
        prometheus: bool,
        /// Point the control plane's metrics API at this Prometheus, reached from the
        /// runtime's node namespace, which must scrape every proxy as job conduit-proxies
        /// (used when the runtime starts).
        #[arg(long, value_name = "URL", value_parser = parse_prometheus_url)]
        prometheus_url: Option<String>,
    },
    /// Stop everything and remove every namespace, link and rule the runtime made.
    Down,
    /// Show pods and services.
    Status {
        #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Run a command inside a pod, as its containers run: its network, its hosts file, its environment.
    Exec {
        /// The pod's namespace.
        #[arg(short = 'n', long = "namespace", default_value = "default")]
        namespace: String,
        /// The pod's name (see `conduit local status`).
        pod: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The supervisor process (started by `up`).
    #[command(hide = true)]
    Daemon,
}

#[derive(Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
}

pub fn run(args: LocalArgs) -> anyhow::Result<()> {
    let layout = Layout::from_env();
    let mut out = std::io::stdout().lock();
    match args.command {
        LocalCommand::Up {
            files,
            timeout,
            identity,
            prometheus,
            prometheus_url,
        } => {
            let inputs = files
                .iter()
                .map(|f| read_input(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let spec = client::load(&inputs)?;
            let trust = identity.load()?;
            let metrics = match (prometheus, prometheus_url) {
                (true, _) => Some(Metrics::Run),
                (false, Some(url)) => Some(Metrics::Url(url)),
                (false, None) => None,
            };
            client::up(
                &layout,
                spec,
                trust.as_ref(),
                metrics.as_ref(),
                timeout,
                &mut out,
            )?;
            Ok(())
        }
        LocalCommand::Down => client::down(&layout, &mut out),
        LocalCommand::Status { output } => status(&layout, output, &mut out),
        LocalCommand::Exec {
            namespace,
            pod,
            command,
        } => {
            let code = client::exec(&layout, &namespace, &pod, &command)?;
            std::process::exit(code);
        }
        LocalCommand::Daemon => {
            init_logging();
            conduit_local::daemon::run(layout)
        }
    }
}

/// A Prometheus URL, refused here with the controller's own words when it would refuse it.
fn parse_prometheus_url(raw: &str) -> Result<String, String> {
    raw.parse::<conduit_api::prometheus::PrometheusUrl>()
        .map(|url| url.to_string())
}

fn init_logging() {
    use tracing_subscriber::{filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt};
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stderr),
        )
        .with(LevelFilter::INFO)
        .init();
}

fn status(layout: &Layout, output: Output, out: &mut dyn Write) -> anyhow::Result<()> {
    let Some((state, alive)) = client::status(layout)? else {
        writeln!(
            out,
            "the local runtime is not running (start it with: conduit local up -f FILE)"
        )?;
        return Ok(());
    };
    if let Output::Json = output {
        serde_json::to_writer_pretty(&mut *out, &state)?;
        writeln!(out)?;
        return Ok(());
    }
    if !alive {
        writeln!(out, "warning: the supervisor is not running (it crashed or was killed): pods are not supervised; run `conduit local down` to clean up\n")?;
    }
    print_status(&state, out)
}

fn print_status(state: &State, out: &mut dyn Write) -> anyhow::Result<()> {
    for c in &state.control_plane {
        let how = if c.running {
            "running".to_string()
        } else {
            format!(
                "not running ({})",
                c.last_exit.as_deref().unwrap_or("starting")
            )
        };
        writeln!(
            out,
            "control plane: {} {how}, {} restart(s), log {}",
            c.name, c.restarts, c.log
        )?;
    }
    if !state.control_plane.is_empty() {
        writeln!(out)?;
    }
    writeln!(
        out,
        "{:<12} {:<28} {:<6} {:<8} {:<9} {:<14} {:<6} MESSAGE",
        "NAMESPACE", "NAME", "READY", "STATUS", "RESTARTS", "IP", "MESHED"
    )?;
    for p in &state.pods {
        let ready = p.containers.iter().filter(|c| c.ready).count();
        let restarts: u32 = p.containers.iter().map(|c| c.restarts).sum();
        writeln!(
            out,
            "{:<12} {:<28} {:<6} {:<8} {:<9} {:<14} {:<6} {}",
            p.namespace,
            p.name,
            format!("{ready}/{}", p.containers.len()),
            p.phase,
            restarts,
            p.ip,
            if p.meshed { "yes" } else { "no" },
            p.message
        )?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "{:<12} {:<20} {:<14} {:<12} ENDPOINTS",
        "NAMESPACE", "SERVICE", "VIRTUAL IP", "PORTS"
    )?;
    for s in &state.services {
        let ports: Vec<String> = s.ports.iter().map(|p| p.port.to_string()).collect();
        let endpoints: Vec<String> = s
            .ports
            .iter()
            .flat_map(|p| p.endpoints.iter().map(|e| format!("{}:{}", e.ip, e.port)))
            .collect();
        writeln!(
            out,
            "{:<12} {:<20} {:<14} {:<12} {}",
            s.namespace,
            s.name,
            s.vip,
            ports.join(","),
            endpoints.join(",")
        )?;
    }
    Ok(())
}
