//! Server-Sent Events frames (the `text/event-stream` format of the HTML standard).

use bytes::Bytes;
use registry_client::events::{CutOff, EventOut, Position, CUT_OFF_EVENT};

/// How long a browser's `EventSource` waits before reconnecting, in milliseconds.
const RETRY_MS: u32 = 1000;

/// The first frame: the reconnect delay, and a comment saying where the stream starts.
pub fn opening(after: Position) -> Bytes {
    Bytes::from(format!("retry: {RETRY_MS}\n: events after {after}\n\n"))
}

/// An idle stream's keep-alive comment.
pub fn keepalive() -> Bytes {
    Bytes::from_static(b": keep-alive\n\n")
}

/// One event's frame: `id:` its position, `event:` its kind, `data:` its JSON (one line:
/// JSON strings escape every line break).
pub fn event_frame(e: &EventOut) -> Box<[u8]> {
    let mut buf = Vec::with_capacity(384);
    push_event(&mut buf, e);
    buf.into_boxed_slice()
}

fn push_event(buf: &mut Vec<u8>, e: &EventOut) {
    buf.extend_from_slice(b"id: ");
    buf.extend_from_slice(e.position.to_string().as_bytes());
    buf.extend_from_slice(b"\nevent: ");
    buf.extend_from_slice(e.kind.name().as_bytes());
    buf.extend_from_slice(b"\ndata: ");
    if serde_json::to_writer(&mut *buf, e).is_err() {
        buf.extend_from_slice(b"{}");
    }
    buf.extend_from_slice(b"\n\n");
}

/// The last frame of a stream the node ends.
pub fn cut_off(reason: String, position: Position) -> Bytes {
    let data =
        serde_json::to_string(&CutOff { reason, position }).unwrap_or_else(|_| "{}".to_string());
    Bytes::from(format!("event: {CUT_OFF_EVENT}\ndata: {data}\n\n"))
}
