//! `sluice offsets reset` and `sluice offsets undo` end to end: the real
//! `sluice` binary against a real broker process, with a 6-partition topic
//! of 100 records per partition (timestamps one second apart) and a group
//! with committed offsets. What the group has committed is read with
//! kafka-python (a real consumer of the group), never with sluice itself.
//!
//! - Every strategy: the dry run changes nothing; `--execute` commits
//!   exactly the planned offsets (checked against offsets the test computes
//!   itself), writes the previous ones to the undo file first; `undo
//!   --execute` restores them. Out-of-range targets are clamped and reported.
//! - A reset of a group with a live member is refused, naming the member,
//!   and changes nothing.
//! - A plan whose group moved on before it was applied is refused (stale).
//! - Bad input exits non-zero with the fix and changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;
use sluice_broker::admin::reset::{self, ResetError, Scope, Strategy};
use sluice_broker::client::{Client, ClientConfig, NewTopic, ProduceRecord};
use sluice_tests::cmd::{self, find_program, CmdOutput};
use sluice_tests::group::{Member, MemberConfig, MemberKind};
use sluice_tests::{unique_topic, wait_until, BrokerOptions, BrokerProcess};

const PARTITIONS: i32 = 6;
const PER_PARTITION: i64 = 100;
/// The group's committed offsets before each reset (partition 5's is past
/// the log end, as after a truncation, for --to-current to repair).
const BASELINE: [i64; 6] = [10, 20, 30, 40, 50, 150];
/// The timestamp of record `i` of every partition is `T0 + i * 1000`.
const T0: i64 = 1_795_255_200_000; // 2026-11-21T10:00:00Z
const RUN: Duration = Duration::from_secs(120);

/// Runs `sluice ARGS...` (with `--bootstrap B` where the args put it).
fn sluice(args: &[&str]) -> Result<CmdOutput> {
    cmd::run(
        Command::new(sluice_tests::sluice_binary()?).args(args),
        None,
        RUN,
    )
}

fn sluice_ok(args: &[&str]) -> Result<String> {
    Ok(sluice(args)?.require_success()?.stdout)
}

fn sluice_json(args: &[&str]) -> Result<Value> {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let out = sluice_ok(&all)?;
    serde_json::from_str(out.trim()).with_context(|| format!("sluice printed {out:?}"))
}

struct Fixture {
    broker: BrokerProcess,
    topic: String,
    group: String,
    /// The `--data-dir` for undo files.
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Result<Fixture> {
        let broker = BrokerProcess::start_with(BrokerOptions {
            config_yaml: Some("group.initial.rebalance.delay.ms: 0\n".to_string()),
            ..BrokerOptions::default()
        })?;
        let f = Fixture {
            broker,
            topic: unique_topic("offsets-orders"),
            group: unique_topic("offsets-billing"),
            dir: tempfile::tempdir()?,
        };
        let (b, topic) = (f.bootstrap(), f.topic.clone());
        rt()?.block_on(async move {
            let client = Client::connect(&b, ClientConfig::default()).await?;
            for (name, r) in client
                .create_topics(
                    vec![NewTopic {
                        name: topic.clone(),
                        partitions: PARTITIONS,
                        replication_factor: 1,
                        configs: BTreeMap::from([("retention.ms".to_string(), "-1".to_string())]),
                    }],
                    false,
                )
                .await?
            {
                r.map_err(|e| anyhow::anyhow!("creating {name}: {e}"))?;
            }
            client.metadata(None).await?;
            for p in 0..PARTITIONS {
                for i in 0..PER_PARTITION {
                    let record = ProduceRecord {
                        key: Some(format!("k{i}").into_bytes()),
                        value: Some(format!("{p}-{i}").into_bytes()),
                        timestamp: Some(T0 + i * 1000),
                        ..ProduceRecord::default()
                    };
                    let (_, offset) = client.produce(&topic, Some(p), record).await?;
                    ensure!(offset == i, "{topic}-{p}: record {i} landed at {offset}");
                }
            }
            anyhow::Ok(())
        })?;
        f.commit(&BASELINE)?;
        Ok(f)
    }

    fn bootstrap(&self) -> String {
        self.broker.bootstrap()
    }

    fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Sets the group's offsets with an admin commit (generation -1).
    fn commit(&self, offsets: &[i64]) -> Result<()> {
        let (b, group) = (self.bootstrap(), self.group.clone());
        let offsets: BTreeMap<(String, i32), i64> = offsets
            .iter()
            .zip(0..)
            .map(|(&o, p)| ((self.topic.clone(), p), o))
            .collect();
        rt()?.block_on(async move {
            let client = Client::connect(&b, ClientConfig::default()).await?;
            for (tp, r) in client.commit_offsets(&group, &offsets).await? {
                r.map_err(|e| anyhow::anyhow!("committing {tp:?}: {e}"))?;
            }
            anyhow::Ok(())
        })
    }

    /// The group's committed offsets as kafka-python reads them.
    fn committed(&self) -> Result<Vec<Option<i64>>> {
        let python = find_program(
            "python3",
            "install Python 3 and `pip install kafka-python==3.0.12` (scripts/test.sh does)",
        )?;
        let script = format!(
            "from kafka import KafkaConsumer, TopicPartition\n\
             c = KafkaConsumer(bootstrap_servers='{}', group_id='{}', enable_auto_commit=False)\n\
             print(' '.join(str(c.committed(TopicPartition('{}', p))) for p in range({PARTITIONS})))\n\
             c.close()\n",
            self.bootstrap(),
            self.group,
            self.topic
        );
        let out = cmd::run(
            Command::new(python).args(["-c", &script]),
            None,
            Duration::from_secs(60),
        )?
        .require_success()?;
        out.stdout
            .split_whitespace()
            .map(|v| match v {
                "None" => Ok(None),
                v => v
                    .parse::<i64>()
                    .map(Some)
                    .with_context(|| format!("kafka-python printed {:?}", out.stdout)),
            })
            .collect()
    }

    fn ensure_committed(&self, want: &[i64], when: &str) -> Result<()> {
        let got = self.committed()?;
        let want: Vec<Option<i64>> = want.iter().map(|&o| Some(o)).collect();
        ensure!(
            got == want,
            "{when}: kafka-python reads {got:?}, expected {want:?}"
        );
        Ok(())
    }

    fn undo_files(&self) -> Result<Vec<PathBuf>> {
        let dir = self.data_dir().join("undo");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        files.sort();
        Ok(files)
    }
}

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// The planned `new` offset per partition of a JSON plan.
fn planned(plan: &Value) -> Result<BTreeMap<i32, i64>> {
    plan["partitions"]
        .as_array()
        .context("no partitions in the plan")?
        .iter()
        .map(|r| {
            let p = r["partition"].as_i64().context("partition")?;
            let n = r["new"].as_i64().context("new")?;
            Ok((i32::try_from(p)?, n))
        })
        .collect()
}

/// What each strategy must do, computed here from the fixture's layout
/// (offsets 0..100, record i at T0 + i s), independently of the planner.
fn clamp(o: i64) -> i64 {
    o.clamp(0, PER_PARTITION)
}

/// The first offset whose timestamp is at or after `ts`.
fn offset_at(ts: i64) -> i64 {
    clamp((ts - T0 + 999).div_euclid(1000))
}

/// A strategy's new offset of a partition, from its committed offset.
type Expect = Box<dyn Fn(i32, i64) -> i64>;

#[test]
fn every_strategy_dry_runs_executes_exactly_the_plan_and_undoes() -> Result<()> {
    let f = Fixture::new()?;
    let b = f.bootstrap();
    let (topic, group) = (f.topic.as_str(), f.group.as_str());
    let data_dir = f.data_dir().to_str().context("utf-8 temp dir")?.to_string();
    let file = f.data_dir().join("targets.csv");
    std::fs::write(
        &file,
        format!(
            "{topic},0,5\n{topic},1,95\n{topic},2,999\n{topic},3,0\n{topic},4,50\n{topic},5,60\n"
        ),
    )?;
    let file = file.to_str().context("utf-8 path")?.to_string();
    let all: Vec<i32> = (0..PARTITIONS).collect();
    let some = vec![0, 2, 5];
    let some_arg = format!("{topic}:0,2,5");
    let datetime = "2026-11-21T10:00:42.500Z"; // between records 42 and 43
    let cases: Vec<(&str, Vec<&str>, Vec<i32>, Expect)> = vec![
        (
            "to-earliest",
            vec!["--to-earliest"],
            all.clone(),
            Box::new(|_, _| 0),
        ),
        (
            "to-latest",
            vec!["--to-latest"],
            some.clone(),
            Box::new(|_, _| PER_PARTITION),
        ),
        (
            "to-offset",
            vec!["--to-offset", "25"],
            all.clone(),
            Box::new(|_, _| 25),
        ),
        (
            "to-offset out of range",
            vec!["--to-offset", "1000"],
            all.clone(),
            Box::new(|_, _| PER_PARTITION),
        ),
        (
            "shift-by",
            vec!["--shift-by", "-15"],
            all.clone(),
            Box::new(|_, c| clamp(c - 15)),
        ),
        (
            "shift-by forward",
            vec!["--shift-by=70"],
            some.clone(),
            Box::new(|_, c| clamp(c + 70)),
        ),
        (
            "to-datetime",
            vec!["--to-datetime", datetime],
            all.clone(),
            Box::new(|_, _| 43),
        ),
        (
            "to-current",
            vec!["--to-current"],
            all.clone(),
            Box::new(|_, c| clamp(c)),
        ),
        (
            "from-file",
            vec!["--from-file", &file],
            all.clone(),
            Box::new(|p, _| clamp([5, 95, 999, 0, 50, 60][p as usize])),
        ),
    ];
    for (name, strategy, partitions, expect) in &cases {
        let scope: Vec<&str> = if strategy[0] == "--from-file" {
            vec![]
        } else if partitions.len() == all.len() {
            vec!["--all-topics"]
        } else {
            vec!["--topic", &some_arg]
        };
        let mut args = vec!["offsets", "reset", "--group", group];
        args.extend(scope.iter().copied());
        args.extend(strategy.iter().copied());
        args.extend(["--data-dir", &data_dir]);
        // --bootstrap after the subcommand here, before it in the undo below.
        args.extend(["--bootstrap", &b]);

        let expected: BTreeMap<i32, i64> = partitions
            .iter()
            .map(|&p| (p, expect(p, BASELINE[p as usize])))
            .collect();
        let mut after = BASELINE.to_vec();
        for (&p, &o) in &expected {
            after[p as usize] = o;
        }

        // Dry run (the default): the plan, and nothing changed.
        let plan = sluice_json(&args)?;
        ensure!(plan["executed"] == false, "{name}: {plan}");
        ensure!(
            planned(&plan)? == expected,
            "{name}: planned {:?}, expected {expected:?}\n{plan}",
            planned(&plan)?
        );
        for row in plan["partitions"].as_array().into_iter().flatten() {
            let p = row["partition"].as_i64().unwrap_or(-1) as usize;
            let current = BASELINE.get(p).copied().unwrap_or(-1);
            ensure!(row["current"] == current, "{name}: {row}");
            let new = row["new"].as_i64().unwrap_or(-1);
            // What the move re-reads or skips within the log, and its first
            // and last records' timestamps.
            let (lo, hi) = if new < current {
                (new, current.min(PER_PARTITION))
            } else {
                (current.max(0), new)
            };
            let (kind, count) = if new < current.min(PER_PARTITION) {
                ("re-read", hi - lo)
            } else if new > current {
                ("skip", hi - lo)
            } else if new < current {
                ("re-read", 0)
            } else {
                ("unchanged", 0)
            };
            ensure!(
                row["effect"] == kind && row["messages"] == count,
                "{name}: {row}"
            );
            if lo < hi {
                ensure!(
                    row["oldest_timestamp_ms"] == T0 + lo * 1000
                        && row["newest_timestamp_ms"] == T0 + (hi - 1) * 1000,
                    "{name}: span [{lo}, {hi}) timestamps in {row}"
                );
            } else {
                ensure!(row["oldest_timestamp_ms"].is_null(), "{name}: {row}");
            }
        }
        f.ensure_committed(&BASELINE, &format!("{name}: after the dry run"))?;
        ensure!(
            f.undo_files()?.is_empty(),
            "{name}: a dry run wrote an undo file"
        );

        // Execute: exactly the plan, the previous offsets in the undo file.
        let mut exec = args.clone();
        exec.push("--execute");
        let done = sluice_json(&exec)?;
        ensure!(done["executed"] == true, "{name}: {done}");
        ensure!(planned(&done)? == expected, "{name}: executed {done}");
        f.ensure_committed(&after, &format!("{name}: after --execute"))?;
        let undo = done["undo_file"]
            .as_str()
            .with_context(|| format!("{name}: no undo file in {done}"))?
            .to_string();
        let files = f.undo_files()?;
        ensure!(
            files == [PathBuf::from(&undo)],
            "{name}: undo files {files:?}, reported {undo}"
        );
        let saved = std::fs::read_to_string(&undo)?;
        let want_saved: String = partitions
            .iter()
            .map(|&p| format!("{topic},{p},{}\n", BASELINE[p as usize]))
            .collect();
        ensure!(saved == want_saved, "{name}: undo file holds {saved:?}");

        // Undo, dry run first: nothing changes; then --execute restores.
        let undo_plan = sluice_json(&[
            "--bootstrap",
            &b,
            "offsets",
            "undo",
            &undo,
            "--group",
            group,
            "--data-dir",
            &data_dir,
        ])?;
        let back: BTreeMap<i32, i64> = partitions
            .iter()
            .map(|&p| (p, clamp(BASELINE[p as usize])))
            .collect();
        ensure!(
            planned(&undo_plan)? == back,
            "{name}: undo plans {undo_plan}"
        );
        f.ensure_committed(&after, &format!("{name}: after the undo dry run"))?;
        sluice_ok(&[
            "--bootstrap",
            &b,
            "offsets",
            "undo",
            &undo,
            "--group",
            group,
            "--undo-file",
            &format!("{}/redo.csv", data_dir),
            "--execute",
        ])?;
        let mut restored = BASELINE.to_vec();
        for (&p, &o) in &back {
            restored[p as usize] = o;
        }
        f.ensure_committed(&restored, &format!("{name}: after undo --execute"))?;
        // Partition 5's 150 lies past the log end: undo clamps it like any
        // target, so put the baseline back for the next case.
        f.commit(&BASELINE)?;
        std::fs::remove_dir_all(f.data_dir().join("undo"))?;
        std::fs::remove_file(format!("{}/redo.csv", data_dir))?;
    }
    Ok(())
}

#[test]
fn by_duration_looks_up_the_time_that_long_before_now() -> Result<()> {
    let f = Fixture::new()?;
    let b = f.bootstrap();
    // A duration that reaches back to about record 50; the offset is checked
    // against the time the command reports it looked up, so however long
    // the run takes, the expectation is exact.
    let secs = (sluice_tests::now_ms() - (T0 + 50_500)) / 1000;
    ensure!(secs > 0, "the fixture's timestamps lie in the future");
    let duration = format!("{secs}s");
    let before = sluice_tests::now_ms();
    let plan = sluice_json(&[
        "--bootstrap",
        &b,
        "offsets",
        "reset",
        "--group",
        &f.group,
        "--topic",
        &f.topic,
        "--by-duration",
        &duration,
    ])?;
    let after = sluice_tests::now_ms();
    let ts = plan["timestamp_ms"].as_i64().context("no timestamp_ms")?;
    let ago = secs * 1000;
    ensure!(
        (before - ago..=after - ago).contains(&ts),
        "{duration} resolved to {ts}, outside [{}, {}]",
        before - ago,
        after - ago
    );
    let want: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, offset_at(ts))).collect();
    ensure!(planned(&plan)? == want, "by-duration planned {plan}");
    f.ensure_committed(&BASELINE, "after the by-duration dry run")?;
    Ok(())
}

#[test]
fn out_of_range_offsets_are_clamped_and_reported_in_text() -> Result<()> {
    let f = Fixture::new()?;
    let out = sluice_ok(&[
        "--bootstrap",
        &f.bootstrap(),
        "offsets",
        "reset",
        "--group",
        &f.group,
        "--topic",
        &format!("{}:1", f.topic),
        "--to-offset",
        "5000",
    ])?;
    for needle in [
        "Dry run: reset group",
        "clamped: target past the log end, moved down to 100",
        "1 partition(s) clamped",
        "skip 80",
        "2026-11-21T10:00:20.000Z",
        "2026-11-21T10:01:39.000Z",
        "Nothing was changed (dry run)",
        "--execute",
    ] {
        ensure!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    f.ensure_committed(&BASELINE, "after the text dry run")?;
    Ok(())
}

#[test]
fn reset_of_a_group_with_a_live_member_is_refused_and_names_it() -> Result<()> {
    let f = Fixture::new()?;
    let b = f.bootstrap();
    let mut cfg = MemberConfig::new(
        MemberKind::Rdkafka,
        &b,
        &f.group,
        &f.topic,
        "offsets-live-member",
    );
    cfg.commit = false;
    let bench = Path::new(env!("CARGO_BIN_EXE_sluice-group-bench"));
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kafka_python_groups.py");
    let mut member = Member::spawn(&cfg, bench, &python)?;
    wait_until(
        Duration::from_secs(60),
        "the member owns all partitions",
        || member.assignment().len() == PARTITIONS as usize,
    )
    .with_context(|| member.report())?;
    for execute in [false, true] {
        let mut args = vec![
            "--bootstrap",
            &b,
            "offsets",
            "reset",
            "--group",
            &f.group,
            "--all-topics",
            "--to-earliest",
            "--data-dir",
        ];
        let dir = f.data_dir().to_str().context("utf-8")?;
        args.push(dir);
        if execute {
            args.push("--execute");
        }
        let out = sluice(&args)?;
        ensure!(
            !out.status.success(),
            "reset of a live group went through: {out}"
        );
        ensure!(
            out.stderr.contains("offsets-live-member")
                && out.stderr.contains("stop its consumers first"),
            "the refusal does not name the member and the fix: {out}"
        );
    }
    ensure!(
        f.undo_files()?.is_empty(),
        "a refused reset wrote an undo file"
    );
    f.ensure_committed(&BASELINE, "after the refused resets")?;
    member.close()?;
    Ok(())
}

#[test]
fn a_plan_is_not_applied_once_the_group_moved_on() -> Result<()> {
    let f = Fixture::new()?;
    let (b, group, topic) = (f.bootstrap(), f.group.clone(), f.topic.clone());
    let undo = f.data_dir().join("undo.csv");
    let undo2 = undo.clone();
    rt()?.block_on(async move {
        let client = Client::connect(&b, ClientConfig::default()).await?;
        let prepared = reset::prepare(
            &client,
            &group,
            &Scope::AllTopics,
            Strategy::Earliest,
            sluice_tests::now_ms(),
        )
        .await?;
        // Someone commits partition 3 between the preview and --execute.
        let moved = BTreeMap::from([((topic.clone(), 3), 77)]);
        for (tp, r) in client.commit_offsets(&group, &moved).await? {
            r.map_err(|e| anyhow::anyhow!("committing {tp:?}: {e}"))?;
        }
        match reset::apply(&client, &prepared, Some(&undo2)).await {
            Err(ResetError::Stale { changes, .. }) => ensure!(
                changes == [format!("{topic}-3 was committed at 40 and is now at 77")],
                "stale changes {changes:?}"
            ),
            other => bail!("a stale plan was not refused: {other:?}"),
        }
        anyhow::Ok(())
    })?;
    ensure!(!undo.exists(), "a refused plan wrote its undo file");
    f.ensure_committed(&[10, 20, 30, 77, 50, 150], "after the stale apply")?;
    Ok(())
}

#[test]
fn bad_input_exits_non_zero_names_the_fix_and_changes_nothing() -> Result<()> {
    let f = Fixture::new()?;
    let b = f.bootstrap();
    let (group, topic) = (f.group.as_str(), f.topic.as_str());
    let dir = f.data_dir().to_str().context("utf-8")?.to_string();
    let bad_file = f.data_dir().join("bad.csv");
    std::fs::write(&bad_file, format!("{topic},0,5\n{topic},1\n"))?;
    let bad_file = bad_file.to_str().context("utf-8")?.to_string();
    let unknown_group = unique_topic("no-such-group");
    let unknown_topic = unique_topic("no-such-topic");
    let partition_9 = format!("{topic}:0,9");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--group", &unknown_group, "--all-topics", "--to-earliest"],
            "check the name with `sluice groups list`",
        ),
        (
            vec!["--group", group, "--topic", &unknown_topic, "--to-earliest"],
            "check the name with `sluice topics list`",
        ),
        (
            vec!["--group", group, "--topic", &partition_9, "--to-earliest"],
            "has partitions 0 to 5, not 9",
        ),
        (
            vec![
                "--group",
                group,
                "--all-topics",
                "--to-earliest",
                "--to-latest",
            ],
            "cannot be used with",
        ),
        (vec!["--group", group, "--all-topics"], "--to-earliest"),
        (
            vec!["--group", group, "--to-earliest"],
            "pass --topic TOPIC[:P,P...] (repeatable) or --all-topics",
        ),
        (
            vec![
                "--group",
                group,
                "--all-topics",
                "--to-datetime",
                "21/11/2026",
            ],
            "2024-05-01T12:00:00Z",
        ),
        (
            vec!["--group", group, "--all-topics", "--by-duration", "1 hour"],
            "PT1H",
        ),
        (
            vec!["--group", group, "--all-topics", "--from-file", &bad_file],
            "line 2:",
        ),
        (
            vec![
                "--group",
                group,
                "--all-topics",
                "--from-file",
                "/nonexistent/f.csv",
            ],
            "cannot read /nonexistent/f.csv",
        ),
        (
            vec!["--group", group, "--all-topics", "--shift-by", "-"],
            "--shift-by -500",
        ),
    ];
    for (args, fix) in &cases {
        let mut all = vec!["--bootstrap", &b, "offsets", "reset"];
        all.extend(args.iter().copied());
        all.extend(["--data-dir", &dir, "--execute"]);
        let out = sluice(&all)?;
        ensure!(!out.status.success(), "{args:?} succeeded: {out}");
        ensure!(out.stderr.contains(fix), "{args:?}: {fix:?} missing: {out}");
        ensure!(!out.stderr.contains("panicked"), "{args:?} panicked: {out}");
    }
    let out = sluice(&[
        "--bootstrap",
        &b,
        "offsets",
        "undo",
        &bad_file,
        "--group",
        group,
        "--execute",
    ])?;
    ensure!(
        !out.status.success()
            && out.stderr.contains("line 2:")
            && out.stderr.contains("e.g. orders,0,1200"),
        "undo of a malformed file: {out}"
    );
    ensure!(f.undo_files()?.is_empty(), "bad input wrote an undo file");
    f.ensure_committed(&BASELINE, "after bad input")?;
    Ok(())
}
