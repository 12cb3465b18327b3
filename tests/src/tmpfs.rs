//! A small disk of a test's own: a tmpfs mounted on a temporary directory (root needed), to
//! fill up under a node.

use std::path::Path;
use std::process::Command;

use tempfile::TempDir;

/// A tmpfs mounted on a fresh temporary directory, unmounted when dropped.
pub struct Tmpfs {
    /// The mount point.
    dir: TempDir,
}

fn mount(args: &[&str], target: &Path) -> anyhow::Result<()> {
    let out = Command::new("mount")
        .args(args)
        .arg(target)
        .output()
        .map_err(|e| anyhow::anyhow!("running mount: {e}"))?;
    anyhow::ensure!(
        out.status.success(),
        "mount {args:?} {} (this test needs root): {}",
        target.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount` takes it: `64m`, `12288k`) on a new temporary
    /// directory; needs root.
    pub fn mount(size: &str) -> anyhow::Result<Self> {
        let dir = TempDir::new()?;
        let size = format!("size={size}");
        mount(&["-t", "tmpfs", "-o", &size, "tmpfs"], dir.path())?;
        Ok(Self { dir })
    }

    /// Grows (or shrinks) the filesystem, keeping its files.
    pub fn resize(&self, size: &str) -> anyhow::Result<()> {
        mount(&["-o", &format!("remount,size={size}")], self.dir.path())
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Bytes used, from `df`.
    pub fn used(&self) -> String {
        Command::new("df")
            .args(["-h", "--output=used,size"])
            .arg(self.dir.path())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" of ")
            })
            .unwrap_or_default()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazily, so that a node still holding files open cannot keep it mounted.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
