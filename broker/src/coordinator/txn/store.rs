//! The records of `__transaction_state`, in Kafka's own schemas so the topic
//! reads the same as Kafka's:
//!
//! - key v0 `[version=0:int16][transactional_id:string]`;
//! - value v0 `[version=0:int16][producer_id:int64][producer_epoch:int16]
//!   [transaction_timeout_ms:int32][transaction_status:int8]
//!   [transaction_partitions:nullable array of [topic:string][partition_ids:array of int32]]
//!   [last_update_timestamp_ms:int64][start_timestamp_ms:int64]`.
//!
//! A tombstone (null value) removes an expired transactional id. The
//! partition of an id is `abs(id.hashCode()) % partitions`, as for groups.

use std::collections::BTreeSet;

use super::state::{TxnMeta, TxnState};
use crate::coordinator::group::store::{put_str, Reader};

const KEY_VERSION: i16 = 0;
const VALUE_VERSION: i16 = 0;

pub fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend_from_slice(&KEY_VERSION.to_be_bytes());
    put_str(&mut out, transactional_id);
    out
}

/// The transactional id of a key; `None` for a key of another version or
/// a malformed one.
pub fn decode_key(buf: &[u8]) -> Option<String> {
    let mut r = Reader { buf, pos: 0 };
    (r.i16()? == KEY_VERSION).then_some(())?;
    r.string()
}

pub fn encode_value(m: &TxnMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&VALUE_VERSION.to_be_bytes());
    out.extend_from_slice(&m.producer_id.to_be_bytes());
    out.extend_from_slice(&m.producer_epoch.to_be_bytes());
    out.extend_from_slice(&m.timeout_ms.to_be_bytes());
    out.push(m.state.to_i8() as u8);
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (t, p) in &m.partitions {
        match topics.last_mut() {
            Some((last, ps)) if *last == t => ps.push(*p),
            _ => topics.push((t, vec![*p])),
        }
    }
    if m.state == TxnState::Empty || m.state == TxnState::Dead {
        out.extend_from_slice(&(-1i32).to_be_bytes());
    } else {
        out.extend_from_slice(&(topics.len() as i32).to_be_bytes());
        for (t, ps) in topics {
            put_str(&mut out, t);
            out.extend_from_slice(&(ps.len() as i32).to_be_bytes());
            for p in ps {
                out.extend_from_slice(&p.to_be_bytes());
            }
        }
    }
    out.extend_from_slice(&m.update_ms.to_be_bytes());
    out.extend_from_slice(&m.start_ms.to_be_bytes());
    out
}

/// Decodes a value v0 (or the v0 part of a later version's value).
pub fn decode_value(buf: &[u8]) -> Option<TxnMeta> {
    let mut r = Reader { buf, pos: 0 };
    let version = r.i16()?;
    if version < 0 {
        return None;
    }
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state = TxnState::from_i8(r.i8()?)?;
    let mut partitions = BTreeSet::new();
    if version == 0 {
        let topics = r.i32()?;
        for _ in 0..topics.max(0) {
            let topic = r.string()?;
            let n = r.i32()?;
            for _ in 0..n.max(0) {
                partitions.insert((topic.clone(), r.i32()?));
            }
        }
    } else {
        // Flexible versions (Kafka 3.x+ may write v1); not written here.
        return None;
    }
    let update_ms = r.i64()?;
    let start_ms = r.i64()?;
    Some(TxnMeta {
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        start_ms,
        update_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(
            decode_key(&encode_key("orders-tx")),
            Some("orders-tx".into())
        );
        let m = TxnMeta {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [
                ("a".to_string(), 0),
                ("a".to_string(), 2),
                ("b".to_string(), 1),
            ]
            .into(),
            start_ms: 10,
            update_ms: 20,
        };
        assert_eq!(decode_value(&encode_value(&m)), Some(m.clone()));
        let empty = TxnMeta {
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            ..m
        };
        assert_eq!(decode_value(&encode_value(&empty)), Some(empty));
    }

    #[test]
    fn the_value_layout_is_kafkas_v0() {
        let m = TxnMeta {
            producer_id: 1,
            producer_epoch: 2,
            timeout_ms: 3,
            state: TxnState::Ongoing,
            partitions: [("t".to_string(), 5)].into(),
            start_ms: 7,
            update_ms: 6,
        };
        let v = encode_value(&m);
        let mut want = vec![0, 0];
        want.extend_from_slice(&1i64.to_be_bytes());
        want.extend_from_slice(&2i16.to_be_bytes());
        want.extend_from_slice(&3i32.to_be_bytes());
        want.push(1);
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&[0, 1, b't']);
        want.extend_from_slice(&1i32.to_be_bytes());
        want.extend_from_slice(&5i32.to_be_bytes());
        want.extend_from_slice(&6i64.to_be_bytes());
        want.extend_from_slice(&7i64.to_be_bytes());
        assert_eq!(v, want);
    }

    #[test]
    fn truncated_values_are_refused() {
        let v = encode_value(&TxnMeta {
            producer_id: 1,
            producer_epoch: 0,
            timeout_ms: 1,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            start_ms: -1,
            update_ms: 0,
        });
        for len in 0..v.len() {
            assert_eq!(decode_value(&v[..len]), None, "prefix of {len} bytes");
        }
        assert_eq!(decode_key(&[0, 0, 0]), None);
    }
}
