//! WriteTxnMarkers (key 27), v1: sent by a transaction coordinator to the
//! leaders of a transaction's partitions. Each marker is appended as a
//! control batch and answered once replicated to the ISR; a marker in
//! `__consumer_offsets` also completes the transaction's offsets there.
//! (v0 is identical but not decodable by the protocol library; Kafka 4
//! dropped it too.)

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, Reply, NONE};
use crate::coordinator::txn::markers::{self, Marker};

pub fn handle(ctx: Ctx, req: WriteTxnMarkersRequest) -> Result<Reply, Error> {
    Ok(Reply::Later(Box::pin(async move {
        let mut out = Vec::with_capacity(req.markers.len());
        for m in &req.markers {
            let marker = Marker {
                producer_id: m.producer_id.0,
                producer_epoch: m.producer_epoch,
                commit: m.transaction_result,
                coordinator_epoch: m.coordinator_epoch,
                partitions: m
                    .topics
                    .iter()
                    .flat_map(|t| {
                        t.partition_indexes
                            .iter()
                            .map(|p| (t.name.0.to_string(), *p))
                    })
                    .collect(),
            };
            let results = markers::write_local(&ctx.broker, &marker).await;
            let mut topics: Vec<WritableTxnMarkerTopicResult> = Vec::new();
            for ((topic, index), result) in results {
                let r = WritableTxnMarkerPartitionResult::default()
                    .with_partition_index(index)
                    .with_error_code(result.err().map_or(NONE, code));
                match topics.iter_mut().find(|t| t.name.0.as_str() == topic) {
                    Some(t) => t.partitions.push(r),
                    None => topics.push(
                        WritableTxnMarkerTopicResult::default()
                            .with_name(TopicName(StrBytes::from_string(topic)))
                            .with_partitions(vec![r]),
                    ),
                }
            }
            out.push(
                WritableTxnMarkerResult::default()
                    .with_producer_id(m.producer_id)
                    .with_topics(topics),
            );
        }
        super::respond_or_log(&ctx, &WriteTxnMarkersResponse::default().with_markers(out))
    })))
}
