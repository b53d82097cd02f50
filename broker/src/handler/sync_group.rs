//! SyncGroup (key 14), v0-5. The leader's request carries every member's
//! assignment; followers wait for it.

use bytes::Bytes;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{group_error, Ctx, Error, Reply, NONE};
use crate::coordinator::GroupError;

pub fn handle(ctx: Ctx, req: SyncGroupRequest) -> Result<Reply, Error> {
    let assignments = req
        .assignments
        .iter()
        .map(|a| {
            (
                a.member_id.to_string(),
                Bytes::copy_from_slice(&a.assignment),
            )
        })
        .collect();
    let rx = ctx.broker.groups.sync(
        &req.group_id.0,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
        req.protocol_type.as_deref(),
        req.protocol_name.as_deref(),
        assignments,
    );
    Ok(Reply::Later(Box::pin(async move {
        let r = rx.await.unwrap_or(Err(GroupError::CoordinatorNotAvailable));
        let mut resp = SyncGroupResponse::default();
        match r {
            Ok((protocol_type, protocol_name, assignment)) => {
                resp = resp.with_error_code(NONE).with_assignment(assignment);
                if ctx.version >= 5 {
                    resp = resp
                        .with_protocol_type(protocol_type.map(StrBytes::from_string))
                        .with_protocol_name(protocol_name.map(StrBytes::from_string));
                }
            }
            Err(e) => resp = resp.with_error_code(group_error(&e)),
        }
        ctx.respond(&resp).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode sync group response");
            bytes::BytesMut::new()
        })
    })))
}
