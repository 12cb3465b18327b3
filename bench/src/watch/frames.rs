//! A light reader of `text/event-stream` bytes: it counts frames (blank-line terminated)
//! instead of decoding them, and looks inside an event only where a new batch of the event
//! maker may start, to note when that batch arrived.

use std::time::Instant;

/// What a stream's frames said so far.
#[derive(Debug)]
pub struct Frames {
    /// Bytes of an incomplete frame, kept for the next chunk.
    carry: Vec<u8>,
    /// `{prefix}-h` of the event maker's hosts: the marks are taken from their events.
    host_prefix: String,
    /// Services per event-making request (a request's services are numbered
    /// `k × batch .. (k + 1) × batch`).
    batch: usize,
    /// Log index of the last event.
    last_index: Option<u64>,
    /// The event maker's batch of the last mark.
    last_mark: Option<usize>,
    /// Event frames (`id:` first).
    pub events: u64,
    /// Of them, `event: created`.
    pub created: u64,
    /// Comment frames: the opening, keep-alives.
    pub comments: u64,
    /// The data of a `cut-off` frame, once one came.
    pub cut_off: Option<String>,
    /// When the first event of each of the event maker's batches arrived: (batch, time).
    pub marks: Vec<(usize, Instant)>,
}

impl Frames {
    /// A reader that marks the batches of `batch` services named with `host_prefix`
    /// (the event maker's workload prefix followed by `-h`).
    pub fn new(host_prefix: String, batch: usize) -> Self {
        Self {
            carry: Vec::new(),
            host_prefix,
            batch: batch.max(1),
            last_index: None,
            last_mark: None,
            events: 0,
            created: 0,
            comments: 0,
            cut_off: None,
            marks: Vec::new(),
        }
    }

    /// Reads `chunk`, which arrived at `now`; answers the number of events it completed.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) -> u64 {
        let before = self.events;
        if self.carry.is_empty() {
            let used = self.scan(chunk, now);
            self.carry.extend_from_slice(&chunk[used..]);
        } else {
            let mut buf = std::mem::take(&mut self.carry);
            buf.extend_from_slice(chunk);
            let used = self.scan(&buf, now);
            buf.drain(..used);
            self.carry = buf;
        }
        self.events - before
    }

    /// Reads every complete frame of `data`; answers how many bytes they took.
    fn scan(&mut self, data: &[u8], now: Instant) -> usize {
        let mut start = 0;
        let mut from = 0;
        while let Some(nl) = data[from..].iter().position(|&b| b == b'\n') {
            let at = from + nl;
            match data.get(at + 1) {
                Some(b'\n') => {
                    self.frame(&data[start..at], now);
                    start = at + 2;
                    from = start;
                }
                Some(_) => from = at + 1,
                None => break,
            }
        }
        start
    }

    /// One frame, without its terminating blank line.
    fn frame(&mut self, f: &[u8], now: Instant) {
        let Some(rest) = f.strip_prefix(b"id: ") else {
            if let Some(data) = f.strip_prefix(b"event: cut-off\ndata: ") {
                self.cut_off = Some(String::from_utf8_lossy(data).into_owned());
            } else {
                self.comments += 1;
            }
            return;
        };
        self.events += 1;
        let line_end = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let (index, seq) = position(&rest[..line_end]);
        let after = &rest[line_end..];
        if after.starts_with(b"\nevent: created\n") {
            self.created += 1;
        }
        // A new batch of the event maker starts at a new entry, or at a multiple of its size
        // within an entry that holds several of its requests.
        let new_entry = index != self.last_index;
        self.last_index = index;
        if new_entry || seq.is_some_and(|s| s % self.batch as u64 == 0) {
            if let Some(b) = self.batch_of(after) {
                if self.last_mark != Some(b) {
                    self.last_mark = Some(b);
                    self.marks.push((b, now));
                }
            }
        }
    }

    /// The event maker's batch of the service an event's data names, if it is one of its.
    fn batch_of(&self, after_id: &[u8]) -> Option<usize> {
        const KEY: &[u8] = b"\"host\":\"";
        let at = after_id.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
        let host = &after_id[at..];
        let host = &host[..host.iter().position(|&b| b == b'"')?];
        let number = host.strip_prefix(self.host_prefix.as_bytes())?;
        let n: usize = std::str::from_utf8(number).ok()?.parse().ok()?;
        Some(n * crate::workload::PER_HOST / self.batch)
    }
}

/// `INDEX` and `SEQ` of an `id:` value `INDEX-SEQ` (`None` where not decimal).
fn position(id: &[u8]) -> (Option<u64>, Option<u64>) {
    let num = |b: &[u8]| std::str::from_utf8(b).ok()?.trim().parse::<u64>().ok();
    match id.iter().position(|&b| b == b'-') {
        Some(dash) => (num(&id[..dash]), num(&id[dash + 1..])),
        None => (num(id), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(index: u64, seq: u64, kind: &str, host: &str) -> String {
        format!(
            "id: {index}-{seq}\nevent: {kind}\ndata: {{\"position\":\"{index}-{seq}\",\"kind\":\"{kind}\",\"host\":\"{host}\",\"binary\":\"cinder-volume\"}}\n\n"
        )
    }

    /// Frames split at every byte are counted as when whole, and a batch is marked once.
    #[test]
    fn counts_frames_across_chunk_boundaries() {
        let mut text = String::from("retry: 1000\n: events after 7\n\n");
        // Batch 0 (services 0..8, hosts 0 and 1) in entry 8, batch 1 (hosts 2, 3) in entry 9.
        for (seq, h) in [(0, 0), (1, 0), (2, 1)] {
            text.push_str(&event(8, seq, "created", &format!("ev-h{h:07}")));
        }
        text.push_str(": keep-alive\n\n");
        text.push_str(&event(9, 0, "created", "ev-h0000002"));
        text.push_str(&event(9, 1, "down", "other-h0000001"));
        text.push_str("event: cut-off\ndata: {\"reason\":\"slow\"}\n\n");
        let now = Instant::now();

        let mut whole = Frames::new("ev-h".into(), 8);
        assert_eq!(whole.feed(text.as_bytes(), now), 5);
        let mut split = Frames::new("ev-h".into(), 8);
        let counted: u64 = text.as_bytes().chunks(1).map(|c| split.feed(c, now)).sum();
        for f in [&whole, &split] {
            assert_eq!((f.events, f.created, f.comments), (5, 4, 2));
            assert_eq!(f.marks.iter().map(|m| m.0).collect::<Vec<_>>(), [0, 1]);
            assert_eq!(f.cut_off.as_deref(), Some("{\"reason\":\"slow\"}"));
        }
        assert_eq!(counted, 5);
    }

    /// Two requests' services in one entry: the second is marked where its services start.
    #[test]
    fn marks_a_batch_starting_inside_an_entry() {
        let mut f = Frames::new("ev-h".into(), 4);
        let mut text = String::new();
        for seq in 0..8 {
            text.push_str(&event(
                5,
                seq,
                "created",
                &format!("ev-h{:07}", 10 + seq / 4),
            ));
        }
        f.feed(text.as_bytes(), Instant::now());
        assert_eq!(f.marks.iter().map(|m| m.0).collect::<Vec<_>>(), [10, 11]);
    }
}
