//! The operations kit under `deploy/` and `registryctl init-cluster`, against real node
//! processes: generated configs form a cluster (with and without TLS), the systemd units pass
//! `systemd-analyze verify`, every alert rule fires on series scraped from a cluster put into
//! its condition (`promtool test rules`), and the dashboard uses only metrics nodes expose.

mod generated;
mod t10_init_cluster;
mod t20_systemd;
mod t30_alerts;
mod t40_dashboard;

/// A file of the repository, by its path from the workspace root.
pub(crate) fn repo_file(path: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}
