//! The classic group coordinator: JoinGroup/SyncGroup/Heartbeat/LeaveGroup
//! with Kafka's state machine (Empty, PreparingRebalance,
//! CompletingRebalance, Stable, Dead), committed offsets, and their storage
//! in `__consumer_offsets`.
//!
//! The coordinator follows leadership of `__consumer_offsets`: it owns the
//! groups of the partitions this broker leads. [`GroupCoordinator::elect`]
//! loads a partition (see `load.rs`) and [`GroupCoordinator::resign`] drops
//! its groups; a group whose partition is not owned gets NOT_COORDINATOR, one
//! whose partition is still loading COORDINATOR_LOAD_IN_PROGRESS. A write is
//! durable once fsynced here and replicated to the ISR in the leader epoch
//! it was written in.
//!
//! All groups sit behind one mutex; nothing inside it blocks except one
//! append to a `__consumer_offsets` partition, which keeps the log's order
//! equal to the order in which the state changed. Waiting JoinGroup and
//! SyncGroup requests hold a oneshot receiver completed here. Timers are
//! tokio tasks (see `timers.rs`) that re-check, under the lock, that the
//! member or rebalance they were started for is still current.

mod load;
pub mod state;
pub mod store;
mod timers;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use state::{ms, Group, Member};
pub use state::{Committed, GroupError, JoinResult, State, SyncResult};
use store::{Key, OffsetValue};

use crate::broker::now_ms;
use crate::flusher::Flusher;
use crate::partition::{AppendError, Partition};

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Resolves once what an operation wrote to `__consumer_offsets` is durable.
pub type Durable = Pin<Box<dyn Future<Output = Result<(), GroupError>> + Send>>;

/// A JoinGroup, copied out of its request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: an empty member id gets MEMBER_ID_REQUIRED (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader that rejoins is told to skip assignment.
    pub supports_skip_assignment: bool,
}

/// One offset to commit.
#[derive(Debug, Clone)]
pub struct CommitEntry {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: State,
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct MemberDescription {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone)]
pub struct GroupDescription {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberDescription>,
}

/// A partition of `__consumer_offsets` this broker leads.
struct Owned {
    partition: Arc<Partition>,
    leader_epoch: i32,
    /// Its groups are in memory; until then their requests are refused.
    loaded: bool,
    /// Fired when the partition is given up: ends its load if still running
    /// and the timers of its groups.
    cancel: CancellationToken,
}

/// One append to `__consumer_offsets`: what its durability waits for.
struct Written {
    partition: Arc<Partition>,
    end_offset: i64,
    leader_epoch: i32,
}

struct Shared {
    /// The groups of the owned, loaded partitions, and only those: a group is
    /// created only after its partition was checked under this lock, and
    /// giving a partition up removes its groups under it.
    groups: Mutex<HashMap<String, Group>>,
    /// The partitions this broker leads, by index. Changed only while
    /// `groups` is locked (and always locked after it), so ownership cannot
    /// change under whoever holds `groups`.
    owned: Mutex<HashMap<i32, Owned>>,
    /// Bumped whenever a load finishes or a partition is given up.
    changes: watch::Sender<u64>,
    num_partitions: i32,
    flusher: Flusher,
    initial_delay_ms: u64,
    retention_ms: i64,
    min_insync: i32,
    commit_timeout: Duration,
    timer_seq: AtomicU64,
    runtime: tokio::runtime::Handle,
}

/// Handle to the group coordinator; clones share it.
#[derive(Clone)]
pub struct GroupCoordinator {
    shared: Arc<Shared>,
}

/// The `__consumer_offsets` record of one committed offset.
fn offset_record(group_id: &str, e: &CommitEntry, now: i64) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = Key::Offset {
        group: group_id.to_string(),
        topic: e.topic.clone(),
        partition: e.partition,
    };
    let value = OffsetValue {
        offset: e.offset,
        leader_epoch: e.leader_epoch,
        metadata: e.metadata.clone(),
        commit_timestamp: now,
    };
    (key.encode(), Some(value.encode()))
}

fn committed(e: CommitEntry, now: i64) -> Committed {
    Committed {
        offset: e.offset,
        leader_epoch: e.leader_epoch,
        metadata: e.metadata,
        commit_timestamp: now,
    }
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Kafka maps the errors of a coordinator's own writes: a lost leadership is
/// NOT_COORDINATOR (the client looks the coordinator up again), too small an
/// ISR or a replication timeout COORDINATOR_NOT_AVAILABLE (it retries).
fn write_error(e: AppendError) -> GroupError {
    match e {
        AppendError::NotLeader => GroupError::NotCoordinator,
        AppendError::NotEnoughReplicas { .. }
        | AppendError::NotEnoughReplicasAfterAppend { .. }
        | AppendError::Timeout(_) => GroupError::CoordinatorNotAvailable,
        AppendError::Log(e) => GroupError::Storage(e.to_string()),
    }
}

impl GroupCoordinator {
    /// A coordinator for a `__consumer_offsets` of `num_partitions`
    /// partitions that owns none of them yet (see [`GroupCoordinator::elect`]).
    /// Its writes need `min_insync` replicas in the ISR and wait up to
    /// `commit_timeout` for replication. Must run inside a tokio runtime.
    pub fn new(
        num_partitions: i32,
        flusher: Flusher,
        initial_rebalance_delay_ms: u64,
        offsets_retention_minutes: i64,
        min_insync: i32,
        commit_timeout: Duration,
    ) -> GroupCoordinator {
        let (changes, _) = watch::channel(0);
        GroupCoordinator {
            shared: Arc::new(Shared {
                groups: Mutex::new(HashMap::new()),
                owned: Mutex::new(HashMap::new()),
                changes,
                num_partitions: num_partitions.max(1),
                flusher,
                initial_delay_ms: initial_rebalance_delay_ms,
                retention_ms: offsets_retention_minutes.saturating_mul(60_000),
                min_insync,
                commit_timeout,
                timer_seq: AtomicU64::new(1),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// The partition of `__consumer_offsets` that holds `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        store::partition_for(group_id, self.shared.num_partitions)
    }

    /// This broker became leader of `__consumer_offsets`-`index` in
    /// `leader_epoch`: its groups are loaded on a blocking thread, and served
    /// once loaded. The same epoch again changes nothing; a newer one drops
    /// what was loaded and loads again, since another leader may have
    /// written in between.
    pub fn elect(&self, index: i32, partition: Arc<Partition>, leader_epoch: i32) {
        let mut groups = self.shared.groups.lock();
        let mut owned = self.shared.owned.lock();
        if owned
            .get(&index)
            .is_some_and(|o| o.leader_epoch >= leader_epoch)
        {
            return;
        }
        if let Some(old) = owned.remove(&index) {
            self.unload(&mut groups, index, old);
        }
        let cancel = CancellationToken::new();
        owned.insert(
            index,
            Owned {
                partition: partition.clone(),
                leader_epoch,
                loaded: false,
                cancel: cancel.clone(),
            },
        );
        drop(owned);
        drop(groups);
        tracing::info!(
            partition = index,
            epoch = leader_epoch,
            "loading consumer groups"
        );
        let weak = Arc::downgrade(&self.shared);
        self.shared.runtime.spawn(async move {
            let load = tokio::task::spawn_blocking(move || load::load(&partition));
            let loaded = tokio::select! {
                _ = cancel.cancelled() => return,
                r = load => r,
            };
            let Some(shared) = weak.upgrade() else { return };
            let c = GroupCoordinator { shared };
            match loaded {
                Ok(groups) => c.finish_load(index, &cancel, groups),
                // The partition stays loading (its groups refused) rather
                // than serving groups without their offsets.
                Err(e) => {
                    tracing::error!(partition = index, error = %e, "loading consumer groups failed")
                }
            }
        });
    }

    /// Installs the groups loaded for `index`, unless the partition was
    /// given up (or elected again) meanwhile.
    fn finish_load(&self, index: i32, cancel: &CancellationToken, loaded: Vec<Group>) {
        let mut groups = self.shared.groups.lock();
        {
            let mut owned = self.shared.owned.lock();
            if cancel.is_cancelled() {
                return;
            }
            let Some(o) = owned.get_mut(&index) else {
                return;
            };
            o.loaded = true;
        }
        let count = loaded.len();
        for mut g in loaded {
            for m in g.members.values_mut() {
                // Sessions start when the group becomes reachable again.
                m.touch();
                m.timer = self.next_timer();
                self.start_session_timer(&g.id, &m.id, m.timer, m.deadline);
            }
            groups.insert(g.id.clone(), g);
        }
        drop(groups);
        self.shared.changes.send_modify(|n| *n += 1);
        tracing::info!(partition = index, groups = count, "loaded consumer groups");
    }

    /// This broker no longer leads `__consumer_offsets`-`index`: its groups
    /// leave memory, their timers stop and waiting JoinGroup/SyncGroup
    /// requests get NOT_COORDINATOR. A resign older than the epoch loaded is
    /// stale and ignored.
    pub fn resign(&self, index: i32, leader_epoch: i32) {
        let mut groups = self.shared.groups.lock();
        let mut owned = self.shared.owned.lock();
        match owned.get(&index) {
            None => return,
            Some(o) if leader_epoch < o.leader_epoch => {
                tracing::debug!(
                    partition = index,
                    epoch = leader_epoch,
                    loaded = o.leader_epoch,
                    "ignoring a stale resign"
                );
                return;
            }
            Some(_) => {}
        }
        if let Some(old) = owned.remove(&index) {
            self.unload(&mut groups, index, old);
        }
        drop(owned);
        drop(groups);
        self.shared.changes.send_modify(|n| *n += 1);
    }

    /// Drops the groups of a partition given up (`old`, already removed from
    /// the owned ones). Call with `groups` locked.
    fn unload(&self, groups: &mut HashMap<String, Group>, index: i32, old: Owned) {
        old.cancel.cancel();
        let ids: Vec<String> = groups
            .keys()
            .filter(|id| self.partition_for(id) == index)
            .cloned()
            .collect();
        for id in &ids {
            let Some(g) = groups.remove(id) else { continue };
            for m in g.members.into_values() {
                if let Some(w) = m.join_waiter {
                    let _ = w.send(JoinResult::error(GroupError::NotCoordinator, m.id));
                }
                if let Some(w) = m.sync_waiter {
                    let _ = w.send(Err(GroupError::NotCoordinator));
                }
            }
        }
        tracing::info!(
            partition = index,
            epoch = old.leader_epoch,
            groups = ids.len(),
            "gave up consumer groups"
        );
    }

    /// Waits until partition `index` is loaded: true once it is, false when
    /// it is not (or no longer) owned.
    pub async fn wait_loaded(&self, index: i32) -> bool {
        let mut changes = self.shared.changes.subscribe();
        loop {
            match self.shared.owned.lock().get(&index) {
                None => return false,
                Some(o) if o.loaded => return true,
                Some(_) => {}
            }
            if changes.changed().await.is_err() {
                return false;
            }
        }
    }

    /// Whether this broker serves `group_id` now. Call with `groups` locked.
    fn check_coordinator(&self, group_id: &str) -> Result<(), GroupError> {
        match self.shared.owned.lock().get(&self.partition_for(group_id)) {
            None => Err(GroupError::NotCoordinator),
            Some(o) if !o.loaded => Err(GroupError::CoordinatorLoadInProgress),
            Some(_) => Ok(()),
        }
    }

    /// What stops the timers of `group_id` (None when its partition is not
    /// owned). Call with `groups` locked.
    fn cancel_token(&self, group_id: &str) -> Option<CancellationToken> {
        self.shared
            .owned
            .lock()
            .get(&self.partition_for(group_id))
            .map(|o| o.cancel.clone())
    }

    /// Appends records for `group_id` to its partition of `__consumer_offsets`
    /// as its leader (`None` when there is nothing to write). Call with
    /// `groups` locked.
    fn append(
        &self,
        group_id: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<Option<Written>, GroupError> {
        self.append_for(group_id, records, None)
    }

    /// [`GroupCoordinator::append`], inside the transaction of `producer`
    /// (id, epoch) when given.
    fn append_for(
        &self,
        group_id: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
        producer: Option<(i64, i16)>,
    ) -> Result<Option<Written>, GroupError> {
        let (p, epoch) = {
            let owned = self.shared.owned.lock();
            let o = owned
                .get(&self.partition_for(group_id))
                .filter(|o| o.loaded)
                .ok_or(GroupError::NotCoordinator)?;
            (o.partition.clone(), o.leader_epoch)
        };
        if records.is_empty() {
            return Ok(None);
        }
        let now = now_ms();
        let batch = store::build_batch_for(records, now, producer);
        let appended = match producer {
            None => p.append_as_leader(&batch, now, false, -1, self.shared.min_insync),
            Some(_) => p.append_from_coordinator(&batch, now, self.shared.min_insync),
        };
        let (info, written_epoch) = appended.map_err(write_error)?;
        if written_epoch != epoch {
            // A newer term this coordinator has not loaded yet (its election
            // comes next and reloads, this record included): what memory
            // holds may be stale.
            return Err(GroupError::NotCoordinator);
        }
        Ok(Some(Written {
            partition: p,
            end_offset: info.last_offset + 1,
            leader_epoch: written_epoch,
        }))
    }

    /// Resolves once every write is fsynced here and replicated to the ISR.
    fn durable(&self, writes: Vec<Written>) -> Durable {
        let timeout = self.shared.commit_timeout;
        let waits: Vec<_> = writes
            .into_iter()
            .map(|w| {
                let replicated = w
                    .partition
                    .wait_replicated(w.end_offset, w.leader_epoch, timeout);
                (self.shared.flusher.flush(w.partition), replicated)
            })
            .collect();
        Box::pin(async move {
            for (flushed, replicated) in waits {
                let (flushed, replicated) = tokio::join!(flushed, replicated);
                flushed.map_err(|e| GroupError::Storage(e.to_string()))?;
                replicated.map_err(write_error)?;
            }
            Ok(())
        })
    }

    /// Writes the group's metadata record; the fsync happens in the
    /// background (a lost record only costs a rebalance after a crash).
    fn persist_group(&self, g: &Group) {
        let record = (
            Key::Group(g.id.clone()).encode(),
            Some(g.to_value().encode()),
        );
        match self.append(&g.id, &[record]) {
            Ok(Some(w)) => self.shared.flusher.flush_in_background(w.partition),
            Ok(None) => {}
            Err(e) => tracing::warn!(group = %g.id, error = %e, "cannot store group metadata"),
        }
    }

    fn next_timer(&self) -> u64 {
        self.shared.timer_seq.fetch_add(1, Ordering::Relaxed)
    }

    // ---- JoinGroup -------------------------------------------------------

    /// Handles a JoinGroup; the receiver completes when the rebalance does
    /// (or at once with an error).
    pub fn join(&self, req: JoinRequest) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        let fail = |tx: oneshot::Sender<JoinResult>, e, id: &str| {
            let _ = tx.send(JoinResult::error(e, id.to_string()));
        };
        if req.group_id.is_empty() {
            fail(tx, GroupError::InvalidGroupId, &req.member_id);
            return rx;
        }
        let mut groups = self.shared.groups.lock();
        if let Err(e) = self.check_coordinator(&req.group_id) {
            fail(tx, e, &req.member_id);
            return rx;
        }
        if req.session_timeout_ms <= 0 || req.session_timeout_ms > 1_800_000 {
            fail(tx, GroupError::InvalidSessionTimeout, &req.member_id);
            return rx;
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            fail(tx, GroupError::InconsistentGroupProtocol, &req.member_id);
            return rx;
        }
        if !groups.contains_key(&req.group_id) {
            if !req.member_id.is_empty() {
                fail(tx, GroupError::UnknownMemberId, &req.member_id);
                return rx;
            }
            groups.insert(
                req.group_id.clone(),
                Group::new(req.group_id.clone(), now_ms()),
            );
        }
        let Some(g) = groups.get_mut(&req.group_id) else {
            fail(tx, GroupError::CoordinatorNotAvailable, &req.member_id);
            return rx;
        };
        if g.state == State::Dead {
            fail(tx, GroupError::CoordinatorNotAvailable, &req.member_id);
            return rx;
        }
        if !g.supports(&req.protocol_type, &req.protocols) {
            fail(tx, GroupError::InconsistentGroupProtocol, &req.member_id);
            return rx;
        }
        let now = Instant::now();
        g.pending
            .retain(|_, at| now.duration_since(*at) < ms(req.session_timeout_ms));
        if req.member_id.is_empty() {
            self.join_unknown(g, req, tx);
        } else {
            self.join_known(g, req, tx);
        }
        rx
    }

    fn join_unknown(&self, g: &mut Group, req: JoinRequest, tx: oneshot::Sender<JoinResult>) {
        if let Some(instance) = &req.instance_id {
            if let Some(old_id) = g.static_members.get(instance).cloned() {
                return self.replace_static_member(g, req, old_id, tx);
            }
            let id = new_member_id(instance);
            return self.add_member_and_rebalance(g, req, id, tx);
        }
        let id = new_member_id(&req.client_id);
        if req.require_known_member_id {
            g.pending.insert(id.clone(), Instant::now());
            let _ = tx.send(JoinResult::error(GroupError::MemberIdRequired, id));
            return;
        }
        self.add_member_and_rebalance(g, req, id, tx);
    }

    fn join_known(&self, g: &mut Group, req: JoinRequest, tx: oneshot::Sender<JoinResult>) {
        let id = req.member_id.clone();
        if g.is_fenced(&id, req.instance_id.as_deref()) {
            let _ = tx.send(JoinResult::error(GroupError::FencedInstanceId, id));
            return;
        }
        if !g.has(&id) {
            if g.pending.remove(&id).is_some() {
                return self.add_member_and_rebalance(g, req, id, tx);
            }
            let _ = tx.send(JoinResult::error(GroupError::UnknownMemberId, id));
            return;
        }
        let state = g.state;
        let is_leader = g.leader.as_deref() == Some(id.as_str());
        let Some(m) = g.member_mut(&id) else { return };
        let changed = m.protocols_changed(&req.protocols);
        m.touch();
        match state {
            State::CompletingRebalance if !changed => {
                let _ = tx.send(current_result(g, &id, is_leader));
            }
            State::Stable if !changed && !is_leader => {
                let _ = tx.send(current_result(g, &id, false));
            }
            _ => {
                m.protocols = req.protocols;
                m.session_timeout_ms = req.session_timeout_ms;
                m.rebalance_timeout_ms = req.rebalance_timeout_ms;
                m.client_id = req.client_id;
                if let Some(old) = m.join_waiter.replace(tx) {
                    let _ = old.send(JoinResult::error(GroupError::RebalanceInProgress, id));
                }
                if state == State::PreparingRebalance {
                    self.try_complete_join(g);
                } else {
                    self.prepare_rebalance(g);
                }
            }
        }
    }

    /// KIP-345: a static member restarted (new member id, same instance id).
    fn replace_static_member(
        &self,
        g: &mut Group,
        req: JoinRequest,
        old_id: String,
        tx: oneshot::Sender<JoinResult>,
    ) {
        let instance = req.instance_id.clone().unwrap_or_default();
        let new_id = new_member_id(&instance);
        let timer = self.next_timer();
        let was_leader = g.leader.as_deref() == Some(old_id.as_str());
        let state = g.state;
        let Some(m) = g.member_mut(&old_id) else {
            g.static_members.remove(&instance);
            return self.add_member_and_rebalance(g, req, new_id, tx);
        };
        if let Some(w) = m.join_waiter.take() {
            let _ = w.send(JoinResult::error(
                GroupError::FencedInstanceId,
                old_id.clone(),
            ));
        }
        if let Some(w) = m.sync_waiter.take() {
            let _ = w.send(Err(GroupError::FencedInstanceId));
        }
        m.id = new_id.clone();
        m.timer = timer;
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.session_timeout_ms = req.session_timeout_ms;
        m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        m.touch();
        let deadline = m.deadline;
        let changed = m.protocols_changed(&req.protocols);
        g.static_members.insert(instance, new_id.clone());
        if was_leader {
            g.leader = Some(new_id.clone());
        }
        self.start_session_timer(&g.id, &new_id, timer, deadline);
        if state == State::Stable && !changed {
            self.persist_group(g);
            let mut r = current_result(g, &new_id, false);
            if was_leader && req.supports_skip_assignment {
                r = current_result(g, &new_id, true);
                r.skip_assignment = true;
            } else if was_leader {
                // Older clients would reassign (with nobody's metadata): tell
                // them the old id leads, so they follow.
                r.leader = old_id;
            }
            let _ = tx.send(r);
            return;
        }
        if let Some(m) = g.member_mut(&new_id) {
            m.protocols = req.protocols;
            m.join_waiter = Some(tx);
        }
        if state == State::PreparingRebalance {
            self.try_complete_join(g);
        } else {
            self.prepare_rebalance(g);
        }
    }

    fn add_member_and_rebalance(
        &self,
        g: &mut Group,
        req: JoinRequest,
        id: String,
        tx: oneshot::Sender<JoinResult>,
    ) {
        let timer = self.next_timer();
        let deadline = Instant::now() + ms(req.session_timeout_ms);
        if g.members.is_empty() {
            g.protocol_type = Some(req.protocol_type.clone());
        }
        g.add(Member {
            id: id.clone(),
            instance_id: req.instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols,
            assignment: Bytes::new(),
            join_waiter: Some(tx),
            sync_waiter: None,
            deadline,
            timer,
        });
        self.start_session_timer(&g.id, &id, timer, deadline);
        if g.state == State::PreparingRebalance {
            self.try_complete_join(g);
        } else {
            self.prepare_rebalance(g);
        }
    }

    /// Moves the group to PreparingRebalance and arms the rebalance timer.
    fn prepare_rebalance(&self, g: &mut Group) {
        if g.state == State::CompletingRebalance {
            for m in g.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Err(GroupError::RebalanceInProgress));
                }
            }
        }
        let was_empty = g.state == State::Empty;
        g.set_state(State::PreparingRebalance, now_ms());
        g.rebalance += 1;
        let now = Instant::now();
        let timeout = ms(g.max_rebalance_timeout());
        let delay = std::time::Duration::from_millis(self.shared.initial_delay_ms);
        g.not_before = if was_empty {
            now + delay.min(timeout)
        } else {
            now
        };
        self.start_rebalance_timer(&g.id, g.rebalance, g.not_before, now + timeout);
        tracing::debug!(group = %g.id, generation = g.generation, "preparing rebalance");
        self.try_complete_join(g);
    }

    fn try_complete_join(&self, g: &mut Group) {
        if g.state == State::PreparingRebalance
            && g.all_rejoined()
            && Instant::now() >= g.not_before
        {
            self.complete_join(g);
        }
    }

    /// Ends the join phase: members that did not rejoin are removed, the
    /// generation advances, the protocol is chosen and every waiting member
    /// answered (the leader with everyone's metadata).
    fn complete_join(&self, g: &mut Group) {
        let gone: Vec<String> = g
            .members
            .values()
            .filter(|m| m.join_waiter.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            tracing::info!(group = %g.id, member = %id, "member did not rejoin in time; removed");
            if let Some(m) = g.remove(&id) {
                if let Some(w) = m.sync_waiter {
                    let _ = w.send(Err(GroupError::UnknownMemberId));
                }
            }
        }
        g.generation += 1;
        g.rebalance += 1;
        let now = now_ms();
        if g.members.is_empty() {
            g.protocol = None;
            g.leader = None;
            g.set_state(State::Empty, now);
            self.persist_group(g);
            tracing::info!(group = %g.id, generation = g.generation, "group is empty");
            return;
        }
        g.protocol = g.select_protocol();
        if !g
            .leader
            .as_deref()
            .is_some_and(|l| g.members.values().any(|m| m.id == l))
        {
            g.leader = g.members.values().next().map(|m| m.id.clone());
        }
        g.set_state(State::CompletingRebalance, now);
        tracing::info!(group = %g.id, generation = g.generation, members = g.members.len(), protocol = ?g.protocol, "rebalance: join complete");
        let leader = g.leader.clone().unwrap_or_default();
        let ids: Vec<String> = g.members.values().map(|m| m.id.clone()).collect();
        for id in ids {
            let r = current_result(g, &id, id == leader);
            if let Some(m) = g.member_mut(&id) {
                m.touch();
                if let Some(w) = m.join_waiter.take() {
                    let _ = w.send(r);
                }
            }
        }
    }

    /// Removes a member (left or expired) and rebalances the rest.
    fn remove_member(&self, g: &mut Group, id: &str) {
        let Some(m) = g.remove(id) else { return };
        if let Some(w) = m.join_waiter {
            let _ = w.send(JoinResult::error(GroupError::UnknownMemberId, id.into()));
        }
        if let Some(w) = m.sync_waiter {
            let _ = w.send(Err(GroupError::UnknownMemberId));
        }
        match g.state {
            State::Stable | State::CompletingRebalance => self.prepare_rebalance(g),
            State::PreparingRebalance => self.try_complete_join(g),
            State::Empty | State::Dead => {}
        }
    }

    // ---- SyncGroup, Heartbeat, LeaveGroup ---------------------------------

    /// Handles a SyncGroup; followers wait for the leader's assignment.
    #[allow(clippy::too_many_arguments)]
    pub fn sync(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol_name: Option<&str>,
        assignments: Vec<(String, Bytes)>,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        let mut groups = self.shared.groups.lock();
        if let Err(e) = self.check_coordinator(group_id) {
            let _ = tx.send(Err(e));
            return rx;
        }
        let Some(g) = groups.get_mut(group_id) else {
            let _ = tx.send(Err(GroupError::UnknownMemberId));
            return rx;
        };
        let check = if g.state == State::Dead {
            Err(GroupError::CoordinatorNotAvailable)
        } else if g.is_fenced(member_id, instance_id) {
            Err(GroupError::FencedInstanceId)
        } else if !g.has(member_id) {
            Err(GroupError::UnknownMemberId)
        } else if generation != g.generation {
            Err(GroupError::IllegalGeneration)
        } else if protocol_type.is_some_and(|t| g.protocol_type.as_deref() != Some(t))
            || protocol_name.is_some_and(|n| g.protocol.as_deref() != Some(n))
        {
            Err(GroupError::InconsistentGroupProtocol)
        } else {
            match g.state {
                State::Empty | State::Dead => Err(GroupError::UnknownMemberId),
                State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
                _ => Ok(()),
            }
        };
        if let Err(e) = check {
            let _ = tx.send(Err(e));
            return rx;
        }
        let result = (g.protocol_type.clone(), g.protocol.clone());
        let is_leader = g.leader.as_deref() == Some(member_id);
        let state = g.state;
        let Some(m) = g.member_mut(member_id) else {
            return rx;
        };
        m.touch();
        if state == State::Stable {
            let _ = tx.send(Ok((result.0, result.1, m.assignment.clone())));
            return rx;
        }
        m.sync_waiter = Some(tx);
        if is_leader {
            for m in g.members.values_mut() {
                m.assignment = assignments
                    .iter()
                    .find(|(id, _)| *id == m.id)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default();
            }
            g.set_state(State::Stable, now_ms());
            self.persist_group(g);
            tracing::info!(group = %g.id, generation = g.generation, "rebalance: group is stable");
            for m in g.members.values_mut() {
                if let Some(w) = m.sync_waiter.take() {
                    let _ = w.send(Ok((
                        result.0.clone(),
                        result.1.clone(),
                        m.assignment.clone(),
                    )));
                }
            }
        }
        rx
    }

    /// Handles a Heartbeat. While the group's partition loads, the answer
    /// is a blind success, as in Kafka: the member's session restarts when
    /// the load ends, so it need not rejoin.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let mut groups = self.shared.groups.lock();
        match self.check_coordinator(group_id) {
            Err(GroupError::CoordinatorLoadInProgress) => return Ok(()),
            r => r?,
        }
        let g = groups
            .get_mut(group_id)
            .ok_or(GroupError::UnknownMemberId)?;
        if g.state == State::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if g.is_fenced(member_id, instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        let state = g.state;
        let current = g.generation;
        let m = g.member_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
        if generation != current {
            return Err(GroupError::IllegalGeneration);
        }
        m.touch();
        match state {
            State::PreparingRebalance => Err(GroupError::RebalanceInProgress),
            State::Empty | State::Dead => Err(GroupError::UnknownMemberId),
            State::CompletingRebalance | State::Stable => Ok(()),
        }
    }

    /// Handles a LeaveGroup of `(member id, group instance id)` identities;
    /// one result per identity.
    pub fn leave(
        &self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
    ) -> Result<Vec<Option<GroupError>>, GroupError> {
        let mut groups = self.shared.groups.lock();
        self.check_coordinator(group_id)?;
        let Some(g) = groups.get_mut(group_id) else {
            return Ok(leaving
                .iter()
                .map(|_| Some(GroupError::UnknownMemberId))
                .collect());
        };
        if g.state == State::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        let mut out = Vec::with_capacity(leaving.len());
        for (member_id, instance_id) in leaving {
            let target = match instance_id {
                Some(i) => match g.static_members.get(i) {
                    None => Err(GroupError::UnknownMemberId),
                    Some(cur) if !member_id.is_empty() && cur != member_id => {
                        Err(GroupError::FencedInstanceId)
                    }
                    Some(cur) => Ok(cur.clone()),
                },
                None if g.has(member_id) => Ok(member_id.clone()),
                None if g.pending.remove(member_id).is_some() => {
                    out.push(None);
                    continue;
                }
                None => Err(GroupError::UnknownMemberId),
            };
            match target {
                Ok(id) => {
                    tracing::info!(group = %g.id, member = %id, "member left");
                    self.remove_member(g, &id);
                    out.push(None);
                }
                Err(e) => out.push(Some(e)),
            }
        }
        Ok(out)
    }

    // ---- Offsets ------------------------------------------------------------

    /// Commits offsets (already checked against the topic registry). The
    /// offsets are visible at once; the returned future resolves once they
    /// are durable.
    pub fn commit(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<CommitEntry>,
    ) -> Result<Durable, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let mut groups = self.shared.groups.lock();
        self.check_coordinator(group_id)?;
        if !groups.contains_key(group_id) {
            if generation >= 0 {
                return Err(GroupError::IllegalGeneration);
            }
            groups.insert(group_id.to_string(), Group::new(group_id.into(), now_ms()));
        }
        let g = groups
            .get_mut(group_id)
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        if g.state == State::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if g.is_fenced(member_id, instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if !(generation < 0 && g.state == State::Empty) {
            if g.state == State::CompletingRebalance {
                return Err(GroupError::RebalanceInProgress);
            }
            let current = g.generation;
            let m = g.member_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
            if generation != current {
                return Err(GroupError::IllegalGeneration);
            }
            m.touch();
        }
        let now = now_ms();
        let records: Vec<_> = entries
            .iter()
            .map(|e| offset_record(group_id, e, now))
            .collect();
        if records.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let written = self.append(group_id, &records)?;
        for e in entries {
            g.offsets
                .insert((e.topic.clone(), e.partition), committed(e, now));
        }
        Ok(self.durable(written.into_iter().collect()))
    }

    /// TxnOffsetCommit: offsets committed in the transaction of `producer`
    /// (id, epoch). They are written now, in a transactional batch, and
    /// become the group's committed offsets only when the transaction's
    /// commit marker reaches the group's partition
    /// ([`GroupCoordinator::complete_txn`]); an abort drops them. With a
    /// generation (TxnOffsetCommit v3+) the member is checked as for
    /// OffsetCommit.
    pub fn txn_commit(
        &self,
        group_id: &str,
        producer: (i64, i16),
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        entries: Vec<CommitEntry>,
    ) -> Result<Durable, GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId);
        }
        let mut groups = self.shared.groups.lock();
        self.check_coordinator(group_id)?;
        let g = groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id.into(), now_ms()));
        if g.state == State::Dead {
            return Err(GroupError::CoordinatorNotAvailable);
        }
        if g.is_fenced(member_id, instance_id) {
            return Err(GroupError::FencedInstanceId);
        }
        if generation >= 0 || !member_id.is_empty() {
            let current = g.generation;
            let m = g.member_mut(member_id).ok_or(GroupError::UnknownMemberId)?;
            if generation != current {
                return Err(GroupError::IllegalGeneration);
            }
            m.touch();
        }
        let now = now_ms();
        let records: Vec<_> = entries
            .iter()
            .map(|e| offset_record(group_id, e, now))
            .collect();
        if records.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let written = self.append_for(group_id, &records, Some(producer))?;
        let pending = g.pending_txn.entry(producer.0).or_default();
        for e in entries {
            pending.insert((e.topic.clone(), e.partition), committed(e, now));
        }
        Ok(self.durable(written.into_iter().collect()))
    }

    /// A transaction marker of `producer` was written to partition `index`
    /// of `__consumer_offsets`: the transaction's offsets of the groups
    /// there become committed (commit) or are dropped (abort).
    pub fn complete_txn(&self, index: i32, producer: i64, commit: bool) {
        let mut groups = self.shared.groups.lock();
        let of_partition = groups
            .values_mut()
            .filter(|g| store::partition_for(&g.id, self.shared.num_partitions) == index);
        load::complete_txn(of_partition, producer, commit);
    }

    /// Partitions of `group_id` with offsets in a transaction not yet
    /// completed: OffsetFetch with `require_stable` answers them
    /// UNSTABLE_OFFSET_COMMIT, so the consumer waits for the outcome.
    pub fn unstable_offsets(&self, group_id: &str) -> Vec<(String, i32)> {
        let groups = self.shared.groups.lock();
        let Some(g) = groups.get(group_id) else {
            return Vec::new();
        };
        let mut out: Vec<_> = g
            .pending_txn
            .values()
            .flat_map(|p| p.keys().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Committed offsets of a group: of the partitions asked, or all of them
    /// (`None`). `None` offsets were never committed.
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, Vec<(i32, Option<Committed>)>)>, GroupError> {
        let groups = self.shared.groups.lock();
        self.check_coordinator(group_id)?;
        let g = groups.get(group_id);
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(t, parts)| {
                    let parts = parts
                        .into_iter()
                        .map(|p| {
                            let c = g.and_then(|g| g.offsets.get(&(t.clone(), p)).cloned());
                            (p, c)
                        })
                        .collect();
                    (t, parts)
                })
                .collect(),
            None => {
                let mut out: Vec<(String, Vec<(i32, Option<Committed>)>)> = Vec::new();
                for ((t, p), c) in g.iter().flat_map(|g| g.offsets.iter()) {
                    match out.last_mut() {
                        Some((last, parts)) if last == t => parts.push((*p, Some(c.clone()))),
                        _ => out.push((t.clone(), vec![(*p, Some(c.clone()))])),
                    }
                }
                out
            }
        })
    }

    // ---- Admin --------------------------------------------------------------

    /// Every group this broker coordinates (of its loaded partitions),
    /// sorted by id.
    pub fn list(&self) -> Vec<GroupListing> {
        let groups = self.shared.groups.lock();
        let mut out: Vec<_> = groups
            .values()
            .map(|g| GroupListing {
                group_id: g.id.clone(),
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                state: g.state,
            })
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        out
    }

    /// A group's state and members; an unknown group is Dead, as in Kafka.
    /// Member metadata and assignments (and the protocol) only when Stable.
    pub fn describe(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        let groups = self.shared.groups.lock();
        self.check_coordinator(group_id)?;
        let Some(g) = groups.get(group_id) else {
            return Ok(GroupDescription {
                state: State::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            });
        };
        let stable = g.state == State::Stable;
        let protocol = g.protocol.clone().unwrap_or_default();
        Ok(GroupDescription {
            state: g.state,
            protocol_type: g.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                protocol.clone()
            } else {
                String::new()
            },
            members: g
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(&protocol)
                    } else {
                        Bytes::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Bytes::new()
                    },
                })
                .collect(),
        })
    }

    /// Deletes empty groups with their offsets (tombstones); one result per id.
    pub fn delete_groups(&self, ids: &[String]) -> (Vec<Option<GroupError>>, Durable) {
        let mut groups = self.shared.groups.lock();
        let mut out = Vec::with_capacity(ids.len());
        let mut written = Vec::new();
        for id in ids {
            if id.is_empty() {
                out.push(Some(GroupError::InvalidGroupId));
                continue;
            }
            if let Err(e) = self.check_coordinator(id) {
                out.push(Some(e));
                continue;
            }
            let Some(g) = groups.get(id) else {
                out.push(Some(GroupError::GroupIdNotFound));
                continue;
            };
            if g.state == State::Dead {
                out.push(Some(GroupError::GroupIdNotFound));
                continue;
            }
            if g.state != State::Empty {
                out.push(Some(GroupError::NonEmptyGroup));
                continue;
            }
            let mut records: Vec<_> = g
                .offsets
                .keys()
                .map(|(t, p)| {
                    let key = Key::Offset {
                        group: id.clone(),
                        topic: t.clone(),
                        partition: *p,
                    };
                    (key.encode(), None)
                })
                .collect();
            records.push((Key::Group(id.clone()).encode(), None));
            match self.append(id, &records) {
                Ok(w) => {
                    groups.remove(id);
                    tracing::info!(group = %id, "deleted group");
                    written.extend(w);
                    out.push(None);
                }
                Err(e) => out.push(Some(e)),
            }
        }
        (out, self.durable(written))
    }

    /// Deletes committed offsets of a group (OffsetDelete). Partitions of
    /// topics a non-empty consumer group subscribes to are refused.
    #[allow(clippy::type_complexity)]
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> Result<(Vec<Option<GroupError>>, Durable), GroupError> {
        let mut groups = self.shared.groups.lock();
        self.check_coordinator(group_id)?;
        let g = groups
            .get_mut(group_id)
            .ok_or(GroupError::GroupIdNotFound)?;
        if g.state == State::Dead {
            return Err(GroupError::GroupIdNotFound);
        }
        let subscribed = if g.state == State::Empty {
            Vec::new()
        } else {
            g.subscribed_topics().ok_or(GroupError::NonEmptyGroup)?
        };
        let mut out = Vec::with_capacity(partitions.len());
        let mut records = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(t) {
                out.push(Some(GroupError::GroupSubscribedToTopic));
                continue;
            }
            if g.offsets.remove(&(t.clone(), *p)).is_some() {
                let key = Key::Offset {
                    group: group_id.to_string(),
                    topic: t.clone(),
                    partition: *p,
                };
                records.push((key.encode(), None));
            }
            out.push(None);
        }
        let written = self.append(group_id, &records)?;
        Ok((out, self.durable(written.into_iter().collect())))
    }

    /// `offsets.retention.minutes`: drops the offsets of groups that have
    /// been empty that long (counting from the later of the group becoming
    /// empty and the commit), then the groups left with nothing. Only groups
    /// in memory are looked at, i.e. those of owned, loaded partitions.
    pub fn expire_offsets(&self, now_ms: i64) {
        let retention = self.shared.retention_ms;
        if retention <= 0 {
            return;
        }
        let mut groups = self.shared.groups.lock();
        let mut dead = Vec::new();
        for g in groups.values_mut() {
            if g.state != State::Empty {
                continue;
            }
            let since = g.state_timestamp;
            let expired: Vec<(String, i32)> = g
                .offsets
                .iter()
                .filter(|(_, c)| now_ms.saturating_sub(since.max(c.commit_timestamp)) >= retention)
                .map(|(k, _)| k.clone())
                .collect();
            let mut records: Vec<_> = expired
                .iter()
                .map(|(t, p)| {
                    let key = Key::Offset {
                        group: g.id.clone(),
                        topic: t.clone(),
                        partition: *p,
                    };
                    (key.encode(), None)
                })
                .collect();
            for k in &expired {
                g.offsets.remove(k);
            }
            let remove =
                g.offsets.is_empty() && now_ms.saturating_sub(g.state_timestamp) >= retention;
            if remove {
                records.push((Key::Group(g.id.clone()).encode(), None));
                dead.push(g.id.clone());
            }
            if records.is_empty() {
                continue;
            }
            tracing::info!(group = %g.id, offsets = expired.len(), removed = remove, "expired committed offsets");
            match self.append(&g.id, &records) {
                Ok(Some(w)) => self.shared.flusher.flush_in_background(w.partition),
                Ok(None) => {}
                Err(e) => tracing::warn!(group = %g.id, error = %e, "cannot write offset expiry"),
            }
        }
        for id in dead {
            groups.remove(&id);
        }
    }
}

/// The JoinGroup answer describing the group's current generation.
fn current_result(g: &Group, member_id: &str, with_members: bool) -> JoinResult {
    let protocol = g.protocol.clone().unwrap_or_default();
    JoinResult {
        error: None,
        generation: g.generation,
        protocol_type: g.protocol_type.clone(),
        protocol: g.protocol.clone(),
        leader: g.leader.clone().unwrap_or_default(),
        member_id: member_id.to_string(),
        members: if with_members {
            g.members
                .values()
                .map(|m| (m.id.clone(), m.instance_id.clone(), m.metadata(&protocol)))
                .collect()
        } else {
            Vec::new()
        },
        skip_assignment: false,
    }
}

#[cfg(test)]
mod tests;
