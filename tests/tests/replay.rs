//! `sluice replay` end to end: the real `sluice` binary against real broker
//! processes, source records written with explicit timestamps and headers
//! through `sluice_broker::client`, the destination read back the same way.
//!
//! - An offset range and a time range (RFC 3339 start, millisecond end; end
//!   exclusive) land in the destination exactly: same keys, values, headers
//!   and timestamps, in order per partition; `key` partitioning follows
//!   murmur2.
//! - A replay interrupted with SIGINT (at a low `--rate`, so it is part way)
//!   prints its `--resume` state; resuming finishes with no duplicate and no
//!   gap.
//! - `--dry-run` counts records and bytes per partition and writes nothing.
//! - Bad input (unknown topics, a malformed time, an end before the start,
//!   too few destination partitions, a resume state for another topic) exits
//!   non-zero naming the fix, and the destination stays empty.
//! - Aborted transactions in the source are not replayed.
//! - The documented example: re-driving a dead-letter topic into the main
//!   topic on another cluster.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use rdkafka::producer::{BaseRecord, Producer};
use sluice_broker::client::records::partition_for_key;
use sluice_broker::client::{
    ApiError, Client, ClientConfig, Isolation, ListedOffset, NewTopic, OffsetSpec, ProduceRecord,
    Record,
};
use sluice_tests::cmd::{self, CmdOutput};
use sluice_tests::{kafka, now_ms, unique_topic, wait_for, BrokerProcess};

const RUN: Duration = Duration::from_secs(120);

/// `sluice --bootstrap B replay ARGS...`, finished.
fn replay(bootstrap: &str, args: &[&str]) -> Result<CmdOutput> {
    cmd::run(
        Command::new(sluice_tests::sluice_binary()?)
            .args(["--bootstrap", bootstrap, "replay"])
            .args(args),
        None,
        RUN,
    )
}

/// The JSON summary a successful `--output json` run printed.
fn summary(out: &CmdOutput) -> Result<serde_json::Value> {
    serde_json::from_str(out.stdout.trim())
        .with_context(|| format!("the summary is not JSON: {out}"))
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

async fn connect(bootstrap: &str) -> Result<Client> {
    Ok(Client::connect(bootstrap, ClientConfig::default()).await?)
}

fn create(bootstrap: &str, topic: &str, partitions: i32) -> Result<()> {
    rt()?.block_on(async {
        let client = connect(bootstrap).await?;
        let created = client
            .create_topics(
                vec![NewTopic {
                    name: topic.to_string(),
                    partitions,
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                }],
                false,
            )
            .await?;
        for (name, r) in created {
            r.map_err(|e| anyhow::anyhow!("creating {name}: {e}"))?;
        }
        Ok(())
    })
}

/// The source record `i` of partition `p`: keyed, two headers (one key
/// twice, one null value), a timestamp `step` ms after the previous one.
fn source_record(p: i32, i: i64, base_ts: i64) -> ProduceRecord {
    ProduceRecord {
        key: Some(format!("key-{p}-{i}").into_bytes()),
        value: Some(format!("{{\"partition\":{p},\"n\":{i}}}").into_bytes()),
        headers: vec![
            ("trace".into(), Some(format!("t{p}.{i}").into_bytes())),
            ("trace".into(), Some(b"again".to_vec())),
            ("empty".into(), None),
        ],
        timestamp: Some(base_ts + i * 1_000),
    }
}

/// Writes `per_partition` records to each partition: record i of every
/// partition has timestamp `base_ts + i s`.
fn fill(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    per_partition: i64,
    base_ts: i64,
) -> Result<()> {
    rt()?.block_on(async {
        let client = connect(bootstrap).await?;
        for p in 0..partitions {
            for i in 0..per_partition {
                let (_, offset) = client
                    .produce(topic, Some(p), source_record(p, i, base_ts))
                    .await?;
                ensure!(offset == i, "{topic}-{p}: record {i} at offset {offset}");
            }
        }
        Ok(())
    })
}

/// Every record of every partition of `topic` (read_committed).
fn read_all(bootstrap: &str, topic: &str) -> Result<BTreeMap<i32, Vec<Record>>> {
    rt()?.block_on(async {
        let client = connect(bootstrap).await?;
        let md = client.metadata(Some(&[topic.to_string()])).await?;
        let t = md.topic(topic).context("no such topic")?;
        let tps: Vec<(String, i32)> = t
            .partitions
            .iter()
            .map(|p| (topic.to_string(), p.index))
            .collect();
        let ends = client
            .list_offsets(&tps, OffsetSpec::Latest, Isolation::ReadCommitted)
            .await?;
        let mut out = BTreeMap::new();
        for (tp, end) in ends {
            let end = end.map_err(|e| anyhow::anyhow!("{e}"))?.offset;
            let mut records = Vec::new();
            let mut next = 0;
            while next < end {
                let f = client
                    .fetch(topic, tp.1, next, 1 << 20, Isolation::ReadCommitted)
                    .await?;
                ensure!(f.next_offset > next, "{topic}-{}: stuck at {next}", tp.1);
                records.extend(f.records.into_iter().filter(|r| r.offset < end));
                next = f.next_offset;
            }
            out.insert(tp.1, records);
        }
        Ok(out)
    })
}

/// Records in the destination, over all partitions.
fn count(bootstrap: &str, topic: &str) -> Result<usize> {
    Ok(read_all(bootstrap, topic)?.values().map(Vec::len).sum())
}

/// What a record carries besides where it is stored.
type Content = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
    i64,
);

fn content(r: &Record) -> Content {
    (
        r.key.clone(),
        r.value.clone(),
        r.headers.clone(),
        r.timestamp,
    )
}

fn contents(rs: &[Record]) -> Vec<Content> {
    rs.iter().map(content).collect()
}

/// The source's records of partition `p` in `[from, to)`.
fn expected(src: &BTreeMap<i32, Vec<Record>>, p: i32, from: i64, to: i64) -> Vec<Content> {
    src.get(&p)
        .map(|rs| {
            rs.iter()
                .filter(|r| r.offset >= from && r.offset < to)
                .map(content)
                .collect()
        })
        .unwrap_or_default()
}

/// An hour ago, on a whole second: inside the default retention.
fn base_ts() -> i64 {
    (now_ms() - 3_600_000) / 1_000 * 1_000
}

#[test]
fn offset_range_is_copied_with_keys_headers_and_timestamps_in_order() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let (src, dst) = (unique_topic("replay-src"), unique_topic("replay-dst"));
    create(&b, &src, 3)?;
    create(&b, &dst, 3)?;
    fill(&b, &src, 3, 30, base_ts())?;

    let out = replay(
        &b,
        &[
            "--from", &src, "--to", &dst, "--start", "5", "--end", "25", "--output", "json",
        ],
    )?
    .require_success()?;
    let s = summary(&out)?;
    ensure!(s["status"] == "done" && s["records"] == 60, "summary {s}");

    let source = read_all(&b, &src)?;
    let dest = read_all(&b, &dst)?;
    for p in 0..3 {
        let got = dest.get(&p).map(|r| contents(r)).unwrap_or_default();
        ensure!(
            got == expected(&source, p, 5, 25),
            "{dst}-{p} holds {} records, not offsets 5..25 of {src}-{p} (first: {:?})",
            got.len(),
            got.first()
        );
    }
    Ok(())
}

#[test]
fn time_range_is_copied_end_exclusive_and_keyed_by_murmur2() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let (src, dst) = (
        unique_topic("replay-time-src"),
        unique_topic("replay-time-dst"),
    );
    create(&b, &src, 3)?;
    create(&b, &dst, 4)?;
    let base = base_ts();
    fill(&b, &src, 3, 30, base)?;

    // Records 10 to 19 of partitions 0 and 2: [base + 10 s, base + 20 s).
    let start = chrono::DateTime::from_timestamp_millis(base + 10_000)
        .context("time")?
        .to_rfc3339();
    let end = (base + 20_000).to_string();
    let out = replay(
        &b,
        &[
            "--from",
            &format!("{src}:0,2"),
            "--to",
            &dst,
            "--start",
            &format!("@{start}"),
            "--end",
            &format!("@{end}"),
            "--partitioning",
            "key",
            "--output",
            "json",
        ],
    )?
    .require_success()?;
    ensure!(summary(&out)?["records"] == 20, "{out}");

    let source = read_all(&b, &src)?;
    let dest = read_all(&b, &dst)?;
    // Each record where murmur2 of its key puts it; per destination
    // partition, each source partition's records in their order.
    let mut want: BTreeMap<i32, Vec<Content>> = BTreeMap::new();
    for p in [0, 2] {
        for c in expected(&source, p, 10, 20) {
            let key = c.0.clone().unwrap_or_default();
            want.entry(partition_for_key(&key, 4)).or_default().push(c);
        }
    }
    for d in 0..4 {
        let got = dest.get(&d).map(|r| contents(r)).unwrap_or_default();
        let mut w = want.remove(&d).unwrap_or_default();
        // Source partitions interleave in the destination: compare each
        // source partition's subsequence.
        for p in [0, 2] {
            let prefix = format!("key-{p}-").into_bytes();
            let of = |v: &[Content]| -> Vec<Content> {
                v.iter()
                    .filter(|c| c.0.as_deref().is_some_and(|k| k.starts_with(&prefix)))
                    .cloned()
                    .collect()
            };
            ensure!(
                of(&got) == of(&w),
                "{dst}-{d}: records of {src}-{p} differ: got {:?}, want {:?}",
                of(&got).iter().map(|c| c.3).collect::<Vec<_>>(),
                of(&w).iter().map(|c| c.3).collect::<Vec<_>>()
            );
        }
        ensure!(
            got.len() == w.len(),
            "{dst}-{d}: {} records, want {}",
            got.len(),
            w.len()
        );
        w.clear();
    }
    Ok(())
}

/// A running `sluice replay` whose output is collected.
struct Running {
    child: std::process::Child,
    out: std::thread::JoinHandle<String>,
    err: std::thread::JoinHandle<String>,
}

fn spawn_replay(bootstrap: &str, args: &[&str]) -> Result<Running> {
    let mut child = Command::new(sluice_tests::sluice_binary()?)
        .args(["--bootstrap", bootstrap, "replay"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning sluice replay")?;
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut s);
            }
            s
        })
    };
    let out = collect(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = collect(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    Ok(Running { child, out, err })
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn interrupted_replay_resumes_without_duplicates_or_gaps() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let (src, dst) = (
        unique_topic("replay-int-src"),
        unique_topic("replay-int-dst"),
    );
    create(&b, &src, 2)?;
    create(&b, &dst, 2)?;
    fill(&b, &src, 2, 150, base_ts())?;

    // 300 records at 30/s: ten seconds, so SIGINT lands part way.
    let mut run = spawn_replay(
        &b,
        &[
            "--from", &src, "--to", &dst, "--rate", "30", "--output", "json",
        ],
    )?;
    wait_for(RUN, "the replay to copy its first records", || {
        Ok((count(&b, &dst)? >= 20).then_some(()))
    })?;
    let pid = run.child.id().to_string();
    cmd::run(
        Command::new("kill").args(["-INT", &pid]),
        None,
        Duration::from_secs(10),
    )?
    .require_success()?;
    let status = wait_for(RUN, "the replay to stop after SIGINT", || {
        Ok(run.child.try_wait()?)
    })?;
    let stdout = std::mem::replace(&mut run.out, std::thread::spawn(String::new))
        .join()
        .unwrap_or_default();
    let stderr = std::mem::replace(&mut run.err, std::thread::spawn(String::new))
        .join()
        .unwrap_or_default();
    ensure!(
        !status.success(),
        "an interrupted replay exited {status}\n{stdout}\n{stderr}"
    );
    let s: serde_json::Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("summary: {stdout}\n{stderr}"))?;
    ensure!(s["status"] == "interrupted", "summary {s}\n{stderr}");
    let resume = s["resume"].as_str().context("no resume state")?.to_string();
    ensure!(
        stderr.contains(&format!("--resume {resume}")),
        "stderr does not give the --resume argument:\n{stderr}"
    );
    let copied = s["records"].as_u64().context("records")?;
    ensure!(
        copied > 0 && copied < 300,
        "the replay was not interrupted part way: {copied} records"
    );
    // What was acknowledged is exactly what the destination holds.
    ensure!(
        count(&b, &dst)? as u64 == copied,
        "the destination does not hold the {copied} records the summary reports"
    );

    let out = replay(
        &b,
        &[
            "--from", &src, "--to", &dst, "--resume", &resume, "--output", "json",
        ],
    )?
    .require_success()?;
    let s = summary(&out)?;
    ensure!(
        s["records"].as_u64() == Some(300 - copied),
        "the resumed run copied {} records, want {}",
        s["records"],
        300 - copied
    );
    let source = read_all(&b, &src)?;
    let dest = read_all(&b, &dst)?;
    for p in 0..2 {
        let got = dest.get(&p).map(|r| contents(r)).unwrap_or_default();
        ensure!(
            got == expected(&source, p, 0, 150),
            "{dst}-{p}: {} records after resume, want the 150 of {src}-{p} once each, in order",
            got.len()
        );
    }
    Ok(())
}

#[test]
fn dry_run_counts_records_and_bytes_and_writes_nothing() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let (src, dst) = (
        unique_topic("replay-dry-src"),
        unique_topic("replay-dry-dst"),
    );
    create(&b, &src, 2)?;
    create(&b, &dst, 2)?;
    fill(&b, &src, 2, 12, base_ts())?;
    let out = replay(
        &b,
        &[
            "--from",
            &src,
            "--to",
            &dst,
            "--start",
            "2",
            "--dry-run",
            "--output",
            "json",
        ],
    )?
    .require_success()?;
    let s = summary(&out)?;
    let source = read_all(&b, &src)?;
    for p in 0..2 {
        let part = s["partitions"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["partition"] == p))
            .with_context(|| format!("no partition {p} in {s}"))?;
        let want: Vec<&Record> = source[&p].iter().filter(|r| r.offset >= 2).collect();
        let bytes: usize = want
            .iter()
            .map(|r| {
                r.key.as_ref().map_or(0, Vec::len)
                    + r.value.as_ref().map_or(0, Vec::len)
                    + r.headers
                        .iter()
                        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                        .sum::<usize>()
            })
            .sum();
        ensure!(
            part["records"] == want.len() && part["bytes"] == bytes,
            "partition {p}: dry run counted {part}, want {} records and {bytes} bytes",
            want.len()
        );
    }
    ensure!(s["dry_run"] == true && s["records"] == 20, "summary {s}");
    ensure!(count(&b, &dst)? == 0, "the dry run wrote to {dst}");
    Ok(())
}

#[test]
fn bad_input_exits_non_zero_with_the_fix_and_changes_nothing() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let (src, dst) = (
        unique_topic("replay-bad-src"),
        unique_topic("replay-bad-dst"),
    );
    create(&b, &src, 3)?;
    create(&b, &dst, 2)?;
    fill(&b, &src, 3, 5, base_ts())?;
    let missing = unique_topic("replay-missing");
    let src7 = format!("{src}:7");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--from", &missing, "--to", &dst],
            "`sluice topics list`",
        ),
        (vec!["--from", &src, "--to", &missing], "create it first"),
        (
            vec![
                "--from",
                &src,
                "--to",
                &dst,
                "--start",
                "@2026-02-30T10:00:00Z",
            ],
            "RFC 3339",
        ),
        (
            vec!["--from", &src, "--to", &dst, "--start", "10", "--end", "3"],
            "pass an --end at or after the start",
        ),
        (
            vec!["--from", &src, "--to", &dst],
            "--partitioning key or round-robin",
        ),
        (
            vec!["--from", &src7, "--to", &dst, "--partitioning", "key"],
            "there is no partition 7",
        ),
        (
            vec!["--from", &src, "--to", &dst, "--resume", "other:0=0..5"],
            "pass the --from of the interrupted replay",
        ),
        (
            vec!["--from", &src, "--to", &src],
            "replaying a topic into itself",
        ),
    ];
    for (args, fix) in cases {
        let out = replay(&b, &args)?;
        ensure!(
            !out.status.success() && out.stderr.contains(fix),
            "{args:?} should fail naming {fix:?}: {out}"
        );
        ensure!(!out.stderr.contains("panicked"), "{args:?} panicked: {out}");
        ensure!(count(&b, &dst)? == 0, "{args:?} wrote to {dst}");
    }
    ensure!(count(&b, &src)? == 15, "the source changed");
    Ok(())
}

#[test]
fn aborted_transactions_are_not_replayed() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let (src, dst) = (
        unique_topic("replay-txn-src"),
        unique_topic("replay-txn-dst"),
    );
    create(&b, &src, 1)?;
    create(&b, &dst, 1)?;
    let mut cfg = kafka::producer_config(&b);
    cfg.set("transactional.id", unique_topic("replay-txn"));
    let (producer, _ctx) = kafka::producer(&cfg)?;
    let timeout = Duration::from_secs(30);
    producer.init_transactions(timeout)?;
    for (txn, commit) in [("a", true), ("b", false), ("c", true)] {
        producer.begin_transaction()?;
        for i in 0..3 {
            let value = format!("{txn}{i}");
            producer
                .send(
                    BaseRecord::<str, str, usize>::with_opaque_to(&src, 0)
                        .key(txn)
                        .payload(&value),
                )
                .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))?;
        }
        // Deliveries are served by polling, which the abort cannot do.
        producer.flush(timeout)?;
        if commit {
            producer.commit_transaction(timeout)?;
        } else {
            producer.abort_transaction(timeout)?;
        }
    }
    // The commit's marker is written after commit_transaction returns;
    // until then the last stable offset (where `latest` ends) is behind.
    wait_for(RUN, "the last transaction's marker", || {
        rt()?.block_on(async {
            let client = connect(&b).await?;
            let tp = [(src.clone(), 0)];
            let lso = client
                .list_offsets(&tp, OffsetSpec::Latest, Isolation::ReadCommitted)
                .await?;
            let hw = client
                .list_offsets(&tp, OffsetSpec::Latest, Isolation::ReadUncommitted)
                .await?;
            let get =
                |m: &BTreeMap<(String, i32), Result<ListedOffset, ApiError>>| match m.get(&tp[0]) {
                    Some(Ok(l)) => Some(l.offset),
                    _ => None,
                };
            Ok((get(&lso).is_some() && get(&lso) == get(&hw)).then_some(()))
        })
    })?;
    let out = replay(&b, &["--from", &src, "--to", &dst, "--output", "json"])?.require_success()?;
    ensure!(summary(&out)?["records"] == 6, "{out}");
    let values: Vec<String> = read_all(&b, &dst)?
        .remove(&0)
        .unwrap_or_default()
        .iter()
        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
        .collect();
    ensure!(
        values == ["a0", "a1", "a2", "c0", "c1", "c2"],
        "the destination holds {values:?}"
    );
    Ok(())
}

#[test]
fn dead_letter_topic_is_redriven_into_the_main_topic_on_another_cluster() -> Result<()> {
    // docs/replay.md: failed payments parked in payments.dlq on one cluster
    // go back into payments on the production cluster, where a keyed
    // producer would have put them.
    let ops = BrokerProcess::start()?;
    let prod = BrokerProcess::start()?;
    let (dlq, main) = (unique_topic("payments.dlq"), unique_topic("payments"));
    create(&ops.bootstrap(), &dlq, 1)?;
    create(&prod.bootstrap(), &main, 6)?;
    let base = base_ts();
    rt()?.block_on(async {
        let client = connect(&prod.bootstrap()).await?;
        for i in 0..10 {
            let r = ProduceRecord {
                key: Some(format!("order-{i}").into_bytes()),
                value: Some(b"ok".to_vec()),
                ..ProduceRecord::default()
            };
            client.produce(&main, None, r).await?;
        }
        let dl = connect(&ops.bootstrap()).await?;
        for i in 0..8 {
            let r = ProduceRecord {
                key: Some(format!("order-{}", 100 + i).into_bytes()),
                value: Some(format!("{{\"amount\":{i}}}").into_bytes()),
                headers: vec![("dlq.error".into(), Some(b"timeout".to_vec()))],
                timestamp: Some(base + i * 1_000),
            };
            dl.produce(&dlq, Some(0), r).await?;
        }
        anyhow::Ok(())
    })?;
    let before = read_all(&prod.bootstrap(), &main)?;
    let out = replay(
        &ops.bootstrap(),
        &[
            "--from",
            &dlq,
            "--to",
            &main,
            "--to-bootstrap",
            &prod.bootstrap(),
            "--partitioning",
            "key",
        ],
    )?
    .require_success()?;
    ensure!(out.stderr.contains("copied 8 records"), "{out}");
    let dead = read_all(&ops.bootstrap(), &dlq)?;
    let after = read_all(&prod.bootstrap(), &main)?;
    let mut redriven = 0;
    for (p, records) in &after {
        let old = before.get(p).map(|r| contents(r)).unwrap_or_default();
        let now = contents(records);
        ensure!(
            now.starts_with(&old),
            "{main}-{p}: the records before the re-drive changed"
        );
        for c in &now[old.len()..] {
            let key = c.0.clone().unwrap_or_default();
            ensure!(
                partition_for_key(&key, 6) == *p,
                "{} went to partition {p}",
                String::from_utf8_lossy(&key)
            );
            redriven += 1;
        }
    }
    ensure!(redriven == 8, "{redriven} records re-driven, want 8");
    let mut want = contents(&dead[&0]);
    let mut got: Vec<Content> = after
        .iter()
        .flat_map(|(p, rs)| {
            let skip = before.get(p).map_or(0, Vec::len);
            rs.iter().skip(skip).map(content)
        })
        .collect();
    want.sort();
    got.sort();
    ensure!(
        got == want,
        "re-driven records differ from the dead letters"
    );
    ensure!(
        count(&ops.bootstrap(), &dlq)? == 8,
        "the dead-letter topic changed"
    );
    Ok(())
}
