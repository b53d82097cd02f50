//! The time index (`.timeindex`): 12-byte entries, an 8-byte timestamp and the
//! 4-byte offset (relative to the segment's base) of the batch at which the
//! segment's largest timestamp first reached that value, both big-endian.
//! Timestamps strictly increase from entry to entry; the last entry of a closed
//! segment holds the segment's largest timestamp.

use std::io;
use std::path::Path;

use super::index::{partition_point, IndexFile};

pub(crate) const TIME_ENTRY_SIZE: usize = 12;

pub(crate) struct TimeIndex {
    file: IndexFile,
    base_offset: i64,
}

impl TimeIndex {
    pub(crate) fn create(path: &Path, base_offset: i64, capacity_bytes: u64) -> io::Result<Self> {
        Ok(TimeIndex {
            file: IndexFile::create(path, capacity_bytes, TIME_ENTRY_SIZE)?,
            base_offset,
        })
    }

    /// Loads an existing time index if it is sane for a segment holding offsets
    /// below `next_offset`: whole entries, timestamps strictly increasing,
    /// offsets not decreasing. An all-zero entry ends the index unless it is the
    /// first entry and is followed by a non-zero one (a real `(0, base)` entry);
    /// everything after the end must be zero. `None` means "rebuild it".
    pub(crate) fn load(
        path: &Path,
        base_offset: i64,
        next_offset: i64,
    ) -> io::Result<Option<Self>> {
        let Some(file) = IndexFile::open(path, TIME_ENTRY_SIZE)? else {
            return Ok(None);
        };
        let mut index = TimeIndex { file, base_offset };
        let capacity = index.file.capacity();
        let mut prev: Option<(i64, u32)> = None;
        let mut n = 0;
        while n < capacity {
            let (ts, rel) = index.raw_entry(n);
            if ts == 0 && rel == 0 {
                let real_first = n == 0
                    && (capacity == 1 || {
                        let (ts1, rel1) = index.raw_entry(1);
                        ts1 != 0 || rel1 != 0
                    });
                if !real_first {
                    if !index.file.zero_from(n) {
                        return Ok(None);
                    }
                    break;
                }
            }
            let increasing = prev.is_none_or(|(t, r)| ts > t && rel >= r);
            if !increasing || base_offset + i64::from(rel) >= next_offset {
                return Ok(None);
            }
            prev = Some((ts, rel));
            n += 1;
        }
        index.file.set_entries(n);
        Ok(Some(index))
    }

    fn raw_entry(&self, i: usize) -> (i64, u32) {
        let b = self.file.raw(i);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        (
            i64::from_be_bytes(ts),
            u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
        )
    }

    /// Entry `i` as (timestamp, absolute offset).
    pub(crate) fn entry(&self, i: usize) -> (i64, i64) {
        let (ts, rel) = self.raw_entry(i);
        (ts, self.base_offset + i64::from(rel))
    }

    pub(crate) fn len(&self) -> usize {
        self.file.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.file.is_full()
    }

    pub(crate) fn last_entry(&self) -> Option<(i64, i64)> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Appends `(timestamp, offset)` if `timestamp` is larger than the last
    /// entry's (or than -1, "no timestamp", for the first entry) and the file has
    /// room.
    pub(crate) fn maybe_append(&mut self, timestamp: i64, offset: i64) {
        let last = self.last_entry().map_or(-1, |(ts, _)| ts);
        if timestamp <= last || !(0..=i64::from(u32::MAX)).contains(&(offset - self.base_offset)) {
            return;
        }
        let rel = (offset - self.base_offset) as u32;
        let mut entry = [0u8; TIME_ENTRY_SIZE];
        entry[..8].copy_from_slice(&timestamp.to_be_bytes());
        entry[8..].copy_from_slice(&rel.to_be_bytes());
        self.file.push(&entry);
    }

    /// The last entry whose timestamp is <= `timestamp`: every record before its
    /// offset has a smaller timestamp, so a search can start there.
    pub(crate) fn lookup(&self, timestamp: i64) -> Option<(i64, i64)> {
        let n = partition_point(self.len(), |i| self.entry(i).0 <= timestamp);
        n.checked_sub(1).map(|i| self.entry(i))
    }

    /// Drops the entries whose offset is at or after `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64) {
        let n = partition_point(self.len(), |i| self.entry(i).1 < offset);
        self.file.set_entries(n);
    }

    pub(crate) fn file(&self) -> &IndexFile {
        &self.file
    }

    pub(crate) fn file_mut(&mut self) -> &mut IndexFile {
        &mut self.file
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_increasing_timestamps_are_recorded_and_lookup_finds_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut idx = TimeIndex::create(&path, 50, 120).unwrap();
        idx.maybe_append(1_000, 55);
        idx.maybe_append(900, 60); // not larger: ignored
        idx.maybe_append(1_000, 61); // equal: ignored
        idx.maybe_append(2_000, 70);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.lookup(999), None);
        assert_eq!(idx.lookup(1_000), Some((1_000, 55)));
        assert_eq!(idx.lookup(1_999), Some((1_000, 55)));
        assert_eq!(idx.lookup(5_000), Some((2_000, 70)));
        idx.truncate_to(70);
        assert_eq!(idx.last_entry(), Some((1_000, 55)));
    }

    #[test]
    fn a_real_zero_first_entry_survives_reload_but_a_zero_tail_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut idx = TimeIndex::create(&path, 0, 120).unwrap();
        idx.maybe_append(0, 0);
        idx.maybe_append(5, 3);
        idx.file().flush().unwrap();
        drop(idx);
        let idx = TimeIndex::load(&path, 0, 10).unwrap().unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.entry(0), (0, 0));
        drop(idx);

        let idx = TimeIndex::create(&path, 0, 120).unwrap();
        idx.file().flush().unwrap();
        drop(idx);
        assert_eq!(TimeIndex::load(&path, 0, 10).unwrap().unwrap().len(), 0);
    }

    #[test]
    fn insane_time_indexes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.timeindex");
        let mut bytes = Vec::new();
        for (ts, rel) in [(100i64, 1u32), (50, 2)] {
            bytes.extend(ts.to_be_bytes());
            bytes.extend(rel.to_be_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(TimeIndex::load(&path, 0, 10).unwrap().is_none());
        std::fs::write(&path, &bytes[..12]).unwrap();
        assert!(TimeIndex::load(&path, 0, 10).unwrap().is_some());
        assert!(TimeIndex::load(&path, 0, 1).unwrap().is_none());
        std::fs::write(&path, &bytes[..13]).unwrap();
        assert!(TimeIndex::load(&path, 0, 10).unwrap().is_none());
    }
}
