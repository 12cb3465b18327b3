//! `cluster status`: the members, the leader and the term, and how far each node's applied
//! state is behind the leader's, asking every member for its own view.

use std::collections::BTreeMap;

use clap::Subcommand;
use registry_api::wire::ClusterOut;
use registry_client::ClientError;
use tokio::task::JoinSet;

use super::services::new_table;
use super::{CliError, GlobalArgs};

/// The `cluster` commands.
#[derive(Debug, Clone, Subcommand)]
pub enum ClusterCommand {
    /// Members, leader, term, and each node's applied index and lag.
    Status,
    /// Add a node: as a learner first (answers once it caught up), then as a voter. Start
    /// the node (without --bootstrap, on an empty data directory) beforehand: it is recorded
    /// with the incarnation of its store it reports.
    Add {
        /// The new node's id.
        id: u64,
        /// Its address, `host:port`.
        addr: String,
        /// Leave it a learner (it replicates but does not vote).
        #[arg(long)]
        learner: bool,
    },
    /// Remove a node (voter or learner) from the group.
    Remove {
        /// The node's id.
        id: u64,
    },
    /// Make the first reachable node build a snapshot now (and purge its log behind it).
    Snapshot,
}

/// Runs a `cluster` command.
pub async fn run(g: &GlobalArgs, command: ClusterCommand) -> Result<String, CliError> {
    match command {
        ClusterCommand::Status => status(g).await,
        ClusterCommand::Add { id, addr, learner } => {
            let client = g.client()?;
            client.add_learner(id, &addr).await?;
            if learner {
                return Ok(format!("Node {id} at {addr} added as a learner.\n"));
            }
            client.promote(id).await?;
            Ok(format!("Node {id} at {addr} added as a voter.\n"))
        }
        ClusterCommand::Remove { id } => match g.client()?.remove_member(id).await {
            Ok(_) => Ok(format!("Node {id} removed from the cluster.\n")),
            Err(ClientError::Api {
                status: 404,
                message,
            }) => Err(CliError::NotFound(message)),
            Err(e) => Err(e.into()),
        },
        ClusterCommand::Snapshot => {
            g.client()?.trigger_snapshot().await?;
            Ok("Snapshot requested.\n".into())
        }
    }
}

/// Runs `cluster status`: the membership from the first endpoint that answers, then every
/// member's own `/v1/cluster` at its address.
pub async fn status(g: &GlobalArgs) -> Result<String, CliError> {
    let view = g.client()?.cluster().await?;
    let mut asks = JoinSet::new();
    for m in &view.members {
        let (id, client) = (m.id, g.client_of(&m.addr)?);
        asks.spawn(async move { (id, client.cluster().await) });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = asks.join_next().await {
        if let Ok((id, answer)) = joined {
            answers.insert(id, answer);
        }
    }
    Ok(render(&view, &answers))
}

/// The status text: a leader line, then one row per member.
pub fn render(
    view: &ClusterOut,
    answers: &BTreeMap<u64, Result<ClusterOut, ClientError>>,
) -> String {
    let reachable: Vec<&ClusterOut> = answers.values().filter_map(|a| a.as_ref().ok()).collect();
    // The leader's own answer, if it gave one: its term, its matched indexes, its applied
    // index as the reference for lag.
    let leader = reachable.iter().copied().find(|c| c.role == "Leader");
    let leader_id = leader.map(|l| l.node_id).or(view.leader_id);
    let reference = leader
        .and_then(|l| l.applied_index)
        .or_else(|| reachable.iter().filter_map(|c| c.applied_index).max());
    let term = leader.map_or(view.term, |l| l.term);

    let mut text = format!(
        "Cluster: {}\n",
        view.cluster_id
            .as_deref()
            .unwrap_or("none (not bootstrapped or joined yet)")
    );
    text.push_str(&match leader_id {
        Some(id) => {
            let addr = view
                .members
                .iter()
                .find(|m| m.id == id)
                .map_or("?", |m| m.addr.as_str());
            format!("Leader: node {id} at {addr}, term {term}\n")
        }
        None => {
            format!("Leader: none known (term {term}): the cluster has no quorum or is electing\n")
        }
    });
    text.push_str(&format!(
        "Members: {} ({} reachable)\n",
        view.members.len(),
        reachable.len()
    ));

    let dash = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut table = new_table();
    table.set_header([
        "Id",
        "Address",
        "Role",
        "Voter",
        "Incarnation",
        "Term",
        "Last Log Index",
        "Applied Index",
        "Lag",
        "Matched Index",
    ]);
    for m in &view.members {
        let matched = leader
            .and_then(|l| l.members.iter().find(|x| x.id == m.id))
            .and_then(|x| x.matched_index);
        let row = match answers.get(&m.id) {
            Some(Ok(c)) => vec![
                m.id.to_string(),
                m.addr.clone(),
                role_of(c, m),
                m.voter.to_string(),
                m.incarnation.clone(),
                c.term.to_string(),
                dash(c.last_log_index),
                dash(c.applied_index),
                dash(reference.map(|r| r.saturating_sub(c.applied_index.unwrap_or(0)))),
                dash(matched),
            ],
            Some(Err(e)) => vec![
                m.id.to_string(),
                m.addr.clone(),
                unreachable_role(e),
                m.voter.to_string(),
                m.incarnation.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                dash(matched),
            ],
            None => vec![
                m.id.to_string(),
                m.addr.clone(),
                "unknown".into(),
                m.voter.to_string(),
                m.incarnation.clone(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                dash(matched),
            ],
        };
        table.add_row(row);
    }
    text.push_str(&format!("{table}\n"));
    text
}

/// What the role column says of a member that answered: its role, or that the store at its
/// address is not the member's (a new incarnation, or another cluster's).
fn role_of(c: &ClusterOut, m: &registry_api::wire::MemberOut) -> String {
    if !m.incarnation.is_empty() && c.incarnation != m.incarnation {
        return format!("new store ({})", c.incarnation);
    }
    c.role.clone()
}

/// What the role column says of a member that did not answer.
fn unreachable_role(e: &ClientError) -> String {
    match e {
        ClientError::Unreachable { .. } => "unreachable".into(),
        ClientError::Unknown(_) => "no answer".into(),
        ClientError::Api { status, .. } => format!("error {status}"),
        _ => "error".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use registry_api::wire::MemberOut;

    fn out(id: u64, role: &str, applied: u64) -> ClusterOut {
        ClusterOut {
            cluster_id: Some("0123456789abcdef0123456789abcdef".into()),
            incarnation: format!("{id:016x}"),
            node_id: id,
            role: role.into(),
            leader_id: Some(1),
            leader_addr: Some("127.0.0.1:1".into()),
            term: 4,
            last_log_index: Some(applied),
            applied_index: Some(applied),
            snapshot_index: None,
            purged_index: None,
            members: (1..=3)
                .map(|i| MemberOut {
                    id: i,
                    addr: format!("127.0.0.1:{i}"),
                    voter: true,
                    incarnation: format!("{i:016x}"),
                    matched_index: (role == "Leader").then_some(10 - i),
                })
                .collect(),
            records: 0,
            digest: String::new(),
        }
    }

    #[test]
    fn lag_is_behind_the_leaders_applied_index_and_dead_nodes_say_so() {
        let mut answers = BTreeMap::new();
        answers.insert(1, Ok(out(1, "Leader", 10)));
        answers.insert(2, Ok(out(2, "Follower", 7)));
        answers.insert(
            3,
            Err(ClientError::Unreachable {
                tried: 1,
                last: "refused".into(),
            }),
        );
        let text = render(&out(2, "Follower", 7), &answers);
        assert!(
            text.starts_with(
                "Cluster: 0123456789abcdef0123456789abcdef\nLeader: node 1 at 127.0.0.1:1, term 4\n"
            ),
            "{text}"
        );
        let rows: Vec<Vec<String>> = text
            .lines()
            .filter(|l| l.starts_with("| ") && !l.contains("Address"))
            .map(|l| l.split('|').map(|c| c.trim().to_string()).collect())
            .collect();
        assert_eq!(rows.len(), 3, "{text}");
        assert_eq!(rows[0][3], "Leader");
        assert_eq!(rows[0][5], "0000000000000001", "the member's incarnation");
        assert_eq!(rows[0][9], "0", "the leader has no lag");
        assert_eq!(rows[1][9], "3", "node 2 is three entries behind");
        assert_eq!(rows[1][10], "8", "matched index as the leader knows it");
        assert_eq!(rows[2][3], "unreachable");
        assert_eq!(rows[2][9], "-");
    }
}
