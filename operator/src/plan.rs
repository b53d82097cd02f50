//! The planner: desired topics + the observed cluster -> ordered actions,
//! each with its reason, and refusals for what Kafka cannot do. Pure: no
//! I/O, no clock. `apply`/`diff` and the in-cluster controller both call it;
//! the executor (`exec`) carries the actions out.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::crd::DeletionPolicy;

/// A topic as a manifest or resource asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredTopic {
    /// Where it came from, for messages: `topics.yaml: Topic default/orders`.
    pub source: String,
    /// The Kafka topic name.
    pub name: String,
    /// `None`: the broker's default on create, left alone afterwards.
    pub partitions: Option<i32>,
    pub replicas: Option<i32>,
    /// Normalised to strings.
    pub config: BTreeMap<String, String>,
    pub deletion_policy: DeletionPolicy,
    /// `sluice.dev/managed: "false"` clears this: leave the topic alone.
    pub managed: bool,
    /// `sluice.dev/paused: "true"` sets this: plan nothing for now.
    pub paused: bool,
    /// The configs the operator last applied (a Topic's status), so a value
    /// changed on the cluster since is told apart from a spec change.
    pub last_applied: Option<BTreeMap<String, String>>,
}

impl DesiredTopic {
    pub fn new(source: impl Into<String>, name: impl Into<String>) -> DesiredTopic {
        DesiredTopic {
            source: source.into(),
            name: name.into(),
            partitions: None,
            replicas: None,
            config: BTreeMap::new(),
            deletion_policy: DeletionPolicy::Delete,
            managed: true,
            paused: false,
            last_applied: None,
        }
    }
}

/// A topic as the cluster has it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedTopic {
    pub name: String,
    pub id: Option<String>,
    pub internal: bool,
    /// Per partition, by index: the leader and the replica list.
    pub partitions: Vec<ObservedPartition>,
    /// Every config's effective value (any source).
    pub config: BTreeMap<String, String>,
    /// The keys set on the topic itself (DescribeConfigs source "topic").
    pub overrides: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObservedPartition {
    pub index: i32,
    pub leader: i32,
    pub replicas: Vec<i32>,
}

impl ObservedTopic {
    pub fn partition_count(&self) -> i32 {
        self.partitions.len() as i32
    }

    /// The replication factor: the smallest replica list (a partition in
    /// the middle of a reassignment may briefly have more).
    pub fn replication_factor(&self) -> i32 {
        self.partitions
            .iter()
            .map(|p| p.replicas.len() as i32)
            .min()
            .unwrap_or(0)
    }

    /// The configs set on the topic itself, with their values.
    pub fn override_values(&self) -> BTreeMap<String, String> {
        self.overrides
            .iter()
            .filter_map(|k| self.config.get(k).map(|v| (k.clone(), v.clone())))
            .collect()
    }
}

/// The cluster as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub brokers: Vec<i32>,
    pub topics: BTreeMap<String, ObservedTopic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    /// Remove topic-level configs the spec does not mention, and (for
    /// `apply --prune`) delete topics no manifest declares.
    pub prune: bool,
}

/// One change to the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Create {
        topic: String,
        /// -1: the broker's default.
        partitions: i32,
        replicas: i32,
        config: BTreeMap<String, String>,
    },
    AddPartitions {
        topic: String,
        from: i32,
        to: i32,
    },
    AlterConfig {
        topic: String,
        /// key -> (value now, value wanted).
        set: BTreeMap<String, (Option<String>, String)>,
        /// Keys set on the topic that the spec does not mention (prune).
        delete: BTreeMap<String, String>,
    },
    /// Change the replication factor by moving replicas.
    Reassign {
        topic: String,
        from: i32,
        to: i32,
        /// The new replica list of every partition whose list changes.
        assignments: BTreeMap<i32, Vec<i32>>,
    },
    Delete {
        topic: String,
    },
}

impl Action {
    pub fn topic(&self) -> &str {
        match self {
            Action::Create { topic, .. }
            | Action::AddPartitions { topic, .. }
            | Action::AlterConfig { topic, .. }
            | Action::Reassign { topic, .. }
            | Action::Delete { topic } => topic,
        }
    }

    /// A short name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Create { .. } => "create",
            Action::AddPartitions { .. } => "add-partitions",
            Action::AlterConfig { .. } => "alter-config",
            Action::Reassign { .. } => "reassign",
            Action::Delete { .. } => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Create {
                topic,
                partitions,
                replicas,
                config,
            } => {
                write!(
                    f,
                    "create topic {topic} with {} and {}",
                    count_or_default(*partitions, "partitions"),
                    count_or_default(*replicas, "replicas")
                )?;
                for (k, v) in config {
                    write!(f, "\n    + {k}={v}")?;
                }
                Ok(())
            }
            Action::AddPartitions { topic, from, to } => {
                write!(f, "add partitions to {topic}: {from} -> {to}")
            }
            Action::AlterConfig { topic, set, delete } => {
                write!(f, "alter configs of {topic}")?;
                for (k, (old, new)) in set {
                    match old {
                        Some(old) => write!(f, "\n    ~ {k}: {old} -> {new}")?,
                        None => write!(f, "\n    + {k}={new}")?,
                    }
                }
                for (k, old) in delete {
                    write!(f, "\n    - {k} (was {old}; back to the broker default)")?;
                }
                Ok(())
            }
            Action::Reassign {
                topic,
                from,
                to,
                assignments,
            } => {
                write!(
                    f,
                    "change the replication factor of {topic}: {from} -> {to}"
                )?;
                for (p, replicas) in assignments {
                    write!(f, "\n    partition {p} -> replicas {replicas:?}")?;
                }
                Ok(())
            }
            Action::Delete { topic } => write!(f, "delete topic {topic}"),
        }
    }
}

fn count_or_default(n: i32, what: &str) -> String {
    if n < 0 {
        format!("the broker's default {what}")
    } else {
        format!("{n} {what}")
    }
}

/// An action with why it is needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub action: Action,
    pub reason: String,
}

/// Something asked for that Kafka cannot do; nothing is done for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    PartitionsShrink {
        topic: String,
        has: i32,
        asked: i32,
    },
    NotEnoughBrokers {
        topic: String,
        asked: i32,
        brokers: usize,
    },
    /// Two resources or manifests name the same topic.
    Conflict {
        topic: String,
        other: String,
    },
}

impl Refusal {
    /// A CamelCase reason for conditions, events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::PartitionsShrink { .. } => "PartitionsCannotShrink",
            Refusal::NotEnoughBrokers { .. } => "NotEnoughBrokers",
            Refusal::Conflict { .. } => "Conflict",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::PartitionsShrink { topic, has, asked } => write!(
                f,
                "partitions can only grow: topic {topic} has {has}, the spec asks for {asked} \
                 (Kafka cannot remove partitions; set partitions: {has} or more, or create a new topic)"
            ),
            Refusal::NotEnoughBrokers {
                topic,
                asked,
                brokers,
            } => write!(
                f,
                "topic {topic} asks for {asked} replicas but the cluster has {brokers} broker(s): \
                 set replicas to {brokers} or fewer"
            ),
            Refusal::Conflict { topic, other } => write!(
                f,
                "topic {topic} is already claimed by {other}: only the older resource manages it"
            ),
        }
    }
}

/// What one desired topic needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    pub topic: String,
    pub source: String,
    pub steps: Vec<Step>,
    pub refusals: Vec<Refusal>,
    /// Why nothing was planned at all (unmanaged, paused).
    pub skipped: Option<String>,
    /// Config keys whose value on the cluster differs from what the
    /// operator last applied (changed outside it), with the value found.
    pub drift: BTreeMap<String, Option<String>>,
}

impl TopicPlan {
    pub fn is_noop(&self) -> bool {
        self.steps.is_empty() && self.refusals.is_empty()
    }
}

/// The whole plan for a set of manifests.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub topics: Vec<TopicPlan>,
    /// `--prune`: topics on the cluster that no manifest declares.
    pub prune: Vec<Step>,
}

impl Plan {
    /// Every action in execution order.
    pub fn steps(&self) -> impl Iterator<Item = &Step> {
        self.topics
            .iter()
            .flat_map(|t| t.steps.iter())
            .chain(self.prune.iter())
    }

    pub fn refusals(&self) -> impl Iterator<Item = (&TopicPlan, &Refusal)> {
        self.topics
            .iter()
            .flat_map(|t| t.refusals.iter().map(move |r| (t, r)))
    }

    pub fn has_changes(&self) -> bool {
        self.steps().next().is_some()
    }
}

/// Plans every desired topic against the cluster. The first manifest to
/// name a topic wins; later ones get a conflict refusal. With
/// `options.prune`, topics on the cluster that no manifest names are
/// deleted, except internal ones (`__consumer_offsets`, names starting with
/// `__`).
pub fn plan(desired: &[DesiredTopic], observed: &Observed, options: Options) -> Plan {
    let mut claimed: BTreeMap<&str, &str> = BTreeMap::new();
    let mut topics = Vec::with_capacity(desired.len());
    for d in desired {
        if let Some(first) = claimed.get(d.name.as_str()) {
            topics.push(TopicPlan {
                topic: d.name.clone(),
                source: d.source.clone(),
                steps: Vec::new(),
                refusals: vec![Refusal::Conflict {
                    topic: d.name.clone(),
                    other: (*first).to_string(),
                }],
                skipped: None,
                drift: BTreeMap::new(),
            });
            continue;
        }
        claimed.insert(&d.name, &d.source);
        topics.push(plan_topic(
            d,
            observed.topics.get(&d.name),
            &observed.brokers,
            options,
        ));
    }
    let mut prune = Vec::new();
    if options.prune {
        for t in observed.topics.values() {
            if claimed.contains_key(t.name.as_str()) || is_internal(t) {
                continue;
            }
            prune.push(Step {
                action: Action::Delete {
                    topic: t.name.clone(),
                },
                reason: "--prune: no manifest declares this topic".to_string(),
            });
        }
    }
    Plan { topics, prune }
}

/// Internal topics are never pruned.
pub fn is_internal(t: &ObservedTopic) -> bool {
    t.internal || t.name.starts_with("__")
}

/// Plans one desired topic against what the cluster has of it.
pub fn plan_topic(
    d: &DesiredTopic,
    observed: Option<&ObservedTopic>,
    brokers: &[i32],
    options: Options,
) -> TopicPlan {
    let mut out = TopicPlan {
        topic: d.name.clone(),
        source: d.source.clone(),
        steps: Vec::new(),
        refusals: Vec::new(),
        skipped: None,
        drift: BTreeMap::new(),
    };
    if !d.managed {
        out.skipped = Some("sluice.dev/managed is \"false\": the topic is left alone".to_string());
        return out;
    }
    if d.paused {
        out.skipped = Some("sluice.dev/paused is \"true\": reconciliation is paused".to_string());
        return out;
    }
    if let Some(asked) = d.replicas {
        if !brokers.is_empty() && asked as usize > brokers.len() {
            out.refusals.push(Refusal::NotEnoughBrokers {
                topic: d.name.clone(),
                asked,
                brokers: brokers.len(),
            });
        }
    }
    let Some(t) = observed else {
        if out.refusals.is_empty() {
            out.steps.push(Step {
                action: Action::Create {
                    topic: d.name.clone(),
                    partitions: d.partitions.unwrap_or(-1),
                    replicas: d.replicas.unwrap_or(-1),
                    config: d.config.clone(),
                },
                reason: "the topic does not exist".to_string(),
            });
        }
        return out;
    };

    let has = t.partition_count();
    match d.partitions {
        Some(asked) if asked < has => out.refusals.push(Refusal::PartitionsShrink {
            topic: d.name.clone(),
            has,
            asked,
        }),
        Some(asked) if asked > has => out.steps.push(Step {
            action: Action::AddPartitions {
                topic: d.name.clone(),
                from: has,
                to: asked,
            },
            reason: format!("the spec asks for {asked} partitions, the topic has {has}"),
        }),
        _ => {}
    }

    plan_config(d, t, options, &mut out);

    if let Some(asked) = d.replicas {
        let rf = t.replication_factor();
        if asked != rf && out.refusals.is_empty() {
            out.steps.push(Step {
                action: Action::Reassign {
                    topic: d.name.clone(),
                    from: rf,
                    to: asked,
                    assignments: reassign(t, asked, brokers),
                },
                reason: format!("the spec asks for {asked} replicas, the topic has {rf}"),
            });
        }
    }
    out
}

fn plan_config(d: &DesiredTopic, t: &ObservedTopic, options: Options, out: &mut TopicPlan) {
    let mut set = BTreeMap::new();
    let mut why = Vec::new();
    for (k, want) in &d.config {
        let now = t.config.get(k);
        if now == Some(want) {
            continue;
        }
        let last = d.last_applied.as_ref().and_then(|l| l.get(k));
        if last == Some(want) {
            out.drift.insert(k.clone(), now.cloned());
            why.push(format!(
                "{k} was changed outside the operator to {}",
                now.map(String::as_str).unwrap_or("(unset)")
            ));
        } else {
            why.push(format!("the spec sets {k}={want}"));
        }
        set.insert(k.clone(), (now.cloned(), want.clone()));
    }
    let mut delete = BTreeMap::new();
    if options.prune {
        for k in &t.overrides {
            if !d.config.contains_key(k) {
                let old = t.config.get(k).cloned().unwrap_or_default();
                why.push(format!(
                    "{k} is set on the topic but not in the spec (prune)"
                ));
                delete.insert(k.clone(), old);
            }
        }
    }
    if !set.is_empty() || !delete.is_empty() {
        out.steps.push(Step {
            action: Action::AlterConfig {
                topic: d.name.clone(),
                set,
                delete,
            },
            reason: why.join("; "),
        });
    }
}

/// New replica lists giving every partition `target` replicas: a partition
/// keeps its current leader and earlier replicas; added replicas go to the
/// brokers holding the fewest replicas of this topic (then the next one
/// round the ring of broker ids);
/// removed replicas are taken from the end of the list, never the leader.
pub fn reassign(t: &ObservedTopic, target: i32, brokers: &[i32]) -> BTreeMap<i32, Vec<i32>> {
    let target = target.max(1) as usize;
    let mut load: BTreeMap<i32, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for p in &t.partitions {
        for r in &p.replicas {
            *load.entry(*r).or_default() += 1;
        }
    }
    let ring: Vec<i32> = load.keys().copied().collect();
    let pos = |b: i32| ring.iter().position(|x| *x == b).unwrap_or(0);
    let mut out = BTreeMap::new();
    for p in &t.partitions {
        let mut replicas = p.replicas.clone();
        // Ties go to the next broker after the partition's first replica,
        // so equal loads spread round the ring instead of piling on one.
        let first = pos(replicas.first().copied().unwrap_or(p.leader));
        let distance = |b: i32| (pos(b) + ring.len() - first) % ring.len().max(1);
        // Fewer replicas: drop the follower on the busiest broker (the
        // later one in the list on a tie), never the leader.
        while replicas.len() > target {
            let Some((pos, _)) = replicas
                .iter()
                .enumerate()
                .filter(|(_, r)| **r != p.leader)
                .max_by_key(|(i, r)| (load.get(*r).copied().unwrap_or(0), *i))
            else {
                break;
            };
            let gone = replicas.remove(pos);
            if let Some(n) = load.get_mut(&gone) {
                *n = n.saturating_sub(1);
            }
        }
        while replicas.len() < target {
            let pick = load
                .iter()
                .filter(|(b, _)| !replicas.contains(b))
                .min_by_key(|(b, n)| (**n, distance(**b)))
                .map(|(b, _)| *b);
            let Some(b) = pick else { break };
            replicas.push(b);
            *load.entry(b).or_default() += 1;
        }
        if replicas != p.replicas {
            out.insert(p.index, replicas);
        }
    }
    out
}

#[cfg(test)]
mod tests;
