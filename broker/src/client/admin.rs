//! Admin calls: topics, partitions, configs (sent to the controller, which
//! any broker forwards to) and log dir sizes (every broker).

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::describe_configs_request::DescribeConfigsResource;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, DescribeConfigsRequest, DescribeLogDirsRequest,
    IncrementalAlterConfigsRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::error::{ApiError, ClientError};
use super::pool::{topic_name, Client, Target};
use super::types::{ConfigEntry, ConfigOp, NewTopic};

const RESOURCE_TOPIC: i8 = 2;
const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// The name of a DescribeConfigs `config_source`.
pub fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "topic",
        2 => "dynamic broker",
        3 => "dynamic default broker",
        4 => "broker",
        5 => "default",
        6 => "dynamic broker logger",
        7 => "client metrics",
        8 => "group",
        _ => "unknown",
    }
}

fn str(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

impl Client {
    /// CreateTopics; one outcome per topic, in the request's order.
    pub async fn create_topics(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
    ) -> Result<Vec<(String, Result<(), ApiError>)>, ClientError> {
        let timeout = self.server_timeout_ms();
        let resp = self
            .send(&Target::Controller, |_| {
                CreateTopicsRequest::default()
                    .with_timeout_ms(timeout)
                    .with_validate_only(validate_only)
                    .with_topics(
                        topics
                            .iter()
                            .map(|t| {
                                CreatableTopic::default()
                                    .with_name(topic_name(&t.name))
                                    .with_num_partitions(t.partitions)
                                    .with_replication_factor(t.replication_factor)
                                    .with_configs(
                                        t.configs
                                            .iter()
                                            .map(|(k, v)| {
                                                CreatableTopicConfig::default()
                                                    .with_name(str(k))
                                                    .with_value(Some(str(v)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
            })
            .await?;
        let mut answers: BTreeMap<String, Result<(), ApiError>> = resp
            .topics
            .into_iter()
            .map(|t| {
                let r = ApiError::check(t.error_code, t.error_message.map(|m| m.to_string()));
                (t.name.0.to_string(), r)
            })
            .collect();
        let out = in_order(topics.iter().map(|t| t.name.clone()), &mut answers);
        if !validate_only {
            let created: Vec<String> = out
                .iter()
                .filter(|(_, r)| r.is_ok())
                .map(|(n, _)| n.clone())
                .collect();
            if !created.is_empty() {
                // Route produce/fetch to the new partitions right away.
                let _ = self.metadata(Some(&created)).await;
            }
        }
        Ok(out)
    }

    /// DeleteTopics by name; one outcome per topic, in the request's order.
    pub async fn delete_topics(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<(), ApiError>)>, ClientError> {
        let timeout = self.server_timeout_ms();
        let resp = self
            .send(&Target::Controller, |v| {
                let req = DeleteTopicsRequest::default().with_timeout_ms(timeout);
                if v >= 6 {
                    req.with_topics(
                        names
                            .iter()
                            .map(|n| DeleteTopicState::default().with_name(Some(topic_name(n))))
                            .collect(),
                    )
                } else {
                    req.with_topic_names(names.iter().map(|n| topic_name(n)).collect())
                }
            })
            .await?;
        let mut answers: BTreeMap<String, Result<(), ApiError>> = resp
            .responses
            .into_iter()
            .map(|t| {
                let r = ApiError::check(t.error_code, t.error_message.map(|m| m.to_string()));
                (t.name.map(|n| n.0.to_string()).unwrap_or_default(), r)
            })
            .collect();
        Ok(in_order(names.iter().cloned(), &mut answers))
    }

    /// Grows `topic` to `total` partitions (CreatePartitions). The broker's
    /// refusal comes back as [`ClientError::Api`].
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<(), ClientError> {
        let timeout = self.server_timeout_ms();
        let resp = self
            .send(&Target::Controller, |_| {
                CreatePartitionsRequest::default()
                    .with_timeout_ms(timeout)
                    .with_topics(vec![CreatePartitionsTopic::default()
                        .with_name(topic_name(topic))
                        .with_count(total)
                        .with_assignments(None)])
            })
            .await?;
        let r = resp
            .results
            .into_iter()
            .find(|r| r.name.0.as_str() == topic)
            .ok_or_else(|| no_answer("CreatePartitions", topic))?;
        ApiError::check(r.error_code, r.error_message.map(|m| m.to_string()))?;
        let _ = self.metadata(Some(&[topic.to_string()])).await;
        Ok(())
    }

    /// Every config of `topic` with its value and source (DescribeConfigs).
    pub async fn describe_topic_configs(
        &self,
        topic: &str,
    ) -> Result<Vec<ConfigEntry>, ClientError> {
        let mut all = self
            .describe_many_topic_configs(std::slice::from_ref(&topic.to_string()))
            .await?;
        all.remove(topic)
            .ok_or_else(|| no_answer("DescribeConfigs", topic))?
            .map_err(ClientError::Api)
    }

    /// The configs of several topics in one DescribeConfigs request; a
    /// topic the broker refused maps to its error.
    pub async fn describe_many_topic_configs(
        &self,
        topics: &[String],
    ) -> Result<BTreeMap<String, Result<Vec<ConfigEntry>, ApiError>>, ClientError> {
        let resp = self
            .send(&Target::Any, |_| {
                DescribeConfigsRequest::default().with_resources(
                    topics
                        .iter()
                        .map(|t| {
                            DescribeConfigsResource::default()
                                .with_resource_type(RESOURCE_TOPIC)
                                .with_resource_name(str(t))
                                .with_configuration_keys(None)
                        })
                        .collect(),
                )
            })
            .await?;
        let mut out = BTreeMap::new();
        for r in resp.results {
            let name = r.resource_name.to_string();
            let entries = ApiError::check(r.error_code, r.error_message.map(|m| m.to_string()))
                .map(|()| {
                    let mut entries: Vec<ConfigEntry> = r
                        .configs
                        .into_iter()
                        .map(|c| ConfigEntry {
                            name: c.name.to_string(),
                            value: c.value.map(|v| v.to_string()),
                            source: config_source_name(c.config_source).to_string(),
                            read_only: c.read_only,
                            sensitive: c.is_sensitive,
                        })
                        .collect();
                    entries.sort_by(|a, b| a.name.cmp(&b.name));
                    entries
                });
            out.insert(name, entries);
        }
        Ok(out)
    }

    /// Moves partitions' replicas (AlterPartitionReassignments): each
    /// `(partition, replicas)` of `topic` gets that replica list. One
    /// outcome per partition.
    pub async fn alter_partition_reassignments(
        &self,
        topic: &str,
        assignments: &BTreeMap<i32, Vec<i32>>,
    ) -> Result<Vec<(i32, Result<(), ApiError>)>, ClientError> {
        let timeout = self.server_timeout_ms();
        let resp = self
            .send(&Target::Controller, |_| {
                AlterPartitionReassignmentsRequest::default()
                    .with_timeout_ms(timeout)
                    .with_topics(vec![ReassignableTopic::default()
                        .with_name(topic_name(topic))
                        .with_partitions(
                            assignments
                                .iter()
                                .map(|(p, replicas)| {
                                    ReassignablePartition::default()
                                        .with_partition_index(*p)
                                        .with_replicas(Some(
                                            replicas.iter().map(|b| BrokerId(*b)).collect(),
                                        ))
                                })
                                .collect(),
                        )])
            })
            .await?;
        ApiError::check(resp.error_code, resp.error_message.map(|m| m.to_string()))?;
        let mut out = Vec::new();
        for t in resp.responses {
            for p in t.partitions {
                let r = ApiError::check(p.error_code, p.error_message.map(|m| m.to_string()));
                out.push((p.partition_index, r));
            }
        }
        Ok(out)
    }

    /// Sets or deletes topic configs (IncrementalAlterConfigs).
    pub async fn alter_topic_configs(
        &self,
        topic: &str,
        ops: &[ConfigOp],
    ) -> Result<(), ClientError> {
        let resp = self
            .send(&Target::Controller, |_| {
                IncrementalAlterConfigsRequest::default().with_resources(vec![
                    AlterConfigsResource::default()
                        .with_resource_type(RESOURCE_TOPIC)
                        .with_resource_name(str(topic))
                        .with_configs(
                            ops.iter()
                                .map(|op| match op {
                                    ConfigOp::Set(k, v) => AlterableConfig::default()
                                        .with_name(str(k))
                                        .with_config_operation(OP_SET)
                                        .with_value(Some(str(v))),
                                    ConfigOp::Delete(k) => AlterableConfig::default()
                                        .with_name(str(k))
                                        .with_config_operation(OP_DELETE)
                                        .with_value(None),
                                })
                                .collect(),
                        ),
                ])
            })
            .await?;
        let r = resp
            .responses
            .into_iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| no_answer("IncrementalAlterConfigs", topic))?;
        ApiError::check(r.error_code, r.error_message.map(|m| m.to_string()))?;
        Ok(())
    }

    /// The size on disk of every partition (DescribeLogDirs on every
    /// broker): the leader's replica where the leader answered, else the
    /// largest replica. Brokers without DescribeLogDirs are skipped, so the
    /// map is empty when none has it; an unreachable broker fails the call.
    pub async fn log_dir_sizes(&self) -> Result<BTreeMap<(String, i32), u64>, ClientError> {
        let md = self.metadata(None).await?;
        let mut leaders: BTreeMap<(String, i32), i32> = BTreeMap::new();
        for t in &md.topics {
            for p in &t.partitions {
                leaders.insert((t.name.clone(), p.index), p.leader);
            }
        }
        let mut sizes: BTreeMap<(String, i32), u64> = BTreeMap::new();
        let mut from_leader: BTreeMap<(String, i32), bool> = BTreeMap::new();
        for b in &md.brokers {
            let resp = match self
                .send(&Target::Broker(b.id), |_| {
                    DescribeLogDirsRequest::default().with_topics(None)
                })
                .await
            {
                Ok(r) => r,
                Err(
                    ClientError::UnsupportedApi { .. } | ClientError::UnsupportedVersion { .. },
                ) => continue,
                Err(e) => return Err(e),
            };
            for dir in resp.results {
                if dir.error_code != 0 {
                    continue;
                }
                for t in dir.topics {
                    for p in t.partitions {
                        if p.is_future_key {
                            continue;
                        }
                        let key = (t.name.0.to_string(), p.partition_index);
                        let size = u64::try_from(p.partition_size).unwrap_or(0);
                        let is_leader = leaders.get(&key) == Some(&b.id);
                        let had_leader = from_leader.get(&key).copied().unwrap_or(false);
                        let e = sizes.entry(key.clone()).or_insert(0);
                        if is_leader {
                            *e = size;
                            from_leader.insert(key, true);
                        } else if !had_leader {
                            *e = (*e).max(size);
                        }
                    }
                }
            }
        }
        Ok(sizes)
    }
}

/// The answers in the order the names were asked; a name the broker left
/// out gets an error saying so.
fn in_order(
    names: impl Iterator<Item = String>,
    answers: &mut BTreeMap<String, Result<(), ApiError>>,
) -> Vec<(String, Result<(), ApiError>)> {
    names
        .map(|n| {
            let r = answers.remove(&n).unwrap_or_else(|| {
                Err(ApiError::local(
                    ResponseError::UnknownServerError,
                    format!("the broker did not answer for '{n}'"),
                ))
            });
            (n, r)
        })
        .collect()
}

fn no_answer(api: &str, name: &str) -> ClientError {
    ClientError::Protocol {
        addr: api.to_string(),
        reason: format!("the {api} response has no entry for '{name}'"),
    }
}
