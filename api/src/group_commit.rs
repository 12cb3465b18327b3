//! The group-commit loop shared by the leader's batcher ([`crate::write::batcher`]) and a
//! follower's forwarder ([`crate::forward::forwarder`]), and the bounds of both, defined here
//! once. The loop stops when its cancellation token is cancelled (the node's shutdown):
//! items still queued are refused at once and the batches being flushed
//! are waited for, so every item gets an answer.

use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most heartbeats the leader puts in one log entry.
pub const ENTRY_MAX_HEARTBEATS: usize = 2000;
/// Most bytes of heartbeats (as [`crate::write::batcher`] counts them, about what they encode
/// to) the leader puts in one log entry; the heartbeats of one request go in one entry even
/// past it. Heartbeats of a few dozen bytes reach [`ENTRY_MAX_HEARTBEATS`] first; this bounds
/// entries of long ones, and so the AppendEntries bodies a follower must accept
/// ([`crate::transport::rpc::MAX_ENTRY_BYTES`]).
pub const ENTRY_MAX_BYTES: usize = 512 * 1024;
/// Most log entries of heartbeats the leader has being committed at once.
pub const PROPOSALS_IN_FLIGHT: usize = 4;
/// Most heartbeats a follower forwards in one request: what the leader accepts in one.
pub const FORWARD_MAX_HEARTBEATS: usize = crate::wire::MAX_BATCH;
/// Most forwarded requests on the way to the leader at once.
pub const FORWARDS_IN_FLIGHT: usize = 8;
/// How long a batch waits for company once load is seen (the previous batch started less
/// than [`BUSY`] ago), by default: a node's `group_commit_linger` sets it. Measured
/// (BENCHMARKS.md): at 2,000 single-heartbeat requests/s the three nodes spend 31% less CPU
/// per heartbeat with it than with none, and at saturation 16% less; it adds up to this much
/// to a heartbeat's latency on the leader and again on a forwarding follower. A lone
/// heartbeat after a quiet spell goes at once.
pub const LINGER: Duration = Duration::from_millis(2);
/// A batch started less than this after the previous one lingers ([`LINGER`]).
pub const BUSY: Duration = Duration::from_millis(20);

/// What a group-commit loop needs to know of a waiting item.
pub(crate) trait Join {
    /// How much it adds to a batch (heartbeats).
    fn size(&self) -> usize;
    /// How many bytes it adds to a batch.
    fn bytes(&self) -> usize;
    /// Whether it may share a batch with `first` (the batch's first item).
    fn joins(&self, _first: &Self) -> bool {
        true
    }
    /// Answers it with an error: the loop is stopping and will not flush it.
    fn refuse(self);
}

/// Bounds of a group-commit loop.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Most heartbeats in one batch (a first item larger than this goes alone).
    pub max_size: usize,
    /// Most bytes in one batch (a first item larger than this goes alone).
    pub max_bytes: usize,
    /// Most batches being flushed at once.
    pub max_in_flight: usize,
    /// How long a batch started within [`BUSY`] of the previous one waits for more items
    /// before it is flushed (zero: never).
    pub linger: Duration,
}

/// The group-commit loop: starts a batch with the first waiting item, at once after a quiet
/// spell or after [`Limits::linger`] under load, adds whatever else is queued and may join
/// it, and runs `flush` on it;
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
    let mut last_start: Option<Instant> = None;
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
        if !limits.linger.is_zero() && last_start.is_some_and(|at| at.elapsed() < BUSY) {
            // The flushes in flight are polled meanwhile: they are this loop's futures.
            let until = Instant::now() + limits.linger;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(until) => break,
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                }
            }
        }
        last_start = Some(Instant::now());
        let (mut size, mut bytes) = (first.size(), first.bytes());
        let mut batch = vec![first];
        while size < limits.max_size && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(p)
                    if p.joins(&batch[0])
                        && size + p.size() <= limits.max_size
                        && bytes + p.bytes() <= limits.max_bytes =>
                {
                    size += p.size();
                    bytes += p.bytes();
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    /// An item answered with what became of it.
    struct Item {
        id: u32,
        bytes: usize,
        reply: oneshot::Sender<&'static str>,
    }

    impl Join for Item {
        fn size(&self) -> usize {
            1
        }

        fn bytes(&self) -> usize {
            self.bytes
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
            max_bytes: usize::MAX,
            max_in_flight: 1,
            linger: Duration::ZERO,
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
            assert!(
                tx.send(Item {
                    id,
                    bytes: 1,
                    reply
                })
                .await
                .is_ok(),
                "queued {id}"
            );
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
            tx.send(Item {
                id: 9,
                bytes: 1,
                reply
            })
            .await
            .is_err(),
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

    /// A batch takes queued items while their bytes fit its budget; an item that does not
    /// fit starts the next one, and one larger than the budget goes alone.
    #[tokio::test]
    async fn batches_keep_to_their_byte_budget() {
        let (tx, rx) = mpsc::channel(16);
        for (id, bytes) in (0..).zip([300, 300, 300, 900, 100]) {
            let (reply, _answer) = oneshot::channel();
            assert!(tx.send(Item { id, bytes, reply }).await.is_ok());
        }
        drop(tx);
        let limits = Limits {
            max_size: 100,
            max_bytes: 700,
            max_in_flight: 1,
            linger: Duration::ZERO,
        };
        let (batches_tx, mut batches) = mpsc::unbounded_channel::<Vec<u32>>();
        let run = group(
            rx,
            limits,
            CancellationToken::new(),
            move |batch: Vec<Item>| {
                let _ = batches_tx.send(batch.iter().map(|i| i.id).collect());
                async {}
            },
        );
        tokio::time::timeout(Duration::from_secs(5), run)
            .await
            .expect("the loop ends once every sender is gone");
        let mut got = Vec::new();
        while let Ok(b) = batches.try_recv() {
            got.push(b);
        }
        assert_eq!(got, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
    }

    /// Under load a batch waits [`LINGER`] for company: an item sent 1 ms after the one that
    /// opened the batch goes with it; after a quiet spell an item goes at once.
    #[tokio::test(start_paused = true)]
    async fn a_batch_under_load_lingers_for_company() {
        let (tx, rx) = mpsc::channel(16);
        let (batches_tx, mut batches) = mpsc::unbounded_channel::<(Vec<u32>, Instant)>();
        let limits = Limits {
            max_size: 100,
            max_bytes: usize::MAX,
            max_in_flight: 4,
            linger: LINGER,
        };
        let task = tokio::spawn(group(
            rx,
            limits,
            CancellationToken::new(),
            move |batch: Vec<Item>| {
                let ids = batch.iter().map(|i| i.id).collect();
                let _ = batches_tx.send((ids, Instant::now()));
                async move {
                    for item in batch {
                        let _ = item.reply.send("flushed");
                    }
                }
            },
        ));
        let send = |id| {
            let tx = tx.clone();
            async move {
                let (reply, _answer) = oneshot::channel();
                assert!(tx
                    .send(Item {
                        id,
                        bytes: 1,
                        reply
                    })
                    .await
                    .is_ok());
            }
        };
        let t0 = Instant::now();
        send(0).await;
        assert_eq!(
            batches.recv().await,
            Some((vec![0], t0)),
            "the first goes at once"
        );
        send(1).await;
        tokio::time::sleep(Duration::from_millis(1)).await;
        send(2).await;
        let (ids, at) = batches.recv().await.expect("a second batch");
        assert_eq!(ids, vec![1, 2], "the second lingered for the third");
        assert_eq!(at - t0, LINGER);
        tokio::time::sleep(BUSY * 2).await;
        let quiet = Instant::now();
        send(3).await;
        assert_eq!(
            batches.recv().await,
            Some((vec![3], quiet)),
            "after a quiet spell at once"
        );
        drop(tx);
        assert!(task.await.is_ok());
    }
}
