//! CreateTopics (key 19), v2-7.

use std::collections::BTreeMap;

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, topic_error, Ctx, Error, NONE};
use crate::config::describe_topic;

pub fn handle(ctx: &Ctx, req: CreateTopicsRequest) -> Result<BytesMut, Error> {
    let topics = req
        .topics
        .into_iter()
        .map(|t| create_one(ctx, t, req.validate_only))
        .collect();
    ctx.respond(&CreateTopicsResponse::default().with_topics(topics))
}

fn failure(r: CreatableTopicResult, err: ResponseError, msg: String) -> CreatableTopicResult {
    r.with_error_code(code(err))
        .with_error_message(Some(StrBytes::from_string(msg)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

fn create_one(ctx: &Ctx, t: CreatableTopic, validate_only: bool) -> CreatableTopicResult {
    let b = &ctx.broker;
    let name = t.name.0.to_string();
    let r = CreatableTopicResult::default().with_name(t.name.clone());
    let live_brokers = 1;
    let (partitions, replication_factor) = if t.assignments.is_empty() {
        let partitions = if t.num_partitions == -1 {
            b.config.num_partitions
        } else {
            t.num_partitions
        };
        let rf = if t.replication_factor == -1 {
            b.config.default_replication_factor
        } else {
            t.replication_factor
        };
        (partitions, rf)
    } else {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return failure(
                r,
                ResponseError::InvalidRequest,
                "give either replica assignments or num_partitions and replication_factor, not both".into(),
            );
        }
        for a in &t.assignments {
            if a.broker_ids.iter().any(|id| id.0 != b.node_id()) {
                return failure(
                    r,
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "partition {} is assigned to brokers {:?}, but the only broker is {}",
                        a.partition_index,
                        a.broker_ids.iter().map(|id| id.0).collect::<Vec<_>>(),
                        b.node_id()
                    ),
                );
            }
        }
        let rf = t.assignments.first().map_or(1, |a| a.broker_ids.len());
        (
            i32::try_from(t.assignments.len()).unwrap_or(i32::MAX),
            i16::try_from(rf).unwrap_or(i16::MAX),
        )
    };
    if replication_factor < 1 || i32::from(replication_factor) > live_brokers {
        return failure(
            r,
            ResponseError::InvalidReplicationFactor,
            format!(
                "replication factor {replication_factor} is not possible: it must be between 1 and the number of live brokers ({live_brokers})"
            ),
        );
    }
    let configs: BTreeMap<String, String> = t
        .configs
        .into_iter()
        .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
        .collect();
    let result = if validate_only {
        b.topics
            .validate_create(&name, partitions, &configs)
            .map(|_| ())
    } else {
        b.topics
            .create(&name, partitions, configs.clone())
            .map(|t| {
                tracing::debug!(topic = %t.name, "created by CreateTopics");
            })
    };
    match result {
        Ok(()) => {
            let id = b.topics.get(&name).map(|t| t.id).unwrap_or_default();
            let entries = describe_topic(&b.config, &configs)
                .into_iter()
                .map(|e| {
                    CreatableTopicConfigs::default()
                        .with_name(StrBytes::from_string(e.name))
                        .with_value(e.value.map(StrBytes::from_string))
                        .with_read_only(e.read_only)
                        .with_config_source(e.source.kafka_id())
                        .with_is_sensitive(e.sensitive)
                })
                .collect();
            r.with_error_code(NONE)
                .with_topic_id(id)
                .with_num_partitions(partitions)
                .with_replication_factor(replication_factor)
                .with_configs((ctx.version >= 5).then_some(entries))
        }
        Err(e) => {
            let err_code = topic_error(&e);
            r.with_error_code(err_code)
                .with_error_message(Some(StrBytes::from_string(e.to_string())))
                .with_num_partitions(-1)
                .with_replication_factor(-1)
        }
    }
}
