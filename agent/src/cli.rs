//! The agent's command-line flags.

use std::path::PathBuf;

use clap::Parser;

use crate::config::LogFormat;

/// Serves the dice API over mTLS and h2c, with certificates that reload without a restart.
#[derive(Debug, Parser)]
#[command(
    name = "dice-agent",
    version = dice_proto::VERSION,
    after_help = "EXIT STATUS:\n  0  clean shutdown (or --check found no problem)\n  1  runtime failure\n  2  bad flags, config or certificate files"
)]
pub struct Args {
    /// The agent's TOML config file.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["completions", "man"])]
    pub config: Option<PathBuf>,
    /// Load and validate the config and every certificate file, print a summary, and exit.
    /// A running agent applies a config that passes when it gets SIGHUP or the file is saved.
    #[arg(long)]
    pub check: bool,
    /// Once every listener is bound, write the bound addresses here (one `NAME MODE ADDRESS` line per listener, and `metrics metrics ADDRESS` with [metrics]).
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Log format; overrides `log.format` in the config.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Print the shell completion script for SHELL and exit.
    #[arg(long, value_name = "SHELL", exclusive = true)]
    pub completions: Option<dice_proto::clidocs::Shell>,
    /// Print the man page (roff) and exit.
    #[arg(long, exclusive = true)]
    pub man: bool,
}
