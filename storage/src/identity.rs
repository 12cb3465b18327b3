//! Who a store belongs to: the cluster it is part of and its own incarnation.
//!
//! - The **incarnation** is drawn at random when the store is created, and never changes. A
//!   node whose disk was lost comes back with a new store, hence a new incarnation: peers that
//!   address the member it was (by node id *and* incarnation, as the membership records it)
//!   are refused, so it can never vote or count toward a quorum as that member.
//! - The **cluster id** is made when a group is bootstrapped (or restored from a backup) and
//!   is written here before the group's first log entry. A node created to join a group has
//!   none until the first peer that addresses this very incarnation hands it one; it then
//!   keeps it forever, and refuses every peer of another cluster.
//! - The **format version** of the store ([`FORMAT_VERSION`]) is written when it is created,
//!   and raised to this build's when a store of an older format is opened (values written
//!   from then on are of this build's format); a store of a newer format is refused at open.
//!
//! All three live in the log's metadata tree, flushed before they are relied on.

use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::codec::{check_version, decode, encode, FORMAT_VERSION};
use crate::disk::Disk;
use crate::error::{IdentityField, StoreError, Stored};
pub use crate::ids::{ClusterId, Incarnation};
use crate::state::lock;
use crate::types::LogId;

const KEY_FORMAT: &[u8] = b"format";
const KEY_INCARNATION: &[u8] = b"incarnation";
const KEY_CLUSTER_ID: &[u8] = b"cluster_id";
const KEY_RESTORED_FROM: &[u8] = b"restored_from";

/// The backup a store was restored from: it is bootstrapped into a new cluster together with
/// the other members restored from the same file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredFrom {
    /// The cluster the backup was taken of.
    pub cluster_id: Option<ClusterId>,
    /// The last log id the backup reflects.
    pub last_log_id: Option<LogId>,
    /// The backup file's checksum.
    pub checksum: u32,
}

impl RestoredFrom {
    /// A text naming the backup exactly (equal for stores restored from the same file).
    pub fn backup_id(&self) -> String {
        let cluster = self
            .cluster_id
            .map_or_else(|| "none".to_string(), |c| c.to_string());
        let (term, index) = self
            .last_log_id
            .map_or((0, 0), |l| (l.leader_id.term, l.index));
        format!("{cluster}:{term}:{index}:{:08x}", self.checksum)
    }
}

/// A store's identity, shared by every part of the node that needs it.
#[derive(Debug, Clone)]
pub struct StoreIdentity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    disk: Disk,
    meta: sled::Tree,
    incarnation: Incarnation,
    cluster_id: Mutex<Option<ClusterId>>,
    restored_from: Option<RestoredFrom>,
}

impl StoreIdentity {
    /// Reads the identity of the store `db` (whose log metadata tree is `meta`), creating it
    /// when the store is brand new (`fresh`: no data in any tree, no snapshot file). A store of
    /// a newer format, or one with data but no format, is refused.
    pub(crate) fn open(
        disk: &Disk,
        meta: &sled::Tree,
        dir: &Path,
        fresh: bool,
    ) -> Result<Self, StoreError> {
        let format: Option<u8> = meta.get(KEY_FORMAT)?.map(|v| decode(&v)).transpose()?;
        let incarnation = match format {
            None if !fresh => return Err(StoreError::Unversioned(dir.to_path_buf())),
            None => {
                let incarnation = Incarnation::random();
                let mut batch = sled::Batch::default();
                batch.insert(KEY_FORMAT, encode(&FORMAT_VERSION)?);
                batch.insert(KEY_INCARNATION, encode(&incarnation)?);
                disk.write(|| meta.apply_batch(batch))?;
                disk.flush_blocking()?;
                tracing::info!(%incarnation, dir = %dir.display(), "created a new store");
                incarnation
            }
            Some(v) => {
                check_version(v, Stored::Store(dir.to_path_buf()))?;
                if v < FORMAT_VERSION {
                    // From now on this build writes its own format here: an older build must
                    // refuse the store at open rather than meet values it cannot read.
                    let format = encode(&FORMAT_VERSION)?;
                    disk.write(|| meta.insert(KEY_FORMAT, format))?;
                    disk.flush_blocking()?;
                    tracing::info!(
                        from = v,
                        to = FORMAT_VERSION,
                        dir = %dir.display(),
                        "upgraded the store's format: builds older than format {FORMAT_VERSION} no longer open it"
                    );
                }
                meta.get(KEY_INCARNATION)?
                    .map(|v| decode(&v))
                    .transpose()?
                    .ok_or(StoreError::MissingIdentity {
                        field: IdentityField::Incarnation,
                    })?
            }
        };
        let cluster_id = meta.get(KEY_CLUSTER_ID)?.map(|v| decode(&v)).transpose()?;
        let restored_from = meta
            .get(KEY_RESTORED_FROM)?
            .map(|v| decode(&v))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                disk: disk.clone(),
                meta: meta.clone(),
                incarnation,
                cluster_id: Mutex::new(cluster_id),
                restored_from,
            }),
        })
    }

    /// This store's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.inner.incarnation
    }

    /// The cluster this store belongs to, once it has one.
    pub fn cluster_id(&self) -> Option<ClusterId> {
        *lock(&self.inner.cluster_id)
    }

    /// The backup this store was restored from, if it was.
    pub fn restored_from(&self) -> Option<&RestoredFrom> {
        self.inner.restored_from.as_ref()
    }

    /// Makes `id` this store's cluster, durably (flushed) before it returns. Adopting the id
    /// the store already has is a no-op; another one is refused.
    pub async fn adopt(&self, id: ClusterId) -> Result<(), StoreError> {
        match self.cluster_id() {
            Some(ours) if ours == id => return Ok(()),
            Some(ours) => return Err(StoreError::ClusterMismatch { ours, theirs: id }),
            None => {}
        }
        // Compare-and-swap: of two adoptions that race, exactly one writes its id.
        let value = encode(&id)?;
        let swapped = self.inner.disk.write(|| {
            self.inner
                .meta
                .compare_and_swap(KEY_CLUSTER_ID, None as Option<&[u8]>, Some(value))
        })?;
        if let Err(current) = swapped {
            let ours: ClusterId = match current.current {
                Some(v) => decode(&v)?,
                None => {
                    return Err(StoreError::MissingIdentity {
                        field: IdentityField::ClusterId,
                    })
                }
            };
            *lock(&self.inner.cluster_id) = Some(ours);
            if ours != id {
                return Err(StoreError::ClusterMismatch { ours, theirs: id });
            }
        }
        self.inner.disk.flush().await?;
        *lock(&self.inner.cluster_id) = Some(id);
        tracing::info!(cluster_id = %id, "this store now belongs to cluster {id}");
        Ok(())
    }

    /// Records that the store was restored from a backup (restore only, on a fresh store).
    pub(crate) fn set_restored_from(
        disk: &Disk,
        meta: &sled::Tree,
        from: &RestoredFrom,
    ) -> Result<(), StoreError> {
        let value = encode(from)?;
        disk.write(|| meta.insert(KEY_RESTORED_FROM, value))?;
        disk.flush_blocking()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of an older format gets this build's format at open (so an older build
    /// refuses it from then on); one of a newer format is refused; its identity survives.
    #[test]
    fn an_older_store_is_raised_to_this_format_and_a_newer_one_refused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let disk = Disk::new(sled::Config::new().path(dir.path()).open()?);
        let meta = disk.db().open_tree("meta")?;
        let created = StoreIdentity::open(&disk, &meta, dir.path(), true)?;
        let format = || -> anyhow::Result<u8> {
            let v = meta
                .get(KEY_FORMAT)?
                .ok_or_else(|| anyhow::anyhow!("no format"))?;
            Ok(decode(&v)?)
        };
        assert_eq!(format()?, FORMAT_VERSION);
        meta.insert(KEY_FORMAT, encode(&1u8)?)?;
        let reopened = StoreIdentity::open(&disk, &meta, dir.path(), false)?;
        assert_eq!(format()?, FORMAT_VERSION, "raised at open");
        assert_eq!(reopened.incarnation(), created.incarnation());
        meta.insert(KEY_FORMAT, encode(&(FORMAT_VERSION + 1))?)?;
        assert!(matches!(
            StoreIdentity::open(&disk, &meta, dir.path(), false),
            Err(StoreError::NewerFormat { .. })
        ));
        Ok(())
    }

    #[test]
    fn ids_print_and_parse_back() {
        let c = ClusterId::derive(&[b"bootstrap", b"1=a#1"]);
        assert_eq!(c.to_string().len(), 32);
        assert_eq!(c.to_string().parse::<ClusterId>(), Ok(c));
        assert_ne!(c, ClusterId::derive(&[b"bootstrap", b"1=a#2"]));
        assert_ne!(
            ClusterId::derive(&[b"ab", b"c"]),
            ClusterId::derive(&[b"a", b"bc"]),
            "parts are length-prefixed"
        );
        let i = Incarnation(0xabc);
        assert_eq!(i.to_string(), "0000000000000abc");
        assert_eq!("0000000000000abc".parse::<Incarnation>(), Ok(i));
        assert!("abc".parse::<Incarnation>().is_err());
        assert!("zz".repeat(8).parse::<Incarnation>().is_err());
    }
}
