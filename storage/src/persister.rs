//! The state machine's background persist thread: it writes the records changed in memory
//! to disk every [`PERSIST_INTERVAL`](crate::state_machine::PERSIST_INTERVAL), and, when it
//! is stopped ([`Persister::stop`]), once more with a flush before it ends.
//!
//! It is a thread of its own rather than a tokio task: a persist is blocking sled work, and a
//! store opened outside a runtime (a restore, a tool) persists as well. It holds the store
//! only weakly between persists, so a store that is dropped without being stopped is not
//! kept alive by it, and the thread ends at once.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::error::StoreError;

/// What the thread does to the store it persists.
pub(crate) trait Persist: Send + Sync + 'static {
    /// One background persist; a failure is the store's to keep and report.
    fn persist_now(&self);
    /// The last persist, flushed: what the thread does when it is stopped.
    fn persist_last(&self) -> Result<(), StoreError>;
}

/// The running persist thread.
#[derive(Debug)]
pub(crate) struct Persister {
    /// Asks the thread to stop (dropped with the store, it stops the thread too).
    stop: mpsc::Sender<()>,
    /// The result of the thread's last persist, sent as it ends.
    done: oneshot::Receiver<Result<(), StoreError>>,
    /// The thread, joined once it said it is done.
    thread: std::thread::JoinHandle<()>,
    /// Alive exactly as long as the thread's closure (see [`PersisterWatch`]).
    alive: Weak<()>,
}

/// Whether a store's persist thread still runs; holds nothing of the store, so it can be kept
/// after the store is closed (a test checking that a shutdown left no thread behind).
#[derive(Debug, Clone, Default)]
pub struct PersisterWatch {
    alive: Weak<()>,
}

impl PersisterWatch {
    /// Whether the thread has ended (or never ran).
    pub fn is_finished(&self) -> bool {
        self.alive.strong_count() == 0
    }
}

impl Persister {
    /// Starts the thread: it persists `target` every `every` until it is stopped, or until
    /// `target` is gone.
    pub(crate) fn spawn<P: Persist>(target: Weak<P>, every: Duration) -> Result<Self, StoreError> {
        let (stop, stopped) = mpsc::channel::<()>();
        let (done_tx, done) = oneshot::channel();
        let marker = Arc::new(());
        let alive = Arc::downgrade(&marker);
        let run = move || {
            let _alive = marker;
            loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        let Some(target) = target.upgrade() else {
                            return;
                        };
                        target.persist_now();
                    }
                    Ok(()) => {
                        let last = match target.upgrade() {
                            Some(target) => target.persist_last(),
                            None => Ok(()),
                        };
                        let _ = done_tx.send(last);
                        return;
                    }
                    // The store was dropped without being stopped: nothing left to persist.
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("sm-persist".into())
            .spawn(run)
            .map_err(StoreError::Spawn)?;
        Ok(Self {
            stop,
            done,
            thread,
            alive,
        })
    }

    /// A watch on the thread.
    pub(crate) fn watch(&self) -> PersisterWatch {
        PersisterWatch {
            alive: self.alive.clone(),
        }
    }

    /// Stops the thread after its last persist (flushed), waiting up to `within` for it, and
    /// joins it; answers how that persist went.
    pub(crate) async fn stop(self, within: Duration) -> Result<(), StoreError> {
        let Self {
            stop, done, thread, ..
        } = self;
        // A send fails only when the thread has ended already; `done` then says how.
        let _ = stop.send(());
        let last = match tokio::time::timeout(within, done).await {
            Ok(Ok(last)) => last,
            Ok(Err(_)) => Err(StoreError::ThreadEnded {
                thread: "sm-persist",
            }),
            Err(_) => {
                return Err(StoreError::NotStopped {
                    thread: "sm-persist",
                    waited: within,
                })
            }
        };
        // It has sent its last word: joining it takes no longer than its return.
        match tokio::task::spawn_blocking(move || thread.join()).await? {
            Ok(()) => last,
            Err(_) => Err(StoreError::ThreadEnded {
                thread: "sm-persist",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Default)]
    struct Counting {
        persists: AtomicUsize,
        last: AtomicUsize,
    }

    impl Persist for Counting {
        fn persist_now(&self) {
            self.persists.fetch_add(1, Ordering::SeqCst);
        }

        fn persist_last(&self) -> Result<(), StoreError> {
            self.last.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }

    /// Stopping runs the last persist once and ends the thread before it returns, even with
    /// an interval far longer than the test.
    #[tokio::test]
    async fn a_stopped_thread_persists_once_more_and_ends() -> Result<(), StoreError> {
        let target = Arc::new(Counting::default());
        let persister = Persister::spawn(Arc::downgrade(&target), Duration::from_secs(3600))?;
        let watch = persister.watch();
        assert!(!watch.is_finished(), "the thread runs");
        persister.stop(Duration::from_secs(5)).await?;
        assert!(watch.is_finished(), "stop returned with the thread ended");
        assert_eq!(target.last.load(Ordering::SeqCst), 1, "one last persist");
        assert_eq!(target.persists.load(Ordering::SeqCst), 0, "no periodic one");
        Ok(())
    }

    /// A store dropped without a stop does not keep its thread: it ends without waiting for
    /// its interval.
    #[tokio::test]
    async fn a_dropped_store_ends_its_thread() -> Result<(), StoreError> {
        let target = Arc::new(Counting::default());
        let persister = Persister::spawn(Arc::downgrade(&target), Duration::from_secs(3600))?;
        let watch = persister.watch();
        drop(persister);
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !watch.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the thread still runs 5 s after its store was dropped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(target.last.load(Ordering::SeqCst), 0, "no last persist");
        Ok(())
    }
}
