//! Transaction markers: the control batch that ends a transaction in each
//! partition it wrote to. The coordinator sends WriteTxnMarkers to each
//! partition's leader (itself included, without the network) and retries
//! each partition until its leader has written and replicated the marker.
//! A partition whose topic was deleted is given up.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;
use tokio_util::sync::CancellationToken;

use crate::broker::{now_ms, Broker};
use crate::client::Connection;
use crate::commitlog::{self, batch};
use crate::coordinator::OFFSETS_TOPIC;
use crate::partition::AppendError;

/// WriteTxnMarkers version spoken between brokers.
const MARKERS_VERSION: i16 = 1;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a marker waits for the ISR.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(15);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// One transaction's marker for some partitions.
#[derive(Debug, Clone)]
pub struct Marker {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub coordinator_epoch: i32,
    pub partitions: Vec<(String, i32)>,
}

pub type PartitionResult = ((String, i32), Result<(), ResponseError>);

/// Writes `m` to the partitions this broker leads and waits until each is
/// replicated to the ISR. Used by the WriteTxnMarkers handler and by the
/// coordinator for the partitions it leads itself.
pub async fn write_local(broker: &Arc<Broker>, m: &Marker) -> Vec<PartitionResult> {
    let mut out = Vec::with_capacity(m.partitions.len());
    let mut waits = Vec::new();
    for (topic, index) in &m.partitions {
        let key = (topic.clone(), *index);
        let local = broker
            .topics
            .partition(topic, *index)
            .filter(|p| p.is_leader());
        let Some(p) = local else {
            let e = if broker.image().partition(topic, *index).is_some() {
                ResponseError::NotLeaderOrFollower
            } else {
                ResponseError::UnknownTopicOrPartition
            };
            out.push((key, Err(e)));
            continue;
        };
        let min_insync = broker
            .topics
            .get(topic)
            .map(|t| t.config().min_insync_replicas)
            .unwrap_or(1);
        let now = now_ms();
        let control = batch::build_control_batch(
            m.producer_id,
            m.producer_epoch,
            m.commit,
            m.coordinator_epoch,
            now,
        );
        match p.append_from_coordinator(&control, now, min_insync) {
            Ok((info, epoch)) => {
                let flushed = broker.flusher.flush(p.clone());
                let replicated =
                    p.wait_replicated(info.last_offset + 1, epoch, REPLICATION_TIMEOUT);
                waits.push((key, flushed, replicated));
            }
            Err(e) => out.push((key, Err(append_error(&e)))),
        }
    }
    for ((topic, index), flushed, replicated) in waits {
        let (flushed, replicated) = tokio::join!(flushed, replicated);
        let result = match (flushed, replicated) {
            (Err(e), _) => {
                tracing::warn!(%topic, partition = index, error = %e, "cannot fsync a transaction marker");
                Err(ResponseError::KafkaStorageError)
            }
            (Ok(()), Err(e)) => Err(append_error(&e)),
            (Ok(()), Ok(())) => {
                if topic == OFFSETS_TOPIC {
                    broker.groups.complete_txn(index, m.producer_id, m.commit);
                }
                Ok(())
            }
        };
        out.push(((topic, index), result));
    }
    out
}

/// Kafka's code for a failed marker append.
pub fn append_error(e: &AppendError) -> ResponseError {
    match e {
        AppendError::NotLeader => ResponseError::NotLeaderOrFollower,
        AppendError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        AppendError::NotEnoughReplicasAfterAppend { .. } => {
            ResponseError::NotEnoughReplicasAfterAppend
        }
        AppendError::Timeout(_) => ResponseError::RequestTimedOut,
        AppendError::Log(commitlog::Error::Producer(_)) => ResponseError::InvalidProducerEpoch,
        AppendError::Log(_) => ResponseError::KafkaStorageError,
    }
}

/// Connections to the other brokers, one per broker, reused between
/// transactions.
#[derive(Default)]
pub struct MarkerSender {
    conns: tokio::sync::Mutex<HashMap<i32, Arc<tokio::sync::Mutex<Option<Connection>>>>>,
}

impl MarkerSender {
    async fn connection(&self, id: i32) -> Arc<tokio::sync::Mutex<Option<Connection>>> {
        self.conns.lock().await.entry(id).or_default().clone()
    }

    /// Sends `m` to broker `id` at `addr`; every partition fails alike when
    /// the broker cannot be reached.
    async fn send_remote(&self, id: i32, addr: &str, m: &Marker) -> Vec<PartitionResult> {
        let fail_all = |e: ResponseError| {
            m.partitions
                .iter()
                .map(|p| (p.clone(), Err(e)))
                .collect::<Vec<_>>()
        };
        let slot = self.connection(id).await;
        let mut conn = slot.lock().await;
        if conn.as_ref().is_none_or(|c| c.addr() != addr) {
            match Connection::connect(addr, "sluice-txn-coordinator", CONNECT_TIMEOUT).await {
                Ok(c) => *conn = Some(c),
                Err(e) => {
                    tracing::debug!(broker = id, error = %e, "cannot reach a partition leader for transaction markers");
                    return fail_all(ResponseError::NetworkException);
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            return fail_all(ResponseError::NetworkException);
        };
        let req = WriteTxnMarkersRequest::default().with_markers(vec![to_wire(m)]);
        match c.send(MARKERS_VERSION, &req, REQUEST_TIMEOUT).await {
            Ok(resp) => {
                let mut out = Vec::new();
                for r in resp.markers {
                    for t in r.topics {
                        for p in t.partitions {
                            let result = match p.error_code {
                                0 => Ok(()),
                                c => Err(ResponseError::try_from_code(c)
                                    .unwrap_or(ResponseError::UnknownServerError)),
                            };
                            out.push(((t.name.0.to_string(), p.partition_index), result));
                        }
                    }
                }
                out
            }
            Err(e) => {
                tracing::debug!(broker = id, error = %e, "WriteTxnMarkers failed");
                *conn = None;
                fail_all(ResponseError::NetworkException)
            }
        }
    }

    /// Writes the marker to every partition of `m`, retrying until each is
    /// written (or its topic is gone), or until `cancel` fires (false).
    pub async fn write_all(
        &self,
        broker: &Arc<Broker>,
        m: &Marker,
        cancel: &CancellationToken,
    ) -> bool {
        let mut remaining: BTreeSet<(String, i32)> = m.partitions.iter().cloned().collect();
        let mut backoff = Duration::from_millis(20);
        loop {
            let image = broker.image();
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            remaining.retain(|(t, p)| match image.partition(t, *p) {
                None => {
                    tracing::warn!(topic = %t, partition = p, producer = m.producer_id, "transaction marker not written: the partition no longer exists");
                    false
                }
                Some(state) => {
                    if state.leader >= 0 {
                        by_leader.entry(state.leader).or_default().push((t.clone(), *p));
                    }
                    true
                }
            });
            for (leader, partitions) in by_leader {
                let part = Marker {
                    partitions,
                    ..m.clone()
                };
                let results = if leader == broker.node_id() {
                    write_local(broker, &part).await
                } else if let Some(b) = image.brokers.get(&leader) {
                    let addr = format!("{}:{}", b.host, b.port);
                    self.send_remote(leader, &addr, &part).await
                } else {
                    continue;
                };
                for (tp, result) in results {
                    match result {
                        Ok(()) => {
                            remaining.remove(&tp);
                        }
                        Err(e) => {
                            tracing::debug!(topic = %tp.0, partition = tp.1, error = ?e, "transaction marker not written yet")
                        }
                    }
                }
            }
            if remaining.is_empty() {
                return true;
            }
            tokio::select! {
                _ = cancel.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

fn to_wire(m: &Marker) -> WritableTxnMarker {
    let mut topics: Vec<WritableTxnMarkerTopic> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some(last) if last.name.0.as_str() == t => last.partition_indexes.push(*p),
            _ => topics.push(
                WritableTxnMarkerTopic::default()
                    .with_name(TopicName(StrBytes::from_string(t.clone())))
                    .with_partition_indexes(vec![*p]),
            ),
        }
    }
    WritableTxnMarker::default()
        .with_producer_id(ProducerId(m.producer_id))
        .with_producer_epoch(m.producer_epoch)
        .with_transaction_result(m.commit)
        .with_topics(topics)
        .with_coordinator_epoch(m.coordinator_epoch)
}
