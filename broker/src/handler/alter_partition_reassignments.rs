//! AlterPartitionReassignments (key 45), v0: move a partition's replicas to
//! other brokers (new replicas catch up, then the old ones are dropped), or
//! cancel a move with a null replica list.

use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{code, controller_error, controller_outcomes, Ctx, Error, Reply, NONE};
use crate::cluster::messages::ControllerRequest;

pub fn handle(ctx: Ctx, req: AlterPartitionReassignmentsRequest) -> Result<Reply, Error> {
    let wanted: Vec<(String, i32, Option<Vec<i32>>)> = req
        .topics
        .into_iter()
        .flat_map(|t| {
            let name = t.name.0.to_string();
            t.partitions.into_iter().map(move |p| {
                (
                    name.clone(),
                    p.partition_index,
                    p.replicas.map(|r| r.into_iter().map(|id| id.0).collect()),
                )
            })
        })
        .collect();
    Ok(Reply::Later(Box::pin(async move {
        let n = wanted.len();
        let outcomes = controller_outcomes(
            &ctx,
            ControllerRequest::AlterReassignments {
                reassignments: wanted.clone(),
            },
            n,
        )
        .await;
        let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
        for ((topic, partition, _), outcome) in wanted.into_iter().zip(outcomes) {
            let r = ReassignablePartitionResponse::default().with_partition_index(partition);
            let r = match outcome {
                Ok(()) => r.with_error_code(NONE),
                Err(e) => r
                    .with_error_code(code(controller_error(&e)))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            };
            match responses.last_mut() {
                Some(t) if *t.name.0 == *topic => t.partitions.push(r),
                _ => responses.push(
                    ReassignableTopicResponse::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(vec![r]),
                ),
            }
        }
        super::respond_or_log(
            &ctx,
            &AlterPartitionReassignmentsResponse::default()
                .with_error_code(NONE)
                .with_responses(responses),
        )
    })))
}
