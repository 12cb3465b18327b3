//! A node's shutdown: it ends every task the node started, and lets go of its data directory
//! with every acknowledged heartbeat in it.

use std::time::{Duration, Instant};

use registry_api::wire::{HeartbeatIn, ServiceOut};
use registry_node::{task, SHUTDOWN_GRACE};
use registry_storage::{open_store, ServiceKey};
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every task a node starts, in the order its shutdown stops them, and its database.
const ALL_TASKS: [&str; 10] = [
    task::SERVER,
    task::TICKER,
    task::FORMATION,
    task::BATCHER,
    task::FORWARDER,
    task::REQUESTS,
    task::RAFT,
    task::PERSISTER,
    task::STORAGE_WORK,
    task::DATABASE,
];

/// The tasks that run for as long as a node runs (formation ends once the node is in its
/// group; request tasks run only while a node is put back in place or a read relayed, the
/// storage's blocking work only while a snapshot is written or a purge removes entries).
const LONG_LIVED: [&str; 7] = [
    task::SERVER,
    task::TICKER,
    task::BATCHER,
    task::FORWARDER,
    task::RAFT,
    task::PERSISTER,
    task::DATABASE,
];

/// Once `Node::shutdown` returns, none of the node's tasks runs (the HTTP server with its
/// connections, the ticker, formation, the batcher, the forwarder, request tasks, Raft's
/// tasks, the persist thread, the storage's blocking work), nothing holds its database, its
/// data directory opens again at once (sled's lock is free), and the
/// records there hold every heartbeat acknowledged before the shutdown. It holds on a
/// follower, whose heartbeats went through its forwarder, and on the leader, whose batcher
/// committed them, with a request left half sent on an open connection, which the shutdown
/// cuts after its grace instead of waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_ends_every_task_and_releases_the_store() -> anyhow::Result<()> {
    init_test_tracing();
    let mut c = InProcCluster::start(ClusterSpec::default()).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");

    // The follower forwards its heartbeats to the leader; the leader batches its own.
    let via_follower = one(c
        .client_of(follower)
        .heartbeat(&[HeartbeatIn::new("via-follower", "cinder-volume")])
        .await?
        .services)?;
    let via_leader = one(c
        .client_of(leader)
        .heartbeat(&[HeartbeatIn::new("via-leader", "cinder-volume")])
        .await?
        .services)?;
    let applied = c
        .node(leader)
        .raft
        .metrics()
        .borrow()
        .last_applied
        .map_or(0, |l| l.index);
    c.wait_applied(applied, Duration::from_secs(10)).await?;

    tracing::info!("phase: the follower stops");
    let watch = c.node(follower).task_watch();
    assert_eq!(watch.names(), ALL_TASKS, "the watch covers every task");
    let running = watch.running();
    for name in LONG_LIVED {
        assert!(
            running.contains(&name),
            "{name} runs before the shutdown: {running:?}"
        );
    }
    c.stop_node(follower).await?;
    assert_eq!(
        watch.running(),
        Vec::<&str>::new(),
        "tasks of the follower still run after its shutdown returned"
    );
    reopened_holds(&c, follower, &[&via_follower, &via_leader])?;

    tracing::info!("phase: the leader stops with a request half sent");
    // A heartbeat just before the stop: the last persist has to write it.
    let last = one(c
        .client_of(leader)
        .heartbeat(&[HeartbeatIn::new("via-leader", "cinder-volume")])
        .await?
        .services)?;
    assert_eq!(last.report_count, via_leader.report_count + 1);
    let addr = c.configs[leader].listen;
    let mut open = TcpStream::connect(addr).await?;
    open.write_all(
        format!(
            "POST /v1/heartbeats HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: 100\r\n\r\n[{{\"host\":"
        )
        .as_bytes(),
    )
    .await?;
    registry_tests::wait::until(
        "the leader serves the half-sent request",
        Duration::from_secs(10),
        || async { (c.node(leader).app.shared().admission.in_flight() >= 1).then_some(()) },
    )
    .await?;
    let watch = c.node(leader).task_watch();
    let running = watch.running();
    for name in LONG_LIVED {
        assert!(
            running.contains(&name),
            "{name} runs before the shutdown: {running:?}"
        );
    }
    let started = Instant::now();
    c.stop_node(leader).await?;
    let took = started.elapsed();
    assert_eq!(
        watch.running(),
        Vec::<&str>::new(),
        "tasks of the leader still run after its shutdown returned"
    );
    assert!(
        took >= SHUTDOWN_GRACE,
        "the shutdown gave the open request its grace ({SHUTDOWN_GRACE:?}), it took {took:?}"
    );
    assert!(
        took < SHUTDOWN_GRACE * 3,
        "the shutdown is bounded: it took {took:?}"
    );
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(1), open.read_to_end(&mut rest)).await;
    assert!(
        closed.is_ok(),
        "the half-sent request's connection was closed by the shutdown"
    );
    reopened_holds(&c, leader, &[&via_follower, &last])?;
    c.shutdown().await
}

/// The only record of an answer.
fn one(mut services: Vec<ServiceOut>) -> anyhow::Result<ServiceOut> {
    anyhow::ensure!(services.len() == 1, "one record answered: {services:?}");
    Ok(services.remove(0))
}

/// Opens the data directory of node index `i` (stopped) at once, and checks that its records
/// are the `acked` ones, as acknowledged.
fn reopened_holds(c: &InProcCluster, i: usize, acked: &[&ServiceOut]) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = open_store(&c.configs[i].data_dir)?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the data directory of node index {i} opened at once, not after waiting {took:?} for \
         its lock"
    );
    let held = store.sm.view().read(|state| {
        for want in acked {
            let got = state.get(&ServiceKey::new(&want.host, &want.binary));
            assert_eq!(
                got.map(|r| (r.id, r.report_count, r.updated_at)),
                Some((want.id, want.report_count, want.updated_at)),
                "node index {i} holds {}/{} as acknowledged",
                want.host,
                want.binary
            );
        }
        state.records().count()
    });
    assert_eq!(
        (held, acked.len()),
        (2, 2),
        "node index {i} holds the two services written, and both were checked"
    );
    Ok(())
}
