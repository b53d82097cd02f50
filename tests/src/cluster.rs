//! A cluster of real `sluice-broker` processes on one host, for replication
//! tests: start N brokers sharing one controller quorum, kill, stop, restart,
//! pause and resume any of them, and ask the cluster (through rdkafka
//! metadata) who leads a partition and who is in its ISR.
//!
//! Every broker is a [`BrokerProcess`] with its own temp data dir, Kafka
//! listener on `127.0.0.1:0`, and a controller port reserved before start:
//! every broker needs the full `--voters` list, so the controller ports are
//! found by binding `127.0.0.1:0` and releasing the listeners just before the
//! brokers spawn. Another process can take such a port in between; a failed
//! start is therefore retried once with new ports.
//!
//! A replica's log can also be read straight from its data dir
//! ([`Cluster::replica_log`]): clients can only read from leaders, and this is
//! how a test checks that followers hold the same records.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context, Result};
use rdkafka::admin::{NewTopic, TopicReplication};
use rdkafka::consumer::Consumer;
use rdkafka::error::RDKafkaErrorCode;

use crate::broker::{BrokerOptions, BrokerProcess};
use crate::kafka;
use crate::wait::wait_for;

/// `broker.session.timeout.ms` in tests: a broker whose heartbeats stop is
/// fenced by the controller after this long.
pub const SESSION_TIMEOUT_MS: u64 = 2_000;
/// `broker.heartbeat.interval.ms` in tests.
pub const HEARTBEAT_INTERVAL_MS: u64 = 200;
/// `replica.lag.time.max.ms` in tests: a follower that has not caught up for
/// this long leaves the ISR.
pub const REPLICA_LAG_TIME_MAX_MS: u64 = 2_000;
/// Deadline of one metadata round trip.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
/// Partition states shown when a wait times out.
const STATES_SHOWN: usize = 12;

/// How to start a cluster.
#[derive(Debug, Clone, Default)]
pub struct ClusterOptions {
    /// Broker keys for every broker's YAML file, over [`Cluster::base_config`].
    pub config: Vec<(String, String)>,
    /// Give broker N `--rack rack-N`.
    pub racks: bool,
}

impl ClusterOptions {
    /// Sets one broker key on every broker.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_string(), value.to_string()));
        self
    }
}

/// A partition as metadata shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    pub partition: i32,
    /// -1 without a leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    /// Sorted.
    pub isr: Vec<i32>,
    pub error: Option<RDKafkaErrorCode>,
}

/// One metadata answer: who answered, the brokers it lists and one topic's
/// partitions (sorted by partition id).
#[derive(Debug, Clone)]
pub struct MetadataView {
    /// librdkafka's `orig_broker_id`: -1 when a bootstrap connection answered.
    pub answered_by: i32,
    /// Node id -> advertised `host:port`.
    pub brokers: BTreeMap<i32, String>,
    /// `None` when the topic was not asked for or does not exist.
    pub partitions: Option<Vec<PartitionState>>,
}

/// Offset -> value of one replica's records.
pub type ReplicaLog = BTreeMap<i64, Option<Vec<u8>>>;

struct Node {
    id: i32,
    controller: SocketAddr,
    process: BrokerProcess,
    paused: bool,
}

/// N brokers forming one cluster. Dropping it kills every broker (SIGKILL
/// also ends stopped processes) and prints each broker's log tail, which the
/// test harness shows for failing tests.
pub struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// The broker keys every test cluster gets: failure detection in seconds
    /// rather than Kafka's defaults, replicated internal topics, no initial
    /// rebalance delay. `n` caps the replication factors.
    pub fn base_config(n: usize) -> BTreeMap<String, String> {
        let rf = n.min(3).to_string();
        [
            ("broker.session.timeout.ms", SESSION_TIMEOUT_MS.to_string()),
            (
                "broker.heartbeat.interval.ms",
                HEARTBEAT_INTERVAL_MS.to_string(),
            ),
            (
                "replica.lag.time.max.ms",
                REPLICA_LAG_TIME_MAX_MS.to_string(),
            ),
            ("default.replication.factor", rf.clone()),
            ("offsets.topic.replication.factor", rf),
            // 50 replicated partitions of __consumer_offsets are just load here.
            ("offsets.topic.num.partitions", "6".to_string()),
            ("group.initial.rebalance.delay.ms", "0".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts `n` brokers with node ids `1..=n`, all of them voters of the
    /// controller quorum, and returns once each printed its listening line.
    /// A failed start is retried once with new ports.
    pub fn start(n: usize, opts: ClusterOptions) -> Result<Cluster> {
        ensure!(n >= 1, "a cluster needs at least one broker");
        match Self::try_start(n, &opts) {
            Ok(c) => Ok(c),
            Err(first) => {
                eprintln!("cluster start failed, retrying once with new ports: {first:#}");
                Self::try_start(n, &opts)
                    .map_err(|e| e.context(format!("first attempt also failed: {first:#}")))
            }
        }
    }

    fn try_start(n: usize, opts: &ClusterOptions) -> Result<Cluster> {
        let mut config = Self::base_config(n);
        for (k, v) in &opts.config {
            config.insert(k.clone(), v.clone());
        }
        let yaml: String = config.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
        let reserved: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").context("reserving a controller port"))
            .collect::<Result<_>>()?;
        let controllers: Vec<SocketAddr> = reserved
            .iter()
            .map(TcpListener::local_addr)
            .collect::<std::io::Result<_>>()?;
        let ids: Vec<i32> = (1..=i32::try_from(n)?).collect();
        let voters = ids
            .iter()
            .zip(&controllers)
            .map(|(id, addr)| format!("{id}@{addr}"))
            .collect::<Vec<_>>()
            .join(",");
        let options: Vec<BrokerOptions> = ids
            .iter()
            .zip(&controllers)
            .map(|(id, addr)| {
                let mut args = vec![
                    "--node-id".to_string(),
                    id.to_string(),
                    "--controller-listen".to_string(),
                    addr.to_string(),
                    "--voters".to_string(),
                    voters.clone(),
                ];
                if opts.racks {
                    args.extend(["--rack".to_string(), format!("rack-{id}")]);
                }
                BrokerOptions {
                    config_yaml: Some(yaml.clone()),
                    extra_args: args,
                }
            })
            .collect();
        drop(reserved);
        // In parallel: a broker may wait for a quorum before it listens.
        let started: Vec<Result<BrokerProcess>> = std::thread::scope(|s| {
            let handles: Vec<_> = options
                .into_iter()
                .map(|o| s.spawn(move || BrokerProcess::start_with(o)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("broker start thread panicked")))
                })
                .collect()
        });
        let mut nodes = Vec::new();
        let mut errors = Vec::new();
        for ((id, controller), result) in ids.iter().zip(&controllers).zip(started) {
            match result {
                Ok(process) => nodes.push(Node {
                    id: *id,
                    controller: *controller,
                    process,
                    paused: false,
                }),
                Err(e) => errors.push(format!("broker {id} (controller {controller}): {e:#}")),
            }
        }
        // Dropping the started ones (if any failed) kills them and shows their logs.
        let cluster = Cluster { nodes };
        if !errors.is_empty() {
            bail!(
                "{} of {n} brokers failed to start:\n{}",
                errors.len(),
                errors.join("\n")
            );
        }
        // Every broker printed its listening line, but one may have given up
        // waiting for the others: wait until all are registered.
        wait_for(Duration::from_secs(60), "every broker registered", || {
            let md = fetch_metadata(&cluster.bootstrap(), None)?;
            Ok((md.brokers.len() == n).then_some(()))
        })?;
        eprintln!("cluster started: {}", cluster.describe());
        Ok(cluster)
    }

    /// Node ids, ascending.
    pub fn ids(&self) -> Vec<i32> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn node(&self, id: i32) -> Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .with_context(|| format!("no broker {id} in this cluster ({:?})", self.ids()))
    }

    fn node_mut(&mut self, id: i32) -> Result<&mut Node> {
        let ids = self.ids();
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .with_context(|| format!("no broker {id} in this cluster ({ids:?})"))
    }

    pub fn broker(&self, id: i32) -> Result<&BrokerProcess> {
        Ok(&self.node(id)?.process)
    }

    /// Whether broker `id` was started and not stopped, killed or paused
    /// since (a crash is not noticed here; see [`check_no_crash`](Self::check_no_crash)).
    pub fn is_live(&self, id: i32) -> bool {
        self.node(id)
            .is_ok_and(|n| n.process.pid().is_some() && !n.paused)
    }

    /// The ids of the live brokers.
    pub fn live_ids(&self) -> Vec<i32> {
        self.ids()
            .into_iter()
            .filter(|&id| self.is_live(id))
            .collect()
    }

    /// `host:port` of every live broker, comma-joined: a bootstrap list for a
    /// new client.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .filter(|n| n.process.pid().is_some() && !n.paused)
            .map(|n| n.process.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every broker's last address, live or not: for long-lived clients that
    /// must find brokers which come back later.
    pub fn bootstrap_all(&self) -> String {
        self.nodes
            .iter()
            .map(|n| n.process.bootstrap())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address of broker `id`'s controller listener.
    pub fn controller_addr(&self, id: i32) -> Result<SocketAddr> {
        Ok(self.node(id)?.controller)
    }

    /// SIGKILL broker `id` (paused or not).
    pub fn kill9(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        node.process
            .kill9()
            .with_context(|| format!("kill -9 broker {id}"))?;
        node.paused = false;
        Ok(())
    }

    /// SIGTERM broker `id` (controlled shutdown) and wait for it to exit;
    /// a paused broker is resumed first so it can handle the signal.
    pub fn stop(&mut self, id: i32) -> Result<ExitStatus> {
        if self.node(id)?.paused {
            self.resume(id)?;
        }
        self.node_mut(id)?
            .process
            .stop()
            .with_context(|| format!("stopping broker {id}"))
    }

    /// Starts broker `id` again on its data dir, controller port and (if it is
    /// free) Kafka port. A running broker is stopped with SIGTERM first.
    pub fn restart(&mut self, id: i32) -> Result<()> {
        if self.node(id)?.paused {
            self.resume(id)?;
        }
        self.node_mut(id)?
            .process
            .restart()
            .with_context(|| format!("restarting broker {id}"))
    }

    /// SIGSTOP broker `id`: it keeps its sockets but answers nothing.
    pub fn pause(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        ensure!(!node.paused, "broker {id} is already paused");
        let pid = node
            .process
            .pid()
            .with_context(|| format!("pause: broker {id} is not running"))?;
        signal(pid, "-STOP")?;
        node.paused = true;
        Ok(())
    }

    /// SIGCONT broker `id`.
    pub fn resume(&mut self, id: i32) -> Result<()> {
        let node = self.node_mut(id)?;
        ensure!(node.paused, "broker {id} is not paused");
        let pid = node
            .process
            .pid()
            .with_context(|| format!("resume: broker {id} is not running"))?;
        signal(pid, "-CONT")?;
        node.paused = false;
        Ok(())
    }

    /// Resumes every paused broker and starts every stopped or killed one.
    pub fn heal(&mut self) -> Result<()> {
        for id in self.ids() {
            let node = self.node(id)?;
            if node.paused {
                self.resume(id)?;
            } else if node.process.pid().is_none() {
                self.restart(id)?;
            }
        }
        Ok(())
    }

    /// Fails if a broker that should be running has exited on its own.
    pub fn check_no_crash(&mut self) -> Result<()> {
        let mut dead = Vec::new();
        for n in &mut self.nodes {
            if n.process.pid().is_some() && !n.process.is_running() {
                dead.push(n.id);
            }
        }
        ensure!(
            dead.is_empty(),
            "broker(s) {dead:?} exited although nobody stopped them (see their logs below)"
        );
        Ok(())
    }

    /// One line per broker: id, Kafka and controller address, state.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        for n in &self.nodes {
            let state = match (n.process.pid(), n.paused) {
                (None, _) => "down".to_string(),
                (Some(pid), true) => format!("paused (pid {pid})"),
                (Some(pid), false) => format!("running (pid {pid})"),
            };
            let _ = write!(
                s,
                "[broker {} kafka {} controller {} {state}, data {}] ",
                n.id,
                n.process.bootstrap(),
                n.controller,
                n.process.data_dir().display()
            );
        }
        s
    }

    // -----------------------------------------------------------------------
    // What the cluster says

    /// Metadata from a new client bootstrapped on the live brokers; the
    /// partitions of `topic` when given.
    pub fn metadata(&self, topic: Option<&str>) -> Result<MetadataView> {
        let bootstrap = self.bootstrap();
        ensure!(!bootstrap.is_empty(), "no live broker to ask for metadata");
        fetch_metadata(&bootstrap, topic)
    }

    /// The partitions of `topic`; fails if the topic is unknown.
    pub fn partitions(&self, topic: &str) -> Result<Vec<PartitionState>> {
        self.metadata(Some(topic))?
            .partitions
            .with_context(|| format!("topic {topic} is not in metadata"))
    }

    fn partition(&self, topic: &str, partition: i32) -> Result<PartitionState> {
        self.partitions(topic)?
            .into_iter()
            .find(|p| p.partition == partition)
            .with_context(|| format!("partition {topic}/{partition} is not in metadata"))
    }

    /// The leader metadata names for `topic`/`partition`, if any. It can
    /// still name a dead broker until the controller notices.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Result<Option<i32>> {
        let p = self.partition(topic, partition)?;
        Ok((p.leader >= 0).then_some(p.leader))
    }

    /// The ISR of `topic`/`partition`, sorted.
    pub fn isr_of(&self, topic: &str, partition: i32) -> Result<Vec<i32>> {
        Ok(self.partition(topic, partition)?.isr)
    }

    /// Waits until `topic`/`partition` has a live leader other than `not`;
    /// returns it.
    pub fn wait_for_leader(
        &self,
        topic: &str,
        partition: i32,
        not: Option<i32>,
        timeout: Duration,
    ) -> Result<i32> {
        let mut last = None;
        let what = match not {
            Some(old) => format!("a live leader of {topic}/{partition} other than broker {old}"),
            None => format!("a live leader of {topic}/{partition}"),
        };
        let r = wait_for(timeout, &what, || {
            let p = self.partition(topic, partition)?;
            let ok = p.leader >= 0 && Some(p.leader) != not && self.is_live(p.leader);
            let leader = p.leader;
            last = Some(p);
            Ok(ok.then_some(leader))
        });
        r.with_context(|| format!("last state: {last:?}; cluster: {}", self.describe()))
    }

    /// Waits until each of the partitions `0..partitions` of `topic` has a
    /// live leader and at least `size` replicas in its ISR.
    pub fn wait_for_isr(
        &self,
        topic: &str,
        partitions: i32,
        size: usize,
        timeout: Duration,
    ) -> Result<()> {
        let mut last = Vec::new();
        let what =
            format!("{partitions} partition(s) of {topic} to have a live leader and ISR {size}");
        let r = wait_for(timeout, &what, || {
            let states = self.partitions(topic)?;
            let ok = (0..partitions).all(|i| {
                states.iter().any(|p| {
                    p.partition == i
                        && p.leader >= 0
                        && self.is_live(p.leader)
                        && p.isr.len() >= size
                })
            });
            last = states;
            Ok(ok.then_some(()))
        });
        r.with_context(|| {
            format!(
                "last states: {:?}; cluster: {}",
                last.iter().take(STATES_SHOWN).collect::<Vec<_>>(),
                self.describe()
            )
        })
    }

    /// CreateTopics with an explicit replication factor; the per-topic result
    /// as the controller gave it.
    pub fn try_create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        configs: &[(&str, &str)],
    ) -> Result<std::result::Result<(), RDKafkaErrorCode>> {
        let admin = kafka::admin(&self.bootstrap())?;
        let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(replication));
        for (k, v) in configs {
            topic = topic.set(k, v);
        }
        let results = kafka::block_on(admin.create_topics([&topic], &kafka::admin_options()))?
            .with_context(|| format!("CreateTopics {name}"))?;
        match results.into_iter().next() {
            Some(Ok(_)) => Ok(Ok(())),
            Some(Err((_, code))) => Ok(Err(code)),
            None => bail!("CreateTopics {name}: empty result"),
        }
    }

    /// Creates a topic and waits until every partition has a live leader and
    /// all `replication` replicas in its ISR.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: i32,
        replication: i32,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        if let Err(code) = self.try_create_topic(name, partitions, replication, configs)? {
            bail!(
                "CreateTopics {name} ({partitions} partitions, RF {replication}, configs {configs:?}) failed: {code:?}"
            );
        }
        self.wait_for_isr(
            name,
            partitions,
            usize::try_from(replication)?,
            kafka::ADMIN_TIMEOUT,
        )
    }

    // -----------------------------------------------------------------------
    // Replicas on disk

    /// The records of `topic`/`partition` in broker `id`'s data dir, read
    /// from its segment files. Safe while the broker runs (segments are
    /// written with positional writes and only read here), but meaningful
    /// only while nothing is produced to the partition; a batch being
    /// appended shows up as a decode error.
    pub fn replica_log(&self, id: i32, topic: &str, partition: i32) -> Result<ReplicaLog> {
        let data_dir = self.broker(id)?.data_dir();
        read_replica_log(data_dir, topic, partition)
            .with_context(|| format!("reading broker {id}'s replica of {topic}/{partition}"))
    }

    /// Waits until every broker's replica of `topic`/`partition` holds
    /// exactly `expected` (followers catch up asynchronously, so an idle
    /// partition converges rather than matches at once).
    pub fn wait_for_replicas_to_match(
        &self,
        topic: &str,
        partition: i32,
        expected: &ReplicaLog,
        timeout: Duration,
    ) -> Result<()> {
        let mut last: BTreeMap<i32, String> = BTreeMap::new();
        let what = format!(
            "every replica of {topic}/{partition} to hold the {} records the leader serves",
            expected.len()
        );
        let r = wait_for(timeout, &what, || {
            last.clear();
            for id in self.ids() {
                match self.replica_log(id, topic, partition) {
                    Ok(log) => {
                        if let Some(diff) = log_difference(expected, &log) {
                            last.insert(id, diff);
                        }
                    }
                    Err(e) => {
                        last.insert(id, format!("{e:#}"));
                    }
                }
            }
            Ok(last.is_empty().then_some(()))
        });
        r.with_context(|| format!("replicas that differ: {last:?}"))
    }

    /// Like [`wait_for_replicas_to_match`](Self::wait_for_replicas_to_match),
    /// for a partition that lives on only some brokers: waits until the
    /// replicas on brokers `ids` hold exactly `expected`.
    pub fn wait_for_replicas_on_to_match(
        &self,
        ids: &[i32],
        topic: &str,
        partition: i32,
        expected: &ReplicaLog,
        timeout: Duration,
    ) -> Result<()> {
        let mut last: BTreeMap<i32, String> = BTreeMap::new();
        let what = format!(
            "the replicas of {topic}/{partition} on brokers {ids:?} to hold the {} records the leader serves",
            expected.len()
        );
        let r = wait_for(timeout, &what, || {
            last.clear();
            for &id in ids {
                match self.replica_log(id, topic, partition) {
                    Ok(log) => {
                        if let Some(diff) = log_difference(expected, &log) {
                            last.insert(id, diff);
                        }
                    }
                    Err(e) => {
                        last.insert(id, format!("{e:#}"));
                    }
                }
            }
            Ok(last.is_empty().then_some(()))
        });
        r.with_context(|| format!("replicas that differ: {last:?}"))
    }

    /// The directory holding broker `id`'s replica of `topic`/`partition`,
    /// or `None` when it has none on disk.
    pub fn replica_dir(&self, id: i32, topic: &str, partition: i32) -> Result<Option<PathBuf>> {
        let data_dir = self.broker(id)?.data_dir();
        Ok(partition_dir(data_dir, topic, partition).ok())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Printed before each broker's own log tail (BrokerProcess::drop);
        // the harness shows it only for failing tests.
        eprintln!("cluster at the end: {}", self.describe());
    }
}

fn signal(pid: u32, sig: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .with_context(|| format!("running kill {sig} {pid}"))?;
    ensure!(status.success(), "kill {sig} {pid} returned {status}");
    Ok(())
}

/// Metadata from a new client on `bootstrap`.
pub fn fetch_metadata(bootstrap: &str, topic: Option<&str>) -> Result<MetadataView> {
    let (c, ctx) = kafka::consumer(bootstrap)?;
    let md = c
        .fetch_metadata(topic, METADATA_TIMEOUT)
        .with_context(|| format!("Metadata from {bootstrap}; {}", ctx.recent_events()))?;
    let brokers = md
        .brokers()
        .iter()
        .map(|b| (b.id(), format!("{}:{}", b.host(), b.port())))
        .collect();
    let partitions = topic.and_then(|name| {
        let t = md.topics().iter().find(|t| t.name() == name)?;
        if t.error().is_some() {
            return None;
        }
        let mut ps: Vec<PartitionState> = t
            .partitions()
            .iter()
            .map(|p| {
                let mut isr = p.isr().to_vec();
                isr.sort_unstable();
                PartitionState {
                    partition: p.id(),
                    leader: p.leader(),
                    replicas: p.replicas().to_vec(),
                    isr,
                    error: p.error().map(RDKafkaErrorCode::from),
                }
            })
            .collect();
        ps.sort_by_key(|p| p.partition);
        Some(ps)
    });
    Ok(MetadataView {
        answered_by: md.orig_broker_id(),
        brokers,
        partitions,
    })
}

/// The directory of `topic`-`partition` under `data_dir`: `<data>/<topic>-<p>`
/// as the broker lays it out today, else the first directory of that name
/// up to two levels down.
fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> Result<PathBuf> {
    let name = format!("{topic}-{partition}");
    let direct = data_dir.join(&name);
    if direct.is_dir() {
        return Ok(direct);
    }
    for entry in
        std::fs::read_dir(data_dir).with_context(|| format!("listing {}", data_dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() && path.join(&name).is_dir() {
            return Ok(path.join(&name));
        }
    }
    bail!(
        "no directory {name} in {} (or one level below)",
        data_dir.display()
    )
}

/// Reads every `.log` segment of one partition in base-offset order and
/// decodes its record batches.
pub fn read_replica_log(data_dir: &Path, topic: &str, partition: i32) -> Result<ReplicaLog> {
    let dir = partition_dir(data_dir, topic, partition)?;
    let mut segments: Vec<(i64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let Some(base) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<i64>().ok())
        else {
            continue;
        };
        segments.push((base, path));
    }
    segments.sort();
    let mut log = ReplicaLog::new();
    for (_, path) in segments {
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let mut buf = bytes::Bytes::from(bytes);
        let sets = kafka_protocol::records::RecordBatchDecoder::decode_all(&mut buf)
            .map_err(|e| anyhow!("decoding {}: {e:#}", path.display()))?;
        for set in sets {
            for r in set.records {
                if r.control {
                    continue;
                }
                log.insert(r.offset, r.value.map(|v| v.to_vec()));
            }
        }
    }
    Ok(log)
}

/// `None` when `got` equals `want`, else a short description of how it differs.
pub fn log_difference(want: &ReplicaLog, got: &ReplicaLog) -> Option<String> {
    if want == got {
        return None;
    }
    let show = |v: Option<&Option<Vec<u8>>>| match v {
        None => "nothing".to_string(),
        Some(None) => "a null value".to_string(),
        Some(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
    };
    let offsets: BTreeSet<i64> = want.keys().chain(got.keys()).copied().collect();
    let differing: Vec<i64> = offsets
        .into_iter()
        .filter(|o| want.get(o) != got.get(o))
        .collect();
    let first = differing.first().copied().unwrap_or(-1);
    Some(format!(
        "{} records (offsets {:?}..={:?}), want {} ({:?}..={:?}); {} offsets differ, first {first}: has {}, want {}",
        got.len(),
        got.keys().next(),
        got.keys().next_back(),
        want.len(),
        want.keys().next(),
        want.keys().next_back(),
        differing.len(),
        show(got.get(&first)),
        show(want.get(&first)),
    ))
}
