//! The systemd units of `deploy/systemd/` pass `systemd-analyze verify`, and say what the
//! node needs of them: a graceful stop on SIGTERM, a reload on SIGHUP, a restart policy, an
//! open-file limit and a sandbox with the data directory writable.
//!
//! `systemd-analyze verify` checks that each `ExecStart=` binary exists and is executable, so
//! each unit is verified as a copy in a temporary directory whose `/usr/local/bin/` paths name
//! the binaries this build made; the template is verified as an instance. Any output (an
//! unknown key, a bad value: systemd warns and goes on) fails the test as well as a non-zero
//! exit.

use std::path::{Path, PathBuf};
use std::process::Command;

use registry_tests::cli::registryctl_binary;
use registry_tests::procs::node_binary;

use crate::repo_file;

/// Where the units expect the binaries.
const INSTALLED: &str = "/usr/local/bin/";

/// Copies `unit` into `dir` as `name` with the binaries' paths replaced by this build's, and
/// runs `systemd-analyze verify` on it; fails on a non-zero exit or any output.
fn verify(unit: &Path, name: &str, dir: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(unit)?;
    anyhow::ensure!(
        text.contains(INSTALLED),
        "{}: no binary under {INSTALLED}",
        unit.display()
    );
    let bin_dir = node_binary()?
        .parent()
        .map(|d| format!("{}/", d.display()))
        .ok_or_else(|| anyhow::anyhow!("no directory of the binaries"))?;
    let copy = dir.join(name);
    std::fs::write(&copy, text.replace(INSTALLED, &bin_dir))?;
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .map_err(|e| anyhow::anyhow!("running systemd-analyze (Debian package systemd): {e}"))?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify {name} exited {:?}:\n{said}",
        out.status.code()
    );
    Ok(())
}

/// The `Key=value` settings of a unit's text.
fn settings(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn has(s: &[(String, String)], key: &str, value: &str) -> bool {
    s.iter().any(|(k, v)| k == key && v == value)
}

/// Both units verify (the template as `registry-report@cinder-volume.service`), and a unit
/// with a misspelt key or a missing binary does not: the check can fail.
#[test]
fn units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    // Both binaries must exist: the units start them.
    let (_, _) = (node_binary()?, registryctl_binary()?);
    let dir = tempfile::tempdir()?;
    let units: Vec<(PathBuf, &str)> = vec![
        (
            repo_file("deploy/systemd/registry-node.service"),
            "registry-node.service",
        ),
        (
            repo_file("deploy/systemd/registry-report@.service"),
            "registry-report@cinder-volume.service",
        ),
    ];
    let mut listed: Vec<String> = std::fs::read_dir(repo_file("deploy/systemd"))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<anyhow::Result<_>>()?;
    listed.retain(|n| n.ends_with(".service"));
    listed.sort();
    assert_eq!(
        listed,
        ["registry-node.service", "registry-report@.service"],
        "every unit of deploy/systemd/ is verified here"
    );
    for (unit, name) in &units {
        verify(unit, name, dir.path())?;
    }

    let node = std::fs::read_to_string(&units[0].0)?;
    let bad = dir.path().join("bad.service");
    std::fs::write(
        &bad,
        node.replace("Restart=on-failure", "Restrat=on-failure"),
    )?;
    let e = verify(&bad, "registry-bad.service", dir.path()).expect_err("a misspelt key");
    assert!(e.to_string().contains("Restrat"), "{e}");
    std::fs::write(
        &bad,
        node.replace("registry-node --config", "registry-nod --config"),
    )?;
    let e = verify(&bad, "registry-bad.service", dir.path()).expect_err("a missing binary");
    assert!(e.to_string().contains("registry-nod"), "{e}");
    Ok(())
}

/// What the node's unit promises: SIGTERM for the node's graceful stop (its six stages of at
/// most 5 s each fit in the stop timeout), SIGHUP as the reload, a restart on failure, the
/// open-file limit, the sandbox with the data directory writable, and `--bootstrap` only from
/// init-cluster's `first-start.env`; the reporter's unit runs `registryctl report` with the
/// client settings init-cluster wrote.
#[test]
fn units_say_what_the_node_needs() -> anyhow::Result<()> {
    let node = settings(&std::fs::read_to_string(repo_file(
        "deploy/systemd/registry-node.service",
    ))?);
    for (key, value) in [
        ("KillSignal", "SIGTERM"),
        ("TimeoutStopSec", "45s"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "65536"),
        ("ProtectSystem", "strict"),
        ("ReadWritePaths", "/var/lib/registry-node"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("EnvironmentFile", "-/etc/registry-node/first-start.env"),
        (
            "ExecStart",
            "/usr/local/bin/registry-node --config /etc/registry-node/node.toml $REGISTRY_NODE_ARGS",
        ),
    ] {
        assert!(has(&node, key, value), "registry-node.service: {key}={value}");
    }
    let grace = registry_node::SHUTDOWN_GRACE.as_secs() * 6;
    assert!(
        grace < 45,
        "the stop timeout covers the shutdown's stages ({grace} s)"
    );
    let report = settings(&std::fs::read_to_string(repo_file(
        "deploy/systemd/registry-report@.service",
    ))?);
    for (key, value) in [
        ("KillSignal", "SIGTERM"),
        ("Restart", "always"),
        ("EnvironmentFile", "/etc/registry-node/client.env"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
    ] {
        assert!(
            has(&report, key, value),
            "registry-report@.service: {key}={value}"
        );
    }
    let exec = report
        .iter()
        .find(|(k, _)| k == "ExecStart")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    assert!(
        exec.starts_with("/usr/local/bin/registryctl report ") && exec.contains("--health-cmd"),
        "{exec}"
    );
    Ok(())
}
