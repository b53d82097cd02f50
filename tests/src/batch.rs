//! Record batch v2 (magic 2) built by hand, so tests control every byte: a
//! valid batch with its CRC32C, then one bit flipped or the magic changed.
//!
//! Layout (big-endian), from Kafka's `DefaultRecordBatch`:
//! `baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 |
//! crc u32 | attributes i16 | lastOffsetDelta i32 | baseTimestamp i64 |
//! maxTimestamp i64 | producerId i64 | producerEpoch i16 | baseSequence i32 |
//! recordCount i32 | records...`. The CRC covers `attributes` to the end.

use bytes::{BufMut, Bytes, BytesMut};

/// Byte offset of `baseOffset`.
pub const BASE_OFFSET: usize = 0;
/// Byte offset of `batchLength` (counts the bytes after this field).
pub const BATCH_LENGTH: usize = 8;
/// Byte offset of `partitionLeaderEpoch`.
pub const PARTITION_LEADER_EPOCH: usize = 12;
/// Byte offset of `magic`.
pub const MAGIC: usize = 16;
/// Byte offset of `crc`.
pub const CRC: usize = 17;
/// Byte offset of `attributes`, where the CRC coverage starts.
pub const ATTRIBUTES: usize = 21;
/// Byte offset of `lastOffsetDelta`.
pub const LAST_OFFSET_DELTA: usize = 23;
/// Byte offset of `recordCount`.
pub const RECORD_COUNT: usize = 57;
/// Size of the batch header.
pub const HEADER_LEN: usize = 61;

/// One record to put into a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestRecord {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp: i64,
}

impl TestRecord {
    /// A keyed record with one header.
    pub fn new(key: &str, value: &str, timestamp: i64) -> Self {
        TestRecord {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.as_bytes().to_vec()),
            headers: vec![("h".to_string(), Some(b"v".to_vec()))],
            timestamp,
        }
    }
}

/// Encodes an uncompressed, non-transactional v2 batch the way a producer
/// without idempotence sends it: baseOffset 0, partitionLeaderEpoch -1,
/// producerId -1.
pub fn encode_batch(records: &[TestRecord]) -> BytesMut {
    assert!(
        !records.is_empty(),
        "a record batch needs at least one record"
    );
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = BytesMut::new();
    for (delta, r) in records.iter().enumerate() {
        encode_record(&mut body, r, r.timestamp - base_ts, delta as i64);
    }
    let mut buf = BytesMut::with_capacity(HEADER_LEN + body.len());
    buf.put_i64(0); // baseOffset
    buf.put_i32(0); // batchLength, patched below
    buf.put_i32(-1); // partitionLeaderEpoch
    buf.put_i8(2); // magic
    buf.put_u32(0); // crc, patched below
    buf.put_i16(0); // attributes: no compression, CreateTime
    buf.put_i32(records.len() as i32 - 1); // lastOffsetDelta
    buf.put_i64(base_ts);
    buf.put_i64(max_ts);
    buf.put_i64(-1); // producerId
    buf.put_i16(-1); // producerEpoch
    buf.put_i32(-1); // baseSequence
    buf.put_i32(records.len() as i32);
    buf.extend_from_slice(&body);
    let batch_length = (buf.len() - BATCH_LENGTH - 4) as i32;
    buf[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&batch_length.to_be_bytes());
    fix_crc(&mut buf);
    buf
}

/// Recomputes the CRC32C of a batch (after a test changed a covered byte).
pub fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[ATTRIBUTES..]);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Flips one bit of the stored CRC so it no longer matches the contents.
pub fn corrupt_crc(batch: &mut [u8]) {
    batch[CRC + 3] ^= 0x01;
}

fn encode_record(out: &mut BytesMut, r: &TestRecord, ts_delta: i64, offset_delta: i64) {
    let mut rec = BytesMut::new();
    rec.put_i8(0); // attributes
    put_varlong(&mut rec, ts_delta);
    put_varlong(&mut rec, offset_delta);
    put_bytes(&mut rec, r.key.as_deref());
    put_bytes(&mut rec, r.value.as_deref());
    put_varlong(&mut rec, r.headers.len() as i64);
    for (k, v) in &r.headers {
        put_bytes(&mut rec, Some(k.as_bytes()));
        put_bytes(&mut rec, v.as_deref());
    }
    put_varlong(out, rec.len() as i64);
    out.extend_from_slice(&rec);
}

fn put_bytes(out: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(out, b.len() as i64);
            out.extend_from_slice(b);
        }
        None => put_varlong(out, -1),
    }
}

/// Zigzag varint, as Kafka's `ByteUtils.writeVarlong`.
fn put_varlong(out: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    out.put_u8(z as u8);
}

/// The fixed header of one batch found in a record set, plus its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchView {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    /// Bits 0-2: compression codec (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub record_count: i32,
    /// The whole batch, header included.
    pub bytes: Bytes,
}

impl BatchView {
    /// Whether the stored CRC matches the covered bytes.
    pub fn crc_ok(&self) -> bool {
        self.bytes.len() >= HEADER_LEN && crc32c::crc32c(&self.bytes[ATTRIBUTES..]) == self.crc
    }

    /// The bytes from `magic` on with `baseOffset` and `partitionLeaderEpoch`
    /// left out: what the broker must store exactly as the producer sent it.
    pub fn content_without_offsets(&self) -> Bytes {
        let mut b = BytesMut::from(&self.bytes[..]);
        b[BASE_OFFSET..BASE_OFFSET + 8].fill(0);
        b[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].fill(0);
        b.freeze()
    }
}

/// Splits a record set (Fetch response `records`) into whole batches. A partial
/// trailing batch, which a fetch cut at `max_bytes` may carry, is left out.
pub fn split_batches(records: &Bytes) -> Vec<BatchView> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while records.len() >= pos + HEADER_LEN {
        let at = |o: usize, n: usize| &records[pos + o..pos + o + n];
        let batch_length = i32::from_be_bytes(at(BATCH_LENGTH, 4).try_into().unwrap_or([0; 4]));
        let Ok(batch_length) = usize::try_from(batch_length) else {
            break;
        };
        let total = BATCH_LENGTH + 4 + batch_length;
        if records.len() < pos + total {
            break;
        }
        let be_i64 = |o| i64::from_be_bytes(at(o, 8).try_into().unwrap_or([0; 8]));
        let be_i32 = |o| i32::from_be_bytes(at(o, 4).try_into().unwrap_or([0; 4]));
        out.push(BatchView {
            base_offset: be_i64(BASE_OFFSET),
            partition_leader_epoch: be_i32(PARTITION_LEADER_EPOCH),
            magic: at(MAGIC, 1)[0] as i8,
            crc: u32::from_be_bytes(at(CRC, 4).try_into().unwrap_or([0; 4])),
            attributes: i16::from_be_bytes(at(ATTRIBUTES, 2).try_into().unwrap_or([0; 2])),
            last_offset_delta: be_i32(LAST_OFFSET_DELTA),
            record_count: be_i32(RECORD_COUNT),
            bytes: records.slice(pos..pos + total),
        });
        pos += total;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;

    fn sample() -> Vec<TestRecord> {
        vec![
            TestRecord::new("k1", "v1", 1_700_000_000_000),
            TestRecord {
                key: None,
                value: Some(vec![7u8; 300]),
                headers: vec![("a".into(), None), ("b".into(), Some(b"x".to_vec()))],
                timestamp: 1_700_000_000_123,
            },
            TestRecord {
                key: Some(b"k3".to_vec()),
                value: None,
                headers: vec![],
                timestamp: 1_699_999_999_000,
            },
        ]
    }

    #[test]
    fn built_batch_decodes_with_kafka_protocol_and_checks_its_crc() {
        let batch = encode_batch(&sample()).freeze();
        let mut buf = batch.clone();
        let set = RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes our batch");
        assert_eq!(set.version, 2);
        assert_eq!(set.records.len(), 3);
        for (got, want) in set.records.iter().zip(sample()) {
            assert_eq!(got.key.as_deref(), want.key.as_deref());
            assert_eq!(got.value.as_deref(), want.value.as_deref());
            assert_eq!(got.timestamp, want.timestamp);
            assert_eq!(got.headers.len(), want.headers.len());
        }
        assert_eq!(set.records[2].offset, 2);
        let views = split_batches(&batch);
        assert_eq!(views.len(), 1);
        assert!(views[0].crc_ok());
        assert_eq!(views[0].record_count, 3);
        assert_eq!(views[0].last_offset_delta, 2);
    }

    #[test]
    fn corrupted_crc_is_rejected_by_kafka_protocol() {
        let mut batch = encode_batch(&sample());
        corrupt_crc(&mut batch);
        let mut buf = batch.freeze();
        assert!(!split_batches(&buf)[0].crc_ok());
        let err = RecordBatchDecoder::decode(&mut buf).expect_err("bad CRC must not decode");
        assert!(
            format!("{err:#}").contains("Cyclic redundancy check"),
            "{err:#}"
        );
    }

    #[test]
    fn split_batches_drops_a_partial_trailing_batch() {
        let mut two = encode_batch(&sample());
        two.extend_from_slice(&encode_batch(&sample())[..40]);
        assert_eq!(split_batches(&two.freeze()).len(), 1);
    }
}
