//! EndTxn (key 26), v0-3: commit or abort the producer's open transaction.
//! Answered once the outcome (PrepareCommit / PrepareAbort) is durable in
//! `__transaction_state`; the markers are written afterwards, and the next
//! transaction of the same producer waits (CONCURRENT_TRANSACTIONS) until
//! they are.

use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse};

use super::{txn_error, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: EndTxnRequest) -> Result<Reply, Error> {
    Ok(Reply::Later(Box::pin(async move {
        let ended = ctx
            .broker
            .txns
            .end_txn(
                &req.transactional_id.0,
                req.producer_id.0,
                req.producer_epoch,
                req.committed,
            )
            .await;
        let err = match ended {
            Ok(()) => NONE,
            Err(e) => {
                tracing::debug!(transactional_id = %req.transactional_id.0, error = %e, "EndTxn refused");
                txn_error(&e, ctx.version, 2)
            }
        };
        super::respond_or_log(&ctx, &EndTxnResponse::default().with_error_code(err))
    })))
}
