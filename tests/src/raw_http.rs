//! HTTP/1.1 requests written by hand on a TCP stream, for what an HTTP client cannot send
//! deterministically.
//!
//! A request whose declared body is over a route's limit is refused with a 413 from its
//! `Content-Length` alone, before the server reads the body, and the server then closes the
//! connection. A client that sends the whole body races that close: once the server closes
//! with unread bytes in its receive buffer, the kernel answers the client with a reset, and
//! the client, still writing, fails with "broken pipe" or "connection reset" before it has
//! read the 413. [`head_only`] declares the length but sends only the head, so the server's
//! buffer is empty when it closes and the answer is always read.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long a raw exchange may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An answer read off the wire.
#[derive(Debug)]
pub struct RawAnswer {
    /// The status code.
    pub status: u16,
    /// The header fields, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes, or up to the end of the stream without one).
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `method path` to `addr` with the `headers` given and `Content-Length: declared`,
/// but no body, and reads the answer. Meant for a request refused on its declared length:
/// one that waits for the body times out with an error saying so.
pub async fn head_only(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    declared: u64,
) -> anyhow::Result<RawAnswer> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {declared}\r\n\r\n"));
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(head.as_bytes()).await?;
        read_answer(&mut stream).await
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .with_context(|| {
            format!(
                "{method} {path} declaring {declared} body bytes got no answer within \
                 {TIMEOUT:?} (is the server waiting for the body?)"
            )
        })?
}

/// Reads one HTTP/1.1 answer: its head, then `Content-Length` bytes of body (or everything
/// up to the end of the stream when there is no `Content-Length`).
async fn read_answer(stream: &mut TcpStream) -> anyhow::Result<RawAnswer> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(
            n > 0,
            "the server closed the connection before a whole answer head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut body = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse::<usize>())
        .transpose()
        .context("the answer's content-length is not a number")?;
    match length {
        Some(len) => {
            while body.len() < len {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await?;
                anyhow::ensure!(
                    n > 0,
                    "the server closed the connection after {} of {len} body bytes",
                    body.len()
                );
                body.extend_from_slice(&chunk[..n]);
            }
            body.truncate(len);
        }
        None => {
            stream.read_to_end(&mut body).await?;
        }
    }
    Ok(RawAnswer {
        status,
        headers,
        body,
    })
}
