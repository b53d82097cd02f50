//! `sluice offsets reset` and `sluice offsets undo`: the command line of
//! [`sluice_broker::admin::reset`]. A dry run (the default) prints the plan
//! and changes nothing; `--execute` applies it, after writing the previous
//! offsets to an undo file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{json, Value};
use sluice_broker::admin::reset::{
    self, duration, file, Applied, Clamp, Effect, PlanRow, Prepared, Scope, Strategy,
    TopicPartition, TopicSelection,
};
use sluice_broker::client::Client;

use crate::bundled::DEFAULT_DATA_DIR;
use crate::cli::Output;
use crate::format;

#[derive(Debug, Subcommand)]
pub enum OffsetsCommand {
    /// Move a consumer group's committed offsets: a dry run unless --execute.
    Reset(ResetArgs),
    /// Restore the offsets saved in an undo file by `offsets reset --execute`:
    /// a dry run unless --execute.
    Undo(UndoArgs),
}

/// An offsets file (`topic,partition,offset` lines), read and checked while
/// the command line is parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetsFile {
    pub path: PathBuf,
    pub offsets: BTreeMap<TopicPartition, i64>,
}

#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("strategy")
        .required(true)
        .multiple(false)
        .args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime",
               "by_duration", "to_current", "from_file"]),
))]
pub struct ResetArgs {
    /// The consumer group whose offsets move.
    #[arg(long)]
    pub group: String,
    /// A topic, or some of its partitions (orders:0,2,5); repeatable.
    #[arg(long = "topic", value_name = "TOPIC[:P,P...]", value_parser = parse_selection)]
    pub topics: Vec<TopicSelection>,
    /// Every topic the group has committed offsets for.
    #[arg(long, conflicts_with = "topics")]
    pub all_topics: bool,

    /// The log start of each partition.
    #[arg(long)]
    pub to_earliest: bool,
    /// The log end of each partition (skips the lag).
    #[arg(long)]
    pub to_latest: bool,
    /// This offset in every partition (clamped to the log).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i64).range(0..))]
    pub to_offset: Option<i64>,
    /// The committed offset plus N; negative rewinds (--shift-by -500).
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = parse_shift)]
    pub shift_by: Option<i64>,
    /// The first offset at or after this time (RFC 3339, e.g. 2026-11-21T10:00:00Z).
    #[arg(long, value_name = "RFC3339", value_parser = format::parse_datetime)]
    pub to_datetime: Option<i64>,
    /// The first offset at or after this long ago: PT1H, P1DT12H, 1h, 30m, 1h30m.
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_duration)]
    pub by_duration: Option<i64>,
    /// The committed offsets themselves, clamped into the log (repairs offsets
    /// that retention or truncation left outside it).
    #[arg(long)]
    pub to_current: bool,
    /// Offsets per partition from a CSV file (topic,partition,offset), as
    /// Kafka's tool exports them. Without --topic/--all-topics, the file's
    /// partitions.
    #[arg(long, value_name = "FILE", value_parser = read_offsets_file)]
    pub from_file: Option<OffsetsFile>,

    #[command(flatten)]
    pub apply: ApplyArgs,
}

#[derive(Debug, Args)]
pub struct UndoArgs {
    /// The undo file an executed reset wrote (topic,partition,offset lines).
    #[arg(value_name = "FILE", value_parser = read_offsets_file)]
    pub file: OffsetsFile,
    /// The consumer group to restore.
    #[arg(long)]
    pub group: String,
    #[command(flatten)]
    pub apply: ApplyArgs,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Apply the plan. Without it, only print it (a dry run).
    #[arg(long)]
    pub execute: bool,
    /// Only print the plan (the default; kept for scripts written for Kafka's tool).
    #[arg(long, conflicts_with = "execute")]
    pub dry_run: bool,
    /// Where --execute saves the previous offsets
    /// [default: DATA_DIR/undo/GROUP-UTCTIME.csv].
    #[arg(long, value_name = "FILE")]
    pub undo_file: Option<PathBuf>,
    /// The directory the default undo file goes under.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
}

impl OffsetsCommand {
    pub fn name(&self) -> &'static str {
        match self {
            OffsetsCommand::Reset(_) => "offsets reset",
            OffsetsCommand::Undo(_) => "offsets undo",
        }
    }

    /// Whether the command commits offsets (only with --execute).
    pub fn mutates(&self) -> bool {
        match self {
            OffsetsCommand::Reset(a) => a.apply.execute,
            OffsetsCommand::Undo(a) => a.apply.execute,
        }
    }

    /// Checks clap cannot express: a scope, unless --from-file gives one.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            OffsetsCommand::Reset(a)
                if a.topics.is_empty() && !a.all_topics && a.from_file.is_none() =>
            {
                Err(format!(
                    "which partitions of {} to reset? pass --topic TOPIC[:P,P...] (repeatable) or --all-topics",
                    a.group
                ))
            }
            _ => Ok(()),
        }
    }
}

fn parse_selection(s: &str) -> Result<TopicSelection, String> {
    s.parse()
}

fn parse_shift(s: &str) -> Result<i64, String> {
    s.trim().parse::<i64>().map_err(|_| {
        format!("{s:?} is not a whole number: write e.g. --shift-by -500 to re-read 500 or --shift-by 100 to skip 100")
    })
}

fn read_offsets_file(s: &str) -> Result<OffsetsFile, String> {
    let path = PathBuf::from(s);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!("cannot read {s}: {e}: give the path of a topic,partition,offset CSV file")
    })?;
    let offsets = file::parse(&text).map_err(|e| format!("{s}: {e}"))?;
    Ok(OffsetsFile { path, offsets })
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Runs `sluice offsets ...` and prints the outcome (text or one JSON document).
pub async fn run(client: &Client, cmd: &OffsetsCommand, output: Output) -> anyhow::Result<()> {
    let (group, scope, strategy, apply, undoing) = match cmd {
        OffsetsCommand::Reset(a) => {
            let strategy = strategy(a)?;
            let scope = if a.all_topics {
                Scope::AllTopics
            } else if !a.topics.is_empty() {
                Scope::Topics(a.topics.clone())
            } else if let Some(f) = &a.from_file {
                Scope::partitions(f.offsets.keys())
            } else {
                anyhow::bail!("{}", cmd.validate().err().unwrap_or_default());
            };
            (&a.group, scope, strategy, &a.apply, None)
        }
        OffsetsCommand::Undo(a) => (
            &a.group,
            Scope::partitions(a.file.offsets.keys()),
            Strategy::FromFile(a.file.offsets.clone()),
            &a.apply,
            Some(a.file.path.as_path()),
        ),
    };
    let now = now_ms();
    let prepared = reset::prepare(client, group, &scope, strategy, now).await?;
    let applied = if apply.execute {
        let path = apply
            .undo_file
            .clone()
            .unwrap_or_else(|| file::default_undo_path(&apply.data_dir, group, now));
        Some(reset::apply(client, &prepared, Some(&path)).await?)
    } else {
        None
    };
    match output {
        Output::Json => println!("{}", to_json(&prepared, applied.as_ref(), undoing)),
        Output::Text => print!(
            "{}",
            to_text(&prepared, applied.as_ref(), undoing, &command_line())
        ),
    }
    Ok(())
}

fn command_line() -> String {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--dry-run")
        .map(|a| {
            if a.is_empty() || a.contains(|c: char| c.is_whitespace() || "'\"$`\\".contains(c)) {
                format!("'{}'", a.replace('\'', r"'\''"))
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn strategy(a: &ResetArgs) -> anyhow::Result<Strategy> {
    Ok(if a.to_earliest {
        Strategy::Earliest
    } else if a.to_latest {
        Strategy::Latest
    } else if let Some(o) = a.to_offset {
        Strategy::ToOffset(o)
    } else if let Some(n) = a.shift_by {
        Strategy::ShiftBy(n)
    } else if let Some(t) = a.to_datetime {
        Strategy::ToDatetime(t)
    } else if let Some(d) = a.by_duration {
        Strategy::DurationAgo(d)
    } else if a.to_current {
        Strategy::ToCurrent
    } else if let Some(f) = &a.from_file {
        Strategy::FromFile(f.offsets.clone())
    } else {
        anyhow::bail!("choose where to move the offsets: pass one of --to-earliest, --to-latest, --to-offset N, --shift-by N, --to-datetime T, --by-duration D, --to-current or --from-file F")
    })
}

fn strategy_text(s: &Strategy, timestamp: Option<i64>) -> String {
    match s {
        Strategy::Earliest => "the earliest offsets".into(),
        Strategy::Latest => "the latest offsets".into(),
        Strategy::ToOffset(o) => format!("offset {o}"),
        Strategy::ShiftBy(n) => format!("the committed offsets shifted by {n}"),
        Strategy::ToDatetime(_) | Strategy::DurationAgo(_) => format!(
            "the first offsets at or after {}",
            timestamp.map_or_else(|| "?".to_string(), rfc3339)
        ),
        Strategy::ToCurrent => "the committed offsets, clamped into the log".into(),
        Strategy::FromFile(_) => "the offsets in the file".into(),
    }
}

fn strategy_json(s: &Strategy) -> Value {
    match s {
        Strategy::Earliest => json!({"to": "earliest"}),
        Strategy::Latest => json!({"to": "latest"}),
        Strategy::ToOffset(o) => json!({"to": "offset", "offset": o}),
        Strategy::ShiftBy(n) => json!({"to": "shift-by", "shift": n}),
        Strategy::ToDatetime(t) => json!({"to": "datetime", "timestamp_ms": t}),
        Strategy::DurationAgo(d) => json!({"to": "duration", "duration_ms": d}),
        Strategy::ToCurrent => json!({"to": "current"}),
        Strategy::FromFile(_) => json!({"to": "file"}),
    }
}

/// `2026-11-21T10:00:00.000Z`: readable, and what --to-datetime takes back.
fn rfc3339(ms: i64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => format!("{ms} ms"),
    }
}

fn effect(row: &PlanRow) -> (&'static str, i64) {
    match row.effect {
        Effect::ReRead(n) => ("re-read", n),
        Effect::Skip(n) => ("skip", n),
        Effect::Unchanged => ("unchanged", 0),
        Effect::NoCommittedOffset => ("no-committed-offset", 0),
    }
}

fn clamp_note(row: &PlanRow) -> String {
    match row.clamped {
        Some(Clamp::ToStart) => format!(
            "clamped: target before the log start, moved up to {}",
            row.start
        ),
        Some(Clamp::ToEnd) => format!(
            "clamped: target past the log end, moved down to {}",
            row.end
        ),
        None => String::new(),
    }
}

fn tp_list(tps: &[TopicPartition]) -> String {
    tps.iter()
        .map(|(t, p)| format!("{t}-{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn to_text(
    prepared: &Prepared,
    applied: Option<&Applied>,
    undoing: Option<&Path>,
    command_line: &str,
) -> String {
    let plan = &prepared.plan;
    let g = &prepared.group;
    let what = match undoing {
        Some(f) => format!("restore group {g} to the offsets in {}", f.display()),
        None => format!(
            "reset group {g} to {}",
            strategy_text(&plan.strategy, prepared.timestamp)
        ),
    };
    let mut out = String::new();
    out.push_str(&match applied {
        None => format!("Dry run: {what}, {} partition(s).\n\n", plan.rows.len()),
        Some(a) => format!(
            "Executed: {what}; committed {} partition(s).\n\n",
            a.committed.len()
        ),
    });
    let header = [
        "TOPIC",
        "PARTITION",
        "CURRENT",
        "NEW",
        "CHANGE",
        "OLDEST",
        "NEWEST",
        "NOTE",
    ];
    let rows: Vec<Vec<String>> = plan
        .rows
        .iter()
        .map(|r| {
            let (kind, n) = effect(r);
            let change = match r.effect {
                Effect::ReRead(_) | Effect::Skip(_) => format!("{kind} {}", format::thousands(n)),
                Effect::Unchanged => "-".into(),
                Effect::NoCommittedOffset => "no offset before".into(),
            };
            let (oldest, newest) = match r.span {
                Some(s) => (rfc3339(s.oldest), rfc3339(s.newest)),
                None => ("-".into(), "-".into()),
            };
            vec![
                r.topic.clone(),
                r.partition.to_string(),
                r.current.map_or_else(|| "-".into(), |c| c.to_string()),
                r.new.to_string(),
                change,
                oldest,
                newest,
                clamp_note(r),
            ]
        })
        .collect();
    out.push_str(&table(&header, &rows));
    out.push_str(&format!(
        "\ntotal: {} message(s) re-read, {} skipped\n",
        format::thousands(plan.total_reread()),
        format::thousands(plan.total_skipped())
    ));
    let clamped = plan.clamped().count();
    if clamped > 0 {
        out.push_str(&format!(
            "{clamped} partition(s) clamped: their target was outside the log (see NOTE)\n"
        ));
    }
    for ((t, p), why) in &prepared.ignored {
        out.push_str(&format!("left out {t}-{p}: {why}\n"));
    }
    match applied {
        None => {
            out.push_str("\nNothing was changed (dry run). ");
            if plan.changes_anything() {
                out.push_str(&format!(
                    "To apply it, run the same command with --execute:\n  sluice {command_line} --execute\n"
                ));
            } else {
                out.push_str("The plan moves no offset.\n");
            }
        }
        Some(a) => {
            if let Some(f) = &a.undo_file {
                out.push_str(&format!(
                    "\nPrevious offsets saved in {}\nUndo with: sluice offsets undo {} --group {g} --execute\n",
                    f.display(),
                    f.display()
                ));
            }
            if !a.not_undoable.is_empty() {
                out.push_str(&format!(
                    "note: {} had no committed offset before; undo leaves the new one in place\n",
                    tp_list(&a.not_undoable)
                ));
            }
        }
    }
    out
}

/// Aligned columns, two spaces apart, trailing blanks trimmed.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: &[String]| {
        let mut l = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
            .collect::<Vec<_>>()
            .join("  ");
        l.truncate(l.trim_end().len());
        l.push('\n');
        l
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        out.push_str(&line(r));
    }
    out
}

fn to_json(prepared: &Prepared, applied: Option<&Applied>, undoing: Option<&Path>) -> Value {
    let plan = &prepared.plan;
    let partitions: Vec<Value> = plan
        .rows
        .iter()
        .map(|r| {
            let (kind, n) = effect(r);
            json!({
                "topic": r.topic,
                "partition": r.partition,
                "current": r.current,
                "new": r.new,
                "log_start": r.start,
                "log_end": r.end,
                "effect": kind,
                "messages": n,
                "clamped": match r.clamped {
                    Some(Clamp::ToStart) => Some("log-start"),
                    Some(Clamp::ToEnd) => Some("log-end"),
                    None => None,
                },
                "oldest_timestamp_ms": r.span.map(|s| s.oldest),
                "newest_timestamp_ms": r.span.map(|s| s.newest),
            })
        })
        .collect();
    json!({
        "group": prepared.group,
        "command": if undoing.is_some() { "undo" } else { "reset" },
        "from_file": undoing.map(|p| p.display().to_string()),
        "strategy": strategy_json(&plan.strategy),
        "timestamp_ms": prepared.timestamp,
        "executed": applied.is_some(),
        "partitions": partitions,
        "total_reread": plan.total_reread(),
        "total_skipped": plan.total_skipped(),
        "clamped": plan.clamped().count(),
        "ignored": prepared.ignored.iter().map(|((t, p), why)| json!({
            "topic": t, "partition": p, "reason": why,
        })).collect::<Vec<_>>(),
        "undo_file": applied.and_then(|a| a.undo_file.as_ref()).map(|p| p.display().to_string()),
        "not_undoable": applied.map(|a| a.not_undoable.iter().map(|(t, p)| json!({
            "topic": t, "partition": p,
        })).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use reset::{Plan, SpanTimes};

    #[derive(Debug, Parser)]
    struct Wrap {
        #[command(subcommand)]
        cmd: OffsetsCommand,
    }

    fn parse(args: &[&str]) -> Result<OffsetsCommand, String> {
        let w = Wrap::try_parse_from(std::iter::once("offsets").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        w.cmd.validate()?;
        Ok(w.cmd)
    }

    fn reset_args(args: &[&str]) -> ResetArgs {
        match parse(args) {
            Ok(OffsetsCommand::Reset(a)) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn each_strategy_parses_to_its_plan_strategy() {
        let base = ["reset", "--group", "g", "--topic", "orders:0,2"];
        for (extra, want) in [
            (vec!["--to-earliest"], Strategy::Earliest),
            (vec!["--to-latest"], Strategy::Latest),
            (vec!["--to-offset", "7"], Strategy::ToOffset(7)),
            (vec!["--shift-by", "-5"], Strategy::ShiftBy(-5)),
            (vec!["--shift-by=3"], Strategy::ShiftBy(3)),
            (
                vec!["--to-datetime", "1970-01-01T00:00:01+00:00"],
                Strategy::ToDatetime(1000),
            ),
            (
                vec!["--by-duration", "PT1H"],
                Strategy::DurationAgo(3_600_000),
            ),
            (
                vec!["--by-duration", "30m"],
                Strategy::DurationAgo(1_800_000),
            ),
            (vec!["--to-current"], Strategy::ToCurrent),
        ] {
            let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
            let a = reset_args(&args);
            assert_eq!(strategy(&a).unwrap(), want, "{args:?}");
            assert_eq!(
                a.topics,
                vec![TopicSelection {
                    topic: "orders".into(),
                    partitions: Some(vec![0, 2])
                }]
            );
            assert!(!a.apply.execute);
        }
    }

    #[test]
    fn exactly_one_strategy_and_a_scope() {
        let e = parse(&["reset", "--group", "g", "--all-topics"]).unwrap_err();
        assert!(e.contains("--to-earliest"), "{e}");
        let e = parse(&[
            "reset",
            "--group",
            "g",
            "--all-topics",
            "--to-earliest",
            "--to-latest",
        ])
        .unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = parse(&["reset", "--group", "g", "--to-earliest"]).unwrap_err();
        assert!(e.contains("pass --topic TOPIC[:P,P...]"), "{e}");
        let e = parse(&[
            "reset",
            "--group",
            "g",
            "--topic",
            "t",
            "--all-topics",
            "--to-latest",
        ])
        .unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
        let e = parse(&[
            "reset",
            "--group",
            "g",
            "--all-topics",
            "--to-latest",
            "--execute",
            "--dry-run",
        ])
        .unwrap_err();
        assert!(e.contains("cannot be used with"), "{e}");
    }

    #[test]
    fn malformed_values_name_the_fix() {
        for (args, needle) in [
            (vec!["--to-datetime", "yesterday"], "2024-05-01T12:00:00Z"),
            (vec!["--by-duration", "an hour"], "PT1H"),
            (vec!["--to-offset", "-1"], "-1"),
            (vec!["--shift-by", "x"], "--shift-by -500"),
        ] {
            let mut all = vec!["reset", "--group", "g", "--all-topics"];
            all.extend(args.iter().copied());
            let e = parse(&all).unwrap_err();
            assert!(e.contains(needle), "{all:?}: {e}");
        }
        let e = parse(&["reset", "--group", "g", "--topic", "t:a", "--to-latest"]).unwrap_err();
        assert!(e.contains("orders:0,2,5"), "{e}");
    }

    #[test]
    fn offsets_files_are_read_while_parsing() {
        let dir = tempfile_dir();
        let good = dir.join("good.csv");
        std::fs::write(&good, "orders,0,5\norders,3,9\n").unwrap();
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "orders,0,5\norders;1;9\n").unwrap();
        let a = reset_args(&[
            "reset",
            "--group",
            "g",
            "--from-file",
            good.to_str().unwrap(),
        ]);
        let f = a.from_file.clone().unwrap();
        assert_eq!(f.offsets.len(), 2);
        assert!(matches!(strategy(&a).unwrap(), Strategy::FromFile(m) if m == f.offsets));
        let e = parse(&[
            "reset",
            "--group",
            "g",
            "--from-file",
            bad.to_str().unwrap(),
        ])
        .unwrap_err();
        assert!(
            e.contains("line 2:") && e.contains("e.g. orders,0,1200"),
            "{e}"
        );
        let e = parse(&["undo", "/nonexistent/undo.csv", "--group", "g"]).unwrap_err();
        assert!(e.contains("cannot read /nonexistent/undo.csv"), "{e}");
        match parse(&["undo", good.to_str().unwrap(), "--group", "g", "--execute"]).unwrap() {
            OffsetsCommand::Undo(u) => {
                assert_eq!(u.file.offsets.len(), 2);
                assert!(u.apply.execute);
                assert_eq!(u.apply.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "sluice-offsets-cmd-{}-{}",
            std::process::id(),
            now_ms()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn sample() -> Prepared {
        let offsets = BTreeMap::from([
            (
                ("orders".to_string(), 0),
                reset::PartitionOffsets {
                    committed: Some(40),
                    start: 0,
                    end: 100,
                    at_timestamp: reset::TimestampLookup::NotLoaded,
                },
            ),
            (
                ("orders".to_string(), 1),
                reset::PartitionOffsets {
                    committed: Some(40),
                    start: 0,
                    end: 100,
                    at_timestamp: reset::TimestampLookup::NotLoaded,
                },
            ),
        ]);
        let mut plan: Plan = reset::plan(
            Strategy::FromFile(BTreeMap::from([
                (("orders".to_string(), 0), 10),
                (("orders".to_string(), 1), 500),
            ])),
            &offsets,
        )
        .unwrap();
        plan.rows[0].span = Some(SpanTimes {
            oldest: 1_795_255_200_000,
            newest: 1_795_255_260_000,
        });
        Prepared {
            group: "billing".into(),
            plan,
            state: "Empty".into(),
            observed: BTreeMap::new(),
            ignored: vec![],
            timestamp: None,
        }
    }

    #[test]
    fn dry_run_text_shows_the_table_clamping_and_how_to_apply() {
        let text = to_text(
            &sample(),
            None,
            None,
            "offsets reset --group billing --from-file f",
        );
        assert!(
            text.starts_with(
                "Dry run: reset group billing to the offsets in the file, 2 partition(s)."
            ),
            "{text}"
        );
        assert!(
            text.contains("TOPIC   PARTITION  CURRENT  NEW  CHANGE"),
            "{text}"
        );
        assert!(
            text.contains("re-read 30  2026-11-21T10:00:00.000Z  2026-11-21T10:01:00.000Z"),
            "{text}"
        );
        assert!(text.contains("skip 60"), "{text}");
        assert!(
            text.contains("clamped: target past the log end, moved down to 100"),
            "{text}"
        );
        assert!(text.contains("Nothing was changed (dry run)"), "{text}");
        assert!(
            text.contains("sluice offsets reset --group billing --from-file f --execute"),
            "{text}"
        );
    }

    #[test]
    fn executed_text_and_json_name_the_undo_file() {
        let applied = Applied {
            undo_file: Some(PathBuf::from("d/undo/billing-x.csv")),
            committed: BTreeMap::from([
                (("orders".to_string(), 0), 10),
                (("orders".to_string(), 1), 100),
            ]),
            not_undoable: vec![],
        };
        let text = to_text(&sample(), Some(&applied), None, "");
        assert!(text.starts_with("Executed: reset group billing"), "{text}");
        assert!(
            text.contains("sluice offsets undo d/undo/billing-x.csv --group billing --execute"),
            "{text}"
        );
        let j = to_json(&sample(), Some(&applied), None);
        assert_eq!(j["executed"], true);
        assert_eq!(j["undo_file"], "d/undo/billing-x.csv");
        assert_eq!(j["partitions"][1]["clamped"], "log-end");
        assert_eq!(j["partitions"][1]["new"], 100);
        assert_eq!(j["partitions"][0]["effect"], "re-read");
        assert_eq!(j["partitions"][0]["messages"], 30);
        assert_eq!(
            j["partitions"][0]["oldest_timestamp_ms"],
            1_795_255_200_000i64
        );
        assert_eq!(j["partitions"][1]["oldest_timestamp_ms"], Value::Null);
        assert_eq!(j["total_reread"], 30);
        assert_eq!(j["total_skipped"], 60);
    }
}
