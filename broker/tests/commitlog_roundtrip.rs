//! Property tests of the commit log: random appends (batch sizes, record
//! counts, payloads of several batches) under random segment and index sizes;
//! every offset reads back the batch containing it followed by the next ones,
//! and a reopened log (after a clean close or a crash) is the same log.

// Tests may unwrap (house rule); clippy.toml only covers #[test] fns themselves.
#![allow(clippy::unwrap_used)]

use proptest::prelude::*;

use sluice_broker::commitlog::batch::{build_batch, field, headers, BatchHeader};
use sluice_broker::commitlog::{Log, LogConfig};

/// One batch: (record count, value size).
type BatchSpec = (usize, usize);

fn make_batch(seq: usize, (count, size): BatchSpec) -> Vec<u8> {
    let value = vec![(seq % 251) as u8; size];
    let records: Vec<_> = (0..count)
        .map(|i| (None, Some(value.as_slice()), (seq * 10 + i) as i64))
        .collect();
    build_batch(&records, 0)
}

/// What the log should hold: (base offset, last offset, bytes as sent).
struct Model {
    batches: Vec<(i64, i64, Vec<u8>)>,
}

impl Model {
    fn end(&self) -> i64 {
        self.batches.last().map_or(0, |b| b.1 + 1)
    }

    fn containing(&self, offset: i64) -> usize {
        self.batches.partition_point(|b| b.1 < offset)
    }
}

fn config(segment_bytes: u64, index_interval_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes,
        index_interval_bytes,
        segment_index_bytes: 512,
        ..LogConfig::default()
    }
}

fn append_all(log: &mut Log, model: &mut Model, payloads: &[Vec<BatchSpec>]) {
    let mut seq = model.batches.len();
    for (i, payload) in payloads.iter().enumerate() {
        let mut bytes = Vec::new();
        for spec in payload {
            let b = make_batch(seq, *spec);
            seq += 1;
            let base = model.end();
            let n = spec.0 as i64;
            model.batches.push((base, base + n - 1, b.clone()));
            bytes.extend(b);
        }
        let info = log.append(&bytes, i as i32, 0).unwrap();
        assert_eq!(info.last_offset + 1, model.end());
    }
}

/// Reads from every offset and checks the answer against the model.
fn check_reads(log: &Log, model: &Model, max_bytes: usize) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_end_offset(), model.end());
    for offset in 0..model.end() {
        let bytes = log.read(offset, max_bytes, i64::MAX).unwrap();
        let mut count = 0;
        for (expected, item) in (model.containing(offset)..).zip(headers(&bytes)) {
            let (pos, h) = item.unwrap();
            let (base, last, sent) = &model.batches[expected];
            prop_assert_eq!(h.base_offset, *base, "read at {}", offset);
            prop_assert_eq!(h.last_offset(), *last);
            let got = &bytes[pos..pos + h.total_len()];
            prop_assert_eq!(&got[field::MAGIC..], &sent[field::MAGIC..]);
            prop_assert_eq!(
                &got[field::BATCH_LENGTH..field::PARTITION_LEADER_EPOCH],
                &sent[field::BATCH_LENGTH..field::PARTITION_LEADER_EPOCH]
            );
            count += 1;
        }
        prop_assert!(count >= 1, "nothing read at {}", offset);
        let first_len = BatchHeader::parse(&bytes).unwrap().total_len();
        prop_assert!(bytes.len() <= max_bytes.max(first_len));
    }
    prop_assert!(log
        .read(model.end(), max_bytes, i64::MAX)
        .unwrap()
        .is_empty());
    Ok(())
}

fn payloads() -> impl Strategy<Value = Vec<Vec<BatchSpec>>> {
    prop::collection::vec(prop::collection::vec((1usize..6, 0usize..150), 1..4), 1..30)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn every_offset_reads_back_its_batch_and_the_ones_after_it(
        payloads in payloads(),
        segment_bytes in 60u64..3_000,
        index_interval in 0u64..500,
        max_bytes in 1usize..2_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(segment_bytes, index_interval)).unwrap();
        let mut model = Model { batches: Vec::new() };
        append_all(&mut log, &mut model, &payloads);
        check_reads(&log, &model, max_bytes)?;
        check_reads(&log, &model, usize::MAX)?;
        let segments = log.segment_count();
        let size = log.size_bytes();

        log.close().unwrap();
        let log = Log::open(dir.path(), config(segment_bytes, index_interval)).unwrap();
        prop_assert_eq!(log.segment_count(), segments);
        prop_assert_eq!(log.size_bytes(), size);
        check_reads(&log, &model, max_bytes)?;

        // A crash (no close) after more appends loses nothing either.
        let mut log = log;
        append_all(&mut log, &mut model, &payloads[..1]);
        drop(log);
        let log = Log::open(dir.path(), config(segment_bytes, index_interval)).unwrap();
        check_reads(&log, &model, max_bytes)?;
    }

    #[test]
    fn truncation_then_appends_match_the_model(
        payloads in payloads(),
        segment_bytes in 60u64..3_000,
        cut in any::<prop::sample::Index>(),
        more in payloads(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path(), config(segment_bytes, 100)).unwrap();
        let mut model = Model { batches: Vec::new() };
        append_all(&mut log, &mut model, &payloads);
        let offset = cut.index(model.end() as usize + 1) as i64;
        log.truncate_to(offset).unwrap();
        // The batch containing the cut goes whole.
        model.batches.retain(|b| b.1 < offset);
        prop_assert_eq!(log.log_end_offset(), model.end());
        append_all(&mut log, &mut model, &more);
        check_reads(&log, &model, usize::MAX)?;
        log.close().unwrap();
        let log = Log::open(dir.path(), config(segment_bytes, 100)).unwrap();
        check_reads(&log, &model, 1)?;
    }
}
