//! A follower's fetcher: one task per leader broker, fetching every
//! partition this broker follows from that leader with one Fetch request
//! (replica id set), exactly like Kafka's replica fetcher threads.
//!
//! A partition whose leader epoch is new to the fetcher is first reconciled
//! with the leader (OffsetForLeaderEpoch): the follower truncates its log to
//! where its history and the leader's agree, so no divergent suffix survives.
//! Then it fetches from its log end; the offset it fetches from is what the
//! leader counts as this replica's log end, so with `log.flush.acks.all` the
//! appended records are fsynced before the next fetch reports them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, OffsetForLeaderEpochRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::now_ms;
use crate::client::Connection;
use crate::flusher::Flusher;
use crate::partition::Partition;

const FETCH_VERSION: i16 = 12;
const EPOCH_VERSION: i16 = 4;
const BACKOFF: Duration = Duration::from_millis(200);

/// One partition to follow, as the metadata image says.
#[derive(Clone)]
pub struct Followed {
    pub partition: Arc<Partition>,
    pub leader_epoch: i32,
}

/// What one fetcher should do: the leader's address and the partitions.
#[derive(Clone, Default)]
pub struct FetchSet {
    pub leader_addr: String,
    pub partitions: BTreeMap<(Arc<str>, i32), Followed>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Truncating,
    Fetching,
}

struct State {
    followed: Followed,
    phase: Phase,
    /// Skip until then (the leader refused it; metadata will catch up).
    backoff_until: i64,
}

pub struct Settings {
    pub node_id: i32,
    pub wait_max_ms: i32,
    pub partition_max_bytes: i32,
    pub response_max_bytes: i32,
    pub flush: bool,
    pub request_timeout: Duration,
}

/// Runs until `cancel`; follows whatever `set` currently holds.
pub async fn run(
    leader: i32,
    mut set: watch::Receiver<FetchSet>,
    settings: Arc<Settings>,
    flusher: Flusher,
    cancel: CancellationToken,
) {
    let mut states: BTreeMap<(Arc<str>, i32), State> = BTreeMap::new();
    let mut conn: Option<Connection> = None;
    let mut addr = String::new();
    loop {
        if cancel.is_cancelled() {
            return;
        }
        if set.has_changed().unwrap_or(true) || states.is_empty() {
            let current = set.borrow_and_update().clone();
            if current.leader_addr != addr {
                addr = current.leader_addr.clone();
                conn = None;
            }
            states.retain(|k, _| current.partitions.contains_key(k));
            for (k, f) in current.partitions {
                match states.get_mut(&k) {
                    Some(s)
                        if s.followed.leader_epoch == f.leader_epoch
                            && Arc::ptr_eq(&s.followed.partition, &f.partition) => {}
                    Some(s) => {
                        s.followed = f;
                        s.phase = Phase::Truncating;
                        s.backoff_until = 0;
                    }
                    None => {
                        states.insert(
                            k,
                            State {
                                followed: f,
                                phase: Phase::Truncating,
                                backoff_until: 0,
                            },
                        );
                    }
                }
            }
        }
        if states.is_empty() || addr.is_empty() {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = set.changed() => if r.is_err() { return },
            }
            continue;
        }
        if conn.is_none() {
            match Connection::connect(
                &addr,
                &format!("sluice-replica-{}", settings.node_id),
                settings.request_timeout,
            )
            .await
            {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    tracing::debug!(leader, error = %e, "replica fetcher cannot connect");
                    pause(&cancel, BACKOFF).await;
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let result = if states.values().any(|s| s.phase == Phase::Truncating) {
            truncate(c, &mut states, &settings).await
        } else {
            fetch(c, &mut states, &settings, &flusher).await
        };
        if let Err(e) = result {
            tracing::debug!(leader, error = %e, "replica fetch failed; reconnecting");
            conn = None;
            pause(&cancel, BACKOFF).await;
        }
    }
}

async fn pause(cancel: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

/// Reconciles every Truncating partition's log with the leader's by leader
/// epoch (KIP-101/279).
async fn truncate(
    c: &mut Connection,
    states: &mut BTreeMap<(Arc<str>, i32), State>,
    settings: &Settings,
) -> Result<(), crate::client::Error> {
    let mut topics: Vec<OffsetForLeaderTopic> = Vec::new();
    let mut asked = Vec::new();
    for ((topic, index), s) in states.iter_mut() {
        if s.phase != Phase::Truncating {
            continue;
        }
        let latest = s.followed.partition.with_log(|l| l.latest_epoch());
        let Some(latest) = latest else {
            // Nothing to reconcile: an empty log (or one from before epochs).
            s.phase = Phase::Fetching;
            continue;
        };
        asked.push(((topic.clone(), *index), latest));
        let part = OffsetForLeaderPartition::default()
            .with_partition(*index)
            .with_current_leader_epoch(s.followed.leader_epoch)
            .with_leader_epoch(latest);
        match topics.last_mut() {
            Some(t) if *t.topic.0 == **topic => t.partitions.push(part),
            _ => topics.push(
                OffsetForLeaderTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![part]),
            ),
        }
    }
    if asked.is_empty() {
        return Ok(());
    }
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id(BrokerId(settings.node_id))
        .with_topics(topics);
    let resp = c
        .send(EPOCH_VERSION, &req, settings.request_timeout)
        .await?;
    let now = now_ms();
    for t in resp.topics {
        for p in t.partitions {
            let key: (Arc<str>, i32) = (Arc::from(t.topic.0.as_str()), p.partition);
            let Some(s) = states.get_mut(&key) else {
                continue;
            };
            let Some(&(_, requested)) = asked.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            if p.error_code != 0 {
                tracing::debug!(topic = %key.0, partition = key.1, error = p.error_code, "leader refused OffsetForLeaderEpoch; retrying later");
                s.backoff_until = now + 200;
                continue;
            }
            let part = &s.followed.partition;
            let outcome = part.with_log(|log| {
                let leo = log.log_end_offset();
                let target = if p.leader_epoch < 0 || p.end_offset < 0 {
                    // The leader knows no epoch at or below ours: keep only
                    // what is known committed.
                    part.high_watermark()
                } else if p.leader_epoch == requested {
                    p.end_offset
                } else {
                    let (_, local_end) = log.end_offset_for_epoch(p.leader_epoch);
                    p.end_offset.min(local_end)
                };
                let target = target.min(leo);
                if target < leo {
                    log.truncate_to(target)
                        .map(|()| Some((leo, log.log_end_offset())))
                } else {
                    Ok(None)
                }
            });
            match outcome {
                Ok(Some((from, to))) => {
                    tracing::info!(topic = %key.0, partition = key.1, from, to, leader_epoch = p.leader_epoch, "truncated divergent tail to match the leader")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "truncation failed");
                    s.backoff_until = now + 1000;
                    continue;
                }
            }
            s.phase = Phase::Fetching;
        }
    }
    Ok(())
}

async fn fetch(
    c: &mut Connection,
    states: &mut BTreeMap<(Arc<str>, i32), State>,
    settings: &Settings,
    flusher: &Flusher,
) -> Result<(), crate::client::Error> {
    let now = now_ms();
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, index), s) in states.iter() {
        if s.phase != Phase::Fetching || s.backoff_until > now {
            continue;
        }
        let p = &s.followed.partition;
        let (leo, start, last_epoch) =
            p.with_log(|l| (l.log_end_offset(), l.log_start_offset(), l.latest_epoch()));
        let fp = FetchPartition::default()
            .with_partition(*index)
            .with_current_leader_epoch(s.followed.leader_epoch)
            .with_fetch_offset(leo)
            .with_last_fetched_epoch(last_epoch.unwrap_or(-1))
            .with_log_start_offset(start)
            .with_partition_max_bytes(settings.partition_max_bytes);
        match topics.last_mut() {
            Some(t) if *t.topic.0 == **topic => t.partitions.push(fp),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(topic_name(topic))
                    .with_partitions(vec![fp]),
            ),
        }
    }
    if topics.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Ok(());
    }
    let req = FetchRequest::default()
        .with_replica_id(BrokerId(settings.node_id))
        .with_max_wait_ms(settings.wait_max_ms)
        .with_min_bytes(1)
        .with_max_bytes(settings.response_max_bytes)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    let timeout = settings.request_timeout
        + Duration::from_millis(u64::try_from(settings.wait_max_ms).unwrap_or(0));
    let resp = c.send(FETCH_VERSION, &req, timeout).await?;
    let now = now_ms();
    let mut to_flush = Vec::new();
    let mut hws = Vec::new();
    for t in resp.responses {
        for pd in t.partitions {
            let key: (Arc<str>, i32) = (Arc::from(t.topic.0.as_str()), pd.partition_index);
            let Some(s) = states.get_mut(&key) else {
                continue;
            };
            let p = s.followed.partition.clone();
            let err = ResponseError::try_from_code(pd.error_code);
            match err {
                None => {}
                Some(ResponseError::OffsetOutOfRange) => {
                    let leo = p.log_end_offset();
                    if leo < pd.log_start_offset {
                        let start = pd.log_start_offset;
                        match p.with_log(|l| l.truncate_fully_and_start_at(start)) {
                            Ok(()) => {
                                tracing::info!(topic = %key.0, partition = key.1, start, "behind the leader's log start: restarted the replica there")
                            }
                            Err(e) => {
                                tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot reset replica log");
                                s.backoff_until = now + 1000;
                            }
                        }
                    } else {
                        s.phase = Phase::Truncating;
                    }
                    continue;
                }
                Some(e) => {
                    tracing::debug!(topic = %key.0, partition = key.1, error = ?e, "leader refused replica fetch; waiting for metadata");
                    s.backoff_until = now + 200;
                    continue;
                }
            }
            if pd.diverging_epoch.epoch >= 0 {
                s.phase = Phase::Truncating;
                continue;
            }
            if let Some(records) = pd.records.as_ref().filter(|r| !r.is_empty()) {
                match p.append_as_follower(records) {
                    Ok(_) => to_flush.push(p.clone()),
                    Err(crate::commitlog::Error::NonContiguous { .. }) => {
                        // Our log end moved (a truncation raced the fetch).
                        continue;
                    }
                    Err(e) => {
                        tracing::error!(topic = %key.0, partition = key.1, error = %e, "cannot append replicated records");
                        s.backoff_until = now + 1000;
                        continue;
                    }
                }
            }
            if pd.log_start_offset > p.log_start_offset()
                && pd.log_start_offset <= p.log_end_offset()
            {
                let start = pd.log_start_offset;
                if let Err(e) = p.with_log(|l| l.delete_records_before(start)) {
                    tracing::warn!(topic = %key.0, partition = key.1, error = %e, "cannot follow the leader's log start offset");
                }
            }
            hws.push((p, pd.high_watermark));
        }
    }
    if settings.flush {
        let waits: Vec<_> = to_flush
            .into_iter()
            .map(|p| (p.clone(), flusher.flush(p)))
            .collect();
        for (p, w) in waits {
            if let Err(e) = w.await {
                // The log is poisoned; stop fetching so the leader stops
                // counting this replica (it leaves the ISR) instead of
                // taking unsynced records as replicated.
                tracing::error!(topic = p.topic(), partition = p.index(), error = %e, "follower fsync failed; no longer fetching this partition");
                let key: (Arc<str>, i32) = (Arc::from(p.topic()), p.index());
                if let Some(s) = states.get_mut(&key) {
                    s.backoff_until = i64::MAX;
                }
            }
        }
    } else {
        for p in to_flush {
            flusher.flush_in_background(p);
        }
    }
    for (p, hw) in hws {
        p.set_follower_high_watermark(hw);
    }
    Ok(())
}
