//! `conduit completion SHELL`: shell completion for every subcommand, flag and value,
//! generated from the command line's own definition (clap_complete), so that it never
//! falls behind it. Load it with `source <(conduit completion bash)` (zsh: `source
//! <(conduit completion zsh)` after `compinit`; fish: `conduit completion fish | source`).

use clap::Args;
use clap_complete::Shell;
use std::io::Write;

#[derive(Args)]
pub struct CompletionArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: Shell,
}

/// Prints the completion script of `command` for the shell asked.
pub fn run(args: CompletionArgs, mut command: clap::Command) -> anyhow::Result<()> {
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut command, "conduit", &mut script);
    std::io::stdout().write_all(&script)?;
    Ok(())
}
