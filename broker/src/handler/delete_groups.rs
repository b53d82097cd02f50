//! DeleteGroups (key 42), v0-2: only empty groups (NON_EMPTY_GROUP
//! otherwise); their offsets and metadata get tombstones in
//! `__consumer_offsets`, and the reply waits until those are durable.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::{group_error, Ctx, Error, Reply, NONE};

pub fn handle(ctx: Ctx, req: DeleteGroupsRequest) -> Result<Reply, Error> {
    let ids: Vec<String> = req.groups_names.iter().map(|g| g.0.to_string()).collect();
    let (results, durable) = ctx.broker.groups.delete_groups(&ids);
    Ok(Reply::Later(Box::pin(async move {
        let failed = durable.await.err();
        let results = ids
            .into_iter()
            .zip(results)
            .map(|(id, r)| {
                let err = match (&r, &failed) {
                    (Some(e), _) | (None, Some(e)) => group_error(e),
                    (None, None) => NONE,
                };
                DeletableGroupResult::default()
                    .with_group_id(GroupId(StrBytes::from_string(id)))
                    .with_error_code(err)
            })
            .collect();
        ctx.respond(&DeleteGroupsResponse::default().with_results(results))
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "cannot encode delete groups response");
                bytes::BytesMut::new()
            })
    })))
}
