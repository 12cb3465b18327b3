//! `GET /metrics`: the counters of [`crate::metrics::Metrics`] and gauges computed at scrape
//! time from openraft's metrics, the node's Raft state and its in-memory services table, so
//! they are never stale.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use chrono::Utc;
use openraft::ServerState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{Status, READY_MAX_LAG};
use crate::liveness::State;
use crate::metrics::PREFIX;
use crate::shared::leader_of;

/// A follower of the leader, by node id.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FollowerLabels {
    follower: String,
}

/// A Raft server state.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// Labels of `registry_cluster_info`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IdentityLabels {
    /// The cluster id, or `none` before the node belongs to one.
    cluster_id: String,
    /// The store's incarnation.
    incarnation: String,
}

/// An availability zone and a state (`up` or `down`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ZoneLabels {
    zone: String,
    state: &'static str,
}

/// Which certificate of the node's TLS.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CertificateLabels {
    certificate: &'static str,
}

/// Gauges read at scrape time, in a registry of their own built for each scrape.
struct Gauges(Registry);

impl Gauges {
    fn int(&mut self, name: &str, help: &str, value: u64) {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(value).unwrap_or(i64::MAX));
        self.0.register(name, help, g);
    }

    /// A gauge that is left out while its value is unknown.
    fn opt_int(&mut self, name: &str, help: &str, value: Option<u64>) {
        if let Some(v) = value {
            self.int(name, help, v);
        }
    }

    fn float(&mut self, name: &str, help: &str, value: f64) {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        self.0.register(name, help, g);
    }

    fn flag(&mut self, name: &str, help: &str, on: bool) {
        self.int(name, help, u64::from(on));
    }
}

/// The counts of live (not removed) services by state and flag, at registry time `now`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct ServiceCounts {
    up: u64,
    down: u64,
    disabled: u64,
    forced_down: u64,
    frozen: u64,
    /// Up and down services by availability zone.
    zones: BTreeMap<Arc<str>, (u64, u64)>,
}

/// The resident memory of this process (`VmRSS` of `/proc/self/status`), on Linux.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Renders every metric of the node in the Prometheus text format.
pub async fn render(status: &Status) -> Result<String, std::fmt::Error> {
    let shared = &status.shared;
    let m = shared.raft.metrics().borrow().clone();
    let committed = shared.committed_index().await;
    let leader_commit = shared.leader_commit_index().await;
    let ready = status.ready().await.is_ok();

    let mut g = Gauges(Registry::with_prefix(PREFIX));
    g.int("node_id", "This node's id", m.id);
    let identity = Family::<IdentityLabels, Gauge>::default();
    identity
        .get_or_create(&IdentityLabels {
            cluster_id: shared
                .identity
                .cluster_id()
                .map_or_else(|| "none".to_string(), |c| c.to_string()),
            incarnation: shared.identity.incarnation().to_string(),
        })
        .set(1);
    g.0.register(
        "cluster_info",
        "Always 1; labelled with the cluster this node belongs to and its store's incarnation",
        identity,
    );
    g.int("raft_term", "Current Raft term", m.current_term);
    let leads = m.state == ServerState::Leader;
    g.flag(
        "raft_is_leader",
        "1 when this node is the leader, else 0",
        leads,
    );
    let states = Family::<StateLabels, Gauge>::default();
    for (state, name) in [
        (ServerState::Leader, "leader"),
        (ServerState::Follower, "follower"),
        (ServerState::Candidate, "candidate"),
        (ServerState::Learner, "learner"),
        (ServerState::Shutdown, "shutdown"),
    ] {
        states
            .get_or_create(&StateLabels { state: name })
            .set(i64::from(m.state == state));
    }
    g.0.register(
        "raft_server_state",
        "1 for this node's Raft server state, 0 for the others",
        states,
    );
    let leader = leader_of(&m);
    g.opt_int(
        "raft_leader_id",
        "Id of the leader this node knows (absent when it knows none)",
        leader,
    );
    g.opt_int(
        "raft_last_log_index",
        "Index of the last entry in this node's log",
        m.last_log_index,
    );
    g.opt_int(
        "raft_committed_index",
        "Commit index this node's Raft state holds (on a follower, at most what it has \
         appended of the leader's commit)",
        committed,
    );
    g.opt_int(
        "raft_leader_commit_index",
        "Leader's commit index as this node last heard it (AppendEntries leader_commit; on \
         the leader, its own commit index)",
        leader_commit,
    );
    let applied = m.last_applied.map(|l| l.index);
    g.opt_int(
        "raft_applied_index",
        "Index of the last entry applied to this node's state machine",
        applied,
    );
    if let Some(commit) = leader_commit {
        g.int(
            "raft_apply_lag_entries",
            &format!(
                "Entries of the leader's commit index (as this node knows it) not yet applied \
                 here; /ready needs it at most {READY_MAX_LAG}"
            ),
            commit.saturating_sub(applied.unwrap_or(0)),
        );
    }
    g.opt_int(
        "raft_snapshot_index",
        "Last log index included in this node's latest snapshot",
        m.snapshot.map(|l| l.index),
    );
    g.opt_int(
        "raft_purged_index",
        "Last log index purged from this node's log (inclusive)",
        m.purged.map(|l| l.index),
    );
    if let Some(replication) = &m.replication {
        let matched = Family::<FollowerLabels, Gauge>::default();
        let lag = Family::<FollowerLabels, Gauge>::default();
        let last = m.last_log_index.unwrap_or(0);
        for (id, log_id) in replication.iter().filter(|(id, _)| **id != m.id) {
            let labels = FollowerLabels {
                follower: id.to_string(),
            };
            let index = log_id.map(|l| l.index);
            matched
                .get_or_create(&labels)
                .set(index.map_or(-1, |i| i64::try_from(i).unwrap_or(i64::MAX)));
            let behind = match index {
                Some(i) => last.saturating_sub(i),
                None => last + 1,
            };
            lag.get_or_create(&labels)
                .set(i64::try_from(behind).unwrap_or(i64::MAX));
        }
        g.0.register(
            "raft_replication_matched_index",
            "On the leader: last log index known replicated to each follower (-1: none yet)",
            matched,
        );
        g.0.register(
            "raft_replication_lag_entries",
            "On the leader: entries of its log not yet replicated to each follower",
            lag,
        );
    }
    if let Some(ms) = m.millis_since_quorum_ack.filter(|_| leads) {
        g.float(
            "raft_quorum_ack_age_seconds",
            "On the leader: seconds since a quorum last acknowledged it (openraft's \
             millis_since_quorum_ack)",
            ms as f64 / 1000.0,
        );
    }
    if let Some(ms) = shared.millis_since_leader_contact() {
        g.float(
            "leader_contact_age_seconds",
            "Seconds since a leader last reached this node (on the leader: since its quorum \
             acknowledged it); /health and /ready need it under 1.5 s",
            ms as f64 / 1000.0,
        );
    }
    g.flag(
        "healthy",
        "1 when /health answers 200 (in a cluster with a leader heard from recently)",
        status.healthy().is_ok(),
    );
    g.flag(
        "ready",
        "1 when /ready answers 200 (healthy, and caught up with the leader's commit index)",
        ready,
    );

    let view = &shared.view;
    let stamp = view.last_stamp();
    let now = stamp.registry_now();
    let rule = shared.liveness();
    let judged_at = now.unwrap_or_else(Utc::now);
    let counts = view.read(|state| {
        let mut c = ServiceCounts::default();
        for r in state.records().filter(|r| !r.deleted) {
            let zone = c.zones.entry(r.availability_zone.clone()).or_default();
            match rule.state(r, judged_at) {
                State::Up => {
                    c.up += 1;
                    zone.0 += 1;
                }
                State::Down => {
                    c.down += 1;
                    zone.1 += 1;
                }
            }
            c.disabled += u64::from(r.disabled);
            c.forced_down += u64::from(r.forced_down);
            c.frozen += u64::from(r.frozen);
        }
        c
    });
    let judged = "judged now on this node's registry time";
    g.int(
        "services_up",
        &format!("Services (not removed) whose state is up, {judged}"),
        counts.up,
    );
    g.int(
        "services_down",
        &format!("Services (not removed) whose state is down (silent or forced down), {judged}"),
        counts.down,
    );
    let zones = Family::<ZoneLabels, Gauge>::default();
    for (zone, (up, down)) in &counts.zones {
        for (state, n) in [("up", up), ("down", down)] {
            zones
                .get_or_create(&ZoneLabels {
                    zone: zone.to_string(),
                    state,
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }
    g.0.register(
        "zone_services",
        format!(
            "Services (not removed) by availability zone and state (up or down), {judged}; \
             both states of every zone that has a service"
        ),
        zones,
    );
    let (disruption, suspect) = view.read(|state| {
        let z = state.zones();
        let states: Vec<(String, registry_storage::zones::ZoneState)> =
            z.iter().map(|(name, _, s)| (name.clone(), s)).collect();
        (states, z.suspect())
    });
    let zone_states = Family::<ZoneLabels, Gauge>::default();
    for (zone, state) in &disruption {
        use registry_storage::zones::ZoneState as Z;
        for (name, s) in [
            ("normal", Z::Normal),
            ("partial-disruption", Z::PartialDisruption),
            ("full-disruption", Z::FullDisruption),
        ] {
            zone_states
                .get_or_create(&ZoneLabels {
                    zone: zone.clone(),
                    state: name,
                })
                .set(i64::from(*state == s));
        }
    }
    g.0.register(
        "zone_disruption",
        "1 for the disruption state each availability zone is in (normal, partial-disruption, \
         full-disruption) as of the applied index, judged over its enabled services; 0 for the \
         other two",
        zone_states,
    );
    g.flag(
        "suspect",
        "1 when every zone with enabled services is in full disruption at once: more likely the \
         network or the registry than every service; fencing must not act on it",
        suspect,
    );
    g.float(
        "clock_rate",
        "How fast registry time runs against the leader's clock as of the applied index: 1 \
         normally, less while the registry refuses heartbeats for overload (a refused \
         heartbeat could not have landed, so that time counts against services only in part)",
        f64::from(view.read(|s| s.clock.rate.permille())) / 1000.0,
    );
    let (events_held, events_kept) = view.events().len_and_capacity();
    g.int(
        "events_held",
        "Events this node holds for watchers to resume from",
        events_held as u64,
    );
    g.int(
        "events_kept_max",
        "The most events this node keeps (events.kept)",
        events_kept as u64,
    );
    g.int(
        "event_streams",
        "Event streams (GET /v1/events) open on this node",
        shared.watchers.open() as u64,
    );
    g.int(
        "services_disabled",
        "Services (not removed) an operator disabled",
        counts.disabled,
    );
    g.int(
        "services_forced_down",
        "Services (not removed) an operator forced down",
        counts.forced_down,
    );
    g.int(
        "services_frozen",
        "Services (not removed) an operator froze",
        counts.frozen,
    );
    if let Some(now) = now {
        let offset = Utc::now() - now;
        g.float(
            "clock_offset_seconds",
            "This node's wall clock minus registry time as this node extrapolates it (the \
             leader's clock stamped into the last applied entry, advanced by this node's \
             monotonic clock since, for at most 1 s). Registry time follows the leader's \
             clock but skips time without a leader and never goes back, so this is this \
             node's clock offset to the leader plus the registry downtime accumulated so \
             far; a step in it is an outage or a clock change, a slope a drifting clock",
            offset.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6,
        );
    }
    if let Some(stamped) = stamp.clock.last_wall {
        let since = chrono::Duration::from_std(stamp.elapsed).unwrap_or_default();
        let offset = Utc::now() - (stamped + since);
        g.float(
            "leader_clock_offset_seconds",
            "This node's wall clock minus the leader's, estimated as now minus (the leader's \
             wall time stamped in the last entry applied here plus the monotonic time since \
             it was applied); includes the replication delay (milliseconds)",
            offset.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6,
        );
    }
    g.int(
        "http_requests_in_flight",
        "Public requests being served now (Raft RPCs and probes are not counted)",
        shared.admission.in_flight() as u64,
    );
    g.int(
        "http_connections_open",
        "HTTP connections open on this node now (clients and peers)",
        shared.connections.open_now() as u64,
    );
    g.int(
        "http_max_connections",
        "Most HTTP connections this node keeps open; past it a new one is closed at once",
        shared.connections.max() as u64,
    );
    g.int(
        "http_max_concurrent_requests",
        "Most public requests this node serves at once before answering 503",
        shared.settings.max_concurrent_requests as u64,
    );

    match registry_storage::headroom::disk_space(&shared.data_dir) {
        Ok(space) => {
            g.int(
                "disk_available_bytes",
                "Bytes still free to the node on the filesystem of its data directory",
                space.available,
            );
            g.int(
                "disk_size_bytes",
                "Size of the filesystem of the node's data directory, in bytes",
                space.total,
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, dir = %shared.data_dir.display(), "statvfs of the data directory failed; no disk metrics");
        }
    }
    if let Some(bytes) = resident_bytes() {
        g.int(
            "process_resident_memory_bytes",
            "Resident memory of the node's process (VmRSS), in bytes",
            bytes,
        );
    }
    if let Some(tls) = &shared.tls {
        let expiry = Family::<CertificateLabels, Gauge<f64, AtomicU64>>::default();
        let now = Utc::now().timestamp();
        for (certificate, at) in [("node", tls.cert_not_after()), ("ca", tls.ca_not_after())] {
            if let Some(at) = at {
                expiry
                    .get_or_create(&CertificateLabels { certificate })
                    .set((at - now) as f64);
            }
        }
        g.0.register(
            "tls_certificate_expires_in_seconds",
            "Seconds until the certificate stops being valid (notAfter minus now; negative \
             once expired): `node` is the certificate in use (it follows a reload), `ca` the \
             first to expire of the cluster CA bundle",
            expiry,
        );
    }

    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, &shared.metrics.registry)?;
    prometheus_client::encoding::prometheus_text::encode(&mut out, &g.0)?;
    Ok(out)
}
