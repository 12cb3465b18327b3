//! The failover scenario's tables, in Markdown.

use std::fmt::Write as _;
use std::time::Duration;

use super::{FailoverOutcome, KillRow, LOGS_AFTER};
use crate::report::{ms, opt, table};

/// The value at quantile `q` of `sorted` (nearest rank: the smallest value with at least
/// `q` of the values at or below it), or `None` when empty.
pub fn nearest_rank(sorted: &[Duration], q: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

impl FailoverOutcome {
    /// The failover times of the kills that had one, ascending.
    pub fn failover_times(&self) -> Vec<Duration> {
        let mut v: Vec<Duration> = self.kills.iter().filter_map(|k| k.failover).collect();
        v.sort();
        v
    }

    /// Kills with no acknowledged write within the deadline.
    pub fn without_failover(&self) -> usize {
        self.kills.iter().filter(|k| k.failover.is_none()).count()
    }

    /// Term changes of every kill together, from before it to after the rejoin.
    pub fn total_term_changes(&self) -> u64 {
        self.kills.iter().filter_map(|k| k.total_terms()).sum()
    }

    /// Kills after which the survivors' logs differed during the election.
    pub fn unequal_logs(&self) -> usize {
        self.kills.iter().filter(|k| k.logs_differ()).count()
    }

    /// Adds the per-kill table, the summary and the writers' figures to `out`.
    pub fn render(&self, out: &mut String) {
        let mut t = table(&[
            "kill",
            "killed leader (endpoint)",
            "term before",
            "first write acknowledged after ms",
            "acknowledged by endpoint",
            "new leader seen after ms",
            "new leader",
            "term changes to the new leader",
            "failed candidacies seen",
            "survivors' last log index after the kill",
            "restart to caught up s",
            "term changes while rejoining",
        ]);
        for (i, k) in self.kills.iter().enumerate() {
            t.add_row(vec![
                (i + 1).to_string(),
                format!("node {} ({})", k.killed_id, k.killed_endpoint),
                k.term_before.to_string(),
                k.failover
                    .map_or_else(|| "none within the deadline".into(), |d| ms(Some(d))),
                opt(k.acked_by.map(|e| e as u64)),
                ms(k.leader_seen),
                k.new_leader_id
                    .map_or_else(|| "-".into(), |id| format!("node {id}")),
                opt(k.election_terms()),
                k.failed_candidacies.to_string(),
                logs(k),
                k.recovered
                    .map_or_else(|| "-".into(), |d| format!("{:.1}", d.as_secs_f64())),
                opt(k.rejoin_terms()),
            ]);
        }
        let _ = writeln!(out, "{t}\n");

        let times = self.failover_times();
        let mut seen: Vec<Duration> = self.kills.iter().filter_map(|k| k.leader_seen).collect();
        seen.sort();
        let elections: Vec<u64> = self
            .kills
            .iter()
            .filter_map(|k| k.election_terms())
            .collect();
        let mut t = table(&[
            "kills",
            "failover p50 ms",
            "p90 ms",
            "max ms",
            "min ms",
            "new leader seen p50 ms",
            "term changes (all kills, rejoins included)",
            "kills with more than one term change to the new leader",
            "kills with a failed round (term changes or candidacies)",
            "kills with the survivors' logs unequal",
            "kills with no write acknowledged",
        ]);
        t.add_row(vec![
            format!("{} of {}", self.kills.len(), self.kills_asked),
            ms(nearest_rank(&times, 0.5)),
            ms(nearest_rank(&times, 0.9)),
            ms(times.last().copied()),
            ms(times.first().copied()),
            ms(nearest_rank(&seen, 0.5)),
            self.total_term_changes().to_string(),
            elections.iter().filter(|e| **e > 1).count().to_string(),
            self.kills
                .iter()
                .filter(|k| k.election_terms().is_some_and(|e| e > 1) || k.failed_candidacies > 0)
                .count()
                .to_string(),
            self.unequal_logs().to_string(),
            self.without_failover().to_string(),
        ]);
        let _ = writeln!(out, "{t}\n");

        let w = &self.writes;
        let errors: Vec<String> = w
            .errors
            .iter()
            .map(|(kind, e)| format!("{kind} × {} (first: {})", e.count, one_line(&e.example)))
            .collect();
        let _ = writeln!(
            out,
            "- failover: from just before the leader's SIGKILL to the first HTTP 200 of a \
             `POST /v1/heartbeats` sent after it; {} closed-loop writer(s) of single \
             heartbeats over every endpoint, each request bounded by {} ms; {} s of steady \
             writes before each kill once every node was back and caught up",
            self.writers,
            self.write_timeout.as_millis(),
            self.settle.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "- new leader seen: the first of the survivors' `GET /v1/cluster` polls (every {} \
             ms) that found one `Leader` in a higher term; term changes to the new leader: more \
             than 1 is a split vote or a failed round; failed candidacies: (node, term) pairs \
             the polls saw as `Candidate` besides the winner (a failed round can keep the term \
             change at 1: openraft lets a second candidate of one term, with a higher node id, \
             win in it)",
            self.poll_every.as_millis()
        );
        let _ = writeln!(
            out,
            "- survivors' last log index: at the first poll {} ms after the kill; unequal: \
             one survivor lacks entries the dead leader had sent the other, so a candidate \
             with the shorter log is refused (and openraft 0.9 then adds 2 × \
             election_timeout_max to that node's election timeout until it next starts an \
             election or restarts)",
            LOGS_AFTER.as_millis()
        );
        let _ = writeln!(
            out,
            "- writers: {} writes acknowledged over {:.0} s (p50 {} ms, p99 {} ms), {} failed{}",
            w.requests,
            self.wall.as_secs_f64(),
            ms(w.quantile(0.5)),
            ms(w.quantile(0.99)),
            w.error_count(),
            if errors.is_empty() {
                String::new()
            } else {
                format!(": {}", errors.join("; "))
            }
        );
        if let Some(why) = &self.stopped {
            let _ = writeln!(
                out,
                "- **stopped after {} kill(s)**: {}",
                self.kills.len(),
                one_line(why)
            );
        }
        let _ = writeln!(out);
    }
}

/// The survivors' last log indexes, `a / b`, marked when they differ.
fn logs(k: &KillRow) -> String {
    let v: Vec<String> = k
        .survivor_logs
        .iter()
        .map(|l| l.map_or("-".into(), |l| l.to_string()))
        .collect();
    if v.is_empty() {
        "-".into()
    } else if k.logs_differ() {
        format!("{} (unequal)", v.join(" / "))
    } else {
        v.join(" / ")
    }
}

impl KillRow {
    /// Whether the survivors' last log indexes differed during the election.
    pub fn logs_differ(&self) -> bool {
        let known: Vec<u64> = self.survivor_logs.iter().flatten().copied().collect();
        known.windows(2).any(|w| w[0] != w[1])
    }
}

fn one_line(s: &str) -> String {
    let mut s = s.replace(['\n', '|'], " ");
    if s.len() > 200 {
        let cut = (0..=200).rev().find(|&i| s.is_char_boundary(i));
        s.truncate(cut.unwrap_or(0));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        assert_eq!(nearest_rank(&v, 0.5), Some(Duration::from_millis(10)));
        assert_eq!(nearest_rank(&v, 0.9), Some(Duration::from_millis(18)));
        assert_eq!(nearest_rank(&v, 1.0), Some(Duration::from_millis(20)));
        assert_eq!(nearest_rank(&v, 0.0), Some(Duration::from_millis(1)));
        assert_eq!(nearest_rank(&v[..1], 0.9), Some(Duration::from_millis(1)));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }

    #[test]
    fn renders_kills_and_term_changes() {
        let row = |failover: Option<u64>, before, elected, after| KillRow {
            killed_id: 1,
            killed_endpoint: 1,
            term_before: before,
            failover: failover.map(Duration::from_millis),
            acked_by: failover.map(|_| 2),
            leader_seen: failover.map(Duration::from_millis),
            new_leader_id: Some(2),
            term_elected: Some(elected),
            failed_candidacies: usize::from(elected > before + 1),
            survivor_logs: vec![Some(10), Some(10 + u64::from(elected > before + 1))],
            recovered: Some(Duration::from_millis(1500)),
            term_after: Some(after),
        };
        let outcome = FailoverOutcome {
            kills_asked: 3,
            kills: vec![
                row(Some(500), 1, 2, 2),
                row(Some(900), 2, 4, 5),
                row(None, 5, 6, 6),
            ],
            stopped: Some("kill 3: the group is not whole".into()),
            writers: 6,
            write_timeout: Duration::from_secs(1),
            settle: Duration::from_secs(2),
            poll_every: Duration::from_millis(10),
            ..FailoverOutcome::default()
        };
        assert_eq!(outcome.failover_times().len(), 2);
        assert_eq!(outcome.total_term_changes(), 5);
        let mut out = String::new();
        outcome.render(&mut out);
        assert!(out.contains("none within the deadline"), "{out}");
        assert!(out.contains("10 / 11 (unequal)"), "{out}");
        assert_eq!(outcome.unequal_logs(), 1);
        assert!(out.contains("| 3 of 3 "), "{out}");
        assert!(out.contains("stopped after 3 kill(s)"), "{out}");
    }
}
