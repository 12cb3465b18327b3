//! The `{"services":[...]}` answer of the lists, written row by row. A short list is written
//! at once into one buffer; a long one is written on a blocking thread in chunks that are
//! sent while the next ones are written, so that the async runtime keeps serving (heartbeats,
//! Raft RPCs), the connection starts sending at once, and no buffer of the whole answer
//! (46 MiB for 100k services) is ever allocated.

use std::task::Poll;

use bytes::Bytes;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use warp::http::header::CONTENT_TYPE;
use warp::http::HeaderValue;
use warp::Reply;

/// Lists of more rows than this are streamed from a blocking thread (a row is about
/// 0.5 KiB and half a microsecond).
pub const INLINE_ROWS: usize = 256;
/// Size from which a chunk of a streamed list is sent.
pub const CHUNK_BYTES: usize = 256 * 1024;
/// Chunks written ahead of what the connection has taken.
const CHUNKS_AHEAD: usize = 4;

const OPEN: &[u8] = b"{\"services\":[";
const CLOSE: &[u8] = b"]}";

/// `{"services":[` then `row` of each item, comma-separated, then `]}`, in one buffer.
pub fn write_list<T>(items: &[T], row: impl FnMut(&mut Vec<u8>, &T)) -> Vec<u8> {
    write_list_closed(items, row, CLOSE)
}

/// The end of a list that says the index it reflects: `],"applied_index":N}`.
pub fn close_at(applied: Option<u64>) -> Vec<u8> {
    match applied {
        Some(i) => format!("],\"applied_index\":{i}}}").into_bytes(),
        None => CLOSE.to_vec(),
    }
}

/// [`write_list`] ended by `close` (`]}` or [`close_at`]).
fn write_list_closed<T>(
    items: &[T],
    mut row: impl FnMut(&mut Vec<u8>, &T),
    close: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(1024);
    buf.extend_from_slice(OPEN);
    let mut rest = items.iter();
    if let Some(first) = rest.next() {
        row(&mut buf, first);
        // Room for every row at a quarter more than the first one's size (rows differ by
        // their strings).
        let per_row = buf.len() - OPEN.len() + 1;
        let estimate = per_row.saturating_mul(items.len()).saturating_mul(5) / 4;
        buf.reserve(estimate.saturating_add(close.len()));
        for item in rest {
            buf.push(b',');
            row(&mut buf, item);
        }
    }
    buf.extend_from_slice(close);
    buf
}

/// The bytes of [`write_list`], handed to `send` in chunks of at least `chunk_bytes` (the last
/// one, flagged, may be shorter). Stops early when `send` returns false (the client left).
pub fn write_chunks<T>(
    items: &[T],
    mut row: impl FnMut(&mut Vec<u8>, &T),
    chunk_bytes: usize,
    close: &[u8],
    mut send: impl FnMut(Vec<u8>, bool) -> bool,
) {
    let capacity = chunk_bytes + chunk_bytes / 4;
    let mut buf = Vec::with_capacity(capacity);
    buf.extend_from_slice(OPEN);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        row(&mut buf, item);
        if buf.len() >= chunk_bytes {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(capacity));
            if !send(full, false) {
                return;
            }
        }
    }
    buf.extend_from_slice(close);
    send(buf, true);
}

/// A `200 OK` JSON answer listing `items`, each written by `row`: at once when there are at
/// most [`INLINE_ROWS`], else streamed from a blocking thread, which keeps `permit` (the
/// request's admission, see [`crate::server`]) until it has written the last chunk.
pub fn list_response<T, F>(
    items: Vec<T>,
    row: F,
    permit: Option<OwnedSemaphorePermit>,
) -> warp::reply::Response
where
    T: Send + 'static,
    F: FnMut(&mut Vec<u8>, &T) + Send + 'static,
{
    list_response_closed(items, row, permit, CLOSE.to_vec())
}

/// [`list_response`] ended by `close` (see [`close_at`]).
pub fn list_response_closed<T, F>(
    items: Vec<T>,
    row: F,
    permit: Option<OwnedSemaphorePermit>,
    close: Vec<u8>,
) -> warp::reply::Response
where
    T: Send + 'static,
    F: FnMut(&mut Vec<u8>, &T) + Send + 'static,
{
    if items.len() <= INLINE_ROWS {
        return json_response(write_list_closed(&items, row, &close));
    }
    let (tx, mut rx) = mpsc::channel::<(Bytes, bool)>(CHUNKS_AHEAD);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        write_chunks(&items, row, CHUNK_BYTES, &close, |chunk, last| {
            tx.blocking_send((Bytes::from(chunk), last)).is_ok()
        });
    });
    // Ends after the last chunk; if the writer stopped before it, fails, so that the
    // connection is cut rather than a truncated list passed off as complete.
    let mut ended = false;
    let body = futures::stream::poll_fn(move |cx| {
        if ended {
            return Poll::Ready(None);
        }
        match rx.poll_recv(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some((chunk, last))) => {
                ended = last;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                ended = true;
                tracing::error!("the service list writer stopped before the end");
                Poll::Ready(Some(Err(std::io::Error::other(
                    "the service list writer stopped before the end",
                ))))
            }
        }
    });
    let mut resp = warp::reply::stream(body).into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// A `200 OK` answer with a JSON body already written (the headers of `warp::reply::json`).
pub fn json_response(body: Vec<u8>) -> warp::reply::Response {
    let mut resp = body.into_response();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A list ended by `close_at` is `ServicesOut` with its applied index, written at once or
    /// in chunks.
    #[test]
    fn a_closed_list_says_its_applied_index() {
        let empty = write_list_closed::<()>(&[], |_, _| {}, &close_at(Some(42)));
        let out: registry_client::wire::ServicesOut =
            serde_json::from_slice(&empty).unwrap_or_else(|e| panic!("parses: {e}"));
        assert_eq!(out.applied_index, Some(42));
        assert!(out.services.is_empty());
        let mut chunks = Vec::new();
        write_chunks::<()>(
            &[],
            |_, _| {},
            8,
            &close_at(Some(7)),
            |c, _| {
                chunks.extend(c);
                true
            },
        );
        let out: registry_client::wire::ServicesOut =
            serde_json::from_slice(&chunks).unwrap_or_else(|e| panic!("parses: {e}"));
        assert_eq!(out.applied_index, Some(7));
        assert_eq!(close_at(None), CLOSE, "no index: the plain end");
    }

    fn row(buf: &mut Vec<u8>, i: &usize) {
        buf.extend_from_slice(
            format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(i % 7)).as_bytes(),
        );
    }

    /// The chunks, joined, are the whole list, whatever the chunk size; only the last chunk
    /// is flagged, and a send refused stops the writer.
    #[test]
    fn chunks_join_into_the_whole_list() {
        for n in [0, 1, 2, 10, 1000] {
            let items: Vec<usize> = (0..n).collect();
            let whole = write_list(&items, row);
            for chunk_bytes in [1, 7, 100, 4096, 1 << 20] {
                let mut joined = Vec::new();
                let mut flags = Vec::new();
                write_chunks(&items, row, chunk_bytes, CLOSE, |c, last| {
                    joined.extend_from_slice(&c);
                    flags.push(last);
                    true
                });
                assert_eq!(joined, whole, "{n} items, chunks of {chunk_bytes}");
                assert_eq!(flags.iter().filter(|l| **l).count(), 1);
                assert_eq!(flags.last(), Some(&true));
            }
        }
        let items: Vec<usize> = (0..100).collect();
        let mut sent = 0;
        write_chunks(&items, row, 10, CLOSE, |_, _| {
            sent += 1;
            false
        });
        assert_eq!(sent, 1, "the writer stops when the client left");
    }

    /// A streamed answer carries exactly the bytes of the whole list.
    #[tokio::test]
    async fn a_streamed_answer_is_the_whole_list() {
        use warp::hyper::body::Body as _;
        let items: Vec<usize> = (0..(INLINE_ROWS * 300)).collect();
        let whole = write_list(&items, row);
        assert!(whole.len() > 3 * CHUNK_BYTES, "several chunks");
        let resp = list_response(items, row, None);
        assert_eq!(
            resp.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let mut body = resp.into_body();
        let mut got = Vec::new();
        while let Some(frame) =
            std::future::poll_fn(|cx| std::pin::Pin::new(&mut body).poll_frame(cx)).await
        {
            let frame = frame.unwrap_or_else(|e| panic!("body failed: {e}"));
            if let Ok(data) = frame.into_data() {
                got.extend_from_slice(&data);
            }
        }
        assert_eq!(got, whole);
    }
}
