//! FindCoordinator (key 10), v0-4 (v4: batched keys).
//!
//! This single broker coordinates every group (key type 0). Transactions
//! have no coordinator yet: key type 1 is answered COORDINATOR_NOT_AVAILABLE,
//! which clients treat as "retry later".

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, NONE};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// `(error, message, node, host, port)` for one key.
fn answer(ctx: &Ctx, key_type: i8) -> (i16, Option<StrBytes>, i32, StrBytes, i32) {
    match key_type {
        KEY_TYPE_GROUP => (
            NONE,
            None,
            ctx.broker.node_id(),
            StrBytes::from_string(ctx.broker.advertised_host.clone()),
            i32::from(ctx.broker.advertised_port),
        ),
        KEY_TYPE_TRANSACTION => (
            code(ResponseError::CoordinatorNotAvailable),
            Some(StrBytes::from_static_str(
                "Sluice has no transaction coordinator yet",
            )),
            -1,
            StrBytes::default(),
            -1,
        ),
        other => (
            code(ResponseError::InvalidRequest),
            Some(StrBytes::from_string(format!(
                "unknown coordinator key type {other}: 0 (group) and 1 (transaction) exist"
            ))),
            -1,
            StrBytes::default(),
            -1,
        ),
    }
}

pub fn handle(ctx: &Ctx, req: FindCoordinatorRequest) -> Result<BytesMut, Error> {
    let (err, message, node, host, port) = answer(ctx, req.key_type);
    let resp = if ctx.version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            req.coordinator_keys
                .into_iter()
                .map(|key| {
                    Coordinator::default()
                        .with_key(StrBytes::from_string(key.to_string()))
                        .with_node_id(BrokerId(node))
                        .with_host(host.clone())
                        .with_port(port)
                        .with_error_code(err)
                        .with_error_message(message.clone())
                })
                .collect(),
        )
    } else {
        FindCoordinatorResponse::default()
            .with_error_code(err)
            .with_error_message(if ctx.version >= 1 { message } else { None })
            .with_node_id(BrokerId(node))
            .with_host(host)
            .with_port(port)
    };
    ctx.respond(&resp)
}
