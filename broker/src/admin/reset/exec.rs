//! The reset's I/O over [`Client`]: read a group and its scope, plan
//! ([`prepare`]), then [`apply`] that plan: refuse while the group is active,
//! refuse a stale plan, write the undo file, commit, verify.
//!
//! The order in `apply` is the point: the undo file is on disk before the
//! commit, so a reset that went through can always be undone, and a plan is
//! applied only to the offsets it was computed from.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use tokio::task::JoinSet;

use super::{
    check_inactive, file, plan, PartitionOffsets, Plan, PlanError, PlanRow, Refusal, SpanTimes,
    Strategy, TimestampLookup, TopicPartition,
};
use crate::client::{ApiError, Client, ClientError, Isolation, OffsetSpec};

/// How many partitions' span timestamps are looked up at once.
const SPAN_LOOKUPS_IN_FLIGHT: usize = 16;
/// Bytes asked for per fetch when looking for a span's first or last record;
/// a broker returns at least one whole batch whatever this is.
const SPAN_FETCH_BYTES: i32 = 16 * 1024;
/// Fetches spent looking for one end of a span (control batches and
/// compaction can leave offsets without records).
const SPAN_FETCHES: usize = 8;

/// One `--topic` argument: `orders` (every partition) or `orders:0,2,5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSelection {
    pub topic: String,
    /// `None`: all partitions.
    pub partitions: Option<Vec<i32>>,
}

impl FromStr for TopicSelection {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let fix = "write TOPIC or TOPIC:P,P,... e.g. orders or orders:0,2,5";
        let (topic, parts) = match s.split_once(':') {
            None => (s.trim(), None),
            Some((t, p)) => (t.trim(), Some(p)),
        };
        if topic.is_empty() {
            return Err(format!("{s:?} names no topic: {fix}"));
        }
        let partitions = match parts {
            None => None,
            Some(list) => {
                let mut out = Vec::new();
                for p in list.split(',').map(str::trim) {
                    let n: i32 = p.parse().ok().filter(|n| *n >= 0).ok_or_else(|| {
                        format!("partition {p:?} in {s:?} is not a whole number >= 0: {fix}")
                    })?;
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
                out.sort_unstable();
                Some(out)
            }
        };
        Ok(TopicSelection {
            topic: topic.to_string(),
            partitions,
        })
    }
}

/// Which partitions of the group a reset covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Topics(Vec<TopicSelection>),
    /// Every topic the group has committed offsets for.
    AllTopics,
}

impl Scope {
    /// Exactly the given partitions (an undo file's, a `--from-file`'s).
    pub fn partitions<'a>(tps: impl IntoIterator<Item = &'a TopicPartition>) -> Scope {
        let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in tps {
            by_topic.entry(t.clone()).or_default().push(*p);
        }
        Scope::Topics(
            by_topic
                .into_iter()
                .map(|(topic, partitions)| TopicSelection {
                    topic,
                    partitions: Some(partitions),
                })
                .collect(),
        )
    }
}

/// Why a reset was not planned or not applied. Each names the fix.
#[derive(Debug, thiserror::Error)]
pub enum ResetError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("group {0} has no members and no committed offsets: check the name with `sluice groups list`")]
    UnknownGroup(String),
    #[error("cannot describe group {group}: {error}")]
    Group { group: String, error: ApiError },
    #[error("refused: group {group}: {refusal}; active members: {}", .refusal.members.join(", "))]
    Active { group: String, refusal: Refusal },
    #[error("topic {0} does not exist: check the name with `sluice topics list`")]
    UnknownTopic(String),
    #[error("topic {topic} has partitions 0 to {}, not {partition}: fix the partition list after `{topic}:`", .count - 1)]
    UnknownPartition {
        topic: String,
        partition: i32,
        count: i32,
    },
    #[error("group {0} has no committed offsets, so --all-topics selects nothing: name the topics with --topic T")]
    NothingCommitted(String),
    #[error("cannot read the offsets of {topic}-{partition}: {reason}")]
    Offsets {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("the plan is stale, nothing was committed: group {group} changed since it was planned ({}); plan again and check the new preview", .changes.join("; "))]
    Stale { group: String, changes: Vec<String> },
    #[error("cannot write the undo file {path}, nothing was committed: {reason}; pass --undo-file with a writable path")]
    UndoFile { path: PathBuf, reason: String },
    #[error("{} partition(s) not committed: {}{}", .failed.len(), .failed.join("; "), undo_hint(.undo.as_deref()))]
    CommitFailed {
        failed: Vec<String>,
        undo: Option<PathBuf>,
    },
    #[error("after the commit, the group's offsets differ from the plan: {}{}", .mismatched.join("; "), undo_hint(.undo.as_deref()))]
    Verify {
        mismatched: Vec<String>,
        undo: Option<PathBuf>,
    },
}

fn undo_hint(undo: Option<&Path>) -> String {
    match undo {
        Some(p) => format!(
            " (partitions that were committed can be restored with `sluice offsets undo {}`)",
            p.display()
        ),
        None => String::new(),
    }
}

/// What the group looks like now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSnapshot {
    pub state: String,
    /// "client-id@host (member-id)" of each member.
    pub members: Vec<String>,
    /// Every committed offset of the group.
    pub committed: BTreeMap<TopicPartition, i64>,
}

/// Describes `group` and reads its committed offsets.
pub async fn snapshot(client: &Client, group: &str) -> Result<GroupSnapshot, ResetError> {
    let described = client.describe_groups(&[group.to_string()]).await?;
    let d = described
        .into_iter()
        .next()
        .ok_or_else(|| ResetError::UnknownGroup(group.to_string()))?;
    if let Some(error) = d.error {
        return Err(ResetError::Group {
            group: group.to_string(),
            error,
        });
    }
    let members = d
        .members
        .iter()
        .map(|m| format!("{}@{} ({})", m.client_id, m.host, m.member_id))
        .collect();
    let committed = client.committed_offsets(group).await?;
    Ok(GroupSnapshot {
        state: d.state,
        members,
        committed,
    })
}

/// A plan and what it was computed from, ready to show or to [`apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prepared {
    pub group: String,
    pub plan: Plan,
    /// The group's state when planned.
    pub state: String,
    /// The committed offset of each planned partition when planned.
    pub observed: BTreeMap<TopicPartition, Option<i64>>,
    /// `--all-topics` partitions left out, with why (a deleted topic).
    pub ignored: Vec<(TopicPartition, String)>,
    /// The looked-up time (ms) for `--to-datetime` / `--by-duration`.
    pub timestamp: Option<i64>,
}

/// Reads the group and its scope, refuses while it is active, and plans
/// `strategy` with each row's span timestamps. Changes nothing.
pub async fn prepare(
    client: &Client,
    group: &str,
    scope: &Scope,
    strategy: Strategy,
    now_ms: i64,
) -> Result<Prepared, ResetError> {
    let snap = snapshot(client, group).await?;
    let exists = !(snap.members.is_empty()
        && snap.committed.is_empty()
        && (snap.state.is_empty() || snap.state.eq_ignore_ascii_case("Dead")));
    if !exists {
        return Err(ResetError::UnknownGroup(group.to_string()));
    }
    check_inactive(&snap.state, &snap.members).map_err(|refusal| ResetError::Active {
        group: group.to_string(),
        refusal,
    })?;
    let (partitions, ignored) = resolve_scope(client, group, scope, &snap.committed).await?;
    let timestamp = strategy.lookup_timestamp(now_ms);
    let inputs = gather(client, &partitions, &snap.committed, timestamp).await?;
    let mut plan = plan(strategy, &inputs)?;
    add_span_times(client, &mut plan).await?;
    let observed = partitions
        .iter()
        .map(|tp| (tp.clone(), snap.committed.get(tp).copied()))
        .collect();
    Ok(Prepared {
        group: group.to_string(),
        plan,
        state: snap.state,
        observed,
        ignored,
        timestamp,
    })
}

/// The partitions `scope` names, checked against the cluster's metadata;
/// for `--all-topics`, the group's, less those of topics that are gone.
async fn resolve_scope(
    client: &Client,
    group: &str,
    scope: &Scope,
    committed: &BTreeMap<TopicPartition, i64>,
) -> Result<(Vec<TopicPartition>, Vec<(TopicPartition, String)>), ResetError> {
    match scope {
        Scope::AllTopics => {
            if committed.is_empty() {
                return Err(ResetError::NothingCommitted(group.to_string()));
            }
            let topics: Vec<String> = committed
                .keys()
                .map(|(t, _)| t.clone())
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let md = client.metadata(Some(&topics)).await?;
            let mut keep = Vec::new();
            let mut ignored = Vec::new();
            for tp in committed.keys() {
                let count = md
                    .topic(&tp.0)
                    .filter(|t| !t.partitions.is_empty())
                    .map(|t| t.partitions.len());
                match count {
                    None => ignored.push((tp.clone(), "the topic no longer exists".to_string())),
                    Some(n) if usize::try_from(tp.1).ok().filter(|p| *p < n).is_none() => {
                        ignored.push((tp.clone(), format!("the topic has {n} partitions now")))
                    }
                    Some(_) => keep.push(tp.clone()),
                }
            }
            if keep.is_empty() {
                return Err(ResetError::NothingCommitted(group.to_string()));
            }
            Ok((keep, ignored))
        }
        Scope::Topics(selections) => {
            if selections.is_empty() {
                return Err(PlanError::NothingSelected.into());
            }
            let topics: Vec<String> = selections.iter().map(|s| s.topic.clone()).collect();
            let md = client.metadata(Some(&topics)).await?;
            let mut out = BTreeSet::new();
            for s in selections {
                let Some(info) = md.topic(&s.topic).filter(|t| !t.partitions.is_empty()) else {
                    return Err(ResetError::UnknownTopic(s.topic.clone()));
                };
                let count = i32::try_from(info.partitions.len()).unwrap_or(i32::MAX);
                match &s.partitions {
                    None => out.extend((0..count).map(|p| (s.topic.clone(), p))),
                    Some(list) => {
                        for &p in list {
                            if p >= count {
                                return Err(ResetError::UnknownPartition {
                                    topic: s.topic.clone(),
                                    partition: p,
                                    count,
                                });
                            }
                            out.insert((s.topic.clone(), p));
                        }
                    }
                }
            }
            Ok((out.into_iter().collect(), Vec::new()))
        }
    }
}

/// The planner's inputs: log start and end of each partition (and the
/// offset at `timestamp`, when given), with the group's committed offsets.
pub async fn gather(
    client: &Client,
    partitions: &[TopicPartition],
    committed: &BTreeMap<TopicPartition, i64>,
    timestamp: Option<i64>,
) -> Result<BTreeMap<TopicPartition, PartitionOffsets>, ResetError> {
    let start = list(client, partitions, OffsetSpec::Earliest).await?;
    let end = list(client, partitions, OffsetSpec::Latest).await?;
    let at = match timestamp {
        Some(ts) => Some(list(client, partitions, OffsetSpec::Timestamp(ts)).await?),
        None => None,
    };
    let mut out = BTreeMap::new();
    for tp in partitions {
        let (Some(&s), Some(&e)) = (start.get(tp), end.get(tp)) else {
            return Err(offsets_error(tp, "the broker did not answer for it".into()));
        };
        let at_timestamp = match &at {
            None => TimestampLookup::NotLoaded,
            Some(m) => match m.get(tp) {
                Some(&o) if o >= 0 => TimestampLookup::Found(o),
                _ => TimestampLookup::NoneAfter,
            },
        };
        out.insert(
            tp.clone(),
            PartitionOffsets {
                committed: committed.get(tp).copied(),
                start: s,
                end: e,
                at_timestamp,
            },
        );
    }
    Ok(out)
}

fn offsets_error(tp: &TopicPartition, reason: String) -> ResetError {
    ResetError::Offsets {
        topic: tp.0.clone(),
        partition: tp.1,
        reason,
    }
}

async fn list(
    client: &Client,
    partitions: &[TopicPartition],
    spec: OffsetSpec,
) -> Result<BTreeMap<TopicPartition, i64>, ResetError> {
    let listed = client
        .list_offsets(partitions, spec, Isolation::ReadUncommitted)
        .await?;
    let mut out = BTreeMap::new();
    for (tp, r) in listed {
        match r {
            Ok(o) => {
                out.insert(tp, o.offset);
            }
            Err(e) => return Err(offsets_error(&tp, e.to_string())),
        }
    }
    Ok(out)
}

/// Looks up the timestamps of the first and last record of each row's span
/// (what will be re-read or skipped), a few partitions at a time.
pub async fn add_span_times(client: &Client, plan: &mut Plan) -> Result<(), ResetError> {
    let mut todo: Vec<(usize, String, i32, i64, i64)> = plan
        .rows
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            r.span()
                .map(|(from, to)| (i, r.topic.clone(), r.partition, from, to))
        })
        .collect();
    let mut running = JoinSet::new();
    loop {
        while running.len() < SPAN_LOOKUPS_IN_FLIGHT {
            let Some((i, topic, partition, from, to)) = todo.pop() else {
                break;
            };
            let client = client.clone();
            running.spawn(async move {
                let times = span_times(&client, &topic, partition, from, to).await;
                (i, times)
            });
        }
        let Some(done) = running.join_next().await else {
            break;
        };
        let (i, times) = done.map_err(|e| ClientError::Invalid(format!("span lookup: {e}")))?;
        if let Some(row) = plan.rows.get_mut(i) {
            row.span = times?;
        }
    }
    Ok(())
}

async fn span_times(
    client: &Client,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Option<SpanTimes>, ClientError> {
    let first = first_timestamp(client, topic, partition, from, to).await?;
    let last = last_timestamp(client, topic, partition, from, to).await?;
    Ok(match (first, last) {
        (Some(a), Some(b)) => Some(SpanTimes {
            oldest: a.min(b),
            newest: a.max(b),
        }),
        (Some(a), None) | (None, Some(a)) => Some(SpanTimes {
            oldest: a,
            newest: a,
        }),
        (None, None) => None,
    })
}

/// The timestamp of the first record in `[from, to)`.
async fn first_timestamp(
    client: &Client,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Option<i64>, ClientError> {
    let mut pos = from;
    for _ in 0..SPAN_FETCHES {
        if pos >= to {
            break;
        }
        let f = client
            .fetch(
                topic,
                partition,
                pos,
                SPAN_FETCH_BYTES,
                Isolation::ReadUncommitted,
            )
            .await?;
        if let Some(r) = f.records.iter().find(|r| r.offset >= from && r.offset < to) {
            return Ok(Some(r.timestamp));
        }
        if f.next_offset <= pos {
            break;
        }
        pos = f.next_offset;
    }
    Ok(None)
}

/// The timestamp of the last record in `[from, to)`: read from just before
/// `to`, further back each time nothing is found there.
async fn last_timestamp(
    client: &Client,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
) -> Result<Option<i64>, ClientError> {
    let mut back: i64 = 1;
    loop {
        let start = to.saturating_sub(back).max(from);
        let mut pos = start;
        let mut last = None;
        for _ in 0..SPAN_FETCHES {
            let f = client
                .fetch(
                    topic,
                    partition,
                    pos,
                    SPAN_FETCH_BYTES,
                    Isolation::ReadUncommitted,
                )
                .await?;
            if let Some(r) = f
                .records
                .iter()
                .rev()
                .find(|r| r.offset >= from && r.offset < to)
            {
                last = Some(r.timestamp);
            }
            if f.next_offset >= to || f.next_offset <= pos {
                break;
            }
            pos = f.next_offset;
        }
        if last.is_some() || start == from {
            return Ok(last);
        }
        back = back.saturating_mul(64);
    }
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Where the previous offsets were written, if anywhere.
    pub undo_file: Option<PathBuf>,
    /// The offsets now committed (read back after the commit).
    pub committed: BTreeMap<TopicPartition, i64>,
    /// Partitions that had no committed offset before: undo cannot take
    /// their new offset away (a commit cannot store "none").
    pub not_undoable: Vec<TopicPartition>,
}

/// The differences between the committed offsets a plan was made from and
/// the ones read now, as "topic-partition: A -> B".
pub fn stale_changes(
    observed: &BTreeMap<TopicPartition, Option<i64>>,
    now: &BTreeMap<TopicPartition, i64>,
) -> Vec<String> {
    let show = |o: Option<i64>| o.map_or_else(|| "none".to_string(), |o| o.to_string());
    observed
        .iter()
        .filter_map(|(tp, before)| {
            let after = now.get(tp).copied();
            (after != *before).then(|| {
                format!(
                    "{}-{} was committed at {} and is now at {}",
                    tp.0,
                    tp.1,
                    show(*before),
                    show(after)
                )
            })
        })
        .collect()
}

/// Applies a prepared plan: reads the group again and refuses if it is
/// active or its offsets moved since planning, writes the previous offsets
/// to `undo_file` (before committing; `None` writes none), commits the new
/// offsets as an admin commit (generation -1) and reads them back.
pub async fn apply(
    client: &Client,
    prepared: &Prepared,
    undo_file: Option<&Path>,
) -> Result<Applied, ResetError> {
    let group = prepared.group.as_str();
    let now = snapshot(client, group).await?;
    check_inactive(&now.state, &now.members).map_err(|refusal| ResetError::Active {
        group: group.to_string(),
        refusal,
    })?;
    let changes = stale_changes(&prepared.observed, &now.committed);
    if !changes.is_empty() {
        return Err(ResetError::Stale {
            group: group.to_string(),
            changes,
        });
    }
    let previous = prepared.plan.previous_offsets();
    if let Some(path) = undo_file {
        file::write_new(path, &previous).map_err(|e| ResetError::UndoFile {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    }
    let undo = undo_file.map(Path::to_path_buf);
    let wanted = prepared.plan.new_offsets();
    let results = client.commit_offsets(group, &wanted).await?;
    let failed: Vec<String> = results
        .iter()
        .filter_map(|((t, p), r)| r.as_ref().err().map(|e| format!("{t}-{p}: {e}")))
        .collect();
    if !failed.is_empty() {
        return Err(ResetError::CommitFailed { failed, undo });
    }
    let after = client.committed_offsets(group).await?;
    let mismatched: Vec<String> = wanted
        .iter()
        .filter(|(tp, o)| after.get(*tp) != Some(*o))
        .map(|((t, p), o)| {
            let got = after
                .get(&(t.clone(), *p))
                .map_or_else(|| "none".to_string(), |g| g.to_string());
            format!("{t}-{p} is at {got}, planned {o}")
        })
        .collect();
    if !mismatched.is_empty() {
        return Err(ResetError::Verify { mismatched, undo });
    }
    let not_undoable = prepared
        .plan
        .rows
        .iter()
        .filter(|r: &&PlanRow| r.current.is_none())
        .map(|r| (r.topic.clone(), r.partition))
        .collect();
    Ok(Applied {
        undo_file: undo,
        committed: wanted
            .keys()
            .filter_map(|tp| after.get(tp).map(|o| (tp.clone(), *o)))
            .collect(),
        not_undoable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_selections_parse_and_name_the_fix() {
        assert_eq!(
            "orders".parse::<TopicSelection>(),
            Ok(TopicSelection {
                topic: "orders".into(),
                partitions: None
            })
        );
        assert_eq!(
            "orders:5,0, 2,0".parse::<TopicSelection>(),
            Ok(TopicSelection {
                topic: "orders".into(),
                partitions: Some(vec![0, 2, 5])
            })
        );
        for bad in [
            "",
            ":1",
            "orders:",
            "orders:1,x",
            "orders:-1",
            "orders:1,,2",
        ] {
            let e = bad.parse::<TopicSelection>().unwrap_err();
            assert!(e.contains("orders:0,2,5"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn scope_of_exact_partitions_groups_them_by_topic() {
        let tps = [
            ("b".to_string(), 1),
            ("a".to_string(), 0),
            ("b".to_string(), 0),
        ];
        assert_eq!(
            Scope::partitions(tps.iter()),
            Scope::Topics(vec![
                TopicSelection {
                    topic: "a".into(),
                    partitions: Some(vec![0])
                },
                TopicSelection {
                    topic: "b".into(),
                    partitions: Some(vec![1, 0])
                },
            ])
        );
    }

    #[test]
    fn a_plan_is_stale_when_any_planned_offset_moved() {
        let observed = BTreeMap::from([
            (("t".to_string(), 0), Some(5)),
            (("t".to_string(), 1), None),
            (("t".to_string(), 2), Some(7)),
        ]);
        let same = BTreeMap::from([
            (("t".to_string(), 0), 5),
            (("t".to_string(), 2), 7),
            // Partitions outside the plan may move freely.
            (("u".to_string(), 0), 99),
        ]);
        assert!(stale_changes(&observed, &same).is_empty());
        let moved = BTreeMap::from([(("t".to_string(), 0), 6), (("t".to_string(), 1), 3)]);
        assert_eq!(
            stale_changes(&observed, &moved),
            vec![
                "t-0 was committed at 5 and is now at 6",
                "t-1 was committed at none and is now at 3",
                "t-2 was committed at 7 and is now at none",
            ]
        );
    }

    #[test]
    fn errors_name_the_fix() {
        let e = ResetError::UnknownPartition {
            topic: "orders".into(),
            partition: 9,
            count: 6,
        };
        assert_eq!(
            e.to_string(),
            "topic orders has partitions 0 to 5, not 9: fix the partition list after `orders:`"
        );
        let e = ResetError::Active {
            group: "billing".into(),
            refusal: Refusal {
                state: "Stable".into(),
                members: vec!["c1@/10.0.0.1 (m-1)".into()],
            },
        };
        assert!(
            e.to_string().contains("stop its consumers first")
                && e.to_string().contains("c1@/10.0.0.1 (m-1)"),
            "{e}"
        );
        let e = ResetError::CommitFailed {
            failed: vec!["t-0: x".into()],
            undo: Some(PathBuf::from("/u.csv")),
        };
        assert!(e.to_string().contains("sluice offsets undo /u.csv"), "{e}");
    }
}
