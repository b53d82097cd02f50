//! FindCoordinator (key 10), v0-4.
//!
//! Group and transaction coordinators do not exist yet, so every key is
//! answered COORDINATOR_NOT_AVAILABLE, which clients treat as "retry later".
//! The API is advertised anyway because librdkafka only enables LZ4
//! compression when a broker advertises it.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error};

const NOT_YET: &str = "Sluice has no group or transaction coordinator yet";

pub fn handle(ctx: &Ctx, req: FindCoordinatorRequest) -> Result<BytesMut, Error> {
    let err = code(ResponseError::CoordinatorNotAvailable);
    let message = Some(StrBytes::from_static_str(NOT_YET));
    let resp = if ctx.version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            req.coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(key)
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(err)
                        .with_error_message(message.clone())
                })
                .collect(),
        )
    } else {
        FindCoordinatorResponse::default()
            .with_error_code(err)
            .with_error_message(if ctx.version >= 1 { message } else { None })
            .with_node_id(BrokerId(-1))
            .with_port(-1)
    };
    ctx.respond(&resp)
}
