//! Record batches (format v2) as a client sees them: encoding records for
//! Produce, decoding what Fetch returns (compressed or not, control batches
//! and aborted transactions skipped), and the Java client's murmur2
//! partitioner.
//!
//! Decoding is written here rather than taken from `kafka_protocol::records`
//! because a client must keep duplicate header keys (the crate's decoder
//! keeps headers in a map), must stop quietly at a batch cut short by the
//! fetch's `max_bytes`, and must never trust a record count for an
//! allocation. Only decompression comes from the crate.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::compression::Decompressor;

use super::types::Record;

/// Fixed part of a v2 batch, up to and including the record count.
const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` ends: baseOffset (8) + batchLength (4).
const LOG_OVERHEAD: usize = 12;
/// Where the CRC-covered part starts (attributes).
const CRC_START: usize = 21;

const ATTR_COMPRESSION: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("batch at offset {offset}: CRC32C mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    Crc {
        offset: i64,
        stored: u32,
        computed: u32,
    },
    #[error("batch at offset {offset}: {reason}")]
    Malformed { offset: i64, reason: String },
}

/// One record to encode.
pub struct OutRecord<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<Vec<u8>>)],
    pub timestamp: i64,
}

/// The idempotent producer's fields of a batch header: who wrote it and the
/// sequence number of its first record, so a partition leader can tell a
/// retry from a new batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerFields {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
}

/// Encodes `records` as one uncompressed v2 batch with base offset 0 and no
/// producer id (a plain, non-idempotent producer's batch).
pub fn encode_batch(records: &[OutRecord<'_>]) -> Bytes {
    encode(records, None)
}

/// Encodes `records` as one uncompressed v2 batch carrying an idempotent
/// producer's id, epoch and base sequence (not transactional).
pub fn encode_idempotent_batch(records: &[OutRecord<'_>], producer: ProducerFields) -> Bytes {
    encode(records, Some(producer))
}

fn encode(records: &[OutRecord<'_>], producer: Option<ProducerFields>) -> Bytes {
    let base_ts = records.iter().map(|r| r.timestamp).min().unwrap_or(0);
    let max_ts = records.iter().map(|r| r.timestamp).max().unwrap_or(0);
    let mut body = BytesMut::new();
    for (i, r) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_i8(0);
        put_varlong(&mut rec, r.timestamp.wrapping_sub(base_ts));
        put_varlong(&mut rec, i64::try_from(i).unwrap_or(i64::MAX));
        put_bytes(&mut rec, r.key);
        put_bytes(&mut rec, r.value);
        put_varlong(&mut rec, i64::try_from(r.headers.len()).unwrap_or(0));
        for (k, v) in r.headers {
            put_bytes(&mut rec, Some(k.as_bytes()));
            put_bytes(&mut rec, v.as_deref());
        }
        put_varlong(&mut body, i64::try_from(rec.len()).unwrap_or(i64::MAX));
        body.put_slice(&rec);
    }
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    let mut buf = BytesMut::with_capacity(HEADER_LEN + body.len());
    buf.put_i64(0); // base offset, set by the broker
    let batch_len = HEADER_LEN - LOG_OVERHEAD + body.len();
    buf.put_i32(i32::try_from(batch_len).unwrap_or(i32::MAX));
    buf.put_i32(-1); // partition leader epoch, set by the broker
    buf.put_i8(2); // magic
    buf.put_u32(0); // CRC, below
    buf.put_i16(0); // attributes: no compression, create time
    buf.put_i32(count.saturating_sub(1)); // last offset delta
    buf.put_i64(base_ts);
    buf.put_i64(max_ts);
    let p = producer.unwrap_or(ProducerFields {
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
    });
    buf.put_i64(p.producer_id);
    buf.put_i16(p.producer_epoch);
    buf.put_i32(p.base_sequence);
    buf.put_i32(count);
    buf.put_slice(&body);
    let crc = crc32c::crc32c(&buf[CRC_START..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    buf.freeze()
}

fn put_varlong(buf: &mut BytesMut, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.put_u8((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
    buf.put_u8(z as u8);
}

fn put_bytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varlong(buf, i64::try_from(b.len()).unwrap_or(i64::MAX));
            buf.put_slice(b);
        }
        None => put_varlong(buf, -1),
    }
}

/// An aborted transaction as a Fetch response lists it.
#[derive(Debug, Clone, Copy)]
pub struct Aborted {
    pub producer_id: i64,
    pub first_offset: i64,
}

/// What [`decode_batches`] found.
#[derive(Debug, Default)]
pub struct Decoded {
    pub records: Vec<Record>,
    /// One past the last offset of the last whole batch seen; `None` if no
    /// whole batch was seen.
    pub next_offset: Option<i64>,
}

/// Decodes the record batches of one partition's fetch answer: records at
/// or after `from`, control batches skipped, and with `aborted` (read
/// committed) the records of aborted transactions skipped. A trailing
/// partial batch (cut by `max_bytes`) ends the decoding; message format v0
/// and v1 batches are skipped.
pub fn decode_batches(
    partition: i32,
    mut data: Bytes,
    from: i64,
    aborted: Option<&[Aborted]>,
) -> Result<Decoded, DecodeError> {
    let mut out = Decoded::default();
    let mut pending: Vec<Aborted> = aborted.map(<[Aborted]>::to_vec).unwrap_or_default();
    pending.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
    let mut aborting: Vec<i64> = Vec::new();
    while data.len() >= LOG_OVERHEAD + 5 {
        let base = i64::from_be_bytes(array(&data[0..8]));
        let len = i32::from_be_bytes(array(&data[8..12]));
        let Ok(len) = usize::try_from(len) else {
            return Err(malformed(base, format!("negative batch length {len}")));
        };
        if data.len() < LOG_OVERHEAD + len {
            break; // cut short by max_bytes
        }
        let batch = data.split_to(LOG_OVERHEAD + len);
        let magic = batch[16] as i8;
        if magic != 2 {
            // A legacy message: `base` is its (last) offset.
            out.next_offset = Some(base.saturating_add(1));
            continue;
        }
        if batch.len() < HEADER_LEN {
            return Err(malformed(
                base,
                format!("batch length {len} below the v2 header"),
            ));
        }
        let stored = u32::from_be_bytes(array(&batch[17..21]));
        let computed = crc32c::crc32c(&batch[CRC_START..]);
        if stored != computed {
            return Err(DecodeError::Crc {
                offset: base,
                stored,
                computed,
            });
        }
        let attrs = i16::from_be_bytes(array(&batch[21..23]));
        let last_delta = i32::from_be_bytes(array(&batch[23..27]));
        let base_ts = i64::from_be_bytes(array(&batch[27..35]));
        let max_ts = i64::from_be_bytes(array(&batch[35..43]));
        let producer_id = i64::from_be_bytes(array(&batch[43..51]));
        let count = i32::from_be_bytes(array(&batch[57..61]));
        let last = base.saturating_add(i64::from(last_delta));
        out.next_offset = Some(last.saturating_add(1));

        if aborted.is_some() {
            while pending.last().is_some_and(|a| a.first_offset <= last) {
                if let Some(a) = pending.pop() {
                    aborting.push(a.producer_id);
                }
            }
        }
        if attrs & ATTR_CONTROL != 0 {
            // A commit or abort marker ends the producer's transaction.
            aborting.retain(|p| *p != producer_id);
            continue;
        }
        if attrs & ATTR_TRANSACTIONAL != 0 && aborting.contains(&producer_id) {
            continue;
        }
        if last < from {
            continue;
        }
        let log_append = attrs & ATTR_LOG_APPEND_TIME != 0;
        let compressed = batch.slice(HEADER_LEN..);
        let plain = decompress(attrs & ATTR_COMPRESSION, compressed)
            .map_err(|reason| malformed(base, reason))?;
        decode_records(
            plain,
            RecordCtx {
                partition,
                base,
                base_ts,
                max_ts: log_append.then_some(max_ts),
                count,
                from,
            },
            &mut out.records,
        )
        .map_err(|reason| malformed(base, reason))?;
    }
    Ok(out)
}

fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&s[..N]);
    a
}

fn malformed(offset: i64, reason: impl Into<String>) -> DecodeError {
    DecodeError::Malformed {
        offset,
        reason: reason.into(),
    }
}

fn decompress(codec: i16, mut data: Bytes) -> Result<Bytes, String> {
    use kafka_protocol::compression as c;
    fn run<D: Decompressor<Bytes>>(data: &mut Bytes) -> anyhow::Result<Bytes>
    where
        D::Buf: Buf,
    {
        D::decompress(data, |b| Ok(b.copy_to_bytes(b.remaining())))
    }
    let r = match codec {
        0 => return Ok(data),
        1 => run::<c::Gzip>(&mut data),
        2 => run::<c::Snappy>(&mut data),
        3 => run::<c::Lz4>(&mut data),
        4 => run::<c::Zstd>(&mut data),
        other => return Err(format!("unknown compression codec {other}")),
    };
    r.map_err(|e| format!("cannot decompress (codec {codec}): {e:#}"))
}

struct RecordCtx {
    partition: i32,
    base: i64,
    base_ts: i64,
    /// Set for log-append-time batches: every record gets it.
    max_ts: Option<i64>,
    count: i32,
    from: i64,
}

fn decode_records(mut buf: Bytes, ctx: RecordCtx, out: &mut Vec<Record>) -> Result<(), String> {
    for _ in 0..ctx.count.max(0) {
        if !buf.has_remaining() {
            return Err(format!("{} records announced, fewer present", ctx.count));
        }
        let len = get_len(&mut buf)?.ok_or("a record of length -1")?;
        if buf.remaining() < len {
            return Err(format!("record of {len} bytes, {} left", buf.remaining()));
        }
        let mut rec = buf.split_to(len);
        let _attributes = get_i8(&mut rec)?;
        let ts_delta = get_varlong(&mut rec)?;
        let offset_delta = get_varlong(&mut rec)?;
        let key = get_bytes(&mut rec)?;
        let value = get_bytes(&mut rec)?;
        let n_headers = get_varlong(&mut rec)?;
        let mut headers = Vec::new();
        for _ in 0..n_headers.max(0) {
            let k = get_bytes(&mut rec)?.ok_or("a header with a null key")?;
            let k = String::from_utf8(k).map_err(|_| "a header key that is not UTF-8")?;
            headers.push((k, get_bytes(&mut rec)?));
        }
        let offset = ctx.base.saturating_add(offset_delta);
        if offset < ctx.from {
            continue;
        }
        out.push(Record {
            partition: ctx.partition,
            offset,
            timestamp: ctx
                .max_ts
                .unwrap_or_else(|| ctx.base_ts.saturating_add(ts_delta)),
            key,
            value,
            headers,
        });
    }
    Ok(())
}

fn get_i8(buf: &mut Bytes) -> Result<i8, String> {
    if buf.has_remaining() {
        Ok(buf.get_i8())
    } else {
        Err("record ends early".into())
    }
}

fn get_varlong(buf: &mut Bytes) -> Result<i64, String> {
    let mut z: u64 = 0;
    for shift in (0..70).step_by(7) {
        if !buf.has_remaining() {
            return Err("record ends inside a varint".into());
        }
        let b = buf.get_u8();
        z |= u64::from(b & 0x7f).checked_shl(shift).unwrap_or(0);
        if b & 0x80 == 0 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// A varint length: `None` for -1 (null).
fn get_len(buf: &mut Bytes) -> Result<Option<usize>, String> {
    match get_varlong(buf)? {
        -1 => Ok(None),
        n => usize::try_from(n)
            .map(Some)
            .map_err(|_| format!("length {n}")),
    }
}

fn get_bytes(buf: &mut Bytes) -> Result<Option<Vec<u8>>, String> {
    let Some(len) = get_len(buf)? else {
        return Ok(None);
    };
    if buf.remaining() < len {
        return Err(format!("field of {len} bytes, {} left", buf.remaining()));
    }
    Ok(Some(buf.split_to(len).to_vec()))
}

/// Kafka's murmur2 (the Java client's `Utils.murmur2`, also librdkafka's
/// `murmur2` / `murmur2_random` partitioners).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let len = data.len();
    let mut h: u32 = SEED ^ (len as u32);
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition the Java client (and librdkafka's `murmur2_random`) picks
/// for a keyed record.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return 0;
    }
    (murmur2(key) & 0x7fff_ffff) % partitions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Kafka's own UtilsTest vectors.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    type Sample = (
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(String, Option<Vec<u8>>)>,
        i64,
    );

    fn sample() -> Vec<Sample> {
        vec![
            (
                Some(b"k".to_vec()),
                Some(b"v".to_vec()),
                vec![("h".into(), Some(b"1".to_vec())), ("h".into(), None)],
                1_700_000_000_000,
            ),
            (None, None, vec![], 1_700_000_000_005),
            (Some(vec![]), Some(vec![0; 300]), vec![], 1_699_999_999_999),
        ]
    }

    fn encode(s: &[Sample]) -> Bytes {
        let recs: Vec<OutRecord<'_>> = s
            .iter()
            .map(|(k, v, h, t)| OutRecord {
                key: k.as_deref(),
                value: v.as_deref(),
                headers: h,
                timestamp: *t,
            })
            .collect();
        encode_batch(&recs)
    }

    #[test]
    fn encoded_batch_decodes_with_duplicate_headers() {
        let s = sample();
        let batch = encode(&s);
        // The crate's decoder agrees on the format (it checks the CRC).
        let mut b = batch.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).expect("decodes");
        assert_eq!(set.records.len(), 3);
        let d = decode_batches(4, batch, 0, None).expect("decodes");
        assert_eq!(d.next_offset, Some(3));
        assert_eq!(d.records.len(), 3);
        for (i, (r, (k, v, h, t))) in d.records.iter().zip(&s).enumerate() {
            assert_eq!(r.partition, 4);
            assert_eq!(r.offset, i as i64);
            assert_eq!((&r.key, &r.value, &r.headers, r.timestamp), (k, v, h, *t));
        }
    }

    #[test]
    fn idempotent_batch_header_carries_producer_id_epoch_and_sequence() {
        let s = sample();
        let recs: Vec<OutRecord<'_>> = s
            .iter()
            .map(|(k, v, h, t)| OutRecord {
                key: k.as_deref(),
                value: v.as_deref(),
                headers: h,
                timestamp: *t,
            })
            .collect();
        let producer = ProducerFields {
            producer_id: 0x0102_0304_0506_0708,
            producer_epoch: 3,
            base_sequence: 2_147_483_000,
        };
        let batch = encode_idempotent_batch(&recs, producer);
        // Byte positions of the v2 header (docs/log-format.md).
        assert_eq!(batch[16], 2, "magic");
        assert_eq!(i16::from_be_bytes(array(&batch[21..23])), 0, "attributes");
        assert_eq!(i32::from_be_bytes(array(&batch[23..27])), 2, "last delta");
        assert_eq!(
            i64::from_be_bytes(array(&batch[43..51])),
            0x0102_0304_0506_0708
        );
        assert_eq!(i16::from_be_bytes(array(&batch[51..53])), 3);
        assert_eq!(i32::from_be_bytes(array(&batch[53..57])), 2_147_483_000);
        assert_eq!(i32::from_be_bytes(array(&batch[57..61])), 3, "count");
        let len = i32::from_be_bytes(array(&batch[8..12]));
        assert_eq!(usize::try_from(len).ok(), Some(batch.len() - LOG_OVERHEAD));
        // The crate's decoder (which checks the CRC) reads the same fields,
        // the sequence counting up per record.
        let mut b = batch.clone();
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut b).expect("decodes");
        let seqs: Vec<i32> = set.records.iter().map(|r| r.sequence).collect();
        assert_eq!(seqs, [2_147_483_000, 2_147_483_001, 2_147_483_002]);
        for r in &set.records {
            assert_eq!(
                (r.producer_id, r.producer_epoch),
                (0x0102_0304_0506_0708, 3)
            );
            assert!(!r.transactional && !r.control);
        }
        // Our own decoder still returns the records unchanged.
        let d = decode_batches(0, batch, 0, None).expect("decodes");
        assert_eq!(d.records.len(), 3);
        // A plain batch keeps the "no producer" markers.
        let plain = encode_batch(&recs);
        assert_eq!(i64::from_be_bytes(array(&plain[43..51])), -1);
        assert_eq!(i16::from_be_bytes(array(&plain[51..53])), -1);
        assert_eq!(i32::from_be_bytes(array(&plain[53..57])), -1);
    }

    #[test]
    fn partial_trailing_batch_and_earlier_offsets_are_skipped() {
        let one = encode(&sample());
        let mut two = BytesMut::from(&one[..]);
        two.put_slice(&one[..one.len() - 10]);
        let d = decode_batches(0, two.freeze(), 1, None).expect("decodes");
        assert_eq!(
            d.records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(d.next_offset, Some(3));
    }

    #[test]
    fn corrupt_or_odd_input_is_an_error_not_a_panic() {
        let good = encode(&sample());
        let mut bad = BytesMut::from(&good[..]);
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert!(matches!(
            decode_batches(0, bad.freeze(), 0, None),
            Err(DecodeError::Crc { .. })
        ));
        // Every truncation and every single-byte change: never a panic.
        for cut in 0..good.len() {
            let _ = decode_batches(0, good.slice(..cut), 0, None);
        }
        for i in 0..good.len() {
            let mut b = BytesMut::from(&good[..]);
            b[i] = b[i].wrapping_add(0x41);
            // Re-sign so the record decoder sees the change.
            if b.len() > CRC_START && i >= CRC_START {
                let crc = crc32c::crc32c(&b[CRC_START..]);
                b[17..21].copy_from_slice(&crc.to_be_bytes());
            }
            let _ = decode_batches(0, b.freeze(), 0, None);
        }
    }

    #[test]
    fn aborted_transactions_are_skipped_when_read_committed() {
        let data = encode(&sample());
        let mut txn = BytesMut::from(&data[..]);
        // Mark it transactional with producer id 7.
        txn[21..23].copy_from_slice(&ATTR_TRANSACTIONAL.to_be_bytes());
        txn[43..51].copy_from_slice(&7i64.to_be_bytes());
        let crc = crc32c::crc32c(&txn[CRC_START..]);
        txn[17..21].copy_from_slice(&crc.to_be_bytes());
        let txn = txn.freeze();
        let aborted = [Aborted {
            producer_id: 7,
            first_offset: 0,
        }];
        let d = decode_batches(0, txn.clone(), 0, Some(&aborted)).expect("decodes");
        assert!(d.records.is_empty());
        assert_eq!(d.next_offset, Some(3));
        let d = decode_batches(0, txn, 0, Some(&[])).expect("decodes");
        assert_eq!(d.records.len(), 3);
    }
}
