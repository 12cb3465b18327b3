//! The hand-written rows against the serde types they replaced (kept here as the reference:
//! the bytes Cinder clients got before must not change).

use serde::Serialize;

use super::*;
use crate::json::list::write_list;
use crate::json::service::tests::sample_records;

/// The former body of `GET /v3/os-services`, serialized with serde.
#[derive(Serialize)]
struct ServicesView {
    services: Vec<ServiceRow>,
}

/// The former row: `Option<Option<_>>` fields are absent (outer `None`) at microversions or
/// on binaries that do not show them, and `null` (inner `None`) when shown without a value.
#[derive(Serialize)]
struct ServiceRow {
    binary: String,
    host: String,
    zone: String,
    status: Status,
    state: State,
    updated_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<Option<String>>,
    disabled_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    active_backend_id: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    frozen: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    backend_state: Option<Option<State>>,
}

impl ServiceRow {
    fn new(s: &ServiceOut, version: ApiVersion) -> Self {
        let volume = s.binary == VOLUME_BINARY;
        let listed = match (s.updated_at, s.modified_at) {
            (Some(u), Some(m)) => Some(u.max(m)),
            (u, m) => u.or(m),
        };
        Self {
            binary: s.binary.clone(),
            host: s.host.clone(),
            zone: s.availability_zone.clone(),
            status: s.status,
            state: s.state,
            updated_at: listed.map(naive_utc),
            cluster: version
                .at_least(ApiVersion::CLUSTER)
                .then(|| s.cluster_name.clone()),
            disabled_reason: s.disabled_reason.clone(),
            replication_status: volume.then(|| s.replication_status.clone()),
            active_backend_id: volume.then(|| s.active_backend_id.clone()),
            frozen: volume.then_some(s.frozen),
            backend_state: (volume && version.at_least(ApiVersion::BACKEND_STATE))
                .then_some(Some(s.state)),
        }
    }
}

const VERSIONS: [u32; 7] = [0, 6, 7, 48, 49, 50, 71];

fn outs() -> Vec<ServiceOut> {
    sample_records()
        .iter()
        .enumerate()
        .map(|(i, r)| crate::wire::service_out(r, if i % 3 == 1 { State::Down } else { State::Up }))
        .collect()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn serde_bytes(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_else(|e| panic!("serde_json failed: {e}"))
}

/// Rows from a record and from a native answer are the former rows' bytes, at every
/// microversion that changes them, for records with every optional field set and unset.
#[test]
fn rows_are_the_former_rows_bytes() {
    let records = sample_records();
    for v in VERSIONS.map(ApiVersion::new) {
        for (r, s) in records.iter().zip(outs()) {
            let expected = serde_bytes(&ServiceRow::new(&s, v));
            let mut from_out = Vec::new();
            push_row(&mut from_out, &RowSource::of_out(&s), v);
            assert_eq!(text(&from_out), text(&expected), "{v:?}");
            let mut from_record = Vec::new();
            push_row(&mut from_record, &RowSource::of_record(r, s.state), v);
            assert_eq!(text(&from_record), text(&expected), "{v:?}");
        }
    }
}

#[test]
fn lists_are_the_former_lists_bytes() {
    let outs = outs();
    for v in VERSIONS.map(ApiVersion::new) {
        for n in [0, 1, outs.len()] {
            let body = write_list(&outs[..n], |buf, s| push_row(buf, &RowSource::of_out(s), v));
            let expected = serde_bytes(&ServicesView {
                services: outs[..n].iter().map(|s| ServiceRow::new(s, v)).collect(),
            });
            assert_eq!(text(&body), text(&expected));
        }
    }
}

fn out(binary: &str) -> ServiceOut {
    let t = DateTime::parse_from_rfc3339("2026-11-28T03:13:19.425419123Z")
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_default();
    ServiceOut {
        id: 1,
        host: "node1@lvm".into(),
        binary: binary.into(),
        topic: binary.into(),
        report_count: 3,
        state: State::Up,
        status: Status::Enabled,
        disabled: false,
        disabled_reason: None,
        availability_zone: "nova".into(),
        created_at: t,
        updated_at: Some(t),
        modified_at: None,
        modified_by: None,
        rpc_current_version: None,
        object_current_version: None,
        replication_status: "not-capable".into(),
        frozen: false,
        active_backend_id: None,
        cluster_name: None,
        forced_down: false,
    }
}

fn row(s: &ServiceOut, v: u32) -> serde_json::Value {
    let mut buf = Vec::new();
    push_row(&mut buf, &RowSource::of_out(s), ApiVersion::new(v));
    serde_json::from_slice(&buf).unwrap_or_else(|e| panic!("not JSON: {e}: {}", text(&buf)))
}

fn keys(s: &ServiceOut, v: u32) -> Vec<String> {
    let mut keys: Vec<String> = row(s, v)
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// The fields of each microversion, for volume and other binaries.
#[test]
fn fields_per_microversion() {
    let base = [
        "binary",
        "disabled_reason",
        "host",
        "state",
        "status",
        "updated_at",
        "zone",
    ];
    let sched = out("cinder-scheduler");
    let vol = out(VOLUME_BINARY);
    let sorted = |extra: &[&str]| {
        let mut k: Vec<String> = base.iter().chain(extra).map(|s| s.to_string()).collect();
        k.sort();
        k
    };
    assert_eq!(keys(&sched, 0), sorted(&[]));
    assert_eq!(keys(&sched, 7), sorted(&["cluster"]));
    assert_eq!(keys(&sched, 71), sorted(&["cluster"]));
    let repl = ["replication_status", "active_backend_id", "frozen"];
    assert_eq!(keys(&vol, 0), sorted(&repl));
    assert_eq!(keys(&vol, 48), sorted(&[&repl[..], &["cluster"]].concat()));
    assert_eq!(
        keys(&vol, 49),
        sorted(&[&repl[..], &["cluster", "backend_state"]].concat())
    );
}

/// Times are naive with six digits; the newer of heartbeat and change is listed.
#[test]
fn naive_time_shows_the_newer_change() {
    let mut s = out(VOLUME_BINARY);
    assert_eq!(row(&s, 0)["updated_at"], "2026-11-28T03:13:19.425419");
    let later = s.created_at + chrono::Duration::seconds(5);
    s.modified_at = Some(later);
    assert_eq!(row(&s, 0)["updated_at"], "2026-11-28T03:13:24.425419");
    s.updated_at = None;
    s.modified_at = None;
    assert_eq!(row(&s, 0)["updated_at"], serde_json::Value::Null);
}
