//! The child side of a consumer-group member process: an rdkafka
//! `BaseConsumer` that subscribes to one topic and reports what happens to it
//! on stdout, one event per line, for a parent that may kill it with SIGKILL
//! (a member that dies without leaving its group cannot be simulated in
//! process: dropping an rdkafka consumer always closes it and sends LeaveGroup).
//!
//! `sluice-group-bench member ...` runs [`run_rdkafka_member`];
//! `tests/python/kafka_python_groups.py member ...` speaks the same protocol
//! with kafka-python, and [`crate::group`] parses it.
//!
//! Line protocol, `EVENT WALL_CLOCK_MS [fields]`; a partition list is
//! comma-separated, `-` when empty:
//!
//! ```text
//! SUBSCRIBED ts
//! ASSIGNED ts LIST        partitions this rebalance callback handed over
//! REVOKED ts LIST         partitions this rebalance callback took away
//! ASSIGNMENT ts LIST      the member's whole assignment after the callback
//! PROTOCOL ts eager|cooperative
//! MSG ts PARTITION OFFSET VALUE
//! COMMITTED ts P=O,P=O    a successful commit of next offsets to read
//! COMMIT_FAILED ts TEXT
//! ERROR ts TEXT
//! CLOSED ts               after a clean close (LeaveGroup for dynamic members)
//! ```
//!
//! The member stops cleanly when it reads `close` or end-of-file on stdin, so
//! it never outlives a parent that died.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::now_ms;

/// Commit after this many processed messages even while more keep coming.
const COMMIT_EVERY: usize = 50;

/// Options of one member process.
#[derive(Args, Debug, Clone)]
pub struct MemberArgs {
    #[arg(long)]
    pub bootstrap: String,
    #[arg(long)]
    pub group: String,
    #[arg(long)]
    pub topic: String,
    /// client.id, also how DescribeGroups output names this member.
    #[arg(long, default_value = "sluice-group-member")]
    pub client_id: String,
    /// group.instance.id: makes this a static member.
    #[arg(long)]
    pub instance_id: Option<String>,
    /// partition.assignment.strategy (range, roundrobin, cooperative-sticky).
    #[arg(long, default_value = "range")]
    pub strategy: String,
    #[arg(long, default_value_t = 6000)]
    pub session_timeout_ms: u32,
    #[arg(long, default_value_t = 500)]
    pub heartbeat_interval_ms: u32,
    /// Commit the offsets of processed messages (after printing them), and
    /// those of revoked partitions before giving them up.
    #[arg(long)]
    pub commit: bool,
}

/// Prints protocol lines; one lock per line so lines never interleave.
#[derive(Clone)]
struct Out(Arc<Mutex<std::io::Stdout>>);

impl Out {
    fn line(&self, event: &str, rest: &str) {
        if let Ok(out) = self.0.lock() {
            let mut lock = out.lock();
            let _ = if rest.is_empty() {
                writeln!(lock, "{event} {}", now_ms())
            } else {
                writeln!(lock, "{event} {} {rest}", now_ms())
            };
            let _ = lock.flush();
        }
    }
}

/// Formats partitions as the protocol's LIST.
pub fn partition_list(parts: impl IntoIterator<Item = i32>) -> String {
    let v: Vec<String> = parts.into_iter().map(|p| p.to_string()).collect();
    if v.is_empty() {
        "-".to_string()
    } else {
        v.join(",")
    }
}

/// One line of free text (errors can contain newlines).
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

struct MemberContext {
    out: Out,
    topic: String,
    commit: bool,
    /// Next offset to commit per partition: processed but not yet committed.
    pending: Mutex<BTreeMap<i32, i64>>,
    protocol_printed: AtomicBool,
}

impl MemberContext {
    /// Commits the pending offsets of `only` (all when `None`); successes are
    /// removed from the pending set, failures stay for the next attempt.
    fn commit_pending(&self, consumer: &BaseConsumer<Self>, only: Option<&[i32]>) {
        if !self.commit {
            return;
        }
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        let chosen: Vec<(i32, i64)> = pending
            .iter()
            .filter(|(p, _)| only.is_none_or(|o| o.contains(p)))
            .map(|(&p, &o)| (p, o))
            .collect();
        if chosen.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for &(p, o) in &chosen {
            if let Err(e) = tpl.add_partition_offset(&self.topic, p, Offset::Offset(o)) {
                self.out.line("COMMIT_FAILED", &one_line(&e.to_string()));
                return;
            }
        }
        match consumer.commit(&tpl, CommitMode::Sync) {
            Ok(()) => {
                for (p, o) in &chosen {
                    if pending.get(p) == Some(o) {
                        pending.remove(p);
                    }
                }
                let text: Vec<String> = chosen.iter().map(|(p, o)| format!("{p}={o}")).collect();
                self.out.line("COMMITTED", &text.join(","));
            }
            Err(e) => self.out.line("COMMIT_FAILED", &one_line(&e.to_string())),
        }
    }

    fn print_assignment(&self, consumer: &BaseConsumer<Self>) {
        match consumer.assignment() {
            Ok(tpl) => {
                let mut parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                parts.sort_unstable();
                self.out.line("ASSIGNMENT", &partition_list(parts));
            }
            Err(e) => self.out.line("ERROR", &format!("assignment(): {e}")),
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    let mut v: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
    v.sort_unstable();
    v
}

impl ClientContext for MemberContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            eprintln!("librdkafka {level:?} {fac}: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("librdkafka error {error}: {reason}");
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions_of(tpl);
            // Commit what was processed before someone else owns it; a lost
            // assignment (session timed out) cannot commit any more.
            if !consumer.assignment_lost() {
                self.commit_pending(consumer, Some(&revoked));
            }
            if let Ok(mut pending) = self.pending.lock() {
                pending.retain(|p, _| !revoked.contains(p));
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                if !self.protocol_printed.swap(true, Ordering::Relaxed) {
                    let protocol = match consumer.rebalance_protocol() {
                        rdkafka::consumer::RebalanceProtocol::Cooperative => "cooperative",
                        _ => "eager",
                    };
                    self.out.line("PROTOCOL", protocol);
                }
                self.out
                    .line("ASSIGNED", &partition_list(partitions_of(tpl)));
                self.print_assignment(consumer);
            }
            Rebalance::Revoke(tpl) => {
                self.out
                    .line("REVOKED", &partition_list(partitions_of(tpl)));
                self.print_assignment(consumer);
            }
            Rebalance::Error(e) => self
                .out
                .line("ERROR", &one_line(&format!("rebalance: {e}"))),
        }
    }
}

/// Runs one member until `close` or end-of-file on stdin.
pub fn run_rdkafka_member(args: &MemberArgs) -> Result<()> {
    let out = Out(Arc::new(Mutex::new(std::io::stdout())));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &args.bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", &args.client_id)
        .set("group.id", &args.group)
        .set("partition.assignment.strategy", &args.strategy)
        .set("session.timeout.ms", args.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            args.heartbeat_interval_ms.to_string(),
        )
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .set("fetch.wait.max.ms", "100");
    if let Some(id) = &args.instance_id {
        config.set("group.instance.id", id);
    }
    let ctx = MemberContext {
        out: out.clone(),
        topic: args.topic.clone(),
        commit: args.commit,
        pending: Mutex::new(BTreeMap::new()),
        protocol_printed: AtomicBool::new(false),
    };
    let consumer: BaseConsumer<MemberContext> = config
        .create_with_context(ctx)
        .context("creating the member's consumer")?;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                match line {
                    Ok(l) if l.trim() == "close" => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    consumer
        .subscribe(&[&args.topic])
        .with_context(|| format!("subscribing to {}", args.topic))?;
    out.line("SUBSCRIBED", "");

    let mut since_commit = 0usize;
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {
                // Idle: commit what was processed, and retry failed commits.
                consumer.context().commit_pending(&consumer, None);
                since_commit = 0;
            }
            Some(Err(e)) => out.line("ERROR", &one_line(&e.to_string())),
            Some(Ok(m)) => {
                let value = m
                    .payload()
                    .map(|v| String::from_utf8_lossy(v).replace(char::is_whitespace, "_"))
                    .unwrap_or_else(|| "(null)".to_string());
                out.line(
                    "MSG",
                    &format!("{} {} {}", m.partition(), m.offset(), value),
                );
                if args.commit {
                    if let Ok(mut pending) = consumer.context().pending.lock() {
                        pending.insert(m.partition(), m.offset() + 1);
                    }
                    since_commit += 1;
                    if since_commit >= COMMIT_EVERY {
                        consumer.context().commit_pending(&consumer, None);
                        since_commit = 0;
                    }
                }
            }
        }
    }
    // Failed commits are retried on every idle poll; one last try here.
    consumer.context().commit_pending(&consumer, None);
    // Dropping closes the consumer: revoke callback, LeaveGroup (dynamic members).
    drop(consumer);
    out.line("CLOSED", "");
    Ok(())
}
