//! Transactions end to end: librdkafka's transactional producer and
//! read_committed consumers, and kafka-python's read_committed consumer,
//! against real `sluice-broker` processes.
//!
//! - A consume-transform-produce processor (`sluice-txn-processor`, a child
//!   process) is killed with SIGKILL at random points and restarted; its
//!   output, read with read_committed, holds every input's result exactly
//!   once.
//! - Committed, aborted and open transactions interleaved with plain writes:
//!   kafka-python and librdkafka read_committed consumers agree record for
//!   record, stop at the last stable offset, and never return aborted data.
//! - A second producer with the same `transactional.id` fences the first.
//! - A transaction left open past `transaction.timeout.ms` is aborted by the
//!   coordinator, which unblocks read_committed consumers.
//! - Offsets sent to a transaction become the group's committed offsets only
//!   when it commits.
//! - kill -9 of the transaction coordinator between transactions, while one
//!   is open and while one commits: every logical transaction is committed
//!   exactly once, all or nothing.
//!
//! The nemeses draw from a seeded generator; the seed is printed, and
//! `SLUICE_NEMESIS_SEED=N` repeats a run's choices.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_tests::chaos::{error_name, secs, Rng};
use sluice_tests::cluster::{Cluster, ClusterOptions};
use sluice_tests::cmd::{self, find_program};
use sluice_tests::group::commit_without_joining;
use sluice_tests::kafka::{self, Delivery, TestContext};
use sluice_tests::raw::RawConnection;
use sluice_tests::{unique_topic, wait_for, wait_until, BrokerOptions, BrokerProcess};

const BROKERS: usize = 3;
const PARTITIONS: i32 = 3;
const RF: i32 = 3;
const FULL_ISR: usize = 3;
/// Where the coordinator keeps transaction state; a transactional id lives
/// in partition `abs(hashCode(id)) % partitions`.
const TXN_STATE_TOPIC: &str = "__transaction_state";
/// FindCoordinator key type of a transactional id.
const COORDINATOR_KEY_TRANSACTION: i8 = 1;
/// Session timeout + election + slack: a dead leader is replaced within this.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(15);
/// A healed cluster is back to full ISR within this.
const HEAL: Duration = Duration::from_secs(60);
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of one transactional call; a retriable failure is retried
/// until [`OPERATION_DEADLINE`].
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const OPERATION_DEADLINE: Duration = Duration::from_secs(120);
/// librdkafka's default `transaction.timeout.ms`: no test transaction
/// times out unless it is meant to.
const TRANSACTION_TIMEOUT_MS: u32 = 60_000;
const PYTHON_TIMEOUT: Duration = Duration::from_secs(120);

/// Broker keys for single-broker tests.
const BROKER_CONFIG: &str = "group.initial.rebalance.delay.ms: 0\n";

// ---------------------------------------------------------------------------
// Reading back, with either isolation level

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isolation {
    ReadCommitted,
    ReadUncommitted,
}

impl Isolation {
    fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        }
    }
}

/// One record read back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    partition: i32,
    offset: i64,
    value: String,
}

/// An assign-only consumer with an explicit isolation level (librdkafka's
/// default is read_committed) that reports reaching the end of a
/// partition: the last stable offset for read_committed, the high
/// watermark otherwise.
fn reader_config(bootstrap: &str, isolation: Isolation) -> ClientConfig {
    let mut c = kafka::consumer_config(bootstrap);
    c.set("isolation.level", isolation.as_str())
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100");
    c
}

/// ListOffsets latest with `isolation`: the last stable offset of each
/// partition for read_committed, the high watermark for read_uncommitted.
fn end_offsets(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
) -> Result<BTreeMap<i32, i64>> {
    let ctx = TestContext::default();
    let c: BaseConsumer<TestContext> = reader_config(bootstrap, isolation)
        .create_with_context(ctx.clone())
        .context("creating a consumer")?;
    let mut ends = BTreeMap::new();
    for p in 0..partitions {
        let (_, end) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .with_context(|| {
                format!(
                    "ListOffsets latest ({}) of {topic}/{p}; {}",
                    isolation.as_str(),
                    ctx.recent_events()
                )
            })?;
        ends.insert(p, end);
    }
    Ok(ends)
}

/// How long a committed transaction's markers may take to reach every
/// partition (the coordinator writes them after answering EndTxn, retrying
/// through leader changes).
const MARKERS_DEADLINE: Duration = Duration::from_secs(60);

/// read_committed reading of `topic` once no transaction is open in it.
///
/// commit_transaction returns once the coordinator has made the decision
/// durable; the markers that make the records visible follow, as in Kafka.
/// Until they land, the last stable offset of a partition stays below its
/// high watermark and a reader stops there. Callers that expect every
/// transaction to be finished wait for the two to meet first, so a slow
/// marker is not mistaken for a lost record (a marker that never lands
/// fails here, naming the partitions).
fn read_committed_settled(bootstrap: &str, topic: &str, partitions: i32) -> Result<Vec<Rec>> {
    wait_no_open_transactions(bootstrap, topic, partitions, MARKERS_DEADLINE)?;
    read_to_end(bootstrap, topic, partitions, Isolation::ReadCommitted)
}

/// Waits up to `deadline` until the last stable offset of every partition
/// of `topic` equals its high watermark (see [`read_committed_settled`]).
fn wait_no_open_transactions(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    deadline: Duration,
) -> Result<()> {
    type Ends = BTreeMap<i32, i64>;
    let mut last: Option<(Ends, Ends)> = None;
    let mut waited = None;
    let started = Instant::now();
    let settled = wait_until(
        deadline,
        "the last stable offsets to reach the high watermarks",
        || {
            if let Some(l) = &last {
                waited.get_or_insert_with(|| l.clone());
            }
            let lso = end_offsets(bootstrap, topic, partitions, Isolation::ReadCommitted);
            let hw = end_offsets(bootstrap, topic, partitions, Isolation::ReadUncommitted);
            match (lso, hw) {
                (Ok(lso), Ok(hw)) => {
                    let ok = lso == hw;
                    last = Some((lso, hw));
                    ok
                }
                _ => false,
            }
        },
    );
    settled.with_context(|| format!("last (LSO, high watermark) of {topic}: {last:?}"))?;
    if let Some((lso, hw)) = waited {
        println!(
            "  {topic}: a transaction was still open (LSO {lso:?}, high watermark {hw:?}); no transaction open {} later",
            secs(started.elapsed())
        );
    }
    Ok(())
}

/// Every record of `topic` an rdkafka consumer with `isolation` returns
/// from the beginning until it reports the end of every partition, in
/// partition and offset order.
fn read_to_end(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
) -> Result<Vec<Rec>> {
    let ctx = TestContext::default();
    let c: BaseConsumer<TestContext> = reader_config(bootstrap, isolation)
        .create_with_context(ctx.clone())
        .context("creating a consumer")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    c.assign(&tpl).context("assign")?;
    let mut at_end: BTreeSet<i32> = BTreeSet::new();
    let mut out = Vec::new();
    let mut errors: VecDeque<String> = VecDeque::new();
    let deadline = Instant::now() + READ_TIMEOUT;
    while at_end.len() < usize::try_from(partitions)? {
        if Instant::now() > deadline {
            bail!(
                "timed out after {READ_TIMEOUT:?} reading {topic} ({}): partitions at their end {at_end:?} of {partitions}, {} records so far\nconsumer errors: {errors:?}\n{}",
                isolation.as_str(),
                out.len(),
                ctx.recent_events()
            );
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => {
                if errors.len() == 10 {
                    errors.pop_front();
                }
                errors.push_back(e.to_string());
            }
            Some(Ok(m)) => out.push(Rec {
                partition: m.partition(),
                offset: m.offset(),
                value: m
                    .payload()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_else(|| "(null)".to_string()),
            }),
        }
    }
    out.sort();
    Ok(out)
}

fn values(recs: &[Rec]) -> Vec<String> {
    let mut v: Vec<String> = recs.iter().map(|r| r.value.clone()).collect();
    v.sort();
    v
}

fn sorted(v: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = v.into_iter().collect();
    v.sort();
    v
}

/// The first few elements of a long list, for failure messages.
fn head<T: std::fmt::Debug>(v: &[T]) -> String {
    if v.len() <= 12 {
        format!("{v:?}")
    } else {
        format!("{:?}... ({} in all)", &v[..12], v.len())
    }
}

/// What is in `a` and not in `b`, and the other way round.
fn difference(a: &[String], b: &[String]) -> String {
    let a_set: BTreeSet<&String> = a.iter().collect();
    let b_set: BTreeSet<&String> = b.iter().collect();
    let only_a: Vec<&&String> = a_set.difference(&b_set).collect();
    let only_b: Vec<&&String> = b_set.difference(&a_set).collect();
    format!(
        "{} only in the first: {}; {} only in the second: {}",
        only_a.len(),
        head(&only_a),
        only_b.len(),
        head(&only_b)
    )
}

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kafka_python_txn.py")
}

fn require_python() -> Result<PathBuf> {
    find_program(
        "python3",
        "install Python 3 and `pip install kafka-python==3.0.12` (scripts/test.sh does)",
    )
}

/// What kafka-python's consumer with `isolation` returns: its end offsets
/// and every record below them.
fn python_read(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
) -> Result<(BTreeMap<i32, i64>, Vec<Rec>)> {
    let python = require_python()?;
    let out = cmd::run(
        Command::new(python).arg(python_script()).args([
            "read",
            "--bootstrap",
            bootstrap,
            "--topic",
            topic,
            "--partitions",
            &partitions.to_string(),
            "--isolation",
            isolation.as_str(),
        ]),
        None,
        PYTHON_TIMEOUT,
    )?;
    ensure!(
        out.status.success() && out.stdout.lines().any(|l| l == "DONE"),
        "kafka-python {} read failed: {out}",
        isolation.as_str()
    );
    let mut ends = BTreeMap::new();
    let mut recs = Vec::new();
    for line in out.stdout.lines() {
        let mut f = line.splitn(4, ' ');
        match f.next() {
            Some("END") => {
                let p = f.next().context("END partition")?.parse()?;
                let o = f.next().context("END offset")?.parse()?;
                ends.insert(p, o);
            }
            Some("REC") => recs.push(Rec {
                partition: f.next().context("REC partition")?.parse()?,
                offset: f.next().context("REC offset")?.parse()?,
                value: f.next().unwrap_or_default().to_string(),
            }),
            _ => {}
        }
    }
    recs.sort();
    Ok((ends, recs))
}

// ---------------------------------------------------------------------------
// Producers

/// What to do about a failed transactional call, as librdkafka classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// An error with librdkafka's verdict on it.
fn txn_error(e: &KafkaError) -> String {
    match e {
        KafkaError::Transaction(t) => format!(
            "{e} (code {:?}, fatal {}, abortable {}, retriable {})",
            t.code(),
            t.is_fatal(),
            t.txn_requires_abort(),
            t.is_retriable()
        ),
        other => other.to_string(),
    }
}

/// Runs a transactional call, repeating it while librdkafka calls the
/// failure retriable, for at most [`OPERATION_DEADLINE`].
fn retrying(
    what: &str,
    mut call: impl FnMut() -> Result<(), KafkaError>,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + OPERATION_DEADLINE;
    loop {
        match call() {
            Ok(()) => return Ok(()),
            Err(e) if classify(&e) == Failure::Retriable && Instant::now() < deadline => {
                println!(
                    "{what}: retriable failure, calling it again: {}",
                    txn_error(&e)
                );
            }
            Err(e) => return Err(e),
        }
    }
}

/// A transactional producer. librdkafka requires `message.timeout.ms` <=
/// `transaction.timeout.ms`; both are the same here.
fn txn_config(bootstrap: &str, id: &str, timeout_ms: u32) -> ClientConfig {
    let mut c = kafka::producer_config(bootstrap);
    c.set("transactional.id", id)
        .set("transaction.timeout.ms", timeout_ms.to_string())
        .set("message.timeout.ms", timeout_ms.to_string())
        .set("request.timeout.ms", "5000")
        .set("retry.backoff.ms", "100")
        .set("retry.backoff.max.ms", "1000");
    c
}

/// A transactional producer after `init_transactions`.
struct TxnProducer {
    id: String,
    producer: BaseProducer<TestContext>,
    ctx: TestContext,
    /// Sends whose delivery reports were not yet collected.
    unreported: usize,
    next_opaque: usize,
}

impl TxnProducer {
    fn new(bootstrap: &str, id: &str, timeout_ms: u32) -> Result<Self> {
        let (producer, ctx) = kafka::producer(&txn_config(bootstrap, id, timeout_ms))?;
        retrying("init_transactions", || {
            producer.init_transactions(CALL_TIMEOUT)
        })
        .map_err(|e| {
            anyhow!(
                "init_transactions for transactional id {id}: {}\n{}",
                txn_error(&e),
                ctx.recent_events()
            )
        })?;
        Ok(TxnProducer {
            id: id.to_string(),
            producer,
            ctx,
            unreported: 0,
            next_opaque: 0,
        })
    }

    fn begin(&self) -> Result<()> {
        self.producer
            .begin_transaction()
            .map_err(|e| anyhow!("begin_transaction ({}): {}", self.id, txn_error(&e)))
    }

    /// Hands one record to librdkafka; an error is what `send` returned.
    fn try_send(&mut self, topic: &str, partition: i32, value: &str) -> Result<(), KafkaError> {
        let record = BaseRecord::<[u8], [u8], usize>::with_opaque_to(topic, self.next_opaque)
            .partition(partition)
            .payload(value.as_bytes());
        self.producer.send(record).map_err(|(e, _)| e)?;
        self.next_opaque += 1;
        self.unreported += 1;
        Ok(())
    }

    fn send(&mut self, topic: &str, partition: i32, value: &str) -> Result<()> {
        let record = BaseRecord::with_opaque_to(topic, self.next_opaque)
            .partition(partition)
            .payload(value.as_bytes());
        kafka::send_blocking(&self.producer, record)
            .with_context(|| format!("sending {value:?} ({})", self.id))?;
        self.next_opaque += 1;
        self.unreported += 1;
        Ok(())
    }

    /// Waits until everything sent is in the log; every delivery must
    /// have succeeded.
    fn flush(&mut self) -> Result<Vec<Delivery>> {
        let n = std::mem::take(&mut self.unreported);
        let d = kafka::flush_all(&self.producer, &self.ctx, n)?;
        let failed: Vec<&Delivery> = d.iter().filter(|d| d.error.is_some()).collect();
        ensure!(
            failed.is_empty(),
            "{} of {n} transactional deliveries failed ({}): {}\n{}",
            failed.len(),
            self.id,
            head(&failed),
            self.ctx.recent_events()
        );
        Ok(d)
    }

    fn commit(&mut self) -> Result<(), KafkaError> {
        let r = retrying("commit_transaction", || {
            self.producer.commit_transaction(CALL_TIMEOUT)
        });
        self.forget_reports();
        r
    }

    fn abort(&mut self) -> Result<(), KafkaError> {
        // A BaseProducer's delivery reports are served only by polling:
        // abort_transaction waits for them and cannot serve them itself.
        let _ = self.producer.flush(CALL_TIMEOUT);
        let r = retrying("abort_transaction", || {
            self.producer.abort_transaction(CALL_TIMEOUT)
        });
        self.forget_reports();
        r
    }

    /// Commit and abort serve delivery reports themselves.
    fn forget_reports(&mut self) {
        self.unreported = 0;
        let _ = self.ctx.take_deliveries();
    }

    fn must_commit(&mut self) -> Result<()> {
        self.commit().map_err(|e| {
            anyhow!(
                "commit_transaction ({}): {}\n{}",
                self.id,
                txn_error(&e),
                self.ctx.recent_events()
            )
        })
    }

    fn must_abort(&mut self) -> Result<()> {
        self.abort().map_err(|e| {
            anyhow!(
                "abort_transaction ({}): {}\n{}",
                self.id,
                txn_error(&e),
                self.ctx.recent_events()
            )
        })
    }
}

/// A plain (non-transactional, non-idempotent) acks=all producer.
fn plain_producer(bootstrap: &str) -> Result<(BaseProducer<TestContext>, TestContext)> {
    let mut config = kafka::producer_config(bootstrap);
    config.set("acks", "all").set("enable.idempotence", "false");
    kafka::producer(&config)
}

/// Writes `(partition, value)` pairs and waits for every acknowledgement.
fn plain_write(
    producer: &BaseProducer<TestContext>,
    ctx: &TestContext,
    topic: &str,
    records: &[(i32, String)],
) -> Result<Vec<Delivery>> {
    for (i, (p, v)) in records.iter().enumerate() {
        kafka::send_blocking(
            producer,
            BaseRecord::with_opaque_to(topic, i)
                .partition(*p)
                .payload(v.as_bytes()),
        )?;
    }
    let d = kafka::flush_all(producer, ctx, records.len())?;
    let failed: Vec<&Delivery> = d.iter().filter(|d| d.error.is_some()).collect();
    ensure!(
        failed.is_empty(),
        "plain deliveries failed: {}",
        head(&failed)
    );
    Ok(d)
}

/// The lowest offset per partition among deliveries.
fn first_offsets(deliveries: &[Delivery]) -> BTreeMap<i32, i64> {
    let mut first = BTreeMap::new();
    for d in deliveries {
        let e = first.entry(d.partition).or_insert(d.offset);
        *e = (*e).min(d.offset);
    }
    first
}

fn start_broker(extra_yaml: &str) -> Result<BrokerProcess> {
    BrokerProcess::start_with(BrokerOptions {
        config_yaml: Some(format!("{BROKER_CONFIG}{extra_yaml}")),
        ..BrokerOptions::default()
    })
}

// ---------------------------------------------------------------------------
// Group offsets

/// OffsetFetch of `group` for `topic` from a client with `isolation`:
/// librdkafka asks for stable offsets (`require_stable`) when it is
/// read_committed, so a partition with offsets pending in an open
/// transaction is refused (UNSTABLE_OFFSET_COMMIT) until it ends.
fn committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    isolation: Isolation,
) -> Result<BTreeMap<i32, Option<i64>>> {
    let ctx = TestContext::default();
    let mut config = kafka::client_config(bootstrap);
    config
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .set("isolation.level", isolation.as_str());
    let c: BaseConsumer<TestContext> = config
        .create_with_context(ctx.clone())
        .context("creating a group client")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .with_context(|| {
            format!(
                "OffsetFetch ({}) for group {group}; {}",
                isolation.as_str(),
                ctx.recent_events()
            )
        })?;
    let mut out = BTreeMap::new();
    for e in got.elements_for_topic(topic) {
        if let Err(err) = e.error() {
            bail!("OffsetFetch {group} {topic}/{}: {err}", e.partition());
        }
        let off = match e.offset() {
            Offset::Offset(o) => Some(o),
            Offset::Invalid => None,
            other => bail!("OffsetFetch {group} {topic}/{}: {other:?}", e.partition()),
        };
        out.insert(e.partition(), off);
    }
    Ok(out)
}

fn offsets_tpl(topic: &str, offsets: &BTreeMap<i32, i64>) -> Result<TopicPartitionList> {
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    Ok(tpl)
}

fn as_committed(offsets: &BTreeMap<i32, i64>) -> BTreeMap<i32, Option<i64>> {
    offsets.iter().map(|(&p, &o)| (p, Some(o))).collect()
}

// ---------------------------------------------------------------------------
// The transaction coordinator

/// `Utils.abs(id.hashCode()) % partitions`, Java's `String.hashCode` over
/// UTF-16 code units, as Kafka places a transactional id.
fn txn_partition(id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in id.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

/// The broker FindCoordinator (key type 1) names for `id`, asked on a live
/// broker's raw connection.
fn find_txn_coordinator(cluster: &Cluster, id: &str) -> Result<i32> {
    let live = cluster.live_ids();
    let asked = *live.first().context("no live broker")?;
    let mut conn = RawConnection::connect(cluster.broker(asked)?.addr())?;
    let version = conn.version_for::<FindCoordinatorRequest>(3)?;
    ensure!(
        version >= 1,
        "broker {asked} supports FindCoordinator only up to v{version}; key types need v1"
    );
    let resp = conn.request(
        version,
        &FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(id.to_string()))
            .with_key_type(COORDINATOR_KEY_TRANSACTION),
    )?;
    ensure!(
        resp.error_code == 0,
        "FindCoordinator v{version} (transaction {id}) on broker {asked} answered {}",
        error_name(resp.error_code)
    );
    Ok(resp.node_id.0)
}

/// The transaction coordinator of `id` and its `__transaction_state`
/// partition, once FindCoordinator and the partition's leader in metadata
/// agree on a live broker.
fn txn_coordinator(cluster: &Cluster, id: &str) -> Result<(i32, i32)> {
    let partitions = i32::try_from(cluster.partitions(TXN_STATE_TOPIC)?.len())?;
    let p = txn_partition(id, partitions);
    let mut last = None;
    let what = format!(
        "FindCoordinator for transactional id {id} and the leader of {TXN_STATE_TOPIC}/{p} \
         (abs(hashCode) % {partitions}) to name the same live broker"
    );
    let r = wait_for(FAILOVER_DEADLINE, &what, || {
        let named = find_txn_coordinator(cluster, id)?;
        let leader = cluster.leader_of(TXN_STATE_TOPIC, p)?;
        last = Some((named, leader));
        Ok((Some(named) == leader && cluster.is_live(named)).then_some(named))
    });
    let coordinator = r.with_context(|| {
        format!(
            "last (FindCoordinator, leader): {last:?}; {}",
            cluster.describe()
        )
    })?;
    Ok((coordinator, p))
}

/// Waits until `__transaction_state` partition `p` has a live leader and
/// all its replicas in the ISR, so that killing one broker loses nothing.
fn wait_for_txn_state_isr(cluster: &Cluster, p: i32) -> Result<()> {
    let mut last = None;
    let r = wait_until(
        HEAL,
        &format!("{TXN_STATE_TOPIC}/{p} to have a full ISR"),
        || {
            let Ok(parts) = cluster.partitions(TXN_STATE_TOPIC) else {
                return false;
            };
            let Some(state) = parts.into_iter().find(|s| s.partition == p) else {
                return false;
            };
            let ok = state.leader >= 0
                && cluster.is_live(state.leader)
                && state.isr.len() >= state.replicas.len();
            last = Some(state);
            ok
        },
    );
    r.with_context(|| format!("last state: {last:?}"))
}

// ---------------------------------------------------------------------------
// 1. Consume-transform-produce across processor kills

/// `sluice-txn-processor`: the consume-transform-produce loop.
fn processor_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice-txn-processor"))
}

/// Records in the input topic.
const CTP_RECORDS: usize = 3_000;
/// SIGKILLs of the processor before it may finish.
const CTP_KILLS: usize = 4;
/// The processor's pace, records per second: slow enough that the input
/// outlasts every kill. Each incarnation lives at most [`CTP_LIFETIME_MS`]
/// (plus the time it takes to notice its first commit) after its first
/// commit, so the kills take fewer than 2,000 of the 3,000 records.
const CTP_RATE: u32 = 300;
const CTP_LIFETIME_MS: (u64, u64) = (0, 1_200);
/// A restarted processor waits out the killed member's 6 s session before
/// the group rebalances; its first commit comes within this.
const CTP_FIRST_COMMIT: Duration = Duration::from_secs(90);
const CTP_FINISH: Duration = Duration::from_secs(180);

/// What one processor process printed.
#[derive(Debug, Default, Clone)]
struct ProcState {
    /// The event of the last line.
    last: Option<String>,
    commits: usize,
    /// Next input offset per partition after the last commit.
    committed: BTreeMap<i32, i64>,
    aborts: Vec<String>,
    errors: Vec<String>,
    fatal: Vec<String>,
    recent: VecDeque<String>,
}

impl ProcState {
    fn apply(&mut self, line: &str) {
        if self.recent.len() == 30 {
            self.recent.pop_front();
        }
        self.recent.push_back(line.to_string());
        let mut f = line.splitn(3, ' ');
        let event = f.next().unwrap_or_default().to_string();
        let _ts = f.next();
        let rest = f.next().unwrap_or_default();
        match event.as_str() {
            "COMMITTED" => {
                self.commits += 1;
                let offsets = rest.split_once(' ').map_or("", |(_, o)| o);
                for pair in offsets.split(',').filter(|s| !s.is_empty()) {
                    if let Some((p, o)) = pair.split_once('=') {
                        if let (Ok(p), Ok(o)) = (p.parse::<i32>(), o.parse::<i64>()) {
                            let e = self.committed.entry(p).or_insert(o);
                            *e = (*e).max(o);
                        }
                    }
                }
            }
            "ABORTED" => self.aborts.push(rest.to_string()),
            "ERROR" => self.errors.push(rest.to_string()),
            "FATAL" => self.fatal.push(rest.to_string()),
            _ => {}
        }
        self.last = Some(event);
    }

    /// Whether the process may have died with records in an open
    /// transaction: it prints BEGIN before its first send.
    fn mid_transaction(&self) -> bool {
        matches!(self.last.as_deref(), Some("BEGIN" | "COMMITTING"))
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One processor process. Dropping it kills the process.
struct ProcessorProcess {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<ProcState>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<JoinHandle<()>>,
}

struct ProcessorArgs {
    bootstrap: String,
    input: String,
    output: String,
    group: String,
    transactional_id: String,
    rate: u32,
}

impl ProcessorProcess {
    fn spawn(args: &ProcessorArgs, name: &str) -> Result<Self> {
        let mut cmd = Command::new(processor_bin());
        cmd.args(["--bootstrap", &args.bootstrap])
            .args(["--input", &args.input])
            .args(["--output", &args.output])
            .args(["--group", &args.group])
            .args(["--transactional-id", &args.transactional_id])
            .args(["--client-id", name])
            .args(["--rate", &args.rate.to_string()])
            .args(["--commit-every", "50"])
            .args(["--commit-interval-ms", "100"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning processor {name}: {cmd:?}"))?;
        let stdout = child.stdout.take().context("stdout not piped")?;
        let stderr = child.stderr.take().context("stderr not piped")?;
        let stdin = child.stdin.take();
        let state = Arc::new(Mutex::new(ProcState::default()));
        let errs = Arc::new(Mutex::new(VecDeque::new()));
        let mut readers = Vec::new();
        {
            let state = Arc::clone(&state);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lock(&state).apply(&line);
                }
            }));
        }
        {
            let errs = Arc::clone(&errs);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut e = lock(&errs);
                    if e.len() == 40 {
                        e.pop_front();
                    }
                    e.push_back(line);
                }
            }));
        }
        Ok(ProcessorProcess {
            name: name.to_string(),
            child: Some(child),
            stdin,
            state,
            stderr: errs,
            readers,
        })
    }

    fn state(&self) -> ProcState {
        lock(&self.state).clone()
    }

    /// The exit status if the process ended on its own.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Reads the rest of what the (dead) process printed.
    fn drain(&mut self) -> ProcState {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        self.state()
    }

    /// SIGKILL; returns everything it printed before it died.
    fn kill(&mut self) -> Result<ProcState> {
        let mut child = self.child.take().context("kill: processor not running")?;
        child.kill().context("SIGKILL to the processor")?;
        child.wait()?;
        self.stdin = None;
        Ok(self.drain())
    }

    /// Asks it to commit what it has and exit; it must exit 0.
    fn close(&mut self) -> Result<ProcState> {
        let mut child = self.child.take().context("close: processor not running")?;
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "close");
        }
        let status = wait_for(
            Duration::from_secs(60),
            &format!("processor {} to exit", self.name),
            || Ok(child.try_wait()?),
        );
        match status {
            Ok(s) if s.success() => Ok(self.drain()),
            Ok(s) => {
                self.drain();
                bail!("processor {} exited with {s}\n{}", self.name, self.report())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                self.drain();
                Err(e.context(self.report()))
            }
        }
    }

    fn report(&self) -> String {
        let s = self.state();
        let mut r = format!(
            "--- processor {}: {} commits, committed {:?}, aborts {:?}, errors {:?}, fatal {:?}\nrecent stdout:\n",
            self.name,
            s.commits,
            s.committed,
            s.aborts.iter().rev().take(5).collect::<Vec<_>>(),
            s.errors.iter().rev().take(5).collect::<Vec<_>>(),
            s.fatal
        );
        for l in &s.recent {
            r.push_str(&format!("  {l}\n"));
        }
        r.push_str("recent stderr:\n");
        for l in lock(&self.stderr).iter() {
            r.push_str(&format!("  {l}\n"));
        }
        r
    }

    /// Fails with its report if it ended on its own.
    fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.exited() {
            self.drain();
            bail!(
                "processor {} exited by itself with {status}\n{}",
                self.name,
                self.report()
            );
        }
        Ok(())
    }
}

impl Drop for ProcessorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `x` as the input holds it: key and value `x`, partition `x % 3`.
fn input_partition(x: usize) -> i32 {
    (x % PARTITIONS as usize) as i32
}

#[test]
fn consume_transform_produce_is_exactly_once_across_processor_kills() -> Result<()> {
    let mut rng = Rng::from_env_or_clock();
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let input = unique_topic("txn-in");
    let output = unique_topic("txn-out");
    for t in [&input, &output] {
        cluster.create_topic(t, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;
    }

    // The input: x = 0..N, key and value x.
    let (producer, ctx) = plain_producer(&cluster.bootstrap())?;
    for x in 0..CTP_RECORDS {
        let s = x.to_string();
        kafka::send_blocking(
            &producer,
            BaseRecord::with_opaque_to(&input, x)
                .partition(input_partition(x))
                .key(s.as_bytes())
                .payload(s.as_bytes()),
        )?;
    }
    let deliveries = kafka::flush_all(&producer, &ctx, CTP_RECORDS)?;
    drop(producer);
    let mut input_ends: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    for d in &deliveries {
        ensure!(d.error.is_none(), "input delivery failed: {d:?}");
        let e = input_ends.entry(d.partition).or_default();
        *e = (*e).max(d.offset + 1);
    }
    println!("input {input}: {CTP_RECORDS} records, ends {input_ends:?}");

    let args = ProcessorArgs {
        bootstrap: cluster.bootstrap_all(),
        input: input.clone(),
        output: output.clone(),
        group: unique_topic("txn-processors"),
        transactional_id: unique_topic("txn-processor"),
        rate: CTP_RATE,
    };
    let started = Instant::now();
    let mut mid_txn_kills = 0;
    let mut aborts = 0;
    let mut progress: BTreeMap<i32, i64> = BTreeMap::new();
    let done = |progress: &BTreeMap<i32, i64>| {
        input_ends
            .iter()
            .all(|(p, end)| progress.get(p).is_some_and(|c| c >= end))
    };
    for k in 0..CTP_KILLS {
        let mut p = ProcessorProcess::spawn(&args, &format!("processor-{k}"))?;
        let first = wait_for(
            CTP_FIRST_COMMIT,
            &format!("processor {k}'s first commit"),
            || {
                p.check_alive()?;
                Ok((p.state().commits > 0).then_some(()))
            },
        );
        first.with_context(|| p.report())?;
        let life = rng.millis(CTP_LIFETIME_MS.0, CTP_LIFETIME_MS.1);
        std::thread::sleep(life);
        p.check_alive()?;
        let state = p.kill()?;
        for (&part, &o) in &state.committed {
            let e = progress.entry(part).or_insert(o);
            *e = (*e).max(o);
        }
        mid_txn_kills += usize::from(state.mid_transaction());
        aborts += state.aborts.len();
        println!(
            "kill {k} at {}: SIGKILL {} after its first commit; last event {:?}; {} commits, {} aborts; committed so far {progress:?}",
            secs(started.elapsed()),
            secs(life),
            state.last,
            state.commits,
            state.aborts.len()
        );
        ensure!(
            state.fatal.is_empty(),
            "processor {k} failed although nothing but itself was killed\n{}",
            p.report()
        );
        ensure!(
            !done(&progress),
            "the processor finished the input before kill {k}: the test needs a slower --rate"
        );
    }

    let mut last = ProcessorProcess::spawn(&args, "processor-last")?;
    let finished = wait_for(
        CTP_FINISH,
        "the last processor to commit the whole input",
        || {
            last.check_alive()?;
            let s = last.state();
            let mut all = progress.clone();
            for (&part, &o) in &s.committed {
                let e = all.entry(part).or_insert(o);
                *e = (*e).max(o);
            }
            Ok(done(&all).then_some(()))
        },
    );
    finished.with_context(|| last.report())?;
    let state = last.close()?;
    aborts += state.aborts.len();
    println!(
        "the last processor committed the rest; {CTP_KILLS} kills ({mid_txn_kills} with a transaction open), {} in all",
        secs(started.elapsed())
    );
    ensure!(
        state.fatal.is_empty(),
        "the last processor failed: {:?}",
        state.fatal
    );
    cluster.check_no_crash()?;

    // Committed output: every input's result exactly once, in the input's partition.
    let rc = read_committed_settled(&cluster.bootstrap(), &output, PARTITIONS)?;
    let mut seen: BTreeMap<usize, Vec<(i32, i64)>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for r in &rc {
        let x = r
            .value
            .strip_prefix("out-")
            .and_then(|x| x.parse::<usize>().ok())
            .filter(|&x| x < CTP_RECORDS && input_partition(x) == r.partition);
        match x {
            Some(x) => seen.entry(x).or_default().push((r.partition, r.offset)),
            None => unknown.push(r.clone()),
        }
    }
    let missing: Vec<usize> = (0..CTP_RECORDS).filter(|x| !seen.contains_key(x)).collect();
    let duplicated: Vec<(usize, Vec<(i32, i64)>)> = seen
        .iter()
        .filter(|(_, at)| at.len() > 1)
        .map(|(x, at)| (*x, at.clone()))
        .collect();
    println!(
        "read_committed output: {} records, {} distinct results, {} missing, {} duplicated, {} unknown",
        rc.len(),
        seen.len(),
        missing.len(),
        duplicated.len(),
        unknown.len()
    );
    ensure!(
        unknown.is_empty(),
        "read_committed output holds records no input maps to (or in the wrong partition): {}",
        head(&unknown)
    );
    ensure!(
        duplicated.is_empty(),
        "results committed more than once (value: [(partition, offset)]): {}",
        head(&duplicated)
    );
    ensure!(missing.is_empty(), "results missing: {}", head(&missing));

    // The group's offsets moved with the output.
    let offsets = committed(
        &cluster.bootstrap(),
        &args.group,
        &input,
        PARTITIONS,
        Isolation::ReadCommitted,
    )?;
    ensure!(
        offsets == as_committed(&input_ends),
        "group {} committed {offsets:?}, want the input's ends {input_ends:?}",
        args.group
    );

    // Uncommitted output: the same records, plus aborted ones only if a
    // transaction could have been cut short.
    let ru = read_to_end(
        &cluster.bootstrap(),
        &output,
        PARTITIONS,
        Isolation::ReadUncommitted,
    )?;
    let ru_set: BTreeSet<&Rec> = ru.iter().collect();
    let hidden: Vec<&Rec> = rc.iter().filter(|r| !ru_set.contains(r)).collect();
    ensure!(
        hidden.is_empty(),
        "records a read_committed consumer returned that a read_uncommitted one did not: {}",
        head(&hidden)
    );
    let rc_set: BTreeSet<&Rec> = rc.iter().collect();
    let aborted: Vec<&Rec> = ru.iter().filter(|r| !rc_set.contains(r)).collect();
    let bad: Vec<&&Rec> = aborted
        .iter()
        .filter(|r| {
            r.value
                .strip_prefix("out-")
                .and_then(|x| x.parse::<usize>().ok())
                .is_none_or(|x| x >= CTP_RECORDS)
        })
        .collect();
    ensure!(
        bad.is_empty(),
        "uncommitted records nobody produced: {}",
        head(&bad)
    );
    println!(
        "read_uncommitted output: {} records, {} of them from aborted transactions",
        ru.len(),
        aborted.len()
    );
    ensure!(
        aborted.is_empty() || mid_txn_kills + aborts > 0,
        "{} aborted records in the output although no kill hit an open transaction and no transaction was aborted: {}",
        aborted.len(),
        head(&aborted)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 2. kafka-python and librdkafka read_committed agree

/// Committed, aborted and open transactions interleaved with plain writes.
#[test]
fn kafka_python_read_committed_agrees_with_librdkafka() -> Result<()> {
    const MIX_PARTITIONS: i32 = 2;
    const ROUNDS: usize = 6;
    const PER_PARTITION: usize = 5;
    require_python()?;
    let broker = start_broker("")?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("txn-mix");
    kafka::create_topic(&bootstrap, &topic, MIX_PARTITIONS, &[])?;
    let (plain, plain_ctx) = plain_producer(&bootstrap)?;
    let mut txn = TxnProducer::new(&bootstrap, &unique_topic("txn-mix"), TRANSACTION_TIMEOUT_MS)?;

    let mut visible: Vec<String> = Vec::new();
    let mut aborted: Vec<String> = Vec::new();
    let batch = |tag: &str| -> Vec<(i32, String)> {
        (0..MIX_PARTITIONS)
            .flat_map(|p| (0..PER_PARTITION).map(move |i| (p, i)))
            .map(|(p, i)| (p, format!("{tag}-p{p}-{i}")))
            .collect()
    };
    let one_each = |tag: &str| -> Vec<(i32, String)> {
        (0..MIX_PARTITIONS)
            .map(|p| (p, format!("{tag}-p{p}")))
            .collect()
    };
    for r in 0..ROUNDS {
        let commit = r % 2 == 0;
        let before = one_each(&format!("plain-{r}-before"));
        plain_write(&plain, &plain_ctx, &topic, &before)?;
        visible.extend(before.into_iter().map(|(_, v)| v));
        txn.begin()?;
        let tag = if commit { "committed" } else { "aborted" };
        let records = batch(&format!("{tag}-{r}"));
        for (p, v) in &records {
            txn.send(&topic, *p, v)?;
        }
        txn.flush()?;
        // Plain writes land inside the open transaction's range.
        let inside = one_each(&format!("plain-{r}-inside"));
        plain_write(&plain, &plain_ctx, &topic, &inside)?;
        visible.extend(inside.into_iter().map(|(_, v)| v));
        if commit {
            txn.must_commit()?;
            visible.extend(records.into_iter().map(|(_, v)| v));
        } else {
            txn.must_abort()?;
            aborted.extend(records.into_iter().map(|(_, v)| v));
        }
    }

    // An open transaction with a plain write after it.
    let before_open = one_each("plain-before-open");
    plain_write(&plain, &plain_ctx, &topic, &before_open)?;
    visible.extend(before_open.into_iter().map(|(_, v)| v));
    txn.begin()?;
    let open = batch("open");
    for (p, v) in &open {
        txn.send(&topic, *p, v)?;
    }
    let open_at = first_offsets(&txn.flush()?);
    let after_open = one_each("plain-after-open");
    plain_write(&plain, &plain_ctx, &topic, &after_open)?;

    let lso = end_offsets(&bootstrap, &topic, MIX_PARTITIONS, Isolation::ReadCommitted)?;
    let hw = end_offsets(
        &bootstrap,
        &topic,
        MIX_PARTITIONS,
        Isolation::ReadUncommitted,
    )?;
    ensure!(
        lso == open_at,
        "with a transaction open from offsets {open_at:?}, ListOffsets read_committed answered {lso:?} (high watermarks {hw:?}); want the open transaction's first offsets"
    );
    let (py_lso, py_open) =
        python_read(&bootstrap, &topic, MIX_PARTITIONS, Isolation::ReadCommitted)?;
    let rd_open = read_to_end(&bootstrap, &topic, MIX_PARTITIONS, Isolation::ReadCommitted)?;
    ensure!(
        py_lso == lso,
        "kafka-python's read_committed end offsets {py_lso:?}, librdkafka's {lso:?}"
    );
    ensure!(
        py_open == rd_open,
        "with a transaction open, kafka-python read_committed returned {} records and librdkafka {}: {}",
        py_open.len(),
        rd_open.len(),
        difference(
            &py_open.iter().map(|r| format!("{}/{} {}", r.partition, r.offset, r.value)).collect::<Vec<_>>(),
            &rd_open.iter().map(|r| format!("{}/{} {}", r.partition, r.offset, r.value)).collect::<Vec<_>>()
        )
    );
    ensure!(
        values(&rd_open) == sorted(visible.clone()),
        "with a transaction open, read_committed returned other values than the committed and plain ones before it: {}",
        difference(&values(&rd_open), &sorted(visible.clone()))
    );
    println!(
        "transaction open at {open_at:?} (high watermarks {hw:?}): both clients read the same {} records and stop there",
        rd_open.len()
    );

    txn.must_commit()?;
    visible.extend(open.into_iter().map(|(_, v)| v));
    visible.extend(after_open.into_iter().map(|(_, v)| v));
    wait_no_open_transactions(&bootstrap, &topic, MIX_PARTITIONS, MARKERS_DEADLINE)?;
    let (py_ends, py) = python_read(&bootstrap, &topic, MIX_PARTITIONS, Isolation::ReadCommitted)?;
    let rd = read_to_end(&bootstrap, &topic, MIX_PARTITIONS, Isolation::ReadCommitted)?;
    let hw = end_offsets(
        &bootstrap,
        &topic,
        MIX_PARTITIONS,
        Isolation::ReadUncommitted,
    )?;
    ensure!(
        py_ends == hw,
        "with no transaction open, kafka-python's read_committed end offsets are {py_ends:?}, the high watermarks {hw:?}"
    );
    ensure!(
        py == rd,
        "kafka-python read_committed returned {} records and librdkafka {}: {}",
        py.len(),
        rd.len(),
        difference(
            &py.iter()
                .map(|r| format!("{}/{} {}", r.partition, r.offset, r.value))
                .collect::<Vec<_>>(),
            &rd.iter()
                .map(|r| format!("{}/{} {}", r.partition, r.offset, r.value))
                .collect::<Vec<_>>()
        )
    );
    ensure!(
        values(&rd) == sorted(visible.clone()),
        "read_committed values differ from the committed and plain ones: {}",
        difference(&values(&rd), &sorted(visible.clone()))
    );

    // read_uncommitted: everything, aborted values included, at the same
    // offsets for what both see.
    let everything = sorted(visible.iter().chain(&aborted).cloned());
    let rd_all = read_to_end(
        &bootstrap,
        &topic,
        MIX_PARTITIONS,
        Isolation::ReadUncommitted,
    )?;
    let (_, py_all) = python_read(
        &bootstrap,
        &topic,
        MIX_PARTITIONS,
        Isolation::ReadUncommitted,
    )?;
    ensure!(
        values(&rd_all) == everything,
        "librdkafka read_uncommitted: {}",
        difference(&values(&rd_all), &everything)
    );
    ensure!(
        py_all == rd_all,
        "kafka-python and librdkafka read_uncommitted differ: {} and {} records",
        py_all.len(),
        rd_all.len()
    );
    let all: BTreeSet<&Rec> = rd_all.iter().collect();
    let moved: Vec<&Rec> = rd.iter().filter(|r| !all.contains(r)).collect();
    ensure!(
        moved.is_empty(),
        "read_committed records not at the offset read_uncommitted shows them: {}",
        head(&moved)
    );
    println!(
        "{} committed or plain records read alike by kafka-python and librdkafka; {} aborted ones seen only by read_uncommitted",
        rd.len(),
        aborted.len()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Fencing

/// Whether `e` from a call on `producer` is the fatal error of a fenced
/// producer; librdkafka reports PRODUCER_FENCED and INVALID_PRODUCER_EPOCH
/// as its own `_FENCED`.
fn check_fenced(producer: &BaseProducer<TestContext>, what: &str, e: &KafkaError) -> Result<()> {
    let fenced = [
        RDKafkaErrorCode::Fenced,
        RDKafkaErrorCode::ProducerFenced,
        RDKafkaErrorCode::InvalidProducerEpoch,
    ];
    let fatal = producer.client().fatal_error();
    let (code, is_fatal) = match e {
        KafkaError::Transaction(t) => (Some(t.code()), t.is_fatal()),
        other => (other.rdkafka_error_code(), false),
    };
    ensure!(
        is_fatal || fatal.is_some(),
        "{what} failed, but not fatally: {} (client fatal error {fatal:?})",
        txn_error(e)
    );
    let code_fenced = code.is_some_and(|c| fenced.contains(&c))
        || fatal.as_ref().is_some_and(|(c, _)| fenced.contains(c));
    ensure!(
        code_fenced,
        "{what} failed fatally, but not as fenced: {} (client fatal error {fatal:?})",
        txn_error(e)
    );
    Ok(())
}

#[test]
fn new_producer_with_same_transactional_id_fences_the_old_one() -> Result<()> {
    let broker = start_broker("")?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("txn-fence");
    kafka::create_topic(&bootstrap, &topic, 2, &[])?;
    let id = unique_topic("txn-fence");

    let mut a = TxnProducer::new(&bootstrap, &id, TRANSACTION_TIMEOUT_MS)?;
    a.begin()?;
    let a_values: Vec<String> = (0..10).map(|i| format!("a-{i}")).collect();
    for v in &a_values {
        a.send(&topic, 0, v)?;
    }
    a.flush()?;

    // B takes over the id while A's transaction is open.
    let mut b = TxnProducer::new(&bootstrap, &id, TRANSACTION_TIMEOUT_MS)?;
    b.begin()?;
    let b_values: Vec<String> = (0..10).map(|i| format!("b-{i}")).collect();
    for (i, v) in b_values.iter().enumerate() {
        b.send(&topic, i32::from(i % 2 == 1), v)?;
    }
    b.must_commit()?;

    // A goes on as if nothing happened: to the partition it has, and to one
    // it has not added to its transaction yet.
    let late_send = [
        a.try_send(&topic, 0, "a-late-0"),
        a.try_send(&topic, 1, "a-late-1"),
    ];
    let commit = a.commit();
    let err = match commit {
        Ok(()) => bail!(
            "producer A committed after producer B initialised the same transactional id (late sends: {late_send:?})"
        ),
        Err(e) => e,
    };
    check_fenced(&a.producer, "A's commit_transaction", &err)
        .with_context(|| a.ctx.recent_events())?;
    println!("A's commit failed as fenced: {}", txn_error(&err));

    let rc = read_to_end(&bootstrap, &topic, 2, Isolation::ReadCommitted)?;
    ensure!(
        values(&rc) == sorted(b_values.clone()),
        "read_committed after the fencing: {}",
        difference(&values(&rc), &sorted(b_values.clone()))
    );
    // A's records are in the log, aborted.
    let ru = read_to_end(&bootstrap, &topic, 2, Isolation::ReadUncommitted)?;
    let ru_values: BTreeSet<String> = values(&ru).into_iter().collect();
    let absent: Vec<&String> = a_values
        .iter()
        .filter(|v| !ru_values.contains(*v))
        .collect();
    ensure!(
        absent.is_empty(),
        "A's acknowledged records are missing even from read_uncommitted: {}",
        head(&absent)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. Transaction timeout

/// The hung transaction's timeout, and how often the coordinator looks for
/// timed-out transactions.
const HUNG_TIMEOUT_MS: u32 = 5_000;
const CLEANUP_INTERVAL_MS: u32 = 500;
/// The coordinator aborts a timed-out transaction within this (liveness
/// only: timeout + cleanup interval + a generous margin).
const ABORT_DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn hung_transaction_is_aborted_after_its_timeout() -> Result<()> {
    let broker = start_broker(&format!(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms: {CLEANUP_INTERVAL_MS}\n"
    ))?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("txn-hung");
    kafka::create_topic(&bootstrap, &topic, 1, &[])?;
    let id = unique_topic("txn-hung");
    let (plain, plain_ctx) = plain_producer(&bootstrap)?;
    let on0 = |tag: &str, n: usize| -> Vec<(i32, String)> {
        (0..n).map(|i| (0, format!("{tag}-{i}"))).collect()
    };
    let before = on0("before", 3);
    plain_write(&plain, &plain_ctx, &topic, &before)?;

    let mut hung = TxnProducer::new(&bootstrap, &id, HUNG_TIMEOUT_MS)?;
    let begun = Instant::now();
    hung.begin()?;
    let hung_values = on0("hung", 5);
    for (p, v) in &hung_values {
        hung.send(&topic, *p, v)?;
    }
    let first_hung = first_offsets(&hung.flush()?)
        .get(&0)
        .copied()
        .context("no delivery for the hung records")?;
    let after = on0("after", 3);
    plain_write(&plain, &plain_ctx, &topic, &after)?;

    // The producer now never commits. While its transaction is open, the
    // last stable offset stays at its first record.
    let lso = end_offsets(&bootstrap, &topic, 1, Isolation::ReadCommitted)?;
    let hw = end_offsets(&bootstrap, &topic, 1, Isolation::ReadUncommitted)?;
    let rc = read_to_end(&bootstrap, &topic, 1, Isolation::ReadCommitted)?;
    let checked = begun.elapsed();
    let blocked = lso.get(&0) == Some(&first_hung)
        && hw.get(&0).is_some_and(|&h| h > first_hung)
        && values(&rc) == sorted(before.iter().map(|(_, v)| v.clone()));
    ensure!(
        blocked,
        "with a transaction open from offset {first_hung}: last stable offset {lso:?}, high watermark {hw:?}, read_committed returned {:?}; want the LSO stuck at {first_hung} and only the records before it \
         (checked {} after the transaction began; its timeout is {HUNG_TIMEOUT_MS} ms)",
        values(&rc),
        secs(checked)
    );
    println!(
        "open transaction at offset {first_hung}: LSO {lso:?}, high watermark {hw:?}, checked {} after it began",
        secs(checked)
    );

    // The coordinator aborts it once it times out.
    wait_no_open_transactions(&bootstrap, &topic, 1, ABORT_DEADLINE)?;
    println!(
        "LSO released {} after the transaction began (timeout {HUNG_TIMEOUT_MS} ms, cleanup every {CLEANUP_INTERVAL_MS} ms)",
        secs(begun.elapsed())
    );
    let want: Vec<String> = sorted(before.iter().chain(&after).map(|(_, v)| v.clone()));
    let rc = read_to_end(&bootstrap, &topic, 1, Isolation::ReadCommitted)?;
    ensure!(
        values(&rc) == want,
        "read_committed after the timeout: {}",
        difference(&values(&rc), &want)
    );
    let ru = read_to_end(&bootstrap, &topic, 1, Isolation::ReadUncommitted)?;
    let ru_values: BTreeSet<String> = values(&ru).into_iter().collect();
    ensure!(
        hung_values.iter().all(|(_, v)| ru_values.contains(v)),
        "the hung records are not in the log at all: read_uncommitted returned {:?}",
        values(&ru)
    );

    // The hung producer can no longer commit what the coordinator aborted.
    if hung.commit().is_ok() {
        bail!("the hung producer committed a transaction the coordinator had aborted on timeout");
    }

    // Later writes, transactional and plain, are visible.
    let mut next = TxnProducer::new(&bootstrap, &id, TRANSACTION_TIMEOUT_MS)?;
    next.begin()?;
    let later = on0("later", 3);
    for (p, v) in &later {
        next.send(&topic, *p, v)?;
    }
    next.must_commit()?;
    let plain_later = on0("plain-later", 2);
    plain_write(&plain, &plain_ctx, &topic, &plain_later)?;
    let want: Vec<String> = sorted(
        before
            .iter()
            .chain(&after)
            .chain(&later)
            .chain(&plain_later)
            .map(|(_, v)| v.clone()),
    );
    let rc = read_committed_settled(&bootstrap, &topic, 1)?;
    ensure!(
        values(&rc) == want,
        "read_committed after later writes: {}",
        difference(&values(&rc), &want)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 5. Offsets in a transaction

#[test]
fn transactional_offsets_become_visible_only_on_commit() -> Result<()> {
    let broker = start_broker("")?;
    let bootstrap = broker.bootstrap();
    let input = unique_topic("txn-offsets-in");
    let output = unique_topic("txn-offsets-out");
    kafka::create_topic(&bootstrap, &input, 2, &[])?;
    kafka::create_topic(&bootstrap, &output, 1, &[])?;
    let group = unique_topic("txn-offsets-group");

    let baseline: BTreeMap<i32, i64> = [(0, 5), (1, 7)].into();
    commit_without_joining(&bootstrap, &group, &input, &baseline)?;
    let got = committed(&bootstrap, &group, &input, 2, Isolation::ReadCommitted)?;
    ensure!(
        got == as_committed(&baseline),
        "plain commit of {baseline:?} reads back as {got:?}"
    );

    // A consumer of the group that never joins it: generation -1, as a
    // producer that commits offsets for an idle group uses.
    let (member, _) = sluice_tests::group::group_client(&bootstrap, &group)?;
    let metadata = member
        .group_metadata()
        .context("the group client has no group metadata")?;
    let mut txn = TxnProducer::new(
        &bootstrap,
        &unique_topic("txn-offsets"),
        TRANSACTION_TIMEOUT_MS,
    )?;

    // Aborted: the offsets never show.
    let aborted: BTreeMap<i32, i64> = [(0, 10), (1, 12)].into();
    txn.begin()?;
    txn.send(&output, 0, "aborted")?;
    txn.producer
        .send_offsets_to_transaction(&offsets_tpl(&input, &aborted)?, &metadata, CALL_TIMEOUT)
        .map_err(|e| anyhow!("send_offsets_to_transaction: {}", txn_error(&e)))?;
    let during = committed(&bootstrap, &group, &input, 2, Isolation::ReadUncommitted)?;
    ensure!(
        during == as_committed(&baseline),
        "with offsets {aborted:?} pending in an open transaction, OffsetFetch answered {during:?}; want the committed {baseline:?}"
    );
    txn.must_abort()?;
    for isolation in [Isolation::ReadCommitted, Isolation::ReadUncommitted] {
        let got = committed(&bootstrap, &group, &input, 2, isolation)?;
        ensure!(
            got == as_committed(&baseline),
            "after aborting a transaction with offsets {aborted:?}, OffsetFetch ({}) answered {got:?}; want {baseline:?}",
            isolation.as_str()
        );
    }

    // Committed: the offsets are the group's.
    let next: BTreeMap<i32, i64> = [(0, 20), (1, 22)].into();
    txn.begin()?;
    txn.send(&output, 0, "committed")?;
    txn.producer
        .send_offsets_to_transaction(&offsets_tpl(&input, &next)?, &metadata, CALL_TIMEOUT)
        .map_err(|e| anyhow!("send_offsets_to_transaction: {}", txn_error(&e)))?;
    txn.must_commit()?;
    for isolation in [Isolation::ReadCommitted, Isolation::ReadUncommitted] {
        let got = committed(&bootstrap, &group, &input, 2, isolation)?;
        ensure!(
            got == as_committed(&next),
            "after committing a transaction with offsets {next:?}, OffsetFetch ({}) answered {got:?}",
            isolation.as_str()
        );
    }
    let rc = read_committed_settled(&bootstrap, &output, 1)?;
    ensure!(
        values(&rc) == vec!["committed".to_string()],
        "the output read_committed holds {:?}, want only the committed record",
        values(&rc)
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 6. Coordinator failover

/// Records per logical transaction, spread over the partitions.
const PER_TXN: usize = 30;
/// Attempts at one logical transaction before the test gives up.
const MAX_ATTEMPTS: usize = 10;

fn txn_values(i: usize) -> Vec<(i32, String)> {
    (0..PER_TXN)
        .map(|j| ((j % PARTITIONS as usize) as i32, format!("t{i:03}-{j:03}")))
        .collect()
}

/// How one attempt at a transaction ended, as far as the producer knows.
#[derive(Debug)]
enum Outcome {
    Committed,
    /// abort_transaction succeeded: nothing of it is visible.
    Aborted(String),
    /// A fatal error or a failed abort: the producer is gone, and a new
    /// instance's init_transactions settles the transaction one way or the
    /// other.
    Unknown(String),
}

/// Writes numbered logical transactions with one transactional id,
/// replacing the producer after a fatal error, and finding out from the
/// output whether a transaction with an unknown outcome committed.
struct TxnWriter {
    bootstrap: String,
    id: String,
    topic: String,
    producer: Option<TxnProducer>,
    instances: usize,
    notes: Vec<String>,
}

impl TxnWriter {
    fn producer(&mut self) -> Result<&mut TxnProducer> {
        if self.producer.is_none() {
            self.producer = Some(TxnProducer::new(
                &self.bootstrap,
                &self.id,
                TRANSACTION_TIMEOUT_MS,
            )?);
            self.instances += 1;
        }
        self.producer.as_mut().context("no producer")
    }

    /// Begins a transaction and sends `values`; a failure is described,
    /// not returned, unless no producer can be made.
    fn begin_and_send(&mut self, values: &[(i32, String)]) -> Result<Result<(), String>> {
        let topic = self.topic.clone();
        let p = self.producer()?;
        if let Err(e) = p.producer.begin_transaction() {
            return Ok(Err(format!("begin_transaction: {}", txn_error(&e))));
        }
        Ok(Self::send_values(p, &topic, values))
    }

    fn send_values(
        p: &mut TxnProducer,
        topic: &str,
        values: &[(i32, String)],
    ) -> Result<(), String> {
        for (part, v) in values {
            p.send(topic, *part, v).map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    fn send_more(&mut self, values: &[(i32, String)], flush: bool) -> Result<(), String> {
        let topic = self.topic.clone();
        let Some(p) = self.producer.as_mut() else {
            return Err("no producer".to_string());
        };
        Self::send_values(p, &topic, values)?;
        if flush {
            p.flush().map_err(|e| format!("{e:#}"))?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Outcome {
        let Some(p) = self.producer.as_mut() else {
            return Outcome::Unknown("no producer".to_string());
        };
        match p.commit() {
            Ok(()) => Outcome::Committed,
            Err(e) if classify(&e) == Failure::Abortable => {
                self.abort(&format!("commit: {}", txn_error(&e)))
            }
            Err(e) => {
                let why = format!("commit: {}; {}", txn_error(&e), p.ctx.recent_events());
                self.producer = None;
                Outcome::Unknown(why)
            }
        }
    }

    fn abort(&mut self, why: &str) -> Outcome {
        let Some(p) = self.producer.as_mut() else {
            return Outcome::Unknown(format!("{why}; no producer to abort with"));
        };
        match p.abort() {
            Ok(()) => Outcome::Aborted(why.to_string()),
            Err(e) => {
                self.producer = None;
                Outcome::Unknown(format!("{why}; then abort: {}", txn_error(&e)))
            }
        }
    }

    /// How many of transaction `i`'s values a read_committed consumer sees.
    fn visible(&self, i: usize) -> Result<usize> {
        let prefix = format!("t{i:03}-");
        let rc = read_to_end(
            &self.bootstrap,
            &self.topic,
            PARTITIONS,
            Isolation::ReadCommitted,
        )?;
        Ok(rc.iter().filter(|r| r.value.starts_with(&prefix)).count())
    }

    /// Drives transaction `i` from `outcome` (of its first attempt) until
    /// it is committed, checking that an attempt is all or nothing.
    fn settle(&mut self, i: usize, mut outcome: Outcome) -> Result<()> {
        let mut attempt = 1;
        loop {
            match outcome {
                Outcome::Committed => return Ok(()),
                Outcome::Aborted(why) => {
                    let n = self.visible(i)?;
                    self.notes
                        .push(format!("txn {i} attempt {attempt}: aborted ({why})"));
                    ensure!(
                        n == 0,
                        "transaction {i} was aborted ({why}), yet {n} of its {PER_TXN} values are visible"
                    );
                }
                Outcome::Unknown(why) => {
                    // A new instance's init_transactions completes or aborts
                    // whatever the old one left.
                    self.producer()?;
                    let n = self.visible(i)?;
                    self.notes.push(format!(
                        "txn {i} attempt {attempt}: outcome unknown ({why}); a new producer sees {n} of {PER_TXN} values"
                    ));
                    if n == PER_TXN {
                        return Ok(());
                    }
                    ensure!(
                        n == 0,
                        "transaction {i} is half visible: {n} of its {PER_TXN} values after a new producer took over ({why})"
                    );
                }
            }
            attempt += 1;
            ensure!(
                attempt <= MAX_ATTEMPTS,
                "transaction {i} not committed after {MAX_ATTEMPTS} attempts:\n{}",
                self.notes.join("\n")
            );
            outcome = match self.begin_and_send(&txn_values(i))? {
                Ok(()) => self.commit(),
                Err(why) => self.abort(&why),
            };
        }
    }

    /// One whole transaction, without faults of its own.
    fn run(&mut self, i: usize) -> Result<()> {
        let outcome = match self.begin_and_send(&txn_values(i))? {
            Ok(()) => self.commit(),
            Err(why) => self.abort(&why),
        };
        self.settle(i, outcome)
    }
}

/// Restarts `id` and waits until the topic and the coordinator's partition
/// are fully replicated again.
fn heal(cluster: &mut Cluster, id: i32, topic: &str, txn_state_partition: i32) -> Result<()> {
    cluster.restart(id)?;
    cluster.wait_for_isr(topic, PARTITIONS, FULL_ISR, HEAL)?;
    wait_for_txn_state_isr(cluster, txn_state_partition)?;
    cluster.check_no_crash()
}

#[test]
fn transactions_survive_coordinator_kills_exactly_once() -> Result<()> {
    let mut rng = Rng::from_env_or_clock();
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let topic = unique_topic("txn-coord");
    cluster.create_topic(&topic, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;
    let mut w = TxnWriter {
        bootstrap: cluster.bootstrap_all(),
        id: unique_topic("txn-coord"),
        topic: topic.clone(),
        producer: None,
        instances: 0,
        notes: Vec::new(),
    };
    let started = Instant::now();
    let mut i = 0;
    w.run(i)?;
    i += 1;

    // Between transactions.
    let (coordinator, p) = txn_coordinator(&cluster, &w.id)?;
    wait_for_txn_state_isr(&cluster, p)?;
    cluster.kill9(coordinator)?;
    println!(
        "{}: kill -9 coordinator {coordinator} ({TXN_STATE_TOPIC}/{p}) between transactions",
        secs(started.elapsed())
    );
    for _ in 0..2 {
        w.run(i)?;
        i += 1;
    }
    // Only a live broker that leads the partition counts as the coordinator.
    let (moved_to, _) = txn_coordinator(&cluster, &w.id)?;
    println!("  coordinator now broker {moved_to}");
    heal(&mut cluster, coordinator, &topic, p)?;

    // While a transaction is open: part of it before the kill, the rest
    // (to partitions not yet in it) after.
    for round in 0..2 {
        let (coordinator, p) = txn_coordinator(&cluster, &w.id)?;
        wait_for_txn_state_isr(&cluster, p)?;
        let values = txn_values(i);
        let (first, rest): (Vec<_>, Vec<_>) = values.into_iter().partition(|(part, _)| *part == 0);
        let sent = match w.begin_and_send(&first)? {
            Ok(()) => w.send_more(&[], true),
            Err(e) => Err(e),
        };
        cluster.kill9(coordinator)?;
        println!(
            "{}: kill -9 coordinator {coordinator} ({TXN_STATE_TOPIC}/{p}) with transaction {i} open (round {round})",
            secs(started.elapsed())
        );
        let sent = sent.and_then(|()| w.send_more(&rest, false));
        let outcome = match sent {
            Ok(()) => w.commit(),
            Err(why) => w.abort(&why),
        };
        w.settle(i, outcome)?;
        i += 1;
        heal(&mut cluster, coordinator, &topic, p)?;
    }

    // While a transaction commits.
    {
        let (coordinator, p) = txn_coordinator(&cluster, &w.id)?;
        wait_for_txn_state_isr(&cluster, p)?;
        let delay = rng.millis(0, 30);
        let sent = match w.begin_and_send(&txn_values(i))? {
            Ok(()) => w.send_more(&[], true),
            Err(e) => Err(e),
        };
        let outcome = std::thread::scope(|s| {
            let killer = s.spawn(|| {
                std::thread::sleep(delay);
                cluster.kill9(coordinator)
            });
            let outcome = match sent {
                Ok(()) => w.commit(),
                Err(why) => w.abort(&why),
            };
            let killed = killer
                .join()
                .unwrap_or_else(|_| Err(anyhow!("the killer thread panicked")));
            killed.map(|()| outcome)
        })?;
        println!(
            "{}: kill -9 coordinator {coordinator} ({TXN_STATE_TOPIC}/{p}) {} after commit_transaction was called: {outcome:?}",
            secs(started.elapsed()),
            secs(delay)
        );
        w.settle(i, outcome)?;
        i += 1;
        heal(&mut cluster, coordinator, &topic, p)?;
    }

    w.run(i)?;
    i += 1;
    cluster.check_no_crash()?;

    // Every logical transaction exactly once, nothing else.
    let rc = read_committed_settled(&cluster.bootstrap(), &topic, PARTITIONS)?;
    let want: Vec<String> = sorted((0..i).flat_map(|t| txn_values(t).into_iter().map(|(_, v)| v)));
    for note in &w.notes {
        println!("  {note}");
    }
    println!(
        "{i} transactions with {} producer instance(s); read_committed holds {} records, want {}",
        w.instances,
        rc.len(),
        want.len()
    );
    ensure!(
        values(&rc) == want,
        "read_committed after the coordinator kills: {}",
        difference(&values(&rc), &want)
    );
    let wrong_partition: Vec<&Rec> = rc
        .iter()
        .filter(|r| {
            r.value
                .rsplit('-')
                .next()
                .and_then(|j| j.parse::<usize>().ok())
                .is_none_or(|j| (j % PARTITIONS as usize) as i32 != r.partition)
        })
        .collect();
    ensure!(
        wrong_partition.is_empty(),
        "records in another partition than they were sent to: {}",
        head(&wrong_partition)
    );
    Ok(())
}
