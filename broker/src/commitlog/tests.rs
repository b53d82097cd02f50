//! Unit tests of [`Log`]; crash recovery is in `tests/commitlog_recovery.rs`.

use super::batch::{build_batch, headers, BatchHeader};
use super::*;

const EPOCH: i32 = 3;

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024 * 1024,
        segment_index_bytes: 4096,
        index_interval_bytes: 128,
        ..LogConfig::default()
    }
}

/// A batch of `n` records of `size`-byte values, timestamps `ts, ts+1, ...`.
fn batch(n: usize, ts: i64, size: usize) -> Vec<u8> {
    let value = vec![b'v'; size];
    let records: Vec<_> = (0..n)
        .map(|i| (None, Some(value.as_slice()), ts + i as i64))
        .collect();
    build_batch(&records, 0)
}

/// (base offset, last offset) of every batch in `bytes`.
fn spans(bytes: &[u8]) -> Vec<(i64, i64)> {
    headers(bytes)
        .map(|h| {
            let (_, h) = h.unwrap();
            (h.base_offset, h.last_offset())
        })
        .collect()
}

fn read_all(log: &Log) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, usize::MAX, i64::MAX).unwrap();
        let s = spans(&bytes);
        assert!(!s.is_empty(), "empty read at {offset}");
        offset = s.last().unwrap().1 + 1;
        out.extend(s);
    }
    out
}

#[test]
fn append_assigns_offsets_and_stamps_the_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let first = log.append(&batch(3, 1_000, 10), EPOCH, 0).unwrap();
    assert_eq!(
        first,
        AppendInfo {
            base_offset: 0,
            last_offset: 2,
            max_timestamp: 1_002,
            record_count: 3,
            duplicate: false
        }
    );
    let mut two = batch(2, 2_000, 10);
    two.extend(batch(1, 1_500, 10));
    let second = log.append(&two, EPOCH, 0).unwrap();
    assert_eq!((second.base_offset, second.last_offset), (3, 5));
    assert_eq!(second.record_count, 3);
    assert_eq!(second.max_timestamp, 2_001);
    assert_eq!(log.log_end_offset(), 6);

    let bytes = log.read(0, usize::MAX, i64::MAX).unwrap();
    assert_eq!(spans(&bytes), vec![(0, 2), (3, 4), (5, 5)]);
    for item in headers(&bytes) {
        let (pos, h) = item.unwrap();
        assert_eq!(h.partition_leader_epoch, EPOCH);
        batch::validate_batch(&bytes[pos..], pos).unwrap();
    }
}

#[test]
fn a_bad_batch_anywhere_in_the_payload_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let mut payload = batch(2, 1, 10);
    let mut bad = batch(1, 1, 10);
    bad[batch::field::MAGIC] = 1;
    payload.extend(bad);
    let err = log.append(&payload, EPOCH, 0).unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(ref e) if !e.is_corrupt()));
    let mut torn = batch(2, 1, 10);
    torn.pop();
    let err = log.append(&torn, EPOCH, 0).unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(ref e) if e.is_corrupt()));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn read_returns_the_batch_containing_the_offset_and_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for i in 0..20 {
        log.append(&batch(5, i, 30), EPOCH, 0).unwrap();
    }
    for offset in 0..100 {
        let bytes = log.read(offset, usize::MAX, i64::MAX).unwrap();
        let s = spans(&bytes);
        let first_base = offset - offset % 5;
        assert_eq!(s[0], (first_base, first_base + 4), "offset {offset}");
        assert_eq!(s.last().unwrap().1, 99);
        assert!(s.windows(2).all(|w| w[1].0 == w[0].1 + 1));
    }
}

#[test]
fn read_honours_max_bytes_but_always_returns_the_first_batch_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let one = batch(1, 0, 200);
    for _ in 0..5 {
        log.append(&one, EPOCH, 0).unwrap();
    }
    let len = one.len();
    assert_eq!(spans(&log.read(0, 1, i64::MAX).unwrap()), vec![(0, 0)]);
    assert_eq!(spans(&log.read(0, len, i64::MAX).unwrap()), vec![(0, 0)]);
    assert_eq!(
        spans(&log.read(1, 2 * len + 10, i64::MAX).unwrap()),
        vec![(1, 1), (2, 2)]
    );
    assert_eq!(log.read(0, 3 * len, i64::MAX).unwrap().len(), 3 * len);
}

#[test]
fn read_stops_before_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    for _ in 0..4 {
        log.append(&batch(2, 0, 10), EPOCH, 0).unwrap();
    }
    assert_eq!(
        spans(&log.read(0, usize::MAX, 4).unwrap()),
        vec![(0, 1), (2, 3)]
    );
    assert_eq!(
        spans(&log.read(0, usize::MAX, 5).unwrap()),
        vec![(0, 1), (2, 3), (4, 5)]
    );
    assert!(log.read(4, usize::MAX, 4).unwrap().is_empty());
    assert!(log.read(6, usize::MAX, 4).unwrap().is_empty());
}

#[test]
fn read_at_the_log_end_is_empty_and_outside_the_log_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert!(log.read(0, 100, i64::MAX).unwrap().is_empty());
    log.append(&batch(2, 0, 10), EPOCH, 0).unwrap();
    assert!(log.read(2, 100, i64::MAX).unwrap().is_empty());
    assert!(matches!(
        log.read(3, 100, i64::MAX),
        Err(Error::OffsetOutOfRange {
            offset: 3,
            log_start: 0,
            log_end: 2
        })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX),
        Err(Error::OffsetOutOfRange { .. })
    ));
}

#[test]
fn segments_roll_by_size_and_reads_cross_them() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(3, 0, 100);
    let config = LogConfig {
        segment_bytes: 3 * one.len() as u64,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    for _ in 0..10 {
        log.append(&one, EPOCH, 0).unwrap();
    }
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.size_bytes(), 10 * one.len() as u64);
    let names: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".log"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names,
        vec![
            "00000000000000000000.log",
            "00000000000000000009.log",
            "00000000000000000018.log",
            "00000000000000000027.log"
        ]
    );
    // A rolled segment's indexes are trimmed to their entries.
    let index_len = fs::metadata(dir.path().join("00000000000000000000.index"))
        .unwrap()
        .len();
    assert_eq!(index_len % 8, 0);
    assert!(index_len < 4096);
    // One read returns the rest of a segment only; a read at the end of a
    // segment's data continues in the next.
    assert_eq!(
        spans(&log.read(7, usize::MAX, i64::MAX).unwrap()),
        vec![(6, 8)]
    );
    assert_eq!(
        spans(&log.read(9, usize::MAX, i64::MAX).unwrap()),
        vec![(9, 11), (12, 14), (15, 17)]
    );
    let all = read_all(&log);
    assert_eq!(all.len(), 10);
    assert_eq!(all.last(), Some(&(27, 29)));
}

#[test]
fn a_payload_larger_than_a_segment_goes_into_an_empty_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 100,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    log.append(&batch(1, 0, 500), EPOCH, 0).unwrap();
    log.append(&batch(1, 0, 500), EPOCH, 0).unwrap();
    assert_eq!(log.segment_count(), 2);
    assert_eq!(read_all(&log), vec![(0, 0), (1, 1)]);
}

#[test]
fn segments_roll_by_time_from_the_first_batch_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_ms: 1_000,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    log.append(&batch(1, 10_000, 10), EPOCH, 10_000).unwrap();
    log.append(&batch(1, 10_900, 10), EPOCH, 10_900).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append(&batch(1, 11_001, 10), EPOCH, 11_001).unwrap();
    assert_eq!(log.segment_count(), 2);
    // Retention rolls a non-empty active segment whose time is up...
    let report = log.retain(12_002).unwrap();
    assert!(report.rolled);
    assert_eq!(log.segment_count(), 3);
    // ...but never an empty one.
    assert!(!log.retain(100_000).unwrap().rolled);
    assert_eq!(log.segment_count(), 3);
    assert_eq!(read_all(&log), vec![(0, 0), (1, 1), (2, 2)]);
}

#[test]
fn indexes_are_sparse_and_lookups_through_them_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 200,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    for i in 0..50 {
        log.append(&batch(2, i * 10, 60), EPOCH, 0).unwrap();
    }
    let (offset_entries, time_entries) = log.segments[0].index_entries();
    // Batches are ~150 bytes: an entry about every second batch.
    assert!((15..=30).contains(&offset_entries), "{offset_entries}");
    assert!(time_entries >= 15, "{time_entries}");
    for offset in 0..100 {
        let s = spans(&log.read(offset, 1, i64::MAX).unwrap());
        assert_eq!(s, vec![(offset - offset % 2, offset - offset % 2 + 1)]);
    }
}

#[test]
fn a_full_index_rolls_the_segment() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_index_bytes: 24, // 3 offset entries, 2 time entries
        index_interval_bytes: 0,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    for i in 0..10 {
        log.append(&batch(1, i, 10), EPOCH, 0).unwrap();
    }
    assert!(log.segment_count() > 1);
    assert_eq!(read_all(&log).len(), 10);
}

#[test]
fn retention_by_time_deletes_old_segments_and_moves_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 0, 100);
    let config = LogConfig {
        segment_bytes: one.len() as u64,
        retention_ms: 1_000,
        segment_ms: -1,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    for ts in [1_000, 2_000, 3_000, 4_000] {
        log.append(&batch(2, ts, 100), EPOCH, ts).unwrap();
    }
    assert_eq!(log.segment_count(), 4);
    let report = log.retain(3_500).unwrap();
    assert!(!report.rolled);
    assert_eq!(report.deleted_segments, 2);
    assert_eq!(report.deleted_bytes, 2 * one.len() as u64);
    assert_eq!(
        report
            .deleted
            .iter()
            .map(|d| d.base_offset)
            .collect::<Vec<_>>(),
        vec![0, 2]
    );
    assert!(report
        .deleted
        .iter()
        .all(|d| d.reason == DeletionReason::RetentionMs));
    assert_eq!(report.log_start_offset, 4);
    assert_eq!(log.log_start_offset(), 4);
    assert!(!dir.path().join("00000000000000000000.log").exists());
    assert!(matches!(
        log.read(3, 100, i64::MAX),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // The active segment stays, however old.
    let report = log.retain(1_000_000).unwrap();
    assert_eq!(report.deleted_segments, 1);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(read_all(&log), vec![(6, 7)]);
    let no_leftovers = fs::read_dir(dir.path()).unwrap().all(|e| {
        !e.unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".deleted")
    });
    assert!(no_leftovers);
}

#[test]
fn retention_by_bytes_keeps_the_newest_segments_within_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(1, 0, 100);
    let len = one.len() as u64;
    let config = LogConfig {
        segment_bytes: len,
        retention_ms: -1,
        retention_bytes: (2 * len + 1) as i64,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    for _ in 0..6 {
        log.append(&one, EPOCH, 0).unwrap();
    }
    let report = log.retain(0).unwrap();
    // 6 segments of `len`: deleting 3 leaves 3*len >= limit, a 4th would leave
    // 2*len < limit.
    assert_eq!(report.deleted_segments, 3);
    assert!(report
        .deleted
        .iter()
        .all(|d| d.reason == DeletionReason::RetentionBytes));
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(log.size_bytes(), 3 * len);
}

#[test]
fn delete_records_moves_the_log_start_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 0, 100);
    let config = LogConfig {
        segment_bytes: 2 * one.len() as u64,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    for _ in 0..5 {
        log.append(&one, EPOCH, 0).unwrap();
    }
    // Segments: [0..4) [4..8) [8..10)
    assert_eq!(log.segment_count(), 3);
    assert!(matches!(
        log.delete_records_before(11),
        Err(Error::OffsetOutOfRange { offset: 11, .. })
    ));
    assert_eq!(log.delete_records_before(5).unwrap(), 5);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.log_start_offset(), 5);
    // Lower requests do not move it back.
    assert_eq!(log.delete_records_before(2).unwrap(), 5);
    // A read at the new start returns the batch containing it.
    assert_eq!(spans(&log.read(5, 1, i64::MAX).unwrap()), vec![(4, 5)]);
    assert!(log.read(3, 1, i64::MAX).is_err());
    log.close().unwrap();

    let text = fs::read_to_string(dir.path().join("log-start-offset")).unwrap();
    assert_eq!(text, "0\n5\n");
    let mut log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_start_offset(), 5);
    assert_eq!(log.delete_records_before(10).unwrap(), 10);
    assert_eq!(log.segment_count(), 1);
    assert!(log.read(10, 100, i64::MAX).unwrap().is_empty());
    assert_eq!(log.append(&one, EPOCH, 0).unwrap().base_offset, 10);
}

#[test]
fn truncate_to_drops_whole_batches_and_appends_continue_from_there() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(3, 0, 100);
    let config = LogConfig {
        segment_bytes: 3 * one.len() as u64,
        index_interval_bytes: 0,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    for _ in 0..8 {
        log.append(&one, EPOCH, 0).unwrap();
    }
    // Segments: [0..9) [9..18) [18..24)
    assert_eq!(log.segment_count(), 3);
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 24);
    log.truncate_to(24).unwrap();
    assert_eq!(log.log_end_offset(), 24);
    // Mid-batch: the batch [12..15) goes whole.
    log.truncate_to(13).unwrap();
    assert_eq!(log.log_end_offset(), 12);
    assert_eq!(log.segment_count(), 2);
    assert_eq!(log.recovery_point(), 12);
    assert_eq!(read_all(&log).last(), Some(&(9, 11)));
    // At a segment boundary the later segment is deleted.
    log.truncate_to(9).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.segment_count(), 1);
    assert!(!dir.path().join("00000000000000000009.log").exists());
    let info = log.append(&batch(1, 5_000, 10), EPOCH + 1, 0).unwrap();
    assert_eq!(info.base_offset, 9);
    assert_eq!(log.max_timestamp().unwrap(), Some((9, 5_000)));
    for _ in 0..4 {
        log.append(&one, EPOCH, 0).unwrap();
    }
    let before = read_all(&log);
    log.close().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(read_all(&log), before);
    assert_eq!(log.log_end_offset(), 22);

    let mut log = log;
    log.truncate_to(0).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.append(&one, EPOCH, 0).unwrap().base_offset, 0);
}

#[test]
fn truncate_below_the_log_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&batch(5, 0, 10), EPOCH, 0).unwrap();
    log.delete_records_before(3).unwrap();
    assert!(matches!(
        log.truncate_to(2),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // Truncating the batch holding the log start pulls the start back.
    log.truncate_to(4).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.log_start_offset(), 0);
}

#[test]
fn offset_for_timestamp_finds_the_earliest_record_at_or_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_bytes: 400,
        index_interval_bytes: 50,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    // Offsets 0..40, record i has timestamp 1000 + 10*i, except a late record.
    for b in 0..10 {
        let ts: Vec<i64> = (0..4).map(|i| 1_000 + 10 * (b * 4 + i)).collect();
        let value = [b'x'; 20];
        let records: Vec<_> = ts.iter().map(|&t| (None, Some(&value[..]), t)).collect();
        log.append(&build_batch(&records, 0), EPOCH, 0).unwrap();
    }
    assert!(log.segment_count() > 2);
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_000).unwrap(), Some((0, 1_000)));
    assert_eq!(log.offset_for_timestamp(1_001).unwrap(), Some((1, 1_010)));
    for i in 0..40 {
        let ts = 1_000 + 10 * i;
        assert_eq!(log.offset_for_timestamp(ts).unwrap(), Some((i, ts)), "{ts}");
        assert_eq!(
            log.offset_for_timestamp(ts - 5).unwrap(),
            Some((i, ts)),
            "{ts}"
        );
    }
    assert_eq!(log.offset_for_timestamp(1_391).unwrap(), None);
    // The log start hides earlier records.
    log.delete_records_before(6).unwrap();
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((6, 1_060)));
    assert_eq!(log.max_timestamp().unwrap(), Some((39, 1_390)));
}

#[test]
fn offset_for_timestamp_of_compressed_batches_is_the_batch_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&batch(3, 100, 10), EPOCH, 0).unwrap();
    let compressed = build_batch(&[(None, Some(b"a"), 200), (None, Some(b"b"), 250)], 4);
    log.append(&compressed, EPOCH, 0).unwrap();
    assert_eq!(log.offset_for_timestamp(101).unwrap(), Some((1, 101)));
    assert_eq!(log.offset_for_timestamp(240).unwrap(), Some((3, 250)));
    assert_eq!(log.max_timestamp().unwrap(), Some((3, 250)));
}

#[test]
fn max_timestamp_is_the_earliest_record_with_the_largest_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), None);
    log.append(
        &build_batch(&[(None, None, 5), (None, None, 9), (None, None, 7)], 0),
        EPOCH,
        0,
    )
    .unwrap();
    log.append(&build_batch(&[(None, None, 9)], 0), EPOCH, 0)
        .unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((1, 9)));
    // Survives a restart (the time index carries it for trusted segments).
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.max_timestamp().unwrap(), Some((1, 9)));
}

#[test]
fn reopen_after_close_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(4, 77, 50);
    let config = LogConfig {
        segment_bytes: 5 * one.len() as u64,
        index_interval_bytes: 100,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    for i in 0..23 {
        log.append(&batch(4, 77 + i, 50), i as i32, 0).unwrap();
    }
    let before: Vec<Bytes> = (0..log.log_end_offset())
        .map(|o| log.read(o, 1000, i64::MAX).unwrap())
        .collect();
    let (end, size, count) = (log.log_end_offset(), log.size_bytes(), log.segment_count());
    let active_base = log.segments.last().unwrap().base_offset();
    assert_eq!(active_base, 80);
    log.close().unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("recovery-point")).unwrap(),
        format!("0\n{end}\n")
    );
    // Clean close trims the active segment's indexes too.
    let active_index = dir.path().join(segment::file_name(active_base, "index"));
    assert!(fs::metadata(&active_index).unwrap().len() < 4096);

    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(log.size_bytes(), size);
    assert_eq!(log.segment_count(), count);
    assert_eq!(log.recovery_point(), end);
    let after: Vec<Bytes> = (0..end)
        .map(|o| log.read(o, 1000, i64::MAX).unwrap())
        .collect();
    assert_eq!(before, after);
    let h = BatchHeader::parse(&after[90]).unwrap();
    assert_eq!(h.partition_leader_epoch, 22);
}

#[test]
fn flush_bookkeeping_tracks_the_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert!(log.sync_target().is_empty());
    log.append(&batch(3, 0, 10), EPOCH, 0).unwrap();
    assert_eq!(log.unflushed_messages(), 3);
    let target = log.sync_target();
    assert!(!target.is_empty());
    assert_eq!(target.end_offset(), 3);
    log.append(&batch(2, 0, 10), EPOCH, 0).unwrap();
    target.sync().unwrap();
    log.mark_flushed(target.end_offset());
    assert_eq!(log.recovery_point(), 3);
    assert_eq!(log.unflushed_messages(), 2);
    log.flush().unwrap();
    assert_eq!(log.recovery_point(), 5);
    assert!(log.sync_target().is_empty());

    // A target taken before a truncation does not count afterwards.
    log.append(&batch(2, 0, 10), EPOCH, 0).unwrap();
    let stale = log.sync_target();
    log.truncate_to(5).unwrap();
    log.append(&batch(4, 0, 10), EPOCH, 0).unwrap();
    log.mark_flushed(stale.end_offset());
    assert_eq!(log.recovery_point(), 5);
    log.checkpoint().unwrap();
    assert_eq!(
        fs::read_to_string(dir.path().join("recovery-point")).unwrap(),
        "0\n5\n"
    );
}

#[test]
fn a_poisoned_log_refuses_writes_but_still_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&batch(1, 0, 10), EPOCH, 0).unwrap();
    log.poison(io::Error::other("fsync failed"));
    assert!(log.is_poisoned());
    let err = log.append(&batch(1, 0, 10), EPOCH, 0).unwrap_err();
    assert!(matches!(err, Error::Poisoned { .. }));
    assert!(err.to_string().contains("fsync failed"));
    assert!(matches!(log.flush(), Err(Error::Poisoned { .. })));
    let rp = log.recovery_point();
    log.mark_flushed(1);
    assert_eq!(log.recovery_point(), rp);
    assert_eq!(spans(&log.read(0, 100, i64::MAX).unwrap()), vec![(0, 0)]);
    assert!(matches!(log.close(), Err(Error::Poisoned { .. })));
}

#[test]
fn delete_removes_the_partition_directory() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("orders-0");
    let mut log = Log::open(&dir, small_config()).unwrap();
    assert!(dir.join("00000000000000000000.log").exists());
    log.append(&batch(1, 0, 10), EPOCH, 0).unwrap();
    log.delete().unwrap();
    assert!(!dir.exists());
}

#[test]
fn a_malformed_checkpoint_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&batch(2, 0, 10), EPOCH, 0).unwrap();
    log.close().unwrap();
    fs::write(dir.path().join("recovery-point"), "garbage").unwrap();
    fs::write(dir.path().join("log-start-offset"), "0\nnope\n").unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_start_offset(), 0);
    assert_eq!(log.log_end_offset(), 2);
}

#[test]
fn log_append_time_stamps_the_broker_clock_and_keeps_the_crc_valid() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let mut payload = batch(2, 1_000, 10);
    payload.extend(batch(3, 2_000, 10));
    let info = log.append_with(&payload, EPOCH, 99_000, true).unwrap();
    assert_eq!(info.max_timestamp, 99_000);
    assert_eq!(info.last_offset, 4);
    let bytes = log.read(0, usize::MAX, i64::MAX).unwrap();
    let mut pos = 0;
    let mut seen = 0;
    while pos < bytes.len() {
        let h = batch::validate_batch(&bytes[pos..], pos).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99_000);
        assert_eq!(h.partition_leader_epoch, EPOCH);
        pos += h.total_len();
        seen += 1;
    }
    assert_eq!(seen, 2);
}

#[test]
fn create_time_append_stores_the_producer_bytes_unchanged_past_the_stamped_fields() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let mut payload = batch(2, 1_000, 10);
    payload.extend(batch(3, 2_000, 10));
    log.append(&batch(1, 0, 1), EPOCH, 0).unwrap();
    log.append(&payload, EPOCH, 0).unwrap();
    let stored = log.read(1, usize::MAX, i64::MAX).unwrap();
    assert_eq!(stored.len(), payload.len());
    let first_len = BatchHeader::parse(&payload).unwrap().total_len();
    for (start, end) in [(0, first_len), (first_len, payload.len())] {
        // Bytes 8..12 (length) and 16.. (magic onwards) are the producer's.
        assert_eq!(
            stored[start + 8..start + 12],
            payload[start + 8..start + 12]
        );
        assert_eq!(stored[start + 16..end], payload[start + 16..end]);
    }
}

// Leader epochs and follower-side operations.

/// A log holding batches of 3, 2, 4 and 1 records written in epochs 0, 0, 1
/// and 3: offsets [0..3) [3..5) [5..9) [9..10).
fn log_with_epochs_0_0_1_3(dir: &Path, config: LogConfig) -> Log {
    let mut log = Log::open(dir, config).unwrap();
    for (n, epoch) in [(3, 0), (2, 0), (4, 1), (1, 3)] {
        log.append(&batch(n, 1_000, 50), epoch, 0).unwrap();
    }
    log
}

/// Every batch of `log` from `from` on, one `Bytes` each, as a fetch
/// would return them.
fn batches_from(log: &Log, from: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let one = log.read(offset, 1, i64::MAX).unwrap();
        offset = BatchHeader::parse(&one).unwrap().next_offset();
        out.push(one);
    }
    out
}

fn epoch_file(dir: &Path) -> String {
    fs::read_to_string(dir.join("leader-epoch-checkpoint")).unwrap()
}

#[test]
fn appends_in_epochs_0_0_1_3_answer_offsets_for_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_epochs_0_0_1_3(dir.path(), small_config());
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 5), (3, 9)]);
    assert_eq!(log.latest_epoch(), Some(3));
    assert_eq!(epoch_file(dir.path()), "0\n3\n0 0\n1 5\n3 9\n");
    assert_eq!(log.end_offset_for_epoch(-1), (-1, -1));
    assert_eq!(log.end_offset_for_epoch(0), (0, 5));
    assert_eq!(log.end_offset_for_epoch(1), (1, 9));
    assert_eq!(log.end_offset_for_epoch(2), (1, 9));
    assert_eq!(log.end_offset_for_epoch(3), (3, 10));
    assert_eq!(log.end_offset_for_epoch(4), (-1, -1));
    // The latest epoch's end follows the log end.
    log.append(&batch(2, 0, 10), 3, 0).unwrap();
    assert_eq!(log.end_offset_for_epoch(3), (3, 12));
    // An unknown epoch (-1) stamps the batches but adds no entry.
    log.append(&batch(1, 0, 10), -1, 0).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 5), (3, 9)]);
}

#[test]
fn reopen_recovers_the_epoch_cache() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_epochs_0_0_1_3(dir.path(), small_config());
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 5), (3, 9)]);
    assert_eq!(log.end_offset_for_epoch(1), (1, 9));
}

#[test]
fn a_missing_epoch_checkpoint_is_rebuilt_from_the_batch_headers() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(3, 0, 50);
    let config = LogConfig {
        segment_bytes: 2 * one.len() as u64,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    for epoch in [0, 0, 2, 2, 2, 5, 7] {
        log.append(&one, epoch, 0).unwrap();
    }
    log.delete_records_before(4).unwrap();
    let expected = log.epoch_entries();
    assert_eq!(expected, vec![(0, 4), (2, 6), (5, 15), (7, 18)]);
    log.close().unwrap();

    // As a log written before the cache existed.
    fs::remove_file(dir.path().join("leader-epoch-checkpoint")).unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.epoch_entries(), expected);
    assert_eq!(epoch_file(dir.path()), "0\n4\n0 4\n2 6\n5 15\n7 18\n");

    // A garbled one is rebuilt too.
    drop(log);
    fs::write(dir.path().join("leader-epoch-checkpoint"), "0\n9\n1 x\n").unwrap();
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.epoch_entries(), expected);
}

#[test]
fn a_torn_tail_after_reopen_truncates_the_epoch_cache_too() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_epochs_0_0_1_3(dir.path(), small_config());
    drop(log); // a crash: no close
    let log_file = dir.path().join(segment::file_name(0, "log"));
    let len = fs::metadata(&log_file).unwrap().len();
    // Tear the last batch (epoch 3, offset 9).
    File::options()
        .write(true)
        .open(&log_file)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 5)]);
    assert_eq!(epoch_file(dir.path()), "0\n2\n0 0\n1 5\n");
    assert_eq!(log.end_offset_for_epoch(1), (1, 9));
    assert_eq!(log.end_offset_for_epoch(3), (-1, -1));
    log.append(&batch(1, 0, 10), 4, 0).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 5), (4, 9)]);
}

#[test]
fn truncate_to_drops_the_epochs_it_cuts_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_epochs_0_0_1_3(dir.path(), small_config());
    log.truncate_to(9).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 5)]);
    // Offset 7 is inside epoch 1's only batch [5..9): the batch and its
    // epoch go whole.
    log.truncate_to(7).unwrap();
    assert_eq!(log.log_end_offset(), 5);
    assert_eq!(log.epoch_entries(), vec![(0, 0)]);
    assert_eq!(log.end_offset_for_epoch(1), (-1, -1));
    log.append(&batch(1, 0, 10), 4, 0).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (4, 5)]);
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 0), (4, 5)]);
}

#[test]
fn append_replicated_reproduces_the_leaders_bytes_offsets_and_epochs() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let one = batch(3, 1_000, 50);
    let config = LogConfig {
        segment_bytes: 4 * one.len() as u64,
        index_interval_bytes: 100,
        ..small_config()
    };
    let mut leader = Log::open(leader_dir.path(), config.clone()).unwrap();
    for (i, epoch) in [0, 0, 1, 1, 1, 2, 5, 5, 5, 5, 6].into_iter().enumerate() {
        leader
            .append(&batch(3, 1_000 + i as i64, 50), epoch, 0)
            .unwrap();
    }
    let mut follower = Log::open(follower_dir.path(), config.clone()).unwrap();
    // Fetched a few batches at a time, as a replica fetcher would.
    let batches = batches_from(&leader, 0);
    for chunk in batches.chunks(3) {
        let payload: Vec<u8> = chunk.iter().flat_map(|b| b.iter().copied()).collect();
        let first = BatchHeader::parse(&payload).unwrap();
        let info = follower.append_replicated(&payload).unwrap();
        assert_eq!(info.base_offset, first.base_offset);
        assert_eq!(info.last_offset, follower.log_end_offset() - 1);
        assert_eq!(info.record_count, 3 * chunk.len() as u64);
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(follower.size_bytes(), leader.size_bytes());
    // Fetch sizes differ from produce sizes, so segments roll elsewhere.
    assert!(follower.segment_count() > 1);
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(
        follower.epoch_entries(),
        vec![(0, 0), (1, 6), (2, 15), (5, 18), (6, 30)]
    );
    for offset in 0..leader.log_end_offset() {
        assert_eq!(
            follower.read(offset, 1, i64::MAX).unwrap(),
            leader.read(offset, 1, i64::MAX).unwrap(),
            "offset {offset}"
        );
    }
    for ts in [999, 1_000, 1_005, 1_012, 2_000] {
        assert_eq!(
            follower.offset_for_timestamp(ts).unwrap(),
            leader.offset_for_timestamp(ts).unwrap()
        );
    }
    // What the follower wrote reopens like what the leader wrote.
    follower.close().unwrap();
    let follower = Log::open(follower_dir.path(), config).unwrap();
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    assert_eq!(batches_from(&follower, 0), batches);
}

#[test]
fn append_replicated_refuses_gaps_and_writes_nothing() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let leader = log_with_epochs_0_0_1_3(leader_dir.path(), small_config());
    let batches = batches_from(&leader, 0);
    let mut follower = Log::open(follower_dir.path(), small_config()).unwrap();

    // Not at the log end.
    let err = follower.append_replicated(&batches[1]).unwrap_err();
    assert!(matches!(
        err,
        Error::NonContiguous {
            expected: 0,
            got: 3
        }
    ));
    // A gap inside the payload: [0..3) then [5..9).
    let gap: Vec<u8> = [&batches[0][..], &batches[2][..]].concat();
    let err = follower.append_replicated(&gap).unwrap_err();
    assert!(matches!(
        err,
        Error::NonContiguous {
            expected: 3,
            got: 5
        }
    ));
    // A damaged batch.
    let mut bad = batches[0].to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let err = follower.append_replicated(&bad).unwrap_err();
    assert!(matches!(err, Error::InvalidBatch(ref e) if e.is_corrupt()));
    assert_eq!(follower.log_end_offset(), 0);
    assert_eq!(follower.size_bytes(), 0);
    assert!(follower.epoch_entries().is_empty());

    // An empty payload is a no-op.
    let info = follower.append_replicated(&[]).unwrap();
    assert_eq!((info.base_offset, info.record_count), (0, 0));
    assert_eq!(follower.log_end_offset(), 0);

    follower.append_replicated(&batches[0]).unwrap();
    let err = follower.append_replicated(&batches[0]).unwrap_err();
    assert!(matches!(
        err,
        Error::NonContiguous {
            expected: 3,
            got: 0
        }
    ));
    assert_eq!(follower.log_end_offset(), 3);
}

#[test]
fn truncate_fully_and_start_at_then_replicate_from_there() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let one = batch(2, 0, 100);
    let config = LogConfig {
        segment_bytes: 2 * one.len() as u64,
        ..small_config()
    };
    let mut leader = log_with_epochs_0_0_1_3(leader_dir.path(), config.clone());
    leader.delete_records_before(5).unwrap();

    // A follower whose log is behind the leader's log start.
    let mut follower = Log::open(follower_dir.path(), config.clone()).unwrap();
    for _ in 0..4 {
        follower.append(&batch(1, 0, 100), 0, 0).unwrap();
    }
    follower.flush().unwrap();
    assert!(follower.segment_count() > 1);
    assert!(follower.log_end_offset() > 0);
    assert!(follower.log_end_offset() < leader.log_start_offset());

    follower.truncate_fully_and_start_at(5).unwrap();
    assert_eq!(follower.log_start_offset(), 5);
    assert_eq!(follower.log_end_offset(), 5);
    assert_eq!(follower.recovery_point(), 5);
    assert_eq!(follower.segment_count(), 1);
    assert_eq!(follower.size_bytes(), 0);
    assert!(follower.epoch_entries().is_empty());
    assert_eq!(follower.latest_epoch(), None);
    let dir = follower_dir.path();
    assert_eq!(
        fs::read_to_string(dir.join("log-start-offset")).unwrap(),
        "0\n5\n"
    );
    assert_eq!(
        fs::read_to_string(dir.join("recovery-point")).unwrap(),
        "0\n5\n"
    );
    assert_eq!(epoch_file(dir), "0\n0\n");
    let mut logs: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".log"))
        .collect();
    logs.sort();
    assert_eq!(logs, vec![segment::file_name(5, "log")]);

    for b in batches_from(&leader, 5) {
        follower.append_replicated(&b).unwrap();
    }
    assert_eq!(follower.log_end_offset(), leader.log_end_offset());
    assert_eq!(follower.epoch_entries(), vec![(1, 5), (3, 9)]);
    assert_eq!(follower.epoch_entries(), leader.epoch_entries());
    follower.close().unwrap();
    let mut follower = Log::open(follower_dir.path(), config).unwrap();
    assert_eq!(follower.log_start_offset(), 5);
    assert_eq!(batches_from(&follower, 5), batches_from(&leader, 5));
    assert_eq!(follower.epoch_entries(), vec![(1, 5), (3, 9)]);

    // Starting over at the base of an existing segment reuses its name.
    follower.truncate_fully_and_start_at(5).unwrap();
    assert_eq!(follower.log_end_offset(), 5);
    assert_eq!(follower.size_bytes(), 0);
    assert!(follower.read(5, 100, i64::MAX).unwrap().is_empty());
    follower
        .append_replicated(&leader.read(5, 1, i64::MAX).unwrap())
        .unwrap();
    assert_eq!(follower.epoch_entries(), vec![(1, 5)]);
}

#[test]
fn delete_records_and_retention_move_the_first_epoch_entry() {
    let dir = tempfile::tempdir().unwrap();
    let one = batch(2, 0, 100);
    let config = LogConfig {
        segment_bytes: 2 * one.len() as u64,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    for epoch in [0, 0, 1, 3, 3, 4] {
        log.append(&one, epoch, 0).unwrap();
    }
    // Segments [0..4) [4..8) [8..12); epochs 0@0 1@4 3@6 4@10.
    assert_eq!(log.epoch_entries(), vec![(0, 0), (1, 4), (3, 6), (4, 10)]);
    log.delete_records_before(2).unwrap();
    assert_eq!(log.epoch_entries(), vec![(0, 2), (1, 4), (3, 6), (4, 10)]);
    log.delete_records_before(7).unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 7), (4, 10)]);
    // Older than every entry left: Kafka answers with the requested epoch.
    assert_eq!(log.end_offset_for_epoch(2), (2, 7));
    log.close().unwrap();
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.epoch_entries(), vec![(3, 7), (4, 10)]);

    // Retention by size deletes the segment [4..8): the log starts at 8.
    log.set_config(LogConfig {
        retention_bytes: 1,
        retention_ms: -1,
        ..config
    });
    let report = log.retain(0).unwrap();
    assert_eq!(report.log_start_offset, 8);
    assert_eq!(log.epoch_entries(), vec![(3, 8), (4, 10)]);
    assert_eq!(epoch_file(dir.path()), "0\n2\n3 8\n4 10\n");
}

// Producer state (idempotent producer).

const PID: i64 = 4242;

/// [`batch`] of producer `pid` at `epoch`, starting at sequence `seq`.
fn producer_batch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Vec<u8> {
    use batch::field;
    let mut b = batch(n, ts, 10);
    b[field::PRODUCER_ID..field::PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    b[field::PRODUCER_EPOCH..field::PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    b[field::BASE_SEQUENCE..field::BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    batch::fix_crc(&mut b);
    b
}

/// Batches of 2 records of [`PID`], epoch 0, at sequences 0, 2, 4, ...
fn producer_batches(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| producer_batch(PID, 0, 2 * i as i32, 2, 1_000 + i as i64))
        .collect()
}

fn snapshots(dir: &Path) -> Vec<i64> {
    producer_state::list_snapshots(dir).unwrap()
}

fn assert_duplicate(log: &mut Log, retry: &[u8], base_offset: i64, last_offset: i64) {
    let (end, size) = (log.log_end_offset(), log.size_bytes());
    let info = log.append(retry, EPOCH, 0).unwrap();
    assert!(info.duplicate, "{info:?}");
    assert_eq!(
        (info.base_offset, info.last_offset),
        (base_offset, last_offset)
    );
    assert_eq!((log.log_end_offset(), log.size_bytes()), (end, size));
}

#[test]
fn a_retried_batch_is_answered_with_the_original_offsets_and_not_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&batch(3, 0, 10), EPOCH, 0).unwrap();
    let first = producer_batch(PID, 0, 0, 2, 500);
    let info = log.append(&first, EPOCH, 0).unwrap();
    assert!(!info.duplicate);
    assert_eq!((info.base_offset, info.last_offset), (3, 4));
    assert_eq!(log.producer_count(), 1);
    log.append(&producer_batch(PID, 0, 2, 1, 600), EPOCH, 0)
        .unwrap();

    let end = log.log_end_offset();
    let info = log.append(&first, EPOCH, 0).unwrap();
    assert_eq!(
        info,
        AppendInfo {
            base_offset: 3,
            last_offset: 4,
            max_timestamp: 501,
            record_count: 2,
            duplicate: true
        }
    );
    assert_eq!(log.log_end_offset(), end);
    assert_eq!(read_all(&log), vec![(0, 2), (3, 4), (5, 5)]);
    // The sequence goes on from the last batch written.
    let info = log
        .append(&producer_batch(PID, 0, 3, 1, 700), EPOCH, 0)
        .unwrap();
    assert_eq!((info.base_offset, info.duplicate), (6, false));
}

#[test]
fn a_sequence_gap_is_out_of_order_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let err = log
        .append(&producer_batch(PID, 0, 1, 1, 0), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::UnknownProducerId(PID))
    ));
    log.append(&producer_batch(PID, 0, 0, 2, 0), EPOCH, 0)
        .unwrap();
    let err = log
        .append(&producer_batch(PID, 0, 3, 1, 0), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::OutOfOrderSequence {
            producer_id: PID,
            expected: 2,
            got: 3
        })
    ));
    assert!(err.to_string().contains("expected 2, got 3"), "{err}");
    assert_eq!(log.log_end_offset(), 2);
    assert!(!log.is_poisoned());
}

#[test]
fn an_older_epoch_is_fenced_and_a_new_epoch_restarts_at_sequence_zero() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&producer_batch(PID, 1, 0, 2, 0), EPOCH, 0)
        .unwrap();
    let err = log
        .append(&producer_batch(PID, 0, 2, 1, 0), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::InvalidProducerEpoch {
            producer_id: PID,
            current: 1,
            got: 0
        })
    ));
    let err = log
        .append(&producer_batch(PID, 2, 2, 1, 0), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::OutOfOrderSequence {
            expected: 0,
            got: 2,
            ..
        })
    ));
    let info = log
        .append(&producer_batch(PID, 2, 0, 1, 0), EPOCH, 0)
        .unwrap();
    assert_eq!((info.base_offset, info.duplicate), (2, false));
    // The old epoch is fenced now.
    assert!(log
        .append(&producer_batch(PID, 1, 2, 1, 0), EPOCH, 0)
        .is_err());
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn only_the_last_five_batches_are_recognised_as_retries() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sent = producer_batches(6);
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    let err = log.append(&sent[0], EPOCH, 0).unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::OutOfOrderSequence {
            expected: 12,
            got: 0,
            ..
        })
    ));
    for (i, b) in sent.iter().enumerate().skip(1) {
        let first = 2 * i as i64;
        assert_duplicate(&mut log, b, first, first + 1);
    }
}

#[test]
fn a_payload_is_a_duplicate_only_if_every_batch_is() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sent = producer_batches(4);
    log.append(&sent[..2].concat(), EPOCH, 0).unwrap();
    // Two batches in one payload: the second is checked after the first.
    log.append(&sent[2..].concat(), EPOCH, 0).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    assert_duplicate(&mut log, &sent[1..3].concat(), 2, 5);
    let next = producer_batch(PID, 0, 8, 1, 0);
    let err = log
        .append(&[&sent[3][..], &next[..]].concat(), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::OutOfOrderSequence { .. })
    ));
    let err = log
        .append(&[&batch(1, 0, 10)[..], &sent[3][..]].concat(), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(err, Error::Producer(_)));
    assert_eq!(log.log_end_offset(), 8);
}

#[test]
fn a_log_append_time_retry_reports_the_original_append_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let b = producer_batch(PID, 0, 0, 2, 10);
    let info = log.append_with(&b, EPOCH, 5_000, true).unwrap();
    assert_eq!(info.max_timestamp, 5_000);
    let retry = log.append_with(&b, EPOCH, 9_000, true).unwrap();
    assert!(retry.duplicate);
    assert_eq!(retry.max_timestamp, 5_000);
    // Expiration counts from the append time too.
    assert_eq!(log.expire_producers(5_999, 1_000), 0);
    assert_eq!(log.expire_producers(6_000, 1_000), 1);
}

#[test]
fn expired_producers_are_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&producer_batch(1, 0, 0, 1, 1_000), EPOCH, 0)
        .unwrap();
    log.append(&producer_batch(2, 0, 0, 1, 5_000), EPOCH, 0)
        .unwrap();
    assert_eq!(log.producer_count(), 2);
    assert_eq!(log.expire_producers(10_000, 8_000), 1);
    assert_eq!(log.producer_count(), 1);
    let err = log
        .append(&producer_batch(1, 0, 1, 1, 10_000), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::UnknownProducerId(1))
    ));
    log.append(&producer_batch(2, 0, 1, 1, 10_000), EPOCH, 0)
        .unwrap();
    // The expiration survives a snapshot and a reopen.
    log.close().unwrap();
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producer_count(), 1);
    assert!(log.producer_state().entry(1).is_none());
}

#[test]
fn producer_state_survives_a_clean_close_in_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sent = producer_batches(3);
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.close().unwrap();
    assert_eq!(snapshots(dir.path()), vec![6]);
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    // Loaded, not replayed: nothing new was written.
    assert_eq!(snapshots(dir.path()), vec![6]);
    assert_eq!(log.producer_count(), 1);
    assert_duplicate(&mut log, &sent[0], 0, 1);
    assert_duplicate(&mut log, &sent[2], 4, 5);
    let info = log
        .append(&producer_batch(PID, 0, 6, 1, 0), EPOCH, 0)
        .unwrap();
    assert_eq!(info.base_offset, 6);
}

#[test]
fn producer_state_survives_a_crash_by_replaying_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let sent = producer_batches(12);
    let config = LogConfig {
        segment_bytes: 3 * sent[0].len() as u64,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.append(&producer_batch(7, 3, 0, 1, 0), EPOCH, 0)
        .unwrap();
    // Snapshots at the last three rolls, each at a segment's base offset.
    assert_eq!(log.segment_count(), 5);
    assert_eq!(snapshots(dir.path()), vec![12, 18, 24]);
    drop(log); // a crash: no snapshot at the log end

    let mut log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.producer_count(), 2);
    assert_eq!(log.producer_state().entry(7).unwrap().epoch, 3);
    for (i, b) in sent.iter().enumerate().skip(7) {
        let first = 2 * i as i64;
        assert_duplicate(&mut log, b, first, first + 1);
    }
    // The replay was snapshotted, so the next open need not repeat it.
    assert_eq!(snapshots(dir.path()), vec![18, 24, 25]);

    // Without any snapshot, the whole log is replayed.
    drop(log);
    for offset in snapshots(dir.path()) {
        fs::remove_file(dir.path().join(producer_state::snapshot_file_name(offset))).unwrap();
    }
    let mut log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.producer_count(), 2);
    assert_duplicate(&mut log, &sent[11], 22, 23);
}

#[test]
fn a_torn_tail_drops_the_producer_state_of_the_lost_batch() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sent = producer_batches(3);
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.close().unwrap();
    let log_file = dir.path().join(segment::file_name(0, "log"));
    let len = fs::metadata(&log_file).unwrap().len();
    File::options()
        .write(true)
        .open(&log_file)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    // A corrupt snapshot is skipped as well.
    fs::write(
        dir.path().join(producer_state::snapshot_file_name(2)),
        b"garbage",
    )
    .unwrap();

    let mut log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    // The snapshot at 6 is past the log end; the one at 2 is corrupt.
    assert_eq!(snapshots(dir.path()), vec![4]);
    assert_duplicate(&mut log, &sent[1], 2, 3);
    let info = log.append(&sent[2], EPOCH, 0).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (4, false));
}

#[test]
fn truncate_to_rebuilds_the_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sent = producer_batches(4);
    for b in &sent[..2] {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.take_producer_snapshot().unwrap();
    for b in &sent[2..] {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.take_producer_snapshot().unwrap();
    assert_eq!(snapshots(dir.path()), vec![4, 8]);

    log.truncate_to(5).unwrap();
    assert_eq!(log.log_end_offset(), 4);
    assert_eq!(snapshots(dir.path()), vec![4]);
    // Batch 2 (offsets 4..6) is gone: written again, not a duplicate.
    let info = log.append(&sent[2], EPOCH, 0).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (4, false));
    assert_duplicate(&mut log, &sent[0], 0, 1);
    assert_duplicate(&mut log, &sent[2], 4, 5);

    // Truncating below every snapshot replays the log from its start.
    log.truncate_to(2).unwrap();
    assert_eq!(snapshots(dir.path()), vec![2]);
    let info = log.append(&sent[1], EPOCH, 0).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (2, false));
    log.truncate_to(0).unwrap();
    assert_eq!(log.producer_count(), 0);
}

#[test]
fn truncate_fully_and_start_at_clears_the_producer_state() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let sent = producer_batches(2);
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.take_producer_snapshot().unwrap();
    log.truncate_fully_and_start_at(100).unwrap();
    assert_eq!(log.producer_count(), 0);
    assert!(snapshots(dir.path()).is_empty());
    let info = log.append(&sent[0], EPOCH, 0).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (100, false));
}

#[test]
fn a_follower_that_becomes_leader_recognises_retries() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = Log::open(leader_dir.path(), small_config()).unwrap();
    let sent = producer_batches(3);
    for b in &sent {
        leader.append(b, EPOCH, 0).unwrap();
    }
    let mut follower = Log::open(follower_dir.path(), small_config()).unwrap();
    let fetched: Vec<u8> = batches_from(&leader, 0).concat();
    follower.append_replicated(&fetched).unwrap();
    assert_eq!(follower.producer_count(), 1);
    assert_duplicate(&mut follower, &sent[1], 2, 3);
    let err = follower
        .append(&producer_batch(PID, 0, 7, 1, 0), EPOCH + 1, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::OutOfOrderSequence { expected: 6, .. })
    ));
}

#[test]
fn retention_deletes_the_snapshots_of_deleted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let sent = producer_batches(6);
    let config = LogConfig {
        segment_bytes: 2 * sent[0].len() as u64,
        ..small_config()
    };
    let mut log = Log::open(dir.path(), config).unwrap();
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    assert_eq!(snapshots(dir.path()), vec![4, 8]);
    log.delete_records_before(9).unwrap();
    assert_eq!(log.log_start_offset(), 9);
    assert_eq!(snapshots(dir.path()), vec![8]);
    // The producer's state outlives its deleted batches.
    assert_duplicate(&mut log, &sent[2], 4, 5);
}

// Transactions.

/// A transactional batch of `n` records of producer `pid`.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize, ts: i64) -> Vec<u8> {
    use batch::field;
    let mut b = producer_batch(pid, epoch, seq, n, ts);
    b[field::ATTRIBUTES..field::ATTRIBUTES + 2]
        .copy_from_slice(&batch::ATTR_TRANSACTIONAL.to_be_bytes());
    batch::fix_crc(&mut b);
    b
}

/// Writes a commit or abort marker of `pid` as the coordinator does; returns
/// its offset.
fn end_txn(log: &mut Log, pid: i64, epoch: i16, commit: bool) -> i64 {
    let marker = batch::build_control_batch(pid, epoch, commit, 5, 2_000);
    let info = log.append_from_coordinator(&marker, EPOCH, 0).unwrap();
    assert_eq!(info.base_offset, info.last_offset);
    info.base_offset
}

fn aborted(producer_id: i64, first: i64, last: i64, lso: i64) -> AbortedTxn {
    AbortedTxn {
        producer_id,
        first_offset: first,
        last_offset: last,
        last_stable_offset: lso,
    }
}

/// One batch per segment: every test batch (data or marker) is below 100
/// bytes, any two are above.
fn one_batch_per_segment() -> LogConfig {
    LogConfig {
        segment_bytes: 100,
        ..small_config()
    }
}

fn txn_index_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(segment::file_name(base, "txnindex"))
}

#[test]
fn commit_and_abort_markers_end_transactions_and_aborts_are_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap();
    assert_eq!(log.ongoing_transactions(), vec![(1, 0)]);
    log.append(&txn_batch(1, 0, 2, 1, 100), EPOCH, 0).unwrap();
    assert_eq!(end_txn(&mut log, 1, 0, true), 3);
    assert!(log.ongoing_transactions().is_empty());
    assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
    assert!(!txn_index_path(dir.path(), 0).exists());

    log.append(&txn_batch(1, 0, 3, 2, 100), EPOCH, 0).unwrap();
    assert_eq!(log.ongoing_transactions(), vec![(1, 4)]);
    assert_eq!(end_txn(&mut log, 1, 0, false), 6);
    assert!(log.ongoing_transactions().is_empty());
    assert_eq!(
        log.aborted_transactions(0, i64::MAX).unwrap(),
        vec![aborted(1, 4, 6, 7)]
    );
    assert_eq!(
        fs::metadata(txn_index_path(dir.path(), 0)).unwrap().len(),
        34
    );
    // A marker without a transaction in progress (a partition added to the
    // transaction but never written to) ends nothing.
    assert_eq!(end_txn(&mut log, 1, 0, false), 7);
    assert_eq!(log.aborted_transactions(0, i64::MAX).unwrap().len(), 1);
    // The markers are in the log as written, and read back.
    let bytes = log.read(6, usize::MAX, i64::MAX).unwrap();
    assert_eq!(
        batch::control_record(&bytes),
        Some(ControlMarker {
            commit: false,
            coordinator_epoch: 5
        })
    );
    // The producer's sequence goes on after the markers.
    let info = log.append(&txn_batch(1, 0, 5, 1, 100), EPOCH, 0).unwrap();
    assert_eq!((info.base_offset, info.duplicate), (8, false));
}

#[test]
fn clients_may_not_write_control_batches() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let marker = batch::build_control_batch(1, 0, true, 0, 0);
    let err = log.append(&marker, EPOCH, 0).unwrap_err();
    assert!(
        matches!(err, Error::InvalidBatch(ref e) if !e.is_corrupt()),
        "{err}"
    );
    assert!(err.to_string().contains("WriteTxnMarkers"), "{err}");
    assert_eq!(log.log_end_offset(), 0);
}

#[test]
fn last_stable_offset_stops_at_transactions_of_two_producers() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap(); // 0..=1
    log.append(&batch(1, 100, 10), EPOCH, 0).unwrap(); // 2
    log.append(&txn_batch(2, 0, 0, 1, 100), EPOCH, 0).unwrap(); // 3
    log.append(&batch(1, 100, 10), EPOCH, 0).unwrap(); // 4
    assert_eq!(log.ongoing_transactions(), vec![(1, 0), (2, 3)]);
    assert_eq!(log.last_stable_offset(5), 0);
    assert_eq!(log.last_stable_offset(0), 0);
    // Producer 2 aborts while producer 1's transaction holds the LSO at 0.
    assert_eq!(end_txn(&mut log, 2, 0, false), 5);
    assert_eq!(
        log.aborted_transactions(0, i64::MAX).unwrap(),
        vec![aborted(2, 3, 5, 0)]
    );
    assert_eq!(log.last_stable_offset(6), 0);
    assert_eq!(end_txn(&mut log, 1, 0, true), 6);
    assert_eq!(log.last_stable_offset(7), 7);
    // Without transactions the LSO is the high watermark.
    log.append(&batch(1, 100, 10), EPOCH, 0).unwrap();
    assert_eq!(log.last_stable_offset(8), 8);
}

#[test]
fn last_stable_offset_waits_until_the_high_watermark_passes_the_marker() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&batch(2, 100, 10), EPOCH, 0).unwrap(); // 0..=1
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap(); // 2..=3
    assert_eq!(end_txn(&mut log, 1, 0, true), 4);
    assert_eq!(log.last_stable_offset(1), 1);
    assert_eq!(log.last_stable_offset(3), 2);
    // The marker itself is not yet replicated.
    assert_eq!(log.last_stable_offset(4), 2);
    assert_eq!(log.last_stable_offset(5), 5);
    assert_eq!(log.last_stable_offset(5), 5);
}

/// A log of one batch per segment:
/// 0..=1 txn of 1, 2..=3 txn of 2, 4 abort of 1, 5 plain, 6 abort of 2,
/// 7..=8 txn of 1, 9 abort of 1, 10 plain.
fn log_with_aborts_across_segments(dir: &Path) -> Log {
    let mut log = Log::open(dir, one_batch_per_segment()).unwrap();
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap();
    log.append(&txn_batch(2, 0, 0, 2, 100), EPOCH, 0).unwrap();
    assert_eq!(end_txn(&mut log, 1, 0, false), 4);
    log.append(&batch(1, 100, 10), EPOCH, 0).unwrap();
    assert_eq!(end_txn(&mut log, 2, 0, false), 6);
    log.append(&txn_batch(1, 0, 2, 2, 100), EPOCH, 0).unwrap();
    assert_eq!(end_txn(&mut log, 1, 0, false), 9);
    log.append(&batch(1, 100, 10), EPOCH, 0).unwrap();
    assert_eq!(log.segment_count(), 8);
    log
}

fn assert_aborts_across_segments(log: &Log) {
    let all = vec![
        aborted(1, 0, 4, 2),
        aborted(2, 2, 6, 7),
        aborted(1, 7, 9, 10),
    ];
    assert_eq!(log.aborted_transactions(0, i64::MAX).unwrap(), all);
    // From the middle: only those whose marker is at or after it.
    assert_eq!(
        log.aborted_transactions(5, i64::MAX).unwrap(),
        all[1..].to_vec()
    );
    assert_eq!(log.aborted_transactions(10, i64::MAX).unwrap(), vec![]);
    // Up to a bound: only those that started below it.
    assert_eq!(log.aborted_transactions(0, 2).unwrap(), all[..1].to_vec());
    assert_eq!(log.aborted_transactions(3, 7).unwrap(), all[..2].to_vec());
    assert_eq!(log.aborted_transactions(7, 8).unwrap(), all[2..].to_vec());
    assert!(log.ongoing_transactions().is_empty());
}

#[test]
fn aborted_transactions_are_found_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = log_with_aborts_across_segments(dir.path());
    assert_aborts_across_segments(&log);
    // Each entry is in the segment of its marker; others have no file.
    for base in [4, 6, 9] {
        let len = fs::metadata(txn_index_path(dir.path(), base))
            .unwrap()
            .len();
        assert_eq!(len, 34, "segment {base}");
    }
    for base in [0, 2, 5, 7, 10] {
        assert!(!txn_index_path(dir.path(), base).exists(), "segment {base}");
    }
}

/// The files under `dir` this process has a descriptor for.
fn open_files_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap();
    let mut open: Vec<PathBuf> = fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|p| p.starts_with(&dir))
        .collect();
    open.sort();
    open
}

/// The files of `dir` with extension `ext`, sorted.
fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap();
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

#[test]
fn a_segment_keeps_only_its_log_file_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_aborts_across_segments(dir.path());
    let check = |log: &Log| {
        let logs = files_with_ext(dir.path(), "log");
        assert_eq!(logs.len(), log.segment_count());
        assert_eq!(open_files_under(dir.path()), logs);
        // The indexes are still mapped.
        let maps = fs::read_to_string("/proc/self/maps").unwrap();
        let active = files_with_ext(dir.path(), "index").pop().unwrap();
        assert!(maps.contains(active.to_str().unwrap()), "{maps}");
    };
    assert_eq!(files_with_ext(dir.path(), "txnindex").len(), 3);
    check(&log);
    // A flush syncs the index files without keeping them open.
    log.append(&batch(1, 100, 10), EPOCH, 0).unwrap();
    log.flush().unwrap();
    check(&log);
    // Truncation resizes the indexes of the segment that becomes active again
    // and truncates a `.txnindex`.
    log.truncate_to(6).unwrap();
    assert_eq!(log.log_end_offset(), 6);
    check(&log);
    assert_eq!(
        log.aborted_transactions(0, i64::MAX).unwrap(),
        vec![aborted(1, 0, 4, 2)]
    );
    log.close().unwrap();
    assert_eq!(open_files_under(dir.path()), Vec::<PathBuf>::new());
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    check(&log);
    assert!(!log.read(4, usize::MAX, i64::MAX).unwrap().is_empty());
}

#[test]
fn the_txn_index_survives_close_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    log_with_aborts_across_segments(dir.path()).close().unwrap();
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_aborts_across_segments(&log);
}

#[test]
fn a_crash_rebuilds_the_txn_index_from_the_replay_without_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_aborts_across_segments(dir.path());
    // A transaction in progress and an abort after the last snapshot (taken
    // at the roll to segment 11).
    log.append(&txn_batch(3, 0, 0, 1, 100), EPOCH, 0).unwrap(); // 11
    log.append(&txn_batch(4, 0, 0, 1, 100), EPOCH, 0).unwrap(); // 12
    assert_eq!(end_txn(&mut log, 4, 0, false), 13);
    let newest_snapshot = *snapshots(dir.path()).last().unwrap();
    assert!(newest_snapshot <= 13, "{newest_snapshot}");
    drop(log); // a crash

    let mut log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    let entries = log.aborted_transactions(10, i64::MAX).unwrap();
    assert_eq!(entries, vec![aborted(4, 12, 13, 11)]);
    assert_eq!(log.ongoing_transactions(), vec![(3, 11)]);
    assert_eq!(
        fs::metadata(txn_index_path(dir.path(), 13)).unwrap().len(),
        34
    );
    assert_eq!(log.last_stable_offset(14), 11);

    // With no snapshot at all, the whole log is replayed: the same entries.
    drop(log);
    for offset in snapshots(dir.path()) {
        fs::remove_file(dir.path().join(producer_state::snapshot_file_name(offset))).unwrap();
    }
    let log = Log::open(dir.path(), one_batch_per_segment()).unwrap();
    assert_aborts_across_segments_then(&log, &[aborted(4, 12, 13, 11)]);
    assert_eq!(log.ongoing_transactions(), vec![(3, 11)]);
}

/// [`assert_aborts_across_segments`] followed by `more` entries.
fn assert_aborts_across_segments_then(log: &Log, more: &[AbortedTxn]) {
    let mut all = vec![
        aborted(1, 0, 4, 2),
        aborted(2, 2, 6, 7),
        aborted(1, 7, 9, 10),
    ];
    all.extend_from_slice(more);
    assert_eq!(log.aborted_transactions(0, i64::MAX).unwrap(), all);
}

#[test]
fn truncating_below_an_abort_marker_drops_its_entry_and_reopens_the_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap(); // 0..=1
    log.take_producer_snapshot().unwrap(); // at 2, transaction in progress
    assert_eq!(end_txn(&mut log, 1, 0, false), 2);
    log.append(&batch(1, 100, 10), EPOCH, 0).unwrap(); // 3
    log.take_producer_snapshot().unwrap(); // at 4
    assert_eq!(snapshots(dir.path()), vec![2, 4]);
    assert_eq!(log.aborted_transactions(0, i64::MAX).unwrap().len(), 1);

    log.truncate_to(2).unwrap();
    assert_eq!(snapshots(dir.path()), vec![2]);
    assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
    assert_eq!(
        fs::metadata(txn_index_path(dir.path(), 0)).unwrap().len(),
        0
    );
    assert_eq!(log.ongoing_transactions(), vec![(1, 0)]);
    assert_eq!(log.last_stable_offset(2), 0);
    // The coordinator writes the marker again.
    assert_eq!(end_txn(&mut log, 1, 0, false), 2);
    assert_eq!(
        log.aborted_transactions(0, i64::MAX).unwrap(),
        vec![aborted(1, 0, 2, 3)]
    );
    // Truncating below the transaction's start forgets it.
    log.truncate_to(1).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert!(log.ongoing_transactions().is_empty());
    assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
}

#[test]
fn truncate_fully_and_start_at_drops_every_txn_index() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap();
    end_txn(&mut log, 1, 0, false);
    log.append(&txn_batch(2, 0, 0, 2, 100), EPOCH, 0).unwrap();
    log.truncate_fully_and_start_at(100).unwrap();
    assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
    assert!(log.ongoing_transactions().is_empty());
    assert!(!txn_index_path(dir.path(), 0).exists());
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap();
    end_txn(&mut log, 1, 0, false);
    // Restarting at the offset of the segment reuses it, emptied.
    log.truncate_fully_and_start_at(100).unwrap();
    assert!(log.aborted_transactions(0, i64::MAX).unwrap().is_empty());
    assert_eq!(
        fs::metadata(txn_index_path(dir.path(), 100)).unwrap().len(),
        0
    );
}

#[test]
fn retention_deletes_the_txn_index_of_a_deleted_segment() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = log_with_aborts_across_segments(dir.path());
    assert!(txn_index_path(dir.path(), 4).exists());
    log.delete_records_before(5).unwrap();
    assert_eq!(log.log_start_offset(), 5);
    assert!(!txn_index_path(dir.path(), 4).exists());
    assert!(txn_index_path(dir.path(), 6).exists());
    assert_eq!(
        log.aborted_transactions(5, i64::MAX).unwrap(),
        vec![aborted(2, 2, 6, 7), aborted(1, 7, 9, 10)]
    );
    // Time-based retention too.
    let config = LogConfig {
        retention_ms: 1_000,
        ..one_batch_per_segment()
    };
    log.set_config(config);
    log.retain(1_000_000).unwrap();
    assert_eq!(log.segment_count(), 1);
    for base in [6, 9] {
        assert!(!txn_index_path(dir.path(), base).exists(), "segment {base}");
    }
}

#[test]
fn a_marker_of_an_older_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&txn_batch(1, 2, 0, 2, 100), EPOCH, 0).unwrap();
    let stale = batch::build_control_batch(1, 1, false, 0, 0);
    let err = log.append_from_coordinator(&stale, EPOCH, 0).unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::InvalidProducerEpoch {
            producer_id: 1,
            current: 2,
            got: 1
        })
    ));
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.ongoing_transactions(), vec![(1, 0)]);
    // A bumped epoch (the coordinator aborting a timed-out transaction)
    // fences the producer's old epoch; the new one starts at sequence 0.
    assert_eq!(end_txn(&mut log, 1, 3, false), 2);
    let err = log
        .append(&txn_batch(1, 2, 2, 1, 100), EPOCH, 0)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Producer(ProducerError::InvalidProducerEpoch { current: 3, .. })
    ));
    let info = log.append(&txn_batch(1, 3, 0, 1, 100), EPOCH, 0).unwrap();
    assert_eq!(info.base_offset, 3);
}

#[test]
fn coordinator_batches_without_a_sequence_are_not_sequence_checked() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    let offsets_commit = txn_batch(5, 0, -1, 1, 100);
    // A client may not write without a sequence.
    assert!(matches!(
        log.append(&offsets_commit, EPOCH, 0).unwrap_err(),
        Error::Producer(ProducerError::UnknownProducerId(5))
    ));
    for expected in [0, 1] {
        let info = log
            .append_from_coordinator(&offsets_commit, EPOCH, 0)
            .unwrap();
        assert_eq!((info.base_offset, info.duplicate), (expected, false));
    }
    assert_eq!(log.ongoing_transactions(), vec![(5, 0)]);
    assert!(log.producer_state().entry(5).unwrap().batches().is_empty());
    assert_eq!(end_txn(&mut log, 5, 0, true), 2);
    assert!(log.ongoing_transactions().is_empty());
    assert_eq!(log.last_stable_offset(3), 3);
}

#[test]
fn a_torn_txn_index_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&txn_batch(1, 0, 0, 2, 100), EPOCH, 0).unwrap();
    end_txn(&mut log, 1, 0, false);
    log.close().unwrap();
    let path = txn_index_path(dir.path(), 0);
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    fs::write(&path, bytes).unwrap();

    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 34);
    assert_eq!(
        log.aborted_transactions(0, i64::MAX).unwrap(),
        vec![aborted(1, 0, 2, 3)]
    );
}

#[test]
fn expiration_keeps_producers_with_a_transaction_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), small_config()).unwrap();
    log.append(&txn_batch(1, 0, 0, 1, 1_000), EPOCH, 0).unwrap();
    log.append(&producer_batch(2, 0, 0, 1, 1_000), EPOCH, 0)
        .unwrap();
    assert_eq!(log.expire_producers(1_000_000, 1_000), 1);
    assert_eq!(log.ongoing_transactions(), vec![(1, 0)]);
    // The marker's timestamp (2 000) counts as the producer's last write.
    end_txn(&mut log, 1, 0, true);
    assert_eq!(log.expire_producers(2_999, 1_000), 0);
    assert_eq!(log.expire_producers(3_000, 1_000), 1);
    assert_eq!(log.producer_count(), 0);
}

#[test]
fn a_follower_tracks_transactions_and_indexes_aborts_like_its_leader() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = log_with_aborts_across_segments(leader_dir.path());
    leader
        .append(&txn_batch(3, 0, 0, 1, 100), EPOCH, 0)
        .unwrap(); // 11
    let mut follower = Log::open(follower_dir.path(), one_batch_per_segment()).unwrap();
    for bytes in batches_from(&leader, 0) {
        follower.append_replicated(&bytes).unwrap();
    }
    assert_eq!(follower.log_end_offset(), 12);
    assert_aborts_across_segments_then(&follower, &[]);
    assert_eq!(follower.ongoing_transactions(), vec![(3, 11)]);
    assert_eq!(follower.last_stable_offset(12), 11);
    // Once it leads, the producer's sequence and transaction go on.
    let info = follower
        .append(&txn_batch(3, 0, 1, 1, 100), EPOCH + 1, 0)
        .unwrap();
    assert_eq!(info.base_offset, 12);
    let marker = batch::build_control_batch(3, 0, false, 5, 2_000);
    let info = follower
        .append_from_coordinator(&marker, EPOCH + 1, 0)
        .unwrap();
    assert_eq!(info.base_offset, 13);
    assert_eq!(
        follower.aborted_transactions(11, i64::MAX).unwrap(),
        vec![aborted(3, 11, 13, 14)]
    );
}
