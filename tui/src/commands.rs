//! The scripting subcommands (`sluice topics ...`, `groups ...`, `produce`,
//! `consume`): the console's operations over `sluice_broker::client`, printed
//! as plain text (aligned columns) or, with `--output json`, one JSON document.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use serde_json::{json, Value};
use sluice_broker::client::{
    Client, ClientConfig, ConfigOp, Isolation, NewTopic, OffsetSpec, ProduceRecord, Record,
};

use crate::cli::{Command, ConsumeArgs, From, GroupsCommand, Output, ProduceArgs, TopicsCommand};

/// Runs `cmd` against `bootstrap`; the error says what failed.
pub async fn run(bootstrap: &str, output: Output, cmd: &Command) -> anyhow::Result<()> {
    let client = Client::connect(bootstrap, ClientConfig::default()).await?;
    let out = match cmd {
        Command::Topics(t) => topics(&client, t).await?,
        Command::Groups(g) => groups(&client, g).await?,
        Command::Produce(p) => produce(&client, p).await?,
        Command::Consume(c) => consume(&client, c, output).await?,
        Command::Offsets(o) => {
            crate::offsets_cmd::run(&client, o, output).await?;
            None
        }
        Command::Replay(r) => {
            crate::replay_cmd::run(&client, bootstrap, output, r).await?;
            None
        }
    };
    if let Some(out) = out {
        print(output, &out);
    }
    Ok(())
}

/// A result: rows for text output, the same data as JSON.
struct Printed {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
    json: Value,
}

fn print(output: Output, p: &Printed) {
    match output {
        Output::Json => println!("{}", p.json),
        Output::Text => {
            let mut widths: Vec<usize> = p.header.iter().map(|h| h.len()).collect();
            for r in &p.rows {
                for (i, c) in r.iter().enumerate() {
                    if let Some(w) = widths.get_mut(i) {
                        *w = (*w).max(c.chars().count());
                    }
                }
            }
            let line = |cells: Vec<String>| {
                cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            println!("{}", line(p.header.iter().map(|h| h.to_string()).collect()));
            for r in &p.rows {
                println!("{}", line(r.clone()));
            }
        }
    }
}

fn api(e: sluice_broker::client::ApiError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

async fn end_offsets(
    client: &Client,
    tps: &[(String, i32)],
    spec: OffsetSpec,
) -> anyhow::Result<BTreeMap<(String, i32), i64>> {
    if tps.is_empty() {
        return Ok(BTreeMap::new());
    }
    let listed = client
        .list_offsets(tps, spec, Isolation::ReadUncommitted)
        .await?;
    Ok(listed
        .into_iter()
        .filter_map(|(tp, r)| r.ok().map(|o| (tp, o.offset)))
        .collect())
}

async fn topics(client: &Client, cmd: &TopicsCommand) -> anyhow::Result<Option<Printed>> {
    match cmd {
        TopicsCommand::List { internal } => {
            let md = client.metadata(None).await?;
            let tps: Vec<(String, i32)> = md
                .topics
                .iter()
                .filter(|t| *internal || !t.internal)
                .flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), p.index)))
                .collect();
            let start = end_offsets(client, &tps, OffsetSpec::Earliest).await?;
            let end = end_offsets(client, &tps, OffsetSpec::Latest).await?;
            let mut rows = Vec::new();
            let mut list = Vec::new();
            let mut topics: Vec<_> = md
                .topics
                .iter()
                .filter(|t| *internal || !t.internal)
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            for t in topics {
                let messages: i64 = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let k = (t.name.clone(), p.index);
                        end.get(&k).copied().unwrap_or(0) - start.get(&k).copied().unwrap_or(0)
                    })
                    .sum();
                let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
                let urp = t
                    .partitions
                    .iter()
                    .filter(|p| p.isr.len() < p.replicas.len())
                    .count();
                rows.push(vec![
                    t.name.clone(),
                    t.partitions.len().to_string(),
                    rf.to_string(),
                    messages.to_string(),
                    urp.to_string(),
                ]);
                list.push(json!({
                    "name": t.name, "partitions": t.partitions.len(), "replication_factor": rf,
                    "messages": messages, "under_replicated_partitions": urp, "internal": t.internal,
                }));
            }
            Ok(Some(Printed {
                header: vec!["TOPIC", "PARTITIONS", "RF", "MESSAGES", "UNDER-REPLICATED"],
                rows,
                json: Value::Array(list),
            }))
        }
        TopicsCommand::Describe { topic } => {
            let md = client.metadata(Some(std::slice::from_ref(topic))).await?;
            let t = md.topics.iter().find(|t| &t.name == topic).ok_or_else(|| {
                anyhow::anyhow!(
                    "topic {topic} does not exist: `sluice topics list` shows the topics"
                )
            })?;
            if let Some(e) = &t.error {
                anyhow::bail!("topic {topic}: {e}");
            }
            let tps: Vec<(String, i32)> = t
                .partitions
                .iter()
                .map(|p| (topic.clone(), p.index))
                .collect();
            let start = end_offsets(client, &tps, OffsetSpec::Earliest).await?;
            let end = end_offsets(client, &tps, OffsetSpec::Latest).await?;
            let configs = client.describe_topic_configs(topic).await?;
            let ids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
            let mut rows = Vec::new();
            let mut parts = Vec::new();
            for p in &t.partitions {
                let k = (topic.clone(), p.index);
                let (s, e) = (
                    start.get(&k).copied().unwrap_or(-1),
                    end.get(&k).copied().unwrap_or(-1),
                );
                rows.push(vec![
                    p.index.to_string(),
                    p.leader.to_string(),
                    ids(&p.replicas),
                    ids(&p.isr),
                    s.to_string(),
                    e.to_string(),
                ]);
                parts.push(json!({
                    "partition": p.index, "leader": p.leader, "replicas": p.replicas, "isr": p.isr,
                    "start_offset": s, "end_offset": e,
                }));
            }
            let overrides: BTreeMap<&str, Option<&str>> = configs
                .iter()
                .filter(|c| c.source == "topic")
                .map(|c| (c.name.as_str(), c.value.as_deref()))
                .collect();
            Ok(Some(Printed {
                header: vec!["PARTITION", "LEADER", "REPLICAS", "ISR", "START", "END"],
                rows,
                json: json!({ "name": topic, "partitions": parts, "configs": overrides }),
            }))
        }
        TopicsCommand::Create {
            topic,
            partitions,
            replication_factor,
            configs,
        } => {
            let created = client
                .create_topics(
                    vec![NewTopic {
                        name: topic.clone(),
                        partitions: *partitions,
                        replication_factor: *replication_factor,
                        configs: configs.iter().cloned().collect(),
                    }],
                    false,
                )
                .await?;
            for (_, r) in created {
                r.map_err(api)?;
            }
            eprintln!("created topic {topic} ({partitions} partitions, replication factor {replication_factor})");
            Ok(None)
        }
        TopicsCommand::Delete { topic, yes } => {
            if !yes {
                anyhow::bail!("deleting {topic} removes all its messages: add --yes to confirm");
            }
            for (_, r) in client.delete_topics(std::slice::from_ref(topic)).await? {
                r.map_err(api)?;
            }
            eprintln!("deleted topic {topic}");
            Ok(None)
        }
        TopicsCommand::Alter(a) => {
            if a.partitions.is_none() && a.set.is_empty() && a.delete.is_empty() {
                anyhow::bail!("nothing to change: pass --partitions N, --set KEY=VALUE or --delete-config KEY");
            }
            if let Some(n) = a.partitions {
                client.create_partitions(&a.topic, n).await?;
            }
            let ops: Vec<ConfigOp> = a
                .set
                .iter()
                .map(|(k, v)| ConfigOp::Set(k.clone(), v.clone()))
                .chain(a.delete.iter().map(|k| ConfigOp::Delete(k.clone())))
                .collect();
            if !ops.is_empty() {
                client.alter_topic_configs(&a.topic, &ops).await?;
            }
            eprintln!("altered topic {}", a.topic);
            Ok(None)
        }
    }
}

async fn groups(client: &Client, cmd: &GroupsCommand) -> anyhow::Result<Option<Printed>> {
    match cmd {
        GroupsCommand::List => {
            let mut list = client.list_groups().await?;
            list.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            let rows = list
                .iter()
                .map(|g| vec![g.group_id.clone(), g.state.clone(), g.protocol_type.clone()])
                .collect();
            let json = list
                .iter()
                .map(|g| json!({"group": g.group_id, "state": g.state, "protocol_type": g.protocol_type}))
                .collect();
            Ok(Some(Printed {
                header: vec!["GROUP", "STATE", "TYPE"],
                rows,
                json: Value::Array(json),
            }))
        }
        GroupsCommand::Describe { group } => {
            let described = client.describe_groups(std::slice::from_ref(group)).await?;
            let d = described
                .into_iter()
                .next()
                .ok_or_else(|| anyhow::anyhow!("no description of group {group}"))?;
            if let Some(e) = &d.error {
                anyhow::bail!("group {group}: {e}");
            }
            let committed = client.committed_offsets(group).await?;
            let tps: Vec<(String, i32)> = committed.keys().cloned().collect();
            let end = end_offsets(client, &tps, OffsetSpec::Latest).await?;
            let owner = |t: &str, p: i32| {
                d.members
                    .iter()
                    .find(|m| {
                        m.assignment
                            .iter()
                            .any(|(mt, ps)| mt == t && ps.contains(&p))
                    })
                    .map(|m| format!("{}@{}", m.client_id, m.host))
                    .unwrap_or_else(|| "-".into())
            };
            let mut rows = Vec::new();
            let mut parts = Vec::new();
            let mut total = 0i64;
            for ((t, p), c) in &committed {
                let e = end.get(&(t.clone(), *p)).copied().unwrap_or(-1);
                let lag = (e - c).max(0);
                total += lag;
                rows.push(vec![
                    t.clone(),
                    p.to_string(),
                    c.to_string(),
                    e.to_string(),
                    lag.to_string(),
                    owner(t, *p),
                ]);
                parts.push(json!({"topic": t, "partition": p, "committed": c, "end_offset": e, "lag": lag}));
            }
            eprintln!(
                "group {group}: {} ({} members), total lag {total}",
                d.state,
                d.members.len()
            );
            let members: Vec<Value> = d
                .members
                .iter()
                .map(|m| json!({"member_id": m.member_id, "client_id": m.client_id, "host": m.host, "assignment": m.assignment}))
                .collect();
            Ok(Some(Printed {
                header: vec!["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "CONSUMER"],
                rows,
                json: json!({"group": group, "state": d.state, "members": members, "partitions": parts, "total_lag": total}),
            }))
        }
    }
}

async fn produce(client: &Client, a: &ProduceArgs) -> anyhow::Result<Option<Printed>> {
    let headers: Vec<(String, Option<Vec<u8>>)> = a
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), Some(v.as_bytes().to_vec())))
        .collect();
    let values: Vec<String> = match &a.value {
        Some(v) => vec![v.clone()],
        None => std::io::stdin().lock().lines().collect::<Result<_, _>>()?,
    };
    let mut rows = Vec::new();
    let mut json = Vec::new();
    for v in values {
        let record = ProduceRecord {
            key: a.key.as_ref().map(|k| k.as_bytes().to_vec()),
            value: Some(v.into_bytes()),
            headers: headers.clone(),
            timestamp: None,
        };
        let (partition, offset) = client.produce(&a.topic, a.partition, record).await?;
        rows.push(vec![partition.to_string(), offset.to_string()]);
        json.push(json!({"partition": partition, "offset": offset}));
    }
    Ok(Some(Printed {
        header: vec!["PARTITION", "OFFSET"],
        rows,
        json: Value::Array(json),
    }))
}

fn text(b: &Option<Vec<u8>>) -> Value {
    match b {
        None => Value::Null,
        Some(b) => Value::String(String::from_utf8_lossy(b).into_owned()),
    }
}

fn record_json(r: &Record) -> Value {
    let headers: Vec<Value> = r.headers.iter().map(|(k, v)| json!([k, text(v)])).collect();
    json!({"partition": r.partition, "offset": r.offset, "timestamp": r.timestamp,
           "key": text(&r.key), "value": text(&r.value), "headers": headers})
}

async fn consume(
    client: &Client,
    a: &ConsumeArgs,
    output: Output,
) -> anyhow::Result<Option<Printed>> {
    let md = client
        .metadata(Some(std::slice::from_ref(&a.topic)))
        .await?;
    let t = md
        .topics
        .iter()
        .find(|t| t.name == a.topic && t.error.is_none())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "topic {} does not exist: `sluice topics list` shows the topics",
                a.topic
            )
        })?;
    let tps: Vec<(String, i32)> = t
        .partitions
        .iter()
        .map(|p| (a.topic.clone(), p.index))
        .filter(|(_, p)| a.partition.is_none_or(|want| want == *p))
        .collect();
    if tps.is_empty() {
        anyhow::bail!("topic {} has no partition {:?}", a.topic, a.partition);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut next: BTreeMap<(String, i32), i64> = match a.from {
        From::Beginning => end_offsets(client, &tps, OffsetSpec::Earliest).await?,
        From::End => end_offsets(client, &tps, OffsetSpec::Latest).await?,
        From::Offset(o) => tps.iter().map(|tp| (tp.clone(), o)).collect(),
        From::Time(ts) => end_offsets(client, &tps, OffsetSpec::Timestamp(ts)).await?,
        From::Ago(ms) => end_offsets(client, &tps, OffsetSpec::Timestamp(now - ms)).await?,
    };
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let mut any = false;
        for ((topic, p), offset) in next.iter_mut() {
            let fetched = client
                .fetch(topic, *p, *offset, 1 << 20, Isolation::ReadUncommitted)
                .await?;
            for r in &fetched.records {
                if a.max_messages.is_some_and(|m| printed >= m) {
                    return Ok(None);
                }
                match output {
                    Output::Json => writeln!(stdout, "{}", record_json(r))?,
                    Output::Text => writeln!(
                        stdout,
                        "{}-{}@{}\t{}\t{}",
                        topic,
                        r.partition,
                        r.offset,
                        r.key
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default(),
                        r.value
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default()
                    )?,
                }
                printed += 1;
            }
            any |= fetched.next_offset > *offset;
            *offset = fetched.next_offset.max(*offset);
        }
        if a.max_messages.is_some_and(|m| printed >= m) {
            return Ok(None);
        }
        if !any {
            if !a.follow {
                return Ok(None);
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
}
