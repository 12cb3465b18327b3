//! Running `registryctl` as a process, and reading the tables it prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

/// How long one `registryctl` command may run in a test.
const COMMAND_DEADLINE: Duration = Duration::from_secs(30);

/// Path of the `registryctl` binary of this profile (`target/<profile>/registryctl`),
/// brought up to date once per test process: `cargo test -p registry-tests` does not build
/// another package's binaries, so the first call runs `cargo build --bin registryctl` with
/// the cargo that built the tests (a no-op after `cargo test --workspace`, which builds it).
/// Blocks while building: call it off the async workers (as [`registryctl`] does).
pub fn registryctl_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| locate_and_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn locate_and_build() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os(crate::procs::BIN_DIR_ENV) {
        let bin = Path::new(&dir).join("registryctl");
        anyhow::ensure!(
            bin.exists(),
            "{} not found ({})",
            bin.display(),
            crate::procs::BIN_DIR_ENV
        );
        return Ok(bin);
    }
    let exe = std::env::current_exe()?;
    // target/<profile>/deps/<test binary> -> target/<profile>/registryctl
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {}", exe.display()))?;
    let bin = profile_dir.join("registryctl");
    if let Err(e) = build_registryctl(profile_dir) {
        anyhow::ensure!(
            bin.exists(),
            "{} not found and building it failed ({e:#}): build it with \
             `cargo build -p registry-node --bin registryctl`",
            bin.display()
        );
        tracing::warn!(error = %e, "could not rebuild registryctl; testing the existing binary");
    }
    anyhow::ensure!(
        bin.exists(),
        "{} not found after building it",
        bin.display()
    );
    Ok(bin)
}

/// Builds `registryctl` into the same profile directory as the running tests.
fn build_registryctl(profile_dir: &Path) -> anyhow::Result<()> {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "registry-node",
        "--bin",
        "registryctl",
    ])
    .arg("--manifest-path")
    .arg(&manifest)
    .stdin(Stdio::null());
    // The variables cargo sets for a running test (CARGO_MANIFEST_DIR, CARGO_PKG_*, ...): a
    // build script that watches one (ring's watches CARGO_MANIFEST_DIR) would otherwise be
    // rerun, and registryctl rebuilt (half a minute), each time a build from the shell and one
    // from a test alternate.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        let set_for_tests = [
            "CARGO_MANIFEST_",
            "CARGO_PKG_",
            "CARGO_BIN_",
            "CARGO_CRATE_",
        ]
        .iter()
        .any(|p| key.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&key.as_ref());
        if set_for_tests {
            cmd.env_remove(key.as_ref());
        }
    }
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        cmd.arg("--target-dir").arg(target_dir);
    }
    let status = cmd.status()?;
    anyhow::ensure!(
        status.success(),
        "cargo build --bin registryctl failed: {status}"
    );
    Ok(())
}

/// What a `registryctl` run printed, and how it ended.
#[derive(Debug, Clone)]
pub struct CtlOutput {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CtlOutput {
    /// Fails, showing both streams, unless the command exited 0.
    pub fn ok(self) -> anyhow::Result<Self> {
        anyhow::ensure!(
            self.code == Some(0),
            "registryctl exited {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        Ok(self)
    }
}

/// Runs `registryctl --endpoints <endpoints> <args>` to completion (bounded by a deadline),
/// with `REGISTRY_ENDPOINTS`, `REGISTRY_TOKEN` and the TLS variables (`REGISTRY_CACERT`,
/// `REGISTRY_CERT`, `REGISTRY_KEY`) cleared and logs at warn.
pub async fn registryctl(endpoints: &[String], args: &[&str]) -> anyhow::Result<CtlOutput> {
    let endpoints = endpoints.join(",");
    let all: Vec<&str> = ["--endpoints", endpoints.as_str()]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    registryctl_with_env(&[], &all).await
}

/// Runs `registryctl <args>` to completion (bounded by a deadline) with the variables `env`
/// and none of the `REGISTRY_*` variables of the test's own environment, logs at warn: with
/// the settings of an environment file such as init-cluster's `client.env`.
pub async fn registryctl_with_env(
    env: &[(String, String)],
    args: &[&str],
) -> anyhow::Result<CtlOutput> {
    let bin = tokio::task::spawn_blocking(registryctl_binary).await??;
    let mut cmd = tokio::process::Command::new(bin);
    for var in [
        "REGISTRY_ENDPOINTS",
        "REGISTRY_TOKEN",
        "REGISTRY_CACERT",
        "REGISTRY_CERT",
        "REGISTRY_KEY",
    ] {
        cmd.env_remove(var);
    }
    let child = cmd
        .args(args)
        .envs(env.iter().cloned())
        .env("RUST_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(COMMAND_DEADLINE, child)
        .await
        .map_err(|_| {
            anyhow::anyhow!("registryctl {args:?} did not end within {COMMAND_DEADLINE:?}")
        })??;
    Ok(CtlOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The rows of the first ASCII table in `text` (`| a | b |` lines under a header), each
/// as header → cell.
pub fn parse_table(text: &str) -> Vec<BTreeMap<String, String>> {
    let cells = |line: &str| -> Vec<String> {
        let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
        inner.split('|').map(|c| c.trim().to_string()).collect()
    };
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| {
            let t = l.trim_start();
            t.starts_with('|') || t.starts_with('+')
        })
        .filter(|l| l.trim_start().starts_with('|'));
    let Some(header) = lines.next().map(cells) else {
        return Vec::new();
    };
    lines
        .map(|l| header.iter().cloned().zip(cells(l)).collect())
        .collect()
}

/// The headers of the first ASCII table in `text`.
pub fn table_headers(text: &str) -> Vec<String> {
    text.lines()
        .find(|l| l.trim_start().starts_with('|'))
        .map(|l| {
            l.trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .unwrap_or_default()
}
