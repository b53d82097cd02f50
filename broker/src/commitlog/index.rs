//! The sparse offset index (`.index`): 8-byte entries, a 4-byte offset relative to
//! the segment's base offset and the 4-byte file position of the batch starting at
//! that offset, both big-endian. Also the memory-mapped, preallocated file both
//! indexes are built on.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

/// A file of fixed-size entries, memory-mapped and preallocated so appends are
/// plain memory writes. The first `entries` entries are live; the rest of the
/// mapping is zeros.
///
/// No file descriptor is kept: the file is opened, mapped and closed (the
/// mapping holds its own reference to the file), and reopened by path only
/// to change its size. A broker with thousands of partitions then needs one
/// descriptor per segment (its `.log`), not three. The mapping's `msync`
/// makes the file durable (see [`IndexFile::flush`]).
pub(crate) struct IndexFile {
    path: PathBuf,
    mmap: Option<MmapMut>,
    entry_size: usize,
    entries: usize,
}

#[allow(unsafe_code)]
fn map_mut(file: &File) -> io::Result<MmapMut> {
    // SAFETY: the mapping is only undefined behaviour if the file changes size or
    // content behind our back. The file belongs to this partition directory, which
    // only this process writes (documented in docs/log-format.md), and
    // `IndexFile` drops the mapping before every `set_len` it makes.
    unsafe { MmapMut::map_mut(file) }
}

/// Opens an index file for reading and writing (to map it or change its size).
fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn round_down(bytes: u64, entry_size: usize) -> u64 {
    bytes - bytes % entry_size as u64
}

impl IndexFile {
    /// Creates (or empties) the file and preallocates `capacity_bytes`, rounded
    /// down to a whole number of entries.
    pub(crate) fn create(path: &Path, capacity_bytes: u64, entry_size: usize) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        file.set_len(round_down(capacity_bytes, entry_size))?;
        let mut index = IndexFile {
            path: path.to_path_buf(),
            mmap: None,
            entry_size,
            entries: 0,
        };
        index.map(&file)?;
        Ok(index)
    }

    /// Maps an existing file with no live entries; the caller decides how many
    /// of the stored entries are valid and calls [`IndexFile::set_entries`].
    /// `None` if the file size is not a whole number of entries.
    pub(crate) fn open(path: &Path, entry_size: usize) -> io::Result<Option<Self>> {
        let file = open_rw(path)?;
        if file.metadata()?.len() % entry_size as u64 != 0 {
            return Ok(None);
        }
        let mut index = IndexFile {
            path: path.to_path_buf(),
            mmap: None,
            entry_size,
            entries: 0,
        };
        index.map(&file)?;
        Ok(Some(index))
    }

    /// Maps `file` (this index's file, freshly opened) whole; an empty file
    /// has no mapping. The live entries are capped to what the mapping holds,
    /// also when mapping fails, so they never point past it.
    fn map(&mut self, file: &File) -> io::Result<()> {
        self.mmap = None;
        let mapped = file.metadata().and_then(|m| {
            if m.len() > 0 {
                self.mmap = Some(map_mut(file)?);
            }
            Ok(())
        });
        self.entries = self.entries.min(self.capacity());
        mapped
    }

    fn bytes(&self) -> &[u8] {
        self.mmap.as_deref().unwrap_or(&[])
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Entries the mapped file can hold.
    pub(crate) fn capacity(&self) -> usize {
        self.bytes().len() / self.entry_size
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.entries
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.capacity()
    }

    /// Raw bytes of entry `i` (live or not); `i` must be below `capacity()`.
    pub(crate) fn raw(&self, i: usize) -> &[u8] {
        &self.bytes()[i * self.entry_size..(i + 1) * self.entry_size]
    }

    /// True if every byte from entry `i` to the end of the file is zero.
    pub(crate) fn zero_from(&self, i: usize) -> bool {
        self.bytes()[i * self.entry_size..].iter().all(|&b| b == 0)
    }

    /// Appends an entry; false (and nothing written) when the file is full.
    pub(crate) fn push(&mut self, entry: &[u8]) -> bool {
        if self.is_full() {
            return false;
        }
        let at = self.entries * self.entry_size;
        if let Some(m) = self.mmap.as_mut() {
            m[at..at + self.entry_size].copy_from_slice(entry);
        }
        self.entries += 1;
        true
    }

    /// Sets the number of live entries; dropped entries are zeroed so a crash
    /// before the next trim cannot resurrect them.
    pub(crate) fn set_entries(&mut self, n: usize) {
        let n = n.min(self.capacity());
        if n < self.entries {
            let (from, to) = (n * self.entry_size, self.entries * self.entry_size);
            if let Some(m) = self.mmap.as_mut() {
                m[from..to].fill(0);
            }
        }
        self.entries = n;
    }

    /// Changes the file size to `capacity_bytes` (never below the live entries),
    /// remapping it.
    pub(crate) fn resize(&mut self, capacity_bytes: u64) -> io::Result<()> {
        let live = (self.entries * self.entry_size) as u64;
        let bytes = round_down(capacity_bytes, self.entry_size).max(live);
        if bytes == self.bytes().len() as u64 {
            return Ok(());
        }
        // Opened before the mapping goes, so that a failure leaves the index
        // as it was.
        let file = open_rw(&self.path)?;
        if let Some(m) = &self.mmap {
            m.flush()?;
        }
        self.mmap = None;
        let resized = file.set_len(bytes);
        let mapped = self.map(&file);
        resized?;
        mapped
    }

    /// Shrinks the file to its live entries (on roll and close).
    pub(crate) fn trim(&mut self) -> io::Result<()> {
        self.resize(0)
    }

    /// Drops every entry and preallocates `capacity_bytes` of zeros.
    pub(crate) fn reset(&mut self, capacity_bytes: u64) -> io::Result<()> {
        let file = open_rw(&self.path)?;
        self.mmap = None;
        self.entries = 0;
        file.set_len(0)?;
        file.set_len(round_down(capacity_bytes, self.entry_size))?;
        self.map(&file)
    }

    /// Makes the file durable, entries and size. With a mapping, that is
    /// `msync(MS_SYNC)`, which on Linux writes the dirty pages back and then
    /// fdatasyncs the mapped file (`vfs_fsync_range`), so its size is durable
    /// too. A file without a mapping is empty (an index trimmed with no
    /// entries); it is reopened and fdatasynced so that the shrink is durable
    /// and a crash cannot bring back entries that were dropped.
    pub(crate) fn flush(&self) -> io::Result<()> {
        match &self.mmap {
            Some(m) => m.flush(),
            None => File::open(&self.path)?.sync_data(),
        }
    }
}

pub(crate) const OFFSET_ENTRY_SIZE: usize = 8;

/// Offset index of one segment.
pub(crate) struct OffsetIndex {
    file: IndexFile,
    base_offset: i64,
}

impl OffsetIndex {
    pub(crate) fn create(path: &Path, base_offset: i64, capacity_bytes: u64) -> io::Result<Self> {
        Ok(OffsetIndex {
            file: IndexFile::create(path, capacity_bytes, OFFSET_ENTRY_SIZE)?,
            base_offset,
        })
    }

    /// Loads an existing index if it is sane for a segment of `log_size` bytes
    /// holding offsets below `next_offset`: whole entries, relative offsets and
    /// positions strictly increasing, positions inside the log. The first
    /// all-zero entry ends the index (the rest of a preallocated file), and
    /// everything after it must be zero too. `None` means "rebuild it".
    pub(crate) fn load(
        path: &Path,
        base_offset: i64,
        log_size: u64,
        next_offset: i64,
    ) -> io::Result<Option<Self>> {
        let Some(file) = IndexFile::open(path, OFFSET_ENTRY_SIZE)? else {
            return Ok(None);
        };
        let mut index = OffsetIndex { file, base_offset };
        let mut prev: Option<(u32, u32)> = None;
        let mut n = 0;
        while n < index.file.capacity() {
            let (rel, pos) = index.raw_entry(n);
            if rel == 0 && pos == 0 {
                if !index.file.zero_from(n) {
                    return Ok(None);
                }
                break;
            }
            let increasing = prev.is_none_or(|(r, p)| rel > r && pos > p);
            if !increasing
                || u64::from(pos) >= log_size
                || base_offset + i64::from(rel) >= next_offset
            {
                return Ok(None);
            }
            prev = Some((rel, pos));
            n += 1;
        }
        index.file.set_entries(n);
        Ok(Some(index))
    }

    fn raw_entry(&self, i: usize) -> (u32, u32) {
        let b = self.file.raw(i);
        (
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        )
    }

    /// Entry `i` as (absolute offset, position).
    pub(crate) fn entry(&self, i: usize) -> (i64, u64) {
        let (rel, pos) = self.raw_entry(i);
        (self.base_offset + i64::from(rel), u64::from(pos))
    }

    pub(crate) fn len(&self) -> usize {
        self.file.len()
    }

    pub(crate) fn is_full(&self) -> bool {
        self.file.is_full()
    }

    pub(crate) fn last_entry(&self) -> Option<(i64, u64)> {
        self.len().checked_sub(1).map(|i| self.entry(i))
    }

    /// Records that the batch starting at `offset` lies at `position`. Caller
    /// guarantees both fit in 32 bits relative to the segment and increase.
    pub(crate) fn append(&mut self, offset: i64, position: u64) -> bool {
        if !(0..=i64::from(u32::MAX)).contains(&(offset - self.base_offset))
            || position > u64::from(u32::MAX)
        {
            return false;
        }
        let rel = (offset - self.base_offset) as u32;
        let mut entry = [0u8; OFFSET_ENTRY_SIZE];
        entry[..4].copy_from_slice(&rel.to_be_bytes());
        entry[4..].copy_from_slice(&(position as u32).to_be_bytes());
        self.file.push(&entry)
    }

    /// The last entry whose offset is <= `offset`: where to start scanning for
    /// the batch containing `offset`.
    pub(crate) fn lookup(&self, offset: i64) -> Option<(i64, u64)> {
        let n = partition_point(self.len(), |i| self.entry(i).0 <= offset);
        n.checked_sub(1).map(|i| self.entry(i))
    }

    /// Drops the entries at or after `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64) {
        let n = partition_point(self.len(), |i| self.entry(i).0 < offset);
        self.file.set_entries(n);
    }

    pub(crate) fn file(&self) -> &IndexFile {
        &self.file
    }

    pub(crate) fn file_mut(&mut self) -> &mut IndexFile {
        &mut self.file
    }
}

/// First `i` in `0..len` for which `pred(i)` is false, assuming `pred` is true
/// on a prefix.
pub(crate) fn partition_point(len: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_the_last_entry_at_or_below_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000100.index");
        let mut idx = OffsetIndex::create(&path, 100, 80).unwrap();
        assert_eq!(idx.lookup(150), None);
        assert!(idx.append(110, 4096));
        assert!(idx.append(120, 8192));
        assert!(idx.append(135, 12288));
        assert_eq!(idx.lookup(105), None);
        assert_eq!(idx.lookup(110), Some((110, 4096)));
        assert_eq!(idx.lookup(119), Some((110, 4096)));
        assert_eq!(idx.lookup(120), Some((120, 8192)));
        assert_eq!(idx.lookup(1_000), Some((135, 12288)));
        idx.truncate_to(120);
        assert_eq!(idx.len(), 1);
        assert_eq!(idx.lookup(1_000), Some((110, 4096)));
    }

    #[test]
    fn index_fills_up_and_refuses_more_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&path, 0, 20).unwrap();
        assert!(idx.append(1, 10));
        assert!(idx.append(2, 20));
        assert!(idx.is_full());
        assert!(!idx.append(3, 30));
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn preallocated_tail_ends_the_loaded_index_and_trim_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&path, 10, 800).unwrap();
        idx.append(20, 100);
        idx.append(30, 200);
        idx.file().flush().unwrap();
        drop(idx);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 800);
        let mut idx = OffsetIndex::load(&path, 10, 300, 40).unwrap().unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.last_entry(), Some((30, 200)));
        idx.file_mut().trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 16);
        drop(idx);
        let idx = OffsetIndex::load(&path, 10, 300, 40).unwrap().unwrap();
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn an_index_trimmed_to_nothing_is_unmapped_and_still_flushes_and_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&path, 0, 80).unwrap();
        idx.file_mut().trim().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert_eq!(idx.file().capacity(), 0);
        // No mapping: the file is reopened to make the shrink durable.
        idx.file().flush().unwrap();
        idx.file_mut().resize(80).unwrap();
        assert!(idx.append(5, 50));
        idx.file().flush().unwrap();
        drop(idx);
        let idx = OffsetIndex::load(&path, 0, 100, 10).unwrap().unwrap();
        assert_eq!(idx.last_entry(), Some((5, 50)));
    }

    #[test]
    fn a_failed_resize_leaves_the_index_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&path, 0, 80).unwrap();
        assert!(idx.append(5, 50));
        std::fs::remove_file(&path).unwrap();
        let err = idx.file_mut().trim().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert_eq!(idx.file().capacity(), 10);
        assert_eq!(idx.lookup(7), Some((5, 50)));
        assert!(idx.append(6, 60));
    }

    #[test]
    fn insane_indexes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = OffsetIndex::create(&path, 0, 800).unwrap();
        idx.append(20, 100);
        idx.append(30, 200);
        idx.file().flush().unwrap();
        drop(idx);
        // Position past the end of the log.
        assert!(OffsetIndex::load(&path, 0, 150, 40).unwrap().is_none());
        // Offset past the end of the segment.
        assert!(OffsetIndex::load(&path, 0, 300, 25).unwrap().is_none());
        // Not a whole number of entries.
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(13).unwrap();
        assert!(OffsetIndex::load(&path, 0, 300, 40).unwrap().is_none());
        // Decreasing entries.
        let mut bytes = Vec::new();
        for (rel, pos) in [(20u32, 100u32), (10, 200)] {
            bytes.extend(rel.to_be_bytes());
            bytes.extend(pos.to_be_bytes());
        }
        std::fs::write(&path, &bytes).unwrap();
        assert!(OffsetIndex::load(&path, 0, 300, 40).unwrap().is_none());
        // Garbage after the zero terminator.
        let mut bytes = vec![0u8; 16];
        bytes.extend(5u32.to_be_bytes());
        bytes.extend(5u32.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(OffsetIndex::load(&path, 0, 300, 40).unwrap().is_none());
    }
}
