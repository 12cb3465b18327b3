//! A headless Chromium driven over WebDriver (`chromedriver` on a free loopback port, one per
//! test), and the waits the tests use: poll the page's DOM with a short interval until a
//! condition holds or a deadline passes, then fail saying what was last seen.
//!
//! `chromedriver` runs in a process group of its own; the Chromium it starts joins it. On
//! drop the whole group is killed (by its id: the one process this harness started), so a
//! failed test leaves no browser behind.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use tempfile::TempDir;

/// The WebDriver server (Debian package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser (Debian package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// How long a page condition may take on a loaded 2-core machine; they hold in well under a
/// second normally.
pub const WAIT: Duration = Duration::from_secs(30);
/// How often a page condition is checked.
const POLL: Duration = Duration::from_millis(100);

/// Chromium's switches: headless, and nothing that reaches for the network (the machine's
/// network is closed, and without them Chromium floods refused connections).
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,1100",
];

/// One browser: its driver process, its profile directory and the WebDriver session.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    /// The driver; dropping it kills its process group (Chromium with it).
    _driver: DriverGuard,
    /// Chromium's profile (`--user-data-dir`), fresh for each browser.
    _profile: TempDir,
}

impl Browser {
    /// Starts `chromedriver` and a headless Chromium with a fresh profile.
    pub async fn start() -> anyhow::Result<Self> {
        for bin in [CHROMEDRIVER, CHROMIUM] {
            anyhow::ensure!(
                std::path::Path::new(bin).exists(),
                "{bin} not found: install the Debian packages `chromium` and `chromium-driver` \
                 (scripts/test does)"
            );
        }
        let profile = TempDir::new()?;
        let (guard, url) = start_driver(profile.path()).await?;
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"binary": CHROMIUM, "args": args}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await?;
        Ok(Self {
            client,
            _driver: guard,
            _profile: profile,
        })
    }

    /// Opens `url`.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        Ok(self.client.goto(url).await?)
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        Ok(self.client.execute(script, args).await?)
    }

    /// Evaluates `script` until `check` accepts what it returns, or fails after [`WAIT`]
    /// naming `what` and the last value seen.
    pub async fn wait_for<T>(
        &self,
        what: &str,
        script: &str,
        mut check: impl FnMut(&Value) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + WAIT;
        loop {
            let seen = self.js(script, Vec::new()).await?;
            if let Some(v) = check(&seen) {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                anyhow::bail!("timed out after {WAIT:?} waiting for {what}; last seen: {seen}");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The element with id `id`.
    pub async fn by_id(&self, id: &str) -> anyhow::Result<fantoccini::elements::Element> {
        Ok(self.client.find(Locator::Id(id)).await?)
    }

    /// Saves a screenshot of the page as `<target>/test-artifacts/browser/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = artifacts_dir()?;
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, self.client.screenshot().await?)?;
        Ok(path)
    }

    /// Ends the WebDriver session (Chromium exits), then the driver (dropped with `self`).
    pub async fn close(self) -> anyhow::Result<()> {
        let Browser {
            client,
            _driver,
            _profile,
        } = self;
        client.close().await?;
        Ok(())
    }
}

/// Starts `chromedriver` on a free loopback port and waits until it answers; returns it (killed
/// on drop) and its URL. The port is free when chosen, but another process may take it before
/// the driver binds it: a driver that exits at start is started again on another port. Its
/// output goes to `chromedriver.log` in `dir`, quoted when it never answers.
async fn start_driver(dir: &std::path::Path) -> anyhow::Result<(DriverGuard, String)> {
    use std::os::unix::process::CommandExt;
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()?;
    let log_path = dir.join("chromedriver.log");
    let deadline = Instant::now() + WAIT;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()?;
        // Killed on every return but success, as when the browser is dropped.
        let mut guard = DriverGuard(Some(child));
        let url = format!("http://127.0.0.1:{port}");
        // Until the driver answers: its start is what may take a while on a loaded machine.
        loop {
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(r) => r.json::<Value>().await.ok(),
                Err(_) => None,
            };
            if ready.is_some_and(|v| v["value"]["ready"] == json!(true)) {
                return Ok((guard, url));
            }
            let exited = match guard.0.as_mut() {
                Some(c) => c.try_wait()?.is_some(),
                None => true,
            };
            if exited || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let exited = guard.0.as_mut().map_or(Ok(None), Child::try_wait)?;
        drop(guard);
        if exited.is_none() || attempts >= 3 || Instant::now() >= deadline {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            anyhow::bail!(
                "chromedriver did not answer on {url} within {WAIT:?} ({attempts} attempts, \
                 last {}); its output:\n{log}",
                exited.map_or("still running".to_string(), |s| s.to_string())
            );
        }
        tracing::warn!(%url, ?exited, "chromedriver exited at start; trying another port");
    }
}

/// The driver process; kills its process group when dropped.
struct DriverGuard(Option<Child>);

impl Drop for DriverGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            kill_group(child);
        }
    }
}

/// SIGKILLs the process group `child` leads (chromedriver and the Chromium it started), then
/// reaps `child`.
fn kill_group(mut child: Child) {
    let Ok(pgid) = i32::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) with a negative pid signals the process group `pgid`, which this
    // harness created for the driver it spawned (process_group(0)).
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    let _ = child.wait();
}

/// Where test artifacts go: `<target>/test-artifacts/browser`, found from this test binary's
/// path (`<target>/<profile>/deps/<binary>`), as [`registry_tests::procs::node_binary`] does.
pub fn artifacts_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .parent()
        .and_then(std::path::Path::parent)
        .and_then(std::path::Path::parent)
        .ok_or_else(|| anyhow::anyhow!("unexpected test binary location {}", exe.display()))?;
    Ok(target.join("test-artifacts").join("browser"))
}
