//! `dice-agent --config FILE`: parses flags, loads the config, runs the agent,
//! and maps the outcome to an exit status (0 clean, 1 runtime failure, 2 bad input).

use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use dice_agent::{Args, Raised, RunError, check, config};

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(shell) = args.completions {
        dice_proto::clidocs::write_completions(Args::command(), shell, &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    if args.man {
        return match dice_proto::clidocs::write_man(Args::command(), &mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("dice-agent: cannot write the man page: {error}");
                ExitCode::from(1)
            }
        };
    }
    let Some(config_path) = args.config else {
        eprintln!("dice-agent: --config FILE is required");
        return ExitCode::from(2);
    };
    let config = match config::load(&config_path) {
        Ok(config) => config,
        Err(errors) => {
            for error in &errors.0 {
                eprintln!("dice-agent: {error}");
            }
            return ExitCode::from(2);
        }
    };
    if args.check {
        return match check(&config) {
            Ok(summary) => {
                print!("{summary}");
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for error in &errors {
                    eprintln!("dice-agent: {error}");
                }
                ExitCode::from(2)
            }
        };
    }
    // Declared before the runtime so it drops after it: lines logged while
    // the runtime shuts down are still written out.
    let (_log_guard, rpc_sink) = dice_agent::init_logging(
        args.log_format.unwrap_or(config.log.format),
        &config.log.level,
    );
    match dice_agent::raise_nofile() {
        Ok(Raised::From(from, to)) => {
            tracing::debug!(?from, ?to, "raised the open files limit (RLIMIT_NOFILE)");
        }
        Ok(Raised::Already(_)) => {}
        Err(error) => tracing::warn!(%error, "cannot raise the open files limit (RLIMIT_NOFILE)"),
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("dice-agent: cannot start the async runtime: {error}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dice_agent::run(
        config,
        args.ready_file.as_deref(),
        rpc_sink,
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(RunError::Config(message)) => {
            for line in message.lines() {
                tracing::error!("{line}");
            }
            ExitCode::from(2)
        }
        Err(RunError::Runtime(error)) => {
            tracing::error!("{error:#}");
            ExitCode::from(1)
        }
    }
}
