//! One file per Kafka API: decode the request, call the module that owns the
//! operation, encode the response. Kafka error codes are chosen here and
//! nowhere else.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};

use crate::broker::Broker;
use crate::cluster::messages::{ControllerError, ControllerRequest, ControllerResponse};
use crate::partition::Partition;

mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod alter_partition_reassignments;
mod api_versions;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_client_quotas;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_log_dirs;
mod describe_transactions;
mod elect_leaders;
mod end_txn;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;
mod txn_offset_commit;
mod write_txn_markers;

/// The APIs and versions this broker implements, advertised by ApiVersions.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::DescribeClientQuotas, 0, 0),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::InitProducerId, 0, 5),
    // Transactions up to transaction version 1: AddPartitionsToTxn v4+ and
    // EndTxn v4+ belong to KIP-890 and are not offered.
    (ApiKey::AddPartitionsToTxn, 0, 3),
    (ApiKey::AddOffsetsToTxn, 0, 3),
    (ApiKey::EndTxn, 0, 3),
    (ApiKey::TxnOffsetCommit, 0, 3),
    (ApiKey::WriteTxnMarkers, 1, 1),
    (ApiKey::DescribeTransactions, 0, 0),
    (ApiKey::ListTransactions, 0, 1),
    (ApiKey::ElectLeaders, 0, 2),
    (ApiKey::AlterPartitionReassignments, 0, 0),
    (ApiKey::ListPartitionReassignments, 0, 0),
];

/// Why a request could not be handled; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("frame too short for a request header")]
    ShortFrame,
    #[error("cannot decode the request header of {api:?} v{version}: {source}")]
    Header {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("cannot decode {api:?} v{version}: {source}")]
    Decode {
        api: ApiKey,
        version: i16,
        source: anyhow::Error,
    },
    #[error("cannot encode response: {0}")]
    Encode(anyhow::Error),
}

/// A response frame, possibly still being produced.
pub enum Reply {
    Now(BytesMut),
    Later(Pin<Box<dyn Future<Output = BytesMut> + Send>>),
    /// Produce with acks=0: Kafka sends nothing back.
    Nothing,
}

/// What every handler gets besides its request.
pub struct Ctx {
    pub broker: Arc<Broker>,
    pub correlation_id: i32,
    pub version: i16,
    /// The request header's client id, copied out of the frame.
    pub client_id: String,
    /// The client's address as Kafka shows it (`/127.0.0.1`).
    pub client_host: Arc<str>,
}

impl Ctx {
    /// Encodes `body` as the response to this request.
    pub fn respond<R: Encodable + HeaderVersion>(&self, body: &R) -> Result<BytesMut, Error> {
        encode_frame(self.correlation_id, self.version, body)
    }
}

/// Encodes a deferred response; an encoding failure is logged and the
/// connection gets an empty frame (which closes it).
pub fn respond_or_log<R: Encodable + HeaderVersion>(ctx: &Ctx, body: &R) -> BytesMut {
    ctx.respond(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot encode response");
        BytesMut::new()
    })
}

/// Encodes a length-prefixed response frame.
pub fn encode_frame<R: Encodable + HeaderVersion>(
    correlation_id: i32,
    version: i16,
    body: &R,
) -> Result<BytesMut, Error> {
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let header_version = R::header_version(version);
    let size = header
        .compute_size(header_version)
        .and_then(|h| Ok(h + body.compute_size(version)?))
        .map_err(Error::Encode)?;
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(i32::try_from(size).unwrap_or(i32::MAX));
    header
        .encode(&mut buf, header_version)
        .map_err(Error::Encode)?;
    body.encode(&mut buf, version).map_err(Error::Encode)?;
    Ok(buf)
}

fn supported_range(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|&(_, min, max)| (min, max))
}

fn decode<T: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<T, Error> {
    T::decode(body, version).map_err(|source| Error::Decode {
        api,
        version,
        source,
    })
}

/// Handles one request frame (without its length prefix).
pub async fn dispatch(
    broker: &Arc<Broker>,
    client_host: &Arc<str>,
    mut frame: Bytes,
) -> Result<Reply, Error> {
    if frame.len() < 8 {
        return Err(Error::ShortFrame);
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let key = ApiKey::try_from(api_key).ok();
    let range = key.and_then(supported_range);
    let Some((key, (min, max))) = key.zip(range) else {
        tracing::debug!(api_key, version, "unsupported API key");
        return Ok(Reply::Now(unsupported(correlation_id)));
    };
    if version < min || version > max {
        if key == ApiKey::ApiVersions {
            // Answered in v0 so the client can read our ranges and retry.
            return Ok(Reply::Now(api_versions::unsupported_version(
                correlation_id,
            )?));
        }
        tracing::debug!(?key, version, "unsupported API version");
        return Ok(Reply::Now(unsupported(correlation_id)));
    }
    let header_version = key.request_header_version(version);
    // Decoded to validate and skip it. Nothing of it is kept: its client id
    // is a view of the frame, and a deferred reply holding it would pin the
    // whole (possibly multi-megabyte) request in memory until answered;
    // only the client id is copied out.
    let header =
        RequestHeader::decode(&mut frame, header_version).map_err(|source| Error::Header {
            api: key,
            version,
            source,
        })?;
    let ctx = Ctx {
        broker: broker.clone(),
        correlation_id,
        version,
        client_id: header
            .client_id
            .as_deref()
            .map(str::to_string)
            .unwrap_or_default(),
        client_host: client_host.clone(),
    };
    drop(header);
    tracing::trace!(?key, version, correlation_id, client = %ctx.client_id, "request");
    let body = &mut frame;
    let reply = match key {
        ApiKey::ApiVersions => Reply::Now(api_versions::handle(&ctx, decode(key, version, body)?)?),
        ApiKey::Metadata => metadata::handle(ctx, decode(key, version, body)?)?,
        ApiKey::Produce => produce::handle(ctx, decode(key, version, body)?)?,
        ApiKey::Fetch => fetch::handle(ctx, decode(key, version, body)?)?,
        ApiKey::ListOffsets => Reply::Now(list_offsets::handle(&ctx, decode(key, version, body)?)?),
        ApiKey::CreateTopics => create_topics::handle(ctx, decode(key, version, body)?)?,
        ApiKey::DeleteTopics => delete_topics::handle(ctx, decode(key, version, body)?)?,
        ApiKey::CreatePartitions => create_partitions::handle(ctx, decode(key, version, body)?)?,
        ApiKey::DeleteRecords => {
            Reply::Now(delete_records::handle(&ctx, decode(key, version, body)?)?)
        }
        ApiKey::DescribeConfigs => {
            Reply::Now(describe_configs::handle(&ctx, decode(key, version, body)?)?)
        }
        ApiKey::AlterConfigs => alter_configs::handle(ctx, decode(key, version, body)?)?,
        ApiKey::IncrementalAlterConfigs => {
            incremental_alter_configs::handle(ctx, decode(key, version, body)?)?
        }
        ApiKey::DescribeLogDirs => Reply::Now(describe_log_dirs::handle(
            &ctx,
            decode(key, version, body)?,
        )?),
        ApiKey::DescribeCluster => {
            Reply::Now(describe_cluster::handle(&ctx, decode(key, version, body)?)?)
        }
        ApiKey::FindCoordinator => find_coordinator::handle(ctx, decode(key, version, body)?)?,
        ApiKey::AddPartitionsToTxn => {
            add_partitions_to_txn::handle(ctx, decode(key, version, body)?)?
        }
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(ctx, decode(key, version, body)?)?,
        ApiKey::EndTxn => end_txn::handle(ctx, decode(key, version, body)?)?,
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(ctx, decode(key, version, body)?)?,
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(ctx, decode(key, version, body)?)?,
        ApiKey::DescribeTransactions => Reply::Now(describe_transactions::handle(
            &ctx,
            decode(key, version, body)?,
        )?),
        ApiKey::ListTransactions => Reply::Now(list_transactions::handle(
            &ctx,
            decode(key, version, body)?,
        )?),
        ApiKey::DescribeClientQuotas => Reply::Now(describe_client_quotas::handle(
            &ctx,
            decode(key, version, body)?,
        )?),
        ApiKey::JoinGroup => join_group::handle(ctx, decode(key, version, body)?)?,
        ApiKey::SyncGroup => sync_group::handle(ctx, decode(key, version, body)?)?,
        ApiKey::Heartbeat => Reply::Now(heartbeat::handle(&ctx, decode(key, version, body)?)?),
        ApiKey::LeaveGroup => Reply::Now(leave_group::handle(&ctx, decode(key, version, body)?)?),
        ApiKey::OffsetCommit => offset_commit::handle(ctx, decode(key, version, body)?)?,
        ApiKey::OffsetFetch => Reply::Now(offset_fetch::handle(&ctx, decode(key, version, body)?)?),
        ApiKey::ListGroups => Reply::Now(list_groups::handle(&ctx, decode(key, version, body)?)?),
        ApiKey::DescribeGroups => {
            Reply::Now(describe_groups::handle(&ctx, decode(key, version, body)?)?)
        }
        ApiKey::DeleteGroups => delete_groups::handle(ctx, decode(key, version, body)?)?,
        ApiKey::OffsetDelete => offset_delete::handle(ctx, decode(key, version, body)?)?,
        ApiKey::OffsetForLeaderEpoch => Reply::Now(offset_for_leader_epoch::handle(
            &ctx,
            decode(key, version, body)?,
        )?),
        ApiKey::ElectLeaders => elect_leaders::handle(ctx, decode(key, version, body)?)?,
        ApiKey::InitProducerId => init_producer_id::handle(ctx, decode(key, version, body)?)?,
        ApiKey::AlterPartitionReassignments => {
            alter_partition_reassignments::handle(ctx, decode(key, version, body)?)?
        }
        ApiKey::ListPartitionReassignments => Reply::Now(list_partition_reassignments::handle(
            &ctx,
            decode(key, version, body)?,
        )?),
        _ => Reply::Now(unsupported(correlation_id)),
    };
    Ok(reply)
}

/// The answer to an API or version we do not implement: the correlation id
/// and UNSUPPORTED_VERSION, the way Kafka answers an unknown ApiVersions.
fn unsupported(correlation_id: i32) -> BytesMut {
    let mut buf = BytesMut::with_capacity(10);
    buf.put_i32(6);
    buf.put_i32(correlation_id);
    buf.put_i16(ResponseError::UnsupportedVersion.code());
    buf
}

/// Kafka's "no error".
pub const NONE: i16 = 0;

/// The code of a Kafka error.
pub fn code(e: ResponseError) -> i16 {
    e.code()
}

/// Maps controller errors to Kafka error codes.
pub fn controller_error(e: &ControllerError) -> ResponseError {
    use ControllerError as E;
    match e {
        E::NotController | E::NoController(_) | E::Quorum(_) => ResponseError::RequestTimedOut,
        E::TopicExists(_) => ResponseError::TopicAlreadyExists,
        E::UnknownTopic(_) | E::UnknownPartition(..) => ResponseError::UnknownTopicOrPartition,
        E::InvalidTopic(_) => ResponseError::InvalidTopicException,
        E::InvalidPartitions(_) => ResponseError::InvalidPartitions,
        E::InvalidReplicationFactor(_) => ResponseError::InvalidReplicationFactor,
        E::InvalidReplicaAssignment(_) => ResponseError::InvalidReplicaAssignment,
        E::InvalidConfig(_) => ResponseError::InvalidConfig,
        E::PolicyViolation(_) => ResponseError::PolicyViolation,
        E::UnknownBroker(_) => ResponseError::BrokerNotAvailable,
        E::StaleEpoch(_) => ResponseError::FencedLeaderEpoch,
        E::NotLeader(_) => ResponseError::NotLeaderOrFollower,
        E::ElectionNotNeeded => ResponseError::ElectionNotNeeded,
        E::EligibleLeadersNotAvailable(_) => ResponseError::EligibleLeadersNotAvailable,
        E::PreferredLeaderNotAvailable(_) => ResponseError::PreferredLeaderNotAvailable,
        E::NoReassignmentInProgress => ResponseError::NoReassignmentInProgress,
    }
}

/// Sends an admin request to the controller and waits until this broker's
/// own image shows its outcome, so a client's next request here sees it.
/// One outcome per item, or a whole-request failure.
pub async fn controller_outcomes(
    ctx: &Ctx,
    req: ControllerRequest,
    items: usize,
) -> Vec<Result<(), ControllerError>> {
    match ctx.broker.controller_call(req).await {
        ControllerResponse::Outcomes {
            outcomes,
            applied_index,
        } => {
            ctx.broker
                .wait_applied(applied_index, std::time::Duration::from_secs(10))
                .await;
            outcomes
        }
        ControllerResponse::Error(e) => vec![Err(e); items],
        other => vec![
            Err(ControllerError::Quorum(format!(
                "unexpected answer {other:?}"
            )));
            items
        ],
    }
}

/// The local leader replica of `topic`-`index` for a client request, or the
/// error telling the client where to go: UNKNOWN_TOPIC_OR_PARTITION when
/// the cluster has no such partition, NOT_LEADER_OR_FOLLOWER when another
/// broker leads it, FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH when the
/// client's `current_leader_epoch` (-1: not given) is older / newer.
pub fn leader_replica(
    ctx: &Ctx,
    topic: &str,
    index: i32,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let local = ctx.broker.topics.partition(topic, index);
    let Some(p) = local.filter(|p| p.is_leader()) else {
        return Err(if ctx.broker.image().partition(topic, index).is_some() {
            ResponseError::NotLeaderOrFollower
        } else {
            ResponseError::UnknownTopicOrPartition
        });
    };
    check_epoch(&p, current_leader_epoch)?;
    Ok(p)
}

/// Compares a request's `current_leader_epoch` with the replica's.
pub fn check_epoch(p: &Partition, current_leader_epoch: i32) -> Result<(), ResponseError> {
    if current_leader_epoch >= 0 {
        let epoch = p.leader_epoch();
        if current_leader_epoch < epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if current_leader_epoch > epoch {
            return Err(ResponseError::UnknownLeaderEpoch);
        }
    }
    Ok(())
}

/// Maps group coordinator errors to Kafka error codes.
pub fn group_error(e: &crate::coordinator::GroupError) -> i16 {
    use crate::coordinator::GroupError as E;
    code(match e {
        E::InvalidGroupId => ResponseError::InvalidGroupId,
        E::UnknownMemberId => ResponseError::UnknownMemberId,
        E::IllegalGeneration => ResponseError::IllegalGeneration,
        E::RebalanceInProgress => ResponseError::RebalanceInProgress,
        E::FencedInstanceId => ResponseError::FencedInstanceId,
        E::InconsistentGroupProtocol => ResponseError::InconsistentGroupProtocol,
        E::MemberIdRequired => ResponseError::MemberIdRequired,
        E::InvalidSessionTimeout => ResponseError::InvalidSessionTimeout,
        E::GroupIdNotFound => ResponseError::GroupIdNotFound,
        E::NonEmptyGroup => ResponseError::NonEmptyGroup,
        E::GroupSubscribedToTopic => ResponseError::GroupSubscribedToTopic,
        E::OffsetMetadataTooLarge => ResponseError::OffsetMetadataTooLarge,
        E::CoordinatorNotAvailable | E::Storage(_) => ResponseError::CoordinatorNotAvailable,
        E::NotCoordinator => ResponseError::NotCoordinator,
        E::CoordinatorLoadInProgress => ResponseError::CoordinatorLoadInProgress,
    })
}

/// Maps transaction coordinator errors to Kafka error codes. Clients of
/// requests older than `fenced_since` know PRODUCER_FENCED as
/// INVALID_PRODUCER_EPOCH (KIP-588).
pub fn txn_error(e: &crate::coordinator::TxnError, version: i16, fenced_since: i16) -> i16 {
    use crate::coordinator::TxnError as E;
    code(match e {
        E::NotCoordinator => ResponseError::NotCoordinator,
        E::LoadInProgress => ResponseError::CoordinatorLoadInProgress,
        E::CoordinatorNotAvailable(_) => ResponseError::CoordinatorNotAvailable,
        E::ConcurrentTransactions => ResponseError::ConcurrentTransactions,
        E::InvalidProducerIdMapping => ResponseError::InvalidProducerIdMapping,
        E::ProducerFenced if version < fenced_since => ResponseError::InvalidProducerEpoch,
        E::ProducerFenced => ResponseError::ProducerFenced,
        E::InvalidTxnState(_) => ResponseError::InvalidTxnState,
        E::InvalidTransactionTimeout { .. } => ResponseError::InvalidTransactionTimeout,
        E::TransactionalIdNotFound => ResponseError::TransactionalIdNotFound,
    })
}

/// Maps commit log errors to Kafka error codes.
pub fn log_error(e: &crate::commitlog::Error) -> i16 {
    use crate::commitlog::Error as E;
    code(match e {
        E::InvalidBatch(b) if b.is_corrupt() => ResponseError::CorruptMessage,
        E::InvalidBatch(_) => ResponseError::InvalidRecord,
        E::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        E::Producer(p) => match p {
            crate::commitlog::ProducerError::OutOfOrderSequence { .. } => {
                ResponseError::OutOfOrderSequenceNumber
            }
            crate::commitlog::ProducerError::InvalidProducerEpoch { .. } => {
                ResponseError::InvalidProducerEpoch
            }
            crate::commitlog::ProducerError::UnknownProducerId(_) => {
                ResponseError::UnknownProducerId
            }
        },
        _ => ResponseError::KafkaStorageError,
    })
}

/// The read-modify-write of a topic's config overrides shared by AlterConfigs
/// and IncrementalAlterConfigs. `change` maps the current overrides to the
/// new ones; the controller validates and applies them.
pub async fn set_topic_overrides(
    ctx: &Ctx,
    resource_type: i8,
    name: &str,
    change: impl FnOnce(
        &std::collections::BTreeMap<String, String>,
    )
        -> Result<std::collections::BTreeMap<String, String>, (ResponseError, String)>,
    validate_only: bool,
) -> Result<(), (ResponseError, String)> {
    match resource_type {
        describe_configs::RESOURCE_TOPIC => {}
        describe_configs::RESOURCE_BROKER => {
            return Err((
                ResponseError::InvalidRequest,
                "broker configs are static in Sluice: set them in the YAML config file, a flag or a SLUICE_* variable and restart the broker".into(),
            ))
        }
        other => {
            return Err((
                ResponseError::InvalidRequest,
                format!("resource type {other} is not supported; use 2 (topic)"),
            ))
        }
    }
    let current = ctx
        .broker
        .image()
        .topic(name)
        .map(|t| t.configs.clone())
        .ok_or_else(|| {
            (
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic '{name}'"),
            )
        })?;
    let next = change(&current)?;
    let req = ControllerRequest::SetTopicConfigs {
        topic: name.to_string(),
        configs: next,
        validate_only,
    };
    match controller_outcomes(ctx, req, 1).await.pop() {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => Err((controller_error(&e), e.to_string())),
        None => Err((ResponseError::UnknownServerError, "no answer".into())),
    }
}
