//! The idempotent producer: a producer id from InitProducerId (no
//! transactional id), a sequence number per partition in every batch header,
//! and retries of the *same* batch (same bytes, same sequence) after a
//! retriable error or a lost connection, so a partition leader that already
//! wrote it answers with the original offsets instead of writing it twice
//! (see docs/transactions.md, "Idempotent producer").
//!
//! At most one batch per partition is in flight: a batch is retried until it
//! is acknowledged or the delivery timeout passes, and only then does the
//! partition's sequence move on. That keeps the sequences gap-free without
//! Kafka's in-flight bookkeeping. After a fatal error the producer refuses
//! further sends: which sequence the leader expects is no longer known.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{InitProducerIdRequest, ProduceRequest, ProducerId};

use bytes::Bytes;

use super::error::{ApiError, ClientError};
use super::pool::{topic_name, Client, Target};
use super::records::{encode_idempotent_batch, OutRecord, ProducerFields};

/// How an [`IdempotentProducer`] retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch may take from its first send to its acknowledgement,
    /// retries included (Kafka's `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    /// The first wait before a retry; doubled per retry up to 2 s.
    pub retry_backoff: Duration,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// Why a send failed. After any of these the producer is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("cannot get a producer id: {0}")]
    Init(ClientError),
    #[error(
        "{topic}-{partition}: the leader does not know producer id {producer_id} \
         (UNKNOWN_PRODUCER_ID): its state expired or was lost; start again with a new \
         producer (records acknowledged so far are written once)"
    )]
    UnknownProducer {
        topic: String,
        partition: i32,
        producer_id: i64,
    },
    #[error(
        "{topic}-{partition}: the leader expected another sequence than {sequence} \
         (OUT_OF_ORDER_SEQUENCE_NUMBER): records may have been lost on the broker; \
         start again with a new producer from the last acknowledged offset"
    )]
    OutOfOrder {
        topic: String,
        partition: i32,
        sequence: i32,
    },
    #[error(
        "{topic}-{partition}: producer id {producer_id} was fenced by a newer epoch \
         (INVALID_PRODUCER_EPOCH)"
    )]
    Fenced {
        topic: String,
        partition: i32,
        producer_id: i64,
    },
    #[error("{topic}-{partition}: {error}")]
    Rejected {
        topic: String,
        partition: i32,
        error: ApiError,
    },
    #[error(
        "{topic}-{partition}: not acknowledged within {ms} ms ({attempts} attempts); last error: {last}"
    )]
    DeliveryTimeout {
        topic: String,
        partition: i32,
        ms: u64,
        attempts: u32,
        last: String,
    },
    #[error("{0}")]
    Client(ClientError),
    #[error("the producer failed before and cannot send any more: {0}")]
    Poisoned(String),
}

/// One partition's records for [`IdempotentProducer::send`].
pub struct PartitionRecords<'a> {
    pub partition: i32,
    pub records: &'a [OutRecord<'a>],
}

/// A batch waiting for its acknowledgement.
struct Pending {
    partition: i32,
    sequence: i32,
    count: i32,
    batch: Bytes,
    attempts: u32,
    last_error: String,
}

/// An idempotent producer over a [`Client`]. Sends with acks=all.
pub struct IdempotentProducer {
    client: Client,
    config: ProducerConfig,
    producer_id: i64,
    epoch: i16,
    /// (topic, partition) -> the sequence of the next batch's first record.
    next_sequence: HashMap<(String, i32), i32>,
    poisoned: Option<String>,
}

impl IdempotentProducer {
    /// Asks the cluster for a producer id (InitProducerId without a
    /// transactional id).
    pub async fn new(
        client: Client,
        config: ProducerConfig,
    ) -> Result<IdempotentProducer, ProducerError> {
        let timeout = client.server_timeout_ms();
        let start = Instant::now();
        let mut backoff = config.retry_backoff;
        let (producer_id, epoch) = loop {
            let r = client
                .send(&Target::Any, |v| {
                    let mut req = InitProducerIdRequest::default()
                        .with_transactional_id(None)
                        .with_transaction_timeout_ms(timeout);
                    if v >= 3 {
                        req = req.with_producer_id(ProducerId(-1)).with_producer_epoch(-1);
                    }
                    req
                })
                .await;
            let err = match r {
                Ok(resp) => match ApiError::check(resp.error_code, None) {
                    Ok(()) => break (resp.producer_id.0, resp.producer_epoch),
                    Err(e) => ClientError::Api(e),
                },
                Err(e) => e,
            };
            let retriable = match &err {
                ClientError::Api(e) => retriable_code(e),
                e => e.retriable() || matches!(e, ClientError::NoBrokerReachable(_)),
            };
            if !retriable || start.elapsed() + backoff > config.delivery_timeout {
                return Err(ProducerError::Init(err));
            }
            tracing::debug!(error = %err, "InitProducerId failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        };
        tracing::debug!(producer_id, epoch, "idempotent producer ready");
        Ok(IdempotentProducer {
            client,
            config,
            producer_id,
            epoch,
            next_sequence: HashMap::new(),
            poisoned: None,
        })
    }

    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    pub fn epoch(&self) -> i16 {
        self.epoch
    }

    /// The client this producer sends through.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Writes one batch per entry of `batches` to `topic` (entries for the
    /// same partition are sent one after the other, in order) and returns
    /// each batch's base offset, in the order given (-1 when a leader
    /// answered DUPLICATE_SEQUENCE_NUMBER without offsets). Returns only
    /// when every batch is acknowledged or one failed for good.
    pub async fn send(
        &mut self,
        topic: &str,
        batches: &[PartitionRecords<'_>],
    ) -> Result<Vec<i64>, ProducerError> {
        if let Some(why) = &self.poisoned {
            return Err(ProducerError::Poisoned(why.clone()));
        }
        let mut offsets = vec![-1; batches.len()];
        // Batches of one partition go in rounds: the i-th batch of every
        // partition in round i.
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut seen: HashMap<i32, usize> = HashMap::new();
        for (i, b) in batches.iter().enumerate() {
            if b.records.is_empty() {
                continue;
            }
            let n = seen.entry(b.partition).or_insert(0);
            if rounds.len() <= *n {
                rounds.push(Vec::new());
            }
            if let Some(r) = rounds.get_mut(*n) {
                r.push(i);
            }
            *n += 1;
        }
        for round in rounds {
            let mut pending: BTreeMap<usize, Pending> = BTreeMap::new();
            for i in round {
                let Some(b) = batches.get(i) else { continue };
                let sequence = *self
                    .next_sequence
                    .entry((topic.to_string(), b.partition))
                    .or_insert(0);
                let count = i32::try_from(b.records.len()).unwrap_or(i32::MAX);
                let batch = encode_idempotent_batch(
                    b.records,
                    ProducerFields {
                        producer_id: self.producer_id,
                        producer_epoch: self.epoch,
                        base_sequence: sequence,
                    },
                );
                pending.insert(
                    i,
                    Pending {
                        partition: b.partition,
                        sequence,
                        count,
                        batch,
                        attempts: 0,
                        last_error: String::new(),
                    },
                );
            }
            match self.deliver(topic, pending).await {
                Ok(acked) => {
                    for (i, (partition, count, offset)) in acked {
                        if let Some(o) = offsets.get_mut(i) {
                            *o = offset;
                        }
                        let seq = self
                            .next_sequence
                            .entry((topic.to_string(), partition))
                            .or_insert(0);
                        // Sequences wrap to 0 after i32::MAX, as Kafka's do.
                        *seq = seq.wrapping_add(count) & i32::MAX;
                    }
                }
                Err(e) => {
                    self.poisoned = Some(e.to_string());
                    return Err(e);
                }
            }
        }
        Ok(offsets)
    }

    /// Sends `pending` until all are acknowledged: (index, partition,
    /// record count, base offset) per batch.
    async fn deliver(
        &self,
        topic: &str,
        mut pending: BTreeMap<usize, Pending>,
    ) -> Result<Vec<(usize, (i32, i32, i64))>, ProducerError> {
        let start = Instant::now();
        let mut backoff = self.config.retry_backoff;
        let mut acked = Vec::new();
        let mut refresh = false;
        loop {
            // Group by leader; a partition whose leader is unknown waits.
            let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
            for (i, p) in pending.iter_mut() {
                match self.client.leader(topic, p.partition, refresh).await {
                    Ok(l) => by_leader.entry(l).or_default().push(*i),
                    Err(e) if e.retriable() || is_retriable_client(&e) => {
                        p.last_error = e.to_string();
                    }
                    Err(ClientError::Api(e)) => {
                        return Err(ProducerError::Rejected {
                            topic: topic.to_string(),
                            partition: p.partition,
                            error: e,
                        })
                    }
                    Err(e) => return Err(ProducerError::Client(e)),
                }
            }
            refresh = false;
            for (leader, idx) in by_leader {
                let answers = self.send_to_leader(topic, leader, &idx, &pending).await;
                match answers {
                    Err(e) if e.retriable() || is_retriable_client(&e) => {
                        tracing::debug!(topic, leader, error = %e, "produce failed, retrying the same batches");
                        refresh = true;
                        for i in &idx {
                            if let Some(p) = pending.get_mut(i) {
                                p.last_error = e.to_string();
                                p.attempts += 1;
                            }
                        }
                    }
                    Err(e) => return Err(ProducerError::Client(e)),
                    Ok(answers) => {
                        for (i, result) in answers {
                            let Some(p) = pending.get_mut(&i) else {
                                continue;
                            };
                            p.attempts += 1;
                            match result {
                                Ok(offset) => {
                                    acked.push((i, (p.partition, p.count, offset)));
                                    pending.remove(&i);
                                }
                                Err(e) => {
                                    if let Some(fatal) = self.fatal(topic, p, &e) {
                                        return Err(fatal);
                                    }
                                    refresh |= e.needs_refresh();
                                    p.last_error = e.to_string();
                                }
                            }
                        }
                    }
                }
            }
            if pending.is_empty() {
                return Ok(acked);
            }
            if start.elapsed() + backoff > self.config.delivery_timeout {
                let (_, p) = pending.iter().next().ok_or_else(|| {
                    ProducerError::Poisoned("no pending batch after a timeout".into())
                })?;
                return Err(ProducerError::DeliveryTimeout {
                    topic: topic.to_string(),
                    partition: p.partition,
                    ms: u64::try_from(self.config.delivery_timeout.as_millis()).unwrap_or(u64::MAX),
                    attempts: p.attempts,
                    last: p.last_error.clone(),
                });
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// The error to stop with, or `None` when `e` is worth a retry of the
    /// same batch.
    fn fatal(&self, topic: &str, p: &Pending, e: &ApiError) -> Option<ProducerError> {
        let (topic, partition) = (topic.to_string(), p.partition);
        if e.is(ResponseError::UnknownProducerId) {
            return Some(ProducerError::UnknownProducer {
                topic,
                partition,
                producer_id: self.producer_id,
            });
        }
        if e.is(ResponseError::OutOfOrderSequenceNumber) {
            return Some(ProducerError::OutOfOrder {
                topic,
                partition,
                sequence: p.sequence,
            });
        }
        if e.is(ResponseError::InvalidProducerEpoch) || e.is(ResponseError::ProducerFenced) {
            return Some(ProducerError::Fenced {
                topic,
                partition,
                producer_id: self.producer_id,
            });
        }
        if retriable_code(e) {
            return None;
        }
        Some(ProducerError::Rejected {
            topic,
            partition,
            error: e.clone(),
        })
    }

    /// One Produce request to `leader` with the batches `idx` of `pending`;
    /// per batch, its base offset or the leader's error.
    async fn send_to_leader(
        &self,
        topic: &str,
        leader: i32,
        idx: &[usize],
        pending: &BTreeMap<usize, Pending>,
    ) -> Result<Vec<(usize, Result<i64, ApiError>)>, ClientError> {
        let timeout = self.client.server_timeout_ms();
        let parts: Vec<(usize, i32, Bytes)> = idx
            .iter()
            .filter_map(|i| pending.get(i).map(|p| (*i, p.partition, p.batch.clone())))
            .collect();
        let resp = self
            .client
            .send(&Target::Broker(leader), |_| {
                ProduceRequest::default()
                    .with_acks(-1)
                    .with_timeout_ms(timeout)
                    .with_topic_data(vec![TopicProduceData::default()
                        .with_name(topic_name(topic))
                        .with_partition_data(
                            parts
                                .iter()
                                .map(|(_, p, b)| {
                                    PartitionProduceData::default()
                                        .with_index(*p)
                                        .with_records(Some(b.clone()))
                                })
                                .collect(),
                        )])
            })
            .await?;
        let answers: HashMap<i32, (i16, Option<String>, i64)> = resp
            .responses
            .into_iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partition_responses)
            .map(|p| {
                (
                    p.index,
                    (
                        p.error_code,
                        p.error_message.map(|m| m.to_string()),
                        p.base_offset,
                    ),
                )
            })
            .collect();
        Ok(parts
            .into_iter()
            .map(|(i, partition, _)| {
                let r = match answers.get(&partition) {
                    None => Err(ApiError::local(
                        ResponseError::UnknownServerError,
                        format!("broker {leader} did not answer for {topic}-{partition}"),
                    )),
                    Some((code, _, _))
                        if *code == ResponseError::DuplicateSequenceNumber.code() =>
                    {
                        // Written before; an older broker does not say where.
                        Ok(-1)
                    }
                    Some((code, msg, offset)) => {
                        ApiError::check(*code, msg.clone()).map(|()| *offset)
                    }
                };
                (i, r)
            })
            .collect())
    }
}

/// Transport failures are worth a retry of the same batch: the broker
/// deduplicates it if the first send was written.
fn is_retriable_client(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::NoBrokerReachable(_) | ClientError::UnknownBroker(_)
    ) || e.is_transport()
}

/// Kafka's retriable produce errors.
fn retriable_code(e: &ApiError) -> bool {
    use ResponseError as E;
    e.needs_refresh()
        || [
            E::NotEnoughReplicas,
            E::NotEnoughReplicasAfterAppend,
            E::RequestTimedOut,
            E::NetworkException,
            E::KafkaStorageError,
            E::CorruptMessage,
            E::ConcurrentTransactions,
            E::ThrottlingQuotaExceeded,
            E::OffsetNotAvailable,
        ]
        .iter()
        .any(|c| e.is(*c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_and_fatal_codes_follow_kafka() {
        let err = |e: ResponseError| ApiError::local(e, "x");
        assert!(retriable_code(&err(ResponseError::NotLeaderOrFollower)));
        assert!(retriable_code(&err(ResponseError::NotEnoughReplicas)));
        assert!(retriable_code(&err(ResponseError::RequestTimedOut)));
        assert!(!retriable_code(&err(
            ResponseError::OutOfOrderSequenceNumber
        )));
        assert!(!retriable_code(&err(ResponseError::UnknownProducerId)));
        assert!(!retriable_code(&err(ResponseError::MessageTooLarge)));
        assert!(!retriable_code(&err(
            ResponseError::TopicAuthorizationFailed
        )));
    }
}
