//! AlterConfigs (key 33), v0-2: replaces a topic's whole set of overrides.
//! Broker configs are static (YAML, flags, env) and cannot be altered.

use std::collections::BTreeMap;

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: AlterConfigsRequest) -> Result<Reply, Error> {
    Ok(Reply::Later(Box::pin(async move {
        let mut responses = Vec::new();
        for res in req.resources {
            let overrides: BTreeMap<String, String> = res
                .configs
                .into_iter()
                .filter_map(|c| c.value.map(|v| (c.name.to_string(), v.to_string())))
                .collect();
            let r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let outcome = super::set_topic_overrides(
                &ctx,
                res.resource_type,
                &res.resource_name,
                |_| Ok(overrides),
                req.validate_only,
            )
            .await;
            responses.push(match outcome {
                Ok(()) => r.with_error_code(NONE),
                Err((err, msg)) => r
                    .with_error_code(code(err))
                    .with_error_message(Some(StrBytes::from_string(msg))),
            });
        }
        super::respond_or_log(
            &ctx,
            &AlterConfigsResponse::default().with_responses(responses),
        )
    })))
}
