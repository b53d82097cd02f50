//! Consumer-group members as child processes, and what tests ask a group.
//!
//! A [`Member`] is an rdkafka member (`sluice-group-bench member`, see
//! [`crate::member`]) or a kafka-python one (`tests/python/kafka_python_groups.py
//! member`). Either prints the line protocol described in [`crate::member`];
//! a reader thread folds it into a [`MemberState`]. A member can be closed
//! cleanly (LeaveGroup) or killed with SIGKILL, which is the only faithful way
//! to make a member vanish without leaving its group.
//!
//! Group-level helpers: waiting for a complete, disjoint assignment,
//! committed offsets without joining (OffsetFetch), commits with generation -1
//! (a consumer that never subscribes), and ListGroups + DescribeGroups through
//! rdkafka's `fetch_group_list`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use kafka_protocol::messages::ConsumerProtocolAssignment;
use kafka_protocol::protocol::Decodable;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::kafka::{self, TestContext};
use crate::wait::{wait_for, wait_until};

/// How long a member may take to exit after `close`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(30);
const STDERR_KEPT: usize = 40;
const EVENTS_SHOWN: usize = 25;

/// Which client library a member process uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberKind {
    Rdkafka,
    KafkaPython,
}

/// How to start a member.
#[derive(Debug, Clone)]
pub struct MemberConfig {
    pub kind: MemberKind,
    pub bootstrap: String,
    pub group: String,
    pub topic: String,
    /// client.id; also names the member in failure messages.
    pub name: String,
    pub instance_id: Option<String>,
    /// partition.assignment.strategy; librdkafka names (`range`,
    /// `roundrobin`, `cooperative-sticky`), mapped for kafka-python.
    pub strategy: String,
    pub session_timeout_ms: u32,
    pub heartbeat_interval_ms: u32,
    /// Commit after processing (see [`crate::member`]).
    pub commit: bool,
}

impl MemberConfig {
    /// A committing member with the range assignor, 6 s session timeout and
    /// 500 ms heartbeats.
    pub fn new(kind: MemberKind, bootstrap: &str, group: &str, topic: &str, name: &str) -> Self {
        MemberConfig {
            kind,
            bootstrap: bootstrap.to_string(),
            group: group.to_string(),
            topic: topic.to_string(),
            name: name.to_string(),
            instance_id: None,
            strategy: "range".to_string(),
            session_timeout_ms: 6000,
            heartbeat_interval_ms: 500,
            commit: true,
        }
    }

    pub fn with_name(&self, name: &str) -> Self {
        MemberConfig {
            name: name.to_string(),
            ..self.clone()
        }
    }

    /// The command line of the member process. `rdkafka_bin` is the
    /// `sluice-group-bench` binary, `python_script` the kafka-python script.
    pub fn command(&self, rdkafka_bin: &Path, python_script: &Path) -> Command {
        let mut cmd = match self.kind {
            MemberKind::Rdkafka => {
                let mut c = Command::new(rdkafka_bin);
                c.arg("member");
                c
            }
            MemberKind::KafkaPython => {
                let mut c = Command::new("python3");
                c.arg(python_script).arg("member");
                c
            }
        };
        cmd.args(["--bootstrap", &self.bootstrap])
            .args(["--group", &self.group])
            .args(["--topic", &self.topic])
            .args(["--client-id", &self.name])
            .args(["--strategy", &self.strategy])
            .args(["--session-timeout-ms", &self.session_timeout_ms.to_string()])
            .args([
                "--heartbeat-interval-ms",
                &self.heartbeat_interval_ms.to_string(),
            ]);
        if let Some(id) = &self.instance_id {
            cmd.args(["--instance-id", id]);
        }
        if self.commit {
            cmd.arg("--commit");
        }
        cmd
    }
}

/// One consumed message as a member reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumed {
    /// Wall-clock ms when the member printed it.
    pub ts: i64,
    pub partition: i32,
    pub offset: i64,
    pub value: String,
}

/// Everything a member process reported so far.
#[derive(Debug, Default, Clone)]
pub struct MemberState {
    pub subscribed_at: Option<i64>,
    /// The whole assignment after the latest rebalance callback; `None`
    /// before the first one.
    pub assignment: Option<BTreeSet<i32>>,
    /// Wall-clock ms of the latest `ASSIGNMENT` line.
    pub assignment_at: Option<i64>,
    /// Every `ASSIGNMENT` line: (ts, partitions).
    pub assignments: Vec<(i64, BTreeSet<i32>)>,
    /// Every `ASSIGNED` / `REVOKED` callback: (ts, assigned?, partitions).
    pub callbacks: Vec<(i64, bool, BTreeSet<i32>)>,
    pub protocol: Option<String>,
    pub messages: Vec<Consumed>,
    /// The latest successful commit per partition (next offset to read).
    pub committed: BTreeMap<i32, i64>,
    pub commit_failures: usize,
    pub errors: Vec<String>,
    pub closed: bool,
    /// The last lines of stdout, for failure messages.
    pub recent: VecDeque<String>,
}

fn parse_list(s: &str) -> Result<BTreeSet<i32>> {
    if s == "-" {
        return Ok(BTreeSet::new());
    }
    s.split(',')
        .map(|p| p.parse::<i32>().with_context(|| format!("partition {p:?}")))
        .collect()
}

impl MemberState {
    fn apply(&mut self, line: &str) -> Result<()> {
        let mut it = line.splitn(3, ' ');
        let event = it.next().unwrap_or_default();
        let ts: i64 = it
            .next()
            .context("no timestamp")?
            .parse()
            .context("timestamp")?;
        let rest = it.next().unwrap_or_default();
        match event {
            "SUBSCRIBED" => self.subscribed_at = Some(ts),
            "ASSIGNED" | "REVOKED" => {
                self.callbacks
                    .push((ts, event == "ASSIGNED", parse_list(rest)?))
            }
            "ASSIGNMENT" => {
                let set = parse_list(rest)?;
                self.assignments.push((ts, set.clone()));
                self.assignment = Some(set);
                self.assignment_at = Some(ts);
            }
            "PROTOCOL" => self.protocol = Some(rest.to_string()),
            "MSG" => {
                let mut f = rest.splitn(3, ' ');
                let partition = f.next().context("partition")?.parse()?;
                let offset = f.next().context("offset")?.parse()?;
                let value = f.next().unwrap_or_default().to_string();
                self.messages.push(Consumed {
                    ts,
                    partition,
                    offset,
                    value,
                });
            }
            "COMMITTED" => {
                for pair in rest.split(',') {
                    let (p, o) = pair.split_once('=').context("P=O")?;
                    self.committed.insert(p.parse()?, o.parse()?);
                }
            }
            "COMMIT_FAILED" => self.commit_failures += 1,
            "ERROR" => self.errors.push(rest.to_string()),
            "CLOSED" => self.closed = true,
            _ => {}
        }
        Ok(())
    }
}

/// A member process. Dropping it kills the process.
pub struct Member {
    pub name: String,
    pub config: MemberConfig,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    state: Arc<Mutex<MemberState>>,
    stderr: Arc<Mutex<VecDeque<String>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Member {
    /// Starts a member process from `config.command(..)`.
    pub fn spawn(config: &MemberConfig, rdkafka_bin: &Path, python_script: &Path) -> Result<Self> {
        let mut cmd = config.command(rdkafka_bin, python_script);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning member {}: {cmd:?}", config.name))?;
        let stdout = child.stdout.take().context("member stdout not piped")?;
        let stderr = child.stderr.take().context("member stderr not piped")?;
        let stdin = child.stdin.take();
        let state = Arc::new(Mutex::new(MemberState::default()));
        let errs = Arc::new(Mutex::new(VecDeque::new()));
        {
            let state = Arc::clone(&state);
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    let mut s = lock(&state);
                    if let Err(e) = s.apply(&line) {
                        s.errors.push(format!("unparsable line {line:?}: {e:#}"));
                    }
                    if s.recent.len() == EVENTS_SHOWN {
                        s.recent.pop_front();
                    }
                    s.recent.push_back(line);
                }
            });
        }
        {
            let errs = Arc::clone(&errs);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut e = lock(&errs);
                    if e.len() == STDERR_KEPT {
                        e.pop_front();
                    }
                    e.push_back(line);
                }
            });
        }
        Ok(Member {
            name: config.name.clone(),
            config: config.clone(),
            child: Some(child),
            stdin,
            state,
            stderr: errs,
        })
    }

    /// A copy of everything reported so far.
    pub fn state(&self) -> MemberState {
        lock(&self.state).clone()
    }

    /// The current assignment (empty before the first rebalance callback).
    pub fn assignment(&self) -> BTreeSet<i32> {
        lock(&self.state).assignment.clone().unwrap_or_default()
    }

    /// How many rebalance callbacks (assign or revoke) ran so far.
    pub fn callbacks(&self) -> usize {
        lock(&self.state).callbacks.len()
    }

    pub fn messages(&self) -> Vec<Consumed> {
        lock(&self.state).messages.clone()
    }

    pub fn message_count(&self) -> usize {
        lock(&self.state).messages.len()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL: no LeaveGroup, no last commit, sockets closed by the kernel.
    pub fn kill(&mut self) -> Result<()> {
        let mut child = self.child.take().context("kill: member not running")?;
        child.kill().context("SIGKILL to a member")?;
        child.wait()?;
        self.stdin = None;
        Ok(())
    }

    /// Asks the member to close (LeaveGroup unless static) and waits for it
    /// to exit 0.
    pub fn close(&mut self) -> Result<()> {
        let mut child = self.child.take().context("close: member not running")?;
        if let Some(mut stdin) = self.stdin.take() {
            // A member that already died fails this write; its exit status says why.
            let _ = writeln!(stdin, "close");
        }
        let status = wait_for(
            CLOSE_TIMEOUT,
            &format!("member {} to exit", self.name),
            || Ok(child.try_wait()?),
        );
        match status {
            Ok(s) if s.success() => Ok(()),
            Ok(s) => bail!("member {} exited with {s}\n{}", self.name, self.report()),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.context(self.report()))
            }
        }
    }

    /// Its recent output and stderr, for failure messages.
    pub fn report(&self) -> String {
        let s = lock(&self.state);
        let mut r = format!(
            "--- member {} ({:?}): assignment {:?}, {} messages, {} callbacks, committed {:?}, {} commit failures, errors {:?}\n",
            self.name,
            self.config.kind,
            s.assignment,
            s.messages.len(),
            s.callbacks.len(),
            s.committed,
            s.commit_failures,
            s.errors.iter().rev().take(5).collect::<Vec<_>>()
        );
        let _ = writeln!(r, "recent stdout:");
        for l in &s.recent {
            let _ = writeln!(r, "  {l}");
        }
        let _ = writeln!(r, "recent stderr:");
        for l in lock(&self.stderr).iter() {
            let _ = writeln!(r, "  {l}");
        }
        r
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reports of several members, for failure messages.
pub fn reports(members: &[&Member]) -> String {
    members.iter().map(|m| m.report()).collect()
}

/// Whether the members' assignments are non-empty, pairwise disjoint and
/// together cover `0..partitions`.
pub fn balanced(assignments: &[BTreeSet<i32>], partitions: i32) -> bool {
    let mut union = BTreeSet::new();
    for a in assignments {
        if a.is_empty() {
            return false;
        }
        for p in a {
            if !union.insert(*p) {
                return false;
            }
        }
    }
    union == (0..partitions).collect()
}

/// Waits until every member holds a non-empty assignment, no partition is
/// held twice and all `0..partitions` are held; returns the assignments.
pub fn wait_balanced(
    members: &[&Member],
    partitions: i32,
    timeout: Duration,
) -> Result<Vec<BTreeSet<i32>>> {
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let what = format!("members {names:?} to split {partitions} partitions between them");
    wait_for(timeout, &what, || {
        let a: Vec<BTreeSet<i32>> = members.iter().map(|m| m.assignment()).collect();
        Ok(balanced(&a, partitions).then_some(a))
    })
    .with_context(|| reports(members))
}

/// Offsets consumed per partition across `members`.
pub fn consumed_offsets(members: &[&Member]) -> BTreeMap<i32, BTreeSet<i64>> {
    let mut out: BTreeMap<i32, BTreeSet<i64>> = BTreeMap::new();
    for m in members {
        for c in m.messages() {
            out.entry(c.partition).or_default().insert(c.offset);
        }
    }
    out
}

/// The offsets in `from..to` per partition not consumed by any of `members`.
pub fn missing_offsets(
    members: &[&Member],
    ranges: &BTreeMap<i32, (i64, i64)>,
) -> BTreeMap<i32, Vec<i64>> {
    let got = consumed_offsets(members);
    let mut missing = BTreeMap::new();
    for (&p, &(from, to)) in ranges {
        let have = got.get(&p);
        let gaps: Vec<i64> = (from..to)
            .filter(|o| !have.is_some_and(|h| h.contains(o)))
            .collect();
        if !gaps.is_empty() {
            missing.insert(p, gaps);
        }
    }
    missing
}

/// Waits until every offset in `ranges` was consumed by one of `members`.
pub fn wait_consumed(
    members: &[&Member],
    ranges: &BTreeMap<i32, (i64, i64)>,
    timeout: Duration,
) -> Result<()> {
    let mut last = BTreeMap::new();
    let r = wait_until(timeout, "every produced message to be consumed", || {
        last = missing_offsets(members, ranges);
        last.is_empty()
    });
    r.with_context(|| {
        let short: BTreeMap<i32, String> = last
            .iter()
            .map(|(p, v)| (*p, format!("{} missing, first {:?}", v.len(), v.first())))
            .collect();
        format!(
            "missing offsets per partition: {short:?}\n{}",
            reports(members)
        )
    })
}

/// A consumer of `group` that never joins it: for OffsetFetch and
/// generation -1 commits.
pub fn group_client(
    bootstrap: &str,
    group: &str,
) -> Result<(BaseConsumer<TestContext>, TestContext)> {
    let ctx = TestContext::default();
    let mut c = kafka::client_config(bootstrap);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false");
    let consumer = c
        .create_with_context(ctx.clone())
        .context("creating a group client")?;
    Ok((consumer, ctx))
}

/// OffsetFetch: the committed offset of each partition, `None` when nothing
/// is committed.
pub fn committed_offsets(
    bootstrap: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<BTreeMap<i32, Option<i64>>> {
    let (c, ctx) = group_client(bootstrap, group)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .with_context(|| format!("OffsetFetch for group {group}; {}", ctx.recent_events()))?;
    let mut out = BTreeMap::new();
    for e in got.elements_for_topic(topic) {
        if let Err(err) = e.error() {
            bail!("OffsetFetch {group} {topic}/{}: {err}", e.partition());
        }
        let off = match e.offset() {
            Offset::Offset(o) => Some(o),
            Offset::Invalid => None,
            other => bail!(
                "OffsetFetch {group} {topic}/{}: offset {other:?}",
                e.partition()
            ),
        };
        out.insert(e.partition(), off);
    }
    Ok(out)
}

/// OffsetCommit from a consumer that never subscribed (generation -1, empty
/// member id): how tools reset an empty group's offsets.
pub fn commit_without_joining(
    bootstrap: &str,
    group: &str,
    topic: &str,
    offsets: &BTreeMap<i32, i64>,
) -> Result<()> {
    let (c, ctx) = group_client(bootstrap, group)?;
    let mut tpl = TopicPartitionList::new();
    for (&p, &o) in offsets {
        tpl.add_partition_offset(topic, p, Offset::Offset(o))?;
    }
    c.commit(&tpl, CommitMode::Sync).with_context(|| {
        format!(
            "OffsetCommit (generation -1) for group {group}; {}",
            ctx.recent_events()
        )
    })
}

/// A group as ListGroups + DescribeGroups show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub name: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    /// (client id, member id, assigned partitions of `topic`), by client id.
    pub members: Vec<(String, String, BTreeSet<i32>)>,
}

impl GroupView {
    /// Members by client id with their partitions, member ids left out
    /// (they change when a member rejoins).
    pub fn assignment_by_client(&self) -> BTreeMap<String, BTreeSet<i32>> {
        self.members
            .iter()
            .map(|(c, _, a)| (c.clone(), a.clone()))
            .collect()
    }
}

/// Decodes a consumer-protocol assignment (version prefix, then the body).
pub fn decode_assignment(bytes: &[u8], topic: &str) -> Result<BTreeSet<i32>> {
    if bytes.is_empty() {
        return Ok(BTreeSet::new());
    }
    let mut buf = bytes::Bytes::copy_from_slice(bytes);
    ensure!(buf.len() >= 2, "assignment of {} bytes", bytes.len());
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let _ = bytes::Buf::get_i16(&mut buf);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version.clamp(0, 3))
        .with_context(|| format!("decoding a v{version} consumer assignment"))?;
    Ok(a.assigned_partitions
        .iter()
        .filter(|tp| tp.topic.0.as_str() == topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect())
}

/// ListGroups + DescribeGroups for one group through rdkafka; `None` when
/// the broker does not list it.
pub fn describe_group(bootstrap: &str, group: &str, topic: &str) -> Result<Option<GroupView>> {
    let (c, ctx) = kafka::consumer(bootstrap)?;
    let list = c
        .fetch_group_list(Some(group), Duration::from_secs(10))
        .with_context(|| format!("ListGroups/DescribeGroups {group}; {}", ctx.recent_events()))?;
    let Some(g) = list.groups().iter().find(|g| g.name() == group) else {
        return Ok(None);
    };
    let mut members = Vec::new();
    for m in g.members() {
        // Members connect over loopback; Kafka shows hosts as `/ADDRESS`.
        anyhow::ensure!(
            m.client_host() == "/127.0.0.1",
            "member {} of {group} has client host {:?}, expected \"/127.0.0.1\"",
            m.id(),
            m.client_host()
        );
        let parts = decode_assignment(m.assignment().unwrap_or_default(), topic)
            .with_context(|| format!("member {} of {group}", m.id()))?;
        members.push((m.client_id().to_string(), m.id().to_string(), parts));
    }
    members.sort();
    Ok(Some(GroupView {
        name: g.name().to_string(),
        state: g.state().to_string(),
        protocol_type: g.protocol_type().to_string(),
        protocol: g.protocol().to_string(),
        members,
    }))
}

/// Every group name ListGroups returns.
pub fn list_groups(bootstrap: &str) -> Result<Vec<String>> {
    let (c, ctx) = kafka::consumer(bootstrap)?;
    let list = c
        .fetch_group_list(None, Duration::from_secs(10))
        .with_context(|| format!("ListGroups; {}", ctx.recent_events()))?;
    Ok(list.groups().iter().map(|g| g.name().to_string()).collect())
}
