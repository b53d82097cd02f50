//! InitProducerId (key 22), v0-5, for idempotent producers (no
//! transactional id): a cluster-unique producer id with epoch 0, or, when a
//! producer asks with its current id and epoch (v3+, KIP-360), the same id
//! with the epoch bumped so it can reset its sequence numbers. A producer id
//! whose epoch would overflow gets a new id.
//!
//! Transactional ids need the transaction coordinator, which does not exist
//! yet: they are answered COORDINATOR_NOT_AVAILABLE, as FindCoordinator
//! answers for transaction keys.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{code, controller_error, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: InitProducerIdRequest) -> Result<Reply, Error> {
    if req.transactional_id.is_some() {
        let resp = InitProducerIdResponse::default()
            .with_error_code(code(ResponseError::CoordinatorNotAvailable))
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
        return Ok(Reply::Now(ctx.respond(&resp)?));
    }
    let bump = ctx.version >= 3
        && req.producer_id.0 >= 0
        && req.producer_epoch >= 0
        && req.producer_epoch < i16::MAX - 1;
    if bump {
        let resp = InitProducerIdResponse::default()
            .with_error_code(NONE)
            .with_producer_id(req.producer_id)
            .with_producer_epoch(req.producer_epoch + 1);
        return Ok(Reply::Now(ctx.respond(&resp)?));
    }
    Ok(Reply::Later(Box::pin(async move {
        let resp = match ctx.broker.new_producer_id().await {
            Ok(id) => InitProducerIdResponse::default()
                .with_error_code(NONE)
                .with_producer_id(ProducerId(id))
                .with_producer_epoch(0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot allocate a producer id");
                InitProducerIdResponse::default()
                    .with_error_code(code(controller_error(&e)))
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
            }
        };
        super::respond_or_log(&ctx, &resp)
    })))
}
