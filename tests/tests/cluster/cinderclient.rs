//! The real python-cinderclient, installed into a virtualenv under the target directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Where the test's virtualenv lives (under the target directory, kept between runs).
pub fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("cinderclient-venv")
}

/// Held while the virtualenv is checked or installed: without it, the tests that run the
/// client (and test processes sharing the target directory) create it at the same time on a
/// fresh target directory, and `python3 -m venv --clear` of one empties what the other is
/// installing ("Directory not empty").
async fn install_lock() -> anyhow::Result<std::fs::File> {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cinderclient-venv.lock");
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(file)
    })
    .await?
}

/// The pinned requirement.
pub fn requirements() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("cinderclient/requirements.txt")
}

/// Runs a command to completion within `timeout`, returning (success, stdout, stderr).
pub async fn run(
    cmd: &mut tokio::process::Command,
    timeout: Duration,
) -> anyhow::Result<(bool, String, String)> {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    let out = tokio::time::timeout(timeout, cmd.output())
        .await
        .with_context(|| format!("{cmd:?} did not finish within {timeout:?}"))?
        .with_context(|| format!("{cmd:?} could not be started"))?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// The `cinder` executable of a python-cinderclient 9.x installed in the test's
/// virtualenv: reused when it runs, else (re)created with `python3 -m venv` and pip from
/// PyPI. Fails, never skips, when it cannot be installed.
pub async fn cinder_cli() -> anyhow::Result<(PathBuf, String)> {
    let _installing = install_lock().await?;
    let venv = venv_dir();
    let cinder = venv.join("bin/cinder");
    if cinder.exists() {
        let (ok, out, err) = run(
            tokio::process::Command::new(&cinder).arg("--version"),
            Duration::from_secs(60),
        )
        .await?;
        let version = format!("{out}{err}").trim().to_string();
        if ok && version.starts_with("9.") {
            return Ok((cinder, version));
        }
        eprintln!(
            "cinderclient venv at {} is unusable ({version}); reinstalling",
            venv.display()
        );
    }
    let started = Instant::now();
    let (ok, out, err) = run(
        tokio::process::Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
        Duration::from_secs(120),
    )
    .await
    .context("python3 is needed to run python-cinderclient")?;
    anyhow::ensure!(
        ok,
        "`python3 -m venv {}` failed (is python3-venv installed?):\n{out}\n{err}",
        venv.display()
    );
    let (ok, out, err) = run(
        tokio::process::Command::new(venv.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
                "-r",
            ])
            .arg(requirements()),
        Duration::from_secs(600),
    )
    .await?;
    anyhow::ensure!(
        ok,
        "installing python-cinderclient from PyPI into {} failed; the Cinder compatibility \
         test needs it:\n{out}\n{err}",
        venv.display()
    );
    let (ok, out, err) = run(
        tokio::process::Command::new(&cinder).arg("--version"),
        Duration::from_secs(60),
    )
    .await?;
    let version = format!("{out}{err}").trim().to_string();
    anyhow::ensure!(
        ok && version.starts_with("9."),
        "installed cinderclient does not run or is not 9.x: {version}"
    );
    eprintln!(
        "installed python-cinderclient {version} in {:?}",
        started.elapsed()
    );
    Ok((cinder, version))
}
