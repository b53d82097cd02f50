//! Offset resets: plan, preview, apply and undo.
//!
//! The planner ([`plan`]) is a pure function from what the cluster reports
//! (committed offsets, log start/end offsets, offsets-for-timestamp) to a plan
//! of current -> new offsets per partition. The plan is shown as a preview
//! (dry run) before anything is committed, and it is what the tests pin down;
//! the executor only commits [`Plan::new_offsets`]. Module map:
//! - this file: [`Strategy`], [`plan`], [`check_inactive`] (the same rule as
//!   Kafka's `kafka-consumer-groups`: only Empty or Dead groups).
//! - [`exec`]: the async side over [`crate::client::Client`]: gather the
//!   inputs of a group and scope, resolve timestamps, plan, add the span
//!   timestamps, apply (stale-plan check, undo file first, commit, verify).
//! - [`file`]: the undo/`--from-file` CSV (`topic,partition,offset`, as
//!   Kafka's tool writes it) and default undo-file names.
//! - [`duration`]: `--by-duration` values, ISO 8601 (`PT1H`) or short (`1h30m`).

use std::collections::BTreeMap;
use std::fmt;

pub mod duration;
pub mod exec;
pub mod file;

pub use exec::{apply, prepare, Applied, Prepared, ResetError, Scope, TopicSelection};

pub type TopicPartition = (String, i32);

/// Where to move a group's committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// The committed offset itself (clamped into the log, which is the point:
    /// it repairs offsets that fell outside it); the log end where there is none.
    ToCurrent,
    /// Explicit offsets per partition (`--from-file`, undo), clamped.
    FromFile(BTreeMap<TopicPartition, i64>),
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
            Strategy::ToCurrent => "current",
            Strategy::FromFile(_) => "from file",
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
    /// Timestamps of the first and last record of the span that will be
    /// re-read or skipped; `None` when the span is empty or until
    /// [`exec::add_span_times`] looked them up.
    pub span: Option<SpanTimes>,
}

/// Timestamps (ms) at both ends of a re-read or skipped span: those of its
/// first and last records, which Kafka's timestamps order in all but odd
/// cases (a producer setting old create times), so they are the span's
/// oldest and newest as a reader sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanTimes {
    pub oldest: i64,
    pub newest: i64,
}

impl PlanRow {
    /// The offsets `[from, to)` that the move re-reads or skips: between the
    /// new and the current offset, and only the part still in the log.
    pub fn span(&self) -> Option<(i64, i64)> {
        let current = self.current?;
        let (from, to) = if self.new < current {
            (self.new, current.min(self.end))
        } else {
            (current.max(self.start), self.new)
        };
        (from < to).then_some((from, to))
    }
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

    /// Rows whose target was outside the log and moved to its start or end.
    pub fn clamped(&self) -> impl Iterator<Item = &PlanRow> {
        self.rows.iter().filter(|r| r.clamped.is_some())
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
    #[error(
        "the offsets file has no line for {topic}-{partition}: add `{topic},{partition},OFFSET` to it or leave that partition out of --topic"
    )]
    NotInFile { topic: String, partition: i32 },
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
        if self.members.is_empty() {
            write!(
                f,
                "the group is {}: wait until it is Empty (its consumers stopped), then reset",
                self.state
            )
        } else {
            write!(
                f,
                "the group is {} with {} active member(s): stop its consumers first, then reset",
                self.state,
                self.members.len()
            )
        }
    }
}

/// Offsets can only be reset while the group is inactive: no members and
/// state Empty or Dead, as Kafka's own tool insists (a live consumer would
/// overwrite them on its next commit). An empty state (a broker too old to
/// say) counts on the members alone.
pub fn check_inactive(state: &str, members: &[String]) -> Result<(), Refusal> {
    let inactive_state = state.is_empty()
        || state.eq_ignore_ascii_case("Empty")
        || state.eq_ignore_ascii_case("Dead");
    if members.is_empty() && inactive_state {
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
        let target = match &strategy {
            Strategy::Earliest => p.start,
            Strategy::Latest => p.end,
            Strategy::ToOffset(o) => *o,
            Strategy::ShiftBy(n) => match p.committed {
                Some(c) => c.saturating_add(*n),
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
            Strategy::ToCurrent => p.committed.unwrap_or(p.end),
            Strategy::FromFile(offsets) => match offsets.get(&(topic.clone(), *partition)) {
                Some(&o) => o,
                None => {
                    return Err(PlanError::NotInFile {
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
            // `new` is within [start, end]; a committed offset past the end (a
            // truncated log) has nothing beyond the end to read again.
            Some(c) if new < c => Effect::ReRead((c.min(p.end) - new).max(0)),
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
            span: None,
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

    #[test]
    fn to_current_keeps_offsets_and_clamps_those_outside_the_log() {
        let r = row(Strategy::ToCurrent, offsets(Some(80), 20, 100));
        assert_eq!((r.new, r.clamped, r.effect), (80, None, Effect::Unchanged));
        // Retention moved the log start past the committed offset.
        let r = row(Strategy::ToCurrent, offsets(Some(10), 20, 100));
        assert_eq!((r.new, r.clamped), (20, Some(Clamp::ToStart)));
        assert_eq!(r.effect, Effect::Skip(0));
        // The log was truncated below the committed offset.
        let r = row(Strategy::ToCurrent, offsets(Some(150), 20, 100));
        assert_eq!((r.new, r.clamped), (100, Some(Clamp::ToEnd)));
        assert_eq!(r.effect, Effect::ReRead(0));
        assert_eq!(r.span(), None);
        // No committed offset: the log end, as Kafka's tool does.
        let r = row(Strategy::ToCurrent, offsets(None, 20, 100));
        assert_eq!((r.new, r.effect), (100, Effect::NoCommittedOffset));
    }

    #[test]
    fn from_file_takes_each_partition_offset_and_clamps_it() {
        let file = BTreeMap::from([
            (("orders".to_string(), 0), 30),
            (("orders".to_string(), 1), 5000),
        ]);
        let parts = BTreeMap::from([
            (("orders".to_string(), 0), offsets(Some(80), 20, 100)),
            (("orders".to_string(), 1), offsets(Some(80), 20, 100)),
        ]);
        let p = plan(Strategy::FromFile(file.clone()), &parts).unwrap();
        assert_eq!((p.rows[0].new, p.rows[0].clamped), (30, None));
        assert_eq!(p.rows[0].effect, Effect::ReRead(50));
        assert_eq!(
            (p.rows[1].new, p.rows[1].clamped),
            (100, Some(Clamp::ToEnd))
        );
        assert_eq!(p.clamped().count(), 1);
        let mut more = parts.clone();
        more.insert(("orders".to_string(), 2), offsets(Some(1), 0, 10));
        let err = plan(Strategy::FromFile(file), &more).unwrap_err();
        assert_eq!(
            err,
            PlanError::NotInFile {
                topic: "orders".into(),
                partition: 2
            }
        );
        assert!(err.to_string().contains("add `orders,2,OFFSET`"), "{err}");
    }

    #[test]
    fn span_is_what_is_reread_or_skipped_within_the_log() {
        let r = row(Strategy::ToOffset(30), offsets(Some(80), 20, 100));
        assert_eq!(r.span(), Some((30, 80)));
        let r = row(Strategy::Latest, offsets(Some(10), 40, 100));
        assert_eq!(r.span(), Some((40, 100)));
        let r = row(Strategy::Latest, offsets(Some(100), 40, 100));
        assert_eq!(r.span(), None);
        let r = row(Strategy::Earliest, offsets(None, 0, 10));
        assert_eq!(r.span(), None);
        // The span's length is the effect's count.
        for (s, c) in [
            (Strategy::ShiftBy(-7), Some(50)),
            (Strategy::ShiftBy(9), Some(50)),
            (Strategy::Earliest, Some(5)),
        ] {
            let r = row(s, offsets(c, 10, 100));
            let n = r.span().map_or(0, |(a, b)| b - a);
            match r.effect {
                Effect::ReRead(k) | Effect::Skip(k) => assert_eq!(n, k, "{r:?}"),
                _ => assert_eq!(n, 0),
            }
        }
    }

    #[test]
    fn only_empty_or_dead_groups_may_be_reset() {
        assert!(check_inactive("Dead", &[]).is_ok());
        assert!(check_inactive("", &[]).is_ok());
        let r = check_inactive("PreparingRebalance", &[]).unwrap_err();
        assert!(r.to_string().contains("wait until it is Empty"), "{r}");
        let r = check_inactive("Stable", &["a@h (m1)".into(), "b@h (m2)".into()]).unwrap_err();
        assert_eq!(r.members.len(), 2);
        assert!(r.to_string().contains("2 active member(s)"), "{r}");
    }
}
