//! The leader's answer to a forwarded read, passed on to the client as it arrives rather
//! than read whole first: a follower's linearizable list costs the leader's time plus a
//! little, not twice the transfer.

use bytes::Bytes;
use tokio::sync::mpsc;
use warp::Reply;

/// Chunks read ahead of what the client's connection has taken.
const CHUNKS_AHEAD: usize = 8;

/// A `200 OK` answer (the caller sets status and headers) whose body is `resp`'s, read by a
/// task as the client takes it; if reading the leader's answer fails midway, the body fails
/// too, so the client sees a cut answer, never a short one.
pub fn relay(mut resp: reqwest::Response) -> warp::reply::Response {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_AHEAD);
    tokio::spawn(async move {
        loop {
            let next = match resp.chunk().await {
                Ok(Some(chunk)) => Ok(chunk),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the leader's answer failed midway");
                    Err(std::io::Error::other(format!(
                        "reading the leader's answer failed: {e}"
                    )))
                }
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    let body = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    warp::reply::stream(body).into_response()
}
