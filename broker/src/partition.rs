//! One replica of a partition: its commit log, its role (leader, follower or
//! offline) as the metadata image last said, the high watermark, and the
//! fetchers and producers waiting on it.
//!
//! The log sits behind a mutex held only for in-memory bookkeeping and one
//! `write`/`pread` call; fsync happens outside it (see [`crate::flusher`]).
//! The replica state has its own mutex; when both are needed the replica
//! state is locked first.
//!
//! The high watermark is the offset below which every in-sync replica has the
//! records. On the leader it is the lowest log end offset in the ISR (the
//! leader's own counts at once; a follower's is the offset it fetches from,
//! which it only moves past records it has appended, and fsynced under the
//! default durability policy). It never moves backwards on a leader, and a
//! follower learns it from the leader's fetch responses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{watch, Notify};

use crate::cluster::image::PartitionState;
use crate::commitlog::{self, AppendInfo, Log, LogConfig};

/// What this broker is for the partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    /// Not yet told, or no leader exists.
    Offline,
}

#[derive(Debug, Clone, Copy)]
struct FollowerProgress {
    /// The follower's log end offset (its last fetch offset); -1 until it
    /// fetched in this leader epoch.
    leo: i64,
    last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end offset at the follower's last fetch.
    leader_leo_at_last_fetch: i64,
}

/// The replica's view of the partition's replication state.
#[derive(Debug, Clone)]
pub struct ReplicaState {
    pub role: Role,
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    followers: HashMap<i32, FollowerProgress>,
    /// An ISR change is on its way to the controller.
    pub isr_change_pending: bool,
    /// After a refused ISR change, none is asked again before this time
    /// (ms) unless new partition state arrives first: the refusal means this
    /// replica's state is behind (or ahead of) the controller's, and asking
    /// again at once would only be refused again.
    isr_retry_at_ms: i64,
}

/// How long a leader waits after a refused ISR change before asking again
/// on the same partition state.
const ISR_RETRY_BACKOFF_MS: i64 = 200;

/// What acks=all producers wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    high_watermark: i64,
    leader_epoch: i32,
    leading: bool,
}

/// Why a leader refused or could not complete an append.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("this broker is not the leader of the partition")]
    NotLeader,
    #[error("the ISR has {isr} replicas, fewer than min.insync.replicas={min}")]
    NotEnoughReplicas { isr: usize, min: i32 },
    #[error("the ISR shrank to {isr} replicas, below min.insync.replicas={min}, after the append")]
    NotEnoughReplicasAfterAppend { isr: usize, min: i32 },
    #[error("the records were not replicated to the ISR within {0} ms")]
    Timeout(u64),
    #[error(transparent)]
    Log(#[from] commitlog::Error),
}

/// Which offsets a read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// Consumers: committed records only.
    HighWatermark,
    /// Followers and the group coordinator's load: everything in the log.
    LogEnd,
    /// `read_committed` consumers: below the last stable offset only, so no
    /// open transaction's records.
    LastStable,
}

/// A partition replica hosted by this broker.
pub struct Partition {
    topic: Arc<str>,
    index: i32,
    dir: PathBuf,
    log: Mutex<Log>,
    high_watermark: AtomicI64,
    log_start_offset: AtomicI64,
    log_end_offset: AtomicI64,
    replica: Mutex<ReplicaState>,
    progress: watch::Sender<Progress>,
    /// Fetch requests parked until data arrives (see `register_waiter`).
    waiters: Mutex<Vec<Weak<Notify>>>,
}

/// What a fetch of one partition returns.
pub struct ReadResult {
    pub records: Bytes,
    pub high_watermark: i64,
    /// Below it no transaction is open (at most the high watermark).
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub log_end_offset: i64,
}

/// A follower's fetch as the leader saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowerFetch {
    Ok,
    /// The follower has caught up and may join the ISR.
    MayJoinIsr,
}

/// A requested ISR change: the new ISR and the epochs it is based on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub isr: Vec<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

impl Partition {
    /// Opens (recovering if needed) the log of `topic`-`index` under `data_dir`.
    /// The replica starts offline until the metadata image gives it a role.
    pub fn open(
        data_dir: &Path,
        topic: Arc<str>,
        index: i32,
        config: LogConfig,
    ) -> Result<Partition, commitlog::Error> {
        let dir = data_dir.join(format!("{topic}-{index}"));
        let log = Log::open(&dir, config)?;
        let start = log.log_start_offset();
        let end = log.log_end_offset();
        let (progress, _) = watch::channel(Progress {
            high_watermark: start,
            leader_epoch: -1,
            leading: false,
        });
        Ok(Partition {
            topic,
            index,
            dir,
            log: Mutex::new(log),
            high_watermark: AtomicI64::new(start),
            log_start_offset: AtomicI64::new(start),
            log_end_offset: AtomicI64::new(end),
            replica: Mutex::new(ReplicaState {
                role: Role::Offline,
                leader: -1,
                leader_epoch: -1,
                partition_epoch: -1,
                replicas: Vec::new(),
                isr: Vec::new(),
                followers: HashMap::new(),
                isr_change_pending: false,
                isr_retry_at_ms: 0,
            }),
            progress,
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

    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset.load(Ordering::Acquire)
    }

    /// A copy of the replication state.
    pub fn replica_state(&self) -> ReplicaState {
        self.replica.lock().clone()
    }

    pub fn is_leader(&self) -> bool {
        self.replica.lock().role == Role::Leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.replica.lock().leader_epoch
    }

    /// Takes the leader role described by `state` (idempotent for the same
    /// leader epoch: then only the ISR and replicas are refreshed).
    pub fn become_leader(&self, state: &PartitionState, now_ms: i64) {
        let mut r = self.replica.lock();
        let new_term = r.role != Role::Leader || r.leader_epoch != state.leader_epoch;
        if !new_term && state.partition_epoch < r.partition_epoch {
            return;
        }
        if new_term || state.partition_epoch != r.partition_epoch {
            r.isr_retry_at_ms = 0;
        }
        r.role = Role::Leader;
        r.leader = state.leader;
        r.leader_epoch = state.leader_epoch;
        r.partition_epoch = state.partition_epoch;
        r.replicas = state.replicas.clone();
        r.isr = state.isr.clone();
        r.isr_change_pending = false;
        if new_term {
            let leo = self.log_end_offset();
            r.followers = state
                .replicas
                .iter()
                .filter(|id| **id != state.leader)
                .map(|id| {
                    (
                        *id,
                        FollowerProgress {
                            leo: -1,
                            // A full lag period of grace before anyone is
                            // dropped from the ISR.
                            last_caught_up_ms: now_ms,
                            last_fetch_ms: now_ms,
                            leader_leo_at_last_fetch: leo,
                        },
                    )
                })
                .collect();
            tracing::info!(topic = %self.topic, partition = self.index, epoch = state.leader_epoch, isr = ?state.isr, "became leader");
        } else {
            let leo = self.log_end_offset();
            for id in &state.replicas {
                if *id != state.leader {
                    r.followers.entry(*id).or_insert(FollowerProgress {
                        leo: -1,
                        last_caught_up_ms: now_ms,
                        last_fetch_ms: now_ms,
                        leader_leo_at_last_fetch: leo,
                    });
                }
            }
            let replicas = state.replicas.clone();
            r.followers.retain(|id, _| replicas.contains(id));
        }
        self.maybe_advance_hw(&mut r);
        self.publish(&r);
    }

    /// Takes the follower role. Returns true when the leader or its epoch
    /// changed, i.e. the follower must reconcile its log with the new leader
    /// before fetching.
    pub fn become_follower(&self, state: &PartitionState) -> bool {
        let mut r = self.replica.lock();
        let changed = r.role != Role::Follower
            || r.leader_epoch != state.leader_epoch
            || r.leader != state.leader;
        r.role = if state.leader < 0 {
            Role::Offline
        } else {
            Role::Follower
        };
        r.leader = state.leader;
        r.leader_epoch = state.leader_epoch;
        r.partition_epoch = state.partition_epoch;
        r.replicas = state.replicas.clone();
        r.isr = state.isr.clone();
        r.followers.clear();
        r.isr_change_pending = false;
        r.isr_retry_at_ms = 0;
        if changed {
            tracing::info!(topic = %self.topic, partition = self.index, leader = state.leader, epoch = state.leader_epoch, "became follower");
        }
        self.publish(&r);
        changed
    }

    fn publish(&self, r: &ReplicaState) {
        let p = Progress {
            high_watermark: self.high_watermark(),
            leader_epoch: r.leader_epoch,
            leading: r.role == Role::Leader,
        };
        self.progress.send_if_modified(|old| {
            let changed = *old != p;
            *old = p;
            changed
        });
    }

    /// Leader only: the high watermark becomes the lowest log end offset in
    /// the ISR, if that is higher. Followers that have not fetched in this
    /// epoch hold it where it is.
    fn maybe_advance_hw(&self, r: &mut ReplicaState) {
        if r.role != Role::Leader {
            return;
        }
        let mut low = self.log_end_offset();
        for id in &r.isr {
            if *id == r.leader {
                continue;
            }
            match r.followers.get(id) {
                Some(f) if f.leo >= 0 => low = low.min(f.leo),
                _ => return,
            }
        }
        if low > self.high_watermark() {
            self.high_watermark.store(low, Ordering::Release);
            self.publish(r);
            self.wake_waiters();
        }
    }

    /// Validates and appends a producer's record set as the leader, stamping
    /// the leader epoch; with `log_append_time` every batch gets the broker's
    /// clock. `acks == -1` is refused while the ISR is smaller than
    /// `min_insync`.
    pub fn append_as_leader(
        &self,
        records: &[u8],
        now_ms: i64,
        log_append_time: bool,
        acks: i16,
        min_insync: i32,
    ) -> Result<(AppendInfo, i32), AppendError> {
        self.append_leader_with(acks, min_insync, |log, epoch| {
            log.append_with(records, epoch, now_ms, log_append_time)
        })
    }

    /// A leader append done by `append` on the locked log in the current
    /// leader epoch.
    fn append_leader_with(
        &self,
        acks: i16,
        min_insync: i32,
        append: impl FnOnce(&mut Log, i32) -> Result<AppendInfo, commitlog::Error>,
    ) -> Result<(AppendInfo, i32), AppendError> {
        let mut r = self.replica.lock();
        if r.role != Role::Leader {
            return Err(AppendError::NotLeader);
        }
        if acks == -1 && (r.isr.len() as i64) < i64::from(min_insync) {
            return Err(AppendError::NotEnoughReplicas {
                isr: r.isr.len(),
                min: min_insync,
            });
        }
        let info = {
            let mut log = self.log.lock();
            let info = append(&mut log, r.leader_epoch)?;
            self.log_end_offset
                .store(log.log_end_offset(), Ordering::Release);
            info
        };
        let epoch = r.leader_epoch;
        self.maybe_advance_hw(&mut r);
        drop(r);
        self.wake_waiters();
        Ok((info, epoch))
    }

    /// The last stable offset: the high watermark, or the first offset of
    /// the oldest transaction still open (or whose marker is not yet
    /// replicated), if lower.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.log.lock().last_stable_offset(hw)
    }

    /// Appends batches a coordinator of this broker wrote (transaction
    /// markers, offsets committed in a transaction) as the leader: no
    /// sequence checks, and the ISR must hold `min_insync` replicas.
    pub fn append_from_coordinator(
        &self,
        records: &[u8],
        now_ms: i64,
        min_insync: i32,
    ) -> Result<(AppendInfo, i32), AppendError> {
        self.append_leader_with(-1, min_insync, |log, epoch| {
            log.append_from_coordinator(records, epoch, now_ms)
        })
    }

    /// Appends batches fetched from the leader, as they are.
    pub fn append_as_follower(&self, records: &[u8]) -> Result<AppendInfo, commitlog::Error> {
        let mut log = self.log.lock();
        let info = log.append_replicated(records)?;
        self.log_end_offset
            .store(log.log_end_offset(), Ordering::Release);
        Ok(info)
    }

    /// Follower: the leader's high watermark, capped at what this replica has.
    pub fn set_follower_high_watermark(&self, leader_hw: i64) {
        let hw = leader_hw.min(self.log_end_offset());
        self.high_watermark.store(hw, Ordering::Release);
    }

    /// Waits until the high watermark reaches `end_offset` in leader epoch
    /// `epoch`. Fails when leadership moves meanwhile (the records may be
    /// truncated by the new leader) or after `timeout`.
    pub fn wait_replicated(
        &self,
        end_offset: i64,
        epoch: i32,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<(), AppendError>> + Send + 'static {
        let mut rx = self.progress.subscribe();
        async move {
            let waited = tokio::time::timeout(
                timeout,
                rx.wait_for(|p| {
                    p.high_watermark >= end_offset || p.leader_epoch != epoch || !p.leading
                }),
            )
            .await;
            match waited {
                Err(_) => Err(AppendError::Timeout(
                    u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
                )),
                Ok(Err(_)) => Err(AppendError::NotLeader),
                Ok(Ok(p)) => {
                    if p.high_watermark >= end_offset && p.leader_epoch == epoch && p.leading {
                        Ok(())
                    } else {
                        Err(AppendError::NotLeader)
                    }
                }
            }
        }
    }

    /// Current ISR size (for NOT_ENOUGH_REPLICAS_AFTER_APPEND).
    pub fn isr_len(&self) -> usize {
        self.replica.lock().isr.len()
    }

    /// Leader: records a follower's fetch at `fetch_offset`, advancing the
    /// high watermark. Fails when this replica does not lead, or `follower`
    /// is not a replica.
    pub fn record_follower_fetch(
        &self,
        follower: i32,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Result<FollowerFetch, AppendError> {
        let mut r = self.replica.lock();
        if r.role != Role::Leader {
            return Err(AppendError::NotLeader);
        }
        let leo = self.log_end_offset();
        let Some(f) = r.followers.get_mut(&follower) else {
            return Err(AppendError::NotLeader);
        };
        let fetch_offset = fetch_offset.min(leo);
        if fetch_offset >= leo {
            f.last_caught_up_ms = now_ms;
        } else if fetch_offset >= f.leader_leo_at_last_fetch {
            f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
        }
        f.leo = fetch_offset;
        f.last_fetch_ms = now_ms;
        f.leader_leo_at_last_fetch = leo;
        self.maybe_advance_hw(&mut r);
        let hw = self.high_watermark();
        let may_join = !r.isr.contains(&follower) && !r.isr_change_pending && fetch_offset >= hw;
        Ok(if may_join {
            FollowerFetch::MayJoinIsr
        } else {
            FollowerFetch::Ok
        })
    }

    /// Leader: the ISR change this replica wants now, if any: followers that
    /// stopped catching up for `lag_ms` leave, caught-up replicas join. At
    /// most one change is in flight per partition.
    pub fn wanted_isr_change(&self, now_ms: i64, lag_ms: i64) -> Option<IsrChange> {
        let mut r = self.replica.lock();
        if r.role != Role::Leader || r.isr_change_pending || now_ms < r.isr_retry_at_ms {
            return None;
        }
        let hw = self.high_watermark();
        let mut isr: Vec<i32> = r
            .isr
            .iter()
            .copied()
            .filter(|id| {
                *id == r.leader
                    || r.followers
                        .get(id)
                        .is_some_and(|f| now_ms - f.last_caught_up_ms <= lag_ms)
            })
            .collect();
        for id in &r.replicas {
            if isr.contains(id) {
                continue;
            }
            if r.followers.get(id).is_some_and(|f| {
                f.leo >= hw && f.leo >= 0 && now_ms - f.last_caught_up_ms <= lag_ms
            }) {
                isr.push(*id);
            }
        }
        if isr == r.isr {
            return None;
        }
        r.isr_change_pending = true;
        Some(IsrChange {
            isr,
            leader_epoch: r.leader_epoch,
            partition_epoch: r.partition_epoch,
        })
    }

    /// Leader: the controller's answer to an ISR change (the new state, or
    /// `None` when it was refused).
    pub fn isr_change_done(&self, state: Option<&PartitionState>, now_ms: i64) {
        {
            let mut r = self.replica.lock();
            r.isr_change_pending = false;
            if state.is_none() {
                r.isr_retry_at_ms = now_ms + ISR_RETRY_BACKOFF_MS;
            }
        }
        if let Some(s) = state {
            if s.leader_epoch == self.leader_epoch() && self.is_leader() {
                self.become_leader(s, now_ms);
            }
        }
    }

    /// Reads whole batches from `offset` up to `bound`.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        bound: Bound,
    ) -> Result<ReadResult, commitlog::Error> {
        let mut log = self.log.lock();
        let high_watermark = self.high_watermark();
        let last_stable_offset = log.last_stable_offset(high_watermark);
        let limit = match bound {
            Bound::HighWatermark => high_watermark,
            Bound::LastStable => last_stable_offset,
            Bound::LogEnd => log.log_end_offset(),
        };
        let records = log.read(offset, max_bytes, limit)?;
        Ok(ReadResult {
            records,
            high_watermark,
            last_stable_offset,
            log_start_offset: log.log_start_offset(),
            log_end_offset: log.log_end_offset(),
        })
    }

    /// Runs `f` with the log locked, for the less frequent operations
    /// (offset lookups, retention, flush bookkeeping, truncation) that need
    /// the whole log. The high watermark is kept within the log's bounds.
    pub fn with_log<R>(&self, f: impl FnOnce(&mut Log) -> R) -> R {
        let mut log = self.log.lock();
        let r = f(&mut log);
        let start = log.log_start_offset();
        let end = log.log_end_offset();
        self.log_start_offset.store(start, Ordering::Release);
        self.log_end_offset.store(end, Ordering::Release);
        let hw = self.high_watermark().clamp(start, end);
        self.high_watermark.store(hw, Ordering::Release);
        r
    }

    /// Wakes `waiter` at the next append to this partition or high watermark
    /// move. Only a weak reference is kept, so fetches that ended leave
    /// nothing behind.
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

    /// Removes the partition's files (topic deletion, replica moved away).
    /// The directory is first renamed aside so that a crash midway leaves
    /// nothing that start-up would mistake for a live partition.
    pub fn delete(&self) -> std::io::Result<()> {
        {
            let mut r = self.replica.lock();
            r.role = Role::Offline;
            self.publish(&r);
        }
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
