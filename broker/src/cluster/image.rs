//! The metadata image: the state every broker serves Metadata from, built by
//! applying [`MetadataRecord`]s from the replicated metadata log in order.
//!
//! Applying a record is a pure function of the image and the record, so
//! every broker that applied the same log prefix holds the same image. The
//! controller decides (placement, elections, ISR changes) and writes the
//! outcome as records; the image never decides anything.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// No leader (all replicas offline, or not yet elected).
pub const NO_LEADER: i32 = -1;

/// A broker as it registered with the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: i32,
    /// The Kafka listener clients are told about.
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    /// The metadata-quorum address (`--controller-listen`), when it has one.
    pub controller_addr: Option<String>,
    /// Changes at every process start, so a restarted broker is a new
    /// incarnation even with the same id.
    pub incarnation: Uuid,
    /// A fenced broker is not live: it leads nothing and is not in any ISR.
    pub fenced: bool,
    /// Set while the broker hands off leadership before it stops.
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    pub fn is_live(&self) -> bool {
        !self.fenced && !self.in_controlled_shutdown
    }
}

/// Replicas, ISR and leadership of one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    /// Replica set in preference order: the first is the preferred leader.
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub leader: i32,
    /// Bumped at every leader change; stamped in each batch the leader writes.
    pub leader_epoch: i32,
    /// Bumped at every change of this state (leader, ISR or replicas), so a
    /// stale ISR change from an old leader can be refused.
    pub partition_epoch: i32,
    /// An ongoing reassignment: replicas being added (catching up) and
    /// replicas to remove once they are in the ISR.
    #[serde(default)]
    pub adding: Vec<i32>,
    #[serde(default)]
    pub removing: Vec<i32>,
}

impl PartitionState {
    pub fn new(replicas: Vec<i32>, live: &dyn Fn(i32) -> bool) -> PartitionState {
        let isr: Vec<i32> = replicas.iter().copied().filter(|r| live(*r)).collect();
        let leader = isr.first().copied().unwrap_or(NO_LEADER);
        PartitionState {
            replicas,
            isr,
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding: Vec::new(),
            removing: Vec::new(),
        }
    }

    pub fn preferred_leader(&self) -> i32 {
        self.replicas.first().copied().unwrap_or(NO_LEADER)
    }

    /// Replicas on brokers that are not live.
    pub fn offline_replicas(&self, image: &MetadataImage) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !image.is_live(*r))
            .collect()
    }
}

/// One topic of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    /// Topic-level config overrides (broker defaults apply to the rest).
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

impl TopicImage {
    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }

    pub fn partition(&self, index: i32) -> Option<&PartitionState> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.partitions.get(i))
    }
}

/// The whole cluster metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataImage {
    /// Fixed by the first controller; every broker reports it.
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<i32, BrokerRegistration>,
    pub topics: BTreeMap<String, TopicImage>,
    /// Index of the last metadata-log entry applied (0: none).
    pub applied_index: u64,
    /// The first producer id not yet handed out (blocks of ids go to
    /// brokers, which give them to idempotent producers).
    #[serde(default)]
    pub next_producer_id: i64,
}

/// One change of the metadata, as written to the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    InitCluster {
        cluster_id: String,
    },
    /// A broker (re)registered; replaces any earlier registration of its id.
    RegisterBroker(BrokerRegistration),
    FenceBroker {
        id: i32,
    },
    UnfenceBroker {
        id: i32,
    },
    SetControlledShutdown {
        id: i32,
        on: bool,
    },
    CreateTopic {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        partitions: Vec<PartitionState>,
    },
    DeleteTopic {
        name: String,
    },
    AddPartitions {
        topic: String,
        partitions: Vec<PartitionState>,
    },
    SetTopicConfigs {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    /// Producer ids `start..start + len` now belong to `broker`.
    AllocateProducerIds {
        broker: i32,
        start: i64,
        len: i64,
    },
    /// The new state of one partition, replacing the old one whole.
    ChangePartition {
        topic: String,
        partition: i32,
        state: PartitionState,
    },
}

impl MetadataImage {
    pub fn is_live(&self, broker: i32) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// Live brokers that are not shutting down: where new replicas and
    /// leaders may go.
    pub fn usable_brokers(&self) -> Vec<&BrokerRegistration> {
        self.brokers.values().filter(|b| b.is_live()).collect()
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&TopicImage> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn partition(&self, topic: &str, index: i32) -> Option<&PartitionState> {
        self.topics.get(topic).and_then(|t| t.partition(index))
    }

    /// Every partition as `(topic, index, state)`.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, i32, &PartitionState)> {
        self.topics.values().flat_map(|t| {
            t.partitions
                .iter()
                .enumerate()
                .map(move |(i, p)| (t.name.as_str(), i32::try_from(i).unwrap_or(i32::MAX), p))
        })
    }

    /// Applies one record. Records that refer to something missing are
    /// ignored: the controller only writes records valid for the image it
    /// saw, so this only happens to a record that lost a race with a delete.
    pub fn apply(&mut self, index: u64, record: &MetadataRecord) {
        match record {
            MetadataRecord::InitCluster { cluster_id } => {
                if self.cluster_id.is_none() {
                    self.cluster_id = Some(cluster_id.clone());
                }
            }
            MetadataRecord::RegisterBroker(reg) => {
                self.brokers.insert(reg.id, reg.clone());
            }
            MetadataRecord::FenceBroker { id } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.fenced = true;
                }
            }
            MetadataRecord::UnfenceBroker { id } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.fenced = false;
                    b.in_controlled_shutdown = false;
                }
            }
            MetadataRecord::SetControlledShutdown { id, on } => {
                if let Some(b) = self.brokers.get_mut(id) {
                    b.in_controlled_shutdown = *on;
                }
            }
            MetadataRecord::CreateTopic {
                name,
                id,
                configs,
                partitions,
            } => {
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        id: *id,
                        configs: configs.clone(),
                        partitions: partitions.clone(),
                    },
                );
            }
            MetadataRecord::DeleteTopic { name } => {
                self.topics.remove(name);
            }
            MetadataRecord::AddPartitions { topic, partitions } => {
                if let Some(t) = self.topics.get_mut(topic) {
                    t.partitions.extend(partitions.iter().cloned());
                }
            }
            MetadataRecord::SetTopicConfigs { topic, configs } => {
                if let Some(t) = self.topics.get_mut(topic) {
                    t.configs = configs.clone();
                }
            }
            MetadataRecord::AllocateProducerIds { start, len, .. } => {
                self.next_producer_id = self.next_producer_id.max(start.saturating_add(*len));
            }
            MetadataRecord::ChangePartition {
                topic,
                partition,
                state,
            } => {
                if let Some(p) = self.topics.get_mut(topic).and_then(|t| {
                    usize::try_from(*partition)
                        .ok()
                        .and_then(|i| t.partitions.get_mut(i))
                }) {
                    // Every change raises the partition epoch by one from the
                    // state it was computed on, so a change whose epoch is not
                    // above the current one was computed on a state another
                    // change has since replaced; applying it would undo that
                    // change (and move the epoch backwards under a leader
                    // that already holds the newer one).
                    if state.partition_epoch > p.partition_epoch {
                        *p = state.clone();
                    } else {
                        tracing::warn!(
                            topic = %topic,
                            partition = *partition,
                            epoch = state.partition_epoch,
                            current = p.partition_epoch,
                            "ignoring a stale partition change"
                        );
                    }
                }
            }
        }
        self.applied_index = self.applied_index.max(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(id: i32) -> BrokerRegistration {
        BrokerRegistration {
            id,
            host: "127.0.0.1".into(),
            port: 9000 + id as u16,
            rack: None,
            controller_addr: None,
            incarnation: Uuid::nil(),
            fenced: false,
            in_controlled_shutdown: false,
        }
    }

    #[test]
    fn records_build_the_image_in_order() {
        let mut img = MetadataImage::default();
        img.apply(
            1,
            &MetadataRecord::InitCluster {
                cluster_id: "c".into(),
            },
        );
        img.apply(2, &MetadataRecord::RegisterBroker(reg(1)));
        img.apply(3, &MetadataRecord::RegisterBroker(reg(2)));
        let live = |_| true;
        img.apply(
            4,
            &MetadataRecord::CreateTopic {
                name: "t".into(),
                id: Uuid::nil(),
                configs: BTreeMap::new(),
                partitions: vec![PartitionState::new(vec![1, 2], &live)],
            },
        );
        assert_eq!(img.partition("t", 0).map(|p| p.leader), Some(1));
        img.apply(5, &MetadataRecord::FenceBroker { id: 1 });
        assert!(!img.is_live(1));
        let mut moved = img.partition("t", 0).cloned().expect("partition");
        moved.leader = 2;
        moved.isr = vec![2];
        moved.leader_epoch += 1;
        moved.partition_epoch += 1;
        // A change computed on the same state as `moved`, written after it:
        // stale, so ignored rather than undoing `moved`.
        let mut stale = img.partition("t", 0).cloned().expect("partition");
        stale.isr = vec![1, 2];
        stale.partition_epoch += 1;
        img.apply(
            6,
            &MetadataRecord::ChangePartition {
                topic: "t".into(),
                partition: 0,
                state: moved,
            },
        );
        img.apply(
            7,
            &MetadataRecord::ChangePartition {
                topic: "t".into(),
                partition: 0,
                state: stale,
            },
        );
        assert_eq!(
            img.partition("t", 0).map(|p| (
                p.leader,
                p.leader_epoch,
                p.partition_epoch,
                p.isr.clone()
            )),
            Some((2, 1, 1, vec![2]))
        );
        assert_eq!(img.applied_index, 7);
        img.apply(8, &MetadataRecord::DeleteTopic { name: "t".into() });
        assert!(img.topic("t").is_none());
        // A record about a deleted topic is ignored, not a panic.
        img.apply(
            9,
            &MetadataRecord::AddPartitions {
                topic: "t".into(),
                partitions: vec![],
            },
        );
        assert_eq!(img.cluster_id.as_deref(), Some("c"));
    }
}
