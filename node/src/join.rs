//! Joining a group: what a node with an empty store does when it was not told to bootstrap.
//!
//! It never forms a group. It asks its configured peers who they are and what membership
//! they know:
//! - when the membership records this node id with another incarnation (its store was lost
//!   and created anew), it asks the leader to put it back in place (`POST /raft/join`,
//!   [`registry_api::replace`]), and asks again every second until the leader says it is
//!   done: the new incarnation is added as a learner, caught up by snapshot and log, then
//!   made a voter again, the old incarnation gone;
//! - when the membership does not hold this node id, it waits to be added by an operator
//!   (`registryctl cluster add`), and says so;
//! - when no peer answers, or every peer is empty too, it says so and keeps asking.
//!
//! It is done once its own Raft lists it with its own incarnation (and, if it asked to be put
//! back, once the leader said it is), or when the node stops: what it does is asking (a
//! join asked again is answered with the replacement under way), so it may stop at any point.

use std::time::{Duration, Instant};

use openraft::Raft;
use registry_api::transport::peer::{Peer, PeerError};
use registry_api::wire::{IdentityOut, JoinIn};
use registry_storage::{Incarnation, RegistryNode, TypeConfig};
use tokio_util::sync::CancellationToken;

use crate::config::NodeConfig;

/// How often the peers are asked.
const EVERY: Duration = Duration::from_secs(1);
/// How often an unchanged situation is logged again.
const LOG_EVERY: Duration = Duration::from_secs(30);

/// Joins the group (see the module's documentation); returns when this node is a member,
/// or when `stop` is cancelled.
pub async fn run(
    raft: &Raft<TypeConfig>,
    peer: &Peer,
    incarnation: Incarnation,
    config: &NodeConfig,
    stop: &CancellationToken,
) {
    stop.run_until_cancelled(join(raft, peer, incarnation, config))
        .await;
}

/// The joining loop: returns when this node is a member.
async fn join(raft: &Raft<TypeConfig>, peer: &Peer, incarnation: Incarnation, config: &NodeConfig) {
    let me = config.node_id;
    let mut asked = false;
    let mut said = Said::default();
    loop {
        let member = raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .get_node(&me)
            .is_some_and(|n| n.incarnation == incarnation);
        if member && !asked {
            tracing::info!("this node is a member of the group (incarnation {incarnation})");
            return;
        }
        let situation = match look_around(peer, config).await {
            Look::Nobody(_) if config.peers.iter().all(|p| p.id == me) => format!(
                "this node has an empty data directory, was not started with --bootstrap and \
                 its config lists no peer: it waits to be added (`registryctl cluster add {me} \
                 {}`)",
                config.advertised_addr()
            ),
            Look::Nobody(why) => format!(
                "this node has an empty data directory and was not started with --bootstrap, \
                 so it does not form a new group; no peer answers ({why}); asking again"
            ),
            Look::AllEmpty => "every peer is empty too: no group exists yet. Start the \
                               founding nodes with --bootstrap to form one"
                .to_string(),
            Look::Group { cluster, leader, recorded } => match recorded {
                None => format!(
                    "cluster {cluster} has no member {me}: an operator adds this node with \
                     `registryctl cluster add {me} {}`",
                    config.advertised_addr()
                ),
                Some(rec) if rec.incarnation == incarnation && !asked => {
                    "the group lists this incarnation; waiting for the leader to reach it"
                        .to_string()
                }
                Some(rec) => match leader {
                    None => format!(
                        "cluster {cluster} records node {me} as incarnation {}, this is {incarnation}; \
                         waiting for a leader to put it back in place",
                        rec.incarnation
                    ),
                    Some(leader) => {
                        asked = true;
                        let body = JoinIn {
                            node_id: me,
                            addr: config.advertised_addr().to_string(),
                            incarnation: incarnation.to_string(),
                        };
                        match peer.join((leader.0, &leader.1), &body).await {
                            Ok(out) if out.done => {
                                tracing::info!(
                                    "back in the group as incarnation {incarnation}: {}",
                                    out.phase
                                );
                                return;
                            }
                            Ok(out) => format!(
                                "the leader (node {}) is putting this node back in place of \
                                 incarnation {}: {}",
                                leader.0, rec.incarnation, out.phase
                            ),
                            Err(e) => format!("asking the leader to put this node back: {e}"),
                        }
                    }
                },
            },
        };
        said.say(&situation);
        tokio::time::sleep(EVERY).await;
    }
}

/// What the peers say.
enum Look {
    /// None answered.
    Nobody(String),
    /// Every one that answered is empty.
    AllEmpty,
    /// They are in a group.
    Group {
        /// Its cluster id.
        cluster: String,
        /// Its leader, when one is known, as the membership records it.
        leader: Option<(u64, RegistryNode)>,
        /// This node as the membership records it, if it does.
        recorded: Option<RegistryNode>,
    },
}

/// Asks every configured peer who it is; the answer of one in a group with a known leader
/// is preferred.
async fn look_around(peer: &Peer, config: &NodeConfig) -> Look {
    let asks = config
        .peers
        .iter()
        .filter(|p| p.id != config.node_id)
        .map(|p| peer.identity(&p.addr));
    let answers: Vec<Result<IdentityOut, PeerError>> = futures::future::join_all(asks).await;
    let errors: Vec<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().err().map(ToString::to_string))
        .collect();
    let known: Vec<IdentityOut> = answers.into_iter().filter_map(Result::ok).collect();
    if known.is_empty() {
        return Look::Nobody(errors.join("; "));
    }
    let best = known
        .iter()
        .filter(|w| w.cluster_id.is_some())
        .max_by_key(|w| (w.leader_id.is_some(), w.members.len()));
    let Some(best) = best else {
        return Look::AllEmpty;
    };
    let node_of = |id: u64| {
        best.members.iter().find(|m| m.id == id).and_then(|m| {
            let incarnation = m.incarnation.parse().ok()?;
            Some(RegistryNode::new(m.addr.clone(), incarnation))
        })
    };
    Look::Group {
        cluster: best.cluster_id.clone().unwrap_or_default(),
        leader: best.leader_id.and_then(|l| node_of(l).map(|n| (l, n))),
        recorded: node_of(config.node_id),
    }
}

/// Logs a situation when it changes, and again every [`LOG_EVERY`] while it does not.
#[derive(Default)]
struct Said {
    last: String,
    at: Option<Instant>,
}

impl Said {
    fn say(&mut self, situation: &str) {
        if situation != self.last || self.at.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            tracing::warn!("joining: {situation}");
            self.last = situation.to_string();
            self.at = Some(Instant::now());
        }
    }
}
