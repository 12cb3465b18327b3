//! The services table in memory, and the deterministic rules that change it.
//!
//! [`ServicesState`] is the state machine's contents: the records and the log id they reflect.
//! On disk it is the snapshot file and the log after it (see [`crate::state_machine`]); this
//! copy serves reads and snapshots, so a snapshot always pairs the records with exactly the
//! applied log id they reflect.
//!
//! Records are shared (`Arc`) and copied on write: a reader takes the `Arc`s it needs under
//! the lock and works on them after releasing it, and an apply changes a record in place
//! unless a reader still holds it, in which case it changes a copy.

use std::collections::{btree_map, BTreeMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SubsecRound, Utc};
use openraft::EntryPayload;

use crate::clock::RegistryClock;
use crate::event_log::{EventLog, DEFAULT_EVENTS_KEPT};
use crate::events::{Event, EventKind};
use crate::settings::LivenessSettings;

use crate::model::{
    AdminAction, Command, CommandResponse, Heartbeat, ServiceKey, ServiceRecord,
    DEFAULT_AVAILABILITY_ZONE, DEFAULT_REPLICATION_STATUS,
};
use crate::types::{Entry, LogId, StoredMembership};

mod derived;
mod strings;

use derived::{Derived, Effects};
use strings::Strings;

/// The replicated services table and the Raft state applied with it.
#[derive(Debug, Clone)]
pub struct ServicesState {
    /// Log id of the last entry applied.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
    /// Id the next created record gets.
    pub next_id: u64,
    /// Registry time as of the last applied entry.
    pub clock: RegistryClock,
    /// The cluster-wide liveness settings, once the log carries them: until then no
    /// service is judged silent in what is derived (events, zones), and reads judge by the
    /// node's own file.
    pub settings: Option<LivenessSettings>,
    /// Every record by (host, binary); soft-deleted ones included.
    services: BTreeMap<ServiceKey, Arc<ServiceRecord>>,
    /// What the records, the clock and the settings imply (rebuilt, never stored).
    derived: Derived,
    /// The strings the records share (never stored, no part of what the state is).
    strings: Strings,
}

/// Two states are equal when what they replicate is: the strings they share are how they
/// hold it.
impl PartialEq for ServicesState {
    fn eq(&self, other: &Self) -> bool {
        self.last_applied == other.last_applied
            && self.membership == other.membership
            && self.next_id == other.next_id
            && self.clock == other.clock
            && self.settings == other.settings
            && self.services == other.services
            && self.derived == other.derived
    }
}

impl Eq for ServicesState {}

impl Default for ServicesState {
    fn default() -> Self {
        Self {
            last_applied: None,
            membership: StoredMembership::default(),
            next_id: 1,
            clock: RegistryClock::default(),
            settings: None,
            services: BTreeMap::new(),
            derived: Derived::default(),
            strings: Strings::default(),
        }
    }
}

impl ServicesState {
    /// Builds a state from its parts (loaded from sled or from a snapshot).
    pub fn from_parts(
        last_applied: Option<LogId>,
        membership: StoredMembership,
        next_id: u64,
        clock: RegistryClock,
        settings: Option<LivenessSettings>,
        records: impl IntoIterator<Item = impl Into<Arc<ServiceRecord>>>,
    ) -> Self {
        let mut strings = Strings::default();
        let services = records
            .into_iter()
            .map(|r| {
                let mut r = r.into();
                strings.share(Arc::make_mut(&mut r));
                (r.key(), r)
            })
            .collect();
        let mut state = Self {
            last_applied,
            membership,
            next_id,
            clock,
            settings,
            services,
            derived: Derived::default(),
            strings,
        };
        state.derived = Derived::of(state.services.values(), state.clock.now, settings);
        state
    }

    /// Applies one committed log entry; the events it yields are dropped (see
    /// [`ServicesState::apply_entry_with_events`]).
    pub fn apply_entry(&mut self, entry: &Entry) -> CommandResponse {
        self.apply_entry_with_events(entry, &mut Vec::new())
    }

    /// Applies one committed log entry, adding the events it yields to `events`, in order.
    pub fn apply_entry_with_events(
        &mut self,
        entry: &Entry,
        events: &mut Vec<Event>,
    ) -> CommandResponse {
        self.last_applied = Some(entry.log_id);
        match &entry.payload {
            EntryPayload::Blank => CommandResponse::Empty,
            EntryPayload::Membership(m) => {
                self.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                CommandResponse::Empty
            }
            EntryPayload::Normal(cmd) => {
                // The log keeps leader times to the microsecond; an entry applied from memory
                // (the leader's own, or one the log store still holds) must count exactly as
                // one read back from disk or received by a follower.
                let at = cmd.at().trunc_subsecs(6);
                let reg = self.clock.advance(at);
                let mut fx = Effects::new(entry.log_id.index, reg, events);
                self.expire(reg, &mut fx);
                let response = self.apply_command(cmd, at, reg, &mut fx);
                self.settle_zones(fx);
                response
            }
        }
    }

    fn apply_command(
        &mut self,
        cmd: &Command,
        at: DateTime<Utc>,
        reg: DateTime<Utc>,
        fx: &mut Effects<'_>,
    ) -> CommandResponse {
        match cmd {
            Command::Heartbeats { beats, .. } => {
                let records = beats
                    .iter()
                    .map(|hb| self.heartbeat(hb, at, reg, fx))
                    .collect();
                CommandResponse::Records(records)
            }
            Command::Admin { key, action, .. } => self.admin(key, action, at, None, fx),
            Command::AdminBy {
                key, action, by, ..
            } => self.admin(key, action, at, Some(by), fx),
            Command::Freeze { host, frozen, .. } => self.freeze(host, *frozen, at, None, fx),
            Command::FreezeBy {
                host, frozen, by, ..
            } => self.freeze(host, *frozen, at, Some(by), fx),
            Command::Settings { settings, .. } => {
                self.apply_settings(*settings, reg, fx);
                // Applied, changing no record.
                CommandResponse::Records(Vec::new())
            }
            Command::Tick { .. } => CommandResponse::Empty,
            Command::ClockRate { rate, .. } => {
                // The time up to this entry counted at the old rate (`advance`).
                self.clock.rate = *rate;
                CommandResponse::Empty
            }
        }
    }

    /// An administrative change to one service, made by `by` when the command says.
    fn admin(
        &mut self,
        key: &ServiceKey,
        action: &AdminAction,
        at: DateTime<Utc>,
        by: Option<&String>,
        fx: &mut Effects<'_>,
    ) -> CommandResponse {
        let Some(shared) = self.services.get_mut(key).filter(|r| !r.deleted) else {
            return CommandResponse::NotFound;
        };
        let before = self.derived.share(shared);
        let r = Arc::make_mut(shared);
        let kind = match action {
            AdminAction::Disable { reason } => {
                r.disabled = true;
                if reason.is_some() {
                    r.disabled_reason = reason.clone();
                }
                EventKind::Disabled
            }
            AdminAction::Enable => {
                r.disabled = false;
                EventKind::Enabled
            }
            AdminAction::ForceDown(down) => {
                r.forced_down = *down;
                if *down {
                    EventKind::ForcedDown
                } else {
                    EventKind::ForceCleared
                }
            }
            AdminAction::Remove => {
                r.deleted = true;
                r.deleted_at = Some(at);
                EventKind::Removed
            }
        };
        r.modified_at = Some(at);
        r.modified_by = by.cloned();
        let record = Arc::clone(shared);
        if record.deleted {
            self.derived.forget(&record, before, fx);
            fx.service(kind, &record, before.down);
        } else {
            let after = self
                .derived
                .recount(&record.availability_zone, before, &record, fx);
            fx.service(kind, &record, after.down);
        }
        CommandResponse::Records(vec![record])
    }

    /// Freezes or thaws every live service of `host`.
    fn freeze(
        &mut self,
        host: &String,
        frozen: bool,
        at: DateTime<Utc>,
        by: Option<&String>,
        fx: &mut Effects<'_>,
    ) -> CommandResponse {
        let start = ServiceKey::new(host.as_str(), "");
        let kind = if frozen {
            EventKind::Frozen
        } else {
            EventKind::Thawed
        };
        let derived = &self.derived;
        let records: Vec<Arc<ServiceRecord>> = self
            .services
            .range_mut(start..)
            .take_while(|(k, _)| *k.host == **host)
            .filter(|(_, r)| !r.deleted)
            .map(|(_, shared)| {
                let r = Arc::make_mut(shared);
                r.frozen = frozen;
                r.modified_at = Some(at);
                r.modified_by = by.cloned();
                fx.service(kind, shared, derived.share(shared).down);
                Arc::clone(shared)
            })
            .collect();
        if records.is_empty() {
            CommandResponse::NotFound
        } else {
            CommandResponse::Records(records)
        }
    }

    /// Counts a heartbeat: creates the record when the service is unknown (or was removed),
    /// else adds one to `report_count` and moves `updated_at` (leader time) and `last_seen`
    /// (registry time).
    fn heartbeat(
        &mut self,
        hb: &Heartbeat,
        at: DateTime<Utc>,
        reg: DateTime<Utc>,
        fx: &mut Effects<'_>,
    ) -> Arc<ServiceRecord> {
        let strings = &mut self.strings;
        let key = ServiceKey::new(hb.host.as_str(), strings.get(&hb.binary));
        let derived = &mut self.derived;
        let mut before = None;
        let shared = match self.services.entry(key) {
            btree_map::Entry::Occupied(o) if !o.get().deleted => {
                let shared = o.into_mut();
                before = Some(derived.unseen(shared));
                let r = Arc::make_mut(shared);
                r.report_count += 1;
                r.updated_at = Some(at);
                r.last_seen = reg;
                shared
            }
            btree_map::Entry::Occupied(mut o) => {
                let fresh = fresh_record(&mut self.next_id, strings, o.key(), at, reg);
                o.insert(Arc::new(fresh));
                o.into_mut()
            }
            btree_map::Entry::Vacant(v) => {
                let fresh = fresh_record(&mut self.next_id, strings, v.key(), at, reg);
                v.insert(Arc::new(fresh))
            }
        };
        let record = Arc::make_mut(shared);
        if let Some(t) = &hb.topic {
            strings.set(&mut record.topic, t);
        }
        let mut moved_from = None;
        if let Some(z) = &hb.availability_zone {
            moved_from = strings.set(&mut record.availability_zone, z);
        }
        if let Some(c) = &hb.cluster_name {
            strings.set_some(&mut record.cluster_name, c);
        }
        if let Some(v) = &hb.rpc_current_version {
            strings.set_some(&mut record.rpc_current_version, v);
        }
        if let Some(v) = &hb.object_current_version {
            strings.set_some(&mut record.object_current_version, v);
        }
        let record = Arc::clone(shared);
        match before {
            Some((share, key)) => {
                let now = derived.seen(&record, key);
                let zone = moved_from.as_deref().unwrap_or(&record.availability_zone);
                derived.recount_as(zone, share, &record, now, fx);
                if share.down && !record.forced_down {
                    fx.service(EventKind::Up, &record, false);
                }
            }
            None => {
                let now = derived.seen(&record, record.key());
                derived.add(&record, now, fx);
                fx.service(EventKind::Created, &record, now.down);
            }
        }
        record
    }
    /// The record of a service, soft-deleted ones included.
    pub fn get(&self, key: &ServiceKey) -> Option<&ServiceRecord> {
        self.services.get(key).map(|r| &**r)
    }

    /// The record of a service, shared (see [`ServicesState::shared_records`]).
    pub fn get_shared(&self, key: &ServiceKey) -> Option<&Arc<ServiceRecord>> {
        self.services.get(key)
    }

    /// Every record, soft-deleted ones included, ordered by (host, binary).
    pub fn records(&self) -> impl Iterator<Item = &ServiceRecord> {
        self.shared_records().map(|r| &**r)
    }

    /// The records of one host, ordered by binary: a range scan, costing what it returns.
    pub fn records_of_host<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = &'a ServiceRecord> + 'a {
        self.shared_records_of_host(host).map(|r| &**r)
    }

    /// Every record as [`ServicesState::records`] lists them, shared: a reader clones the
    /// `Arc`s it keeps (a counter increment each), so it can release the lock before it
    /// works on them.
    pub fn shared_records(&self) -> impl Iterator<Item = &Arc<ServiceRecord>> {
        self.services.values()
    }

    /// The records of one host as [`ServicesState::records_of_host`] lists them, shared.
    pub fn shared_records_of_host<'a>(
        &'a self,
        host: &'a str,
    ) -> impl Iterator<Item = &'a Arc<ServiceRecord>> + 'a {
        let start = ServiceKey::new(host, "");
        self.services
            .range(start..)
            .take_while(move |(k, _)| *k.host == *host)
            .map(|(_, r)| r)
    }

    /// A digest of the replicated contents (every record, the id counter and the registry
    /// clock), to compare nodes that applied the same index. It walks every record: a caller
    /// holding the state's lock should take a
    /// [`SnapshotSource`](crate::snapshot::SnapshotSource) instead and hash that after
    /// releasing it.
    pub fn digest(&self) -> u64 {
        digest_of(
            self.next_id,
            self.settings,
            &self.clock,
            self.services.values().map(|r| &**r),
        )
    }

    /// Number of records, soft-deleted ones included.
    pub fn len(&self) -> usize {
        self.services.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
    }
}

/// A new record for a service's first heartbeat (or its first after removal), taking the next
/// id from the replicated counter.
fn fresh_record(
    next_id: &mut u64,
    strings: &mut Strings,
    key: &ServiceKey,
    at: DateTime<Utc>,
    reg: DateTime<Utc>,
) -> ServiceRecord {
    let id = *next_id;
    *next_id += 1;
    ServiceRecord {
        id,
        host: Arc::clone(&key.host),
        binary: Arc::clone(&key.binary),
        topic: Arc::clone(&key.binary),
        report_count: 1,
        disabled: false,
        disabled_reason: None,
        availability_zone: strings.get(DEFAULT_AVAILABILITY_ZONE),
        created_at: at,
        updated_at: Some(at),
        modified_at: None,
        modified_by: None,
        deleted: false,
        deleted_at: None,
        rpc_current_version: None,
        object_current_version: None,
        replication_status: strings.get(DEFAULT_REPLICATION_STATUS),
        frozen: false,
        active_backend_id: None,
        cluster_name: None,
        forced_down: false,
        last_seen: reg,
    }
}

/// Locks `m`; a lock poisoned by a panic is taken as it is (a panic aborts the node anyway,
/// and the guarded values are always left whole).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The registry clock as of the last stamped entry this node applied, with the monotonic
/// time elapsed since it applied it, read together: an apply never pairs one entry's clock
/// with the time since another's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastStamp {
    /// The registry clock the entry left.
    pub clock: RegistryClock,
    /// Time since this node applied it (or started, or installed a snapshot).
    pub elapsed: Duration,
}

impl LastStamp {
    /// Registry time now, as this node can tell it: the registry time of the last stamped
    /// entry it applied, plus the time elapsed since on its monotonic clock, up to the outage
    /// grace. `None` before any stamped entry.
    pub fn registry_now(&self) -> Option<DateTime<Utc>> {
        self.clock.now_after(self.elapsed)
    }
}

/// The state with the instant its clock last moved on this node, behind one lock so that
/// they change together and are read together.
#[derive(Debug)]
struct Stamped {
    /// The services table and the Raft state applied with it.
    state: ServicesState,
    /// When this node last applied a stamped entry (or started, or installed a snapshot):
    /// registry time is extrapolated from there with the monotonic clock, so this node's
    /// wall clock never matters.
    stamped_at: Instant,
}

/// A shared, read-only handle on a node's in-memory services table, and on the events its
/// applies derived.
#[derive(Debug, Clone)]
pub struct StateView {
    /// The state and when its clock last moved; written by the state machine only.
    inner: Arc<RwLock<Stamped>>,
    /// The events derived from the entries applied since the state was loaded or installed.
    events: EventLog,
}

impl Default for StateView {
    fn default() -> Self {
        Self::new(ServicesState::default(), DEFAULT_EVENTS_KEPT)
    }
}

impl StateView {
    /// A view of `state`, its clock stamped now, keeping up to `events_kept` events.
    pub(crate) fn new(state: ServicesState, events_kept: usize) -> Self {
        let events = EventLog::new(events_kept, state.last_applied.map(|l| l.index));
        Self {
            inner: Arc::new(RwLock::new(Stamped {
                state,
                stamped_at: Instant::now(),
            })),
            events,
        }
    }

    /// The events derived from the entries applied.
    pub fn events(&self) -> &EventLog {
        &self.events
    }

    /// Runs `f` on the current state. Keep `f` short: applies wait for it.
    pub fn read<R>(&self, f: impl FnOnce(&ServicesState) -> R) -> R {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        f(&guard.state)
    }

    /// Runs `f` with the state locked for writing (the state machine only); notes the time
    /// when `f` moved the registry clock, before the lock is released.
    pub(crate) fn write<R>(&self, f: impl FnOnce(&mut ServicesState) -> R) -> R {
        let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        let before = guard.state.clock;
        let out = f(&mut guard.state);
        if guard.state.clock != before {
            guard.stamped_at = Instant::now();
        }
        out
    }

    /// Replaces the whole state (a snapshot install); registry time restarts from it, and the
    /// events restart after it.
    pub(crate) fn install(&self, state: ServicesState) {
        let mut guard = self.inner.write().unwrap_or_else(PoisonError::into_inner);
        self.events.reset(state.last_applied.map(|l| l.index));
        *guard = Stamped {
            state,
            stamped_at: Instant::now(),
        };
    }

    /// The clock of the last stamped entry applied and the time since, read together.
    pub fn last_stamp(&self) -> LastStamp {
        let guard = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        LastStamp {
            clock: guard.state.clock,
            elapsed: guard.stamped_at.elapsed(),
        }
    }

    /// Registry time now (see [`LastStamp::registry_now`]).
    pub fn registry_now(&self) -> Option<DateTime<Utc>> {
        self.last_stamp().registry_now()
    }

    /// Time since this node last applied a stamped entry. To combine it with the clock, take
    /// both from one [`StateView::last_stamp`].
    pub fn since_last_stamp(&self) -> Duration {
        self.last_stamp().elapsed
    }
}

/// The digest of a state from its parts: the id counter, the settings, the registry clock and
/// every record in key order. It uses std's SipHash with its fixed keys: stable for one build,
/// which is all a running cluster compares.
pub(crate) fn digest_of<'a>(
    next_id: u64,
    settings: Option<LivenessSettings>,
    clock: &RegistryClock,
    records: impl Iterator<Item = &'a ServiceRecord>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    next_id.hash(&mut h);
    settings.hash(&mut h);
    clock.now.map(|t| t.timestamp_micros()).hash(&mut h);
    clock.rate.hash(&mut h);
    for r in records {
        (&r.host, &r.binary, r.id, &r.topic, r.report_count).hash(&mut h);
        (r.disabled, &r.disabled_reason, &r.availability_zone).hash(&mut h);
        r.modified_by.hash(&mut h);
        let times = [
            Some(r.created_at),
            r.updated_at,
            r.modified_at,
            r.deleted_at,
        ];
        times.map(|t| t.map(|t| t.timestamp_micros())).hash(&mut h);
        (r.deleted, &r.rpc_current_version, &r.object_current_version).hash(&mut h);
        (&r.replication_status, r.frozen, &r.active_backend_id).hash(&mut h);
        (
            &r.cluster_name,
            r.forced_down,
            r.last_seen.timestamp_micros(),
        )
            .hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use openraft::CommittedLeaderId;

    use super::*;

    /// A tick stamped at leader time `at`, at log index `index`.
    fn tick(index: u64, at: DateTime<Utc>) -> Entry {
        Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Tick { at }),
        }
    }

    /// Heartbeats stamped at leader time `secs`, at log index `index`.
    fn beats(index: u64, secs: i64, beats: Vec<Heartbeat>) -> Entry {
        Entry {
            log_id: openraft::LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Command::Heartbeats {
                at: DateTime::from_timestamp(secs, 0).unwrap_or_default(),
                beats: beats.into(),
            }),
        }
    }

    fn reporting(host: &str, binary: &str, zone: &str, version: &str) -> Heartbeat {
        let mut hb = Heartbeat::new(host, binary);
        hb.topic = Some(binary.into());
        hb.availability_zone = Some(zone.into());
        hb.rpc_current_version = Some(version.into());
        hb
    }

    /// Whether the records of `a` and `b` hold one copy of each string they have in common.
    fn share_strings(a: &ServiceRecord, b: &ServiceRecord) -> bool {
        Arc::ptr_eq(&a.binary, &b.binary)
            && Arc::ptr_eq(&a.topic, &b.topic)
            && Arc::ptr_eq(&a.availability_zone, &b.availability_zone)
            && Arc::ptr_eq(&a.replication_status, &b.replication_status)
            && matches!(
                (&a.rpc_current_version, &b.rpc_current_version),
                (Some(x), Some(y)) if Arc::ptr_eq(x, y)
            )
    }

    /// Records created by heartbeats, and the same records decoded from a snapshot, hold one
    /// copy of a binary, topic, zone or version however many carry it; the table's key
    /// holds the record's own host; a changed value is the new one, and an equal one leaves
    /// the record's copy alone.
    #[test]
    fn records_share_the_strings_they_repeat() -> Result<(), crate::StoreError> {
        let mut s = ServicesState::default();
        let volume = |host: &str| reporting(host, "cinder-volume", "az1", "3.17");
        s.apply_entry(&beats(1, 1_800_000_000, vec![volume("h1"), volume("h2")]));
        s.apply_entry(&beats(2, 1_800_000_001, vec![volume("h1")]));
        let key = |host: &str| ServiceKey::new(host, "cinder-volume");
        let (h1, h2) = (key("h1"), key("h2"));
        let (a, b) = (s.get(&h1).cloned(), s.get(&h2).cloned());
        let (Some(a), Some(b)) = (a, b) else {
            panic!("both services are recorded");
        };
        assert_eq!((a.report_count, &*a.availability_zone), (2, "az1"));
        assert!(share_strings(&a, &b), "one copy of each repeated string");
        let (held, _) = s.services.get_key_value(&h1).expect("h1 is in the table");
        assert!(
            Arc::ptr_eq(&held.host, &a.host),
            "the key holds the record's host"
        );

        let source = crate::snapshot::SnapshotSource::of(&s);
        let bytes = source.encode(None, "1-2-1".into())?;
        let (info, records) = crate::snapshot::decode(&bytes)?;
        let decoded = crate::snapshot::into_state(info.header, records);
        assert_eq!(decoded, s, "the snapshot decodes to the same state");
        let (Some(a), Some(b)) = (decoded.get(&h1), decoded.get(&h2)) else {
            panic!("both services are in the snapshot");
        };
        assert!(
            share_strings(a, b),
            "decoded records share their strings too"
        );

        s.apply_entry(&beats(
            3,
            1_800_000_002,
            vec![reporting("h1", "cinder-volume", "az2", "3.17")],
        ));
        let moved = s.get(&h1).expect("h1 is in the table");
        assert_eq!(&*moved.availability_zone, "az2", "the new zone");
        let b = s.get(&h2).expect("h2 is in the table");
        assert!(
            Arc::ptr_eq(&moved.topic, &b.topic),
            "the topic is still the shared copy"
        );
        Ok(())
    }

    /// How old the first stamp is when the second apply begins.
    const STAMP_AGE: Duration = Duration::from_millis(400);

    /// How long the second apply holds the state once it has moved the clock.
    const HOLD: Duration = Duration::from_millis(200);

    /// Runs `read` on `view` while an apply that moves the clock by [`STAMP_AGE`] holds the
    /// state (the first stamp then [`STAMP_AGE`] old); returns what it read, the clock the
    /// apply left, and an upper bound of the time between that apply's stamp and the read:
    /// from the moment the apply had moved the clock (its stamp comes later) to the moment
    /// the read returned.
    fn read_during_an_apply<R>(read: impl FnOnce(&StateView) -> R) -> (R, RegistryClock, Duration) {
        let t0 = DateTime::from_timestamp(1_800_000_000, 0).expect("a valid timestamp");
        let view = StateView::default();
        view.write(|s| s.apply_entry(&tick(1, t0)));
        std::thread::sleep(STAMP_AGE);
        let (moved_tx, moved_rx) = mpsc::channel();
        let applier = {
            let view = view.clone();
            let at = t0 + chrono::Duration::from_std(STAMP_AGE).expect("a short duration");
            std::thread::spawn(move || {
                view.write(|s| {
                    s.apply_entry(&tick(2, at));
                    let _ = moved_tx.send(Instant::now());
                    std::thread::sleep(HOLD);
                });
            })
        };
        let moved = moved_rx.recv().expect("the apply moved the clock");
        let value = read(&view);
        let bound = moved.elapsed();
        applier.join().expect("the apply finished");
        let clock = view.read(|s| s.clock);
        (value, clock, bound)
    }

    /// A registry-time read that meets an apply is answered from one stamp: the clock the
    /// apply left plus the time since that apply, never the time since the entry before
    /// added to the clock of the new one (which put registry time up to a second ahead, so
    /// that a reader could judge a service down early).
    #[test]
    fn a_read_during_an_apply_pairs_the_new_clock_with_the_new_stamp() {
        let (now, clock, bound) = read_during_an_apply(StateView::registry_now);
        let now = now.expect("registry time, after a stamped entry");
        let last = clock.now.expect("the clock of the stamped entries");
        let ahead = (now - last)
            .to_std()
            .expect("registry time never behind the clock");
        assert!(
            ahead <= bound,
            "registry time read during an apply is {ahead:?} past the clock it left, more than \
             the {bound:?} between that apply and the read: the time since the entry before \
             was counted"
        );
    }

    /// The clock and the time since its stamp, read together during an apply, both come
    /// from that apply (the leader clock offset in the metrics is computed from them).
    #[test]
    fn the_last_stamp_pairs_the_clock_with_its_own_stamp() {
        let (stamp, clock, bound) = read_during_an_apply(StateView::last_stamp);
        assert_eq!(stamp.clock, clock, "the clock is the one the apply left");
        assert!(
            stamp.elapsed <= bound,
            "the time since the stamp read during an apply is {:?}, more than the {bound:?} \
             between that apply and the read: it is the time since the entry before",
            stamp.elapsed
        );
    }
}
