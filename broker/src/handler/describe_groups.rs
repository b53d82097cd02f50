//! DescribeGroups (key 15), v0-5. An unknown group is described as Dead
//! with no error, as Kafka does before v6.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: DescribeGroupsRequest) -> Result<BytesMut, Error> {
    let s = StrBytes::from_string;
    let groups = req
        .groups
        .iter()
        .map(|id| {
            let group = DescribedGroup::default().with_group_id(GroupId(s(id.0.to_string())));
            if id.0.is_empty() {
                return group
                    .with_error_code(code(ResponseError::InvalidGroupId))
                    .with_group_state(StrBytes::from_static_str("Dead"));
            }
            let d = match ctx.broker.groups.describe(&id.0) {
                Ok(d) => d,
                Err(e) => {
                    return group
                        .with_error_code(super::group_error(&e))
                        .with_group_state(StrBytes::from_static_str(""))
                }
            };
            let mut group = group
                .with_error_code(NONE)
                .with_group_state(StrBytes::from_static_str(d.state.name()))
                .with_protocol_type(s(d.protocol_type))
                .with_protocol_data(s(d.protocol))
                .with_members(
                    d.members
                        .into_iter()
                        .map(|m| {
                            let mut member = DescribedGroupMember::default()
                                .with_member_id(s(m.member_id))
                                .with_client_id(s(m.client_id))
                                .with_client_host(s(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment);
                            if ctx.version >= 4 {
                                member = member.with_group_instance_id(m.instance_id.map(s));
                            }
                            member
                        })
                        .collect(),
                );
            if ctx.version >= 3 && req.include_authorized_operations {
                // Every operation on a group (no ACLs): READ, DESCRIBE, DELETE.
                group = group.with_authorized_operations((1 << 3) | (1 << 8) | (1 << 6));
            }
            group
        })
        .collect();
    ctx.respond(&DescribeGroupsResponse::default().with_groups(groups))
}
