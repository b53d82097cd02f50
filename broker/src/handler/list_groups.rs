//! ListGroups (key 16), v0-5: states filter (v4+), types filter (v5+; every
//! group here is "classic").

use bytes::BytesMut;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: ListGroupsRequest) -> Result<BytesMut, Error> {
    let states: Vec<String> = req
        .states_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let types: Vec<String> = req
        .types_filter
        .iter()
        .map(|s| s.to_ascii_lowercase())
        .collect();
    let groups = ctx
        .broker
        .groups
        .list()
        .into_iter()
        .filter(|g| {
            ctx.version < 4
                || states.is_empty()
                || states.contains(&g.state.name().to_ascii_lowercase())
        })
        .filter(|_| ctx.version < 5 || types.is_empty() || types.iter().any(|t| t == "classic"))
        .map(|g| {
            let mut l = ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(g.group_id)))
                .with_protocol_type(StrBytes::from_string(g.protocol_type));
            if ctx.version >= 4 {
                l = l.with_group_state(StrBytes::from_static_str(g.state.name()));
            }
            if ctx.version >= 5 {
                l = l.with_group_type(StrBytes::from_static_str("classic"));
            }
            l
        })
        .collect();
    ctx.respond(
        &ListGroupsResponse::default()
            .with_error_code(NONE)
            .with_groups(groups),
    )
}
