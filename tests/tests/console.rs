//! The console end to end: the real `sluice` binary in a real terminal
//! (tmux, 120x40), against a real broker, driven by keys and read off the
//! screen with `capture-pane`.
//!
//! - A topic with 3 partitions and a group with lag: the topics view shows the
//!   topic and its message count, its detail the partitions, the groups view
//!   the group's lag; an offset reset to earliest done through the keys is
//!   what kafka-python then reads as the group's committed offsets.
//! - `--read-only` shows its badge and offers no reset.
//! - An unreachable address: the error screen names it, `q` exits cleanly.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_broker::client::{Client, ClientConfig, NewTopic, ProduceRecord};
use sluice_tests::cmd::{self, find_program};
use sluice_tests::{unique_topic, wait_for, BrokerProcess};

const SCREEN: Duration = Duration::from_secs(30);
const PARTITIONS: i32 = 3;
const PER_PARTITION: i64 = 10;
const COMMITTED: i64 = 4;

/// One tmux server (its own socket) running the console; killed on drop.
struct Terminal {
    socket: String,
}

impl Terminal {
    fn start(args: &[&str]) -> Result<Terminal> {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let tmux = find_program("tmux", "apt-get install tmux (scripts/test.sh does)")?;
        let socket = format!(
            "sluice-console-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut line = shell_quote(&sluice_tests::sluice_binary()?);
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(Path::new(a)));
        }
        // Keep the pane after the console exits, to read how it ended.
        let status = Command::new(&tmux)
            .args(["-L", &socket, "new-session", "-d", "-x", "120", "-y", "40"])
            .args([
                "-s",
                "main",
                &format!("{line}; echo CONSOLE-EXITED $?; sleep 600"),
            ])
            .status()
            .context("starting tmux")?;
        ensure!(status.success(), "tmux new-session failed: {status}");
        Ok(Terminal { socket })
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.args(["-L", &self.socket]);
        c
    }

    fn screen(&self) -> Result<String> {
        let out = cmd::run(
            self.tmux().args(["capture-pane", "-p", "-t", "main"]),
            None,
            Duration::from_secs(10),
        )?
        .require_success()?;
        Ok(out.stdout)
    }

    /// Sends keys as tmux names them (`Enter`, `Escape`, `Down`) or text.
    fn keys(&self, keys: &[&str]) -> Result<()> {
        for k in keys {
            cmd::run(
                self.tmux().args(["send-keys", "-t", "main", k]),
                None,
                Duration::from_secs(10),
            )?
            .require_success()?;
            std::thread::sleep(Duration::from_millis(150));
        }
        Ok(())
    }

    /// Types text literally.
    fn text(&self, text: &str) -> Result<()> {
        cmd::run(
            self.tmux().args(["send-keys", "-t", "main", "-l", text]),
            None,
            Duration::from_secs(10),
        )?
        .require_success()?;
        std::thread::sleep(Duration::from_millis(150));
        Ok(())
    }

    /// Waits until the screen satisfies `check`; the last screen is in the error.
    fn wait(&self, what: &str, check: impl Fn(&str) -> bool) -> Result<String> {
        let mut last = String::new();
        let found = wait_for(SCREEN, what, || {
            last = self.screen()?;
            Ok(check(&last).then(|| last.clone()))
        });
        found.with_context(|| format!("the screen was:\n{last}"))
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").status();
    }
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', "'\\''"))
}

/// A topic with `PER_PARTITION` records in each partition and a group that
/// committed `COMMITTED` in each: lag 6 per partition, 18 in all.
fn topic_with_lagging_group(bootstrap: &str) -> Result<(String, String)> {
    let topic = unique_topic("console-orders");
    let group = unique_topic("console-billing");
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let client = Client::connect(bootstrap, ClientConfig::default()).await?;
        let created = client
            .create_topics(
                vec![NewTopic {
                    name: topic.clone(),
                    partitions: PARTITIONS,
                    replication_factor: 1,
                    configs: BTreeMap::new(),
                }],
                false,
            )
            .await?;
        for (name, r) in created {
            r.map_err(|e| anyhow::anyhow!("creating {name}: {e}"))?;
        }
        client.metadata(None).await?;
        for p in 0..PARTITIONS {
            for i in 0..PER_PARTITION {
                let record = ProduceRecord {
                    key: Some(format!("k{p}-{i}").into_bytes()),
                    value: Some(format!("{{\"partition\":{p},\"n\":{i}}}").into_bytes()),
                    ..ProduceRecord::default()
                };
                client.produce(&topic, Some(p), record).await?;
            }
        }
        let offsets: BTreeMap<(String, i32), i64> = (0..PARTITIONS)
            .map(|p| ((topic.clone(), p), COMMITTED))
            .collect();
        for (tp, r) in client.commit_offsets(&group, &offsets).await? {
            r.map_err(|e| anyhow::anyhow!("committing {tp:?}: {e}"))?;
        }
        anyhow::Ok(())
    })?;
    Ok((topic, group))
}

/// The group's committed offsets as kafka-python reads them.
fn kafka_python_committed(bootstrap: &str, group: &str, topic: &str) -> Result<Vec<i64>> {
    let python = find_program("python3", "apt-get install python3")?;
    let script = format!(
        "from kafka import KafkaConsumer, TopicPartition\n\
         c = KafkaConsumer(bootstrap_servers='{bootstrap}', group_id='{group}', enable_auto_commit=False)\n\
         print(' '.join(str(c.committed(TopicPartition('{topic}', p))) for p in range({PARTITIONS})))\n\
         c.close()\n"
    );
    let out = cmd::run(
        Command::new(python).args(["-c", &script]),
        None,
        Duration::from_secs(60),
    )?
    .require_success()?;
    out.stdout
        .split_whitespace()
        .map(|v| {
            v.parse::<i64>()
                .with_context(|| format!("kafka-python printed {:?}", out.stdout))
        })
        .collect()
}

/// Opens the group's detail view from anywhere.
fn open_group(term: &Terminal, group: &str) -> Result<()> {
    term.text(":")?;
    term.text("groups")?;
    term.keys(&["Enter"])?;
    term.wait("the groups view lists the group", |s| s.contains(group))?;
    term.text("/")?;
    term.text(group)?;
    term.keys(&["Enter", "Enter"])?;
    term.wait("the group's detail", |s| {
        s.contains("group") && s.contains("LAG")
    })?;
    Ok(())
}

#[test]
fn console_shows_topics_partitions_and_lag_and_resets_offsets() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let bootstrap = broker.bootstrap();
    let (topic, group) = topic_with_lagging_group(&bootstrap)?;
    let term = Terminal::start(&["--bootstrap", &bootstrap, "--refresh", "1s"])?;

    let topics = term.wait("the topics view shows the topic", |s| s.contains(&topic))?;
    let row = topics
        .lines()
        .find(|l| l.contains(&topic))
        .unwrap_or_default();
    ensure!(
        row.contains(&(PER_PARTITION * i64::from(PARTITIONS)).to_string()),
        "the topic's row does not show {} messages: {row:?}",
        PER_PARTITION * i64::from(PARTITIONS)
    );

    term.text("/")?;
    term.text(&topic)?;
    term.keys(&["Enter", "Enter"])?;
    let detail = term.wait("the topic detail lists its partitions", |s| {
        s.contains("ISR")
            && s.lines()
                .filter(|l| l.contains(&PER_PARTITION.to_string()))
                .count()
                >= 3
    })?;
    ensure!(
        detail.contains(&group),
        "the topic detail does not name the consuming group {group}:\n{detail}"
    );

    term.keys(&["Escape", "Escape"])?;
    open_group(&term, &group)?;
    let lag = (PER_PARTITION - COMMITTED) * i64::from(PARTITIONS);
    let screen = term.wait("the group's lag", |s| s.contains(&lag.to_string()))?;
    ensure!(
        screen.contains(&(PER_PARTITION - COMMITTED).to_string()),
        "the per-partition lag {} is not shown:\n{screen}",
        PER_PARTITION - COMMITTED
    );

    // Reset to earliest (the dialog's first strategy), all partitions.
    term.text("r")?;
    term.wait("the reset dialog", |s| s.contains("earliest"))?;
    term.keys(&["Enter"])?;
    term.wait("the reset preview", |s| s.contains("->") || s.contains("→"))?;
    term.keys(&["Enter"])?;
    wait_for(SCREEN, "kafka-python sees the reset offsets", || {
        let got = kafka_python_committed(&bootstrap, &group, &topic)?;
        Ok((got == vec![0; PARTITIONS as usize]).then_some(()))
    })
    .with_context(|| format!("the screen was:\n{}", term.screen().unwrap_or_default()))?;
    Ok(())
}

#[test]
fn read_only_console_offers_no_reset() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let bootstrap = broker.bootstrap();
    let (_topic, group) = topic_with_lagging_group(&bootstrap)?;
    let term = Terminal::start(&["--bootstrap", &bootstrap, "--read-only"])?;
    term.wait("the read-only badge", |s| {
        s.to_lowercase().contains("read-only")
    })?;
    open_group(&term, &group)?;
    term.text("r")?;
    std::thread::sleep(Duration::from_millis(800));
    let screen = term.screen()?;
    ensure!(
        !screen.contains("earliest") && !screen.contains("reset offsets"),
        "the read-only console offered a reset:\n{screen}"
    );
    let committed = kafka_python_committed(&bootstrap, &group, &_topic)?;
    ensure!(
        committed == vec![COMMITTED; PARTITIONS as usize],
        "offsets changed under --read-only: {committed:?}"
    );
    Ok(())
}

#[test]
fn unreachable_cluster_shows_the_error_and_q_exits_cleanly() -> Result<()> {
    // Port 1 on loopback: nothing listens, connections are refused at once.
    let term = Terminal::start(&["--bootstrap", "127.0.0.1:1"])?;
    // The header names the bootstrap address from the first frame, before
    // the first connection attempt has failed: wait for the error screen
    // itself, which names the address and says why it failed.
    term.wait(
        "the error screen names the address and why it failed",
        |s| {
            s.contains("Cannot reach the cluster")
                && s.contains("address  127.0.0.1:1")
                && s.contains("refused")
        },
    )?;
    term.text("q")?;
    term.wait("the console exits with status 0", |s| {
        s.contains("CONSOLE-EXITED 0")
    })?;
    Ok(())
}

/// Runs `sluice --bootstrap B ARGS...` and returns its standard output.
fn sluice(bootstrap: &str, args: &[&str], stdin: Option<&[u8]>) -> Result<String> {
    let out = cmd::run(
        Command::new(sluice_tests::sluice_binary()?)
            .args(["--bootstrap", bootstrap])
            .args(args),
        stdin,
        Duration::from_secs(60),
    )?
    .require_success()?;
    Ok(out.stdout)
}

#[test]
fn subcommands_create_produce_list_describe_consume_and_delete() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let (lagging, group) = topic_with_lagging_group(&b)?;
    let topic = unique_topic("console-cli");
    sluice(
        &b,
        &[
            "topics",
            "create",
            &topic,
            "-p",
            "2",
            "--config",
            "retention.ms=3600000",
        ],
        None,
    )?;
    let produced = sluice(
        &b,
        &[
            "produce",
            &topic,
            "--key",
            "k",
            "--header",
            "source=cli",
            "--output",
            "json",
        ],
        Some(b"one\ntwo\nthree\n"),
    )?;
    let produced: serde_json::Value = serde_json::from_str(produced.trim())?;
    ensure!(
        produced.as_array().map(Vec::len) == Some(3),
        "produce answered {produced}"
    );

    let list: serde_json::Value =
        serde_json::from_str(sluice(&b, &["topics", "list", "--output", "json"], None)?.trim())?;
    let row = list
        .as_array()
        .and_then(|l| l.iter().find(|t| t["name"] == topic.as_str()))
        .with_context(|| format!("topics list lacks {topic}: {list}"))?;
    ensure!(
        row["messages"] == 3 && row["partitions"] == 2,
        "topics list row {row}"
    );

    let described: serde_json::Value = serde_json::from_str(
        sluice(
            &b,
            &["topics", "describe", &topic, "--output", "json"],
            None,
        )?
        .trim(),
    )?;
    ensure!(
        described["configs"]["retention.ms"] == "3600000",
        "describe shows configs {}",
        described["configs"]
    );

    let consumed = sluice(&b, &["consume", &topic, "--output", "json"], None)?;
    let values: Vec<String> = consumed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).map(|v| v["value"].to_string()))
        .collect::<Result<_, _>>()?;
    ensure!(
        values == ["\"one\"", "\"two\"", "\"three\""],
        "consume printed {consumed}"
    );
    ensure!(
        consumed.contains("source"),
        "headers missing from {consumed}"
    );

    let g: serde_json::Value = serde_json::from_str(
        sluice(
            &b,
            &["groups", "describe", &group, "--output", "json"],
            None,
        )?
        .trim(),
    )?;
    let lag = (PER_PARTITION - COMMITTED) * i64::from(PARTITIONS);
    ensure!(
        g["total_lag"] == lag,
        "groups describe of {group} on {lagging}: {g}"
    );

    let refused = cmd::run(
        Command::new(sluice_tests::sluice_binary()?).args([
            "--bootstrap",
            &b,
            "topics",
            "delete",
            &topic,
        ]),
        None,
        Duration::from_secs(60),
    )?;
    ensure!(
        !refused.status.success() && refused.stderr.contains("--yes"),
        "delete without --yes: {refused:?}"
    );
    sluice(&b, &["topics", "delete", &topic, "--yes"], None)?;
    let list = sluice(&b, &["topics", "list"], None)?;
    ensure!(
        !list.contains(&topic),
        "{topic} still listed after delete:\n{list}"
    );
    Ok(())
}
