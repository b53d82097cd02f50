//! Producer state for idempotent and transactional producers: Kafka's
//! `ProducerStateManager`. Per producer id it keeps the producer epoch and the
//! last five batches written, so that a leader refuses sequence gaps and
//! fenced producers, and answers a retried batch with the offsets it was first
//! written at instead of writing it twice; and the first offset of the
//! producer's transaction in progress, so that the log knows its last stable
//! offset and which transactions an abort marker ends.
//!
//! A transactional data batch starts a transaction unless one is in progress;
//! a control batch (commit or abort marker) ends it. Batches with a producer
//! id but sequence -1 were written by a coordinator on the broker itself
//! (transactional offset commits): they take part in transactions but not in
//! sequence checks or tracking.
//!
//! The state follows from the batch headers alone, so it is persisted only to
//! make opening fast: a snapshot `{offset:020}.snapshot` in the partition
//! directory holds the state made by every batch below `offset`. It is taken
//! when a segment rolls (at the new segment's base offset), on a clean close
//! and periodically (at the log end); opening loads the latest usable snapshot
//! and replays the batch headers from its offset to the log end, so a crash
//! loses nothing.
//!
//! Snapshot format, big-endian. The header is laid out like Kafka's, the body
//! is not: Kafka keeps only each producer's last batch, which after a restart
//! forgets the other four a client may still retry.
//!
//! ```text
//! version         i16   2 (1 is still read: no txn_first_offset field)
//! crc             u32   CRC32C of every byte after this field
//! offset          i64   the offset the snapshot was taken at (its file name)
//! producer_count  i32
//! producer_count times, by increasing producer id:
//!   producer_id       i64
//!   epoch             i16
//!   last_timestamp    i64   maxTimestamp of its latest batch or marker
//!   txn_first_offset  i64   first offset of its transaction in progress, -1 if none (v2 only)
//!   batch_count       i8    0 to 5, oldest first
//!   batch_count times:
//!     first_seq i32, last_seq i32, first_offset i64, last_offset i64, max_timestamp i64
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::batch::{BatchHeader, ControlMarker};
use super::recovery::{sync_dir, write_file_atomically};
use super::txn_index::AbortedTxn;
use super::{io_at, Error};

/// Batches remembered per producer (Kafka's `NUM_BATCHES_TO_RETAIN`): the
/// most a producer has in flight, hence the most it can retry.
pub const BATCHES_TO_RETAIN: usize = 5;
/// Extension of snapshot files (Kafka's).
pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
/// Snapshots kept; older ones are deleted when a new one is written.
const SNAPSHOTS_TO_KEEP: usize = 3;
const SNAPSHOT_VERSION: i16 = 2;
/// The version before transactions, still loaded.
const SNAPSHOT_VERSION_1: i16 = 1;
/// `baseSequence` of batches without a sequence: markers, and batches a
/// coordinator wrote for a producer.
const NO_SEQUENCE: i32 = -1;
/// version + crc
const SNAPSHOT_HEADER_LEN: usize = 6;
const BATCH_META_LEN: usize = 4 + 4 + 8 + 8 + 8;

/// Why a leader refused a producer's batch. The handler maps each variant to
/// the Kafka error of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error(
        "out of order sequence number for producer {producer_id}: expected {expected}, got {got}; \
         a batch before it was lost or a retry was reordered, so the producer must reset its \
         sequence"
    )]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        got: i32,
    },
    #[error(
        "producer {producer_id} wrote with epoch {got}, older than its current epoch {current}: \
         a newer instance of the producer fenced this one"
    )]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        got: i16,
    },
    #[error(
        "unknown producer id {0}: this partition has no state for it (never written or \
         expired) and its batch does not start at sequence 0; the producer must reinitialise"
    )]
    UnknownProducerId(i64),
}

/// What the state says about a leader's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// In sequence (or not from an idempotent producer): write it.
    Append,
    /// Already written, at these offsets: answer with them, write nothing.
    Duplicate {
        first_offset: i64,
        last_offset: i64,
        max_timestamp: i64,
    },
}

/// Where one batch of a producer was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

/// The state of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// `maxTimestamp` of the latest batch; expiration counts from it.
    pub last_timestamp: i64,
    /// The latest batches of `epoch`, oldest first, at most
    /// [`BATCHES_TO_RETAIN`].
    batches: VecDeque<BatchMetadata>,
    /// First offset of the producer's transaction in progress in this
    /// partition.
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn new(epoch: i16) -> ProducerEntry {
        ProducerEntry {
            epoch,
            last_timestamp: -1,
            batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
            current_txn_first_offset: None,
        }
    }

    /// A marker or coordinator batch of a newer epoch moves the producer to
    /// it; the batches of the old epoch go, as in [`ProducerEntry::add`], so
    /// the new epoch starts at sequence 0. An older epoch changes nothing.
    fn bump_epoch(&mut self, epoch: i16) {
        if epoch > self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
    }

    pub fn batches(&self) -> &VecDeque<BatchMetadata> {
        &self.batches
    }

    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }

    /// The sequence the next batch of the same epoch must start at.
    fn expected_seq(&self) -> i32 {
        self.last_seq().map_or(0, next_sequence)
    }

    /// Kafka's `addBatch`: a different epoch starts the batch list over.
    fn add(&mut self, epoch: i16, batch: BatchMetadata) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
        self.batches.push_back(batch);
        self.last_timestamp = batch.max_timestamp;
    }
}

/// The sequence after `seq`; sequences wrap from `i32::MAX` to 0.
fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX {
        0
    } else {
        seq + 1
    }
}

/// Sequence of the last record of a batch starting at `base_seq` (Kafka's
/// `DefaultRecordBatch.incrementSequence`).
pub fn last_sequence(base_seq: i32, last_offset_delta: i32) -> i32 {
    if base_seq > i32::MAX - last_offset_delta {
        last_offset_delta - (i32::MAX - base_seq) - 1
    } else {
        base_seq + last_offset_delta
    }
}

/// Batches whose sequence is checked and tracked: data batches of an
/// idempotent producer. Control batches (transaction markers) carry no
/// sequence.
fn tracked(h: &BatchHeader) -> bool {
    h.producer_id >= 0 && !h.is_control()
}

fn metadata(h: &BatchHeader, first_offset: i64, last_offset: i64) -> BatchMetadata {
    BatchMetadata {
        first_seq: h.base_sequence,
        last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
        first_offset,
        last_offset,
        max_timestamp: h.max_timestamp,
    }
}

/// Kafka's `ProducerAppendInfo` checks of a client batch against the state of
/// its producer.
fn check_against(entry: Option<&ProducerEntry>, h: &BatchHeader) -> Result<Check, ProducerError> {
    let producer_id = h.producer_id;
    let got = h.base_sequence;
    let Some(entry) = entry else {
        // Kafka accepts any sequence when the producer's batches were all
        // removed from the log start; this log keeps no such record, so only
        // a fresh producer (sequence 0) is accepted.
        return if got == 0 {
            Ok(Check::Append)
        } else {
            Err(ProducerError::UnknownProducerId(producer_id))
        };
    };
    if h.producer_epoch == entry.epoch {
        let last_seq = last_sequence(got, h.last_offset_delta);
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == got && b.last_seq == last_seq)
        {
            return Ok(Check::Duplicate {
                first_offset: b.first_offset,
                last_offset: b.last_offset,
                max_timestamp: b.max_timestamp,
            });
        }
    }
    if h.producer_epoch < entry.epoch {
        return Err(ProducerError::InvalidProducerEpoch {
            producer_id,
            current: entry.epoch,
            got: h.producer_epoch,
        });
    }
    let expected = if h.producer_epoch > entry.epoch {
        0
    } else {
        entry.expected_seq()
    };
    if got == expected {
        Ok(Check::Append)
    } else {
        Err(ProducerError::OutOfOrderSequence {
            producer_id,
            expected,
            got,
        })
    }
}

/// The producer state of one partition and its snapshots.
#[derive(Debug)]
pub struct ProducerStateManager {
    dir: PathBuf,
    producers: BTreeMap<i64, ProducerEntry>,
    /// Transactions in progress: first offset -> producer id. The smallest
    /// key bounds the last stable offset.
    ongoing: BTreeMap<i64, i64>,
    /// Transactions ended by a marker the high watermark has not passed yet
    /// (Kafka's unreplicated transactions): first offset -> marker offset.
    /// Not in snapshots: a restart forgets them.
    unreplicated: BTreeMap<i64, i64>,
    /// Offset of a snapshot on disk that holds exactly this state, if any.
    snapshot_offset: Option<i64>,
}

impl ProducerStateManager {
    /// An empty state for the partition directory `dir`.
    pub(crate) fn empty(dir: &Path) -> ProducerStateManager {
        ProducerStateManager::with_producers(dir, BTreeMap::new(), None)
    }

    /// A state of `producers`, with the set of transactions in progress
    /// taken from them.
    fn with_producers(
        dir: &Path,
        producers: BTreeMap<i64, ProducerEntry>,
        snapshot_offset: Option<i64>,
    ) -> ProducerStateManager {
        let ongoing = producers
            .iter()
            .filter_map(|(&pid, e)| e.current_txn_first_offset.map(|first| (first, pid)))
            .collect();
        ProducerStateManager {
            dir: dir.to_path_buf(),
            producers,
            ongoing,
            unreplicated: BTreeMap::new(),
            snapshot_offset,
        }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks one leader batch before it is written. Batches without a
    /// producer id (and control batches) are always [`Check::Append`].
    pub fn check(&self, header: &BatchHeader) -> Result<Check, ProducerError> {
        if !tracked(header) {
            return Ok(Check::Append);
        }
        check_against(self.producers.get(&header.producer_id), header)
    }

    /// Checks every batch of a leader payload, given with the offsets it
    /// would be written at, each against the state as the batches before it
    /// would leave it. [`Check::Append`] if all are to be written;
    /// [`Check::Duplicate`] spanning the originals if every batch was already
    /// written. A payload mixing both is refused as out of sequence at its
    /// first duplicate, as is any batch failing [`ProducerStateManager::check`].
    pub fn check_payload(
        &self,
        batches: &[(BatchHeader, i64, i64)],
    ) -> Result<Check, ProducerError> {
        // Copies of the entries the payload changes, updated batch by batch.
        let mut scratch: BTreeMap<i64, ProducerEntry> = BTreeMap::new();
        let mut appends = false;
        // The span of the originals so far, and the error if the payload
        // turns out to mix duplicates with new batches.
        let mut duplicate: Option<(i64, i64, i64, ProducerError)> = None;
        for (h, first_offset, last_offset) in batches {
            if !tracked(h) {
                appends = true;
                continue;
            }
            let pid = h.producer_id;
            let entry = scratch.get(&pid).or_else(|| self.producers.get(&pid));
            let expected = entry.map_or(0, ProducerEntry::expected_seq);
            match check_against(entry, h)? {
                Check::Append => {
                    appends = true;
                    let copy = scratch.entry(pid).or_insert_with(|| {
                        self.producers
                            .get(&pid)
                            .cloned()
                            .unwrap_or_else(|| ProducerEntry::new(h.producer_epoch))
                    });
                    copy.add(h.producer_epoch, metadata(h, *first_offset, *last_offset));
                }
                Check::Duplicate {
                    first_offset,
                    last_offset,
                    max_timestamp,
                } => {
                    duplicate = Some(match duplicate {
                        None => (
                            first_offset,
                            last_offset,
                            max_timestamp,
                            ProducerError::OutOfOrderSequence {
                                producer_id: pid,
                                expected,
                                got: h.base_sequence,
                            },
                        ),
                        Some((first, _, max, err)) => {
                            (first, last_offset, max.max(max_timestamp), err)
                        }
                    });
                }
            }
        }
        match duplicate {
            None => Ok(Check::Append),
            Some((.., err)) if appends => Err(err),
            Some((first_offset, last_offset, max_timestamp, _)) => Ok(Check::Duplicate {
                first_offset,
                last_offset,
                max_timestamp,
            }),
        }
    }

    /// Checks the batches of a coordinator's payload (transaction markers,
    /// transactional offset commits): no sequence checks, but a marker of an
    /// epoch older than its producer's is refused, each batch against the
    /// state as the batches before it would leave it.
    pub fn check_coordinator_payload(
        &self,
        batches: &[(BatchHeader, i64, i64)],
    ) -> Result<(), ProducerError> {
        let mut epochs: BTreeMap<i64, i16> = BTreeMap::new();
        for (h, ..) in batches {
            let pid = h.producer_id;
            if pid < 0 {
                continue;
            }
            let current = epochs
                .get(&pid)
                .copied()
                .or_else(|| self.producers.get(&pid).map(|e| e.epoch));
            if let Some(current) = current {
                if h.is_control() && h.producer_epoch < current {
                    return Err(ProducerError::InvalidProducerEpoch {
                        producer_id: pid,
                        current,
                        got: h.producer_epoch,
                    });
                }
            }
            let newest = current.map_or(h.producer_epoch, |c| c.max(h.producer_epoch));
            epochs.insert(pid, newest);
        }
        Ok(())
    }

    /// Records any batch written at `first_offset..=last_offset` (by a
    /// leader after its checks, a follower, or recovery): `marker` is the
    /// transaction marker of a control batch ([`super::batch::control_record`]),
    /// `None` for other batches. Returns the transaction an abort marker
    /// ended, for the segment's transaction index.
    pub fn apply(
        &mut self,
        header: &BatchHeader,
        first_offset: i64,
        last_offset: i64,
        marker: Option<ControlMarker>,
    ) -> Option<AbortedTxn> {
        match marker {
            Some(marker) if header.is_control() => self.end_txn(header, first_offset, marker),
            _ => {
                self.update(header, first_offset, last_offset);
                None
            }
        }
    }

    /// Records a data batch written at `first_offset..=last_offset`: its
    /// sequence (unless it has none) and, if transactional, the start of a
    /// transaction. Batches without a producer id, and control batches, are
    /// ignored (see [`ProducerStateManager::apply`]).
    pub fn update(&mut self, header: &BatchHeader, first_offset: i64, last_offset: i64) {
        if !tracked(header) {
            return;
        }
        let pid = header.producer_id;
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch));
        if header.base_sequence == NO_SEQUENCE {
            entry.bump_epoch(header.producer_epoch);
            entry.last_timestamp = header.max_timestamp;
        } else {
            entry.add(
                header.producer_epoch,
                metadata(header, first_offset, last_offset),
            );
        }
        if header.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(first_offset);
            self.ongoing.insert(first_offset, pid);
        }
        self.snapshot_offset = None;
    }

    /// A marker at `offset` ends its producer's transaction, if one is in
    /// progress (a partition added to a transaction but never written to
    /// gets a marker too, which ends nothing). A newer epoch on the marker
    /// becomes the producer's (see [`ProducerEntry::bump_epoch`]); the
    /// marker itself is not added to the sequence list.
    fn end_txn(
        &mut self,
        header: &BatchHeader,
        offset: i64,
        marker: ControlMarker,
    ) -> Option<AbortedTxn> {
        let pid = header.producer_id;
        if pid < 0 {
            return None;
        }
        self.snapshot_offset = None;
        let entry = self
            .producers
            .entry(pid)
            .or_insert_with(|| ProducerEntry::new(header.producer_epoch));
        entry.bump_epoch(header.producer_epoch);
        entry.last_timestamp = header.max_timestamp;
        let first_offset = entry.current_txn_first_offset.take()?;
        self.ongoing.remove(&first_offset);
        self.unreplicated.insert(first_offset, offset);
        if marker.commit {
            return None;
        }
        // Kafka's rule: the first offset of the oldest transaction still in
        // progress (this one is no longer), not counting unreplicated ones.
        let last_stable_offset = self.ongoing.keys().next().copied().unwrap_or(offset + 1);
        Some(AbortedTxn {
            producer_id: pid,
            first_offset,
            last_offset: offset,
            last_stable_offset,
        })
    }

    /// The high watermark reached `high_watermark`: transactions whose marker
    /// is below it are stable.
    pub fn on_high_watermark(&mut self, high_watermark: i64) {
        self.unreplicated
            .retain(|_, marker| *marker >= high_watermark);
    }

    /// The first offset of the oldest transaction in progress or ended by a
    /// marker not yet below the high watermark; `None` if there is none.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        let ongoing = self.ongoing.keys().next();
        let unreplicated = self.unreplicated.keys().next();
        ongoing.into_iter().chain(unreplicated).min().copied()
    }

    /// `(producer id, first offset)` of every transaction in progress,
    /// oldest first.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.ongoing
            .iter()
            .map(|(&first, &pid)| (pid, first))
            .collect()
    }

    /// Forgets producers whose latest batch is `expiration_ms` or more older
    /// than `now_ms` (Kafka's `producer.id.expiration.ms`), except those with
    /// a transaction in progress. Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some()
                || now_ms.saturating_sub(e.last_timestamp) < expiration_ms
        });
        let removed = before - self.producers.len();
        if removed > 0 {
            self.snapshot_offset = None;
        }
        removed
    }

    /// Writes the state as the snapshot at `offset` (temp file, fsync,
    /// rename) unless that snapshot already holds it, then deletes all but
    /// the newest snapshots.
    pub(crate) fn take_snapshot(&mut self, offset: i64) -> Result<(), Error> {
        if self.snapshot_offset == Some(offset) {
            return Ok(());
        }
        write_file_atomically(&self.dir, &snapshot_file_name(offset), &self.encode(offset))?;
        self.snapshot_offset = Some(offset);
        let offsets = list_snapshots(&self.dir)?;
        let old = offsets.len().saturating_sub(SNAPSHOTS_TO_KEEP);
        delete_snapshots(&self.dir, &offsets[..old])
    }

    fn encode(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            SNAPSHOT_HEADER_LEN
                + 12
                + self.producers.len() * (27 + BATCHES_TO_RETAIN * BATCH_META_LEN),
        );
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as i32).to_be_bytes());
        for (pid, e) in &self.producers {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            let txn_first_offset = e.current_txn_first_offset.unwrap_or(-1);
            out.extend_from_slice(&txn_first_offset.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[SNAPSHOT_HEADER_LEN..]);
        out[2..SNAPSHOT_HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// The snapshot at `offset` in `dir`, or `None` if it is missing or not a
    /// well-formed snapshot of that offset (logged).
    pub(crate) fn load_snapshot(
        dir: &Path,
        offset: i64,
    ) -> Result<Option<ProducerStateManager>, Error> {
        let path = dir.join(snapshot_file_name(offset));
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_at(&path)(e)),
        };
        let Some(producers) = decode(&bytes, offset) else {
            tracing::warn!(path = %path.display(), "ignoring corrupt producer state snapshot");
            return Ok(None);
        };
        Ok(Some(ProducerStateManager::with_producers(
            dir,
            producers,
            Some(offset),
        )))
    }
}

/// Reads big-endian fields from a byte slice; `None` past its end.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let end = self.pos.checked_add(N)?;
        let bytes = self.buf.get(self.pos..end)?.try_into().ok()?;
        self.pos = end;
        Some(bytes)
    }

    fn i8(&mut self) -> Option<i8> {
        self.take().map(i8::from_be_bytes)
    }

    fn i16(&mut self) -> Option<i16> {
        self.take().map(i16::from_be_bytes)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take().map(i32::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_be_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_be_bytes)
    }
}

/// The producers of a snapshot file, `None` unless it is well formed: version
/// 2 (or 1, without transactions), CRC matching, taken at `offset`, producer
/// ids increasing and not negative, transaction first offsets -1 or not
/// negative, at most five batches each, nothing after the last.
fn decode(bytes: &[u8], offset: i64) -> Option<BTreeMap<i64, ProducerEntry>> {
    let mut r = Reader { buf: bytes, pos: 0 };
    let version = r.i16()?;
    if version != SNAPSHOT_VERSION && version != SNAPSHOT_VERSION_1 {
        return None;
    }
    let crc = r.u32()?;
    if crc32c::crc32c(bytes.get(SNAPSHOT_HEADER_LEN..)?) != crc || r.i64()? != offset {
        return None;
    }
    let count = usize::try_from(r.i32()?).ok()?;
    let mut producers = BTreeMap::new();
    let mut previous = -1;
    for _ in 0..count {
        let pid = r.i64()?;
        if pid <= previous {
            return None;
        }
        previous = pid;
        let mut entry = ProducerEntry::new(r.i16()?);
        entry.last_timestamp = r.i64()?;
        if version == SNAPSHOT_VERSION {
            entry.current_txn_first_offset = match r.i64()? {
                -1 => None,
                first if first >= 0 => Some(first),
                _ => return None,
            };
        }
        let batches = usize::try_from(r.i8()?).ok()?;
        if batches > BATCHES_TO_RETAIN {
            return None;
        }
        for _ in 0..batches {
            entry.batches.push_back(BatchMetadata {
                first_seq: r.i32()?,
                last_seq: r.i32()?,
                first_offset: r.i64()?,
                last_offset: r.i64()?,
                max_timestamp: r.i64()?,
            });
        }
        producers.insert(pid, entry);
    }
    (r.pos == bytes.len()).then_some(producers)
}

pub(crate) fn snapshot_file_name(offset: i64) -> String {
    format!("{offset:020}.{SNAPSHOT_EXT}")
}

/// Offsets of the snapshots in `dir`, ascending.
pub(crate) fn list_snapshots(dir: &Path) -> Result<Vec<i64>, Error> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let name = entry.file_name();
        let Some((stem, ext)) = name.to_str().and_then(|n| n.split_once('.')) else {
            continue;
        };
        if ext == SNAPSHOT_EXT && stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(offset) = stem.parse() {
                offsets.push(offset);
            }
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// Deletes the snapshots at `offsets`, then makes the deletions durable.
pub(crate) fn delete_snapshots(dir: &Path, offsets: &[i64]) -> Result<(), Error> {
    if offsets.is_empty() {
        return Ok(());
    }
    for &offset in offsets {
        let path = dir.join(snapshot_file_name(offset));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_at(&path)(e)),
        }
    }
    sync_dir(dir).map_err(io_at(dir))
}

/// Deletes the snapshots of `dir` for which `doomed(offset)` holds.
pub(crate) fn delete_snapshots_where(
    dir: &Path,
    doomed: impl Fn(i64) -> bool,
) -> Result<(), Error> {
    let offsets: Vec<i64> = list_snapshots(dir)?
        .into_iter()
        .filter(|&o| doomed(o))
        .collect();
    delete_snapshots(dir, &offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PID: i64 = 1000;

    /// The header of a batch of `records` records of producer `pid`.
    fn header(pid: i64, epoch: i16, seq: i32, records: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: records - 1,
            base_timestamp: 100,
            max_timestamp: 100 + i64::from(seq),
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: records,
        }
    }

    /// A state with batches of 2 records at sequences 0, 2, ... of `n`
    /// batches, written at the same offsets.
    fn with_batches(dir: &Path, n: i32) -> ProducerStateManager {
        let mut state = ProducerStateManager::empty(dir);
        for i in 0..n {
            let h = header(PID, 0, 2 * i, 2);
            assert_eq!(state.check(&h), Ok(Check::Append));
            state.update(&h, i64::from(2 * i), i64::from(2 * i + 1));
        }
        state
    }

    #[test]
    fn a_new_producer_starts_at_sequence_zero() {
        let state = ProducerStateManager::empty(Path::new("/nonexistent"));
        assert_eq!(state.check(&header(PID, 0, 0, 3)), Ok(Check::Append));
        assert_eq!(
            state.check(&header(PID, 0, 5, 3)),
            Err(ProducerError::UnknownProducerId(PID))
        );
        // No producer id: not tracked, anything goes.
        assert_eq!(state.check(&header(-1, -1, -1, 3)), Ok(Check::Append));
    }

    #[test]
    fn sequences_must_follow_on_and_retries_are_duplicates() {
        let state = with_batches(Path::new("/nonexistent"), 3);
        assert_eq!(state.check(&header(PID, 0, 6, 1)), Ok(Check::Append));
        assert_eq!(
            state.check(&header(PID, 0, 7, 1)),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: PID,
                expected: 6,
                got: 7
            })
        );
        assert_eq!(
            state.check(&header(PID, 0, 2, 2)),
            Ok(Check::Duplicate {
                first_offset: 2,
                last_offset: 3,
                max_timestamp: 102
            })
        );
        // Same first sequence, other length: not the same batch.
        assert!(matches!(
            state.check(&header(PID, 0, 2, 1)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
    }

    #[test]
    fn only_the_last_five_batches_are_recognised() {
        let state = with_batches(Path::new("/nonexistent"), 6);
        assert_eq!(state.entry(PID).unwrap().batches().len(), 5);
        assert!(matches!(
            state.check(&header(PID, 0, 0, 2)),
            Err(ProducerError::OutOfOrderSequence {
                expected: 12,
                got: 0,
                ..
            })
        ));
        assert!(matches!(
            state.check(&header(PID, 0, 2, 2)),
            Ok(Check::Duplicate {
                first_offset: 2,
                ..
            })
        ));
    }

    #[test]
    fn epochs_fence_older_producers_and_restart_sequences() {
        let mut state = with_batches(Path::new("/nonexistent"), 2);
        state.update(&header(PID, 3, 0, 1), 4, 4);
        assert_eq!(
            state.check(&header(PID, 2, 1, 1)),
            Err(ProducerError::InvalidProducerEpoch {
                producer_id: PID,
                current: 3,
                got: 2
            })
        );
        assert_eq!(
            state.check(&header(PID, 4, 1, 1)),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: PID,
                expected: 0,
                got: 1
            })
        );
        assert_eq!(state.check(&header(PID, 4, 0, 1)), Ok(Check::Append));
        // The new epoch started the batch list over.
        assert_eq!(state.entry(PID).unwrap().batches().len(), 1);
        // A retry from the old epoch is fenced, not a duplicate.
        assert!(matches!(
            state.check(&header(PID, 0, 0, 2)),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX, 1), 0);
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        let mut state = ProducerStateManager::empty(Path::new("/nonexistent"));
        state.update(&header(PID, 0, i32::MAX - 1, 2), 0, 1);
        assert_eq!(state.check(&header(PID, 0, 0, 1)), Ok(Check::Append));
    }

    #[test]
    fn a_payload_is_checked_batch_by_batch_and_may_not_mix_duplicates() {
        let state = with_batches(Path::new("/nonexistent"), 2);
        let b = |seq, records, first: i64| {
            (
                header(PID, 0, seq, records),
                first,
                first + i64::from(records) - 1,
            )
        };
        // Two new batches in a row: the second follows the first.
        assert_eq!(
            state.check_payload(&[b(4, 2, 10), b(6, 1, 12)]),
            Ok(Check::Append)
        );
        assert!(state.check_payload(&[b(4, 2, 10), b(4, 2, 12)]).is_err());
        // Every batch a duplicate: the span of the originals.
        assert_eq!(
            state.check_payload(&[b(0, 2, 10), b(2, 2, 12)]),
            Ok(Check::Duplicate {
                first_offset: 0,
                last_offset: 3,
                max_timestamp: 102
            })
        );
        assert_eq!(
            state.check_payload(&[b(2, 2, 10), b(4, 1, 12)]),
            Err(ProducerError::OutOfOrderSequence {
                producer_id: PID,
                expected: 4,
                got: 2
            })
        );
        // Untracked batches are written.
        let plain = (header(-1, -1, -1, 1), 10, 10);
        assert_eq!(state.check_payload(&[plain]), Ok(Check::Append));
        assert!(state.check_payload(&[plain, b(0, 2, 11)]).is_err());
    }

    #[test]
    fn expiration_forgets_producers_idle_for_the_expiration_time() {
        let mut state = ProducerStateManager::empty(Path::new("/nonexistent"));
        state.update(&header(1, 0, 0, 1), 0, 0); // last timestamp 100
        let mut h = header(2, 0, 0, 1);
        h.max_timestamp = 500;
        state.update(&h, 1, 1);
        assert_eq!(state.expire(599, 500), 0);
        assert_eq!(state.expire(600, 500), 1);
        assert!(state.entry(1).is_none());
        assert_eq!(state.len(), 1);
        assert_eq!(
            state.check(&header(1, 0, 3, 1)),
            Err(ProducerError::UnknownProducerId(1))
        );
    }

    #[test]
    fn snapshots_round_trip_and_corrupt_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = with_batches(dir.path(), 7);
        state.update(&header(7, 2, 0, 1), 14, 14);
        state.take_snapshot(15).unwrap();
        let loaded = ProducerStateManager::load_snapshot(dir.path(), 15)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.producers, state.producers);
        assert!(ProducerStateManager::load_snapshot(dir.path(), 16)
            .unwrap()
            .is_none());

        let path = dir.path().join(snapshot_file_name(15));
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(ProducerStateManager::load_snapshot(dir.path(), 15)
            .unwrap()
            .is_none());
        // Renamed: the offset inside no longer matches the name.
        let good = state.encode(15);
        fs::write(dir.path().join(snapshot_file_name(20)), good).unwrap();
        assert!(ProducerStateManager::load_snapshot(dir.path(), 20)
            .unwrap()
            .is_none());
    }

    #[test]
    fn only_the_newest_snapshots_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = ProducerStateManager::empty(dir.path());
        for offset in [10, 20, 30, 40, 50] {
            state.take_snapshot(offset).unwrap();
        }
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![30, 40, 50]);
        delete_snapshots_where(dir.path(), |o| o > 35).unwrap();
        assert_eq!(list_snapshots(dir.path()).unwrap(), vec![30]);
    }

    // Transactions.

    use crate::commitlog::batch::{ATTR_CONTROL, ATTR_TRANSACTIONAL};

    /// A transactional data batch of `pid`, written at `first`.
    fn txn(pid: i64, epoch: i16, seq: i32, records: i32, first: i64) -> BatchHeader {
        BatchHeader {
            base_offset: first,
            attributes: ATTR_TRANSACTIONAL,
            ..header(pid, epoch, seq, records)
        }
    }

    /// A marker of `pid` at `offset`.
    fn marker_at(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset: offset,
            attributes: ATTR_TRANSACTIONAL | ATTR_CONTROL,
            ..header(pid, epoch, NO_SEQUENCE, 1)
        }
    }

    fn apply_txn(state: &mut ProducerStateManager, h: &BatchHeader) {
        assert_eq!(state.apply(h, h.base_offset, h.last_offset(), None), None);
    }

    fn end(
        state: &mut ProducerStateManager,
        pid: i64,
        offset: i64,
        commit: bool,
    ) -> Option<AbortedTxn> {
        let m = ControlMarker {
            commit,
            coordinator_epoch: 0,
        };
        state.apply(&marker_at(pid, 0, offset), offset, offset, Some(m))
    }

    #[test]
    fn markers_end_transactions_and_aborts_report_the_last_stable_offset() {
        let mut state = ProducerStateManager::empty(Path::new("/nonexistent"));
        apply_txn(&mut state, &txn(1, 0, 0, 2, 0));
        apply_txn(&mut state, &txn(2, 0, 0, 1, 2));
        apply_txn(&mut state, &txn(1, 0, 2, 1, 3));
        assert_eq!(state.entry(1).unwrap().current_txn_first_offset, Some(0));
        assert_eq!(state.ongoing_transactions(), vec![(1, 0), (2, 2)]);
        assert_eq!(state.first_unstable_offset(), Some(0));
        // Producer 1 aborts while 2's transaction (from offset 2) goes on.
        assert_eq!(
            end(&mut state, 1, 4, false),
            Some(AbortedTxn {
                producer_id: 1,
                first_offset: 0,
                last_offset: 4,
                last_stable_offset: 2
            })
        );
        assert_eq!(state.entry(1).unwrap().current_txn_first_offset, None);
        // The marker was not a sequenced batch.
        assert_eq!(state.entry(1).unwrap().last_seq(), Some(2));
        // Still unstable until the high watermark passes the marker.
        assert_eq!(state.first_unstable_offset(), Some(0));
        state.on_high_watermark(4);
        assert_eq!(state.first_unstable_offset(), Some(0));
        state.on_high_watermark(5);
        assert_eq!(state.first_unstable_offset(), Some(2));
        // A commit ends producer 2's without an entry; with no other
        // transaction, an abort's last stable offset is after its marker.
        assert_eq!(end(&mut state, 2, 5, true), None);
        state.on_high_watermark(6);
        assert_eq!(state.first_unstable_offset(), None);
        apply_txn(&mut state, &txn(2, 0, 1, 1, 6));
        assert_eq!(
            end(&mut state, 2, 7, false).map(|t| t.last_stable_offset),
            Some(8)
        );
        // A marker without a transaction in progress ends nothing.
        assert_eq!(end(&mut state, 2, 8, false), None);
        assert_eq!(end(&mut state, 3, 9, false), None);
        assert!(state.ongoing_transactions().is_empty());
    }

    #[test]
    fn a_marker_of_a_newer_epoch_moves_the_producer_to_it() {
        let mut state = with_batches(Path::new("/nonexistent"), 2);
        let m = ControlMarker {
            commit: false,
            coordinator_epoch: 0,
        };
        state.apply(&marker_at(PID, 1, 4), 4, 4, Some(m));
        assert_eq!(state.entry(PID).unwrap().epoch, 1);
        // The new epoch starts at sequence 0, the old one is fenced.
        assert_eq!(state.check(&header(PID, 1, 0, 1)), Ok(Check::Append));
        assert!(matches!(
            state.check(&header(PID, 0, 4, 1)),
            Err(ProducerError::InvalidProducerEpoch { .. })
        ));
        // A coordinator's marker of an older epoch is refused.
        let old = (marker_at(PID, 0, 5), 5, 5);
        assert_eq!(
            state.check_coordinator_payload(&[old]),
            Err(ProducerError::InvalidProducerEpoch {
                producer_id: PID,
                current: 1,
                got: 0
            })
        );
        // Also behind a marker of the same payload that bumps the epoch.
        let newer = (marker_at(7, 3, 5), 5, 5);
        let older = (marker_at(7, 2, 6), 6, 6);
        assert!(state.check_coordinator_payload(&[newer, older]).is_err());
        assert_eq!(state.check_coordinator_payload(&[newer]), Ok(()));
    }

    #[test]
    fn batches_without_a_sequence_join_transactions_but_not_sequences() {
        let mut state = ProducerStateManager::empty(Path::new("/nonexistent"));
        let h = txn(5, 0, NO_SEQUENCE, 1, 10);
        assert_eq!(state.check_coordinator_payload(&[(h, 10, 10)]), Ok(()));
        apply_txn(&mut state, &h);
        apply_txn(&mut state, &txn(5, 0, NO_SEQUENCE, 1, 11));
        let entry = state.entry(5).unwrap();
        assert!(entry.batches().is_empty());
        assert_eq!(entry.current_txn_first_offset, Some(10));
        assert_eq!(state.ongoing_transactions(), vec![(5, 10)]);
    }

    #[test]
    fn expiration_keeps_producers_with_a_transaction_in_progress() {
        let mut state = ProducerStateManager::empty(Path::new("/nonexistent"));
        apply_txn(&mut state, &txn(1, 0, 0, 1, 0)); // last timestamp 100
        state.update(&header(2, 0, 0, 1), 1, 1);
        assert_eq!(state.expire(10_000, 500), 1);
        assert!(state.entry(1).is_some());
        assert!(state.entry(2).is_none());
        end(&mut state, 1, 2, true);
        assert_eq!(state.expire(10_000, 500), 1);
        assert!(state.is_empty());
    }

    #[test]
    fn snapshots_keep_transactions_in_progress() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = with_batches(dir.path(), 2);
        apply_txn(&mut state, &txn(8, 1, 0, 2, 4));
        apply_txn(&mut state, &txn(9, 0, 0, 1, 6));
        end(&mut state, 9, 7, true);
        state.take_snapshot(8).unwrap();
        let loaded = ProducerStateManager::load_snapshot(dir.path(), 8)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.producers, state.producers);
        assert_eq!(loaded.ongoing_transactions(), vec![(8, 4)]);
        assert_eq!(loaded.first_unstable_offset(), Some(4));
    }

    /// A version 1 snapshot (before transactions) of `producers`:
    /// `(pid, epoch, last_timestamp, batches)`.
    fn encode_v1(offset: i64, producers: &[(i64, i16, i64, &[BatchMetadata])]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&SNAPSHOT_VERSION_1.to_be_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(producers.len() as i32).to_be_bytes());
        for (pid, epoch, last_timestamp, batches) in producers {
            out.extend_from_slice(&pid.to_be_bytes());
            out.extend_from_slice(&epoch.to_be_bytes());
            out.extend_from_slice(&last_timestamp.to_be_bytes());
            out.push(batches.len() as u8);
            for b in *batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.max_timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out[SNAPSHOT_HEADER_LEN..]);
        out[2..SNAPSHOT_HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn version_1_snapshots_still_load_without_transactions() {
        let dir = tempfile::tempdir().unwrap();
        let state = with_batches(dir.path(), 3);
        let batches: Vec<BatchMetadata> = state
            .entry(PID)
            .unwrap()
            .batches()
            .iter()
            .copied()
            .collect();
        let bytes = encode_v1(6, &[(PID, 0, 104, &batches), (PID + 1, 2, 50, &[])]);
        fs::write(dir.path().join(snapshot_file_name(6)), bytes).unwrap();
        let loaded = ProducerStateManager::load_snapshot(dir.path(), 6)
            .unwrap()
            .unwrap();
        assert_eq!(loaded.entry(PID), state.entry(PID));
        assert_eq!(loaded.entry(PID + 1).unwrap().epoch, 2);
        assert_eq!(
            loaded.entry(PID + 1).unwrap().current_txn_first_offset,
            None
        );
        assert!(loaded.ongoing_transactions().is_empty());
        assert_eq!(loaded.check(&header(PID, 0, 6, 1)), Ok(Check::Append));
        // Written back as version 2.
        let mut loaded = loaded;
        loaded.update(&header(PID, 0, 6, 1), 6, 6);
        loaded.take_snapshot(7).unwrap();
        let bytes = fs::read(dir.path().join(snapshot_file_name(7))).unwrap();
        assert_eq!(&bytes[..2], &SNAPSHOT_VERSION.to_be_bytes());
    }
}
