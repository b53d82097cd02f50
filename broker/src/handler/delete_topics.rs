//! DeleteTopics (key 20), v1-6: by name (v1-5) or by name or id (v6).

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, topic_error, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: DeleteTopicsRequest) -> Result<BytesMut, Error> {
    let wanted: Vec<(Option<TopicName>, uuid::Uuid)> = if ctx.version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name, t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n), uuid::Uuid::nil()))
            .collect()
    };
    let b = &ctx.broker;
    let responses = wanted
        .into_iter()
        .map(|(name, id)| {
            let topic = match &name {
                Some(n) => b.topics.get(&n.0),
                None => b.topics.get_by_id(id),
            };
            let r = DeletableTopicResult::default()
                .with_name(name.clone())
                .with_topic_id(id);
            let Some(topic) = topic else {
                let err = if name.is_some() {
                    ResponseError::UnknownTopicOrPartition
                } else {
                    ResponseError::UnknownTopicId
                };
                return r.with_error_code(code(err));
            };
            let r = r
                .with_name(Some(TopicName(StrBytes::from_string(
                    topic.name.to_string(),
                ))))
                .with_topic_id(topic.id);
            match b.topics.delete(&topic.name) {
                Ok(()) => r.with_error_code(NONE),
                Err(e) => r
                    .with_error_code(topic_error(&e))
                    .with_error_message(Some(StrBytes::from_string(e.to_string()))),
            }
        })
        .collect();
    ctx.respond(&DeleteTopicsResponse::default().with_responses(responses))
}
