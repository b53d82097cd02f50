//! DescribeClientQuotas (key 48), v0: Sluice has no quotas, so the answer is
//! an empty list. Some clients probe this API to guess the broker version.

use bytes::BytesMut;
use kafka_protocol::messages::{DescribeClientQuotasRequest, DescribeClientQuotasResponse};

use super::{Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, _req: DescribeClientQuotasRequest) -> Result<BytesMut, Error> {
    ctx.respond(
        &DescribeClientQuotasResponse::default()
            .with_error_code(NONE)
            .with_entries(Some(Vec::new())),
    )
}
