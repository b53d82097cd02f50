//! rdkafka clients for a bootstrap address: configuration, topic creation and
//! reading partitions back by offset.
//!
//! Consumers here never join a group: they `assign()` partitions and never
//! commit. librdkafka still wants a `group.id` for `assign()`, so each consumer
//! gets a unique one; without commits no coordinator is needed.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message, OwnedMessage};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

/// Default deadline for metadata and admin round trips.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
const EVENTS_KEPT: usize = 50;

/// One delivery report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The opaque id the message was sent with.
    pub id: usize,
    pub partition: i32,
    /// -1 when the broker did not return one (acks=0) or delivery failed.
    pub offset: i64,
    pub error: Option<String>,
}

/// Client context for tests: keeps librdkafka's recent warnings and errors (for
/// failure messages) and, for producers, every delivery report.
#[derive(Clone, Default)]
pub struct TestContext {
    events: Arc<Mutex<VecDeque<String>>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
}

impl TestContext {
    fn push_event(&self, line: String) {
        if let Ok(mut ev) = self.events.lock() {
            if ev.len() == EVENTS_KEPT {
                ev.pop_front();
            }
            ev.push_back(line);
        }
    }

    /// librdkafka's recent warnings and errors, one per line.
    pub fn recent_events(&self) -> String {
        match self.events.lock() {
            Ok(ev) if !ev.is_empty() => ev.iter().cloned().collect::<Vec<_>>().join("\n"),
            _ => "(no librdkafka warnings)".to_string(),
        }
    }

    /// Takes the delivery reports received so far.
    pub fn take_deliveries(&self) -> Vec<Delivery> {
        self.deliveries
            .lock()
            .map(|mut d| std::mem::take(&mut *d))
            .unwrap_or_default()
    }

    /// How many delivery reports arrived so far.
    pub fn delivered(&self) -> usize {
        self.deliveries.lock().map(|d| d.len()).unwrap_or(0)
    }
}

impl ClientContext for TestContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.push_event(format!("librdkafka {level:?} {fac}: {log_message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.push_event(format!("librdkafka error {error}: {reason}"));
    }
}

impl ConsumerContext for TestContext {}

impl ProducerContext for TestContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, id: usize) {
        let d = match result {
            Ok(m) => Delivery {
                id,
                partition: m.partition(),
                offset: m.offset(),
                error: None,
            },
            Err((e, m)) => Delivery {
                id,
                partition: m.partition(),
                offset: -1,
                error: Some(e.to_string()),
            },
        };
        if let Ok(mut all) = self.deliveries.lock() {
            all.push(d);
        }
    }
}

/// Settings every client gets.
pub fn client_config(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        .set("broker.address.family", "v4")
        .set("client.id", "sluice-tests");
    c
}

/// A producer: large local queue, short linger, 30 s delivery timeout.
pub fn producer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("message.timeout.ms", "30000")
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "1000000")
        .set("queue.buffering.max.kbytes", "1048576");
    c
}

/// A consumer for `assign()` use: unique group id, no commits, no topic
/// auto-creation, starts at the earliest offset when a position is invalid.
pub fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut c = client_config(bootstrap);
    c.set("group.id", crate::unique_topic("sluice-tests-assign"))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("allow.auto.create.topics", "false");
    c
}

pub fn producer(config: &ClientConfig) -> Result<(BaseProducer<TestContext>, TestContext)> {
    let ctx = TestContext::default();
    let p = config
        .create_with_context(ctx.clone())
        .context("creating a producer")?;
    Ok((p, ctx))
}

pub fn consumer(bootstrap: &str) -> Result<(BaseConsumer<TestContext>, TestContext)> {
    let ctx = TestContext::default();
    let c = consumer_config(bootstrap)
        .create_with_context(ctx.clone())
        .context("creating a consumer")?;
    Ok((c, ctx))
}

pub fn admin(bootstrap: &str) -> Result<AdminClient<TestContext>> {
    client_config(bootstrap)
        .create_with_context(TestContext::default())
        .context("creating an admin client")
}

/// Runs an rdkafka future (admin calls) to completion on a small runtime.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("building a tokio runtime")?;
    Ok(rt.block_on(fut))
}

pub fn admin_options() -> AdminOptions {
    AdminOptions::new()
        .request_timeout(Some(ADMIN_TIMEOUT))
        .operation_timeout(Some(ADMIN_TIMEOUT))
}

/// CreateTopics for one topic; returns the per-topic result as the broker gave it.
pub fn try_create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
    let admin = admin(bootstrap)?;
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    let results = block_on(admin.create_topics([&topic], &admin_options()))?
        .with_context(|| format!("CreateTopics {name}"))?;
    match results.into_iter().next() {
        Some(Ok(_)) => Ok(Ok(())),
        Some(Err((_, code))) => Ok(Err(code)),
        None => bail!("CreateTopics {name}: empty result"),
    }
}

/// Creates a topic and waits until metadata shows all its partitions with a leader.
pub fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    configs: &[(&str, &str)],
) -> Result<()> {
    if let Err(code) = try_create_topic(bootstrap, name, partitions, configs)? {
        bail!(
            "CreateTopics {name} ({partitions} partitions, configs {configs:?}) failed: {code:?}"
        );
    }
    let want = usize::try_from(partitions)?;
    crate::wait_for(
        ADMIN_TIMEOUT,
        &format!("metadata for new topic {name}"),
        || Ok((partition_count(bootstrap, name)? == Some(want)).then_some(())),
    )
}

/// The partition count in metadata, `None` when the topic does not exist.
/// Partitions without a leader are not counted. Never auto-creates.
pub fn partition_count(bootstrap: &str, topic: &str) -> Result<Option<usize>> {
    let (c, _) = consumer(bootstrap)?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("Metadata for {topic}"))?;
    let Some(t) = md.topics().iter().find(|t| t.name() == topic) else {
        return Ok(None);
    };
    if let Some(err) = t.error() {
        let code = RDKafkaErrorCode::from(err);
        if code == RDKafkaErrorCode::UnknownTopicOrPartition
            || code == RDKafkaErrorCode::UnknownTopic
        {
            return Ok(None);
        }
        bail!("Metadata for {topic}: topic error {code:?}");
    }
    Ok(Some(
        t.partitions().iter().filter(|p| p.leader() >= 0).count(),
    ))
}

/// Low and high watermark of one partition.
pub fn watermarks(bootstrap: &str, topic: &str, partition: i32) -> Result<(i64, i64)> {
    let (c, ctx) = consumer(bootstrap)?;
    c.fetch_watermarks(topic, partition, Duration::from_secs(10))
        .with_context(|| format!("watermarks of {topic}/{partition}; {}", ctx.recent_events()))
}

/// Sends a record, polling the producer while its local queue is full.
pub fn send_blocking(
    producer: &BaseProducer<TestContext>,
    mut record: BaseRecord<'_, [u8], [u8], usize>,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                if Instant::now() > deadline {
                    bail!("producer queue stayed full for 60 s");
                }
                record = r;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(anyhow!("send failed: {e}")),
        }
    }
}

/// Flushes and returns every delivery report, failing if any is missing.
pub fn flush_all(
    producer: &BaseProducer<TestContext>,
    ctx: &TestContext,
    sent: usize,
) -> Result<Vec<Delivery>> {
    producer
        .flush(Duration::from_secs(60))
        .with_context(|| format!("flush; {}", ctx.recent_events()))?;
    crate::wait_until(Duration::from_secs(30), "all delivery reports", || {
        producer.poll(Duration::from_millis(10));
        ctx.delivered() >= sent
    })?;
    Ok(ctx.take_deliveries())
}

/// Reads `[from, to)` of each listed partition with one assigned consumer and
/// returns the messages by partition, in offset order. Offsets below `from` are
/// skipped (a fetch may start at the containing batch); a partition is done
/// once a message at `to - 1` or beyond has arrived.
pub fn read_partitions(
    bootstrap: &str,
    topic: &str,
    ranges: &[(i32, i64, i64)],
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<OwnedMessage>>> {
    let (c, ctx) = consumer(bootstrap)?;
    let mut tpl = TopicPartitionList::new();
    let mut out: BTreeMap<i32, Vec<OwnedMessage>> = BTreeMap::new();
    let mut next: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    for &(p, from, to) in ranges {
        out.insert(p, Vec::new());
        if from < to {
            tpl.add_partition_offset(topic, p, Offset::Offset(from))?;
            next.insert(p, (from, to));
        }
    }
    if next.is_empty() {
        return Ok(out);
    }
    c.assign(&tpl).context("assign")?;
    let deadline = Instant::now() + timeout;
    let mut errors: VecDeque<String> = VecDeque::new();
    while next.values().any(|(n, to)| n < to) {
        if Instant::now() > deadline {
            let progress: Vec<String> = next
                .iter()
                .map(|(p, (n, to))| format!("partition {p}: next offset {n}, want up to {to}"))
                .collect();
            bail!(
                "timed out after {timeout:?} reading {topic}: {}\nconsumer errors: {:?}\n{}",
                progress.join("; "),
                errors,
                ctx.recent_events()
            );
        }
        match c.poll(Duration::from_millis(200)) {
            None => {}
            Some(Err(e)) => {
                if errors.len() == 10 {
                    errors.pop_front();
                }
                errors.push_back(e.to_string());
            }
            Some(Ok(m)) => {
                let p = m.partition();
                let Some((n, _)) = next.get_mut(&p) else {
                    continue;
                };
                if m.offset() < *n {
                    continue;
                }
                *n = m.offset() + 1;
                if let Some(v) = out.get_mut(&p) {
                    v.push(m.detach());
                }
            }
        }
    }
    Ok(out)
}

/// Reads every partition of `topic` from its low to its high watermark as they
/// are now.
pub fn read_all(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<OwnedMessage>>> {
    let mut ranges = Vec::new();
    for p in 0..partitions {
        let (lo, hi) = watermarks(bootstrap, topic, p)?;
        ranges.push((p, lo, hi));
    }
    read_partitions(bootstrap, topic, &ranges, timeout)
}
