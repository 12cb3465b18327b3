//! The systems a workload runs against, behind one interface: send request `group` (a
//! fixed set of services' heartbeats) through endpoint `endpoint`.

use std::future::Future;

use crate::stats::Failure;

pub mod registry;

#[cfg(feature = "etcd")]
pub mod etcd;

/// A system under test, ready to send any of its prepared requests.
pub trait Target: Send + Sync + 'static {
    /// Name printed in tables.
    fn label(&self) -> String;

    /// Number of distinct requests (groups of services) it prepared.
    fn groups(&self) -> usize;

    /// Heartbeats carried by request `group`.
    fn beats_in(&self, group: usize) -> usize;

    /// Number of endpoints (nodes) it can send to.
    fn endpoints(&self) -> usize;

    /// Sends request `group` to endpoint `endpoint` (modulo the number of endpoints) and
    /// waits for its acknowledgement. `lane` tells concurrent senders apart (a client may
    /// use it to pick one of several connections).
    fn send(
        &self,
        lane: usize,
        endpoint: usize,
        group: usize,
    ) -> impl Future<Output = Result<(), Failure>> + Send;

    /// The load generator skipped request `group` at its scheduled time (every request
    /// slot busy): its services missed a heartbeat, as a reporter whose previous heartbeat
    /// is still in flight at its tick does.
    fn skipped(&self, _group: usize) {}

    /// The Raft term of the system now: the highest any of its nodes reports (`None` when
    /// the system tells none or no node answered). Read at the window boundaries of a run,
    /// so that elections during it show.
    fn raft_term(&self) -> impl Future<Output = Option<u64>> + Send {
        async { None }
    }
}
