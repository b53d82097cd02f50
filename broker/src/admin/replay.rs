//! Replay: copies a range of records from one topic to another, on the same
//! cluster or another one, keeping each record's key, value, headers and
//! original timestamp.
//!
//! Planner / executor split:
//! - [`observe`] reads what the plan needs from the clusters (partitions,
//!   log start and end, offsets by time); [`plan`] is a pure function of the
//!   [`ReplaySpec`] and that [`Observed`] state: one offset range
//!   `[start, end)` per source partition, clamped to the log and explained.
//! - [`execute`] fetches each range in order (read_committed, so control
//!   batches and aborted transactions are skipped) and writes it with the
//!   [`IdempotentProducer`], a bounded number of fetched chunks at a time (the
//!   range is never held in memory), at an optional rate, reporting progress,
//!   and stops cleanly on cancellation with the next offset of every
//!   partition: a [`ResumeState`], printed as
//!   `TOPIC:PARTITION=NEXT..END,...`, from which a later run continues.
//!
//! Ranges are end-exclusive: `--start 10 --end 20` copies offsets 10 to 19;
//! `--end @T` stops before the first record whose timestamp is at or after T.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::records::{partition_for_key, OutRecord};
use crate::client::{
    ApiError, Client, ClientError, IdempotentProducer, Isolation, OffsetSpec, PartitionRecords,
    ProducerError, Record,
};

/// Where a range starts or ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// The log start (start only).
    Earliest,
    /// The last stable offset at planning time (end only).
    Latest,
    Offset(i64),
    /// The first offset whose timestamp is at or after this (ms).
    Timestamp(i64),
}

impl Bound {
    /// `earliest`, an offset, or `@TIMESTAMP` (RFC 3339 or ms since the epoch).
    pub fn parse_start(s: &str) -> Result<Bound, String> {
        let fix = "write --start earliest, an offset (e.g. 1200) or @TIMESTAMP (e.g. @2026-11-21T10:00:00Z or @1795255200000)";
        match Bound::parse(s) {
            Ok(Bound::Latest) => Err(format!("--start latest would copy nothing: {fix}")),
            Ok(b) => Ok(b),
            Err(why) => Err(format!("{why}: {fix}")),
        }
    }

    /// `latest`, an offset, or `@TIMESTAMP` (RFC 3339 or ms since the epoch).
    pub fn parse_end(s: &str) -> Result<Bound, String> {
        let fix = "write --end latest, an offset (e.g. 5000) or @TIMESTAMP (e.g. @2026-11-21T11:00:00Z or @1795258800000)";
        match Bound::parse(s) {
            Ok(Bound::Earliest) => Err(format!("--end earliest would copy nothing: {fix}")),
            Ok(b) => Ok(b),
            Err(why) => Err(format!("{why}: {fix}")),
        }
    }

    fn parse(s: &str) -> Result<Bound, String> {
        let s = s.trim();
        match s {
            "earliest" | "beginning" => return Ok(Bound::Earliest),
            "latest" | "end" => return Ok(Bound::Latest),
            _ => {}
        }
        if let Some(t) = s.strip_prefix('@') {
            return parse_timestamp(t).map(Bound::Timestamp);
        }
        match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Bound::Offset(n)),
            Ok(n) => Err(format!("offset {n} is negative")),
            Err(_) => Err(format!("cannot read {s:?}")),
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Earliest => f.write_str("earliest"),
            Bound::Latest => f.write_str("latest"),
            Bound::Offset(o) => write!(f, "{o}"),
            Bound::Timestamp(t) => write!(f, "@{t}"),
        }
    }
}

/// RFC 3339 (`2026-11-21T10:00:00Z`, `2026-11-21T12:00:00+02:00`) or
/// milliseconds since the epoch.
pub fn parse_timestamp(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<i64>()
            .map_err(|_| format!("timestamp {s} is out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("cannot read {s:?} as an RFC 3339 time or milliseconds ({e})"))
}

/// Checks what can be checked before looking at the cluster: an end before
/// the start when both are offsets or both are times.
pub fn check_bounds(start: Bound, end: Bound) -> Result<(), String> {
    match (start, end) {
        (Bound::Offset(s), Bound::Offset(e)) if e < s => Err(format!(
            "--end {e} is before --start {s}: pass an --end at or after the start (the end is exclusive: --start {s} --end {} copies offset {s} alone)",
            s + 1
        )),
        (Bound::Timestamp(s), Bound::Timestamp(e)) if e < s => Err(format!(
            "--end @{e} is before --start @{s}: pass an --end time after the start time (the end is exclusive)"
        )),
        _ => Ok(()),
    }
}

/// `TOPIC` or `TOPIC:P,P,...`.
pub fn parse_source(s: &str) -> Result<(String, Option<Vec<i32>>), String> {
    let (topic, parts) = match s.split_once(':') {
        None => (s, None),
        Some((t, p)) => (t, Some(p)),
    };
    if topic.is_empty() {
        return Err(format!(
            "{s:?} names no topic: write --from TOPIC or --from TOPIC:0,2"
        ));
    }
    let Some(parts) = parts else {
        return Ok((topic.to_string(), None));
    };
    let mut list = Vec::new();
    for p in parts.split(',').map(str::trim) {
        match p.parse::<i32>() {
            Ok(n) if n >= 0 => {
                if !list.contains(&n) {
                    list.push(n);
                }
            }
            _ => {
                return Err(format!(
                    "partition {p:?} in {s:?} is not a number >= 0: write --from {topic}:0,2"
                ))
            }
        }
    }
    list.sort_unstable();
    Ok((topic.to_string(), Some(list)))
}

/// How records are spread over the destination's partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Partitioning {
    /// The record's source partition (the destination needs at least as
    /// many partitions).
    #[default]
    Same,
    /// murmur2 of the key, as Kafka's default partitioner; records without
    /// a key go round robin.
    Key,
    /// One record per partition in turn.
    RoundRobin,
}

impl Partitioning {
    pub fn name(self) -> &'static str {
        match self {
            Partitioning::Same => "same",
            Partitioning::Key => "key",
            Partitioning::RoundRobin => "round-robin",
        }
    }
}

/// Where each source partition of a replay stands: the next offset to copy
/// and the (exclusive) end. Written as `TOPIC:P=NEXT..END,TOPIC:P=NEXT..END`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumeState {
    pub topic: String,
    pub partitions: BTreeMap<i32, (i64, i64)>,
}

impl ResumeState {
    /// Whether nothing is left to copy.
    pub fn is_done(&self) -> bool {
        self.partitions.values().all(|(next, end)| next >= end)
    }
}

impl fmt::Display for ResumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (p, (next, end)) in &self.partitions {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            write!(f, "{}:{p}={next}..{end}", self.topic)?;
        }
        Ok(())
    }
}

impl FromStr for ResumeState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fix = "pass --resume exactly as the interrupted replay printed it, e.g. --resume orders:0=120..500,orders:1=98..430";
        let mut topic: Option<String> = None;
        let mut partitions = BTreeMap::new();
        for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = (|| {
                let (tp, range) = entry.split_once('=')?;
                let (t, p) = tp.rsplit_once(':')?;
                let (next, end) = range.split_once("..")?;
                let p = p.parse::<i32>().ok().filter(|p| *p >= 0)?;
                let next = next.parse::<i64>().ok().filter(|n| *n >= 0)?;
                let end = end.parse::<i64>().ok().filter(|e| *e >= 0)?;
                (!t.is_empty()).then(|| (t.to_string(), p, next, end))
            })();
            let Some((t, p, next, end)) = parsed else {
                return Err(format!("cannot read {entry:?}: {fix}"));
            };
            if next > end {
                return Err(format!(
                    "{entry:?}: the next offset {next} is after the end {end}: {fix}"
                ));
            }
            match &topic {
                Some(known) if *known != t => {
                    return Err(format!(
                        "the resume state names two topics, {known} and {t}: {fix}"
                    ))
                }
                Some(_) => {}
                None => topic = Some(t),
            }
            if partitions.insert(p, (next, end)).is_some() {
                return Err(format!("partition {p} appears twice: {fix}"));
            }
        }
        match topic {
            Some(topic) => Ok(ResumeState { topic, partitions }),
            None => Err(format!("the resume state is empty: {fix}")),
        }
    }
}

/// What to replay.
#[derive(Debug, Clone)]
pub struct ReplaySpec {
    pub source_topic: String,
    /// `None`: every partition of the source topic.
    pub partitions: Option<Vec<i32>>,
    pub dest_topic: String,
    pub start: Bound,
    pub end: Bound,
    pub partitioning: Partitioning,
    /// Continue an earlier replay instead of resolving `start` and `end`.
    pub resume: Option<ResumeState>,
    /// Source and destination are the same cluster.
    pub same_cluster: bool,
}

/// One source partition as [`observe`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObservedPartition {
    pub log_start: i64,
    /// The last stable offset (read_committed latest).
    pub log_end: i64,
    /// ListOffsets for the start time, when `start` is a time (-1: no record
    /// at or after it).
    pub start_by_time: Option<i64>,
    /// ListOffsets for the end time, when `end` is a time.
    pub end_by_time: Option<i64>,
}

/// What the plan depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `None`: the source topic does not exist.
    pub source_partitions: Option<Vec<i32>>,
    /// `None`: the destination topic does not exist.
    pub dest_partitions: Option<i32>,
    /// The partitions to copy (those asked for that exist).
    pub offsets: BTreeMap<i32, ObservedPartition>,
}

/// One source partition's range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRange {
    pub partition: i32,
    /// First offset to copy.
    pub start: i64,
    /// First offset not to copy.
    pub end: i64,
    /// Why the range differs from what was asked (clamping).
    pub notes: Vec<String>,
}

/// The outcome of [`plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub source_topic: String,
    pub dest_topic: String,
    pub dest_partitions: i32,
    pub partitioning: Partitioning,
    pub ranges: Vec<PartitionRange>,
}

impl Plan {
    /// Offsets in all ranges (records plus any control records among them).
    pub fn total_offsets(&self) -> u64 {
        self.ranges
            .iter()
            .map(|r| u64::try_from(r.end - r.start).unwrap_or(0))
            .sum()
    }

    /// The state before anything is copied.
    pub fn resume_state(&self) -> ResumeState {
        ResumeState {
            topic: self.source_topic.clone(),
            partitions: self
                .ranges
                .iter()
                .map(|r| (r.partition, (r.start, r.end)))
                .collect(),
        }
    }
}

/// A replay the user asked for that cannot be done; each names the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "source topic {0} does not exist: check --from (`sluice topics list` shows the topics)"
    )]
    UnknownSource(String),
    #[error("destination topic {topic} does not exist{where_}: create it first (`sluice topics create {topic} --partitions N`) or check --to")]
    UnknownDest { topic: String, where_: String },
    #[error("source topic {topic} has {count} partitions (0 to {}): there is no partition {partition}; fix the list in --from {topic}:...", count - 1)]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: i32,
    },
    #[error("--partitioning same writes source partition {partition} to partition {partition} of {dest}, which has only {dest_partitions}: add partitions (`sluice topics alter {dest} --partitions {}`), limit --from to partitions below {dest_partitions}, or use --partitioning key or round-robin", partition + 1)]
    TooFewPartitions {
        dest: String,
        dest_partitions: i32,
        partition: i32,
    },
    #[error("--from and --to both name {0} on the same cluster: replaying a topic into itself copies records into the range being read; pick another --to, or pass --to-bootstrap for another cluster")]
    SameTopic(String),
    #[error("the resume state is for topic {resume}, but --from names {from}: pass the --from of the interrupted replay")]
    ResumeTopic { resume: String, from: String },
    #[error("the resume state has partitions {resume:?}, but --from asks for {from:?}: drop the partition list from --from, or pass the matching --resume")]
    ResumePartitions { resume: Vec<i32>, from: Vec<i32> },
    #[error("{0}")]
    Bounds(String),
}

/// Why a replay failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{topic}-{partition}: {error}")]
    Partition {
        topic: String,
        partition: i32,
        error: ApiError,
    },
    /// The copy stopped part way; `resume` says where it stood (every
    /// record before those offsets was acknowledged by the destination).
    #[error("{reason}; resume with --resume {resume}")]
    Interrupted { reason: String, resume: ResumeState },
}

/// Reads the clusters' state for [`plan`].
pub async fn observe(
    source: &Client,
    dest: &Client,
    spec: &ReplaySpec,
) -> Result<Observed, ReplayError> {
    let md = source
        .metadata(Some(std::slice::from_ref(&spec.source_topic)))
        .await?;
    let source_partitions: Option<Vec<i32>> = md
        .topic(&spec.source_topic)
        .filter(|t| t.error.is_none() && !t.partitions.is_empty())
        .map(|t| t.partitions.iter().map(|p| p.index).collect());
    let dmd = dest
        .metadata(Some(std::slice::from_ref(&spec.dest_topic)))
        .await?;
    let dest_partitions = dmd
        .topic(&spec.dest_topic)
        .filter(|t| t.error.is_none() && !t.partitions.is_empty())
        .map(|t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX));
    let mut observed = Observed {
        source_partitions: source_partitions.clone(),
        dest_partitions,
        offsets: BTreeMap::new(),
    };
    let Some(all) = source_partitions else {
        return Ok(observed);
    };
    let wanted: Vec<i32> = match (&spec.resume, &spec.partitions) {
        (Some(r), _) => r.partitions.keys().copied().collect(),
        (None, Some(list)) => list.clone(),
        (None, None) => all.clone(),
    };
    let tps: Vec<(String, i32)> = wanted
        .iter()
        .filter(|p| all.contains(p))
        .map(|p| (spec.source_topic.clone(), *p))
        .collect();
    if tps.is_empty() {
        return Ok(observed);
    }
    let lookup = |spec: OffsetSpec| source.list_offsets(&tps, spec, Isolation::ReadCommitted);
    let starts = lookup(OffsetSpec::Earliest).await?;
    let ends = lookup(OffsetSpec::Latest).await?;
    let by_time = |b: Bound| match (&spec.resume, b) {
        (None, Bound::Timestamp(t)) => Some(t),
        _ => None,
    };
    let start_times = match by_time(spec.start) {
        Some(t) => Some(lookup(OffsetSpec::Timestamp(t)).await?),
        None => None,
    };
    let end_times = match by_time(spec.end) {
        Some(t) => Some(lookup(OffsetSpec::Timestamp(t)).await?),
        None => None,
    };
    for tp in &tps {
        let get = |m: &BTreeMap<(String, i32), Result<crate::client::ListedOffset, ApiError>>| -> Result<i64, ReplayError> {
            match m.get(tp) {
                Some(Ok(l)) => Ok(l.offset),
                Some(Err(e)) => Err(ReplayError::Partition {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    error: e.clone(),
                }),
                None => Err(ReplayError::Partition {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    error: ApiError::local(
                        kafka_protocol::error::ResponseError::UnknownServerError,
                        "no ListOffsets answer",
                    ),
                }),
            }
        };
        let op = ObservedPartition {
            log_start: get(&starts)?,
            log_end: get(&ends)?,
            start_by_time: start_times.as_ref().map(get).transpose()?,
            end_by_time: end_times.as_ref().map(get).transpose()?,
        };
        observed.offsets.insert(tp.1, op);
    }
    Ok(observed)
}

/// The ranges to copy: a pure function of what was asked and what the
/// clusters hold.
pub fn plan(spec: &ReplaySpec, observed: &Observed) -> Result<Plan, PlanError> {
    let topic = &spec.source_topic;
    if spec.same_cluster && spec.source_topic == spec.dest_topic {
        return Err(PlanError::SameTopic(topic.clone()));
    }
    if spec.resume.is_none() {
        check_bounds(spec.start, spec.end).map_err(PlanError::Bounds)?;
    }
    let Some(all) = &observed.source_partitions else {
        return Err(PlanError::UnknownSource(topic.clone()));
    };
    let Some(dest_partitions) = observed.dest_partitions else {
        return Err(PlanError::UnknownDest {
            topic: spec.dest_topic.clone(),
            where_: if spec.same_cluster {
                String::new()
            } else {
                " on the destination cluster (--to-bootstrap)".into()
            },
        });
    };
    let wanted: Vec<i32> = match (&spec.resume, &spec.partitions) {
        (Some(r), from) => {
            if r.topic != *topic {
                return Err(PlanError::ResumeTopic {
                    resume: r.topic.clone(),
                    from: topic.clone(),
                });
            }
            let keys: Vec<i32> = r.partitions.keys().copied().collect();
            if let Some(from) = from {
                if *from != keys {
                    return Err(PlanError::ResumePartitions {
                        resume: keys,
                        from: from.clone(),
                    });
                }
            }
            keys
        }
        (None, Some(list)) => list.clone(),
        (None, None) => all.clone(),
    };
    let count = i32::try_from(all.len()).unwrap_or(i32::MAX);
    for p in &wanted {
        if !all.contains(p) {
            return Err(PlanError::UnknownPartition {
                topic: topic.clone(),
                partition: *p,
                count,
            });
        }
        if spec.partitioning == Partitioning::Same && *p >= dest_partitions {
            return Err(PlanError::TooFewPartitions {
                dest: spec.dest_topic.clone(),
                dest_partitions,
                partition: *p,
            });
        }
    }
    let mut ranges = Vec::new();
    for p in wanted {
        let Some(o) = observed.offsets.get(&p) else {
            return Err(PlanError::UnknownPartition {
                topic: topic.clone(),
                partition: p,
                count,
            });
        };
        ranges.push(range_for(spec, p, o));
    }
    Ok(Plan {
        source_topic: topic.clone(),
        dest_topic: spec.dest_topic.clone(),
        dest_partitions,
        partitioning: spec.partitioning,
        ranges,
    })
}

fn range_for(spec: &ReplaySpec, partition: i32, o: &ObservedPartition) -> PartitionRange {
    let mut notes = Vec::new();
    let by_time = |found: Option<i64>| match found {
        Some(off) if off >= 0 => off,
        // No record at or after that time.
        _ => o.log_end,
    };
    let (mut start, mut end) = match &spec.resume {
        Some(r) => r.partitions.get(&partition).copied().unwrap_or((0, 0)),
        None => {
            let start = match spec.start {
                Bound::Earliest | Bound::Latest => o.log_start,
                Bound::Offset(n) => n,
                Bound::Timestamp(_) => by_time(o.start_by_time),
            };
            let end = match spec.end {
                Bound::Latest | Bound::Earliest => o.log_end,
                Bound::Offset(n) => n,
                Bound::Timestamp(_) => by_time(o.end_by_time),
            };
            (start, end)
        }
    };
    if start < o.log_start {
        notes.push(format!(
            "start {start} is below the log start {} (older records were deleted): starting at {}",
            o.log_start, o.log_start
        ));
        start = o.log_start;
    }
    if end > o.log_end {
        notes.push(format!(
            "end {end} is past the last stable offset {}: ending there",
            o.log_end
        ));
        end = o.log_end;
    }
    if start > end {
        if spec.resume.is_none() {
            notes.push(format!(
                "start {start} is at or after the end {end}: nothing to copy"
            ));
        }
        start = end;
    }
    PartitionRange {
        partition,
        start,
        end,
        notes,
    }
}

/// How [`execute`] runs.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Count what would be copied, write nothing.
    pub dry_run: bool,
    /// Records per second at most.
    pub rate: Option<f64>,
    /// Bytes per fetch.
    pub fetch_max_bytes: i32,
    /// Largest batch written (estimated record bytes): below the
    /// destination's `max.message.bytes` (1 MiB by default).
    pub batch_max_bytes: usize,
    /// Fetched chunks held at once, waiting to be written.
    pub prefetch: usize,
    /// Fetched chunks written together (without a rate).
    pub chunks_per_write: usize,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            dry_run: false,
            rate: None,
            fetch_max_bytes: 1 << 20,
            batch_max_bytes: 900 << 10,
            prefetch: 8,
            chunks_per_write: 8,
        }
    }
}

/// One source partition's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionProgress {
    /// Next offset to copy: every record before it is written (acknowledged).
    pub next: i64,
    pub end: i64,
    pub records: u64,
    /// Key, value and header bytes of those records.
    pub bytes: u64,
}

/// Where a replay stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub partitions: BTreeMap<i32, PartitionProgress>,
    /// Offsets in all ranges when the replay started.
    pub total_offsets: u64,
    pub elapsed: Duration,
}

impl Progress {
    pub fn records(&self) -> u64 {
        self.partitions.values().map(|p| p.records).sum()
    }

    pub fn bytes(&self) -> u64 {
        self.partitions.values().map(|p| p.bytes).sum()
    }

    /// Offsets still to go.
    pub fn remaining_offsets(&self) -> u64 {
        self.partitions
            .values()
            .map(|p| u64::try_from(p.end - p.next).unwrap_or(0))
            .sum()
    }
}

/// What [`execute`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub progress: Progress,
    /// Stopped by cancellation before the end.
    pub cancelled: bool,
    /// Where each partition stands (all at their end unless cancelled).
    pub resume: ResumeState,
}

/// Records fetched from one source partition, in offset order.
struct Chunk {
    partition: i32,
    records: Vec<Record>,
    /// Where this chunk ends (after any skipped control or aborted records).
    next: i64,
}

/// Copies the plan's ranges. `producer` writes to the destination (unused
/// for a dry run). `on_progress` is called after every acknowledged batch.
/// On cancellation, the batch in flight is finished (so the resume state is
/// exact), then the copy stops.
pub async fn execute(
    plan: &Plan,
    source: &Client,
    mut producer: Option<&mut IdempotentProducer>,
    opts: &ExecOptions,
    cancel: &CancellationToken,
    mut on_progress: impl FnMut(&Progress),
) -> Result<Outcome, ReplayError> {
    let started = Instant::now();
    let mut progress = Progress {
        partitions: plan
            .ranges
            .iter()
            .map(|r| {
                (
                    r.partition,
                    PartitionProgress {
                        next: r.start,
                        end: r.end,
                        records: 0,
                        bytes: 0,
                    },
                )
            })
            .collect(),
        total_offsets: plan.total_offsets(),
        elapsed: Duration::ZERO,
    };
    let resume_of = |p: &Progress| ResumeState {
        topic: plan.source_topic.clone(),
        partitions: p
            .partitions
            .iter()
            .map(|(k, v)| (*k, (v.next, v.end)))
            .collect(),
    };
    if !opts.dry_run && producer.is_none() {
        return Err(ReplayError::Interrupted {
            reason: "no producer for the destination".into(),
            resume: resume_of(&progress),
        });
    }
    let (tx, mut rx) = mpsc::channel::<Result<Chunk, ReplayError>>(opts.prefetch.max(1));
    let fetch_cancel = cancel.child_token();
    let fetcher = tokio::spawn(fetch_loop(
        source.clone(),
        plan.source_topic.clone(),
        plan.ranges
            .iter()
            .filter(|r| r.start < r.end)
            .map(|r| (r.partition, r.start, r.end))
            .collect(),
        opts.fetch_max_bytes,
        tx,
        fetch_cancel.clone(),
    ));
    // Stop the fetcher however this function returns.
    let _stop_fetcher = fetch_cancel.clone().drop_guard();

    let mut rotate: u32 = 0;
    let mut written: u64 = 0;
    let slice_len = opts
        .rate
        .map(|r| ((r / 10.0).ceil() as usize).max(1))
        .unwrap_or(usize::MAX);
    let mut cancelled = false;
    'chunks: loop {
        let first = tokio::select! {
            biased;
            _ = cancel.cancelled() => { cancelled = true; break 'chunks; }
            c = rx.recv() => c,
        };
        let Some(first) = first else { break };
        let mut failed: Option<ReplayError> = None;
        let mut chunks: Vec<Chunk> = Vec::new();
        match first {
            Ok(c) => chunks.push(c),
            Err(e) => failed = Some(e),
        }
        // Without a rate, write everything already fetched at once: one
        // Produce request per leader carries several partitions' batches.
        if opts.rate.is_none() {
            while failed.is_none() && chunks.len() < opts.chunks_per_write.max(1) {
                match rx.try_recv() {
                    Ok(Ok(c)) => chunks.push(c),
                    Ok(Err(e)) => failed = Some(e),
                    Err(_) => break,
                }
            }
        }
        // Each write: (chunk index, records) parts, acknowledged together.
        let mut writes: Vec<Vec<(usize, &[Record])>> = Vec::new();
        if opts.rate.is_some() {
            for (i, c) in chunks.iter().enumerate() {
                for slice in c.records.chunks(slice_len.max(1)) {
                    writes.push(vec![(i, slice)]);
                }
            }
        } else {
            writes.push(
                chunks
                    .iter()
                    .enumerate()
                    .map(|(i, c)| (i, c.records.as_slice()))
                    .collect(),
            );
        }
        for write in writes {
            if cancel.is_cancelled() {
                cancelled = true;
                break 'chunks;
            }
            if let Some(rate) = opts.rate.filter(|r| *r > 0.0) {
                let due = Duration::from_secs_f64(written as f64 / rate);
                let wait = due.saturating_sub(started.elapsed());
                if !wait.is_zero() {
                    tokio::select! {
                        _ = cancel.cancelled() => { cancelled = true; break 'chunks; }
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
            let n: usize = write.iter().map(|(_, r)| r.len()).sum();
            if let (Some(producer), false, true) = (producer.as_deref_mut(), opts.dry_run, n > 0) {
                let mut batches = Vec::new();
                for (_, records) in &write {
                    batches.extend(assign(
                        plan,
                        records,
                        &mut rotate,
                        opts.batch_max_bytes.max(1),
                    ));
                }
                let parts: Vec<PartitionRecords<'_>> = batches
                    .iter()
                    .map(|(p, recs)| PartitionRecords {
                        partition: *p,
                        records: recs,
                    })
                    .collect();
                if let Err(e) = producer.send(&plan.dest_topic, &parts).await {
                    return Err(ReplayError::Interrupted {
                        reason: producer_failure(&e),
                        resume: resume_of(&progress),
                    });
                }
            }
            written += n as u64;
            for (i, records) in &write {
                let Some(c) = chunks.get(*i) else { continue };
                if let (Some(last), Some(pp)) =
                    (records.last(), progress.partitions.get_mut(&c.partition))
                {
                    pp.next = pp.next.max(last.offset + 1);
                    pp.records += records.len() as u64;
                    pp.bytes += records.iter().map(payload_bytes).sum::<u64>();
                }
            }
            progress.elapsed = started.elapsed();
            on_progress(&progress);
        }
        for c in &chunks {
            if let Some(pp) = progress.partitions.get_mut(&c.partition) {
                pp.next = pp.next.max(c.next).min(pp.end);
            }
        }
        progress.elapsed = started.elapsed();
        on_progress(&progress);
        if let Some(e) = failed {
            return Err(ReplayError::Interrupted {
                reason: e.to_string(),
                resume: resume_of(&progress),
            });
        }
    }
    drop(rx);
    fetch_cancel.cancel();
    let _ = fetcher.await;
    progress.elapsed = started.elapsed();
    let resume = resume_of(&progress);
    Ok(Outcome {
        progress,
        cancelled: cancelled && !resume.is_done(),
        resume,
    })
}

fn producer_failure(e: &ProducerError) -> String {
    format!("writing to the destination failed: {e}")
}

/// Key, value and header bytes of a record.
pub fn payload_bytes(r: &Record) -> u64 {
    let len = |b: &Option<Vec<u8>>| b.as_ref().map_or(0, Vec::len) as u64;
    len(&r.key)
        + len(&r.value)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() as u64 + len(v))
            .sum::<u64>()
}

/// The destination batches for `records` (one source partition, in order):
/// per destination partition, in order, each under `max_bytes` (a larger
/// record goes alone).
fn assign<'a>(
    plan: &Plan,
    records: &'a [Record],
    rotate: &mut u32,
    max_bytes: usize,
) -> Vec<(i32, Vec<OutRecord<'a>>)> {
    let n = plan.dest_partitions.max(1);
    let mut next_rr = || {
        let p = i32::try_from(*rotate % n.unsigned_abs()).unwrap_or(0);
        *rotate = rotate.wrapping_add(1);
        p
    };
    // Open batch per destination partition: (index in out, bytes so far).
    let mut open: BTreeMap<i32, (usize, usize)> = BTreeMap::new();
    let mut out: Vec<(i32, Vec<OutRecord<'a>>)> = Vec::new();
    for r in records {
        let dest = match plan.partitioning {
            Partitioning::Same => r.partition,
            Partitioning::Key => match &r.key {
                Some(k) => partition_for_key(k, n),
                None => next_rr(),
            },
            Partitioning::RoundRobin => next_rr(),
        };
        let size = usize::try_from(payload_bytes(r)).unwrap_or(usize::MAX) + 32;
        let rec = OutRecord {
            key: r.key.as_deref(),
            value: r.value.as_deref(),
            headers: &r.headers,
            timestamp: r.timestamp,
        };
        match open.get_mut(&dest) {
            Some((i, bytes)) if *bytes + size <= max_bytes => {
                if let Some((_, batch)) = out.get_mut(*i) {
                    batch.push(rec);
                    *bytes += size;
                }
            }
            _ => {
                open.insert(dest, (out.len(), size));
                out.push((dest, vec![rec]));
            }
        }
    }
    out
}

/// Fetches each range in turn (round robin over the partitions, one fetch
/// each), sending chunks down `tx`, which holds at most a few: the fetcher
/// waits while the writer is behind.
async fn fetch_loop(
    client: Client,
    topic: String,
    mut ranges: Vec<(i32, i64, i64)>,
    max_bytes: i32,
    tx: mpsc::Sender<Result<Chunk, ReplayError>>,
    cancel: CancellationToken,
) {
    const STALL: Duration = Duration::from_secs(60);
    let mut stalled_since: BTreeMap<i32, Instant> = BTreeMap::new();
    while !ranges.is_empty() {
        let mut i = 0;
        while i < ranges.len() {
            if cancel.is_cancelled() {
                return;
            }
            let Some(&(partition, next, end)) = ranges.get(i) else {
                break;
            };
            let fetched = tokio::select! {
                _ = cancel.cancelled() => return,
                f = client.fetch(&topic, partition, next, max_bytes, Isolation::ReadCommitted) => f,
            };
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) => {
                    let since = *stalled_since.entry(partition).or_insert_with(Instant::now);
                    let transient = match &e {
                        ClientError::Api(a) => a.needs_refresh(),
                        ClientError::Connect { .. }
                        | ClientError::Io { .. }
                        | ClientError::Timeout { .. }
                        | ClientError::NoBrokerReachable(_)
                        | ClientError::UnknownBroker(_) => true,
                        _ => false,
                    };
                    if transient && since.elapsed() < STALL {
                        tracing::debug!(topic, partition, error = %e, "fetch failed, retrying");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        i += 1;
                        continue;
                    }
                    let err = match e {
                        ClientError::Api(a)
                            if a.is(kafka_protocol::error::ResponseError::OffsetOutOfRange) =>
                        {
                            ReplayError::Partition {
                                topic: topic.clone(),
                                partition,
                                error: ApiError {
                                    message: Some(format!(
                                        "offset {next} is no longer in the log (deleted by retention while replaying)"
                                    )),
                                    ..a
                                },
                            }
                        }
                        ClientError::Api(a) => ReplayError::Partition {
                            topic: topic.clone(),
                            partition,
                            error: a,
                        },
                        e => ReplayError::Client(e),
                    };
                    let _ = tx.send(Err(err)).await;
                    return;
                }
            };
            let mut records = fetched.records;
            records.retain(|r| r.offset >= next && r.offset < end);
            let new_next = fetched.next_offset.max(next).min(end);
            if new_next == next && records.is_empty() {
                // Nothing readable yet (a leader change, a high watermark
                // still catching up): try again later, up to a point.
                let since = *stalled_since.entry(partition).or_insert_with(Instant::now);
                if since.elapsed() >= STALL {
                    let _ = tx
                        .send(Err(ReplayError::Partition {
                            topic: topic.clone(),
                            partition,
                            error: ApiError::local(
                                kafka_protocol::error::ResponseError::OffsetNotAvailable,
                                format!(
                                    "no records readable at offset {next} for {} s",
                                    STALL.as_secs()
                                ),
                            ),
                        }))
                        .await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                i += 1;
                continue;
            }
            stalled_since.remove(&partition);
            let chunk = Chunk {
                partition,
                records,
                next: new_next,
            };
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            if new_next >= end {
                ranges.remove(i);
            } else {
                if let Some(r) = ranges.get_mut(i) {
                    r.1 = new_next;
                }
                i += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests;
