//! The aborted-transaction index (`.txnindex`) of one segment, in Kafka's
//! format: no header, one 34-byte big-endian entry per transaction aborted by
//! a marker in this segment, in marker order:
//!
//! ```text
//! version             i16   0
//! producer_id         i64
//! first_offset        i64   the transaction's first batch in this partition
//! last_offset         i64   the abort marker
//! last_stable_offset  i64   the partition's first unstable offset once it ended
//! ```
//!
//! A read_committed fetch gets the entries overlapping what it reads, so the
//! consumer can drop the aborted records. The file is created at the first
//! entry; a segment without aborts has none. No descriptor is kept: the file
//! is opened for each append, read, truncation and sync, so a segment holds
//! one descriptor, its `.log`'s.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::recovery::sync_dir;
use super::segment::read_full_at;

/// Bytes of one entry.
pub const ENTRY_LEN: usize = 34;
const ENTRY_VERSION: i16 = 0;

/// A transaction ended by an abort marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: i64,
    /// Offset of the transaction's first batch in this partition.
    pub first_offset: i64,
    /// Offset of the abort marker.
    pub last_offset: i64,
    /// The partition's first unstable offset once the transaction ended (the
    /// first offset of the oldest transaction of another producer still
    /// open), or the marker's offset + 1 if none was.
    pub last_stable_offset: i64,
}

impl AbortedTxn {
    fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut out = [0u8; ENTRY_LEN];
        out[0..2].copy_from_slice(&ENTRY_VERSION.to_be_bytes());
        out[2..10].copy_from_slice(&self.producer_id.to_be_bytes());
        out[10..18].copy_from_slice(&self.first_offset.to_be_bytes());
        out[18..26].copy_from_slice(&self.last_offset.to_be_bytes());
        out[26..34].copy_from_slice(&self.last_stable_offset.to_be_bytes());
        out
    }

    fn decode(b: &[u8]) -> Option<AbortedTxn> {
        let i64_at = |at: usize| b.get(at..at + 8)?.try_into().ok().map(i64::from_be_bytes);
        let version = i16::from_be_bytes(b.get(0..2)?.try_into().ok()?);
        if version != ENTRY_VERSION {
            return None;
        }
        Some(AbortedTxn {
            producer_id: i64_at(2)?,
            first_offset: i64_at(10)?,
            last_offset: i64_at(18)?,
            last_stable_offset: i64_at(26)?,
        })
    }
}

/// The `.txnindex` of one segment.
pub(crate) struct TxnIndex {
    path: PathBuf,
    /// False until the file exists.
    exists: bool,
    /// Bytes of whole entries in the file.
    len: u64,
    /// `last_offset` of the last entry.
    last_offset: Option<i64>,
}

impl TxnIndex {
    /// A segment's index starting empty: an old file at `path` is removed.
    pub(crate) fn create(path: &Path) -> io::Result<TxnIndex> {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(TxnIndex {
            path: path.to_path_buf(),
            exists: false,
            len: 0,
            last_offset: None,
        })
    }

    /// The index at `path`, empty if there is no file. A torn last entry (a
    /// crash during an append) is cut off.
    pub(crate) fn open(path: &Path) -> io::Result<TxnIndex> {
        let file = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return TxnIndex::create(path),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        let len = size - size % ENTRY_LEN as u64;
        if len != size {
            tracing::warn!(
                path = %path.display(),
                size,
                kept = len,
                "transaction index ends in a partial entry; truncating it"
            );
            file.set_len(len)?;
            file.sync_all()?;
        }
        let mut index = TxnIndex {
            path: path.to_path_buf(),
            exists: true,
            len,
            last_offset: None,
        };
        index.last_offset = index.read_entries(&file)?.last().map(|t| t.last_offset);
        Ok(index)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's path if it exists (to fsync it).
    pub(crate) fn existing_path(&self) -> Option<&Path> {
        self.exists.then_some(self.path.as_path())
    }

    /// The existing file, to write or truncate it.
    fn open_file(&self) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(&self.path)
    }

    /// Appends `txn`, creating the file at the first entry. An entry whose
    /// marker is not after the last one's is already there (a replay over
    /// entries that were kept) and is skipped.
    pub(crate) fn append(&mut self, txn: &AbortedTxn) -> io::Result<()> {
        if self.last_offset.is_some_and(|last| txn.last_offset <= last) {
            tracing::warn!(
                path = %self.path.display(),
                marker = txn.last_offset,
                "skipping an aborted transaction the index already holds"
            );
            return Ok(());
        }
        let file = if self.exists {
            self.open_file()?
        } else {
            self.create_file()?
        };
        file.write_all_at(&txn.encode(), self.len)?;
        self.len += ENTRY_LEN as u64;
        self.last_offset = Some(txn.last_offset);
        Ok(())
    }

    /// Creates the file; the directory is synced so that the file is there
    /// whenever its content is (the segment's flushes sync only files).
    fn create_file(&mut self) -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&self.path)?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.exists = true;
        self.len = 0;
        Ok(file)
    }

    /// Every entry, in file order.
    pub(crate) fn entries(&self) -> io::Result<Vec<AbortedTxn>> {
        if !self.exists {
            return Ok(Vec::new());
        }
        self.read_entries(&File::open(&self.path)?)
    }

    /// The entries of `file`, this index's file opened.
    fn read_entries(&self, file: &File) -> io::Result<Vec<AbortedTxn>> {
        let mut buf = vec![0u8; self.len as usize];
        let got = read_full_at(file, &mut buf, 0)?;
        buf.truncate(got - got % ENTRY_LEN);
        buf.chunks_exact(ENTRY_LEN)
            .map(|b| {
                AbortedTxn::decode(b).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{}: unknown transaction index entry version",
                            self.path.display()
                        ),
                    )
                })
            })
            .collect()
    }

    /// Adds to `out` the entries with `last_offset >= start_offset` and
    /// `first_offset < upper_bound`. True if no later entry (here or in a
    /// later segment) can qualify: one entry's last stable offset reached
    /// `upper_bound`, so every transaction aborted after it started at or
    /// after `upper_bound` (Kafka's rule).
    pub(crate) fn collect(
        &self,
        start_offset: i64,
        upper_bound: i64,
        out: &mut Vec<AbortedTxn>,
    ) -> io::Result<bool> {
        for txn in self.entries()? {
            if txn.last_offset >= start_offset && txn.first_offset < upper_bound {
                out.push(txn);
            }
            if txn.last_stable_offset >= upper_bound {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Drops the entries whose marker is at or after `offset`.
    pub(crate) fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        if self.last_offset.is_none_or(|last| last < offset) {
            return Ok(());
        }
        let entries = self.entries()?;
        let keep = entries
            .iter()
            .take_while(|t| t.last_offset < offset)
            .count();
        if self.exists {
            self.len = (keep * ENTRY_LEN) as u64;
            self.open_file()?.set_len(self.len)?;
        }
        self.last_offset = keep.checked_sub(1).map(|i| entries[i].last_offset);
        Ok(())
    }

    /// fdatasync of the file, if there is one, through a descriptor opened
    /// for it: Linux syncs every write to the file, whichever descriptor made
    /// it (see [`super::segment::sync_path`]).
    pub(crate) fn sync(&self) -> io::Result<()> {
        if self.exists {
            File::open(&self.path)?.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txn(first: i64, last: i64, lso: i64) -> AbortedTxn {
        AbortedTxn {
            producer_id: 9,
            first_offset: first,
            last_offset: last,
            last_stable_offset: lso,
        }
    }

    #[test]
    fn entries_are_34_bytes_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000000.txnindex");
        let mut index = TxnIndex::create(&path).unwrap();
        assert!(!path.exists(), "created at the first entry");
        index.append(&txn(0, 5, 6)).unwrap();
        index.append(&txn(3, 9, 10)).unwrap();
        // A replayed entry already present is skipped.
        index.append(&txn(3, 9, 10)).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 68);
        let bytes = fs::read(&path).unwrap();
        assert_eq!(&bytes[0..2], &[0, 0]);
        assert_eq!(&bytes[2..10], &9i64.to_be_bytes());
        let reopened = TxnIndex::open(&path).unwrap();
        assert_eq!(
            reopened.entries().unwrap(),
            vec![txn(0, 5, 6), txn(3, 9, 10)]
        );
    }

    #[test]
    fn collect_stops_once_a_last_stable_offset_reaches_the_upper_bound() {
        let dir = tempfile::tempdir().unwrap();
        let mut index = TxnIndex::create(&dir.path().join("x.txnindex")).unwrap();
        for t in [txn(0, 5, 6), txn(7, 9, 10), txn(12, 20, 21)] {
            index.append(&t).unwrap();
        }
        let mut out = Vec::new();
        assert!(!index.collect(6, 100, &mut out).unwrap());
        assert_eq!(out, vec![txn(7, 9, 10), txn(12, 20, 21)]);
        out.clear();
        assert!(index.collect(0, 8, &mut out).unwrap());
        assert_eq!(out, vec![txn(0, 5, 6), txn(7, 9, 10)]);
    }

    #[test]
    fn truncate_drops_entries_at_and_after_the_offset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txnindex");
        let mut index = TxnIndex::create(&path).unwrap();
        for t in [txn(0, 5, 6), txn(7, 9, 10)] {
            index.append(&t).unwrap();
        }
        index.truncate_to(9).unwrap();
        assert_eq!(index.entries().unwrap(), vec![txn(0, 5, 6)]);
        index.append(&txn(6, 8, 9)).unwrap();
        assert_eq!(index.entries().unwrap(), vec![txn(0, 5, 6), txn(6, 8, 9)]);
        index.truncate_to(0).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 0);
    }

    #[test]
    fn a_torn_last_entry_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.txnindex");
        let mut index = TxnIndex::create(&path).unwrap();
        index.append(&txn(0, 5, 6)).unwrap();
        drop(index);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(&txn(7, 9, 10).encode()[..20]);
        fs::write(&path, bytes).unwrap();
        let index = TxnIndex::open(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), 34);
        assert_eq!(index.entries().unwrap(), vec![txn(0, 5, 6)]);
    }
}
