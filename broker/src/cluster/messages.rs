//! Requests brokers send to the active controller over the controller port,
//! and its answers. Internal to Sluice (serde, not Kafka's wire format): the
//! Kafka-facing admin APIs are translated into these by `handler/`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::image::{BrokerRegistration, PartitionState};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the broker default (`num.partitions`).
    pub partitions: i32,
    /// -1: the broker default (`default.replication.factor`).
    pub replication_factor: i16,
    /// Explicit replica lists by partition index, instead of placement.
    pub assignments: Option<Vec<Vec<i32>>>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerRequest {
    Register(BrokerRegistration),
    Heartbeat {
        id: i32,
        incarnation: uuid::Uuid,
        /// The broker wants to stop: move its leaderships away first.
        want_shutdown: bool,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    CreatePartitions {
        topic: String,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    },
    /// Replaces the topic's config overrides whole.
    SetTopicConfigs {
        topic: String,
        configs: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// A partition leader asks to change the ISR (KIP-497's AlterPartition).
    AlterIsr {
        topic: String,
        partition: i32,
        leader: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Preferred (or, with `unclean`, any-replica) leader election; `None`
    /// means every partition.
    ElectLeaders {
        partitions: Option<Vec<(String, i32)>>,
        unclean: bool,
    },
    /// A block of producer ids for the broker to hand out (Kafka's
    /// AllocateProducerIds).
    AllocateProducerIds {
        broker: i32,
    },
    /// `None` as the replica list cancels the reassignment of that partition.
    AlterReassignments {
        reassignments: Vec<(String, i32, Option<Vec<i32>>)>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ControllerError {
    #[error("this node is not the active controller")]
    NotController,
    #[error("no active controller: {0}")]
    NoController(String),
    #[error("topic '{0}' already exists")]
    TopicExists(String),
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("unknown partition {1} of topic '{0}'")]
    UnknownPartition(String, i32),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    PolicyViolation(String),
    #[error("broker {0} is not registered")]
    UnknownBroker(i32),
    #[error("stale request: {0}")]
    StaleEpoch(String),
    #[error("broker {0} is not the leader")]
    NotLeader(i32),
    #[error("the election is not needed: the preferred leader already leads")]
    ElectionNotNeeded,
    #[error("{0}")]
    EligibleLeadersNotAvailable(String),
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    #[error("no reassignment in progress")]
    NoReassignmentInProgress,
    #[error("the metadata quorum failed: {0}")]
    Quorum(String),
}

pub type Outcome = Result<(), ControllerError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ControllerResponse {
    Registered,
    Heartbeat {
        /// The controller fenced this broker (its session expired or it is
        /// an old incarnation): it must register again.
        fenced: bool,
        /// Controlled shutdown may finish: the broker leads nothing any more.
        shutdown_ready: bool,
    },
    /// One outcome per requested item, in request order, and the metadata
    /// log index that holds the changes (the caller waits for its own image
    /// to reach it before answering its client).
    Outcomes {
        outcomes: Vec<Outcome>,
        applied_index: u64,
    },
    Partition(PartitionState),
    /// Producer ids `start..start + len`.
    ProducerIds {
        start: i64,
        len: i64,
    },
    Error(ControllerError),
}
