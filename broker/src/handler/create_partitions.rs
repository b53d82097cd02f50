//! CreatePartitions (key 37), v0-3: partitions can only grow.

use bytes::BytesMut;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{topic_error, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: CreatePartitionsRequest) -> Result<BytesMut, Error> {
    let results = req
        .topics
        .into_iter()
        .map(|t| {
            let r = CreatePartitionsTopicResult::default().with_name(t.name.clone());
            match ctx
                .broker
                .topics
                .create_partitions(&t.name.0, t.count, req.validate_only)
            {
                Ok(()) => r.with_error_code(NONE),
                Err(e) => r
                    .with_error_code(topic_error(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            }
        })
        .collect();
    ctx.respond(&CreatePartitionsResponse::default().with_results(results))
}
