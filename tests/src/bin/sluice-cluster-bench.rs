//! Cluster benchmarks on one machine, with real `sluice-broker` processes:
//!
//! ```text
//! sluice-cluster-bench throughput --nodes 3 --rf 3 -- <sluice-perf produce args>
//! sluice-cluster-bench failover --rounds 5 [--session-timeout-ms 9000]
//! ```
//!
//! `throughput` starts a cluster of `--nodes` brokers, creates the topic with
//! replication factor `--rf` (and `min.insync.replicas` = min(2, rf)), then
//! runs the sibling `sluice-perf produce` against it and passes its output
//! through, so single-node and replicated figures come from the same harness.
//!
//! `failover` starts three brokers, and per round: a producer (acks=all,
//! retries on) that already talks to the leader of partition 0 sends a
//! message right after that leader is killed with SIGKILL; the figure is the
//! time from the kill to that message's acknowledgement, and to the moment
//! metadata shows a new leader. The killed broker is restarted and the ISR
//! healed before the next round. Figures are printed, never asserted.

use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::ClientContext;
use sluice_tests::cluster::{Cluster, ClusterOptions};
use sluice_tests::{kafka, unique_topic};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce load (sluice-perf) against a fresh cluster.
    Throughput {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 3)]
        rf: i32,
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Broker keys for every broker, KEY=VALUE (repeatable).
        #[arg(long = "set")]
        set: Vec<String>,
        /// Arguments for `sluice-perf produce` (after `--`).
        #[arg(last = true)]
        perf: Vec<String>,
    },
    /// Kill the leader, time until a produce to its partition succeeds.
    Failover {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        /// `broker.session.timeout.ms` of the brokers (Kafka's default: 9000).
        #[arg(long, default_value_t = 9_000)]
        session_timeout_ms: u64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Throughput {
            nodes,
            rf,
            partitions,
            set,
            perf,
        } => throughput(nodes, rf, partitions, &set, &perf),
        Cmd::Failover {
            rounds,
            session_timeout_ms,
        } => failover(rounds, session_timeout_ms),
    }
}

fn options(set: &[String]) -> Result<ClusterOptions> {
    let mut o = ClusterOptions::default();
    for kv in set {
        let Some((k, v)) = kv.split_once('=') else {
            bail!("--set {kv}: expected KEY=VALUE, e.g. --set log.flush.acks.all=false");
        };
        o = o.with(k, v);
    }
    Ok(o)
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe
        .parent()
        .map(|d| d.join(name))
        .context("locating the benchmark's directory")?;
    ensure!(
        path.is_file(),
        "{} not found: build it first (cargo build --release -p sluice-tests --bins)",
        path.display()
    );
    Ok(path)
}

fn throughput(
    nodes: usize,
    rf: i32,
    partitions: i32,
    set: &[String],
    perf: &[String],
) -> Result<()> {
    let cluster = Cluster::start(nodes, options(set)?)?;
    let topic = unique_topic("bench");
    let min_isr = rf.min(2).to_string();
    cluster.create_topic(&topic, partitions, rf, &[("min.insync.replicas", &min_isr)])?;
    cluster.wait_for_isr(
        &topic,
        partitions,
        usize::try_from(rf)?,
        Duration::from_secs(60),
    )?;
    println!("cluster of {nodes}, topic {topic}: {partitions} partitions, replication factor {rf}, min.insync.replicas {min_isr}");
    let status = Command::new(sibling("sluice-perf")?)
        .arg("produce")
        .args(["--bootstrap", &cluster.bootstrap(), "--topic", &topic])
        .args(perf)
        .status()
        .context("running sluice-perf")?;
    ensure!(status.success(), "sluice-perf failed: {status}");
    Ok(())
}

struct Acks(mpsc::Sender<(usize, Result<(), String>, Instant)>);

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &rdkafka::message::DeliveryResult<'_>, id: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(_) => Ok(()),
            Err((e, _)) => Err(e.to_string()),
        };
        let _ = self.0.send((*id, outcome, Instant::now()));
    }
}

fn failover(rounds: usize, session_timeout_ms: u64) -> Result<()> {
    let opts = ClusterOptions::default()
        .with("broker.session.timeout.ms", &session_timeout_ms.to_string())
        .with(
            "broker.heartbeat.interval.ms",
            &(session_timeout_ms / 4).max(50).to_string(),
        );
    let mut cluster = Cluster::start(3, opts)?;
    let topic = unique_topic("failover");
    cluster.create_topic(&topic, 1, 3, &[("min.insync.replicas", "2")])?;
    let deadline = Duration::from_millis(session_timeout_ms * 3 + 30_000);
    let mut figures = Vec::new();
    for round in 1..=rounds {
        cluster.wait_for_isr(&topic, 1, 3, deadline)?;
        let (tx, rx) = mpsc::channel();
        let producer: BaseProducer<Acks> = kafka::producer_config(&cluster.bootstrap_all())
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("linger.ms", "0")
            .set("retries", "1000000")
            .set("retry.backoff.ms", "20")
            .set("retry.backoff.max.ms", "200")
            .set("request.timeout.ms", "5000")
            .set("message.timeout.ms", deadline.as_millis().to_string())
            .create_with_context(Acks(tx))?;
        let send = |id: usize| {
            producer
                .send(
                    BaseRecord::<(), [u8], Box<usize>>::with_opaque_to(&topic, Box::new(id))
                        .partition(0)
                        .payload(b"probe".as_slice()),
                )
                .map_err(|(e, _)| anyhow::anyhow!("send: {e}"))
        };
        send(0)?;
        let warm = wait_ack(&producer, &rx, 0, deadline)?;
        ensure!(warm.1.is_ok(), "warm-up produce failed: {:?}", warm.1);
        let leader = cluster
            .leader_of(&topic, 0)?
            .context("partition 0 has no leader")?;
        cluster.kill9(leader)?;
        let killed = Instant::now();
        send(1)?;
        let elected = cluster.wait_for_leader(&topic, 0, Some(leader), deadline)?;
        let elected_after = killed.elapsed();
        let (_, outcome, at) = wait_ack(&producer, &rx, 1, deadline)?;
        ensure!(
            outcome.is_ok(),
            "produce after the kill failed: {outcome:?}"
        );
        let acked_after = at.duration_since(killed);
        println!(
            "RESULT round={round} session_timeout_ms={session_timeout_ms} killed={leader} new_leader={elected} elected_ms={} first_ack_ms={}",
            elected_after.as_millis(),
            acked_after.as_millis()
        );
        figures.push(acked_after);
        producer.flush(Duration::from_secs(5))?;
        drop(producer);
        cluster.restart(leader)?;
    }
    figures.sort();
    if let (Some(min), Some(max)) = (figures.first(), figures.last()) {
        println!(
            "RESULT failover rounds={rounds} session_timeout_ms={session_timeout_ms} first_ack_ms min={} median={} max={}",
            min.as_millis(),
            figures[figures.len() / 2].as_millis(),
            max.as_millis()
        );
    }
    Ok(())
}

fn wait_ack(
    producer: &BaseProducer<Acks>,
    rx: &mpsc::Receiver<(usize, Result<(), String>, Instant)>,
    id: usize,
    deadline: Duration,
) -> Result<(usize, Result<(), String>, Instant)> {
    let end = Instant::now() + deadline;
    while Instant::now() < end {
        producer.poll(Duration::from_millis(5));
        while let Ok(r) = rx.try_recv() {
            if r.0 == id {
                return Ok(r);
            }
        }
    }
    bail!("no delivery report for message {id} within {deadline:?}")
}
