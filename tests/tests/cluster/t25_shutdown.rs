//! A node's shutdown: it ends every task the node started, and lets go of its data directory
//! with every acknowledged heartbeat in it.

use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::RaftLogReader;
use registry_api::wire::{Consistency, HeartbeatIn, ServiceAction, ServiceOut};
use registry_node::{task, RaftSettings, SHUTDOWN_GRACE};
use registry_storage::{open_store, ServiceKey};
use registry_tests::black_hole::BlackHole;
use registry_tests::init_test_tracing;
use registry_tests::inproc::{ClusterSpec, InProcCluster};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every task a node starts, in the order its shutdown stops them, and its database.
const ALL_TASKS: [&str; 9] = [
    task::SERVER,
    task::TICKER,
    task::FORMATION,
    task::BATCHER,
    task::FORWARDER,
    task::REQUESTS,
    task::RAFT,
    task::STORAGE_WORK,
    task::DATABASE,
];

/// The tasks that run for as long as a node runs (formation ends once the node is in its
/// group; request tasks run only while a node is put back in place or a read relayed, the
/// storage's blocking work only while a snapshot is written or a purge removes entries).
const LONG_LIVED: [&str; 6] = [
    task::SERVER,
    task::TICKER,
    task::BATCHER,
    task::FORWARDER,
    task::RAFT,
    task::DATABASE,
];

/// Once `Node::shutdown` returns, none of the node's tasks runs (the HTTP server with its
/// connections, the ticker, formation, the batcher, the forwarder, request tasks, Raft's
/// tasks, the storage's blocking work), nothing holds its database, its
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
    let applied = c.last_applied(leader).unwrap_or(0);
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
    reopened_holds(&c, follower, &[&via_follower, &via_leader]).await?;

    tracing::info!("phase: the leader stops with a request half sent");
    // A heartbeat just before the stop: the restarted node must hold it (from its log).
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
    reopened_holds(&c, leader, &[&via_follower, &last]).await?;
    c.shutdown().await
}

/// How long the runtime's tasks may take to end once the last node's shutdown returned: a
/// task that ended with its node needs at most a poll for the runtime to let go of it.
const SETTLE: Duration = Duration::from_secs(10);

/// How long a chunk of a snapshot may take to send: far longer than [`SETTLE`], so that a
/// send still in flight when its node stopped is seen.
const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(60);

/// Once every node of a cluster has shut down, the runtime runs no more tasks than it did
/// before the cluster started: nothing a node started (its HTTP server, its write path, the
/// relay of a forwarded read, Raft's core, replication streams, snapshot sends and state
/// machine worker) outlived `Node::shutdown`. The cluster first takes every path that starts
/// a task: heartbeats forwarded by a follower, a linearizable list served by it (after the
/// leader's read index) and an admin action relayed by it, snapshots with the log purged behind them on every node, a follower that comes back
/// behind the purge and is sent the leader's snapshot; and the leader stops while it sends a
/// snapshot to a peer that never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_task_of_a_node_outlives_its_shutdown() -> anyhow::Result<()> {
    init_test_tracing();
    let runtime = tokio::runtime::Handle::current().metrics();
    let before = runtime.num_alive_tasks();
    let spec = ClusterSpec {
        raft: RaftSettings {
            // A snapshot purges the whole log behind it.
            max_in_snapshot_log_to_keep: 0,
            install_snapshot_timeout: SNAPSHOT_CHUNK_TIMEOUT,
            ..RaftSettings::default()
        },
        ..ClusterSpec::default()
    };
    let mut c = InProcCluster::start(spec).await?;
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let behind = (0..3)
        .find(|i| *i != leader && *i != follower)
        .expect("a second follower");

    tracing::info!("phase: forwarded heartbeats, a follower's list and a relayed action");
    {
        let via = c.client_of(follower);
        for round in 0..5 {
            let beats: Vec<HeartbeatIn> = (0..40)
                .map(|i| HeartbeatIn::new(format!("host-{round}-{i}"), "cinder-volume"))
                .collect();
            via.heartbeat(&beats).await?;
        }
        let listed = via.services(None, None, Consistency::Linearizable).await?;
        assert_eq!(
            listed.services.len(),
            200,
            "the follower listed every service the leader acknowledged"
        );
        via.action(
            ServiceAction::Disable,
            "host-0-0",
            Some("cinder-volume"),
            Some("maintenance"),
        )
        .await?;
    }

    tracing::info!("phase: snapshots and purges on every node");
    purge_everywhere(&c).await?;

    tracing::info!("phase: a follower comes back behind the leader's purge");
    c.stop_node(behind).await?;
    write_one(&c, leader, "while-away").await?;
    purge_everywhere(&c).await?;
    // The leader's log now starts past everything the stopped follower holds: it can only
    // catch up through a snapshot covering at least the leader's purge point. (The leader's
    // ticks keep adding entries after it, which reach the follower by log.)
    let purged = c
        .node(leader)
        .raft
        .metrics()
        .borrow()
        .purged
        .map_or(0, |p| p.index);
    c.start_node(behind).await?;
    let applied = c.last_applied(leader).unwrap_or(0);
    c.wait_applied(applied, Duration::from_secs(20)).await?;
    let installed = c
        .node(behind)
        .raft
        .metrics()
        .borrow()
        .snapshot
        .map_or(0, |s| s.index);
    assert!(
        installed >= purged,
        "the follower that came back was sent the leader's snapshot (it holds one at \
         {installed}, the leader's log was purged up to {purged})"
    );

    tracing::info!("phase: the leader sends a snapshot to a peer that never answers");
    c.stop_node(behind).await?;
    let hole = BlackHole::bind(c.configs[behind].listen).await?;
    write_one(&c, leader, "while-hung").await?;
    purge_everywhere(&c).await?;
    registry_tests::wait::until(
        "the leader sends the hung peer its snapshot",
        Duration::from_secs(20),
        || async {
            let requests = hole.requests();
            requests
                .iter()
                .any(|r| r.starts_with("POST /raft/snapshot"))
                .then_some(())
        },
    )
    .await?;

    tracing::info!("phase: every node stops");
    let watches: Vec<_> = c
        .nodes
        .iter()
        .flatten()
        .map(|n| (n.id, n.task_watch()))
        .collect();
    assert_eq!(watches.len(), 2, "the leader and one follower still run");
    for (id, watch) in &watches {
        let running = watch.running();
        assert!(
            running.contains(&task::RAFT) && running.contains(&task::DATABASE),
            "node {id} runs Raft's tasks and holds its database before the shutdown: {running:?}"
        );
    }
    c.shutdown().await?;
    for (id, watch) in &watches {
        assert_eq!(
            watch.running(),
            Vec::<&str>::new(),
            "tasks of node {id} still run after its shutdown returned"
        );
    }
    let settled = registry_tests::wait::until(
        "the runtime runs no more tasks than before the cluster started",
        SETTLE,
        || async { (runtime.num_alive_tasks() <= before).then_some(()) },
    )
    .await;
    let alive = runtime.num_alive_tasks();
    hole.stop();
    assert!(
        settled.is_ok(),
        "{alive} tasks are alive {SETTLE:?} after every node shut down; {before} were before \
         the cluster started"
    );
    Ok(())
}

/// Writes one heartbeat through node index `i`.
async fn write_one(c: &InProcCluster, i: usize, host: &str) -> anyhow::Result<()> {
    c.client_of(i)
        .heartbeat(&[HeartbeatIn::new(host, "cinder-volume")])
        .await?;
    Ok(())
}

/// Has every running node build a snapshot (`POST /v1/cluster/snapshot`) of all the leader
/// applied, and waits until each purged its log up to it.
async fn purge_everywhere(c: &InProcCluster) -> anyhow::Result<()> {
    let leader = c.wait_for_leader(Duration::from_secs(10)).await?;
    let applied = c.last_applied(leader).unwrap_or(0);
    c.wait_applied(applied, Duration::from_secs(10)).await?;
    for (i, node) in c.nodes.iter().enumerate() {
        let Some(node) = node else { continue };
        c.client_of(i).trigger_snapshot().await?;
        node.raft
            .wait(Some(Duration::from_secs(10)))
            .metrics(
                |m| m.purged.is_some_and(|p| p.index >= applied),
                "the log purged behind the snapshot",
            )
            .await?;
    }
    Ok(())
}

/// The only record of an answer.
fn one(mut services: Vec<ServiceOut>) -> anyhow::Result<ServiceOut> {
    anyhow::ensure!(services.len() == 1, "one record answered: {services:?}");
    Ok(services.remove(0))
}

/// Opens the data directory of node index `i` (stopped) at once, and checks that its records
/// are the `acked` ones, as acknowledged.
async fn reopened_holds(c: &InProcCluster, i: usize, acked: &[&ServiceOut]) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = open_store(&c.configs[i].data_dir)?;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the data directory of node index {i} opened at once, not after waiting {took:?} for \
         its lock"
    );
    // What a start does before it serves (openraft's): the snapshot file's state, then the
    // log after it applied again up to the committed index.
    let (mut log, mut sm) = (store.log.clone(), store.sm.clone());
    let (applied, _) = sm.applied_state().await?;
    let committed = log.read_committed().await?;
    if let Some(committed) = committed.filter(|c| Some(*c) > applied) {
        let from = applied.map_or(0, |l| l.index + 1);
        sm.apply(log.try_get_log_entries(from..=committed.index).await?)
            .await?;
    }
    let held = store.sm.view().read(|state| {
        for want in acked {
            let got = state.get(&ServiceKey::new(want.host.as_str(), want.binary.as_str()));
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
