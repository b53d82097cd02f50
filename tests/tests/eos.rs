//! The idempotent producer end to end: producer ids from InitProducerId,
//! sequence checks and duplicate detection on the leader, and the producer
//! state surviving restarts, crashes and leader failover.
//!
//! - An rdkafka producer with `enable.idempotence=true` writes sequential
//!   values into a 3-broker cluster whose partition leaders are killed with
//!   SIGKILL; every acknowledged value must then be in the log exactly once
//!   and in send order, which plain acks=all retries do not promise.
//! - Hand-built batches over the raw wire client check the broker's answers
//!   one by one: a retried batch gets its original offset, a gap is
//!   OUT_OF_ORDER_SEQUENCE_NUMBER, an older epoch INVALID_PRODUCER_EPOCH,
//!   and all of it still holds after SIGTERM and after kill -9.
//! - Producer ids handed out by every broker, across broker and
//!   controller-leader crashes, never repeat.
//! - kafka-python's idempotent producer writes through the same path.
//!
//! The nemesis draws from a seeded generator; the seed is printed, and
//! `SLUICE_NEMESIS_SEED=N` repeats a run's choices.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, MetadataRequest, ProducerId,
};
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use sluice_tests::batch::{self, BatchView, TestRecord};
use sluice_tests::chaos::{error_name, secs, DeliveryLog, Rng};
use sluice_tests::cluster::{Cluster, ClusterOptions, ReplicaLog};
use sluice_tests::cmd::{self, find_program};
use sluice_tests::kafka::{self, Delivery};
use sluice_tests::raw::RawConnection;
use sluice_tests::{now_ms, unique_topic, wait_for, wait_until, BrokerProcess};

const BROKERS: usize = 3;
const PARTITIONS: i32 = 3;
const RF: i32 = 3;
const FULL_ISR: usize = 3;
/// Session timeout + election + slack: a dead leader is replaced within this.
const FAILOVER_DEADLINE: Duration = Duration::from_secs(15);
/// A healed cluster is back to full ISR within this.
const HEAL: Duration = Duration::from_secs(60);
/// Idle followers hold what the leader serves within this.
const CONVERGE: Duration = Duration::from_secs(30);
const READ_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the nemesis kills leaders while the producer writes.
const NEMESIS_DURATION: Duration = Duration::from_secs(25);
/// Messages per second, over all partitions.
const RATE: u32 = 600;
/// The fewest acknowledged writes for the nemesis test to mean something.
const MIN_ACKED: usize = 1_000;
/// Far longer than any outage here: every message must be delivered.
const MESSAGE_TIMEOUT_MS: u64 = 120_000;
/// A restarted broker serves its partitions again within this.
const READY: Duration = Duration::from_secs(30);
/// InitProducerId while a controller fails over: answered within this.
const ALLOCATE_DEADLINE: Duration = Duration::from_secs(30);

// Byte offsets of the idempotence fields of a v2 batch header
// (see sluice_tests::batch for the layout).
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;

/// Kafka error codes these tests expect by number.
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const UNKNOWN_PRODUCER_ID: i16 = 59;

// ---------------------------------------------------------------------------
// An idempotent producer that remembers every acknowledgement

/// Idempotence with what it implies spelt out: acks=all, retries without
/// limit, at most 5 requests in flight per connection. A request to a dead
/// broker gives up after 5 s and is retried.
fn idempotent_config(bootstrap: &str) -> ClientConfig {
    let mut c = kafka::producer_config(bootstrap);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("retries", "2147483647")
        .set("max.in.flight.requests.per.connection", "5")
        .set("retry.backoff.ms", "100")
        .set("retry.backoff.max.ms", "1000")
        .set("request.timeout.ms", "5000")
        .set("message.timeout.ms", MESSAGE_TIMEOUT_MS.to_string());
    c
}

/// The value of the `seq`-th message sent to `partition`; zero-padded so the
/// order of values is the order of sends.
fn value_of(partition: i32, seq: usize) -> String {
    format!("p{partition}-{seq:08}")
}

/// `(partition, seq)` of a value made by [`value_of`].
fn parse_value(v: &[u8]) -> Option<(i32, usize)> {
    let s = std::str::from_utf8(v).ok()?.strip_prefix('p')?;
    let (p, seq) = s.split_once('-')?;
    Some((p.parse().ok()?, seq.parse().ok()?))
}

/// What the producer thread sent (message `id` went to `sent[id]` =
/// `(partition, seq)`) and every delivery report it got.
struct Sent {
    sent: Vec<(i32, usize)>,
    reports: Vec<Delivery>,
    fatal: Vec<String>,
    client_fatal: Option<(RDKafkaErrorCode, String)>,
    events: String,
}

/// Sends `value_of(p, seq)` round-robin over the partitions at [`RATE`]
/// until `stop`, then flushes and collects every delivery report.
fn produce_until_stopped(
    producer: &BaseProducer<DeliveryLog>,
    log: &DeliveryLog,
    topic: &str,
    partitions: i32,
    stop: &AtomicBool,
) -> Result<Sent> {
    let start = Instant::now();
    let mut sent: Vec<(i32, usize)> = Vec::new();
    let mut next_seq: BTreeMap<i32, usize> = BTreeMap::new();
    let mut partition = 0;
    while !stop.load(Ordering::Relaxed) {
        let due = start + Duration::from_secs_f64(sent.len() as f64 / f64::from(RATE));
        let now = Instant::now();
        if due > now {
            producer.poll((due - now).min(Duration::from_millis(50)));
            continue;
        }
        let seq = next_seq.entry(partition).or_default();
        let value = value_of(partition, *seq);
        let mut record = BaseRecord::<(), [u8], usize>::with_opaque_to(topic, sent.len())
            .partition(partition)
            .payload(value.as_bytes());
        let full_since = Instant::now();
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    ensure!(
                        full_since.elapsed() < Duration::from_secs(60),
                        "producer queue stayed full for 60 s; {}",
                        log.recent_events()
                    );
                    record = r;
                    producer.poll(Duration::from_millis(50));
                }
                Err((e, _)) => bail!("send failed: {e}; {}", log.recent_events()),
            }
        }
        sent.push((partition, *seq));
        *seq += 1;
        partition = (partition + 1) % partitions;
        producer.poll(Duration::ZERO);
    }
    // Every message ends in a report within message.timeout.ms; the count
    // of reports below is what is checked, not the flush result.
    let _ = producer.flush(Duration::from_millis(MESSAGE_TIMEOUT_MS + 30_000));
    let _ = wait_until(Duration::from_secs(10), "every delivery report", || {
        producer.poll(Duration::from_millis(10));
        log.reported() >= sent.len()
    });
    Ok(Sent {
        sent,
        reports: log.reports(),
        fatal: log.fatal(),
        client_fatal: producer.client().fatal_error(),
        events: log.recent_events(),
    })
}

/// One past the highest acknowledged offset of each partition.
fn acked_ends(reports: &[Delivery]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for d in reports.iter().filter(|d| d.error.is_none()) {
        let e = ends.entry(d.partition).or_insert(0);
        *e = (*e).max(d.offset + 1);
    }
    ends
}

/// Reads every partition once its high watermark covers every acked offset
/// (a new leader's high watermark can trail its log until followers fetch
/// again). One that never gets there is not an error here: the acked
/// writes beyond it are then counted as lost.
fn read_acked_log(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    reports: &[Delivery],
) -> Result<BTreeMap<i32, ReplicaLog>> {
    let ends = acked_ends(reports);
    let mut last = BTreeMap::new();
    let covered = wait_until(
        CONVERGE,
        "high watermarks to cover every acked offset",
        || {
            last = (0..partitions)
                .map(|p| {
                    let hi = kafka::watermarks(bootstrap, topic, p).map_or(-1, |(_, hi)| hi);
                    (p, hi)
                })
                .collect();
            ends.iter()
                .all(|(p, end)| last.get(p).is_some_and(|hi| hi >= end))
        },
    );
    if let Err(e) = covered {
        println!("{e:#}: high watermarks {last:?}, acked ends {ends:?}");
    }
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

/// What the log read back says about the messages sent.
#[derive(Debug, Default)]
struct Verdict {
    sent: usize,
    acked: usize,
    failed: usize,
    /// No delivery report at all.
    unconfirmed: usize,
    /// Acked, but its value is not at the acked offset.
    lost: usize,
    /// Extra copies: a value present n times counts n - 1.
    duplicated: usize,
    /// Values in a partition that do not follow the previous one's send order.
    out_of_order: usize,
    /// Present in the log though its delivery failed or was never confirmed.
    unacked_present: usize,
    /// Values in the log that were never sent (to that partition).
    unknown: usize,
    examples: Vec<String>,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked={} lost={} duplicated={} out_of_order={} unknown={} (sent={} failed={} unconfirmed={} unacked_present={})",
            self.acked,
            self.lost,
            self.duplicated,
            self.out_of_order,
            self.unknown,
            self.sent,
            self.failed,
            self.unconfirmed,
            self.unacked_present
        )?;
        for e in &self.examples {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl Verdict {
    fn example(&mut self, e: String) {
        if self.examples.len() < 12 {
            self.examples.push(e);
        }
    }
}

fn judge(log: &BTreeMap<i32, ReplicaLog>, out: &Sent) -> Verdict {
    let mut v = Verdict::default();
    let mut sent_per_partition: BTreeMap<i32, usize> = BTreeMap::new();
    for &(p, seq) in &out.sent {
        let n = sent_per_partition.entry(p).or_default();
        *n = (*n).max(seq + 1);
    }
    // Where each value is, in offset order per partition.
    let mut seen: HashMap<(i32, usize), Vec<(i32, i64)>> = HashMap::new();
    for (&p, records) in log {
        let mut previous: Option<(i64, usize)> = None;
        for (&offset, value) in records {
            let raw = value.as_deref().unwrap_or_default();
            let parsed = parse_value(raw).filter(|&(vp, seq)| {
                vp == p && sent_per_partition.get(&p).is_some_and(|&n| seq < n)
            });
            let Some((_, seq)) = parsed else {
                v.unknown += 1;
                v.example(format!(
                    "UNKNOWN value {:?} at {p}/{offset}",
                    String::from_utf8_lossy(raw)
                ));
                continue;
            };
            seen.entry((p, seq)).or_default().push((p, offset));
            if let Some((prev_offset, prev_seq)) = previous {
                if seq <= prev_seq {
                    v.out_of_order += 1;
                    v.example(format!(
                        "OUT OF ORDER at {p}/{offset}: {} follows {} at offset {prev_offset}",
                        value_of(p, seq),
                        value_of(p, prev_seq)
                    ));
                }
            }
            previous = Some((offset, seq));
        }
    }
    for (&(p, seq), places) in &seen {
        if places.len() > 1 {
            v.duplicated += places.len() - 1;
            v.example(format!("DUPLICATE {} at {places:?}", value_of(p, seq)));
        }
    }
    let mut by_id: HashMap<usize, &Delivery> = HashMap::new();
    for d in &out.reports {
        by_id.entry(d.id).or_insert(d);
    }
    for (id, &(p, seq)) in out.sent.iter().enumerate() {
        v.sent += 1;
        let value = value_of(p, seq);
        let present = seen.contains_key(&(p, seq));
        match by_id.get(&id) {
            Some(d) if d.error.is_none() => {
                v.acked += 1;
                let found = log
                    .get(&d.partition)
                    .and_then(|l| l.get(&d.offset))
                    .and_then(|v| v.as_deref());
                if d.partition != p || found != Some(value.as_bytes()) {
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
                v.unacked_present += usize::from(present);
                if v.failed == 1 {
                    v.example(format!(
                        "first failed delivery: {value:?}: {:?}; librdkafka:\n{}",
                        d.error, out.events
                    ));
                }
            }
            None => {
                v.unconfirmed += 1;
                v.unacked_present += usize::from(present);
            }
        }
    }
    v
}

// ---------------------------------------------------------------------------
// 1. Exactly once, in order, under leader kills

#[test]
fn idempotent_producer_survives_leader_kills_exactly_once_in_order() -> Result<()> {
    let mut rng = Rng::from_env_or_clock();
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    let topic = unique_topic("eos-nemesis");
    cluster.create_topic(&topic, PARTITIONS, RF, &[("min.insync.replicas", "2")])?;

    let log = DeliveryLog::default();
    let producer: BaseProducer<DeliveryLog> = idempotent_config(&cluster.bootstrap_all())
        .create_with_context(log.clone())
        .context("creating the idempotent producer")?;
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (log, topic, stop) = (log.clone(), topic.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            produce_until_stopped(&producer, &log, &topic, PARTITIONS, &stop)
        })
    };
    let first = wait_until(
        Duration::from_secs(30),
        "the first acknowledgements",
        || log.acked() > 0,
    );
    if let Err(e) = first {
        stop.store(true, Ordering::Relaxed);
        return Err(e.context(log.recent_events()));
    }

    let started = Instant::now();
    let end = started + NEMESIS_DURATION;
    let mut step = 0;
    let nemesis: Result<()> = (|| {
        while Instant::now() < end {
            let acked_before = log.acked();
            let p = i32::try_from(rng.below(PARTITIONS as usize))?;
            let leader = cluster.wait_for_leader(&topic, p, None, FAILOVER_DEADLINE)?;
            cluster.kill9(leader)?;
            let down = rng.millis(1_500, 3_500);
            std::thread::sleep(down);
            cluster.restart(leader)?;
            let healing = Instant::now();
            cluster
                .wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)
                .with_context(|| format!("after killing broker {leader}"))?;
            println!(
                "fault {step} at {}: kill -9 broker {leader} (leader of partition {p}), restarted after {}; ISR full again {} later; {} acks meanwhile",
                secs(started.elapsed()),
                secs(down),
                secs(healing.elapsed()),
                log.acked() - acked_before
            );
            cluster.check_no_crash()?;
            step += 1;
            // Let the load run on a healthy cluster before the next fault.
            std::thread::sleep(rng.millis(300, 1_000));
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    let out = match thread.join() {
        Ok(r) => r?,
        Err(_) => bail!("the producer thread panicked"),
    };
    nemesis?;

    cluster.heal()?;
    cluster.check_no_crash()?;
    cluster.wait_for_isr(&topic, PARTITIONS, FULL_ISR, HEAL)?;
    let read = read_acked_log(&cluster.bootstrap(), &topic, PARTITIONS, &out.reports)?;
    let verdict = judge(&read, &out);
    println!(
        "{step} leader kills in {}; {verdict}",
        secs(NEMESIS_DURATION)
    );
    ensure!(
        out.fatal.is_empty() && out.client_fatal.is_none(),
        "the idempotent producer raised a fatal error: {:?} / {:?}; {verdict}\n{}",
        out.fatal,
        out.client_fatal,
        out.events
    );
    ensure!(verdict.lost == 0, "acknowledged writes lost: {verdict}");
    ensure!(
        verdict.duplicated == 0,
        "the idempotent producer's writes were duplicated: {verdict}"
    );
    ensure!(
        verdict.out_of_order == 0,
        "values out of send order within a partition: {verdict}"
    );
    ensure!(verdict.unknown == 0, "values nobody sent: {verdict}");
    ensure!(
        verdict.failed == 0 && verdict.unconfirmed == 0,
        "deliveries failed or unconfirmed although retries are unlimited and \
         message.timeout.ms is {MESSAGE_TIMEOUT_MS} ms: {verdict}"
    );
    ensure!(
        verdict.acked >= MIN_ACKED,
        "only {} writes acknowledged (want at least {MIN_ACKED}): {verdict}",
        verdict.acked
    );
    ensure!(
        step >= 2,
        "only {step} leader kill(s) in {NEMESIS_DURATION:?}"
    );
    // What the leaders store: one producer id, epochs that only grow, and
    // within an epoch sequences that follow on without a gap or a repeat.
    let mut epochs: BTreeSet<i16> = BTreeSet::new();
    for (&p, records) in &read {
        let end = records.keys().next_back().map_or(0, |o| o + 1);
        let leader = cluster
            .leader_of(&topic, p)?
            .with_context(|| format!("no leader of {topic}/{p}"))?;
        let stored = stored_batches(cluster.broker(leader)?.addr(), &topic, p, end)?;
        let mut previous: Option<StoredBatch> = None;
        for b in &stored {
            ensure!(
                b.producer_id >= 0 && b.epoch >= 0,
                "{topic}/{p}: batch at {} has no producer id: {b:?}",
                b.base_offset
            );
            if let Some(prev) = previous {
                let want_seq = if b.epoch == prev.epoch {
                    prev.base_sequence + prev.records
                } else {
                    0
                };
                ensure!(
                    b.producer_id == prev.producer_id
                        && b.epoch >= prev.epoch
                        && b.base_sequence == want_seq,
                    "{topic}/{p}: batch {b:?} follows {prev:?}; want the same producer id, \
                     an epoch not older, and base sequence {want_seq}"
                );
            }
            epochs.insert(b.epoch);
            previous = Some(*b);
        }
    }
    println!("producer epochs in the log: {epochs:?}");
    for (p, records) in &read {
        cluster.wait_for_replicas_to_match(&topic, *p, records, CONVERGE)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Raw wire helpers: InitProducerId and idempotent batches

/// InitProducerId without a transactional id; `current` is the producer's
/// id and epoch for a v3+ epoch bump.
fn init_producer_id(
    conn: &mut RawConnection,
    version: i16,
    current: Option<(i64, i16)>,
) -> Result<InitProducerIdResponse> {
    let (id, epoch) = current.unwrap_or((-1, -1));
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(60_000)
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(epoch);
    conn.request(version, &req)
        .with_context(|| format!("InitProducerId v{version} (current {current:?})"))
}

/// [`init_producer_id`] that must succeed: `(producer id, epoch)`.
fn new_producer(
    conn: &mut RawConnection,
    version: i16,
    current: Option<(i64, i16)>,
) -> Result<(i64, i16)> {
    let resp = init_producer_id(conn, version, current)?;
    ensure!(
        resp.error_code == 0,
        "InitProducerId v{version} (current {current:?}) answered {}",
        error_name(resp.error_code)
    );
    Ok((resp.producer_id.0, resp.producer_epoch))
}

/// An uncompressed batch of `values` from producer `pid`/`epoch` starting
/// at sequence `seq`.
fn idempotent_batch(pid: i64, epoch: i16, seq: i32, values: &[String]) -> Bytes {
    let records: Vec<TestRecord> = values
        .iter()
        .map(|v| TestRecord {
            key: None,
            value: Some(v.as_bytes().to_vec()),
            headers: vec![],
            timestamp: now_ms(),
        })
        .collect();
    let mut b: BytesMut = batch::encode_batch(&records);
    b[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&pid.to_be_bytes());
    b[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&epoch.to_be_bytes());
    b[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&seq.to_be_bytes());
    batch::fix_crc(&mut b);
    b.freeze()
}

/// `(producer id, epoch, base sequence)` of a batch read back.
fn batch_producer(view: &BatchView) -> Option<(i64, i16, i32)> {
    let b = &view.bytes;
    let pid = i64::from_be_bytes(b.get(PRODUCER_ID..PRODUCER_ID + 8)?.try_into().ok()?);
    let epoch = i16::from_be_bytes(b.get(PRODUCER_EPOCH..PRODUCER_EPOCH + 2)?.try_into().ok()?);
    let seq = i32::from_be_bytes(b.get(BASE_SEQUENCE..BASE_SEQUENCE + 4)?.try_into().ok()?);
    Some((pid, epoch, seq))
}

/// The idempotence fields of one stored batch.
#[derive(Debug, Clone, Copy)]
struct StoredBatch {
    base_offset: i64,
    records: i32,
    producer_id: i64,
    epoch: i16,
    base_sequence: i32,
}

/// The headers of the batches of `topic`/`partition` below `end`, fetched
/// from the broker at `addr` (its leader).
fn stored_batches(
    addr: std::net::SocketAddr,
    topic: &str,
    partition: i32,
    end: i64,
) -> Result<Vec<StoredBatch>> {
    let mut conn = RawConnection::connect(addr)?;
    let mut out = Vec::new();
    let mut offset = 0i64;
    while offset < end {
        let data = conn.fetch(topic, partition, offset, 1 << 20)?;
        ensure!(
            data.error_code == 0,
            "Fetch {topic}/{partition} at {offset} answered {}",
            error_name(data.error_code)
        );
        let records = data.records.unwrap_or_default();
        let views = batch::split_batches(&records);
        ensure!(
            !views.is_empty(),
            "Fetch {topic}/{partition} at {offset} returned no whole batch"
        );
        let from = offset;
        for v in views.iter().filter(|v| v.base_offset >= from) {
            let (producer_id, epoch, base_sequence) =
                batch_producer(v).context("short batch header")?;
            out.push(StoredBatch {
                base_offset: v.base_offset,
                records: v.record_count,
                producer_id,
                epoch,
                base_sequence,
            });
            offset = v.base_offset + i64::from(v.last_offset_delta) + 1;
        }
    }
    Ok(out)
}

/// One partition of one single broker, spoken to over the raw client.
struct Partition<'a> {
    broker: &'a BrokerProcess,
    conn: RawConnection,
    topic: String,
}

impl Partition<'_> {
    /// A new connection once the (restarted) broker answers ListOffsets for
    /// the partition.
    fn reconnect(&mut self) -> Result<()> {
        let (broker, topic) = (self.broker, self.topic.clone());
        self.conn = wait_for(READY, &format!("broker to serve {topic}/0 again"), || {
            let mut conn = RawConnection::connect(broker.addr())?;
            let r = conn.list_offset(&topic, 0, -1)?;
            ensure!(
                r.error_code == 0,
                "ListOffsets answered {}",
                error_name(r.error_code)
            );
            Ok(Some(conn))
        })?;
        Ok(())
    }

    fn end_offset(&mut self) -> Result<i64> {
        let r = self.conn.list_offset(&self.topic, 0, -1)?;
        ensure!(
            r.error_code == 0,
            "ListOffsets latest answered {}",
            error_name(r.error_code)
        );
        Ok(r.offset)
    }

    /// Produces (acks=-1) a batch; `(error code, base offset)`.
    fn produce(&mut self, batch: &Bytes) -> Result<(i16, i64)> {
        let r = self.conn.produce(&self.topic, 0, batch.clone(), -1)?;
        Ok((r.error_code, r.base_offset))
    }

    /// Produces a batch that must be written (or recognised as written) at
    /// `want` without moving the end offset unless `grows` records are new.
    fn expect_written(
        &mut self,
        what: &str,
        batch: &Bytes,
        want: Option<i64>,
        grows: i64,
    ) -> Result<i64> {
        let before = self.end_offset()?;
        let (code, base) = self.produce(batch)?;
        ensure!(
            code == 0,
            "{what}: Produce answered {}, want NONE\n{}",
            error_name(code),
            self.broker.log_tail(30)
        );
        if let Some(want) = want {
            ensure!(
                base == want,
                "{what}: base offset {base}, want the original {want}"
            );
        }
        let after = self.end_offset()?;
        ensure!(
            after == before + grows,
            "{what}: end offset went from {before} to {after}, want +{grows}"
        );
        Ok(base)
    }

    /// Produces a batch that must be refused with `code`, writing nothing.
    fn expect_refused(&mut self, what: &str, batch: &Bytes, want: i16) -> Result<()> {
        let before = self.end_offset()?;
        let (code, base) = self.produce(batch)?;
        ensure!(
            code == want,
            "{what}: Produce answered {} (base offset {base}), want {}\n{}",
            error_name(code),
            error_name(want),
            self.broker.log_tail(30)
        );
        let after = self.end_offset()?;
        ensure!(
            after == before,
            "{what}: refused, yet the end offset went from {before} to {after}"
        );
        Ok(())
    }
}

fn values(tag: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{tag}-{i}")).collect()
}

// ---------------------------------------------------------------------------
// 2. Sequence checks and duplicate detection, across restart and crash

#[test]
fn retried_batch_is_not_duplicated_on_a_single_broker() -> Result<()> {
    let mut broker = BrokerProcess::start()?;
    let topic = unique_topic("eos-retry");
    kafka::create_topic(&broker.bootstrap(), &topic, 1, &[])?;

    let (pid, e0, other_pid) = {
        let mut conn = RawConnection::connect(broker.addr())?;
        let (pid, e0) = new_producer(&mut conn, 4, None)?;
        let (other, _) = new_producer(&mut conn, 4, None)?;
        (pid, e0, other)
    };
    ensure!(
        pid >= 0 && e0 == 0 && other_pid >= 0 && other_pid != pid,
        "InitProducerId v4 gave ({pid}, {e0}) and then {other_pid}; want two distinct ids with epoch 0"
    );
    let a = values("a", 3);
    let b = values("b", 3);
    let c = values("c", 3);
    let d = values("d", 2);
    let batch_a = idempotent_batch(pid, e0, 0, &a);

    let (a_at, e1, batch_b, b_at, batch_c, c_at) = {
        let mut part = Partition {
            broker: &broker,
            conn: RawConnection::connect(broker.addr())?,
            topic: topic.clone(),
        };
        part.reconnect()?;
        let a_at = part.expect_written("first send of seq 0", &batch_a, None, 3)?;
        part.expect_written("retry of seq 0", &batch_a, Some(a_at), 0)?;
        part.expect_refused(
            "seq 5 after seq 0..=2 (a gap)",
            &idempotent_batch(pid, e0, 5, &values("gap", 1)),
            OUT_OF_ORDER_SEQUENCE_NUMBER,
        )?;
        part.expect_refused(
            "seq 7 from a producer id with no state here",
            &idempotent_batch(other_pid, 0, 7, &values("unknown", 1)),
            UNKNOWN_PRODUCER_ID,
        )?;

        let mut conn = RawConnection::connect(broker.addr())?;
        let bumped = new_producer(&mut conn, 4, Some((pid, e0)))?;
        ensure!(
            bumped == (pid, e0 + 1),
            "InitProducerId v4 with the current ({pid}, {e0}) gave {bumped:?}, want ({pid}, {})",
            e0 + 1
        );
        let e1 = bumped.1;
        let batch_b = idempotent_batch(pid, e1, 0, &b);
        let b_at = part.expect_written("seq 0 under the bumped epoch", &batch_b, None, 3)?;
        ensure!(b_at == a_at + 3, "b written at {b_at}, want {}", a_at + 3);
        part.expect_refused(
            "seq 3 under the old epoch",
            &idempotent_batch(pid, e0, 3, &values("old", 1)),
            INVALID_PRODUCER_EPOCH,
        )?;
        part.expect_written(
            "retry of seq 0 under the bumped epoch",
            &batch_b,
            Some(b_at),
            0,
        )?;

        // A clean restart: the state comes from the snapshot taken on close.
        drop(part);
        let t = Instant::now();
        broker.restart()?;
        println!(
            "SIGTERM restart: listening again after {}",
            secs(t.elapsed())
        );
        let mut part = Partition {
            broker: &broker,
            conn: RawConnection::connect(broker.addr())?,
            topic: topic.clone(),
        };
        part.reconnect()?;
        part.expect_written(
            "retry of seq 0 after a SIGTERM restart",
            &batch_b,
            Some(b_at),
            0,
        )?;
        part.expect_refused(
            "seq 3 under the old epoch after a SIGTERM restart",
            &idempotent_batch(pid, e0, 3, &values("old", 1)),
            INVALID_PRODUCER_EPOCH,
        )?;
        let batch_c = idempotent_batch(pid, e1, 3, &c);
        let c_at = part.expect_written("seq 3 after a SIGTERM restart", &batch_c, None, 3)?;
        ensure!(c_at == b_at + 3, "c written at {c_at}, want {}", b_at + 3);
        (a_at, e1, batch_b, b_at, batch_c, c_at)
    };

    // A crash: batch c is newer than any snapshot and must be replayed.
    broker.kill9()?;
    let t = Instant::now();
    broker.restart()?;
    println!(
        "kill -9 restart: listening again after {}",
        secs(t.elapsed())
    );
    {
        let mut part = Partition {
            broker: &broker,
            conn: RawConnection::connect(broker.addr())?,
            topic: topic.clone(),
        };
        part.reconnect()?;
        part.expect_written("retry of seq 3 after kill -9", &batch_c, Some(c_at), 0)?;
        part.expect_written("retry of seq 0 after kill -9", &batch_b, Some(b_at), 0)?;
        part.expect_refused(
            "seq 9 (a gap) after kill -9",
            &idempotent_batch(pid, e1, 9, &values("gap", 1)),
            OUT_OF_ORDER_SEQUENCE_NUMBER,
        )?;
        part.expect_refused(
            "seq 6 under the old epoch after kill -9",
            &idempotent_batch(pid, e0, 6, &values("old", 1)),
            INVALID_PRODUCER_EPOCH,
        )?;
        let d_at = part.expect_written(
            "seq 6 after kill -9",
            &idempotent_batch(pid, e1, 6, &d),
            None,
            2,
        )?;
        ensure!(d_at == c_at + 3, "d written at {d_at}, want {}", c_at + 3);
    }

    // The log holds each batch once, in order.
    let read = kafka::read_all(&broker.bootstrap(), &topic, 1, READ_TIMEOUT)?;
    let got: Vec<(i64, String)> = read
        .get(&0)
        .map(|msgs| {
            msgs.iter()
                .map(|m| {
                    let v = m.payload().map(String::from_utf8_lossy).unwrap_or_default();
                    (m.offset(), v.into_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<(i64, String)> = a
        .iter()
        .chain(&b)
        .chain(&c)
        .chain(&d)
        .enumerate()
        .map(|(i, v)| (a_at + i64::try_from(i).unwrap_or(0), v.clone()))
        .collect();
    ensure!(got == want, "the log holds {got:?}, want {want:?}");
    println!(
        "producer {pid}: epochs {e0}->{e1}; {} records at {a_at}..={}; retries answered with their original offsets before and after SIGTERM and kill -9",
        want.len(),
        a_at + i64::try_from(want.len())? - 1
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// 3. Producer ids are unique across brokers and crashes

/// The quorum leader as broker `id`'s Metadata names it.
fn controller_seen_by(cluster: &Cluster, id: i32) -> Result<i32> {
    let mut conn = RawConnection::connect(cluster.broker(id)?.addr())?;
    let version = conn.version_for::<MetadataRequest>(12)?;
    let resp = conn.request(
        version,
        &MetadataRequest::default().with_topics(Some(vec![])),
    )?;
    Ok(resp.controller_id.0)
}

/// The controller every live broker names, once they agree on a live one.
fn wait_for_controller(cluster: &Cluster, not: Option<i32>) -> Result<i32> {
    let mut last = BTreeMap::new();
    let r = wait_for(
        FAILOVER_DEADLINE,
        "the live brokers to agree on a live controller",
        || {
            last.clear();
            for id in cluster.live_ids() {
                last.insert(id, controller_seen_by(cluster, id)?);
            }
            let named: BTreeSet<i32> = last.values().copied().collect();
            Ok(match named.iter().next() {
                Some(&c) if named.len() == 1 && cluster.is_live(c) && Some(c) != not => Some(c),
                _ => None,
            })
        },
    );
    r.with_context(|| format!("last answers (broker -> controller): {last:?}"))
}

/// Asks broker `id` for `n` new producer ids, each on a new connection,
/// retrying an error (a broker whose controller fails over answers one)
/// until [`ALLOCATE_DEADLINE`].
fn allocate(cluster: &Cluster, id: i32, n: usize) -> Result<Vec<(i64, i16)>> {
    let mut out = Vec::new();
    for _ in 0..n {
        let got = wait_for(
            ALLOCATE_DEADLINE,
            &format!("a producer id from broker {id}"),
            || {
                let mut conn = RawConnection::connect(cluster.broker(id)?.addr())?;
                let resp = init_producer_id(&mut conn, 4, None)?;
                ensure!(
                    resp.error_code == 0,
                    "InitProducerId v4 answered {}",
                    error_name(resp.error_code)
                );
                Ok(Some((resp.producer_id.0, resp.producer_epoch)))
            },
        )?;
        out.push(got);
    }
    Ok(out)
}

#[test]
fn producer_ids_are_unique_across_brokers_and_restarts() -> Result<()> {
    const PER_ASK: usize = 5;
    let mut cluster = Cluster::start(BROKERS, ClusterOptions::default())?;
    // Every id handed out: (phase, broker, id, epoch).
    let mut handed: Vec<(String, i32, i64, i16)> = Vec::new();
    let mut ask = |cluster: &Cluster, phase: &str, ids: &[i32]| -> Result<()> {
        for &id in ids {
            for (pid, epoch) in allocate(cluster, id, PER_ASK)? {
                handed.push((phase.to_string(), id, pid, epoch));
            }
        }
        Ok(())
    };

    ask(&cluster, "first", &cluster.ids())?;

    let controller = wait_for_controller(&cluster, None)?;
    let other = cluster
        .ids()
        .into_iter()
        .find(|&id| id != controller)
        .context("no broker besides the controller")?;
    cluster.kill9(other)?;
    ask(
        &cluster,
        &format!("broker {other} down"),
        &cluster.live_ids(),
    )?;
    cluster.restart(other)?;
    ask(
        &cluster,
        &format!("broker {other} restarted"),
        &cluster.ids(),
    )?;

    cluster.kill9(controller)?;
    let next = wait_for_controller(&cluster, Some(controller))?;
    println!("controller {controller} killed; {next} took over");
    ask(
        &cluster,
        &format!("controller {controller} down"),
        &cluster.live_ids(),
    )?;
    cluster.restart(controller)?;
    ask(
        &cluster,
        &format!("broker {controller} restarted"),
        &cluster.ids(),
    )?;
    cluster.check_no_crash()?;

    let mut first_seen: BTreeMap<i64, (String, i32)> = BTreeMap::new();
    let mut repeats = Vec::new();
    for (phase, broker, pid, epoch) in &handed {
        ensure!(
            *pid >= 0 && *epoch == 0,
            "broker {broker} ({phase}) gave producer id {pid} epoch {epoch}; want id >= 0, epoch 0"
        );
        if let Some(prev) = first_seen.insert(*pid, (phase.clone(), *broker)) {
            repeats.push(format!(
                "id {pid} from broker {broker} ({phase}) was already given by broker {} ({})",
                prev.1, prev.0
            ));
        }
    }
    // In the order they were handed out, one line per phase and broker.
    let mut lines: Vec<((&str, i32), Vec<i64>)> = Vec::new();
    for (phase, broker, pid, _) in &handed {
        match lines.last_mut() {
            Some((key, ids)) if *key == (phase.as_str(), *broker) => ids.push(*pid),
            _ => lines.push(((phase.as_str(), *broker), vec![*pid])),
        }
    }
    for ((phase, broker), ids) in &lines {
        println!("{phase}: broker {broker} gave {ids:?}");
    }
    println!(
        "{} producer ids handed out, {} distinct",
        handed.len(),
        first_seen.len()
    );
    ensure!(repeats.is_empty(), "producer ids repeated: {repeats:#?}");
    Ok(())
}

// ---------------------------------------------------------------------------
// 4. kafka-python's idempotent producer

/// Sends `count` values `v-00000`... to partition 0 with
/// `enable_idempotence=True` and prints the producer id, epoch and offsets.
const KAFKA_PYTHON_IDEMPOTENT: &str = r#"
import sys
from kafka import KafkaProducer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
producer = KafkaProducer(
    bootstrap_servers=bootstrap,
    enable_idempotence=True,
    linger_ms=5,
    batch_size=4096,
)
futures = [
    producer.send(topic, value=("v-%05d" % i).encode(), partition=0)
    for i in range(count)
]
producer.flush(timeout=60)
offsets = [f.get(timeout=60).offset for f in futures]
tm = producer._transaction_manager
pe = tm.producer_id_and_epoch if tm is not None else None
print("PRODUCER %d %d" % (pe.producer_id if pe else -1, pe.epoch if pe else -1), flush=True)
print("OFFSETS " + ",".join(str(o) for o in offsets), flush=True)
producer.close(timeout=10)
print("DONE", flush=True)
"#;

#[test]
fn kafka_python_idempotent_producer_writes_each_message_once() -> Result<()> {
    const COUNT: usize = 1_000;
    let python = find_program(
        "python3",
        "install Python 3 and `pip install kafka-python==3.0.12`",
    )?;
    let broker = BrokerProcess::start()?;
    let topic = unique_topic("eos-kpy");
    kafka::create_topic(&broker.bootstrap(), &topic, 1, &[])?;
    let out = cmd::run(
        Command::new(python).args(["-", &broker.bootstrap(), &topic, &COUNT.to_string()]),
        Some(KAFKA_PYTHON_IDEMPOTENT.as_bytes()),
        Duration::from_secs(120),
    )?;
    ensure!(
        out.status.success() && out.stdout.contains("DONE"),
        "kafka-python idempotent producer failed: {out}"
    );
    let field = |prefix: &str| -> Result<String> {
        out.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .map(str::to_string)
            .with_context(|| format!("no {prefix:?} line: {out}"))
    };
    let producer = field("PRODUCER ")?;
    let (pid, epoch) = producer
        .split_once(' ')
        .and_then(|(p, e)| Some((p.parse::<i64>().ok()?, e.parse::<i16>().ok()?)))
        .with_context(|| format!("bad PRODUCER line {producer:?}"))?;
    ensure!(
        pid >= 0 && epoch >= 0,
        "kafka-python ran without a producer id ({pid}, {epoch}): idempotence was not used\n{out}"
    );
    let offsets: Vec<i64> = field("OFFSETS ")?
        .split(',')
        .map(|o| o.parse::<i64>().context("offset"))
        .collect::<Result<_>>()?;
    let want_offsets: Vec<i64> = (0..i64::try_from(COUNT)?).collect();
    ensure!(
        offsets == want_offsets,
        "kafka-python got offsets {:?}... ({} of them), want 0..{COUNT}",
        &offsets[..offsets.len().min(20)],
        offsets.len()
    );

    let read = kafka::read_all(&broker.bootstrap(), &topic, 1, READ_TIMEOUT)?;
    let got: Vec<String> = read
        .get(&0)
        .map(|msgs| {
            msgs.iter()
                .map(|m| {
                    m.payload()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default()
                        .into_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    let want: Vec<String> = (0..COUNT).map(|i| format!("v-{i:05}")).collect();
    ensure!(
        got == want,
        "read back {} values, want {COUNT} exactly once in order; first difference at {:?}",
        got.len(),
        got.iter().zip(&want).position(|(g, w)| g != w)
    );

    // Every stored batch carries the producer's id and epoch, with
    // sequences following on from one batch to the next.
    let stored = stored_batches(broker.addr(), &topic, 0, i64::try_from(COUNT)?)?;
    let mut next_seq = 0i32;
    for b in &stored {
        ensure!(
            (b.producer_id, b.epoch, b.base_sequence) == (pid, epoch, next_seq),
            "batch at offset {} has (producer id, epoch, base sequence) {:?}, want ({pid}, {epoch}, {next_seq})",
            b.base_offset,
            (b.producer_id, b.epoch, b.base_sequence)
        );
        next_seq += b.records;
    }
    let batches = stored.len();
    println!(
        "kafka-python producer {pid} epoch {epoch}: {COUNT} messages in {batches} batches, each once, sequences 0..{next_seq}"
    );
    Ok(())
}
