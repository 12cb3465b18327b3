//! The group-commit loop shared by the leader's batcher ([`crate::write::batcher`]) and a
//! follower's forwarder ([`crate::forward::forwarder`]), and the bounds of both, defined here
//! once.

use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;

/// Most heartbeats the leader puts in one log entry.
pub const ENTRY_MAX_HEARTBEATS: usize = 2000;
/// Most log entries of heartbeats the leader has being committed at once.
pub const PROPOSALS_IN_FLIGHT: usize = 4;
/// Most heartbeats a follower forwards in one request: what the leader accepts in one.
pub const FORWARD_MAX_HEARTBEATS: usize = crate::wire::MAX_BATCH;
/// Most forwarded requests on the way to the leader at once.
pub const FORWARDS_IN_FLIGHT: usize = 8;

/// What a group-commit loop needs to know of a waiting item.
pub(crate) trait Join {
    /// How much it adds to a batch (heartbeats).
    fn size(&self) -> usize;
    /// Whether it may share a batch with `first` (the batch's first item).
    fn joins(&self, _first: &Self) -> bool {
        true
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
