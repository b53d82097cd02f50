//! Wire compatibility: real clients (rdkafka, kcat, kafka-python) and raw
//! frames against a real `sluice-broker` process.
//!
//! Every test starts its own broker on `127.0.0.1:0` with a temp data dir.
//! Consumers assign partitions and never commit (consumer groups come later).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic, metadata_request::MetadataRequestTopic, ApiKey,
    ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, FetchRequest, ListOffsetsRequest,
    MetadataRequest, ProduceRequest,
};
use kafka_protocol::protocol::{Decodable, Request};
use rdkafka::admin::{AlterConfig, ResourceSpecifier};
use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_tests::batch::{self, TestRecord};
use sluice_tests::cmd::{self, find_program};
use sluice_tests::kafka::{self, Delivery};
use sluice_tests::raw::{self, RawConnection};
use sluice_tests::{now_ms, unique_topic, wait_for, wait_until, BrokerOptions, BrokerProcess};

const READ_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// Deterministic messages: everything about message `id` is derived from `id`,
// so a consumed message can be checked without keeping what was sent.

const KEYS: usize = 997;

fn key_of(id: usize) -> String {
    format!("key-{:04}", id % KEYS)
}

fn value_of(id: usize) -> Vec<u8> {
    let len = 16 + (id * 7919) % 240;
    let mut v = format!("value-{id}-").into_bytes();
    v.extend((0..len).map(|i| b'a' + ((id + i) % 26) as u8));
    v
}

fn headers_of(id: usize, tag: &str) -> Vec<(String, Option<Vec<u8>>)> {
    vec![
        ("id".to_string(), Some(id.to_string().into_bytes())),
        ("tag".to_string(), Some(tag.as_bytes().to_vec())),
        ("bin".to_string(), Some(vec![(id % 256) as u8, 0, 255])),
        ("null".to_string(), None),
    ]
}

fn timestamp_of(base: i64, id: usize) -> i64 {
    base + id as i64
}

fn owned_headers(hs: &[(String, Option<Vec<u8>>)]) -> OwnedHeaders {
    hs.iter().fold(OwnedHeaders::new(), |acc, (k, v)| {
        acc.insert(Header {
            key: k,
            value: v.as_ref(),
        })
    })
}

fn message_headers(m: &OwnedMessage) -> Vec<(String, Option<Vec<u8>>)> {
    m.headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                .collect()
        })
        .unwrap_or_default()
}

/// The `id` header of a consumed message.
fn id_of(m: &OwnedMessage) -> Result<usize> {
    let hs = message_headers(m);
    let (_, v) = hs.iter().find(|(k, _)| k == "id").with_context(|| {
        format!(
            "message at {}/{} has no id header: {hs:?}",
            m.partition(),
            m.offset()
        )
    })?;
    let v = v.as_ref().context("null id header")?;
    Ok(std::str::from_utf8(v)?.parse()?)
}

/// Checks key, value, headers and timestamp of a consumed message against what
/// message `id` was sent with.
fn check_intact(m: &OwnedMessage, id: usize, tag: &str, base_ts: i64) -> Result<()> {
    let at = format!("message id {id} at {}/{}", m.partition(), m.offset());
    ensure!(
        m.key() == Some(key_of(id).as_bytes()),
        "{at}: key {:?}",
        m.key().map(String::from_utf8_lossy)
    );
    ensure!(
        m.payload() == Some(&value_of(id)[..]),
        "{at}: value differs ({:?} bytes)",
        m.payload().map(<[u8]>::len)
    );
    let hs = message_headers(m);
    ensure!(hs == headers_of(id, tag), "{at}: headers {hs:?}");
    ensure!(
        m.timestamp() == Timestamp::CreateTime(timestamp_of(base_ts, id)),
        "{at}: timestamp {:?}, sent CreateTime({})",
        m.timestamp(),
        timestamp_of(base_ts, id)
    );
    Ok(())
}

/// Produces messages `ids` (keyed, with headers and timestamps) and returns
/// the delivery reports, all of which must be successes unless acks=0.
fn produce_ids(
    bootstrap: &str,
    topic: &str,
    ids: std::ops::Range<usize>,
    extra: &[(&str, &str)],
    tag: &str,
    base_ts: i64,
) -> Result<Vec<Delivery>> {
    let mut config = kafka::producer_config(bootstrap);
    config.set("batch.num.messages", "10000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let (producer, ctx) = kafka::producer(&config)?;
    let n = ids.len();
    for id in ids {
        let key = key_of(id);
        let value = value_of(id);
        let record = BaseRecord::with_opaque_to(topic, id)
            .key(key.as_bytes())
            .payload(&value[..])
            .headers(owned_headers(&headers_of(id, tag)))
            .timestamp(timestamp_of(base_ts, id));
        kafka::send_blocking(&producer, record)?;
        producer.poll(Duration::ZERO);
    }
    let deliveries = kafka::flush_all(&producer, &ctx, n)?;
    let failed: Vec<&Delivery> = deliveries.iter().filter(|d| d.error.is_some()).collect();
    if !failed.is_empty() {
        bail!(
            "{} of {n} deliveries to {topic} failed, first: {:?}\n{}",
            failed.len(),
            failed[0],
            ctx.recent_events()
        );
    }
    Ok(deliveries)
}

/// Reads the whole topic and checks that every acknowledged delivery is present
/// exactly once, at its acknowledged offset, intact, and that nothing else is
/// there; per partition, ids increase with offsets (send order is kept).
fn verify_acked_exactly_once(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    deliveries: &[Delivery],
    tag: &str,
    base_ts: i64,
) -> Result<()> {
    verify_log(bootstrap, topic, partitions, deliveries, tag, base_ts, None)
}

/// Like [`verify_acked_exactly_once`], but when `unacked_sent` is
/// `Some(sent)` the log may also hold messages whose delivery failed (a crash
/// can persist a write before its acknowledgement goes out): any id below
/// `sent`, intact and at most once, at an offset no acknowledgement claims.
fn verify_log(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    deliveries: &[Delivery],
    tag: &str,
    base_ts: i64,
    unacked_sent: Option<usize>,
) -> Result<()> {
    let acked: HashMap<(i32, i64), usize> = deliveries
        .iter()
        .map(|d| ((d.partition, d.offset), d.id))
        .collect();
    ensure!(
        acked.len() == deliveries.len(),
        "two deliveries reported the same partition/offset"
    );
    let read = kafka::read_all(bootstrap, topic, partitions, READ_TIMEOUT)?;
    let mut seen = HashSet::new();
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    let mut total = 0;
    for (p, msgs) in &read {
        let mut last_id = None;
        for m in msgs {
            let id = id_of(m)?;
            check_intact(m, id, tag, base_ts)?;
            ensure!(
                seen.insert(id),
                "message id {id} appears twice (again at {p}/{})",
                m.offset()
            );
            match (acked.get(&(*p, m.offset())), unacked_sent) {
                (Some(&want), _) => ensure!(
                    want == id,
                    "{p}/{} holds id {id}, but id {want} was acknowledged there",
                    m.offset()
                ),
                (None, Some(sent)) => ensure!(
                    id < sent,
                    "{p}/{} holds id {id}, which was never sent",
                    m.offset()
                ),
                (None, None) => bail!(
                    "{p}/{} holds id {id}, which was never acknowledged there",
                    m.offset()
                ),
            }
            if let Some(prev) = last_id {
                ensure!(
                    id > prev,
                    "partition {p} out of send order: id {id} after id {prev} at offset {}",
                    m.offset()
                );
            }
            last_id = Some(id);
            let key = m.key().unwrap_or_default().to_vec();
            let first = *key_partition.entry(key).or_insert(*p);
            ensure!(
                first == *p,
                "key {} found in partitions {first} and {p}",
                key_of(id)
            );
            total += 1;
        }
    }
    let missing: Vec<&Delivery> = deliveries
        .iter()
        .filter(|d| !seen.contains(&d.id))
        .collect();
    ensure!(
        missing.is_empty(),
        "{} of {} acknowledged messages are missing (read {total}); first: {:?}",
        missing.len(),
        deliveries.len(),
        &missing[..missing.len().min(10)]
    );
    if unacked_sent.is_none() {
        ensure!(
            total == deliveries.len(),
            "read {total} messages, {} were acknowledged",
            deliveries.len()
        );
    }
    Ok(())
}

fn total_high_watermark(bootstrap: &str, topic: &str, partitions: i32) -> Result<i64> {
    let mut sum = 0;
    for p in 0..partitions {
        sum += kafka::watermarks(bootstrap, topic, p)?.1;
    }
    Ok(sum)
}

// ---------------------------------------------------------------------------
// Produce / consume round trips for every codec and acks level.

const ROUND_TRIP_PARTITIONS: i32 = 6;

/// Produces `n` keyed messages with `codec` and `acks` to a fresh 6-partition
/// topic and reads them back by partition and offset.
fn round_trip(broker: &BrokerProcess, codec: &str, acks: &str, n: usize) -> Result<()> {
    let bootstrap = broker.bootstrap();
    let topic = unique_topic(&format!("rt-{codec}-acks{}", acks.replace("all", "-1")));
    kafka::create_topic(&bootstrap, &topic, ROUND_TRIP_PARTITIONS, &[])?;
    let tag = format!("{codec}/{acks}");
    let base_ts = now_ms() - 3_600_000;
    let settings = [("compression.codec", codec), ("acks", acks)];
    let started = std::time::Instant::now();
    let deliveries = produce_ids(&bootstrap, &topic, 0..n, &settings, &tag, base_ts)
        .with_context(|| format!("producing {n} messages, codec {codec}, acks {acks}"))?;
    let produced_in = started.elapsed();
    check_stored_codec(broker, &topic, codec)?;
    if acks != "0" {
        verify_acked_exactly_once(
            &bootstrap,
            &topic,
            ROUND_TRIP_PARTITIONS,
            &deliveries,
            &tag,
            base_ts,
        )
        .with_context(|| format!("codec {codec}, acks {acks}, {n} messages"))?;
    } else {
        verify_acks0(&bootstrap, &topic, n, &tag, base_ts)?;
    }
    eprintln!(
        "round trip codec={codec} acks={acks} n={n}: produced in {produced_in:?}, total {:?}",
        started.elapsed()
    );
    Ok(())
}

/// The broker stores batches as the producer sent them: a raw Fetch shows the
/// producer's codec, with valid CRCs. (librdkafka sends a batch uncompressed
/// when compressing does not make it smaller, so codec 0 may appear too.)
fn check_stored_codec(broker: &BrokerProcess, topic: &str, codec: &str) -> Result<()> {
    let want = ["none", "gzip", "snappy", "lz4", "zstd"]
        .iter()
        .position(|c| *c == codec)
        .context("unknown codec")? as i16;
    let mut conn = RawConnection::connect(broker.addr())?;
    let data = conn.fetch(topic, 0, 0, 1 << 20)?;
    ensure!(
        data.error_code == 0,
        "raw fetch of {topic}/0: error {}",
        data.error_code
    );
    let batches = batch::split_batches(&data.records.unwrap_or_default());
    ensure!(
        !batches.is_empty(),
        "raw fetch of {topic}/0 returned no whole batch"
    );
    let codecs: Vec<i16> = batches.iter().map(|b| b.attributes & 0x07).collect();
    ensure!(
        codecs.iter().all(|&c| c == want || c == 0) && codecs.contains(&want),
        "{topic}/0: stored batches have codecs {codecs:?}, the producer used {want} ({codec}){}",
        if codec == "lz4" {
            " - librdkafka only compresses with LZ4 when the broker advertises FindCoordinator \
             (RD_KAFKA_FEATURE_LZ4 in rdkafka_feature.c) and silently sends uncompressed otherwise"
        } else {
            ""
        }
    );
    for b in &batches {
        ensure!(
            b.crc_ok(),
            "{topic}/0 batch at {}: stored CRC does not match",
            b.base_offset
        );
    }
    Ok(())
}

/// acks=0 may lose messages, so only what arrived is checked: intact, once,
/// same key -> same partition, send order per partition.
fn verify_acks0(bootstrap: &str, topic: &str, n: usize, tag: &str, base_ts: i64) -> Result<()> {
    // The broker may still be appending what the producer already wrote to the
    // socket; wait for everything, but settle for what arrived.
    let arrived = wait_for(Duration::from_secs(15), "acks=0 messages to land", || {
        Ok(
            (total_high_watermark(bootstrap, topic, ROUND_TRIP_PARTITIONS)? as usize >= n)
                .then_some(()),
        )
    });
    let read = kafka::read_all(bootstrap, topic, ROUND_TRIP_PARTITIONS, READ_TIMEOUT)?;
    let mut seen = HashSet::new();
    let mut key_partition: HashMap<Vec<u8>, i32> = HashMap::new();
    for (p, msgs) in &read {
        let mut last = None;
        for m in msgs {
            let id = id_of(m)?;
            ensure!(id < n, "unknown id {id}");
            check_intact(m, id, tag, base_ts)?;
            ensure!(seen.insert(id), "acks=0: id {id} appears twice");
            if let Some(prev) = last {
                ensure!(
                    id > prev,
                    "acks=0: partition {p} out of send order: {id} after {prev}"
                );
            }
            last = Some(id);
            let first = *key_partition
                .entry(m.key().unwrap_or_default().to_vec())
                .or_insert(*p);
            ensure!(
                first == *p,
                "acks=0: key {} in partitions {first} and {p}",
                key_of(id)
            );
        }
    }
    ensure!(
        !seen.is_empty(),
        "acks=0: not a single message arrived out of {n}"
    );
    if arrived.is_err() || seen.len() < n {
        eprintln!("acks=0: {} of {n} messages arrived", seen.len());
    }
    Ok(())
}

/// Messages per codec and acks level.
const ROUND_TRIP_MESSAGES: usize = 200_000;

fn round_trip_matrix(codec: &str, counts: [(&str, usize); 3]) -> Result<()> {
    let broker = BrokerProcess::start()?;
    for (acks, n) in counts {
        round_trip(&broker, codec, acks, n)?;
    }
    Ok(())
}

#[test]
fn keyed_messages_round_trip_uncompressed() -> Result<()> {
    round_trip_matrix(
        "none",
        [
            ("all", ROUND_TRIP_MESSAGES),
            ("1", ROUND_TRIP_MESSAGES),
            ("0", ROUND_TRIP_MESSAGES),
        ],
    )
}

#[test]
fn keyed_messages_round_trip_gzip() -> Result<()> {
    round_trip_matrix(
        "gzip",
        [
            ("all", ROUND_TRIP_MESSAGES),
            ("1", ROUND_TRIP_MESSAGES),
            ("0", ROUND_TRIP_MESSAGES),
        ],
    )
}

#[test]
fn keyed_messages_round_trip_snappy() -> Result<()> {
    round_trip_matrix(
        "snappy",
        [
            ("all", ROUND_TRIP_MESSAGES),
            ("1", ROUND_TRIP_MESSAGES),
            ("0", ROUND_TRIP_MESSAGES),
        ],
    )
}

#[test]
fn keyed_messages_round_trip_lz4() -> Result<()> {
    round_trip_matrix(
        "lz4",
        [
            ("all", ROUND_TRIP_MESSAGES),
            ("1", ROUND_TRIP_MESSAGES),
            ("0", ROUND_TRIP_MESSAGES),
        ],
    )
}

#[test]
fn keyed_messages_round_trip_zstd() -> Result<()> {
    round_trip_matrix(
        "zstd",
        [
            ("all", ROUND_TRIP_MESSAGES),
            ("1", ROUND_TRIP_MESSAGES),
            ("0", ROUND_TRIP_MESSAGES),
        ],
    )
}

// ---------------------------------------------------------------------------
// Restarts.

fn acked_writes_survive(kill: fn(&mut BrokerProcess) -> Result<()>) -> Result<()> {
    const PARTITIONS: i32 = 3;
    const N: usize = 5_000;
    let mut broker = BrokerProcess::start()?;
    let topic = unique_topic("restart");
    kafka::create_topic(&broker.bootstrap(), &topic, PARTITIONS, &[])?;
    let base_ts = now_ms() - 60_000;
    let acks_all = [("acks", "all")];
    let mut deliveries = produce_ids(
        &broker.bootstrap(),
        &topic,
        0..N,
        &acks_all,
        "restart",
        base_ts,
    )?;

    kill(&mut broker)?;
    broker.restart()?;

    deliveries.extend(produce_ids(
        &broker.bootstrap(),
        &topic,
        N..2 * N,
        &acks_all,
        "restart",
        base_ts,
    )?);
    verify_acked_exactly_once(
        &broker.bootstrap(),
        &topic,
        PARTITIONS,
        &deliveries,
        "restart",
        base_ts,
    )
}

#[test]
fn acked_writes_survive_graceful_restart() -> Result<()> {
    acked_writes_survive(|b| {
        let status = b.stop()?;
        ensure!(status.success(), "SIGTERM should exit 0, got {status}");
        Ok(())
    })
}

#[test]
fn acked_writes_survive_kill_9() -> Result<()> {
    acked_writes_survive(BrokerProcess::kill9)
}

/// kill -9 while an acks=all producer (no retries, so no client duplicates)
/// has requests in flight: every acknowledged message survives at its offset,
/// a write whose acknowledgement was lost may survive but only once, and the
/// restarted broker takes more writes.
#[test]
fn acked_writes_survive_kill_9_during_produce() -> Result<()> {
    const PARTITIONS: i32 = 3;
    let mut broker = BrokerProcess::start()?;
    let topic = unique_topic("crash");
    kafka::create_topic(&broker.bootstrap(), &topic, PARTITIONS, &[])?;
    let base_ts = now_ms() - 60_000;
    let mut config = kafka::producer_config(&broker.bootstrap());
    config
        .set("acks", "all")
        .set("message.send.max.retries", "0")
        .set("message.timeout.ms", "15000")
        .set("batch.num.messages", "500");
    let ctx = kafka::TestContext::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer_thread = {
        let (ctx, stop, topic) = (ctx.clone(), stop.clone(), topic.clone());
        std::thread::spawn(move || -> Result<usize> {
            let producer: BaseProducer<kafka::TestContext> =
                config.create_with_context(ctx.clone())?;
            let mut id = 0;
            while !stop.load(Ordering::Relaxed) {
                // Keep at most 20k messages outstanding.
                if id >= ctx.delivered() + 20_000 {
                    producer.poll(Duration::from_millis(10));
                    continue;
                }
                let (key, value) = (key_of(id), value_of(id));
                let record = BaseRecord::with_opaque_to(&topic, id)
                    .key(key.as_bytes())
                    .payload(&value[..])
                    .headers(owned_headers(&headers_of(id, "crash")))
                    .timestamp(timestamp_of(base_ts, id));
                kafka::send_blocking(&producer, record)?;
                producer.poll(Duration::ZERO);
                id += 1;
            }
            let _ = producer.flush(Duration::from_secs(30));
            wait_until(Duration::from_secs(60), "every delivery report", || {
                producer.poll(Duration::from_millis(10));
                ctx.delivered() >= id
            })?;
            Ok(id)
        })
    };
    let in_flight = wait_until(Duration::from_secs(30), "5000 delivery reports", || {
        ctx.delivered() >= 5_000
    });
    broker.kill9()?;
    let restarted = broker.restart();
    stop.store(true, Ordering::Relaxed);
    let sent = producer_thread
        .join()
        .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    in_flight?;
    restarted?;
    let reports = ctx.take_deliveries();
    let failed = reports.iter().filter(|d| d.error.is_some()).count();
    let mut acked: Vec<Delivery> = reports.into_iter().filter(|d| d.error.is_none()).collect();
    eprintln!(
        "kill -9 during produce: {sent} sent, {} acknowledged, {failed} failed",
        acked.len()
    );
    let more = produce_ids(
        &broker.bootstrap(),
        &topic,
        sent..sent + 2_000,
        &[("acks", "all")],
        "crash",
        base_ts,
    )?;
    acked.extend(more);
    verify_log(
        &broker.bootstrap(),
        &topic,
        PARTITIONS,
        &acked,
        "crash",
        base_ts,
        Some(sent + 2_000),
    )
}

#[test]
fn topics_and_configs_survive_restart() -> Result<()> {
    let mut broker = BrokerProcess::start()?;
    let topic = unique_topic("durable-config");
    let configs = [("retention.ms", "3600000"), ("segment.bytes", "1048576")];
    kafka::create_topic(&broker.bootstrap(), &topic, 4, &configs)?;
    let base_ts = now_ms();
    let deliveries = produce_ids(
        &broker.bootstrap(),
        &topic,
        0..40,
        &[("acks", "all")],
        "cfg",
        base_ts,
    )?;

    let status = broker.stop()?;
    ensure!(status.success(), "SIGTERM should exit 0, got {status}");
    broker.restart()?;

    let bootstrap = broker.bootstrap();
    ensure!(
        kafka::partition_count(&bootstrap, &topic)? == Some(4),
        "after restart metadata shows {:?} partitions for {topic}, created with 4",
        kafka::partition_count(&bootstrap, &topic)?
    );
    let entries = describe_topic_configs(&bootstrap, &topic)?;
    for (k, v) in configs {
        let e = entries
            .get(k)
            .with_context(|| format!("{k} missing after restart: {entries:?}"))?;
        ensure!(
            e.0.as_deref() == Some(v),
            "{k} after restart is {:?}, was created with {v}",
            e.0
        );
        ensure!(
            e.1 == rdkafka::admin::ConfigSource::DynamicTopic,
            "{k} source after restart is {:?}",
            e.1
        );
    }
    verify_acked_exactly_once(&bootstrap, &topic, 4, &deliveries, "cfg", base_ts)
}

type ConfigMap = BTreeMap<String, (Option<String>, rdkafka::admin::ConfigSource)>;

fn describe_topic_configs(bootstrap: &str, topic: &str) -> Result<ConfigMap> {
    let admin = kafka::admin(bootstrap)?;
    let res = kafka::block_on(
        admin.describe_configs([&ResourceSpecifier::Topic(topic)], &kafka::admin_options()),
    )?
    .context("DescribeConfigs")?;
    let resource = res
        .into_iter()
        .next()
        .context("DescribeConfigs: empty result")?
        .map_err(|code| anyhow::anyhow!("DescribeConfigs {topic}: {code:?}"))?;
    Ok(resource
        .entries
        .into_iter()
        .map(|e| (e.name, (e.value, e.source)))
        .collect())
}

#[test]
fn alter_configs_changes_a_topic_config() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let bootstrap = broker.bootstrap();
    let topic = unique_topic("alter");
    kafka::create_topic(&bootstrap, &topic, 1, &[("retention.ms", "3600000")])?;
    let admin = kafka::admin(&bootstrap)?;
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&topic)).set("retention.ms", "7200000");
    let res = kafka::block_on(admin.alter_configs([&alter], &kafka::admin_options()))?
        .context("AlterConfigs")?;
    for r in res {
        r.map_err(|(spec, code)| anyhow::anyhow!("AlterConfigs {spec:?}: {code:?}"))?;
    }
    let entries = describe_topic_configs(&bootstrap, &topic)?;
    let got = entries.get("retention.ms").and_then(|e| e.0.clone());
    ensure!(
        got.as_deref() == Some("7200000"),
        "retention.ms after AlterConfigs: {got:?}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Offsets: ListOffsets via rdkafka, DeleteRecords.

const TS_STEP: i64 = 1_000;

fn produce_timed(bootstrap: &str, topic: &str, partition: i32, n: usize, t0: i64) -> Result<()> {
    let mut config = kafka::producer_config(bootstrap);
    config.set("acks", "all");
    let (producer, ctx) = kafka::producer(&config)?;
    for i in 0..n {
        let value = format!("m{i}");
        let record = BaseRecord::with_opaque_to(topic, i)
            .partition(partition)
            .payload(value.as_bytes())
            .timestamp(t0 + i as i64 * TS_STEP);
        kafka::send_blocking(&producer, record)?;
    }
    let d = kafka::flush_all(&producer, &ctx, n)?;
    ensure!(
        d.iter().all(|d| d.error.is_none()),
        "delivery failed: {:?}",
        d.iter().find(|d| d.error.is_some())
    );
    Ok(())
}

fn offset_for_time(bootstrap: &str, topic: &str, partition: i32, ts: Offset) -> Result<Offset> {
    let (c, ctx) = kafka::consumer(bootstrap)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, ts)?;
    let res = c
        .offsets_for_times(tpl, Duration::from_secs(10))
        .with_context(|| format!("offsets_for_times {ts:?}; {}", ctx.recent_events()))?;
    let e = res
        .find_partition(topic, partition)
        .context("offsets_for_times: partition missing from the result")?;
    e.error()
        .with_context(|| format!("offsets_for_times {ts:?} partition error"))?;
    Ok(e.offset())
}

#[test]
fn list_offsets_earliest_latest_and_by_timestamp() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let topic = unique_topic("offsets");
    kafka::create_topic(&b, &topic, 2, &[])?;
    let t0 = now_ms() - 1_000_000;
    produce_timed(&b, &topic, 0, 100, t0)?;

    ensure!(
        kafka::watermarks(&b, &topic, 0)? == (0, 100),
        "watermarks p0 {:?}",
        kafka::watermarks(&b, &topic, 0)?
    );
    ensure!(
        kafka::watermarks(&b, &topic, 1)? == (0, 0),
        "watermarks of empty p1 {:?}",
        kafka::watermarks(&b, &topic, 1)?
    );
    let cases = [
        (Offset::Beginning, Offset::Offset(0), "earliest"),
        (Offset::End, Offset::Offset(100), "latest"),
        (
            Offset::Offset(t0 - 5),
            Offset::Offset(0),
            "before the first timestamp",
        ),
        (Offset::Offset(t0), Offset::Offset(0), "the first timestamp"),
        (
            Offset::Offset(t0 + 50 * TS_STEP),
            Offset::Offset(50),
            "an exact timestamp",
        ),
        (
            Offset::Offset(t0 + 50 * TS_STEP + 1),
            Offset::Offset(51),
            "between two timestamps",
        ),
        (
            Offset::Offset(t0 + 99 * TS_STEP),
            Offset::Offset(99),
            "the last timestamp",
        ),
        (
            Offset::Offset(t0 + 100 * TS_STEP),
            Offset::End,
            "after the last timestamp",
        ),
    ];
    for (query, want, what) in cases {
        let got = offset_for_time(&b, &topic, 0, query)?;
        ensure!(
            got == want,
            "ListOffsets for {what} ({query:?}) on p0: got {got:?}, want {want:?}"
        );
    }
    let empty = offset_for_time(&b, &topic, 1, Offset::Offset(t0))?;
    ensure!(
        empty == Offset::End,
        "ListOffsets by timestamp on an empty partition: {empty:?}, want End (-1)"
    );
    let latest_empty = offset_for_time(&b, &topic, 1, Offset::End)?;
    ensure!(
        latest_empty == Offset::Offset(0),
        "latest of an empty partition: {latest_empty:?}"
    );
    Ok(())
}

#[test]
fn delete_records_moves_low_watermark_and_survives_restart() -> Result<()> {
    let mut broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let topic = unique_topic("delete-records");
    kafka::create_topic(&b, &topic, 1, &[])?;
    let t0 = now_ms() - 1_000_000;
    produce_timed(&b, &topic, 0, 100, t0)?;

    let admin = kafka::admin(&b)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Offset(30))?;
    let res = kafka::block_on(admin.delete_records(&tpl, &kafka::admin_options()))?
        .context("DeleteRecords")?;
    let e = res
        .find_partition(&topic, 0)
        .context("DeleteRecords: partition missing")?;
    e.error().context("DeleteRecords partition error")?;
    ensure!(
        e.offset() == Offset::Offset(30),
        "DeleteRecords returned low watermark {:?}, want 30",
        e.offset()
    );
    ensure!(
        kafka::watermarks(&b, &topic, 0)? == (30, 100),
        "watermarks after DeleteRecords: {:?}",
        kafka::watermarks(&b, &topic, 0)?
    );
    let earliest = offset_for_time(&b, &topic, 0, Offset::Beginning)?;
    ensure!(
        earliest == Offset::Offset(30),
        "ListOffsets earliest after DeleteRecords: {earliest:?}"
    );
    let by_time = offset_for_time(&b, &topic, 0, Offset::Offset(t0))?;
    ensure!(
        by_time == Offset::Offset(30),
        "ListOffsets by a deleted timestamp: {by_time:?}, want 30"
    );
    let read = kafka::read_all(&b, &topic, 1, READ_TIMEOUT)?;
    let first = read[&0]
        .first()
        .map(|m| (m.offset(), m.payload().map(<[u8]>::to_vec)));
    ensure!(
        first == Some((30, Some(b"m30".to_vec()))),
        "first message after DeleteRecords: {first:?}"
    );
    ensure!(
        read[&0].len() == 70,
        "read {} messages after DeleteRecords, want 70",
        read[&0].len()
    );

    let status = broker.stop()?;
    ensure!(status.success(), "SIGTERM should exit 0, got {status}");
    broker.restart()?;
    let b = broker.bootstrap();
    ensure!(
        kafka::watermarks(&b, &topic, 0)? == (30, 100),
        "watermarks after restart: {:?}",
        kafka::watermarks(&b, &topic, 0)?
    );

    // Beyond the high watermark: OFFSET_OUT_OF_RANGE, nothing changes.
    let admin = kafka::admin(&b)?;
    let mut beyond = TopicPartitionList::new();
    beyond.add_partition_offset(&topic, 0, Offset::Offset(1_000))?;
    let res = kafka::block_on(admin.delete_records(&beyond, &kafka::admin_options()))?;
    let refused = match &res {
        Err(_) => true,
        Ok(tpl) => tpl
            .find_partition(&topic, 0)
            .is_some_and(|e| e.error().is_err()),
    };
    ensure!(
        refused,
        "DeleteRecords beyond the high watermark was accepted: {res:?}"
    );
    ensure!(
        kafka::watermarks(&b, &topic, 0)? == (30, 100),
        "watermarks after a refused DeleteRecords: {:?}",
        kafka::watermarks(&b, &topic, 0)?
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Topic names and auto-creation.

#[test]
fn invalid_topic_names_are_rejected() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let mut conn = RawConnection::connect(broker.addr())?;
    let version = conn.version_for::<CreateTopicsRequest>(7)?;
    let too_long = "x".repeat(250);
    let longest = "y".repeat(249);
    let invalid = [
        "bad/name",
        "with space",
        "ünïcode",
        "",
        ".",
        "..",
        "semi;colon",
        too_long.as_str(),
    ];
    let valid = ["ok.name_with-dashes", longest.as_str()];
    let topics = invalid
        .iter()
        .chain(valid.iter())
        .map(|name| {
            CreatableTopic::default()
                .with_name(raw::topic_name(name))
                .with_num_partitions(1)
                .with_replication_factor(1)
        })
        .collect();
    let req = CreateTopicsRequest::default()
        .with_topics(topics)
        .with_timeout_ms(10_000);
    let resp = conn.request(version, &req)?;
    let codes: HashMap<String, i16> = resp
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.error_code))
        .collect();
    for name in invalid {
        let code = codes.get(name);
        ensure!(
            code == Some(&17),
            "CreateTopics v{version} {name:?}: error {code:?}, want INVALID_TOPIC_EXCEPTION (17)"
        );
    }
    for name in valid {
        let code = codes.get(name);
        ensure!(
            code == Some(&0),
            "CreateTopics v{version} {:?}: error {code:?}, want 0",
            &name[..name.len().min(40)]
        );
    }

    // Metadata with auto-creation must not create an invalid name either.
    let mversion = conn.version_for::<MetadataRequest>(12)?;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(raw::topic_name("bad/name")))
        ]))
        .with_allow_auto_topic_creation(true);
    let resp = conn.request(mversion, &req)?;
    let t = resp
        .topics
        .first()
        .context("Metadata: no topic in the response")?;
    ensure!(
        t.error_code == 17,
        "Metadata v{mversion} for \"bad/name\" with auto-create: error {}, want 17",
        t.error_code
    );
    Ok(())
}

#[test]
fn producing_to_a_new_topic_auto_creates_it_with_one_partition() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let topic = unique_topic("auto");
    let base_ts = now_ms();
    let d = produce_ids(&b, &topic, 0..10, &[("acks", "all")], "auto", base_ts)?;
    let partitions = kafka::partition_count(&b, &topic)?;
    ensure!(
        partitions == Some(1),
        "auto-created topic has {partitions:?} partitions, want 1 (num.partitions default)"
    );
    verify_acked_exactly_once(&b, &topic, 1, &d, "auto", base_ts)
}

#[test]
fn config_file_sets_default_partitions_and_segment_size() -> Result<()> {
    let mut broker = BrokerProcess::start_with(BrokerOptions {
        config_yaml: Some("num.partitions: 3\nlog.segment.bytes: 16384\n".to_string()),
        ..BrokerOptions::default()
    })?;
    let topic = unique_topic("small-segments");
    let base_ts = now_ms();
    let deliveries = produce_ids(
        &broker.bootstrap(),
        &topic,
        0..3_000,
        &[("acks", "all"), ("batch.num.messages", "50")],
        "seg",
        base_ts,
    )?;
    ensure!(
        kafka::partition_count(&broker.bootstrap(), &topic)? == Some(3),
        "num.partitions: 3 in the config file, auto-created topic has {:?}",
        kafka::partition_count(&broker.bootstrap(), &topic)?
    );
    let segments = count_files(broker.data_dir(), ".log")?;
    ensure!(
        segments > 3 * 2,
        "~400 KB in 3 partitions with log.segment.bytes 16384 should roll many segments; found {segments} .log files"
    );
    broker.restart()?;
    verify_acked_exactly_once(&broker.bootstrap(), &topic, 3, &deliveries, "seg", base_ts)
}

fn count_files(dir: &Path, suffix: &str) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            n += count_files(&path, suffix)?;
        } else if path.to_string_lossy().ends_with(suffix) {
            n += 1;
        }
    }
    Ok(n)
}

// ---------------------------------------------------------------------------
// Other clients: kcat (librdkafka 2.0.2) and kafka-python.

const KCAT_HINT: &str = "install it with `apt-get install -y kcat` (scripts/test.sh does)";

#[test]
fn kcat_lists_produces_and_consumes() -> Result<()> {
    let kcat = find_program("kcat", KCAT_HINT)?;
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let listed = unique_topic("kcat-list");
    kafka::create_topic(&b, &listed, 3, &[])?;
    let out = cmd::run(
        Command::new(&kcat).args(["-b", &b, "-L"]),
        None,
        Duration::from_secs(30),
    )?
    .require_success()?;
    let want = format!("topic \"{listed}\" with 3 partitions");
    ensure!(
        out.stdout.contains(&want),
        "kcat -L does not list {want:?}: {out}"
    );

    let topic = unique_topic("kcat-rt");
    kafka::create_topic(&b, &topic, 1, &[])?;
    let lines: Vec<String> = (0..500)
        .map(|i| format!("k{}:line {i} {}", i % 7, "z".repeat(i % 50)))
        .collect();
    let input = lines.join("\n") + "\n";
    cmd::run(
        Command::new(&kcat).args(["-P", "-b", &b, "-t", &topic, "-K", ":", "-X", "acks=all"]),
        Some(input.as_bytes()),
        Duration::from_secs(60),
    )?
    .require_success()?;
    let out = cmd::run(
        Command::new(&kcat).args([
            "-C",
            "-b",
            &b,
            "-t",
            &topic,
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k:%s\\n",
        ]),
        None,
        Duration::from_secs(60),
    )?
    .require_success()?;
    let got: Vec<&str> = out.stdout.lines().collect();
    ensure!(
        got == lines.iter().map(String::as_str).collect::<Vec<_>>(),
        "kcat consumed {} lines, produced {}; first difference at {:?}\n{out}",
        got.len(),
        lines.len(),
        got.iter().zip(&lines).position(|(g, l)| g != l)
    );
    Ok(())
}

#[test]
fn kafka_python_admin_and_clients() -> Result<()> {
    let python = find_program(
        "python3",
        "install Python 3 and `pip install kafka-python==3.0.12`",
    )?;
    let broker = BrokerProcess::start()?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kafka_python_clients.py");
    let topic = unique_topic("kpy");
    let out = cmd::run(
        Command::new(python).arg(&script).args([
            "--bootstrap",
            &broker.bootstrap(),
            "--topic",
            &topic,
        ]),
        None,
        Duration::from_secs(180),
    )?;
    ensure!(out.status.success(), "kafka-python script failed: {out}");
    ensure!(
        out.stdout.contains("ALL CHECKS PASSED"),
        "kafka-python script did not finish: {out}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Malformed input and raw protocol.

/// Peak virtual size of a process in KiB (`VmPeak` in /proc).
fn vm_peak_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmPeak:"))
        .context("no VmPeak")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmPeak value")?
        .parse()?)
}

fn assert_api_versions_answered(
    broker: &BrokerProcess,
    conn: Option<&mut RawConnection>,
) -> Result<()> {
    let mut fresh;
    let conn = match conn {
        Some(c) => c,
        None => {
            fresh = RawConnection::connect(broker.addr())?;
            &mut fresh
        }
    };
    let resp = conn
        .api_versions()
        .context("ApiVersions on a healthy connection")?;
    ensure!(
        !resp.api_keys.is_empty(),
        "ApiVersions answered with no api keys"
    );
    Ok(())
}

#[test]
fn garbage_frame_closes_only_that_connection() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let mut bystander = RawConnection::connect(broker.addr())?;
    assert_api_versions_answered(&broker, Some(&mut bystander))?;

    // Metadata v12 header whose client id claims 30000 bytes that never come.
    let mut bad = RawConnection::connect(broker.addr())?;
    let mut body = BytesMut::new();
    body.put_i16(3);
    body.put_i16(12);
    body.put_i32(7);
    body.put_i16(30_000);
    body.extend_from_slice(&[0xAB; 40]);
    bad.write_frame(&body)?;
    bad.expect_closed(Duration::from_secs(10))
        .context("frame with an undecodable header")?;

    // A frame too short to hold a request header.
    let mut short = RawConnection::connect(broker.addr())?;
    short.write_frame(&[0x00, 0x12, 0x00])?;
    short
        .expect_closed(Duration::from_secs(10))
        .context("3-byte frame")?;

    // A valid CreateTopics v2 header, then a body whose first topic name claims
    // 32767 bytes of which 3 are there.
    let mut junk = RawConnection::connect(broker.addr())?;
    let mut frame = raw::raw_header(ApiKey::CreateTopics as i16, 2, 9, "junk");
    frame.put_i32(1);
    frame.put_i16(i16::MAX);
    frame.extend_from_slice(b"abc");
    junk.write_frame(&frame)?;
    junk.expect_closed(Duration::from_secs(10))
        .context("CreateTopics v2 with a garbage body")?;

    assert_api_versions_answered(&broker, Some(&mut bystander))?;
    assert_api_versions_answered(&broker, None)
}

#[test]
fn oversized_length_prefix_is_refused_without_allocating() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let pid = broker.pid().context("broker pid")?;
    let mut bystander = RawConnection::connect(broker.addr())?;
    assert_api_versions_answered(&broker, Some(&mut bystander))?;
    let before = vm_peak_kib(pid)?;
    for len in [100 * 1024 * 1024 + 1, 1 << 30, i32::MAX, -1] {
        let mut conn = RawConnection::connect(broker.addr())?;
        let mut bytes = len.to_be_bytes().to_vec();
        bytes.extend_from_slice(&[0u8; 16]);
        conn.write_raw(&bytes)?;
        conn.expect_closed(Duration::from_secs(10))
            .with_context(|| format!("length prefix {len} must close the connection"))?;
    }
    // Allocating from a 1 GiB or 2 GiB prefix shows in the peak virtual size
    // even if the pages are never touched; new malloc arenas or thread stacks
    // stay far below this margin.
    let after = vm_peak_kib(pid)?;
    ensure!(
        after < before + 900 * 1024,
        "broker peak virtual size grew from {before} KiB to {after} KiB after oversized length prefixes: \
         it allocated from the client's length"
    );
    assert_api_versions_answered(&broker, Some(&mut bystander))
}

#[test]
fn api_versions_advertises_ranges_clients_need() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let mut conn = RawConnection::connect(broker.addr())?;
    let v0 = conn.api_versions()?;
    // The flexible version must decode exactly too (tagged fields, header v0).
    let v3 = conn.request(
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(kafka_protocol::protocol::StrBytes::from_static_str(
                "sluice-tests",
            ))
            .with_client_software_version(kafka_protocol::protocol::StrBytes::from_static_str(
                "0.1",
            )),
    )?;
    ensure!(v3.error_code == 0, "ApiVersions v3 error {}", v3.error_code);
    for resp in [&v0, &v3] {
        for k in &resp.api_keys {
            ensure!(
                k.min_version <= k.max_version,
                "api {} advertises {}..{}",
                k.api_key,
                k.min_version,
                k.max_version
            );
        }
    }
    let need: [(i16, &str, i16); 4] = [
        (ProduceRequest::KEY, "Produce", 3),
        (FetchRequest::KEY, "Fetch", 4),
        (ListOffsetsRequest::KEY, "ListOffsets", 1),
        (MetadataRequest::KEY, "Metadata", 1),
    ];
    for (key, name, version) in need {
        let range = raw::advertised_key(&v0, key);
        ensure!(
            range.is_some_and(|(lo, hi)| lo <= version && version <= hi),
            "{name} must include v{version} (Kafka 4 clients need it); advertised {range:?}"
        );
    }
    let av = raw::advertised::<ApiVersionsRequest>(&v0);
    ensure!(
        av.is_some_and(|(lo, hi)| lo == 0 && hi >= 3),
        "ApiVersions advertised {av:?}, want 0..=3+"
    );
    Ok(())
}

#[test]
fn api_versions_with_unsupported_version_answers_v0_with_error_35() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let mut conn = RawConnection::connect(broker.addr())?;
    // ApiVersions v127 with a flexible (v2) header and a v3-style body.
    let mut frame = BytesMut::new();
    frame.put_i16(ApiKey::ApiVersions as i16);
    frame.put_i16(127);
    frame.put_i32(42);
    frame.put_i16(4);
    frame.extend_from_slice(b"test");
    frame.put_u8(0); // header tagged fields
    frame.put_u8(5);
    frame.extend_from_slice(b"test"); // client_software_name (compact)
    frame.put_u8(4);
    frame.extend_from_slice(b"0.1"); // client_software_version (compact)
    frame.put_u8(0); // body tagged fields
    conn.write_frame(&frame)?;
    let mut resp = conn.read_frame().context("no answer to ApiVersions v127")?;
    ensure!(
        raw::response_correlation(&resp) == Some(42),
        "correlation id {:?}",
        raw::response_correlation(&resp)
    );
    let _ = resp.split_to(4);
    let body = ApiVersionsResponse::decode(&mut resp, 0)
        .context("answer must be an ApiVersions v0 response")?;
    ensure!(
        resp.is_empty(),
        "{} bytes after the ApiVersions v0 response: not v0 format",
        resp.len()
    );
    ensure!(
        body.error_code == 35,
        "error code {}, want UNSUPPORTED_VERSION (35)",
        body.error_code
    );
    let av = raw::advertised::<ApiVersionsRequest>(&body);
    ensure!(
        av.is_some_and(|(lo, _)| lo == 0),
        "the error response must carry the supported ranges; ApiVersions: {av:?}"
    );
    // The client retries with a supported version on the same connection.
    assert_api_versions_answered(&broker, Some(&mut conn))
}

#[test]
fn unknown_api_key_and_version_get_unsupported_version_or_a_close() -> Result<()> {
    let broker = BrokerProcess::start()?;
    for (key, version, what) in [
        (32_000i16, 0i16, "unknown api key 32000"),
        (ApiKey::Metadata as i16, 99, "Metadata v99"),
    ] {
        let mut conn = RawConnection::connect(broker.addr())?;
        let frame = raw::raw_header(key, version, 77, "test");
        conn.write_frame(&frame)?;
        match conn.read_frame() {
            Ok(resp) => {
                ensure!(
                    raw::response_correlation(&resp) == Some(77),
                    "{what}: answer with correlation {:?}",
                    raw::response_correlation(&resp)
                );
                // No schema exists for the answer; the only sensible body
                // starts with the error code.
                let code = resp.get(4..6).map(|b| i16::from_be_bytes([b[0], b[1]]));
                ensure!(
                    code == Some(35),
                    "{what}: answered with error code {code:?}, want UNSUPPORTED_VERSION (35) or a closed connection"
                );
                eprintln!(
                    "{what}: answered UNSUPPORTED_VERSION in {} bytes",
                    resp.len()
                );
            }
            Err(_) => {
                conn.expect_closed(Duration::from_secs(1))
                    .with_context(|| format!("{what}: neither answered nor closed"))?;
                eprintln!("{what}: connection closed");
            }
        }
        assert_api_versions_answered(&broker, None).with_context(|| format!("after {what}"))?;
    }
    Ok(())
}

fn sample_records(n: usize, t0: i64) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord::new(&format!("k{i}"), &format!("raw value {i}"), t0 + i as i64))
        .collect()
}

#[test]
fn produce_with_bad_crc_or_old_magic_is_rejected_and_appends_nothing() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let topic = unique_topic("crc");
    kafka::create_topic(&broker.bootstrap(), &topic, 1, &[])?;
    let mut conn = RawConnection::connect(broker.addr())?;
    let t0 = now_ms();
    let good = batch::encode_batch(&sample_records(3, t0)).freeze();
    let r = conn.produce(&topic, 0, good, -1)?;
    ensure!(
        r.error_code == 0 && r.base_offset == 0,
        "valid batch: error {} base offset {}",
        r.error_code,
        r.base_offset
    );
    let latest = |conn: &mut RawConnection| -> Result<i64> {
        let p = conn.list_offset(&topic, 0, -1)?;
        ensure!(
            p.error_code == 0,
            "ListOffsets latest error {}",
            p.error_code
        );
        Ok(p.offset)
    };
    ensure!(
        latest(&mut conn)? == 3,
        "latest after a 3-record batch: {}",
        latest(&mut conn)?
    );

    let mut bad_crc = batch::encode_batch(&sample_records(2, t0));
    batch::corrupt_crc(&mut bad_crc);
    let r = conn.produce(&topic, 0, bad_crc.freeze(), -1)?;
    ensure!(
        r.error_code == 2,
        "batch with a wrong CRC: error {}, want CORRUPT_MESSAGE (2)",
        r.error_code
    );
    ensure!(
        latest(&mut conn)? == 3,
        "a rejected batch moved latest to {}",
        latest(&mut conn)?
    );

    let mut magic1 = batch::encode_batch(&sample_records(2, t0));
    magic1[batch::MAGIC] = 1;
    let r = conn.produce(&topic, 0, magic1.freeze(), -1)?;
    ensure!(
        r.error_code == 87 || r.error_code == 2,
        "batch with magic 1: error {}, want INVALID_RECORD (87) or CORRUPT_MESSAGE (2)",
        r.error_code
    );
    ensure!(
        latest(&mut conn)? == 3,
        "a rejected batch moved latest to {}",
        latest(&mut conn)?
    );

    // batchLength pointing past the end of the record set.
    let mut truncated = batch::encode_batch(&sample_records(2, t0));
    truncated.truncate(truncated.len() - 5);
    let r = conn.produce(&topic, 0, truncated.freeze(), -1)?;
    ensure!(
        r.error_code != 0,
        "a truncated batch was accepted at offset {}",
        r.base_offset
    );
    ensure!(
        latest(&mut conn)? == 3,
        "a rejected batch moved latest to {}",
        latest(&mut conn)?
    );

    let read = kafka::read_all(&broker.bootstrap(), &topic, 1, READ_TIMEOUT)?;
    let keys: Vec<_> = read[&0]
        .iter()
        .map(|m| m.key().map(<[u8]>::to_vec))
        .collect();
    ensure!(
        keys == vec![
            Some(b"k0".to_vec()),
            Some(b"k1".to_vec()),
            Some(b"k2".to_vec())
        ],
        "log holds {keys:?}"
    );
    Ok(())
}

#[test]
fn fetched_batches_are_byte_identical_to_produced() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let topic = unique_topic("bytes");
    kafka::create_topic(&broker.bootstrap(), &topic, 1, &[])?;
    let mut conn = RawConnection::connect(broker.addr())?;
    let t0 = now_ms();
    let sent: Vec<Bytes> = [1usize, 5, 2, 40]
        .iter()
        .map(|&n| batch::encode_batch(&sample_records(n, t0)).freeze())
        .collect();
    let mut next = 0i64;
    let mut bases = Vec::new();
    for b in &sent {
        let r = conn.produce(&topic, 0, b.clone(), -1)?;
        ensure!(r.error_code == 0, "produce error {}", r.error_code);
        ensure!(
            r.base_offset == next,
            "base offset {}, want {next}",
            r.base_offset
        );
        bases.push(next);
        next += batch::split_batches(b)[0].record_count as i64;
    }
    let data = conn.fetch(&topic, 0, 0, 1 << 20)?;
    ensure!(data.error_code == 0, "fetch error {}", data.error_code);
    ensure!(
        data.high_watermark == next,
        "fetch high watermark {}, want {next}",
        data.high_watermark
    );
    let records = data.records.context("fetch returned null records")?;
    let got = batch::split_batches(&records);
    ensure!(
        got.len() == sent.len(),
        "fetched {} batches, produced {}",
        got.len(),
        sent.len()
    );
    for (i, (g, s)) in got.iter().zip(&sent).enumerate() {
        let s = &batch::split_batches(s)[0];
        ensure!(
            g.base_offset == bases[i],
            "batch {i}: base offset {}, want {}",
            g.base_offset,
            bases[i]
        );
        ensure!(
            g.crc_ok(),
            "batch {i}: CRC does not match after the round trip"
        );
        ensure!(
            g.content_without_offsets() == s.content_without_offsets(),
            "batch {i}: bytes differ from what was produced (the broker must not re-encode)"
        );
    }
    // At the end of the log a fetch returns an empty record set, not null.
    let end = conn.fetch(&topic, 0, next, 1 << 20)?;
    ensure!(
        end.error_code == 0,
        "fetch at the end: error {}",
        end.error_code
    );
    ensure!(
        end.records.as_ref().is_some_and(Bytes::is_empty),
        "fetch at the end returned {:?}, want empty",
        end.records.as_ref().map(Bytes::len)
    );
    Ok(())
}

#[test]
fn killed_broker_frees_its_port_and_restarts_on_the_same_data_dir() -> Result<()> {
    let mut broker = BrokerProcess::start()?;
    let addr = broker.addr();
    broker.kill9()?;
    wait_until(
        Duration::from_secs(5),
        "the port to refuse connections",
        || std::net::TcpStream::connect(addr).is_err(),
    )?;
    broker.restart()?;
    assert_api_versions_answered(&broker, None)
}
