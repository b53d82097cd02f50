//! The classic group coordinator: JoinGroup/SyncGroup/Heartbeat/LeaveGroup
//! with Kafka's state machine (Empty, PreparingRebalance,
//! CompletingRebalance, Stable, Dead), committed offsets, and their storage
//! in `__consumer_offsets`.
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

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use state::{ms, Group, Member};
pub use state::{Committed, GroupError, JoinResult, State, SyncResult};
use store::{Key, OffsetValue};

use crate::broker::now_ms;
use crate::flusher::Flusher;
use crate::partition::Partition;

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

struct Shared {
    groups: Mutex<HashMap<String, Group>>,
    /// The partitions of `__consumer_offsets`, by index.
    partitions: Vec<Arc<Partition>>,
    flusher: Flusher,
    initial_delay_ms: u64,
    retention_ms: i64,
    timer_seq: AtomicU64,
}

/// Handle to the group coordinator; clones share it.
#[derive(Clone)]
pub struct GroupCoordinator {
    shared: Arc<Shared>,
}

fn new_member_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

impl GroupCoordinator {
    /// Loads every group and committed offset from the partitions of
    /// `__consumer_offsets` (in index order) and starts the session timers of
    /// the members found there.
    pub fn open(
        partitions: Vec<Arc<Partition>>,
        flusher: Flusher,
        initial_rebalance_delay_ms: u64,
        offsets_retention_minutes: i64,
    ) -> GroupCoordinator {
        let groups = load::load(&partitions);
        let coordinator = GroupCoordinator {
            shared: Arc::new(Shared {
                groups: Mutex::new(HashMap::new()),
                partitions,
                flusher,
                initial_delay_ms: initial_rebalance_delay_ms,
                retention_ms: offsets_retention_minutes.saturating_mul(60_000),
                timer_seq: AtomicU64::new(1),
            }),
        };
        let mut map = HashMap::new();
        for mut g in groups {
            for m in g.members.values_mut() {
                m.timer = coordinator.next_timer();
                coordinator.start_session_timer(&g.id, &m.id, m.timer, m.deadline);
            }
            map.insert(g.id.clone(), g);
        }
        tracing::info!(groups = map.len(), "loaded consumer groups");
        *coordinator.shared.groups.lock() = map;
        coordinator
    }

    /// The partition of `__consumer_offsets` that holds `group_id`.
    pub fn partition_for(&self, group_id: &str) -> i32 {
        store::partition_for(
            group_id,
            i32::try_from(self.shared.partitions.len()).unwrap_or(1),
        )
    }

    /// Appends records for `group_id` to its partition of `__consumer_offsets`.
    fn append(
        &self,
        group_id: &str,
        records: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<Arc<Partition>, GroupError> {
        let index = usize::try_from(self.partition_for(group_id)).unwrap_or(0);
        let p = self
            .shared
            .partitions
            .get(index)
            .cloned()
            .ok_or(GroupError::CoordinatorNotAvailable)?;
        if records.is_empty() {
            return Ok(p);
        }
        let now = now_ms();
        let batch = store::build_batch(records, now);
        p.append(&batch, now, false)
            .map_err(|e| GroupError::Storage(e.to_string()))?;
        Ok(p)
    }

    fn durable(&self, partitions: Vec<Arc<Partition>>) -> Durable {
        let waits: Vec<_> = partitions
            .into_iter()
            .map(|p| self.shared.flusher.flush(p))
            .collect();
        Box::pin(async move {
            for w in waits {
                w.await.map_err(|e| GroupError::Storage(e.to_string()))?;
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
            Ok(p) => self.shared.flusher.flush_in_background(p),
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
        if req.session_timeout_ms <= 0 || req.session_timeout_ms > 1_800_000 {
            fail(tx, GroupError::InvalidSessionTimeout, &req.member_id);
            return rx;
        }
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            fail(tx, GroupError::InconsistentGroupProtocol, &req.member_id);
            return rx;
        }
        let mut groups = self.shared.groups.lock();
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

    /// Handles a Heartbeat.
    pub fn heartbeat(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<(), GroupError> {
        let mut groups = self.shared.groups.lock();
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
            .map(|e| {
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
            })
            .collect();
        if records.is_empty() {
            return Ok(Box::pin(async { Ok(()) }));
        }
        let p = self.append(group_id, &records)?;
        for e in entries {
            g.offsets.insert(
                (e.topic, e.partition),
                Committed {
                    offset: e.offset,
                    leader_epoch: e.leader_epoch,
                    metadata: e.metadata,
                    commit_timestamp: now,
                },
            );
        }
        Ok(self.durable(vec![p]))
    }

    /// Committed offsets of a group: of the partitions asked, or all of them
    /// (`None`). `None` offsets were never committed.
    #[allow(clippy::type_complexity)]
    pub fn fetch_offsets(
        &self,
        group_id: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<(i32, Option<Committed>)>)> {
        let groups = self.shared.groups.lock();
        let g = groups.get(group_id);
        match topics {
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
        }
    }

    // ---- Admin --------------------------------------------------------------

    /// Every group, sorted by id.
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
    pub fn describe(&self, group_id: &str) -> GroupDescription {
        let groups = self.shared.groups.lock();
        let Some(g) = groups.get(group_id) else {
            return GroupDescription {
                state: State::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: Vec::new(),
            };
        };
        let stable = g.state == State::Stable;
        let protocol = g.protocol.clone().unwrap_or_default();
        GroupDescription {
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
        }
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
                Ok(p) => {
                    groups.remove(id);
                    tracing::info!(group = %id, "deleted group");
                    written.push(p);
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
        let p = self.append(group_id, &records)?;
        let durable = if records.is_empty() {
            self.durable(Vec::new())
        } else {
            self.durable(vec![p])
        };
        Ok((out, durable))
    }

    /// `offsets.retention.minutes`: drops the offsets of groups that have
    /// been empty that long (counting from the later of the group becoming
    /// empty and the commit), then the groups left with nothing.
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
                Ok(p) => self.shared.flusher.flush_in_background(p),
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
