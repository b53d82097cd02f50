//! Taking over a partition of `__consumer_offsets`: replays it into groups.
//! Later records win; a tombstone deletes its key. A group with members is
//! restored Stable (its members' sessions restart now, so a consumer that
//! keeps heartbeating keeps its partitions); one without is Empty.
//!
//! The whole log is read, up to its end rather than the high watermark, as
//! Kafka does: this broker leads the partition, so what it holds is what the
//! followers will converge to, and the coordinator's own writes go after it.

use std::collections::HashMap;

use tokio::time::Instant;

use super::state::{ms, Committed, Group, Member, State};
use super::store::{self, Key, Value};
use crate::commitlog::batch;
use crate::partition::{Bound, Partition};

const READ_BYTES: usize = 1 << 20;

/// Blocking: reads the whole of `p` (one partition of `__consumer_offsets`).
pub(super) fn load(p: &Partition) -> Vec<Group> {
    let mut groups: HashMap<String, Group> = HashMap::new();
    let mut offset = p.log_start_offset();
    loop {
        let read = match p.read(offset, READ_BYTES, Bound::LogEnd) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(partition = %p.dir().display(), offset, error = %e, "cannot read __consumer_offsets; groups in it are lost until it is loaded again");
                break;
            }
        };
        let mut next = offset;
        for h in batch::headers(&read.records) {
            match h {
                Ok((_, h)) => next = next.max(h.next_offset()),
                Err(_) => break,
            }
        }
        if next <= offset {
            break;
        }
        for b in store::batches(&read.records) {
            let producer = b.header.producer_id;
            if let Some(commit) = b.marker {
                complete_txn(groups.values_mut(), producer, commit);
            } else if b.header.is_transactional() {
                for (key, value) in &b.records {
                    apply_txn(&mut groups, producer, key, value.as_deref());
                }
            } else {
                for (key, value) in &b.records {
                    apply(&mut groups, key, value.as_deref());
                }
            }
        }
        offset = next;
    }
    groups
        .into_values()
        .filter(|g| g.protocol_type.is_some() || !g.offsets.is_empty() || !g.pending_txn.is_empty())
        .collect()
}

/// A transaction marker for `producer`: its pending offsets in every group
/// become committed (commit) or are dropped (abort).
pub(super) fn complete_txn<'a>(
    groups: impl IntoIterator<Item = &'a mut Group>,
    producer: i64,
    commit: bool,
) {
    for g in groups {
        let Some(pending) = g.pending_txn.remove(&producer) else {
            continue;
        };
        if commit {
            g.offsets.extend(pending);
        }
    }
}

/// An offset commit inside a transaction (TxnOffsetCommit): pending until
/// the producer's marker.
fn apply_txn(groups: &mut HashMap<String, Group>, producer: i64, key: &[u8], value: Option<&[u8]>) {
    let Some(key @ Key::Offset { .. }) = Key::decode(key) else {
        tracing::warn!("unexpected record in a transaction in __consumer_offsets");
        return;
    };
    let Some(Value::Offset(v)) = value.and_then(|v| store::decode_value(&key, v)) else {
        tracing::warn!("undecodable transactional offset in __consumer_offsets");
        return;
    };
    let Key::Offset {
        group,
        topic,
        partition,
    } = key
    else {
        return;
    };
    groups
        .entry(group.clone())
        .or_insert_with(|| Group::new(group, -1))
        .pending_txn
        .entry(producer)
        .or_default()
        .insert((topic, partition), Committed::from(v));
}

fn apply(groups: &mut HashMap<String, Group>, key: &[u8], value: Option<&[u8]>) {
    let Some(key) = Key::decode(key) else {
        tracing::warn!("unknown record key in __consumer_offsets");
        return;
    };
    let id = key.group().to_string();
    let g = groups
        .entry(id.clone())
        .or_insert_with(|| Group::new(id.clone(), -1));
    let value = match value {
        Some(v) => match store::decode_value(&key, v) {
            Some(v) => Some(v),
            None => {
                tracing::warn!(group = %id, "undecodable record value in __consumer_offsets");
                return;
            }
        },
        None => None,
    };
    match (key, value) {
        (
            Key::Offset {
                topic, partition, ..
            },
            Some(Value::Offset(v)),
        ) => {
            g.offsets.insert((topic, partition), Committed::from(v));
        }
        (
            Key::Offset {
                topic, partition, ..
            },
            None,
        ) => {
            g.offsets.remove(&(topic, partition));
        }
        (Key::Group(_), Some(Value::Group(v))) => {
            let offsets = std::mem::take(&mut g.offsets);
            let mut fresh = Group::new(id.clone(), v.state_timestamp);
            fresh.offsets = offsets;
            fresh.generation = v.generation;
            fresh.protocol_type = Some(v.protocol_type);
            fresh.protocol = v.protocol.clone();
            let now = Instant::now();
            for m in v.members {
                fresh.add(Member {
                    id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    client_host: m.client_host,
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    protocols: vec![(v.protocol.clone().unwrap_or_default(), m.subscription)],
                    assignment: m.assignment,
                    join_waiter: None,
                    sync_waiter: None,
                    deadline: now + ms(m.session_timeout_ms),
                    timer: 0,
                });
            }
            fresh.leader = v.leader.filter(|l| fresh.has(l));
            let state = if fresh.members.is_empty() {
                State::Empty
            } else {
                State::Stable
            };
            fresh.state = state;
            *g = fresh;
        }
        (Key::Group(_), None) => {
            let offsets = std::mem::take(&mut g.offsets);
            *g = Group::new(id.clone(), -1);
            g.offsets = offsets;
        }
        _ => tracing::warn!(group = %id, "record value does not match its key"),
    }
}
