//! Stopping a node: one cancellation token reaches every task the node starts, and
//! [`Node::shutdown`](crate::Node::shutdown) stops them in a fixed order, each stage's wait
//! bounded by [`SHUTDOWN_GRACE`]:
//!
//! 1. the HTTP server: it stops accepting, lets the requests in flight finish for the grace,
//!    then closes the connections left; it ends with its last connection;
//! 2. the clock ticker and the formation task (bootstrapping or joining a group);
//! 3. the write path: the heartbeat batcher and forwarder answer what is still queued with an
//!    error (none of it was proposed or sent) and finish what they proposed or sent; the tasks
//!    started by requests (putting a node back in place, relaying a leader's answer) end;
//! 4. Raft: RaftCore and its tick (`Raft::shutdown`), then the RPCs still in flight are cut
//!    and every other task of Raft is waited for (replication streams, snapshot sends and
//!    builds, the state machine worker, RPCs sent in parallel: openraft detaches them, so
//!    they run in the node's [`RaftTasks`], see [`registry_storage::raft_tasks`]);
//! 5. the storage: its blocking work ended (the removal of purged log entries, snapshot
//!    writes), then the whole database flushed.
//!
//! Once [`Node::shutdown`](crate::Node::shutdown) returns, the node is dropped, and with it
//! the last handles on its database: sled's flush thread is joined as it closes. What is left
//! are the connections of the node's HTTP clients, whose tasks hyper spawns and the node
//! cannot join: dropped with the clients, each ends at its next poll.
//!
//! The stages are tokens of one tree. The node's token is its root, which Raft's RPCs listen
//! to; the write path listens to a child of it, the ticker and the formation task to a child
//! of that, the HTTP server to a child of that one. Cancelling a stage cancels the stages
//! before it too, so cancelling the root stops every task at once; a shutdown cancels them
//! one at a time, the server first, and joins each stage before it cancels the next, so the
//! write path still serves the requests the server lets finish, and Raft still replicates
//! what the write path finishes.
//!
//! A task that outlives its stage's wait is aborted, and waited for again briefly; the log
//! names it. Raft, its tasks, the storage's blocking work or the flush
//! outliving theirs fails the shutdown with [`NodeError::Stalled`] or the storage's error,
//! and the steps after still run.

use std::time::Duration;

use openraft::Raft;
use registry_api::AppTasks;
use registry_storage::{DatabaseWatch, LogStore, NodeId, RaftTasks, TypeConfig};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::NodeError;

/// How long each stage of a shutdown may take before it is cut short.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long the server may take beyond the grace it has for its own drain.
const SERVER_OVERRUN: Duration = Duration::from_secs(1);
/// How long an aborted task is waited for.
const ABORT_WAIT: Duration = Duration::from_secs(1);

/// Names of the node's tasks, as [`TaskWatch`] and the log name them.
pub mod task {
    /// The HTTP server and its connections.
    pub const SERVER: &str = "http server";
    /// The leader's clock tick.
    pub const TICKER: &str = "ticker";
    /// Bootstrapping or joining a group.
    pub const FORMATION: &str = "formation";
    /// The heartbeat batcher.
    pub const BATCHER: &str = "batcher";
    /// The heartbeat forwarder.
    pub const FORWARDER: &str = "forwarder";
    /// Tasks started by requests (putting a node back in place, relaying a leader's answer).
    pub const REQUESTS: &str = "request tasks";
    /// Raft's tasks: RaftCore, its replication streams, state machine worker and the rest.
    pub const RAFT: &str = "raft tasks";
    /// Blocking work on the database (the removal of purged log entries, snapshot writes).
    pub const STORAGE_WORK: &str = "storage work";
    /// The database, open (with sled's flush thread) while anything of the node holds it.
    pub const DATABASE: &str = "database";
}

/// The node's cancellation token, one child per stage of the shutdown (see the module's
/// documentation).
#[derive(Debug)]
pub(crate) struct Stages {
    /// The root: Raft's RPCs.
    root: CancellationToken,
    /// A child of the root: the write path (batcher, forwarder, request tasks).
    write_path: CancellationToken,
    /// A child of `write_path`: the ticker and the formation task.
    background: CancellationToken,
    /// A child of `background`: the HTTP server.
    http: CancellationToken,
}

impl Stages {
    /// A new tree of tokens, none cancelled.
    pub(crate) fn new() -> Self {
        let root = CancellationToken::new();
        let write_path = root.child_token();
        let background = write_path.child_token();
        let http = background.child_token();
        Self {
            root,
            write_path,
            background,
            http,
        }
    }

    /// The HTTP server's token.
    pub(crate) fn http(&self) -> CancellationToken {
        self.http.clone()
    }

    /// The ticker's and the formation task's token.
    pub(crate) fn background(&self) -> CancellationToken {
        self.background.clone()
    }

    /// The write path's token.
    pub(crate) fn write_path(&self) -> CancellationToken {
        self.write_path.clone()
    }

    /// The token of Raft's RPCs: the root.
    pub(crate) fn raft(&self) -> CancellationToken {
        self.root.clone()
    }
}

/// Every task a node started, as the shutdown joins them.
#[derive(Debug)]
pub(crate) struct Tasks {
    /// The HTTP server (it ends with its last connection).
    pub(crate) server: JoinHandle<()>,
    /// The clock tick.
    pub(crate) ticker: JoinHandle<()>,
    /// Bootstrapping or joining, while this node is not in a group yet.
    pub(crate) formation: JoinHandle<()>,
    /// The write path's tasks.
    pub(crate) app: AppTasks,
    /// Every task of Raft (RaftCore and what it spawns).
    pub(crate) raft: RaftTasks,
}

/// The storage's part of a [`TaskWatch`]: watches that hold nothing of the store.
#[derive(Debug, Clone, Default)]
pub(crate) struct StoreWatches {
    /// The blocking work on the database.
    pub(crate) background: TaskTracker,
    /// The database itself.
    pub(crate) database: DatabaseWatch,
}

impl Tasks {
    /// A watch on every one of them and on the storage's threads and work.
    pub(crate) fn watch(&self, store: StoreWatches) -> TaskWatch {
        TaskWatch {
            tasks: vec![
                (task::SERVER, Probe::Task(self.server.abort_handle())),
                (task::TICKER, Probe::Task(self.ticker.abort_handle())),
                (task::FORMATION, Probe::Task(self.formation.abort_handle())),
                (task::BATCHER, Probe::Task(self.app.batcher.abort_handle())),
                (
                    task::FORWARDER,
                    Probe::Task(self.app.forwarder.abort_handle()),
                ),
                (task::REQUESTS, Probe::Tracker(self.app.requests.clone())),
                (task::RAFT, Probe::Tracker(self.raft.tracker())),
                (task::STORAGE_WORK, Probe::Tracker(store.background)),
                (task::DATABASE, Probe::Database(store.database)),
            ],
        }
    }
}

/// Which of a node's tasks still run. It holds nothing of the node (no store, no Raft), so
/// it can be kept after [`Node::shutdown`](crate::Node::shutdown), to check that nothing
/// outlived it.
#[derive(Debug, Clone)]
pub struct TaskWatch {
    /// Every task, in the order a shutdown stops them.
    tasks: Vec<(&'static str, Probe)>,
}

/// How one task is watched.
#[derive(Debug, Clone)]
enum Probe {
    /// A tokio task.
    Task(AbortHandle),
    /// A set of tokio tasks (running while it holds any).
    Tracker(TaskTracker),
    /// The database (open while anything holds it).
    Database(DatabaseWatch),
}

impl TaskWatch {
    /// The name of every task watched (see [`task`]), in the order a shutdown stops them.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.iter().map(|(name, _)| *name).collect()
    }

    /// The tasks that still run.
    pub fn running(&self) -> Vec<&'static str> {
        self.tasks
            .iter()
            .filter(|(_, probe)| match probe {
                Probe::Task(t) => !t.is_finished(),
                Probe::Tracker(t) => !t.is_empty(),
                Probe::Database(d) => !d.is_closed(),
            })
            .map(|(name, _)| *name)
            .collect()
    }
}

/// What the shutdown stops, beside the tasks.
pub(crate) struct Parts<'a> {
    /// The node's id, for the log.
    pub(crate) id: NodeId,
    /// Raft.
    pub(crate) raft: &'a Raft<TypeConfig>,
    /// The log store, flushed last.
    pub(crate) log: &'a LogStore,
}

/// Stops everything in the order of the module's documentation; returns once every task has
/// ended or its bounded wait expired (logged), with the first error of Raft or the storage.
pub(crate) async fn stop(
    stages: &Stages,
    tasks: &mut Tasks,
    parts: Parts<'_>,
) -> Result<(), NodeError> {
    stop_tasks(stages, tasks).await;
    stop_raft_and_storage(stages, &tasks.raft, parts).await
}

/// Stages 1 to 3: cancels each stage's token and joins its tasks before the next.
async fn stop_tasks(stages: &Stages, tasks: &mut Tasks) {
    // 1. No new request; those in flight finish, for the grace the server has.
    stages.http.cancel();
    let server_deadline = Instant::now() + SHUTDOWN_GRACE + SERVER_OVERRUN;
    join(task::SERVER, &mut tasks.server, server_deadline).await;

    // 2. Nothing more is started through Raft by the node itself.
    stages.background.cancel();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    join(task::TICKER, &mut tasks.ticker, deadline).await;
    join(task::FORMATION, &mut tasks.formation, deadline).await;

    // 3. The write path: what is queued is refused, what was proposed or sent is answered.
    stages.write_path.cancel();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    join(task::BATCHER, &mut tasks.app.batcher, deadline).await;
    join(task::FORWARDER, &mut tasks.app.forwarder, deadline).await;
    tasks.app.requests.close();
    if tokio::time::timeout_at(deadline, tasks.app.requests.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            task = task::REQUESTS,
            left = tasks.app.requests.len(),
            grace = ?SHUTDOWN_GRACE,
            "tasks did not end within the grace of their stop; left behind"
        );
    }
}

/// Stages 4 and 5: Raft and its tasks, then the storage; every step runs, and
/// the first error is returned.
async fn stop_raft_and_storage(
    stages: &Stages,
    raft_tasks: &RaftTasks,
    parts: Parts<'_>,
) -> Result<(), NodeError> {
    let mut first: Option<NodeError> = None;
    let mut keep = |e: NodeError| {
        tracing::error!(node_id = parts.id, error = %e, "shutdown step failed");
        first.get_or_insert(e);
    };

    // 4. Raft.
    match tokio::time::timeout(SHUTDOWN_GRACE, parts.raft.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => keep(NodeError::RaftShutdown(e)),
        Err(_) => keep(NodeError::Stalled {
            step: "raft",
            grace: SHUTDOWN_GRACE,
        }),
    }
    // RaftCore is gone: nothing waits for the answers of the RPCs in flight.
    stages.root.cancel();
    if tokio::time::timeout(SHUTDOWN_GRACE, raft_tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            task = task::RAFT,
            left = raft_tasks.len(),
            "raft's tasks did not end within the grace of their stop; left behind"
        );
        keep(NodeError::Stalled {
            step: "raft's tasks",
            grace: SHUTDOWN_GRACE,
        });
    }

    // 5. The storage: its blocking work, then a flush of everything.
    if tokio::time::timeout(SHUTDOWN_GRACE, parts.log.finish_background())
        .await
        .is_err()
    {
        keep(NodeError::Stalled {
            step: "the storage's blocking work",
            grace: SHUTDOWN_GRACE,
        });
    }
    match tokio::time::timeout(SHUTDOWN_GRACE, parts.log.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => keep(NodeError::Storage(e)),
        Err(_) => keep(NodeError::Stalled {
            step: "flushing storage",
            grace: SHUTDOWN_GRACE,
        }),
    }
    match first {
        None => Ok(()),
        Some(e) => Err(e),
    }
}

/// Waits until `deadline` for the task `name` to end; past it, aborts the task and waits up
/// to [`ABORT_WAIT`] more. Logs a task that ended abnormally or had to be cut short.
async fn join(name: &'static str, task: &mut JoinHandle<()>, deadline: Instant) {
    let ended = match tokio::time::timeout_at(deadline, &mut *task).await {
        Ok(ended) => ended,
        Err(_) => {
            tracing::warn!(
                task = name,
                grace = ?SHUTDOWN_GRACE,
                "task did not end within the grace of its stop; aborting it"
            );
            task.abort();
            match tokio::time::timeout(ABORT_WAIT, &mut *task).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::error!(
                        task = name,
                        "task did not end even once aborted; left behind"
                    );
                    return;
                }
            }
        }
    };
    match ended {
        Ok(()) => tracing::debug!(task = name, "task ended"),
        Err(e) if e.is_cancelled() => tracing::debug!(task = name, "task aborted"),
        Err(e) => tracing::warn!(task = name, error = %e, "task ended abnormally"),
    }
}

#[cfg(test)]
mod tests;
