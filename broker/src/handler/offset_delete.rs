//! OffsetDelete (key 47), v0: deletes committed offsets of a group, except
//! those of topics a non-empty consumer group subscribes to
//! (GROUP_SUBSCRIBED_TO_TOPIC).

use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{group_error, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: OffsetDeleteRequest) -> Result<Reply, Error> {
    let wanted: Vec<(String, i32)> = req
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.0.to_string(), p.partition_index))
        })
        .collect();
    let (results, durable) = match ctx.broker.groups.delete_offsets(&req.group_id.0, &wanted) {
        Ok(r) => r,
        Err(e) => {
            let resp = OffsetDeleteResponse::default().with_error_code(group_error(&e));
            return Ok(Reply::Now(ctx.respond(&resp)?));
        }
    };
    Ok(Reply::Later(Box::pin(async move {
        let failed = durable.await.err();
        let mut topics: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for ((t, p), r) in wanted.into_iter().zip(results) {
            let err = match (&r, &failed) {
                (Some(e), _) | (None, Some(e)) => group_error(e),
                (None, None) => NONE,
            };
            let part = OffsetDeleteResponsePartition::default()
                .with_partition_index(p)
                .with_error_code(err);
            match topics.last_mut() {
                Some(last) if *last.name.0 == *t => last.partitions.push(part),
                _ => topics.push(
                    OffsetDeleteResponseTopic::default()
                        .with_name(TopicName(StrBytes::from_string(t)))
                        .with_partitions(vec![part]),
                ),
            }
        }
        ctx.respond(
            &OffsetDeleteResponse::default()
                .with_error_code(NONE)
                .with_topics(topics),
        )
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode offset delete response");
            bytes::BytesMut::new()
        })
    })))
}
