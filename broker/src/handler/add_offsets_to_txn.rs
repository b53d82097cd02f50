//! AddOffsetsToTxn (key 25), v0-3: the group's partition of
//! `__consumer_offsets` joins the producer's transaction, so that the
//! offsets it then commits with TxnOffsetCommit get the transaction's
//! marker.

use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::{code, txn_error, Ctx, Error, Reply, NONE};
use crate::coordinator::OFFSETS_TOPIC;

pub fn handle(ctx: Ctx, req: AddOffsetsToTxnRequest) -> Result<Reply, Error> {
    if req.group_id.0.is_empty() {
        let resp = AddOffsetsToTxnResponse::default()
            .with_error_code(code(kafka_protocol::error::ResponseError::InvalidGroupId));
        return Ok(Reply::Now(ctx.respond(&resp)?));
    }
    Ok(Reply::Later(Box::pin(async move {
        let partition = (
            OFFSETS_TOPIC.to_string(),
            ctx.broker.groups.partition_for(&req.group_id.0),
        );
        let added = ctx
            .broker
            .txns
            .add_partitions(
                &req.transactional_id.0,
                req.producer_id.0,
                req.producer_epoch,
                &[partition],
            )
            .await;
        let err = match added {
            Ok(()) => NONE,
            Err(e) => txn_error(&e, ctx.version, 2),
        };
        super::respond_or_log(
            &ctx,
            &AddOffsetsToTxnResponse::default().with_error_code(err),
        )
    })))
}
