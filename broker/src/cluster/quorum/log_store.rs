//! The Raft log, vote and committed index of the metadata quorum.
//!
//! `metadata.log` is append-only. Each record is
//! `length: u32 BE | crc32c(payload): u32 BE | payload`, the payload being
//! the JSON of a [`RecordIn`]: a log entry, or (first, after a purge) the
//! id of the last purged entry. Appends are fsynced before openraft is told
//! they are durable; truncation and purging rewrite the file through a
//! rename, which is rare (conflicts, and once per snapshot). A torn or
//! corrupt tail found at start-up is cut off: it was never acknowledged,
//! since only fsynced appends are.
//!
//! `vote.json` is replaced atomically and durably before `save_vote`
//! returns. `committed.json` is replaced atomically but without syncing the
//! directory: losing the newest value only means re-applying less at start,
//! the leader tells the rest again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    ErrorSubject, ErrorVerb, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
};
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::fsutil;
use super::{Entry, LogId, NodeId, QuorumError, TypeConfig};

pub(crate) const LOG_FILE: &str = "metadata.log";
const VOTE_FILE: &str = "vote.json";
const COMMITTED_FILE: &str = "committed.json";

/// A record longer than this is corruption, not data: checked before
/// allocating for it.
const MAX_RECORD: usize = 64 << 20;
const HEADER: usize = 8;

/// How long a purge waits for the snapshot covering it to be on disk.
const PURGE_WAIT: Duration = Duration::from_secs(60);

#[derive(Serialize)]
enum RecordOut<'a> {
    Purged(&'a LogId),
    Entry(&'a Entry),
}

#[derive(Deserialize)]
enum RecordIn {
    Purged(LogId),
    Entry(Entry),
}

fn encode(out: &mut Vec<u8>, record: &RecordOut<'_>) -> io::Result<()> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    serde_json::to_writer(&mut *out, record)?;
    let payload = &out[start + HEADER..];
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|n| (*n as usize) <= MAX_RECORD)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a metadata log record of {} bytes is too large",
                    payload.len()
                ),
            )
        })?;
    let crc = crc32c::crc32c(payload);
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// What a log file holds, up to the first bad record.
#[derive(Default)]
pub(crate) struct Parsed {
    pub entries: BTreeMap<u64, Entry>,
    pub last_purged: Option<LogId>,
    /// Bytes of good records; the rest is a torn or corrupt tail.
    pub valid_len: usize,
    /// Why parsing stopped before the end.
    pub problem: Option<String>,
}

pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < HEADER {
            parsed.problem = Some(format!("a torn record header of {} bytes", rest.len()));
            break;
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if len > MAX_RECORD {
            parsed.problem = Some(format!("a record length of {len} bytes"));
            break;
        }
        let Some(payload) = rest.get(HEADER..HEADER + len) else {
            parsed.problem = Some(format!(
                "a torn record: {len} bytes announced, {} present",
                rest.len() - HEADER
            ));
            break;
        };
        if crc32c::crc32c(payload) != crc {
            parsed.problem = Some("a record failing its checksum".to_string());
            break;
        }
        match serde_json::from_slice::<RecordIn>(payload) {
            Ok(RecordIn::Purged(id)) => {
                if parsed.last_purged.is_none_or(|p| p < id) {
                    parsed.entries = parsed.entries.split_off(&(id.index + 1));
                    parsed.last_purged = Some(id);
                }
            }
            Ok(RecordIn::Entry(entry)) => {
                let expected = match parsed.entries.last_key_value() {
                    Some((index, _)) => index + 1,
                    None => parsed.last_purged.map_or(0, |p| p.index + 1),
                };
                if entry.log_id.index != expected {
                    parsed.problem = Some(format!(
                        "entry {} where entry {expected} was expected",
                        entry.log_id.index
                    ));
                    break;
                }
                parsed.entries.insert(entry.log_id.index, entry);
            }
            Err(e) => {
                parsed.problem = Some(format!("an unreadable record: {e}"));
                break;
            }
        }
        offset += HEADER + len;
    }
    parsed.valid_len = offset;
    parsed
}

struct Mem {
    entries: BTreeMap<u64, Entry>,
    last_purged: Option<LogId>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId>,
}

struct LogFile {
    file: File,
    /// Set by a failed write or fsync: the file's state is unknown, so the
    /// log refuses further writes instead of pretending.
    failed: Option<String>,
}

struct Shared {
    dir: PathBuf,
    mem: RwLock<Mem>,
    file: Mutex<LogFile>,
    /// The last log id covered by the snapshot on disk, when purging must
    /// wait for it.
    snapshot_covered: Option<watch::Receiver<Option<LogId>>>,
}

/// The log store openraft writes through (its `&mut self` methods are
/// called one at a time, which serialises the writes).
pub(crate) struct LogStore {
    shared: Arc<Shared>,
}

/// Reads entries for the replication streams.
pub(crate) struct LogReader {
    shared: Arc<Shared>,
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, QuorumError> {
    let bytes = fsutil::read_if_exists(path).map_err(|source| QuorumError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    bytes
        .map(|b| {
            serde_json::from_slice(&b).map_err(|e| QuorumError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "{e}; it is replaced atomically, so this is damage from outside: \
                     remove the directory to let this node copy the log from the quorum again"
                ),
            })
        })
        .transpose()
}

fn remove_stale_temp(path: &Path) -> io::Result<()> {
    match std::fs::remove_file(fsutil::temp_path(path)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

impl LogStore {
    /// Opens (or creates) the log in `dir`, cutting off a torn tail. With
    /// `snapshot_covered`, a purge waits until the snapshot on disk covers
    /// what it removes: a crash while a received snapshot is being
    /// installed must not leave a log purged past the snapshot.
    pub(crate) fn open(
        dir: &Path,
        snapshot_covered: Option<watch::Receiver<Option<LogId>>>,
    ) -> Result<LogStore, QuorumError> {
        let io_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| QuorumError::Io { path, source }
        };
        let vote_path = dir.join(VOTE_FILE);
        let committed_path = dir.join(COMMITTED_FILE);
        let log_path = dir.join(LOG_FILE);
        for path in [&vote_path, &committed_path, &log_path] {
            remove_stale_temp(path).map_err(io_err(path))?;
        }
        let vote: Option<Vote<NodeId>> = read_json(&vote_path)?;
        let mut committed: Option<LogId> = read_json::<Option<LogId>>(&committed_path)?.flatten();

        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(io_err(&log_path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_err(&log_path))?;
        let parsed = parse(&bytes);
        if let Some(problem) = &parsed.problem {
            tracing::warn!(
                path = %log_path.display(),
                offset = parsed.valid_len,
                dropped_bytes = bytes.len() - parsed.valid_len,
                "metadata log ends with {problem}; truncating the tail (it was never acknowledged)"
            );
            file.set_len(parsed.valid_len as u64)
                .and_then(|()| file.sync_all())
                .map_err(io_err(&log_path))?;
        }
        fsutil::sync_dir(dir).map_err(io_err(dir))?;

        let last_log = parsed
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(parsed.last_purged);
        if committed.is_some_and(|c| last_log.is_none_or(|l| c.index > l.index)) {
            // Only possible when the log lost entries it had fsynced
            // (damage from outside): re-apply what is still here, the
            // leader sends the rest.
            tracing::warn!(
                committed = ?committed,
                last_log = ?last_log,
                "the committed index is past the end of the metadata log"
            );
            committed = last_log;
        }
        Ok(LogStore {
            shared: Arc::new(Shared {
                dir: dir.to_path_buf(),
                mem: RwLock::new(Mem {
                    entries: parsed.entries,
                    last_purged: parsed.last_purged,
                    vote,
                    committed,
                }),
                file: Mutex::new(LogFile { file, failed: None }),
                snapshot_covered,
            }),
        })
    }
}

impl Shared {
    fn append_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let mut log = self.file.lock();
        if let Some(reason) = &log.failed {
            return Err(refused(reason));
        }
        let res = log
            .file
            .write_all(bytes)
            .and_then(|()| log.file.sync_data());
        if let Err(e) = &res {
            log.failed = Some(e.to_string());
        }
        res
    }

    /// Replaces the whole file with `last_purged` and `entries`.
    fn rewrite(&self, last_purged: Option<LogId>, entries: &[Entry]) -> io::Result<()> {
        let mut log = self.file.lock();
        if let Some(reason) = &log.failed {
            return Err(refused(reason));
        }
        let mut bytes = Vec::new();
        if let Some(id) = &last_purged {
            encode(&mut bytes, &RecordOut::Purged(id))?;
        }
        for entry in entries {
            encode(&mut bytes, &RecordOut::Entry(entry))?;
        }
        let path = self.dir.join(LOG_FILE);
        let res = fsutil::replace(&path, &bytes, true)
            .and_then(|()| OpenOptions::new().read(true).append(true).open(&path));
        match res {
            Ok(file) => {
                log.file = file;
                Ok(())
            }
            Err(e) => {
                log.failed = Some(e.to_string());
                Err(e)
            }
        }
    }

    fn entries<RB: RangeBounds<u64>>(&self, range: RB) -> Vec<Entry> {
        let start = match range.start_bound() {
            Bound::Included(s) => *s,
            Bound::Excluded(s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(e) => e.checked_add(1),
            Bound::Excluded(e) => Some(*e),
            Bound::Unbounded => None,
        };
        if end.is_some_and(|e| e <= start) {
            return Vec::new();
        }
        let mem = self.mem.read();
        match end {
            Some(end) => mem
                .entries
                .range(start..end)
                .map(|(_, e)| e.clone())
                .collect(),
            None => mem.entries.range(start..).map(|(_, e)| e.clone()).collect(),
        }
    }
}

fn refused(reason: &str) -> io::Error {
    io::Error::other(format!(
        "the metadata log refuses writes after an earlier failure ({reason}); restart the broker"
    ))
}

fn log_write_error(e: io::Error) -> StorageError<NodeId> {
    StorageError::from_io_error(ErrorSubject::Logs, ErrorVerb::Write, e)
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(self.shared.entries(range))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(self.shared.entries(range))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let mem = self.shared.mem.read();
        let last_purged_log_id = mem.last_purged;
        let last_log_id = mem
            .entries
            .last_key_value()
            .map(|(_, e)| e.log_id)
            .or(last_purged_log_id);
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            shared: self.shared.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        let to_err = |e| StorageError::from_io_error(ErrorSubject::Vote, ErrorVerb::Write, e);
        let bytes = serde_json::to_vec(vote).map_err(|e| to_err(e.into()))?;
        let path = self.shared.dir.join(VOTE_FILE);
        fsutil::blocking(move || fsutil::replace(&path, &bytes, true))
            .await
            .map_err(to_err)?;
        self.shared.mem.write().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.shared.mem.read().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId>,
    ) -> Result<(), StorageError<NodeId>> {
        let to_err = |e| StorageError::from_io_error(ErrorSubject::Store, ErrorVerb::Write, e);
        let bytes = serde_json::to_vec(&committed).map_err(|e| to_err(e.into()))?;
        let path = self.shared.dir.join(COMMITTED_FILE);
        fsutil::blocking(move || fsutil::replace(&path, &bytes, false))
            .await
            .map_err(to_err)?;
        self.shared.mem.write().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.shared.mem.read().committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut bytes = Vec::new();
        for entry in &entries {
            encode(&mut bytes, &RecordOut::Entry(entry)).map_err(log_write_error)?;
        }
        let shared = self.shared.clone();
        let written = fsutil::blocking(move || shared.append_bytes(&bytes)).await;
        match written {
            Ok(()) => {
                let mut mem = self.shared.mem.write();
                for entry in entries {
                    mem.entries.insert(entry.log_id.index, entry);
                }
                drop(mem);
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(io::Error::new(e.kind(), e.to_string())));
                Err(log_write_error(e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let (last_purged, keep) = {
            let mem = self.shared.mem.read();
            let keep: Vec<Entry> = mem
                .entries
                .range(..log_id.index)
                .map(|(_, e)| e.clone())
                .collect();
            (mem.last_purged, keep)
        };
        let shared = self.shared.clone();
        fsutil::blocking(move || shared.rewrite(last_purged, &keep))
            .await
            .map_err(log_write_error)?;
        self.shared
            .mem
            .write()
            .entries
            .retain(|index, _| *index < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        if let Some(mut covered) = self.shared.snapshot_covered.clone() {
            let waited =
                tokio::time::timeout(PURGE_WAIT, covered.wait_for(|c| *c >= Some(log_id))).await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(
                    StorageIOError::write_logs(openraft::AnyError::error(format!(
                    "cannot purge the metadata log up to {log_id}: no snapshot on disk covers it"
                )))
                    .into(),
                );
            }
        }
        let (last_purged, keep) = {
            let mem = self.shared.mem.read();
            let last_purged = mem.last_purged.max(Some(log_id));
            let keep: Vec<Entry> = mem
                .entries
                .range(log_id.index + 1..)
                .map(|(_, e)| e.clone())
                .collect();
            (last_purged, keep)
        };
        let shared = self.shared.clone();
        fsutil::blocking(move || shared.rewrite(last_purged, &keep))
            .await
            .map_err(log_write_error)?;
        let mut mem = self.shared.mem.write();
        mem.entries = mem.entries.split_off(&(log_id.index + 1));
        mem.last_purged = last_purged;
        Ok(())
    }
}
