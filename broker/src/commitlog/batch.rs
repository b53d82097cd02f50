//! Record batch (record format v2, magic 2) headers: parsing, validation and the
//! two fields the broker stamps.
//!
//! The broker stores batches exactly as producers sent them. It never decodes the
//! records on the produce or fetch path; only `offset_for_timestamp` and
//! `max_timestamp` walk the records of uncompressed batches.

use thiserror::Error;

/// Size of the fixed v2 batch header, up to and including `recordCount`.
pub const HEADER_LEN: usize = 61;
/// `baseOffset` + `batchLength`: the bytes before what `batchLength` counts.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest legal `batchLength` (a header with no records).
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only record format accepted.
pub const MAGIC_V2: i8 = 2;
/// Highest known compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
pub const MAX_CODEC: i16 = 4;

/// Attribute bit: timestamps are the broker's append time (`maxTimestamp` for every record).
pub const ATTR_LOG_APPEND_TIME: i16 = 0x08;
/// Attribute bit: the batch belongs to a transaction.
pub const ATTR_TRANSACTIONAL: i16 = 0x10;
/// Attribute bit: control batch (transaction marker).
pub const ATTR_CONTROL: i16 = 0x20;
/// Attribute mask of the compression codec.
pub const ATTR_CODEC_MASK: i16 = 0x07;

// Byte positions of the header fields.
pub(crate) const BASE_OFFSET_AT: usize = 0;
pub(crate) const LENGTH_AT: usize = 8;
pub(crate) const LEADER_EPOCH_AT: usize = 12;
pub(crate) const MAGIC_AT: usize = 16;
pub(crate) const CRC_AT: usize = 17;
/// The CRC32C covers everything from `attributes` to the end of the batch.
pub(crate) const ATTRIBUTES_AT: usize = 21;
const LAST_OFFSET_DELTA_AT: usize = 23;
const BASE_TIMESTAMP_AT: usize = 27;
const MAX_TIMESTAMP_AT: usize = 35;
const PRODUCER_ID_AT: usize = 43;
const PRODUCER_EPOCH_AT: usize = 51;
const BASE_SEQUENCE_AT: usize = 53;
const RECORD_COUNT_AT: usize = 57;

/// Why a batch was refused.
///
/// `Corrupt` means the bytes were damaged (Kafka's CORRUPT_MESSAGE); `Invalid` means
/// they are intact but not acceptable (Kafka's INVALID_RECORD). `position` is the
/// byte position of the offending batch in the buffer that was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BatchError {
    #[error("corrupt record batch at byte {position}: {kind}")]
    Corrupt { position: usize, kind: CorruptKind },
    #[error("invalid record batch at byte {position}: {kind}")]
    Invalid { position: usize, kind: InvalidKind },
}

impl BatchError {
    /// True for damage (CORRUPT_MESSAGE), false for a well-formed but refused batch
    /// (INVALID_RECORD).
    pub fn is_corrupt(&self) -> bool {
        matches!(self, BatchError::Corrupt { .. })
    }

    /// Byte position of the offending batch.
    pub fn position(&self) -> usize {
        match self {
            BatchError::Corrupt { position, .. } | BatchError::Invalid { position, .. } => {
                *position
            }
        }
    }
}

/// The check a damaged batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum CorruptKind {
    #[error("only {available} bytes left, too few for a batch header")]
    TruncatedHeader { available: usize },
    #[error("batchLength {batch_length} is below the v2 minimum of 49")]
    LengthTooSmall { batch_length: i32 },
    #[error("batchLength says the batch needs {needed} bytes but only {available} are left")]
    Truncated { needed: u64, available: usize },
    #[error("CRC32C mismatch: header says {stored:#010x}, bytes give {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
}

/// The check an intact but unacceptable batch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum InvalidKind {
    #[error("the payload holds no record batch")]
    Empty,
    #[error("magic {0}: only record format v2 (magic 2) is accepted; upgrade the client")]
    Magic(i8),
    #[error("recordCount is {0}; a batch must hold at least one record")]
    RecordCount(i32),
    #[error("lastOffsetDelta is {0}; it must not be negative")]
    LastOffsetDelta(i32),
    #[error("compression codec {0} is unknown (0 to 4 are defined)")]
    Codec(i16),
    #[error(
        "control batch (transaction marker) from a client; only the transaction coordinator \
         writes markers, through WriteTxnMarkers"
    )]
    ControlFromClient,
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The 61-byte header of a v2 record batch, all fields as stored (big-endian on disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `buf`; `None` if fewer than 61 bytes.
    /// Does not validate anything.
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(buf, BASE_OFFSET_AT),
            batch_length: be_i32(buf, LENGTH_AT),
            partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
            magic: buf[MAGIC_AT] as i8,
            crc: be_i32(buf, CRC_AT) as u32,
            attributes: be_i16(buf, ATTRIBUTES_AT),
            last_offset_delta: be_i32(buf, LAST_OFFSET_DELTA_AT),
            base_timestamp: be_i64(buf, BASE_TIMESTAMP_AT),
            max_timestamp: be_i64(buf, MAX_TIMESTAMP_AT),
            producer_id: be_i64(buf, PRODUCER_ID_AT),
            producer_epoch: be_i16(buf, PRODUCER_EPOCH_AT),
            base_sequence: be_i32(buf, BASE_SEQUENCE_AT),
            record_count: be_i32(buf, RECORD_COUNT_AT),
        })
    }

    /// Bytes the whole batch occupies (`12 + batchLength`); meaningful once
    /// `batchLength >= 49` was checked.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the batch's last record.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset following the batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    /// Compression codec (`attributes & 7`).
    pub fn codec(&self) -> i16 {
        self.attributes & ATTR_CODEC_MASK
    }

    pub fn is_compressed(&self) -> bool {
        self.codec() != 0
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Structural checks on the batch starting at `buf[0]` (`position` is only for
/// the error): enough bytes for the header, magic 2, `batchLength >= 49` and the
/// batch wholly inside `buf`. Returns the header; the CRC is not checked.
pub fn check_frame(buf: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    check_header(buf, position, buf.len())
}

/// Like [`check_frame`] for a batch read from a stream where `available` bytes
/// remain from `buf[0]` on but `buf` may hold only the header.
pub(crate) fn check_header(
    buf: &[u8],
    position: usize,
    available: usize,
) -> Result<BatchHeader, BatchError> {
    let corrupt = |kind| BatchError::Corrupt { position, kind };
    let truncated = CorruptKind::TruncatedHeader { available };
    if buf.len() <= MAGIC_AT {
        return Err(corrupt(truncated));
    }
    let magic = buf[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(BatchError::Invalid {
            position,
            kind: InvalidKind::Magic(magic),
        });
    }
    let Some(header) = BatchHeader::parse(buf) else {
        return Err(corrupt(truncated));
    };
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(corrupt(CorruptKind::LengthTooSmall {
            batch_length: header.batch_length,
        }));
    }
    if header.total_len() > available {
        return Err(corrupt(CorruptKind::Truncated {
            needed: header.total_len() as u64,
            available,
        }));
    }
    Ok(header)
}

/// Full validation of the batch starting at `buf[0]`: [`check_frame`], then CRC32C
/// over `attributes..end`, codec, record count and `lastOffsetDelta`.
pub fn validate_batch(buf: &[u8], position: usize) -> Result<BatchHeader, BatchError> {
    let header = check_frame(buf, position)?;
    let computed = crc32c::crc32c(&buf[ATTRIBUTES_AT..header.total_len()]);
    if computed != header.crc {
        return Err(BatchError::Corrupt {
            position,
            kind: CorruptKind::CrcMismatch {
                stored: header.crc,
                computed,
            },
        });
    }
    let invalid = |kind| BatchError::Invalid { position, kind };
    if header.codec() > MAX_CODEC {
        return Err(invalid(InvalidKind::Codec(header.codec())));
    }
    if header.record_count <= 0 {
        return Err(invalid(InvalidKind::RecordCount(header.record_count)));
    }
    // Kafka does not require lastOffsetDelta == recordCount - 1 (compacted or
    // compressed batches may differ), only that it is not negative.
    if header.last_offset_delta < 0 {
        return Err(invalid(InvalidKind::LastOffsetDelta(
            header.last_offset_delta,
        )));
    }
    Ok(header)
}

/// What a validated produce payload holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadSummary {
    pub batches: usize,
    pub records: u64,
    /// Offsets the payload will take: the sum of `lastOffsetDelta + 1`.
    pub offsets: i64,
    /// Largest `maxTimestamp` of the payload's batches.
    pub max_timestamp: i64,
}

/// Validates every batch of a produce payload (one or more concatenated batches,
/// no trailing bytes). Nothing is allocated.
pub fn validate_payload(buf: &[u8]) -> Result<PayloadSummary, BatchError> {
    if buf.is_empty() {
        return Err(BatchError::Invalid {
            position: 0,
            kind: InvalidKind::Empty,
        });
    }
    let mut summary = PayloadSummary {
        batches: 0,
        records: 0,
        offsets: 0,
        max_timestamp: -1,
    };
    let mut pos = 0;
    while pos < buf.len() {
        let header = validate_batch(&buf[pos..], pos)?;
        summary.batches += 1;
        summary.records += header.record_count as u64;
        summary.offsets += i64::from(header.last_offset_delta) + 1;
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp);
        pos += header.total_len();
    }
    Ok(summary)
}

/// Refuses control batches in a client's payload (Kafka's rule: only the
/// transaction coordinator writes markers). Malformed framing is left to
/// validation.
pub fn check_no_control(buf: &[u8]) -> Result<(), BatchError> {
    match headers(buf).flatten().find(|(_, h)| h.is_control()) {
        Some((position, _)) => Err(BatchError::Invalid {
            position,
            kind: InvalidKind::ControlFromClient,
        }),
        None => Ok(()),
    }
}

/// Checks batch timestamps against `message.timestamp.before.max.ms` and
/// `message.timestamp.after.max.ms`: the batch's first and largest timestamps
/// must lie within `[now - before_max, now + after_max]`. Returns the first
/// offending timestamp. Malformed framing is left to validation.
pub fn check_timestamps(
    buf: &[u8],
    now_ms: i64,
    before_max: i64,
    after_max: i64,
) -> Result<(), i64> {
    let earliest = now_ms.saturating_sub(before_max);
    let latest = now_ms.saturating_add(after_max);
    for (_, h) in headers(buf).flatten() {
        for ts in [h.base_timestamp, h.max_timestamp] {
            if ts >= 0 && (ts < earliest || ts > latest) {
                return Err(ts);
            }
        }
    }
    Ok(())
}

/// Iterator over the batch headers of a byte slice: yields `(position, header)`
/// after [`check_frame`] (no CRC), and stops after the first error.
pub struct Headers<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates the headers of the concatenated batches in `buf`.
pub fn headers(buf: &[u8]) -> Headers<'_> {
    Headers {
        buf,
        pos: 0,
        failed: false,
    }
}

impl Iterator for Headers<'_> {
    type Item = Result<(usize, BatchHeader), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        match check_frame(&self.buf[self.pos..], self.pos) {
            Ok(header) => {
                let at = self.pos;
                self.pos += header.total_len();
                Some(Ok((at, header)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Rewrites the two fields the broker owns. Both lie outside the CRC.
pub(crate) fn stamp(batch: &mut [u8], base_offset: i64, leader_epoch: i32) {
    batch[BASE_OFFSET_AT..BASE_OFFSET_AT + 8].copy_from_slice(&base_offset.to_be_bytes());
    batch[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Marks a batch as `LogAppendTime` with `now_ms` as its timestamp, as Kafka
/// does for topics with `message.timestamp.type=LogAppendTime`. Both fields are
/// under the CRC, so it is recomputed (the only case where the broker does so).
pub(crate) fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, ATTRIBUTES_AT) | ATTR_LOG_APPEND_TIME;
    batch[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Reads a zigzag varlong (record fields) at `*pos`, advancing it.
pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        raw |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    Some(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<i32> {
    i32::try_from(read_varlong(buf, pos)?).ok()
}

/// Iterator over `(offset, timestamp)` of the records of an uncompressed batch.
/// A malformed record ends the walk with one `Err(MalformedRecord)`.
pub(crate) struct RecordTimestamps<'a> {
    batch: &'a [u8],
    header: BatchHeader,
    pos: usize,
    left: i32,
}

/// Walks the records of the uncompressed batch `batch` (whole, header included).
pub(crate) fn record_timestamps(batch: &[u8], header: BatchHeader) -> RecordTimestamps<'_> {
    RecordTimestamps {
        batch,
        header,
        pos: HEADER_LEN,
        left: header.record_count,
    }
}

/// A record that could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MalformedRecord;

impl Iterator for RecordTimestamps<'_> {
    type Item = Result<(i64, i64), MalformedRecord>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left <= 0 {
            return None;
        }
        self.left -= 1;
        let item = (|| {
            let len = usize::try_from(read_varint(self.batch, &mut self.pos)?).ok()?;
            let start = self.pos;
            let end = start.checked_add(len)?;
            if end > self.batch.len() {
                return None;
            }
            let record = &self.batch[..end];
            let mut p = start + 1; // attributes
            let ts_delta = read_varlong(record, &mut p)?;
            let offset_delta = read_varint(record, &mut p)?;
            self.pos = end;
            Some((
                self.header.base_offset + i64::from(offset_delta),
                self.header.base_timestamp.wrapping_add(ts_delta),
            ))
        })();
        match item {
            Some(v) => Some(Ok(v)),
            None => {
                self.left = 0;
                Some(Err(MalformedRecord))
            }
        }
    }
}

/// Appends `v` as a zigzag varlong.
pub(crate) fn write_varlong(out: &mut Vec<u8>, v: i64) {
    let mut raw = ((v << 1) ^ (v >> 63)) as u64;
    while raw >= 0x80 {
        out.push((raw as u8 & 0x7f) | 0x80);
        raw >>= 7;
    }
    out.push(raw as u8);
}

fn write_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            write_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => write_varlong(out, -1),
    }
}

/// Test support: a record as `(key, value, timestamp)`.
#[doc(hidden)]
pub type TestRecord<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Test support: builds a v2 batch of `(key, value, timestamp)` records with a
/// correct CRC, base offset 0, leader epoch -1, no producer id. `attributes` is
/// stored as given; the records are never actually compressed, so a codec bit only
/// makes the batch look compressed to the log.
#[doc(hidden)]
pub fn build_batch(records: &[TestRecord<'_>], attributes: i16) -> Vec<u8> {
    encode_batch(records, attributes, -1, -1, -1)
}

/// An uncompressed v2 batch of `(key, value, timestamp)` records at offset
/// deltas 0, 1, ..., with base offset 0, leader epoch -1 and a correct CRC.
fn encode_batch(
    records: &[TestRecord<'_>],
    attributes: i16,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
) -> Vec<u8> {
    let base_ts = records.first().map_or(-1, |r| r.2);
    let max_ts = records.iter().map(|r| r.2).max().unwrap_or(-1);
    let mut out = vec![0u8; HEADER_LEN];
    let mut body = Vec::new();
    for (i, (key, value, ts)) in records.iter().enumerate() {
        body.clear();
        body.push(0); // record attributes
        write_varlong(&mut body, ts - base_ts);
        write_varlong(&mut body, i as i64);
        write_bytes(&mut body, *key);
        write_bytes(&mut body, *value);
        write_varlong(&mut body, 0); // no headers
        write_varlong(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[LENGTH_AT..LENGTH_AT + 4].copy_from_slice(&batch_length.to_be_bytes());
    out[LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4].copy_from_slice(&(-1i32).to_be_bytes());
    out[MAGIC_AT] = MAGIC_V2 as u8;
    out[ATTRIBUTES_AT..ATTRIBUTES_AT + 2].copy_from_slice(&attributes.to_be_bytes());
    let last_offset_delta = records.len() as i32 - 1;
    out[LAST_OFFSET_DELTA_AT..LAST_OFFSET_DELTA_AT + 4]
        .copy_from_slice(&last_offset_delta.to_be_bytes());
    out[BASE_TIMESTAMP_AT..BASE_TIMESTAMP_AT + 8].copy_from_slice(&base_ts.to_be_bytes());
    out[MAX_TIMESTAMP_AT..MAX_TIMESTAMP_AT + 8].copy_from_slice(&max_ts.to_be_bytes());
    out[PRODUCER_ID_AT..PRODUCER_ID_AT + 8].copy_from_slice(&producer_id.to_be_bytes());
    out[PRODUCER_EPOCH_AT..PRODUCER_EPOCH_AT + 2].copy_from_slice(&producer_epoch.to_be_bytes());
    out[BASE_SEQUENCE_AT..BASE_SEQUENCE_AT + 4].copy_from_slice(&base_sequence.to_be_bytes());
    out[RECORD_COUNT_AT..RECORD_COUNT_AT + 4]
        .copy_from_slice(&(records.len() as i32).to_be_bytes());
    fix_crc(&mut out);
    out
}

/// Version of the control record key and of the end-transaction marker value.
const CONTROL_VERSION: i16 = 0;
/// Control record types of transaction markers (Kafka's `ControlRecordType`).
const CONTROL_TYPE_ABORT: i16 = 0;
const CONTROL_TYPE_COMMIT: i16 = 1;

/// The end-transaction marker a control batch carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlMarker {
    /// Commit (true) or abort (false).
    pub commit: bool,
    /// Epoch of the transaction coordinator that wrote it.
    pub coordinator_epoch: i32,
}

/// A transaction marker as the coordinator writes it (WriteTxnMarkers): a v2
/// batch with the transactional and control attributes, base offset 0 (the
/// append stamps it), no sequence, and one record whose key is `version i16 =
/// 0, type i16` (0 abort, 1 commit) and whose value is `version i16 = 0,
/// coordinator_epoch i32`.
pub fn build_control_batch(
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
    timestamp_ms: i64,
) -> Vec<u8> {
    let kind = if commit {
        CONTROL_TYPE_COMMIT
    } else {
        CONTROL_TYPE_ABORT
    };
    let mut key = Vec::with_capacity(4);
    key.extend_from_slice(&CONTROL_VERSION.to_be_bytes());
    key.extend_from_slice(&kind.to_be_bytes());
    let mut value = Vec::with_capacity(6);
    value.extend_from_slice(&CONTROL_VERSION.to_be_bytes());
    value.extend_from_slice(&coordinator_epoch.to_be_bytes());
    encode_batch(
        &[(Some(&key), Some(&value), timestamp_ms)],
        ATTR_TRANSACTIONAL | ATTR_CONTROL,
        producer_id,
        producer_epoch,
        -1,
    )
}

/// The transaction marker of the control batch at the start of `batch`;
/// `None` if it is not a well-formed, uncompressed control batch whose first
/// record is a commit or abort marker (other control types, such as Kafka's
/// leader-change records, are not transaction markers).
pub fn control_record(batch: &[u8]) -> Option<ControlMarker> {
    let header = check_frame(batch, 0).ok()?;
    if !header.is_control() || header.is_compressed() || header.record_count < 1 {
        return None;
    }
    let (key, value) = first_record_key_value(&batch[..header.total_len()])?;
    let key_version = i16::from_be_bytes(key.get(0..2)?.try_into().ok()?);
    let kind = i16::from_be_bytes(key.get(2..4)?.try_into().ok()?);
    let value_version = i16::from_be_bytes(value.get(0..2)?.try_into().ok()?);
    let coordinator_epoch = i32::from_be_bytes(value.get(2..6)?.try_into().ok()?);
    if key_version < 0 || value_version < 0 {
        return None;
    }
    let commit = match kind {
        CONTROL_TYPE_ABORT => false,
        CONTROL_TYPE_COMMIT => true,
        _ => return None,
    };
    Some(ControlMarker {
        commit,
        coordinator_epoch,
    })
}

/// Key and value of the first record of the uncompressed batch `batch`
/// (whole); `None` if either is null or the record is malformed.
fn first_record_key_value(batch: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut pos = HEADER_LEN;
    let len = usize::try_from(read_varint(batch, &mut pos)?).ok()?;
    let record = batch.get(..pos.checked_add(len)?)?;
    pos += 1; // attributes
    read_varlong(record, &mut pos)?; // timestamp delta
    read_varint(record, &mut pos)?; // offset delta
    let key = read_bytes(record, &mut pos)?;
    let value = read_bytes(record, &mut pos)?;
    Some((key, value))
}

/// Reads a varint-length-prefixed byte string; `None` for null or past the end.
fn read_bytes<'a>(buf: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let len = usize::try_from(read_varint(buf, pos)?).ok()?;
    let bytes = buf.get(*pos..pos.checked_add(len)?)?;
    *pos += len;
    Some(bytes)
}

/// Test support: recomputes the CRC of the single batch in `batch` after a test
/// edited a CRC-covered field.
#[doc(hidden)]
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES_AT..]);
    batch[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Test support: byte positions of header fields, for tests that damage them.
#[doc(hidden)]
pub mod field {
    pub const BASE_OFFSET: usize = super::BASE_OFFSET_AT;
    pub const BATCH_LENGTH: usize = super::LENGTH_AT;
    pub const PARTITION_LEADER_EPOCH: usize = super::LEADER_EPOCH_AT;
    pub const MAGIC: usize = super::MAGIC_AT;
    pub const CRC: usize = super::CRC_AT;
    pub const ATTRIBUTES: usize = super::ATTRIBUTES_AT;
    pub const LAST_OFFSET_DELTA: usize = super::LAST_OFFSET_DELTA_AT;
    pub const BASE_TIMESTAMP: usize = super::BASE_TIMESTAMP_AT;
    pub const MAX_TIMESTAMP: usize = super::MAX_TIMESTAMP_AT;
    pub const RECORD_COUNT: usize = super::RECORD_COUNT_AT;
    pub const PRODUCER_ID: usize = super::PRODUCER_ID_AT;
    pub const PRODUCER_EPOCH: usize = super::PRODUCER_EPOCH_AT;
    pub const BASE_SEQUENCE: usize = super::BASE_SEQUENCE_AT;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        build_batch(
            &[
                (Some(b"k1"), Some(b"v1"), 1_000),
                (None, Some(b"v2"), 1_005),
                (Some(b"k3"), None, 1_002),
            ],
            0,
        )
    }

    fn put_i32(b: &mut [u8], at: usize, v: i32) {
        b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }

    #[test]
    fn good_batches_pass_and_header_is_parsed() {
        let mut payload = sample();
        payload.extend(build_batch(&[(None, Some(b"x"), 7)], 0));
        let s = validate_payload(&payload).unwrap();
        assert_eq!(s.batches, 2);
        assert_eq!(s.records, 4);
        assert_eq!(s.offsets, 4);
        assert_eq!(s.max_timestamp, 1_005);
        let h = BatchHeader::parse(&payload).unwrap();
        assert_eq!(h.magic, 2);
        assert_eq!(h.record_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_005);
        assert_eq!(h.total_len(), sample().len());
        let positions: Vec<usize> = headers(&payload).map(|r| r.unwrap().0).collect();
        assert_eq!(positions, vec![0, sample().len()]);
    }

    #[test]
    fn empty_payload_is_invalid() {
        let err = validate_payload(&[]).unwrap_err();
        assert_eq!(
            err,
            BatchError::Invalid {
                position: 0,
                kind: InvalidKind::Empty
            }
        );
    }

    #[test]
    fn bad_magic_is_invalid() {
        let mut b = sample();
        b[MAGIC_AT] = 1;
        let err = validate_payload(&b).unwrap_err();
        assert!(!err.is_corrupt());
        assert!(matches!(
            err,
            BatchError::Invalid {
                kind: InvalidKind::Magic(1),
                ..
            }
        ));
    }

    #[test]
    fn crc_mismatch_is_corrupt() {
        let mut b = sample();
        let last = b.len() - 1;
        b[last] ^= 0x40;
        let err = validate_payload(&b).unwrap_err();
        assert!(err.is_corrupt());
        assert!(matches!(
            err,
            BatchError::Corrupt {
                kind: CorruptKind::CrcMismatch { .. },
                ..
            }
        ));
    }

    #[test]
    fn short_batch_length_is_corrupt() {
        let mut b = sample();
        put_i32(&mut b, LENGTH_AT, 48);
        assert!(matches!(
            validate_payload(&b).unwrap_err(),
            BatchError::Corrupt {
                kind: CorruptKind::LengthTooSmall { batch_length: 48 },
                ..
            }
        ));
    }

    #[test]
    fn batch_length_past_the_buffer_is_corrupt() {
        let b = sample();
        let err = validate_payload(&b[..b.len() - 1]).unwrap_err();
        assert!(matches!(
            err,
            BatchError::Corrupt {
                kind: CorruptKind::Truncated { .. },
                position: 0
            }
        ));
    }

    #[test]
    fn trailing_partial_bytes_are_corrupt() {
        let mut b = sample();
        let first = b.len();
        b.extend_from_slice(&[0u8; 10]);
        assert_eq!(
            validate_payload(&b).unwrap_err(),
            BatchError::Corrupt {
                position: first,
                kind: CorruptKind::TruncatedHeader { available: 10 }
            }
        );
        // A partial header that shows magic 2 but stops before recordCount.
        let mut c = sample();
        c.extend_from_slice(&sample()[..40]);
        assert_eq!(
            validate_payload(&c).unwrap_err(),
            BatchError::Corrupt {
                position: first,
                kind: CorruptKind::TruncatedHeader { available: 40 }
            }
        );
    }

    #[test]
    fn zero_record_count_is_invalid() {
        let mut b = sample();
        put_i32(&mut b, RECORD_COUNT_AT, 0);
        fix_crc(&mut b);
        assert!(matches!(
            validate_payload(&b).unwrap_err(),
            BatchError::Invalid {
                kind: InvalidKind::RecordCount(0),
                ..
            }
        ));
    }

    #[test]
    fn negative_last_offset_delta_is_invalid() {
        let mut b = sample();
        put_i32(&mut b, LAST_OFFSET_DELTA_AT, -1);
        fix_crc(&mut b);
        assert!(matches!(
            validate_payload(&b).unwrap_err(),
            BatchError::Invalid {
                kind: InvalidKind::LastOffsetDelta(-1),
                ..
            }
        ));
    }

    #[test]
    fn last_offset_delta_other_than_count_minus_one_is_accepted() {
        let mut b = sample();
        put_i32(&mut b, LAST_OFFSET_DELTA_AT, 9);
        fix_crc(&mut b);
        assert_eq!(validate_payload(&b).unwrap().offsets, 10);
    }

    #[test]
    fn unknown_codec_is_invalid_and_known_codecs_pass() {
        for codec in 0..=4 {
            assert!(validate_payload(&build_batch(&[(None, None, 1)], codec)).is_ok());
        }
        let b = build_batch(&[(None, None, 1)], 5);
        assert!(matches!(
            validate_payload(&b).unwrap_err(),
            BatchError::Invalid {
                kind: InvalidKind::Codec(5),
                ..
            }
        ));
    }

    #[test]
    fn second_batch_failure_reports_its_position() {
        let mut b = sample();
        let first = b.len();
        let mut second = sample();
        second[MAGIC_AT] = 0;
        b.extend(second);
        assert_eq!(validate_payload(&b).unwrap_err().position(), first);
    }

    #[test]
    fn log_append_time_stamp_keeps_the_batch_valid() {
        let mut b = sample();
        stamp_log_append_time(&mut b, 42_000);
        let h = validate_batch(&b, 0).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 42_000);
        assert_eq!(h.codec(), 0);
    }

    #[test]
    fn stamped_fields_do_not_break_the_crc() {
        let mut b = sample();
        stamp(&mut b, 1234, 7);
        let h = validate_batch(&b, 0).unwrap();
        assert_eq!(h.base_offset, 1234);
        assert_eq!(h.partition_leader_epoch, 7);
        assert_eq!(h.last_offset(), 1236);
    }

    #[test]
    fn record_timestamps_are_decoded() {
        let mut b = sample();
        stamp(&mut b, 100, 0);
        let h = BatchHeader::parse(&b).unwrap();
        let ts: Vec<(i64, i64)> = record_timestamps(&b, h).map(|r| r.unwrap()).collect();
        assert_eq!(ts, vec![(100, 1_000), (101, 1_005), (102, 1_002)]);
    }

    #[test]
    fn malformed_records_end_the_walk_with_an_error() {
        let mut b = sample();
        b.truncate(HEADER_LEN + 3);
        let h = BatchHeader::parse(&b).unwrap();
        let items: Vec<_> = record_timestamps(&b, h).collect();
        assert_eq!(items.last(), Some(&Err(MalformedRecord)));
    }

    #[test]
    fn varlong_round_trips() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            write_varlong(&mut out, v);
            let mut p = 0;
            assert_eq!(read_varlong(&out, &mut p), Some(v));
            assert_eq!(p, out.len());
        }
    }

    #[test]
    fn control_batches_round_trip_their_marker() {
        for commit in [false, true] {
            let b = build_control_batch(77, 3, commit, 12, 5_000);
            let h = validate_batch(&b, 0).unwrap();
            assert!(h.is_control() && h.is_transactional());
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (77, 3, -1)
            );
            assert_eq!(
                (h.base_offset, h.record_count, h.max_timestamp),
                (0, 1, 5_000)
            );
            assert_eq!(
                control_record(&b),
                Some(ControlMarker {
                    commit,
                    coordinator_epoch: 12
                })
            );
        }
    }

    #[test]
    fn control_record_refuses_data_batches_and_malformed_markers() {
        assert_eq!(control_record(&sample()), None);
        // A control batch whose record is not a marker (key too short).
        let b = encode_batch(&[(Some(b"k"), Some(b"v"), 1)], ATTR_CONTROL, 1, 0, -1);
        assert_eq!(control_record(&b), None);
        // An unknown control type (Kafka's leader change, 2).
        let key = [0u8, 0, 0, 2];
        let value = [0u8, 0, 0, 0, 0, 1];
        let b = encode_batch(&[(Some(&key), Some(&value), 1)], ATTR_CONTROL, 1, 0, -1);
        assert_eq!(control_record(&b), None);
        // Torn.
        let b = build_control_batch(1, 0, true, 0, 1);
        assert_eq!(control_record(&b[..b.len() - 1]), None);
    }
}
