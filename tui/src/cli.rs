//! Command line: console flags and the admin subcommands, parsed and validated here so
//! that every mistake is reported with the fix before anything connects.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::format;
use crate::offsets_cmd::OffsetsCommand;

#[derive(Debug, Parser)]
#[command(
    name = "sluice",
    version,
    about = "Console and admin commands for Sluice and any Kafka cluster",
    long_about = "Without a subcommand, opens the console. Without --bootstrap, starts the bundled \
                  broker on --data-dir and opens the console on it."
)]
pub struct Cli {
    /// Brokers to bootstrap from.
    #[arg(long, global = true, value_name = "HOST:PORT[,HOST:PORT]", value_parser = parse_bootstrap)]
    pub bootstrap: Option<Bootstrap>,

    /// Data directory of the bundled broker (only without --bootstrap).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Offer no action that changes the cluster.
    #[arg(long)]
    pub read_only: bool,

    /// How often the console reloads what it shows.
    #[arg(long, default_value = "2s", value_name = "DURATION", value_parser = parse_refresh)]
    pub refresh: Duration,

    /// Output of subcommands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    #[command(subcommand)]
    pub command: Option<Command>,
}

/// A validated bootstrap list; `to_arg` writes it back as HOST:PORT,HOST:PORT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub servers: Vec<(String, u16)>,
}

impl Bootstrap {
    pub fn to_arg(&self) -> String {
        self.servers
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List, describe, create, delete and alter topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// List and describe consumer groups.
    #[command(subcommand)]
    Groups(GroupsCommand),
    /// Produce one message, or one per line of standard input.
    Produce(ProduceArgs),
    /// Print messages of a topic.
    Consume(ConsumeArgs),
    /// Reset a consumer group's committed offsets (dry run unless --execute), or undo a reset.
    #[command(subcommand)]
    Offsets(OffsetsCommand),
    /// Copy a range of records to another topic (same or another cluster).
    Replay(crate::replay_cmd::ReplayArgs),
}

#[derive(Debug, Subcommand)]
pub enum TopicsCommand {
    /// Topics with partitions, replication factor and messages.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Partitions (leader, replicas, ISR, offsets) and configs of a topic.
    Describe { topic: String },
    /// Create a topic.
    Create {
        #[arg(value_parser = parse_topic_name)]
        topic: String,
        #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        partitions: i32,
        #[arg(short, long, default_value_t = 1, value_parser = clap::value_parser!(i16).range(1..))]
        replication_factor: i16,
        /// A topic config, repeatable: --config retention.ms=86400000
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Delete a topic and all its messages.
    Delete {
        topic: String,
        /// Required: deleting cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// Add partitions or change configs.
    Alter(AlterArgs),
}

#[derive(Debug, Args)]
pub struct AlterArgs {
    pub topic: String,
    /// New total number of partitions (can only grow).
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub partitions: Option<i32>,
    /// Set a config, repeatable: --set retention.ms=86400000
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub set: Vec<(String, String)>,
    /// Return a config to its default, repeatable.
    #[arg(long = "delete-config", value_name = "KEY")]
    pub delete: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// Groups with state, members and total lag.
    List,
    /// Members and per-partition committed offset, end offset and lag.
    Describe { group: String },
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    pub topic: String,
    #[arg(long)]
    pub key: Option<String>,
    /// The value; without it, each line of standard input is one message.
    #[arg(long)]
    pub value: Option<String>,
    /// A header, repeatable: --header source=cli
    #[arg(long = "header", value_name = "NAME=VALUE", value_parser = parse_key_value)]
    pub headers: Vec<(String, String)>,
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
}

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    pub topic: String,
    /// beginning, end, offset:N, time:2024-05-01T12:00:00Z or ago:15m
    #[arg(long, default_value = "beginning", value_parser = parse_from)]
    pub from: From,
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Stop after this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_messages: Option<u64>,
    /// Keep waiting for new messages at the end.
    #[arg(long)]
    pub follow: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum From {
    Beginning,
    End,
    Offset(i64),
    /// Milliseconds since the epoch.
    Time(i64),
    /// Milliseconds before now.
    Ago(i64),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("--data-dir is for the bundled broker: drop it, or drop --bootstrap to run the bundled broker")]
    DataDirWithBootstrap,
    #[error("`sluice {0}` needs a cluster: pass --bootstrap HOST:PORT")]
    NoBootstrap(&'static str),
    #[error("deleting {0} removes all its messages and cannot be undone: pass --yes to go ahead")]
    DeleteWithoutYes(String),
    #[error(
        "nothing to alter on {0}: pass --partitions N, --set KEY=VALUE or --delete-config KEY"
    )]
    EmptyAlter(String),
    #[error("--read-only refuses `sluice {0}`, which changes the cluster: drop --read-only")]
    ReadOnly(&'static str),
    #[error("{0}")]
    Offsets(String),
}

impl Cli {
    /// Checks across flags that clap cannot express alone.
    pub fn validate(&self) -> Result<(), UsageError> {
        if self.data_dir.is_some() && self.bootstrap.is_some() {
            return Err(UsageError::DataDirWithBootstrap);
        }
        let Some(cmd) = &self.command else {
            return Ok(());
        };
        let name = cmd.name();
        if self.bootstrap.is_none() {
            return Err(UsageError::NoBootstrap(name));
        }
        if self.read_only && cmd.mutates() {
            return Err(UsageError::ReadOnly(name));
        }
        match cmd {
            Command::Topics(TopicsCommand::Delete { topic, yes: false }) => {
                Err(UsageError::DeleteWithoutYes(topic.clone()))
            }
            Command::Topics(TopicsCommand::Alter(a))
                if a.partitions.is_none() && a.set.is_empty() && a.delete.is_empty() =>
            {
                Err(UsageError::EmptyAlter(a.topic.clone()))
            }
            Command::Offsets(o) => o.validate().map_err(UsageError::Offsets),
            _ => Ok(()),
        }
    }
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Topics(TopicsCommand::List { .. }) => "topics list",
            Command::Topics(TopicsCommand::Describe { .. }) => "topics describe",
            Command::Topics(TopicsCommand::Create { .. }) => "topics create",
            Command::Topics(TopicsCommand::Delete { .. }) => "topics delete",
            Command::Topics(TopicsCommand::Alter(_)) => "topics alter",
            Command::Groups(GroupsCommand::List) => "groups list",
            Command::Groups(GroupsCommand::Describe { .. }) => "groups describe",
            Command::Produce(_) => "produce",
            Command::Consume(_) => "consume",
            Command::Offsets(o) => o.name(),
            Command::Replay(_) => "replay",
        }
    }

    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Command::Topics(TopicsCommand::Create { .. })
                | Command::Topics(TopicsCommand::Delete { .. })
                | Command::Topics(TopicsCommand::Alter(_))
                | Command::Produce(_)
        ) || matches!(self, Command::Offsets(o) if o.mutates())
            || matches!(self, Command::Replay(r) if !r.dry_run)
    }
}

fn parse_bootstrap(s: &str) -> Result<Bootstrap, String> {
    let mut servers = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((host, port)) = part.rsplit_once(':') else {
            return Err(format!(
                "{part:?} has no port: write HOST:PORT[,HOST:PORT], e.g. localhost:9092"
            ));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!(
                "{part:?} has no host: write HOST:PORT, e.g. localhost:9092"
            ));
        }
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(|| {
            format!("{part:?}: the port must be a number from 1 to 65535, e.g. localhost:9092")
        })?;
        servers.push((host.to_string(), port));
    }
    if servers.is_empty() {
        return Err("empty: write HOST:PORT[,HOST:PORT], e.g. localhost:9092".into());
    }
    Ok(Bootstrap { servers })
}

fn parse_refresh(s: &str) -> Result<Duration, String> {
    let d = format::parse_duration(s)?;
    if d < Duration::from_millis(100) {
        return Err(format!("{s} is too often: use at least 100ms, e.g. 2s"));
    }
    Ok(d)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!(
            "{s:?} is not KEY=VALUE: write e.g. retention.ms=86400000"
        )),
    }
}

fn parse_topic_name(s: &str) -> Result<String, String> {
    if s.is_empty() || s == "." || s == ".." || s.len() > 249 {
        return Err("a topic name has 1 to 249 characters and is not . or ..".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic names use only letters, digits, '.', '_' and '-': remove {c:?}"
        ));
    }
    Ok(s.to_string())
}

fn parse_from(s: &str) -> Result<From, String> {
    let fix = "write beginning, end, offset:N, time:2024-05-01T12:00:00Z or ago:15m";
    match s.split_once(':') {
        None if s == "beginning" || s == "earliest" => Ok(From::Beginning),
        None if s == "end" || s == "latest" => Ok(From::End),
        Some(("offset", n)) => n
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(From::Offset)
            .ok_or_else(|| format!("offset {n:?} is not a number >= 0: {fix}")),
        Some(("time", t)) => format::parse_datetime(t).map(From::Time),
        Some(("ago", d)) => format::parse_duration(d)
            .map(|d| From::Ago(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))),
        _ => Err(format!("cannot read {s:?}: {fix}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, String> {
        let cli = Cli::try_parse_from(std::iter::once("sluice").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.validate().map_err(|e| e.to_string())?;
        Ok(cli)
    }

    #[test]
    fn console_defaults() {
        let cli = parse(&[]).unwrap();
        assert!(cli.bootstrap.is_none());
        assert_eq!(cli.refresh, Duration::from_secs(2));
        assert!(!cli.read_only);
        assert!(cli.command.is_none());
    }

    #[test]
    fn bootstrap_lists_are_validated() {
        let cli = parse(&[
            "--bootstrap",
            "a:9092, b:9093",
            "--read-only",
            "--refresh",
            "500ms",
        ])
        .unwrap();
        let b = cli.bootstrap.unwrap();
        assert_eq!(b.to_arg(), "a:9092,b:9093");
        assert_eq!(cli.refresh, Duration::from_millis(500));
        let e = parse(&["--bootstrap", "localhost"]).unwrap_err();
        assert!(e.contains("has no port"), "{e}");
        let e = parse(&["--bootstrap", "localhost:99999"]).unwrap_err();
        assert!(e.contains("from 1 to 65535"), "{e}");
    }

    #[test]
    fn refresh_too_fast_names_the_fix() {
        let e = parse(&["--refresh", "10ms"]).unwrap_err();
        assert!(e.contains("at least 100ms"), "{e}");
        let e = parse(&["--refresh", "2"]).unwrap_err();
        assert!(e.contains("e.g. 500ms, 2s"), "{e}");
    }

    #[test]
    fn data_dir_conflicts_with_bootstrap() {
        let e = parse(&["--bootstrap", "h:1", "--data-dir", "/tmp/x"]).unwrap_err();
        assert!(
            e.contains("drop --bootstrap to run the bundled broker"),
            "{e}"
        );
    }

    #[test]
    fn subcommands_need_bootstrap() {
        let e = parse(&["topics", "list"]).unwrap_err();
        assert_eq!(
            e,
            "`sluice topics list` needs a cluster: pass --bootstrap HOST:PORT"
        );
        let cli = parse(&["topics", "list", "--bootstrap", "h:1", "--output", "json"]).unwrap();
        assert_eq!(cli.output, Output::Json);
    }

    #[test]
    fn topics_create_parses_configs_and_checks_names() {
        let cli = parse(&[
            "--bootstrap",
            "h:1",
            "topics",
            "create",
            "orders",
            "-p",
            "6",
            "-r",
            "3",
            "--config",
            "retention.ms=1000",
            "-c",
            "cleanup.policy=compact",
        ])
        .unwrap();
        match cli.command {
            Some(Command::Topics(TopicsCommand::Create {
                topic,
                partitions,
                replication_factor,
                configs,
            })) => {
                assert_eq!(
                    (topic.as_str(), partitions, replication_factor),
                    ("orders", 6, 3)
                );
                assert_eq!(configs.len(), 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        let e = parse(&["--bootstrap", "h:1", "topics", "create", "bad name"]).unwrap_err();
        assert!(e.contains("remove ' '"), "{e}");
        let e = parse(&["--bootstrap", "h:1", "topics", "create", "t", "-p", "0"]).unwrap_err();
        assert!(e.contains("0"), "{e}");
        let e = parse(&[
            "--bootstrap",
            "h:1",
            "topics",
            "create",
            "t",
            "-c",
            "novalue",
        ])
        .unwrap_err();
        assert!(e.contains("is not KEY=VALUE"), "{e}");
    }

    #[test]
    fn delete_needs_yes_and_alter_needs_a_change() {
        let e = parse(&["--bootstrap", "h:1", "topics", "delete", "orders"]).unwrap_err();
        assert!(e.contains("pass --yes"), "{e}");
        assert!(parse(&["--bootstrap", "h:1", "topics", "delete", "orders", "--yes"]).is_ok());
        let e = parse(&["--bootstrap", "h:1", "topics", "alter", "orders"]).unwrap_err();
        assert!(e.contains("--partitions N, --set KEY=VALUE"), "{e}");
        assert!(parse(&[
            "--bootstrap",
            "h:1",
            "topics",
            "alter",
            "orders",
            "--set",
            "a=b"
        ])
        .is_ok());
    }

    #[test]
    fn read_only_refuses_changing_subcommands() {
        let e = parse(&[
            "--bootstrap",
            "h:1",
            "--read-only",
            "produce",
            "t",
            "--value",
            "v",
        ])
        .unwrap_err();
        assert!(e.contains("drop --read-only"), "{e}");
        assert!(parse(&["--bootstrap", "h:1", "--read-only", "groups", "list"]).is_ok());
    }

    #[test]
    fn consume_from_forms() {
        for (arg, want) in [
            ("beginning", From::Beginning),
            ("end", From::End),
            ("offset:42", From::Offset(42)),
            ("time:1970-01-01T00:00:01Z", From::Time(1000)),
            ("ago:15m", From::Ago(900_000)),
        ] {
            let cli = parse(&["--bootstrap", "h:1", "consume", "t", "--from", arg]).unwrap();
            match cli.command {
                Some(Command::Consume(c)) => assert_eq!(c.from, want),
                other => panic!("unexpected {other:?}"),
            }
        }
        let e = parse(&["--bootstrap", "h:1", "consume", "t", "--from", "yesterday"]).unwrap_err();
        assert!(e.contains("offset:N"), "{e}");
    }
}
