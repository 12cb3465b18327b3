//! The simulated services: their identities, the registry's request bodies and the etcd
//! keys and values for the same services.
//!
//! Service `i` runs on host `{prefix}-h{i / 4}` as one of four Cinder/Nova binaries, so a
//! host-filtered list returns four services, as on a real storage or compute host.

use bytes::Bytes;
use registry_api::wire::HeartbeatIn;

/// Services per simulated host.
pub const PER_HOST: usize = 4;
/// The binaries of a host's services.
pub const BINARIES: [&str; PER_HOST] = [
    "cinder-volume",
    "cinder-backup",
    "cinder-scheduler",
    "nova-compute",
];

/// The host of service `i`.
pub fn host(prefix: &str, i: usize) -> String {
    format!("{prefix}-h{:07}", i / PER_HOST)
}

/// The binary of service `i`.
pub fn binary(i: usize) -> &'static str {
    BINARIES[i % PER_HOST]
}

/// Service `i`'s heartbeat, with the fields a Cinder service reports.
pub fn heartbeat(prefix: &str, i: usize) -> HeartbeatIn {
    let mut hb = HeartbeatIn::new(host(prefix, i), binary(i));
    hb.topic = Some(binary(i).to_string());
    hb.availability_zone = Some("nova".into());
    hb.rpc_current_version = Some("3.17".into());
    hb.object_current_version = Some("1.39".into());
    hb
}

/// Services `0..n` cut into requests of `batch` heartbeats (the last one may be shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Groups {
    /// Services.
    pub services: usize,
    /// Heartbeats per request.
    pub batch: usize,
}

impl Groups {
    /// `services` services in requests of `batch` (both at least 1).
    pub fn new(services: usize, batch: usize) -> Self {
        Self {
            services: services.max(1),
            batch: batch.max(1),
        }
    }

    /// Number of requests that cover every service once.
    pub fn count(&self) -> usize {
        self.services.div_ceil(self.batch)
    }

    /// The services of request `g`.
    pub fn members(&self, g: usize) -> std::ops::Range<usize> {
        let start = g * self.batch;
        start..(start + self.batch).min(self.services)
    }
}

/// The body of each request: one heartbeat object when `batch` is 1, else an array.
pub fn registry_bodies(prefix: &str, groups: Groups) -> Vec<Bytes> {
    (0..groups.count())
        .map(|g| {
            let beats: Vec<HeartbeatIn> = groups.members(g).map(|i| heartbeat(prefix, i)).collect();
            let json = if groups.batch == 1 {
                serde_json::to_vec(&beats[0])
            } else {
                serde_json::to_vec(&beats)
            };
            Bytes::from(json.expect("heartbeats serialise"))
        })
        .collect()
}

/// The etcd key of service `i`.
pub fn etcd_key(prefix: &str, i: usize) -> String {
    format!("/registry/services/{}/{}", host(prefix, i), binary(i))
}

/// The etcd key prefix of every service of `prefix`'s host of service `i`.
pub fn etcd_host_prefix(prefix: &str, i: usize) -> String {
    format!("/registry/services/{}/", host(prefix, i))
}

/// The etcd key prefix of every service.
pub const ETCD_PREFIX: &str = "/registry/services/";

/// Service `i`'s record as an etcd value: the JSON the registry lists for a service (the
/// same fields, a similar size).
pub fn etcd_value(prefix: &str, i: usize) -> Vec<u8> {
    let now = "2026-11-29T12:00:00.000000Z";
    serde_json::to_vec(&serde_json::json!({
        "id": i + 1,
        "host": host(prefix, i),
        "binary": binary(i),
        "topic": binary(i),
        "report_count": 1,
        "state": "up",
        "status": "enabled",
        "disabled": false,
        "disabled_reason": null,
        "availability_zone": "nova",
        "created_at": now,
        "updated_at": now,
        "modified_at": null,
        "rpc_current_version": "3.17",
        "object_current_version": "1.39",
        "replication_status": "not-capable",
        "frozen": false,
        "active_backend_id": null,
        "cluster_name": null,
        "forced_down": false
    }))
    .expect("record serialises")
}
