//! DescribeConfigs (key 32), v1-4: topic configs with their sources and
//! synonyms, and the broker's static configs.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, NONE};
use crate::config::{describe_topic, ConfigEntry};

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

pub fn handle(ctx: &Ctx, req: DescribeConfigsRequest) -> Result<BytesMut, Error> {
    let b = &ctx.broker;
    let results = req
        .resources
        .into_iter()
        .map(|res| {
            let r = DescribeConfigsResult::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let name = res.resource_name.to_string();
            let entries = match res.resource_type {
                RESOURCE_TOPIC => match b.image().topic(&name) {
                    Some(t) => describe_topic(&b.config, &t.configs),
                    None => {
                        return r
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "unknown topic '{name}'"
                            ))))
                    }
                },
                RESOURCE_BROKER if name.is_empty() || name == b.node_id().to_string() => {
                    b.config.broker_entries()
                }
                RESOURCE_BROKER => {
                    return r
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "this is broker {}, not broker {name}",
                            b.node_id()
                        ))))
                }
                other => {
                    return r
                        .with_error_code(code(ResponseError::InvalidRequest))
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "resource type {other} is not supported; use 2 (topic) or 4 (broker)"
                        ))))
                }
            };
            let keys = res
                .configuration_keys
                .map(|k| k.into_iter().map(|s| s.to_string()).collect::<Vec<_>>());
            let configs = entries
                .into_iter()
                .filter(|e| keys.as_ref().is_none_or(|k| k.contains(&e.name)))
                .map(|e| entry(e, req.include_synonyms, req.include_documentation))
                .collect();
            r.with_error_code(NONE).with_configs(configs)
        })
        .collect();
    ctx.respond(&DescribeConfigsResponse::default().with_results(results))
}

fn entry(e: ConfigEntry, synonyms: bool, docs: bool) -> DescribeConfigsResourceResult {
    let synonyms = if synonyms {
        e.synonyms
            .into_iter()
            .map(|(name, value, source)| {
                DescribeConfigsSynonym::default()
                    .with_name(StrBytes::from_string(name))
                    .with_value(value.map(StrBytes::from_string))
                    .with_source(source.kafka_id())
            })
            .collect()
    } else {
        Vec::new()
    };
    DescribeConfigsResourceResult::default()
        .with_name(StrBytes::from_string(e.name))
        .with_value(e.value.map(StrBytes::from_string))
        .with_read_only(e.read_only)
        .with_config_source(e.source.kafka_id())
        .with_is_sensitive(e.sensitive)
        .with_synonyms(synonyms)
        .with_config_type(e.config_type.kafka_id())
        .with_documentation(docs.then(|| StrBytes::from_string(e.doc.to_string())))
}
