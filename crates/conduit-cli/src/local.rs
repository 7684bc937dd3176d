//! `conduit local up | down | status`: the mesh on this host (see `conduit-local`).

use crate::inject::read_input;
use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use conduit_local::{client, layout::Layout, state::State};
use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

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
        /// The mesh's trust anchors (PEM), instead of generating a new anchor when the
        /// runtime starts; needs the issuer's certificate and key too.
        #[arg(long, requires_all = ["identity_issuer_certificate_file", "identity_issuer_key_file"])]
        identity_trust_anchors_file: Option<PathBuf>,
        /// The issuer's certificate (PEM): a CA signed by one of the trust anchors.
        #[arg(long, requires = "identity_trust_anchors_file")]
        identity_issuer_certificate_file: Option<PathBuf>,
        /// The issuer's ECDSA P-256 private key (PEM).
        #[arg(long, requires = "identity_trust_anchors_file")]
        identity_issuer_key_file: Option<PathBuf>,
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
            identity_trust_anchors_file,
            identity_issuer_certificate_file,
            identity_issuer_key_file,
        } => {
            let inputs = files
                .iter()
                .map(|f| read_input(f))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let spec = client::load(&inputs)?;
            let trust = match (
                identity_trust_anchors_file,
                identity_issuer_certificate_file,
                identity_issuer_key_file,
            ) {
                (Some(a), Some(c), Some(k)) => Some(trust_files(&a, &c, &k)?),
                _ => None,
            };
            client::up(&layout, spec, trust.as_ref(), timeout, &mut out)?;
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
            "control plane: {} {how}, {} restart(s), log {}\n",
            c.name, c.restarts, c.log
        )?;
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

/// The user's trust anchor and issuer, read and checked before anything starts.
pub fn trust_files(
    anchors: &Path,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<conduit_identity::ca::TrustFiles> {
    let read = |p: &Path, flag: &str| {
        std::fs::read_to_string(p).with_context(|| format!("reading {flag} {}", p.display()))
    };
    let files = conduit_identity::ca::TrustFiles {
        anchor_pem: read(anchors, "--identity-trust-anchors-file")?,
        issuer_cert_pem: read(cert, "--identity-issuer-certificate-file")?,
        issuer_key_pem: read(key, "--identity-issuer-key-file")?,
    };
    files.check().with_context(|| {
        format!(
            "the identity files ({}, {}, {}) cannot be used",
            anchors.display(),
            cert.display(),
            key.display()
        )
    })?;
    Ok(files)
}
