//! `registryctl`: the operator's command line of the heartbeat registry (see
//! `registry_node::cli`). Prints what the command answers; on error, one line on stderr
//! and exit code 1, or 2 when the service or host was not found.

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use registry_node::cli::{execute, Cli, CliError};
use registry_node::signals;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    signals::init_tracing();
    signals::install_abort_on_panic();
    match execute(cli).await {
        Ok(text) => {
            // A closed stdout (`| head`) is not worth a panic.
            let _ = std::io::stdout().lock().write_all(text.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            match &e {
                // cinder-manage's exact line, e.g. "Host not found. Failed to remove ...".
                CliError::NotFound(message) => eprintln!("{message}"),
                other => eprintln!("registryctl: error: {other}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}
