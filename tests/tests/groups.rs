//! Consumer groups end to end: real rdkafka and kafka-python members (as child
//! processes, so one can be killed with SIGKILL) against a real
//! `sluice-broker`, plus raw-protocol checks of the coordinator's error codes.
//!
//! Every test starts its own broker with `group.initial.rebalance.delay.ms: 0`
//! and uses members with a 6 s session timeout and 500 ms heartbeats, so a
//! dead member is noticed within seconds. Members are described in
//! `sluice_tests::group`; their line protocol in `sluice_tests::member`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    consumer_protocol_assignment::TopicPartition as AssignedPartitions,
    join_group_request::JoinGroupRequestProtocol,
    offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic},
    sync_group_request::SyncGroupRequestAssignment,
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DescribeGroupsRequest,
    FindCoordinatorRequest, GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    OffsetCommitRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Encodable, StrBytes};
use rdkafka::producer::BaseRecord;
use sluice_tests::cmd::{self, find_program};
use sluice_tests::group::{
    self, balanced, commit_without_joining, committed_offsets, describe_group, list_groups,
    wait_balanced, wait_consumed, GroupView, Member, MemberConfig, MemberKind,
};
use sluice_tests::raw::{self, RawConnection};
use sluice_tests::{kafka, now_ms, unique_topic, wait_for, BrokerOptions, BrokerProcess};

const PARTITIONS: i32 = 6;
const SESSION_TIMEOUT_MS: u32 = 6000;
const HEARTBEAT_INTERVAL_MS: u32 = 500;
/// A rebalance among live members (join, clean leave) must finish within this.
const SETTLE: Duration = Duration::from_secs(30);
/// Produced messages must reach their consumers within this.
const CONSUME: Duration = Duration::from_secs(60);
/// Committed offsets must reach the broker within this.
const COMMIT: Duration = Duration::from_secs(30);

const BROKER_CONFIG: &str = "group.initial.rebalance.delay.ms: 0\n";

// ---------------------------------------------------------------------------
// Setup

fn start_broker() -> Result<BrokerProcess> {
    BrokerProcess::start_with(BrokerOptions {
        config_yaml: Some(BROKER_CONFIG.to_string()),
        ..BrokerOptions::default()
    })
}

/// `sluice-group-bench`, whose `member` subcommand is the rdkafka member.
fn member_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sluice-group-bench"))
}

fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python/kafka_python_groups.py")
}

fn require_python() -> Result<()> {
    find_program(
        "python3",
        "install Python 3 and `pip install kafka-python==3.0.12` (scripts/test.sh does)",
    )
    .map(|_| ())
}

fn spawn(cfg: &MemberConfig) -> Result<Member> {
    Member::spawn(cfg, member_bin(), &python_script())
}

fn base_config(kind: MemberKind, bootstrap: &str, group: &str, topic: &str) -> MemberConfig {
    let mut c = MemberConfig::new(kind, bootstrap, group, topic, "member");
    c.session_timeout_ms = SESSION_TIMEOUT_MS;
    c.heartbeat_interval_ms = HEARTBEAT_INTERVAL_MS;
    c.commit = true;
    c
}

/// A broker, a topic of `partitions` and a fresh group name.
fn setup(partitions: i32) -> Result<(BrokerProcess, String, String)> {
    let broker = start_broker()?;
    let topic = unique_topic("groups");
    kafka::create_topic(&broker.bootstrap(), &topic, partitions, &[])?;
    let group = unique_topic("group");
    Ok((broker, topic, group))
}

// ---------------------------------------------------------------------------
// Producing and checking

/// What one produce round wrote: `[from, to)` per partition and every value.
struct Produced {
    ranges: BTreeMap<i32, (i64, i64)>,
    values: BTreeMap<(i32, i64), String>,
}

impl Produced {
    fn ends(&self) -> BTreeMap<i32, i64> {
        self.ranges.iter().map(|(&p, &(_, to))| (p, to)).collect()
    }
}

/// Produces `per_partition` acknowledged (acks=all) messages into every
/// partition, values `TAG-P-I`.
fn produce_round(
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    per_partition: usize,
    tag: &str,
) -> Result<Produced> {
    let mut config = kafka::producer_config(bootstrap);
    config.set("acks", "all");
    let (producer, ctx) = kafka::producer(&config)?;
    let mut sent = Vec::new();
    for i in 0..per_partition {
        for p in 0..partitions {
            let value = format!("{tag}-{p}-{i}");
            kafka::send_blocking(
                &producer,
                BaseRecord::with_opaque_to(topic, sent.len())
                    .partition(p)
                    .payload(value.as_bytes()),
            )?;
            sent.push(value);
        }
    }
    let deliveries = kafka::flush_all(&producer, &ctx, sent.len())?;
    let mut ranges: BTreeMap<i32, (i64, i64)> = BTreeMap::new();
    let mut values = BTreeMap::new();
    for d in deliveries {
        ensure!(d.error.is_none(), "delivery failed: {d:?}");
        let r = ranges.entry(d.partition).or_insert((i64::MAX, i64::MIN));
        r.0 = r.0.min(d.offset);
        r.1 = r.1.max(d.offset + 1);
        values.insert((d.partition, d.offset), sent[d.id].clone());
    }
    for (p, (from, to)) in &ranges {
        ensure!(
            usize::try_from(to - from)? == per_partition,
            "partition {p}: offsets {from}..{to} for {per_partition} messages from one producer"
        );
    }
    Ok(Produced { ranges, values })
}

/// Every message a member reported for an offset we produced carries the
/// value produced there.
fn check_values(members: &[&Member], produced: &[&Produced]) -> Result<()> {
    for m in members {
        for c in m.messages() {
            for round in produced {
                if let Some(v) = round.values.get(&(c.partition, c.offset)) {
                    ensure!(
                        *v == c.value,
                        "member {} got {:?} at {}/{}, produced {v:?}",
                        m.name,
                        c.value,
                        c.partition,
                        c.offset
                    );
                }
            }
        }
    }
    Ok(())
}

/// Waits until OffsetFetch returns exactly `want` for every partition in it.
fn wait_committed(
    bootstrap: &str,
    group: &str,
    topic: &str,
    want: &BTreeMap<i32, i64>,
    timeout: Duration,
) -> Result<()> {
    let partitions = want.keys().max().map_or(0, |p| p + 1);
    let mut last = BTreeMap::new();
    let r = wait_for(
        timeout,
        &format!("group {group} to commit {want:?}"),
        || {
            last = committed_offsets(bootstrap, group, topic, partitions)?;
            Ok(want
                .iter()
                .all(|(p, o)| last.get(p) == Some(&Some(*o)))
                .then_some(()))
        },
    );
    r.with_context(|| format!("last OffsetFetch answer: {last:?}"))
}

/// Waits until DescribeGroups shows `members` Stable with the partitions each
/// of them reports; returns that view.
fn wait_view_matches(
    bootstrap: &str,
    group: &str,
    topic: &str,
    members: &[&Member],
) -> Result<GroupView> {
    let mut last = None;
    let r = wait_for(
        SETTLE,
        &format!("DescribeGroups {group} to match the members' own assignments"),
        || {
            let Some(view) = describe_group(bootstrap, group, topic)? else {
                last = None;
                return Ok(None);
            };
            let want: BTreeMap<String, BTreeSet<i32>> = members
                .iter()
                .map(|m| (m.name.clone(), m.assignment()))
                .collect();
            let ok = view.state == "Stable"
                && view.protocol_type == "consumer"
                && view.assignment_by_client() == want;
            last = Some(view.clone());
            Ok(ok.then_some(view))
        },
    );
    r.with_context(|| format!("last DescribeGroups: {last:?}\n{}", group::reports(members)))
}

/// Asserts `cond` holds at every check during `window`. Only for negative
/// properties ("no rebalance happens"), which need an observation period.
fn holds_throughout(window: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    let end = Instant::now() + window;
    while Instant::now() < end {
        ensure!(cond(), "{what} stopped holding");
        std::thread::sleep(Duration::from_millis(50));
    }
    ensure!(cond(), "{what} stopped holding");
    Ok(())
}

// ---------------------------------------------------------------------------
// Three members, one killed, a fourth joins: rdkafka and kafka-python

fn three_members_failover_and_join(kind: MemberKind) -> Result<()> {
    let (broker, topic, group) = setup(PARTITIONS)?;
    let bs = broker.bootstrap();
    let base = base_config(kind, &bs, &group, &topic);

    let m1 = spawn(&base.with_name("m1"))?;
    let mut m2 = spawn(&base.with_name("m2"))?;
    let m3 = spawn(&base.with_name("m3"))?;
    let first = wait_balanced(&[&m1, &m2, &m3], PARTITIONS, SETTLE)?;
    wait_view_matches(&bs, &group, &topic, &[&m1, &m2, &m3])?;

    let a = produce_round(&bs, &topic, PARTITIONS, 20, "a")?;
    wait_consumed(&[&m1, &m2, &m3], &a.ranges, CONSUME)?;
    // Each member read only partitions it was assigned.
    for (m, parts) in [&m1, &m2, &m3].iter().zip(&first) {
        let read: BTreeSet<i32> = m.messages().iter().map(|c| c.partition).collect();
        let ever: BTreeSet<i32> = m
            .state()
            .assignments
            .into_iter()
            .flat_map(|(_, a)| a)
            .collect();
        ensure!(
            read.is_subset(&ever),
            "member {} read partitions {read:?} but was only ever assigned {ever:?} (at first {parts:?})",
            m.name
        );
    }
    wait_committed(&bs, &group, &topic, &a.ends(), COMMIT)?;

    // m2 dies without leaving: its partitions move once its session expires.
    let lost = m2.assignment();
    let killed = Instant::now();
    m2.kill()?;
    let session = Duration::from_millis(u64::from(SESSION_TIMEOUT_MS));
    let after_kill = wait_balanced(&[&m1, &m3], PARTITIONS, session + SETTLE)?;
    let took = killed.elapsed();
    println!("partitions {lost:?} of the killed member moved after {took:?}: {after_kill:?}");
    ensure!(
        took < session + Duration::from_secs(10),
        "the killed member's partitions moved only after {took:?} (session.timeout.ms {SESSION_TIMEOUT_MS})"
    );

    let b = produce_round(&bs, &topic, PARTITIONS, 20, "b")?;
    wait_consumed(&[&m1, &m3], &b.ranges, CONSUME)?;
    // Its partitions resume at its last commit: nothing before it again.
    for m in [&m1, &m3] {
        for c in m.messages() {
            if lost.contains(&c.partition) {
                let committed = a.ranges[&c.partition].1;
                ensure!(
                    c.offset >= committed,
                    "member {} re-read {}/{} of the killed member, below its committed offset {committed}",
                    m.name,
                    c.partition,
                    c.offset
                );
            }
        }
    }
    wait_committed(&bs, &group, &topic, &b.ends(), COMMIT)?;

    // A fourth member joins and gets a share.
    let m4 = spawn(&base.with_name("m4"))?;
    wait_balanced(&[&m1, &m3, &m4], PARTITIONS, SETTLE)?;
    wait_view_matches(&bs, &group, &topic, &[&m1, &m3, &m4])?;
    let c = produce_round(&bs, &topic, PARTITIONS, 20, "c")?;
    wait_consumed(&[&m1, &m3, &m4], &c.ranges, CONSUME)?;
    ensure!(
        m4.messages()
            .iter()
            .all(|msg| msg.offset >= b.ranges[&msg.partition].1),
        "the new member re-read committed messages\n{}",
        m4.report()
    );
    wait_committed(&bs, &group, &topic, &c.ends(), COMMIT)?;

    // Everything produced was consumed at least once, as produced.
    let all = [&m1, &m2, &m3, &m4];
    let mut everything = BTreeMap::new();
    for p in 0..PARTITIONS {
        everything.insert(p, (a.ranges[&p].0, c.ranges[&p].1));
    }
    let missing = group::missing_offsets(&all, &everything);
    ensure!(missing.is_empty(), "never consumed: {missing:?}");
    check_values(&all, &[&a, &b, &c])?;
    for m in [&m1, &m3, &m4] {
        ensure!(m.state().errors.is_empty(), "member errors\n{}", m.report());
    }
    let (mut m1, mut m3, mut m4) = (m1, m3, m4);
    m1.close()?;
    m3.close()?;
    m4.close()?;
    Ok(())
}

#[test]
fn rdkafka_group_splits_partitions_survives_a_killed_member_and_takes_a_new_one() -> Result<()> {
    three_members_failover_and_join(MemberKind::Rdkafka)
}

#[test]
fn kafka_python_group_splits_partitions_survives_a_killed_member_and_takes_a_new_one() -> Result<()>
{
    require_python()?;
    three_members_failover_and_join(MemberKind::KafkaPython)
}

// ---------------------------------------------------------------------------
// Cooperative-sticky: a join moves only what it must

#[test]
fn cooperative_sticky_join_keeps_partitions_members_already_own() -> Result<()> {
    let (broker, topic, group) = setup(PARTITIONS)?;
    let bs = broker.bootstrap();
    let mut base = base_config(MemberKind::Rdkafka, &bs, &group, &topic);
    base.strategy = "cooperative-sticky".to_string();

    let m1 = spawn(&base.with_name("m1"))?;
    wait_balanced(&[&m1], PARTITIONS, SETTLE)?;
    let m2 = spawn(&base.with_name("m2"))?;
    let before = wait_balanced(&[&m1, &m2], PARTITIONS, SETTLE)?;
    let a = produce_round(&bs, &topic, PARTITIONS, 10, "a")?;
    wait_consumed(&[&m1, &m2], &a.ranges, CONSUME)?;

    let m3 = spawn(&base.with_name("m3"))?;
    let joined_at = wait_for(SETTLE, "m3 to subscribe", || Ok(m3.state().subscribed_at))?;
    let after = wait_balanced(&[&m1, &m2, &m3], PARTITIONS, SETTLE)?;
    wait_view_matches(&bs, &group, &topic, &[&m1, &m2, &m3])?;

    for m in [&m1, &m2, &m3] {
        ensure!(
            m.state().protocol.as_deref() == Some("cooperative"),
            "member {} did not use the cooperative protocol\n{}",
            m.name,
            m.report()
        );
    }
    for (i, m) in [&m1, &m2].iter().enumerate() {
        let (had, has) = (&before[i], &after[i]);
        ensure!(
            has.is_subset(had),
            "member {} owned {had:?} and now owns {has:?}: it gained partitions on a join",
            m.name
        );
        // Incremental: at no point after the join did it drop what it kept.
        for (ts, set) in m.state().assignments {
            if ts >= joined_at {
                ensure!(
                    has.is_subset(&set),
                    "member {} held only {set:?} at {ts} during the rebalance, but kept {has:?}: \
                     an eager revoke\n{}",
                    m.name,
                    m.report()
                );
            }
        }
        for (ts, assigned, set) in m.state().callbacks {
            if ts >= joined_at && !assigned {
                ensure!(
                    set.is_disjoint(has),
                    "member {} was asked to revoke {set:?} though it keeps {has:?}",
                    m.name
                );
            }
        }
    }
    let moved: BTreeSet<i32> = before[0]
        .difference(&after[0])
        .chain(before[1].difference(&after[1]))
        .copied()
        .collect();
    ensure!(
        moved == after[2],
        "the new member got {:?}; the others gave up {moved:?}",
        after[2]
    );

    let b = produce_round(&bs, &topic, PARTITIONS, 10, "b")?;
    wait_consumed(&[&m1, &m2, &m3], &b.ranges, CONSUME)?;
    check_values(&[&m1, &m2, &m3], &[&a, &b])?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Static membership: a quick restart is not a rebalance

#[test]
fn static_member_restarted_within_session_timeout_gets_its_partitions_back_without_rebalance(
) -> Result<()> {
    let (broker, topic, group) = setup(PARTITIONS)?;
    let bs = broker.bootstrap();
    let base = base_config(MemberKind::Rdkafka, &bs, &group, &topic);
    let static_cfg = |name: &str| {
        let mut c = base.with_name(name);
        c.instance_id = Some(format!("instance-{name}"));
        c
    };

    // Started one after another so m1 joins first and leads; m3 is restarted.
    let m1 = spawn(&static_cfg("m1"))?;
    wait_balanced(&[&m1], PARTITIONS, SETTLE)?;
    let m2 = spawn(&static_cfg("m2"))?;
    wait_balanced(&[&m1, &m2], PARTITIONS, SETTLE)?;
    let mut m3 = spawn(&static_cfg("m3"))?;
    let before = wait_balanced(&[&m1, &m2, &m3], PARTITIONS, SETTLE)?;
    let view_before = wait_view_matches(&bs, &group, &topic, &[&m1, &m2, &m3])?;
    let a = produce_round(&bs, &topic, PARTITIONS, 10, "a")?;
    wait_consumed(&[&m1, &m2, &m3], &a.ranges, CONSUME)?;
    wait_committed(&bs, &group, &topic, &a.ends(), COMMIT)?;

    let callbacks = (m1.callbacks(), m2.callbacks());
    let killed = Instant::now();
    m3.kill()?;
    let m3b = spawn(&static_cfg("m3"))?;
    let back = wait_for(SETTLE, "the restarted static member's assignment", || {
        Ok(m3b.state().assignment)
    })
    .with_context(|| m3b.report())?;
    let took = killed.elapsed();
    ensure!(
        back == before[2],
        "restarted static member got {back:?}, owned {:?} before",
        before[2]
    );
    // Not by waiting out the old session (which started at the last
    // heartbeat, so a rebalance can finish just under the session timeout).
    ensure!(
        took < Duration::from_millis(u64::from(SESSION_TIMEOUT_MS) / 2),
        "the restarted member got its partitions only after {took:?} \
         (session.timeout.ms {SESSION_TIMEOUT_MS}): the broker waited for the old session"
    );

    let view = wait_view_matches(&bs, &group, &topic, &[&m1, &m2, &m3b])?;
    ensure!(
        view.assignment_by_client() == view_before.assignment_by_client(),
        "DescribeGroups before the restart {view_before:?}, after {view:?}"
    );
    let still = |m: &Member, n: usize| m.callbacks() == n;
    holds_throughout(
        Duration::from_millis(u64::from(HEARTBEAT_INTERVAL_MS) * 4),
        "no rebalance callback on the other members",
        || still(&m1, callbacks.0) && still(&m2, callbacks.1),
    )
    .with_context(|| group::reports(&[&m1, &m2, &m3b]))?;

    let b = produce_round(&bs, &topic, PARTITIONS, 10, "b")?;
    wait_consumed(&[&m1, &m2, &m3b], &b.ranges, CONSUME)?;
    ensure!(
        m3b.messages()
            .iter()
            .all(|c| c.offset >= a.ranges[&c.partition].1),
        "the restarted member re-read committed messages\n{}",
        m3b.report()
    );
    ensure!(
        m1.callbacks() == callbacks.0 && m2.callbacks() == callbacks.1,
        "the other members saw a rebalance ({} and {} callbacks, {} and {} before)\n{}",
        m1.callbacks(),
        m2.callbacks(),
        callbacks.0,
        callbacks.1,
        group::reports(&[&m1, &m2, &m3b])
    );
    ensure!(
        m1.assignment() == before[0] && m2.assignment() == before[1],
        "the other members' assignments changed\n{}",
        group::reports(&[&m1, &m2, &m3b])
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Broker kill -9 with a live group

#[test]
fn committed_offsets_and_group_survive_broker_kill9_and_consumers_resume_there() -> Result<()> {
    let (mut broker, topic, group) = setup(PARTITIONS)?;
    let bs = broker.bootstrap();
    let base = base_config(MemberKind::Rdkafka, &bs, &group, &topic);
    let mut m1 = spawn(&base.with_name("m1"))?;
    let mut m2 = spawn(&base.with_name("m2"))?;
    wait_balanced(&[&m1, &m2], PARTITIONS, SETTLE)?;
    let view_before = wait_view_matches(&bs, &group, &topic, &[&m1, &m2])?;
    let a = produce_round(&bs, &topic, PARTITIONS, 20, "a")?;
    wait_consumed(&[&m1, &m2], &a.ranges, CONSUME)?;
    wait_committed(&bs, &group, &topic, &a.ends(), COMMIT)?;

    broker.kill9()?;
    broker.restart()?;
    let bs2 = broker.bootstrap();
    let restarted_at = now_ms();

    // Offsets, listing and description are back.
    wait_committed(&bs2, &group, &topic, &a.ends(), COMMIT)
        .context("committed offsets after kill -9 and restart")?;
    let names = list_groups(&bs2)?;
    ensure!(
        names.contains(&group),
        "ListGroups after restart does not list {group}: {names:?}"
    );
    let loaded = describe_group(&bs2, &group, &topic)?
        .with_context(|| format!("DescribeGroups after restart does not know {group}"))?;
    ensure!(
        loaded.protocol_type == view_before.protocol_type
            && loaded.protocol == view_before.protocol,
        "DescribeGroups right after restart {loaded:?}, before the kill {view_before:?}"
    );
    if bs2 == bs {
        // The members reconnect to the same address and carry on.
        let view = wait_view_matches(&bs2, &group, &topic, &[&m1, &m2])?;
        ensure!(
            view.protocol == view_before.protocol,
            "protocol {:?} after restart, {:?} before",
            view.protocol,
            view_before.protocol
        );
        let parts: Vec<BTreeSet<i32>> = view.members.iter().map(|(_, _, a)| a.clone()).collect();
        ensure!(
            balanced(&parts, PARTITIONS),
            "DescribeGroups after restart: {view:?}"
        );
        let b = produce_round(&bs2, &topic, PARTITIONS, 10, "b")?;
        wait_consumed(&[&m1, &m2], &b.ranges, CONSUME)?;
        for m in [&m1, &m2] {
            for c in m.messages() {
                ensure!(
                    c.ts < restarted_at || c.offset >= a.ranges[&c.partition].1,
                    "member {} re-read committed {}/{} after the restart",
                    m.name,
                    c.partition,
                    c.offset
                );
            }
        }
        wait_committed(&bs2, &group, &topic, &b.ends(), COMMIT)?;
        m1.close()?;
        m2.close()?;
    } else {
        println!("broker came back on {bs2} instead of {bs}; members that knew the old address are replaced");
        m1.kill()?;
        m2.kill()?;
    }

    // A fresh member starts exactly at the committed offsets.
    let committed = committed_offsets(&bs2, &group, &topic, PARTITIONS)?;
    let c = produce_round(&bs2, &topic, PARTITIONS, 10, "c")?;
    let fresh_cfg = base_config(MemberKind::Rdkafka, &bs2, &group, &topic).with_name("fresh");
    let mut fresh = spawn(&fresh_cfg)?;
    wait_consumed(&[&fresh], &c.ranges, CONSUME)?;
    for p in 0..PARTITIONS {
        let first = fresh
            .messages()
            .iter()
            .filter(|m| m.partition == p)
            .map(|m| m.offset)
            .min();
        let want = committed.get(&p).copied().flatten();
        ensure!(
            first == want,
            "partition {p}: the fresh member started at {first:?}, committed offset {want:?}\n{}",
            fresh.report()
        );
    }
    fresh.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// Offsets reset while the group is empty

/// The smallest offset `member` read per partition.
fn first_offsets(member: &Member) -> BTreeMap<i32, i64> {
    let mut out: BTreeMap<i32, i64> = BTreeMap::new();
    for c in member.messages() {
        let e = out.entry(c.partition).or_insert(c.offset);
        *e = (*e).min(c.offset);
    }
    out
}

fn wait_state(bootstrap: &str, group: &str, topic: &str, state: &str) -> Result<GroupView> {
    let mut last = None;
    let r = wait_for(SETTLE, &format!("group {group} to be {state}"), || {
        let v = describe_group(bootstrap, group, topic)?;
        last = v.clone();
        Ok(v.filter(|v| v.state == state))
    });
    r.with_context(|| format!("last DescribeGroups: {last:?}"))
}

#[test]
fn offsets_reset_while_group_is_empty_are_where_its_consumers_start() -> Result<()> {
    let (broker, topic, group) = setup(PARTITIONS)?;
    let bs = broker.bootstrap();
    let a = produce_round(&bs, &topic, PARTITIONS, 10, "a")?;
    let base = base_config(MemberKind::Rdkafka, &bs, &group, &topic);

    let mut m1 = spawn(&base.with_name("m1"))?;
    wait_consumed(&[&m1], &a.ranges, CONSUME)?;
    wait_committed(&bs, &group, &topic, &a.ends(), COMMIT)?;
    // While it has a member, a commit from outside the group is refused.
    let outsider: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 1)).collect();
    match commit_without_joining(&bs, &group, &topic, &outsider) {
        Ok(()) => bail!("a generation -1 commit to group {group} with a live member was accepted"),
        Err(e) => println!("generation -1 commit to a live group refused as expected: {e:#}"),
    }
    wait_committed(&bs, &group, &topic, &a.ends(), COMMIT)
        .context("the refused commit changed the offsets")?;
    m1.close()?;
    let empty = wait_state(&bs, &group, &topic, "Empty")?;
    ensure!(
        empty.members.is_empty(),
        "Empty group with members: {empty:?}"
    );

    // Reset with rdkafka: a consumer that commits without joining.
    let to3: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 3)).collect();
    commit_without_joining(&bs, &group, &topic, &to3)?;
    wait_committed(&bs, &group, &topic, &to3, COMMIT)?;
    let mut m2 = spawn(&base.with_name("m2"))?;
    let from3: BTreeMap<i32, (i64, i64)> = (0..PARTITIONS).map(|p| (p, (3, 10))).collect();
    wait_consumed(&[&m2], &from3, CONSUME)?;
    ensure!(
        first_offsets(&m2) == to3,
        "after a reset to 3 the consumer started at {:?}\n{}",
        first_offsets(&m2),
        m2.report()
    );
    check_values(&[&m2], &[&a])?;
    wait_committed(&bs, &group, &topic, &a.ends(), COMMIT)?;
    m2.close()?;
    wait_state(&bs, &group, &topic, "Empty")?;

    // Reset with kafka-python's admin client, then a kafka-python consumer.
    require_python()?;
    let out = cmd::run(
        Command::new("python3").arg(python_script()).args([
            "alter-offsets",
            "--bootstrap",
            &bs,
            "--group",
            &group,
            "--topic",
            &topic,
            "--partitions",
            &PARTITIONS.to_string(),
            "--offset",
            "7",
        ]),
        None,
        Duration::from_secs(60),
    )?;
    ensure!(
        out.status.success() && out.stdout.contains("ALL CHECKS PASSED"),
        "kafka-python alter_group_offsets failed: {out}"
    );
    let to7: BTreeMap<i32, i64> = (0..PARTITIONS).map(|p| (p, 7)).collect();
    wait_committed(&bs, &group, &topic, &to7, COMMIT)?;
    let py = base_config(MemberKind::KafkaPython, &bs, &group, &topic).with_name("py");
    let mut m3 = spawn(&py)?;
    let from7: BTreeMap<i32, (i64, i64)> = (0..PARTITIONS).map(|p| (p, (7, 10))).collect();
    wait_consumed(&[&m3], &from7, CONSUME)?;
    ensure!(
        first_offsets(&m3) == to7,
        "after a reset to 7 the kafka-python consumer started at {:?}\n{}",
        first_offsets(&m3),
        m3.report()
    );
    wait_committed(&bs, &group, &topic, &a.ends(), COMMIT)?;
    m3.close()?;
    Ok(())
}

// ---------------------------------------------------------------------------
// kafka-python admin: ListGroups / DescribeGroups / DeleteGroups

#[test]
fn kafka_python_admin_lists_describes_and_deletes_groups() -> Result<()> {
    require_python()?;
    let broker = start_broker()?;
    let bs = broker.bootstrap();
    let topic = unique_topic("kpy-groups");
    let group = unique_topic("kpy-group");
    let out = cmd::run(
        Command::new("python3").arg(python_script()).args([
            "admin-groups",
            "--bootstrap",
            &bs,
            "--group",
            &group,
            "--topic",
            &topic,
        ]),
        None,
        Duration::from_secs(120),
    )?;
    ensure!(
        out.status.success(),
        "kafka-python admin-groups failed: {out}"
    );
    ensure!(
        out.stdout.contains("ALL CHECKS PASSED"),
        "kafka-python admin-groups did not finish: {out}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// Raw protocol: bad requests get Kafka's error codes and change nothing

const INVALID_GROUP_ID: i16 = 24;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const UNKNOWN_MEMBER_ID: i16 = 25;
const ILLEGAL_GENERATION: i16 = 22;
const MEMBER_ID_REQUIRED: i16 = 79;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

/// Version prefix + body, as consumer-protocol metadata travels.
fn versioned<M: Encodable>(m: &M, version: i16) -> Result<Bytes> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    m.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

/// A one-member group driven by hand: joined, synced, Stable.
struct RawGroup {
    conn: RawConnection,
    group: String,
    topic: String,
    member_id: String,
    generation: i32,
}

fn join_request(
    group: &str,
    member_id: &str,
    protocol_type: &str,
    topic: &str,
) -> Result<JoinGroupRequest> {
    let subscription = ConsumerProtocolSubscription::default().with_topics(vec![s(topic)]);
    Ok(JoinGroupRequest::default()
        .with_group_id(GroupId(s(group)))
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(s(member_id))
        .with_protocol_type(s(protocol_type))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(versioned(&subscription, 0)?)]))
}

impl RawGroup {
    fn join_version(&mut self) -> Result<i16> {
        self.conn.version_for::<JoinGroupRequest>(9)
    }

    fn join(&mut self, req: &JoinGroupRequest) -> Result<JoinGroupResponse> {
        let v = self.join_version()?;
        self.conn.request(v, req)
    }

    fn start(bootstrap_addr: std::net::SocketAddr, group: &str, topic: &str) -> Result<Self> {
        let mut conn = RawConnection::connect(bootstrap_addr)?;
        let fc_version = conn.version_for::<FindCoordinatorRequest>(3)?;
        let coord = wait_for(SETTLE, "FindCoordinator to name a coordinator", || {
            let resp = conn.request(
                fc_version,
                &FindCoordinatorRequest::default().with_key(s(group)),
            )?;
            Ok((resp.error_code == 0).then_some(resp))
        })?;
        ensure!(
            coord.port == i32::from(bootstrap_addr.port()),
            "FindCoordinator v{fc_version} named {}:{} (node {:?}); the only broker is {bootstrap_addr}",
            coord.host.as_str(),
            coord.port,
            coord.node_id
        );
        let mut g = RawGroup {
            conn,
            group: group.to_string(),
            topic: topic.to_string(),
            member_id: String::new(),
            generation: -1,
        };
        let mut resp = g.join(&join_request(group, "", "consumer", topic)?)?;
        if resp.error_code == MEMBER_ID_REQUIRED {
            let id = resp.member_id.to_string();
            resp = g.join(&join_request(group, &id, "consumer", topic)?)?;
        }
        ensure!(
            resp.error_code == 0,
            "JoinGroup of the only member: {resp:?}"
        );
        ensure!(
            resp.leader == resp.member_id,
            "the only member is not the leader: {resp:?}"
        );
        g.member_id = resp.member_id.to_string();
        g.generation = resp.generation_id;
        let assignment = ConsumerProtocolAssignment::default().with_assigned_partitions(vec![
            AssignedPartitions::default()
                .with_topic(raw::topic_name(topic))
                .with_partitions((0..PARTITIONS).collect()),
        ]);
        let sv = g.conn.version_for::<SyncGroupRequest>(5)?;
        let sync = SyncGroupRequest::default()
            .with_group_id(GroupId(s(group)))
            .with_generation_id(g.generation)
            .with_member_id(s(&g.member_id))
            .with_protocol_type(Some(s("consumer")))
            .with_protocol_name(Some(s("range")))
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(s(&g.member_id))
                .with_assignment(versioned(&assignment, 0)?)]);
        let sresp = g.conn.request(sv, &sync)?;
        ensure!(sresp.error_code == 0, "SyncGroup v{sv}: {sresp:?}");
        ensure!(
            group::decode_assignment(&sresp.assignment, topic)? == (0..PARTITIONS).collect(),
            "SyncGroup v{sv} returned assignment {:?}",
            sresp.assignment
        );
        Ok(g)
    }

    /// DescribeGroups as a comparable snapshot.
    fn describe(&mut self) -> Result<String> {
        let v = self.conn.version_for::<DescribeGroupsRequest>(5)?;
        let resp = self.conn.request(
            v,
            &DescribeGroupsRequest::default().with_groups(vec![GroupId(s(&self.group))]),
        )?;
        ensure!(resp.groups.len() == 1, "DescribeGroups v{v}: {resp:?}");
        let g = &resp.groups[0];
        let members: Vec<String> = g
            .members
            .iter()
            .map(|m| {
                format!(
                    "member {} instance {:?} client {} metadata {:?} assignment {:?}",
                    m.member_id.as_str(),
                    m.group_instance_id.as_ref().map(|i| i.as_str()),
                    m.client_id.as_str(),
                    m.member_metadata,
                    m.member_assignment
                )
            })
            .collect();
        Ok(format!(
            "error {} state {} protocol_type {} protocol {} members [{}]",
            g.error_code,
            g.group_state.as_str(),
            g.protocol_type.as_str(),
            g.protocol_data.as_str(),
            members.join("; ")
        ))
    }

    fn heartbeat(&mut self, member_id: &str) -> Result<i16> {
        let generation = self.generation;
        self.heartbeat_as(member_id, generation)
    }

    fn heartbeat_as(&mut self, member_id: &str, generation: i32) -> Result<i16> {
        let v = self.conn.version_for::<HeartbeatRequest>(4)?;
        let resp = self.conn.request(
            v,
            &HeartbeatRequest::default()
                .with_group_id(GroupId(s(&self.group)))
                .with_generation_id(generation)
                .with_member_id(s(member_id)),
        )?;
        Ok(resp.error_code)
    }

    /// OffsetCommit of `offset` to every partition of the topic; returns the
    /// error code per partition.
    fn commit_as(&mut self, generation: i32, offset: i64) -> Result<BTreeMap<i32, i16>> {
        let v = self.conn.version_for::<OffsetCommitRequest>(8)?;
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(s(&self.group)))
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(s(&self.member_id))
            .with_retention_time_ms(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(raw::topic_name(&self.topic))
                .with_partitions(
                    (0..PARTITIONS)
                        .map(|p| {
                            OffsetCommitRequestPartition::default()
                                .with_partition_index(p)
                                .with_committed_offset(offset)
                                .with_committed_leader_epoch(-1)
                        })
                        .collect(),
                )]);
        let resp = self.conn.request(v, &req)?;
        Ok(resp
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (p.partition_index, p.error_code))
            })
            .collect())
    }
}

/// A Stable one-member group, its DescribeGroups snapshot, and the broker.
fn raw_stable_group() -> Result<(BrokerProcess, RawGroup, String)> {
    let (broker, topic, group) = setup(PARTITIONS)?;
    let mut g = RawGroup::start(broker.addr(), &group, &topic)?;
    let snapshot = g.describe()?;
    ensure!(
        snapshot.contains("state Stable") && snapshot.contains(&g.member_id),
        "DescribeGroups of a synced one-member group: {snapshot}"
    );
    ensure!(
        g.heartbeat(&g.member_id.clone())? == 0,
        "Heartbeat of the member failed"
    );
    Ok((broker, g, snapshot))
}

fn ensure_unchanged(g: &mut RawGroup, before: &str, after_what: &str) -> Result<()> {
    let now = g.describe()?;
    ensure!(
        now == before,
        "DescribeGroups changed after {after_what}:\nbefore: {before}\nafter:  {now}"
    );
    Ok(())
}

#[test]
fn join_group_with_empty_group_id_is_invalid_group_id() -> Result<()> {
    let (_broker, mut g, before) = raw_stable_group()?;
    let topic = g.topic.clone();
    let v = g.join_version()?;
    let resp = g.join(&join_request("", "", "consumer", &topic)?)?;
    ensure!(
        resp.error_code == INVALID_GROUP_ID,
        "JoinGroup v{v} with group id \"\": error {} (want INVALID_GROUP_ID {INVALID_GROUP_ID}): {resp:?}",
        resp.error_code
    );
    ensure_unchanged(&mut g, &before, "a JoinGroup with an empty group id")
}

#[test]
fn join_group_with_another_protocol_type_is_inconsistent_group_protocol() -> Result<()> {
    let (_broker, mut g, before) = raw_stable_group()?;
    let (group, topic) = (g.group.clone(), g.topic.clone());
    let v = g.join_version()?;
    let resp = g.join(&join_request(&group, "", "connect", &topic)?)?;
    ensure!(
        resp.error_code == INCONSISTENT_GROUP_PROTOCOL,
        "JoinGroup v{v} to a Stable 'consumer' group with protocol type 'connect': error {} \
         (want INCONSISTENT_GROUP_PROTOCOL {INCONSISTENT_GROUP_PROTOCOL}): {resp:?}",
        resp.error_code
    );
    ensure_unchanged(&mut g, &before, "a JoinGroup with protocol type 'connect'")
}

#[test]
fn offset_commit_to_unknown_topic_partition_fails_only_that_partition() -> Result<()> {
    let (broker, mut g, before) = raw_stable_group()?;
    let (group, topic) = (g.group.clone(), g.topic.clone());
    let missing_topic = unique_topic("no-such-topic");
    let part = |p: i32| {
        OffsetCommitRequestPartition::default()
            .with_partition_index(p)
            .with_committed_offset(5)
            .with_committed_leader_epoch(-1)
    };
    let req = OffsetCommitRequest::default()
        .with_group_id(GroupId(s(&group)))
        .with_generation_id_or_member_epoch(g.generation)
        .with_member_id(s(&g.member_id))
        .with_retention_time_ms(-1)
        .with_topics(vec![
            OffsetCommitRequestTopic::default()
                .with_name(raw::topic_name(&topic))
                .with_partitions(vec![part(0), part(PARTITIONS + 93)]),
            OffsetCommitRequestTopic::default()
                .with_name(raw::topic_name(&missing_topic))
                .with_partitions(vec![part(0)]),
        ]);
    let v = g.conn.version_for::<OffsetCommitRequest>(8)?;
    let resp = g.conn.request(v, &req)?;
    let mut codes = BTreeMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            codes.insert((t.name.0.to_string(), p.partition_index), p.error_code);
        }
    }
    let want = BTreeMap::from([
        ((topic.clone(), 0), 0),
        ((topic.clone(), PARTITIONS + 93), UNKNOWN_TOPIC_OR_PARTITION),
        ((missing_topic.clone(), 0), UNKNOWN_TOPIC_OR_PARTITION),
    ]);
    ensure!(
        codes == want,
        "OffsetCommit v{v} error codes per partition {codes:?}, want {want:?}"
    );
    let committed = committed_offsets(&broker.bootstrap(), &group, &topic, PARTITIONS)?;
    let mut expected: BTreeMap<i32, Option<i64>> = (0..PARTITIONS).map(|p| (p, None)).collect();
    expected.insert(0, Some(5));
    ensure!(
        committed == expected,
        "OffsetFetch after the partly failed commit: {committed:?}, want {expected:?}"
    );
    ensure_unchanged(
        &mut g,
        &before,
        "an OffsetCommit naming an unknown topic and partition",
    )
}

#[test]
fn heartbeat_from_unknown_member_is_unknown_member_id() -> Result<()> {
    let (_broker, mut g, before) = raw_stable_group()?;
    let code = g.heartbeat("sluice-tests-no-such-member")?;
    ensure!(
        code == UNKNOWN_MEMBER_ID,
        "Heartbeat from an unknown member id: error {code} (want UNKNOWN_MEMBER_ID {UNKNOWN_MEMBER_ID})"
    );
    ensure_unchanged(&mut g, &before, "a Heartbeat from an unknown member")?;
    let mine = g.member_id.clone();
    ensure!(
        g.heartbeat(&mine)? == 0,
        "the real member's Heartbeat fails after an unknown member's"
    );
    Ok(())
}

#[test]
fn stale_generation_is_illegal_generation_for_heartbeat_and_commit() -> Result<()> {
    let (broker, mut g, before) = raw_stable_group()?;
    let (group, topic, member) = (g.group.clone(), g.topic.clone(), g.member_id.clone());
    let stale = g.generation - 1;
    let code = g.heartbeat_as(&member, stale)?;
    ensure!(
        code == ILLEGAL_GENERATION,
        "Heartbeat with generation {stale} (current {}): error {code} (want ILLEGAL_GENERATION {ILLEGAL_GENERATION})",
        g.generation
    );
    let codes = g.commit_as(stale, 4)?;
    let want: BTreeMap<i32, i16> = (0..PARTITIONS).map(|p| (p, ILLEGAL_GENERATION)).collect();
    ensure!(
        codes == want,
        "OffsetCommit with generation {stale} (current {}): {codes:?}, want {want:?}",
        g.generation
    );
    let committed = committed_offsets(&broker.bootstrap(), &group, &topic, PARTITIONS)?;
    ensure!(
        committed.values().all(Option::is_none),
        "a refused OffsetCommit stored offsets: {committed:?}"
    );
    ensure_unchanged(
        &mut g,
        &before,
        "a Heartbeat and an OffsetCommit from a stale generation",
    )?;
    // The current generation still commits.
    let current = g.generation;
    let codes = g.commit_as(current, 4)?;
    let ok: BTreeMap<i32, i16> = (0..PARTITIONS).map(|p| (p, 0)).collect();
    ensure!(
        codes == ok,
        "OffsetCommit with the current generation: {codes:?}"
    );
    Ok(())
}
