//! `registry-node --config FILE [--bootstrap]`: runs one node of the heartbeat registry.
//! `registry-node restore --snapshot FILE --config FILE`: prepares the node's empty data
//! directory from a backup, for a new cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use registry_node::{signals, NodeConfig, StartOptions};

/// mimalloc: the write path allocates and frees per heartbeat on every node, and glibc's
/// malloc took 17-44% of the leader's time (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// One node of the replicated service-heartbeat registry.
#[derive(Debug, Parser)]
#[command(
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    /// The node's TOML config file.
    #[arg(long, short, required = true)]
    config: Option<PathBuf>,
    /// Form a new group with every peer of the config, if this node's data directory is
    /// empty: once, on the founding nodes' first start (starting all of them with it at once
    /// is safe). Refused when a peer already belongs to a group; ignored by a node that holds
    /// data. Without it, a node with an empty data directory joins its peers' group (and
    /// takes its old place back after a lost disk).
    #[arg(long)]
    bootstrap: bool,
    /// Something else to do.
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare this node's empty data directory from a backup (`registryctl snapshot save`)
    /// for a new cluster: restore every member from the same file, then start them; they
    /// form a new cluster (a new cluster id) holding every record of the backup.
    Restore {
        /// The backup file.
        #[arg(long)]
        snapshot: PathBuf,
        /// The node's TOML config file.
        #[arg(long, short)]
        config: PathBuf,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    signals::init_tracing();
    signals::install_abort_on_panic();
    let args = Args::parse();
    let res = match args.command {
        Some(Command::Restore { snapshot, config }) => restore(&config, &snapshot),
        None => match args.config {
            Some(config) => run(config, args.bootstrap).await,
            None => Err(anyhow::anyhow!("--config is required")),
        },
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "registry-node failed");
            eprintln!("registry-node: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: PathBuf, bootstrap: bool) -> anyhow::Result<()> {
    let path = config;
    let config = NodeConfig::load(&path)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let options = StartOptions { bootstrap };
    registry_node::run(
        config,
        &path,
        listener,
        options,
        signals::shutdown_signal(),
        signals::reload_signals(),
    )
    .await?;
    Ok(())
}

fn restore(config: &std::path::Path, snapshot: &std::path::Path) -> anyhow::Result<()> {
    let config = NodeConfig::load(config)?;
    let summary = registry_node::restore::restore(&config, snapshot).context("restore refused")?;
    println!("{summary}");
    Ok(())
}
