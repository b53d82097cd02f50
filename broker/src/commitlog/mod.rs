//! The on-disk log of one partition, laid out like Kafka's: one directory per
//! partition, segments `{base_offset:020}.log` holding record batches exactly as
//! producers sent them (only `baseOffset` and `partitionLeaderEpoch` stamped), each
//! with a sparse offset index and a time index. The byte-level format is in
//! `docs/log-format.md`.
//!
//! - [`batch`]: v2 batch header parsing and validation.
//! - `segment`: one `.log` file and its indexes.
//! - `index`, `time_index`: the memory-mapped `.index` and `.timeindex`.
//! - `recovery`: opening a directory, checkpoints, cutting torn tails.
//! - [`epoch`]: the leader-epoch cache (`leader-epoch-checkpoint`) that
//!   replication uses to find where a follower's log diverges.
//! - `retention`: time- and size-based deletion of old segments.
//! - [`producer_state`]: per producer id, the epoch, last batches written and
//!   transaction in progress (`{offset:020}.snapshot`), so the leader refuses
//!   sequence gaps, answers a retried batch with its original offsets, and
//!   knows the last stable offset.
//! - `txn_index`: each segment's aborted transactions (`.txnindex`), for
//!   read_committed fetches.
//!
//! A [`Log`] is used behind the partition's mutex: every method is synchronous and
//! short. The only fsyncs inside [`Log::append`] are of the directory and of small
//! index files when a segment rolls; data is made durable by a flusher thread
//! through [`Log::sync_target`] without holding the lock (group commit).

pub mod batch;
pub mod epoch;
mod index;
pub mod producer_state;
mod recovery;
mod retention;
mod segment;
mod time_index;
mod txn_index;

use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

pub use batch::{BatchError, ControlMarker};
pub use epoch::{EpochEntry, LeaderEpochCache};
pub use producer_state::{Check, ProducerError, ProducerStateManager};
pub use retention::{DeletedSegment, DeletionReason, RetentionReport};
pub use txn_index::AbortedTxn;

use recovery::{LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE};
use segment::Segment;

/// Errors of the commit log. Kafka error codes are chosen by the handlers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    InvalidBatch(#[from] BatchError),
    #[error(
        "the log in {} refuses writes because an earlier write or fsync failed ({cause}); \
         restart the broker so recovery can check the log",
        dir.display()
    )]
    Poisoned { dir: PathBuf, cause: String },
    #[error("offset {offset} is out of range: the log holds offsets {log_start} up to {log_end}")]
    OffsetOutOfRange {
        offset: i64,
        log_start: i64,
        log_end: i64,
    },
    #[error(
        "replicated batch has baseOffset {got} but the log continues at {expected}; \
         the follower must fetch from its log end offset (truncating first if it diverged)"
    )]
    NonContiguous { expected: i64, got: i64 },
    /// An idempotent producer's batch out of sequence or from a fenced epoch.
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// Maps an `io::Error` to [`Error::Io`] naming `path`.
pub(crate) fn io_at(path: &Path) -> impl FnOnce(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Per-partition log settings (Kafka's topic configs of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed this.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment is this old (0 or less: never).
    pub segment_ms: i64,
    /// `segment.index.bytes`: preallocated size of each index file.
    pub segment_index_bytes: u64,
    /// `index.interval.bytes`: bytes between offset index entries.
    pub index_interval_bytes: u64,
    /// `retention.ms`: delete segments whose newest record is older (-1: never).
    pub retention_ms: i64,
    /// `retention.bytes`: delete old segments while the log is larger (-1: never).
    pub retention_bytes: i64,
}

impl Default for LogConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            segment_index_bytes: 10 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_ms: 7 * 24 * 60 * 60 * 1000,
            retention_bytes: -1,
        }
    }
}

/// What an append wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the first record.
    pub base_offset: i64,
    /// Offset of the last record (`log_end_offset() - 1` after an append
    /// that was not a duplicate).
    pub last_offset: i64,
    /// Largest batch `maxTimestamp` of the payload (-1 if none).
    pub max_timestamp: i64,
    pub record_count: u64,
    /// The payload was a retry of batches already written: nothing was
    /// written, and the offsets and timestamp are those of the originals.
    pub duplicate: bool,
}

/// Files to fsync so that everything below `end_offset` is durable, taken under
/// the lock and synced without it. See [`Log::sync_target`].
#[derive(Debug, Clone)]
pub struct SyncTarget {
    /// Segment logs, whose descriptors the segments keep open.
    files: Vec<Arc<File>>,
    /// Index files, which segments keep mapped but not open: reopened by path
    /// to be synced.
    paths: Vec<PathBuf>,
    end_offset: i64,
}

impl SyncTarget {
    /// The log end offset the files cover.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// True when there is nothing to sync.
    pub fn is_empty(&self) -> bool {
        self.files.is_empty() && self.paths.is_empty()
    }

    /// fdatasync of every file: the segments' logs, then their index files
    /// (the fsync writes back the indexes' dirty mapped pages too).
    pub fn sync(&self) -> io::Result<()> {
        for f in &self.files {
            f.sync_data()?;
        }
        for p in &self.paths {
            segment::sync_path(p)?;
        }
        Ok(())
    }
}

fn wall_clock_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The log of one partition.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset, contiguous, never empty; the last is active.
    segments: Vec<Segment>,
    log_start_offset: i64,
    next_offset: i64,
    /// Everything below is known to be fsynced.
    recovery_point: i64,
    last_flush_ms: i64,
    /// Bumped by every truncation. `mark_flushed` is ignored unless a sync
    /// target was taken since the last truncation, so a target taken before it
    /// cannot advance the recovery point over rewritten offsets.
    generation: u64,
    target_generation: AtomicU64,
    poisoned: Option<String>,
    /// Kept in step with the log: assigned before a batch of a new epoch is
    /// written, truncated after the log is. A crash between the two leaves
    /// entries outside the log, which opening cuts off.
    epochs: LeaderEpochCache,
    /// Updated after each write; rebuilt from snapshots and batch headers
    /// when the log is opened or truncated.
    producers: ProducerStateManager,
}

impl fmt::Debug for Log {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .field("log_start_offset", &self.log_start_offset)
            .field("log_end_offset", &self.next_offset)
            .field("recovery_point", &self.recovery_point)
            .field("segments", &self.segments.len())
            .field("latest_epoch", &self.epochs.latest_epoch())
            .field("producers", &self.producers.len())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Log {
    /// Opens (creating if missing) the partition directory `dir` and recovers it.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log, Error> {
        if !dir.is_dir() {
            fs::create_dir_all(dir).map_err(io_at(dir))?;
            if let Some(parent) = dir.parent() {
                recovery::sync_dir(parent).map_err(io_at(parent))?;
            }
        }
        let now = wall_clock_ms();
        let mut loaded = recovery::load(dir, &config, now)?;
        let epochs = recovery::load_epoch_cache(
            dir,
            &loaded.segments,
            loaded.log_start_offset,
            loaded.next_offset,
        )?;
        let producers =
            recovery::load_producer_state(dir, &mut loaded.segments, loaded.next_offset)?;
        Ok(Log {
            dir: dir.to_path_buf(),
            config,
            segments: loaded.segments,
            log_start_offset: loaded.log_start_offset,
            next_offset: loaded.next_offset,
            recovery_point: loaded.next_offset,
            last_flush_ms: now,
            generation: 0,
            target_generation: AtomicU64::new(0),
            poisoned: None,
            epochs,
            producers,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Applies new settings; size limits apply from the next roll on.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.next_offset
    }

    /// Bytes of batches on disk (log files only).
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(Segment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Offset below which everything is known to be fsynced.
    pub fn recovery_point(&self) -> i64 {
        self.recovery_point
    }

    /// Messages (offsets) appended since the last successful flush.
    pub fn unflushed_messages(&self) -> u64 {
        (self.next_offset - self.recovery_point).max(0) as u64
    }

    /// Wall-clock time of the last successful flush (or of opening).
    pub fn last_flush_ms(&self) -> i64 {
        self.last_flush_ms
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn active(&self) -> &Segment {
        // `segments` is never empty.
        &self.segments[self.segments.len() - 1]
    }

    fn check_writable(&self) -> Result<(), Error> {
        match &self.poisoned {
            Some(cause) => Err(Error::Poisoned {
                dir: self.dir.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Marks the log as failed: every later write and flush returns
    /// [`Error::Poisoned`]. Called by the flusher when an fsync fails.
    pub fn poison(&mut self, err: io::Error) {
        if self.poisoned.is_none() {
            tracing::error!(dir = %self.dir.display(), error = %err, "log poisoned: refusing further writes");
            self.poisoned = Some(err.to_string());
        }
    }

    fn poisoned_io(&mut self, path: &Path, err: io::Error) -> Error {
        let cause = io::Error::new(err.kind(), err.to_string());
        self.poison(cause);
        io_at(path)(err)
    }

    /// Poisons the log on an I/O error of `result`. Used for the epoch
    /// checkpoint too: a cache file that missed a change could outlive it (a
    /// later append in the same epoch writes nothing) and answer
    /// OffsetsForLeaderEpoch wrongly after a restart.
    fn poison_on_io<T>(&mut self, result: Result<T, Error>) -> Result<T, Error> {
        if let Err(Error::Io { source, .. }) = &result {
            self.poison(io::Error::new(source.kind(), source.to_string()));
        }
        result
    }

    /// The latest leader epoch that wrote to the log, if any.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// OffsetsForLeaderEpoch: the largest epoch at or below `epoch` and the
    /// offset where the epoch after it starts (the log end for the latest
    /// epoch); `(-1, -1)` if unknown. See [`LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        self.epochs.end_offset_for(epoch, self.next_offset)
    }

    /// The epoch cache as `(epoch, start_offset)` pairs, oldest first.
    pub fn epoch_entries(&self) -> Vec<(i32, i64)> {
        self.epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    /// Validates every batch of `records` (nothing is written if one fails),
    /// assigns offsets from the log end, stamps `partitionLeaderEpoch`, rolls the
    /// segment if needed and writes everything with one positional write.
    pub fn append(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, Error> {
        self.append_with(records, leader_epoch, now_ms, false)
    }

    /// [`Log::append`], optionally stamping every batch with the broker's
    /// clock (`message.timestamp.type=LogAppendTime`).
    ///
    /// Control batches are refused ([`batch::InvalidKind::ControlFromClient`]):
    /// markers come through [`Log::append_from_coordinator`]. Batches of
    /// idempotent producers are checked against the producer state first
    /// ([`ProducerStateManager::check_payload`]): a failed check is
    /// [`Error::Producer`] and writes nothing; a payload that was written
    /// before writes nothing either and is answered with the original offsets
    /// ([`AppendInfo::duplicate`]).
    pub fn append_with(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
        log_append_time: bool,
    ) -> Result<AppendInfo, Error> {
        self.check_writable()?;
        let summary = batch::validate_payload(records)?;
        batch::check_no_control(records)?;
        let planned = planned_offsets(records, self.next_offset);
        if let Check::Duplicate {
            first_offset,
            last_offset,
            max_timestamp,
        } = self.producers.check_payload(&planned)?
        {
            return Ok(AppendInfo {
                base_offset: first_offset,
                last_offset,
                max_timestamp,
                record_count: summary.records,
                duplicate: true,
            });
        }
        self.write_as_leader(
            records,
            &summary,
            planned,
            leader_epoch,
            now_ms,
            log_append_time,
        )
    }

    /// Leader append of what a transaction coordinator on this broker writes:
    /// transaction markers ([`batch::build_control_batch`], WriteTxnMarkers)
    /// and transactional batches with a producer id but no sequence
    /// (transactional offset commits). No sequence checks; a marker whose
    /// producer epoch is older than the producer's is refused
    /// ([`ProducerError::InvalidProducerEpoch`], nothing written). An abort
    /// marker that ends a transaction adds it to the segment's `.txnindex`.
    pub fn append_from_coordinator(
        &mut self,
        records: &[u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, Error> {
        self.check_writable()?;
        let summary = batch::validate_payload(records)?;
        let planned = planned_offsets(records, self.next_offset);
        self.producers.check_coordinator_payload(&planned)?;
        self.write_as_leader(records, &summary, planned, leader_epoch, now_ms, false)
    }

    /// The write of a checked leader payload: rolls the segment if needed,
    /// assigns offsets from the log end, stamps and writes, then updates the
    /// producer state and the transaction index.
    fn write_as_leader(
        &mut self,
        records: &[u8],
        summary: &batch::PayloadSummary,
        planned: Vec<(batch::BatchHeader, i64, i64)>,
        leader_epoch: i32,
        now_ms: i64,
        log_append_time: bool,
    ) -> Result<AppendInfo, Error> {
        let base_offset = self.next_offset;
        let last_offset = base_offset + summary.offsets - 1;
        if self.active().should_roll(
            &self.config,
            records.len() as u64,
            last_offset,
            summary.max_timestamp,
            now_ms,
        ) {
            self.roll(now_ms)?;
        }
        if leader_epoch >= 0 {
            let assigned = self.epochs.assign(leader_epoch, base_offset);
            self.poison_on_io(assigned)?;
        }

        let last = self.segments.len() - 1;
        let written = if log_append_time {
            // The timestamp is under the CRC: stamp a copy and rewrite the CRC.
            let mut copy = records.to_vec();
            let mut next = base_offset;
            let mut pos = 0;
            while let Some(header) = batch::BatchHeader::parse(&copy[pos..]) {
                let end = pos + header.total_len();
                batch::stamp(&mut copy[pos..end], next, leader_epoch);
                batch::stamp_log_append_time(&mut copy[pos..end], now_ms);
                next += i64::from(header.last_offset_delta) + 1;
                pos = end;
            }
            self.segments[last]
                .append(&copy, &self.config)
                .map(|()| next)
        } else {
            self.segments[last].append_stamped(records, base_offset, leader_epoch, &self.config)
        };
        let next = match written {
            Ok(next) => next,
            Err(e) => {
                let path = self.segments[last].log_path().to_path_buf();
                return Err(self.poisoned_io(&path, e));
            }
        };
        self.next_offset = next;
        let markers = control_markers(records);
        let mut tracked = Vec::with_capacity(planned.len());
        for ((mut header, first_offset, _), marker) in planned.into_iter().zip(markers) {
            if log_append_time {
                header.max_timestamp = now_ms;
            }
            header.base_offset = first_offset;
            tracked.push((header, marker));
        }
        self.track_written(&tracked)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            max_timestamp: if log_append_time {
                now_ms
            } else {
                summary.max_timestamp
            },
            record_count: summary.records,
            duplicate: false,
        })
    }

    /// Follower append: batches the leader already stamped, written byte for
    /// byte. Every batch is validated as in [`Log::append`]; the first must
    /// start at the log end and each following one where the previous ended
    /// ([`Error::NonContiguous`] otherwise, nothing written). Each batch's
    /// `partitionLeaderEpoch` feeds the epoch cache, so the follower can answer
    /// OffsetsForLeaderEpoch like the leader. An empty payload writes nothing.
    /// The producer state is updated without checks (the leader made them),
    /// and abort markers add to the `.txnindex`, so that this replica
    /// deduplicates retries and answers read_committed fetches if it becomes
    /// the leader.
    pub fn append_replicated(&mut self, records: &[u8]) -> Result<AppendInfo, Error> {
        self.check_writable()?;
        let base_offset = self.next_offset;
        if records.is_empty() {
            return Ok(AppendInfo {
                base_offset,
                last_offset: base_offset - 1,
                max_timestamp: -1,
                record_count: 0,
                duplicate: false,
            });
        }
        let summary = batch::validate_payload(records)?;
        let mut next = base_offset;
        let mut epochs = Vec::new();
        let mut written = Vec::new();
        for item in batch::headers(records) {
            let (_, header) = item?;
            written.push(header);
            if header.base_offset != next {
                return Err(Error::NonContiguous {
                    expected: next,
                    got: header.base_offset,
                });
            }
            if epochs
                .last()
                .is_none_or(|&(e, _)| e != header.partition_leader_epoch)
            {
                epochs.push((header.partition_leader_epoch, header.base_offset));
            }
            next = header.next_offset();
        }
        let now_ms = wall_clock_ms();
        if self.active().should_roll(
            &self.config,
            records.len() as u64,
            next - 1,
            summary.max_timestamp,
            now_ms,
        ) {
            self.roll(now_ms)?;
        }
        let assigned = self.epochs.assign_all(epochs);
        self.poison_on_io(assigned)?;

        let last = self.segments.len() - 1;
        if let Err(e) = self.segments[last].append(records, &self.config) {
            let path = self.segments[last].log_path().to_path_buf();
            return Err(self.poisoned_io(&path, e));
        }
        self.next_offset = next;
        let tracked: Vec<_> = written.into_iter().zip(control_markers(records)).collect();
        self.track_written(&tracked)?;
        Ok(AppendInfo {
            base_offset,
            last_offset: next - 1,
            max_timestamp: summary.max_timestamp,
            record_count: summary.records,
            duplicate: false,
        })
    }

    /// Closes the active segment (final time index entry, trimmed indexes) and
    /// starts a new one at the log end offset.
    fn roll(&mut self, now_ms: i64) -> Result<(), Error> {
        let last = self.segments.len() - 1;
        let active = &mut self.segments[last];
        // The trimmed indexes are made durable now, whether or not the data is:
        // a flush already under way covers only the segment's log file, and its
        // recovery point may then pass this segment, which recovery will trust.
        let finished = active.finish().and_then(|()| active.sync_indexes());
        if let Err(e) = finished {
            let path = self.segments[last].log_path().to_path_buf();
            return Err(self.poisoned_io(&path, e));
        }
        match Segment::create(&self.dir, self.next_offset, &self.config, now_ms) {
            Ok(seg) => self.segments.push(seg),
            Err(e) => {
                let path = segment::file_path(&self.dir, self.next_offset, segment::LOG_EXT);
                return Err(self.poisoned_io(&path, e));
            }
        }
        if let Err(e) = recovery::sync_dir(&self.dir) {
            let dir = self.dir.clone();
            return Err(self.poisoned_io(&dir, e));
        }
        // The state of every batch below the new segment. Only an
        // optimisation (opening replays from an older snapshot), so a failure
        // does not fail the append.
        if let Err(e) = self.producers.take_snapshot(self.next_offset) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not snapshot the producer state");
        }
        Ok(())
    }

    /// Updates the producer state with batches just written to the active
    /// segment (headers with their offsets stamped, and the markers of
    /// control batches); a transaction an abort marker ended goes to the
    /// segment's `.txnindex`. A failed index write poisons the log.
    fn track_written(
        &mut self,
        written: &[(batch::BatchHeader, Option<ControlMarker>)],
    ) -> Result<(), Error> {
        let last = self.segments.len() - 1;
        for (header, marker) in written {
            let aborted =
                self.producers
                    .apply(header, header.base_offset, header.last_offset(), *marker);
            if let Some(txn) = aborted {
                if let Err(e) = self.segments[last].append_aborted(&txn) {
                    let base = self.segments[last].base_offset();
                    let path = segment::file_path(&self.dir, base, segment::TXN_INDEX_EXT);
                    return Err(self.poisoned_io(&path, e));
                }
            }
        }
        Ok(())
    }

    /// The last stable offset (LSO) for a high watermark of
    /// `high_watermark`: below it, every transaction has ended and its marker
    /// is replicated, so read_committed fetches stop there. It is the
    /// smallest of the high watermark, the first offset of every transaction
    /// in progress, and that of every ended transaction whose marker is not
    /// yet below the high watermark (those below it are forgotten now).
    pub fn last_stable_offset(&mut self, high_watermark: i64) -> i64 {
        self.producers.on_high_watermark(high_watermark);
        self.producers
            .first_unstable_offset()
            .map_or(high_watermark, |first| first.min(high_watermark))
    }

    /// The aborted transactions a read_committed fetch of
    /// `start_offset..upper_bound` needs: every one with its marker at or
    /// after `start_offset` and its first offset below `upper_bound`, in
    /// marker order. Read from the `.txnindex` of the segment holding
    /// `start_offset` and of the later ones (each transaction is in the
    /// segment of its marker).
    pub fn aborted_transactions(
        &self,
        start_offset: i64,
        upper_bound: i64,
    ) -> Result<Vec<AbortedTxn>, Error> {
        let mut out = Vec::new();
        for seg in &self.segments[self.segment_for(start_offset)..] {
            let complete = seg
                .collect_aborted(start_offset, upper_bound, &mut out)
                .map_err(io_at(seg.log_path()))?;
            if complete {
                break;
            }
        }
        Ok(out)
    }

    /// `(producer id, first offset)` of every transaction in progress in this
    /// partition, oldest first (DescribeProducers, operators).
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.producers.ongoing_transactions()
    }

    /// Deletes the producer state snapshots below the first segment: what
    /// they describe beyond a newer snapshot is gone with the segments. Only
    /// logged on failure, as such a snapshot is still correct.
    pub(crate) fn delete_old_producer_snapshots(&self) {
        let first = self.segments[0].base_offset();
        if let Err(e) = producer_state::delete_snapshots_where(&self.dir, |o| o < first) {
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not delete old producer state snapshots");
        }
    }

    /// Number of producer ids with state in this partition.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The producer state (read-only).
    pub fn producer_state(&self) -> &ProducerStateManager {
        &self.producers
    }

    /// Forgets producers whose latest batch is `expiration_ms` or more older
    /// than `now_ms` (`producer.id.expiration.ms`). Returns how many.
    pub fn expire_producers(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        self.producers.expire(now_ms, expiration_ms)
    }

    /// Writes a snapshot of the producer state at the log end (for the
    /// periodic checkpoint), unless the latest snapshot already holds it.
    /// The active segment's `.txnindex` is synced first: opening replays (and
    /// rebuilds the entries of) only what follows the snapshot.
    pub fn take_producer_snapshot(&mut self) -> Result<(), Error> {
        self.check_writable()?;
        let last = self.segments.len() - 1;
        if let Err(e) = self.segments[last].sync_txn_index() {
            let base = self.segments[last].base_offset();
            let path = segment::file_path(&self.dir, base, segment::TXN_INDEX_EXT);
            return Err(self.poisoned_io(&path, e));
        }
        self.producers.take_snapshot(self.next_offset)
    }

    fn out_of_range(&self, offset: i64) -> Error {
        Error::OffsetOutOfRange {
            offset,
            log_start: self.log_start_offset,
            log_end: self.next_offset,
        }
    }

    /// Index of the segment that would hold `offset`.
    fn segment_for(&self, offset: i64) -> usize {
        index::partition_point(self.segments.len(), |i| {
            self.segments[i].base_offset() <= offset
        })
        .saturating_sub(1)
    }

    /// Whole batches starting with the one containing `offset`, up to `max_bytes`
    /// (the first batch is always whole, even if larger) and stopping before any
    /// batch whose base offset is `>= max_offset` (the high watermark). Empty at
    /// the log end or at `max_offset`. One read never spans two segments; an
    /// exhausted segment moves on to the next.
    pub fn read(&self, offset: i64, max_bytes: usize, max_offset: i64) -> Result<Bytes, Error> {
        if offset < self.log_start_offset || offset > self.next_offset {
            return Err(self.out_of_range(offset));
        }
        if offset == self.next_offset || offset >= max_offset {
            return Ok(Bytes::new());
        }
        for seg in &self.segments[self.segment_for(offset)..] {
            if seg.base_offset() >= max_offset {
                break;
            }
            if let Some(bytes) = seg
                .read(offset, max_bytes, max_offset)
                .map_err(io_at(seg.log_path()))?
            {
                return Ok(bytes);
            }
        }
        Ok(Bytes::new())
    }

    /// ListOffsets by timestamp: the earliest offset (at or after the log start)
    /// whose record timestamp is `>= ts`, with that timestamp. Uncompressed batches
    /// are walked record by record; for a compressed batch (whose records are not
    /// decompressed) or a log-append-time batch, the answer is the batch's first
    /// offset and its `maxTimestamp`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, Error> {
        let log_start = self.log_start_offset;
        for seg in &self.segments {
            if seg.next_offset() <= log_start || seg.max_timestamp() < ts {
                continue;
            }
            let from = seg.time_lookup(ts).max(log_start);
            let mut found = None;
            seg.scan_from(from, |pos, h| {
                if h.max_timestamp < ts {
                    return Ok(true);
                }
                found = first_record_at_or_after(seg, pos, h, ts, log_start)?;
                Ok(found.is_none())
            })
            .map_err(io_at(seg.log_path()))?;
            if found.is_some() {
                return Ok(found);
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: the record with the largest timestamp (the
    /// earliest such), with the same compressed-batch rule as
    /// [`Log::offset_for_timestamp`]. `None` for an empty log.
    pub fn max_timestamp(&self) -> Result<Option<(i64, i64)>, Error> {
        let log_start = self.log_start_offset;
        // (timestamp, segment, base offset of the batch holding it)
        let mut best: Option<(i64, usize, i64)> = None;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.next_offset() <= log_start || seg.is_empty() {
                continue;
            }
            let candidate = if seg.offset_of_max_timestamp() >= log_start {
                Some((seg.max_timestamp(), seg.offset_of_max_timestamp()))
            } else {
                // The log start cut into the segment: look at what is left.
                let mut m: Option<(i64, i64)> = None;
                seg.scan_from(log_start, |_, h| {
                    if m.is_none_or(|(t, _)| h.max_timestamp > t) {
                        m = Some((h.max_timestamp, h.base_offset));
                    }
                    Ok(true)
                })
                .map_err(io_at(seg.log_path()))?;
                m
            };
            if let Some((ts, offset)) = candidate {
                if best.is_none_or(|(t, _, _)| ts > t) {
                    best = Some((ts, i, offset));
                }
            }
        }
        let Some((_, i, offset)) = best else {
            return Ok(None);
        };
        let seg = &self.segments[i];
        let Some((pos, h)) = seg.find_batch(offset).map_err(io_at(seg.log_path()))? else {
            return Ok(None);
        };
        let first = h.base_offset.max(log_start);
        if h.is_compressed() || h.is_log_append_time() {
            return Ok(Some((first, h.max_timestamp)));
        }
        let bytes = seg
            .read_exact(pos, h.total_len())
            .map_err(io_at(seg.log_path()))?;
        let mut best_record: Option<(i64, i64)> = None;
        for record in batch::record_timestamps(&bytes, h) {
            match record {
                Ok((o, t)) if o >= log_start => {
                    if best_record.is_none_or(|(_, bt)| t > bt) {
                        best_record = Some((o, t));
                    }
                }
                Ok(_) => {}
                Err(_) => return Ok(Some((first, h.max_timestamp))),
            }
        }
        Ok(best_record.or(Some((first, h.max_timestamp))))
    }

    /// DeleteRecords: moves the log start offset up to `offset` (at most the log
    /// end), persists it, and deletes the segments wholly below it. Returns the
    /// new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, Error> {
        self.check_writable()?;
        if offset > self.next_offset || offset < 0 {
            return Err(self.out_of_range(offset));
        }
        if offset <= self.log_start_offset {
            return Ok(self.log_start_offset);
        }
        recovery::write_checkpoint(&self.dir, LOG_START_OFFSET_FILE, offset)?;
        self.log_start_offset = offset;
        let n = self.segments_below_log_start();
        for seg in self.segments.drain(..n) {
            seg.delete();
        }
        if n > 0 {
            self.delete_old_producer_snapshots();
        }
        let truncated = self.epochs.truncate_from_start(offset);
        self.poison_on_io(truncated)?;
        Ok(offset)
    }

    /// How many leading segments lie wholly below the log start offset (never
    /// the active one).
    fn segments_below_log_start(&self) -> usize {
        self.segments
            .windows(2)
            .take_while(|w| w[1].base_offset() <= self.log_start_offset)
            .count()
    }

    /// Group commit, step 1 (under the lock): every file written since the
    /// last flush (open logs, index files by path) and the log end offset
    /// they cover. Step 2, without
    /// the lock: [`SyncTarget::sync`]. Step 3, under the lock again:
    /// [`Log::mark_flushed`] on success or [`Log::poison`] on failure.
    pub fn sync_target(&self) -> SyncTarget {
        let mut files = Vec::new();
        let mut paths = Vec::new();
        if self.next_offset > self.recovery_point {
            let active = self.segments.len().saturating_sub(1);
            for (i, seg) in self.segments.iter().enumerate() {
                if seg.next_offset() <= self.recovery_point {
                    continue;
                }
                files.push(seg.log_file());
                if i == active {
                    // Recovery always rescans the active segment and rebuilds
                    // its indexes, so acknowledging a write needs only its log
                    // (the small `.txnindex` is synced along anyway).
                    paths.extend(seg.txn_index_path());
                } else {
                    paths.extend(seg.index_paths());
                }
            }
        }
        self.target_generation
            .store(self.generation, Ordering::Relaxed);
        SyncTarget {
            files,
            paths,
            end_offset: self.next_offset,
        }
    }

    /// Records that the last [`SyncTarget`] was synced: the recovery point moves
    /// up to `end_offset`, its [`SyncTarget::end_offset`]. Ignored if the log is
    /// poisoned (an fsync after a failed one proves nothing) or was truncated
    /// since the target was taken (its offsets may have been rewritten).
    pub fn mark_flushed(&mut self, end_offset: i64) {
        if self.poisoned.is_some()
            || self.target_generation.load(Ordering::Relaxed) != self.generation
        {
            return;
        }
        self.recovery_point = self.recovery_point.max(end_offset.min(self.next_offset));
        self.last_flush_ms = wall_clock_ms();
    }

    /// Flushes inline: fsync of everything written since the last flush. A
    /// failure poisons the log.
    pub fn flush(&mut self) -> Result<(), Error> {
        self.check_writable()?;
        let target = self.sync_target();
        if let Err(e) = target.sync() {
            let dir = self.dir.clone();
            return Err(self.poisoned_io(&dir, e));
        }
        self.mark_flushed(target.end_offset());
        Ok(())
    }

    /// Persists the recovery point (`recovery-point`, temp file + fsync +
    /// rename). On the next open, segments wholly below it are trusted.
    pub fn checkpoint(&self) -> Result<(), Error> {
        recovery::write_checkpoint(&self.dir, RECOVERY_POINT_FILE, self.recovery_point)
    }

    /// Drops every batch at and after `offset`; a batch containing `offset` is
    /// dropped whole, so the log end may end up below `offset`. Segments that
    /// start at or after it are deleted. The recovery point is checkpointed.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), Error> {
        self.check_writable()?;
        if offset >= self.next_offset {
            return Ok(());
        }
        if offset < self.log_start_offset {
            return Err(self.out_of_range(offset));
        }
        // Snapshots above the cut hold batches about to go. Deleted first, so
        // that no crash leaves one to be loaded once their offsets are
        // written again.
        let stale = producer_state::delete_snapshots_where(&self.dir, |o| o > offset);
        self.poison_on_io(stale)?;
        let mut deleted = false;
        while self.segments.len() > 1 && self.active().base_offset() >= offset {
            if let Some(seg) = self.segments.pop() {
                seg.delete();
                deleted = true;
            }
        }
        let last = self.segments.len() - 1;
        if let Err(e) = self.segments[last].truncate_to(offset, &self.config) {
            let path = self.segments[last].log_path().to_path_buf();
            return Err(self.poisoned_io(&path, e));
        }
        if deleted {
            if let Err(e) = recovery::sync_dir(&self.dir) {
                let dir = self.dir.clone();
                return Err(self.poisoned_io(&dir, e));
            }
        }
        self.next_offset = self.segments[last].next_offset();
        self.generation += 1;
        self.recovery_point = self.recovery_point.min(self.next_offset);
        // The log end, not `offset`: a batch containing `offset` went whole,
        // and so must an epoch that started in it.
        let truncated = self.epochs.truncate_from_end(self.next_offset);
        self.poison_on_io(truncated)?;
        let reloaded =
            recovery::load_producer_state(&self.dir, &mut self.segments, self.next_offset);
        self.producers = self.poison_on_io(reloaded)?;
        if self.log_start_offset > self.next_offset {
            self.log_start_offset = self.next_offset;
            recovery::write_checkpoint(&self.dir, LOG_START_OFFSET_FILE, self.log_start_offset)?;
        }
        self.checkpoint()
    }

    /// Empties the log and restarts it at `offset`: every segment is deleted,
    /// one empty segment starts at `offset`, which becomes log start, log end
    /// and recovery point, and the epoch cache and producer state are
    /// cleared. For a follower whose log end is below the leader's log start
    /// (or that must otherwise start over). Any failure poisons the log.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), Error> {
        self.check_writable()?;
        if offset < 0 {
            return Err(self.out_of_range(offset));
        }
        let result = self.restart_at(offset);
        self.poison_on_io(result)
    }

    /// The steps of [`Log::truncate_fully_and_start_at`], ordered so that a
    /// crash at any point opens as a consistent log, the old one (perhaps
    /// starting later) or the new one:
    /// - the epoch file and producer snapshots go first, so an open that
    ///   still finds old segments rebuilds both from them rather than trusting
    ///   half-updated files;
    /// - the log start checkpoint comes next: with old segments still there,
    ///   opening either serves them from `offset` on or, if they end below
    ///   it, deletes them and starts empty at `offset`, the intended result;
    /// - the new segment exists before the old ones are deleted, so a failure
    ///   never leaves the log without segments.
    fn restart_at(&mut self, offset: i64) -> Result<(), Error> {
        self.epochs.remove_file()?;
        producer_state::delete_snapshots_where(&self.dir, |_| true)?;
        self.producers = ProducerStateManager::empty(&self.dir);
        recovery::write_checkpoint(&self.dir, LOG_START_OFFSET_FILE, offset)?;
        let now_ms = wall_clock_ms();
        let fresh = match self.segments.iter().position(|s| s.base_offset() == offset) {
            // A new segment would have this one's file names: empty it instead.
            Some(i) => {
                let seg = &mut self.segments[i];
                seg.truncate_to(offset, &self.config)
                    .map_err(io_at(seg.log_path()))?;
                self.segments.remove(i)
            }
            None => Segment::create(&self.dir, offset, &self.config, now_ms).map_err(io_at(
                &segment::file_path(&self.dir, offset, segment::LOG_EXT),
            ))?,
        };
        for seg in std::mem::replace(&mut self.segments, vec![fresh]) {
            seg.delete();
        }
        recovery::sync_dir(&self.dir).map_err(io_at(&self.dir))?;
        self.generation += 1;
        self.log_start_offset = offset;
        self.next_offset = offset;
        self.recovery_point = offset;
        self.checkpoint()?;
        self.epochs.clear_and_persist()
    }

    /// Clean shutdown: trims the active segment's indexes, flushes everything,
    /// writes the recovery point and snapshots the producer state at the log
    /// end.
    pub fn close(mut self) -> Result<(), Error> {
        self.check_writable()?;
        let last = self.segments.len() - 1;
        let finished = self.segments[last].finish();
        if let Err(e) = finished {
            let path = self.segments[last].log_path().to_path_buf();
            return Err(self.poisoned_io(&path, e));
        }
        self.flush()?;
        self.segments[last]
            .sync_indexes()
            .map_err(io_at(self.segments[last].log_path()))?;
        self.checkpoint()?;
        self.producers.take_snapshot(self.next_offset)
    }

    /// Deletes the partition directory and everything in it (DeleteTopics).
    pub fn delete(self) -> Result<(), Error> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(&dir).map_err(io_at(&dir))
    }
}

/// The transaction marker of each batch of a validated payload, `None` for
/// batches that are not markers.
fn control_markers(records: &[u8]) -> Vec<Option<ControlMarker>> {
    batch::headers(records)
        .flatten()
        .map(|(pos, _)| batch::control_record(&records[pos..]))
        .collect()
}

/// Each batch of a validated leader payload with the offsets it will take
/// when written at `base_offset`.
fn planned_offsets(records: &[u8], base_offset: i64) -> Vec<(batch::BatchHeader, i64, i64)> {
    let mut next = base_offset;
    batch::headers(records)
        .flatten()
        .map(|(_, header)| {
            let first = next;
            next += i64::from(header.last_offset_delta) + 1;
            (header, first, next - 1)
        })
        .collect()
}

/// In the batch at `pos`, the first record at or after `log_start` whose
/// timestamp is `>= ts`.
fn first_record_at_or_after(
    seg: &Segment,
    pos: u64,
    h: &batch::BatchHeader,
    ts: i64,
    log_start: i64,
) -> io::Result<Option<(i64, i64)>> {
    let first = h.base_offset.max(log_start);
    if h.is_compressed() || h.is_log_append_time() {
        return Ok(Some((first, h.max_timestamp)));
    }
    let bytes = seg.read_exact(pos, h.total_len())?;
    for record in batch::record_timestamps(&bytes, *h) {
        match record {
            Ok((offset, t)) => {
                if offset >= log_start && t >= ts {
                    return Ok(Some((offset, t)));
                }
            }
            // Undecodable records: fall back to the compressed-batch answer.
            Err(_) => return Ok(Some((first, h.max_timestamp))),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests;
