//! Group commit for heartbeats on the leader.
//!
//! openraft 0.9 appends and flushes once per `client_write`, so the leader coalesces
//! heartbeats: the batcher proposes the first waiting request at once (no fixed wait at low
//! load) and, while up to [`PROPOSALS_IN_FLIGHT`] proposals are being committed, lets the next
//! requests queue up; each later proposal carries everything queued by then, as one log
//! entry. Every request is answered with its own slice of the entry's records after the
//! entry commits, or with the entry's error (a follower's requests get `ForwardToLeader` and
//! are forwarded one by one by the write path).
//!
//! The loop stops when its cancellation token is cancelled (the node's shutdown, once its
//! HTTP server has stopped): requests still queued are answered at once with
//! `Fatal::Stopped` (nothing of them was proposed), later ones are refused by the closed
//! queue, and the proposals being committed are waited for, so every request gets an answer.

use std::time::Duration;

use chrono::Utc;
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::Raft;
use prometheus_client::metrics::histogram::Histogram;
use registry_storage::{Command, CommandResponse, Heartbeat, NodeId, RegistryNode, TypeConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::group_commit::{
    group, Join, Limits, ENTRY_MAX_BYTES, ENTRY_MAX_HEARTBEATS, PROPOSALS_IN_FLIGHT,
};

/// The error a proposal can fail with.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, RegistryNode>>;

/// Requests that may wait for a proposal.
const QUEUE: usize = 16 * 1024;

/// One request waiting to be proposed.
struct Pending {
    beats: Vec<Heartbeat>,
    /// About what `beats` encode to ([`heartbeat_bytes`]), counted once by the request's
    /// own task rather than by the batching loop each time it looks at it.
    bytes: usize,
    reply: oneshot::Sender<Result<CommandResponse, WriteError>>,
}

/// Handle to the batching task. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

/// Why a submitted batch got no answer from the batching task.
#[derive(Debug, thiserror::Error)]
#[error("the heartbeat batcher stopped")]
pub struct BatcherStopped;

impl Batcher {
    /// Starts the batching task for `raft`, recording the heartbeats of each entry it
    /// commits in `batch_sizes`, a batch lingering up to `linger` under load
    /// ([`crate::group_commit::LINGER`]); it ends when `stop` is cancelled (or every handle
    /// is dropped) and the proposals it made are answered. Returns the handle and the task.
    pub fn spawn(
        raft: Raft<TypeConfig>,
        batch_sizes: Histogram,
        linger: Duration,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(raft, rx, batch_sizes, linger, stop));
        (Self { tx }, task)
    }

    /// Proposes `beats` (with whatever else is queued) and waits for the entry's result:
    /// `CommandResponse::Records` with one record per heartbeat, in order.
    pub async fn submit(
        &self,
        beats: Vec<Heartbeat>,
    ) -> Result<Result<CommandResponse, WriteError>, BatcherStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending {
                bytes: beats.iter().map(heartbeat_bytes).sum(),
                beats,
                reply,
            })
            .await
            .map_err(|_| BatcherStopped)?;
        rx.await.map_err(|_| BatcherStopped)
    }
}

impl Join for Pending {
    fn size(&self) -> usize {
        self.beats.len()
    }

    fn bytes(&self) -> usize {
        self.bytes
    }

    fn refuse(self) {
        // Nothing was proposed: the client may send it to another node.
        let _ = self.reply.send(Err(RaftError::Fatal(Fatal::Stopped)));
    }
}

/// About the bytes a heartbeat encodes to: its strings, and a little for their lengths and
/// the absent fields.
fn heartbeat_bytes(hb: &Heartbeat) -> usize {
    let optional = [
        &hb.topic,
        &hb.availability_zone,
        &hb.cluster_name,
        &hb.rpc_current_version,
        &hb.object_current_version,
    ];
    hb.host.len()
        + hb.binary.len()
        + optional
            .iter()
            .map(|f| f.as_ref().map_or(0, String::len))
            .sum::<usize>()
        + 16
}

async fn run(
    raft: Raft<TypeConfig>,
    rx: mpsc::Receiver<Pending>,
    batch_sizes: Histogram,
    linger: Duration,
    stop: CancellationToken,
) {
    let limits = Limits {
        max_size: ENTRY_MAX_HEARTBEATS,
        max_bytes: ENTRY_MAX_BYTES,
        max_in_flight: PROPOSALS_IN_FLIGHT,
        linger,
    };
    group(rx, limits, stop, |batch| {
        propose(raft.clone(), batch, batch_sizes.clone())
    })
    .await;
}

/// Proposes one entry for `batch` and answers each request with its part of the result; an
/// entry that commits is recorded in `batch_sizes` (a follower's proposals, refused with
/// `ForwardToLeader`, are not).
async fn propose(raft: Raft<TypeConfig>, batch: Vec<Pending>, batch_sizes: Histogram) {
    let mut counts = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut beats = Vec::new();
    for p in batch {
        counts.push(p.beats.len());
        beats.extend(p.beats);
        replies.push(p.reply);
    }
    let size = beats.len();
    let cmd = Command::Heartbeats {
        at: Utc::now(),
        beats: beats.into(),
    };
    let res = raft.client_write(cmd).await;
    if res.is_ok() {
        batch_sizes.observe(size as f64);
    }
    match res {
        Ok(resp) => match resp.data {
            CommandResponse::Records(records) => {
                let mut records = records.into_iter();
                for (reply, n) in replies.into_iter().zip(counts) {
                    let part: Vec<_> = records.by_ref().take(n).collect();
                    let _ = reply.send(Ok(CommandResponse::Records(part)));
                }
            }
            other => {
                for reply in replies {
                    let _ = reply.send(Ok(other.clone()));
                }
            }
        },
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
