//! sluice-group-bench: how fast a consumer group recovers from a dead member
//! and how long its rebalances take.
//!
//! ```text
//! sluice-group-bench --bootstrap HOST:PORT [--members 10] [--partitions 12] \
//!     [--session-timeout-ms 6000] [--heartbeat-interval-ms 500] [--strategy range] [--rounds 1]
//! sluice-group-bench member --bootstrap HOST:PORT --group G --topic T [...]   (internal)
//! ```
//!
//! Every member is a child process running `sluice-group-bench member` (an
//! rdkafka consumer, see `sluice_tests::member`), so one can be killed with
//! SIGKILL: it dies without LeaveGroup, as a crashed consumer would. Times are
//! wall-clock milliseconds stamped by the members themselves, on this host.
//!
//! Per round:
//! - join: N-1 members settle, then the N-th subscribes; time from its
//!   subscribe to the moment all N hold a complete, disjoint assignment:
//!   `RESULT rebalance_ms=.. members=N trigger=join`
//! - leave: one member closes cleanly (LeaveGroup); time until the other N-1
//!   hold a complete assignment: `RESULT rebalance_ms=.. members=N trigger=leave`
//! - failover: a member is killed; right after, one marker message goes into
//!   each of its partitions; time from the kill until another member has
//!   received every marker: `RESULT failover_ms=.. session_timeout_ms=.. members=N partitions=P`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rdkafka::producer::BaseRecord;
use sluice_tests::group::{self, Member, MemberConfig, MemberKind};
use sluice_tests::member::{run_rdkafka_member, MemberArgs};
use sluice_tests::{kafka, now_ms, wait_for};

#[derive(Parser)]
#[command(
    name = "sluice-group-bench",
    about = "Consumer-group failover and rebalance times against a Kafka-compatible broker",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    bench: BenchArgs,
}

#[derive(Subcommand)]
enum Cmd {
    /// One group member on stdout's line protocol (used by the benchmark and
    /// the tests, which kill it to simulate a crash).
    Member(MemberArgs),
}

#[derive(Args, Clone)]
struct BenchArgs {
    #[arg(long)]
    bootstrap: Option<String>,
    /// Group size.
    #[arg(long, default_value_t = 10)]
    members: usize,
    /// Partitions of the benchmark topic (created fresh).
    #[arg(long, default_value_t = 12)]
    partitions: i32,
    #[arg(long, default_value_t = 6000)]
    session_timeout_ms: u32,
    #[arg(long, default_value_t = 500)]
    heartbeat_interval_ms: u32,
    /// partition.assignment.strategy of every member.
    #[arg(long, default_value = "range")]
    strategy: String,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Give up on any one step after this many seconds.
    #[arg(long, default_value_t = 120)]
    step_timeout_secs: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::Member(args)) => run_rdkafka_member(&args),
        None => bench(&cli.bench),
    }
}

struct Bench {
    args: BenchArgs,
    bootstrap: String,
    exe: PathBuf,
    topic: String,
    base: MemberConfig,
    step: Duration,
    spawned: usize,
}

impl Bench {
    fn spawn(&mut self) -> Result<Member> {
        self.spawned += 1;
        let cfg = self
            .base
            .with_name(&format!("bench-member-{}", self.spawned));
        Member::spawn(&cfg, &self.exe, Path::new("unused"))
    }

    fn balanced(&self, members: &[Member]) -> Result<()> {
        let refs: Vec<&Member> = members.iter().collect();
        group::wait_balanced(&refs, self.args.partitions, self.step)?;
        Ok(())
    }
}

/// When the complete assignment was in place: the latest `ASSIGNMENT` line
/// among the members.
fn settled_at(members: &[Member]) -> Result<i64> {
    members
        .iter()
        .map(|m| m.state().assignment_at)
        .max()
        .flatten()
        .context("no member reported an assignment")
}

fn bench(args: &BenchArgs) -> Result<()> {
    let Some(bootstrap) = args.bootstrap.clone() else {
        bail!("--bootstrap HOST:PORT is required");
    };
    if args.members < 2 {
        bail!("--members must be at least 2 (one fails, another takes over)");
    }
    if args.partitions < args.members as i32 {
        bail!(
            "--partitions {} is less than --members {}: every member must own a partition",
            args.partitions,
            args.members
        );
    }
    let exe = std::env::current_exe().context("locating sluice-group-bench itself")?;
    let tag = format!("{}-{}", std::process::id(), now_ms());
    let topic = format!("sluice-group-bench-{tag}");
    let group_id = format!("sluice-group-bench-{tag}");
    kafka::create_topic(&bootstrap, &topic, args.partitions, &[])
        .with_context(|| format!("creating {topic}"))?;
    println!(
        "topic {topic} ({} partitions), group {group_id}, {} members, strategy {}, session.timeout.ms {}, heartbeat.interval.ms {}",
        args.partitions, args.members, args.strategy, args.session_timeout_ms, args.heartbeat_interval_ms
    );
    let mut base = MemberConfig::new(MemberKind::Rdkafka, &bootstrap, &group_id, &topic, "bench");
    base.strategy = args.strategy.clone();
    base.session_timeout_ms = args.session_timeout_ms;
    base.heartbeat_interval_ms = args.heartbeat_interval_ms;
    let mut b = Bench {
        args: args.clone(),
        bootstrap,
        exe,
        topic,
        base,
        step: Duration::from_secs(args.step_timeout_secs),
        spawned: 0,
    };

    let mut members = Vec::new();
    for _ in 0..args.members - 1 {
        members.push(b.spawn()?);
    }
    b.balanced(&members)?;
    println!("{} members settled", members.len());

    for round in 1..=args.rounds {
        // Join: the N-th member subscribes.
        let joiner = b.spawn()?;
        members.push(joiner);
        let newest = members.last().context("no members")?;
        let subscribed = wait_for(b.step, "the new member to subscribe", || {
            Ok(newest.state().subscribed_at)
        })?;
        b.balanced(&members)?;
        let join_ms = settled_at(&members)? - subscribed;
        println!(
            "RESULT rebalance_ms={join_ms} members={} trigger=join round={round}",
            members.len()
        );

        // Leave: the newest member closes cleanly.
        let mut leaver = members.pop().context("no members")?;
        let left_at = now_ms();
        leaver.close()?;
        b.balanced(&members)?;
        let leave_ms = settled_at(&members)? - left_at;
        println!(
            "RESULT rebalance_ms={leave_ms} members={} trigger=leave round={round}",
            members.len() + 1
        );

        // Back to N for the failover.
        members.push(b.spawn()?);
        b.balanced(&members)?;

        // Failover: kill the first member, then mark each of its partitions.
        let mut victim = members.remove(0);
        let lost: BTreeSet<i32> = victim.assignment();
        let killed_at = now_ms();
        victim.kill()?;
        let markers = produce_markers(&b.bootstrap, &b.topic, &lost, round)?;
        let got = wait_for(
            b.step + Duration::from_millis(u64::from(args.session_timeout_ms) * 3),
            "another member to receive every marker of the killed member's partitions",
            || {
                let mut seen: BTreeMap<i32, i64> = BTreeMap::new();
                for m in &members {
                    for c in m.messages() {
                        if markers.get(&c.partition) == Some(&c.value) {
                            seen.entry(c.partition).or_insert(c.ts);
                        }
                    }
                }
                Ok((seen.len() == markers.len()).then_some(seen))
            },
        )
        .with_context(|| {
            let refs: Vec<&Member> = members.iter().collect();
            group::reports(&refs)
        })?;
        let last = got.values().copied().max().unwrap_or(killed_at);
        let per_partition: Vec<String> = got
            .iter()
            .map(|(p, ts)| format!("{p}:{}", ts - killed_at))
            .collect();
        println!(
            "failover round {round}: partitions {lost:?} taken over after (ms) {}",
            per_partition.join(" ")
        );
        println!(
            "RESULT failover_ms={} session_timeout_ms={} members={} partitions={} round={round}",
            last - killed_at,
            args.session_timeout_ms,
            members.len() + 1,
            args.partitions
        );
        // Back to N-1 settled members for the next round's join.
        b.balanced(&members)?;
    }
    for m in &mut members {
        m.close()?;
    }
    Ok(())
}

/// One acknowledged marker per partition; returns the marker value by partition.
fn produce_markers(
    bootstrap: &str,
    topic: &str,
    partitions: &BTreeSet<i32>,
    round: usize,
) -> Result<BTreeMap<i32, String>> {
    let mut config = kafka::producer_config(bootstrap);
    config.set("acks", "all").set("linger.ms", "0");
    let (producer, ctx) = kafka::producer(&config)?;
    let mut markers = BTreeMap::new();
    for (i, &p) in partitions.iter().enumerate() {
        let value = format!("marker-{round}-{p}-{}", now_ms());
        kafka::send_blocking(
            &producer,
            BaseRecord::with_opaque_to(topic, i)
                .partition(p)
                .payload(value.as_bytes()),
        )?;
        markers.insert(p, value);
    }
    let deliveries = kafka::flush_all(&producer, &ctx, markers.len())?;
    if let Some(d) = deliveries.iter().find(|d| d.error.is_some()) {
        bail!("marker delivery failed: {d:?}");
    }
    Ok(markers)
}
