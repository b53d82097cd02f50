//! The records a group coordinator writes to `__consumer_offsets`, in Kafka's
//! own key and value schemas, so the topic reads the same as Kafka's:
//!
//! - offset commit: key v1 `[version=1:int16][group:string][topic:string][partition:int32]`,
//!   value v3 `[version=3:int16][offset:int64][leader_epoch:int32][metadata:string][commit_timestamp:int64]`;
//! - group metadata: key v2 `[version=2:int16][group:string]`, value v3
//!   `[version=3:int16][protocol_type:string][generation:int32][protocol:nullable string]
//!   [leader:nullable string][current_state_timestamp:int64][members:array]`, each member
//!   `[member_id][group_instance_id:nullable][client_id][client_host]
//!   [rebalance_timeout:int32][session_timeout:int32][subscription:bytes][assignment:bytes]`.
//!
//! A record with a null value (tombstone) deletes its key. Records are
//! written in uncompressed v2 batches, one batch per coordinator operation.

use bytes::Bytes;

use crate::commitlog::batch::{
    self, read_varlong, write_varlong, BatchHeader, HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
};

/// A decoded key of `__consumer_offsets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    Group(String),
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

/// One member in the stored group metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// A group's metadata as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// A decoded value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Offset(OffsetValue),
    Group(GroupValue),
}

pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = i16::try_from(s.len()).unwrap_or(i16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..len.max(0) as usize]);
}

pub(crate) fn put_nullable_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&i32::try_from(b.len()).unwrap_or(i32::MAX).to_be_bytes());
    out.extend_from_slice(b);
}

impl Key {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                out.extend_from_slice(&1i16.to_be_bytes());
                put_str(&mut out, group);
                put_str(&mut out, topic);
                out.extend_from_slice(&partition.to_be_bytes());
            }
            Key::Group(group) => {
                out.extend_from_slice(&2i16.to_be_bytes());
                put_str(&mut out, group);
            }
        }
        out
    }

    pub fn decode(buf: &[u8]) -> Option<Key> {
        let mut r = Reader { buf, pos: 0 };
        match r.i16()? {
            0 | 1 => Some(Key::Offset {
                group: r.string()?,
                topic: r.string()?,
                partition: r.i32()?,
            }),
            2 => Some(Key::Group(r.string()?)),
            _ => None,
        }
    }

    pub fn group(&self) -> &str {
        match self {
            Key::Offset { group, .. } | Key::Group(group) => group,
        }
    }
}

impl OffsetValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&3i16.to_be_bytes());
        out.extend_from_slice(&self.offset.to_be_bytes());
        out.extend_from_slice(&self.leader_epoch.to_be_bytes());
        put_str(&mut out, &self.metadata);
        out.extend_from_slice(&self.commit_timestamp.to_be_bytes());
        out
    }

    /// Decodes value versions 0-3 (v1 and v2 carry an expire timestamp that
    /// is ignored, v3 adds the leader epoch).
    fn decode(r: &mut Reader<'_>, version: i16) -> Option<OffsetValue> {
        let offset = r.i64()?;
        let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
        let metadata = r.string()?;
        let commit_timestamp = r.i64()?;
        if version == 1 {
            r.i64()?;
        }
        Some(OffsetValue {
            offset,
            leader_epoch,
            metadata,
            commit_timestamp,
        })
    }
}

impl GroupValue {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&3i16.to_be_bytes());
        put_str(&mut out, &self.protocol_type);
        out.extend_from_slice(&self.generation.to_be_bytes());
        put_nullable_str(&mut out, self.protocol.as_deref());
        put_nullable_str(&mut out, self.leader.as_deref());
        out.extend_from_slice(&self.state_timestamp.to_be_bytes());
        out.extend_from_slice(
            &i32::try_from(self.members.len())
                .unwrap_or(i32::MAX)
                .to_be_bytes(),
        );
        for m in &self.members {
            put_str(&mut out, &m.member_id);
            put_nullable_str(&mut out, m.instance_id.as_deref());
            put_str(&mut out, &m.client_id);
            put_str(&mut out, &m.client_host);
            out.extend_from_slice(&m.rebalance_timeout_ms.to_be_bytes());
            out.extend_from_slice(&m.session_timeout_ms.to_be_bytes());
            put_bytes(&mut out, &m.subscription);
            put_bytes(&mut out, &m.assignment);
        }
        out
    }

    /// Decodes value versions 0-3.
    fn decode(r: &mut Reader<'_>, version: i16) -> Option<GroupValue> {
        let protocol_type = r.string()?;
        let generation = r.i32()?;
        let protocol = r.nullable_string()?;
        let leader = r.nullable_string()?;
        let state_timestamp = if version >= 2 { r.i64()? } else { -1 };
        let n = r.i32()?;
        let mut members = Vec::new();
        for _ in 0..n.max(0) {
            let member_id = r.string()?;
            let instance_id = if version >= 3 {
                r.nullable_string()?
            } else {
                None
            };
            let client_id = r.string()?;
            let client_host = r.string()?;
            let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
            let session_timeout_ms = r.i32()?;
            let rebalance_timeout_ms = if version >= 1 {
                rebalance_timeout_ms
            } else {
                session_timeout_ms
            };
            members.push(MemberValue {
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout_ms,
                session_timeout_ms,
                subscription: r.bytes()?,
                assignment: r.bytes()?,
            });
        }
        Some(GroupValue {
            protocol_type,
            generation,
            protocol,
            leader,
            state_timestamp,
            members,
        })
    }
}

/// Decodes a value for `key`.
pub fn decode_value(key: &Key, buf: &[u8]) -> Option<Value> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return None;
    }
    match key {
        Key::Offset { .. } => OffsetValue::decode(&mut r, version).map(Value::Offset),
        Key::Group(_) => GroupValue::decode(&mut r, version).map(Value::Group),
    }
}

/// A reader of Kafka's classic (non-flexible) encodings.
pub(crate) struct Reader<'a> {
    pub buf: &'a [u8],
    pub pos: usize,
}

impl Reader<'_> {
    pub fn take(&mut self, n: usize) -> Option<&[u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    pub fn i16(&mut self) -> Option<i16> {
        self.take(2).map(|b| i16::from_be_bytes([b[0], b[1]]))
    }
    pub fn i8(&mut self) -> Option<i8> {
        self.take(1).map(|b| i8::from_be_bytes([b[0]]))
    }
    pub fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn i64(&mut self) -> Option<i64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Some(i64::from_be_bytes(a))
    }
    pub fn nullable_string(&mut self) -> Option<Option<String>> {
        let len = self.i16()?;
        if len < 0 {
            return Some(None);
        }
        let b = self.take(len as usize)?;
        Some(Some(String::from_utf8_lossy(b).into_owned()))
    }
    pub fn string(&mut self) -> Option<String> {
        self.nullable_string().map(Option::unwrap_or_default)
    }
    fn bytes(&mut self) -> Option<Bytes> {
        let len = self.i32()?;
        if len < 0 {
            return Some(Bytes::new());
        }
        Some(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

/// Builds one uncompressed v2 batch of `(key, value)` records (a `None`
/// value is a tombstone) stamped with `now_ms`. The log assigns the offsets.
pub fn build_batch(records: &[(Vec<u8>, Option<Vec<u8>>)], now_ms: i64) -> Vec<u8> {
    build_batch_for(records, now_ms, None)
}

/// [`build_batch`], as part of the transaction of `producer` (id, epoch)
/// when given: the batch is marked transactional and carries the producer,
/// with no sequence (the coordinator writes it, not the producer), so the
/// records count only once the transaction's commit marker follows.
pub fn build_batch_for(
    records: &[(Vec<u8>, Option<Vec<u8>>)],
    now_ms: i64,
    producer: Option<(i64, i16)>,
) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        body.clear();
        body.push(0);
        write_varlong(&mut body, 0);
        write_varlong(&mut body, i as i64);
        write_varlong(&mut body, key.len() as i64);
        body.extend_from_slice(key);
        match value {
            Some(v) => {
                write_varlong(&mut body, v.len() as i64);
                body.extend_from_slice(v);
            }
            None => write_varlong(&mut body, -1),
        }
        write_varlong(&mut body, 0);
        write_varlong(&mut out, body.len() as i64);
        out.extend_from_slice(&body);
    }
    let put = |out: &mut Vec<u8>, at: usize, b: &[u8]| out[at..at + b.len()].copy_from_slice(b);
    let batch_length = i32::try_from(out.len() - LOG_OVERHEAD).unwrap_or(i32::MAX);
    put(&mut out, 8, &batch_length.to_be_bytes());
    put(&mut out, 12, &(-1i32).to_be_bytes());
    out[16] = MAGIC_V2 as u8;
    let attributes = if producer.is_some() {
        batch::ATTR_TRANSACTIONAL
    } else {
        0
    };
    put(&mut out, 21, &attributes.to_be_bytes());
    let last_delta = i32::try_from(records.len()).unwrap_or(i32::MAX) - 1;
    put(&mut out, 23, &last_delta.to_be_bytes());
    put(&mut out, 27, &now_ms.to_be_bytes());
    put(&mut out, 35, &now_ms.to_be_bytes());
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    put(&mut out, 43, &producer_id.to_be_bytes());
    put(&mut out, 51, &producer_epoch.to_be_bytes());
    put(&mut out, 53, &(-1i32).to_be_bytes());
    put(
        &mut out,
        57,
        &i32::try_from(records.len())
            .unwrap_or(i32::MAX)
            .to_be_bytes(),
    );
    let crc = crc32c::crc32c(&out[21..]);
    put(&mut out, 17, &crc.to_be_bytes());
    out
}

/// One stored batch of a coordinator's topic, decoded.
#[derive(Debug)]
pub struct StoredBatch {
    pub header: BatchHeader,
    /// For a control batch (a transaction marker): commit (true) or abort.
    pub marker: Option<bool>,
    /// `(key, value)` of every record (none for a control batch).
    pub records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Decodes the uncompressed batches in `buf`, transaction markers included;
/// compressed batches are skipped (coordinators never write them). Stops at
/// the first malformed batch or record.
pub fn batches(buf: &[u8]) -> Vec<StoredBatch> {
    let mut out = Vec::new();
    for item in batch::headers(buf) {
        let Ok((at, header)) = item else { break };
        let Some(b) = buf.get(at..at + header.total_len()) else {
            break;
        };
        if header.is_control() {
            let marker = batch::control_record(b).map(|m| m.commit);
            if marker.is_none() {
                tracing::warn!(offset = header.base_offset, "malformed transaction marker");
            }
            out.push(StoredBatch {
                header,
                marker,
                records: Vec::new(),
            });
            continue;
        }
        if header.is_compressed() {
            tracing::warn!(
                offset = header.base_offset,
                "skipping a compressed batch in a coordinator topic"
            );
            continue;
        }
        let mut records = Vec::new();
        if !parse_records(b, &header, &mut records) {
            tracing::warn!(
                offset = header.base_offset,
                "malformed record in a coordinator topic"
            );
            break;
        }
        out.push(StoredBatch {
            header,
            marker: None,
            records,
        });
    }
    out
}

/// The `(key, value)` of every record of the non-transactional batches in
/// `buf` (see [`batches`]).
pub fn records(buf: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    batches(buf)
        .into_iter()
        .filter(|b| b.marker.is_none() && !b.header.is_transactional())
        .flat_map(|b| b.records)
        .collect()
}

fn parse_records(
    b: &[u8],
    header: &BatchHeader,
    out: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>,
) -> bool {
    let mut pos = HEADER_LEN;
    for _ in 0..header.record_count.max(0) {
        let Some(len) = read_varlong(b, &mut pos).and_then(|l| usize::try_from(l).ok()) else {
            return false;
        };
        let end = pos.saturating_add(len);
        let Some(rec) = b.get(..end) else {
            return false;
        };
        let mut p = pos + 1;
        let parsed = (|| {
            read_varlong(rec, &mut p)?;
            read_varlong(rec, &mut p)?;
            let klen = read_varlong(rec, &mut p)?;
            let key = if klen < 0 {
                Vec::new()
            } else {
                let k = rec.get(p..p + usize::try_from(klen).ok()?)?.to_vec();
                p += k.len();
                k
            };
            let vlen = read_varlong(rec, &mut p)?;
            let value = if vlen < 0 {
                None
            } else {
                Some(rec.get(p..p + usize::try_from(vlen).ok()?)?.to_vec())
            };
            Some((key, value))
        })();
        let Some(kv) = parsed else { return false };
        out.push(kv);
        pos = end;
    }
    true
}

/// The partition of `__consumer_offsets` that holds `group_id`:
/// `Utils.abs(groupId.hashCode()) % partitions`, as Kafka computes it.
pub fn partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group_id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_partition_matches_java_string_hash_code() {
        // "hello".hashCode() == 99162322 in Java.
        assert_eq!(partition_for("hello", 50), 99162322 % 50);
        assert_eq!(partition_for("", 50), 0);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: Utils.abs gives 0.
        assert_eq!(partition_for("polygenelubricants", 50), 0);
    }

    #[test]
    fn keys_and_values_round_trip_through_a_batch() {
        let k1 = Key::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
        };
        let v1 = OffsetValue {
            offset: 42,
            leader_epoch: 7,
            metadata: "meta".into(),
            commit_timestamp: 1234,
        };
        let k2 = Key::Group("g".into());
        let v2 = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 99,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300,
                session_timeout_ms: 100,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        let batch = build_batch(
            &[
                (k1.encode(), Some(v1.encode())),
                (k2.encode(), Some(v2.encode())),
                (k1.encode(), None),
            ],
            1000,
        );
        assert!(batch::validate_batch(&batch, 0).is_ok());
        let recs = records(&batch);
        assert_eq!(recs.len(), 3);
        let key = Key::decode(&recs[0].0).unwrap();
        assert_eq!(key, k1);
        assert_eq!(
            decode_value(&key, recs[0].1.as_deref().unwrap()),
            Some(Value::Offset(v1))
        );
        let key = Key::decode(&recs[1].0).unwrap();
        assert_eq!(
            decode_value(&key, recs[1].1.as_deref().unwrap()),
            Some(Value::Group(v2))
        );
        assert_eq!(recs[2].1, None);
    }
}
