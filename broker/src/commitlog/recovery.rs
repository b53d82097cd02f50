//! Opening a partition directory: leftovers are removed, the checkpoints read,
//! segments below the recovery point trusted (indexes sanity-checked, rebuilt if
//! needed) and the rest scanned batch by batch, cutting the log at the first torn
//! or corrupt batch.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::batch;
use super::epoch::LeaderEpochCache;
use super::producer_state::{self, ProducerStateManager};
use super::segment::{
    self, delete_segment_files, Segment, DELETED_SUFFIX, INDEX_EXT, LOG_EXT, TIME_INDEX_EXT,
    TXN_INDEX_EXT,
};
use super::{io_at, Error, LogConfig};

/// Offset below which all data is known to be fsynced (written on close and
/// periodically).
pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point";
/// The log start offset set by DeleteRecords.
pub(crate) const LOG_START_OFFSET_FILE: &str = "log-start-offset";
/// Suffix of a checkpoint being written.
pub(crate) const TMP_SUFFIX: &str = ".tmp";
/// Suffix Kafka uses for segments being swapped in by the cleaner; never ours,
/// removed if found.
const SWAP_SUFFIX: &str = ".swap";
const CHECKPOINT_VERSION: &str = "0";

/// fsync of a directory, so created, renamed and removed entries are durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Reads a checkpoint file: a version line `0` then the offset, each ending in
/// `\n`. Missing or malformed files read as `None` (malformed ones are logged).
pub(crate) fn read_checkpoint(dir: &Path, name: &str) -> Result<Option<i64>, Error> {
    let path = dir.join(name);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
        Err(e) => return Err(io_at(&path)(e)),
    };
    let mut lines = text.split('\n');
    let parsed = match (lines.next(), lines.next(), lines.next(), lines.next()) {
        (Some(CHECKPOINT_VERSION), Some(offset), Some(""), None) => offset.parse::<i64>().ok(),
        _ => None,
    };
    if parsed.is_none() {
        tracing::warn!(path = %path.display(), "ignoring malformed checkpoint file");
    }
    Ok(parsed.filter(|o| *o >= 0))
}

/// Writes a checkpoint atomically: temp file, fsync, rename, fsync of the
/// directory.
pub(crate) fn write_checkpoint(dir: &Path, name: &str, offset: i64) -> Result<(), Error> {
    write_file_atomically(
        dir,
        name,
        format!("{CHECKPOINT_VERSION}\n{offset}\n").as_bytes(),
    )
}

/// Replaces `dir/name` with `contents` so that a crash leaves either the old
/// or the new file: temp file, fsync, rename, fsync of the directory.
pub(crate) fn write_file_atomically(dir: &Path, name: &str, contents: &[u8]) -> Result<(), Error> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &path)?;
        sync_dir(dir)
    })()
    .map_err(io_at(&path))
}

/// What opening a directory produced.
pub(crate) struct Loaded {
    pub(crate) segments: Vec<Segment>,
    pub(crate) log_start_offset: i64,
    pub(crate) next_offset: i64,
}

fn parse_base(stem: &str) -> Option<i64> {
    if stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()) {
        stem.parse().ok()
    } else {
        None
    }
}

/// Lists segment base offsets and removes leftovers: `.deleted`, `.swap` and
/// temp files, and index files whose `.log` is gone.
fn scan_dir(dir: &Path) -> Result<Vec<i64>, Error> {
    let mut logs = Vec::new();
    let mut indexes: Vec<(i64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_at(dir))? {
        let entry = entry.map_err(io_at(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name.ends_with(DELETED_SUFFIX)
            || name.ends_with(SWAP_SUFFIX)
            || name.ends_with(TMP_SUFFIX)
        {
            tracing::info!(path = %path.display(), "removing leftover file");
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove leftover file");
            }
            continue;
        }
        let Some((stem, ext)) = name.split_once('.') else {
            continue;
        };
        let Some(base) = parse_base(stem) else {
            continue;
        };
        match ext {
            LOG_EXT => logs.push(base),
            INDEX_EXT | TIME_INDEX_EXT | TXN_INDEX_EXT => indexes.push((base, path)),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in indexes {
        if logs.binary_search(&base).is_err() {
            tracing::info!(path = %path.display(), "removing index file without a segment");
            segment::delete_file(&path);
        }
    }
    Ok(logs)
}

/// Loads every segment of `dir`, recovering what the recovery point does not
/// cover. See docs/log-format.md, "Recovery".
pub(crate) fn load(dir: &Path, config: &LogConfig, now_ms: i64) -> Result<Loaded, Error> {
    let bases = scan_dir(dir)?;
    let recovery_point = read_checkpoint(dir, RECOVERY_POINT_FILE)?;
    let start_checkpoint = read_checkpoint(dir, LOG_START_OFFSET_FILE)?;

    let mut segments: Vec<Segment> = Vec::new();
    let mut scanned: Vec<i64> = Vec::new();
    for (i, &base) in bases.iter().enumerate() {
        let log_path = segment::file_path(dir, base, LOG_EXT);
        if let Some(prev) = segments.last() {
            if prev.next_offset() != base {
                tracing::warn!(
                    dir = %dir.display(),
                    segment = %log_path.display(),
                    previous_ends_at = prev.next_offset(),
                    deleted_segments = bases.len() - i,
                    "segment does not continue the previous one; deleting it and every later segment"
                );
                for &b in &bases[i..] {
                    delete_segment_files(dir, b);
                }
                break;
            }
        }
        let next_base = bases.get(i + 1).copied();
        let trusted = matches!((recovery_point, next_base), (Some(rp), Some(nb)) if nb <= rp);
        if trusted {
            if let Some(seg) = Segment::open_trusted(dir, base, next_base.unwrap_or(base))
                .map_err(io_at(&log_path))?
            {
                segments.push(seg);
                continue;
            }
            tracing::info!(segment = %log_path.display(), "index missing or damaged; rebuilding it from the log");
        }
        let mut seg =
            Segment::open_untrusted(dir, base, config, now_ms).map_err(io_at(&log_path))?;
        let damage = seg.recover(config).map_err(io_at(&log_path))?;
        scanned.push(base);
        segments.push(seg);
        if let Some(d) = damage {
            let later = &bases[i + 1..];
            tracing::warn!(
                dir = %dir.display(),
                segment = %log_path.display(),
                position = d.position,
                dropped_bytes = d.dropped,
                deleted_segments = later.len(),
                reason = %d.reason,
                "torn or corrupt batch: truncated the segment at the end of the last valid batch"
            );
            for &b in later {
                delete_segment_files(dir, b);
            }
            break;
        }
    }

    let mut log_start_offset = start_checkpoint.unwrap_or(0);
    if let Some(first) = segments.first() {
        log_start_offset = log_start_offset.max(first.base_offset());
    }
    let next_offset = segments
        .last()
        .map_or(log_start_offset, Segment::next_offset);
    if next_offset < log_start_offset && !segments.is_empty() {
        tracing::warn!(
            dir = %dir.display(),
            log_end_offset = next_offset,
            log_start_offset,
            "the log ends before its start offset; deleting every segment and starting empty at the start offset"
        );
        for seg in segments.drain(..) {
            seg.delete();
        }
        scanned.clear();
    }
    if segments.is_empty() {
        let seg = Segment::create(dir, log_start_offset, config, now_ms)
            .map_err(io_at(&segment::file_path(dir, log_start_offset, LOG_EXT)))?;
        segments.push(seg);
        scanned.push(log_start_offset);
    }

    let last = segments.len() - 1;
    for seg in &mut segments[..last] {
        seg.finish().map_err(io_at(seg_path(seg)))?;
    }
    // What recovery read may only be in the page cache (a killed process); make
    // it durable before treating it as flushed.
    for seg in segments
        .iter()
        .filter(|s| scanned.contains(&s.base_offset()))
    {
        seg.sync().map_err(io_at(seg_path(seg)))?;
    }
    sync_dir(dir).map_err(io_at(dir))?;
    let next_offset = segments[last].next_offset();
    // Everything is durable up to the log end now. A checkpoint above it (data
    // lost in the crash) must not survive: offsets below it will be written
    // again and would be trusted unflushed after the next crash.
    if recovery_point != Some(next_offset) {
        write_checkpoint(dir, RECOVERY_POINT_FILE, next_offset)?;
    }
    Ok(Loaded {
        segments,
        log_start_offset,
        next_offset,
    })
}

/// The leader-epoch cache of a recovered log: read from its checkpoint, or,
/// when that is missing or malformed (logs written before the cache existed),
/// rebuilt from the `partitionLeaderEpoch` of every batch header and
/// persisted. Then cut to what recovery kept: entries at or past the log end
/// belong to batches lost in a crash, entries before the log start collapse
/// onto it.
pub(crate) fn load_epoch_cache(
    dir: &Path,
    segments: &[Segment],
    log_start_offset: i64,
    next_offset: i64,
) -> Result<LeaderEpochCache, Error> {
    let mut cache = match LeaderEpochCache::load(dir)? {
        Some(cache) => cache,
        None if next_offset > log_start_offset => {
            rebuild_epoch_cache(dir, segments, log_start_offset)?
        }
        None => LeaderEpochCache::empty(dir),
    };
    cache.truncate_from_end(next_offset)?;
    cache.truncate_from_start(log_start_offset)?;
    Ok(cache)
}

fn rebuild_epoch_cache(
    dir: &Path,
    segments: &[Segment],
    log_start_offset: i64,
) -> Result<LeaderEpochCache, Error> {
    tracing::info!(dir = %dir.display(), "no leader epoch checkpoint; rebuilding it from the batch headers");
    // Only the batches where the epoch changes, so a long log stays cheap to hold.
    let mut changes: Vec<(i32, i64)> = Vec::new();
    for seg in segments {
        if seg.next_offset() <= log_start_offset {
            continue;
        }
        seg.scan_from(log_start_offset.max(seg.base_offset()), |_, h| {
            let epoch = h.partition_leader_epoch;
            if epoch >= 0 && changes.last().is_none_or(|&(e, _)| e != epoch) {
                changes.push((epoch, h.base_offset));
            }
            Ok(true)
        })
        .map_err(io_at(seg.log_path()))?;
    }
    let mut cache = LeaderEpochCache::empty(dir);
    for (epoch, start_offset) in changes {
        cache.insert(epoch, start_offset);
    }
    // Written even when empty, so the next open does not scan again.
    cache.persist()?;
    Ok(cache)
}

/// The producer state of a log of `segments` ending at `next_offset`: the
/// latest snapshot within the log, then the batch headers from its offset to
/// the log end replayed (the whole log without a snapshot). Snapshots above
/// the log end hold batches a crash or a truncation removed, those below the
/// first segment batches retention removed; both are deleted, as are corrupt
/// ones. If anything was replayed, a snapshot at the log end spares the next
/// open the replay.
///
/// The replay rewrites the `.txnindex` entries it covers: entries whose abort
/// marker is at or after the replay start are dropped, then the replayed
/// markers add them again (so entries of a lost tail go, and none is
/// doubled). Entries below the start were synced before the snapshot was
/// taken.
pub(crate) fn load_producer_state(
    dir: &Path,
    segments: &mut [Segment],
    next_offset: i64,
) -> Result<ProducerStateManager, Error> {
    let first = segments.first().map_or(next_offset, Segment::base_offset);
    let (usable, stale): (Vec<i64>, Vec<i64>) = producer_state::list_snapshots(dir)?
        .into_iter()
        .partition(|&o| first <= o && o <= next_offset);
    if !stale.is_empty() {
        tracing::info!(
            dir = %dir.display(),
            snapshots = ?stale,
            first_segment = first,
            log_end_offset = next_offset,
            "deleting producer state snapshots outside the log"
        );
        producer_state::delete_snapshots(dir, &stale)?;
    }
    let mut from = first;
    let mut state = None;
    for &offset in usable.iter().rev() {
        if let Some(loaded) = ProducerStateManager::load_snapshot(dir, offset)? {
            from = offset;
            state = Some(loaded);
            break;
        }
        producer_state::delete_snapshots(dir, &[offset])?;
    }
    let mut state = state.unwrap_or_else(|| ProducerStateManager::empty(dir));
    for seg in segments.iter_mut() {
        seg.truncate_aborted(from).map_err(io_at(seg.log_path()))?;
    }
    let mut replayed = 0u64;
    for seg in segments.iter_mut().filter(|s| s.next_offset() > from) {
        let (batches, complete) = replay_segment(seg, from, &mut state)?;
        replayed += batches;
        if !complete {
            break;
        }
    }
    if replayed > 0 {
        tracing::info!(
            dir = %dir.display(),
            from,
            log_end_offset = next_offset,
            batches = replayed,
            producers = state.len(),
            "rebuilt producer state from the batch headers"
        );
        for seg in segments.iter().filter(|s| s.next_offset() > from) {
            seg.sync_txn_index().map_err(io_at(seg.log_path()))?;
        }
        state.take_snapshot(next_offset)?;
    }
    Ok(state)
}

/// Replays the batches of `seg` from `from` on into `state`, adding the
/// transactions abort markers end to the segment's `.txnindex`. Returns how
/// many batches were replayed and false if a damaged header stopped it.
fn replay_segment(
    seg: &mut Segment,
    from: i64,
    state: &mut ProducerStateManager,
) -> Result<(u64, bool), Error> {
    let mut replayed = 0u64;
    let mut aborted = Vec::new();
    let scanned = seg.scan_from(from.max(seg.base_offset()), |pos, h| {
        // A batch straddling `from` is in the snapshot already.
        if h.base_offset >= from {
            let marker = if h.is_control() && h.producer_id >= 0 {
                batch::control_record(&seg.read_exact(pos, h.total_len())?)
            } else {
                None
            };
            aborted.extend(state.apply(h, h.base_offset, h.last_offset(), marker));
            replayed += 1;
        }
        Ok(true)
    });
    let complete = match scanned {
        Ok(()) => true,
        // Damaged headers in a segment below the recovery point, which
        // recovery trusted unread: serve the log with the state of what
        // could be read rather than not at all.
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            tracing::warn!(
                segment = %seg.log_path().display(),
                error = %e,
                "damaged batch header: the producer state misses the batches after it"
            );
            false
        }
        Err(e) => return Err(io_at(seg.log_path())(e)),
    };
    for txn in &aborted {
        seg.append_aborted(txn).map_err(io_at(seg.log_path()))?;
    }
    Ok((replayed, complete))
}

fn seg_path(seg: &Segment) -> &Path {
    seg.log_path()
}
