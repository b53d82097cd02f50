//! ListOffsets (key 2), v1-7: earliest (-2), latest (-1), max timestamp (-3)
//! and the first offset at or after a timestamp. With `read_committed`
//! (v2+), latest is the last stable offset.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{code, log_error, Ctx, Error, NONE};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub fn handle(ctx: &Ctx, req: ListOffsetsRequest) -> Result<BytesMut, Error> {
    let read_committed = req.isolation_level == 1;
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let partitions = t
            .partitions
            .into_iter()
            .map(|p| {
                let r = ListOffsetsPartitionResponse::default()
                    .with_partition_index(p.partition_index)
                    .with_timestamp(-1)
                    .with_offset(-1)
                    .with_leader_epoch(-1);
                let partition = match super::leader_replica(
                    ctx,
                    &t.name.0,
                    p.partition_index,
                    p.current_leader_epoch,
                ) {
                    Ok(p) => p,
                    Err(e) => return r.with_error_code(code(e)),
                };
                let epoch = partition.leader_epoch();
                let found = match p.timestamp {
                    LATEST if read_committed => Ok(Some((partition.last_stable_offset(), -1))),
                    LATEST => Ok(Some((partition.high_watermark(), -1))),
                    EARLIEST => Ok(Some((partition.log_start_offset(), -1))),
                    MAX_TIMESTAMP if ctx.version >= 7 => {
                        partition.with_log(|log| log.max_timestamp())
                    }
                    ts if ts >= 0 => partition.with_log(|log| log.offset_for_timestamp(ts)),
                    _ => {
                        return r.with_error_code(code(ResponseError::InvalidRequest));
                    }
                };
                match found {
                    Ok(Some((offset, timestamp))) => r
                        .with_error_code(NONE)
                        .with_offset(offset)
                        .with_timestamp(timestamp)
                        .with_leader_epoch(if ctx.version >= 4 { epoch } else { -1 }),
                    // No record at or after the timestamp: Kafka answers -1.
                    Ok(None) => r.with_error_code(NONE),
                    Err(e) => r.with_error_code(log_error(&e)),
                }
            })
            .collect();
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ctx.respond(&ListOffsetsResponse::default().with_topics(topics))
}
