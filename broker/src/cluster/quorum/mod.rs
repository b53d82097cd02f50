//! The replicated metadata log: an openraft 0.9 node whose state machine is
//! the [`MetadataImage`].
//!
//! - `node`: [`Quorum`], the handle the broker and the controller use:
//!   propose records, read and watch the image, reach the active controller.
//! - `log_store`: the Raft log, vote and committed index on disk.
//! - `state_machine`: applies entries to the image; snapshots on disk.
//! - `fsutil`: atomic file replacement.
//! - `wire`: the controller port's frames (Raft RPCs and controller requests).
//! - `network`: the client side of the controller port, one connection per peer.
//! - `server`: the controller port's accept loop.
//!
//! On disk, in `QuorumConfig::dir` (`<data-dir>/__cluster_metadata`):
//! `metadata.log` (length-prefixed, CRC-checked JSON records), `vote.json`,
//! `committed.json` and `snapshot.json`, the last three replaced atomically.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Cursor;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::image::{MetadataImage, MetadataRecord};
use super::messages::{ControllerRequest, ControllerResponse};

mod fsutil;
mod log_store;
mod network;
mod node;
mod server;
mod state_machine;
mod wire;

#[cfg(test)]
mod tests;

pub use node::Quorum;

/// What one broker needs to join the metadata quorum.
#[derive(Debug, Clone)]
pub struct QuorumConfig {
    /// This node's id; its Raft node id is the same number.
    pub node_id: i32,
    /// `<data-dir>/__cluster_metadata`; created when missing.
    pub dir: PathBuf,
    /// The voters: id -> `host:port` of their controller port. A node whose
    /// id is not here is a learner (an observer that replicates the log).
    pub voters: BTreeMap<i32, String>,
    /// Raft heartbeat interval (default 100).
    pub heartbeat_interval_ms: u64,
    /// Minimum election timeout (default 300); the maximum is twice this.
    pub election_timeout_min_ms: u64,
}

impl QuorumConfig {
    pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u64 = 100;
    pub const DEFAULT_ELECTION_TIMEOUT_MIN_MS: u64 = 300;

    /// A config with the default timings.
    pub fn new(node_id: i32, dir: PathBuf, voters: BTreeMap<i32, String>) -> QuorumConfig {
        QuorumConfig {
            node_id,
            dir,
            voters,
            heartbeat_interval_ms: Self::DEFAULT_HEARTBEAT_INTERVAL_MS,
            election_timeout_min_ms: Self::DEFAULT_ELECTION_TIMEOUT_MIN_MS,
        }
    }
}

/// Serves controller requests on the active controller (the Raft leader).
pub trait ControllerService: Send + Sync + 'static {
    fn handle(
        &self,
        req: ControllerRequest,
    ) -> Pin<Box<dyn Future<Output = ControllerResponse> + Send + 'static>>;
}

/// Errors of the metadata quorum.
#[derive(Debug, thiserror::Error)]
pub enum QuorumError {
    #[error("this node is not the metadata quorum leader{}", leader_hint(.0))]
    NotLeader(Option<i32>),
    #[error("invalid metadata quorum config: {0}")]
    Config(String),
    #[error("metadata quorum storage {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata quorum storage {} is damaged: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("the metadata quorum has no majority: {0}")]
    NoQuorum(String),
    #[error("no answer from the metadata quorum within {0:?}; the outcome is unknown")]
    Timeout(Duration),
    #[error("the metadata quorum is shut down")]
    ShutDown,
    #[error("the metadata quorum failed: {0}")]
    Raft(String),
}

fn leader_hint(leader: &Option<i32>) -> String {
    match leader {
        Some(id) => format!(" (the leader is node {id})"),
        None => " (no leader is known)".to_string(),
    }
}

/// One metadata-log entry's payload: the records one controller decision
/// wrote, applied together.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal(pub Vec<MetadataRecord>);

openraft::declare_raft_types!(
    /// openraft's types for the metadata log.
    pub TypeConfig:
        D = Proposal,
        R = (),
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub(crate) type NodeId = u64;
pub(crate) type LogId = openraft::LogId<NodeId>;
pub(crate) type Entry = openraft::Entry<TypeConfig>;
pub(crate) type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub(crate) type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;

/// Knobs not in [`QuorumConfig`] because only tests change them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    /// Build a snapshot once this many entries were committed since the last.
    pub snapshot_every: u64,
    /// Entries already in a snapshot that stay in the log, so a follower
    /// slightly behind still gets entries rather than a whole snapshot.
    pub keep_in_snapshot: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            snapshot_every: 500,
            keep_in_snapshot: 32,
        }
    }
}

/// Raft node ids are the broker ids, which are never negative.
pub(crate) fn raft_id(id: i32) -> Result<NodeId, QuorumError> {
    NodeId::try_from(id).map_err(|_| QuorumError::Config(format!("node id {id} is negative")))
}

pub(crate) fn broker_id(id: NodeId) -> Option<i32> {
    i32::try_from(id).ok()
}

/// The image published after every apply; kept here so the type is named once.
pub(crate) type SharedImage = std::sync::Arc<MetadataImage>;
