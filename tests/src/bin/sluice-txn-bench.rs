//! sluice-txn-bench: what idempotence and transactions cost a producer.
//!
//! ```text
//! sluice-txn-bench [--bootstrap HOST:PORT | --nodes 3 --rf 3 [--set KEY=VALUE]...] \
//!     [--messages 200000] [--size 1024] [--partitions 6] [--commit-interval-ms 100] \
//!     [--modes plain,idempotent,transactional]
//! ```
//!
//! Without `--bootstrap` it starts a cluster of `--nodes` real
//! `sluice-broker` processes (as `sluice-cluster-bench` does). Each mode
//! writes `--messages` values of `--size` bytes with acks=all into a fresh
//! topic of `--partitions` partitions (replication factor `--rf`,
//! `min.insync.replicas` min(2, rf)), as fast as the producer takes them:
//!
//! - `plain`: `enable.idempotence=false`;
//! - `idempotent`: `enable.idempotence=true`;
//! - `transactional`: a `transactional.id`, a transaction committed every
//!   `--commit-interval-ms` (commit_transaction waits for every record of
//!   the transaction, so the producer stalls once per interval).
//!
//! The clock runs from the first send to the last acknowledgement (for
//! transactions, the last commit). One line per mode:
//! `RESULT txn mode=.. msgs=.. bytes=.. secs=.. msgs_per_sec=.. mb_per_sec=.. transactions=..`
//! (MB is 2^20 bytes, as in kafka-producer-perf-test). Figures are printed,
//! never asserted; a failed delivery or commit ends the run with an error.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use sluice_tests::cluster::{Cluster, ClusterOptions};
use sluice_tests::{kafka, unique_topic, wait_for};

const MIB: f64 = 1024.0 * 1024.0;
/// Deadline of init, commit and flush.
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Parser)]
#[command(
    name = "sluice-txn-bench",
    about = "Producer throughput: plain, idempotent and transactional"
)]
struct Cli {
    /// An existing cluster; without it, one is started here.
    #[arg(long)]
    bootstrap: Option<String>,
    /// Brokers of the cluster started here.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 3)]
    rf: i32,
    /// Broker keys for the cluster started here, KEY=VALUE (repeatable).
    #[arg(long = "set")]
    set: Vec<String>,
    #[arg(long, default_value_t = 200_000)]
    messages: u64,
    /// Value size in bytes (no key).
    #[arg(long, default_value_t = 1024)]
    size: usize,
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    /// How often the transactional mode commits.
    #[arg(long, default_value_t = 100)]
    commit_interval_ms: u64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "plain,idempotent,transactional"
    )]
    modes: Vec<Mode>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    Plain,
    Idempotent,
    Transactional,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::Idempotent => "idempotent",
            Mode::Transactional => "transactional",
        }
    }
}

/// Counts delivery reports; keeps the first failure.
#[derive(Default)]
struct Counts {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Counts {}

impl ProducerContext for Counts {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let cluster = match &cli.bootstrap {
        Some(_) => None,
        None => {
            let mut o = ClusterOptions::default();
            for kv in &cli.set {
                let Some((k, v)) = kv.split_once('=') else {
                    bail!("--set {kv}: expected KEY=VALUE, e.g. --set log.flush.acks.all=false");
                };
                o = o.with(k, v);
            }
            Some(Cluster::start(cli.nodes, o)?)
        }
    };
    let bootstrap = match (&cli.bootstrap, &cluster) {
        (Some(b), _) => b.clone(),
        (None, Some(c)) => c.bootstrap(),
        (None, None) => bail!("no cluster to run against"),
    };
    let where_ = match &cluster {
        Some(_) => format!("a cluster of {} started here", cli.nodes),
        None => bootstrap.clone(),
    };
    println!(
        "{} messages of {} bytes, acks=all, {} partitions, replication factor {}, against {where_}",
        cli.messages, cli.size, cli.partitions, cli.rf
    );
    for &mode in &cli.modes {
        let topic = unique_topic(&format!("txn-bench-{}", mode.name()));
        create_topic(&bootstrap, cluster.as_ref(), &topic, cli.partitions, cli.rf)?;
        run(&bootstrap, &topic, mode, &cli).with_context(|| format!("mode {}", mode.name()))?;
    }
    Ok(())
}

fn create_topic(
    bootstrap: &str,
    cluster: Option<&Cluster>,
    topic: &str,
    partitions: i32,
    rf: i32,
) -> Result<()> {
    let min_isr = rf.min(2).to_string();
    let configs = [("min.insync.replicas", min_isr.as_str())];
    if let Some(c) = cluster {
        return c.create_topic(topic, partitions, rf, &configs);
    }
    let admin = kafka::admin(bootstrap)?;
    let mut t = NewTopic::new(topic, partitions, TopicReplication::Fixed(rf));
    for (k, v) in &configs {
        t = t.set(k, v);
    }
    let results = kafka::block_on(admin.create_topics([&t], &kafka::admin_options()))?
        .with_context(|| format!("CreateTopics {topic}"))?;
    for r in results {
        if let Err((name, code)) = r {
            bail!("CreateTopics {name} ({partitions} partitions, RF {rf}): {code:?}");
        }
    }
    let want = usize::try_from(partitions)?;
    wait_for(
        kafka::ADMIN_TIMEOUT,
        "the topic's leaders in metadata",
        || Ok((kafka::partition_count(bootstrap, topic)? == Some(want)).then_some(())),
    )
}

fn config(bootstrap: &str, mode: Mode) -> ClientConfig {
    let mut c = kafka::client_config(bootstrap);
    c.set("acks", "all")
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.timeout.ms", "60000");
    match mode {
        Mode::Plain => {
            c.set("enable.idempotence", "false");
        }
        Mode::Idempotent => {
            c.set("enable.idempotence", "true");
        }
        Mode::Transactional => {
            c.set("transactional.id", unique_topic("sluice-txn-bench"))
                .set("transaction.timeout.ms", "60000");
        }
    }
    c
}

/// Deterministic pseudo-random bytes (xorshift), as sluice-perf sends.
fn payload(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b'a' + (x % 26) as u8
        })
        .collect()
}

fn run(bootstrap: &str, topic: &str, mode: Mode, cli: &Cli) -> Result<()> {
    let producer: BaseProducer<Counts> = config(bootstrap, mode)
        .create_with_context(Counts::default())
        .context("creating the producer")?;
    let transactional = mode == Mode::Transactional;
    if transactional {
        producer
            .init_transactions(CALL_TIMEOUT)
            .context("init_transactions")?;
    }
    let value = payload(cli.size);
    let interval = Duration::from_millis(cli.commit_interval_ms);
    let mut transactions = 0u64;
    let mut txn_started: Option<Instant> = None;
    let start = Instant::now();
    let mut last_report = (Instant::now(), 0u64);
    let mut i = 0u64;
    while i < cli.messages {
        if transactional {
            match txn_started {
                None => {
                    producer.begin_transaction().context("begin_transaction")?;
                    txn_started = Some(Instant::now());
                }
                Some(t) if t.elapsed() >= interval => {
                    producer
                        .commit_transaction(CALL_TIMEOUT)
                        .context("commit_transaction")?;
                    transactions += 1;
                    txn_started = None;
                    continue;
                }
                Some(_) => {}
            }
        }
        let partition = i32::try_from(i % u64::try_from(cli.partitions.max(1))?)?;
        let record = BaseRecord::<(), [u8], ()>::to(topic)
            .partition(partition)
            .payload(value.as_slice());
        match producer.send(record) {
            Ok(()) => i += 1,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("send: {e}"),
        }
        producer.poll(Duration::ZERO);
        if last_report.0.elapsed() >= Duration::from_secs(1) {
            let acked = producer.context().delivered.load(Ordering::Relaxed);
            let rate = (acked - last_report.1) as f64 / last_report.0.elapsed().as_secs_f64();
            println!(
                "  {}: {i} sent, {acked} acknowledged, {rate:.0} acks/s",
                mode.name()
            );
            last_report = (Instant::now(), acked);
        }
    }
    if transactional && txn_started.is_some() {
        producer
            .commit_transaction(CALL_TIMEOUT)
            .context("commit_transaction")?;
        transactions += 1;
    }
    producer.flush(CALL_TIMEOUT).context("flush")?;
    let counts = producer.context();
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts.delivered.load(Ordering::Relaxed) + counts.failed.load(Ordering::Relaxed)
        < cli.messages
        && Instant::now() < deadline
    {
        producer.poll(Duration::from_millis(10));
    }
    let secs = start.elapsed().as_secs_f64();
    let delivered = counts.delivered.load(Ordering::Relaxed);
    let failed = counts.failed.load(Ordering::Relaxed);
    ensure!(
        failed == 0 && delivered == cli.messages,
        "{delivered} of {} delivered, {failed} failed; first error: {:?}",
        cli.messages,
        counts.first_error.lock().ok().and_then(|e| e.clone())
    );
    let bytes = delivered * cli.size as u64;
    println!(
        "RESULT txn mode={} msgs={delivered} bytes={bytes} secs={secs:.2} msgs_per_sec={:.0} mb_per_sec={:.2} transactions={transactions}",
        mode.name(),
        delivered as f64 / secs,
        bytes as f64 / MIB / secs
    );
    Ok(())
}
