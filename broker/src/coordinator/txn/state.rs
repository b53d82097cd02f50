//! A transactional id's state and the coordinator's decisions about it, as
//! pure functions: given the current metadata and a request, the error or
//! the metadata to write next. Kafka's `TransactionMetadata` transitions,
//! without the "pending state" (the coordinator applies a transition when
//! it appends its record, under one lock, and answers after the record is
//! durable).

use std::collections::BTreeSet;

/// Kafka's transaction states, with the numbers `__transaction_state` stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn to_i8(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_i8(v: i8) -> Option<TxnState> {
        Some(match v {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<TxnState> {
        (0..=7)
            .filter_map(TxnState::from_i8)
            .find(|s| s.name() == name)
    }

    /// Markers are being written: the outcome is decided, not yet applied.
    pub fn is_preparing(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What the coordinator knows of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions written in the current transaction (and, for
    /// AddOffsetsToTxn, the group's partition of `__consumer_offsets`).
    pub partitions: BTreeSet<(String, i32)>,
    /// When the current transaction began (-1 without one).
    pub start_ms: i64,
    pub update_ms: i64,
}

/// Why the coordinator refuses a request; the handlers map each to the
/// Kafka error of the same name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TxnError {
    #[error("this broker is not the coordinator of the transactional id")]
    NotCoordinator,
    #[error("the coordinator is loading the transactional id's partition of __transaction_state")]
    LoadInProgress,
    #[error("the transaction coordinator is not available: {0}")]
    CoordinatorNotAvailable(String),
    #[error("another operation on this transactional id is in progress; retry")]
    ConcurrentTransactions,
    #[error("the producer id does not belong to this transactional id")]
    InvalidProducerIdMapping,
    #[error("the producer epoch is not the current one: a newer producer with the same transactional id fenced this one")]
    ProducerFenced,
    #[error("the transaction is not in a state that allows this: {0}")]
    InvalidTxnState(String),
    #[error("transaction timeout {got} ms is outside 1..={max} (transaction.max.timeout.ms)")]
    InvalidTransactionTimeout { got: i32, max: i64 },
    #[error("unknown transactional id")]
    TransactionalIdNotFound,
}

/// What InitProducerId does for a transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitDecision {
    /// Write this metadata and answer with its producer id and epoch.
    Write(TxnMeta),
    /// A retry of an InitProducerId already done: answer with these.
    Current(i64, i16),
    /// A transaction is open: fence it (this metadata is its abort with the
    /// bumped epoch), complete the abort, and answer CONCURRENT_TRANSACTIONS
    /// so the producer retries once the abort is done.
    FenceOngoing(TxnMeta),
    /// A producer id must be allocated first (a new transactional id, or
    /// an epoch that would overflow); decide again with it.
    NeedProducerId,
}

/// The highest epoch handed out before a new producer id is needed.
const MAX_EPOCH: i16 = i16::MAX - 1;

/// InitProducerId for a transactional id whose metadata is `meta`.
/// `expected` is the producer's current id and epoch (v3+, KIP-360) if it
/// sent them; `fresh_id` a newly allocated producer id, if one was.
pub fn init(
    meta: Option<&TxnMeta>,
    timeout_ms: i32,
    expected: Option<(i64, i16)>,
    fresh_id: Option<i64>,
    now_ms: i64,
) -> Result<InitDecision, TxnError> {
    let fresh = |id: i64| TxnMeta {
        producer_id: id,
        producer_epoch: 0,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
    };
    let Some(m) = meta.filter(|m| m.state != TxnState::Dead) else {
        return Ok(match fresh_id {
            Some(id) => InitDecision::Write(fresh(id)),
            None => InitDecision::NeedProducerId,
        });
    };
    if m.state.is_preparing() || m.state == TxnState::PrepareEpochFence {
        return Err(TxnError::ConcurrentTransactions);
    }
    if let Some((pid, epoch)) = expected {
        let current = (m.producer_id, m.producer_epoch);
        if (pid, epoch) != current {
            // A retry whose first attempt bumped the epoch already.
            if pid == m.producer_id && epoch.checked_add(1) == Some(m.producer_epoch) {
                return Ok(InitDecision::Current(m.producer_id, m.producer_epoch));
            }
            return Err(TxnError::ProducerFenced);
        }
    }
    if m.state == TxnState::Ongoing {
        return Ok(InitDecision::FenceOngoing(fence(m, now_ms)));
    }
    if m.producer_epoch >= MAX_EPOCH {
        return Ok(match fresh_id {
            Some(id) => InitDecision::Write(fresh(id)),
            None => InitDecision::NeedProducerId,
        });
    }
    Ok(InitDecision::Write(TxnMeta {
        producer_epoch: m.producer_epoch + 1,
        timeout_ms,
        state: TxnState::Empty,
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
        ..m.clone()
    }))
}

/// The open transaction of `m` aborted with the epoch bumped, so that the
/// producer that opened it can write no more (a new producer instance, or a
/// transaction past its timeout).
pub fn fence(m: &TxnMeta, now_ms: i64) -> TxnMeta {
    TxnMeta {
        producer_epoch: m.producer_epoch.saturating_add(1),
        state: TxnState::PrepareAbort,
        update_ms: now_ms,
        ..m.clone()
    }
}

/// Checks that a request comes from the producer that owns `meta` now.
fn check_producer(
    meta: Option<&TxnMeta>,
    producer_id: i64,
    producer_epoch: i16,
) -> Result<&TxnMeta, TxnError> {
    let m = meta
        .filter(|m| m.state != TxnState::Dead)
        .ok_or(TxnError::InvalidProducerIdMapping)?;
    if m.producer_id != producer_id {
        return Err(TxnError::InvalidProducerIdMapping);
    }
    if m.producer_epoch != producer_epoch {
        return Err(TxnError::ProducerFenced);
    }
    Ok(m)
}

/// AddPartitionsToTxn / AddOffsetsToTxn: the metadata to write, or `None`
/// when every partition is in the transaction already.
pub fn add_partitions(
    meta: Option<&TxnMeta>,
    producer_id: i64,
    producer_epoch: i16,
    partitions: &[(String, i32)],
    now_ms: i64,
) -> Result<Option<TxnMeta>, TxnError> {
    let m = check_producer(meta, producer_id, producer_epoch)?;
    if m.state.is_preparing() || m.state == TxnState::PrepareEpochFence {
        return Err(TxnError::ConcurrentTransactions);
    }
    let ongoing = m.state == TxnState::Ongoing;
    if ongoing && partitions.iter().all(|p| m.partitions.contains(p)) {
        return Ok(None);
    }
    let mut next = m.clone();
    if !ongoing {
        next.partitions.clear();
        next.start_ms = now_ms;
        next.state = TxnState::Ongoing;
    }
    next.partitions.extend(partitions.iter().cloned());
    next.update_ms = now_ms;
    Ok(Some(next))
}

/// What EndTxn does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndDecision {
    /// Write this PrepareCommit/PrepareAbort, then the markers.
    Prepare(TxnMeta),
    /// A retry of an EndTxn already completed: answer success.
    Done,
}

/// EndTxn: commit (`commit`) or abort the open transaction.
pub fn end(
    meta: Option<&TxnMeta>,
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    now_ms: i64,
) -> Result<EndDecision, TxnError> {
    let m = check_producer(meta, producer_id, producer_epoch)?;
    let wrong = |what: &str| {
        Err(TxnError::InvalidTxnState(format!(
            "{} asked while the transaction is {what}",
            if commit { "commit" } else { "abort" }
        )))
    };
    match (m.state, commit) {
        (TxnState::Ongoing, _) => Ok(EndDecision::Prepare(TxnMeta {
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            update_ms: now_ms,
            ..m.clone()
        })),
        (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => {
            Ok(EndDecision::Done)
        }
        (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
            Err(TxnError::ConcurrentTransactions)
        }
        (state, _) => wrong(state.name()),
    }
}

/// The transaction of `m` after all its markers are written.
pub fn completed(m: &TxnMeta, now_ms: i64) -> Option<TxnMeta> {
    let state = match m.state {
        TxnState::PrepareCommit => TxnState::CompleteCommit,
        TxnState::PrepareAbort => TxnState::CompleteAbort,
        _ => return None,
    };
    Some(TxnMeta {
        state,
        partitions: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
        ..m.clone()
    })
}

/// An open transaction past its timeout: its abort, fencing the producer.
pub fn timed_out(m: &TxnMeta, now_ms: i64) -> Option<TxnMeta> {
    (m.state == TxnState::Ongoing && now_ms.saturating_sub(m.start_ms) > i64::from(m.timeout_ms))
        .then(|| fence(m, now_ms))
}

/// A transactional id idle for `expiration_ms` with no transaction open.
pub fn expired(m: &TxnMeta, now_ms: i64, expiration_ms: i64) -> bool {
    matches!(
        m.state,
        TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
    ) && now_ms.saturating_sub(m.update_ms) >= expiration_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(state: TxnState, epoch: i16) -> TxnMeta {
        TxnMeta {
            producer_id: 7,
            producer_epoch: epoch,
            timeout_ms: 60_000,
            state,
            partitions: BTreeSet::new(),
            start_ms: -1,
            update_ms: 0,
        }
    }

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    #[test]
    fn a_new_transactional_id_needs_a_producer_id_then_starts_at_epoch_0() {
        assert_eq!(
            init(None, 1000, None, None, 5),
            Ok(InitDecision::NeedProducerId)
        );
        let Ok(InitDecision::Write(m)) = init(None, 1000, None, Some(42), 5) else {
            panic!("expected a write");
        };
        assert_eq!(
            (m.producer_id, m.producer_epoch, m.state),
            (42, 0, TxnState::Empty)
        );
        assert_eq!(m.timeout_ms, 1000);
    }

    #[test]
    fn init_bumps_the_epoch_of_an_idle_id() {
        for state in [
            TxnState::Empty,
            TxnState::CompleteCommit,
            TxnState::CompleteAbort,
        ] {
            let Ok(InitDecision::Write(m)) = init(Some(&meta(state, 3)), 1, None, None, 9) else {
                panic!("expected a write for {state:?}");
            };
            assert_eq!((m.producer_id, m.producer_epoch), (7, 4));
            assert_eq!(m.state, TxnState::Empty);
        }
    }

    #[test]
    fn init_fences_an_open_transaction_and_refuses_while_markers_are_written() {
        let mut open = meta(TxnState::Ongoing, 3);
        open.partitions.insert(tp("a", 0));
        let Ok(InitDecision::FenceOngoing(m)) = init(Some(&open), 1, None, None, 9) else {
            panic!("expected a fence");
        };
        assert_eq!((m.producer_epoch, m.state), (4, TxnState::PrepareAbort));
        assert_eq!(m.partitions, open.partitions);
        for state in [TxnState::PrepareCommit, TxnState::PrepareAbort] {
            assert_eq!(
                init(Some(&meta(state, 3)), 1, None, None, 9),
                Err(TxnError::ConcurrentTransactions)
            );
        }
    }

    #[test]
    fn init_with_an_exhausted_epoch_takes_a_new_producer_id() {
        let m = meta(TxnState::CompleteCommit, MAX_EPOCH);
        assert_eq!(
            init(Some(&m), 1, None, None, 9),
            Ok(InitDecision::NeedProducerId)
        );
        let Ok(InitDecision::Write(n)) = init(Some(&m), 1, None, Some(8), 9) else {
            panic!("expected a write");
        };
        assert_eq!((n.producer_id, n.producer_epoch), (8, 0));
    }

    #[test]
    fn init_with_the_producers_current_epoch_follows_kip_360() {
        let m = meta(TxnState::Empty, 3);
        assert!(matches!(
            init(Some(&m), 1, Some((7, 3)), None, 9),
            Ok(InitDecision::Write(n)) if n.producer_epoch == 4
        ));
        assert_eq!(
            init(Some(&m), 1, Some((7, 2)), None, 9),
            Ok(InitDecision::Current(7, 3))
        );
        assert_eq!(
            init(Some(&m), 1, Some((7, 1)), None, 9),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            init(Some(&m), 1, Some((6, 3)), None, 9),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn adding_partitions_opens_the_transaction_and_repeats_write_nothing() {
        let m = meta(TxnState::CompleteCommit, 1);
        let Ok(Some(open)) = add_partitions(Some(&m), 7, 1, &[tp("a", 0)], 50) else {
            panic!("expected a write");
        };
        assert_eq!((open.state, open.start_ms), (TxnState::Ongoing, 50));
        assert_eq!(
            add_partitions(Some(&open), 7, 1, &[tp("a", 0)], 60),
            Ok(None)
        );
        let Ok(Some(more)) = add_partitions(Some(&open), 7, 1, &[tp("b", 1)], 60) else {
            panic!("expected a write");
        };
        assert_eq!(more.partitions.len(), 2);
        assert_eq!(more.start_ms, 50);
    }

    #[test]
    fn requests_from_an_old_epoch_or_another_producer_are_refused() {
        let m = meta(TxnState::Ongoing, 2);
        assert_eq!(
            add_partitions(Some(&m), 7, 1, &[tp("a", 0)], 0),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            add_partitions(Some(&m), 8, 2, &[tp("a", 0)], 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            add_partitions(None, 7, 2, &[tp("a", 0)], 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(end(Some(&m), 7, 1, true, 0), Err(TxnError::ProducerFenced));
        assert_eq!(
            add_partitions(
                Some(&meta(TxnState::PrepareCommit, 2)),
                7,
                2,
                &[tp("a", 0)],
                0
            ),
            Err(TxnError::ConcurrentTransactions)
        );
    }

    #[test]
    fn end_prepares_then_retries_succeed_and_mismatches_are_invalid() {
        let m = meta(TxnState::Ongoing, 2);
        let Ok(EndDecision::Prepare(p)) = end(Some(&m), 7, 2, true, 5) else {
            panic!("expected prepare");
        };
        assert_eq!(p.state, TxnState::PrepareCommit);
        assert_eq!(
            end(Some(&p), 7, 2, true, 6),
            Err(TxnError::ConcurrentTransactions)
        );
        assert!(matches!(
            end(Some(&p), 7, 2, false, 6),
            Err(TxnError::InvalidTxnState(_))
        ));
        let Some(done) = completed(&p, 7) else {
            panic!("expected completion");
        };
        assert_eq!(done.state, TxnState::CompleteCommit);
        assert!(done.partitions.is_empty());
        assert_eq!(end(Some(&done), 7, 2, true, 8), Ok(EndDecision::Done));
        assert!(matches!(
            end(Some(&done), 7, 2, false, 8),
            Err(TxnError::InvalidTxnState(_))
        ));
        assert!(matches!(
            end(Some(&meta(TxnState::Empty, 2)), 7, 2, true, 8),
            Err(TxnError::InvalidTxnState(_))
        ));
    }

    #[test]
    fn a_transaction_past_its_timeout_is_aborted_with_a_new_epoch() {
        let mut m = meta(TxnState::Ongoing, 2);
        m.start_ms = 1_000;
        m.timeout_ms = 500;
        assert_eq!(timed_out(&m, 1_500), None);
        let Some(a) = timed_out(&m, 1_501) else {
            panic!("expected an abort");
        };
        assert_eq!((a.state, a.producer_epoch), (TxnState::PrepareAbort, 3));
        assert_eq!(timed_out(&meta(TxnState::Empty, 2), i64::MAX), None);
    }

    #[test]
    fn only_idle_ids_expire() {
        let mut m = meta(TxnState::CompleteAbort, 2);
        m.update_ms = 100;
        assert!(!expired(&m, 150, 100));
        assert!(expired(&m, 200, 100));
        m.state = TxnState::Ongoing;
        assert!(!expired(&m, 10_000, 100));
    }

    #[test]
    fn state_numbers_and_names_round_trip() {
        for v in 0..=7 {
            let s = TxnState::from_i8(v).expect("known state");
            assert_eq!(s.to_i8(), v);
            assert_eq!(TxnState::from_name(s.name()), Some(s));
        }
        assert_eq!(TxnState::from_i8(8), None);
    }
}
