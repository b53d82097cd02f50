//! sluice-perf: a load generator in the manner of Kafka's
//! `kafka-producer-perf-test` and librdkafka's `rdkafka_performance`.
//!
//! ```text
//! sluice-perf produce --bootstrap HOST:PORT --topic T --messages N --size BYTES \
//!     --acks 0|1|all --partitions P [--rate MSGS/S] [--compression none|gzip|snappy|lz4|zstd] \
//!     [--linger-ms 5] [--batch-messages 10000]
//! sluice-perf consume --bootstrap HOST:PORT --topic T --messages N
//! ```
//!
//! A progress line every second, then one line to grep:
//! `RESULT produce msgs=.. errors=.. secs=.. msgs_per_sec=.. mb_per_sec=.. p50_ms=.. p99_ms=.. p999_ms=.. max_ms=..`
//! or `RESULT consume msgs=.. bytes=.. secs=.. msgs_per_sec=.. mb_per_sec=..`.
//! MB is 2^20 bytes, as in kafka-producer-perf-test. Exits 1 if any delivery failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use hdrhistogram::Histogram;
use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use sluice_tests::kafka;

const MIB: f64 = 1024.0 * 1024.0;
/// Latencies are recorded in microseconds up to this bound.
const MAX_LATENCY_US: u64 = 600_000_000;

#[derive(Parser)]
#[command(
    name = "sluice-perf",
    about = "Produce/consume load generator for Kafka-compatible brokers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Produce N messages of BYTES each and report throughput and latency.
    Produce(Opts),
    /// Read N messages from all partitions (assign from the beginning, no group).
    Consume(Opts),
}

#[derive(Args, Clone)]
struct Opts {
    #[arg(long)]
    bootstrap: String,
    #[arg(long)]
    topic: String,
    #[arg(long, default_value_t = 1_000_000)]
    messages: u64,
    /// Value size in bytes (messages carry no key).
    #[arg(long, default_value_t = 100)]
    size: usize,
    #[arg(long, default_value = "1", value_parser = ["0", "1", "all", "-1"])]
    acks: String,
    /// Partitions for the topic if produce has to create it.
    #[arg(long, default_value_t = 1)]
    partitions: i32,
    /// Pace sends at this many messages per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    compression: String,
    #[arg(long, default_value_t = 5)]
    linger_ms: u64,
    #[arg(long, default_value_t = 10_000)]
    batch_messages: u64,
    /// Give up after this many seconds without progress.
    #[arg(long, default_value_t = 60)]
    idle_timeout_secs: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Produce(o) => produce(&o),
        Cmd::Consume(o) => consume(&o),
    }
}

/// Delivery reports: counts and send-to-report latency.
struct PerfContext {
    start: Instant,
    delivered: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
    latency_us: Mutex<Histogram<u64>>,
}

impl ClientContext for PerfContext {}

impl ProducerContext for PerfContext {
    /// Nanoseconds since `start` when the message was handed to librdkafka.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, sent_at_ns: usize) {
        match result {
            Ok(_) => {
                let now_ns = self.start.elapsed().as_nanos() as u64;
                let us = now_ns.saturating_sub(sent_at_ns as u64) / 1_000;
                if let Ok(mut h) = self.latency_us.lock() {
                    h.saturating_record(us.max(1));
                }
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

fn ensure_topic(o: &Opts) -> Result<()> {
    match kafka::try_create_topic(&o.bootstrap, &o.topic, o.partitions, &[])? {
        Ok(()) => println!("created topic {} with {} partitions", o.topic, o.partitions),
        Err(RDKafkaErrorCode::TopicAlreadyExists) => {}
        Err(code) => bail!("creating topic {}: {code:?}", o.topic),
    }
    sluice_tests::wait_for(Duration::from_secs(30), "the topic in metadata", || {
        Ok(kafka::partition_count(&o.bootstrap, &o.topic)?.filter(|&n| n > 0))
    })?;
    Ok(())
}

/// Deterministic pseudo-random payload (xorshift), so compression has work to do.
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

fn ms(us: u64) -> f64 {
    us as f64 / 1_000.0
}

fn produce(o: &Opts) -> Result<()> {
    ensure_topic(o)?;
    let mut config = kafka::client_config(&o.bootstrap);
    config
        .set("acks", &o.acks)
        .set("compression.codec", &o.compression)
        .set("linger.ms", o.linger_ms.to_string())
        .set("batch.num.messages", o.batch_messages.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("message.timeout.ms", "120000");
    let ctx = PerfContext {
        start: Instant::now(),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        first_error: Mutex::new(None),
        latency_us: Mutex::new(Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)?),
    };
    let producer: ThreadedProducer<PerfContext> = config
        .create_with_context(ctx)
        .context("creating the producer")?;
    let ctx = producer.context();
    let value = payload(o.size);
    let start = ctx.start;
    let mut last_report = (Instant::now(), 0u64);
    let mut last_progress = (Instant::now(), 0u64);
    let idle = Duration::from_secs(o.idle_timeout_secs);
    println!(
        "producing {} messages of {} bytes to {} (acks={}, compression={}, rate={})",
        o.messages,
        o.size,
        o.topic,
        o.acks,
        o.compression,
        o.rate.map_or("max".to_string(), |r| format!("{r}/s"))
    );

    for i in 0..o.messages {
        if let Some(rate) = o.rate {
            let due = start + Duration::from_secs_f64(i as f64 / rate);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let mut record =
            BaseRecord::<(), [u8], usize>::with_opaque_to(&o.topic, 0).payload(&value[..]);
        loop {
            record.delivery_opaque = start.elapsed().as_nanos() as usize;
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    // The local queue drains as the broker acknowledges.
                    std::thread::sleep(Duration::from_millis(1));
                    if last_progress.0.elapsed() > idle {
                        bail!("no delivery progress for {idle:?} with a full queue");
                    }
                }
                Err((e, _)) => bail!("send failed: {e}"),
            }
            track_progress(ctx, &mut last_progress);
        }
        report_every_second(ctx, i + 1, &mut last_report);
    }
    let sent_secs = start.elapsed().as_secs_f64();
    loop {
        let done = ctx.delivered.load(Ordering::Relaxed) + ctx.errors.load(Ordering::Relaxed);
        if done >= o.messages {
            break;
        }
        // flush() returns early on timeout; keep reporting until all are in.
        let _ = producer.flush(Duration::from_secs(1));
        report_every_second(ctx, o.messages, &mut last_report);
        track_progress(ctx, &mut last_progress);
        if last_progress.0.elapsed() > idle {
            bail!(
                "no delivery progress for {idle:?}: {done} of {} reported; first error: {:?}",
                o.messages,
                ctx.first_error.lock().ok().and_then(|e| e.clone())
            );
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let errors = ctx.errors.load(Ordering::Relaxed);
    let h = ctx
        .latency_us
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|p| p.into_inner().clone());
    let rate = delivered as f64 / secs;
    println!("sending took {sent_secs:.3} s; all delivery reports after {secs:.3} s");
    println!(
        "RESULT produce msgs={delivered} errors={errors} secs={secs:.3} msgs_per_sec={rate:.0} mb_per_sec={:.2} \
         p50_ms={:.3} p99_ms={:.3} p999_ms={:.3} max_ms={:.3}",
        rate * o.size as f64 / MIB,
        ms(h.value_at_quantile(0.50)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
    );
    if errors > 0 {
        let first = ctx.first_error.lock().ok().and_then(|e| e.clone());
        bail!("{errors} deliveries failed; first error: {first:?}");
    }
    Ok(())
}

fn track_progress(ctx: &PerfContext, last: &mut (Instant, u64)) {
    let done = ctx.delivered.load(Ordering::Relaxed) + ctx.errors.load(Ordering::Relaxed);
    if done != last.1 {
        *last = (Instant::now(), done);
    }
}

fn report_every_second(ctx: &PerfContext, sent: u64, last: &mut (Instant, u64)) {
    let elapsed = last.0.elapsed();
    if elapsed < Duration::from_secs(1) {
        return;
    }
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    let p99 = ctx
        .latency_us
        .lock()
        .map(|h| h.value_at_quantile(0.99))
        .unwrap_or(0);
    println!(
        "progress produce sent={sent} delivered={delivered} errors={} msgs_per_sec={:.0} p99_ms={:.3}",
        ctx.errors.load(Ordering::Relaxed),
        (delivered - last.1.min(delivered)) as f64 / elapsed.as_secs_f64(),
        ms(p99)
    );
    *last = (Instant::now(), delivered);
}

fn consume(o: &Opts) -> Result<()> {
    let mut config = kafka::consumer_config(&o.bootstrap);
    config
        .set("fetch.wait.max.ms", "100")
        .set("queued.max.messages.kbytes", "262144")
        // librdkafka pauses fetching for fetch.queue.backoff.ms (default 1 s)
        // whenever its local queue is full; a consumer that drains the queue
        // as fast as this one would otherwise spend most of its time idle.
        .set("fetch.queue.backoff.ms", "10");
    let consumer: BaseConsumer<kafka::TestContext> = config
        .create_with_context(kafka::TestContext::default())
        .context("creating the consumer")?;
    let md = consumer
        .fetch_metadata(Some(&o.topic), Duration::from_secs(30))
        .context("fetching metadata")?;
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .find(|t| t.name() == o.topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect())
        .unwrap_or_default();
    if partitions.is_empty() {
        bail!("topic {} not found or has no partitions", o.topic);
    }
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(&o.topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    println!(
        "consuming {} messages from {} partitions of {}",
        o.messages,
        partitions.len(),
        o.topic
    );
    let start = Instant::now();
    let idle = Duration::from_secs(o.idle_timeout_secs);
    let (mut msgs, mut bytes) = (0u64, 0u64);
    let mut last_msg = Instant::now();
    let mut last_report = (Instant::now(), 0u64);
    while msgs < o.messages {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                msgs += 1;
                bytes += (m.payload_len() + m.key().map_or(0, <[u8]>::len)) as u64;
                last_msg = Instant::now();
            }
            Some(Err(e)) => eprintln!("consumer error: {e}"),
            None => {
                if last_msg.elapsed() > idle {
                    bail!(
                        "no message for {idle:?} after {msgs} of {}; {}",
                        o.messages,
                        consumer.context().recent_events()
                    );
                }
            }
        }
        let since = last_report.0.elapsed();
        if since >= Duration::from_secs(1) {
            println!(
                "progress consume msgs={msgs} msgs_per_sec={:.0}",
                (msgs - last_report.1) as f64 / since.as_secs_f64()
            );
            last_report = (Instant::now(), msgs);
        }
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    println!(
        "RESULT consume msgs={msgs} bytes={bytes} secs={secs:.3} msgs_per_sec={:.0} mb_per_sec={:.2}",
        msgs as f64 / secs,
        bytes as f64 / secs / MIB
    );
    Ok(())
}
