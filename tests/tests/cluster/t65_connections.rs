//! Connection hygiene: clients that open connections and never finish a request neither
//! stop a node from serving others nor stay open past the header timeout, and a node keeps
//! at most `max_connections` open, closing and counting the rest at once.

use std::time::{Duration, Instant};

use registry_api::wire::HeartbeatIn;
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use registry_tests::wait::until;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::t60_observability::scrape;

const WAIT: Duration = Duration::from_secs(10);

/// Raises this process's soft limit on open files to `needed` (the flood holds both ends of
/// every connection), or fails saying the hard limit is too low.
fn allow_open_files(needed: u64) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    anyhow::ensure!(
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0,
        "getrlimit: {}",
        std::io::Error::last_os_error()
    );
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    anyhow::ensure!(
        limit.rlim_max >= needed,
        "this test holds {needed} files open; the hard limit is {} (raise it: ulimit -Hn)",
        limit.rlim_max
    );
    limit.rlim_cur = needed;
    // SAFETY: as above.
    anyhow::ensure!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } == 0,
        "setrlimit: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// Reads until the server closes the connection (end of stream or a reset); the instant it
/// did. Bytes the server sends first (an answer) are read and dropped.
async fn closed_at(mut stream: TcpStream) -> Instant {
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

/// 2,000 connections that send half a request head and stop, opened on the leader with an
/// `http_header_timeout` of 2 s: while they are open the node serves heartbeats, and each of
/// them, and an idle keep-alive connection too, is closed by the node once the timeout has
/// passed, not before.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn half_sent_requests_neither_stop_the_node_nor_stay_open() -> anyhow::Result<()> {
    init_test_tracing();
    const FLOOD: usize = 2000;
    // Both ends of each connection, and room for the rest of the suite in this process.
    allow_open_files(2 * FLOOD as u64 + 4096)?;
    let timeout = Duration::from_secs(2);
    let mut c = InProcCluster::start(ClusterSpec {
        http_header_timeout: timeout,
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let addr = c.configs[leader].listen;
    let term = c.node(leader).raft.metrics().borrow().current_term;

    // An idle keep-alive connection: one whole request, answered, then nothing.
    let mut idle = TcpStream::connect(addr).await?;
    idle.write_all(format!("GET /health HTTP/1.1\r\nhost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await?;
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 "),
        "the keep-alive connection got an answer: {:?}",
        String::from_utf8_lossy(&head)
    );
    let idle_since = Instant::now();
    let idle_closed = tokio::spawn(closed_at(idle));

    let half = format!("POST /v1/heartbeats HTTP/1.1\r\nhost: {addr}\r\ncontent-type: app");
    let mut flood = JoinSet::new();
    for _ in 0..FLOOD {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(half.as_bytes()).await?;
        let opened = Instant::now();
        flood.spawn(async move { (opened, closed_at(stream).await) });
    }
    let flooded = Instant::now();
    // The node holds them all (the check is not vacuous)...
    until("the node holds the half-sent requests", WAIT, || async {
        let open = scrape(&c, leader)
            .await
            .ok()?
            .value("registry_http_connections_open");
        (open >= FLOOD as f64).then_some(open)
    })
    .await?;
    // ...and serves heartbeats meanwhile.
    let client = c.client_of(leader);
    let mut slowest = Duration::ZERO;
    let mut served = 0;
    while flooded.elapsed() < timeout.mul_f64(0.75) || served < 10 {
        let start = Instant::now();
        client
            .heartbeat(&[HeartbeatIn::new(format!("host-{served}"), "cinder-volume")])
            .await?;
        slowest = slowest.max(start.elapsed());
        served += 1;
    }

    let mut closed = 0;
    let mut earliest = Duration::MAX;
    let mut latest = Duration::ZERO;
    let deadline = timeout + WAIT;
    while let Some(ended) = tokio::time::timeout(deadline, flood.join_next())
        .await
        .map_err(|_| anyhow::anyhow!("only {closed} of {FLOOD} half-sent requests were closed"))?
    {
        let (opened, at) = ended?;
        let lived = at.duration_since(opened);
        earliest = earliest.min(lived);
        latest = latest.max(lived);
        closed += 1;
    }
    assert_eq!(closed, FLOOD);
    assert!(
        earliest >= timeout - Duration::from_millis(50),
        "no half-sent request is closed before the timeout (earliest after {earliest:?})"
    );
    let idle_lived = tokio::time::timeout(deadline, idle_closed)
        .await
        .map_err(|_| anyhow::anyhow!("the idle keep-alive connection stayed open"))??
        .duration_since(idle_since);
    assert!(
        idle_lived >= timeout - Duration::from_millis(50),
        "the idle connection is kept for the timeout (closed after {idle_lived:?})"
    );
    let open = scrape(&c, leader)
        .await?
        .value("registry_http_connections_open");
    assert!(open < 50.0, "the flood's connections are gone: {open} open");
    let term_now = c.node(leader).raft.metrics().borrow().current_term;
    println!(
        "{FLOOD} half-sent requests held, then closed {earliest:?} to {latest:?} after they \
         were opened; an idle keep-alive connection closed after {idle_lived:?}; {served} \
         heartbeats served meanwhile, the slowest in {slowest:?}; term {term} -> {term_now}"
    );
    c.shutdown().await
}

/// With `max_connections = 64`, connections opened past the cap on a follower are closed at
/// once and counted; the ones under it stay open; once they are closed the node serves
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_past_the_cap_are_closed_at_once_and_counted() -> anyhow::Result<()> {
    init_test_tracing();
    const CAP: usize = 64;
    const OPENED: usize = 100;
    let mut c = InProcCluster::start(ClusterSpec {
        max_connections: CAP,
        ..ClusterSpec::default()
    })
    .await?;
    let leader = c.wait_for_leader(WAIT).await?;
    let target = (leader + 1) % 3;
    let addr = c.configs[target].listen;
    let before = scrape(&c, target).await?;
    assert_eq!(before.value("registry_http_max_connections"), CAP as f64);
    let refused_before = before.value("registry_http_connections_refused_total");

    let mut held = Vec::new();
    for _ in 0..OPENED {
        held.push(TcpStream::connect(addr).await?);
    }
    // A connection the node closed reads the end of the stream (or a reset) at once; one it
    // keeps reads nothing until our probe gives up.
    let mut refused_seen = 0;
    let mut kept = Vec::new();
    for mut stream in held {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), stream.read(&mut byte)).await {
            Ok(Ok(0) | Err(_)) => refused_seen += 1,
            Ok(Ok(_)) => anyhow::bail!("the node sent bytes on a connection that sent none"),
            Err(_) => kept.push(stream),
        }
    }
    assert!(
        kept.len() <= CAP,
        "at most {CAP} connections are kept ({} were)",
        kept.len()
    );
    assert!(
        refused_seen >= OPENED - CAP,
        "connections past the cap are closed at once ({refused_seen} of {OPENED} were)"
    );
    drop(kept);
    let after = until("the node serves again", WAIT, || async {
        scrape(&c, target).await.ok()
    })
    .await?;
    let refused = after.value("registry_http_connections_refused_total") - refused_before;
    assert!(
        refused >= refused_seen as f64,
        "every connection closed at the cap is counted ({refused} counted, {refused_seen} seen)"
    );
    c.client_of(target)
        .heartbeat(&[HeartbeatIn::new("host-after", "cinder-volume")])
        .await?;
    println!(
        "{OPENED} connections opened against a cap of {CAP}: {refused_seen} closed at once, \
         {refused} counted refused (peers' included)"
    );
    c.shutdown().await
}
