//! The `Command` executor: performs console I/O over `sluice_broker::client::Client`
//! and turns each result into the `Action` that carries it back to `update`.
//!
//! Every function here is async and never blocks the draw loop: the runtime spawns
//! each command on its own task.

use std::collections::BTreeMap;
use std::sync::Arc;

use sluice_broker::client::{
    ApiError, Client, ClientConfig, ClientError, ClusterMetadata, ConfigOp, Isolation, NewTopic,
    OffsetSpec, ProduceRecord,
};

use crate::app::{Action, Command, ConfigChange, IoError, MessagePage, ResetInputs, StartAt};
use crate::model::{
    BrokerRow, ClusterOverview, ConfigRow, ConsumerLag, GroupDetail, GroupPartitionRow, GroupRow,
    MemberRow, MessageRow, PartitionRow, TopicDetail, TopicRow,
};
use crate::reset::{PartitionOffsets, TimestampLookup, TopicPartition};
use crate::runtime::Perform;

/// Bytes asked for per partition and fetch in the message browser.
const FETCH_MAX_BYTES: i32 = 1 << 20;
/// Bytes asked for when only the first record's timestamp is wanted.
const PEEK_MAX_BYTES: i32 = 64 * 1024;

/// The function table the runtime calls: one closure over a connected client.
pub fn performer(client: Client) -> Perform {
    Arc::new(move |cmd: Command| {
        let client = client.clone();
        Box::pin(async move { perform(&client, cmd).await })
    })
}

/// A performer that connects to `bootstrap` at its first command, and again
/// after a failed connection: while nothing answers, every command fails as
/// unreachable, so the console shows its error screen and keeps retrying.
pub fn connecting_performer(bootstrap: String) -> Perform {
    let slot: Arc<tokio::sync::Mutex<Option<Client>>> = Arc::default();
    Arc::new(move |cmd: Command| {
        let slot = slot.clone();
        let bootstrap = bootstrap.clone();
        Box::pin(async move {
            let client = {
                let mut slot = slot.lock().await;
                match &*slot {
                    Some(c) => c.clone(),
                    None => match Client::connect(&bootstrap, ClientConfig::default()).await {
                        Ok(c) => {
                            *slot = Some(c.clone());
                            c
                        }
                        Err(e) => return failed(cmd, io_err(e)),
                    },
                }
            };
            perform(&client, cmd).await
        })
    })
}

/// The answer to a command that could not be tried.
fn failed(cmd: Command, e: IoError) -> Action {
    match cmd {
        Command::LoadCluster => Action::ClusterLoaded(Err(e)),
        Command::LoadTopics => Action::TopicsLoaded(Err(e)),
        Command::LoadGroups => Action::GroupsLoaded(Err(e)),
        other => Action::Changed {
            what: format!("{other:?}"),
            result: Err(e),
        },
    }
}

/// Performs one command; always answers with exactly one action.
pub async fn perform(client: &Client, cmd: Command) -> Action {
    match cmd {
        Command::LoadCluster => Action::ClusterLoaded(load_cluster(client).await),
        Command::LoadTopics => Action::TopicsLoaded(load_topics(client).await),
        Command::LoadTopicDetail { topic } => {
            let result = load_topic_detail(client, &topic).await;
            Action::TopicDetailLoaded { topic, result }
        }
        Command::LoadTopicConfigs { topic } => {
            let result = load_topic_configs(client, &topic).await;
            Action::TopicConfigsLoaded { topic, result }
        }
        Command::LoadGroups => Action::GroupsLoaded(load_groups(client).await),
        Command::LoadGroupDetail { group } => {
            let result = load_group_detail(client, &group).await;
            Action::GroupDetailLoaded { group, result }
        }
        Command::FetchMessages {
            request,
            topic,
            start,
            from,
            limit,
        } => Action::MessagesLoaded {
            request,
            result: fetch_messages(client, &topic, start, from, limit).await,
        },
        Command::CreateTopic {
            name,
            partitions,
            replication_factor,
            configs,
        } => {
            let topic = NewTopic {
                name: name.clone(),
                partitions,
                replication_factor,
                configs: configs.into_iter().collect(),
            };
            let result = client
                .create_topics(vec![topic], false)
                .await
                .map(drop)
                .map_err(io_err);
            changed(format!("created topic {name}"), result)
        }
        Command::DeleteTopic { name } => {
            let result = client
                .delete_topics(std::slice::from_ref(&name))
                .await
                .map(drop)
                .map_err(io_err);
            changed(format!("deleted topic {name}"), result)
        }
        Command::AddPartitions { topic, total } => {
            let result = client
                .create_partitions(&topic, total)
                .await
                .map(drop)
                .map_err(io_err);
            changed(format!("{topic} now has {total} partitions"), result)
        }
        Command::AlterConfig { topic, change } => {
            let (what, op) = match change {
                ConfigChange::Set(k, v) => (format!("set {k}={v} on {topic}"), ConfigOp::Set(k, v)),
                ConfigChange::Delete(k) => (
                    format!("{k} of {topic} back to default"),
                    ConfigOp::Delete(k),
                ),
            };
            let result = client
                .alter_topic_configs(&topic, &[op])
                .await
                .map(drop)
                .map_err(io_err);
            changed(what, result)
        }
        Command::Produce {
            topic,
            partition,
            key,
            value,
            headers,
        } => {
            let record = ProduceRecord {
                key,
                value,
                headers,
                // The client stamps it with the current time.
                timestamp: None,
            };
            match client.produce(&topic, partition, record).await {
                Ok((p, offset)) => changed(
                    format!("produced to {topic}-{p} at offset {offset}"),
                    Ok(()),
                ),
                Err(e) => changed(String::new(), Err(io_err(e))),
            }
        }
        Command::LoadResetInputs {
            group,
            partitions,
            timestamp,
        } => {
            let result = load_reset_inputs(client, &group, &partitions, timestamp).await;
            Action::ResetInputsLoaded { group, result }
        }
        Command::CommitOffsets {
            group,
            offsets,
            purpose,
        } => {
            let result = commit_if_inactive(client, &group, &offsets).await;
            Action::OffsetsCommitted {
                group,
                purpose,
                result,
            }
        }
    }
}

fn changed(what: String, result: Result<(), IoError>) -> Action {
    Action::Changed { what, result }
}

/// Connection-level failures (connect, I/O, timeout, no broker reachable) map to
/// `unreachable`, so the console shows its error screen and retries; Kafka error
/// codes are answers, not outages.
fn io_err(e: ClientError) -> IoError {
    match &e {
        ClientError::Api(api) => IoError::api(api_text(api)),
        ClientError::Connect { .. }
        | ClientError::Io { .. }
        | ClientError::Timeout { .. }
        | ClientError::NoBrokerReachable(_)
        | ClientError::EmptyBootstrap(_) => IoError::unreachable(e.to_string()),
        _ => IoError::api(e.to_string()),
    }
}

fn api_text(e: &ApiError) -> String {
    match e.message.as_deref().filter(|m| !m.is_empty()) {
        None => format!("{} (code {})", e.name, e.code),
        Some(m) => format!("{}: {m}", e.name),
    }
}

type Offsets = BTreeMap<TopicPartition, i64>;

/// One ListOffsets over many partitions; per-partition errors leave the partition out.
async fn offsets(
    client: &Client,
    tps: &[TopicPartition],
    spec: OffsetSpec,
) -> Result<Offsets, IoError> {
    if tps.is_empty() {
        return Ok(Offsets::new());
    }
    let listed = client
        .list_offsets(tps, spec, Isolation::ReadUncommitted)
        .await
        .map_err(io_err)?;
    Ok(listed
        .into_iter()
        .filter_map(|(tp, r)| r.ok().map(|o| (tp, o.offset)))
        .collect())
}

fn all_partitions(meta: &ClusterMetadata) -> Vec<TopicPartition> {
    meta.topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.index)))
        .collect()
}

fn partition_rows(
    meta: &ClusterMetadata,
    topic: &str,
    start: &Offsets,
    end: &Offsets,
) -> Vec<PartitionRow> {
    let Some(t) = meta.topics.iter().find(|t| t.name == topic) else {
        return Vec::new();
    };
    let mut rows: Vec<PartitionRow> = t
        .partitions
        .iter()
        .map(|p| {
            let tp = (topic.to_string(), p.index);
            PartitionRow {
                index: p.index,
                leader: p.leader,
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                offline_replicas: p.offline.clone(),
                start: start.get(&tp).copied(),
                end: end.get(&tp).copied(),
                consumers: Vec::new(),
            }
        })
        .collect();
    rows.sort_by_key(|p| p.index);
    rows
}

async fn load_cluster(client: &Client) -> Result<ClusterOverview, IoError> {
    let meta = client.metadata(None).await.map_err(io_err)?;
    let partitions = meta.topics.iter().flat_map(|t| t.partitions.iter());
    let mut led: BTreeMap<i32, usize> = BTreeMap::new();
    let (mut count, mut urp, mut offline) = (0, 0, 0);
    for p in partitions {
        count += 1;
        *led.entry(p.leader).or_default() += 1;
        urp += usize::from(p.isr.len() < p.replicas.len());
        offline += usize::from(p.leader < 0);
    }
    Ok(ClusterOverview {
        cluster_id: meta.cluster_id.clone(),
        controller_id: meta.controller_id,
        brokers: meta
            .brokers
            .iter()
            .map(|b| BrokerRow {
                id: b.id,
                host: b.host.clone(),
                port: b.port,
                rack: b.rack.clone(),
                partitions_led: led.get(&b.id).copied().unwrap_or(0),
            })
            .collect(),
        topic_count: meta.topics.len(),
        partition_count: count,
        under_replicated: urp,
        offline,
    })
}

async fn load_topics(client: &Client) -> Result<Vec<TopicRow>, IoError> {
    let meta = client.metadata(None).await.map_err(io_err)?;
    let tps = all_partitions(&meta);
    let start = offsets(client, &tps, OffsetSpec::Earliest).await?;
    let end = offsets(client, &tps, OffsetSpec::Latest).await?;
    // Not every cluster answers DescribeLogDirs (ACLs, older brokers): sizes are optional.
    let sizes = client.log_dir_sizes().await.ok();
    let mut rows: Vec<TopicRow> = meta
        .topics
        .iter()
        .map(|t| {
            let parts = partition_rows(&meta, &t.name, &start, &end);
            let size = sizes.as_ref().map(|s| {
                s.iter()
                    .filter(|((name, _), _)| *name == t.name)
                    .map(|(_, b)| *b)
                    .sum()
            });
            let mut row = TopicRow::from_partitions(&t.name, t.internal, &parts, size);
            row.error = t.error.as_ref().map(api_text);
            row
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

async fn load_topic_detail(client: &Client, topic: &str) -> Result<TopicDetail, IoError> {
    let meta = client
        .metadata(Some(&[topic.to_string()]))
        .await
        .map_err(io_err)?;
    if let Some(e) = meta
        .topics
        .iter()
        .find(|t| t.name == topic)
        .and_then(|t| t.error.as_ref())
    {
        return Err(IoError::api(api_text(e)));
    }
    let tps = all_partitions(&meta);
    let start = offsets(client, &tps, OffsetSpec::Earliest).await?;
    let end = offsets(client, &tps, OffsetSpec::Latest).await?;
    let mut partitions = partition_rows(&meta, topic, &start, &end);
    // Which groups consume the topic: one OffsetFetch per group. Fine for tens of
    // groups; a cluster with thousands wants a cache refreshed less often.
    let groups = client.list_groups().await.map_err(io_err)?;
    for g in groups {
        let Ok(committed) = client.committed_offsets(&g.group_id).await else {
            continue;
        };
        for p in &mut partitions {
            if let Some(&c) = committed.get(&(topic.to_string(), p.index)) {
                let lag = p.end.map_or(0, |e| (e - c).max(0));
                p.consumers.push(ConsumerLag {
                    group: g.group_id.clone(),
                    committed: c,
                    lag,
                });
            }
        }
    }
    Ok(TopicDetail {
        name: topic.to_string(),
        partitions,
        configs: None,
    })
}

async fn load_topic_configs(client: &Client, topic: &str) -> Result<Vec<ConfigRow>, IoError> {
    let entries = client.describe_topic_configs(topic).await.map_err(io_err)?;
    let mut rows: Vec<ConfigRow> = entries
        .into_iter()
        .map(|e| ConfigRow {
            name: e.name,
            value: e.value,
            // Kafka's names (DEFAULT_CONFIG, DYNAMIC_TOPIC_CONFIG, ...); the topic
            // view hides DEFAULT_CONFIG entries.
            source: e.source.to_string(),
            read_only: e.read_only,
            sensitive: e.sensitive,
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(rows)
}

async fn load_groups(client: &Client) -> Result<Vec<GroupRow>, IoError> {
    let listings = client.list_groups().await.map_err(io_err)?;
    let ids: Vec<String> = listings.iter().map(|g| g.group_id.clone()).collect();
    let described = client.describe_groups(&ids).await.map_err(io_err)?;
    let mut rows = Vec::with_capacity(listings.len());
    for g in listings {
        let d = described.iter().find(|d| d.group_id == g.group_id);
        let committed = client.committed_offsets(&g.group_id).await.ok();
        let total_lag = match committed {
            Some(c) => {
                let tps: Vec<TopicPartition> = c.keys().cloned().collect();
                let end = offsets(client, &tps, OffsetSpec::Latest).await?;
                Some(
                    c.iter()
                        .filter_map(|(tp, off)| end.get(tp).map(|e| (e - off).max(0)))
                        .sum(),
                )
            }
            None => None,
        };
        rows.push(GroupRow {
            group_id: g.group_id.clone(),
            state: d
                .map(|d| d.state.clone())
                .unwrap_or_else(|| g.state.clone()),
            protocol_type: g.protocol_type.clone(),
            members: d.map(|d| d.members.len()),
            total_lag,
        });
    }
    rows.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    Ok(rows)
}

async fn load_group_detail(client: &Client, group: &str) -> Result<GroupDetail, IoError> {
    let described = client
        .describe_groups(&[group.to_string()])
        .await
        .map_err(io_err)?;
    let Some(d) = described.into_iter().next() else {
        return Err(IoError::api(format!("group {group} was not described")));
    };
    if let Some(e) = &d.error {
        return Err(IoError::api(api_text(e)));
    }
    let committed = client.committed_offsets(group).await.map_err(io_err)?;
    let tps: Vec<TopicPartition> = committed.keys().cloned().collect();
    let end = offsets(client, &tps, OffsetSpec::Latest).await?;
    let mut partitions = Vec::with_capacity(tps.len());
    for ((topic, partition), c) in &committed {
        let e = end.get(&(topic.clone(), *partition)).copied();
        // Lag in time: the timestamp of the first message not consumed yet.
        let oldest_unconsumed_ts = match e {
            Some(e) if e > *c => first_timestamp(client, topic, *partition, *c).await,
            _ => None,
        };
        partitions.push(GroupPartitionRow {
            topic: topic.clone(),
            partition: *partition,
            committed: Some(*c),
            end: e,
            oldest_unconsumed_ts,
        });
    }
    Ok(GroupDetail {
        group_id: d.group_id,
        state: d.state,
        protocol_type: d.protocol_type,
        protocol: d.protocol,
        members: d
            .members
            .into_iter()
            .map(|m| MemberRow {
                member_id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                host: m.host,
                assignment: m.assignment,
            })
            .collect(),
        partitions,
    })
}

async fn first_timestamp(client: &Client, topic: &str, partition: i32, offset: i64) -> Option<i64> {
    let fetched = client
        .fetch(
            topic,
            partition,
            offset,
            PEEK_MAX_BYTES,
            Isolation::ReadUncommitted,
        )
        .await
        .ok()?;
    fetched
        .records
        .iter()
        .find(|r| r.offset >= offset)
        .map(|r| r.timestamp)
}

async fn fetch_messages(
    client: &Client,
    topic: &str,
    start: StartAt,
    from: BTreeMap<i32, i64>,
    limit: usize,
) -> Result<MessagePage, IoError> {
    let meta = client
        .metadata(Some(&[topic.to_string()]))
        .await
        .map_err(io_err)?;
    let tps = all_partitions(&meta);
    if tps.is_empty() {
        return Err(IoError::api(format!(
            "topic {topic} does not exist or has no partitions"
        )));
    }
    let first = offsets(client, &tps, OffsetSpec::Earliest).await?;
    let last = offsets(client, &tps, OffsetSpec::Latest).await?;
    let per_partition = (limit / tps.len()).max(1) as i64;
    let positions: BTreeMap<i32, i64> = if !from.is_empty() {
        from
    } else {
        let at_time = match start {
            StartAt::Timestamp(ts) => offsets(client, &tps, OffsetSpec::Timestamp(ts)).await?,
            _ => Offsets::new(),
        };
        tps.iter()
            .map(|tp| {
                let lo = first.get(tp).copied().unwrap_or(0);
                let hi = last.get(tp).copied().unwrap_or(lo);
                let pos = match start {
                    StartAt::Beginning => lo,
                    StartAt::End => hi - per_partition,
                    StartAt::Offset(o) => o,
                    // -1 or missing: nothing at or after that time, start at the end.
                    StartAt::Timestamp(_) => {
                        at_time.get(tp).copied().filter(|o| *o >= 0).unwrap_or(hi)
                    }
                };
                (tp.1, pos.clamp(lo, hi))
            })
            .collect()
    };
    let total = positions
        .iter()
        .map(|(p, pos)| {
            last.get(&(topic.to_string(), *p))
                .map_or(0, |hi| (hi - pos).max(0))
        })
        .sum();
    let mut rows = Vec::new();
    let mut next = BTreeMap::new();
    for (&partition, &pos) in &positions {
        let hi = last
            .get(&(topic.to_string(), partition))
            .copied()
            .unwrap_or(pos);
        if pos >= hi {
            next.insert(partition, pos);
            continue;
        }
        let fetched = client
            .fetch(
                topic,
                partition,
                pos,
                FETCH_MAX_BYTES,
                Isolation::ReadUncommitted,
            )
            .await
            .map_err(io_err)?;
        let mut taken = 0;
        let mut at = pos;
        for r in fetched.records.into_iter().filter(|r| r.offset >= pos) {
            if taken == per_partition {
                break;
            }
            at = r.offset + 1;
            taken += 1;
            rows.push(MessageRow {
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                key: r.key.map(|k| k.to_vec()),
                value: r.value.map(|v| v.to_vec()),
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k, v.map(|v| v.to_vec())))
                    .collect(),
            });
        }
        next.insert(
            partition,
            if taken == 0 {
                fetched.next_offset.max(pos)
            } else {
                at
            },
        );
    }
    rows.sort_by_key(|r| (r.timestamp, r.partition, r.offset));
    Ok(MessagePage { rows, next, total })
}

async fn load_reset_inputs(
    client: &Client,
    group: &str,
    partitions: &[TopicPartition],
    timestamp: Option<i64>,
) -> Result<ResetInputs, IoError> {
    let described = client
        .describe_groups(&[group.to_string()])
        .await
        .map_err(io_err)?;
    let d = described.into_iter().next();
    let state = d.as_ref().map(|d| d.state.clone()).unwrap_or_default();
    let members = d
        .map(|d| {
            d.members
                .iter()
                .map(|m| format!("{}@{} ({})", m.client_id, m.host, m.member_id))
                .collect()
        })
        .unwrap_or_default();
    let committed = client.committed_offsets(group).await.map_err(io_err)?;
    let start = offsets(client, partitions, OffsetSpec::Earliest).await?;
    let end = offsets(client, partitions, OffsetSpec::Latest).await?;
    let at = match timestamp {
        Some(ts) => Some(offsets(client, partitions, OffsetSpec::Timestamp(ts)).await?),
        None => None,
    };
    let mut out = BTreeMap::new();
    for tp in partitions {
        let (Some(&s), Some(&e)) = (start.get(tp), end.get(tp)) else {
            return Err(IoError::api(format!(
                "no offsets for {}-{}: is the partition online?",
                tp.0, tp.1
            )));
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
    Ok(ResetInputs {
        state,
        members,
        offsets: out,
    })
}

/// Checks again right before committing: a consumer may have joined since the preview.
async fn commit_if_inactive(
    client: &Client,
    group: &str,
    offsets: &Offsets,
) -> Result<(), IoError> {
    let described = client
        .describe_groups(&[group.to_string()])
        .await
        .map_err(io_err)?;
    if let Some(d) = described.first().filter(|d| !d.members.is_empty()) {
        return Err(IoError::api(format!(
            "group {group} has {} active member(s) now: stop its consumers, then try again",
            d.members.len()
        )));
    }
    let results = client
        .commit_offsets(group, offsets)
        .await
        .map_err(io_err)?;
    let failed: Vec<String> = results
        .into_iter()
        .filter_map(|((t, p), r)| r.err().map(|e| format!("{t}-{p}: {}", api_text(&e))))
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        Err(IoError::api(format!(
            "{} partition(s) not committed: {}",
            failed.len(),
            failed.join("; ")
        )))
    }
}
