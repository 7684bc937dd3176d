//! `conduit`: the mesh's command line. Subcommands follow kubectl's conventions
//! (`-n/--namespace`, `-o json`); errors name what was wrong and what to do, with exit
//! status 1, and bad usage exits 2.

mod inject;
mod local;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "conduit",
    version,
    about = "A lightweight service mesh: mesh workloads, watch their golden metrics"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Add the conduit proxy to the workloads of a manifest (FILE or - for stdin).
    Inject(inject::InjectArgs),
    /// Remove the conduit proxy from the workloads of a manifest.
    Uninject(inject::UninjectArgs),
    /// Run Deployments and Services on this host, meshed or not.
    Local(local::LocalArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inject(args) => inject::inject(args),
        Command::Uninject(args) => inject::uninject(args),
        Command::Local(args) => local::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
