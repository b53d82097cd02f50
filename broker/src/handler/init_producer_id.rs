//! InitProducerId (key 22), v0-5.
//!
//! Without a transactional id (idempotent producers): a cluster-unique
//! producer id with epoch 0, or, when a producer asks with its current id
//! and epoch (v3+, KIP-360), the same id with the epoch bumped so it can
//! reset its sequence numbers. A producer id whose epoch would overflow gets
//! a new id.
//!
//! With a transactional id: the transaction coordinator (this broker must
//! lead the id's partition of `__transaction_state`) answers with the id's
//! producer id and a new epoch, fencing older producers of the same id.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::{code, controller_error, txn_error, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: InitProducerIdRequest) -> Result<Reply, Error> {
    if let Some(id) = req.transactional_id.clone() {
        return Ok(Reply::Later(Box::pin(async move {
            let expected = (ctx.version >= 3 && req.producer_id.0 >= 0)
                .then_some((req.producer_id.0, req.producer_epoch));
            let result = ctx
                .broker
                .txns
                .init_producer_id(&id.0, req.transaction_timeout_ms, expected)
                .await;
            let resp = match result {
                Ok((pid, epoch)) => InitProducerIdResponse::default()
                    .with_error_code(NONE)
                    .with_producer_id(ProducerId(pid))
                    .with_producer_epoch(epoch),
                Err(e) => {
                    tracing::debug!(transactional_id = %id.0, error = %e, "InitProducerId refused");
                    InitProducerIdResponse::default()
                        .with_error_code(txn_error(&e, ctx.version, 4))
                        .with_producer_id(ProducerId(-1))
                        .with_producer_epoch(-1)
                }
            };
            super::respond_or_log(&ctx, &resp)
        })));
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
