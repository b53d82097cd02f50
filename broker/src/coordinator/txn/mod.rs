//! The transaction coordinator: transactional ids, their producer ids and
//! epochs, and their transactions, stored in `__transaction_state`.
//!
//! Like the group coordinator it follows leadership of its topic: it owns
//! the transactional ids of the `__transaction_state` partitions this
//! broker leads, loads them on election (see [`TxnCoordinator::elect`]),
//! drops them on resignation, and answers NOT_COORDINATOR or
//! COORDINATOR_LOAD_IN_PROGRESS otherwise.
//!
//! A transaction runs: InitProducerId (a producer id and a new epoch, which
//! fences older producers of the same transactional id and aborts their
//! open transaction), AddPartitionsToTxn / AddOffsetsToTxn (state Ongoing,
//! the partitions recorded), EndTxn (PrepareCommit or PrepareAbort written
//! and replicated, then answered), then markers to every partition
//! (`markers.rs`), then CompleteCommit / CompleteAbort. A coordinator that
//! takes over finishes every transaction it finds prepared. Transactions
//! older than their timeout are aborted with a bumped epoch.
//!
//! The state of every id sits behind one mutex; a transition is applied in
//! memory when its record is appended (under the mutex, so the log's order
//! is the order of the transitions), and the request is answered once the
//! record is fsynced and replicated. An answer that needs no write still
//! waits for the last write of its id, so nothing is acknowledged that a
//! failover could lose.

pub mod markers;
pub mod state;
pub mod store;

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use markers::{Marker, MarkerSender};
use state::{EndDecision, InitDecision};
pub use state::{TxnError, TxnMeta, TxnState};

use crate::broker::{now_ms, Broker};
use crate::coordinator::group::store as records;
use crate::flusher::Flusher;
use crate::partition::{AppendError, Bound, Partition};

/// The internal topic holding transactional ids and their transactions.
pub const TXN_TOPIC: &str = "__transaction_state";

const READ_BYTES: usize = 1 << 20;

/// The coordinator's settings (broker config keys in brackets).
#[derive(Debug, Clone)]
pub struct TxnSettings {
    /// Partitions of `__transaction_state` (transaction.state.log.num.partitions).
    pub num_partitions: i32,
    /// transaction.max.timeout.ms
    pub max_timeout_ms: i64,
    /// transactional.id.expiration.ms
    pub id_expiration_ms: i64,
    /// Replicas a write to `__transaction_state` needs in the ISR.
    pub min_insync: i32,
    /// How long a write waits for replication before the request fails.
    pub write_timeout: Duration,
}

/// A partition of `__transaction_state` this broker leads.
struct Owned {
    partition: Arc<Partition>,
    leader_epoch: i32,
    loaded: bool,
    cancel: CancellationToken,
}

/// One append to `__transaction_state`.
#[derive(Clone)]
struct Written {
    partition: Arc<Partition>,
    end_offset: i64,
    leader_epoch: i32,
}

struct Entry {
    meta: TxnMeta,
    /// The latest record written for this id by this coordinator.
    last_write: Option<Written>,
    /// A task is writing this transaction's markers.
    completing: bool,
}

struct Shared {
    txns: Mutex<HashMap<String, Entry>>,
    /// Locked after `txns` when both are needed.
    owned: Mutex<HashMap<i32, Owned>>,
    changes: watch::Sender<u64>,
    settings: TxnSettings,
    flusher: Flusher,
    markers: MarkerSender,
    broker: OnceLock<Weak<Broker>>,
    runtime: tokio::runtime::Handle,
}

/// Handle to the transaction coordinator; clones share it.
#[derive(Clone)]
pub struct TxnCoordinator {
    shared: Arc<Shared>,
}

fn write_error(e: AppendError) -> TxnError {
    match e {
        AppendError::NotLeader => TxnError::NotCoordinator,
        other => TxnError::CoordinatorNotAvailable(other.to_string()),
    }
}

/// What a request does after the lock is released.
enum Then {
    /// Wait for this write (if any), then answer.
    Answer(Option<Written>),
    /// Allocate a producer id, then decide again.
    AllocateId,
}

impl TxnCoordinator {
    /// A coordinator that owns no partition yet. Must run inside a tokio
    /// runtime; [`TxnCoordinator::attach`] gives it the broker.
    pub fn new(settings: TxnSettings, flusher: Flusher) -> TxnCoordinator {
        let (changes, _) = watch::channel(0);
        TxnCoordinator {
            shared: Arc::new(Shared {
                txns: Mutex::new(HashMap::new()),
                owned: Mutex::new(HashMap::new()),
                changes,
                settings,
                flusher,
                markers: MarkerSender::default(),
                broker: OnceLock::new(),
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// The broker whose partitions the markers go to (and whose controller
    /// hands out producer ids).
    pub fn attach(&self, broker: Weak<Broker>) {
        let _ = self.shared.broker.set(broker);
    }

    fn broker(&self) -> Result<Arc<Broker>, TxnError> {
        self.shared
            .broker
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| TxnError::CoordinatorNotAvailable("the broker is stopping".into()))
    }

    pub fn settings(&self) -> &TxnSettings {
        &self.shared.settings
    }

    /// The partition of `__transaction_state` that holds `transactional_id`.
    pub fn partition_for(&self, transactional_id: &str) -> i32 {
        records::partition_for(transactional_id, self.shared.settings.num_partitions)
    }

    // ---- Leadership ---------------------------------------------------------

    /// This broker leads `__transaction_state`-`index` in `leader_epoch`:
    /// its ids are loaded on a blocking thread, prepared transactions are
    /// completed once loaded.
    pub fn elect(&self, index: i32, partition: Arc<Partition>, leader_epoch: i32) {
        let mut txns = self.shared.txns.lock();
        let mut owned = self.shared.owned.lock();
        if owned
            .get(&index)
            .is_some_and(|o| o.leader_epoch >= leader_epoch)
        {
            return;
        }
        if let Some(old) = owned.remove(&index) {
            self.unload(&mut txns, index, old);
        }
        let cancel = CancellationToken::new();
        owned.insert(
            index,
            Owned {
                partition: partition.clone(),
                leader_epoch,
                loaded: false,
                cancel: cancel.clone(),
            },
        );
        drop(owned);
        drop(txns);
        let weak = Arc::downgrade(&self.shared);
        self.shared.runtime.spawn(async move {
            let load = tokio::task::spawn_blocking(move || load(&partition));
            let loaded = tokio::select! {
                _ = cancel.cancelled() => return,
                r = load => r,
            };
            let Some(shared) = weak.upgrade() else { return };
            let c = TxnCoordinator { shared };
            match loaded {
                Ok(ids) => c.finish_load(index, &cancel, ids),
                Err(e) => {
                    tracing::error!(partition = index, error = %e, "loading transactional ids failed")
                }
            }
        });
    }

    fn finish_load(&self, index: i32, cancel: &CancellationToken, ids: HashMap<String, TxnMeta>) {
        let mut txns = self.shared.txns.lock();
        {
            let mut owned = self.shared.owned.lock();
            if cancel.is_cancelled() {
                return;
            }
            let Some(o) = owned.get_mut(&index) else {
                return;
            };
            o.loaded = true;
        }
        let count = ids.len();
        let mut prepared = Vec::new();
        for (id, meta) in ids {
            if meta.state.is_preparing() {
                prepared.push(id.clone());
            }
            txns.insert(
                id,
                Entry {
                    meta,
                    last_write: None,
                    completing: false,
                },
            );
        }
        for id in prepared {
            self.spawn_completion(&mut txns, &id);
        }
        drop(txns);
        self.shared.changes.send_modify(|n| *n += 1);
        tracing::info!(partition = index, ids = count, "loaded transactional ids");
    }

    /// This broker no longer leads `__transaction_state`-`index`.
    pub fn resign(&self, index: i32, leader_epoch: i32) {
        let mut txns = self.shared.txns.lock();
        let mut owned = self.shared.owned.lock();
        match owned.get(&index) {
            Some(o) if leader_epoch >= o.leader_epoch => {}
            _ => return,
        }
        if let Some(old) = owned.remove(&index) {
            self.unload(&mut txns, index, old);
        }
        drop(owned);
        drop(txns);
        self.shared.changes.send_modify(|n| *n += 1);
    }

    fn unload(&self, txns: &mut HashMap<String, Entry>, index: i32, old: Owned) {
        old.cancel.cancel();
        let before = txns.len();
        txns.retain(|id, _| self.partition_for(id) != index);
        tracing::info!(
            partition = index,
            epoch = old.leader_epoch,
            ids = before - txns.len(),
            "gave up transactional ids"
        );
    }

    /// Whether this broker serves `transactional_id` now; its partition and
    /// leader epoch if so. Call with `txns` locked.
    fn check_coordinator(&self, transactional_id: &str) -> Result<(Arc<Partition>, i32), TxnError> {
        match self
            .shared
            .owned
            .lock()
            .get(&self.partition_for(transactional_id))
        {
            None => Err(TxnError::NotCoordinator),
            Some(o) if !o.loaded => Err(TxnError::LoadInProgress),
            Some(o) => Ok((o.partition.clone(), o.leader_epoch)),
        }
    }

    fn cancel_token(&self, transactional_id: &str) -> Option<CancellationToken> {
        self.shared
            .owned
            .lock()
            .get(&self.partition_for(transactional_id))
            .map(|o| o.cancel.clone())
    }

    // ---- Writes -------------------------------------------------------------

    /// Appends the record of `id` (`None`: a tombstone). Call with `txns`
    /// locked.
    fn append(&self, id: &str, meta: Option<&TxnMeta>) -> Result<Written, TxnError> {
        let (p, epoch) = self.check_coordinator(id)?;
        let now = now_ms();
        let record = (store::encode_key(id), meta.map(store::encode_value));
        let batch = records::build_batch(&[record], now);
        let (info, written_epoch) = p
            .append_as_leader(&batch, now, false, -1, self.min_insync())
            .map_err(write_error)?;
        if written_epoch != epoch {
            return Err(TxnError::NotCoordinator);
        }
        Ok(Written {
            partition: p,
            end_offset: info.last_offset + 1,
            leader_epoch: written_epoch,
        })
    }

    /// Replicas a write needs in the ISR: `__transaction_state`'s own
    /// `min.insync.replicas` (capped at its replication factor when it was
    /// created), else `transaction.state.log.min.isr`.
    fn min_insync(&self) -> i32 {
        self.broker()
            .ok()
            .and_then(|b| b.topics.get(TXN_TOPIC))
            .map_or(self.shared.settings.min_insync, |t| {
                t.config().min_insync_replicas
            })
    }

    /// Appends `meta` for `id` and makes it the id's state. Call with `txns`
    /// locked.
    fn install(
        &self,
        txns: &mut HashMap<String, Entry>,
        id: &str,
        meta: TxnMeta,
    ) -> Result<Written, TxnError> {
        let w = self.append(id, Some(&meta))?;
        let entry = txns.entry(id.to_string()).or_insert_with(|| Entry {
            meta: meta.clone(),
            last_write: None,
            completing: false,
        });
        entry.meta = meta;
        entry.last_write = Some(w.clone());
        Ok(w)
    }

    /// Resolves once `w` is fsynced here and replicated to the ISR.
    async fn durable(&self, w: Option<Written>) -> Result<(), TxnError> {
        let Some(w) = w else { return Ok(()) };
        let replicated = w.partition.wait_replicated(
            w.end_offset,
            w.leader_epoch,
            self.shared.settings.write_timeout,
        );
        let (flushed, replicated) =
            tokio::join!(self.shared.flusher.flush(w.partition.clone()), replicated);
        flushed.map_err(|e| TxnError::CoordinatorNotAvailable(e.0.to_string()))?;
        replicated.map_err(write_error)
    }

    async fn allocate_producer_id(&self) -> Result<i64, TxnError> {
        self.broker()?
            .new_producer_id()
            .await
            .map_err(|e| TxnError::CoordinatorNotAvailable(e.to_string()))
    }

    // ---- Requests -------------------------------------------------------------

    /// InitProducerId for a transactional id: its producer id and a new
    /// epoch. `expected` is the producer's current id and epoch, when it
    /// sent them (KIP-360).
    pub async fn init_producer_id(
        &self,
        id: &str,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
    ) -> Result<(i64, i16), TxnError> {
        let max = self.shared.settings.max_timeout_ms;
        if timeout_ms <= 0 || i64::from(timeout_ms) > max {
            return Err(TxnError::InvalidTransactionTimeout {
                got: timeout_ms,
                max,
            });
        }
        let mut fresh_id = None;
        loop {
            let (then, answer) = {
                let mut txns = self.shared.txns.lock();
                self.check_coordinator(id)?;
                let meta = txns.get(id).map(|e| &e.meta);
                match state::init(meta, timeout_ms, expected, fresh_id, now_ms())? {
                    InitDecision::NeedProducerId => {
                        (Then::AllocateId, Err(TxnError::NotCoordinator))
                    }
                    InitDecision::Current(pid, epoch) => {
                        let last = txns.get(id).and_then(|e| e.last_write.clone());
                        (Then::Answer(last), Ok((pid, epoch)))
                    }
                    InitDecision::Write(meta) => {
                        let answer = Ok((meta.producer_id, meta.producer_epoch));
                        let w = self.install(&mut txns, id, meta)?;
                        (Then::Answer(Some(w)), answer)
                    }
                    InitDecision::FenceOngoing(meta) => {
                        tracing::info!(
                            transactional_id = id,
                            producer = meta.producer_id,
                            epoch = meta.producer_epoch,
                            "fencing the open transaction of an older producer"
                        );
                        let w = self.install(&mut txns, id, meta)?;
                        self.spawn_completion(&mut txns, id);
                        (Then::Answer(Some(w)), Err(TxnError::ConcurrentTransactions))
                    }
                }
            };
            match then {
                Then::AllocateId => fresh_id = Some(self.allocate_producer_id().await?),
                Then::Answer(w) => {
                    self.durable(w).await?;
                    return answer;
                }
            }
        }
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn: `partitions` join the open
    /// transaction (which they open if none is).
    pub async fn add_partitions(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        partitions: &[(String, i32)],
    ) -> Result<(), TxnError> {
        let w = {
            let mut txns = self.shared.txns.lock();
            self.check_coordinator(id)?;
            let entry = txns.get(id);
            let meta = entry.map(|e| &e.meta);
            match state::add_partitions(meta, producer_id, producer_epoch, partitions, now_ms())? {
                None => entry.and_then(|e| e.last_write.clone()),
                Some(next) => Some(self.install(&mut txns, id, next)?),
            }
        };
        self.durable(w).await
    }

    /// EndTxn: the outcome is written (PrepareCommit / PrepareAbort) and
    /// replicated before the answer; the markers follow in the background.
    pub async fn end_txn(
        &self,
        id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
    ) -> Result<(), TxnError> {
        let w = {
            let mut txns = self.shared.txns.lock();
            self.check_coordinator(id)?;
            let entry = txns.get(id);
            let meta = entry.map(|e| &e.meta);
            match state::end(meta, producer_id, producer_epoch, commit, now_ms())? {
                EndDecision::Done => entry.and_then(|e| e.last_write.clone()),
                EndDecision::Prepare(next) => {
                    let w = self.install(&mut txns, id, next)?;
                    self.spawn_completion(&mut txns, id);
                    Some(w)
                }
            }
        };
        self.durable(w).await
    }

    /// The state of one transactional id (DescribeTransactions).
    pub fn describe(&self, id: &str) -> Result<TxnMeta, TxnError> {
        let txns = self.shared.txns.lock();
        self.check_coordinator(id)?;
        txns.get(id)
            .map(|e| e.meta.clone())
            .filter(|m| m.state != TxnState::Dead)
            .ok_or(TxnError::TransactionalIdNotFound)
    }

    /// Every transactional id this broker coordinates (ListTransactions),
    /// sorted by id.
    pub fn list(&self) -> Vec<(String, TxnMeta)> {
        let txns = self.shared.txns.lock();
        let mut out: Vec<_> = txns
            .iter()
            .map(|(id, e)| (id.clone(), e.meta.clone()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    // ---- Completion -------------------------------------------------------------

    /// Starts writing the markers of `id`'s prepared transaction, unless a
    /// task already is. Call with `txns` locked.
    fn spawn_completion(&self, txns: &mut HashMap<String, Entry>, id: &str) {
        let Some(entry) = txns.get_mut(id) else {
            return;
        };
        if entry.completing {
            return;
        }
        let Some(cancel) = self.cancel_token(id) else {
            return;
        };
        entry.completing = true;
        let c = self.clone();
        let id = id.to_string();
        self.shared.runtime.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = c.complete(&id, &cancel) => {}
            }
        });
    }

    /// Writes the markers of `id`'s prepared transaction once its prepare
    /// record is durable, then its Complete record.
    async fn complete(&self, id: &str, cancel: &CancellationToken) {
        let retry = Duration::from_millis(200);
        loop {
            let (meta, write, coordinator_epoch) = {
                let mut txns = self.shared.txns.lock();
                let Ok((_, epoch)) = self.check_coordinator(id) else {
                    return;
                };
                let Some(entry) = txns.get_mut(id) else {
                    return;
                };
                if !entry.meta.state.is_preparing() {
                    entry.completing = false;
                    return;
                }
                (entry.meta.clone(), entry.last_write.clone(), epoch)
            };
            if let Err(e) = self.durable(write).await {
                tracing::debug!(transactional_id = id, error = %e, "prepared transaction not durable yet");
                tokio::time::sleep(retry).await;
                continue;
            }
            let Ok(broker) = self.broker() else { return };
            let marker = Marker {
                producer_id: meta.producer_id,
                producer_epoch: meta.producer_epoch,
                commit: meta.state == TxnState::PrepareCommit,
                coordinator_epoch,
                partitions: meta.partitions.iter().cloned().collect(),
            };
            if !self
                .shared
                .markers
                .write_all(&broker, &marker, cancel)
                .await
            {
                return;
            }
            let installed = {
                let mut txns = self.shared.txns.lock();
                let Some(entry) = txns.get(id) else { return };
                if entry.meta != meta {
                    // Changed meanwhile (cannot happen while prepared, but
                    // then the new state decides): look again.
                    continue;
                }
                let Some(next) = state::completed(&meta, now_ms()) else {
                    return;
                };
                let installed = self.install(&mut txns, id, next);
                if installed.is_ok() {
                    if let Some(e) = txns.get_mut(id) {
                        e.completing = false;
                    }
                }
                installed
            };
            let written = match installed {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(transactional_id = id, error = %e, "cannot write the transaction's completion; retrying");
                    tokio::time::sleep(retry).await;
                    continue;
                }
            };
            tracing::debug!(
                transactional_id = id,
                producer = meta.producer_id,
                commit = marker.commit,
                partitions = marker.partitions.len(),
                "transaction completed"
            );
            self.shared.flusher.flush_in_background(written.partition);
            return;
        }
    }

    // ---- Timeouts and expiration ------------------------------------------------

    /// Aborts open transactions past their timeout (bumping the epoch, so
    /// their producer is fenced) and forgets ids idle for
    /// `transactional.id.expiration.ms`.
    pub fn abort_timed_out(&self) {
        let now = now_ms();
        let expiration = self.shared.settings.id_expiration_ms;
        let mut txns = self.shared.txns.lock();
        let ids: Vec<String> = txns.keys().cloned().collect();
        for id in ids {
            if self.check_coordinator(&id).is_err() {
                continue;
            }
            let Some(entry) = txns.get(&id) else { continue };
            if let Some(abort) = state::timed_out(&entry.meta, now) {
                tracing::info!(transactional_id = %id, producer = abort.producer_id, timeout_ms = abort.timeout_ms, "aborting a transaction past its timeout");
                match self.install(&mut txns, &id, abort) {
                    Ok(_) => self.spawn_completion(&mut txns, &id),
                    Err(e) => {
                        tracing::warn!(transactional_id = %id, error = %e, "cannot abort a timed-out transaction")
                    }
                }
            } else if state::expired(&entry.meta, now, expiration) {
                match self.append(&id, None) {
                    Ok(_) => {
                        tracing::info!(transactional_id = %id, "expired an idle transactional id");
                        txns.remove(&id);
                    }
                    Err(e) => {
                        tracing::warn!(transactional_id = %id, error = %e, "cannot expire a transactional id")
                    }
                }
            }
        }
    }
}

/// Blocking: reads the whole of `p` (one partition of `__transaction_state`);
/// the last record of each id wins, a tombstone removes it.
fn load(p: &Partition) -> HashMap<String, TxnMeta> {
    let mut ids = HashMap::new();
    let mut offset = p.log_start_offset();
    loop {
        let read = match p.read(offset, READ_BYTES, Bound::LogEnd) {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(partition = %p.dir().display(), offset, error = %e, "cannot read __transaction_state");
                break;
            }
        };
        let mut next = offset;
        for h in crate::commitlog::batch::headers(&read.records) {
            match h {
                Ok((_, h)) => next = next.max(h.next_offset()),
                Err(_) => break,
            }
        }
        if next <= offset {
            break;
        }
        for (key, value) in records::records(&read.records) {
            let Some(id) = store::decode_key(&key) else {
                tracing::warn!("unknown record key in __transaction_state");
                continue;
            };
            match value.as_deref().map(store::decode_value) {
                None => {
                    ids.remove(&id);
                }
                Some(Some(meta)) => {
                    ids.insert(id, meta);
                }
                Some(None) => {
                    tracing::warn!(transactional_id = %id, "undecodable record in __transaction_state")
                }
            }
        }
        offset = next;
    }
    ids
}
