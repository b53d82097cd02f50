//! One replica of a partition: its commit log, its high watermark, and the
//! fetchers waiting for data to arrive.
//!
//! The log sits behind a mutex held only for in-memory bookkeeping and one
//! `write`/`pread` call; fsync happens outside it (see [`crate::flusher`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::commitlog::{self, AppendInfo, Log, LogConfig};

/// A partition replica hosted by this broker.
pub struct Partition {
    topic: Arc<str>,
    index: i32,
    dir: PathBuf,
    log: Mutex<Log>,
    /// Offset below which records are visible to consumers. On a single node
    /// every appended record is immediately committed, so this is the log end.
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    /// Fetch requests parked until data arrives (see `register_waiter`).
    waiters: Mutex<Vec<Weak<Notify>>>,
}

/// What a fetch of one partition returns.
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

impl Partition {
    /// Opens (recovering if needed) the log of `topic`-`index` under `data_dir`.
    pub fn open(
        data_dir: &Path,
        topic: Arc<str>,
        index: i32,
        config: LogConfig,
    ) -> Result<Partition, commitlog::Error> {
        let dir = data_dir.join(format!("{topic}-{index}"));
        let log = Log::open(&dir, config)?;
        let high_watermark = AtomicI64::new(log.log_end_offset());
        let log_start_offset = AtomicI64::new(log.log_start_offset());
        Ok(Partition {
            topic,
            index,
            dir,
            log: Mutex::new(log),
            high_watermark,
            log_start_offset,
            waiters: Mutex::new(Vec::new()),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    pub fn index(&self) -> i32 {
        self.index
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset.load(Ordering::Acquire)
    }

    /// Validates and appends a producer's record set, then wakes fetchers.
    /// With `log_append_time` every batch gets the broker's clock as its
    /// timestamp.
    pub fn append(
        &self,
        records: &[u8],
        now_ms: i64,
        log_append_time: bool,
    ) -> Result<AppendInfo, commitlog::Error> {
        let info = {
            let mut log = self.log.lock();
            let info = log.append_with(records, 0, now_ms, log_append_time)?;
            self.high_watermark
                .store(log.log_end_offset(), Ordering::Release);
            info
        };
        self.wake_waiters();
        Ok(info)
    }

    /// Reads whole batches from `offset`, never past the high watermark.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadResult, commitlog::Error> {
        let log = self.log.lock();
        let high_watermark = self.high_watermark();
        let records = log.read(offset, max_bytes, high_watermark)?;
        Ok(ReadResult {
            records,
            high_watermark,
            log_start_offset: log.log_start_offset(),
        })
    }

    /// Runs `f` with the log locked, for the less frequent operations
    /// (offset lookups, retention, flush bookkeeping) that need the whole log.
    pub fn with_log<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        let mut log = self.log.lock();
        let r = f(&mut log);
        self.log_start_offset
            .store(log.log_start_offset(), Ordering::Release);
        self.high_watermark
            .store(log.log_end_offset(), Ordering::Release);
        r
    }

    /// Wakes `waiter` at the next append to this partition. Only a weak
    /// reference is kept, so fetches that ended leave nothing behind.
    pub fn register_waiter(&self, waiter: &Arc<Notify>) {
        let mut waiters = self.waiters.lock();
        if waiters.len() >= 64 {
            waiters.retain(|w| w.strong_count() > 0);
        }
        waiters.push(Arc::downgrade(waiter));
    }

    fn wake_waiters(&self) {
        let waiters = std::mem::take(&mut *self.waiters.lock());
        for w in waiters.iter().filter_map(Weak::upgrade) {
            w.notify_one();
        }
    }

    /// Flushes and closes the log (clean shutdown). When another task still
    /// holds the partition, the log is flushed and checkpointed in place.
    pub fn close(self: Arc<Self>) -> Result<(), commitlog::Error> {
        match Arc::try_unwrap(self) {
            Ok(p) => p.log.into_inner().close(),
            Err(p) => p.with_log(|log| {
                log.flush()?;
                log.checkpoint()
            }),
        }
    }

    /// Removes the partition's files (topic deletion). The directory is first
    /// renamed aside so that a crash midway leaves nothing that start-up would
    /// mistake for a live partition.
    pub fn delete(&self) -> std::io::Result<()> {
        let _log = self.log.lock();
        let aside = self.dir.with_file_name(format!(
            "{}-{}.{}-delete",
            self.topic,
            self.index,
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::rename(&self.dir, &aside)?;
        std::fs::remove_dir_all(&aside)
    }
}
