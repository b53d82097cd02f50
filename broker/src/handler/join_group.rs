//! JoinGroup (key 11), v0-9. The reply waits (without blocking the
//! connection's reader) until the group's join phase completes.

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{group_error, Ctx, Error, Reply, NONE};
use crate::coordinator::group::{JoinRequest, JoinResult};
use crate::coordinator::GroupError;

pub fn handle(ctx: Ctx, req: JoinGroupRequest) -> Result<Reply, Error> {
    let join = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: req.member_id.to_string(),
        instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: ctx.client_id.clone(),
        client_host: ctx.client_host.to_string(),
        session_timeout_ms: req.session_timeout_ms,
        // v0 has no rebalance timeout: Kafka uses the session timeout.
        rebalance_timeout_ms: if ctx.version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), Bytes::copy_from_slice(&p.metadata)))
            .collect(),
        require_known_member_id: ctx.version >= 4,
        supports_skip_assignment: ctx.version >= 9,
    };
    let rx = ctx.broker.groups.join(join);
    Ok(Reply::Later(Box::pin(async move {
        let r = rx.await.unwrap_or_else(|_| {
            JoinResult::error(GroupError::CoordinatorNotAvailable, String::new())
        });
        ctx.respond(&response(ctx.version, r)).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot encode join group response");
            bytes::BytesMut::new()
        })
    })))
}

fn response(version: i16, r: JoinResult) -> JoinGroupResponse {
    let s = StrBytes::from_string;
    let protocol_name = if version >= 7 {
        r.protocol.map(s)
    } else {
        Some(s(r.protocol.unwrap_or_default()))
    };
    JoinGroupResponse::default()
        .with_error_code(r.error.as_ref().map_or(NONE, group_error))
        .with_generation_id(r.generation)
        .with_protocol_type(r.protocol_type.map(s))
        .with_protocol_name(protocol_name)
        .with_leader(s(r.leader))
        .with_skip_assignment(version >= 9 && r.skip_assignment)
        .with_member_id(s(r.member_id))
        .with_members(
            r.members
                .into_iter()
                .map(|(id, instance, metadata)| {
                    JoinGroupResponseMember::default()
                        .with_member_id(s(id))
                        .with_group_instance_id(instance.map(s))
                        .with_metadata(metadata)
                })
                .collect(),
        )
}
