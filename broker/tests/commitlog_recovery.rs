//! Crash tests of the commit log: torn and corrupted tails, missing and
//! untrimmed indexes, leftovers. Every scenario copies a closed log, damages the
//! copy the way a crash (or a bad disk) would, opens it and checks that every
//! batch wholly written before the damage is intact and nothing after it remains.

// Tests may unwrap (house rule); clippy.toml only covers #[test] fns themselves.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};

use sluice_broker::commitlog::batch::{build_batch, field, headers, BatchHeader};
use sluice_broker::commitlog::{Log, LogConfig};

const EPOCH: i32 = 7;

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1_500,
        segment_index_bytes: 1_024,
        index_interval_bytes: 100,
        ..LogConfig::default()
    }
}

/// Batches of 1 to 4 records of varied sizes and increasing timestamps.
fn sample_batches(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let values: Vec<Vec<u8>> = (0..1 + i % 4)
                .map(|j| vec![b'a' + (i % 26) as u8; 10 + (i * 7 + j * 13) % 70])
                .collect();
            let records: Vec<_> = values
                .iter()
                .enumerate()
                .map(|(j, v)| {
                    let key = (j % 2 == 0).then_some(&b"key"[..]);
                    (key, Some(v.as_slice()), 1_000 * i as i64 + j as i64)
                })
                .collect();
            build_batch(&records, 0)
        })
        .collect()
}

fn offsets_in(batch: &[u8]) -> i64 {
    let h = BatchHeader::parse(batch).unwrap();
    i64::from(h.last_offset_delta) + 1
}

/// A closed log holding `batches`, in a fresh temp dir.
fn write_log(batches: &[Vec<u8>]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    for b in batches {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.close().unwrap();
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// (position, total length) of each batch in a `.log` file.
fn batch_positions(log_file: &Path) -> Vec<(usize, usize)> {
    let bytes = fs::read(log_file).unwrap();
    headers(&bytes)
        .map(|h| {
            let (pos, h) = h.unwrap();
            (pos, h.total_len())
        })
        .collect()
}

/// Every batch the log serves, in order, read from its start to its end.
fn read_back(log: &Log) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let bytes = log.read(offset, 1 << 20, i64::MAX).unwrap();
        let mut got_any = false;
        for item in headers(&bytes) {
            let (pos, h) = item.unwrap();
            out.push(bytes[pos..pos + h.total_len()].to_vec());
            offset = h.next_offset();
            got_any = true;
        }
        assert!(got_any, "empty read at {offset}");
    }
    out
}

/// The log holds exactly the first `kept` of `sent`, byte for byte apart from
/// the two stamped fields, at the right offsets.
fn assert_holds_prefix(log: &Log, sent: &[Vec<u8>], kept: usize, what: &str) {
    let expected_end: i64 = sent[..kept].iter().map(|b| offsets_in(b)).sum();
    assert_eq!(log.log_end_offset(), expected_end, "{what}: log end offset");
    let got = read_back(log);
    assert_eq!(got.len(), kept, "{what}: batch count");
    let mut offset = 0;
    for (i, (g, s)) in got.iter().zip(sent).enumerate() {
        let h = BatchHeader::parse(g).unwrap();
        assert_eq!(h.base_offset, offset, "{what}: base offset of batch {i}");
        assert_eq!(
            h.partition_leader_epoch, EPOCH,
            "{what}: epoch of batch {i}"
        );
        assert_eq!(g.len(), s.len(), "{what}: length of batch {i}");
        assert_eq!(
            g[field::BATCH_LENGTH..field::PARTITION_LEADER_EPOCH],
            s[field::BATCH_LENGTH..field::PARTITION_LEADER_EPOCH],
            "{what}: batch {i}"
        );
        assert_eq!(g[field::MAGIC..], s[field::MAGIC..], "{what}: batch {i}");
        offset += offsets_in(s);
    }
}

/// After recovery the log takes new appends at its end and keeps them across a
/// clean restart.
fn assert_appends_continue(dir: &Path, mut log: Log, sent: &[Vec<u8>], kept: usize, what: &str) {
    let extra = build_batch(&[(None, Some(b"after"), 99)], 0);
    let end = log.log_end_offset();
    let info = log.append(&extra, EPOCH, 0).unwrap();
    assert_eq!(info.base_offset, end, "{what}: append after recovery");
    log.close().unwrap();
    let log = Log::open(dir, config()).unwrap();
    let mut expected: Vec<Vec<u8>> = sent[..kept].to_vec();
    expected.push(extra);
    assert_holds_prefix(&log, &expected, kept + 1, what);
}

/// With `config()`, 36 sample batches make 5 segments, 7 batches in the last.
const TAIL_TEST_BATCHES: usize = 36;
/// How many of the active segment's last batches are cut at every byte.
const TAIL_BATCHES: usize = 4;

#[derive(Clone, Copy, Debug)]
enum Checkpoint {
    /// No `recovery-point` file: everything is scanned.
    Missing,
    /// An old one, below the last segments.
    Old,
    /// The one the clean close wrote.
    AsClosed,
}

fn set_checkpoint(dir: &Path, checkpoint: Checkpoint) {
    let path = dir.join("recovery-point");
    match checkpoint {
        Checkpoint::Missing => fs::remove_file(path).unwrap(),
        Checkpoint::Old => fs::write(path, "0\n3\n").unwrap(),
        Checkpoint::AsClosed => {}
    }
}

/// Index in `sent` of the first batch of the active (last) segment.
fn first_batch_of_active(dir: &Path, sent: &[Vec<u8>]) -> usize {
    let logs = files_with(dir, "log");
    let active = logs.last().unwrap();
    let base: i64 = active
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut offset = 0;
    sent.iter()
        .position(|b| {
            let here = offset;
            offset += offsets_in(b);
            here == base
        })
        .unwrap()
}

#[test]
fn torn_tail_is_truncated_on_recovery() {
    let sent = sample_batches(TAIL_TEST_BATCHES);
    let original = write_log(&sent);
    assert!(files_with(original.path(), "log").len() >= 3);
    let active = files_with(original.path(), "log").pop().unwrap();
    let positions = batch_positions(&active);
    let first_active = first_batch_of_active(original.path(), &sent);
    assert!(positions.len() > TAIL_BATCHES);
    let tail_start = positions[positions.len() - TAIL_BATCHES].0;
    let file_len = fs::metadata(&active).unwrap().len() as usize;

    let scratch = tempfile::tempdir().unwrap();
    for (n, cut) in (tail_start..file_len).enumerate() {
        let checkpoint = [Checkpoint::Missing, Checkpoint::Old, Checkpoint::AsClosed][n % 3];
        let what = format!("cut at byte {cut}, checkpoint {checkpoint:?}");
        let dir = scratch.path().join(format!("cut-{cut}"));
        copy_dir(original.path(), &dir);
        set_checkpoint(&dir, checkpoint);
        let log_file = dir.join(active.file_name().unwrap());
        fs::OpenOptions::new()
            .write(true)
            .open(&log_file)
            .unwrap()
            .set_len(cut as u64)
            .unwrap();

        let log = Log::open(&dir, config()).unwrap();
        let whole = positions.iter().filter(|(p, l)| p + l <= cut).count();
        let kept = first_active + whole;
        assert_holds_prefix(&log, &sent, kept, &what);
        // The recovered end is durable and checkpointed: a stale checkpoint
        // above it would make rewritten offsets look flushed.
        assert_eq!(
            fs::read_to_string(dir.join("recovery-point")).unwrap(),
            format!("0\n{}\n", log.log_end_offset()),
            "{what}"
        );
        // Nothing partial is left in the file.
        let valid_end = positions[..whole].last().map_or(0, |(p, l)| p + l);
        assert_eq!(
            fs::metadata(&log_file).unwrap().len() as usize,
            valid_end,
            "{what}"
        );
        assert_appends_continue(&dir, log, &sent, kept, &what);
        fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn corrupt_byte_in_the_tail_is_truncated_on_recovery() {
    let sent = sample_batches(TAIL_TEST_BATCHES);
    let original = write_log(&sent);
    let active = files_with(original.path(), "log").pop().unwrap();
    let positions = batch_positions(&active);
    let first_active = first_batch_of_active(original.path(), &sent);
    assert!(positions.len() > TAIL_BATCHES);
    let scratch = tempfile::tempdir().unwrap();
    let mut n = 0;
    for (i, &(start, len)) in positions
        .iter()
        .enumerate()
        .skip(positions.len() - TAIL_BATCHES)
    {
        for at in start..start + len {
            let rel = at - start;
            // partitionLeaderEpoch is outside the CRC and carries no invariant
            // recovery could check: a flipped bit there is not detectable.
            if (field::PARTITION_LEADER_EPOCH..field::MAGIC).contains(&rel) {
                continue;
            }
            let checkpoint = [Checkpoint::Missing, Checkpoint::Old, Checkpoint::AsClosed][n % 3];
            n += 1;
            let what = format!("byte {at} (batch byte {rel}) flipped, checkpoint {checkpoint:?}");
            let dir = scratch.path().join(format!("flip-{at}"));
            copy_dir(original.path(), &dir);
            set_checkpoint(&dir, checkpoint);
            let log_file = dir.join(active.file_name().unwrap());
            let mut bytes = fs::read(&log_file).unwrap();
            bytes[at] ^= 0xff;
            fs::write(&log_file, &bytes).unwrap();

            let log = Log::open(&dir, config()).unwrap();
            let kept = first_active + i;
            assert_holds_prefix(&log, &sent, kept, &what);
            assert_eq!(
                fs::metadata(&log_file).unwrap().len() as usize,
                start,
                "{what}"
            );
            assert_appends_continue(&dir, log, &sent, kept, &what);
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn corruption_in_an_unflushed_older_segment_drops_every_later_segment() {
    let sent = sample_batches(30);
    let original = write_log(&sent);
    let logs = files_with(original.path(), "log");
    assert!(logs.len() >= 3);
    let positions = batch_positions(&logs[0]);
    let (start, _) = positions[2];
    let mut bytes = fs::read(&logs[0]).unwrap();
    bytes[start + 40] ^= 0x01; // inside the CRC-covered header
    fs::write(&logs[0], &bytes).unwrap();
    fs::remove_file(original.path().join("recovery-point")).unwrap();

    let log = Log::open(original.path(), config()).unwrap();
    assert_holds_prefix(&log, &sent, 2, "flip in segment 0");
    assert_eq!(log.segment_count(), 1);
    assert_eq!(files_with(original.path(), "log").len(), 1);
    assert_eq!(files_with(original.path(), "index").len(), 1);
    assert_eq!(files_with(original.path(), "timeindex").len(), 1);
    assert_appends_continue(original.path(), log, &sent, 2, "flip in segment 0");
}

#[test]
fn segments_below_the_recovery_point_are_not_rescanned() {
    let sent = sample_batches(30);
    let original = write_log(&sent);
    let logs = files_with(original.path(), "log");
    let positions = batch_positions(&logs[0]);
    let (start, len) = positions[1];
    let mut bytes = fs::read(&logs[0]).unwrap();
    bytes[start + len - 1] ^= 0x01; // last byte of a record: CRC mismatch
    fs::write(&logs[0], &bytes).unwrap();

    // Trusted by the clean close's checkpoint: opened from its indexes alone.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(original.path(), copy.path());
    let log = Log::open(copy.path(), config()).unwrap();
    assert_eq!(read_back(&log).len(), sent.len());
    drop(log);

    // Without the checkpoint the scan finds the damage.
    fs::remove_file(original.path().join("recovery-point")).unwrap();
    let log = Log::open(original.path(), config()).unwrap();
    assert_holds_prefix(&log, &sent, 1, "no checkpoint");
}

#[test]
fn a_segment_that_ends_early_drops_the_segments_after_it() {
    // A power cut can lose the tail of one segment while the next one's data
    // reached the disk: the offsets would have a gap.
    let sent = sample_batches(30);
    let original = write_log(&sent);
    let logs = files_with(original.path(), "log");
    let positions = batch_positions(&logs[0]);
    let keep = positions.len() - 1;
    let (cut, _) = positions[keep];
    fs::OpenOptions::new()
        .write(true)
        .open(&logs[0])
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    fs::remove_file(original.path().join("recovery-point")).unwrap();
    let log = Log::open(original.path(), config()).unwrap();
    assert_holds_prefix(&log, &sent, keep, "segment 0 cut at a batch boundary");
    assert_eq!(log.segment_count(), 1);
    assert_appends_continue(original.path(), log, &sent, keep, "gap");
}

#[test]
fn missing_index_files_are_rebuilt() {
    let sent = sample_batches(30);
    let original = write_log(&sent);
    let before: Vec<(PathBuf, Vec<u8>)> = files_with(original.path(), "index")
        .into_iter()
        .chain(files_with(original.path(), "timeindex"))
        .map(|p| {
            let b = fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    for (p, _) in &before {
        fs::remove_file(p).unwrap();
    }
    let log = Log::open(original.path(), config()).unwrap();
    assert_holds_prefix(&log, &sent, sent.len(), "indexes deleted");
    let mut offset = 0;
    for (i, b) in sent.iter().enumerate() {
        let got = log.offset_for_timestamp(1_000 * i as i64).unwrap();
        assert_eq!(got, Some((offset, 1_000 * i as i64)));
        offset += offsets_in(b);
    }
    log.close().unwrap();
    // Rebuilt indexes are identical to the ones written while appending.
    for (p, b) in &before {
        assert_eq!(&fs::read(p).unwrap(), b, "{}", p.display());
    }
}

#[test]
fn untrimmed_preallocated_indexes_after_a_crash_are_handled() {
    let sent = sample_batches(30);
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    log.flush().unwrap();
    log.checkpoint().unwrap();
    // Crash: no close, so the active segment's indexes keep their preallocated
    // size.
    drop(log);
    let active_index = files_with(dir.path(), "index").pop().unwrap();
    assert_eq!(fs::metadata(&active_index).unwrap().len(), 1_024);

    // And a trusted segment whose indexes were never trimmed.
    let first_index = files_with(dir.path(), "index").remove(0);
    let first_time_index = files_with(dir.path(), "timeindex").remove(0);
    // Whole numbers of entries, zero-filled as preallocation leaves them.
    for (p, len) in [(&first_index, 1_024), (&first_time_index, 1_020)] {
        fs::OpenOptions::new()
            .write(true)
            .open(p)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds_prefix(&log, &sent, sent.len(), "untrimmed indexes");
    assert_eq!(
        log.offset_for_timestamp(1_000).unwrap(),
        Some((offsets_in(&sent[0]), 1_000))
    );
    assert_appends_continue(dir.path(), log, &sent, sent.len(), "untrimmed indexes");
    assert!(fs::metadata(&first_index).unwrap().len() < 1_024);
    assert!(fs::metadata(&first_time_index).unwrap().len() < 1_020);
}

#[test]
fn garbage_in_a_trusted_index_forces_a_rebuild() {
    let sent = sample_batches(30);
    let original = write_log(&sent);
    let first_index = files_with(original.path(), "index").remove(0);
    let len = fs::metadata(&first_index).unwrap().len() as usize;
    assert!(len >= 16, "the test needs index entries");
    fs::write(&first_index, vec![0xab; len]).unwrap();
    let first_time_index = files_with(original.path(), "timeindex").remove(0);
    fs::write(&first_time_index, vec![0x01; 13]).unwrap();
    let log = Log::open(original.path(), config()).unwrap();
    assert_holds_prefix(&log, &sent, sent.len(), "garbage index");
    for offset in 0..log.log_end_offset() {
        let bytes = log.read(offset, 1, i64::MAX).unwrap();
        let h = BatchHeader::parse(&bytes).unwrap();
        assert!(h.base_offset <= offset && offset <= h.last_offset());
    }
}

#[test]
fn a_killed_process_loses_nothing_it_wrote() {
    let sent = sample_batches(30);
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::open(dir.path(), config()).unwrap();
    for b in &sent {
        log.append(b, EPOCH, 0).unwrap();
    }
    drop(log); // no flush, no close, no checkpoint
    let log = Log::open(dir.path(), config()).unwrap();
    assert_holds_prefix(&log, &sent, sent.len(), "kill -9");
    assert_appends_continue(dir.path(), log, &sent, sent.len(), "kill -9");
}

#[test]
fn leftover_files_are_removed_on_open() {
    let sent = sample_batches(5);
    let original = write_log(&sent);
    let p = original.path();
    let leftovers = [
        "00000000000000000042.log.deleted",
        "00000000000000000042.index.deleted",
        "00000000000000000042.log.swap",
        "recovery-point.tmp",
        "log-start-offset.tmp",
        "00000000000000009999.index",
        "00000000000000009999.timeindex",
    ];
    for name in leftovers {
        fs::write(p.join(name), b"junk").unwrap();
    }
    fs::write(p.join("unrelated.txt"), b"kept").unwrap();
    let log = Log::open(p, config()).unwrap();
    assert_holds_prefix(&log, &sent, sent.len(), "leftovers");
    for name in leftovers {
        assert!(!p.join(name).exists(), "{name} still there");
    }
    assert!(p.join("unrelated.txt").exists());
}

#[test]
fn a_log_that_ends_before_its_start_offset_restarts_empty_at_the_start() {
    let sent = sample_batches(5);
    let original = write_log(&sent);
    fs::write(original.path().join("log-start-offset"), "0\n100\n").unwrap();
    let mut log = Log::open(original.path(), config()).unwrap();
    assert_eq!(log.log_start_offset(), 100);
    assert_eq!(log.log_end_offset(), 100);
    assert_eq!(log.segment_count(), 1);
    assert_eq!(files_with(original.path(), "log").len(), 1);
    let info = log.append(&sent[0], EPOCH, 0).unwrap();
    assert_eq!(info.base_offset, 100);
}

#[test]
fn an_empty_partition_directory_is_created_and_reopened() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("orders-3");
    let log = Log::open(&dir, config()).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    log.close().unwrap();
    let log = Log::open(&dir, config()).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    assert!(log.read(0, 100, i64::MAX).unwrap().is_empty());
}
