//! OffsetForLeaderEpoch (key 23), v2-4: the end offset of a leader epoch in
//! the leader's log (the start offset of the next higher epoch, or the log
//! end for the current one). Followers use it to truncate a divergent tail
//! after a leader change; clients to validate their position.

use bytes::BytesMut;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{code, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: OffsetForLeaderEpochRequest) -> Result<BytesMut, Error> {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = EpochEndOffset::default()
                        .with_partition(p.partition)
                        .with_leader_epoch(-1)
                        .with_end_offset(-1);
                    match super::leader_replica(
                        ctx,
                        &t.topic.0,
                        p.partition,
                        p.current_leader_epoch,
                    ) {
                        Ok(part) => {
                            let (epoch, end) =
                                part.with_log(|l| l.end_offset_for_epoch(p.leader_epoch));
                            r.with_error_code(NONE)
                                .with_leader_epoch(epoch)
                                .with_end_offset(end)
                        }
                        Err(e) => r.with_error_code(code(e)),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(&OffsetForLeaderEpochResponse::default().with_topics(topics))
}
