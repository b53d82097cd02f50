//! OffsetCommit (key 8), v2-9. Answered only once the commit is durable in
//! `__consumer_offsets` (appended, then fsynced by the flusher).
//!
//! A partition of an unknown topic gets UNKNOWN_TOPIC_OR_PARTITION and is
//! not committed; a group-level refusal (unknown member, stale generation,
//! rebalance) applies to every other partition.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, group_error, Ctx, Error, Reply, NONE};
use crate::cluster::image::TopicImage;
use crate::coordinator::group::CommitEntry;

/// Kafka's `offset.metadata.max.bytes` default.
const MAX_METADATA_BYTES: usize = 4096;

/// Checks one partition of an offset commit (OffsetCommit or
/// TxnOffsetCommit): the entry to commit, or the partition's error code.
pub(super) fn commit_entry(
    topic: Option<&TopicImage>,
    name: &str,
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: Option<&StrBytes>,
) -> Result<CommitEntry, i16> {
    if topic.is_none_or(|t| t.partition(partition).is_none()) {
        return Err(code(ResponseError::UnknownTopicOrPartition));
    }
    let metadata = metadata.map(|m| m.to_string()).unwrap_or_default();
    if metadata.len() > MAX_METADATA_BYTES {
        return Err(code(ResponseError::OffsetMetadataTooLarge));
    }
    Ok(CommitEntry {
        topic: name.to_string(),
        partition,
        offset,
        leader_epoch,
        metadata,
    })
}

pub fn handle(ctx: Ctx, req: OffsetCommitRequest) -> Result<Reply, Error> {
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut entries = Vec::new();
    // (topic index, partition index) of each entry, to set its result.
    let mut slots = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let image = ctx.broker.image();
        let topic = image.topic(&name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let r =
                OffsetCommitResponsePartition::default().with_partition_index(p.partition_index);
            match commit_entry(
                topic,
                &name,
                p.partition_index,
                p.committed_offset,
                if ctx.version >= 6 {
                    p.committed_leader_epoch
                } else {
                    -1
                },
                p.committed_metadata.as_ref(),
            ) {
                Err(e) => parts.push(r.with_error_code(e)),
                Ok(entry) => {
                    parts.push(r.with_error_code(NONE));
                    slots.push((ti, pi));
                    entries.push(entry);
                }
            }
        }
        topics.push(
            OffsetCommitResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(parts),
        );
    }
    let set_all =
        |topics: &mut Vec<OffsetCommitResponseTopic>, slots: &[(usize, usize)], err: i16| {
            for &(ti, pi) in slots {
                if let Some(p) = topics.get_mut(ti).and_then(|t| t.partitions.get_mut(pi)) {
                    p.error_code = err;
                }
            }
        };
    if entries.is_empty() {
        return Ok(Reply::Now(
            ctx.respond(&OffsetCommitResponse::default().with_topics(topics))?,
        ));
    }
    let durable = ctx.broker.groups.commit(
        &req.group_id.0,
        req.generation_id_or_member_epoch,
        &req.member_id,
        req.group_instance_id.as_deref(),
        entries,
    );
    let durable = match durable {
        Ok(d) => d,
        Err(e) => {
            set_all(&mut topics, &slots, group_error(&e));
            return Ok(Reply::Now(
                ctx.respond(&OffsetCommitResponse::default().with_topics(topics))?,
            ));
        }
    };
    Ok(Reply::Later(Box::pin(async move {
        if let Err(e) = durable.await {
            tracing::warn!(error = %e, "offset commit not durable");
            set_all(&mut topics, &slots, group_error(&e));
        }
        ctx.respond(&OffsetCommitResponse::default().with_topics(topics))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot encode offset commit response");
                bytes::BytesMut::new()
            })
    })))
}
