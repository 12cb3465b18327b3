//! `registry-bench`: see `registry-bench --help` and bench/run.sh.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let opts = bench::Options::parse();
    match bench::run(&opts).await {
        Ok(mut report) => {
            report.command = bench::shell_join(std::env::args());
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("registry-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
