//! ApiVersions (key 18), v0-3. The response header is always v0.

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::{encode_frame, Ctx, Error, SUPPORTED};

fn api_keys() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect()
}

pub fn handle(ctx: &Ctx, _req: ApiVersionsRequest) -> Result<BytesMut, Error> {
    ctx.respond(&ApiVersionsResponse::default().with_api_keys(api_keys()))
}

/// The v0 answer to an ApiVersions version we do not know.
pub fn unsupported_version(correlation_id: i32) -> Result<BytesMut, Error> {
    let body = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(api_keys());
    encode_frame(correlation_id, 0, &body)
}
