//! AddPartitionsToTxn (key 24), v0-3: partitions join the producer's open
//! transaction before it writes to them. Unknown partitions are refused
//! (UNKNOWN_TOPIC_OR_PARTITION) and the others of the request are then not
//! added (OPERATION_NOT_ATTEMPTED), as Kafka does. v4+ (KIP-890, batched
//! and broker-verified) is not offered.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName};

use super::{code, txn_error, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: AddPartitionsToTxnRequest) -> Result<Reply, Error> {
    let image = ctx.broker.image();
    let mut partitions = Vec::new();
    let mut unknown = Vec::new();
    for t in &req.v3_and_below_topics {
        for &p in &t.partitions {
            let key = (t.name.0.to_string(), p);
            if image.partition(&t.name.0, p).is_some() {
                partitions.push(key);
            } else {
                unknown.push(key);
            }
        }
    }
    drop(image);
    Ok(Reply::Later(Box::pin(async move {
        let result: Result<(), i16> = if unknown.is_empty() {
            ctx.broker
                .txns
                .add_partitions(
                    &req.v3_and_below_transactional_id.0,
                    req.v3_and_below_producer_id.0,
                    req.v3_and_below_producer_epoch,
                    &partitions,
                )
                .await
                .map_err(|e| txn_error(&e, ctx.version, 2))
        } else {
            Err(code(ResponseError::OperationNotAttempted))
        };
        let mut topics: Vec<AddPartitionsToTxnTopicResult> = Vec::new();
        let all = partitions
            .iter()
            .map(|p| (p, result.err().unwrap_or(NONE)))
            .chain(
                unknown
                    .iter()
                    .map(|p| (p, code(ResponseError::UnknownTopicOrPartition))),
            );
        for ((topic, index), err) in all {
            let r = AddPartitionsToTxnPartitionResult::default()
                .with_partition_index(*index)
                .with_partition_error_code(err);
            match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                Some(t) => t.results_by_partition.push(r),
                None => topics.push(
                    AddPartitionsToTxnTopicResult::default()
                        .with_name(TopicName(topic.clone().into()))
                        .with_results_by_partition(vec![r]),
                ),
            }
        }
        let resp = AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(topics);
        super::respond_or_log(&ctx, &resp)
    })))
}
