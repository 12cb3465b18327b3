//! The event stream's edges, on an in-process cluster: keep-alives on an idle stream,
//! filters and bad queries, a consumer too slow for the events kept cut off with the reason,
//! and every stream ended with a reason when its node shuts down (without holding the
//! shutdown for the grace).

use std::time::{Duration, Instant};

use registry_api::wire::HeartbeatIn;
use registry_client::events::{EventKind, Position};
use registry_client::watch::WatchFilter;
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Opens `GET path` on `addr` over a raw connection (its receive buffer `recv_buffer` bytes
/// when given), having sent the request.
async fn open(
    addr: std::net::SocketAddr,
    path: &str,
    recv_buffer: Option<u32>,
) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(n) = recv_buffer {
        socket.set_recv_buffer_size(n)?;
    }
    let mut s = socket.connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    Ok(s)
}

/// Reads from `s` until `done` holds for all read so far (lossy UTF-8), or the stream ends,
/// or `timeout` passes; answers what was read.
async fn read_until(
    s: &mut TcpStream,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = Instant::now() + timeout;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let text = String::from_utf8_lossy(&all).into_owned();
        if done(&text) {
            return Ok(text);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => anyhow::bail!("timed out after {timeout:?}; read: {}", tail(&text)),
            Ok(Ok(0)) => return Ok(text),
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => anyhow::bail!("read failed: {e}; read: {}", tail(&text)),
        }
    }
}

fn tail(text: &str) -> String {
    let start = text.len().saturating_sub(600);
    text.get(start..).unwrap_or(text).to_string()
}

/// An idle stream gets keep-alive comments; `?kinds=` and `?host=` filter; a bad kind or
/// position is a 400 with a JSON body saying what is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_streams_keep_alive_and_filters_filter() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec {
        events_keepalive: Duration::from_millis(200),
        ..ClusterSpec::default()
    })
    .await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let addr = c.configs[0].listen;
    let mut idle = open(addr, "/v1/events", None).await?;
    let head = read_until(&mut idle, Duration::from_secs(10), |t| {
        t.matches(": keep-alive").count() >= 2
    })
    .await?;
    assert!(head.starts_with("HTTP/1.1 200"), "{}", tail(&head));
    assert!(
        head.contains("content-type: text/event-stream"),
        "{}",
        tail(&head)
    );

    let client = c.client_of(0);
    let filter = WatchFilter {
        host: Some("b".into()),
        kinds: vec![EventKind::Disabled],
        ..WatchFilter::default()
    };
    let mut watch = client.watch(Some(Position::end_of(0)), filter);
    // Writes refused with a 503 (a leader change while the other tests load the box) are
    // sent again, as a reporter would.
    let beats = [
        HeartbeatIn::new("a", "cinder-volume"),
        HeartbeatIn::new("b", "cinder-volume"),
    ];
    registry_tests::wait::until(
        "the heartbeats accepted",
        Duration::from_secs(20),
        || async { client.heartbeat(&beats).await.ok() },
    )
    .await?;
    for host in ["a", "b"] {
        registry_tests::wait::until("the disable accepted", Duration::from_secs(20), || async {
            client
                .action(
                    registry_api::wire::ServiceAction::Disable,
                    host,
                    Some("cinder-volume"),
                    None,
                )
                .await
                .ok()
        })
        .await?;
    }
    let e = tokio::time::timeout(Duration::from_secs(10), watch.next()).await??;
    assert_eq!(
        (e.kind, e.host.as_deref()),
        (EventKind::Disabled, Some("b")),
        "{e:?}"
    );

    for (query, what) in [
        ("kinds=down,sideways", "sideways"),
        ("since=12-x", "12-x"),
        ("colour=red", "colour"),
    ] {
        let resp = reqwest::get(format!("http://{addr}/v1/events?{query}")).await?;
        assert_eq!(resp.status(), 400, "{query}");
        let body: serde_json::Value = resp.json().await?;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(what), "{query}: {message}");
    }
    c.shutdown().await?;
    Ok(())
}

/// A consumer that reads its first events and then nothing while many more events than are
/// kept happen falls behind what the node holds: when it reads again it gets what its
/// connection had taken, then a `cut-off` event saying it was too slow, and the stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consumer_too_slow_is_cut_off_with_the_reason() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec {
        events_kept: 2000,
        ..ClusterSpec::default()
    })
    .await?;
    c.wait_for_leader(Duration::from_secs(10)).await?;
    let addr = c.configs[0].listen;
    let mut slow = open(addr, "/v1/events?since=0", Some(4096)).await?;
    let client = c.client_of(0);
    let first: Vec<HeartbeatIn> = (0..10)
        .map(|i| HeartbeatIn::new(format!("first-{i}"), "cinder-volume"))
        .collect();
    client.heartbeat(&first).await?;
    read_until(&mut slow, Duration::from_secs(10), |t| {
        t.matches("\nevent: created").count() == 10
    })
    .await?;
    // It stops reading while 20,000 `created` events of long host names (about 8 MB of
    // frames) happen, 500 to an entry: far past the 2,000 kept and what the socket buffers
    // take (4 MiB at most here).
    let long = "h".repeat(200);
    for batch in 0..40 {
        let beats: Vec<HeartbeatIn> = (0..500)
            .map(|i| HeartbeatIn::new(format!("{long}-{batch}-{i}"), "cinder-volume"))
            .collect();
        // A batch refused with a 503 (a leader change under this load) is sent again.
        registry_tests::wait::until("the batch accepted", Duration::from_secs(20), || async {
            client.heartbeat(&beats).await.ok()
        })
        .await?;
    }
    let text = read_until(&mut slow, Duration::from_secs(30), |t| {
        t.contains("event: cut-off")
    })
    .await?;
    assert!(text.contains("consumer too slow"), "{}", tail(&text));
    let frames = text.matches("\nevent: created").count();
    assert!(
        frames > 0 && frames < 20_000,
        "it read what its connection had taken, then was cut off ({frames} read)"
    );
    println!(
        "checked: cut off after {frames} of 20000 events: {}",
        tail(&text)
            .lines()
            .rev()
            .find(|l| l.starts_with("data:"))
            .unwrap_or("")
    );
    c.shutdown().await?;
    Ok(())
}

/// A node shutting down ends its open streams with a `cut-off` naming the reason, and its
/// shutdown does not wait for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_shutting_down_ends_its_streams_with_the_reason() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (leader + 1) % 3;
    let addr = c.configs[follower].listen;
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut s = open(addr, "/v1/events", None).await?;
        read_until(&mut s, Duration::from_secs(10), |t| {
            t.contains(": events after")
        })
        .await?;
        streams.push(s);
    }
    let started = Instant::now();
    c.stop_node(follower).await?;
    let took = started.elapsed();
    assert!(
        took < registry_node::SHUTDOWN_GRACE,
        "the shutdown waited {took:?} for the streams (the grace is {:?})",
        registry_node::SHUTDOWN_GRACE
    );
    for mut s in streams {
        let text = read_until(&mut s, Duration::from_secs(10), |t| {
            t.contains("shutting down")
        })
        .await?;
        assert!(text.contains("event: cut-off"), "{}", tail(&text));
    }
    println!("checked: 3 streams ended with a cut-off; the node stopped in {took:?}");
    c.shutdown().await?;
    Ok(())
}
