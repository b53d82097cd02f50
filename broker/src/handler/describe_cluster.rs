//! DescribeCluster (key 60), v0-1: every live broker and the controller.

use bytes::BytesMut;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: DescribeClusterRequest) -> Result<BytesMut, Error> {
    let b = &ctx.broker;
    let image = b.image();
    let brokers = image
        .brokers
        .values()
        .filter(|r| !r.fenced)
        .map(|r| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(r.id))
                .with_host(StrBytes::from_string(r.host.clone()))
                .with_port(i32::from(r.port))
                .with_rack(r.rack.clone().map(StrBytes::from_string))
        })
        .collect();
    let resp = DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(b.cluster_id()))
        .with_controller_id(BrokerId(super::metadata::controller_id(ctx, &image)))
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(brokers);
    ctx.respond(&resp)
}
