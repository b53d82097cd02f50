//! DescribeTransactions (key 65), v0: the state of transactional ids this
//! broker coordinates (`kafka-transactions.sh describe`).

use bytes::BytesMut;
use kafka_protocol::messages::describe_transactions_response::{TopicData, TransactionState};
use kafka_protocol::messages::{
    DescribeTransactionsRequest, DescribeTransactionsResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{txn_error, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: DescribeTransactionsRequest) -> Result<BytesMut, Error> {
    let states = req
        .transactional_ids
        .iter()
        .map(|id| {
            let s = TransactionState::default().with_transactional_id(id.clone());
            match ctx.broker.txns.describe(&id.0) {
                Err(e) => s
                    .with_error_code(txn_error(&e, ctx.version, 0))
                    .with_transaction_state(StrBytes::default())
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
                Ok(m) => {
                    let mut topics: Vec<TopicData> = Vec::new();
                    for (t, p) in &m.partitions {
                        match topics.last_mut() {
                            Some(last) if last.topic.0.as_str() == t => last.partitions.push(*p),
                            _ => topics.push(
                                TopicData::default()
                                    .with_topic(TopicName(StrBytes::from_string(t.clone())))
                                    .with_partitions(vec![*p]),
                            ),
                        }
                    }
                    s.with_error_code(NONE)
                        .with_transaction_state(StrBytes::from_static_str(m.state.name()))
                        .with_transaction_timeout_ms(m.timeout_ms)
                        .with_transaction_start_time_ms(m.start_ms)
                        .with_producer_id(ProducerId(m.producer_id))
                        .with_producer_epoch(m.producer_epoch)
                        .with_topics(topics)
                }
            }
        })
        .collect();
    ctx.respond(&DescribeTransactionsResponse::default().with_transaction_states(states))
}
