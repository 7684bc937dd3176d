//! `conduit`: the mesh's command line. Subcommands follow kubectl's conventions
//! (`-n/--namespace`, `-o json`); errors name what was wrong and what to do, with exit
//! status 1, and bad usage exits 2.

mod api;
mod check;
mod completion;
mod dashboard;
mod demo;
mod identity;
mod inject;
mod install;
mod local;
mod profile;
mod routes;
mod stat;
mod tap;
mod top;
mod trust;
mod version;

use clap::{CommandFactory, Parser, Subcommand};
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
    /// Print the control plane's manifests, for `kubectl apply -f -`.
    Install(install::InstallArgs),
    /// Check that the mesh is healthy (the local runtime, when one runs here).
    Check(check::CheckArgs),
    /// Print what `kubectl delete -f -` needs to remove the control plane.
    Uninstall(install::UninstallArgs),
    /// Add the conduit proxy to the workloads of a manifest (FILE or - for stdin).
    Inject(inject::InjectArgs),
    /// Remove the conduit proxy from the workloads of a manifest.
    Uninject(inject::UninjectArgs),
    /// Run Deployments and Services on this host, meshed or not.
    Local(local::LocalArgs),
    /// Golden metrics (success rate, request rate, latency percentiles) of deployments, pods or namespaces.
    Stat(stat::StatArgs),
    /// Who calls whom, with request rate and success rate.
    Edges(stat::EdgesArgs),
    /// Golden metrics per route of a deployment (deploy/NAME), or of its requests to a Service (--to svc/NAME), from ServiceProfiles.
    Routes(routes::RoutesArgs),
    /// Print a ServiceProfile for a Service: a template, or the routes of an OpenAPI 3 document or a .proto's gRPC services.
    Profile(profile::ProfileArgs),
    /// Live requests of a resource's pods (deploy/NAME, pod/NAME, ns/NAME), until Ctrl-C or --max.
    Tap(tap::TapArgs),
    /// The busiest paths of a resource, from its live traffic over a window.
    Top(top::TopArgs),
    /// The identity and certificate of each proxy of a resource.
    Identity(identity::IdentityArgs),
    /// Run the sample app, meshed, on this host, and show its golden metrics.
    Demo(demo::DemoArgs),
    /// Serve the web dashboard on a local port, until interrupted.
    Dashboard(dashboard::DashboardArgs),
    /// Print the CLI's version and the control plane's.
    Version(version::VersionArgs),
    /// Print shell completion (bash, zsh, fish, elvish, powershell), for `source <(...)`.
    Completion(completion::CompletionArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Install(args) => install::install(args),
        Command::Check(args) => check::run(args),
        Command::Uninstall(args) => install::uninstall(args),
        Command::Inject(args) => inject::inject(args),
        Command::Uninject(args) => inject::uninject(args),
        Command::Local(args) => local::run(args),
        Command::Stat(args) => stat::stat(args),
        Command::Edges(args) => stat::edges(args),
        Command::Routes(args) => routes::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Tap(args) => tap::run(args),
        Command::Top(args) => top::run(args),
        Command::Identity(args) => identity::run(args),
        Command::Demo(args) => demo::run(args),
        Command::Dashboard(args) => dashboard::run(args),
        Command::Version(args) => version::run(args),
        Command::Completion(args) => completion::run(args, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A reader that went away (`conduit stat ... | head`) is not a failure.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("conduit: {e:#}");
            ExitCode::FAILURE
        }
    }
}
