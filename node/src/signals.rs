//! Process-wide concerns of the binaries: the shutdown and reload signals, the panic hook,
//! logging.

/// The SIGHUPs this process receives, one item each (never ends); pending forever where the
/// signal cannot be listened for (logged).
pub fn reload_signals() -> impl futures::Stream<Item = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let hangups = signal(SignalKind::hangup())
            .inspect_err(|e| tracing::warn!(error = %e, "cannot listen for SIGHUP: no reloads"))
            .ok();
        futures::stream::unfold(hangups, |hangups| async move {
            match hangups {
                Some(mut h) => match h.recv().await {
                    Some(()) => Some(((), Some(h))),
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        })
    }
    #[cfg(not(unix))]
    {
        futures::stream::pending()
    }
}

/// Resolves on the first SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the node");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutdown signal received");
}

/// Makes any panic log and abort the process rather than leave a node running half-alive.
pub fn install_abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(panic = %info, "panic; aborting");
        default(info);
        std::process::abort();
    }));
}

/// Environment variable choosing the log format: `text` (the default) or `json` (one JSON
/// object per line, with the fields of the enclosing spans, such as a request's id).
pub const LOG_FORMAT_ENV: &str = "REGISTRY_LOG_FORMAT";

/// Logs through `tracing` to stderr, filtered by `RUST_LOG` (default `info`), as text or, with
/// `REGISTRY_LOG_FORMAT=json`, as JSON lines; without colours when stderr is not a terminal
/// (logs going to a file).
pub fn init_tracing() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = std::env::var(LOG_FORMAT_ENV).unwrap_or_default();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let unknown = match format.trim().to_ascii_lowercase().as_str() {
        "json" => {
            let _ = builder.json().with_current_span(true).try_init();
            return;
        }
        "" | "text" => None,
        other => Some(other.to_string()),
    };
    let _ = builder
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    if let Some(other) = unknown {
        tracing::warn!(
            "{LOG_FORMAT_ENV}={other:?} is not a log format (text or json); logging text"
        );
    }
}
