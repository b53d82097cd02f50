//! Fetch (key 1), v4-12: whole stored batches, never re-encoded, with long
//! polling (min_bytes / max_wait_ms) and response and partition size limits.
//!
//! Followers fetch with their broker id as `replica_id`: they read up to the
//! log end, their fetch offset tells the leader how far they have the log
//! (advancing the high watermark), and a follower whose last fetched epoch
//! does not match our history gets the diverging epoch to truncate to.
//! Consumers read up to the high watermark, from the leader only.
//!
//! `read_committed` consumers read up to the last stable offset and get
//! the aborted transactions overlapping what they read, from the aborted
//! transaction index, so they can drop those records.
//!
//! Fetch sessions (KIP-227) are not created: the response's session id 0
//! tells the client to keep sending full fetch requests.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{FetchRequest, FetchResponse, ProducerId, TopicName};
use tokio::sync::Notify;

use super::{code, log_error, Ctx, Error, Reply, NONE};
use crate::broker::now_ms;
use crate::commitlog::batch;
use crate::partition::{Bound, FollowerFetch, Partition};

struct Target {
    topic: TopicName,
    index: i32,
    partition: Result<Arc<Partition>, ResponseError>,
    offset: i64,
    max_bytes: usize,
    /// Set when a follower's history diverges from ours: `(epoch, end offset)`.
    diverging: Option<(i32, i64)>,
}

const READ_COMMITTED: i8 = 1;

pub fn handle(ctx: Ctx, req: FetchRequest) -> Result<Reply, Error> {
    if ctx.version >= 7 && req.session_id != 0 {
        let resp = FetchResponse::default()
            .with_error_code(code(ResponseError::FetchSessionIdNotFound))
            .with_session_id(0);
        return Ok(Reply::Now(ctx.respond(&resp)?));
    }
    // Followers fetch with their broker id; consumers with -1.
    let follower = (req.replica_id.0 >= 0).then_some(req.replica_id.0);
    let now = now_ms();
    let mut targets = Vec::new();
    for t in req.topics {
        for p in t.partitions {
            let mut partition =
                super::leader_replica(&ctx, &t.topic.0, p.partition, p.current_leader_epoch);
            let mut diverging = None;
            if let (Some(id), Ok(part)) = (follower, &partition) {
                if p.last_fetched_epoch >= 0 {
                    let (epoch, end) =
                        part.with_log(|l| l.end_offset_for_epoch(p.last_fetched_epoch));
                    if epoch >= 0 && (epoch < p.last_fetched_epoch || end < p.fetch_offset) {
                        diverging = Some((epoch, end));
                    }
                }
                if diverging.is_none() && p.fetch_offset <= part.log_end_offset() {
                    match part.record_follower_fetch(id, p.fetch_offset, now) {
                        Ok(FollowerFetch::MayJoinIsr) => ctx.broker.replication.poke_isr(),
                        Ok(FollowerFetch::Ok) => {}
                        Err(_) => partition = Err(ResponseError::NotLeaderOrFollower),
                    }
                }
            }
            targets.push(Target {
                topic: t.topic.clone(),
                index: p.partition,
                partition,
                offset: p.fetch_offset,
                max_bytes: usize::try_from(p.partition_max_bytes).unwrap_or(0),
                diverging,
            });
        }
    }
    let max_bytes = usize::try_from(req.max_bytes).unwrap_or(0);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let read_committed = req.isolation_level == READ_COMMITTED;
    let bound = if follower.is_some() {
        Bound::LogEnd
    } else if read_committed {
        Bound::LastStable
    } else {
        Bound::HighWatermark
    };
    let (resp, size, errors) = read_all(&targets, max_bytes, read_committed, bound);
    tracing::trace!(
        partitions = targets.len(),
        size,
        min_bytes,
        max_bytes,
        max_wait_ms = req.max_wait_ms,
        "fetch"
    );
    if size >= min_bytes.max(1) || errors || req.max_wait_ms <= 0 || targets.is_empty() {
        return Ok(Reply::Now(ctx.respond(&resp)?));
    }
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0));
    Ok(Reply::Later(Box::pin(async move {
        drop(resp);
        let notify = Arc::new(Notify::new());
        let resp = loop {
            for t in &targets {
                if let Ok(p) = &t.partition {
                    p.register_waiter(&notify);
                }
            }
            // Re-read after registering so an append in between is not missed.
            let (r, size, errors) = read_all(&targets, max_bytes, read_committed, bound);
            if size >= min_bytes.max(1) || errors {
                break r;
            }
            if tokio::time::timeout_at(deadline, notify.notified())
                .await
                .is_err()
            {
                break r;
            }
        };
        super::respond_or_log(&ctx, &resp)
    })))
}

/// The aborted transactions a read_committed consumer needs to drop the
/// aborted records among `records` (read from `offset`).
fn aborted(p: &Partition, offset: i64, records: &Bytes) -> Vec<AbortedTransaction> {
    let Some(upper) = batch::headers(records)
        .filter_map(Result::ok)
        .map(|(_, h)| h.next_offset())
        .last()
    else {
        return Vec::new();
    };
    match p.with_log(|l| l.aborted_transactions(offset, upper)) {
        Ok(list) => list
            .into_iter()
            .map(|a| {
                AbortedTransaction::default()
                    .with_producer_id(ProducerId(a.producer_id))
                    .with_first_offset(a.first_offset)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(partition = %p.dir().display(), error = %e, "cannot read the aborted transaction index");
            Vec::new()
        }
    }
}

/// Reads every target once; returns the response, its record bytes, and
/// whether any partition answered with an error (which ends long polling).
fn read_all(
    targets: &[Target],
    max_bytes: usize,
    read_committed: bool,
    bound: Bound,
) -> (FetchResponse, usize, bool) {
    let mut remaining = max_bytes;
    let mut total = 0;
    let mut errors = false;
    let mut topics: Vec<FetchableTopicResponse> = Vec::new();
    for t in targets {
        let mut pd = PartitionData::default()
            .with_partition_index(t.index)
            .with_aborted_transactions(read_committed.then(Vec::new))
            .with_records(Some(Bytes::new()));
        match &t.partition {
            Err(e) => {
                errors = true;
                pd = pd.with_error_code(code(*e)).with_high_watermark(-1);
            }
            Ok(p) if t.diverging.is_some() => {
                errors = true;
                let (epoch, end) = t.diverging.unwrap_or((-1, -1));
                pd = pd
                    .with_error_code(NONE)
                    .with_high_watermark(p.high_watermark())
                    .with_last_stable_offset(p.last_stable_offset())
                    .with_log_start_offset(p.log_start_offset())
                    .with_diverging_epoch(
                        EpochEndOffset::default()
                            .with_epoch(epoch)
                            .with_end_offset(end),
                    );
            }
            Ok(p) => {
                // The first batch is returned whole even past the limits
                // (KIP-74); after the response is full, partitions only
                // report their offsets.
                let limit = t.max_bytes.min(remaining);
                let read = if limit == 0 && total > 0 {
                    Ok(crate::partition::ReadResult {
                        records: Bytes::new(),
                        high_watermark: p.high_watermark(),
                        last_stable_offset: p.last_stable_offset(),
                        log_start_offset: p.log_start_offset(),
                        log_end_offset: p.log_end_offset(),
                    })
                } else {
                    p.read(t.offset, limit.max(1), bound)
                };
                match read {
                    Ok(r) => {
                        total += r.records.len();
                        remaining = remaining.saturating_sub(r.records.len());
                        if read_committed {
                            pd = pd
                                .with_aborted_transactions(Some(aborted(p, t.offset, &r.records)));
                        }
                        pd = pd
                            .with_error_code(NONE)
                            .with_high_watermark(r.high_watermark)
                            .with_last_stable_offset(r.last_stable_offset)
                            .with_log_start_offset(r.log_start_offset)
                            .with_records(Some(r.records));
                    }
                    Err(e) => {
                        errors = true;
                        pd = pd
                            .with_error_code(log_error(&e))
                            .with_high_watermark(p.high_watermark())
                            .with_last_stable_offset(p.high_watermark())
                            .with_log_start_offset(p.log_start_offset());
                    }
                }
            }
        }
        match topics.last_mut() {
            Some(last) if last.topic == t.topic => last.partitions.push(pd),
            _ => topics.push(
                FetchableTopicResponse::default()
                    .with_topic(t.topic.clone())
                    .with_partitions(vec![pd]),
            ),
        }
    }
    let resp = FetchResponse::default()
        .with_error_code(NONE)
        .with_session_id(0)
        .with_responses(topics);
    (resp, total, errors)
}
