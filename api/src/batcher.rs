//! Group commit for heartbeats on the leader.
//!
//! openraft 0.9 appends and flushes once per `client_write`, so the leader coalesces
//! heartbeats: the batcher proposes the first waiting request at once (no fixed wait at low
//! load) and, while up to [`MAX_IN_FLIGHT`] proposals are being committed, lets the next
//! requests queue up; each later proposal carries everything queued by then, as one log
//! entry. Every request is answered with its own slice of the entry's records after the
//! entry commits, or with the entry's error (a follower's requests get `ForwardToLeader` and
//! are forwarded one by one by the write path).
//!
//! The loop stops when its cancellation token is cancelled (the node's shutdown, once its
//! HTTP server has stopped): requests still queued are answered at once with
//! `Fatal::Stopped` (nothing of them was proposed), later ones are refused by the closed
//! queue, and the proposals being committed are waited for, so every request gets an answer.

use chrono::Utc;
use futures::stream::{FuturesUnordered, StreamExt};
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::Raft;
use prometheus_client::metrics::histogram::Histogram;
use registry_storage::{Command, CommandResponse, Heartbeat, NodeId, RegistryNode, TypeConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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
    /// commits in `batch_sizes`; it ends when `stop` is cancelled (or every handle is
    /// dropped) and the proposals it made are answered. Returns the handle and the task.
    pub fn spawn(
        raft: Raft<TypeConfig>,
        batch_sizes: Histogram,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(raft, rx, batch_sizes, stop));
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
    /// Answers it with an error: the loop is stopping and will not flush it.
    fn refuse(self);
}

impl Join for Pending {
    fn size(&self) -> usize {
        self.beats.len()
    }

    fn refuse(self) {
        // Nothing was proposed: the client may send it to another node.
        let _ = self.reply.send(Err(RaftError::Fatal(Fatal::Stopped)));
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
/// the next batch. Ends when `stop` is cancelled or every sender is dropped, once the items
/// still queued are refused ([`Join::refuse`]) and the last flush is done.
pub(crate) async fn group<T, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    limits: Limits,
    stop: CancellationToken,
    mut flush: F,
) where
    T: Join,
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut in_flight = FuturesUnordered::new();
    let mut carry: Option<T> = None;
    loop {
        if stop.is_cancelled() {
            break;
        }
        if in_flight.len() >= limits.max_in_flight {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = in_flight.next() => continue,
            }
        }
        let first = match carry.take() {
            Some(c) => c,
            None => tokio::select! {
                () = stop.cancelled() => break,
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
    // Nothing more is taken: whatever waits is answered now, and senders are refused.
    rx.close();
    let mut refused = 0usize;
    if let Some(c) = carry.take() {
        c.refuse();
        refused += 1;
    }
    while let Some(p) = rx.recv().await {
        p.refuse();
        refused += 1;
    }
    if refused > 0 {
        tracing::info!(
            refused,
            in_flight = in_flight.len(),
            "stopping: requests still queued were answered with an error"
        );
    }
    while in_flight.next().await.is_some() {}
}

async fn run(
    raft: Raft<TypeConfig>,
    rx: mpsc::Receiver<Pending>,
    batch_sizes: Histogram,
    stop: CancellationToken,
) {
    let limits = Limits {
        max_size: MAX_BATCH,
        max_in_flight: MAX_IN_FLIGHT,
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// An item answered with what became of it.
    struct Item {
        id: u32,
        reply: oneshot::Sender<&'static str>,
    }

    impl Join for Item {
        fn size(&self) -> usize {
            1
        }

        fn refuse(self) {
            let _ = self.reply.send("refused");
        }
    }

    /// A stopped loop answers every item: the one being flushed when it flushes, the queued
    /// ones with a refusal at once; later sends fail; and it ends only after the flush.
    #[tokio::test]
    async fn a_stopped_loop_answers_every_item() {
        let (tx, rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        let (started_tx, mut started) = mpsc::unbounded_channel::<u32>();
        let (release_tx, release) = tokio::sync::watch::channel(false);
        let limits = Limits {
            max_size: 1,
            max_in_flight: 1,
        };
        let task = tokio::spawn(group(rx, limits, stop.clone(), move |batch: Vec<Item>| {
            let started_tx = started_tx.clone();
            let mut release = release.clone();
            async move {
                for item in &batch {
                    let _ = started_tx.send(item.id);
                }
                let _ = release.wait_for(|r| *r).await;
                for item in batch {
                    let _ = item.reply.send("flushed");
                }
            }
        }));
        let mut answers = Vec::new();
        for id in 0..3 {
            let (reply, answer) = oneshot::channel();
            assert!(tx.send(Item { id, reply }).await.is_ok(), "queued {id}");
            answers.push(answer);
        }
        let first = tokio::time::timeout(Duration::from_secs(5), started.recv()).await;
        assert_eq!(first, Ok(Some(0)), "the first item is being flushed");

        stop.cancel();
        let mut answers = answers.into_iter();
        let flushing = answers.next().expect("three answers");
        for (id, answer) in (1..).zip(answers) {
            let got = tokio::time::timeout(Duration::from_secs(5), answer).await;
            assert_eq!(got, Ok(Ok("refused")), "queued item {id} answered at once");
        }
        let (reply, _answer) = oneshot::channel();
        assert!(
            tx.send(Item { id: 9, reply }).await.is_err(),
            "a stopped loop takes nothing more"
        );
        assert!(!task.is_finished(), "the loop waits for its flush");

        let _ = release_tx.send(true);
        let got = tokio::time::timeout(Duration::from_secs(5), flushing).await;
        assert_eq!(got, Ok(Ok("flushed")), "the flush in flight completes");
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(
            matches!(ended, Ok(Ok(()))),
            "the loop ended after its flush"
        );
    }
}
