//! Group commit for heartbeats on the leader.
//!
//! openraft 0.9 appends and flushes once per `client_write`, so the leader coalesces
//! heartbeats: the batcher proposes the first waiting request at once (no fixed wait at low
//! load) and, while up to [`MAX_IN_FLIGHT`] proposals are being committed, lets the next
//! requests queue up; each later proposal carries everything queued by then, as one log
//! entry. Every request is answered with its own slice of the entry's records after the
//! entry commits, or with the entry's error (a follower's requests get `ForwardToLeader` and
//! are forwarded one by one by the write path).

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use openraft::error::{ClientWriteError, RaftError};
use openraft::Raft;
use prometheus_client::metrics::histogram::Histogram;
use registry_storage::{Command, CommandResponse, Heartbeat, NodeId, RegistryNode, TypeConfig};
use tokio::sync::{mpsc, oneshot};

/// The error a proposal can fail with.
pub type WriteError = RaftError<NodeId, ClientWriteError<NodeId, RegistryNode>>;

/// Most heartbeats in one log entry.
pub const MAX_BATCH: usize = 2000;
/// Most proposals being committed at once.
pub const MAX_IN_FLIGHT: usize = 4;
/// Requests that may wait for a proposal.
const QUEUE: usize = 16 * 1024;

/// One request waiting to be proposed.
struct Pending {
    beats: Vec<Heartbeat>,
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
    /// commits in `batch_sizes`; it ends when every handle is dropped.
    pub fn spawn(raft: Raft<TypeConfig>, batch_sizes: Histogram) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx, batch_sizes));
        Self { tx }
    }

    /// Proposes `beats` (with whatever else is queued) and waits for the entry's result:
    /// `CommandResponse::Records` with one record per heartbeat, in order.
    pub async fn submit(
        &self,
        beats: Vec<Heartbeat>,
    ) -> Result<Result<CommandResponse, WriteError>, BatcherStopped> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Pending { beats, reply })
            .await
            .map_err(|_| BatcherStopped)?;
        rx.await.map_err(|_| BatcherStopped)
    }
}

/// What a group-commit loop needs to know of a waiting item.
pub(crate) trait Join {
    /// How much it adds to a batch (heartbeats).
    fn size(&self) -> usize;
    /// Whether it may share a batch with `first` (the batch's first item).
    fn joins(&self, _first: &Self) -> bool {
        true
    }
}

impl Join for Pending {
    fn size(&self) -> usize {
        self.beats.len()
    }
}

/// Bounds of a group-commit loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most heartbeats in one batch (a first item larger than this goes alone).
    pub max_size: usize,
    /// Most batches being flushed at once.
    pub max_in_flight: usize,
}

/// The group-commit loop: starts a batch with the first waiting item at once (no fixed
/// wait at low load), adds whatever else is queued and may join it, and runs `flush` on it;
/// while `max_in_flight` batches are being flushed, later items queue up and go together in
/// the next batch. Ends when every sender is dropped and the last flush is done.
pub(crate) async fn group<T, F, Fut>(mut rx: mpsc::Receiver<T>, limits: Limits, mut flush: F)
where
    T: Join,
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut in_flight = FuturesUnordered::new();
    let mut carry: Option<T> = None;
    loop {
        if in_flight.len() >= limits.max_in_flight {
            in_flight.next().await;
            continue;
        }
        let first = match carry.take() {
            Some(c) => c,
            None => tokio::select! {
                p = rx.recv() => match p {
                    Some(p) => p,
                    None => break,
                },
                Some(()) = in_flight.next(), if !in_flight.is_empty() => continue,
            },
        };
        let mut size = first.size();
        let mut batch = vec![first];
        while size < limits.max_size {
            match rx.try_recv() {
                Ok(p) if p.joins(&batch[0]) && size + p.size() <= limits.max_size => {
                    size += p.size();
                    batch.push(p);
                }
                Ok(p) => {
                    carry = Some(p);
                    break;
                }
                Err(_) => break,
            }
        }
        in_flight.push(flush(batch));
    }
    while in_flight.next().await.is_some() {}
}

async fn run(raft: Raft<TypeConfig>, rx: mpsc::Receiver<Pending>, batch_sizes: Histogram) {
    let limits = Limits {
        max_size: MAX_BATCH,
        max_in_flight: MAX_IN_FLIGHT,
    };
    group(rx, limits, |batch| {
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
