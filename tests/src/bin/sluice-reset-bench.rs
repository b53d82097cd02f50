//! sluice-reset-bench: how long planning an offset reset takes for a group
//! over many partitions.
//!
//! ```text
//! sluice-reset-bench [--bootstrap HOST:PORT] [--partitions 1000] [--records 5] [--rounds 5]
//! ```
//!
//! Without `--bootstrap` it starts a `sluice-broker` (found like the tests
//! find it) on a temporary data directory. It creates a topic of
//! `--partitions` partitions, produces `--records` records into each,
//! commits offset `records - 2` in each for a fresh group, then times:
//!
//! - `sluice_broker::admin::reset::prepare` (what `sluice offsets reset`
//!   runs before printing: describe the group, read its offsets, metadata,
//!   ListOffsets, plan, and the first/last record of every span) over all
//!   partitions, for `--to-earliest` (a re-read span in every partition) and
//!   `--to-datetime` (one more ListOffsets by timestamp), on one connected
//!   client: `RESULT plan_ms=.. strategy=.. partitions=N` (median and min
//!   of `--rounds`);
//! - the whole `sluice offsets reset --all-topics --to-earliest --output
//!   json` dry run as a process (start, connect, plan, print), when the
//!   `sluice` binary is next to this one: `RESULT cli_ms=..`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use clap::Parser;
use rdkafka::producer::BaseRecord;
use sluice_broker::admin::reset::{self, Scope, Strategy};
use sluice_broker::client::{Client, ClientConfig};
use sluice_tests::{cmd, kafka, now_ms, unique_topic, BrokerProcess};

#[derive(Parser)]
#[command(
    name = "sluice-reset-bench",
    about = "Time to plan a consumer-group offset reset over many partitions"
)]
struct Args {
    /// An existing cluster; without it a sluice-broker is started.
    #[arg(long)]
    bootstrap: Option<String>,
    #[arg(long, default_value_t = 1000)]
    partitions: i32,
    /// Records produced into each partition (at least 3).
    #[arg(long, default_value_t = 5)]
    records: i64,
    /// Timed runs per measurement.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    ensure!(args.records >= 3, "--records must be at least 3");
    ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let _broker;
    let bootstrap = match &args.bootstrap {
        Some(b) => b.clone(),
        None => {
            let b = BrokerProcess::start()?;
            let addr = b.bootstrap();
            _broker = b;
            addr
        }
    };
    let topic = unique_topic("reset-bench");
    let group = unique_topic("reset-bench-group");
    let setup = Instant::now();
    kafka::create_topic(&bootstrap, &topic, args.partitions, &[])?;
    produce(&bootstrap, &topic, args.partitions, args.records)?;
    let rt = tokio::runtime::Runtime::new()?;
    let client = rt.block_on(Client::connect(&bootstrap, ClientConfig::default()))?;
    let committed: BTreeMap<(String, i32), i64> = (0..args.partitions)
        .map(|p| ((topic.clone(), p), args.records - 2))
        .collect();
    for (tp, r) in rt.block_on(client.commit_offsets(&group, &committed))? {
        if let Err(e) = r {
            bail!("committing {tp:?}: {e}");
        }
    }
    eprintln!(
        "setup: {} partitions x {} records, group {group} committed, in {:.1} s",
        args.partitions,
        args.records,
        setup.elapsed().as_secs_f64()
    );

    let earliest_ts = now_ms() - 3_600_000;
    for (name, strategy) in [
        ("earliest", Strategy::Earliest),
        ("datetime", Strategy::ToDatetime(earliest_ts)),
    ] {
        let mut times = Vec::new();
        for _ in 0..args.rounds {
            let started = Instant::now();
            let prepared = rt.block_on(reset::prepare(
                &client,
                &group,
                &Scope::AllTopics,
                strategy.clone(),
                now_ms(),
            ))?;
            times.push(started.elapsed());
            ensure!(
                prepared.plan.rows.len() == usize::try_from(args.partitions)?,
                "planned {} rows",
                prepared.plan.rows.len()
            );
            let spans = prepared
                .plan
                .rows
                .iter()
                .filter(|r| r.span.is_some())
                .count();
            ensure!(
                spans == prepared.plan.rows.len(),
                "only {spans} rows have span timestamps"
            );
        }
        report("plan_ms", name, args.partitions, &mut times);
    }

    match sluice_binary() {
        Some(sluice) => {
            let mut times = Vec::new();
            for _ in 0..args.rounds {
                let started = Instant::now();
                cmd::run(
                    Command::new(&sluice).args([
                        "--bootstrap",
                        &bootstrap,
                        "offsets",
                        "reset",
                        "--group",
                        &group,
                        "--all-topics",
                        "--to-earliest",
                        "--output",
                        "json",
                    ]),
                    None,
                    Duration::from_secs(300),
                )?
                .require_success()?;
                times.push(started.elapsed());
            }
            report("cli_ms", "earliest", args.partitions, &mut times);
        }
        None => eprintln!("sluice binary not found next to this one: CLI run skipped"),
    }
    Ok(())
}

fn report(what: &str, strategy: &str, partitions: i32, times: &mut [Duration]) {
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    let min = times.first().copied().unwrap_or_default();
    println!(
        "RESULT {what}={:.1} min_ms={:.1} strategy={strategy} partitions={partitions} rounds={}",
        ms(median),
        ms(min),
        times.len()
    );
}

/// `records` records into every partition, acks=all, timestamps now.
fn produce(bootstrap: &str, topic: &str, partitions: i32, records: i64) -> Result<()> {
    let mut config = kafka::producer_config(bootstrap);
    config.set("acks", "all");
    let (producer, ctx) = kafka::producer(&config)?;
    let mut sent = 0usize;
    for i in 0..records {
        for p in 0..partitions {
            let value = format!("{p}-{i}");
            kafka::send_blocking(
                &producer,
                BaseRecord::with_opaque_to(topic, sent)
                    .partition(p)
                    .payload(value.as_bytes()),
            )?;
            sent += 1;
        }
    }
    let reports = kafka::flush_all(&producer, &ctx, sent)?;
    let failed = reports.iter().filter(|d| d.error.is_some()).count();
    ensure!(failed == 0, "{failed} of {sent} records failed");
    Ok(())
}

fn sluice_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("sluice"))
        .find(|c| c.is_file())
}
