//! ListTransactions (key 66), v0-1: the transactional ids this broker
//! coordinates, filtered by state names, producer ids and (v1) how long the
//! transaction has been open (`kafka-transactions.sh list` asks every
//! broker). Unknown state names are echoed back in `unknown_state_filters`.

use bytes::BytesMut;
use kafka_protocol::messages::list_transactions_response::TransactionState;
use kafka_protocol::messages::{
    ListTransactionsRequest, ListTransactionsResponse, ProducerId, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Error, NONE};
use crate::broker::now_ms;
use crate::coordinator::txn::TxnState;

pub fn handle(ctx: &Ctx, req: ListTransactionsRequest) -> Result<BytesMut, Error> {
    let mut states = Vec::new();
    let mut unknown = Vec::new();
    for f in &req.state_filters {
        match TxnState::from_name(f) {
            Some(s) => states.push(s),
            None => unknown.push(f.clone()),
        }
    }
    let now = now_ms();
    let listed = ctx
        .broker
        .txns
        .list()
        .into_iter()
        .filter(|(_, m)| req.state_filters.is_empty() || states.contains(&m.state))
        .filter(|(_, m)| {
            req.producer_id_filters.is_empty()
                || req.producer_id_filters.contains(&ProducerId(m.producer_id))
        })
        .filter(|(_, m)| {
            ctx.version < 1
                || req.duration_filter < 0
                || (m.start_ms >= 0 && now - m.start_ms >= req.duration_filter)
        })
        .map(|(id, m)| {
            TransactionState::default()
                .with_transactional_id(TransactionalId(StrBytes::from_string(id)))
                .with_producer_id(ProducerId(m.producer_id))
                .with_transaction_state(StrBytes::from_static_str(m.state.name()))
        })
        .collect();
    ctx.respond(
        &ListTransactionsResponse::default()
            .with_error_code(NONE)
            .with_unknown_state_filters(unknown)
            .with_transaction_states(listed),
    )
}
