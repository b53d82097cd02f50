//! Metadata (key 3), v0-12: every live broker, the cluster id, the
//! controller, and each topic's partitions with leader, leader epoch,
//! replicas, ISR and offline replicas, all from this broker's metadata
//! image. Unknown topics are created when auto-creation is on.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, Reply, NONE};
use crate::cluster::image::{MetadataImage, TopicImage, NO_LEADER};

/// `authorized_operations` when the client did not ask for them.
const OPS_NOT_REQUESTED: i32 = i32::MIN;

pub fn handle(ctx: Ctx, req: MetadataRequest) -> Result<Reply, Error> {
    // v0: an empty list means all topics; v1+: null means all.
    let wanted = match req.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.version == 0 => None,
        Some(t) => Some(t),
    };
    // v4+ lets the client opt out of auto-creation; earlier versions imply it.
    let auto_create = (ctx.version < 4 || req.allow_auto_topic_creation)
        && ctx.broker.config.auto_create_topics_enable;
    let image = ctx.broker.image();
    let missing: Vec<String> = match &wanted {
        Some(ts) if auto_create => ts
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| image.topic(n).is_none() && crate::topics::validate_name(n).is_ok())
            .collect(),
        _ => Vec::new(),
    };
    if missing.is_empty() {
        return Ok(Reply::Now(respond(&ctx, &image, wanted)?));
    }
    Ok(Reply::Later(Box::pin(async move {
        ctx.broker.auto_create(missing).await;
        let image = ctx.broker.image();
        respond(&ctx, &image, wanted).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode metadata response");
            BytesMut::new()
        })
    })))
}

fn respond(
    ctx: &Ctx,
    image: &MetadataImage,
    wanted: Option<Vec<kafka_protocol::messages::metadata_request::MetadataRequestTopic>>,
) -> Result<BytesMut, Error> {
    let topics = match wanted {
        None => image.topics.values().map(|t| describe(image, t)).collect(),
        Some(requested) => requested
            .into_iter()
            .map(|rt| {
                let found = match &rt.name {
                    Some(name) => image.topic(&name.0),
                    None => image.topic_by_id(rt.topic_id),
                };
                match found {
                    Some(t) => describe(image, t),
                    None => {
                        let err = match &rt.name {
                            Some(n) if crate::topics::validate_name(&n.0).is_err() => {
                                ResponseError::InvalidTopicException
                            }
                            Some(_) => ResponseError::UnknownTopicOrPartition,
                            None => ResponseError::UnknownTopicId,
                        };
                        MetadataResponseTopic::default()
                            .with_name(rt.name.clone())
                            .with_topic_id(rt.topic_id)
                            .with_error_code(code(err))
                            .with_topic_authorized_operations(OPS_NOT_REQUESTED)
                    }
                }
            })
            .collect(),
    };
    let b = &ctx.broker;
    let mut brokers: Vec<MetadataResponseBroker> = image
        .brokers
        .values()
        .filter(|r| !r.fenced)
        .map(|r| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(r.id))
                .with_host(StrBytes::from_string(r.host.clone()))
                .with_port(i32::from(r.port))
                .with_rack(r.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    if !brokers.iter().any(|r| r.node_id.0 == b.node_id()) {
        // Not registered yet (or fenced): clients still need this broker.
        brokers.push(
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.node_id()))
                .with_host(StrBytes::from_string(b.advertised_host.clone()))
                .with_port(i32::from(b.advertised_port))
                .with_rack(b.config.rack.clone().map(StrBytes::from_string)),
        );
    }
    let resp = MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(StrBytes::from_string(b.cluster_id())))
        .with_controller_id(BrokerId(controller_id(ctx, image)))
        .with_cluster_authorized_operations(OPS_NOT_REQUESTED)
        .with_topics(topics);
    ctx.respond(&resp)
}

/// The controller clients are told about: the quorum leader when it is a
/// live broker, else this broker (admin requests sent to any broker are
/// forwarded to the controller).
pub fn controller_id(ctx: &Ctx, image: &MetadataImage) -> i32 {
    ctx.broker
        .quorum
        .leader()
        .filter(|id| image.is_live(*id))
        .unwrap_or(ctx.broker.node_id())
}

fn describe(image: &MetadataImage, t: &TopicImage) -> MetadataResponseTopic {
    let partitions = t
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let offline = p.offline_replicas(image);
            let err = if p.leader == NO_LEADER {
                code(ResponseError::LeaderNotAvailable)
            } else {
                NONE
            };
            MetadataResponsePartition::default()
                .with_error_code(err)
                .with_partition_index(i32::try_from(i).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(p.leader))
                .with_leader_epoch(p.leader_epoch)
                .with_replica_nodes(p.replicas.iter().map(|r| BrokerId(*r)).collect())
                .with_isr_nodes(p.isr.iter().map(|r| BrokerId(*r)).collect())
                .with_offline_replicas(offline.into_iter().map(BrokerId).collect())
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(NONE)
        .with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
        .with_topic_id(t.id)
        .with_is_internal(t.is_internal())
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPS_NOT_REQUESTED)
}
