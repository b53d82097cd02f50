//! Metadata (key 3), v0-12: brokers, cluster id, controller, and each
//! topic's partitions with leader, replicas and ISR. Auto-creates topics.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, topic_error, Ctx, Error, NONE};
use crate::topics::Topic;

/// `authorized_operations` when the client did not ask for them.
const OPS_NOT_REQUESTED: i32 = i32::MIN;

pub fn handle(ctx: &Ctx, req: MetadataRequest) -> Result<BytesMut, Error> {
    let b = &ctx.broker;
    // v0: an empty list means all topics; v1+: null means all.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.version == 0 => None,
        Some(t) => Some(t),
    };
    // v4+ lets the client opt out of auto-creation; earlier versions imply it.
    let auto_create = ctx.version < 4 || req.allow_auto_topic_creation;
    let topics = match wanted {
        None => b.topics.all().iter().map(|t| describe(ctx, t)).collect(),
        Some(requested) => requested
            .into_iter()
            .map(|rt| {
                let by_name = rt.name.as_ref().map(|n| n.0.to_string());
                let found = match &by_name {
                    Some(name) => b.topic(name, auto_create),
                    None => Ok(b.topics.get_by_id(rt.topic_id)),
                };
                match found {
                    Ok(Some(t)) => describe(ctx, &t),
                    Ok(None) => MetadataResponseTopic::default()
                        .with_name(rt.name.clone())
                        .with_topic_id(rt.topic_id)
                        .with_error_code(code(if by_name.is_some() {
                            ResponseError::UnknownTopicOrPartition
                        } else {
                            ResponseError::UnknownTopicId
                        }))
                        .with_topic_authorized_operations(OPS_NOT_REQUESTED),
                    Err(e) => MetadataResponseTopic::default()
                        .with_name(rt.name.clone())
                        .with_error_code(topic_error(&e))
                        .with_topic_authorized_operations(OPS_NOT_REQUESTED),
                }
            })
            .collect(),
    };
    let resp = MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(b.node_id()))
            .with_host(StrBytes::from_string(b.advertised_host.clone()))
            .with_port(i32::from(b.advertised_port))])
        .with_cluster_id(Some(StrBytes::from_string(b.cluster_id.clone())))
        .with_controller_id(BrokerId(b.node_id()))
        .with_cluster_authorized_operations(OPS_NOT_REQUESTED)
        .with_topics(topics);
    ctx.respond(&resp)
}

fn describe(ctx: &Ctx, t: &Topic) -> MetadataResponseTopic {
    let node = BrokerId(ctx.broker.node_id());
    let partitions = (0..t.partition_count())
        .map(|p| {
            MetadataResponsePartition::default()
                .with_error_code(NONE)
                .with_partition_index(p)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(StrBytes::from_string(t.name.to_string()))))
        .with_topic_id(t.id)
        .with_is_internal(t.is_internal())
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
}
