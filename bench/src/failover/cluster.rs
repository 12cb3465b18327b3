//! The group as its nodes describe it (`GET /v1/cluster` on every endpoint): who leads, in
//! which term, and whether every node is back and caught up.

use std::time::Duration;

use registry_api::wire::ClusterOut;
use tokio::time::Instant;

use crate::target::registry::check_answer;

/// Pause between two reads of the whole group while waiting for it to be whole.
const WHOLE_POLL: Duration = Duration::from_millis(50);

/// What every endpoint answered to `GET /v1/cluster`, in endpoint order.
#[derive(Debug, Clone)]
pub struct View {
    /// Each endpoint's answer, or why there was none.
    pub nodes: Vec<Result<ClusterOut, String>>,
}

/// A group every node of which answers and agrees on one leader and one term, with every
/// node's applied index close to the leader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Whole {
    /// The endpoint (position in `--registry`) of the leader.
    pub leader: usize,
    /// The leader's node id.
    pub leader_id: u64,
    /// The term every node is in.
    pub term: u64,
    /// The leader's applied index.
    pub applied: u64,
}

/// Reads the group: `GET {base}/v1/cluster` on every base URL at once.
pub async fn read(http: &reqwest::Client, bases: &[String]) -> View {
    let reads = bases.iter().map(|b| read_one(http, b));
    View {
        nodes: futures::future::join_all(reads).await,
    }
}

async fn read_one(http: &reqwest::Client, base: &str) -> Result<ClusterOut, String> {
    let url = format!("{base}/v1/cluster");
    let resp = http
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("GET {url}: {e}"))?;
    let body = check_answer(resp)
        .await
        .map_err(|f| format!("GET {url}: {}: {}", f.kind, f.detail))?;
    serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
}

impl View {
    /// The group as [`Whole`], or what keeps it from being whole: a node that does not answer,
    /// no leader, nodes that disagree on the leader or the term, the leader not in the
    /// `Leader` role, or a node more than `max_lag` entries behind the leader's applied index.
    pub fn whole(&self, max_lag: u64) -> Result<Whole, String> {
        let mut answers = Vec::with_capacity(self.nodes.len());
        for (i, n) in self.nodes.iter().enumerate() {
            match n {
                Ok(c) => answers.push(c),
                Err(e) => return Err(format!("endpoint {}: {e}", i + 1)),
            }
        }
        let first = answers.first().ok_or("no endpoint")?;
        let leader_id = first
            .leader_id
            .ok_or_else(|| format!("node {} knows no leader", first.node_id))?;
        let term = first.term;
        if let Some(c) = answers
            .iter()
            .find(|c| c.leader_id != Some(leader_id) || c.term != term)
        {
            return Err(format!(
                "node {} sees leader {:?} in term {}, node {} sees leader {leader_id} in term {term}",
                c.node_id, c.leader_id, c.term, first.node_id
            ));
        }
        let leader = answers
            .iter()
            .position(|c| c.node_id == leader_id)
            .ok_or_else(|| format!("the leader, node {leader_id}, is behind no endpoint"))?;
        let lead = answers[leader];
        if lead.role != "Leader" {
            return Err(format!("node {leader_id} is {}, not Leader", lead.role));
        }
        let applied = lead.applied_index.unwrap_or(0);
        if let Some(c) = answers
            .iter()
            .find(|c| c.applied_index.unwrap_or(0).saturating_add(max_lag) < applied)
        {
            return Err(format!(
                "node {} has applied {:?}, the leader {applied} (more than {max_lag} behind)",
                c.node_id, c.applied_index
            ));
        }
        Ok(Whole {
            leader,
            leader_id,
            term,
            applied,
        })
    }

    /// Each endpoint's last log index (`None`: no answer, or no log).
    pub fn last_log_indexes(&self) -> Vec<Option<u64>> {
        self.nodes
            .iter()
            .map(|n| n.as_ref().ok().and_then(|c| c.last_log_index))
            .collect()
    }

    /// The nodes in the `Candidate` role, with their term.
    pub fn candidates(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.nodes.iter().filter_map(|n| match n {
            Ok(c) if c.role == "Candidate" => Some((c.node_id, c.term)),
            _ => None,
        })
    }

    /// A node other than endpoint `except` that is `Leader` in a term above `term`: its
    /// endpoint, node id and term.
    pub fn new_leader(&self, except: usize, term: u64) -> Option<(usize, u64, u64)> {
        self.nodes.iter().enumerate().find_map(|(i, n)| match n {
            Ok(c) if i != except && c.role == "Leader" && c.term > term => {
                Some((i, c.node_id, c.term))
            }
            _ => None,
        })
    }
}

/// Reads the group until it is whole (see [`View::whole`]), or until `deadline`: then the
/// error says what was missing at the last read.
pub async fn wait_whole(
    http: &reqwest::Client,
    bases: &[String],
    max_lag: u64,
    deadline: Instant,
) -> Result<Whole, String> {
    loop {
        let whole = read(http, bases).await.whole(max_lag);
        match whole {
            Ok(w) => return Ok(w),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(WHOLE_POLL).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, role: &str, leader: Option<u64>, term: u64, applied: u64) -> ClusterOut {
        ClusterOut {
            cluster_id: None,
            node_id: id,
            incarnation: String::new(),
            role: role.into(),
            leader_id: leader,
            leader_addr: None,
            term,
            last_log_index: Some(applied),
            applied_index: Some(applied),
            snapshot_index: None,
            purged_index: None,
            members: Vec::new(),
            records: 0,
            digest: String::new(),
        }
    }

    #[test]
    fn whole_needs_every_node_one_leader_one_term_and_no_laggard() {
        let view = |nodes: Vec<Result<ClusterOut, String>>| View { nodes };
        let ok = view(vec![
            Ok(node(1, "Follower", Some(2), 5, 100)),
            Ok(node(2, "Leader", Some(2), 5, 110)),
            Ok(node(3, "Follower", Some(2), 5, 95)),
        ]);
        assert_eq!(
            ok.whole(50),
            Ok(Whole {
                leader: 1,
                leader_id: 2,
                term: 5,
                applied: 110
            })
        );
        assert!(ok.whole(10).is_err(), "node 3 is 15 behind");
        assert_eq!(ok.new_leader(0, 4).map(|l| l.1), Some(2));
        assert_eq!(ok.new_leader(1, 4), None, "the leader itself is excluded");
        assert_eq!(ok.new_leader(0, 5), None, "not a newer term");
        assert_eq!(ok.candidates().count(), 0);

        let down = view(vec![
            Ok(node(1, "Follower", Some(2), 5, 100)),
            Ok(node(2, "Leader", Some(2), 5, 100)),
            Err("connection refused".into()),
        ]);
        assert!(down.whole(50).is_err());
        let electing = view(vec![
            Ok(node(1, "Candidate", None, 6, 100)),
            Ok(node(2, "Follower", Some(3), 5, 100)),
            Err("connection refused".into()),
        ]);
        assert_eq!(electing.candidates().collect::<Vec<_>>(), vec![(1, 6)]);
        assert_eq!(
            electing.last_log_indexes(),
            vec![Some(100), Some(100), None]
        );
        assert_eq!(down.new_leader(2, 4).map(|l| l.0), Some(1));

        // The old leader restarted in its old term still takes itself for the leader.
        let stale = view(vec![
            Ok(node(1, "Leader", Some(1), 5, 100)),
            Ok(node(2, "Leader", Some(2), 6, 100)),
            Ok(node(3, "Follower", Some(2), 6, 100)),
        ]);
        assert!(stale.whole(50).is_err());
        assert_eq!(stale.new_leader(0, 5).map(|l| l.1), Some(2));
    }
}
