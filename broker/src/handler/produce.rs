//! Produce (key 0), v3-9. Only a partition's leader appends. Appends happen
//! before the next request on the connection is read; only the wait for
//! acks=all (replication to the ISR, and fsync under the default durability
//! policy) is deferred.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, log_error, Ctx, Error, Reply, NONE};
use crate::broker::now_ms;
use crate::commitlog::batch;
use crate::config::TimestampType;
use crate::partition::{AppendError, Partition};

pub fn handle(ctx: Ctx, req: ProduceRequest) -> Result<Reply, Error> {
    let acks = req.acks;
    let now = now_ms();
    // (topic slot, partition slot, replica, end offset, leader epoch, min ISR)
    let mut appended: Vec<(usize, usize, Arc<Partition>, i64, i32, i32)> = Vec::new();
    let mut to_create = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let name = td.name.0.to_string();
        let topic = ctx.broker.topics.get(&name);
        let known = topic.is_some() || ctx.broker.image().topic(&name).is_some();
        if !known && !to_create.contains(&name) && crate::topics::validate_name(&name).is_ok() {
            to_create.push(name.clone());
        }
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for (pi, pd) in td.partition_data.into_iter().enumerate() {
            let r = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            if !matches!(acks, -1..=1) {
                parts.push(r.with_error_code(code(ResponseError::InvalidRequiredAcks)));
                continue;
            }
            let partition = match super::leader_replica(&ctx, &name, pd.index, -1) {
                Ok(p) => p,
                Err(e) => {
                    parts.push(r.with_error_code(code(e)));
                    continue;
                }
            };
            let config = topic.as_ref().map(|t| t.config()).unwrap_or_default();
            let records = pd.records.unwrap_or_default();
            if records.len() > usize::try_from(config.max_message_bytes).unwrap_or(0) {
                parts.push(
                    r.with_error_code(code(ResponseError::MessageTooLarge))
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "record set of {} bytes exceeds max.message.bytes {} of topic {name}",
                            records.len(),
                            config.max_message_bytes
                        )))),
                );
                continue;
            }
            if let Err(ts) = batch::check_timestamps(
                &records,
                now,
                config.message_timestamp_before_max_ms,
                config.message_timestamp_after_max_ms,
            ) {
                let message = format!(
                    "timestamp {ts} is outside the range allowed by message.timestamp.before.max.ms / after.max.ms of topic {name}"
                );
                parts.push(
                    r.with_error_code(code(ResponseError::InvalidTimestamp))
                        .with_error_message(Some(StrBytes::from_string(message))),
                );
                continue;
            }
            let log_append_time = config.message_timestamp_type == TimestampType::LogAppendTime;
            let min_insync = config.min_insync_replicas;
            match partition.append_as_leader(&records, now, log_append_time, acks, min_insync) {
                Ok((info, epoch)) => {
                    let r = r
                        .with_error_code(NONE)
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(if log_append_time {
                            info.max_timestamp
                        } else {
                            -1
                        })
                        .with_log_start_offset(partition.log_start_offset());
                    let flush_by_count = partition.with_log(|log| {
                        i64::try_from(log.unflushed_messages()).unwrap_or(i64::MAX)
                            >= config.flush_messages
                    });
                    let flush_acked = acks == -1 && ctx.broker.config.flush_acks_all;
                    if flush_by_count && !flush_acked {
                        ctx.broker.flusher.flush_in_background(partition.clone());
                    }
                    if acks == -1 {
                        appended.push((
                            ti,
                            pi,
                            partition.clone(),
                            info.last_offset + 1,
                            epoch,
                            min_insync,
                        ));
                    }
                    parts.push(r);
                }
                Err(e) => {
                    tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                    parts.push(
                        r.with_error_code(append_error(&e))
                            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                    );
                }
            }
        }
        responses.push(
            TopicProduceResponse::default()
                // A fresh string: the request's is a view of its frame.
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partition_responses(parts),
        );
    }
    if !to_create.is_empty() && ctx.broker.config.auto_create_topics_enable {
        let b = ctx.broker.clone();
        tokio::spawn(async move { b.auto_create(to_create).await });
    }
    if acks == 0 {
        return Ok(Reply::Nothing);
    }
    if appended.is_empty() {
        return Ok(Reply::Now(
            ctx.respond(&ProduceResponse::default().with_responses(responses))?,
        ));
    }
    // Queued now, not when the writer reaches this response, so pipelined
    // requests on one connection share a group commit.
    let flush = ctx.broker.config.flush_acks_all;
    let timeout = Duration::from_millis(u64::try_from(req.timeout_ms.max(1)).unwrap_or(30_000));
    let waits: Vec<_> = appended
        .into_iter()
        .map(|(ti, pi, p, end, epoch, min_insync)| {
            let flushed = flush.then(|| ctx.broker.flusher.flush(p.clone()));
            let replicated = p.wait_replicated(end, epoch, timeout);
            (ti, pi, p, flushed, replicated, min_insync)
        })
        .collect();
    Ok(Reply::Later(Box::pin(async move {
        for (ti, pi, p, flushed, replicated, min_insync) in waits {
            let mut failure: Option<(i16, String)> = None;
            if let Some(f) = flushed {
                if let Err(e) = f.await {
                    failure = Some((code(ResponseError::KafkaStorageError), e.to_string()));
                }
            }
            if failure.is_none() {
                match replicated.await {
                    Ok(()) => {
                        let isr = p.isr_len();
                        if (isr as i64) < i64::from(min_insync) {
                            let e = AppendError::NotEnoughReplicasAfterAppend {
                                isr,
                                min: min_insync,
                            };
                            failure = Some((append_error(&e), e.to_string()));
                        }
                    }
                    Err(e) => failure = Some((append_error(&e), e.to_string())),
                }
            }
            if let Some((err, msg)) = failure {
                if let Some(r) = responses
                    .get_mut(ti)
                    .and_then(|t| t.partition_responses.get_mut(pi))
                {
                    r.error_code = err;
                    r.error_message = Some(StrBytes::from_string(msg));
                    r.base_offset = -1;
                }
            }
        }
        super::respond_or_log(&ctx, &ProduceResponse::default().with_responses(responses))
    })))
}

/// Kafka's code for a failed leader append.
fn append_error(e: &AppendError) -> i16 {
    match e {
        AppendError::NotLeader => code(ResponseError::NotLeaderOrFollower),
        AppendError::NotEnoughReplicas { .. } => code(ResponseError::NotEnoughReplicas),
        AppendError::NotEnoughReplicasAfterAppend { .. } => {
            code(ResponseError::NotEnoughReplicasAfterAppend)
        }
        AppendError::Timeout(_) => code(ResponseError::RequestTimedOut),
        AppendError::Log(e) => log_error(e),
    }
}
