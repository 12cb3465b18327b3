//! The overload scenario's tables, in Markdown.

use std::fmt::Write as _;
use std::time::Duration;

use super::OverloadOutcome;
use crate::report::{ms, table};

impl OverloadOutcome {
    /// Adds the summary, the observer's reads per node, the control group and the
    /// observer's timeline to `out`.
    pub fn render(&self, out: &mut String) {
        let o = &self.observed;
        let r = &self.refused;
        let c = &self.control;
        let mut t = table(&[
            "service_down_time in force s",
            "services (load + control)",
            "capacity heartbeats/s",
            "offered requests/s",
            "sent requests/s",
            "accepted requests/s",
            "overload (offered ÷ capacity)",
            "accepted ÷ capacity",
            "refused: 503 overloaded",
            "503 other",
            "timeouts",
            "not sent (skipped by the load generator)",
            "other",
            "p50 ms",
            "p99 ms",
            "false downs: services",
            "false downs: occurrences",
            "of which every send out: services / occurrences",
            "down with no send in the window (not false): services / occurrences",
            "lists read per node",
            "control down delay min / median / max s",
        ]);
        t.add_row(vec![
            secs(self.down_time),
            format!("{} + {}", self.services, c.services),
            self.capacity
                .map_or("not measured".into(), |v| format!("{v:.0}")),
            format!("{:.0}", self.offered),
            format!("{:.0}", self.sent),
            format!("{:.0}", self.accepted),
            self.factor().map_or("-".into(), |f| format!("{f:.2}")),
            self.capacity
                .filter(|c| *c > 0.0)
                .map_or("-".into(), |c| format!("{:.2}", self.accepted / c)),
            r.overloaded.to_string(),
            r.unavailable.to_string(),
            r.timeout.to_string(),
            r.not_sent.to_string(),
            r.other.to_string(),
            ms(self.latency[0]),
            ms(self.latency[1]),
            o.distinct.to_string(),
            o.occurrences.to_string(),
            format!("{} / {}", o.strict_distinct, o.strict_occurrences),
            format!("{} / {}", o.unsent_distinct, o.unsent_occurrences),
            o.nodes
                .iter()
                .map(|n| n.lists.to_string())
                .collect::<Vec<_>>()
                .join(" / "),
            delays(&c.delays),
        ]);
        let _ = writeln!(out, "{t}\n");

        let mut t = table(&[
            "observer: node",
            "lists read",
            "reads refused 503 (retried)",
            "rounds failed",
            "load services judged",
            "load services listed down (all)",
            "read p50 ms",
            "read p99 ms",
            "last list MiB",
            "requests its admission refused during the run",
            "load services sending here: falsely down (distinct)",
        ]);
        for (i, n) in o.nodes.iter().enumerate() {
            let refused = self
                .node_overloaded
                .get(i)
                .and_then(|(_, v)| *v)
                .map_or("n/a".into(), |v| v.to_string());
            t.add_row(vec![
                n.name.clone(),
                n.lists.to_string(),
                n.refused.to_string(),
                n.failed.to_string(),
                n.judged.to_string(),
                n.down.to_string(),
                ms(n.latency.quantile(0.5)),
                ms(n.latency.quantile(0.99)),
                format!("{:.1}", n.last_bytes as f64 / 1048576.0),
                refused,
                format!(
                    "{} of {}",
                    o.distinct_by_endpoint.get(i).copied().unwrap_or(0),
                    sending_to(self.services, o.nodes.len(), i)
                ),
            ]);
        }
        let _ = writeln!(out, "{t}\n");

        let mut t = table(&[
            "control group: services",
            "stopped after s",
            "heartbeats acknowledged / failed",
            "listed down after their last ack",
            "not seen down",
            "never acknowledged",
            "down before the stop",
            "delay min s",
            "delay median s",
            "delay max s",
            "median ÷ service_down_time",
            "lower bound (last list still up) min / median / max s",
        ]);
        let median = median(&c.delays);
        t.add_row(vec![
            c.services.to_string(),
            secs(c.stop_after),
            format!("{} / {}", c.stats.requests, c.stats.error_count()),
            c.delays.len().to_string(),
            c.never_down.to_string(),
            c.never_acked.to_string(),
            c.early.to_string(),
            c.delays.first().map_or("-".into(), |d| secs(*d)),
            median.map_or("-".into(), secs),
            c.delays.last().map_or("-".into(), |d| secs(*d)),
            median.map_or("-".into(), |m| {
                format!(
                    "{:.2}",
                    m.as_secs_f64() / self.down_time.as_secs_f64().max(1e-9)
                )
            }),
            delays(&c.delays_lower),
        ]);
        let _ = writeln!(out, "{t}\n");

        let _ = writeln!(
            out,
            "observer timeline (windows of {} s by the time a list was sent, from the start \
             of the load; the load runs to {} s, the observer to {} s):\n",
            secs(o.window),
            secs(self.duration),
            secs(self.duration + self.margin)
        );
        let mut t = table(&[
            "t s",
            "lists",
            "load services judged",
            "false downs",
            "most false downs in one list",
            "control down in the last list",
        ]);
        for (w, win) in o.windows.iter().enumerate() {
            let end = (o.window * (w as u32 + 1)).min(self.duration + self.margin);
            t.add_row(vec![
                secs(end),
                win.lists.to_string(),
                win.judged.to_string(),
                win.down.to_string(),
                win.most_in_one_list.to_string(),
                format!("{} of {}", win.control_down, c.services),
            ]);
        }
        let _ = writeln!(out, "{t}\n");

        let mut notes = vec![
            format!("overload: settings in force: {}", self.settings.join("; ")),
            format!(
                "overload: {} load services, one heartbeat per request every {} s, for {} s \
                 (offered {:.0} requests/s{}); capacity from a closed loop of {} reporters \
                 sending single heartbeats; latency from the scheduled send (p99.9 {} ms, max \
                 {} ms); the longest a send started behind its schedule: {} ms; at most {} \
                 requests in flight, a send finding them all busy skipped (`not sent`) so that \
                 the schedule never waits",
                self.services,
                secs(self.interval),
                secs(self.duration),
                self.offered,
                self.factor().map_or(String::new(), |f| format!(
                    ", {f:.2} × the capacity; asked for {:.2} ×",
                    self.asked_factor
                )),
                self.capacity_reporters,
                ms(self.latency[2]),
                ms(self.latency[3]),
                ms(self.max_dispatch_lag),
                self.max_in_flight,
            ),
            format!(
                "overload: a false down is a load service listed `down` by any node (stale \
                 reads) during the run or up to {} s after it: each one's sender kept sending on \
                 schedule to the end, so none could rightly be down then. Exactly: a service \
                 listed `down` by a list answered at t is a false down when its sender \
                 dispatched a heartbeat after t − service_down_time (had the registry \
                 accepted it, the service would have been up at t); `every send out`: no send \
                 of that window skipped by the load generator; a service down with none \
                 dispatched in the window is the generator's doing and counted apart. The \
                 observer read {} \
                 every {} ms ({} lists, {} load services judged in them{})",
                secs(self.margin),
                if o.all_per_round {
                    "every node"
                } else {
                    "one node per round, in rotation (full lists of every node each round cost too \
                     much CPU beside the load)"
                },
                o.pace.as_millis(),
                o.lists(),
                o.judged(),
                if o.looked() {
                    ""
                } else {
                    "; NOT every node was read: the counts cannot show there was none"
                },
            ),
            format!(
                "overload: 503 overloaded by the node that refused (from its message; a follower \
                 relays the leader's refusal of a forwarded batch to every request in it): {}",
                if r.overloaded_by.is_empty() {
                    "none".into()
                } else {
                    r.overloaded_by
                        .iter()
                        .map(|(n, k)| format!("{n} {k}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            format!(
                "overload: control group: {} services heartbeating like the load until {} s, \
                 then silent; delay from the answer of a service's last acknowledged heartbeat \
                 to the answer of the first list (of any node) showing it `down`, an upper \
                 bound; its lower bound runs to the request of the last list before that still \
                 showing it `up` (rounds every {} ms, a list taking the read time above); the \
                 leader stamps a heartbeat before its answer reaches the sender, so a delay a \
                 little under service_down_time is no error; watched to {} s from the start of \
                 the load (past the load services' margin while one was not yet seen `down`, \
                 at most to 8 × service_down_time after the stop, the bound of an overload)",
                c.services,
                secs(c.stop_after),
                o.pace.as_millis(),
                secs(o.control_watched_to)
            ),
            format!(
                "overload: leadership before the run: {}; after: {}",
                self.leadership.0, self.leadership.1
            ),
        ];
        let scheduled = self.offered * self.duration.as_secs_f64();
        if scheduled > 0.0 && r.not_sent as f64 > 0.01 * scheduled {
            notes.push(format!(
                "overload: WARNING: the load generator skipped {:.0}% of the scheduled sends \
                 ({} of {:.0}: {} requests were in flight, most waiting on the nodes): the \
                 registry was sent {:.0} requests/s, not the {:.0} offered; false downs count \
                 only services whose sender dispatched a heartbeat in the window",
                100.0 * r.not_sent as f64 / scheduled,
                r.not_sent,
                scheduled,
                self.max_in_flight,
                self.sent,
                self.offered
            ));
        }
        if !o.examples.is_empty() {
            notes.push(format!(
                "overload: first false downs: {}{}",
                o.examples.join("; "),
                o.first_at.map_or(String::new(), |t| format!(
                    " (the first read at {:.1} s)",
                    t.as_secs_f64()
                ))
            ));
        }
        for n in o.nodes.iter().filter(|n| n.failed > 0) {
            if let Some(f) = &n.failure_example {
                notes.push(format!(
                    "overload: observer: {} failed {} round(s), the first: {f}",
                    n.name, n.failed
                ));
            }
        }
        for n in notes {
            let _ = writeln!(out, "- {n}");
        }
        let _ = writeln!(out);
    }
}

/// How many of `services` services send to endpoint `i` of `endpoints` (service `s` sends
/// to `s mod endpoints`).
fn sending_to(services: usize, endpoints: usize, i: usize) -> usize {
    if endpoints == 0 || i >= endpoints {
        return 0;
    }
    services / endpoints + usize::from(i < services % endpoints)
}

/// Seconds, with one decimal below 100.
fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s < 100.0 {
        format!("{s:.1}")
    } else {
        format!("{s:.0}")
    }
}

/// The median of sorted durations.
fn median(sorted: &[Duration]) -> Option<Duration> {
    sorted.get(sorted.len() / 2).copied()
}

/// `min / median / max` of sorted durations, in seconds.
fn delays(sorted: &[Duration]) -> String {
    match (sorted.first(), median(sorted), sorted.last()) {
        (Some(a), Some(m), Some(b)) => format!("{} / {} / {}", secs(*a), secs(m), secs(*b)),
        _ => "none seen down".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::sending_to;

    #[test]
    fn services_are_spread_over_the_endpoints() {
        assert_eq!(
            (0..3).map(|i| sending_to(8, 3, i)).collect::<Vec<_>>(),
            vec![3, 3, 2]
        );
        assert_eq!((sending_to(8, 0, 0), sending_to(8, 3, 3)), (0, 0));
    }
}
