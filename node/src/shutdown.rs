//! Stopping a node: one cancellation token reaches every task the node starts, and
//! [`Node::shutdown`](crate::Node::shutdown) stops them in a fixed order, each stage's wait
//! bounded by [`SHUTDOWN_GRACE`]:
//!
//! 1. the HTTP server: it stops accepting, lets the requests in flight finish for the grace,
//!    then closes the connections left; it ends with its last connection;
//! 2. the clock ticker and the formation task (bootstrapping or joining a group);
//! 3. the write path: the heartbeat batcher and forwarder answer what is still queued with an
//!    error (none of it was proposed or sent) and finish what they proposed or sent; the tasks
//!    started by requests (putting a node back in place) end;
//! 4. Raft;
//! 5. the state machine's persist thread, after a last persist and a flush;
//! 6. the storage: the records persisted and the whole database flushed.
//!
//! The stages are tokens of one tree. The node's token is its root, which the write path
//! listens to; the ticker and the formation task listen to a child of it, the HTTP server to a
//! child of that. Cancelling a stage cancels the stages before it too, so cancelling the root
//! stops every task at once; a shutdown cancels them one at a time, the server first, and
//! joins each stage before it cancels the next, so the write path still serves the requests
//! the server lets finish.
//!
//! A task that outlives its stage's wait is aborted, and waited for again briefly; the log
//! names it. Raft, the persist thread or the flush outliving theirs fails the shutdown with
//! [`NodeError::Stalled`] or the storage's error, and the steps after still run.

use std::time::Duration;

use openraft::Raft;
use registry_api::AppTasks;
use registry_storage::{LogStore, NodeId, PersisterWatch, StateMachineStore, TypeConfig};
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
    /// Tasks started by requests (putting a node back in place).
    pub const REQUESTS: &str = "request tasks";
    /// The state machine's persist thread.
    pub const PERSISTER: &str = "persister";
}

/// The node's cancellation token, one child per stage of the shutdown (see the module's
/// documentation).
#[derive(Debug)]
pub(crate) struct Stages {
    /// The root: the write path (batcher, forwarder, request tasks).
    root: CancellationToken,
    /// A child of the root: the ticker and the formation task.
    background: CancellationToken,
    /// A child of `background`: the HTTP server.
    http: CancellationToken,
}

impl Stages {
    /// A new tree of tokens, none cancelled.
    pub(crate) fn new() -> Self {
        let root = CancellationToken::new();
        let background = root.child_token();
        let http = background.child_token();
        Self {
            root,
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

    /// The write path's token: the root.
    pub(crate) fn write_path(&self) -> CancellationToken {
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
}

impl Tasks {
    /// A watch on every one of them and on the state machine's persist thread.
    pub(crate) fn watch(&self, persister: PersisterWatch) -> TaskWatch {
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
                (task::PERSISTER, Probe::Thread(persister)),
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
    /// A thread.
    Thread(PersisterWatch),
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
                Probe::Thread(t) => !t.is_finished(),
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
    /// The state machine, whose persist thread is stopped.
    pub(crate) sm: &'a StateMachineStore,
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
    stop_raft_and_storage(parts).await
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
    stages.root.cancel();
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

/// Stages 4 to 6: Raft, the persist thread, the storage; every step runs, and the first
/// error is returned.
async fn stop_raft_and_storage(parts: Parts<'_>) -> Result<(), NodeError> {
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

    // 5. The persist thread: a last persist, flushed.
    if let Err(e) = parts.sm.stop_persister(SHUTDOWN_GRACE).await {
        keep(NodeError::Storage(e));
    }

    // 6. The storage.
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
