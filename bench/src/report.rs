//! Results, and their rendering as Markdown tables (so they paste into BENCHMARKS.md).

use std::fmt::Write as _;
use std::time::Duration;

use comfy_table::{presets::ASCII_MARKDOWN, Table};

use crate::procs::NodeSample;
use crate::stats::Stats;

/// Memory and disk of one process before and after a run.
#[derive(Debug, Clone)]
pub struct NodeDelta {
    /// The process.
    pub name: String,
    /// Before the run.
    pub before: NodeSample,
    /// After the run.
    pub after: NodeSample,
}

/// One window of an open-loop run.
#[derive(Debug, Clone)]
pub struct TimelineRow {
    /// End of the window, from the start of the measured time.
    pub at: Duration,
    /// Length of the window.
    pub window: Duration,
    /// Requests scheduled in the window.
    pub stats: Stats,
    /// Every process, sampled at the end of the window.
    pub nodes: Vec<NodeSample>,
    /// The target's Raft term at the end of the window (the highest any node reported).
    pub term: Option<u64>,
}

/// One workload run against one target.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// The target's name.
    pub target: String,
    /// The workload, e.g. `closed, 256 reporters, 1 heartbeat/request`.
    pub mode: String,
    /// Measured time.
    pub window: Duration,
    /// What was measured.
    pub stats: Stats,
    /// The target's processes.
    pub nodes: Vec<NodeDelta>,
    /// Open loop: the windows.
    pub timeline: Vec<TimelineRow>,
    /// The target's Raft term at the start of the measured window (the highest any node
    /// reported), if it tells one.
    pub term_at_start: Option<u64>,
    /// The target's Raft term at the end of the measured window.
    pub term_at_end: Option<u64>,
    /// Open loop: the longest a send started after its scheduled time.
    pub max_dispatch_lag: Option<Duration>,
    /// Wall time of the whole run, warm-up included.
    pub wall: Duration,
    /// CPU time the benchmark process itself used during the run, in clock ticks.
    pub client_cpu_ticks: Option<u64>,
    /// CPU time the target's processes used together over the measured window (warm-up
    /// excluded), in clock ticks.
    pub window_cpu_ticks: Option<u64>,
}

impl RunResult {
    /// Acknowledged heartbeats per second.
    pub fn beats_per_sec(&self) -> f64 {
        self.stats.beats as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// Acknowledged requests per second.
    pub fn requests_per_sec(&self) -> f64 {
        self.stats.requests as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// How many times the Raft term changed over the measured window (each change is at
    /// least one election: a split vote or a failed round makes it more than one per new
    /// leader).
    pub fn term_changes(&self) -> Option<u64> {
        term_changes(self.term_at_start, self.term_at_end)
    }
}

/// How far the Raft term moved from `before` to `after`, when both are known.
pub(crate) fn term_changes(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    Some(after?.saturating_sub(before?))
}

/// One service-list timing.
#[derive(Debug, Clone)]
pub struct ListRow {
    /// `registry` or `etcd`.
    pub target: String,
    /// Services registered.
    pub services: usize,
    /// `full linearizable`, `full stale`, `host linearizable`, `host stale`.
    pub variant: String,
    /// Which node answered: `leader` or `follower`.
    pub served_by: String,
    /// Services in the answer.
    pub count: usize,
    /// Bytes of the answer (registry: the JSON body; etcd: the values).
    pub bytes: usize,
    /// Latency of the timed requests (failures included).
    pub stats: Stats,
    /// Raft term changes since the row before (the first row of a size: since before its
    /// services were registered); `None` when the term could not be read.
    pub term_changes: Option<u64>,
}

/// What one invocation measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Title of the tables.
    pub title: String,
    /// The command that reproduces it (set by the binary).
    pub command: String,
    /// Throughput runs.
    pub runs: Vec<RunResult>,
    /// List timings.
    pub lists: Vec<ListRow>,
    /// The watch scenario's streaming and write-path figures.
    pub watch: Option<crate::watch::WatchOutcome>,
    /// The failover scenario's kills.
    pub failover: Option<crate::failover::FailoverOutcome>,
    /// The overload scenario's false downs, refusals and control group.
    pub overload: Option<crate::overload::OverloadOutcome>,
    /// Remarks printed under the tables.
    pub notes: Vec<String>,
}

impl Report {
    /// Heartbeats acknowledged by every run.
    pub fn acked_beats(&self) -> u64 {
        self.runs.iter().map(|r| r.stats.beats).sum()
    }

    /// Failed requests of every run and list timing.
    pub fn error_count(&self) -> u64 {
        self.runs.iter().map(|r| r.stats.error_count()).sum::<u64>()
            + self
                .lists
                .iter()
                .map(|l| l.stats.error_count())
                .sum::<u64>()
            + self.watch.as_ref().map_or(0, |w| w.error_count())
    }

    /// The tables, in Markdown.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### {}\n", self.title);
        if !self.command.is_empty() {
            let _ = writeln!(
                out,
                "reproduce (against a running cluster):\n\n    {}\n",
                self.command
            );
        }
        if let Some(w) = &self.watch {
            w.render(&mut out);
        }
        if let Some(f) = &self.failover {
            f.render(&mut out);
        }
        if let Some(o) = &self.overload {
            o.render(&mut out);
        }
        if !self.runs.is_empty() {
            self.render_runs(&mut out);
        }
        if !self.lists.is_empty() {
            self.render_lists(&mut out);
        }
        for n in &self.notes {
            let _ = writeln!(out, "- {n}");
        }
        out
    }

    fn render_runs(&self, out: &mut String) {
        let mut t = table(&[
            "target",
            "workload",
            "requests/s",
            "heartbeats/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "errors",
        ]);
        for r in &self.runs {
            t.add_row(vec![
                r.target.clone(),
                r.mode.clone(),
                format!("{:.0}", r.requests_per_sec()),
                format!("{:.0}", r.beats_per_sec()),
                ms(r.stats.quantile(0.5)),
                ms(r.stats.quantile(0.99)),
                ms(r.stats.quantile(0.999)),
                ms(r.stats.max()),
                r.stats.error_count().to_string(),
            ]);
        }
        let _ = writeln!(out, "{t}\n");

        if let Some(reg) = self.runs.iter().find(|r| r.target == "registry") {
            let others: Vec<_> = self
                .runs
                .iter()
                .filter(|r| r.target != "registry")
                .collect();
            if !others.is_empty() {
                let mut t = table(&[
                    "registry ÷",
                    "heartbeats/s ratio (>1: registry faster)",
                    "p50 ratio (<1: registry lower)",
                    "p99 ratio (<1: registry lower)",
                ]);
                for o in others {
                    t.add_row(vec![
                        o.target.clone(),
                        ratio(reg.beats_per_sec(), o.beats_per_sec()),
                        ratio_d(reg.stats.quantile(0.5), o.stats.quantile(0.5)),
                        ratio_d(reg.stats.quantile(0.99), o.stats.quantile(0.99)),
                    ]);
                }
                let _ = writeln!(out, "{t}\n");
            }
        }

        if self
            .runs
            .iter()
            .any(|r| r.term_at_start.is_some() || r.term_at_end.is_some())
        {
            let mut t = table(&[
                "target",
                "Raft term at the start",
                "at the end",
                "term changes in the measured window",
            ]);
            for r in &self.runs {
                t.add_row(vec![
                    r.target.clone(),
                    opt(r.term_at_start),
                    opt(r.term_at_end),
                    opt(r.term_changes()),
                ]);
            }
            let _ = writeln!(out, "{t}\n");
        }

        let mut t = table(&[
            "target",
            "server CPU in the window s",
            "heartbeats acknowledged",
            "server CPU per heartbeat µs",
            "registry ÷ this (<1: registry cheaper)",
        ]);
        let per_beat = |r: &RunResult| {
            let secs = r.window_cpu_ticks? as f64 / crate::procs::TICKS_PER_SEC as f64;
            (r.stats.beats > 0).then(|| (secs, 1e6 * secs / r.stats.beats as f64))
        };
        let registry = self
            .runs
            .iter()
            .find(|r| r.target == "registry")
            .and_then(per_beat);
        for r in &self.runs {
            let this = per_beat(r);
            let (secs, us) = this.map_or(("n/a".into(), "n/a".into()), |(s, u)| {
                (format!("{s:.1}"), format!("{u:.0}"))
            });
            let ratio = match (this, registry) {
                (Some((_, u)), Some((_, reg))) if u > 0.0 => format!("{:.2}", reg / u),
                _ => "n/a".into(),
            };
            t.add_row(vec![
                r.target.clone(),
                secs,
                r.stats.beats.to_string(),
                us,
                ratio,
            ]);
        }
        let _ = writeln!(out, "{t}\n");

        let mut t = table(&[
            "target",
            "process",
            "CPU % of a core",
            "RSS before MiB",
            "RSS after MiB",
            "peak RSS MiB",
            "data before MiB",
            "data after MiB",
        ]);
        for r in &self.runs {
            for n in &r.nodes {
                let cpu = match (n.before.cpu_ticks, n.after.cpu_ticks) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                    _ => None,
                };
                t.add_row(vec![
                    r.target.clone(),
                    n.name.clone(),
                    cpu_pct(cpu, r.wall),
                    kib(n.before.rss_kib),
                    kib(n.after.rss_kib),
                    kib(n.after.hwm_kib),
                    mib(n.before.disk_bytes),
                    mib(n.after.disk_bytes),
                ]);
            }
            t.add_row(vec![
                r.target.clone(),
                "registry-bench (client)".into(),
                cpu_pct(r.client_cpu_ticks, r.wall),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
                "".into(),
            ]);
        }
        let _ = writeln!(out, "{t}\n");

        render_errors(
            out,
            "target",
            self.runs.iter().map(|r| (r.target.clone(), &r.stats)),
        );

        for r in self.runs.iter().filter(|r| !r.timeline.is_empty()) {
            let names: Vec<_> = r.nodes.iter().map(|n| n.name.clone()).collect();
            let _ = writeln!(
                out,
                "{} timeline (scheduled-time windows; RSS and data per node, {}):\n",
                r.target,
                names.join(" / ")
            );
            let mut t = table(&[
                "t s",
                "heartbeats/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                "errors",
                "term changes",
                "RSS MiB",
                "data MiB",
            ]);
            let mut last_term = r.term_at_start;
            for w in &r.timeline {
                let changes = match (last_term, w.term) {
                    (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                    _ => None,
                };
                last_term = w.term.or(last_term);
                t.add_row(vec![
                    format!("{:.0}", w.at.as_secs_f64()),
                    format!(
                        "{:.0}",
                        w.stats.beats as f64 / w.window.as_secs_f64().max(1e-9)
                    ),
                    ms(w.stats.quantile(0.5)),
                    ms(w.stats.quantile(0.99)),
                    ms(w.stats.max()),
                    w.stats.error_count().to_string(),
                    opt(changes),
                    w.nodes
                        .iter()
                        .map(|n| kib(n.rss_kib))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    w.nodes
                        .iter()
                        .map(|n| mib(n.disk_bytes))
                        .collect::<Vec<_>>()
                        .join(" / "),
                ]);
            }
            let _ = writeln!(out, "{t}\n");
            if let Some(lag) = r.max_dispatch_lag {
                let _ = writeln!(
                    out,
                    "{}: longest delay of a send behind its schedule: {} ms\n",
                    r.target,
                    ms(Some(lag))
                );
            }
        }
    }

    fn render_lists(&self, out: &mut String) {
        let mut t = table(&[
            "target",
            "services",
            "list",
            "served by",
            "count",
            "answer MiB",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "term changes",
        ]);
        for l in &self.lists {
            t.add_row(vec![
                l.target.clone(),
                l.services.to_string(),
                l.variant.clone(),
                l.served_by.clone(),
                l.count.to_string(),
                format!("{:.2}", l.bytes as f64 / 1048576.0),
                ms(l.stats.quantile(0.5)),
                ms(l.stats.quantile(0.99)),
                ms(l.stats.max()),
                l.stats.error_count().to_string(),
                opt(l.term_changes),
            ]);
        }
        let _ = writeln!(out, "{t}\n");
        let _ = writeln!(
            out,
            "- term changes: of the highest Raft term any node reports, since the row before; \
             the first row of each size counts its registration too\n"
        );
        render_errors(
            out,
            "list",
            self.lists.iter().map(|l| {
                let name = format!(
                    "{} {} {} on the {}",
                    l.target, l.services, l.variant, l.served_by
                );
                (name, &l.stats)
            }),
        );
        let pairs: Vec<_> = self
            .lists
            .iter()
            .filter(|l| l.target == "registry")
            .filter_map(|r| {
                self.lists
                    .iter()
                    .find(|e| {
                        e.target != "registry"
                            && e.services == r.services
                            && e.variant == r.variant
                            && e.served_by == r.served_by
                    })
                    .map(|e| (r, e))
            })
            .collect();
        if !pairs.is_empty() {
            let mut t = table(&[
                "services",
                "list",
                "served by",
                "registry p50 ms",
                "etcd p50 ms",
                "p50 ratio registry ÷ etcd (<1: registry faster)",
            ]);
            for (r, e) in pairs {
                t.add_row(vec![
                    r.services.to_string(),
                    r.variant.clone(),
                    r.served_by.clone(),
                    ms(r.stats.quantile(0.5)),
                    ms(e.stats.quantile(0.5)),
                    ratio_d(r.stats.quantile(0.5), e.stats.quantile(0.5)),
                ]);
            }
            let _ = writeln!(out, "{t}\n");
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(ASCII_MARKDOWN);
    t.set_header(header.to_vec());
    t
}

pub(crate) fn ms(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| {
        let ms = d.as_secs_f64() * 1000.0;
        if ms < 10.0 {
            format!("{ms:.2}")
        } else {
            format!("{ms:.1}")
        }
    })
}

/// A number, or `n/a`.
pub(crate) fn opt(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |v| v.to_string())
}

fn cpu_pct(ticks: Option<u64>, wall: Duration) -> String {
    ticks.map_or("n/a".into(), |t| {
        let secs = t as f64 / crate::procs::TICKS_PER_SEC as f64;
        format!("{:.0}", 100.0 * secs / wall.as_secs_f64().max(1e-9))
    })
}

fn kib(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |k| format!("{:.1}", k as f64 / 1024.0))
}

fn mib(v: Option<u64>) -> String {
    v.map_or("n/a".into(), |b| format!("{:.1}", b as f64 / 1048576.0))
}

pub(crate) fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}", a / b)
    } else {
        "-".into()
    }
}

fn ratio_d(a: Option<Duration>, b: Option<Duration>) -> String {
    match (a, b) {
        (Some(a), Some(b)) => ratio(a.as_secs_f64(), b.as_secs_f64()),
        _ => "-".into(),
    }
}

/// The failed requests of `rows` (each named by its first column, headed `what`) by kind,
/// with an example of each; nothing when none failed.
fn render_errors<'a>(
    out: &mut String,
    what: &str,
    rows: impl IntoIterator<Item = (String, &'a Stats)>,
) {
    let mut t = table(&[what, "error", "count", "example"]);
    let mut any = false;
    for (name, stats) in rows {
        for (kind, e) in &stats.errors {
            any = true;
            let mut example = e.example.replace('|', "/");
            if example.len() > 120 {
                let cut = (0..=120).rev().find(|&i| example.is_char_boundary(i));
                example.truncate(cut.unwrap_or(0));
            }
            t.add_row(vec![
                name.clone(),
                kind.clone(),
                e.count.to_string(),
                example,
            ]);
        }
    }
    if any {
        let _ = writeln!(out, "{t}\n");
    }
}
