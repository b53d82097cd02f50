//! DescribeLogDirs (key 35), v1-4: a broker has one log directory, its data
//! dir; per hosted replica its size on disk. There are no future replicas
//! (AlterReplicaLogDirs is not offered), so offset lag is 0 and
//! `is_future_key` false. v4 adds the file system's total and usable bytes.

use std::collections::BTreeMap;

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{code, Ctx, Error, NONE};

pub fn handle(ctx: &Ctx, req: DescribeLogDirsRequest) -> Result<BytesMut, Error> {
    let b = &ctx.broker;
    // None: every replica; otherwise only the asked partitions this broker
    // hosts (Kafka leaves out what it does not host).
    let wanted: Option<BTreeMap<String, Vec<i32>>> = req.topics.map(|topics| {
        topics
            .into_iter()
            .map(|t| (t.topic.to_string(), t.partitions))
            .collect()
    });
    let mut topics = Vec::new();
    for topic in b.topics.all() {
        let asked = match &wanted {
            None => None,
            Some(w) => match w.get(&*topic.name) {
                Some(parts) => Some(parts),
                None => continue,
            },
        };
        let partitions: Vec<DescribeLogDirsPartition> = topic
            .partitions()
            .into_iter()
            .filter(|p| asked.is_none_or(|a| a.contains(&p.index())))
            .map(|p| {
                let size = p.with_log(|log| log.size_bytes());
                DescribeLogDirsPartition::default()
                    .with_partition_index(p.index())
                    .with_partition_size(i64::try_from(size).unwrap_or(i64::MAX))
                    .with_offset_lag(0)
                    .with_is_future_key(false)
            })
            .collect();
        if !partitions.is_empty() {
            topics.push(
                DescribeLogDirsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.name.to_string())))
                    .with_partitions(partitions),
            );
        }
    }
    let dir = &b.config.data_dir;
    let dir_name = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
    let (total, usable, error) = match rustix::fs::statvfs(dir) {
        Ok(s) => (
            clamp(s.f_blocks.saturating_mul(s.f_frsize)),
            clamp(s.f_bavail.saturating_mul(s.f_frsize)),
            NONE,
        ),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot stat the data dir");
            (-1, -1, code(ResponseError::KafkaStorageError))
        }
    };
    let mut result = DescribeLogDirsResult::default()
        .with_error_code(error)
        .with_log_dir(StrBytes::from_string(dir_name.display().to_string()))
        .with_topics(topics);
    if ctx.version >= 4 {
        result = result.with_total_bytes(total).with_usable_bytes(usable);
    }
    let mut resp = DescribeLogDirsResponse::default().with_results(vec![result]);
    if ctx.version >= 3 {
        resp = resp.with_error_code(NONE);
    }
    ctx.respond(&resp)
}

fn clamp(bytes: u64) -> i64 {
    i64::try_from(bytes).unwrap_or(i64::MAX)
}
