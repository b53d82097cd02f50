//! CreatePartitions (key 37), v0-3: partitions can only grow; new
//! partitions are placed by the controller unless assignments are given.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, controller_error, controller_outcomes, Ctx, Error, Reply, NONE};
use crate::cluster::messages::ControllerRequest;

/// Topic, new partition count, and explicit replica lists if given.
type Growth = (String, i32, Option<Vec<Vec<i32>>>);

pub fn handle(ctx: Ctx, req: CreatePartitionsRequest) -> Result<Reply, Error> {
    let validate_only = req.validate_only;
    let wanted: Vec<Growth> = req
        .topics
        .into_iter()
        .map(|t| {
            let assignments = t.assignments.map(|a| {
                a.into_iter()
                    .map(|a| a.broker_ids.into_iter().map(|id| id.0).collect())
                    .collect()
            });
            (t.name.0.to_string(), t.count, assignments)
        })
        .collect();
    Ok(Reply::Later(Box::pin(async move {
        let mut results = Vec::new();
        for (name, count, assignments) in wanted {
            let r = CreatePartitionsTopicResult::default()
                .with_name(TopicName(StrBytes::from_string(name.clone())));
            let req = ControllerRequest::CreatePartitions {
                topic: name,
                count,
                assignments,
                validate_only,
            };
            results.push(match controller_outcomes(&ctx, req, 1).await.pop() {
                Some(Err(e)) => r
                    .with_error_code(code(controller_error(&e)))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
                _ => r.with_error_code(NONE),
            });
        }
        super::respond_or_log(
            &ctx,
            &CreatePartitionsResponse::default().with_results(results),
        )
    })))
}
