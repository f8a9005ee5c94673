//! Shell completions and man pages for both binaries, generated from their
//! clap definitions (`--completions SHELL`, `--man`; `dicectl completions SHELL`,
//! `dicectl man [--out DIR]`).

use std::io::Write;
use std::path::{Path, PathBuf};

/// A shell to generate completions for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash
    Bash,
    /// zsh
    Zsh,
    /// fish
    Fish,
}

/// Writes the completion script for `command` to `out`.
pub fn write_completions(mut command: clap::Command, shell: Shell, out: &mut dyn Write) {
    let name = command.get_name().to_owned();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut command, name, out);
}

/// Writes the roff man page for `command` to `out`. Its SUBCOMMANDS section
/// refers to the pages [`write_man_pages`] writes (`dicectl-roll(1)`, ...).
pub fn write_man(command: clap::Command, out: &mut dyn Write) -> std::io::Result<()> {
    clap_mangen::Man::new(for_man(command)).render(out)
}

/// Writes the man page of `command` and of every subcommand, nested ones
/// included, into `dir` (`dicectl.1`, `dicectl-roll.1`, `dicectl-certs-init.1`,
/// ...), and returns the files written, the top page last.
pub fn write_man_pages(command: clap::Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    fn write(
        command: clap::Command,
        source: &str,
        dir: &Path,
        written: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            write(sub.clone(), source, dir, written)?;
        }
        let man = clap_mangen::Man::new(command).source(source);
        written.push(man.generate_to(dir)?);
        Ok(())
    }
    let mut command = for_man(command);
    // Names subcommands for their pages: `dicectl-certs-init`.
    command.build();
    // Every page's footer names the program and its version, as the top page does.
    let source = format!(
        "{} {}",
        command.get_name(),
        command.get_version().unwrap_or_default()
    );
    let mut written = Vec::new();
    write(command, &source, dir, &mut written)?;
    Ok(written)
}

/// The `help` subcommand clap adds has no page of its own: leave it out.
fn for_man(command: clap::Command) -> clap::Command {
    command.disable_help_subcommand(true)
}
