//! One segment: the `.log` file of concatenated batches, its two indexes and
//! its aborted-transaction index.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use bytes::Bytes;

use super::batch::{self, BatchError, BatchHeader, HEADER_LEN};
use super::index::OffsetIndex;
use super::time_index::TimeIndex;
use super::txn_index::{AbortedTxn, TxnIndex};
use super::LogConfig;

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
pub(crate) const TXN_INDEX_EXT: &str = "txnindex";
pub(crate) const DELETED_SUFFIX: &str = ".deleted";

/// Chunk read while scanning headers for a fetch or a truncation.
const HEADER_SCAN_CHUNK: usize = 16 * 1024;
/// Chunk read while verifying whole batches during recovery.
const RECOVERY_SCAN_CHUNK: usize = 1024 * 1024;

/// `{base_offset:020}.{ext}`, as Kafka names its files.
pub(crate) fn file_name(base_offset: i64, ext: &str) -> String {
    format!("{base_offset:020}.{ext}")
}

pub(crate) fn file_path(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(file_name(base_offset, ext))
}

/// Reads as much of `buf` as the file holds from `pos`; returns the count.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], pos + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

fn invalid_data(e: BatchError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Walks the batches of a file region `[start, end)` with positional reads
/// through a reusable buffer.
pub(crate) struct Scanner<'a> {
    file: &'a File,
    end: u64,
    pos: u64,
    buf: Vec<u8>,
    buf_pos: u64,
    chunk: usize,
}

impl<'a> Scanner<'a> {
    pub(crate) fn new(file: &'a File, start: u64, end: u64, chunk: usize) -> Self {
        Scanner {
            file,
            end,
            pos: start,
            buf: Vec::new(),
            buf_pos: 0,
            chunk,
        }
    }

    /// Bytes `[pos, pos + len)` of the file (fewer if the region ends first).
    pub(crate) fn bytes(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        let buffered_end = self.buf_pos + self.buf.len() as u64;
        if pos < self.buf_pos || pos + len as u64 > buffered_end {
            let want = self.end.saturating_sub(pos).min(len.max(self.chunk) as u64) as usize;
            self.buf.resize(want, 0);
            let got = read_full_at(self.file, &mut self.buf, pos)?;
            self.buf.truncate(got);
            self.buf_pos = pos;
        }
        let at = (pos - self.buf_pos) as usize;
        let avail = (self.buf.len() - at).min(len);
        Ok(&self.buf[at..at + avail])
    }

    /// The next batch's position and header, `None` at the end of the region.
    /// With `verify`, the whole batch is read and its CRC and fields checked;
    /// without, only the header is read (the body is skipped).
    pub(crate) fn next_batch(
        &mut self,
        verify: bool,
    ) -> io::Result<Option<Result<(u64, BatchHeader), BatchError>>> {
        if self.pos >= self.end {
            return Ok(None);
        }
        let pos = self.pos;
        let available = usize::try_from(self.end - pos).unwrap_or(usize::MAX);
        let head = self.bytes(pos, HEADER_LEN)?;
        let header = match batch::check_header(head, pos as usize, available) {
            Ok(h) => h,
            Err(e) => return Ok(Some(Err(e))),
        };
        if verify {
            let whole = self.bytes(pos, header.total_len())?;
            if let Err(e) = batch::validate_batch(whole, pos as usize) {
                return Ok(Some(Err(e)));
            }
        }
        self.pos = pos + header.total_len() as u64;
        Ok(Some(Ok((pos, header))))
    }
}

/// Where and why recovery cut a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) position: u64,
    pub(crate) dropped: u64,
    pub(crate) reason: String,
}

pub(crate) struct Segment {
    base_offset: i64,
    log_path: PathBuf,
    log: Arc<File>,
    /// Bytes of whole batches in the log file.
    size: u64,
    next_offset: i64,
    index: OffsetIndex,
    time_index: TimeIndex,
    /// Not rebuilt by [`Segment::recover`]: the producer-state replay of
    /// `recovery::load_producer_state` rewrites the entries it covers.
    txn_index: TxnIndex,
    /// Largest batch `maxTimestamp` seen, -1 if none.
    max_timestamp: i64,
    /// Base offset of the first batch that reached `max_timestamp`.
    offset_of_max_timestamp: i64,
    /// First batch's `maxTimestamp`, what time-based rolling measures from
    /// (Kafka's rule); `None` falls back to `created_ms`.
    rolling_base_timestamp: Option<i64>,
    created_ms: i64,
    bytes_since_index_entry: u64,
}

fn open_log(path: &Path, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .truncate(create)
        .open(path)
}

/// A missing index file is like a damaged one: rebuild it.
fn not_found_is_none<T>(r: io::Result<Option<T>>) -> io::Result<Option<T>> {
    match r {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        other => other,
    }
}

fn mtime_ms(file: &File) -> io::Result<i64> {
    let modified = file.metadata()?.modified()?;
    Ok(modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

impl Segment {
    /// A new, empty segment starting at `base_offset` (existing files replaced).
    pub(crate) fn create(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> io::Result<Segment> {
        Self::with_fresh_indexes(dir, base_offset, config, now_ms, true)
    }

    /// Opens a segment whose content is not trusted: indexes are recreated
    /// empty and [`Segment::recover`] must run next.
    pub(crate) fn open_untrusted(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
    ) -> io::Result<Segment> {
        Self::with_fresh_indexes(dir, base_offset, config, now_ms, false)
    }

    /// The log file (truncated when `truncate`) with empty indexes.
    fn with_fresh_indexes(
        dir: &Path,
        base_offset: i64,
        config: &LogConfig,
        now_ms: i64,
        truncate: bool,
    ) -> io::Result<Segment> {
        let log_path = file_path(dir, base_offset, LOG_EXT);
        let log = open_log(&log_path, truncate)?;
        let txn_path = file_path(dir, base_offset, TXN_INDEX_EXT);
        let txn_index = if truncate {
            TxnIndex::create(&txn_path)?
        } else {
            TxnIndex::open(&txn_path)?
        };
        Ok(Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size: 0,
            next_offset: base_offset,
            index: OffsetIndex::create(
                &file_path(dir, base_offset, INDEX_EXT),
                base_offset,
                config.segment_index_bytes,
            )?,
            time_index: TimeIndex::create(
                &file_path(dir, base_offset, TIME_INDEX_EXT),
                base_offset,
                config.segment_index_bytes,
            )?,
            txn_index,
            max_timestamp: -1,
            offset_of_max_timestamp: base_offset,
            rolling_base_timestamp: None,
            created_ms: now_ms,
            bytes_since_index_entry: 0,
        })
    }

    /// Opens a flushed, non-active segment without reading its batches: its
    /// offsets end at `next_offset` (the next segment's base). `None` if an index
    /// is missing or fails its sanity checks (the caller then recovers the
    /// segment, which rebuilds them).
    pub(crate) fn open_trusted(
        dir: &Path,
        base_offset: i64,
        next_offset: i64,
    ) -> io::Result<Option<Segment>> {
        let log_path = file_path(dir, base_offset, LOG_EXT);
        let log = open_log(&log_path, false)?;
        let size = log.metadata()?.len();
        if size < HEADER_LEN as u64 || size > u64::from(u32::MAX) || next_offset <= base_offset {
            return Ok(None);
        }
        let index_path = file_path(dir, base_offset, INDEX_EXT);
        let Some(index) = not_found_is_none(OffsetIndex::load(
            &index_path,
            base_offset,
            size,
            next_offset,
        ))?
        else {
            return Ok(None);
        };
        let time_path = file_path(dir, base_offset, TIME_INDEX_EXT);
        let Some(time_index) =
            not_found_is_none(TimeIndex::load(&time_path, base_offset, next_offset))?
        else {
            return Ok(None);
        };
        // The last index entry must point at a batch header with that offset.
        if let Some((offset, pos)) = index.last_entry() {
            let mut head = [0u8; HEADER_LEN];
            let got = read_full_at(&log, &mut head, pos)?;
            let ok = batch::check_header(&head[..got], pos as usize, (size - pos) as usize)
                .is_ok_and(|h| h.base_offset == offset);
            if !ok {
                return Ok(None);
            }
        }
        let (max_timestamp, offset_of_max_timestamp) =
            time_index.last_entry().unwrap_or((-1, base_offset));
        let created_ms = mtime_ms(&log)?;
        let txn_index = TxnIndex::open(&file_path(dir, base_offset, TXN_INDEX_EXT))?;
        Ok(Some(Segment {
            base_offset,
            log_path,
            log: Arc::new(log),
            size,
            next_offset,
            index,
            time_index,
            txn_index,
            max_timestamp,
            offset_of_max_timestamp,
            rolling_base_timestamp: None,
            created_ms,
            bytes_since_index_entry: 0,
        }))
    }

    /// Scans the whole log file batch by batch (frame, CRC, fields, offsets
    /// continuing from the segment's base), rebuilding both indexes. At the first
    /// torn or corrupt batch the file is cut to the end of the last valid one.
    pub(crate) fn recover(&mut self, config: &LogConfig) -> io::Result<Option<Damage>> {
        let file_len = self.log.metadata()?.len();
        self.index.file_mut().reset(config.segment_index_bytes)?;
        self.time_index
            .file_mut()
            .reset(config.segment_index_bytes)?;
        self.size = 0;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.offset_of_max_timestamp = self.base_offset;
        self.rolling_base_timestamp = None;
        self.bytes_since_index_entry = 0;

        let log = Arc::clone(&self.log);
        let mut scanner = Scanner::new(&log, 0, file_len, RECOVERY_SCAN_CHUNK);
        let mut reason = None;
        while let Some(item) = scanner.next_batch(true)? {
            let (pos, header) = match item {
                Ok(v) => v,
                Err(e) => {
                    reason = Some(e.to_string());
                    break;
                }
            };
            if header.base_offset != self.next_offset {
                reason = Some(format!(
                    "batch at byte {pos} has baseOffset {}, expected {}",
                    header.base_offset, self.next_offset
                ));
                break;
            }
            let end = pos + header.total_len() as u64;
            if header.last_offset() - self.base_offset > i64::from(u32::MAX)
                || end > u64::from(u32::MAX)
            {
                reason = Some(format!(
                    "batch at byte {pos} does not fit the segment's 32-bit relative offsets or positions"
                ));
                break;
            }
            self.track(pos, &header, config);
        }
        let Some(reason) = reason else {
            return Ok(None);
        };
        self.log.set_len(self.size)?;
        self.log.sync_all()?;
        Ok(Some(Damage {
            position: self.size,
            dropped: file_len - self.size,
            reason,
        }))
    }

    /// Bookkeeping for a batch now stored at `pos`: indexes (one entry once more
    /// than `index_interval_bytes` were written since the last, Kafka's rule),
    /// largest timestamp, size and next offset.
    fn track(&mut self, pos: u64, header: &BatchHeader, config: &LogConfig) {
        if header.max_timestamp > self.max_timestamp {
            self.max_timestamp = header.max_timestamp;
            self.offset_of_max_timestamp = header.base_offset;
        }
        if pos == 0 && header.max_timestamp >= 0 {
            self.rolling_base_timestamp = Some(header.max_timestamp);
        }
        if self.bytes_since_index_entry > config.index_interval_bytes {
            self.index.append(header.base_offset, pos);
            self.time_index
                .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
            self.bytes_since_index_entry = 0;
        }
        let len = header.total_len() as u64;
        self.bytes_since_index_entry += len;
        self.size = pos + len;
        self.next_offset = header.next_offset();
    }

    /// Writes validated batches exactly as the producer sent them, with only
    /// baseOffset (from `base_offset` on) and partitionLeaderEpoch replaced,
    /// without copying them: each batch goes out as its 16 rewritten leading
    /// bytes plus the untouched rest, in one vectored write. Returns the
    /// offset after the last batch.
    pub(crate) fn append_stamped(
        &mut self,
        data: &[u8],
        base_offset: i64,
        leader_epoch: i32,
        config: &LogConfig,
    ) -> io::Result<i64> {
        // baseOffset (8) + batchLength (4) + partitionLeaderEpoch (4).
        const PREFIX: usize = 16;
        let mut headers = Vec::new();
        let mut prefixes: Vec<[u8; PREFIX]> = Vec::new();
        let mut next = base_offset;
        for item in batch::headers(data) {
            let (pos, mut header) = item.map_err(invalid_data)?;
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            let mut prefix = [0u8; PREFIX];
            prefix[0..8].copy_from_slice(&next.to_be_bytes());
            prefix[8..12].copy_from_slice(&header.batch_length.to_be_bytes());
            prefix[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
            prefixes.push(prefix);
            next = header.next_offset();
            headers.push((pos, header));
        }
        let mut slices = Vec::with_capacity(headers.len() * 2);
        for ((pos, header), prefix) in headers.iter().zip(&prefixes) {
            let rest = data
                .get(pos + PREFIX..pos + header.total_len())
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "batch shorter than its header")
                })?;
            slices.push(io::IoSlice::new(prefix));
            slices.push(io::IoSlice::new(rest));
        }
        write_all_vectored_at(&self.log, &mut slices, self.size)?;
        let start = self.size;
        for (pos, header) in &headers {
            self.track(start + *pos as u64, header, config);
        }
        Ok(next)
    }

    /// Writes already stamped and validated batches at the end of the log with
    /// one positional write, then indexes them.
    pub(crate) fn append(&mut self, data: &[u8], config: &LogConfig) -> io::Result<()> {
        self.log.write_all_at(data, self.size)?;
        let start = self.size;
        for item in batch::headers(data) {
            let (rel, header) = item.map_err(invalid_data)?;
            self.track(start + rel as u64, &header, config);
        }
        Ok(())
    }

    /// Whether an append of `len` bytes ending at offset `last_offset` with
    /// largest timestamp `max_timestamp` must go to a new segment. An empty
    /// segment always takes the append.
    pub(crate) fn should_roll(
        &self,
        config: &LogConfig,
        len: u64,
        last_offset: i64,
        max_timestamp: i64,
        now_ms: i64,
    ) -> bool {
        if self.size == 0 {
            return false;
        }
        self.size + len > config.segment_bytes
            || self.size + len > u64::from(u32::MAX)
            || last_offset - self.base_offset > i64::from(u32::MAX)
            || self.index.is_full()
            || self.time_index.is_full()
            || self.time_to_roll(config.segment_ms, max_timestamp, now_ms)
    }

    /// Kafka's time-based roll: `segment_ms` elapsed between the first batch's
    /// timestamp and `reference_ts` (the incoming batch's on append, the clock in
    /// retention), or since creation when the first batch had no timestamp.
    pub(crate) fn time_to_roll(&self, segment_ms: i64, reference_ts: i64, now_ms: i64) -> bool {
        if self.size == 0 || segment_ms <= 0 {
            return false;
        }
        let waited = match self.rolling_base_timestamp {
            Some(first) => reference_ts.saturating_sub(first),
            None => now_ms.saturating_sub(self.created_ms),
        };
        waited > segment_ms
    }

    /// The batch containing `offset`, or the first batch after it; `None` if the
    /// segment holds nothing at or after `offset`.
    pub(crate) fn find_batch(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        let start = self.index.lookup(offset).map_or(0, |(_, pos)| pos);
        let mut scanner = Scanner::new(&self.log, start, self.size, HEADER_SCAN_CHUNK);
        while let Some(item) = scanner.next_batch(false)? {
            let (pos, header) = item.map_err(invalid_data)?;
            if header.last_offset() >= offset {
                return Ok(Some((pos, header)));
            }
        }
        Ok(None)
    }

    /// Whole batches from the one containing `offset`, stopping before a batch
    /// whose base offset is `>= max_offset` and at `max_bytes` (the first batch is
    /// always whole). `None` if nothing at or after `offset` is in this segment.
    pub(crate) fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> io::Result<Option<Bytes>> {
        let Some((pos, first)) = self.find_batch(offset)? else {
            return Ok(None);
        };
        if first.base_offset >= max_offset {
            return Ok(Some(Bytes::new()));
        }
        let first_len = first.total_len() as u64;
        let want = (max_bytes as u64).min(self.size - pos).max(first_len) as usize;
        let mut buf = vec![0u8; want];
        let got = read_full_at(&self.log, &mut buf, pos)?;
        if got < want {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "segment ends at {} but the index says {}",
                    pos + got as u64,
                    self.size
                ),
            ));
        }
        let mut end = first_len as usize;
        while let Some(h) = BatchHeader::parse(&buf[end..]) {
            if h.batch_length < batch::MIN_BATCH_LENGTH
                || h.base_offset >= max_offset
                || end + h.total_len() > buf.len()
            {
                break;
            }
            end += h.total_len();
        }
        buf.truncate(end);
        Ok(Some(Bytes::from(buf)))
    }

    /// Reads `len` bytes at `pos` (a whole batch).
    pub(crate) fn read_exact(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        if read_full_at(&self.log, &mut buf, pos)? < len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "batch at byte {pos} runs past the end of {}",
                    self.log_path.display()
                ),
            ));
        }
        Ok(buf)
    }

    /// Calls `f` with the position and header of each batch from the one
    /// containing `from_offset` to the end of the segment; `f` returns false to
    /// stop.
    pub(crate) fn scan_from(
        &self,
        from_offset: i64,
        mut f: impl FnMut(u64, &BatchHeader) -> io::Result<bool>,
    ) -> io::Result<()> {
        let start = self.index.lookup(from_offset).map_or(0, |(_, pos)| pos);
        let mut scanner = Scanner::new(&self.log, start, self.size, HEADER_SCAN_CHUNK);
        while let Some(item) = scanner.next_batch(false)? {
            let (pos, header) = item.map_err(invalid_data)?;
            if header.last_offset() < from_offset {
                continue;
            }
            if !f(pos, &header)? {
                break;
            }
        }
        Ok(())
    }

    /// Cuts the segment before the batch containing `offset` (or the first
    /// batch after it). Returns the bytes dropped. The segment becomes the
    /// active one: its indexes are preallocated again.
    pub(crate) fn truncate_to(&mut self, offset: i64, config: &LogConfig) -> io::Result<u64> {
        self.index.file_mut().resize(config.segment_index_bytes)?;
        self.time_index
            .file_mut()
            .resize(config.segment_index_bytes)?;
        let Some((cut, header)) = self.find_batch(offset)? else {
            self.txn_index.truncate_to(offset)?;
            return Ok(0);
        };
        let new_next = header.base_offset;
        self.txn_index.truncate_to(new_next)?;
        self.log.set_len(cut)?;
        let dropped = self.size - cut;
        self.index.truncate_to(new_next);
        self.time_index.truncate_to(new_next);
        // Every batch up to the last offset-index entry is covered by the time
        // index (both are appended at the same points); rescan only the rest.
        let (mut max_ts, mut max_offset) = self
            .time_index
            .last_entry()
            .unwrap_or((-1, self.base_offset));
        let from = self.index.last_entry().map_or(0, |(_, pos)| pos);
        let mut bytes_since = 0;
        let mut scanner = Scanner::new(&self.log, from, cut, HEADER_SCAN_CHUNK);
        while let Some(item) = scanner.next_batch(false)? {
            let (_, h) = item.map_err(invalid_data)?;
            if h.max_timestamp > max_ts {
                max_ts = h.max_timestamp;
                max_offset = h.base_offset;
            }
            bytes_since += h.total_len() as u64;
        }
        self.size = cut;
        self.next_offset = new_next;
        self.max_timestamp = max_ts;
        self.offset_of_max_timestamp = max_offset;
        self.bytes_since_index_entry = bytes_since;
        if cut == 0 {
            self.rolling_base_timestamp = None;
        }
        self.log.sync_all()?;
        Ok(dropped)
    }

    /// Makes an active segment read-only: records its largest timestamp as the
    /// time index's last entry and trims both indexes to their entries.
    pub(crate) fn finish(&mut self) -> io::Result<()> {
        self.time_index
            .maybe_append(self.max_timestamp, self.offset_of_max_timestamp);
        self.index.file_mut().trim()?;
        self.time_index.file_mut().trim()
    }

    /// The log file, to fdatasync without the partition lock.
    pub(crate) fn log_file(&self) -> Arc<File> {
        Arc::clone(&self.log)
    }

    /// Paths of the index files to sync along with the log for the whole
    /// segment to be durable: both indexes and the `.txnindex` if it exists.
    /// The segment keeps no descriptor for them, so a flusher that does not
    /// hold the partition lock reopens them (see [`sync_path`]).
    pub(crate) fn index_paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![
            self.index.file().path().to_path_buf(),
            self.time_index.file().path().to_path_buf(),
        ];
        paths.extend(self.txn_index_path());
        paths
    }

    /// The aborted-transaction index file, if the segment has one.
    pub(crate) fn txn_index_path(&self) -> Option<PathBuf> {
        self.txn_index.existing_path().map(Path::to_path_buf)
    }

    /// fdatasync of the log, msync of both indexes, fsync of the `.txnindex`.
    pub(crate) fn sync(&self) -> io::Result<()> {
        self.log.sync_data()?;
        self.sync_indexes()
    }

    /// Just the indexes (after a trim of an already flushed segment).
    pub(crate) fn sync_indexes(&self) -> io::Result<()> {
        self.index.file().flush()?;
        self.time_index.file().flush()?;
        self.txn_index.sync()
    }

    /// Records a transaction aborted by a marker in this segment.
    pub(crate) fn append_aborted(&mut self, txn: &AbortedTxn) -> io::Result<()> {
        self.txn_index.append(txn)
    }

    /// Drops the aborted transactions whose marker is at or after `offset`.
    pub(crate) fn truncate_aborted(&mut self, offset: i64) -> io::Result<()> {
        self.txn_index.truncate_to(offset)
    }

    /// fsync of the aborted-transaction index alone.
    pub(crate) fn sync_txn_index(&self) -> io::Result<()> {
        self.txn_index.sync()
    }

    /// See [`TxnIndex::collect`].
    pub(crate) fn collect_aborted(
        &self,
        start_offset: i64,
        upper_bound: i64,
        out: &mut Vec<AbortedTxn>,
    ) -> io::Result<bool> {
        self.txn_index.collect(start_offset, upper_bound, out)
    }

    /// Deletes the segment's files: each is renamed with a `.deleted` suffix
    /// first (as Kafka does, so a crash leaves recognisable leftovers that the
    /// next open removes), then removed. Failures are logged, not returned.
    pub(crate) fn delete(self) {
        let paths = [
            self.log_path.clone(),
            self.index.file().path().to_path_buf(),
            self.time_index.file().path().to_path_buf(),
            self.txn_index.path().to_path_buf(),
        ];
        drop(self);
        for path in paths {
            delete_file(&path);
        }
    }

    pub(crate) fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Largest batch timestamp, -1 if none.
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub(crate) fn offset_of_max_timestamp(&self) -> i64 {
        self.offset_of_max_timestamp
    }

    /// The timestamp retention compares: the largest batch timestamp, or the
    /// log file's modification time when no batch had one (Kafka's rule).
    pub(crate) fn retention_timestamp(&self) -> io::Result<i64> {
        if self.max_timestamp >= 0 {
            Ok(self.max_timestamp)
        } else {
            mtime_ms(&self.log)
        }
    }

    /// Where to start looking for the first record with a timestamp `>= ts`:
    /// the offset of the last time index entry below or at `ts`.
    pub(crate) fn time_lookup(&self, ts: i64) -> i64 {
        self.time_index
            .lookup(ts)
            .map_or(self.base_offset, |(_, offset)| offset)
    }

    #[cfg(test)]
    pub(crate) fn index_entries(&self) -> (usize, usize) {
        (self.index.len(), self.time_index.len())
    }
}

/// Renames `path` to `path.deleted`, then removes it; tolerant of failure.
pub(crate) fn delete_file(path: &Path) {
    let mut deleted = path.as_os_str().to_owned();
    deleted.push(DELETED_SUFFIX);
    let deleted = PathBuf::from(deleted);
    let target = match fs::rename(path, &deleted) {
        Ok(()) => deleted,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not rename segment file before deleting it");
            path.to_path_buf()
        }
    };
    if let Err(e) = fs::remove_file(&target) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(path = %target.display(), error = %e, "could not delete segment file; it will be removed on the next open");
        }
    }
}

/// fdatasync of the file at `path`, reopened for it: how index files, which
/// segments keep no descriptor for, are synced without the partition lock.
/// Linux writes back every dirty page of the file, mapped ones included,
/// whichever descriptor the fsync comes through, and reports a writeback
/// error that no one has seen yet to a descriptor opened after it (since
/// Linux 4.16). A missing file belonged to a segment deleted since the path
/// was taken (retention, truncation, a deleted partition): there is nothing
/// left to make durable, and a truncation also voids the flush (see
/// `Log::mark_flushed`).
pub(crate) fn sync_path(path: &Path) -> io::Result<()> {
    match File::open(path) {
        Ok(f) => f.sync_data(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Deletes the files of the segment at `base_offset` without opening it.
pub(crate) fn delete_segment_files(dir: &Path, base_offset: i64) {
    for ext in [LOG_EXT, INDEX_EXT, TIME_INDEX_EXT, TXN_INDEX_EXT] {
        delete_file(&file_path(dir, base_offset, ext));
    }
}

/// `pwritev` until every slice is written (the file cursor is not used, so
/// concurrent positional reads are unaffected). At most `IOV_MAX` slices go
/// to one call.
fn write_all_vectored_at(
    file: &File,
    mut slices: &mut [io::IoSlice<'_>],
    mut at: u64,
) -> io::Result<()> {
    const IOV_MAX: usize = 1024;
    use std::os::fd::AsRawFd;
    while !slices.is_empty() {
        let n = slices.len().min(IOV_MAX);
        let offset = libc::off_t::try_from(at)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset too large"))?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, the slices
        // outlive the call, and `n` is within their length.
        #[allow(unsafe_code)]
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                n as libc::c_int,
                offset,
            )
        };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        at += written as u64;
        io::IoSlice::advance_slices(&mut slices, written as usize);
    }
    Ok(())
}
