//! A service list as read from the state machine: the shared records, taken under the
//! state's lock (a counter increment each), and written out after it is released, so that a
//! long list never holds up the applies waiting on that lock.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use registry_storage::ServiceRecord;

use tokio::sync::OwnedSemaphorePermit;

use crate::json::list::{close_at, list_response_closed};
use crate::json::service::push_service;
use crate::liveness::{Liveness, State};

/// The records of one list, with what their state is judged by.
#[derive(Debug, Clone)]
pub struct Listing {
    /// The live records that match the query, ordered by (host, binary).
    pub records: Vec<Arc<ServiceRecord>>,
    /// Registry time at which their state is judged.
    pub now: DateTime<Utc>,
    /// The liveness rule.
    pub liveness: Liveness,
    /// The applied index the records reflect.
    pub applied: Option<u64>,
}

impl Listing {
    /// The state of `r` at this list's time.
    pub fn state(&self, r: &ServiceRecord) -> State {
        self.liveness.state(r, self.now)
    }

    /// The answer of `GET /v1/services`: the JSON of `ServicesOut` for these records, kept
    /// `permit` while it is written (see [`list_response_closed`]); it ends with the applied
    /// index the list reflects.
    pub fn native_response(self, permit: Option<OwnedSemaphorePermit>) -> warp::reply::Response {
        let rule = self.liveness.at(self.now);
        list_response_closed(
            self.records,
            move |buf, r| push_service(buf, r, rule.state(r)),
            permit,
            close_at(self.applied),
        )
    }
}
