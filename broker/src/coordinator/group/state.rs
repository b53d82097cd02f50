//! A group's in-memory state: members, generation, the chosen protocol and
//! the committed offsets, and the parts of the state machine that need no
//! timers or storage (protocol selection, who has rejoined).

use std::collections::{BTreeMap, HashMap};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::store::{GroupValue, MemberValue, OffsetValue};

/// Kafka's group states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// The name Kafka uses in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// Why a group operation was refused; `handler/` maps each to its Kafka code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("the group id is empty")]
    InvalidGroupId,
    #[error("unknown member id")]
    UnknownMemberId,
    #[error("the generation id is not the group's current one")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("another member joined with this group.instance.id")]
    FencedInstanceId,
    #[error("the protocol type or protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("a member id is required: rejoin with the id given")]
    MemberIdRequired,
    #[error("session timeout out of range")]
    InvalidSessionTimeout,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the group has members")]
    NonEmptyGroup,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("the offset metadata is too large")]
    OffsetMetadataTooLarge,
    #[error("the coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("this broker is not the coordinator of the group")]
    NotCoordinator,
    #[error("the coordinator is still loading the group's partition of __consumer_offsets")]
    CoordinatorLoadInProgress,
    #[error("cannot write to __consumer_offsets: {0}")]
    Storage(String),
}

/// What a JoinGroup gets back.
#[derive(Debug, Clone, Default)]
pub struct JoinResult {
    pub error: Option<GroupError>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member's id, instance id and metadata: for the leader only.
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// JoinGroup v9: a static leader that rejoined keeps the assignment.
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(e: GroupError, member_id: String) -> JoinResult {
        JoinResult {
            error: Some(e),
            generation: -1,
            member_id,
            ..Default::default()
        }
    }
}

/// What a SyncGroup gets back.
pub type SyncResult = Result<(Option<String>, Option<String>, Bytes), GroupError>;

/// One member of a group.
#[derive(Debug)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// `(protocol name, metadata)` in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    pub join_waiter: Option<oneshot::Sender<JoinResult>>,
    pub sync_waiter: Option<oneshot::Sender<SyncResult>>,
    /// When the session expires unless a heartbeat (or join/sync) arrives.
    pub deadline: Instant,
    /// Identifies the session timer task watching this member.
    pub timer: u64,
}

impl Member {
    pub fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(n, _)| n == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }

    pub fn touch(&mut self) {
        self.deadline = Instant::now() + ms(self.session_timeout_ms);
    }

    fn same_protocols(&self, other: &[(String, Bytes)]) -> bool {
        self.protocols == other
    }

    pub fn protocols_changed(&self, other: &[(String, Bytes)]) -> bool {
        !self.same_protocols(other)
    }
}

/// A committed offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

impl From<OffsetValue> for Committed {
    fn from(v: OffsetValue) -> Committed {
        Committed {
            offset: v.offset,
            leader_epoch: v.leader_epoch,
            metadata: v.metadata,
            commit_timestamp: v.commit_timestamp,
        }
    }
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    pub id: String,
    pub state: State,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Members by id, in join order (for a stable leader choice).
    pub members: BTreeMap<u64, Member>,
    next_seq: u64,
    /// `group.instance.id` -> member id of static members.
    pub static_members: HashMap<String, String>,
    /// Ids handed out with MEMBER_ID_REQUIRED, with when.
    pub pending: HashMap<String, Instant>,
    pub offsets: BTreeMap<(String, i32), Committed>,
    /// Offsets committed in transactions still open, by producer id: they
    /// become `offsets` on the commit marker and vanish on the abort marker.
    pub pending_txn: HashMap<i64, BTreeMap<(String, i32), Committed>>,
    /// When the group last changed state (ms since the epoch).
    pub state_timestamp: i64,
    /// Identifies the current rebalance; a timer of an older one is stale.
    pub rebalance: u64,
    /// No rebalance completes before this (`group.initial.rebalance.delay.ms`).
    pub not_before: Instant,
}

pub fn ms(v: i32) -> std::time::Duration {
    std::time::Duration::from_millis(u64::try_from(v).unwrap_or(0))
}

impl Group {
    pub fn new(id: String, now_ms: i64) -> Group {
        Group {
            id,
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            next_seq: 0,
            static_members: HashMap::new(),
            pending: HashMap::new(),
            offsets: BTreeMap::new(),
            pending_txn: HashMap::new(),
            state_timestamp: now_ms,
            rebalance: 0,
            not_before: Instant::now(),
        }
    }

    pub fn set_state(&mut self, state: State, now_ms: i64) {
        self.state = state;
        self.state_timestamp = now_ms;
    }

    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.values().find(|m| m.id == id)
    }

    pub fn member_mut(&mut self, id: &str) -> Option<&mut Member> {
        self.members.values_mut().find(|m| m.id == id)
    }

    pub fn has(&self, id: &str) -> bool {
        self.member(id).is_some()
    }

    pub fn add(&mut self, member: Member) {
        if let Some(i) = &member.instance_id {
            self.static_members.insert(i.clone(), member.id.clone());
        }
        if self.leader.is_none() {
            self.leader = Some(member.id.clone());
        }
        self.next_seq += 1;
        self.members.insert(self.next_seq, member);
    }

    /// Removes a member, choosing a new leader if it led.
    pub fn remove(&mut self, id: &str) -> Option<Member> {
        let seq = *self.members.iter().find(|(_, m)| m.id == id)?.0;
        let m = self.members.remove(&seq)?;
        if let Some(i) = &m.instance_id {
            if self.static_members.get(i).is_some_and(|v| v == id) {
                self.static_members.remove(i);
            }
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = self.members.values().next().map(|m| m.id.clone());
        }
        Some(m)
    }

    /// A static member whose instance id now belongs to another member id.
    pub fn is_fenced(&self, member_id: &str, instance_id: Option<&str>) -> bool {
        instance_id
            .and_then(|i| self.static_members.get(i))
            .is_some_and(|current| current != member_id)
    }

    /// The protocols every member supports.
    pub fn candidates(&self) -> Vec<String> {
        let mut it = self.members.values();
        let Some(first) = it.next() else {
            return Vec::new();
        };
        let mut c: Vec<String> = first.protocols.iter().map(|(n, _)| n.clone()).collect();
        for m in it {
            c.retain(|n| m.protocols.iter().any(|(p, _)| p == n));
        }
        c
    }

    /// Whether a joining member with these protocols fits the group.
    pub fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let c = self.candidates();
        protocols.iter().any(|(n, _)| c.contains(n))
    }

    /// Kafka's vote: each member votes for its most preferred candidate.
    pub fn select_protocol(&self) -> Option<String> {
        let c = self.candidates();
        let mut votes: Vec<(String, usize)> = c.iter().map(|n| (n.clone(), 0)).collect();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| c.contains(n)) {
                if let Some(v) = votes.iter_mut().find(|(c, _)| c == n) {
                    v.1 += 1;
                }
            }
        }
        let max = votes.iter().map(|v| v.1).max()?;
        votes.into_iter().find(|v| v.1 == max).map(|v| v.0)
    }

    pub fn all_rejoined(&self) -> bool {
        self.members.values().all(|m| m.join_waiter.is_some())
    }

    pub fn max_rebalance_timeout(&self) -> i32 {
        self.members
            .values()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0)
    }

    /// The topics the members subscribed to, from the consumer protocol's
    /// subscription metadata; `None` when the group is not a consumer group
    /// or a subscription cannot be read.
    pub fn subscribed_topics(&self) -> Option<Vec<String>> {
        if self.protocol_type.as_deref() != Some("consumer") {
            return None;
        }
        let protocol = self.protocol.as_deref()?;
        let mut topics = Vec::new();
        for m in self.members.values() {
            let meta = m.metadata(protocol);
            let mut r = super::store::Reader { buf: &meta, pos: 0 };
            r.i16()?;
            let n = r.i32()?;
            for _ in 0..n.max(0) {
                topics.push(r.string()?);
            }
        }
        Some(topics)
    }

    /// The group's metadata record value.
    pub fn to_value(&self) -> GroupValue {
        let protocol = self.protocol.clone().unwrap_or_default();
        GroupValue {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp: self.state_timestamp,
            members: self
                .members
                .values()
                .map(|m| MemberValue {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: m.metadata(&protocol),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, protocols: &[&str]) -> Member {
        Member {
            id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            rebalance_timeout_ms: 1000,
            session_timeout_ms: 1000,
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::new()))
                .collect(),
            assignment: Bytes::new(),
            join_waiter: None,
            sync_waiter: None,
            deadline: Instant::now(),
            timer: 0,
        }
    }

    #[test]
    fn protocol_is_chosen_among_those_every_member_supports() {
        let mut g = Group::new("g".into(), 0);
        g.protocol_type = Some("consumer".into());
        g.add(member("a", &["cooperative-sticky", "range"]));
        g.add(member("b", &["range", "roundrobin"]));
        assert_eq!(g.candidates(), vec!["range".to_string()]);
        assert_eq!(g.select_protocol().as_deref(), Some("range"));
        assert!(g.supports("consumer", &[("range".into(), Bytes::new())]));
        assert!(!g.supports("consumer", &[("custom".into(), Bytes::new())]));
        assert!(!g.supports("connect", &[("range".into(), Bytes::new())]));
    }

    #[test]
    fn leader_moves_to_the_next_member_when_it_leaves() {
        let mut g = Group::new("g".into(), 0);
        g.add(member("a", &["range"]));
        g.add(member("b", &["range"]));
        assert_eq!(g.leader.as_deref(), Some("a"));
        g.remove("a");
        assert_eq!(g.leader.as_deref(), Some("b"));
    }
}
