//! The watch scenario's tables, in Markdown.

use std::fmt::Write as _;

use super::{CostRow, WatchOutcome};
use crate::report::{ms, ratio, table};

impl WatchOutcome {
    /// Adds the streaming table and the write-path table to `out`.
    pub fn render(&self, out: &mut String) {
        let s = &self.stream;
        let secs = s.window.as_secs_f64().max(1e-9);
        let mut t = table(&[
            "watchers",
            "watched node",
            "services before",
            "event makers",
            "events committed/s",
            "events delivered/s (all watchers)",
            "per watcher/s",
            "delivered MiB/s",
            "lag p50 ms",
            "lag p99 ms",
            "lag max ms",
            "cut off",
            "all caught up after s",
        ]);
        t.add_row(vec![
            s.watchers.to_string(),
            s.served_by.clone(),
            s.services.to_string(),
            format!("{} × {} new services", s.writers, s.batch),
            format!("{:.0}", s.committed as f64 / secs),
            format!("{:.0}", s.delivered as f64 / secs),
            format!(
                "{:.0}",
                s.delivered as f64 / secs / s.watchers.max(1) as f64
            ),
            format!("{:.1}", s.bytes as f64 / secs / 1048576.0),
            ms(s.lag_from_ack.quantile(0.5)),
            ms(s.lag_from_ack.quantile(0.99)),
            ms(s.lag_from_ack.max()),
            s.cut_off.to_string(),
            s.caught_up.map_or_else(
                || "not within --catch-up".into(),
                |d| format!("{:.1}", d.as_secs_f64()),
            ),
        ]);
        let _ = writeln!(out, "{t}\n");
        let cpu: Vec<String> = s
            .node_cpu
            .iter()
            .map(|(name, p)| format!("{name} {}", pct(*p)))
            .chain(std::iter::once(format!(
                "registry-bench (client) {}",
                pct(s.client_cpu)
            )))
            .collect();
        let _ = writeln!(
            out,
            "- streaming: CPU over the window, % of a core: {}",
            cpu.join(", ")
        );
        let _ = writeln!(
            out,
            "- streaming: lag from a request's acknowledgement to its first event at a watcher \
             ({} samples; {} arrived before the acknowledgement and count as 0); from its \
             send: p50 {} ms, p99 {} ms",
            s.lag_from_ack.requests,
            s.before_ack,
            ms(s.lag_from_send.quantile(0.5)),
            ms(s.lag_from_send.quantile(0.99)),
        );
        let _ =
            writeln!(
            out,
            "- streaming: {} stream(s) cut off{}, {} ended by the node otherwise, {} failed{}; \
             {} event-making request(s) failed{}\n",
            s.cut_off,
            s.cut_off_example
                .as_deref()
                .map_or(String::new(), |c| format!(" (first: {c})")),
            s.ended,
            s.failed,
            s.failure_example
                .as_deref()
                .map_or(String::new(), |f| format!(" (first: {f})")),
            s.maker_failures.error_count(),
            s.maker_failures
                .errors
                .iter()
                .next()
                .map_or(String::new(), |(k, e)| format!(" (first: {k}: {})", e.example)),
        );

        if self.costs.is_empty() {
            return;
        }
        let mut t = table(&[
            "write path: watchers",
            "events/s made beside",
            "events delivered (all watchers, warm-up included)",
            "heartbeats/s",
            "p50 ms",
            "p99 ms",
            "server CPU per heartbeat µs",
            "heartbeats/s ÷ no watcher",
            "CPU per heartbeat ÷ no watcher",
        ]);
        for row in &self.costs {
            let base = self.baseline(row);
            t.add_row(vec![
                row.watchers.to_string(),
                format!("{:.0}", row.event_rate),
                if row.watchers == 0 {
                    "-".into()
                } else {
                    row.delivered.to_string()
                },
                format!("{:.0}", row.beats_per_sec),
                ms(row.p50),
                ms(row.p99),
                row.cpu_per_beat_us
                    .map_or("n/a".into(), |u| format!("{u:.0}")),
                base.map_or("-".into(), |b| ratio(row.beats_per_sec, b.beats_per_sec)),
                match (row.cpu_per_beat_us, base.and_then(|b| b.cpu_per_beat_us)) {
                    (Some(u), Some(b)) => ratio(u, b),
                    _ => "-".into(),
                },
            ]);
        }
        let _ = writeln!(out, "{t}\n");
        let _ = writeln!(
            out,
            "- write path: a closed loop of single heartbeats of registered services (no \
             event); each case with watchers is divided by the case without watchers at the \
             same event rate; server CPU is the three nodes' together over the measured \
             window\n"
        );
    }

    /// The run without watchers at the same event rate as `row`.
    fn baseline(&self, row: &CostRow) -> Option<&CostRow> {
        self.costs
            .iter()
            .find(|c| c.watchers == 0 && c.event_rate == row.event_rate)
    }
}

fn pct(p: Option<f64>) -> String {
    p.map_or("n/a".into(), |p| format!("{p:.0}"))
}
