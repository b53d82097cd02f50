//! ListPartitionReassignments (key 46), v0: partitions whose replicas are
//! being moved, from the metadata image.

use bytes::BytesMut;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    BrokerId, ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: ListPartitionReassignmentsRequest) -> Result<BytesMut, Error> {
    let image = ctx.broker.image();
    let ids = |v: &[i32]| v.iter().map(|id| BrokerId(*id)).collect::<Vec<_>>();
    let wanted = |topic: &str, index: i32| match &req.topics {
        None => true,
        Some(ts) => ts
            .iter()
            .any(|t| *t.name.0 == *topic && t.partition_indexes.contains(&index)),
    };
    let mut topics: Vec<OngoingTopicReassignment> = Vec::new();
    for (topic, index, p) in image.partitions() {
        if (p.adding.is_empty() && p.removing.is_empty()) || !wanted(topic, index) {
            continue;
        }
        let ongoing = OngoingPartitionReassignment::default()
            .with_partition_index(index)
            .with_replicas(ids(&p.replicas))
            .with_adding_replicas(ids(&p.adding))
            .with_removing_replicas(ids(&p.removing));
        match topics.last_mut() {
            Some(t) if *t.name.0 == *topic => t.partitions.push(ongoing),
            _ => topics.push(
                OngoingTopicReassignment::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                    .with_partitions(vec![ongoing]),
            ),
        }
    }
    ctx.respond(
        &ListPartitionReassignmentsResponse::default()
            .with_error_code(NONE)
            .with_topics(topics),
    )
}
