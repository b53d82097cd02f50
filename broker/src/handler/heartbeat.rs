//! Heartbeat (key 12), v0-4.

use bytes::BytesMut;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::{group_error, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: HeartbeatRequest) -> Result<BytesMut, Error> {
    let r = ctx.broker.groups.heartbeat(
        &req.group_id.0,
        req.generation_id,
        &req.member_id,
        req.group_instance_id.as_deref(),
    );
    let error_code = r.as_ref().err().map_or(NONE, group_error);
    ctx.respond(&HeartbeatResponse::default().with_error_code(error_code))
}
