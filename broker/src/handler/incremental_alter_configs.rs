//! IncrementalAlterConfigs (key 44), v0-1: SET, DELETE, APPEND and SUBTRACT
//! on single topic configs.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, Reply, NONE};

const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// Configs whose value is a comma-separated list (APPEND/SUBTRACT apply).
const LIST_CONFIGS: &[&str] = &["cleanup.policy"];

pub fn handle(ctx: Ctx, req: IncrementalAlterConfigsRequest) -> Result<Reply, Error> {
    Ok(Reply::Later(Box::pin(async move {
        let mut responses = Vec::new();
        for res in req.resources {
            let r = AlterConfigsResourceResponse::default()
                .with_resource_type(res.resource_type)
                .with_resource_name(res.resource_name.clone());
            let ops = res.configs;
            let result = super::set_topic_overrides(
                &ctx,
                res.resource_type,
                &res.resource_name,
                |current| {
                    let mut next = current.clone();
                    for op in &ops {
                        let name = op.name.to_string();
                        let value = op.value.as_ref().map(|v| v.to_string());
                        match op.config_operation {
                            SET => {
                                next.insert(name, value.unwrap_or_default());
                            }
                            DELETE => {
                                next.remove(&name);
                            }
                            APPEND | SUBTRACT => {
                                if !LIST_CONFIGS.contains(&name.as_str()) {
                                    return Err((
                                        ResponseError::InvalidConfig,
                                        format!("{name} is not a list config; APPEND and SUBTRACT apply only to {LIST_CONFIGS:?}"),
                                    ));
                                }
                                let mut items: Vec<String> = next
                                    .get(&name)
                                    .map(|v| v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
                                    .unwrap_or_default();
                                for v in value.unwrap_or_default().split(',').map(str::trim).filter(|s| !s.is_empty()) {
                                    if op.config_operation == APPEND {
                                        if !items.iter().any(|i| i == v) {
                                            items.push(v.to_string());
                                        }
                                    } else {
                                        items.retain(|i| i != v);
                                    }
                                }
                                next.insert(name, items.join(","));
                            }
                            other => {
                                return Err((
                                    ResponseError::InvalidRequest,
                                    format!("unknown config operation {other}; use 0 SET, 1 DELETE, 2 APPEND or 3 SUBTRACT"),
                                ))
                            }
                        }
                    }
                    Ok(next)
                },
                req.validate_only,
            )
            .await;
            responses.push(match result {
                Ok(()) => r.with_error_code(NONE),
                Err((err, msg)) => r
                    .with_error_code(code(err))
                    .with_error_message(Some(StrBytes::from_string(msg))),
            });
        }
        super::respond_or_log(
            &ctx,
            &IncrementalAlterConfigsResponse::default().with_responses(responses),
        )
    })))
}
