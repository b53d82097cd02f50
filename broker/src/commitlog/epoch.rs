//! The leader-epoch cache of one partition: for each leader epoch that wrote
//! to the log, the first offset it wrote. Followers use it to find where
//! their log diverges from the leader's (OffsetsForLeaderEpoch), so it must
//! survive restarts and follow every truncation of the log.
//!
//! Persisted as `leader-epoch-checkpoint` in Kafka's text format, so operators
//! and Kafka's tools recognise it:
//!
//! ```text
//! 0            version
//! 2            number of entries
//! 0 0          epoch start_offset
//! 3 120
//! ```

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::recovery::write_file_atomically;
use super::{io_at, Error};

/// File name of the cache in the partition directory (Kafka's).
pub(crate) const LEADER_EPOCH_CHECKPOINT_FILE: &str = "leader-epoch-checkpoint";
const VERSION: &str = "0";

/// Kafka's `UNDEFINED_EPOCH`: no epoch known.
pub const UNDEFINED_EPOCH: i32 = -1;
/// Kafka's `UNDEFINED_EPOCH_OFFSET`: no end offset known.
pub const UNDEFINED_EPOCH_OFFSET: i64 = -1;

/// "Leader epoch `epoch` wrote its first batch at `start_offset`."
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

/// Ordered epoch entries (both fields strictly increasing) and the file they
/// are persisted to. Every method that changes the entries rewrites the file
/// atomically before returning; methods that change nothing write nothing.
#[derive(Debug)]
pub struct LeaderEpochCache {
    dir: PathBuf,
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// Reads the cache of the partition directory `dir`; a missing or
    /// malformed file gives an empty cache (malformed ones are logged).
    pub fn open(dir: &Path) -> Result<LeaderEpochCache, Error> {
        Ok(Self::load(dir)?.unwrap_or_else(|| Self::empty(dir)))
    }

    /// An empty cache for `dir`; nothing is written until it changes.
    pub(crate) fn empty(dir: &Path) -> LeaderEpochCache {
        LeaderEpochCache {
            dir: dir.to_path_buf(),
            entries: Vec::new(),
        }
    }

    /// The cache stored in `dir`, or `None` when the file is missing or
    /// malformed, in which case the caller may rebuild it from the log.
    pub(crate) fn load(dir: &Path) -> Result<Option<LeaderEpochCache>, Error> {
        let path = dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            // Not UTF-8: as garbled as any other malformed content.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
            Err(e) => return Err(io_at(&path)(e)),
        };
        match parse(&text) {
            Some(entries) => Ok(Some(LeaderEpochCache {
                dir: dir.to_path_buf(),
                entries,
            })),
            None => {
                tracing::warn!(path = %path.display(), "ignoring malformed leader epoch checkpoint");
                Ok(None)
            }
        }
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Only a new, higher epoch
    /// adds an entry: the same epoch keeps its first offset, a lower one is a
    /// stale leader's and is ignored, as are negative (unknown) epochs.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> Result<(), Error> {
        self.assign_all([(epoch, start_offset)])
    }

    /// [`LeaderEpochCache::assign`] of each pair in order, persisting once.
    pub(crate) fn assign_all(
        &mut self,
        pairs: impl IntoIterator<Item = (i32, i64)>,
    ) -> Result<(), Error> {
        let mut changed = false;
        for (epoch, start_offset) in pairs {
            changed |= self.insert(epoch, start_offset);
        }
        self.persist_if(changed)
    }

    /// The in-memory part of [`LeaderEpochCache::assign`]; true if the
    /// entries changed (the caller persists).
    pub(crate) fn insert(&mut self, epoch: i32, start_offset: i64) -> bool {
        if epoch < 0 || start_offset < 0 {
            return false;
        }
        if let Some(latest) = self.entries.last() {
            if epoch <= latest.epoch {
                if epoch < latest.epoch {
                    tracing::warn!(
                        dir = %self.dir.display(),
                        epoch,
                        start_offset,
                        latest_epoch = latest.epoch,
                        "ignoring a leader epoch older than the latest one"
                    );
                }
                return false;
            }
        }
        // Start offsets must stay increasing for `end_offset_for` to be right.
        // An entry at or after the new start can only be left by an append
        // that was assigned but never written; like Kafka, the newer epoch
        // replaces it.
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// Drops the entries of epochs that start at or after `end_offset` (the
    /// log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> Result<(), Error> {
        let before = self.entries.len();
        self.entries.retain(|e| e.start_offset < end_offset);
        self.persist_if(self.entries.len() != before)
    }

    /// The log now starts at `new_start`: the epoch in force there becomes the
    /// first entry, starting at `new_start`; earlier entries go.
    pub fn truncate_from_start(&mut self, new_start: i64) -> Result<(), Error> {
        let covered = self
            .entries
            .iter()
            .take_while(|e| e.start_offset <= new_start)
            .count();
        let Some(last_covered) = covered.checked_sub(1) else {
            return Ok(());
        };
        if last_covered == 0 && self.entries[0].start_offset == new_start {
            return Ok(());
        }
        self.entries.drain(..last_covered);
        self.entries[0].start_offset = new_start;
        self.persist_if(true)
    }

    /// Drops every entry (the log was emptied).
    pub fn clear(&mut self) -> Result<(), Error> {
        let changed = !self.entries.is_empty();
        self.entries.clear();
        self.persist_if(changed)
    }

    /// [`LeaderEpochCache::clear`], writing the file even if the cache was
    /// already empty (after [`LeaderEpochCache::remove_file`], so that the
    /// next open finds an empty cache instead of rebuilding one).
    pub(crate) fn clear_and_persist(&mut self) -> Result<(), Error> {
        self.entries.clear();
        self.persist()
    }

    /// Removes the file (keeping the entries in memory), so that a crash
    /// before the next write makes the next open rebuild the cache from
    /// whatever log survived instead of trusting stale entries.
    pub(crate) fn remove_file(&self) -> Result<(), Error> {
        let path = self.dir.join(LEADER_EPOCH_CHECKPOINT_FILE);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_at(&path)(e)),
        }
        super::recovery::sync_dir(&self.dir).map_err(io_at(&self.dir))
    }

    /// Writes the entries even if unchanged (after a rebuild or a removal).
    pub(crate) fn persist(&self) -> Result<(), Error> {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        write_file_atomically(&self.dir, LEADER_EPOCH_CHECKPOINT_FILE, text.as_bytes())
    }

    fn persist_if(&self, changed: bool) -> Result<(), Error> {
        if changed {
            self.persist()
        } else {
            Ok(())
        }
    }

    /// Kafka's `LeaderEpochFileCache.endOffsetFor`: the largest epoch at or
    /// below `requested_epoch` and the offset where the next higher epoch
    /// starts (the log end for the latest epoch). `(-1, -1)` when the epoch is
    /// undefined or no epoch above it is known.
    pub fn end_offset_for(&self, requested_epoch: i32, log_end_offset: i64) -> (i32, i64) {
        let undefined = (UNDEFINED_EPOCH, UNDEFINED_EPOCH_OFFSET);
        if requested_epoch == UNDEFINED_EPOCH {
            return undefined;
        }
        if self.latest_epoch() == Some(requested_epoch) {
            return (requested_epoch, log_end_offset);
        }
        let split = self.entries.partition_point(|e| e.epoch <= requested_epoch);
        let Some(higher) = self.entries.get(split) else {
            return undefined;
        };
        match split.checked_sub(1).map(|i| self.entries[i]) {
            // Older than anything the cache knows: Kafka answers with the
            // requested epoch itself.
            None => (requested_epoch, higher.start_offset),
            Some(floor) => (floor.epoch, higher.start_offset),
        }
    }
}

/// Entries of a checkpoint file, `None` unless it is well formed: version 0,
/// a count, exactly that many `epoch start_offset` lines, both fields
/// non-negative and strictly increasing.
fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()? != VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<EpochEntry> = Vec::new();
    for _ in 0..count {
        let mut fields = lines.next()?.split_whitespace();
        let epoch: i32 = fields.next()?.parse().ok()?;
        let start_offset: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() || epoch < 0 || start_offset < 0 {
            return None;
        }
        if let Some(prev) = entries.last() {
            if epoch <= prev.epoch || start_offset <= prev.start_offset {
                return None;
            }
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    if lines.any(|l| !l.trim().is_empty()) {
        return None;
    }
    Some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(cache: &LeaderEpochCache) -> Vec<(i32, i64)> {
        cache
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    fn file(dir: &Path) -> String {
        fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT_FILE)).unwrap()
    }

    /// A cache with epochs 1@0, 3@10, 5@20 (persisted).
    fn cache_1_3_5(dir: &Path) -> LeaderEpochCache {
        let mut cache = LeaderEpochCache::open(dir).unwrap();
        cache.assign(1, 0).unwrap();
        cache.assign(3, 10).unwrap();
        cache.assign(5, 20).unwrap();
        cache
    }

    #[test]
    fn assign_adds_only_higher_epochs() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::open(dir.path()).unwrap();
        assert_eq!(cache.latest_epoch(), None);
        cache.assign(-1, 0).unwrap();
        assert!(cache.entries().is_empty());
        assert!(!dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE).exists());

        cache.assign(0, 0).unwrap();
        cache.assign(0, 5).unwrap();
        cache.assign(2, 7).unwrap();
        cache.assign(1, 9).unwrap();
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 7)]);
        assert_eq!(cache.latest_epoch(), Some(2));
    }

    #[test]
    fn a_higher_epoch_at_an_already_used_offset_replaces_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::open(dir.path()).unwrap();
        cache.assign(0, 0).unwrap();
        cache.assign(1, 10).unwrap();
        cache.assign(2, 10).unwrap();
        assert_eq!(pairs(&cache), vec![(0, 0), (2, 10)]);
    }

    #[test]
    fn the_file_is_written_only_when_the_entries_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
        let mut cache = cache_1_3_5(dir.path());
        assert_eq!(file(dir.path()), "0\n3\n1 0\n3 10\n5 20\n");
        fs::remove_file(&path).unwrap();
        cache.assign(5, 30).unwrap();
        cache.assign(4, 30).unwrap();
        cache.truncate_from_end(21).unwrap();
        cache.truncate_from_start(0).unwrap();
        assert!(!path.exists(), "an unchanged cache must not be rewritten");
        cache.assign(6, 30).unwrap();
        assert!(path.exists());
    }

    #[test]
    fn the_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_1_3_5(dir.path());
        let reopened = LeaderEpochCache::open(dir.path()).unwrap();
        assert_eq!(reopened.entries(), cache.entries());

        let mut cache = reopened;
        cache.clear().unwrap();
        assert_eq!(file(dir.path()), "0\n0\n");
        assert!(LeaderEpochCache::load(dir.path()).unwrap().is_some());
        assert!(LeaderEpochCache::open(dir.path())
            .unwrap()
            .entries()
            .is_empty());
    }

    #[test]
    fn a_garbled_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEADER_EPOCH_CHECKPOINT_FILE);
        let garbled: [&[u8]; 10] = [
            b"",
            b"garbage",
            b"1\n1\n0 0\n",
            b"0\n2\n0 0\n",
            b"0\n1\n0 0\n1 5\n",
            b"0\n1\n0\n",
            b"0\n1\n0 0 0\n",
            b"0\n2\n3 0\n2 5\n",
            b"0\n1\n-4 0\n",
            b"0\n1\n\xff\xfe 0\n",
        ];
        for bytes in garbled {
            fs::write(&path, bytes).unwrap();
            assert!(
                LeaderEpochCache::load(dir.path()).unwrap().is_none(),
                "{bytes:?} must be refused"
            );
            let cache = LeaderEpochCache::open(dir.path()).unwrap();
            assert!(cache.entries().is_empty());
        }
        // Without the trailing newline it is still well formed.
        fs::write(&path, "0\n1\n2 5").unwrap();
        let cache = LeaderEpochCache::open(dir.path()).unwrap();
        assert_eq!(pairs(&cache), vec![(2, 5)]);
    }

    #[test]
    fn truncate_from_end_drops_epochs_starting_at_or_after_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = cache_1_3_5(dir.path());
        cache.truncate_from_end(25).unwrap();
        assert_eq!(pairs(&cache), vec![(1, 0), (3, 10), (5, 20)]);
        cache.truncate_from_end(20).unwrap();
        assert_eq!(pairs(&cache), vec![(1, 0), (3, 10)]);
        assert_eq!(file(dir.path()), "0\n2\n1 0\n3 10\n");
        cache.truncate_from_end(0).unwrap();
        assert!(cache.entries().is_empty());
    }

    #[test]
    fn truncate_from_start_moves_the_epoch_in_force_to_the_new_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = cache_1_3_5(dir.path());
        cache.truncate_from_start(0).unwrap();
        assert_eq!(pairs(&cache), vec![(1, 0), (3, 10), (5, 20)]);
        cache.truncate_from_start(4).unwrap();
        assert_eq!(pairs(&cache), vec![(1, 4), (3, 10), (5, 20)]);
        cache.truncate_from_start(15).unwrap();
        assert_eq!(pairs(&cache), vec![(3, 15), (5, 20)]);
        cache.truncate_from_start(20).unwrap();
        assert_eq!(pairs(&cache), vec![(5, 20)]);
        cache.truncate_from_start(100).unwrap();
        assert_eq!(pairs(&cache), vec![(5, 100)]);
        assert_eq!(file(dir.path()), "0\n1\n5 100\n");
    }

    #[test]
    fn end_offset_for_follows_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let cache = cache_1_3_5(dir.path());
        let leo = 42;
        assert_eq!(cache.end_offset_for(-1, leo), (-1, -1));
        assert_eq!(cache.end_offset_for(5, leo), (5, leo));
        assert_eq!(cache.end_offset_for(6, leo), (-1, -1));
        assert_eq!(cache.end_offset_for(3, leo), (3, 20));
        assert_eq!(cache.end_offset_for(4, leo), (3, 20));
        assert_eq!(cache.end_offset_for(2, leo), (1, 10));
        assert_eq!(cache.end_offset_for(1, leo), (1, 10));
        assert_eq!(cache.end_offset_for(0, leo), (0, 0));

        let empty = LeaderEpochCache::empty(dir.path());
        assert_eq!(empty.end_offset_for(-1, leo), (-1, -1));
        assert_eq!(empty.end_offset_for(0, leo), (-1, -1));
    }
}
