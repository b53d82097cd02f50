//! Partition data: ListOffsets, Produce and Fetch, each sent to the
//! partition's leader.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ListOffsetsRequest, ProduceRequest};

use super::error::{ApiError, ClientError};
use super::pool::{topic_name, Client, Target};
use super::records::{self, Aborted, OutRecord};
use super::types::{FetchedRecords, Isolation, ListedOffset, OffsetSpec, ProduceRecord};

/// One partition's ListOffsets outcome.
type Listed = Result<ListedOffset, ApiError>;

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

impl Client {
    /// ListOffsets for each partition, sent to each partition's leader.
    /// Partitions whose leader moved (or whose broker failed) are retried
    /// once after a metadata refresh.
    pub async fn list_offsets(
        &self,
        partitions: &[(String, i32)],
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<BTreeMap<(String, i32), Listed>, ClientError> {
        let mut out = BTreeMap::new();
        let mut todo: Vec<(String, i32)> = partitions.to_vec();
        todo.sort();
        todo.dedup();
        for attempt in 0..2 {
            let refresh = attempt > 0;
            if refresh {
                let topics: Vec<String> = {
                    let mut t: Vec<String> = todo.iter().map(|(t, _)| t.clone()).collect();
                    t.dedup();
                    t
                };
                self.metadata(Some(&topics)).await?;
            }
            let mut by_leader: BTreeMap<i32, Vec<(String, i32)>> = BTreeMap::new();
            for (t, p) in std::mem::take(&mut todo) {
                match self.leader(&t, p, false).await {
                    Ok(l) => by_leader.entry(l).or_default().push((t, p)),
                    Err(ClientError::Api(e)) if e.needs_refresh() && !refresh => todo.push((t, p)),
                    Err(ClientError::Api(e)) => {
                        out.insert((t, p), Err(e));
                    }
                    Err(e) => return Err(e),
                }
            }
            for (leader, parts) in by_leader {
                match self.list_offsets_on(leader, &parts, spec, isolation).await {
                    Ok(answers) => {
                        for (tp, r) in answers {
                            match r {
                                Err(e) if e.needs_refresh() && !refresh => todo.push(tp),
                                r => {
                                    out.insert(tp, r);
                                }
                            }
                        }
                    }
                    Err(e) if e.retriable() && !refresh => todo.extend(parts),
                    Err(e) => return Err(e),
                }
            }
            if todo.is_empty() {
                break;
            }
        }
        Ok(out)
    }

    async fn list_offsets_on(
        &self,
        leader: i32,
        parts: &[(String, i32)],
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<Vec<((String, i32), Listed)>, ClientError> {
        let (resp, version) = self
            .send_versioned(&Target::Broker(leader), |v| {
                let mut topics: Vec<ListOffsetsTopic> = Vec::new();
                for (t, p) in parts {
                    let part = ListOffsetsPartition::default()
                        .with_partition_index(*p)
                        .with_timestamp(spec.wire());
                    match topics.last_mut() {
                        Some(last) if last.name.0.as_str() == t => last.partitions.push(part),
                        _ => topics.push(
                            ListOffsetsTopic::default()
                                .with_name(topic_name(t))
                                .with_partitions(vec![part]),
                        ),
                    }
                }
                let mut req = ListOffsetsRequest::default()
                    .with_replica_id((-1).into())
                    .with_topics(topics);
                if v >= 2 {
                    req = req.with_isolation_level(isolation.wire());
                }
                req
            })
            .await?;
        if spec == OffsetSpec::MaxTimestamp && version < 7 {
            let e = ApiError::local(
                ResponseError::UnsupportedVersion,
                format!(
                    "the max timestamp needs ListOffsets v7; broker {leader} offers v{version}"
                ),
            );
            return Ok(parts
                .iter()
                .map(|tp| (tp.clone(), Err(e.clone())))
                .collect());
        }
        let mut answers = Vec::new();
        for t in resp.topics {
            for p in t.partitions {
                let tp = (t.name.0.to_string(), p.partition_index);
                if !parts.contains(&tp) {
                    continue;
                }
                let r = ApiError::check(p.error_code, None).map(|()| ListedOffset {
                    offset: p.offset,
                    timestamp: p.timestamp,
                });
                answers.push((tp, r));
            }
        }
        for tp in parts {
            if !answers.iter().any(|(a, _)| a == tp) {
                answers.push((
                    tp.clone(),
                    Err(ApiError::local(
                        ResponseError::UnknownServerError,
                        format!("broker {leader} did not answer for {}-{}", tp.0, tp.1),
                    )),
                ));
            }
        }
        Ok(answers)
    }

    /// Produces one record with acks=all and returns its partition and
    /// offset. Without a partition, a keyed record goes where the Java client
    /// (and librdkafka's `murmur2_random`) would put it; an unkeyed one to
    /// the next partition in turn.
    pub async fn produce(
        &self,
        topic: &str,
        partition: Option<i32>,
        record: ProduceRecord,
    ) -> Result<(i32, i64), ClientError> {
        let partition = match partition {
            Some(p) => p,
            None => {
                let n = self.partition_count(topic).await?;
                match &record.key {
                    Some(k) => records::partition_for_key(k, n),
                    None => {
                        let next = self.inner.rotate.fetch_add(1, Ordering::Relaxed);
                        i32::try_from(next % u32::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
                    }
                }
            }
        };
        let batch = records::encode_batch(&[OutRecord {
            key: record.key.as_deref(),
            value: record.value.as_deref(),
            headers: &record.headers,
            timestamp: record.timestamp.unwrap_or_else(now_ms),
        }]);
        let timeout = self.server_timeout_ms();
        let offset = self
            .with_leader(topic, partition, |leader| {
                let batch = batch.clone();
                async move {
                    let resp = self
                        .send(&Target::Broker(leader), |_| {
                            ProduceRequest::default()
                                .with_acks(-1)
                                .with_timeout_ms(timeout)
                                .with_topic_data(vec![TopicProduceData::default()
                                    .with_name(topic_name(topic))
                                    .with_partition_data(vec![PartitionProduceData::default()
                                        .with_index(partition)
                                        .with_records(Some(batch.clone()))])])
                        })
                        .await?;
                    let p = resp
                        .responses
                        .into_iter()
                        .filter(|t| t.name.0.as_str() == topic)
                        .flat_map(|t| t.partition_responses)
                        .find(|p| p.index == partition)
                        .ok_or_else(|| missing(leader, topic, partition))?;
                    ApiError::check(p.error_code, p.error_message.map(|m| m.to_string()))?;
                    Ok(p.base_offset)
                }
            })
            .await?;
        Ok((partition, offset))
    }

    /// Fetches from `offset` (at most about `max_bytes`, at least one whole
    /// batch) without waiting for new data, and decodes the records:
    /// compressed batches included, control batches skipped, and with
    /// read_committed the aborted transactions' records skipped.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
        isolation: Isolation,
    ) -> Result<FetchedRecords, ClientError> {
        self.with_leader(topic, partition, |leader| async move {
            let (resp, version) = self
                .send_versioned(&Target::Broker(leader), |v| {
                    let mut part = FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(max_bytes);
                    if v < 5 {
                        part = part.with_log_start_offset(-1);
                    }
                    FetchRequest::default()
                        .with_replica_id((-1).into())
                        .with_max_wait_ms(0)
                        .with_min_bytes(0)
                        .with_max_bytes(max_bytes)
                        .with_isolation_level(isolation.wire())
                        .with_topics(vec![FetchTopic::default()
                            .with_topic(topic_name(topic))
                            .with_partitions(vec![part])])
                })
                .await?;
            if version >= 7 {
                ApiError::check(resp.error_code, None)?;
            }
            let p = resp
                .responses
                .into_iter()
                .filter(|t| t.topic.0.as_str() == topic)
                .flat_map(|t| t.partitions)
                .find(|p| p.partition_index == partition)
                .ok_or_else(|| missing(leader, topic, partition))?;
            ApiError::check(p.error_code, None)?;
            let aborted: Option<Vec<Aborted>> =
                (isolation == Isolation::ReadCommitted).then(|| {
                    p.aborted_transactions
                        .iter()
                        .flatten()
                        .map(|a| Aborted {
                            producer_id: a.producer_id.0,
                            first_offset: a.first_offset,
                        })
                        .collect()
                });
            let data = p.records.unwrap_or_default();
            let decoded = records::decode_batches(partition, data, offset, aborted.as_deref())
                .map_err(|e| ClientError::Protocol {
                    addr: format!("broker {leader} ({topic}-{partition})"),
                    reason: e.to_string(),
                })?;
            Ok(FetchedRecords {
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                last_stable_offset: p.last_stable_offset,
                records: decoded.records,
                next_offset: decoded.next_offset.unwrap_or(offset).max(offset),
            })
        })
        .await
    }
}

fn missing(leader: i32, topic: &str, partition: i32) -> ClientError {
    ClientError::Protocol {
        addr: format!("broker {leader}"),
        reason: format!("the response has no entry for {topic}-{partition}"),
    }
}
