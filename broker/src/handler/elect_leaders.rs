//! ElectLeaders (key 43), v0-2: preferred (type 0) or unclean (type 1)
//! leader election, done by the controller.

use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, controller_error, controller_outcomes, Ctx, Error, Reply, NONE};
use crate::cluster::messages::ControllerRequest;

const UNCLEAN: i8 = 1;

pub fn handle(ctx: Ctx, req: ElectLeadersRequest) -> Result<Reply, Error> {
    let unclean = ctx.version >= 1 && req.election_type == UNCLEAN;
    let wanted: Option<Vec<(String, i32)>> = req.topic_partitions.map(|tps| {
        tps.into_iter()
            .flat_map(|tp| {
                let name = tp.topic.0.to_string();
                tp.partitions.into_iter().map(move |p| (name.clone(), p))
            })
            .collect()
    });
    Ok(Reply::Later(Box::pin(async move {
        // All partitions: ask for each one so every result can be reported.
        let targets: Vec<(String, i32)> = match wanted {
            Some(w) => w,
            None => ctx
                .broker
                .image()
                .partitions()
                .map(|(t, i, _)| (t.to_string(), i))
                .collect(),
        };
        let n = targets.len();
        let outcomes = controller_outcomes(
            &ctx,
            ControllerRequest::ElectLeaders {
                partitions: Some(targets.clone()),
                unclean,
            },
            n,
        )
        .await;
        let mut results: Vec<ReplicaElectionResult> = Vec::new();
        for ((topic, partition), outcome) in targets.into_iter().zip(outcomes) {
            let pr = match outcome {
                Ok(()) => PartitionResult::default()
                    .with_partition_id(partition)
                    .with_error_code(NONE),
                Err(e) => PartitionResult::default()
                    .with_partition_id(partition)
                    .with_error_code(code(controller_error(&e)))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            };
            match results.last_mut() {
                Some(r) if *r.topic.0 == *topic => r.partition_result.push(pr),
                _ => results.push(
                    ReplicaElectionResult::default()
                        .with_topic(TopicName(StrBytes::from_string(topic)))
                        .with_partition_result(vec![pr]),
                ),
            }
        }
        super::respond_or_log(
            &ctx,
            &ElectLeadersResponse::default()
                .with_error_code(NONE)
                .with_replica_election_results(results),
        )
    })))
}
