//! The watchers: event streams (`GET /v1/events`) read as fast as they come, each counting
//! its events in shared counters that the scenario reads at the edges of its runs.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::frames::Frames;
use crate::stats::Failure;
use crate::target::registry::check_answer;

/// What one watcher counted so far, readable while it runs.
#[derive(Debug, Default)]
pub struct Tally {
    /// Event frames.
    pub events: AtomicU64,
    /// Of them, `created`.
    pub created: AtomicU64,
    /// Bytes of the stream.
    pub bytes: AtomicU64,
    /// Set when the stream ended (stopped, ended by the node, or failed).
    pub done: AtomicBool,
}

/// How a watcher ended.
#[derive(Debug, Default)]
pub struct WatcherEnd {
    /// When the first event of each of the event maker's requests arrived.
    pub marks: Vec<(usize, Instant)>,
    /// The node's `cut-off` notice, if it ended the stream with one.
    pub cut_off: Option<String>,
    /// The stream ended by the node (with or without a cut-off) before it was stopped.
    pub ended_by_node: bool,
    /// Why it failed, if it did (not opened, or a transport error).
    pub failure: Option<Failure>,
}

/// Watchers running against one node.
pub struct Watchers {
    /// Each watcher's counters.
    pub tallies: Vec<Arc<Tally>>,
    tasks: Vec<JoinHandle<WatcherEnd>>,
    stop: watch::Sender<bool>,
    opened: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}

impl Watchers {
    /// Opens `n` streams on `base` from the position each is opened at (no `since`), over
    /// `http` (a client without a total timeout); marks batches of `batch` services whose
    /// hosts start with `host_prefix`. Answers once every stream has sent its opening
    /// comment, or fails after `open_within`.
    pub async fn open(
        http: &reqwest::Client,
        base: &str,
        n: usize,
        host_prefix: &str,
        batch: usize,
        open_within: Duration,
    ) -> anyhow::Result<Self> {
        let (stop, stop_rx) = watch::channel(false);
        let opened = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let url = format!("{base}/v1/events");
        let mut tallies = Vec::with_capacity(n);
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let tally = Arc::new(Tally::default());
            tallies.push(Arc::clone(&tally));
            let frames = Frames::new(host_prefix.to_string(), batch);
            let req = http.get(&url).header("accept", "text/event-stream");
            let (opened, failed, stop) =
                (Arc::clone(&opened), Arc::clone(&failed), stop_rx.clone());
            tasks.push(tokio::spawn(async move {
                let end = read(req, frames, &tally, &opened, stop).await;
                tally.done.store(true, Ordering::Relaxed);
                if end.failure.is_some() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                end
            }));
        }
        let w = Self {
            tallies,
            tasks,
            stop,
            opened,
            failed,
        };
        let deadline = Instant::now() + open_within;
        loop {
            let (ok, bad) = (
                w.opened.load(Ordering::Relaxed),
                w.failed.load(Ordering::Relaxed),
            );
            if ok + bad >= n {
                break;
            }
            if Instant::now() >= deadline {
                let _ = w.stop.send(true);
                anyhow::bail!("{ok} of {n} event streams opened within {open_within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if w.failed.load(Ordering::Relaxed) > 0 {
            let _ = w.stop.send(true);
            let mut first = None;
            for t in w.tasks {
                if let Ok(WatcherEnd {
                    failure: Some(f), ..
                }) = t.await
                {
                    first.get_or_insert(f);
                }
            }
            let f = first.unwrap_or_else(|| Failure::new("unknown", "no detail"));
            anyhow::bail!("opening the event streams: {}: {}", f.kind, f.detail);
        }
        Ok(w)
    }

    /// Events received by every watcher together.
    pub fn events(&self) -> u64 {
        self.sum(|t| &t.events)
    }

    /// Bytes received by every watcher together.
    pub fn bytes(&self) -> u64 {
        self.sum(|t| &t.bytes)
    }

    /// The fewest `created` events a watcher still reading received (`u64::MAX` when none
    /// is still reading).
    pub fn min_created_running(&self) -> u64 {
        self.tallies
            .iter()
            .filter(|t| !t.done.load(Ordering::Relaxed))
            .map(|t| t.created.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }

    fn sum(&self, field: impl Fn(&Tally) -> &AtomicU64) -> u64 {
        self.tallies
            .iter()
            .map(|t| field(t).load(Ordering::Relaxed))
            .sum()
    }

    /// Stops every watcher and answers how each ended.
    pub async fn stop(self) -> Vec<WatcherEnd> {
        let _ = self.stop.send(true);
        let mut ends = Vec::with_capacity(self.tasks.len());
        for t in self.tasks {
            ends.push(t.await.unwrap_or_else(|e| WatcherEnd {
                failure: Some(Failure::new("watcher task", e)),
                ..WatcherEnd::default()
            }));
        }
        ends
    }
}

/// One stream: reads chunks until stopped, the node ends it, or it fails.
async fn read(
    req: reqwest::RequestBuilder,
    mut frames: Frames,
    tally: &Tally,
    opened: &AtomicUsize,
    mut stop: watch::Receiver<bool>,
) -> WatcherEnd {
    let mut end = WatcherEnd::default();
    let mut resp = match req.send().await {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            end.failure =
                Some(check_answer(r).await.err().unwrap_or_else(|| {
                    Failure::new("HTTP", "unexpected answer to GET /v1/events")
                }));
            return end;
        }
        Err(e) => {
            end.failure = Some(crate::target::registry::transport_failure(&e));
            return end;
        }
    };
    let mut counted_open = false;
    loop {
        let chunk = tokio::select! {
            c = resp.chunk() => c,
            _ = stop.changed() => break,
        };
        match chunk {
            Ok(Some(bytes)) => {
                let events = frames.feed(&bytes, Instant::now());
                tally.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                if events > 0 {
                    tally.events.fetch_add(events, Ordering::Relaxed);
                    tally.created.store(frames.created, Ordering::Relaxed);
                }
                if !counted_open && frames.comments > 0 {
                    counted_open = true;
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                if frames.cut_off.is_some() {
                    end.ended_by_node = true;
                    break;
                }
            }
            Ok(None) => {
                end.ended_by_node = true;
                break;
            }
            Err(e) => {
                end.failure = Some(crate::target::registry::transport_failure(&e));
                break;
            }
        }
    }
    end.marks = std::mem::take(&mut frames.marks);
    end.cut_off = frames.cut_off.take();
    end
}
