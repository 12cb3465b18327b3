//! `registry-node --config FILE`: runs one node of the heartbeat registry.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use registry_node::{signals, NodeConfig};

/// mimalloc: the write path allocates and frees per heartbeat on every node, and glibc's
/// malloc took 17-44% of the leader's time (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One node of the replicated service-heartbeat registry.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The node's TOML config file.
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    signals::init_tracing();
    signals::install_abort_on_panic();
    let args = Args::parse();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "registry-node failed");
            eprintln!("registry-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = NodeConfig::load(&args.config)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    registry_node::run(config, listener, signals::shutdown_signal()).await?;
    Ok(())
}
