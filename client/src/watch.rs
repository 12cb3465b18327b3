//! Watching a registry's events (`GET /v1/events`, Server-Sent Events) from any of its nodes,
//! resuming after the last position seen when a node goes away: every node derives the same
//! events at the same positions, so the stream goes on from another with no gap and no
//! duplicate. A position no node keeps any more ends the watch with a `410` error: list the
//! services again and watch from the list's `applied_index`.

use std::time::{Duration, Instant};

use crate::client::{error_message, RegistryClient};
use crate::error::ClientError;
use crate::events::{CutOff, EventKind, EventOut, Position, CUT_OFF_EVENT};

/// Which events to watch (all of them by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchFilter {
    /// Only services on this host.
    pub host: Option<String>,
    /// Only services of this binary.
    pub binary: Option<String>,
    /// Only this availability zone.
    pub zone: Option<String>,
    /// Only these kinds (none: every kind).
    pub kinds: Vec<EventKind>,
}

/// How long a watch may go without a byte from its node (nodes send a keep-alive every 15 s
/// by default) before it takes the node for gone and resumes on another.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(45);

/// A watch that resumes on the next node when one ends. Made by [`RegistryClient::watch`].
pub struct Watch {
    client: RegistryClient,
    filter: WatchFilter,
    /// The last position seen (or where the watch started).
    last: Option<Position>,
    /// The endpoint the next connection tries first.
    next: usize,
    /// The stream open now.
    stream: Option<Stream>,
    idle: Duration,
    /// How long to keep trying to reach a node before giving up.
    patience: Duration,
}

struct Stream {
    resp: reqwest::Response,
    buf: Vec<u8>,
    base: String,
}

/// What a watch saw besides events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resumed {
    /// The stream of `from` ended (`why`) and the watch went on from `position`.
    After {
        /// The node left.
        from: String,
        /// Why.
        why: String,
        /// The position resumed from.
        position: Option<Position>,
    },
}

impl RegistryClient {
    /// A watch of the events after `since` (none: after what the first node reached has
    /// applied), filtered by `filter`.
    pub fn watch(&self, since: Option<Position>, filter: WatchFilter) -> Watch {
        Watch {
            client: self.clone(),
            filter,
            last: since,
            next: 0,
            stream: None,
            idle: DEFAULT_IDLE,
            patience: Duration::from_secs(30),
        }
    }
}

impl Watch {
    /// The same watch, taking a node for gone after `idle` without a byte from it.
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle = idle;
        self
    }

    /// The same watch, giving up after `patience` without reaching any node.
    pub fn patience(mut self, patience: Duration) -> Self {
        self.patience = patience;
        self
    }

    /// The last position seen: resume from it.
    pub fn position(&self) -> Option<Position> {
        self.last
    }

    /// The next event, resuming on another node when the stream ends; `on_resume` is told
    /// each time it does. Fails when no node is reached for the watch's patience, or when a
    /// node answers an error (a `410` among them: the position is no longer kept).
    pub async fn next_with(
        &mut self,
        mut on_resume: impl FnMut(Resumed),
    ) -> Result<EventOut, ClientError> {
        loop {
            if self.stream.is_none() {
                self.stream = Some(self.connect().await?);
            }
            match self.read_frame().await {
                Ok(Frame::Event(e)) => {
                    self.last = Some(e.position);
                    return Ok(e);
                }
                Ok(Frame::Opening(p)) => {
                    if self.last.is_none() {
                        self.last = Some(p);
                    }
                }
                Ok(Frame::Other) => {}
                Ok(Frame::Ended(why)) | Err(why) => {
                    let from = self.stream.take().map(|s| s.base).unwrap_or_default();
                    self.next += 1;
                    on_resume(Resumed::After {
                        from,
                        why,
                        position: self.last,
                    });
                }
            }
        }
    }

    /// [`Watch::next_with`], not told of resumes.
    pub async fn next(&mut self) -> Result<EventOut, ClientError> {
        self.next_with(|_| {}).await
    }

    /// Opens a stream on the first node that answers, from the endpoint after the last one.
    async fn connect(&mut self) -> Result<Stream, ClientError> {
        let endpoints = self.client.endpoints().to_vec();
        if endpoints.is_empty() {
            return Err(ClientError::Invalid("no endpoint configured".into()));
        }
        let deadline = Instant::now() + self.patience;
        let mut last = String::new();
        loop {
            for _ in 0..endpoints.len() {
                let base = &endpoints[self.next % endpoints.len()];
                match self.open(base).await {
                    Ok(resp) => {
                        return Ok(Stream {
                            resp,
                            buf: Vec::new(),
                            base: base.clone(),
                        })
                    }
                    Err(e @ ClientError::Api { .. }) => return Err(e),
                    Err(e) => last = e.to_string(),
                }
                self.next += 1;
            }
            if Instant::now() >= deadline {
                return Err(ClientError::Unreachable {
                    tried: endpoints.len(),
                    last,
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn open(&self, base: &str) -> Result<reqwest::Response, ClientError> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(p) = self.last {
            q.push(("since", p.to_string()));
        }
        for (name, v) in [
            ("host", &self.filter.host),
            ("binary", &self.filter.binary),
            ("zone", &self.filter.zone),
        ] {
            if let Some(v) = v {
                q.push((name, v.clone()));
            }
        }
        if !self.filter.kinds.is_empty() {
            let kinds: Vec<&str> = self.filter.kinds.iter().map(|k| k.name()).collect();
            q.push(("kinds", kinds.join(",")));
        }
        let resp = self
            .client
            .request(reqwest::Method::GET, &format!("{base}/v1/events"))
            .query(&q)
            // The stream lasts as long as the watch: only the idle bound applies to it.
            .timeout(Duration::from_secs(365 * 24 * 3600))
            .send()
            .await
            .map_err(|e| ClientError::Unknown(format!("{base}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let bytes = resp.bytes().await.unwrap_or_default();
        let message = error_message(&bytes);
        if status.is_server_error() {
            return Err(ClientError::Unknown(format!(
                "{base}: HTTP {status}: {message}"
            )));
        }
        Err(ClientError::Api {
            status: status.as_u16(),
            message,
        })
    }

    /// The next whole frame of the open stream; `Err` with why when the stream broke.
    async fn read_frame(&mut self) -> Result<Frame, String> {
        let idle = self.idle;
        let Some(s) = self.stream.as_mut() else {
            return Err("no stream".into());
        };
        loop {
            if let Some(end) = find_blank_line(&s.buf) {
                let block: Vec<u8> = s.buf.drain(..end.1).collect();
                return Ok(parse_block(&block[..end.0]));
            }
            match tokio::time::timeout(idle, s.resp.chunk()).await {
                Err(_) => return Err(format!("nothing received for {idle:?}")),
                Ok(Err(e)) => return Err(format!("the stream broke: {e}")),
                Ok(Ok(None)) => return Err("the node ended the stream".to_string()),
                Ok(Ok(Some(chunk))) => s.buf.extend_from_slice(&chunk),
            }
        }
    }
}

/// One SSE frame.
enum Frame {
    Event(EventOut),
    /// The opening comment, naming where the stream starts.
    Opening(Position),
    /// The node ended the stream, saying why.
    Ended(String),
    /// A keep-alive, or anything else.
    Other,
}

/// The end of the first frame in `buf`: (where its text ends, where the next frame starts).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    buf.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2))
}

fn parse_block(block: &[u8]) -> Frame {
    let text = String::from_utf8_lossy(block);
    let (mut event, mut data) = (None, String::new());
    let mut opening = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(": events after ") {
            opening = rest.trim().parse::<Position>().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            event = Some(v.trim().to_string());
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    match event.as_deref() {
        Some(CUT_OFF_EVENT) => Frame::Ended(
            serde_json::from_str::<CutOff>(&data)
                .map(|c| c.reason)
                .unwrap_or(data),
        ),
        Some(_) => match serde_json::from_str::<EventOut>(&data) {
            Ok(e) => Frame::Event(e),
            Err(e) => Frame::Ended(format!("an event that does not parse: {e}")),
        },
        None => opening.map_or(Frame::Other, Frame::Opening),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse() {
        let e = r#"{"position":"5-1","kind":"down","host":"h","binary":"b","zone":"z","state":"down","status":"enabled","registry_time":"2026-12-01T00:00:00Z"}"#;
        let block = format!("id: 5-1\nevent: down\ndata: {e}");
        assert!(
            matches!(parse_block(block.as_bytes()), Frame::Event(ev) if ev.position == Position { index: 5, seq: 1 })
        );
        assert!(matches!(
            parse_block(b"retry: 1000\n: events after 12"),
            Frame::Opening(p) if p == Position::end_of(12)
        ));
        assert!(matches!(parse_block(b": keep-alive"), Frame::Other));
        let cut = br#"event: cut-off
data: {"reason":"slow","position":"3"}"#;
        assert!(matches!(parse_block(cut), Frame::Ended(r) if r == "slow"));
        assert_eq!(find_blank_line(b"a\n\nb"), Some((1, 3)));
    }
}
