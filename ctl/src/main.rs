//! The `dicectl` binary: parses the command line, runs it, maps the result to an exit status.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let cli = dicectl::cli::Cli::parse();
    match dicectl::run(cli) {
        Ok(outcome) => outcome.exit_code(),
        Err(error) => {
            // A fleet file with several errors reports one per line; each gets the prefix.
            for line in format!("{error:#}").lines() {
                eprintln!("dicectl: {line}");
            }
            ExitCode::from(dicectl::exit_status(&error))
        }
    }
}
