//! `conduit version`: this CLI's version and the control plane's, as kubectl and Linkerd
//! print them; when the control plane cannot be reached it says so, and why, and fails.

use crate::api::{get, ControlPlaneArgs};
use clap::{Args, ValueEnum};
use conduit_api::http::{Version, VersionQuery, VERSION};
use serde::Serialize;
use std::io::Write;

#[derive(Clone, Copy, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Args)]
pub struct VersionArgs {
    /// Only the CLI's version: ask no control plane.
    #[arg(long)]
    client: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table)]
    output: Output,
    #[command(flatten)]
    control_plane: ControlPlaneArgs,
}

/// What `-o json` prints: `server` is `null` with `--client` or when unreachable.
#[derive(Serialize)]
struct Versions {
    client: Version,
    server: Option<Version>,
}

pub fn run(args: VersionArgs) -> anyhow::Result<()> {
    let client = Version {
        version: VERSION.to_string(),
    };
    let server = if args.client {
        None
    } else {
        Some(
            args.control_plane
                .api()
                .and_then(|api| get(&api, &VersionQuery {})),
        )
    };
    let mut out = std::io::stdout().lock();
    let reached = server.as_ref().and_then(|s| s.as_ref().ok()).cloned();
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(
                &mut out,
                &Versions {
                    client,
                    server: reached,
                },
            )?;
            writeln!(out)?;
        }
        Output::Table => {
            writeln!(out, "Client version: {}", client.version)?;
            match &reached {
                Some(v) => writeln!(out, "Server version: {}", v.version)?,
                None if server.is_some() => writeln!(out, "Server version: unavailable")?,
                None => {}
            }
        }
    }
    match server {
        Some(Err(e)) => Err(e.context("cannot tell the control plane's version")),
        _ => Ok(()),
    }
}
