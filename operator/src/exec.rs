//! Reading the cluster for the planner (`observe`) and carrying out a plan's
//! actions (`execute`) over `sluice_broker::client`.

use std::collections::{BTreeMap, BTreeSet};

use sluice_broker::client::{ApiError, Client, ClientError, ConfigOp, NewTopic};

use crate::plan::{Action, Observed, ObservedPartition, ObservedTopic, Step};

/// Topics per DescribeConfigs request.
const DESCRIBE_BATCH: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{action}: {error}")]
    Refused { action: String, error: ApiError },
}

impl ExecError {
    /// A CamelCase reason for conditions and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ExecError::Client(_) => "ClusterUnreachable",
            ExecError::Refused { .. } => "BrokerRefused",
        }
    }
}

/// Reads the brokers, every topic's partitions and replicas, and the
/// configs of the topics in `configs_for` (the ones the plan compares).
pub async fn observe(client: &Client, configs_for: &[String]) -> Result<Observed, ExecError> {
    observe_with(client, None, configs_for).await
}

/// As [`observe`], for the named topics only (one resource's reconcile).
pub async fn observe_topics(client: &Client, names: &[String]) -> Result<Observed, ExecError> {
    observe_with(client, Some(names), names).await
}

async fn observe_with(
    client: &Client,
    topics: Option<&[String]>,
    configs_for: &[String],
) -> Result<Observed, ExecError> {
    let md = client.metadata(topics).await?;
    let mut observed = Observed {
        brokers: md.brokers.iter().map(|b| b.id).collect(),
        topics: BTreeMap::new(),
    };
    observed.brokers.sort_unstable();
    for t in md.topics {
        if t.error.is_some() && t.partitions.is_empty() {
            continue;
        }
        observed.topics.insert(
            t.name.clone(),
            ObservedTopic {
                name: t.name,
                id: t.id.map(|u| u.to_string()),
                internal: t.internal,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| ObservedPartition {
                        index: p.index,
                        leader: p.leader,
                        replicas: p.replicas,
                    })
                    .collect(),
                config: BTreeMap::new(),
                overrides: BTreeSet::new(),
            },
        );
    }
    let existing: Vec<String> = configs_for
        .iter()
        .filter(|n| observed.topics.contains_key(*n))
        .cloned()
        .collect();
    for chunk in existing.chunks(DESCRIBE_BATCH) {
        let configs = client.describe_many_topic_configs(chunk).await?;
        for (name, entries) in configs {
            let Some(t) = observed.topics.get_mut(&name) else {
                continue;
            };
            // A topic deleted between the two calls has no configs to compare.
            let Ok(entries) = entries else { continue };
            for e in entries {
                if e.source == "topic" {
                    t.overrides.insert(e.name.clone());
                }
                if let Some(v) = e.value {
                    t.config.insert(e.name, v);
                }
            }
        }
    }
    Ok(observed)
}

/// The outcome of one step.
#[derive(Debug)]
pub struct StepResult<'a> {
    pub step: &'a Step,
    pub result: Result<(), ExecError>,
}

/// Carries out `steps` in order. Creates and deletes are batched into one
/// request each (they are independent per topic); the rest go one by one.
/// Every step is tried; each gets its own outcome.
pub async fn execute<'a>(client: &Client, steps: &[&'a Step]) -> Vec<StepResult<'a>> {
    let mut out: Vec<StepResult<'a>> = Vec::with_capacity(steps.len());
    let creates: Vec<&Step> = steps
        .iter()
        .copied()
        .filter(|s| matches!(s.action, Action::Create { .. }))
        .collect();
    if !creates.is_empty() {
        let topics: Vec<NewTopic> = creates
            .iter()
            .filter_map(|s| match &s.action {
                Action::Create {
                    topic,
                    partitions,
                    replicas,
                    config,
                } => Some(NewTopic {
                    name: topic.clone(),
                    partitions: *partitions,
                    replication_factor: i16::try_from(*replicas).unwrap_or(i16::MAX),
                    configs: config.clone(),
                }),
                _ => None,
            })
            .collect();
        batch_outcomes(
            client.create_topics(topics, false).await,
            &creates,
            &mut out,
        );
    }
    for step in steps.iter().copied() {
        let result = match &step.action {
            Action::Create { .. } | Action::Delete { .. } => continue,
            Action::AddPartitions { topic, to, .. } => client
                .create_partitions(topic, *to)
                .await
                .map_err(|e| refused(step, e)),
            Action::AlterConfig { topic, set, delete } => {
                let ops: Vec<ConfigOp> = set
                    .iter()
                    .map(|(k, (_, v))| ConfigOp::Set(k.clone(), v.clone()))
                    .chain(delete.keys().map(|k| ConfigOp::Delete(k.clone())))
                    .collect();
                client
                    .alter_topic_configs(topic, &ops)
                    .await
                    .map_err(|e| refused(step, e))
            }
            Action::Reassign {
                topic, assignments, ..
            } => match client
                .alter_partition_reassignments(topic, assignments)
                .await
            {
                Ok(outcomes) => outcomes
                    .into_iter()
                    .find_map(|(p, r)| r.err().map(|e| (p, e)))
                    .map_or(Ok(()), |(p, error)| {
                        Err(ExecError::Refused {
                            action: format!("{} (partition {p})", step.action.kind()),
                            error,
                        })
                    }),
                Err(e) => Err(refused(step, e)),
            },
        };
        out.push(StepResult { step, result });
    }
    let deletes: Vec<&Step> = steps
        .iter()
        .copied()
        .filter(|s| matches!(s.action, Action::Delete { .. }))
        .collect();
    if !deletes.is_empty() {
        let names: Vec<String> = deletes
            .iter()
            .map(|s| s.action.topic().to_string())
            .collect();
        batch_outcomes(client.delete_topics(&names).await, &deletes, &mut out);
    }
    out
}

fn refused(step: &Step, e: ClientError) -> ExecError {
    match e {
        ClientError::Api(error) => ExecError::Refused {
            action: format!("{} {}", step.action.kind(), step.action.topic()),
            error,
        },
        other => ExecError::Client(other),
    }
}

/// Per-topic outcomes of a CreateTopics or DeleteTopics call.
type BatchAnswer = Result<Vec<(String, Result<(), ApiError>)>, ClientError>;

fn batch_outcomes<'a>(answer: BatchAnswer, steps: &[&'a Step], out: &mut Vec<StepResult<'a>>) {
    match answer {
        Ok(results) => {
            let mut by_name: BTreeMap<String, Result<(), ApiError>> = results.into_iter().collect();
            for s in steps {
                let result = match by_name.remove(s.action.topic()) {
                    Some(Ok(())) => Ok(()),
                    Some(Err(error)) => Err(ExecError::Refused {
                        action: format!("{} {}", s.action.kind(), s.action.topic()),
                        error,
                    }),
                    None => Err(ExecError::Client(ClientError::Protocol {
                        addr: String::new(),
                        reason: format!("no answer for topic {}", s.action.topic()),
                    })),
                };
                out.push(StepResult { step: s, result });
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for s in steps {
                out.push(StepResult {
                    step: s,
                    result: Err(ExecError::Client(ClientError::Protocol {
                        addr: String::new(),
                        reason: msg.clone(),
                    })),
                });
            }
        }
    }
}
