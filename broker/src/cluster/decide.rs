//! What the controller decides, as pure functions: the current image and a
//! request in, the metadata records that carry out the decision out. Nothing
//! here does I/O, so every rule (elections, fencing, ISR changes,
//! reassignments) is unit-tested on plain images.

use std::collections::BTreeMap;

use super::image::{MetadataImage, MetadataRecord, PartitionState, NO_LEADER};
use super::messages::{ControllerError, NewTopic};
use super::placement;
use crate::config::TopicConfig;

/// The broker settings the controller's decisions depend on.
#[derive(Debug, Clone)]
pub struct Settings {
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub topic_defaults: TopicConfig,
}

fn unclean_allowed(image: &MetadataImage, topic: &str, settings: &Settings) -> bool {
    let overrides = image
        .topic(topic)
        .map(|t| t.configs.clone())
        .unwrap_or_default();
    TopicConfig::resolve(&settings.topic_defaults, &overrides)
        .map(|c| c.unclean_leader_election_enable)
        .unwrap_or(false)
}

/// A replica that may lead or join an ISR: registered, not fenced, not
/// shutting down.
fn usable(image: &MetadataImage, id: i32) -> bool {
    image.brokers.get(&id).is_some_and(|b| b.is_live())
}

/// The new leader from `isr` (in replica preference order) among usable
/// brokers other than `excluded`, or, when `unclean`, from any usable replica.
/// Returns the leader and whether the election was unclean.
fn elect(
    image: &MetadataImage,
    p: &PartitionState,
    excluded: Option<i32>,
    unclean: bool,
) -> Option<(i32, bool)> {
    let ok = |r: &i32| Some(*r) != excluded && usable(image, *r);
    if let Some(r) = p.replicas.iter().find(|r| p.isr.contains(r) && ok(r)) {
        return Some((*r, false));
    }
    if unclean {
        return p.replicas.iter().find(|r| ok(r)).map(|r| (*r, true));
    }
    None
}

fn change(topic: &str, partition: i32, state: PartitionState) -> MetadataRecord {
    MetadataRecord::ChangePartition {
        topic: topic.to_string(),
        partition,
        state,
    }
}

/// Takes broker `id` out of every ISR and leadership (it was fenced, is
/// shutting down, or restarted as a new incarnation). The last ISR member is
/// kept even then, as Kafka does: it holds every committed record, so it is
/// the one to lead again when it returns (unless unclean election is on).
pub fn evict_broker(image: &MetadataImage, id: i32, settings: &Settings) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for (topic, index, p) in image.partitions() {
        if p.leader != id && !p.isr.contains(&id) {
            continue;
        }
        let mut next = p.clone();
        if next.isr.len() > 1 {
            next.isr.retain(|r| *r != id);
        }
        if next.leader == id {
            match elect(
                image,
                &next,
                Some(id),
                unclean_allowed(image, topic, settings),
            ) {
                Some((leader, unclean)) => {
                    next.leader = leader;
                    if unclean {
                        tracing::warn!(topic, partition = index, leader, "unclean leader election: records not replicated to the new leader are lost");
                        next.isr = vec![leader];
                    }
                }
                None => next.leader = NO_LEADER,
            }
            next.leader_epoch += 1;
        }
        if next != *p {
            next.partition_epoch += 1;
            out.push(change(topic, index, next));
        }
    }
    out
}

/// Partitions without a leader whose ISR now has a usable member get one
/// (a broker came back); unclean topics take any usable replica.
pub fn elect_offline(image: &MetadataImage, settings: &Settings) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for (topic, index, p) in image.partitions() {
        if p.leader != NO_LEADER && usable(image, p.leader) {
            continue;
        }
        if let Some((leader, unclean)) =
            elect(image, p, None, unclean_allowed(image, topic, settings))
        {
            let mut next = p.clone();
            next.leader = leader;
            if unclean {
                next.isr = vec![leader];
            }
            next.leader_epoch += 1;
            next.partition_epoch += 1;
            out.push(change(topic, index, next));
        }
    }
    out
}

/// Applies `records` to a copy of `image`, for decisions that build on
/// earlier records of the same batch.
pub fn applied(image: &MetadataImage, records: &[MetadataRecord]) -> MetadataImage {
    let mut next = image.clone();
    for r in records {
        next.apply(next.applied_index, r);
    }
    next
}

/// Moves leadership back to preferred replicas that are usable and in sync.
pub fn rebalance_preferred(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for (topic, index, p) in image.partitions() {
        let preferred = p.preferred_leader();
        if p.leader != preferred && p.isr.contains(&preferred) && usable(image, preferred) {
            let mut next = p.clone();
            next.leader = preferred;
            next.leader_epoch += 1;
            next.partition_epoch += 1;
            out.push(change(topic, index, next));
        }
    }
    out
}

/// A leader's ISR change (KIP-497 AlterPartition).
pub fn alter_isr(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: &[i32],
) -> Result<(Vec<MetadataRecord>, PartitionState), ControllerError> {
    let p = image
        .partition(topic, partition)
        .ok_or_else(|| ControllerError::UnknownPartition(topic.to_string(), partition))?;
    if p.leader != leader {
        return Err(ControllerError::NotLeader(leader));
    }
    if p.leader_epoch != leader_epoch || p.partition_epoch != partition_epoch {
        return Err(ControllerError::StaleEpoch(format!(
            "{topic}-{partition} is at leader epoch {} / partition epoch {}, the request was made at {leader_epoch} / {partition_epoch}",
            p.leader_epoch, p.partition_epoch
        )));
    }
    let mut next_isr: Vec<i32> = Vec::new();
    for r in isr {
        if !p.replicas.contains(r) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "broker {r} is not a replica of {topic}-{partition}"
            )));
        }
        if !next_isr.contains(r) {
            next_isr.push(*r);
        }
    }
    if !next_isr.contains(&leader) {
        return Err(ControllerError::InvalidReplicaAssignment(
            "the ISR must contain the leader".into(),
        ));
    }
    for r in &next_isr {
        if !p.isr.contains(r) && !usable(image, *r) {
            return Err(ControllerError::StaleEpoch(format!(
                "broker {r} cannot join the ISR: it is fenced or shutting down"
            )));
        }
    }
    let mut next = p.clone();
    next.isr = next_isr;
    next.partition_epoch += 1;
    if !next.adding.is_empty() && next.adding.iter().all(|r| next.isr.contains(r)) {
        finish_reassignment(image, &mut next);
    }
    Ok((vec![change(topic, partition, next.clone())], next))
}

/// Completes a reassignment whose new replicas are all in sync: the removed
/// replicas leave the replica set and ISR; a removed leader hands over.
fn finish_reassignment(image: &MetadataImage, p: &mut PartitionState) {
    let removing = std::mem::take(&mut p.removing);
    p.adding.clear();
    p.replicas.retain(|r| !removing.contains(r));
    if p.isr.iter().any(|r| !removing.contains(r)) {
        p.isr.retain(|r| !removing.contains(r));
    }
    if removing.contains(&p.leader) {
        if let Some((leader, _)) = elect(image, p, Some(p.leader), false) {
            p.leader = leader;
            p.leader_epoch += 1;
        }
    }
}

/// Reassignments that finished without an ISR change (their new replicas
/// were already in sync).
pub fn progress_reassignments(image: &MetadataImage) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for (topic, index, p) in image.partitions() {
        if (!p.adding.is_empty() || !p.removing.is_empty())
            && p.adding.iter().all(|r| p.isr.contains(r))
        {
            let mut next = p.clone();
            finish_reassignment(image, &mut next);
            next.partition_epoch += 1;
            out.push(change(topic, index, next));
        }
    }
    out
}

/// Starts (`Some`) or cancels (`None`) moving a partition's replicas.
pub fn reassign(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[i32]>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let p = image
        .partition(topic, partition)
        .ok_or_else(|| ControllerError::UnknownPartition(topic.to_string(), partition))?;
    let mut next = p.clone();
    match target {
        None => {
            if p.adding.is_empty() && p.removing.is_empty() {
                return Err(ControllerError::NoReassignmentInProgress);
            }
            let adding = std::mem::take(&mut next.adding);
            next.removing.clear();
            next.replicas.retain(|r| !adding.contains(r));
            if next.isr.iter().any(|r| !adding.contains(r)) {
                next.isr.retain(|r| !adding.contains(r));
            }
            if adding.contains(&next.leader) {
                if let Some((leader, _)) = elect(image, &next, Some(next.leader), false) {
                    next.leader = leader;
                    next.leader_epoch += 1;
                }
            }
        }
        Some(target) => {
            if target.is_empty() {
                return Err(ControllerError::InvalidReplicaAssignment(
                    "a partition needs at least one replica".into(),
                ));
            }
            let mut seen = Vec::new();
            for r in target {
                if !image.brokers.contains_key(r) {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "broker {r} is not registered"
                    )));
                }
                if seen.contains(r) {
                    return Err(ControllerError::InvalidReplicaAssignment(format!(
                        "broker {r} appears twice in the replica list"
                    )));
                }
                seen.push(*r);
            }
            // The replicas before any earlier reassignment started.
            let original: Vec<i32> = p
                .replicas
                .iter()
                .copied()
                .filter(|r| !p.adding.contains(r))
                .collect();
            next.adding = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            next.removing = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
            next.replicas = target.to_vec();
            next.replicas
                .extend(original.iter().copied().filter(|r| !target.contains(r)));
            next.isr.retain(|r| next.replicas.contains(r));
            if next.adding.is_empty() {
                finish_reassignment(image, &mut next);
            }
        }
    }
    if next == *p {
        return Ok(Vec::new());
    }
    next.partition_epoch += 1;
    Ok(vec![change(topic, partition, next)])
}

/// Preferred or unclean election for one partition.
pub fn elect_leader(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    unclean: bool,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let p = image
        .partition(topic, partition)
        .ok_or_else(|| ControllerError::UnknownPartition(topic.to_string(), partition))?;
    let mut next = p.clone();
    if unclean {
        if p.leader != NO_LEADER && usable(image, p.leader) {
            return Err(ControllerError::ElectionNotNeeded);
        }
        let Some((leader, was_unclean)) = elect(image, p, None, true) else {
            return Err(ControllerError::EligibleLeadersNotAvailable(format!(
                "no replica of {topic}-{partition} is on a live broker"
            )));
        };
        next.leader = leader;
        if was_unclean {
            next.isr = vec![leader];
        }
    } else {
        let preferred = p.preferred_leader();
        if p.leader == preferred {
            return Err(ControllerError::ElectionNotNeeded);
        }
        if !(p.isr.contains(&preferred) && usable(image, preferred)) {
            return Err(ControllerError::PreferredLeaderNotAvailable(format!(
                "preferred leader {preferred} of {topic}-{partition} is not live and in sync"
            )));
        }
        next.leader = preferred;
    }
    next.leader_epoch += 1;
    next.partition_epoch += 1;
    Ok(vec![change(topic, partition, next)])
}

fn validate_configs(
    configs: &BTreeMap<String, String>,
    settings: &Settings,
) -> Result<TopicConfig, ControllerError> {
    for (k, v) in configs {
        crate::config::validate_topic_override(k, v)
            .map_err(|e| ControllerError::InvalidConfig(e.to_string()))?;
    }
    TopicConfig::resolve(&settings.topic_defaults, configs)
        .map_err(|e| ControllerError::InvalidConfig(e.to_string()))
}

fn check_assignments(
    image: &MetadataImage,
    assignments: &[Vec<i32>],
) -> Result<(), ControllerError> {
    let rf = assignments.first().map_or(0, Vec::len);
    for (i, a) in assignments.iter().enumerate() {
        if a.is_empty() || a.len() != rf {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "partition {i} has {} replicas; every partition needs the same number, at least one",
                a.len()
            )));
        }
        for (j, r) in a.iter().enumerate() {
            if !image.brokers.contains_key(r) {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "partition {i} is assigned to broker {r}, which is not registered (brokers: {:?})",
                    image.brokers.keys().collect::<Vec<_>>()
                )));
            }
            if a[..j].contains(r) {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "partition {i} lists broker {r} twice"
                )));
            }
        }
    }
    Ok(())
}

/// New partition states for `first..first+count`, placed over usable brokers.
fn place(
    image: &MetadataImage,
    first: i32,
    count: i32,
    rf: i16,
    assignments: Option<&[Vec<i32>]>,
) -> Result<Vec<PartitionState>, ControllerError> {
    let live = |r: i32| usable(image, r);
    if let Some(a) = assignments {
        check_assignments(image, a)?;
        return Ok(a
            .iter()
            .map(|r| PartitionState::new(r.clone(), &live))
            .collect());
    }
    let brokers = image.usable_brokers();
    if rf < 1 || usize::try_from(rf).unwrap_or(usize::MAX) > brokers.len() {
        return Err(ControllerError::InvalidReplicationFactor(format!(
            "replication factor {rf} is not possible: it must be between 1 and the number of live brokers ({})",
            brokers.len()
        )));
    }
    let start = image.topics.len() + usize::try_from(first).unwrap_or(0);
    let rf = usize::try_from(rf).unwrap_or(1);
    Ok(placement::assign(&brokers, first, count, rf, start)
        .into_iter()
        .map(|r| PartitionState::new(r, &live))
        .collect())
}

/// CreateTopics for one topic: the record, or why not.
pub fn create_topic(
    image: &MetadataImage,
    t: &NewTopic,
    settings: &Settings,
) -> Result<MetadataRecord, ControllerError> {
    crate::topics::validate_name(&t.name)
        .map_err(|e| ControllerError::InvalidTopic(e.to_string()))?;
    if image.topics.contains_key(&t.name) {
        return Err(ControllerError::TopicExists(t.name.clone()));
    }
    let key = t.name.replace('.', "_");
    if let Some(existing) = image.topics.keys().find(|n| n.replace('.', "_") == key) {
        return Err(ControllerError::InvalidTopic(format!(
            "topic '{}' collides with existing topic '{existing}': '.' and '_' are interchangeable in metric names, use one or the other",
            t.name
        )));
    }
    validate_configs(&t.configs, settings)?;
    let partitions = match &t.assignments {
        Some(a) => {
            if t.partitions != -1 || t.replication_factor != -1 {
                return Err(ControllerError::InvalidReplicaAssignment(
                    "give either replica assignments or num_partitions and replication_factor, not both".into(),
                ));
            }
            if a.is_empty() {
                return Err(ControllerError::InvalidPartitions(
                    "a topic needs at least one partition".into(),
                ));
            }
            place(image, 0, 0, 0, Some(a))?
        }
        None => {
            let count = if t.partitions == -1 {
                settings.num_partitions
            } else {
                t.partitions
            };
            if count < 1 {
                return Err(ControllerError::InvalidPartitions(format!(
                    "invalid partition count {count}: a topic needs at least one partition"
                )));
            }
            let rf = if t.replication_factor == -1 {
                settings.default_replication_factor
            } else {
                t.replication_factor
            };
            place(image, 0, count, rf, None)?
        }
    };
    Ok(MetadataRecord::CreateTopic {
        name: t.name.clone(),
        id: uuid::Uuid::new_v4(),
        configs: t.configs.clone(),
        partitions,
    })
}

pub fn create_partitions(
    image: &MetadataImage,
    topic: &str,
    count: i32,
    assignments: Option<&[Vec<i32>]>,
) -> Result<MetadataRecord, ControllerError> {
    let t = image
        .topic(topic)
        .ok_or_else(|| ControllerError::UnknownTopic(topic.to_string()))?;
    let current = i32::try_from(t.partitions.len()).unwrap_or(i32::MAX);
    if count <= current {
        return Err(ControllerError::InvalidPartitions(format!(
            "partitions can only grow: topic {topic} has {current}, the request asks for {count}"
        )));
    }
    let rf = t.partitions.first().map_or(1, |p| {
        i16::try_from(p.replicas.len() - p.adding.len()).unwrap_or(1)
    });
    if let Some(a) = assignments {
        if i32::try_from(a.len()).ok() != Some(count - current) {
            return Err(ControllerError::InvalidReplicaAssignment(format!(
                "{} assignments given for {} new partitions",
                a.len(),
                count - current
            )));
        }
    }
    let partitions = place(image, current, count - current, rf, assignments)?;
    Ok(MetadataRecord::AddPartitions {
        topic: topic.to_string(),
        partitions,
    })
}

pub fn set_topic_configs(
    image: &MetadataImage,
    topic: &str,
    configs: &BTreeMap<String, String>,
    settings: &Settings,
) -> Result<MetadataRecord, ControllerError> {
    if image.topic(topic).is_none() {
        return Err(ControllerError::UnknownTopic(topic.to_string()));
    }
    validate_configs(configs, settings)?;
    Ok(MetadataRecord::SetTopicConfigs {
        topic: topic.to_string(),
        configs: configs.clone(),
    })
}

pub fn delete_topic(image: &MetadataImage, name: &str) -> Result<MetadataRecord, ControllerError> {
    if image.topic(name).is_none() {
        return Err(ControllerError::UnknownTopic(name.to_string()));
    }
    if name == crate::coordinator::OFFSETS_TOPIC {
        return Err(ControllerError::PolicyViolation(format!(
            "{name} is internal: it holds the consumer groups' offsets and cannot be deleted"
        )));
    }
    if name == crate::coordinator::TXN_TOPIC {
        return Err(ControllerError::PolicyViolation(format!(
            "{name} is internal: it holds the transaction coordinator's state and cannot be deleted"
        )));
    }
    Ok(MetadataRecord::DeleteTopic {
        name: name.to_string(),
    })
}

/// Controlled shutdown of `id`: leadership moves to another in-sync replica
/// and `id` leaves the ISRs (so acks=all stops waiting for it).
pub fn controlled_shutdown(
    image: &MetadataImage,
    id: i32,
    settings: &Settings,
) -> Vec<MetadataRecord> {
    let mut records = vec![MetadataRecord::SetControlledShutdown { id, on: true }];
    let after = applied(image, &records);
    records.extend(evict_broker(&after, id, settings));
    records
}

/// Partitions `id` still leads although another usable in-sync replica
/// could take over: controlled shutdown is not finished while any remain.
pub fn movable_leaderships(image: &MetadataImage, id: i32) -> usize {
    image
        .partitions()
        .filter(|(_, _, p)| p.leader == id && elect(image, p, Some(id), false).is_some())
        .count()
}

#[cfg(test)]
mod tests;
