//! The `conduit-proxy` binary: `conduit-proxy` runs the proxy, configured by
//! `CONDUIT_PROXY_*` variables; `conduit-proxy init` writes the pod's iptables rules.

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use conduit_api::{admin, flags::proxy as cli, ports, proxy_env, uid};
use conduit_init::{Family, PortList, Redirect};
use conduit_proxy::{app::Bound, config::Config};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = cli::BINARY,
    version,
    about = "Conduit's sidecar proxy: transparent, protocol-aware, with golden metrics",
    after_help = variables_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run,
    /// Write the iptables rules that redirect this network namespace's TCP through the proxy.
    #[command(name = cli::INIT)]
    Init(InitArgs),
    /// Wait until the pod's proxy is ready: the postStart hook that holds an application
    /// back when the proxy runs as a regular container rather than a native sidecar.
    #[command(name = cli::AWAIT)]
    Await(AwaitArgs),
}

#[derive(Args)]
struct AwaitArgs {
    /// The proxy's admin address, whose /ready is polled.
    #[arg(long = cli::ADMIN_ADDR.name(), default_value_t = std::net::SocketAddr::from(([127, 0, 0, 1], ports::PROXY_ADMIN)))]
    admin_addr: std::net::SocketAddr,
    /// Give up (and fail) after this long.
    #[arg(long = cli::TIMEOUT.name(), default_value = "120s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

#[derive(Args)]
struct InitArgs {
    /// The UID the proxy runs as; its own traffic is not redirected.
    #[arg(long = cli::PROXY_UID.name(), default_value_t = uid::PROXY)]
    proxy_uid: u32,
    /// The proxy's inbound port.
    #[arg(long = cli::INBOUND_PORT.name(), default_value_t = ports::PROXY_INBOUND)]
    inbound_port: u16,
    /// The proxy's outbound port.
    #[arg(long = cli::OUTBOUND_PORT.name(), default_value_t = ports::PROXY_OUTBOUND)]
    outbound_port: u16,
    /// Inbound ports not to redirect, like 22,9000-9010 (4190 and 4191 never are).
    #[arg(long = cli::SKIP_INBOUND_PORTS.name(), default_value = "")]
    skip_inbound_ports: PortList,
    /// Outbound ports not to redirect, like 25,3306.
    #[arg(long = cli::SKIP_OUTBOUND_PORTS.name(), default_value = "")]
    skip_outbound_ports: PortList,
    /// Leave IPv6 alone.
    #[arg(long = cli::NO_IPV6.name())]
    no_ipv6: bool,
    /// Print the rules instead of writing them.
    #[arg(long = cli::DRY_RUN.name())]
    dry_run: bool,
}

fn variables_help() -> String {
    let mut out = String::from("Environment (proxy):\n");
    for (name, default, what) in conduit_proxy::config::variables() {
        out.push_str(&format!("  {name:<44} {what} [default: {default}]\n"));
    }
    out
}

fn main() -> ExitCode {
    // A sidecar starts with no arguments: it skips the argument parser altogether, which
    // keeps its code out of the resident memory of every proxy.
    let result = if std::env::args_os().len() <= 1 {
        run()
    } else {
        match Cli::parse().command {
            None | Some(Command::Run) => run(),
            Some(Command::Init(args)) => init(args),
            Some(Command::Await(args)) => await_ready(args),
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("conduit-proxy: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init(args: InitArgs) -> anyhow::Result<()> {
    let redirect = Redirect {
        proxy_uid: args.proxy_uid,
        inbound_port: args.inbound_port,
        outbound_port: args.outbound_port,
        skip_inbound_ports: args.skip_inbound_ports.0,
        skip_outbound_ports: args.skip_outbound_ports.0,
    };
    let mut families = vec![Family::Ipv4];
    if !args.no_ipv6 && conduit_init::ipv6_available() {
        families.push(Family::Ipv6);
    }
    if args.dry_run {
        print!("{}", redirect.dry_run(&families));
        return Ok(());
    }
    for family in families {
        redirect
            .apply(family)
            .with_context(|| format!("writing the {family:?} redirect rules"))?;
    }
    Ok(())
}

fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    init_tracing(&config.log)?;
    raise_open_files_limit(&config);
    let runtime = if config.cores == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.cores)
            .enable_all()
            .build()
    }
    .context("starting the async runtime")?;
    runtime.block_on(async {
        let bound = Bound::bind(config).await?;
        bound
            .serve(shutdown_signal())
            .await
            .map_err(anyhow::Error::msg)?;
        Ok(())
    })
}

/// Raises the soft limit on open files to the hard one: each proxied connection takes two
/// descriptors, and a container's default soft limit (often 1024) would let a few hundred
/// idle connections stop every other client, far below `CONDUIT_PROXY_MAX_CONNECTIONS`.
fn raise_open_files_limit(config: &Config) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed in.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    let open_files = limit.rlim_cur;
    let needed = 2 * config.max_connections as u64;
    if !raised {
        tracing::warn!(error = %std::io::Error::last_os_error(), "could not raise the open files limit");
    } else if open_files < needed {
        tracing::warn!(open_files, max_connections = config.max_connections, "the open files limit is below what the connection limit needs (two per connection, both sides)");
    } else {
        tracing::debug!(open_files, "open files limit");
    }
}

fn init_tracing(filter: &str) -> anyhow::Result<()> {
    use tracing_subscriber::{filter::Targets, layer::SubscriberExt, util::SubscriberInitExt};
    let targets: Targets = filter
        .parse()
        .map_err(|e| anyhow::anyhow!("{}={filter:?} is not valid: {e}; expected a level like info, or pairs like warn,conduit_proxy=debug", proxy_env::LOG))?;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(targets)
        .init();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Polls the admin server's `/ready` until it answers 200.
fn await_ready(args: AwaitArgs) -> anyhow::Result<()> {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + args.timeout;
    let step = std::time::Duration::from_millis(200);
    let mut last = String::from("no answer yet");
    while std::time::Instant::now() < deadline {
        let answer = std::net::TcpStream::connect_timeout(&args.admin_addr, step * 5).and_then(
            |mut conn| {
                conn.set_read_timeout(Some(step * 5))?;
                conn.write_all(format!("GET {} HTTP/1.0\r\n\r\n", admin::READY_PATH).as_bytes())?;
                let mut response = Vec::new();
                conn.read_to_end(&mut response)?;
                Ok(String::from_utf8_lossy(&response).into_owned())
            },
        );
        match answer {
            Ok(text) if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") => {
                return Ok(())
            }
            Ok(text) => last = text.lines().last().unwrap_or_default().to_string(),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(step);
    }
    anyhow::bail!(
        "the proxy at {} was not ready after {} ({last})",
        args.admin_addr,
        humantime::format_duration(args.timeout)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::collections::BTreeSet;

    fn longs(cmd: &clap::Command, sub: &str) -> BTreeSet<String> {
        let sub = cmd
            .find_subcommand(sub)
            .unwrap_or_else(|| panic!("no subcommand {sub}"));
        sub.get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .collect()
    }

    #[test]
    fn the_command_line_is_the_contracts() {
        let cmd = Cli::command();
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
        assert_eq!(longs(&cmd, cli::INIT), names(cli::INIT_ARGS));
        assert_eq!(longs(&cmd, cli::AWAIT), names(cli::AWAIT_ARGS));
        // What the injector writes parses.
        let parsed = Cli::try_parse_from([
            cli::BINARY,
            cli::INIT,
            &cli::PROXY_UID.to_string(),
            "2102",
            &cli::SKIP_INBOUND_PORTS.to_string(),
            "22,9000-9010",
            &cli::DRY_RUN.arg(),
        ]);
        assert!(parsed.is_ok(), "{:?}", parsed.err());
    }
}
