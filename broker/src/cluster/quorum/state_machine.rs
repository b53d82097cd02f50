//! The state machine: the [`MetadataImage`] built by applying committed
//! entries, and its snapshots.
//!
//! The image itself is not persisted at every apply: at start it is rebuilt
//! from `snapshot.json` plus the committed entries still in the log (openraft
//! re-applies them from the saved committed index). A snapshot is the JSON
//! of the image with the last applied log id and membership, replaced
//! atomically; the bytes sent to other nodes are the JSON of the image alone.

use std::io::{self, Cursor};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{
    AnyError, EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder, Snapshot,
    StorageError, StorageIOError,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::fsutil;
use super::{
    Entry, LogId, NodeId, QuorumError, SharedImage, SnapshotMeta, StoredMembership, TypeConfig,
};
use crate::cluster::image::MetadataImage;

pub(crate) const SNAPSHOT_FILE: &str = "snapshot.json";

#[derive(Serialize)]
struct SnapshotFileOut<'a> {
    meta: &'a SnapshotMeta,
    image: &'a MetadataImage,
}

#[derive(Deserialize)]
struct SnapshotFileIn {
    meta: SnapshotMeta,
    image: MetadataImage,
}

#[derive(Clone)]
struct Current {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The snapshot on disk, shared by the state machine and the builders
/// openraft runs in their own tasks.
pub(crate) struct SnapshotStore {
    path: PathBuf,
    /// Held while a snapshot file is written, so writes do not interleave.
    current: tokio::sync::Mutex<Option<Current>>,
    /// The last log id the snapshot on disk covers (the log's purge guard).
    covered: watch::Sender<Option<LogId>>,
}

impl SnapshotStore {
    /// Makes `meta`/`image` the current snapshot unless a newer one is
    /// already there (`force` replaces whatever is there: an installed
    /// snapshot from the leader wins).
    async fn save(
        &self,
        meta: &SnapshotMeta,
        image: &MetadataImage,
        data: Vec<u8>,
        force: bool,
    ) -> Result<(), StorageError<NodeId>> {
        let mut current = self.current.lock().await;
        if !force
            && current
                .as_ref()
                .is_some_and(|c| c.meta.last_log_id > meta.last_log_id)
        {
            return Ok(());
        }
        let write_err = |e: io::Error| {
            StorageError::from_io_error(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        };
        let file = serde_json::to_vec(&SnapshotFileOut { meta, image })
            .map_err(|e| write_err(e.into()))?;
        let path = self.path.clone();
        fsutil::blocking(move || fsutil::replace(&path, &file, true))
            .await
            .map_err(write_err)?;
        *current = Some(Current {
            meta: meta.clone(),
            data,
        });
        self.covered.send_replace(meta.last_log_id);
        Ok(())
    }
}

pub(crate) struct StateMachine {
    image: SharedImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    image_tx: watch::Sender<SharedImage>,
    snapshots: Arc<SnapshotStore>,
}

/// What [`StateMachine::open`] hands out besides the state machine.
pub(crate) struct Opened {
    pub state_machine: StateMachine,
    pub image: watch::Receiver<SharedImage>,
    pub snapshot_covered: watch::Receiver<Option<LogId>>,
}

impl StateMachine {
    /// Loads the snapshot in `dir`, if any.
    pub(crate) fn open(dir: &Path) -> Result<Opened, QuorumError> {
        let path = dir.join(SNAPSHOT_FILE);
        let tmp = fsutil::temp_path(&path);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(QuorumError::Io {
                    path: tmp,
                    source: e,
                })
            }
            _ => {}
        }
        let bytes = fsutil::read_if_exists(&path).map_err(|source| QuorumError::Io {
            path: path.clone(),
            source,
        })?;
        let loaded = bytes
            .map(|b| serde_json::from_slice::<SnapshotFileIn>(&b))
            .transpose()
            .map_err(|e| QuorumError::Corrupt {
                path: path.clone(),
                reason: format!(
                    "{e}; it is replaced atomically, so this is damage from outside: remove \
                     the directory to let this node copy the metadata from the quorum again"
                ),
            })?;
        let (image, current) = match loaded {
            Some(SnapshotFileIn { meta, image }) => {
                let data = serde_json::to_vec(&image).map_err(|e| QuorumError::Corrupt {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                (image, Some(Current { meta, data }))
            }
            None => (MetadataImage::default(), None),
        };
        let last_applied = current.as_ref().and_then(|c| c.meta.last_log_id);
        let membership = current
            .as_ref()
            .map(|c| c.meta.last_membership.clone())
            .unwrap_or_default();
        let image = Arc::new(image);
        let (image_tx, image_rx) = watch::channel(image.clone());
        let (covered, covered_rx) = watch::channel(last_applied);
        Ok(Opened {
            state_machine: StateMachine {
                image,
                last_applied,
                membership,
                image_tx,
                snapshots: Arc::new(SnapshotStore {
                    path,
                    current: tokio::sync::Mutex::new(current),
                    covered,
                }),
            },
            image: image_rx,
            snapshot_covered: covered_rx,
        })
    }
}

pub(crate) struct SnapshotBuilder {
    image: SharedImage,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots: Arc<SnapshotStore>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let data = serde_json::to_vec(&*self.image).map_err(|e| {
            StorageError::from(StorageIOError::write_snapshot(None, AnyError::new(&e)))
        })?;
        let snapshot_id = match self.last_applied {
            Some(id) => format!(
                "{}-{}-{}",
                id.leader_id,
                id.index,
                uuid::Uuid::new_v4().simple()
            ),
            None => format!("empty-{}", uuid::Uuid::new_v4().simple()),
        };
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id,
        };
        self.snapshots
            .save(&meta, &self.image, data.clone(), false)
            .await?;
        tracing::info!(snapshot = %meta, "built a metadata snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<()>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut replies = Vec::with_capacity(entries.len());
        // One copy of the image per batch: readers keep the Arc they hold.
        let image = Arc::make_mut(&mut self.image);
        for entry in entries {
            let index = entry.log_id.index;
            match entry.payload {
                EntryPayload::Blank => {}
                EntryPayload::Normal(proposal) => {
                    for record in &proposal.0 {
                        image.apply(index, record);
                    }
                }
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership);
                }
            }
            image.applied_index = index;
            self.last_applied = Some(entry.log_id);
            replies.push(());
        }
        self.image_tx.send_replace(self.image.clone());
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            image: self.image.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            snapshots: self.snapshots.clone(),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let mut image: MetadataImage = serde_json::from_slice(&data).map_err(|e| {
            StorageError::from(StorageIOError::read_snapshot(
                Some(meta.signature()),
                AnyError::new(&e),
            ))
        })?;
        image.applied_index = meta.last_log_id.map_or(0, |id| id.index);
        self.snapshots.save(meta, &image, data, true).await?;
        tracing::info!(snapshot = %meta, "installed a metadata snapshot from the leader");
        self.image = Arc::new(image);
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.image_tx.send_replace(self.image.clone());
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.snapshots.current.lock().await;
        Ok(current.as_ref().map(|c| Snapshot {
            meta: c.meta.clone(),
            snapshot: Box::new(Cursor::new(c.data.clone())),
        }))
    }
}
