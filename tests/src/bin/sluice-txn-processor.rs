//! sluice-txn-processor: an exactly-once consume-transform-produce loop with
//! librdkafka transactions, run as a child process by `tests/tests/txn.rs`
//! so the test can kill it with SIGKILL mid-transaction and start it again.
//!
//! ```text
//! sluice-txn-processor --bootstrap HOST:PORT --input IN --output OUT --group G \
//!     --transactional-id T [--commit-every 50] [--commit-interval-ms 100] [--rate 300]
//! ```
//!
//! A consumer in group `G` (`isolation.level=read_committed`, no automatic
//! commits) reads `IN`; every record `x` becomes `out-x` with the same key in
//! the same partition of `OUT`, written by a producer with the fixed
//! `transactional.id` `T`. The input offsets go into the same transaction
//! (`send_offsets_to_transaction`), committed every `--commit-every` records
//! or `--commit-interval-ms`, whichever comes first. A new instance's
//! `init_transactions` fences the previous one and aborts its open
//! transaction, so output and input position move together or not at all.
//!
//! A revoked assignment aborts the open transaction (the partitions restart
//! from their committed offsets wherever they go next); an abortable error
//! aborts it and seeks back to the committed offsets; a fatal error ends the
//! process with status 1.
//!
//! Events on stdout, one per line, `EVENT WALL_CLOCK_MS [fields]`:
//!
//! ```text
//! READY ts                       init_transactions done, subscribed
//! ASSIGNED ts LIST               partitions after a rebalance (`-` when none)
//! BEGIN ts                       a transaction begins; printed before its first send
//! COMMITTING ts N                about to send offsets and commit N records
//! COMMITTED ts N P=O,P=O         committed: N records, next input offsets
//! ABORTED ts REASON              the open transaction was aborted
//! ERROR ts TEXT
//! FATAL ts TEXT                  then exit 1
//! CLOSED ts                      after `close` or end-of-file on stdin
//! ```
//!
//! Because BEGIN is flushed before the first record is sent, a parent that
//! reads everything a killed instance printed knows whether it could have
//! died with records in an open transaction (last event BEGIN or
//! COMMITTING) or not.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_tests::now_ms;

/// Deadline of one transactional call (init, send offsets, commit, abort);
/// a retriable failure is retried until [`OPERATION_DEADLINE`].
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const OPERATION_DEADLINE: Duration = Duration::from_secs(120);

#[derive(Parser, Debug, Clone)]
#[command(
    name = "sluice-txn-processor",
    about = "Exactly-once consume-transform-produce with librdkafka transactions"
)]
struct Args {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    input: String,
    #[arg(long)]
    output: String,
    #[arg(long)]
    group: String,
    #[arg(long)]
    transactional_id: String,
    #[arg(long, default_value = "sluice-txn-processor")]
    client_id: String,
    /// Commit after this many records.
    #[arg(long, default_value_t = 50)]
    commit_every: usize,
    /// Commit an open transaction at least this often.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
    /// Process at most this many records per second (0: no limit).
    #[arg(long, default_value_t = 0)]
    rate: u32,
    #[arg(long, default_value_t = 60_000)]
    transaction_timeout_ms: u32,
    #[arg(long, default_value_t = 6000)]
    session_timeout_ms: u32,
    #[arg(long, default_value_t = 500)]
    heartbeat_interval_ms: u32,
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
                writeln!(
                    lock,
                    "{event} {} {}",
                    now_ms(),
                    rest.replace(['\n', '\r'], " ")
                )
            };
            let _ = lock.flush();
        }
    }
}

/// librdkafka's warnings go to stderr, which the parent keeps for failures.
struct Logger;

impl ClientContext for Logger {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            eprintln!("librdkafka {level:?} {fac}: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("librdkafka error {error}: {reason}");
    }
}

impl ProducerContext for Logger {
    type DeliveryOpaque = ();
    // A failed delivery makes the transaction abortable; commit reports it.
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// The open transaction, shared with the rebalance callback.
#[derive(Default)]
struct Txn {
    open: bool,
    started: Option<Instant>,
    records: usize,
    /// Next input offset per partition, for `send_offsets_to_transaction`.
    offsets: BTreeMap<i32, i64>,
}

struct Processor {
    out: Out,
    input: String,
    producer: BaseProducer<Logger>,
    txn: Mutex<Txn>,
    fatal: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What to do about a failed transactional call, as librdkafka classifies it.
#[derive(Debug, PartialEq, Eq)]
enum Failure {
    Retriable,
    Abortable,
    Fatal,
}

fn classify(e: &KafkaError) -> Failure {
    match e {
        KafkaError::Transaction(t) if t.is_fatal() => Failure::Fatal,
        KafkaError::Transaction(t) if t.txn_requires_abort() => Failure::Abortable,
        KafkaError::Transaction(t) if t.is_retriable() => Failure::Retriable,
        _ => Failure::Fatal,
    }
}

/// Runs a transactional call, repeating it while librdkafka calls the
/// failure retriable.
fn retrying(
    what: &str,
    mut call: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + OPERATION_DEADLINE;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(e) if classify(&e) == Failure::Retriable && Instant::now() < deadline => {
                eprintln!("{what}: retriable failure, retrying: {e}");
            }
            Err(e) => return Err(e),
        }
    }
}

impl Processor {
    /// Aborts the open transaction, if any. Returns false if that failed
    /// (the producer is then unusable).
    fn abort(&self, txn: &mut Txn, reason: &str) -> bool {
        if !txn.open {
            return true;
        }
        let r = retrying("abort_transaction", || {
            self.producer.abort_transaction(CALL_TIMEOUT)
        });
        *txn = Txn::default();
        match r {
            Ok(()) => {
                self.out.line("ABORTED", reason);
                true
            }
            Err(e) => {
                self.out
                    .line("FATAL", &format!("abort_transaction ({reason}): {e}"));
                self.fatal.store(true, Ordering::Relaxed);
                false
            }
        }
    }

    /// Sends the offsets and commits. An abortable failure aborts instead
    /// and returns `Ok(false)`; a fatal one is an error.
    fn commit(&self, consumer: &BaseConsumer<Self>, txn: &mut Txn) -> Result<bool> {
        if !txn.open {
            return Ok(true);
        }
        self.out.line("COMMITTING", &txn.records.to_string());
        let mut tpl = TopicPartitionList::new();
        for (&p, &o) in &txn.offsets {
            tpl.add_partition_offset(&self.input, p, Offset::Offset(o))?;
        }
        let metadata = consumer
            .group_metadata()
            .context("the consumer has no group metadata")?;
        let r = retrying("send_offsets_to_transaction", || {
            self.producer
                .send_offsets_to_transaction(&tpl, &metadata, CALL_TIMEOUT)
        })
        .and_then(|()| {
            retrying("commit_transaction", || {
                self.producer.commit_transaction(CALL_TIMEOUT)
            })
        });
        match r {
            Ok(()) => {
                let offsets: Vec<String> = txn
                    .offsets
                    .iter()
                    .map(|(p, o)| format!("{p}={o}"))
                    .collect();
                self.out.line(
                    "COMMITTED",
                    &format!("{} {}", txn.records, offsets.join(",")),
                );
                *txn = Txn::default();
                Ok(true)
            }
            Err(e) if classify(&e) == Failure::Abortable => {
                if self.abort(txn, &format!("commit failed: {e}")) {
                    Ok(false)
                } else {
                    bail!("abort after a failed commit failed")
                }
            }
            Err(e) => bail!("commit failed: {e}"),
        }
    }

    /// Moves every assigned partition back to its committed offset, after
    /// an abort outside a rebalance.
    fn rewind(&self, consumer: &BaseConsumer<Self>) -> Result<()> {
        let assigned = consumer.assignment()?;
        let committed = consumer
            .committed_offsets(assigned, CALL_TIMEOUT)
            .context("fetching committed offsets to rewind to")?;
        let mut tpl = TopicPartitionList::new();
        for e in committed.elements() {
            let offset = match e.offset() {
                Offset::Offset(o) => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            tpl.add_partition_offset(e.topic(), e.partition(), offset)?;
        }
        consumer
            .seek_partitions(tpl, CALL_TIMEOUT)
            .context("seeking back to the committed offsets")?;
        Ok(())
    }
}

impl ClientContext for Processor {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        Logger.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        Logger.error(error, reason);
    }
}

impl ConsumerContext for Processor {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(_) = rebalance {
            // The records of the open transaction are redone by whoever
            // owns the partitions next, starting from the committed offsets.
            let mut txn = lock(&self.txn);
            self.abort(&mut txn, "partitions revoked");
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(_) | Rebalance::Revoke(_) => {
                let mut parts: Vec<String> = consumer
                    .assignment()
                    .map(|tpl| {
                        tpl.elements()
                            .iter()
                            .map(|e| e.partition().to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                parts.sort();
                let list = if parts.is_empty() {
                    "-".to_string()
                } else {
                    parts.join(",")
                };
                self.out.line("ASSIGNED", &list);
            }
            Rebalance::Error(e) => self.out.line("ERROR", &format!("rebalance: {e}")),
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let out = Out(Arc::new(Mutex::new(std::io::stdout())));
    match run(&args, &out) {
        Ok(()) => {
            out.line("CLOSED", "");
            Ok(())
        }
        Err(e) => {
            out.line("FATAL", &format!("{e:#}"));
            std::process::exit(1);
        }
    }
}

fn run(args: &Args, out: &Out) -> Result<()> {
    let mut pc = ClientConfig::new();
    pc.set("bootstrap.servers", &args.bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", &args.client_id)
        .set("transactional.id", &args.transactional_id)
        .set(
            "transaction.timeout.ms",
            args.transaction_timeout_ms.to_string(),
        )
        .set(
            "message.timeout.ms",
            args.transaction_timeout_ms.to_string(),
        )
        .set("linger.ms", "5")
        .set("request.timeout.ms", "5000");
    let producer: BaseProducer<Logger> = pc
        .create_with_context(Logger)
        .context("creating the transactional producer")?;
    retrying("init_transactions", || {
        producer.init_transactions(CALL_TIMEOUT)
    })
    .context("init_transactions")?;

    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &args.bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", &args.client_id)
        .set("group.id", &args.group)
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false")
        .set("session.timeout.ms", args.session_timeout_ms.to_string())
        .set(
            "heartbeat.interval.ms",
            args.heartbeat_interval_ms.to_string(),
        )
        .set("fetch.wait.max.ms", "50");
    let consumer: BaseConsumer<Processor> = cc
        .create_with_context(Processor {
            out: out.clone(),
            input: args.input.clone(),
            producer,
            txn: Mutex::new(Txn::default()),
            fatal: AtomicBool::new(false),
        })
        .context("creating the consumer")?;
    consumer
        .subscribe(&[&args.input])
        .with_context(|| format!("subscribing to {}", args.input))?;
    out.line("READY", "");

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                match line {
                    Ok(l) if l.trim() == "close" => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
    }

    let ctx = consumer.context();
    let interval = Duration::from_millis(args.commit_interval_ms);
    // When the next record may be processed under --rate. Time spent idle
    // (waiting for an assignment, or at the end of the input) earns no
    // burst: the pace holds from any point on.
    let mut next_due = Instant::now();
    let per_record = (args.rate > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(args.rate)));
    while !stop.load(Ordering::Relaxed) {
        if ctx.fatal.load(Ordering::Relaxed) {
            bail!("the producer failed in a rebalance callback");
        }
        let now = Instant::now();
        if next_due > now {
            std::thread::sleep((next_due - now).min(Duration::from_millis(20)));
            continue;
        }
        let polled = consumer.poll(Duration::from_millis(20));
        ctx.producer.poll(Duration::ZERO);
        match polled {
            None => {}
            Some(Err(e)) => out.line("ERROR", &e.to_string()),
            Some(Ok(m)) => {
                let mut txn = lock(&ctx.txn);
                if !txn.open {
                    out.line("BEGIN", "");
                    if let Err(e) = ctx.producer.begin_transaction() {
                        bail!("begin_transaction: {e}");
                    }
                    *txn = Txn {
                        open: true,
                        started: Some(Instant::now()),
                        ..Txn::default()
                    };
                }
                let key = m.key().map(<[u8]>::to_vec).unwrap_or_default();
                let x = m
                    .payload()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                let value = format!("out-{x}");
                if let Err(e) = send(&ctx.producer, &args.output, m.partition(), &key, &value) {
                    // An abortable transaction refuses sends; start over from
                    // the committed offsets.
                    if !ctx.abort(&mut txn, &format!("{e:#}")) {
                        bail!("abort after a failed send failed");
                    }
                    drop(txn);
                    ctx.rewind(&consumer)?;
                    continue;
                }
                txn.records += 1;
                txn.offsets.insert(m.partition(), m.offset() + 1);
                if let Some(step) = per_record {
                    next_due = next_due.max(Instant::now()) + step;
                }
            }
        }
        let mut txn = lock(&ctx.txn);
        let due = txn.open
            && (txn.records >= args.commit_every
                || txn.started.is_some_and(|s| s.elapsed() >= interval));
        if due && !ctx.commit(&consumer, &mut txn)? {
            drop(txn);
            ctx.rewind(&consumer)?;
        }
    }
    let mut txn = lock(&ctx.txn);
    if !ctx.commit(&consumer, &mut txn)? {
        bail!("the last transaction was aborted on close");
    }
    drop(txn);
    drop(consumer);
    Ok(())
}

/// Sends one record, serving delivery reports while the local queue is full.
fn send(
    producer: &BaseProducer<Logger>,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: &str,
) -> Result<()> {
    let mut record = BaseRecord::to(topic)
        .partition(partition)
        .key(key)
        .payload(value.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r))
                if Instant::now() < deadline =>
            {
                record = r;
                producer.poll(Duration::from_millis(10));
            }
            Err((e, _)) => bail!("send to {topic}/{partition}: {e}"),
        }
    }
}
