//! CreateTopics (key 19), v2-7: validated and placed by the controller.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, controller_error, controller_outcomes, Ctx, Error, Reply, NONE};
use crate::cluster::messages::{ControllerRequest, NewTopic};
use crate::config::describe_topic;

pub fn handle(ctx: Ctx, req: CreateTopicsRequest) -> Result<Reply, Error> {
    let topics: Vec<NewTopic> = req
        .topics
        .into_iter()
        .map(|t| {
            let assignments = (!t.assignments.is_empty()).then(|| {
                let mut a: Vec<_> = t.assignments.into_iter().collect();
                a.sort_by_key(|a| a.partition_index);
                a.into_iter()
                    .map(|a| a.broker_ids.into_iter().map(|id| id.0).collect())
                    .collect()
            });
            NewTopic {
                name: t.name.0.to_string(),
                partitions: t.num_partitions,
                replication_factor: t.replication_factor,
                assignments,
                configs: t
                    .configs
                    .into_iter()
                    .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
                    .collect::<BTreeMap<_, _>>(),
            }
        })
        .collect();
    let validate_only = req.validate_only;
    Ok(Reply::Later(Box::pin(async move {
        let n = topics.len();
        let outcomes = controller_outcomes(
            &ctx,
            ControllerRequest::CreateTopics {
                topics: topics.clone(),
                validate_only,
            },
            n,
        )
        .await;
        let image = ctx.broker.image();
        let results = topics
            .into_iter()
            .zip(outcomes)
            .map(|(t, outcome)| {
                let r = CreatableTopicResult::default()
                    .with_name(TopicName(StrBytes::from_string(t.name.clone())));
                match outcome {
                    Err(e) => r
                        .with_error_code(code(controller_error(&e)))
                        .with_error_message(Some(StrBytes::from_string(e.to_string())))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                    Ok(()) => {
                        let created = image.topic(&t.name);
                        let partitions = created.map_or(
                            if t.partitions == -1 {
                                ctx.broker.config.num_partitions
                            } else {
                                t.partitions
                            },
                            |c| i32::try_from(c.partitions.len()).unwrap_or(i32::MAX),
                        );
                        let rf = created.and_then(|c| c.partitions.first()).map_or(
                            if t.replication_factor == -1 {
                                ctx.broker.config.default_replication_factor
                            } else {
                                t.replication_factor
                            },
                            |p| i16::try_from(p.replicas.len()).unwrap_or(i16::MAX),
                        );
                        let entries = describe_topic(&ctx.broker.config, &t.configs)
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
                            .with_topic_id(created.map(|c| c.id).unwrap_or_default())
                            .with_num_partitions(partitions)
                            .with_replication_factor(rf)
                            .with_configs((ctx.version >= 5).then_some(entries))
                    }
                }
            })
            .collect();
        super::respond_or_log(&ctx, &CreateTopicsResponse::default().with_topics(results))
    })))
}
