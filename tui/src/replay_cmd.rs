//! `sluice replay`: copies a range of records from one topic to another
//! (same or another cluster) with [`sluice_broker::admin::replay`]: the
//! plan is printed first, then a progress bar with rate and ETA on a
//! terminal (a log line every few seconds otherwise), and a summary. Ctrl-C
//! stops after the batch in flight and prints the `--resume` argument that
//! continues without duplicates or gaps.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};
use sluice_broker::admin::replay::{
    self, Bound, ExecOptions, Outcome, Partitioning, Plan, Progress, ReplaySpec, ResumeState,
};
use sluice_broker::client::{Client, ClientConfig, IdempotentProducer, ProducerConfig};
use tokio_util::sync::CancellationToken;

use crate::cli::Output;
use crate::format;

/// `sluice replay` flags.
#[derive(Debug, Clone, Args)]
#[command(
    after_help = "Ranges are end-exclusive: --start 100 --end 200 copies offsets 100 to 199; \
    --end @T stops before the first record at or after time T. Times are RFC 3339 \
    (@2026-11-21T10:00:00Z) or milliseconds (@1795255200000). See docs/replay.md."
)]
pub struct ReplayArgs {
    /// Source topic on --bootstrap, optionally only some partitions: orders or orders:0,2
    #[arg(long, value_name = "TOPIC[:P,P]", value_parser = parse_from)]
    pub from: Source,
    /// Destination topic (it must exist).
    #[arg(long, value_name = "TOPIC")]
    pub to: String,
    /// Destination cluster, when it is not --bootstrap.
    #[arg(long, value_name = "HOST:PORT[,HOST:PORT]", value_parser = parse_to_bootstrap)]
    pub to_bootstrap: Option<String>,
    /// First record: earliest, an offset, or @TIMESTAMP.
    #[arg(long, default_value = "earliest", value_parser = Bound::parse_start)]
    pub start: Bound,
    /// Where to stop (exclusive): latest, an offset, or @TIMESTAMP.
    #[arg(long, default_value = "latest", value_parser = Bound::parse_end)]
    pub end: Bound,
    /// Destination partition of each record.
    #[arg(long, value_enum, default_value_t = PartitioningArg::Same)]
    pub partitioning: PartitioningArg,
    /// At most this many records per second.
    #[arg(long, value_name = "MSGS/S", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Count the records and bytes per partition; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Continue an interrupted replay from the state it printed
    /// (TOPIC:P=NEXT..END,...); it replaces --start and --end.
    #[arg(long, value_name = "STATE", value_parser = parse_resume, conflicts_with_all = ["start", "end"])]
    pub resume: Option<ResumeState>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub topic: String,
    pub partitions: Option<Vec<i32>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PartitioningArg {
    /// The source partition (the destination needs as many partitions).
    Same,
    /// murmur2 of the key, like Kafka's default partitioner.
    Key,
    /// One record per partition in turn.
    RoundRobin,
}

impl From<PartitioningArg> for Partitioning {
    fn from(p: PartitioningArg) -> Self {
        match p {
            PartitioningArg::Same => Partitioning::Same,
            PartitioningArg::Key => Partitioning::Key,
            PartitioningArg::RoundRobin => Partitioning::RoundRobin,
        }
    }
}

fn parse_from(s: &str) -> Result<Source, String> {
    replay::parse_source(s).map(|(topic, partitions)| Source { topic, partitions })
}

fn parse_resume(s: &str) -> Result<ResumeState, String> {
    s.parse()
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "{s:?} is not a positive number of records per second: write e.g. --rate 500"
        )),
    }
}

fn parse_to_bootstrap(s: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let ok = part
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!(
                "{part:?} is not HOST:PORT: write --to-bootstrap HOST:PORT[,HOST:PORT], e.g. localhost:9092"
            ));
        }
        out.push(part);
    }
    if out.is_empty() {
        return Err("empty: write --to-bootstrap HOST:PORT, e.g. localhost:9092".into());
    }
    Ok(out.join(","))
}

/// Runs the replay from `source` (connected to `bootstrap`).
pub async fn run(
    source: &Client,
    bootstrap: &str,
    output: Output,
    a: &ReplayArgs,
) -> anyhow::Result<()> {
    let dest_bootstrap = a.to_bootstrap.as_deref().unwrap_or(bootstrap);
    // A connection of its own even on the same cluster: fetching and
    // producing then overlap instead of queueing on one connection.
    let dest = Client::connect(dest_bootstrap, ClientConfig::default())
        .await
        .with_context(|| format!("connecting to the destination cluster {dest_bootstrap}"))?;
    let spec = ReplaySpec {
        source_topic: a.from.topic.clone(),
        partitions: a.from.partitions.clone(),
        dest_topic: a.to.clone(),
        start: a.start,
        end: a.end,
        partitioning: a.partitioning.into(),
        resume: a.resume.clone(),
        same_cluster: a.to_bootstrap.as_deref().is_none_or(|b| b == bootstrap),
    };
    let observed = replay::observe(source, &dest, &spec).await?;
    let plan = replay::plan(&spec, &observed)?;
    describe_plan(&plan, a);

    let cancel = CancellationToken::new();
    let watcher = tokio::spawn(watch_ctrl_c(cancel.clone()));
    let opts = ExecOptions {
        dry_run: a.dry_run,
        rate: a.rate,
        ..ExecOptions::default()
    };
    let mut producer = if a.dry_run {
        None
    } else {
        Some(IdempotentProducer::new(dest, ProducerConfig::default()).await?)
    };
    let mut reporter = Reporter::new(plan.total_offsets(), a.dry_run);
    let result = replay::execute(&plan, source, producer.as_mut(), &opts, &cancel, |p| {
        reporter.update(p)
    })
    .await;
    watcher.abort();
    reporter.finish();
    let outcome = result?;
    print_summary(output, &plan, a, &outcome);
    if outcome.cancelled {
        anyhow::bail!(
            "interrupted after {} records; to continue without duplicates, run the same command with --resume {}",
            outcome.progress.records(),
            outcome.resume
        );
    }
    Ok(())
}

/// First Ctrl-C: stop after the batch in flight. Second: exit at once.
async fn watch_ctrl_c(cancel: CancellationToken) {
    if tokio::signal::ctrl_c().await.is_err() {
        return;
    }
    eprintln!("stopping after the batch in flight (Ctrl-C again to exit at once)...");
    cancel.cancel();
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("exiting without waiting: the last batch may be written again on --resume");
        std::process::exit(130);
    }
}

fn describe_plan(plan: &Plan, a: &ReplayArgs) {
    eprintln!(
        "{} {} -> {} ({} partitions, partitioning {}): {} offsets in {} partitions",
        if a.dry_run { "dry run:" } else { "replay" },
        plan.source_topic,
        plan.dest_topic,
        plan.dest_partitions,
        plan.partitioning.name(),
        plan.total_offsets(),
        plan.ranges.len()
    );
    for r in &plan.ranges {
        for n in &r.notes {
            eprintln!("  partition {}: {n}", r.partition);
        }
    }
}

/// A progress bar on a terminal; otherwise a log line every few seconds.
struct Reporter {
    bar: Option<ProgressBar>,
    last_log: Option<Instant>,
    total: u64,
    verb: &'static str,
}

const LOG_EVERY: Duration = Duration::from_secs(2);

impl Reporter {
    fn new(total: u64, dry_run: bool) -> Reporter {
        let verb = if dry_run { "counted" } else { "copied" };
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} {elapsed_precise} [{wide_bar}] {pos}/{len} offsets, ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Reporter {
            bar,
            last_log: None,
            total,
            verb,
        }
    }

    fn update(&mut self, p: &Progress) {
        let done = self.total.saturating_sub(p.remaining_offsets());
        if let Some(bar) = &self.bar {
            bar.set_position(done);
            let secs = p.elapsed.as_secs_f64().max(1e-3);
            bar.set_message(format!(
                "({} records, {}, {:.0} records/s)",
                p.records(),
                format::bytes_human(p.bytes()),
                p.records() as f64 / secs
            ));
            return;
        }
        if self.last_log.is_some_and(|t| t.elapsed() < LOG_EVERY) {
            return;
        }
        self.last_log = Some(Instant::now());
        let secs = p.elapsed.as_secs_f64().max(1e-3);
        let rate = p.records() as f64 / secs;
        let eta = if done > 0 {
            let left = p.remaining_offsets() as f64 * secs / done as f64;
            format::duration_human((left * 1000.0) as i64)
        } else {
            "unknown".into()
        };
        eprintln!(
            "replay: {done}/{} offsets ({:.0}%), {} {} records ({}), {rate:.0} records/s, ETA {eta}",
            self.total,
            if self.total > 0 {
                done as f64 * 100.0 / self.total as f64
            } else {
                100.0
            },
            self.verb,
            p.records(),
            format::bytes_human(p.bytes()),
        );
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

fn print_summary(output: Output, plan: &Plan, a: &ReplayArgs, o: &Outcome) {
    let p = &o.progress;
    let secs = p.elapsed.as_secs_f64().max(1e-3);
    let mb_per_s = p.bytes() as f64 / 1e6 / secs;
    let status = if o.cancelled { "interrupted" } else { "done" };
    match output {
        Output::Json => {
            let parts: Vec<Value> = plan
                .ranges
                .iter()
                .map(|r| {
                    let pp = p.partitions.get(&r.partition);
                    json!({
                        "partition": r.partition,
                        "start": r.start,
                        "end": r.end,
                        "next": pp.map(|x| x.next),
                        "records": pp.map_or(0, |x| x.records),
                        "bytes": pp.map_or(0, |x| x.bytes),
                        "notes": r.notes,
                    })
                })
                .collect();
            println!(
                "{}",
                json!({
                    "from": plan.source_topic,
                    "to": plan.dest_topic,
                    "dry_run": a.dry_run,
                    "status": status,
                    "partitioning": plan.partitioning.name(),
                    "records": p.records(),
                    "bytes": p.bytes(),
                    "elapsed_ms": p.elapsed.as_millis() as u64,
                    "mb_per_s": mb_per_s,
                    "partitions": parts,
                    "resume": (o.cancelled).then(|| o.resume.to_string()),
                })
            );
        }
        Output::Text => {
            println!(
                "{:<10} {:>12} {:>12} {:>12} {:>10} {:>12}",
                "PARTITION", "START", "END", "NEXT", "RECORDS", "BYTES"
            );
            for r in &plan.ranges {
                let pp = p.partitions.get(&r.partition);
                println!(
                    "{:<10} {:>12} {:>12} {:>12} {:>10} {:>12}",
                    r.partition,
                    r.start,
                    r.end,
                    pp.map_or(r.start, |x| x.next),
                    pp.map_or(0, |x| x.records),
                    pp.map_or(0, |x| x.bytes)
                );
            }
            let what = if a.dry_run {
                "would copy"
            } else if o.cancelled {
                "copied (interrupted)"
            } else {
                "copied"
            };
            eprintln!(
                "{what} {} records ({}) in {:.1}s: {mb_per_s:.1} MB/s",
                p.records(),
                format::bytes_human(p.bytes()),
                secs
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn parse(args: &[&str]) -> Result<ReplayArgs, String> {
        Wrap::try_parse_from(std::iter::once("replay").chain(args.iter().copied()))
            .map(|w| w.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_forms() {
        let a = parse(&["--from", "orders:2,0", "--to", "copy"]).expect("parses");
        assert_eq!(a.from.topic, "orders");
        assert_eq!(a.from.partitions, Some(vec![0, 2]));
        assert_eq!((a.start, a.end), (Bound::Earliest, Bound::Latest));
        assert_eq!(a.partitioning, PartitioningArg::Same);
        let a = parse(&[
            "--from",
            "orders",
            "--to",
            "copy",
            "--start",
            "@2026-11-21T10:00:00Z",
            "--end",
            "500",
            "--partitioning",
            "round-robin",
            "--rate",
            "20",
            "--to-bootstrap",
            "h:1, h:2",
        ])
        .expect("parses");
        assert_eq!(a.start, Bound::Timestamp(1_795_255_200_000));
        assert_eq!(a.end, Bound::Offset(500));
        assert_eq!(a.rate, Some(20.0));
        assert_eq!(a.to_bootstrap.as_deref(), Some("h:1,h:2"));
    }

    #[test]
    fn bad_input_names_the_fix() {
        for (args, fix) in [
            (
                vec!["--from", "o", "--to", "c", "--start", "yesterday"],
                "@TIMESTAMP",
            ),
            (
                vec!["--from", "o", "--to", "c", "--end", "@2026-99-01"],
                "write --end latest",
            ),
            (
                vec!["--from", "o", "--to", "c", "--rate", "0"],
                "--rate 500",
            ),
            (vec!["--from", "o:x", "--to", "c"], "--from o:0,2"),
            (
                vec!["--from", "o", "--to", "c", "--to-bootstrap", "nohost"],
                "HOST:PORT",
            ),
            (
                vec!["--from", "o", "--to", "c", "--resume", "o:0=1"],
                "--resume exactly",
            ),
            (
                vec![
                    "--from", "o", "--to", "c", "--resume", "o:0=1..2", "--start", "3",
                ],
                "cannot be used with",
            ),
        ] {
            let e = parse(&args).expect_err("refused");
            assert!(e.contains(fix), "{args:?}: {e}");
        }
    }
}
