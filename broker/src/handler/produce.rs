//! Produce (key 0), v3-9. Appends happen before the next request on the
//! connection is read; only the wait for fsync (acks=all) is deferred.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, log_error, topic_error, Ctx, Error, Reply, NONE};
use crate::broker::now_ms;
use crate::commitlog::batch;
use crate::config::TimestampType;
use crate::partition::Partition;

pub fn handle(ctx: Ctx, req: ProduceRequest) -> Result<Reply, Error> {
    let acks = req.acks;
    let now = now_ms();
    let mut to_flush: Vec<(usize, usize, Arc<Partition>)> = Vec::new();
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for (ti, td) in req.topic_data.into_iter().enumerate() {
        let name = td.name.0.to_string();
        let topic = if matches!(acks, -1..=1) {
            ctx.broker.topic(&name, true)
        } else {
            Ok(None)
        };
        let mut parts = Vec::with_capacity(td.partition_data.len());
        for (pi, pd) in td.partition_data.into_iter().enumerate() {
            let mut r = PartitionProduceResponse::default()
                .with_index(pd.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let partition = match &topic {
                _ if !matches!(acks, -1..=1) => {
                    parts.push(r.with_error_code(code(ResponseError::InvalidRequiredAcks)));
                    continue;
                }
                Ok(Some(t)) => t.partition(pd.index).map(|p| (t.config(), p)),
                Ok(None) => None,
                Err(e) => {
                    parts.push(
                        r.with_error_code(topic_error(e))
                            .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                    );
                    continue;
                }
            };
            let Some((config, partition)) = partition else {
                parts.push(r.with_error_code(code(ResponseError::UnknownTopicOrPartition)));
                continue;
            };
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
            match partition.append(&records, now, log_append_time) {
                Ok(info) => {
                    r = r
                        .with_error_code(NONE)
                        .with_base_offset(info.base_offset)
                        .with_log_append_time_ms(if log_append_time {
                            info.max_timestamp
                        } else {
                            -1
                        })
                        .with_log_start_offset(partition.log_start_offset());
                    let flush_now = if acks == -1 && ctx.broker.config.flush_acks_all {
                        true
                    } else {
                        partition.with_log(|log| {
                            i64::try_from(log.unflushed_messages()).unwrap_or(i64::MAX)
                                >= config.flush_messages
                        })
                    };
                    if flush_now {
                        to_flush.push((ti, pi, partition.clone()));
                    }
                }
                Err(e) => {
                    tracing::debug!(topic = %name, partition = pd.index, error = %e, "produce refused");
                    r = r
                        .with_error_code(log_error(&e))
                        .with_error_message(Some(StrBytes::from_string(e.to_string())));
                }
            }
            parts.push(r);
        }
        responses.push(
            TopicProduceResponse::default()
                // A fresh string: the request's is a view of its frame.
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partition_responses(parts),
        );
    }
    if acks == 0 {
        for (_, _, p) in to_flush {
            ctx.broker.flusher.flush_in_background(p);
        }
        return Ok(Reply::Nothing);
    }
    let wait_for_flush = acks == -1 && ctx.broker.config.flush_acks_all;
    if to_flush.is_empty() || !wait_for_flush {
        for (_, _, p) in to_flush {
            ctx.broker.flusher.flush_in_background(p);
        }
        return Ok(Reply::Now(
            ctx.respond(&ProduceResponse::default().with_responses(responses))?,
        ));
    }
    // Queued now, not when the writer reaches this response, so pipelined
    // requests on one connection share a group commit.
    let flushes: Vec<_> = to_flush
        .into_iter()
        .map(|(ti, pi, p)| (ti, pi, ctx.broker.flusher.flush(p)))
        .collect();
    Ok(Reply::Later(Box::pin(async move {
        let mut results = Vec::with_capacity(flushes.len());
        for (ti, pi, wait) in flushes {
            results.push((ti, pi, wait.await));
        }
        for (ti, pi, result) in results {
            if let Err(e) = result {
                if let Some(r) = responses
                    .get_mut(ti)
                    .and_then(|t| t.partition_responses.get_mut(pi))
                {
                    r.error_code = code(ResponseError::KafkaStorageError);
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                    r.base_offset = -1;
                }
            }
        }
        let resp = ProduceResponse::default().with_responses(responses);
        ctx.respond(&resp).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode produce response");
            bytes::BytesMut::new()
        })
    })))
}
