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
//! The nemesis draws from a seeded generator; the seed is printed, and
//! `SLUICE_NEMESIS_SEED=N` repeats a run's choices.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::messages::MetadataRequest;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use sluice_tests::cluster::{
    log_difference, Cluster, ClusterOptions, ReplicaLog, REPLICA_LAG_TIME_MAX_MS,
    SESSION_TIMEOUT_MS,
};
use sluice_tests::group::{self, Member, MemberConfig, MemberKind};
use sluice_tests::kafka::{self, Delivery};
use sluice_tests::raw::RawConnection;
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
// Nemesis randomness

/// xorshift64*: enough for choosing victims, and repeatable from the seed.
struct Rng(u64);

impl Rng {
    fn from_env_or_clock() -> Rng {
        let seed = std::env::var("SLUICE_NEMESIS_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| sluice_tests::now_ms().unsigned_abs());
        println!("nemesis seed {seed} (SLUICE_NEMESIS_SEED={seed} repeats the choices)");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}

// ---------------------------------------------------------------------------
// Producers that remember every acknowledgement

/// Producer context: every delivery report, counts of successes and
/// failures readable while the producer runs, and librdkafka's recent
/// warnings for failure messages.
#[derive(Clone, Default)]
struct AckLog(Arc<AckLogInner>);

#[derive(Default)]
struct AckLogInner {
    acked: AtomicUsize,
    failed: AtomicUsize,
    reports: Mutex<Vec<Delivery>>,
    events: Mutex<VecDeque<String>>,
}

impl AckLog {
    fn acked(&self) -> usize {
        self.0.acked.load(Ordering::Relaxed)
    }

    fn failed(&self) -> usize {
        self.0.failed.load(Ordering::Relaxed)
    }

    fn reported(&self) -> usize {
        self.acked() + self.failed()
    }

    fn reports(&self) -> Vec<Delivery> {
        self.0.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    fn report_for(&self, id: usize) -> Option<Delivery> {
        self.0
            .reports
            .lock()
            .ok()
            .and_then(|r| r.iter().find(|d| d.id == id).cloned())
    }

    fn recent_events(&self) -> String {
        match self.0.events.lock() {
            Ok(ev) if !ev.is_empty() => ev.iter().cloned().collect::<Vec<_>>().join("\n"),
            _ => "(no librdkafka warnings)".to_string(),
        }
    }

    fn push_event(&self, line: String) {
        if let Ok(mut ev) = self.0.events.lock() {
            if ev.len() == 30 {
                ev.pop_front();
            }
            ev.push_back(line);
        }
    }
}

impl ClientContext for AckLog {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.push_event(format!("librdkafka {level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.push_event(format!("librdkafka error {error}: {reason}"));
    }
}

impl ProducerContext for AckLog {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let d = match result {
            Ok(m) => {
                self.0.acked.fetch_add(1, Ordering::Relaxed);
                Delivery {
                    id,
                    partition: m.partition(),
                    offset: m.offset(),
                    error: None,
                }
            }
            Err((e, m)) => {
                self.0.failed.fetch_add(1, Ordering::Relaxed);
                Delivery {
                    id,
                    partition: m.partition(),
                    offset: -1,
                    error: Some(e.to_string()),
                }
            }
        };
        if let Ok(mut all) = self.0.reports.lock() {
            all.push(d);
        }
    }
}

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
    producer: &BaseProducer<AckLog>,
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
    logs: Vec<AckLog>,
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
            let log = AckLog::default();
            let producer: BaseProducer<AckLog> = acks_all_config(bootstrap, message_timeout_ms)
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
        self.logs.iter().map(AckLog::acked).sum()
    }

    fn failed(&self) -> usize {
        self.logs.iter().map(AckLog::failed).sum()
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
    producer: &BaseProducer<AckLog>,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
    log: &AckLog,
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
    let log = AckLog::default();
    let mut config = acks_all_config(bootstrap, 30_000);
    config.set("acks", acks);
    let producer: BaseProducer<AckLog> = config.create_with_context(log.clone())?;
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

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
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
    let probe_log = AckLog::default();
    let probe: BaseProducer<AckLog> = acks_all_config(&bootstrap, 15_000)
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
