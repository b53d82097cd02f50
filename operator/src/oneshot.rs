//! The one-shot resources, `OffsetReset` and `Replay`: checking a spec and
//! turning it into the `sluice_broker::admin` operation it stands for, then
//! running it and reporting what happened as the resource's status.

use std::collections::BTreeMap;

use sluice_broker::admin::replay::{self, Bound, Partitioning};
use sluice_broker::admin::reset::{self, Scope, Strategy, TopicSelection};

use crate::crd::{
    OffsetPlanRow, OffsetResetSpec, PartitionOffset, ReplayPartitioning, ReplaySpec, ResetStrategy,
};

/// A field and what is wrong with it.
pub type FieldError = (String, String);

/// Checks an OffsetReset spec: one strategy, a scope, values that parse.
pub fn check_offset_reset(spec: &OffsetResetSpec) -> Result<(Scope, Strategy), FieldError> {
    if spec.group.trim().is_empty() {
        return Err((
            "spec.group".into(),
            "missing: name the consumer group".into(),
        ));
    }
    let scope = match (&spec.topics, spec.all_topics.unwrap_or(false)) {
        (Some(_), true) => {
            return Err((
                "spec.topics".into(),
                "set topics or allTopics: true, not both".into(),
            ))
        }
        (None, false) => {
            return Err((
                "spec.topics".into(),
                "missing: list topics (topics: [{topic: orders}]) or set allTopics: true".into(),
            ))
        }
        (None, true) => Scope::AllTopics,
        (Some(list), false) => {
            if list.is_empty() {
                return Err((
                    "spec.topics".into(),
                    "empty: list at least one topic or set allTopics: true".into(),
                ));
            }
            let mut out = Vec::new();
            for (i, t) in list.iter().enumerate() {
                if t.topic.trim().is_empty() {
                    return Err((format!("spec.topics[{i}].topic"), "missing".into()));
                }
                if let Some(p) = t
                    .partitions
                    .as_ref()
                    .and_then(|ps| ps.iter().find(|p| **p < 0))
                {
                    return Err((
                        format!("spec.topics[{i}].partitions"),
                        format!("{p} is not a partition number (0 or more)"),
                    ));
                }
                out.push(TopicSelection {
                    topic: t.topic.clone(),
                    partitions: t.partitions.clone(),
                });
            }
            Scope::Topics(out)
        }
    };
    Ok((scope, strategy(&spec.strategy)?))
}

fn strategy(s: &ResetStrategy) -> Result<Strategy, FieldError> {
    let mut found = Vec::new();
    if s.to_earliest.is_some() {
        found.push(Strategy::Earliest);
    }
    if s.to_latest.is_some() {
        found.push(Strategy::Latest);
    }
    if let Some(o) = s.to_offset {
        if o < 0 {
            return Err((
                "spec.strategy.toOffset".into(),
                format!("{o} is negative: offsets start at 0"),
            ));
        }
        found.push(Strategy::ToOffset(o));
    }
    if let Some(n) = s.shift_by {
        found.push(Strategy::ShiftBy(n));
    }
    if let Some(t) = &s.to_datetime {
        let ms =
            replay::parse_timestamp(t).map_err(|e| ("spec.strategy.toDatetime".to_string(), e))?;
        found.push(Strategy::ToDatetime(ms));
    }
    if let Some(d) = &s.by_duration {
        let ms = reset::duration::parse_duration(d)
            .map_err(|e| ("spec.strategy.byDuration".to_string(), e))?;
        found.push(Strategy::DurationAgo(ms));
    }
    if s.to_current.is_some() {
        found.push(Strategy::ToCurrent);
    }
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err((
            "spec.strategy".into(),
            "missing: set one of toEarliest, toLatest, toOffset, shiftBy, toDatetime, byDuration, toCurrent".into(),
        )),
        _ => Err((
            "spec.strategy".into(),
            format!(
                "{} strategies are set ({}): set exactly one",
                found.len(),
                found.iter().map(Strategy::name).collect::<Vec<_>>().join(", ")
            ),
        )),
    }
}

/// A reset plan as status rows.
pub fn plan_rows(plan: &reset::Plan) -> Vec<OffsetPlanRow> {
    plan.rows
        .iter()
        .map(|r| OffsetPlanRow {
            topic: r.topic.clone(),
            partition: r.partition,
            current: r.current,
            new: r.new,
            messages: match r.current {
                Some(c) => c - r.new,
                None => r.end - r.new,
            },
            note: r.clamped.map(|c| format!("{c:?}").to_lowercase()),
        })
        .collect()
}

pub fn offsets_list(offsets: &BTreeMap<(String, i32), i64>) -> Vec<PartitionOffset> {
    offsets
        .iter()
        .map(|((topic, partition), offset)| PartitionOffset {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
        })
        .collect()
}

/// Checks a Replay spec and turns it into the admin replay's spec.
pub fn check_replay(spec: &ReplaySpec) -> Result<replay::ReplaySpec, FieldError> {
    if spec.source.topic.trim().is_empty() {
        return Err(("spec.source.topic".into(), "missing".into()));
    }
    if spec.destination.topic.trim().is_empty() {
        return Err(("spec.destination.topic".into(), "missing".into()));
    }
    let start = Bound::parse_start(&spec.source.start)
        .map_err(|e| ("spec.source.start".to_string(), fix_flag(&e)))?;
    let end = Bound::parse_end(&spec.source.end)
        .map_err(|e| ("spec.source.end".to_string(), fix_flag(&e)))?;
    replay::check_bounds(start, end).map_err(|e| ("spec.source.end".to_string(), fix_flag(&e)))?;
    if let Some(p) = spec
        .source
        .partitions
        .as_ref()
        .and_then(|ps| ps.iter().find(|p| **p < 0))
    {
        return Err((
            "spec.source.partitions".into(),
            format!("{p} is not a partition number (0 or more)"),
        ));
    }
    if let Some(rate) = spec.rate.filter(|r| *r < 1) {
        return Err((
            "spec.rate".into(),
            format!("{rate} records per second would copy nothing: set 1 or more, or leave it out"),
        ));
    }
    let same_cluster = spec.destination.bootstrap.is_none();
    if same_cluster && spec.source.topic == spec.destination.topic {
        return Err((
            "spec.destination.topic".into(),
            "is the source topic: a replay into its own source never ends; name another topic"
                .into(),
        ));
    }
    Ok(replay::ReplaySpec {
        source_topic: spec.source.topic.clone(),
        partitions: spec.source.partitions.clone(),
        dest_topic: spec.destination.topic.clone(),
        start,
        end,
        partitioning: match spec.destination.partitioning {
            ReplayPartitioning::Same => Partitioning::Same,
            ReplayPartitioning::Key => Partitioning::Key,
            ReplayPartitioning::RoundRobin => Partitioning::RoundRobin,
        },
        resume: None,
        same_cluster,
    })
}

/// The admin replay's messages talk about `--start` / `--end`; a manifest
/// has `start:` / `end:` fields.
fn fix_flag(msg: &str) -> String {
    msg.replace("--start", "start").replace("--end", "end")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{ReplayDestination, ReplaySource, TopicPartitions};

    fn reset_spec(strategy: ResetStrategy) -> OffsetResetSpec {
        OffsetResetSpec {
            group: "billing".into(),
            topics: Some(vec![TopicPartitions {
                topic: "orders".into(),
                partitions: Some(vec![0, 2]),
            }]),
            all_topics: None,
            strategy,
            dry_run: false,
        }
    }

    #[test]
    fn each_strategy_maps_to_the_admin_strategy() {
        let cases = [
            (
                ResetStrategy {
                    to_earliest: Some(true),
                    ..Default::default()
                },
                Strategy::Earliest,
            ),
            (
                ResetStrategy {
                    shift_by: Some(-5),
                    ..Default::default()
                },
                Strategy::ShiftBy(-5),
            ),
            (
                ResetStrategy {
                    to_datetime: Some("2026-11-21T10:00:00Z".into()),
                    ..Default::default()
                },
                Strategy::ToDatetime(1_795_255_200_000),
            ),
            (
                ResetStrategy {
                    by_duration: Some("PT1H".into()),
                    ..Default::default()
                },
                Strategy::DurationAgo(3_600_000),
            ),
        ];
        for (s, want) in cases {
            let (scope, got) = check_offset_reset(&reset_spec(s)).expect("valid");
            assert_eq!(got, want);
            assert_eq!(
                scope,
                Scope::Topics(vec![TopicSelection {
                    topic: "orders".into(),
                    partitions: Some(vec![0, 2])
                }])
            );
        }
    }

    #[test]
    fn two_strategies_are_refused_naming_both() {
        let err = check_offset_reset(&reset_spec(ResetStrategy {
            to_earliest: Some(true),
            to_offset: Some(4),
            ..Default::default()
        }))
        .expect_err("two strategies");
        assert_eq!(err.0, "spec.strategy");
        assert!(err.1.contains("earliest, offset"), "{}", err.1);
    }

    #[test]
    fn no_scope_and_bad_values_are_refused_with_the_field() {
        let mut s = reset_spec(ResetStrategy {
            to_latest: Some(true),
            ..Default::default()
        });
        s.topics = None;
        assert_eq!(
            check_offset_reset(&s).expect_err("no scope").0,
            "spec.topics"
        );
        let s = reset_spec(ResetStrategy {
            by_duration: Some("an hour".into()),
            ..Default::default()
        });
        assert_eq!(
            check_offset_reset(&s).expect_err("bad duration").0,
            "spec.strategy.byDuration"
        );
    }

    #[test]
    fn replay_spec_is_checked_and_converted() {
        let mut spec = ReplaySpec {
            source: ReplaySource {
                topic: "orders.dlq".into(),
                partitions: None,
                start: "@2026-11-21T10:00:00Z".into(),
                end: "latest".into(),
            },
            destination: ReplayDestination {
                topic: "orders".into(),
                bootstrap: None,
                partitioning: ReplayPartitioning::Key,
            },
            rate: Some(100),
        };
        let r = check_replay(&spec).expect("valid");
        assert_eq!(r.start, Bound::Timestamp(1_795_255_200_000));
        assert_eq!(r.partitioning, Partitioning::Key);
        assert!(r.same_cluster);
        spec.source.end = "10".into();
        spec.source.start = "20".into();
        let err = check_replay(&spec).expect_err("end before start");
        assert_eq!(err.0, "spec.source.end");
        assert!(!err.1.contains("--"), "{}", err.1);
        spec.source.start = "earliest".into();
        spec.destination.topic = "orders.dlq".into();
        assert_eq!(
            check_replay(&spec).expect_err("loop").0,
            "spec.destination.topic"
        );
    }
}
