//! `sluice-console-bench`: the console's start-up and refresh costs on the
//! bundled broker with many topics and groups (issue 6's benchmark).
//!
//! 1. Populates a data directory through the bundled broker: `--topics`
//!    topics of `--partitions` partitions, `--messages` records in each
//!    partition of the first `--groups` topics, and `--groups` groups that
//!    committed half of them (so every group has lag). Skipped when the
//!    directory already holds the topics.
//! 2. Stops the broker, then times a cold console start: bundled broker
//!    start (recovery of every partition) -> first frame -> first full frame
//!    (every topic listed), through the real event loop drawing into an
//!    off-screen 120x40 terminal.
//! 3. Keeps the console on the topics view, then on the groups view, for
//!    `--seconds` each with `--refresh`, pressing Down/Up every 20 ms: prints
//!    each refresh command's cost, the draw time per frame, and the time from
//!    a key press to the frame that shows it, separately for presses made
//!    while a refresh was in flight, which is what "the draw loop never
//!    stalls on the network" means.
//!
//! Prints figures only; nothing here asserts a speed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;
use sluice_broker::alloc::GuardedAlloc;
use sluice_broker::client::{Client, ClientConfig, NewTopic, ProduceRecord};
use sluice_tui::app::{Action, AppConfig, Command, View};
use sluice_tui::runtime::{self, Perform};
use sluice_tui::{bundled, io};
use tokio::sync::{mpsc, watch};

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

#[derive(Debug, Parser)]
#[command(about = "Times the console's start and refreshes on the bundled broker")]
struct Args {
    /// Data directory (kept, so a second run skips populating).
    #[arg(long, default_value = "/tmp/sluice-console-bench")]
    data_dir: PathBuf,
    #[arg(long, default_value_t = 2000)]
    topics: usize,
    #[arg(long, default_value_t = 6)]
    partitions: i32,
    #[arg(long, default_value_t = 200)]
    groups: usize,
    /// Records per partition of each topic a group reads.
    #[arg(long, default_value_t = 20)]
    messages: usize,
    /// How long to watch each view.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// The console's refresh period, in ms.
    #[arg(long, default_value_t = 2000)]
    refresh_ms: u64,
}

const TOPIC_PREFIX: &str = "bench-topic-";

fn topic_name(i: usize) -> String {
    format!("{TOPIC_PREFIX}{i:05}")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    populate(&args).await?;

    let started = Instant::now();
    let broker = bundled::start(&args.data_dir).await?;
    let listening = started.elapsed();
    let addr = broker.addr.to_string();

    let probe = Probe::default();
    let perform = timed(io::connecting_performer(addr.clone()), &probe);
    let (key_tx, rx) = mpsc::unbounded_channel::<Action>();
    let loop_tx = key_tx.clone();
    let (seen_tx, seen_rx) = watch::channel(Seen::default());
    let mut terminal = Terminal::new(TestBackend::new(120, 40))?;
    let config = AppConfig {
        bootstrap: addr,
        read_only: false,
        refresh: Duration::from_millis(args.refresh_ms),
    };
    let draws = probe.draws.clone();
    let topics = args.topics;
    let console = tokio::spawn(async move {
        runtime::event_loop(&mut terminal, config, perform, loop_tx, rx, {
            move |app, took| {
                draws
                    .lock()
                    .expect("draws")
                    .push((app.view().title(), took));
                let listed = app.topics.data.as_ref().map(|rows| {
                    rows.iter()
                        .filter(|t| t.name.starts_with(TOPIC_PREFIX) && t.messages.is_some())
                        .count()
                });
                let full = match app.view() {
                    View::Topics => listed == Some(topics),
                    View::Groups => app.groups.data.is_some(),
                    _ => false,
                };
                seen_tx.send_replace(Seen {
                    at: Some(Instant::now()),
                    view: app.view().title(),
                    selected: app.list().selected,
                    full,
                    listed,
                    error: app.topics.error.clone().or(app.groups.error.clone()),
                });
            }
        })
        .await
    });

    let mut seen = seen_rx.clone();
    let first_frame = {
        seen.wait_for(|s| s.at.is_some()).await?;
        started.elapsed()
    };
    if tokio::time::timeout(
        Duration::from_secs(300),
        seen.wait_for(|s| s.full && s.view == "topics"),
    )
    .await
    .is_err()
    {
        let last = seen.borrow().clone();
        bail!(
            "no full topics frame within 300 s; the last frame showed {:?} benchmark topics with counts on the {} view, error: {:?}",
            last.listed,
            last.view,
            last.error
        );
    }
    let full_frame = started.elapsed();
    println!(
        "cold start with {} topics x {} partitions, {} groups:",
        args.topics, args.partitions, args.groups
    );
    println!("  bundled broker listening   {:>8.0} ms", ms(listening));
    println!("  first frame                {:>8.0} ms", ms(first_frame));
    println!("  first full frame (topics)  {:>8.0} ms", ms(full_frame));

    watch_view(&args, &probe, &key_tx, &seen_rx, "topics").await?;
    report(&probe, "topics");
    // `:groups` + Enter jumps to the groups view.
    for c in ":groups".chars() {
        send_key(&key_tx, KeyCode::Char(c))?;
    }
    send_key(&key_tx, KeyCode::Enter)?;
    tokio::time::timeout(
        Duration::from_secs(120),
        seen_rx.clone().wait_for(|s| s.full && s.view == "groups"),
    )
    .await
    .context("no full groups frame within 120 s")??;
    probe.reset();
    watch_view(&args, &probe, &key_tx, &seen_rx, "groups").await?;
    report(&probe, "groups");

    send_key(&key_tx, KeyCode::Char('q'))?;
    console.await??;
    broker.stop().await?;
    if let Some(kib) = peak_rss_kib() {
        println!(
            "peak RSS of the process (console + bundled broker): {} MiB",
            kib / 1024
        );
    }
    Ok(())
}

#[derive(Debug, Clone, Default)]
struct Seen {
    at: Option<Instant>,
    view: String,
    selected: usize,
    full: bool,
    /// Benchmark topics listed with their message counts.
    listed: Option<usize>,
    error: Option<String>,
}

/// What the benchmark records while the console runs.
#[derive(Default, Clone)]
struct Probe {
    /// Refresh commands in flight.
    in_flight: Arc<AtomicUsize>,
    /// Command name -> durations.
    commands: Arc<Mutex<BTreeMap<&'static str, Vec<Duration>>>>,
    /// View title, draw time.
    draws: Arc<Mutex<Vec<(String, Duration)>>>,
    /// Key latency, and whether a refresh was in flight at the press.
    keys: Arc<Mutex<Vec<(Duration, bool)>>>,
}

impl Probe {
    fn reset(&self) {
        self.commands.lock().expect("commands").clear();
        self.draws.lock().expect("draws").clear();
        self.keys.lock().expect("keys").clear();
    }
}

fn command_name(cmd: &Command) -> &'static str {
    match cmd {
        Command::LoadCluster => "LoadCluster",
        Command::LoadTopics => "LoadTopics",
        Command::LoadGroups => "LoadGroups",
        Command::LoadTopicDetail { .. } => "LoadTopicDetail",
        Command::LoadGroupDetail { .. } => "LoadGroupDetail",
        _ => "other",
    }
}

/// Wraps the console's performer to time each command and count those in
/// flight.
fn timed(inner: Perform, probe: &Probe) -> Perform {
    let probe = probe.clone();
    Arc::new(move |cmd: Command| {
        let name = command_name(&cmd);
        let fut = inner(cmd);
        let probe = probe.clone();
        Box::pin(async move {
            probe.in_flight.fetch_add(1, Ordering::SeqCst);
            let started = Instant::now();
            let action = fut.await;
            probe
                .commands
                .lock()
                .expect("commands")
                .entry(name)
                .or_default()
                .push(started.elapsed());
            probe.in_flight.fetch_sub(1, Ordering::SeqCst);
            action
        })
    })
}

fn send_key(tx: &mpsc::UnboundedSender<Action>, code: KeyCode) -> Result<()> {
    tx.send(Action::Key(KeyEvent::new(code, KeyModifiers::NONE)))
        .map_err(|_| anyhow::anyhow!("the console stopped"))
}

/// Presses Down and Up in turn every 20 ms for `--seconds`, timing each
/// press to the first frame whose selection shows it.
async fn watch_view(
    args: &Args,
    probe: &Probe,
    tx: &mpsc::UnboundedSender<Action>,
    seen: &watch::Receiver<Seen>,
    view: &str,
) -> Result<()> {
    let mut seen = seen.clone();
    let end = Instant::now() + Duration::from_secs(args.seconds);
    let mut down = true;
    while Instant::now() < end {
        let before = seen.borrow_and_update().selected;
        let busy = probe.in_flight.load(Ordering::SeqCst) > 0;
        let pressed = Instant::now();
        send_key(tx, if down { KeyCode::Down } else { KeyCode::Up })?;
        tokio::time::timeout(
            Duration::from_secs(30),
            seen.wait_for(|s| s.view == view && s.selected != before),
        )
        .await
        .with_context(|| format!("a key press on the {view} view showed no change in 30 s"))??;
        probe
            .keys
            .lock()
            .expect("keys")
            .push((pressed.elapsed(), busy));
        down = !down;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn report(probe: &Probe, view: &str) {
    println!("{view} view:");
    for (name, times) in probe.commands.lock().expect("commands").iter() {
        println!("  {name:<16} x{:<4} {}", times.len(), summary(times));
    }
    let draws: Vec<Duration> = probe
        .draws
        .lock()
        .expect("draws")
        .iter()
        .filter(|(v, _)| v == view)
        .map(|(_, d)| *d)
        .collect();
    println!("  draw             x{:<4} {}", draws.len(), summary(&draws));
    let keys = probe.keys.lock().expect("keys");
    for (label, busy) in [
        ("key -> frame, idle", false),
        ("key -> frame, refreshing", true),
    ] {
        let times: Vec<Duration> = keys
            .iter()
            .filter(|(_, b)| *b == busy)
            .map(|(d, _)| *d)
            .collect();
        println!("  {label:<26} x{:<4} {}", times.len(), summary(&times));
    }
}

fn summary(times: &[Duration]) -> String {
    if times.is_empty() {
        return "-".into();
    }
    let mut sorted = times.to_vec();
    sorted.sort();
    let at = |q: f64| {
        let i = ((sorted.len() - 1) as f64 * q).round() as usize;
        ms(sorted[i])
    };
    format!(
        "p50 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
        at(0.5),
        at(0.99),
        ms(sorted[sorted.len() - 1])
    )
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Creates the topics, records and committed groups unless the data
/// directory already has them.
async fn populate(args: &Args) -> Result<()> {
    let broker = bundled::start(&args.data_dir).await?;
    let client = connect(&broker.addr.to_string()).await?;
    let existing = client.metadata(None).await?;
    let have = (0..args.topics)
        .filter(|i| existing.topic(&topic_name(*i)).is_some())
        .count();
    if have == args.topics {
        println!("{} already holds the topics", args.data_dir.display());
        broker.stop().await?;
        return Ok(());
    }
    let started = Instant::now();
    let missing: Vec<usize> = (0..args.topics)
        .filter(|i| existing.topic(&topic_name(*i)).is_none())
        .collect();
    for chunk in missing.chunks(100) {
        let new: Vec<NewTopic> = chunk
            .iter()
            .map(|i| NewTopic {
                name: topic_name(*i),
                partitions: args.partitions,
                replication_factor: 1,
                configs: BTreeMap::new(),
            })
            .collect();
        for (name, result) in client.create_topics(new, false).await? {
            result.with_context(|| format!("creating {name}"))?;
        }
    }
    println!(
        "created {} topics x {} partitions in {:.1} s",
        missing.len(),
        args.partitions,
        started.elapsed().as_secs_f64()
    );
    // Topics must be known to the client before producing to them.
    client.metadata(None).await?;
    let started = Instant::now();
    for g in 0..args.groups.min(args.topics) {
        let topic = topic_name(g);
        let mut offsets = BTreeMap::new();
        for p in 0..args.partitions {
            for m in 0..args.messages {
                let record = ProduceRecord {
                    key: Some(format!("k{m}").into_bytes()),
                    value: Some(format!("{{\"n\":{m}}}").into_bytes()),
                    ..ProduceRecord::default()
                };
                client.produce(&topic, Some(p), record).await?;
            }
            offsets.insert((topic.clone(), p), (args.messages / 2) as i64);
        }
        for (tp, result) in client
            .commit_offsets(&format!("bench-group-{g:04}"), &offsets)
            .await?
        {
            result.with_context(|| format!("committing {tp:?}"))?;
        }
    }
    println!(
        "produced and committed {} groups in {:.1} s",
        args.groups,
        started.elapsed().as_secs_f64()
    );
    broker.stop().await?;
    Ok(())
}

async fn connect(addr: &str) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match Client::connect(addr, ClientConfig::default()).await {
            Ok(c) => match c.metadata(None).await {
                Ok(_) => return Ok(c),
                Err(e) if Instant::now() > deadline => return Err(e.into()),
                Err(_) => {}
            },
            Err(e) if Instant::now() > deadline => return Err(e.into()),
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
