//! DeleteTopics (key 20), v1-6: by name (v1-5) or by name or id (v6).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, controller_error, controller_outcomes, Ctx, Error, Reply, NONE};
use crate::cluster::messages::ControllerRequest;

pub fn handle(ctx: Ctx, req: DeleteTopicsRequest) -> Result<Reply, Error> {
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
    // Fresh strings: the request's are views of its frame.
    let wanted: Vec<(Option<String>, uuid::Uuid)> = wanted
        .into_iter()
        .map(|(n, id)| (n.map(|n| n.0.to_string()), id))
        .collect();
    Ok(Reply::Later(Box::pin(async move {
        let image = ctx.broker.image();
        let mut responses: Vec<DeletableTopicResult> = Vec::new();
        let mut names = Vec::new();
        let mut slots = Vec::new();
        for (name, id) in wanted {
            let found = match &name {
                Some(n) => image.topic(n),
                None => image.topic_by_id(id),
            };
            let r = DeletableTopicResult::default()
                .with_name(name.clone().map(|n| TopicName(StrBytes::from_string(n))))
                .with_topic_id(id);
            match found {
                None => {
                    let err = if name.is_some() {
                        ResponseError::UnknownTopicOrPartition
                    } else {
                        ResponseError::UnknownTopicId
                    };
                    responses.push(r.with_error_code(code(err)));
                }
                Some(t) => {
                    slots.push(responses.len());
                    names.push(t.name.clone());
                    responses.push(
                        r.with_name(Some(TopicName(StrBytes::from_string(t.name.clone()))))
                            .with_topic_id(t.id)
                            .with_error_code(NONE),
                    );
                }
            }
        }
        if !names.is_empty() {
            let n = names.len();
            let outcomes =
                controller_outcomes(&ctx, ControllerRequest::DeleteTopics { names }, n).await;
            for (slot, outcome) in slots.into_iter().zip(outcomes) {
                if let (Some(r), Err(e)) = (responses.get_mut(slot), outcome) {
                    r.error_code = code(controller_error(&e));
                    r.error_message = Some(StrBytes::from_string(e.to_string()));
                }
            }
        }
        super::respond_or_log(
            &ctx,
            &DeleteTopicsResponse::default().with_responses(responses),
        )
    })))
}
