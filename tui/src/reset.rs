//! Offset-reset planning: a pure function from what the cluster reports (committed
//! offsets, log start/end offsets, offsets-for-timestamp) to a plan of current -> new
//! offsets per partition. The plan is shown as a preview before anything is committed,
//! and it is what the tests pin down; the executor only commits `Plan::new_offsets`.
//!
//! Kept free of the client so it can move to `sluice_broker::admin` unchanged.

use std::collections::BTreeMap;
use std::fmt;

pub type TopicPartition = (String, i32);

/// Where to move a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Earliest,
    Latest,
    /// An absolute offset, clamped to the partition's [start, end].
    ToOffset(i64),
    /// Current committed offset plus N (negative rewinds), clamped.
    ShiftBy(i64),
    /// The first offset whose timestamp is at or after this time (ms since epoch).
    ToDatetime(i64),
    /// The first offset at or after `now - ms`; resolved to `ToDatetime` by the caller.
    DurationAgo(i64),
}

impl Strategy {
    /// The timestamp that must be looked up with ListOffsets before planning, if any.
    pub fn lookup_timestamp(&self, now_ms: i64) -> Option<i64> {
        match *self {
            Strategy::ToDatetime(ts) => Some(ts),
            Strategy::DurationAgo(ms) => Some(now_ms - ms),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Earliest => "earliest",
            Strategy::Latest => "latest",
            Strategy::ToOffset(_) => "offset",
            Strategy::ShiftBy(_) => "shift by",
            Strategy::ToDatetime(_) => "datetime",
            Strategy::DurationAgo(_) => "duration ago",
        }
    }
}

/// The result of a ListOffsets-by-timestamp lookup for one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampLookup {
    NotLoaded,
    /// First offset with a timestamp at or after the one asked for.
    Found(i64),
    /// No message at or after that time: Kafka's tools then use the log end offset.
    NoneAfter,
}

/// What the cluster reports about one partition, the planner's whole input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub committed: Option<i64>,
    pub start: i64,
    pub end: i64,
    pub at_timestamp: TimestampLookup,
}

/// Which bound an out-of-range target was moved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamp {
    /// Below the log start offset (deleted by retention): moved up to it.
    ToStart,
    /// Past the log end offset: moved down to it.
    ToEnd,
}

/// What the move means for the group's consumers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Messages consumed again.
    ReRead(i64),
    /// Messages never consumed.
    Skip(i64),
    Unchanged,
    /// No committed offset before: the consumer would start per `auto.offset.reset`.
    NoCommittedOffset,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub new: i64,
    pub start: i64,
    pub end: i64,
    pub clamped: Option<Clamp>,
    pub effect: Effect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub strategy: Strategy,
    pub rows: Vec<PlanRow>,
}

impl Plan {
    /// The offsets to commit.
    pub fn new_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.rows
            .iter()
            .map(|r| ((r.topic.clone(), r.partition), r.new))
            .collect()
    }

    /// The committed offsets before the reset, for undo. Partitions that had none are
    /// absent: a commit cannot bring "no offset" back.
    pub fn previous_offsets(&self) -> BTreeMap<TopicPartition, i64> {
        self.rows
            .iter()
            .filter_map(|r| r.current.map(|c| ((r.topic.clone(), r.partition), c)))
            .collect()
    }

    pub fn total_reread(&self) -> i64 {
        self.rows
            .iter()
            .map(|r| match r.effect {
                Effect::ReRead(n) => n,
                _ => 0,
            })
            .sum()
    }

    pub fn total_skipped(&self) -> i64 {
        self.rows
            .iter()
            .map(|r| match r.effect {
                Effect::Skip(n) => n,
                _ => 0,
            })
            .sum()
    }

    pub fn changes_anything(&self) -> bool {
        self.rows.iter().any(|r| r.current != Some(r.new))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("no partitions chosen: select at least one topic with space")]
    NothingSelected,
    #[error(
        "shift by needs a committed offset, and {topic}-{partition} has none: use earliest, latest or offset for it"
    )]
    ShiftWithoutCommitted { topic: String, partition: i32 },
    #[error("the offset for the chosen time was not looked up for {topic}-{partition}: reload the preview")]
    TimestampNotLoaded { topic: String, partition: i32 },
}

/// Why a reset is refused before any planning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub state: String,
    /// "client-id@host (member-id)" of each active member.
    pub members: Vec<String>,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the group is {} with {} active member(s): stop its consumers first, then reset",
            self.state,
            self.members.len()
        )
    }
}

/// Offsets can only be reset while the group has no members (state Empty or Dead), as
/// Kafka's own tool insists: a live consumer would overwrite them on its next commit.
pub fn check_inactive(state: &str, members: &[String]) -> Result<(), Refusal> {
    if members.is_empty() {
        Ok(())
    } else {
        Err(Refusal {
            state: state.to_string(),
            members: members.to_vec(),
        })
    }
}

/// Plans a reset over the given partitions.
pub fn plan(
    strategy: Strategy,
    partitions: &BTreeMap<TopicPartition, PartitionOffsets>,
) -> Result<Plan, PlanError> {
    if partitions.is_empty() {
        return Err(PlanError::NothingSelected);
    }
    let mut rows = Vec::with_capacity(partitions.len());
    for ((topic, partition), p) in partitions {
        let target = match strategy {
            Strategy::Earliest => p.start,
            Strategy::Latest => p.end,
            Strategy::ToOffset(o) => o,
            Strategy::ShiftBy(n) => match p.committed {
                Some(c) => c.saturating_add(n),
                None => {
                    return Err(PlanError::ShiftWithoutCommitted {
                        topic: topic.clone(),
                        partition: *partition,
                    })
                }
            },
            Strategy::ToDatetime(_) | Strategy::DurationAgo(_) => match p.at_timestamp {
                TimestampLookup::Found(o) => o,
                TimestampLookup::NoneAfter => p.end,
                TimestampLookup::NotLoaded => {
                    return Err(PlanError::TimestampNotLoaded {
                        topic: topic.clone(),
                        partition: *partition,
                    })
                }
            },
        };
        let (new, clamped) = if target < p.start {
            (p.start, Some(Clamp::ToStart))
        } else if target > p.end {
            (p.end, Some(Clamp::ToEnd))
        } else {
            (target, None)
        };
        let effect = match p.committed {
            None => Effect::NoCommittedOffset,
            // `new` is within [start, end], so everything between it and `c` exists.
            Some(c) if new < c => Effect::ReRead(c - new),
            // Messages below the log start are gone already; only retained ones count.
            Some(c) if new > c => Effect::Skip((new - c.max(p.start)).max(0)),
            Some(_) => Effect::Unchanged,
        };
        rows.push(PlanRow {
            topic: topic.clone(),
            partition: *partition,
            current: p.committed,
            new,
            start: p.start,
            end: p.end,
            clamped,
            effect,
        });
    }
    Ok(Plan { strategy, rows })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(committed: Option<i64>, start: i64, end: i64) -> PartitionOffsets {
        PartitionOffsets {
            committed,
            start,
            end,
            at_timestamp: TimestampLookup::NotLoaded,
        }
    }

    fn one(p: PartitionOffsets) -> BTreeMap<TopicPartition, PartitionOffsets> {
        BTreeMap::from([(("orders".to_string(), 0), p)])
    }

    fn row(strategy: Strategy, p: PartitionOffsets) -> PlanRow {
        plan(strategy, &one(p)).unwrap().rows.remove(0)
    }

    #[test]
    fn earliest_rereads_everything_retained_behind_the_committed_offset() {
        let r = row(Strategy::Earliest, offsets(Some(80), 20, 100));
        assert_eq!((r.current, r.new, r.clamped), (Some(80), 20, None));
        assert_eq!(r.effect, Effect::ReRead(60));
    }

    #[test]
    fn latest_skips_the_lag() {
        let r = row(Strategy::Latest, offsets(Some(80), 20, 100));
        assert_eq!(r.new, 100);
        assert_eq!(r.effect, Effect::Skip(20));
    }

    #[test]
    fn to_offset_below_log_start_is_clamped_to_start() {
        let r = row(Strategy::ToOffset(5), offsets(Some(80), 20, 100));
        assert_eq!((r.new, r.clamped), (20, Some(Clamp::ToStart)));
        assert_eq!(r.effect, Effect::ReRead(60));
    }

    #[test]
    fn to_offset_past_end_is_clamped_to_end() {
        let r = row(Strategy::ToOffset(500), offsets(Some(80), 20, 100));
        assert_eq!((r.new, r.clamped), (100, Some(Clamp::ToEnd)));
        assert_eq!(r.effect, Effect::Skip(20));
    }

    #[test]
    fn shift_by_negative_rewinds_and_clamps() {
        let r = row(Strategy::ShiftBy(-10), offsets(Some(80), 20, 100));
        assert_eq!((r.new, r.effect), (70, Effect::ReRead(10)));
        let r = row(Strategy::ShiftBy(-1000), offsets(Some(80), 20, 100));
        assert_eq!((r.new, r.clamped), (20, Some(Clamp::ToStart)));
        let r = row(Strategy::ShiftBy(15), offsets(Some(80), 20, 100));
        assert_eq!((r.new, r.effect), (95, Effect::Skip(15)));
    }

    #[test]
    fn shift_by_refuses_a_partition_without_committed_offset() {
        let err = plan(Strategy::ShiftBy(3), &one(offsets(None, 0, 10))).unwrap_err();
        assert_eq!(
            err,
            PlanError::ShiftWithoutCommitted {
                topic: "orders".into(),
                partition: 0
            }
        );
        assert!(err.to_string().contains("use earliest, latest or offset"));
    }

    #[test]
    fn datetime_uses_the_looked_up_offset_or_end_when_nothing_is_newer() {
        let mut p = offsets(Some(50), 0, 100);
        p.at_timestamp = TimestampLookup::Found(30);
        let r = row(Strategy::ToDatetime(1_700_000_000_000), p);
        assert_eq!((r.new, r.effect), (30, Effect::ReRead(20)));
        p.at_timestamp = TimestampLookup::NoneAfter;
        let r = row(Strategy::DurationAgo(60_000), p);
        assert_eq!((r.new, r.effect), (100, Effect::Skip(50)));
    }

    #[test]
    fn datetime_without_lookup_is_an_error_not_a_guess() {
        let err = plan(Strategy::ToDatetime(1), &one(offsets(Some(1), 0, 2))).unwrap_err();
        assert!(matches!(err, PlanError::TimestampNotLoaded { .. }));
    }

    #[test]
    fn committed_offset_below_log_start_counts_only_retained_messages() {
        // Retention deleted up to 40; the group was at 10. Moving to latest skips only
        // what is still there to skip.
        let r = row(Strategy::Latest, offsets(Some(10), 40, 100));
        assert_eq!(r.effect, Effect::Skip(60));
        let r = row(Strategy::Earliest, offsets(Some(10), 40, 100));
        assert_eq!((r.new, r.effect), (40, Effect::Skip(0)));
    }

    #[test]
    fn no_committed_offset_is_reported_as_such() {
        let r = row(Strategy::Earliest, offsets(None, 0, 10));
        assert_eq!(r.effect, Effect::NoCommittedOffset);
    }

    #[test]
    fn plan_totals_and_undo_offsets() {
        let parts = BTreeMap::from([
            (("a".to_string(), 0), offsets(Some(5), 0, 10)),
            (("a".to_string(), 1), offsets(None, 0, 10)),
            (("b".to_string(), 0), offsets(Some(10), 0, 10)),
        ]);
        let p = plan(Strategy::Earliest, &parts).unwrap();
        assert_eq!(p.total_reread(), 15);
        assert_eq!(p.total_skipped(), 0);
        assert_eq!(
            p.previous_offsets(),
            BTreeMap::from([(("a".to_string(), 0), 5), (("b".to_string(), 0), 10)])
        );
        assert_eq!(p.new_offsets().len(), 3);
        assert!(p.changes_anything());
        let same = plan(Strategy::Latest, &one(offsets(Some(10), 0, 10))).unwrap();
        assert!(!same.changes_anything());
    }

    #[test]
    fn empty_selection_names_the_fix() {
        let err = plan(Strategy::Earliest, &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("select at least one topic"));
    }

    #[test]
    fn active_members_refuse_the_reset() {
        assert!(check_inactive("Empty", &[]).is_ok());
        let r = check_inactive("Stable", &["c1@/10.0.0.1 (m-1)".into()]).unwrap_err();
        assert!(r.to_string().contains("stop its consumers first"));
    }

    #[test]
    fn duration_ago_resolves_against_now() {
        assert_eq!(
            Strategy::DurationAgo(1000).lookup_timestamp(5000),
            Some(4000)
        );
        assert_eq!(Strategy::Earliest.lookup_timestamp(5000), None);
    }
}
