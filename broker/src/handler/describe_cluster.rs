//! DescribeCluster (key 60), v0-1.

use bytes::BytesMut;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: DescribeClusterRequest) -> Result<BytesMut, Error> {
    let b = &ctx.broker;
    let resp = DescribeClusterResponse::default()
        .with_error_code(NONE)
        .with_endpoint_type(req.endpoint_type)
        .with_cluster_id(StrBytes::from_string(b.cluster_id.clone()))
        .with_controller_id(BrokerId(b.node_id()))
        .with_cluster_authorized_operations(i32::MIN)
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(b.node_id()))
            .with_host(StrBytes::from_string(b.advertised_host.clone()))
            .with_port(i32::from(b.advertised_port))]);
    ctx.respond(&resp)
}
