//! Replication end to end: clusters of three real `sluice-broker` processes
//! (`sluice_tests::cluster`) under kill -9, SIGSTOP and rolling restarts, with
//! rdkafka producers, consumers and consumer-group members.
//!
//! Every test starts its own cluster with 2 s broker sessions, 200 ms
//! heartbeats and a 2 s replica lag limit, so failures are noticed within
//! seconds. Producers write unique values (`p{producer}-{seq}`) and record
//! where each one was acknowledged; the log read back afterwards must hold
//! every acknowledged value at exactly that offset, and every replica on disk
//! must hold the same records as the leader serves. Sleeps only pace the
//! nemesis and the load; every wait for the cluster is a condition with a
//! deadline.
//!
//! The admin tests at the end (preferred and unclean leader election,
//! replica reassignment, one of them on four brokers) drive ElectLeaders,
//! AlterPartitionReassignments, ListPartitionReassignments and
//! IncrementalAlterConfigs over the raw wire client and read leader epochs
//! from each broker's own Metadata answer.
//!
//! The nemesis draws from a seeded generator; the seed is printed, and
//! `SLUICE_NEMESIS_SEED=N` repeats a run's choices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_request::{
    ReassignablePartition, ReassignableTopic,
};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::incremental_alter_configs_request::{
    AlterConfigsResource, AlterableConfig,
};
use kafka_protocol::messages::list_partition_reassignments_request::ListPartitionReassignmentsTopics;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, BrokerId, ElectLeadersRequest,
    IncrementalAlterConfigsRequest, ListPartitionReassignmentsRequest, MetadataRequest,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_tests::chaos::{error_name, secs, DeliveryLog, Rng};
use sluice_tests::cluster::{
    log_difference, Cluster, ClusterOptions, PartitionState, ReplicaLog, REPLICA_LAG_TIME_MAX_MS,
    SESSION_TIMEOUT_MS,
};
use sluice_tests::group::{self, Member, MemberConfig, MemberKind};
use sluice_tests::kafka::{self, Delivery};
use sluice_tests::raw::{topic_name, RawConnection};
use sluice_tests::{unique_topic, wait_for, wait_until};

const BROKERS: usize = 3;
const PARTITIONS: i32 = 3;
const RF: i32 = 3;
/// Full ISR is 3: every broker holds every partition.
const FULL_ISR: usize = 3;
/// Session timeout + election + slack: a dead leader must be replaced within this.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(15);
/// A healed cluster must be back to full ISR within this.
const HEAL: Duration = Duration::from_secs(60);
/// Idle followers must hold what the leader serves within this.
const CONVERGE: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// Group members: a rebalance among live members must finish within this...
const SETTLE: Duration = Duration::from_secs(60);
/// ...and produced messages must reach them within this.
const CONSUME: Duration = Duration::from_secs(60);
/// How long the nemesis of the first test runs.
const NEMESIS_DURATION: Duration = Duration::from_secs(40);
/// Messages per second of each load producer.
const RATE_PER_PRODUCER: u32 = 300;
/// The fewest acknowledged writes for the nemesis test to mean something.
const MIN_ACKED: usize = 1_000;
/// What producers may spend on one message, retries included.
const MESSAGE_TIMEOUT_MS: u32 = 20_000;

// ---------------------------------------------------------------------------
// Producers that remember every acknowledgement

/// acks=all, no idempotence, retrying until `message_timeout_ms` runs out;
/// a request to a paused broker gives up after 5 s and is retried.
fn acks_all_config(bootstrap: &str, message_timeout_ms: u32) -> ClientConfig {
    let mut c = kafka::producer_config(bootstrap);
    c.set("acks", "all")
        .set("enable.idempotence", "false")
        .set("retries", "1000000")
        .set("retry.backoff.ms", "100")
        .set("retry.backoff.max.ms", "1000")
        .set("request.timeout.ms", "5000")
        .set("message.timeout.ms", message_timeout_ms.to_string());
    c
}

/// `send`, polling while the local queue is full.
fn send(
    producer: &BaseProducer<DeliveryLog>,
    topic: &str,
    partition: i32,
    id: usize,
    value: &str,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, id)
        .partition(partition)
        .payload(value.as_bytes());
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                ensure!(
                    Instant::now() < deadline,
                    "producer queue stayed full for 60 s"
                );
                record = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => bail!("send failed: {e}"),
        }
    }
}

/// What one load producer sent (value of message `id` is `sent[id]`) and
/// every delivery report it got.
struct Outcome {
    producer: usize,
    sent: Vec<String>,
    reports: Vec<Delivery>,
    events: String,
}

/// Producers writing `p{producer}-{seq}` round-robin over the partitions at
/// a steady rate until [`finish`](Load::finish).
struct Load {
    stop: Arc<AtomicBool>,
    logs: Vec<DeliveryLog>,
    threads: Vec<JoinHandle<Result<Outcome>>>,
}

impl Load {
    fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        producers: usize,
        message_timeout_ms: u32,
    ) -> Result<Load> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut logs = Vec::new();
        let mut threads = Vec::new();
        for i in 0..producers {
            let log = DeliveryLog::default();
            let producer: BaseProducer<DeliveryLog> =
                acks_all_config(bootstrap, message_timeout_ms)
                    .create_with_context(log.clone())
                    .context("creating a load producer")?;
            let (stop, topic, log2) = (Arc::clone(&stop), topic.to_string(), log.clone());
            threads.push(std::thread::spawn(move || {
                produce_until_stopped(i, &producer, &topic, partitions, &stop, &log2)
            }));
            logs.push(log);
        }
        Ok(Load {
            stop,
            logs,
            threads,
        })
    }

    fn acked(&self) -> usize {
        self.logs.iter().map(DeliveryLog::acked).sum()
    }

    fn failed(&self) -> usize {
        self.logs.iter().map(DeliveryLog::failed).sum()
    }

    /// Stops sending, waits for every outstanding delivery report and
    /// returns what each producer sent and heard back.
    fn finish(mut self) -> Result<Vec<Outcome>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut out = Vec::new();
        for t in std::mem::take(&mut self.threads) {
            match t.join() {
                Ok(r) => out.push(r?),
                Err(_) => bail!("a load producer thread panicked"),
            }
        }
        Ok(out)
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn produce_until_stopped(
    i: usize,
    producer: &BaseProducer<DeliveryLog>,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
    log: &DeliveryLog,
) -> Result<Outcome> {
    let start = Instant::now();
    let mut sent: Vec<String> = Vec::new();
    let mut partition = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(sent.len() as f64 / f64::from(RATE_PER_PRODUCER));
        let now = Instant::now();
        if due > now {
            // Serves delivery reports while pacing the load.
            producer.poll((due - now).min(Duration::from_millis(50)));
            continue;
        }
        let value = format!("p{i}-{}", sent.len());
        send(producer, topic, partition, sent.len(), &value)?;
        sent.push(value);
        partition = (partition + 1) % partitions;
        producer.poll(Duration::ZERO);
    }
    // Every message ends in a report within message.timeout.ms; the flush
    // result is not needed, the count of reports below is what matters.
    let _ = producer.flush(Duration::from_millis(u64::from(MESSAGE_TIMEOUT_MS) * 3));
    let _ = wait_until(Duration::from_secs(10), "every delivery report", || {
        producer.poll(Duration::from_millis(10));
        log.reported() >= sent.len()
    });
    Ok(Outcome {
        producer: i,
        sent,
        reports: log.reports(),
        events: log.recent_events(),
    })
}

/// Produces `per_partition` values `{tag}-{p}-{i}` into every partition with
/// acks=all and returns where each one was acknowledged; fails if any
/// delivery fails.
fn produce_acked(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    per_partition: usize,
    tag: &str,
    acks: &str,
) -> Result<BTreeMap<(i32, i64), String>> {
    let log = DeliveryLog::default();
    let mut config = acks_all_config(bootstrap, 30_000);
    config.set("acks", acks);
    let producer: BaseProducer<DeliveryLog> = config.create_with_context(log.clone())?;
    let mut sent = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let value = format!("{tag}-{p}-{i}");
            send(&producer, topic, p, sent.len(), &value)?;
            sent.push(value);
        }
    }
    let _ = producer.flush(Duration::from_secs(60));
    wait_until(Duration::from_secs(30), "every delivery report", || {
        producer.poll(Duration::from_millis(10));
        log.reported() >= sent.len()
    })
    .with_context(|| log.recent_events())?;
    let mut out = BTreeMap::new();
    for d in log.reports() {
        if let Some(e) = &d.error {
            bail!(
                "acks={acks} delivery of {:?} failed: {e}\n{}",
                sent[d.id],
                log.recent_events()
            );
        }
        out.insert((d.partition, d.offset), sent[d.id].clone());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Reading back and judging

/// Every partition of `topic` from its low to its high watermark, through a
/// consumer (so from the leaders).
fn read_log(bootstrap: &str, topic: &str, partitions: i32) -> Result<BTreeMap<i32, ReplicaLog>> {
    let read = kafka::read_all(bootstrap, topic, partitions, READ_TIMEOUT)?;
    Ok(read
        .into_iter()
        .map(|(p, msgs)| {
            let log = msgs
                .iter()
                .map(|m| (m.offset(), m.payload().map(<[u8]>::to_vec)))
                .collect();
            (p, log)
        })
        .collect())
}

/// One past the highest acknowledged offset of each partition.
fn acked_ends(outcomes: &[Outcome]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for d in outcomes.iter().flat_map(|o| &o.reports) {
        if d.error.is_none() {
            let e = ends.entry(d.partition).or_insert(0);
            *e = (*e).max(d.offset + 1);
        }
    }
    ends
}

/// Reads the partitions once their high watermarks cover every acked
/// offset: a new leader's high watermark can trail its log until the
/// followers fetch again. One that never gets there is not an error here;
/// the judge then counts the writes beyond it as lost.
fn read_acked_log(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    outcomes: &[Outcome],
) -> Result<BTreeMap<i32, ReplicaLog>> {
    let ends = acked_ends(outcomes);
    let mut last = BTreeMap::new();
    let covered = wait_until(
        CONVERGE,
        "high watermarks to cover every acked offset",
        || {
            last = (0..partitions)
                .map(|p| {
                    (
                        p,
                        kafka::watermarks(bootstrap, topic, p)
                            .map(|(_, hi)| hi)
                            .unwrap_or(-1),
                    )
                })
                .collect();
            ends.iter()
                .all(|(p, end)| last.get(p).is_some_and(|hi| hi >= end))
        },
    );
    if let Err(e) = covered {
        println!("{e:#}: high watermarks {last:?}, acked ends {ends:?}");
    }
    read_log(bootstrap, topic, partitions)
}

fn value_at(log: &BTreeMap<i32, ReplicaLog>, partition: i32, offset: i64) -> Option<&[u8]> {
    log.get(&partition)?.get(&offset)?.as_deref()
}

/// The four counts the nemesis tests report, and what explains them.
#[derive(Debug, Default)]
struct Verdict {
    sent: usize,
    /// Delivery reported success.
    acked: usize,
    /// Delivery reported an error.
    failed: usize,
    /// No delivery report at all.
    unconfirmed: usize,
    /// Acked, but its value is not at the acked offset.
    lost: usize,
    /// Values present at more than one offset.
    duplicated: usize,
    /// Present in the log though its delivery failed or was never confirmed.
    unacked_present: usize,
    /// Values in the log that no producer sent.
    unknown: usize,
    examples: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked={} lost={} duplicated={} unacked_present={} (sent={} failed={} unconfirmed={} unknown={})",
            self.acked,
            self.lost,
            self.duplicated,
            self.unacked_present,
            self.sent,
            self.failed,
            self.unconfirmed,
            self.unknown
        )?;
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl Verdict {
    fn example(&mut self, e: String) {
        if self.examples.len() < 10 {
            self.examples.push(e);
        }
    }
}

/// Checks every acknowledged value against the log at its acked offset
/// (which also proves the acknowledged order) and counts the rest.
fn judge(log: &BTreeMap<i32, ReplicaLog>, outcomes: &[Outcome]) -> Verdict {
    let mut v = Verdict::default();
    let mut count: HashMap<&[u8], usize> = HashMap::new();
    for values in log.values() {
        for value in values.values() {
            *count
                .entry(value.as_deref().unwrap_or_default())
                .or_default() += 1;
        }
    }
    let mut all_sent: HashSet<&[u8]> = HashSet::new();
    for out in outcomes {
        let mut by_id: HashMap<usize, &Delivery> = HashMap::new();
        for d in &out.reports {
            by_id.entry(d.id).or_insert(d);
        }
        for (id, value) in out.sent.iter().enumerate() {
            v.sent += 1;
            all_sent.insert(value.as_bytes());
            let present = count.get(value.as_bytes()).copied().unwrap_or(0) > 0;
            match by_id.get(&id) {
                Some(d) if d.error.is_none() => {
                    v.acked += 1;
                    let found = value_at(log, d.partition, d.offset);
                    if found != Some(value.as_bytes()) {
                        v.lost += 1;
                        v.example(format!(
                            "LOST {value:?} acked at {}/{}, the log has {:?} there",
                            d.partition,
                            d.offset,
                            found.map(String::from_utf8_lossy)
                        ));
                    }
                }
                Some(d) => {
                    v.failed += 1;
                    if present {
                        v.unacked_present += 1;
                    }
                    if v.failed == 1 {
                        v.example(format!(
                            "first failed delivery (producer {}): {value:?}: {:?}; librdkafka:\n{}",
                            out.producer, d.error, out.events
                        ));
                    }
                }
                None => {
                    v.unconfirmed += 1;
                    if present {
                        v.unacked_present += 1;
                    }
                }
            }
        }
    }
    for (value, n) in &count {
        if !all_sent.contains(value) {
            v.unknown += 1;
            v.example(format!(
                "UNKNOWN value {:?} in the log",
                String::from_utf8_lossy(value)
            ));
        } else if *n > 1 {
            v.duplicated += 1;
        }
    }
    v
}

/// Waits until every replica of every partition holds what the leaders serve.
fn check_replicas(cluster: &Cluster, topic: &str, log: &BTreeMap<i32, ReplicaLog>) -> Result<()> {
    for (p, records) in log {
        cluster.wait_for_replicas_to_match(topic, *p, records, CONVERGE)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Acked writes under kill -9 and SIGSTOP

#[test]
fn acked_writes_survive_leader_kills_and_pauses() -> Result<()> {
    let mut rng = Rng::from_env_or_clock();
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let topic = unique_topic("nemesis");
    cluster.create_topic(&topic, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;
    let load = Load::start(
        &cluster.bootstrap_all(),
        &topic,
        PARTITIONS,
        3,
        MESSAGE_TIMEOUT_MS,
    )?;
    wait_until(
        Duration::from_secs(30),
        "the first acknowledgements",
        || load.acked() > 0,
    )?;

    let end = Instant::now() + NEMESIS_DURATION;
    let mut step = 0;
    while Instant::now() < end {
        let acked_before = load.acked();
        let what = if step % 2 == 0 {
            let p = i32::try_from(rng.below(PARTITIONS as usize))?;
            let leader = cluster.wait_for_leader(&topic, p, None, FAILOVER_DEADLINE)?;
            cluster.kill9(leader)?;
            let down = rng.millis(2_000, 4_000);
            std::thread::sleep(down);
            cluster.restart(leader)?;
            format!(
                "kill -9 broker {leader} (leader of partition {p}), restarted after {}",
                secs(down)
            )
        } else {
            let ids = cluster.ids();
            let victim = ids[rng.below(ids.len())];
            cluster.pause(victim)?;
            let paused = rng.millis(1_500, 4_000);
            std::thread::sleep(paused);
            cluster.resume(victim)?;
            format!("SIGSTOP broker {victim} for {}", secs(paused))
        };
        let healing = Instant::now();
        cluster
            .wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)
            .with_context(|| format!("after fault {step}: {what}"))?;
        println!(
            "fault {step}: {what}; ISR full again {} later; {} acks meanwhile",
            secs(healing.elapsed()),
            load.acked() - acked_before
        );
        cluster.check_no_crash()?;
        step += 1;
        // Let the load run on a healthy cluster before the next fault.
        std::thread::sleep(rng.millis(500, 1_500));
    }

    let outcomes = load.finish()?;
    cluster.heal()?;
    cluster.check_no_crash()?;
    cluster.wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)?;
    let log = read_acked_log(&cluster.bootstrap(), &topic, PARTITIONS, &outcomes)?;
    let verdict = judge(&log, &outcomes);
    println!("{step} faults; {verdict}");
    ensure!(verdict.lost == 0, "acknowledged writes lost: {verdict}");
    ensure!(
        verdict.acked >= MIN_ACKED,
        "only {} writes acknowledged in {NEMESIS_DURATION:?} (want at least {MIN_ACKED}): {verdict}",
        verdict.acked
    );
    ensure!(verdict.unknown == 0, "values nobody sent: {verdict}");
    ensure!(
        verdict.unconfirmed == 0,
        "messages without a delivery report after the flush: {verdict}"
    );
    check_replicas(&cluster, &topic, &log)
}

// ---------------------------------------------------------------------------
// Failover

/// The members' view must agree with what was produced at each offset.
fn check_consumed_values(
    members: &[&Member],
    produced: &BTreeMap<(i32, i64), String>,
) -> Result<()> {
    for m in members {
        for c in m.messages() {
            if let Some(v) = produced.get(&(c.partition, c.offset)) {
                ensure!(
                    *v == c.value,
                    "member {} got {:?} at {}/{}, produced {v:?} there",
                    m.name,
                    c.value,
                    c.partition,
                    c.offset
                );
            }
        }
    }
    Ok(())
}

/// `[first, last + 1)` of the offsets produced into each partition.
fn ranges_of(produced: &BTreeMap<(i32, i64), String>) -> BTreeMap<i32, (i64, i64)> {
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for &(p, o) in produced.keys() {
        let r = ranges.entry(p).or_insert((o, o + 1));
        r.0 = r.0.min(o);
        r.1 = r.1.max(o + 1);
    }
    ranges
}

#[test]
fn leader_failover_serves_within_session_timeout() -> Result<()> {
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let topic = unique_topic("failover");
    cluster.create_topic(&topic, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;
    let bootstrap = cluster.bootstrap_all();

    let group_id = unique_topic("failover-group");
    let mut base = MemberConfig::new(MemberKind::Rdkafka, &bootstrap, &group_id, &topic, "m1");
    base.session_timeout_ms = 6_000;
    base.heartbeat_interval_ms = 500;
    base.commit = true;
    let member_bin = Path::new(env!("CARGO_BIN_EXE_sluice-group-bench"));
    let m1 = Member::spawn(&base, member_bin, Path::new("unused"))?;
    let m2 = Member::spawn(&base.with_name("m2"), member_bin, Path::new("unused"))?;
    group::wait_balanced(&[&m1, &m2], PARTITIONS, SETTLE)?;
    let before = produce_acked(&bootstrap, &topic, PARTITIONS, 20, "before", "all")?;
    group::wait_consumed(&[&m1, &m2], &ranges_of(&before), CONSUME)?;

    // A producer that already talks to the leader, as a running application's would.
    let probe_log = DeliveryLog::default();
    let probe: BaseProducer<DeliveryLog> = acks_all_config(&bootstrap, 15_000)
        .set("linger.ms", "0")
        .create_with_context(probe_log.clone())?;
    send(&probe, &topic, 0, 0, "probe-before-kill")?;
    let warm = wait_for(
        Duration::from_secs(30),
        "the first probe's delivery",
        || {
            probe.poll(Duration::from_millis(10));
            Ok(probe_log.report_for(0))
        },
    )?;
    ensure!(
        warm.error.is_none(),
        "probe before the kill failed: {warm:?}"
    );

    let leader = cluster.wait_for_leader(&topic, 0, None, FAILOVER_DEADLINE)?;
    cluster.kill9(leader)?;
    let killed = Instant::now();
    send(&probe, &topic, 0, 1, "probe-after-kill")?;
    let (elected, produced) = std::thread::scope(|s| {
        let cluster = &cluster;
        let topic = &topic;
        let election = s.spawn(move || {
            let l = cluster.wait_for_leader(topic, 0, Some(leader), FAILOVER_DEADLINE)?;
            anyhow::Ok((l, killed.elapsed()))
        });
        let produced = wait_for(
            FAILOVER_DEADLINE + Duration::from_secs(5),
            "the probe's delivery report",
            || {
                probe.poll(Duration::from_millis(10));
                Ok(probe_log.report_for(1).map(|d| (d, killed.elapsed())))
            },
        );
        let elected = election
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the election watcher panicked")));
        (elected, produced)
    });
    let (new_leader, elected_after) = elected.context("no new leader for partition 0")?;
    let (probe_delivery, produced_after) = produced?;
    println!(
        "partition 0: leader {leader} killed; broker {new_leader} leads after {}; first produce acknowledged after {}",
        secs(elected_after),
        secs(produced_after)
    );
    ensure!(
        new_leader != leader,
        "the killed broker {leader} is still the leader"
    );
    ensure!(
        probe_delivery.error.is_none() && produced_after <= FAILOVER_DEADLINE,
        "no produce to partition 0 succeeded within {FAILOVER_DEADLINE:?} of killing its leader \
         (session timeout {SESSION_TIMEOUT_MS} ms): {probe_delivery:?} after {}\n{}",
        secs(produced_after),
        probe_log.recent_events()
    );

    // The group keeps consuming without anyone touching it: the probe and a
    // new round, wherever their leaders and the group coordinator now are.
    let mut after = produce_acked(&cluster.bootstrap(), &topic, PARTITIONS, 20, "after", "all")?;
    after.insert((0, probe_delivery.offset), "probe-after-kill".to_string());
    group::wait_consumed(&[&m1, &m2], &ranges_of(&after), CONSUME)?;
    println!(
        "the group consumed every message produced after the kill {} after it",
        secs(killed.elapsed())
    );
    check_consumed_values(&[&m1, &m2], &before)?;
    check_consumed_values(&[&m1, &m2], &after)?;
    cluster.check_no_crash()
}

// ---------------------------------------------------------------------------
// Rolling restart

#[test]
fn rolling_restart_loses_nothing_and_producer_sees_no_fatal_error() -> Result<()> {
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let topic = unique_topic("rolling");
    cluster.create_topic(&topic, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;
    let load = Load::start(&cluster.bootstrap_all(), &topic, PARTITIONS, 2, 60_000)?;
    wait_until(
        Duration::from_secs(30),
        "the first acknowledgements",
        || load.acked() > 100,
    )?;
    for id in cluster.ids() {
        let acked_before = load.acked();
        let t = Instant::now();
        let status = cluster.stop(id)?;
        ensure!(
            status.success(),
            "broker {id} exited with {status} on SIGTERM"
        );
        let stopped = t.elapsed();
        cluster.restart(id)?;
        let started = t.elapsed();
        cluster.wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)?;
        wait_until(
            Duration::from_secs(30),
            &format!("acknowledgements to continue after restarting broker {id}"),
            || load.acked() > acked_before + 100,
        )?;
        println!(
            "broker {id}: stopped in {}, listening again at {}, ISR full at {}; {} acks, {} delivery errors so far",
            secs(stopped),
            secs(started),
            secs(t.elapsed()),
            load.acked(),
            load.failed()
        );
        cluster.check_no_crash()?;
    }
    let outcomes = load.finish()?;
    cluster.wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)?;
    let log = read_acked_log(&cluster.bootstrap(), &topic, PARTITIONS, &outcomes)?;
    let verdict = judge(&log, &outcomes);
    println!("{verdict}");
    ensure!(verdict.lost == 0, "acknowledged writes lost: {verdict}");
    ensure!(
        verdict.failed == 0 && verdict.unconfirmed == 0,
        "the producer saw delivery errors during a rolling restart: {verdict}"
    );
    ensure!(verdict.unknown == 0, "values nobody sent: {verdict}");
    check_replicas(&cluster, &topic, &log)
}

// ---------------------------------------------------------------------------
// A follower that falls behind, and a leader with a divergent tail

#[test]
fn paused_follower_rejoins_and_truncates_divergent_tail() -> Result<()> {
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    paused_follower_rejoins(&mut cluster)?;
    divergent_tail_is_truncated(&mut cluster)
}

/// A follower SIGSTOPped past `replica.lag.time.max.ms` leaves the ISR while
/// acks=all writes go on, comes back, and ends up with the leader's records.
fn paused_follower_rejoins(cluster: &mut Cluster) -> Result<()> {
    let topic = unique_topic("paused-follower");
    cluster.create_topic(&topic, 1, RF, &[("min.insync.replicas", "2")])?;
    let load = Load::start(&cluster.bootstrap_all(), &topic, 1, 1, MESSAGE_TIMEOUT_MS)?;
    wait_until(
        Duration::from_secs(30),
        "the first acknowledgements",
        || load.acked() > 50,
    )?;
    let leader = cluster.wait_for_leader(&topic, 0, None, FAILOVER_DEADLINE)?;
    let follower = cluster
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .context("no follower")?;
    cluster.pause(follower)?;
    let paused = Instant::now();
    let shrink_deadline =
        Duration::from_millis(REPLICA_LAG_TIME_MAX_MS + SESSION_TIMEOUT_MS) + FAILOVER_DEADLINE;
    let isr = wait_for(
        shrink_deadline,
        &format!("the ISR of {topic}/0 to drop paused broker {follower}"),
        || {
            let isr = cluster.isr_of(&topic, 0)?;
            Ok((!isr.contains(&follower)).then_some(isr))
        },
    )?;
    let left_after = paused.elapsed();
    let acked_out = load.acked();
    wait_until(
        Duration::from_secs(30),
        "acks=all writes to go on with a follower out of the ISR (min.insync.replicas 2)",
        || load.acked() > acked_out + 100,
    )
    .with_context(|| format!("ISR {isr:?}; cluster {}", cluster.describe()))?;
    cluster.resume(follower)?;
    let resumed = Instant::now();
    cluster.wait_for_isr(&topic, 1, FULL_ISR, HEAL)?;
    println!(
        "broker {follower} (follower of leader {leader}) left the ISR {} after SIGSTOP (ISR {isr:?}), \
         {} writes acked while it was out, back in the ISR {} after SIGCONT",
        secs(left_after),
        load.acked() - acked_out,
        secs(resumed.elapsed())
    );
    let outcomes = load.finish()?;
    let log = read_acked_log(&cluster.bootstrap(), &topic, 1, &outcomes)?;
    let verdict = judge(&log, &outcomes);
    println!("paused follower: {verdict}");
    ensure!(verdict.lost == 0, "acknowledged writes lost: {verdict}");
    ensure!(verdict.unknown == 0, "values nobody sent: {verdict}");
    check_replicas(cluster, &topic, &log)?;

    // The rejoined replica's data is what a new leader would serve: move
    // leadership (controlled shutdown of the leader) and read again.
    let leader = cluster.wait_for_leader(&topic, 0, None, FAILOVER_DEADLINE)?;
    let status = cluster.stop(leader)?;
    ensure!(
        status.success(),
        "broker {leader} exited with {status} on SIGTERM"
    );
    let new_leader = cluster.wait_for_leader(&topic, 0, Some(leader), FAILOVER_DEADLINE)?;
    let mut diff = None;
    wait_until(
        CONVERGE,
        &format!(
            "partition 0 to read the same after leadership moved from {leader} to {new_leader}"
        ),
        || match read_log(&cluster.bootstrap(), &topic, 1) {
            Ok(again) => {
                diff = log_difference(&log[&0], &again[&0]);
                diff.is_none()
            }
            Err(e) => {
                diff = Some(format!("{e:#}"));
                false
            }
        },
    )
    .with_context(|| format!("last difference: {diff:?}"))?;
    cluster.restart(leader)?;
    cluster.wait_for_isr(&topic, 1, FULL_ISR, HEAL)?;
    cluster.check_no_crash()
}

/// A leader appends an acks=1 batch that its (paused) followers never see and
/// dies; a follower takes over and writes other records at those offsets.
/// When the old leader comes back as a follower it must drop its tail and
/// end up with exactly the new leader's records.
fn divergent_tail_is_truncated(cluster: &mut Cluster) -> Result<()> {
    let topic = unique_topic("divergent");
    cluster.create_topic(&topic, 1, RF, &[("min.insync.replicas", "1")])?;
    let bootstrap = cluster.bootstrap_all();
    let base = produce_acked(&bootstrap, &topic, 1, 200, "base", "all")?;
    let base_end = ranges_of(&base).get(&0).map_or(0, |r| r.1);
    cluster.wait_for_isr(&topic, 1, FULL_ISR, HEAL)?;
    // Followers must have everything before they freeze.
    let before_tail = read_log(&cluster.bootstrap(), &topic, 1)?;
    check_replicas(cluster, &topic, &before_tail)?;

    let old_leader = cluster.wait_for_leader(&topic, 0, None, FAILOVER_DEADLINE)?;
    let followers: Vec<i32> = cluster
        .ids()
        .into_iter()
        .filter(|&id| id != old_leader)
        .collect();
    for &f in &followers {
        cluster.pause(f)?;
    }
    let frozen = Instant::now();
    // Pacing: a fetch the followers sent just before freezing is answered
    // (empty) once replica.fetch.wait.max.ms (500 ms by default) passes, so
    // none of them can carry the tail.
    std::thread::sleep(Duration::from_secs(1));
    let tail = produce_acked(
        &old_leader_bootstrap(cluster, old_leader)?,
        &topic,
        1,
        50,
        "tail",
        "1",
    )?;
    cluster.kill9(old_leader)?;
    for &f in &followers {
        cluster.resume(f)?;
    }
    println!(
        "followers {followers:?} frozen for {}; {} acks=1 records acked by leader {old_leader} only, at offsets {:?}",
        secs(frozen.elapsed()),
        tail.len(),
        ranges_of(&tail).get(&0)
    );
    let on_disk = cluster.replica_log(old_leader, &topic, 0)?;
    for (&(_, offset), value) in &tail {
        ensure!(
            on_disk.get(&offset) == Some(&Some(value.clone().into_bytes())),
            "the old leader acked {value:?} at offset {offset} with acks=1 but its log does not hold it there"
        );
    }

    let new_leader = cluster.wait_for_leader(&topic, 0, Some(old_leader), FAILOVER_DEADLINE)?;
    let overwrite = produce_acked(&cluster.bootstrap(), &topic, 1, 50, "new", "all")?;
    let diverged = tail
        .keys()
        .filter(|&&(_, o)| overwrite.keys().any(|&(_, n)| n == o))
        .count();
    println!(
        "broker {new_leader} leads; {} acks=all records at offsets {:?}; {diverged} offsets hold different records on the old leader",
        overwrite.len(),
        ranges_of(&overwrite).get(&0)
    );
    ensure!(
        diverged > 0,
        "the scenario made no divergent tail: the new leader wrote at offsets {:?}, the old leader's tail is at {:?} \
         (did a follower fetch the tail before it froze?)",
        ranges_of(&overwrite).get(&0),
        ranges_of(&tail).get(&0)
    );

    cluster.restart(old_leader)?;
    cluster.wait_for_isr(&topic, 1, FULL_ISR, HEAL)?;
    let log = read_log(&cluster.bootstrap(), &topic, 1)?;
    for (what, records) in [("base", &base), ("new", &overwrite)] {
        for (&(p, o), value) in records {
            let found = value_at(&log, p, o);
            ensure!(
                found == Some(value.as_bytes()),
                "{what} record {value:?} was acked with acks=all at {p}/{o}; the log has {:?}",
                found.map(String::from_utf8_lossy)
            );
        }
    }
    let survivors = tail
        .iter()
        .filter(|(&(p, o), value)| value_at(&log, p, o) == Some(value.as_bytes()))
        .count();
    let anywhere: HashSet<&[u8]> = log[&0].values().filter_map(|v| v.as_deref()).collect();
    let tail_anywhere = tail
        .values()
        .filter(|v| anywhere.contains(v.as_bytes()))
        .count();
    ensure!(
        tail_anywhere == survivors,
        "{tail_anywhere} acks=1 tail records are in the log but only {survivors} at their acked offsets"
    );
    println!(
        "{} records up to offset {base_end} kept; {survivors} of {} acks=1 tail records survived (acks=1 promises nothing after a leader crash)",
        base.len(),
        tail.len()
    );
    // Every replica, the old leader's included, now holds exactly what the
    // new leader serves: the divergent tail is gone.
    cluster
        .wait_for_replicas_to_match(&topic, 0, &log[&0], CONVERGE)
        .with_context(|| format!("old leader {old_leader}, new leader {new_leader}"))?;
    cluster.check_no_crash()
}

/// Only the given broker's address: with its followers frozen, a client
/// bootstrapped on them would hang.
fn old_leader_bootstrap(cluster: &Cluster, id: i32) -> Result<String> {
    Ok(cluster.broker(id)?.bootstrap())
}

// ---------------------------------------------------------------------------
// Admin and metadata

#[test]
fn replication_factor_larger_than_live_brokers_is_refused() -> Result<()> {
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let topic = unique_topic("rf4");
    let r = cluster.try_create_topic(&topic, 1, 4, &[])?;
    ensure!(
        r == Err(RDKafkaErrorCode::InvalidReplicationFactor),
        "CreateTopics RF 4 on 3 brokers answered {r:?}, want INVALID_REPLICATION_FACTOR"
    );
    let md = cluster.metadata(Some(&topic))?;
    ensure!(
        md.partitions.is_none(),
        "a refused topic exists anyway: {:?}",
        md.partitions
    );
    // The same cluster takes RF 3...
    let ok = unique_topic("rf3");
    cluster.create_topic(&ok, 1, 3, &[])?;
    // ...but not once a broker is gone: the limit is live brokers.
    cluster.kill9(3)?;
    let t = Instant::now();
    wait_for(
        FAILOVER_DEADLINE,
        "metadata to list only the two live brokers",
        || {
            let md = cluster.metadata(None)?;
            Ok((md.brokers.keys().copied().collect::<Vec<_>>() == [1, 2]).then_some(()))
        },
    )?;
    println!(
        "killed broker 3 left the metadata after {}",
        secs(t.elapsed())
    );
    let late = unique_topic("rf3-two-live");
    let r = cluster.try_create_topic(&late, 1, 3, &[])?;
    ensure!(
        r == Err(RDKafkaErrorCode::InvalidReplicationFactor),
        "CreateTopics RF 3 with 2 live brokers answered {r:?}, want INVALID_REPLICATION_FACTOR"
    );
    Ok(())
}

#[test]
fn metadata_lists_every_broker_and_controller() -> Result<()> {
    let cluster = Cluster::start(
        BROKERS,
        ClusterOptions {
            racks: true,
            ..ClusterOptions::default()
        },
    )?;
    let topic = unique_topic("spread");
    let partitions = 6;
    cluster.create_topic(&topic, partitions, RF, &[])?;
    let ids = cluster.ids();
    let want_brokers: BTreeMap<i32, String> = ids
        .iter()
        .map(|&id| Ok((id, cluster.broker(id)?.bootstrap())))
        .collect::<Result<_>>()?;

    // Every broker, asked alone, knows the whole cluster and the same layout.
    let mut layouts = Vec::new();
    for &id in &ids {
        let md =
            sluice_tests::cluster::fetch_metadata(&cluster.broker(id)?.bootstrap(), Some(&topic))?;
        ensure!(
            md.brokers == want_brokers,
            "broker {id} lists brokers {:?}, want {want_brokers:?}",
            md.brokers
        );
        let parts = md.partitions.context("topic missing from metadata")?;
        ensure!(
            parts.len() == usize::try_from(partitions)?,
            "broker {id} shows {} partitions, want {partitions}",
            parts.len()
        );
        for p in &parts {
            let mut replicas = p.replicas.clone();
            replicas.sort_unstable();
            ensure!(
                replicas == ids && p.isr == ids && p.error.is_none() && ids.contains(&p.leader),
                "broker {id} shows partition {p:?}; want replicas and ISR {ids:?} and a leader among them"
            );
        }
        layouts.push(
            parts
                .iter()
                .map(|p| (p.partition, p.leader, p.replicas.clone()))
                .collect::<Vec<_>>(),
        );
    }
    ensure!(
        layouts.windows(2).all(|w| w[0] == w[1]),
        "brokers disagree on leaders/replicas: {layouts:?}"
    );
    let mut led: BTreeMap<i32, usize> = ids.iter().map(|&id| (id, 0)).collect();
    for (_, leader, _) in &layouts[0] {
        *led.entry(*leader).or_default() += 1;
    }
    println!("leaders of {partitions} partitions per broker: {led:?}");
    ensure!(
        led.values().all(|&n| n >= 1),
        "every broker should lead at least one of {partitions} partitions: {led:?}"
    );

    // Controller, cluster id and racks are only in the raw response.
    let mut cluster_ids = Vec::new();
    for &id in &ids {
        let mut conn = RawConnection::connect(cluster.broker(id)?.addr())?;
        let version = conn.version_for::<MetadataRequest>(12)?;
        let resp = conn.request(
            version,
            &MetadataRequest::default().with_topics(Some(vec![])),
        )?;
        let controller = resp.controller_id.0;
        ensure!(
            ids.contains(&controller),
            "broker {id}: Metadata v{version} names controller {controller}, want one of {ids:?}"
        );
        let racks: BTreeMap<i32, Option<String>> = resp
            .brokers
            .iter()
            .map(|b| (b.node_id.0, b.rack.as_ref().map(|r| r.to_string())))
            .collect();
        let want_racks: BTreeMap<i32, Option<String>> = ids
            .iter()
            .map(|&i| (i, Some(format!("rack-{i}"))))
            .collect();
        ensure!(
            racks == want_racks,
            "broker {id}: Metadata v{version} racks {racks:?}, want {want_racks:?}"
        );
        println!(
            "broker {id}: controller {controller}, cluster id {:?}",
            resp.cluster_id
        );
        cluster_ids.push(resp.cluster_id.map(|c| c.to_string()));
    }
    ensure!(
        cluster_ids[0].is_some() && cluster_ids.windows(2).all(|w| w[0] == w[1]),
        "brokers report cluster ids {cluster_ids:?}; one cluster has one id"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Cluster admin APIs: preferred and unclean elections, reassignments

/// ElectLeaders election types.
const PREFERRED_ELECTION: i8 = 0;
/// A restarted broker must be back in the ISR and leading its preferred
/// partitions (1 s imbalance checks) within this.
const REBALANCE_DEADLINE: Duration = Duration::from_secs(30);
/// A reassignment of a few hundred records must finish within this.
const REASSIGN_DEADLINE: Duration = Duration::from_secs(60);
/// How long a partition without an eligible leader must stay leaderless.
const LEADERLESS_HOLD: Duration = Duration::from_secs(3);

/// A partition as one broker's own Metadata answer shows it, with the leader
/// epoch and offline replicas rdkafka does not expose.
#[derive(Debug, Clone, PartialEq, Eq)]
struct WirePartition {
    error: i16,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    /// Sorted.
    isr: Vec<i32>,
    offline: Vec<i32>,
}

fn connect_to(cluster: &Cluster, id: i32) -> Result<RawConnection> {
    RawConnection::connect(cluster.broker(id)?.addr())
        .with_context(|| format!("connecting to broker {id}"))
}

/// `topic`/`partition` as broker `id` describes it (Metadata v7+ over a new
/// connection).
fn wire_partition(
    cluster: &Cluster,
    id: i32,
    topic: &str,
    partition: i32,
) -> Result<WirePartition> {
    let mut conn = connect_to(cluster, id)?;
    let version = conn.version_for::<MetadataRequest>(12)?;
    ensure!(
        version >= 7,
        "broker {id} speaks Metadata up to v{version}; leader epochs need v7"
    );
    let req = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic_name(topic)))
        ]));
    let resp = conn.request(version, &req)?;
    let t = resp
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        .with_context(|| format!("broker {id}: Metadata v{version} has no topic {topic}"))?;
    ensure!(
        t.error_code == 0,
        "broker {id}: Metadata v{version} topic {topic}: {}",
        error_name(t.error_code)
    );
    let p = t
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .with_context(|| format!("broker {id}: Metadata v{version} has no {topic}/{partition}"))?;
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    let mut isr = ids(&p.isr_nodes);
    isr.sort_unstable();
    Ok(WirePartition {
        error: p.error_code,
        leader: p.leader_id.0,
        leader_epoch: p.leader_epoch,
        replicas: ids(&p.replica_nodes),
        isr,
        offline: ids(&p.offline_replicas),
    })
}

/// ElectLeaders (v1+, which carries the election type) for partitions of one
/// topic: each partition's error code and message.
fn elect_leaders(
    conn: &mut RawConnection,
    election_type: i8,
    topic: &str,
    partitions: &[i32],
) -> Result<BTreeMap<i32, (i16, Option<String>)>> {
    let version = conn.version_for::<ElectLeadersRequest>(2)?;
    ensure!(
        version >= 1,
        "the broker speaks ElectLeaders up to v{version}; the election type needs v1"
    );
    let req = ElectLeadersRequest::default()
        .with_election_type(election_type)
        .with_timeout_ms(30_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(topic_name(topic))
            .with_partitions(partitions.to_vec())]));
    let resp = conn.request(version, &req)?;
    ensure!(
        resp.error_code == 0,
        "ElectLeaders v{version}: top-level error {}",
        error_name(resp.error_code)
    );
    let mut out = BTreeMap::new();
    for r in resp.replica_election_results {
        ensure!(
            r.topic.0.as_str() == topic,
            "ElectLeaders v{version} answered for topic {:?}, asked {topic}",
            r.topic.0.as_str()
        );
        for p in r.partition_result {
            out.insert(
                p.partition_id,
                (p.error_code, p.error_message.map(|m| m.to_string())),
            );
        }
    }
    let answered: Vec<i32> = out.keys().copied().collect();
    let mut asked = partitions.to_vec();
    asked.sort_unstable();
    ensure!(
        answered == asked,
        "ElectLeaders v{version} answered for partitions {answered:?}, asked {asked:?}"
    );
    Ok(out)
}

/// AlterPartitionReassignments v0 for one partition (`None` cancels): its
/// error code and message.
fn alter_reassignment(
    conn: &mut RawConnection,
    topic: &str,
    partition: i32,
    replicas: Option<&[i32]>,
) -> Result<(i16, Option<String>)> {
    let req = AlterPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![ReassignableTopic::default()
            .with_name(topic_name(topic))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(partition)
                .with_replicas(
                    replicas.map(|r| r.iter().map(|&id| BrokerId(id)).collect()),
                )])]);
    let resp = conn.request(0, &req)?;
    ensure!(
        resp.error_code == 0,
        "AlterPartitionReassignments: top-level error {} ({:?})",
        error_name(resp.error_code),
        resp.error_message
    );
    resp.responses
        .into_iter()
        .find(|t| t.name.0.as_str() == topic)
        .and_then(|t| {
            t.partitions
                .into_iter()
                .find(|p| p.partition_index == partition)
        })
        .map(|p| (p.error_code, p.error_message.map(|m| m.to_string())))
        .with_context(|| {
            format!("AlterPartitionReassignments response has no entry for {topic}/{partition}")
        })
}

/// An ongoing reassignment as ListPartitionReassignments shows it:
/// (replicas, adding, removing).
type Ongoing = (Vec<i32>, Vec<i32>, Vec<i32>);

/// ListPartitionReassignments v0 for one partition: `None` when no
/// reassignment of it is in progress.
fn list_reassignment(
    conn: &mut RawConnection,
    topic: &str,
    partition: i32,
) -> Result<Option<Ongoing>> {
    let req = ListPartitionReassignmentsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(Some(vec![ListPartitionReassignmentsTopics::default()
            .with_name(topic_name(topic))
            .with_partition_indexes(vec![partition])]));
    let resp = conn.request(0, &req)?;
    ensure!(
        resp.error_code == 0,
        "ListPartitionReassignments: top-level error {} ({:?})",
        error_name(resp.error_code),
        resp.error_message
    );
    let ids = |v: &[BrokerId]| v.iter().map(|b| b.0).collect::<Vec<i32>>();
    let mut found = Vec::new();
    for t in &resp.topics {
        for p in &t.partitions {
            ensure!(
                t.name.0.as_str() == topic && p.partition_index == partition,
                "ListPartitionReassignments for {topic}/{partition} also lists {}/{}",
                t.name.0.as_str(),
                p.partition_index
            );
            found.push((
                ids(&p.replicas),
                ids(&p.adding_replicas),
                ids(&p.removing_replicas),
            ));
        }
    }
    ensure!(
        found.len() <= 1,
        "ListPartitionReassignments lists {topic}/{partition} {} times: {found:?}",
        found.len()
    );
    Ok(found.pop())
}

/// IncrementalAlterConfigs v0+: SET one config of a topic.
fn set_topic_config(conn: &mut RawConnection, topic: &str, key: &str, value: &str) -> Result<()> {
    const TOPIC_RESOURCE: i8 = 2;
    const SET: i8 = 0;
    let version = conn.version_for::<IncrementalAlterConfigsRequest>(1)?;
    let req = IncrementalAlterConfigsRequest::default().with_resources(vec![
        AlterConfigsResource::default()
            .with_resource_type(TOPIC_RESOURCE)
            .with_resource_name(StrBytes::from_string(topic.to_string()))
            .with_configs(vec![AlterableConfig::default()
                .with_name(StrBytes::from_string(key.to_string()))
                .with_config_operation(SET)
                .with_value(Some(StrBytes::from_string(value.to_string())))]),
    ]);
    let resp = conn.request(version, &req)?;
    let r = resp
        .responses
        .first()
        .context("IncrementalAlterConfigs: empty response")?;
    ensure!(
        r.error_code == 0,
        "IncrementalAlterConfigs v{version} {key}={value} on {topic}: {} ({:?})",
        error_name(r.error_code),
        r.error_message
    );
    Ok(())
}

/// Fails unless every value of `produced` is at its acknowledged offset in `log`.
fn check_produced(
    what: &str,
    log: &BTreeMap<i32, ReplicaLog>,
    produced: &BTreeMap<(i32, i64), String>,
) -> Result<()> {
    for (&(p, o), value) in produced {
        let found = value_at(log, p, o);
        ensure!(
            found == Some(value.as_bytes()),
            "{what} record {value:?} was acked at {p}/{o}; the log has {:?} there",
            found.map(String::from_utf8_lossy)
        );
    }
    Ok(())
}

/// Produces and reads back a round of acks=all records on `topic`, and
/// checks the earlier `before` round still reads the same.
fn produce_and_consume_still_work(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    before: &BTreeMap<(i32, i64), String>,
) -> Result<BTreeMap<i32, ReplicaLog>> {
    let after = produce_acked(&cluster.bootstrap(), topic, partitions, 50, "after", "all")?;
    // A leader that took over from the one that acknowledged learns the
    // high watermark from its followers' next fetches: until then a reader
    // sees less. Wait for it to cover what was acknowledged.
    let log = wait_for(
        Duration::from_secs(30),
        "the acked records below the high watermark",
        || {
            let log = read_log(&cluster.bootstrap(), topic, partitions)?;
            Ok(check_produced("after", &log, &after).is_ok().then_some(log))
        },
    )?;
    check_produced("before", &log, before)?;
    check_produced("after", &log, &after)?;
    println!(
        "{} records produced and read back afterwards at offsets {:?}",
        after.len(),
        ranges_of(&after)
    );
    Ok(log)
}

/// Partition 0 of `topic` as rdkafka's metadata shows it.
fn first_partition(cluster: &Cluster, topic: &str) -> Result<PartitionState> {
    cluster
        .partitions(topic)?
        .into_iter()
        .find(|p| p.partition == 0)
        .with_context(|| format!("{topic}/0 is not in metadata"))
}

/// What [`fail_over_from_preferred`] did.
struct FailedOver {
    preferred: i32,
    /// The replica that took over.
    leader: i32,
    /// The partition as the new leader showed it right after the failover.
    state: WirePartition,
    restarted: Instant,
}

/// Kills the preferred (first) replica of `topic`/`partition`, which leads
/// it, waits for another replica to lead and restarts the killed broker.
fn fail_over_from_preferred(
    cluster: &mut Cluster,
    topic: &str,
    partition: i32,
) -> Result<FailedOver> {
    let p = cluster
        .partitions(topic)?
        .into_iter()
        .find(|p| p.partition == partition)
        .with_context(|| format!("{topic}/{partition} is not in metadata"))?;
    let preferred = *p.replicas.first().context("a partition without replicas")?;
    ensure!(
        p.leader == preferred,
        "{topic}/{partition} of a new topic should be led by its preferred replica {preferred}: {p:?}"
    );
    cluster.kill9(preferred)?;
    let killed = Instant::now();
    let leader = cluster.wait_for_leader(topic, partition, Some(preferred), FAILOVER_DEADLINE)?;
    let failed_over = killed.elapsed();
    let state = wire_partition(cluster, leader, topic, partition)?;
    cluster.restart(preferred)?;
    println!(
        "{topic}/{partition}: preferred leader {preferred} killed; broker {leader} leads after {} ({state:?}); \
         broker {preferred} restarted {} after the kill",
        secs(failed_over),
        secs(killed.elapsed())
    );
    Ok(FailedOver {
        preferred,
        leader,
        state,
        restarted: Instant::now(),
    })
}

#[test]
fn preferred_leader_election_moves_leadership_back() -> Result<()> {
    let mut cluster = Cluster::start(
        BROKERS,
        ClusterOptions::default().with("auto.leader.rebalance.enable", "false"),
    )?;
    let topic = unique_topic("preferred");
    cluster.create_topic(&topic, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;
    let f = fail_over_from_preferred(&mut cluster, &topic, 0)?;
    cluster.wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)?;
    println!(
        "broker {} back in every ISR {} after its restart",
        f.preferred,
        secs(f.restarted.elapsed())
    );
    let before = produce_acked(
        &cluster.bootstrap(),
        &topic,
        PARTITIONS,
        50,
        "before",
        "all",
    )?;

    // Neither the preferred replica nor the current leader: the request is
    // forwarded to the controller like any admin request.
    let via = cluster
        .ids()
        .into_iter()
        .find(|&id| id != f.preferred && id != f.leader)
        .context("no third broker")?;
    let moved = wire_partition(&cluster, via, &topic, 0)?;
    ensure!(
        moved.leader != f.preferred && moved.leader >= 0,
        "with auto.leader.rebalance.enable false, {topic}/0 should still be led by a non-preferred replica; broker {via} shows {moved:?}"
    );
    let mut conn = connect_to(&cluster, via)?;
    let t = Instant::now();
    let results = elect_leaders(&mut conn, PREFERRED_ELECTION, &topic, &[0])?;
    let answered = t.elapsed();
    let (code, message) = &results[&0];
    ensure!(
        *code == 0,
        "ElectLeaders(preferred) for {topic}/0 via broker {via} answered {} ({message:?}); want NONE. \
         Partition before: {moved:?}",
        error_name(*code)
    );
    // The answer comes once the answering broker's image shows the outcome.
    let right_after = wire_partition(&cluster, via, &topic, 0)?;
    ensure!(
        right_after.leader == f.preferred && right_after.leader_epoch > moved.leader_epoch,
        "broker {via} answered ElectLeaders with NONE, but its Metadata right after shows {right_after:?}; \
         want leader {} at an epoch above {} (before: {moved:?})",
        f.preferred,
        moved.leader_epoch
    );
    let everywhere = wait_for(
        FAILOVER_DEADLINE,
        &format!(
            "every broker to show preferred leader {} for {topic}/0",
            f.preferred
        ),
        || {
            let mut views = BTreeMap::new();
            for id in cluster.ids() {
                let p = wire_partition(&cluster, id, &topic, 0)?;
                if p.leader != f.preferred || p.leader_epoch <= moved.leader_epoch {
                    return Ok(None);
                }
                views.insert(id, p);
            }
            Ok(Some(views))
        },
    )?;
    println!(
        "ElectLeaders(preferred) via broker {via} answered NONE in {}: leader {} -> {} at epoch {} -> {}; \
         every broker agrees {} after the request ({:?})",
        secs(answered),
        moved.leader,
        right_after.leader,
        moved.leader_epoch,
        right_after.leader_epoch,
        secs(t.elapsed()),
        everywhere.values().next()
    );
    ensure!(
        cluster.leader_of(&topic, 0)? == Some(f.preferred),
        "rdkafka's metadata does not show broker {} leading {topic}/0",
        f.preferred
    );

    let again = elect_leaders(&mut conn, PREFERRED_ELECTION, &topic, &[0])?;
    let (code, message) = &again[&0];
    ensure!(
        *code == ResponseError::ElectionNotNeeded.code(),
        "a second ElectLeaders(preferred) for {topic}/0 answered {} ({message:?}); want ELECTION_NOT_NEEDED (84)",
        error_name(*code)
    );
    println!(
        "second ElectLeaders(preferred): {} ({message:?})",
        error_name(*code)
    );
    let log = produce_and_consume_still_work(&cluster, &topic, PARTITIONS, &before)?;
    check_replicas(&cluster, &topic, &log)?;
    cluster.check_no_crash()
}

#[test]
fn automatic_rebalance_restores_preferred_leaders() -> Result<()> {
    let mut cluster = Cluster::start(
        BROKERS,
        ClusterOptions::default().with("leader.imbalance.check.interval.seconds", "1"),
    )?;
    let topic = unique_topic("rebalance");
    cluster.create_topic(&topic, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;
    let f = fail_over_from_preferred(&mut cluster, &topic, 0)?;
    // No admin call: the controller's imbalance check moves leadership back
    // once the restarted broker is in sync.
    let back = wait_for(
        REBALANCE_DEADLINE,
        &format!(
            "broker {} to lead {topic}/0 again without an admin call",
            f.preferred
        ),
        || {
            let p = wire_partition(&cluster, f.leader, &topic, 0)?;
            Ok((p.leader == f.preferred).then_some(p))
        },
    )
    .with_context(|| format!("cluster: {}", cluster.describe()))?;
    let after = f.restarted.elapsed();
    println!(
        "leadership of {topic}/0 back on preferred broker {} {} after its restart: {back:?} (was {:?})",
        f.preferred,
        secs(after),
        f.state
    );
    ensure!(
        back.isr.contains(&f.preferred) && back.leader_epoch > f.state.leader_epoch,
        "broker {} leads {topic}/0 again but {back:?}; want it in the ISR and an epoch above {}",
        f.preferred,
        f.state.leader_epoch
    );
    // Every partition ends up on its preferred replica.
    let all = wait_for(
        REBALANCE_DEADLINE,
        &format!("every partition of {topic} to be led by its first replica"),
        || {
            let ps = cluster.partitions(&topic)?;
            Ok(ps
                .iter()
                .all(|p| p.replicas.first() == Some(&p.leader))
                .then_some(ps))
        },
    )?;
    println!(
        "leaders / replicas: {:?}",
        all.iter()
            .map(|p| (p.partition, p.leader, p.replicas.clone()))
            .collect::<Vec<_>>()
    );
    cluster.wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)?;
    produce_and_consume_still_work(&cluster, &topic, PARTITIONS, &BTreeMap::new())?;
    cluster.check_no_crash()
}

#[test]
fn reassignment_moves_replicas_and_data() -> Result<()> {
    let mut cluster = Cluster::start(4, ClusterOptions::default())?;
    let topic = unique_topic("reassign");
    cluster.create_topic(&topic, 1, 2, &[("min.insync.replicas", "2")])?;
    let p = first_partition(&cluster, &topic)?;
    let [a, b] = p.replicas[..] else {
        bail!("an RF 2 partition with replicas {:?}", p.replicas);
    };
    let ids = cluster.ids();
    let outside: Vec<i32> = ids
        .iter()
        .copied()
        .filter(|id| !p.replicas.contains(id))
        .collect();
    let [c, d] = outside[..] else {
        bail!("4 brokers, replicas {:?}, others {outside:?}", p.replicas);
    };
    let before = produce_acked(&cluster.bootstrap(), &topic, 1, 500, "before", "all")?;
    let log = read_log(&cluster.bootstrap(), &topic, 1)?;
    cluster.wait_for_replicas_on_to_match(&[a, b], &topic, 0, &log[&0], CONVERGE)?;
    println!(
        "{topic}/0: replicas [{a}, {b}], leader {}; {} records; moving to [{b}, {c}] via broker {d}",
        p.leader,
        before.len()
    );

    let epoch_before = wire_partition(&cluster, d, &topic, 0)?.leader_epoch;
    let mut conn = connect_to(&cluster, d)?;
    let t = Instant::now();
    let (code, message) = alter_reassignment(&mut conn, &topic, 0, Some(&[b, c]))?;
    ensure!(
        code == 0,
        "AlterPartitionReassignments {topic}/0 -> [{b}, {c}] answered {} ({message:?}); want NONE",
        error_name(code)
    );
    match list_reassignment(&mut conn, &topic, 0)? {
        None => println!(
            "ListPartitionReassignments right after: nothing ongoing (already done, {})",
            secs(t.elapsed())
        ),
        Some((replicas, adding, removing)) => {
            let mut all = replicas.clone();
            all.sort_unstable();
            let mut want = vec![a, b, c];
            want.sort_unstable();
            ensure!(
                adding == [c] && removing == [a] && all == want,
                "ListPartitionReassignments shows replicas {replicas:?} adding {adding:?} removing {removing:?}; \
                 want replicas {{{a}, {b}, {c}}} adding [{c}] removing [{a}]"
            );
            println!(
                "ListPartitionReassignments right after: replicas {replicas:?}, adding {adding:?}, removing {removing:?}"
            );
        }
    }
    let mut isr_bc = vec![b, c];
    isr_bc.sort_unstable();
    let done = wait_for(
        REASSIGN_DEADLINE,
        &format!("{topic}/0 to have replicas [{b}, {c}] and ISR {isr_bc:?}"),
        || {
            let p = first_partition(&cluster, &topic)?;
            Ok(
                (p.replicas == [b, c] && p.isr == isr_bc && (p.leader == b || p.leader == c))
                    .then_some(p),
            )
        },
    )?;
    let moved_after = t.elapsed();
    wait_until(
        CONVERGE,
        "ListPartitionReassignments to show nothing in progress",
        || matches!(list_reassignment(&mut conn, &topic, 0), Ok(None)),
    )?;
    let state = wire_partition(&cluster, d, &topic, 0)?;
    println!(
        "reassignment done {}: {done:?}; broker {d} shows {state:?} (leader epoch was {epoch_before})",
        secs(moved_after)
    );
    ensure!(
        p.leader != a || state.leader_epoch > epoch_before,
        "removed replica {a} led {topic}/0; leadership moved to {} but the leader epoch stayed {epoch_before}: {state:?}",
        state.leader
    );
    cluster
        .wait_for_replicas_on_to_match(&[b, c], &topic, 0, &log[&0], CONVERGE)
        .with_context(|| format!("new replica {c}"))?;
    let gone = wait_for(
        REASSIGN_DEADLINE,
        &format!("broker {a} (removed) to delete its replica of {topic}/0"),
        || Ok(cluster.replica_dir(a, &topic, 0)?.is_none().then_some(())),
    );
    gone.with_context(|| {
        format!(
            "directory still there: {:?}",
            cluster.replica_dir(a, &topic, 0)
        )
    })?;
    ensure!(
        cluster.replica_dir(d, &topic, 0)?.is_none(),
        "broker {d}, never a replica of {topic}/0, has a directory for it"
    );
    println!(
        "broker {c} holds all {} records, identical to the leader's; broker {a} removed its replica directory within {}",
        log[&0].len(),
        secs(t.elapsed())
    );
    let log = produce_and_consume_still_work(&cluster, &topic, 1, &before)?;
    cluster.wait_for_replicas_on_to_match(&[b, c], &topic, 0, &log[&0], CONVERGE)?;

    // Refusals.
    let unknown = 99;
    let (code, message) = alter_reassignment(&mut conn, &topic, 0, Some(&[b, unknown]))?;
    ensure!(
        code == ResponseError::InvalidReplicaAssignment.code(),
        "a reassignment to unregistered broker {unknown} answered {} ({message:?}); want INVALID_REPLICA_ASSIGNMENT (39)",
        error_name(code)
    );
    println!(
        "reassignment to broker {unknown}: {} ({message:?})",
        error_name(code)
    );
    let (code, message) = alter_reassignment(&mut conn, &topic, 0, None)?;
    ensure!(
        code == ResponseError::NoReassignmentInProgress.code(),
        "cancelling with nothing in progress answered {} ({message:?}); want NO_REASSIGNMENT_IN_PROGRESS (85)",
        error_name(code)
    );
    println!(
        "cancel with nothing in progress: {} ({message:?})",
        error_name(code)
    );
    let after = first_partition(&cluster, &topic)?;
    ensure!(
        after.replicas == [b, c] && after.isr == isr_bc,
        "the refused requests changed {topic}/0: {after:?}"
    );
    cluster.check_no_crash()
}

#[test]
fn unclean_election_is_off_by_default_and_on_when_enabled() -> Result<()> {
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let topic = unique_topic("unclean");
    cluster.create_topic(&topic, 1, 2, &[("min.insync.replicas", "1")])?;
    let p = first_partition(&cluster, &topic)?;
    let leader = p.leader;
    let follower = *p
        .replicas
        .iter()
        .find(|&&r| r != leader)
        .context("no follower")?;
    let bystander = cluster
        .ids()
        .into_iter()
        .find(|id| !p.replicas.contains(id))
        .context("no third broker")?;
    let base = produce_acked(&cluster.bootstrap(), &topic, 1, 100, "base", "all")?;
    let base_log = read_log(&cluster.bootstrap(), &topic, 1)?;
    cluster.wait_for_replicas_on_to_match(
        &[leader, follower],
        &topic,
        0,
        &base_log[&0],
        CONVERGE,
    )?;

    cluster.pause(follower)?;
    let paused = Instant::now();
    let shrink_deadline =
        Duration::from_millis(REPLICA_LAG_TIME_MAX_MS + SESSION_TIMEOUT_MS) + FAILOVER_DEADLINE;
    wait_for(
        shrink_deadline,
        &format!("the ISR of {topic}/0 to drop paused broker {follower}"),
        || {
            let isr = cluster.isr_of(&topic, 0)?;
            Ok((isr == [leader]).then_some(()))
        },
    )?;
    let left_after = paused.elapsed();
    // Written after the follower left the ISR: it never fetches these.
    let tail = produce_acked(
        &old_leader_bootstrap(&cluster, leader)?,
        &topic,
        1,
        100,
        "tail",
        "1",
    )?;
    cluster.kill9(leader)?;
    cluster.resume(follower)?;
    let killed = Instant::now();
    println!(
        "{topic}/0: follower {follower} left the ISR {} after SIGSTOP; {} acks=1 records at {:?} acked by leader {leader} alone; \
         leader killed, follower resumed",
        secs(left_after),
        tail.len(),
        ranges_of(&tail).get(&0)
    );

    // The follower is back and registered, but out of sync: with unclean
    // election off (the default) nobody may lead.
    let leaderless = wait_for(
        FAILOVER_DEADLINE,
        &format!("{topic}/0 to be leaderless with broker {follower} back and {leader} gone"),
        || {
            let md = cluster.metadata(Some(&topic))?;
            let p = md.partitions.and_then(|mut ps| ps.pop());
            Ok(p.filter(|p| {
                p.leader < 0
                    && md.brokers.contains_key(&follower)
                    && !md.brokers.contains_key(&leader)
            }))
        },
    )?;
    let wire = wire_partition(&cluster, bystander, &topic, 0)?;
    println!(
        "leaderless {} after the kill: rdkafka {leaderless:?}; broker {bystander}: {wire:?}",
        secs(killed.elapsed())
    );
    ensure!(
        wire.leader == -1
            && wire.error == ResponseError::LeaderNotAvailable.code()
            && wire.isr == [leader]
            && wire.offline.contains(&leader),
        "broker {bystander} shows {wire:?}; want leader -1, LEADER_NOT_AVAILABLE, ISR [{leader}], {leader} offline"
    );
    let hold_end = Instant::now() + LEADERLESS_HOLD;
    let mut checks = 0;
    while Instant::now() < hold_end {
        for id in [follower, bystander] {
            let p = wire_partition(&cluster, id, &topic, 0)?;
            ensure!(
                p.leader == -1,
                "unclean.leader.election.enable is false (the default), yet broker {id} shows {p:?} \
                 {} after the kill; out-of-sync follower {follower} must not lead",
                secs(killed.elapsed())
            );
            checks += 1;
        }
        // Paces the checks; the loop's deadline is the condition.
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("still leaderless after {checks} checks over {LEADERLESS_HOLD:?}");

    let mut conn = connect_to(&cluster, bystander)?;
    set_topic_config(&mut conn, &topic, "unclean.leader.election.enable", "true")?;
    let enabled = Instant::now();
    let elected = wait_for(
        FAILOVER_DEADLINE,
        &format!(
            "out-of-sync broker {follower} to lead {topic}/0 once unclean election is enabled"
        ),
        || {
            let p = wire_partition(&cluster, bystander, &topic, 0)?;
            Ok((p.leader == follower).then_some(p))
        },
    )
    .with_context(|| format!("cluster: {}", cluster.describe()))?;
    println!(
        "unclean.leader.election.enable=true: broker {follower} leads {} later: {elected:?}",
        secs(enabled.elapsed())
    );
    ensure!(
        elected.isr == [follower] && elected.leader_epoch > wire.leader_epoch,
        "after the unclean election {topic}/0 shows {elected:?}; want ISR [{follower}] and an epoch above {}",
        wire.leader_epoch
    );

    let log = read_log(&cluster.bootstrap(), &topic, 1)?;
    check_produced("base (acks=all)", &log, &base)?;
    let lost: Vec<i64> = tail
        .iter()
        .filter(|(&(p, o), value)| value_at(&log, p, o) != Some(value.as_bytes()))
        .map(|(&(_, o), _)| o)
        .collect();
    println!(
        "unclean election lost {} of {} acks=1 records (offsets {:?}..={:?}); the new leader's log ends at {:?}",
        lost.len(),
        tail.len(),
        lost.first(),
        lost.last(),
        log[&0].keys().next_back()
    );
    ensure!(
        lost.len() == tail.len(),
        "the new leader {follower} was paused before any of the {} tail records was written, yet only {} are missing",
        tail.len(),
        lost.len()
    );
    let log = produce_and_consume_still_work(&cluster, &topic, 1, &base)?;

    // The old leader comes back as a follower and drops its divergent tail.
    cluster.restart(leader)?;
    cluster.wait_for_isr(&topic, 1, 2, HEAL)?;
    cluster
        .wait_for_replicas_on_to_match(&[leader, follower], &topic, 0, &log[&0], CONVERGE)
        .with_context(|| format!("old leader {leader} rejoining new leader {follower}"))?;
    println!("old leader {leader} rejoined the ISR and holds exactly the new leader's records");
    cluster.check_no_crash()
}
