//! Heartbeats that reach a follower go to the leader in batches.
//!
//! Without this, every heartbeat a follower receives would be one more HTTP request for the
//! leader to parse, authorise and answer. Instead the follower queues the requests that wait
//! for the leader, and sends what is queued as one `POST /v1/heartbeats` carrying all their
//! heartbeats (at most [`FORWARD_MAX_HEARTBEATS`], the leader's limit per request), with up to
//! [`FORWARDS_IN_FLIGHT`] such requests on the way; the first waiting request goes at once, so a
//! lone heartbeat is not delayed. The leader answers with one record per heartbeat, in
//! order; each request gets its own slice of them, or, when the leader refused the batch,
//! the leader's answer as it is.
//!
//! Every heartbeat was validated on the follower before it was queued, so the leader cannot
//! refuse one heartbeat for another's fault.
//!
//! It stops with the node's write path (its cancellation token): requests still queued are
//! answered at once with [`RelayError::Connect`] (nothing was sent for them), and the batches
//! on the way are waited for.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use registry_storage::{NodeId, RegistryNode};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use warp::http::{Method, StatusCode};

use crate::group_commit::{group, Join, Limits, FORWARDS_IN_FLIGHT, FORWARD_MAX_HEARTBEATS};
use crate::routes::MAX_BODY_BYTES;
use crate::shedding::ShedMeter;
use crate::transport::peer::{Peer, RelayError, Relayed};

/// Requests that may wait for a batch.
const QUEUE: usize = 16 * 1024;
/// The leader's route for heartbeats.
const HEARTBEATS_PATH: &str = "/v1/heartbeats";

/// One request waiting to be forwarded.
struct Pending {
    /// The leader.
    leader: (NodeId, RegistryNode),
    /// The request's body: one heartbeat object or an array of them, already validated.
    body: Bytes,
    /// Heartbeats in it.
    count: usize,
    /// Its request id, for the log.
    request_id: Option<String>,
    reply: oneshot::Sender<Result<Relayed, RelayError>>,
}

impl Join for Pending {
    fn size(&self) -> usize {
        self.count
    }

    /// Its body and the comma that joins it to the next ([`join_bodies`]).
    fn bytes(&self) -> usize {
        self.body.len() + 1
    }

    fn joins(&self, first: &Self) -> bool {
        self.leader == first.leader
    }

    fn refuse(self) {
        let _ = self.reply.send(Err(RelayError::Connect(
            "this node is shutting down: the request was not forwarded".into(),
        )));
    }
}

/// Handle to the forwarding task. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Forwarder {
    tx: mpsc::Sender<Pending>,
}

impl Forwarder {
    /// Starts the forwarding task, sending as `peer`, a batch lingering up to `linger` under
    /// load ([`crate::group_commit::LINGER`]); it ends when `stop` is cancelled (or every
    /// handle is dropped) and the batches on the way are answered. Returns the handle and
    /// the task.
    pub fn spawn(
        peer: Peer,
        shed: Arc<ShedMeter>,
        linger: Duration,
        stop: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let limits = Limits {
            max_size: FORWARD_MAX_HEARTBEATS,
            // Joined, the bodies take their bytes and the array's brackets: at most the
            // leader's limit on a body.
            max_bytes: MAX_BODY_BYTES as usize - 1,
            max_in_flight: FORWARDS_IN_FLIGHT,
            linger,
        };
        let task = tokio::spawn(group(rx, limits, stop, move |batch| {
            send(peer.clone(), Arc::clone(&shed), batch)
        }));
        (Self { tx }, task)
    }

    /// Forwards `body` (holding `count` validated heartbeats) to the leader `to`, with
    /// whatever else is waiting for it, and returns this request's part of the answer.
    pub async fn forward(
        &self,
        to: (NodeId, &RegistryNode),
        body: Bytes,
        count: usize,
        request_id: Option<String>,
    ) -> Result<Relayed, RelayError> {
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            leader: (to.0, to.1.clone()),
            body,
            count,
            request_id,
            reply,
        };
        let stopped = || RelayError::Connect("the forwarding task stopped".into());
        self.tx.send(pending).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

/// Sends one batch and answers each of its requests.
async fn send(peer: Peer, shed: Arc<ShedMeter>, batch: Vec<Pending>) {
    let total: usize = batch.iter().map(|p| p.count).sum();
    let (leader, node) = batch[0].leader.clone();
    let addr = node.addr.clone();
    if batch.len() > 1 {
        let ids: Vec<&str> = batch
            .iter()
            .filter_map(|p| p.request_id.as_deref())
            .collect();
        tracing::debug!(requests = ?ids, heartbeats = total, leader = %addr, "forwarding as one request");
    }
    let body = join_bodies(batch.iter().map(|p| &p.body[..]));
    // The leader sets the registry clock's rate from every node's counts.
    let load = shed.take().headers();
    let answer = async {
        let resp = peer
            .send_with(
                Method::POST,
                (leader, &node),
                HEARTBEATS_PATH,
                body.into(),
                batch[0].request_id.as_deref(),
                None,
                &load,
            )
            .await?;
        Relayed::read(resp).await
    };
    let answer = match answer.await {
        Ok(a) => a,
        Err(e) => {
            for p in batch {
                let _ = p.reply.send(Err(e.clone()));
            }
            return;
        }
    };
    if answer.status != StatusCode::OK {
        for p in batch {
            let _ = p.reply.send(Ok(answer.clone()));
        }
        return;
    }
    let counts: Vec<usize> = batch.iter().map(|p| p.count).collect();
    match split_services(&answer.body, &counts) {
        Ok(parts) => {
            for (p, body) in batch.into_iter().zip(parts) {
                let _ = p.reply.send(Ok(Relayed {
                    status: answer.status,
                    headers: answer.headers.clone(),
                    body,
                }));
            }
        }
        Err(why) => {
            tracing::error!(leader = %addr, error = %why, "a forwarded batch's answer does not match it");
            for p in batch {
                let _ = p.reply.send(Err(RelayError::Unknown(why.clone())));
            }
        }
    }
}

/// One JSON array of every heartbeat in `bodies`, each of which is a heartbeat object or a
/// non-empty array of them (valid JSON, checked before they were queued); a single body is
/// sent as it came (it is within the leader's limit on a body, which it met here).
fn join_bodies<'a>(bodies: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut bodies = bodies.peekable();
    if bodies.len() == 1 {
        return bodies.next().map(<[u8]>::to_vec).unwrap_or_default();
    }
    let mut out = Vec::new();
    out.push(b'[');
    for (i, body) in bodies.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        let body = body.trim_ascii();
        match body {
            [b'[', inner @ .., b']'] => out.extend_from_slice(inner),
            _ => out.extend_from_slice(body),
        }
    }
    out.push(b']');
    out
}

/// The leader's answer to a batch: one record per heartbeat.
#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    services: Vec<&'a RawValue>,
}

/// Splits the leader's `{"services": [...]}` answer into one such body per request, the
/// request with `counts[i]` heartbeats getting the next `counts[i]` records.
fn split_services(body: &[u8], counts: &[usize]) -> Result<Vec<Bytes>, String> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| format!("leader's answer unreadable: {e}"))?;
    let total: usize = counts.iter().sum();
    if answer.services.len() != total {
        return Err(format!(
            "the leader answered {} records for {total} heartbeats",
            answer.services.len()
        ));
    }
    let mut records = answer.services.into_iter();
    let parts = counts
        .iter()
        .map(|&n| {
            let mut out = Vec::with_capacity(64 + body.len() * n / total.max(1));
            out.extend_from_slice(br#"{"services":["#);
            for (i, r) in records.by_ref().take(n).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(r.get().as_bytes());
            }
            out.extend_from_slice(b"]}");
            Bytes::from(out)
        })
        .collect();
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_join_into_one_array() {
        let joined = join_bodies(
            [
                &br#" {"host":"a","binary":"b"} "#[..],
                &b"[ {\"host\":\"c\",\"binary\":\"d\"},{\"host\":\"e\",\"binary\":\"f\"} ]\n"[..],
                &br#"{"host":"g","binary":"h"}"#[..],
            ]
            .into_iter(),
        );
        let v: serde_json::Value = serde_json::from_slice(&joined).expect("valid JSON");
        let hosts: Vec<&str> = v
            .as_array()
            .expect("an array")
            .iter()
            .filter_map(|h| h["host"].as_str())
            .collect();
        assert_eq!(hosts, ["a", "c", "e", "g"]);
    }

    /// Joined bodies take no more than their bytes plus one each, and one more: what the
    /// forwarder's byte budget counts. A single body goes as it came.
    #[test]
    fn joined_bodies_keep_to_the_budget() {
        let bodies: [&[u8]; 3] = [
            br#"{"host":"a","binary":"b"}"#,
            br#"[{"host":"c","binary":"d"}]"#,
            br#"{"host":"g","binary":"h"}"#,
        ];
        let counted: usize = bodies.iter().map(|b| b.len() + 1).sum();
        assert!(join_bodies(bodies.into_iter()).len() <= counted + 1);
        let one = br#"{"host":"a","binary":"b"}"#;
        assert_eq!(join_bodies([&one[..]].into_iter()), one.to_vec());
    }

    #[test]
    fn answers_split_in_order() {
        let body = br#"{"services":[{"id":1,"s":"x,]}"},{"id":2},{"id":3,"n":{"a":[1,2]}}]}"#;
        let parts = split_services(body, &[2, 1]).expect("splits");
        assert_eq!(
            &parts[0][..],
            br#"{"services":[{"id":1,"s":"x,]}"},{"id":2}]}"#
        );
        assert_eq!(&parts[1][..], br#"{"services":[{"id":3,"n":{"a":[1,2]}}]}"#);
        let err = split_services(body, &[2, 2]).expect_err("a count mismatch is an error");
        assert!(err.contains("3 records for 4 heartbeats"), "{err}");
    }
}
