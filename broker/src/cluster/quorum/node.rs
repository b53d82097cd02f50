//! [`Quorum`]: this node's member of the metadata quorum.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, InitializeError, RaftError};
use openraft::{BasicNode, ChangeMembers, Raft, RaftMetrics, ServerState, SnapshotPolicy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::log_store::LogStore;
use super::network::{NetworkFactory, Peers};
use super::server::{self, Handler};
use super::state_machine::{Opened, StateMachine};
use super::wire::{Rpc, RpcReply};
use super::{
    broker_id, fsutil, raft_id, ControllerService, NodeId, Proposal, QuorumConfig, QuorumError,
    SharedImage, Tuning, TypeConfig,
};
use crate::cluster::image::{MetadataImage, MetadataRecord};
use crate::cluster::messages::{ControllerError, ControllerRequest, ControllerResponse};

/// How long shutdown waits for the controller port's connections.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

type Metrics = RaftMetrics<NodeId, BasicNode>;

/// The leader this node knows of, as a broker id.
pub(crate) fn leader_in(metrics: &Metrics) -> Option<i32> {
    metrics.current_leader.and_then(broker_id)
}

/// Whether `node` leads according to `metrics`: openraft names the leader
/// before the leader has finished taking over, so the state is checked too.
pub(crate) fn is_leader_in(metrics: &Metrics, node: NodeId) -> bool {
    metrics.state == ServerState::Leader && metrics.current_leader == Some(node)
}

/// This node's member of the metadata quorum. Cheap to clone.
#[derive(Clone)]
pub struct Quorum {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: i32,
    raft_id: NodeId,
    raft: Raft<TypeConfig>,
    voters: BTreeMap<i32, String>,
    peers: Arc<Peers>,
    service: Arc<dyn ControllerService>,
    image: watch::Receiver<SharedImage>,
    metrics: watch::Receiver<Metrics>,
    leader: watch::Receiver<Option<i32>>,
    /// Bounds `propose` and `ensure_current`, which openraft lets wait
    /// forever when no majority answers.
    op_timeout: Duration,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Held through shutdown so a second caller waits for the first.
    shutdown: tokio::sync::Mutex<bool>,
}

impl std::fmt::Debug for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quorum")
            .field("node_id", &self.inner.node_id)
            .field("leader", &self.leader())
            .finish_non_exhaustive()
    }
}

fn validate(config: &QuorumConfig) -> Result<(), QuorumError> {
    raft_id(config.node_id)?;
    for id in config.voters.keys() {
        raft_id(*id)?;
    }
    if config.heartbeat_interval_ms == 0 {
        return Err(QuorumError::Config(
            "the heartbeat interval must be at least 1 ms".into(),
        ));
    }
    if config.election_timeout_min_ms <= config.heartbeat_interval_ms {
        return Err(QuorumError::Config(format!(
            "the election timeout ({} ms) must be longer than the heartbeat interval ({} ms)",
            config.election_timeout_min_ms, config.heartbeat_interval_ms
        )));
    }
    Ok(())
}

fn map_fatal(e: openraft::error::Fatal<NodeId>) -> QuorumError {
    match e {
        openraft::error::Fatal::Stopped => QuorumError::ShutDown,
        other => QuorumError::Raft(other.to_string()),
    }
}

impl Quorum {
    /// Opens storage (recovering vote, log, snapshot and committed index),
    /// starts the Raft node and, with a `listener`, serves the controller
    /// port on it. A voter whose log is empty initializes the cluster with
    /// all voters (every voter does, with the same membership, which is
    /// safe). The image holds the snapshot plus the committed entries on
    /// disk when this returns.
    pub async fn start(
        config: QuorumConfig,
        listener: Option<TcpListener>,
        service: Arc<dyn ControllerService>,
    ) -> Result<Quorum, QuorumError> {
        Quorum::start_tuned(config, Tuning::default(), listener, service).await
    }

    pub(crate) async fn start_tuned(
        config: QuorumConfig,
        tuning: Tuning,
        listener: Option<TcpListener>,
        service: Arc<dyn ControllerService>,
    ) -> Result<Quorum, QuorumError> {
        validate(&config)?;
        let self_id = raft_id(config.node_id)?;
        let dir = config.dir.clone();
        let (log_store, opened) = tokio::task::spawn_blocking(move || open_storage(&dir))
            .await
            .map_err(|e| QuorumError::Io {
                path: config.dir.clone(),
                source: std::io::Error::other(e),
            })??;

        let election_max = config.election_timeout_min_ms * 2;
        let raft_config = openraft::Config {
            cluster_name: "sluice".to_string(),
            heartbeat_interval: config.heartbeat_interval_ms,
            election_timeout_min: config.election_timeout_min_ms,
            election_timeout_max: election_max,
            // Covers writing the received snapshot to disk with an fsync.
            install_snapshot_timeout: election_max.max(2_000),
            snapshot_policy: SnapshotPolicy::LogsSinceLast(tuning.snapshot_every),
            max_in_snapshot_log_to_keep: tuning.keep_in_snapshot,
            snapshot_max_chunk_size: 1 << 20,
            ..Default::default()
        }
        .validate()
        .map_err(|e| QuorumError::Config(e.to_string()))?;

        let cancel = CancellationToken::new();
        let peers = Peers::new(self_id, cancel.child_token());
        let raft = Raft::new(
            self_id,
            Arc::new(raft_config),
            NetworkFactory {
                peers: peers.clone(),
            },
            log_store,
            opened.state_machine,
        )
        .await
        .map_err(map_fatal)?;

        if config.voters.contains_key(&config.node_id)
            && !raft.is_initialized().await.map_err(map_fatal)?
        {
            let members: BTreeMap<NodeId, BasicNode> = config
                .voters
                .iter()
                .map(|(id, addr)| Ok((raft_id(*id)?, BasicNode::new(addr))))
                .collect::<Result<_, QuorumError>>()?;
            let failed = match raft.initialize(members).await {
                Ok(()) => {
                    tracing::info!(node = config.node_id, "initialized the metadata quorum");
                    None
                }
                // Another voter's log reached this one first: nothing to do.
                Err(RaftError::APIError(InitializeError::NotAllowed(_))) => None,
                Err(RaftError::APIError(e)) => Some(QuorumError::Config(e.to_string())),
                Err(RaftError::Fatal(e)) => Some(map_fatal(e)),
            };
            if let Some(e) = failed {
                let _ = raft.shutdown().await;
                return Err(e);
            }
        }

        let tasks = TaskTracker::new();
        let metrics = raft.metrics();
        let (leader_tx, leader_rx) = watch::channel(leader_in(&metrics.borrow()));
        tasks.spawn(follow_leader(metrics.clone(), leader_tx, cancel.clone()));
        if let Some(listener) = listener {
            let handler = Arc::new(Handler {
                node_id: self_id,
                raft: raft.clone(),
                service: service.clone(),
                metrics: metrics.clone(),
            });
            tasks.spawn(server::serve(listener, handler, cancel.clone()));
        }
        tracing::info!(
            node = config.node_id,
            applied = opened.image.borrow().applied_index,
            voter = config.voters.contains_key(&config.node_id),
            "metadata quorum started"
        );
        Ok(Quorum {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                raft_id: self_id,
                raft,
                voters: config.voters,
                peers,
                service,
                image: opened.image,
                metrics,
                leader: leader_rx,
                op_timeout: Duration::from_millis(election_max * 20).max(Duration::from_secs(10)),
                cancel,
                tasks,
                shutdown: tokio::sync::Mutex::new(false),
            }),
        })
    }

    #[cfg(test)]
    pub(crate) fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }

    /// The image as of the last apply.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image.borrow().clone()
    }

    /// Changes at every apply.
    pub fn watch(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.image.clone()
    }

    /// The Raft leader (the active controller) as this node knows it.
    pub fn leader(&self) -> Option<i32> {
        if self.inner.cancel.is_cancelled() {
            return None;
        }
        leader_in(&self.inner.metrics.borrow())
    }

    pub fn is_leader(&self) -> bool {
        !self.inner.cancel.is_cancelled()
            && is_leader_in(&self.inner.metrics.borrow(), self.inner.raft_id)
    }

    /// Changes when the known leader does.
    pub fn leader_watch(&self) -> watch::Receiver<Option<i32>> {
        self.inner.leader.clone()
    }

    /// Leader only: appends `records` as one log entry and returns once it
    /// is committed and applied here; the returned image contains it.
    pub async fn propose(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<Arc<MetadataImage>, QuorumError> {
        if self.inner.cancel.is_cancelled() {
            return Err(QuorumError::ShutDown);
        }
        let timeout = self.inner.op_timeout;
        let written =
            tokio::time::timeout(timeout, self.inner.raft.client_write(Proposal(records)))
                .await
                .map_err(|_| QuorumError::Timeout(timeout))?;
        let index = match written {
            Ok(resp) => resp.log_id.index,
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                return Err(QuorumError::NotLeader(f.leader_id.and_then(broker_id)))
            }
            Err(RaftError::APIError(e)) => return Err(QuorumError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => return Err(map_fatal(e)),
        };
        // openraft answers after applying, and applying publishes the image;
        // waiting is only a guard.
        let mut image = self.inner.image.clone();
        let applied = tokio::time::timeout(timeout, image.wait_for(|i| i.applied_index >= index))
            .await
            .map_err(|_| QuorumError::Timeout(timeout))?
            .map(|i| i.clone())
            .map_err(|_| QuorumError::ShutDown)?;
        Ok(applied)
    }

    /// Leader only: confirms leadership with a majority and waits until
    /// this node has applied everything committed before (by earlier
    /// leaders too), so decisions are made on a current image.
    pub async fn ensure_current(&self) -> Result<(), QuorumError> {
        if self.inner.cancel.is_cancelled() {
            return Err(QuorumError::ShutDown);
        }
        let timeout = self.inner.op_timeout;
        let res = tokio::time::timeout(timeout, self.inner.raft.ensure_linearizable())
            .await
            .map_err(|_| QuorumError::Timeout(timeout))?;
        match res {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Err(QuorumError::NotLeader(f.leader_id.and_then(broker_id)))
            }
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => {
                Err(QuorumError::NoQuorum(e.to_string()))
            }
            Err(RaftError::Fatal(e)) => Err(map_fatal(e)),
        }
    }

    /// Sends `req` to the active controller: this node's `service` when it
    /// leads, else the leader's controller port. Retries, re-resolving the
    /// leader, while there is none or it is unreachable or has just stepped
    /// down, until `timeout`; then answers `NoController`.
    pub async fn call_controller(
        &self,
        req: ControllerRequest,
        timeout: Duration,
    ) -> ControllerResponse {
        let deadline = Instant::now() + timeout;
        let mut leader_rx = self.inner.leader.clone();
        // A node another node named as the leader: tried next.
        let mut hint: Option<i32> = None;
        // The known leader that just failed: voters are probed instead
        // until the known leader changes.
        let mut failed: Option<i32> = None;
        let mut probe = 0usize;
        let mut backoff = Duration::from_millis(20);
        let mut why: String;
        loop {
            if self.inner.cancel.is_cancelled() {
                why = "this node is shutting down".into();
                break;
            }
            let known = self.leader();
            if known != failed {
                failed = None;
            }
            let target = hint
                .take()
                .or(known.filter(|l| failed != Some(*l)))
                .or_else(|| self.next_voter(&mut probe));
            let mut retry_now = false;
            match target {
                None => why = "no voter to ask".into(),
                Some(id) if id == self.inner.node_id => {
                    if self.is_leader() {
                        let handled = tokio::time::timeout_at(
                            deadline,
                            self.inner.service.handle(req.clone()),
                        )
                        .await;
                        match handled {
                            Err(_) => {
                                why = format!("node {id} (this node) did not answer in time");
                                break;
                            }
                            Ok(ControllerResponse::Error(
                                e @ (ControllerError::NotController
                                | ControllerError::NoController(_)),
                            )) => why = format!("node {id}: {e}"),
                            Ok(resp) => return resp,
                        }
                    } else {
                        why = format!("node {id} (this node) is not the leader yet");
                    }
                }
                Some(id) => match self.controller_addr(id) {
                    None => why = format!("no controller address is known for node {id}"),
                    Some(addr) => {
                        let Ok(rid) = raft_id(id) else {
                            why = format!("node id {id} is negative");
                            break;
                        };
                        let peer = self.inner.peers.peer(rid, &addr);
                        let left = deadline.saturating_duration_since(Instant::now());
                        match peer.call(Rpc::Controller(req.clone()), left).await {
                            Ok(RpcReply::Controller(ControllerResponse::Error(
                                e @ (ControllerError::NotController
                                | ControllerError::NoController(_)),
                            ))) => why = format!("node {id} at {addr}: {e}"),
                            Ok(RpcReply::Controller(resp)) => return resp,
                            Ok(RpcReply::NotLeader(leader)) => {
                                why = format!("node {id} at {addr} is not the controller");
                                hint = leader.filter(|l| *l != id);
                                retry_now = hint.is_some();
                            }
                            Ok(other) => why = format!("node {id} at {addr} answered {other:?}"),
                            Err(e) => {
                                why = format!("node {id}: {e}");
                                if known == Some(id) {
                                    failed = Some(id);
                                }
                            }
                        }
                    }
                },
            }
            if retry_now {
                continue;
            }
            let now = Instant::now();
            if now + backoff >= deadline {
                break;
            }
            // A change of leader ends the pause early.
            let _ = tokio::time::timeout(backoff, leader_rx.changed()).await;
            backoff = (backoff * 2).min(Duration::from_millis(500));
        }
        ControllerResponse::Error(ControllerError::NoController(why))
    }

    fn next_voter(&self, probe: &mut usize) -> Option<i32> {
        let others: Vec<i32> = self
            .inner
            .voters
            .keys()
            .copied()
            .filter(|id| *id != self.inner.node_id)
            .collect();
        if others.is_empty() {
            return self
                .inner
                .voters
                .contains_key(&self.inner.node_id)
                .then_some(self.inner.node_id);
        }
        let id = others[*probe % others.len()];
        *probe += 1;
        Some(id)
    }

    /// A node's controller address: from the membership, else from the
    /// configured voters.
    fn controller_addr(&self, id: i32) -> Option<String> {
        let from_membership = raft_id(id).ok().and_then(|rid| {
            self.inner
                .metrics
                .borrow()
                .membership_config
                .membership()
                .get_node(&rid)
                .map(|n| n.addr.clone())
        });
        from_membership.or_else(|| self.inner.voters.get(&id).cloned())
    }

    /// Leader only: adds a node without a vote, which then replicates the
    /// metadata log too. Returns once the membership change is committed,
    /// not when the learner has caught up.
    pub async fn add_learner(&self, id: i32, controller_addr: String) -> Result<(), QuorumError> {
        if self.inner.cancel.is_cancelled() {
            return Err(QuorumError::ShutDown);
        }
        if !self.is_leader() {
            return Err(QuorumError::NotLeader(self.leader()));
        }
        let rid = raft_id(id)?;
        let known = self
            .inner
            .metrics
            .borrow()
            .membership_config
            .membership()
            .get_node(&rid)
            .map(|n| n.addr.clone());
        let node = BasicNode::new(&controller_addr);
        let timeout = self.inner.op_timeout;
        let changed = match known {
            Some(addr) if addr == controller_addr => return Ok(()),
            // Known at another address (a restart with a new port): only
            // the address changes, a voter stays a voter.
            Some(_) => {
                let change = ChangeMembers::SetNodes(BTreeMap::from([(rid, node)]));
                tokio::time::timeout(timeout, self.inner.raft.change_membership(change, true)).await
            }
            None => {
                tokio::time::timeout(timeout, self.inner.raft.add_learner(rid, node, false)).await
            }
        };
        match changed.map_err(|_| QuorumError::Timeout(timeout))? {
            Ok(_) => {
                tracing::info!(node = id, addr = %controller_addr, "added a learner to the metadata quorum");
                Ok(())
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(QuorumError::NotLeader(f.leader_id.and_then(broker_id)))
            }
            Err(RaftError::APIError(e)) => Err(QuorumError::Raft(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(map_fatal(e)),
        }
    }

    /// Stops the Raft node and the controller port. Idempotent.
    pub async fn shutdown(&self) {
        let mut done = self.inner.shutdown.lock().await;
        if *done {
            return;
        }
        // The port closes first, so peers see this node gone at once
        // (connection refused) instead of waiting out RPC timeouts.
        self.inner.cancel.cancel();
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "the metadata quorum's Raft task ended badly");
        }
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the controller port did not close within {SHUTDOWN_WAIT:?}");
        }
        self.inner.peers.clear();
        *done = true;
        tracing::info!(node = self.inner.node_id, "metadata quorum stopped");
    }
}

fn open_storage(dir: &Path) -> Result<(LogStore, Opened), QuorumError> {
    let io_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| QuorumError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    if let Some(parent) = dir.parent() {
        fsutil::sync_dir(parent).map_err(io_err(parent))?;
    }
    let opened = StateMachine::open(dir)?;
    let log_store = LogStore::open(dir, Some(opened.snapshot_covered.clone()))?;
    Ok((log_store, opened))
}

/// Mirrors openraft's idea of the leader into `tx`, firing only on changes.
async fn follow_leader(
    mut metrics: watch::Receiver<Metrics>,
    tx: watch::Sender<Option<i32>>,
    cancel: CancellationToken,
) {
    loop {
        let leader = leader_in(&metrics.borrow_and_update());
        tx.send_if_modified(|current| {
            let changed = *current != leader;
            *current = leader;
            changed
        });
        tokio::select! {
            _ = cancel.cancelled() => break,
            changed = metrics.changed() => if changed.is_err() { break },
        }
    }
    tx.send_if_modified(|current| current.take().is_some());
}
