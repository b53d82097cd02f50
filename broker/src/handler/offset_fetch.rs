//! OffsetFetch (key 9), v1-9: one group (v1-7) or several (v8+). Null topics
//! (v2+) return every committed offset of the group; a partition without a
//! committed offset gets offset -1. With `require_stable` (v7+), a
//! partition whose offset is part of a transaction not yet completed gets
//! UNSTABLE_OFFSET_COMMIT, and the consumer asks again.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Error, NONE};
use crate::coordinator::group::Committed;

type Fetched = Vec<(String, Vec<(i32, Option<Committed>)>)>;

pub fn handle(ctx: &Ctx, req: OffsetFetchRequest) -> Result<BytesMut, Error> {
    let s = StrBytes::from_string;
    let groups = &ctx.broker.groups;
    if ctx.version >= 8 {
        let out = req
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|ts| {
                    ts.iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                let unstable = unstable(ctx, &req, &g.group_id.0);
                let (fetched, err): (Fetched, i16) =
                    match groups.fetch_offsets(&g.group_id.0, topics) {
                        Ok(f) => (f, NONE),
                        Err(e) => (Vec::new(), super::group_error(&e)),
                    };
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(s(g.group_id.0.to_string())))
                    .with_error_code(err)
                    .with_topics(
                        fetched
                            .into_iter()
                            .map(|(t, parts)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(t.clone())))
                                    .with_partitions(
                                        parts
                                            .into_iter()
                                            .map(|(p, c)| {
                                                let (o, e, m) = split(c);
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(p)
                                                    .with_committed_offset(o)
                                                    .with_committed_leader_epoch(e)
                                                    .with_metadata(Some(s(m)))
                                                    .with_error_code(stability(&unstable, &t, p))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .collect();
        return ctx.respond(&OffsetFetchResponse::default().with_groups(out));
    }
    let topics = req.topics.as_ref().map(|ts| {
        ts.iter()
            .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
            .collect()
    });
    let unstable = unstable(ctx, &req, &req.group_id.0);
    let (fetched, err): (Fetched, i16) = match groups.fetch_offsets(&req.group_id.0, topics) {
        Ok(f) => (f, NONE),
        Err(e) => (Vec::new(), super::group_error(&e)),
    };
    let topics = fetched
        .into_iter()
        .map(|(t, parts)| {
            OffsetFetchResponseTopic::default()
                .with_name(TopicName(s(t.clone())))
                .with_partitions(
                    parts
                        .into_iter()
                        .map(|(p, c)| {
                            let (o, e, m) = split(c);
                            OffsetFetchResponsePartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(o)
                                .with_committed_leader_epoch(e)
                                .with_metadata(Some(s(m)))
                                .with_error_code(stability(&unstable, &t, p))
                        })
                        .collect(),
                )
        })
        .collect();
    ctx.respond(
        &OffsetFetchResponse::default()
            .with_topics(topics)
            .with_error_code(if ctx.version >= 2 { err } else { NONE }),
    )
}

/// The group's partitions with offsets in an open transaction, when the
/// request asks for stable offsets only.
fn unstable(ctx: &Ctx, req: &OffsetFetchRequest, group_id: &str) -> Vec<(String, i32)> {
    if ctx.version >= 7 && req.require_stable {
        ctx.broker.groups.unstable_offsets(group_id)
    } else {
        Vec::new()
    }
}

fn stability(unstable: &[(String, i32)], topic: &str, partition: i32) -> i16 {
    if unstable.iter().any(|(t, p)| t == topic && *p == partition) {
        ResponseError::UnstableOffsetCommit.code()
    } else {
        NONE
    }
}

fn split(c: Option<Committed>) -> (i64, i32, String) {
    match c {
        Some(c) => (c.offset, c.leader_epoch, c.metadata),
        None => (-1, -1, String::new()),
    }
}
