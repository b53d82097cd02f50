//! TxnOffsetCommit (key 28), v0-3: offsets committed inside a transaction
//! (Kafka's `sendOffsetsToTransaction`). Sent to the group coordinator after
//! AddOffsetsToTxn; the offsets are written to `__consumer_offsets` in a
//! transactional batch and become the group's committed offsets only when
//! the transaction commits (its marker reaches the group's partition). v3
//! carries the member's generation, checked as OffsetCommit does.

use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TopicName, TxnOffsetCommitRequest, TxnOffsetCommitResponse};
use kafka_protocol::protocol::StrBytes;

use super::offset_commit::commit_entry;
use super::{group_error, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: TxnOffsetCommitRequest) -> Result<Reply, Error> {
    let image = ctx.broker.image();
    let mut topics = Vec::with_capacity(req.topics.len());
    let mut entries = Vec::new();
    let mut slots = Vec::new();
    for (ti, t) in req.topics.iter().enumerate() {
        let name = t.name.0.to_string();
        let topic = image.topic(&name);
        let mut parts = Vec::with_capacity(t.partitions.len());
        for (pi, p) in t.partitions.iter().enumerate() {
            let r =
                TxnOffsetCommitResponsePartition::default().with_partition_index(p.partition_index);
            match commit_entry(
                topic,
                &name,
                p.partition_index,
                p.committed_offset,
                if ctx.version >= 2 {
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
            TxnOffsetCommitResponseTopic::default()
                .with_name(TopicName(StrBytes::from_string(name)))
                .with_partitions(parts),
        );
    }
    drop(image);
    if entries.is_empty() {
        let resp = TxnOffsetCommitResponse::default().with_topics(topics);
        return Ok(Reply::Now(ctx.respond(&resp)?));
    }
    let (generation, member) = if ctx.version >= 3 {
        (req.generation_id, req.member_id.to_string())
    } else {
        (-1, String::new())
    };
    let durable = ctx.broker.groups.txn_commit(
        &req.group_id.0,
        (req.producer_id.0, req.producer_epoch),
        generation,
        &member,
        req.group_instance_id.as_deref(),
        entries,
    );
    Ok(Reply::Later(Box::pin(async move {
        let result = match durable {
            Ok(d) => d.await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::debug!(group = %req.group_id.0, error = %e, "TxnOffsetCommit refused");
            set_all(&mut topics, &slots, group_error(&e));
        }
        let resp = TxnOffsetCommitResponse::default().with_topics(topics);
        super::respond_or_log(&ctx, &resp)
    })))
}

fn set_all(topics: &mut [TxnOffsetCommitResponseTopic], slots: &[(usize, usize)], err: i16) {
    for &(ti, pi) in slots {
        if let Some(p) = topics.get_mut(ti).and_then(|t| t.partitions.get_mut(pi)) {
            p.error_code = err;
        }
    }
}
