//! A service as `GET /v1/services` lists it, written from the shared record: the bytes of
//! `serde_json` for [`crate::wire::ServiceOut`], field for field.

use registry_storage::ServiceRecord;

use super::time::push_rfc3339;
use super::{push_bool, push_opt_str, push_str, push_u64};
use crate::liveness::State;

/// The JSON string of a state, as its `Serialize` writes it.
pub fn state_str(state: State) -> &'static [u8] {
    match state {
        State::Up => b"\"up\"",
        State::Down => b"\"down\"",
    }
}

/// Appends the listed form of `r` with its computed `state` (the JSON of
/// `crate::wire::service_out(r, state)`).
pub fn push_service(buf: &mut Vec<u8>, r: &ServiceRecord, state: State) {
    buf.extend_from_slice(b"{\"id\":");
    push_u64(buf, r.id);
    buf.extend_from_slice(b",\"host\":");
    push_str(buf, &r.host);
    buf.extend_from_slice(b",\"binary\":");
    push_str(buf, &r.binary);
    buf.extend_from_slice(b",\"topic\":");
    push_str(buf, &r.topic);
    buf.extend_from_slice(b",\"report_count\":");
    push_u64(buf, r.report_count);
    buf.extend_from_slice(b",\"state\":");
    buf.extend_from_slice(state_str(state));
    buf.extend_from_slice(if r.disabled {
        b",\"status\":\"disabled\",\"disabled\":true,\"disabled_reason\":"
    } else {
        b",\"status\":\"enabled\",\"disabled\":false,\"disabled_reason\":"
    });
    push_opt_str(buf, r.disabled_reason.as_deref());
    buf.extend_from_slice(b",\"availability_zone\":");
    push_str(buf, &r.availability_zone);
    buf.extend_from_slice(b",\"created_at\":");
    push_rfc3339(buf, &r.created_at);
    for (key, time) in [
        (&b",\"updated_at\":"[..], &r.updated_at),
        (b",\"modified_at\":", &r.modified_at),
    ] {
        buf.extend_from_slice(key);
        match time {
            Some(t) => push_rfc3339(buf, t),
            None => buf.extend_from_slice(b"null"),
        }
    }
    buf.extend_from_slice(b",\"modified_by\":");
    push_opt_str(buf, r.modified_by.as_deref());
    buf.extend_from_slice(b",\"rpc_current_version\":");
    push_opt_str(buf, r.rpc_current_version.as_deref());
    buf.extend_from_slice(b",\"object_current_version\":");
    push_opt_str(buf, r.object_current_version.as_deref());
    buf.extend_from_slice(b",\"replication_status\":");
    push_str(buf, &r.replication_status);
    buf.extend_from_slice(b",\"frozen\":");
    push_bool(buf, r.frozen);
    buf.extend_from_slice(b",\"active_backend_id\":");
    push_opt_str(buf, r.active_backend_id.as_deref());
    buf.extend_from_slice(b",\"cluster_name\":");
    push_opt_str(buf, r.cluster_name.as_deref());
    buf.extend_from_slice(b",\"forced_down\":");
    push_bool(buf, r.forced_down);
    buf.push(b'}');
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use chrono::{DateTime, TimeZone, Utc};
    use registry_storage::ServiceRecord;

    use super::*;
    use crate::json::list::write_list;
    use crate::wire::ServicesOut;

    /// Strings that need escaping, or not.
    const ODD: [&str; 6] = [
        "node1@lvm#pool",
        "quote\" back\\slash /slash",
        "ctl\u{1}\u{1f}\t\n\r\u{8}\u{c}",
        "é日本😀\u{2028}\u{7f}",
        "",
        "</script>&<>'",
    ];

    /// Records with every optional field set and unset, every flag on and off, and times
    /// with 0, 3, 6 and 9 fractional digits.
    pub(crate) fn sample_records() -> Vec<ServiceRecord> {
        let t = |micros: i64, extra_nanos: u32| -> DateTime<Utc> {
            Utc.timestamp_micros(micros)
                .single()
                .map(|t| t + chrono::Duration::nanoseconds(i64::from(extra_nanos)))
                .unwrap_or_default()
        };
        let times = [
            t(1_795_000_000_000_000, 0),
            t(1_795_000_000_123_000, 0),
            t(1_795_000_000_123_456, 0),
            t(1_795_000_000_123_456, 789),
        ];
        (0..48)
            .map(|i: usize| {
                let odd = |k: usize| ODD[(i + k) % ODD.len()].to_string();
                let shared = |k: usize| std::sync::Arc::<str>::from(ODD[(i + k) % ODD.len()]);
                let some = |k: usize| (i >> k) & 1 == 1;
                ServiceRecord {
                    id: (i as u64) * 1_000_003,
                    host: shared(0),
                    binary: if i.is_multiple_of(3) {
                        "cinder-volume".into()
                    } else {
                        shared(1)
                    },
                    topic: shared(2),
                    report_count: u64::MAX - i as u64,
                    disabled: some(0),
                    disabled_reason: some(1).then(|| odd(3)),
                    availability_zone: shared(4),
                    created_at: times[i % 4],
                    updated_at: some(2).then(|| times[(i + 1) % 4]),
                    modified_at: some(3).then(|| times[(i + 2) % 4]),
                    modified_by: some(4).then(|| odd(0)),
                    deleted: false,
                    deleted_at: None,
                    rpc_current_version: some(4).then(|| shared(5)),
                    object_current_version: some(0).then(|| shared(1)),
                    replication_status: shared(3),
                    frozen: some(1),
                    active_backend_id: some(3).then(|| shared(2)),
                    cluster_name: some(5).then(|| shared(4)),
                    forced_down: some(2),
                    last_seen: times[0],
                }
            })
            .collect()
    }

    #[test]
    fn a_row_is_the_json_of_service_out() {
        for r in sample_records() {
            for state in [State::Up, State::Down] {
                let mut buf = Vec::new();
                push_service(&mut buf, &r, state);
                let expected = serde_json::to_vec(&crate::wire::service_out(&r, state))
                    .unwrap_or_else(|e| panic!("serde_json failed: {e}"));
                assert_eq!(
                    String::from_utf8_lossy(&buf),
                    String::from_utf8_lossy(&expected)
                );
            }
        }
    }

    #[test]
    fn a_list_is_the_json_of_services_out() {
        let records: Vec<Arc<ServiceRecord>> = sample_records().into_iter().map(Arc::new).collect();
        let state = |r: &ServiceRecord| {
            if r.id.is_multiple_of(2) {
                State::Up
            } else {
                State::Down
            }
        };
        for n in [0, 1, 2, records.len()] {
            let body = write_list(&records[..n], |buf, r| push_service(buf, r, state(r)));
            let services = records[..n]
                .iter()
                .map(|r| crate::wire::service_out(r, state(r)))
                .collect();
            let expected = serde_json::to_vec(&ServicesOut {
                services,
                applied_index: None,
            })
            .unwrap_or_else(|e| panic!("serde_json failed: {e}"));
            assert_eq!(
                String::from_utf8_lossy(&body),
                String::from_utf8_lossy(&expected)
            );
        }
    }
}
