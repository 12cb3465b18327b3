//! Watching: `GET /v1/events` streams the events this node derived from the log as
//! Server-Sent Events. Every event's `id:` is its position, the same on every node, so a
//! watcher resumes on any node (`Last-Event-ID`, or `?since=`) with no gap and no duplicate.
//!
//! - Without a position the stream starts after what this node has applied.
//! - A position older than the events kept here is answered `410 Gone`, naming the oldest
//!   position a watch can resume from: list again (`/v1/services` gives the index it
//!   reflects), then watch from there.
//! - The stream is written as the connection takes it, never buffered ahead: a consumer
//!   that falls so far behind that the events it has not read are let go gets a `cut-off`
//!   event saying so, with the last position it was sent, and the stream ends.
//! - An idle stream gets a keep-alive comment every `events.keepalive`; a node shutting
//!   down ends its streams with a `cut-off` event, so watchers resume on another node.

pub mod convert;
mod filter;
mod sse;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use registry_client::events::Position;
use registry_storage::event_log::{EventLog, EventPos, FloorCause};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
pub use filter::{EventFilter, WatchQuery};

/// Most events read from the log at once for one stream.
const READ_BATCH: usize = 512;

/// Most streams a node serves at once; beyond it a watch is answered 503.
pub const MAX_WATCHERS: usize = 1024;

/// The streams a node serves, under their cap.
#[derive(Debug, Clone)]
pub struct Watchers(Arc<Semaphore>);

impl Default for Watchers {
    fn default() -> Self {
        Self(Arc::new(Semaphore::new(MAX_WATCHERS)))
    }
}

impl Watchers {
    /// A place for one more stream, or 503.
    fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.0).try_acquire_owned().map_err(|_| {
            ApiError::Overloaded(format!(
                "this node serves {MAX_WATCHERS} event streams already; watch another node"
            ))
        })
    }

    /// Streams served now.
    pub fn open(&self) -> usize {
        MAX_WATCHERS - self.0.available_permits()
    }
}

/// Where a watch starts: `Last-Event-ID` (a browser's reconnect) over `since`, else after
/// what is applied now. A position below the oldest kept is refused with `410`.
pub fn start(
    log: &EventLog,
    since: Option<&str>,
    last_event_id: Option<&str>,
) -> Result<EventPos, ApiError> {
    let pos = match last_event_id.or(since) {
        Some(p) => {
            let p: Position =
                p.trim()
                    .parse()
                    .map_err(|e: registry_client::events::BadPosition| {
                        ApiError::BadRequest(e.to_string())
                    })?;
            convert::stored(p)
        }
        None => log.applied(),
    };
    match log.after(pos, 0) {
        Ok(_) => Ok(pos),
        Err(gone) => {
            let floor = convert::position(gone.floor).to_string();
            Err(ApiError::Gone {
                message: format!(
                    "the events after {} are not held on this node ({}): the oldest position \
                     to watch from is {floor}; list the services again and watch from the \
                     list's applied_index",
                    convert::position(pos),
                    match gone.cause {
                        FloorCause::LetGo => "older events were let go",
                        FloorCause::SnapshotInstalled => "it installed a snapshot after them",
                        FloorCause::Started => "it started after them",
                    }
                ),
                floor,
            })
        }
    }
}

/// One stream's state.
struct Cursor {
    log: EventLog,
    pos: EventPos,
    filter: EventFilter,
    changes: watch::Receiver<u64>,
    keepalive: Duration,
    stop: CancellationToken,
    /// Set once the last frame (a cut-off) was sent.
    done: bool,
    /// Whether the opening comment was sent.
    opened: bool,
    _permit: OwnedSemaphorePermit,
}

/// The body of an event stream from `pos`: SSE frames, produced only as the connection takes
/// them. Ends at a cut-off (too slow, or this node stopping).
pub fn stream(
    watchers: &Watchers,
    log: EventLog,
    pos: EventPos,
    filter: EventFilter,
    keepalive: Duration,
    stop: CancellationToken,
) -> Result<impl futures::Stream<Item = Result<Bytes, std::io::Error>>, ApiError> {
    let cursor = Cursor {
        changes: log.subscribe(),
        log,
        pos,
        filter,
        keepalive,
        stop,
        done: false,
        opened: false,
        _permit: watchers.admit()?,
    };
    Ok(futures::stream::unfold(cursor, |mut c| async move {
        let frame = c.next_frame().await?;
        Some((Ok(frame), c))
    }))
}

impl Cursor {
    /// The next frame to send, once there is one; `None` ends the stream.
    async fn next_frame(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if !self.opened {
            self.opened = true;
            return Some(sse::opening(convert::position(self.pos)));
        }
        loop {
            self.changes.borrow_and_update();
            let batch = match self.log.after(self.pos, READ_BATCH) {
                Ok(b) => b,
                Err(gone) => {
                    self.done = true;
                    let reason = format!(
                        "{}: the events after {} are no longer held here (the oldest position to \
                         resume from is {}); resume on another node, or list again and watch \
                         from the list's applied_index",
                        match gone.cause {
                            FloorCause::LetGo => "consumer too slow",
                            FloorCause::SnapshotInstalled => "this node installed a snapshot",
                            FloorCause::Started => "this node restarted",
                        },
                        convert::position(self.pos),
                        convert::position(gone.floor)
                    );
                    return Some(sse::cut_off(reason, convert::position(self.pos)));
                }
            };
            if let Some(last) = batch.events.last() {
                // Each event is encoded once, by the first stream that sends it; every other
                // stream copies the same bytes.
                let frames: Vec<&[u8]> = batch
                    .events
                    .iter()
                    .filter(|e| self.filter.matches(e))
                    .map(|e| {
                        &**e.encoded
                            .get_or_init(|| sse::event_frame(&convert::event_out(e)))
                    })
                    .collect();
                let mut buf = Vec::with_capacity(frames.iter().map(|f| f.len()).sum());
                for f in frames {
                    buf.extend_from_slice(f);
                }
                self.pos = (last.index, last.seq);
                if !buf.is_empty() {
                    return Some(Bytes::from(buf));
                }
                continue;
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = tokio::time::sleep(self.keepalive) => return Some(sse::keepalive()),
                () = self.stop.cancelled() => {
                    self.done = true;
                    let reason = "this node is shutting down; resume on another node".to_string();
                    return Some(sse::cut_off(reason, convert::position(self.pos)));
                }
            }
        }
    }
}
