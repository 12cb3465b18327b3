//! Where openraft's tasks run, so that a node's shutdown can wait for all of them.
//!
//! `Raft::shutdown` joins RaftCore and its tick, nothing else: the replication streams, the
//! snapshot sends they start, the state machine worker and the snapshot builds it starts, and
//! the RPCs RaftCore sends in parallel (votes, leadership checks for reads) are detached
//! tokio tasks, which end on their own once RaftCore is gone, at their next poll or when
//! their RPC returns (a snapshot chunk sent to a peer that hangs: after
//! `install_snapshot_timeout`). They hold the node's stores and HTTP clients meanwhile.
//!
//! So [`TypeConfig`](crate::TypeConfig)'s runtime is [`TrackedRuntime`]: tokio's, except
//! that a task openraft spawns while a [`RaftTasks`] is in scope joins that set, and so does
//! every task spawned from it in turn. A node creates its Raft in the scope of its own set
//! ([`RaftTasks::scope`]), so every task of that Raft is in it, and its shutdown waits for
//! the set ([`RaftTasks::wait`]) after `Raft::shutdown`. Outside any scope (openraft's
//! storage suite in this crate's tests) tasks are plain tokio tasks.

use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioInstant, TokioRuntime};
use tokio_util::task::TaskTracker;

tokio::task_local! {
    /// The set the tasks openraft spawns from the current task join.
    static TASKS: TaskTracker;
}

/// The tasks of one Raft instance. Cheap to clone (clones share the set).
#[derive(Debug, Clone, Default)]
pub struct RaftTasks {
    tracker: TaskTracker,
}

impl RaftTasks {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` (creating a Raft) so that every task openraft spawns in it, and from those
    /// tasks, joins this set.
    pub async fn scope<F: Future>(&self, f: F) -> F::Output {
        TASKS.scope(self.tracker.clone(), f).await
    }

    /// Waits until every task of the set has ended. Tasks spawned from tasks of the set
    /// still join it meanwhile, so this returns once all of them have ended.
    pub async fn wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// Tasks of the set still running.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// Whether every task of the set has ended.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// The set, to watch (it holds no task's state).
    pub fn tracker(&self) -> TaskTracker {
        self.tracker.clone()
    }
}

/// tokio, with the tasks openraft spawns kept in the [`RaftTasks`] in scope (see the
/// module's documentation).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TrackedRuntime;

impl AsyncRuntime for TrackedRuntime {
    type JoinError = tokio::task::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = tokio::task::JoinHandle<T>;
    type Sleep = tokio::time::Sleep;
    type Instant = TokioInstant;
    type TimeoutError = tokio::time::error::Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = tokio::time::Timeout<T>;
    type ThreadLocalRng = <TokioRuntime as AsyncRuntime>::ThreadLocalRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = tokio::sync::oneshot::error::RecvError;
    type OneshotReceiver<T: OptionalSend> = tokio::sync::oneshot::Receiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        match TASKS.try_with(TaskTracker::clone) {
            // The task carries the set along, for the tasks it spawns.
            Ok(tasks) => tasks.spawn(TASKS.scope(tasks.clone(), future)),
            Err(_) => tokio::spawn(future),
        }
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        tokio::time::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        tokio::time::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        tokio::time::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        join_error.is_panic()
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        TokioRuntime::thread_rng()
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task spawned in a scope joins its set, and so does one it spawns in turn; the set is
    /// waited for until both have ended; outside a scope a task joins nothing.
    #[tokio::test]
    async fn tasks_spawned_in_a_scope_and_from_them_join_the_set() {
        let tasks = RaftTasks::new();
        let (release, released) = tokio::sync::watch::channel(false);
        let outer = tasks
            .scope(async {
                let mut released = released.clone();
                let outer = TrackedRuntime::spawn(async move {
                    let _inner = TrackedRuntime::spawn(async move {
                        let _ = released.wait_for(|r| *r).await;
                    });
                });
                tokio::time::timeout(Duration::from_secs(5), outer).await
            })
            .await;
        assert!(matches!(outer, Ok(Ok(()))), "the outer task ended");
        assert_eq!(tasks.len(), 1, "the inner task joined the set and waits");

        let mut untracked_released = released.clone();
        let untracked = TrackedRuntime::spawn(async move {
            let _ = untracked_released.wait_for(|r| *r).await;
        });
        assert_eq!(
            tasks.len(),
            1,
            "a task spawned outside a scope joins nothing"
        );

        let _ = release.send(true);
        let waited = tokio::time::timeout(Duration::from_secs(5), tasks.wait()).await;
        assert!(waited.is_ok(), "the set was waited for once both ended");
        assert!(tasks.is_empty());
        assert!(matches!(
            tokio::time::timeout(Duration::from_secs(5), untracked).await,
            Ok(Ok(()))
        ));
    }
}
