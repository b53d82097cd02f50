//! DeleteRecords (key 21), v0-2: moves a partition's log start offset.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{code, log_error, Ctx, Error, NONE};

/// An offset of -1 means "up to the high watermark".
const HIGH_WATERMARK: i64 = -1;

pub fn handle(ctx: &Ctx, req: DeleteRecordsRequest) -> Result<BytesMut, Error> {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let r = DeleteRecordsPartitionResult::default()
                        .with_partition_index(p.partition_index)
                        .with_low_watermark(-1);
                    let partition =
                        match super::leader_replica(ctx, &t.name.0, p.partition_index, -1) {
                            Ok(p) => p,
                            Err(e) => return r.with_error_code(code(e)),
                        };
                    let hw = partition.high_watermark();
                    let offset = if p.offset == HIGH_WATERMARK {
                        hw
                    } else {
                        p.offset
                    };
                    if offset < 0 || offset > hw {
                        return r.with_error_code(code(ResponseError::OffsetOutOfRange));
                    }
                    match partition.with_log(|log| log.delete_records_before(offset)) {
                        Ok(low) => r.with_error_code(NONE).with_low_watermark(low),
                        Err(e) => r.with_error_code(log_error(&e)),
                    }
                })
                .collect();
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ctx.respond(&DeleteRecordsResponse::default().with_topics(topics))
}
