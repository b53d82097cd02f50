//! FindCoordinator (key 10), v0-4 (v4: batched keys).
//!
//! A group's coordinator is the leader of its `__consumer_offsets`
//! partition (key type 0), a transactional id's the leader of its
//! `__transaction_state` partition (key type 1). While that partition has
//! no leader (or does not exist yet) the answer is COORDINATOR_NOT_AVAILABLE,
//! and clients retry. `__transaction_state` is created at the first
//! transaction key asked for, as Kafka does.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, Reply, NONE};
use crate::coordinator::{OFFSETS_TOPIC, TXN_TOPIC};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// `(error, message, node, host, port)` for one key.
fn answer(ctx: &Ctx, key_type: i8, key: &str) -> (i16, Option<StrBytes>, i32, StrBytes, i32) {
    let image = ctx.broker.image();
    let (topic, index) = match key_type {
        KEY_TYPE_GROUP => (OFFSETS_TOPIC, ctx.broker.groups.partition_for(key)),
        KEY_TYPE_TRANSACTION => (TXN_TOPIC, ctx.broker.txns.partition_for(key)),
        other => {
            return (
                code(ResponseError::InvalidRequest),
                Some(StrBytes::from_string(format!(
                    "unknown coordinator key type {other}: 0 (group) and 1 (transaction) exist"
                ))),
                -1,
                StrBytes::default(),
                -1,
            )
        }
    };
    let leader = image
        .partition(topic, index)
        .map(|p| p.leader)
        .and_then(|id| image.brokers.get(&id).filter(|b| !b.fenced));
    match leader {
        Some(b) => (
            NONE,
            None,
            b.id,
            StrBytes::from_string(b.host.clone()),
            i32::from(b.port),
        ),
        None => (
            code(ResponseError::CoordinatorNotAvailable),
            Some(StrBytes::from_string(format!(
                "partition {index} of {topic} has no leader yet"
            ))),
            -1,
            StrBytes::default(),
            -1,
        ),
    }
}

pub fn handle(ctx: Ctx, req: FindCoordinatorRequest) -> Result<Reply, Error> {
    let txn_topic_missing =
        req.key_type == KEY_TYPE_TRANSACTION && ctx.broker.image().topic(TXN_TOPIC).is_none();
    if !txn_topic_missing {
        return Ok(Reply::Now(respond(&ctx, req)?));
    }
    Ok(Reply::Later(Box::pin(async move {
        ctx.broker.ensure_txn_topic().await;
        respond(&ctx, req).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode FindCoordinator response");
            BytesMut::new()
        })
    })))
}

fn respond(ctx: &Ctx, req: FindCoordinatorRequest) -> Result<BytesMut, Error> {
    let resp = if ctx.version >= 4 {
        FindCoordinatorResponse::default().with_coordinators(
            req.coordinator_keys
                .into_iter()
                .map(|key| {
                    let (err, message, node, host, port) = answer(ctx, req.key_type, &key);
                    Coordinator::default()
                        .with_key(StrBytes::from_string(key.to_string()))
                        .with_node_id(BrokerId(node))
                        .with_host(host.clone())
                        .with_port(port)
                        .with_error_code(err)
                        .with_error_message(message)
                })
                .collect(),
        )
    } else {
        let (err, message, node, host, port) = answer(ctx, req.key_type, &req.key);
        FindCoordinatorResponse::default()
            .with_error_code(err)
            .with_error_message(if ctx.version >= 1 { message } else { None })
            .with_node_id(BrokerId(node))
            .with_host(host)
            .with_port(port)
    };
    ctx.respond(&resp)
}
