//! `sluice_broker::client` against real broker processes: every call of the
//! client the console and the operator use, with rdkafka producers and
//! consumers writing what the client reads (compressed batches, a real
//! consumer group), and a three-broker cluster for routing to leaders and
//! retrying after a leader dies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::BaseRecord;
use sluice_broker::client::{
    Client, ClientConfig, ClientError, ConfigOp, Isolation, NewTopic, OffsetSpec, ProduceRecord,
};
use sluice_tests::cluster::{Cluster, ClusterOptions};
use sluice_tests::{kafka, unique_topic, wait_for, BrokerOptions, BrokerProcess};

const DEADLINE: Duration = Duration::from_secs(30);

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building a tokio runtime")
}

fn start_broker() -> Result<BrokerProcess> {
    BrokerProcess::start_with(BrokerOptions {
        config_yaml: Some("group.initial.rebalance.delay.ms: 0\n".to_string()),
        ..BrokerOptions::default()
    })
}

fn config() -> ClientConfig {
    ClientConfig {
        client_id: "sluice-client-test".to_string(),
        request_timeout: Duration::from_secs(15),
        connect_timeout: Duration::from_secs(2),
    }
}

fn new_topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
    NewTopic {
        name: name.to_string(),
        partitions,
        replication_factor: rf,
        configs: BTreeMap::new(),
    }
}

/// Creates topics through the client; every one must succeed.
async fn create(client: &Client, topics: Vec<NewTopic>) -> Result<()> {
    for (name, r) in client.create_topics(topics, false).await? {
        r.map_err(|e| anyhow!("creating {name}: {e}"))?;
    }
    Ok(())
}

fn value(s: &str) -> ProduceRecord {
    ProduceRecord {
        value: Some(s.as_bytes().to_vec()),
        ..ProduceRecord::default()
    }
}

#[test]
fn metadata_lists_the_broker_and_created_topics() -> Result<()> {
    let broker = start_broker()?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = Client::connect(&broker.bootstrap(), config()).await?;
        assert_eq!(client.bootstrap(), broker.bootstrap());
        let topic = unique_topic("client-md");
        create(&client, vec![new_topic(&topic, 3, 1)]).await?;
        let md = client.metadata(None).await?;
        ensure!(md.brokers.len() == 1, "brokers: {:?}", md.brokers);
        let b = &md.brokers[0];
        ensure!(
            b.addr() == broker.bootstrap(),
            "broker {b:?} at {}",
            broker.bootstrap()
        );
        ensure!(md.controller_id == b.id, "controller {}", md.controller_id);
        ensure!(md.cluster_id.is_some(), "no cluster id");
        let t = md.topic(&topic).context("the new topic is listed")?;
        ensure!(t.error.is_none() && !t.internal && t.id.is_some(), "{t:?}");
        ensure!(t.partitions.len() == 3, "{t:?}");
        for (i, p) in t.partitions.iter().enumerate() {
            ensure!(p.index == i as i32, "{t:?}");
            ensure!(
                p.leader == b.id && p.replicas == [b.id] && p.isr == [b.id],
                "{p:?}"
            );
            ensure!(p.leader_epoch >= 0 && p.offline.is_empty(), "{p:?}");
        }
        // Asking for one topic, and for one that does not exist.
        let missing = unique_topic("client-md-missing");
        let some = client
            .metadata(Some(&[topic.clone(), missing.clone()]))
            .await?;
        ensure!(some.topics.len() == 2, "{:?}", some.topics);
        let m = some
            .topic(&missing)
            .context("the missing topic is answered")?;
        ensure!(
            m.error.as_ref().map(|e| e.name.as_str()) == Some("UNKNOWN_TOPIC_OR_PARTITION"),
            "{m:?}"
        );
        Ok(())
    })
}

#[test]
fn topics_are_created_configured_grown_and_deleted() -> Result<()> {
    let broker = start_broker()?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = Client::connect(&broker.bootstrap(), config()).await?;
        let topic = unique_topic("client-admin");
        let mut t = new_topic(&topic, 2, 1);
        t.configs.insert("retention.ms".into(), "3600000".into());

        // validate_only creates nothing.
        let r = client.create_topics(vec![t.clone()], true).await?;
        ensure!(r.len() == 1 && r[0].1.is_ok(), "{r:?}");
        let md = client.metadata(Some(std::slice::from_ref(&topic))).await?;
        ensure!(
            md.topic(&topic).is_some_and(|t| t.error.is_some()),
            "validate_only created {topic}"
        );

        create(&client, vec![t.clone()]).await?;
        let again = client.create_topics(vec![t], false).await?;
        let err = again[0].1.clone().expect_err("a second create fails");
        ensure!(err.name == "TOPIC_ALREADY_EXISTS", "{err}");

        let configs = client.describe_topic_configs(&topic).await?;
        let retention = configs
            .iter()
            .find(|c| c.name == "retention.ms")
            .context("retention.ms is described")?;
        ensure!(
            retention.value.as_deref() == Some("3600000") && retention.source == "topic",
            "{retention:?}"
        );
        let cleanup = configs
            .iter()
            .find(|c| c.name == "cleanup.policy")
            .context("cleanup.policy is described")?;
        ensure!(cleanup.source != "topic", "{cleanup:?}");

        client
            .alter_topic_configs(
                &topic,
                &[
                    ConfigOp::Set("segment.bytes".into(), "1048576".into()),
                    ConfigOp::Delete("retention.ms".into()),
                ],
            )
            .await?;
        let configs = client.describe_topic_configs(&topic).await?;
        let get = |n: &str| configs.iter().find(|c| c.name == n).cloned();
        let seg = get("segment.bytes").context("segment.bytes")?;
        ensure!(
            seg.value.as_deref() == Some("1048576") && seg.source == "topic",
            "{seg:?}"
        );
        let retention = get("retention.ms").context("retention.ms")?;
        ensure!(retention.source != "topic", "{retention:?}");
        let bad = client
            .alter_topic_configs(
                &topic,
                &[ConfigOp::Set("retention.ms".into(), "soon".into())],
            )
            .await
            .expect_err("a bad value is refused");
        ensure!(
            bad.api().is_some_and(|e| e.name == "INVALID_CONFIG"),
            "{bad}"
        );

        client.create_partitions(&topic, 5).await?;
        let md = client.metadata(Some(std::slice::from_ref(&topic))).await?;
        ensure!(
            md.topic(&topic).map(|t| t.partitions.len()) == Some(5),
            "{md:?}"
        );
        let shrink = client
            .create_partitions(&topic, 3)
            .await
            .expect_err("partitions cannot shrink");
        ensure!(
            shrink.api().is_some_and(|e| e.name == "INVALID_PARTITIONS"),
            "{shrink}"
        );

        let deleted = client.delete_topics(std::slice::from_ref(&topic)).await?;
        ensure!(deleted.len() == 1 && deleted[0].1.is_ok(), "{deleted:?}");
        let md = client.metadata(None).await?;
        ensure!(md.topic(&topic).is_none(), "{topic} still listed");
        let again = client.delete_topics(std::slice::from_ref(&topic)).await?;
        ensure!(
            again[0].1.as_ref().err().map(|e| e.name.as_str())
                == Some("UNKNOWN_TOPIC_OR_PARTITION"),
            "{again:?}"
        );
        Ok(())
    })
}

#[test]
fn offsets_are_listed_earliest_latest_and_by_timestamp() -> Result<()> {
    let broker = start_broker()?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = Client::connect(&broker.bootstrap(), config()).await?;
        let topic = unique_topic("client-offsets");
        create(&client, vec![new_topic(&topic, 2, 1)]).await?;
        for (i, ts) in [1_000i64, 2_000, 3_000].into_iter().enumerate() {
            let r = ProduceRecord {
                timestamp: Some(ts),
                ..value(&format!("v{i}"))
            };
            let (p, off) = client.produce(&topic, Some(0), r).await?;
            ensure!((p, off) == (0, i as i64), "record {i} at {p}/{off}");
        }
        let parts = [(topic.clone(), 0), (topic.clone(), 1), (topic.clone(), 7)];
        let get = |m: &BTreeMap<(String, i32), _>, p: i32| -> Result<(i64, i64)> {
            match m.get(&(topic.clone(), p)) {
                Some(Ok(sluice_broker::client::ListedOffset { offset, timestamp })) => {
                    Ok((*offset, *timestamp))
                }
                other => bail!("partition {p}: {other:?}"),
            }
        };
        let earliest = client
            .list_offsets(&parts, OffsetSpec::Earliest, Isolation::ReadUncommitted)
            .await?;
        ensure!(
            get(&earliest, 0)?.0 == 0 && get(&earliest, 1)?.0 == 0,
            "{earliest:?}"
        );
        let unknown = earliest.get(&(topic.clone(), 7));
        ensure!(
            matches!(unknown, Some(Err(e)) if e.name == "UNKNOWN_TOPIC_OR_PARTITION"),
            "{unknown:?}"
        );
        let latest = client
            .list_offsets(&parts[..2], OffsetSpec::Latest, Isolation::ReadCommitted)
            .await?;
        ensure!(
            get(&latest, 0)?.0 == 3 && get(&latest, 1)?.0 == 0,
            "{latest:?}"
        );
        let by_ts = client
            .list_offsets(
                &parts[..1],
                OffsetSpec::Timestamp(1_500),
                Isolation::ReadUncommitted,
            )
            .await?;
        ensure!(get(&by_ts, 0)? == (1, 2_000), "{by_ts:?}");
        let max = client
            .list_offsets(
                &parts[..1],
                OffsetSpec::MaxTimestamp,
                Isolation::ReadUncommitted,
            )
            .await?;
        ensure!(get(&max, 0)? == (2, 3_000), "{max:?}");
        Ok(())
    })
}

#[test]
fn produced_records_fetch_back_with_key_headers_and_timestamp() -> Result<()> {
    let broker = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime()?;
    let topic = unique_topic("client-roundtrip");
    let client = rt.block_on(Client::connect(&bootstrap, config()))?;
    rt.block_on(create(&client, vec![new_topic(&topic, 4, 1)]))?;

    let headers = vec![
        ("trace".to_string(), Some(b"abc".to_vec())),
        ("trace".to_string(), Some(b"def".to_vec())),
        ("empty".to_string(), None),
    ];
    // An hour old: an explicit timestamp, but inside retention (an older
    // one lets the broker's retention check delete the segment under us).
    let timestamp = sluice_tests::now_ms() - 3_600_000;
    let record = ProduceRecord {
        key: Some(b"customer-42".to_vec()),
        value: Some(b"hello".to_vec()),
        headers: headers.clone(),
        timestamp: Some(timestamp),
    };
    let (partition, offset) = rt.block_on(client.produce(&topic, None, record))?;

    // librdkafka's murmur2_random partitioner is the Java client's: the
    // same key must land on the same partition.
    let mut cfg = kafka::producer_config(&bootstrap);
    cfg.set("partitioner", "murmur2_random");
    let (producer, ctx) = kafka::producer(&cfg)?;
    kafka::send_blocking(
        &producer,
        BaseRecord::with_opaque_to(&topic, 0)
            .key(b"customer-42".as_slice())
            .payload(b"from rdkafka".as_slice()),
    )?;
    let deliveries = kafka::flush_all(&producer, &ctx, 1)?;
    ensure!(
        deliveries.len() == 1 && deliveries[0].partition == partition,
        "rdkafka put the key on {deliveries:?}, the client on {partition}"
    );

    // A fetch returns one segment's batches at most, and the old timestamp
    // rolls a new segment: read on until both records are in.
    let fetched = rt.block_on(fetch_until(&client, &topic, partition, offset, 2))?;
    ensure!(fetched.records.len() == 2, "{fetched:?}");
    let r = &fetched.records[0];
    ensure!(r.partition == partition && r.offset == offset, "{r:?}");
    ensure!(r.key.as_deref() == Some(b"customer-42".as_slice()), "{r:?}");
    ensure!(r.value.as_deref() == Some(b"hello".as_slice()), "{r:?}");
    ensure!(r.headers == headers, "{r:?}");
    ensure!(r.timestamp == timestamp, "{r:?}");
    ensure!(
        fetched.records[1].value.as_deref() == Some(b"from rdkafka".as_slice()),
        "{fetched:?}"
    );
    ensure!(fetched.high_watermark == offset + 2, "{fetched:?}");
    ensure!(fetched.next_offset == offset + 2, "{fetched:?}");
    ensure!(fetched.log_start_offset == 0, "{fetched:?}");

    // At the end: nothing, and the next offset stays put.
    let end = rt.block_on(client.fetch(
        &topic,
        partition,
        offset + 2,
        1 << 20,
        Isolation::ReadCommitted,
    ))?;
    ensure!(
        end.records.is_empty() && end.next_offset == offset + 2,
        "{end:?}"
    );

    // Unkeyed records rotate over the partitions.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..8 {
        let (p, _) = rt.block_on(client.produce(&topic, None, value(&format!("u{i}"))))?;
        seen.insert(p);
    }
    ensure!(seen.len() == 4, "unkeyed records went to {seen:?}");

    let bad = rt
        .block_on(client.produce(&topic, Some(9), value("nowhere")))
        .expect_err("partition 9 does not exist");
    ensure!(
        bad.api()
            .is_some_and(|e| e.name == "UNKNOWN_TOPIC_OR_PARTITION"),
        "{bad}"
    );
    Ok(())
}

#[test]
fn batches_compressed_by_rdkafka_are_decoded() -> Result<()> {
    let broker = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime()?;
    let client = rt.block_on(Client::connect(&bootstrap, config()))?;
    for codec in ["gzip", "snappy", "lz4", "zstd"] {
        let topic = unique_topic(&format!("client-{codec}"));
        rt.block_on(create(&client, vec![new_topic(&topic, 1, 1)]))?;
        let mut cfg = kafka::producer_config(&bootstrap);
        cfg.set("compression.type", codec).set("linger.ms", "50");
        let (producer, ctx) = kafka::producer(&cfg)?;
        let n = 200;
        for i in 0..n {
            let payload = format!("{codec} record {i} {}", "x".repeat(100));
            kafka::send_blocking(
                &producer,
                BaseRecord::with_opaque_to(&topic, i)
                    .partition(0)
                    .key(payload.as_bytes()[..codec.len()].as_ref())
                    .payload(payload.as_bytes())
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "i",
                        value: Some(i.to_string().as_bytes()),
                    })),
            )?;
        }
        kafka::flush_all(&producer, &ctx, n)?;
        let mut got = Vec::new();
        let mut offset = 0;
        let deadline = Instant::now() + DEADLINE;
        while got.len() < n {
            ensure!(
                Instant::now() < deadline,
                "{codec}: only {} records",
                got.len()
            );
            let f =
                rt.block_on(client.fetch(&topic, 0, offset, 16 << 10, Isolation::ReadUncommitted))?;
            got.extend(f.records);
            offset = f.next_offset;
        }
        for (i, r) in got.iter().enumerate() {
            let want = format!("{codec} record {i} {}", "x".repeat(100));
            ensure!(r.offset == i as i64, "{codec}: {r:?}");
            ensure!(
                r.value.as_deref() == Some(want.as_bytes()),
                "{codec}: {r:?}"
            );
            ensure!(r.key.as_deref() == Some(codec.as_bytes()), "{codec}: {r:?}");
            ensure!(
                r.headers == [("i".to_string(), Some(i.to_string().into_bytes()))],
                "{codec}: {r:?}"
            );
        }
    }
    Ok(())
}

/// Fetches from `from` until `n` records arrived; returns the last answer
/// with every record.
async fn fetch_until(
    client: &Client,
    topic: &str,
    partition: i32,
    from: i64,
    n: usize,
) -> Result<sluice_broker::client::FetchedRecords> {
    let deadline = Instant::now() + DEADLINE;
    let mut records = Vec::new();
    let mut offset = from;
    loop {
        let mut f = client
            .fetch(
                topic,
                partition,
                offset,
                1 << 20,
                Isolation::ReadUncommitted,
            )
            .await?;
        ensure!(f.next_offset >= offset, "next offset went back: {f:?}");
        records.append(&mut f.records);
        offset = f.next_offset;
        if records.len() >= n {
            f.records = records;
            return Ok(f);
        }
        ensure!(
            Instant::now() < deadline,
            "{topic}-{partition}: {} of {n} records from {from}: {records:?}",
            records.len()
        );
    }
}

/// An rdkafka group member polling on its own thread until dropped.
struct Polling {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Polling {
    fn start(consumer: BaseConsumer) -> Polling {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(50));
            }
            consumer.unsubscribe();
            // Dropping the consumer leaves the group.
        });
        Polling {
            stop,
            thread: Some(thread),
        }
    }

    fn close(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Polling {
    fn drop(&mut self) {
        self.close();
    }
}

#[test]
fn consumer_groups_are_listed_described_committed_and_deleted() -> Result<()> {
    let broker = start_broker()?;
    let bootstrap = broker.bootstrap();
    let rt = runtime()?;
    let client = rt.block_on(Client::connect(&bootstrap, config()))?;
    let topic = unique_topic("client-groups");
    let group = unique_topic("client-group");
    rt.block_on(create(&client, vec![new_topic(&topic, 3, 1)]))?;

    let mut cfg = kafka::client_config(&bootstrap);
    cfg.set("group.id", &group)
        .set("client.id", "client-test-member")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    let consumer: BaseConsumer = cfg.create().context("creating a group member")?;
    consumer.subscribe(&[&topic])?;
    let mut member = Polling::start(consumer);

    let described = wait_for(
        DEADLINE,
        "the group to be Stable with the member's assignment",
        || {
            let d = rt.block_on(client.describe_groups(std::slice::from_ref(&group)))?;
            let g = d.into_iter().next().context("one description")?;
            let assigned = g.members.len() == 1 && !g.members[0].assignment.is_empty();
            Ok((g.state == "Stable" && assigned).then_some(g))
        },
    )?;
    ensure!(described.protocol_type == "consumer", "{described:?}");
    ensure!(
        described.error.is_none() && !described.protocol.is_empty(),
        "{described:?}"
    );
    let m = &described.members[0];
    ensure!(
        m.client_id == "client-test-member" && !m.member_id.is_empty(),
        "{m:?}"
    );
    ensure!(m.assignment == [(topic.clone(), vec![0, 1, 2])], "{m:?}");

    let listed = rt.block_on(client.list_groups())?;
    let l = listed
        .iter()
        .find(|g| g.group_id == group)
        .with_context(|| format!("{group} in {listed:?}"))?;
    ensure!(
        l.protocol_type == "consumer" && l.state == "Stable",
        "{l:?}"
    );

    // Admin commits only work on an empty group.
    let offsets: BTreeMap<(String, i32), i64> =
        [((topic.clone(), 0), 5), ((topic.clone(), 2), 7)].into();
    let refused = rt.block_on(client.commit_offsets(&group, &offsets))?;
    ensure!(refused.values().all(|r| r.is_err()), "{refused:?}");
    let deleted = rt.block_on(client.delete_groups(std::slice::from_ref(&group)))?;
    ensure!(
        deleted[0].1.as_ref().err().map(|e| e.name.as_str()) == Some("NON_EMPTY_GROUP"),
        "{deleted:?}"
    );

    member.close();
    wait_for(DEADLINE, "the group to be Empty", || {
        let d = rt.block_on(client.describe_groups(std::slice::from_ref(&group)))?;
        Ok(d.first().is_some_and(|g| g.state == "Empty").then_some(()))
    })?;
    let committed = rt.block_on(client.commit_offsets(&group, &offsets))?;
    ensure!(
        committed.len() == 2 && committed.values().all(|r| r.is_ok()),
        "{committed:?}"
    );
    let read = rt.block_on(client.committed_offsets(&group))?;
    ensure!(read == offsets, "committed {read:?}, wanted {offsets:?}");

    let deleted = rt.block_on(client.delete_groups(std::slice::from_ref(&group)))?;
    ensure!(deleted.len() == 1 && deleted[0].1.is_ok(), "{deleted:?}");
    let listed = rt.block_on(client.list_groups())?;
    ensure!(listed.iter().all(|g| g.group_id != group), "{listed:?}");
    Ok(())
}

#[test]
fn log_dir_sizes_grow_with_writes() -> Result<()> {
    let broker = start_broker()?;
    let rt = runtime()?;
    rt.block_on(async {
        let client = Client::connect(&broker.bootstrap(), config()).await?;
        let topic = unique_topic("client-sizes");
        create(&client, vec![new_topic(&topic, 2, 1)]).await?;
        let before = client.log_dir_sizes().await?;
        ensure!(before.get(&(topic.clone(), 0)) == Some(&0), "{before:?}");
        for i in 0..10 {
            client
                .produce(&topic, Some(0), value(&format!("{i}{}", "y".repeat(1000))))
                .await?;
        }
        let after = client.log_dir_sizes().await?;
        let size = after.get(&(topic.clone(), 0)).copied().unwrap_or(0);
        ensure!(size > 10_000, "partition 0 is {size} bytes: {after:?}");
        ensure!(after.get(&(topic.clone(), 1)) == Some(&0), "{after:?}");
        Ok(())
    })
}

#[test]
fn unreachable_bootstrap_fails_fast_naming_the_address() -> Result<()> {
    let rt = runtime()?;
    // A port nothing listens on.
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let started = Instant::now();
    let err = match rt.block_on(Client::connect(&addr, config())) {
        Ok(_) => bail!("connected to {addr}, where nothing listens"),
        Err(e) => e,
    };
    ensure!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    ensure!(matches!(err, ClientError::Connect { .. }), "{err:?}");
    ensure!(err.to_string().contains(&addr), "{err}");

    // Two dead addresses: both named.
    let other = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.to_string()
    };
    let err = match rt.block_on(Client::connect(&format!("{addr},{other}"), config())) {
        Ok(_) => bail!("connected to nothing"),
        Err(e) => e,
    };
    let text = err.to_string();
    ensure!(
        text.contains(&addr) && text.contains(&other) && text.contains("no broker reachable"),
        "{text}"
    );
    let empty = rt.block_on(Client::connect(" , ", config()));
    ensure!(
        matches!(empty, Err(ClientError::EmptyBootstrap(_))),
        "an empty bootstrap list"
    );
    Ok(())
}

#[test]
fn requests_follow_leaders_and_survive_a_leader_kill() -> Result<()> {
    let mut cluster = Cluster::start(3, ClusterOptions::default())?;
    let rt = runtime()?;
    let client = rt.block_on(Client::connect(&cluster.bootstrap_all(), config()))?;
    let topic = unique_topic("client-cluster");
    let partitions = 6;
    rt.block_on(create(&client, vec![new_topic(&topic, partitions, 3)]))?;
    cluster.wait_for_isr(&topic, partitions, 3, DEADLINE)?;

    let md = rt.block_on(client.metadata(Some(std::slice::from_ref(&topic))))?;
    ensure!(md.brokers.len() == 3, "{md:?}");
    let leaders: std::collections::BTreeSet<i32> = md
        .topic(&topic)
        .context("topic listed")?
        .partitions
        .iter()
        .map(|p| p.leader)
        .collect();
    ensure!(leaders.len() >= 2, "every partition led by {leaders:?}");

    // Every partition is written and read at its own leader.
    for p in 0..partitions {
        let (got, off) = rt.block_on(client.produce(&topic, Some(p), value(&format!("a{p}"))))?;
        ensure!((got, off) == (p, 0), "partition {p}: {got}/{off}");
        let f = rt.block_on(fetch_until(&client, &topic, p, 0, 1))?;
        ensure!(f.records.len() == 1, "partition {p}: {f:?}");
    }
    let listed = rt.block_on(
        client.list_offsets(
            &(0..partitions)
                .map(|p| (topic.clone(), p))
                .collect::<Vec<_>>(),
            OffsetSpec::Latest,
            Isolation::ReadUncommitted,
        ),
    )?;
    ensure!(
        listed.values().all(|r| matches!(r, Ok(o) if o.offset == 1)),
        "{listed:?}"
    );

    // Kill partition 0's leader; once the cluster has elected another, the
    // client (still holding the old leader) gets there after one refresh.
    let old = cluster
        .leader_of(&topic, 0)?
        .context("partition 0 has a leader")?;
    cluster.kill9(old)?;
    let new = cluster.wait_for_leader(&topic, 0, Some(old), DEADLINE)?;
    ensure!(new != old, "leader did not move");
    let (p, off) = rt.block_on(client.produce(&topic, Some(0), value("after")))?;
    ensure!((p, off) == (0, 1), "after the kill: {p}/{off}");
    let f = rt.block_on(fetch_until(&client, &topic, 0, 0, 2))?;
    let values: Vec<_> = f.records.iter().map(|r| r.value.clone()).collect();
    ensure!(
        values == [Some(b"a0".to_vec()), Some(b"after".to_vec())],
        "{values:?}"
    );
    let md = rt.block_on(client.metadata(None))?;
    ensure!(
        md.topic(&topic)
            .and_then(|t| t.partitions.first())
            .map(|p| p.leader)
            == Some(new),
        "{md:?}"
    );
    // The other partitions still answer, wherever they moved.
    let listed = rt.block_on(
        client.list_offsets(
            &(0..partitions)
                .map(|p| (topic.clone(), p))
                .collect::<Vec<_>>(),
            OffsetSpec::Earliest,
            Isolation::ReadUncommitted,
        ),
    )?;
    ensure!(listed.values().all(|r| r.is_ok()), "{listed:?}");
    let sizes = rt.block_on(client.log_dir_sizes());
    // A dead broker is still in no metadata: sizes come from the live ones.
    let sizes = sizes?;
    ensure!(
        sizes.get(&(topic.clone(), 0)).is_some_and(|s| *s > 0),
        "{sizes:?}"
    );
    Ok(())
}
