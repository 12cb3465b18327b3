//! The types of format 1 whose encoding later formats changed, kept to read what format 1
//! wrote: bincode is not self-describing, so a value is decoded as exactly the type that
//! encoded it, and the stored format version says which that was.
//!
//! Format 2 added [`ServiceRecord::modified_by`]. Nothing else changed: a log entry of
//! format 1 decodes as today's [`crate::Command`] (commands of later formats are variants
//! added at the end of the enum), and every other stored value keeps its encoding.

use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::model::ServiceRecord;

/// A [`ServiceRecord`] as format 1 encoded it: the same fields in the same order, without
/// `modified_by`.
#[derive(Deserialize)]
pub(crate) struct ServiceRecordV1 {
    id: u64,
    host: String,
    binary: String,
    topic: String,
    report_count: u64,
    disabled: bool,
    disabled_reason: Option<String>,
    availability_zone: String,
    #[serde(with = "chrono::serde::ts_microseconds")]
    created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    updated_at: Option<DateTime<Utc>>,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    modified_at: Option<DateTime<Utc>>,
    deleted: bool,
    #[serde(with = "chrono::serde::ts_microseconds_option")]
    deleted_at: Option<DateTime<Utc>>,
    rpc_current_version: Option<String>,
    object_current_version: Option<String>,
    replication_status: String,
    frozen: bool,
    active_backend_id: Option<String>,
    cluster_name: Option<String>,
    forced_down: bool,
    #[serde(with = "chrono::serde::ts_microseconds")]
    last_seen: DateTime<Utc>,
}

impl From<ServiceRecordV1> for ServiceRecord {
    fn from(r: ServiceRecordV1) -> Self {
        ServiceRecord {
            id: r.id,
            host: r.host.into(),
            binary: r.binary.into(),
            topic: r.topic.into(),
            report_count: r.report_count,
            disabled: r.disabled,
            disabled_reason: r.disabled_reason,
            availability_zone: r.availability_zone.into(),
            created_at: r.created_at,
            updated_at: r.updated_at,
            modified_at: r.modified_at,
            modified_by: None,
            deleted: r.deleted,
            deleted_at: r.deleted_at,
            rpc_current_version: r.rpc_current_version.map(Into::into),
            object_current_version: r.object_current_version.map(Into::into),
            replication_status: r.replication_status.into(),
            frozen: r.frozen,
            active_backend_id: r.active_backend_id.map(Into::into),
            cluster_name: r.cluster_name.map(Into::into),
            forced_down: r.forced_down,
            last_seen: r.last_seen,
        }
    }
}
