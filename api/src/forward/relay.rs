//! The leader's answer to a forwarded read, passed on to the client as it arrives rather
//! than read whole first: a follower's linearizable list costs the leader's time plus a
//! little, not twice the transfer.
//!
//! A task reads the leader's answer a few chunks ahead of the client. It is one of the
//! node's request tasks ([`RequestTasks`]), and it ends with the answer it relays: when the
//! body is dropped (the client left, or the server closed the connection at shutdown), the
//! task is aborted, whatever it waits for, a leader that has stopped sending included.

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::task::AbortOnDropHandle;
use warp::Reply;

use crate::shared::RequestTasks;

/// Chunks read ahead of what the client's connection has taken.
const CHUNKS_AHEAD: usize = 8;

/// A `200 OK` answer (the caller sets status and headers) whose body is `resp`'s, read by a
/// task of `tasks` as the client takes it, which ends when the body is dropped; if reading
/// the leader's answer fails midway, the body fails too, so the client sees a cut answer,
/// never a short one.
pub fn relay(mut resp: reqwest::Response, tasks: &RequestTasks) -> warp::reply::Response {
    let (tx, mut rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(CHUNKS_AHEAD);
    let reader = AbortOnDropHandle::new(tasks.spawn(async move {
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
    }));
    let body = futures::stream::poll_fn(move |cx| {
        // The body owns the reader: dropping the body aborts it.
        let _reader = &reader;
        rx.poll_recv(cx)
    });
    warp::reply::stream(body).into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;
    use warp::hyper::body::Body as _;

    use super::*;

    /// How long a step of the test may take.
    const WAIT: Duration = Duration::from_secs(10);

    /// A relay whose leader sends the head of its answer and one chunk, then nothing more
    /// (without closing), runs while the client holds the body, and ends as soon as the body
    /// is dropped: it does not wait for the leader.
    #[tokio::test]
    async fn the_reader_ends_with_the_body_when_the_leader_stalls() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (hold_tx, hold) = tokio::sync::oneshot::channel::<()>();
        let leader = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await?;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = stream.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "the request head arrived");
                head.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
                .await?;
            // Stalls, the connection open, until the test ends.
            let _ = hold.await;
            anyhow::Ok(())
        });
        let resp = reqwest::get(format!("http://{addr}/v1/services")).await?;
        let tasks = RequestTasks::new(CancellationToken::new());
        let tracker = tasks.tracker();
        let out = relay(resp, &tasks);

        let mut body = out.into_body();
        let frame = tokio::time::timeout(
            WAIT,
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)),
        )
        .await?;
        let data = frame
            .and_then(|f| f.ok())
            .and_then(|f| f.into_data().ok())
            .unwrap_or_default();
        assert_eq!(&data[..], b"first", "the first chunk was relayed");
        assert_eq!(tracker.len(), 1, "the reader waits for the stalled leader");

        drop(body);
        tracker.close();
        let ended = tokio::time::timeout(WAIT, tracker.wait()).await;
        assert!(
            ended.is_ok(),
            "the reader ended with the body, the leader still stalled ({} left)",
            tracker.len()
        );
        let _ = hold_tx.send(());
        leader.await??;
        Ok(())
    }
}
