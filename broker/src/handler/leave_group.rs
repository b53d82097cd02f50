//! LeaveGroup (key 13), v0-5: one member (v0-2) or a batch of member
//! identities (v3+, by member id or group.instance.id).

use bytes::BytesMut;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use kafka_protocol::protocol::StrBytes;

use super::{group_error, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: LeaveGroupRequest) -> Result<BytesMut, Error> {
    let leaving: Vec<(String, Option<String>)> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|s| s.to_string()),
                )
            })
            .collect()
    } else {
        vec![(req.member_id.to_string(), None)]
    };
    let resp = match ctx.broker.groups.leave(&req.group_id.0, &leaving) {
        Err(e) => LeaveGroupResponse::default().with_error_code(group_error(&e)),
        Ok(results) if ctx.version < 3 => LeaveGroupResponse::default().with_error_code(
            results
                .first()
                .and_then(|r| r.as_ref())
                .map_or(NONE, group_error),
        ),
        Ok(results) => LeaveGroupResponse::default()
            .with_error_code(NONE)
            .with_members(
                leaving
                    .into_iter()
                    .zip(results)
                    .map(|((member_id, instance_id), r)| {
                        MemberResponse::default()
                            .with_member_id(StrBytes::from_string(member_id))
                            .with_group_instance_id(instance_id.map(StrBytes::from_string))
                            .with_error_code(r.as_ref().map_or(NONE, group_error))
                    })
                    .collect(),
            ),
    };
    ctx.respond(&resp)
}
