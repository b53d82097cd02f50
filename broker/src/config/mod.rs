//! Broker configuration: built-in defaults, a YAML file with Kafka-style dotted
//! keys, command-line flags and `SLUICE_*` environment variables, in that order of
//! precedence (later wins). Topic-level configs and their broker-wide defaults live
//! in [`topic`]. `docs/configuration.md` is the user-facing reference; a test
//! checks that it mentions every key.

mod topic;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;

use topic::TOPIC_KEYS;
pub use topic::{describe_topic, validate_topic_override, TimestampType, TopicConfig};

/// Command line of `sluice-broker`. Every flag is optional so that [`BrokerConfig::load`]
/// knows whether it was given and can layer it over the file.
#[derive(clap::Parser, Clone, Debug, Default, PartialEq, Eq)]
#[command(
    name = "sluice-broker",
    version,
    about = "Kafka-compatible streaming broker"
)]
pub struct Cli {
    /// YAML file with Kafka-style dotted keys (see docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding the topics' logs [default: ./sluice-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to accept Kafka clients on; port 0 picks a free port [default: 127.0.0.1:9092].
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Address given to clients in metadata responses [default: the address bound].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,
    /// This broker's id [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Address the controller quorum listens on [default: this node's entry in --voters].
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listen: Option<String>,
    /// The controller quorum, e.g. 1@127.0.0.1:9093,2@127.0.0.1:9193 [default: none,
    /// a single-node cluster].
    #[arg(long, value_name = "ID@HOST:PORT,...")]
    pub voters: Option<String>,
    /// Rack (or zone) of this broker, for spreading replicas [default: none].
    #[arg(long, value_name = "R")]
    pub rack: Option<String>,
}

/// A configuration mistake. Messages name the key, the bad value and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{source_name} is not a valid config file: {message}")]
    Yaml {
        source_name: String,
        message: String,
    },
    /// A key in the YAML file that Sluice does not know.
    #[error("unknown key `{key}` {origin}: {}", hint(suggestion.as_deref()))]
    UnknownKey {
        key: String,
        /// Where it was found, e.g. "in sluice.yaml".
        origin: String,
        suggestion: Option<String>,
    },
    /// A topic config override that Sluice does not know.
    #[error("unknown topic config `{key}`: {}", hint(suggestion.as_deref()))]
    UnknownTopicConfig {
        key: String,
        suggestion: Option<String>,
    },
    #[error("invalid value `{value}` for `{key}` {origin}: expected {expected}")]
    InvalidValue {
        key: String,
        value: String,
        /// Where it came from, e.g. "in sluice.yaml", "from flag --node-id",
        /// "from environment variable SLUICE_NODE_ID", "in the topic config".
        origin: String,
        expected: String,
    },
    /// Values that are fine alone but not together.
    #[error("`{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn hint(suggestion: Option<&str>) -> String {
    match suggestion {
        Some(s) => format!("did you mean `{s}`?"),
        None => "see docs/configuration.md for the keys Sluice knows".to_string(),
    }
}

/// Where an explicitly set broker key came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The YAML file, by the name it was given.
    File(String),
    /// A command-line flag such as `--node-id`.
    Flag(&'static str),
    /// An environment variable such as `SLUICE_NODE_ID`.
    Env(String),
}

impl Origin {
    fn rank(&self) -> u8 {
        match self {
            Origin::File(_) => 0,
            Origin::Flag(_) => 1,
            Origin::Env(_) => 2,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(name) => write!(f, "in {name}"),
            Origin::Flag(flag) => write!(f, "from flag {flag}"),
            Origin::Env(var) => write!(f, "from environment variable {var}"),
        }
    }
}

/// A broker key that was set explicitly: its value as written (trimmed) and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetKey {
    pub value: String,
    pub origin: Origin,
}

/// The broker's configuration. Build it with [`BrokerConfig::load`]; `Default` is
/// Kafka's defaults with nothing set explicitly.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    /// HOST:PORT to bind; port 0 picks a free port.
    pub listen: String,
    /// What clients are told to connect to. `None` means the address the listener
    /// bound; port 0 means the bound port (see `server::advertised_address`).
    pub advertised_listener: Option<(String, u16)>,
    pub socket_request_max_bytes: usize,
    pub auto_create_topics_enable: bool,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub log_retention_check_interval_ms: u64,
    pub offset_checkpoint_interval_ms: u64,
    /// `log.flush.acks.all`: acks=all responses wait for fdatasync.
    pub flush_acks_all: bool,
    pub shutdown_timeout_ms: u64,
    pub group_initial_rebalance_delay_ms: u64,
    pub offsets_topic_num_partitions: i32,
    pub offsets_retention_minutes: i64,
    /// `producer.id.expiration.ms`: an idempotent producer's state is
    /// forgotten after this long without a write.
    pub producer_id_expiration_ms: i64,
    /// `transaction.state.log.num.partitions`.
    pub transaction_state_log_num_partitions: i32,
    /// `transaction.state.log.replication.factor`.
    pub transaction_state_log_replication_factor: i16,
    /// `transaction.state.log.min.isr`.
    pub transaction_state_log_min_isr: i32,
    /// `transaction.max.timeout.ms`: the longest transaction timeout a
    /// producer may ask for.
    pub transaction_max_timeout_ms: i64,
    /// `transactional.id.expiration.ms`: a transactional id with no
    /// transaction for this long is forgotten.
    pub transactional_id_expiration_ms: i64,
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
    pub transaction_abort_timed_out_cleanup_interval_ms: i64,
    /// `controller.listen`: HOST:PORT the controller quorum listens on. After
    /// [`BrokerConfig::load`] it is set whenever `voters` is non-empty (taken from
    /// this node's voter entry if not given).
    pub controller_listen: Option<String>,
    /// `controller.quorum.voters`: node id -> HOST:PORT of each controller. Empty
    /// means a single-node cluster that is its own controller.
    pub voters: BTreeMap<i32, String>,
    /// `broker.rack`.
    pub rack: Option<String>,
    pub broker_session_timeout_ms: u64,
    pub broker_heartbeat_interval_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_wait_max_ms: u64,
    pub replica_fetch_max_bytes: i32,
    pub replica_fetch_response_max_bytes: i32,
    pub offsets_topic_replication_factor: i16,
    pub auto_leader_rebalance_enable: bool,
    pub leader_imbalance_check_interval_seconds: u64,
    pub controlled_shutdown_enable: bool,
    /// Sluice-specific: how long SIGTERM waits for the controller to move this
    /// broker's leaderships away.
    pub controlled_shutdown_timeout_ms: u64,
    /// `controller.quorum.election.timeout.ms`.
    pub controller_election_timeout_ms: u64,
    /// Defaults of the topic-level configs (`log.retention.ms` -> `retention.ms`).
    pub topic_defaults: TopicConfig,
    /// The broker keys set explicitly (file, flag or environment), by canonical
    /// key name; DescribeConfigs reports them as `STATIC_BROKER_CONFIG`. Of
    /// `log.retention.{ms,minutes,hours}` and `log.roll.{ms,hours}` only the ones
    /// that took part in the final value are kept.
    pub set_keys: BTreeMap<String, SetKey>,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        BrokerConfig {
            node_id: 1,
            data_dir: PathBuf::from("./sluice-data"),
            listen: "127.0.0.1:9092".to_string(),
            advertised_listener: None,
            socket_request_max_bytes: 104_857_600,
            auto_create_topics_enable: true,
            num_partitions: 1,
            default_replication_factor: 1,
            log_retention_check_interval_ms: 300_000,
            offset_checkpoint_interval_ms: 60_000,
            flush_acks_all: true,
            shutdown_timeout_ms: 10_000,
            group_initial_rebalance_delay_ms: 3_000,
            offsets_topic_num_partitions: 50,
            offsets_retention_minutes: 10_080,
            producer_id_expiration_ms: 86_400_000,
            transaction_state_log_num_partitions: 50,
            transaction_state_log_replication_factor: 3,
            transaction_state_log_min_isr: 2,
            transaction_max_timeout_ms: 900_000,
            transactional_id_expiration_ms: 604_800_000,
            transaction_abort_timed_out_cleanup_interval_ms: 10_000,
            controller_listen: None,
            voters: BTreeMap::new(),
            rack: None,
            broker_session_timeout_ms: 9_000,
            broker_heartbeat_interval_ms: 2_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            replica_fetch_max_bytes: 1_048_576,
            replica_fetch_response_max_bytes: 10_485_760,
            offsets_topic_replication_factor: 3,
            auto_leader_rebalance_enable: true,
            leader_imbalance_check_interval_seconds: 300,
            controlled_shutdown_enable: true,
            controlled_shutdown_timeout_ms: 30_000,
            controller_election_timeout_ms: 1_000,
            topic_defaults: TopicConfig::default(),
            set_keys: BTreeMap::new(),
        }
    }
}

impl BrokerConfig {
    /// Layers defaults < the `--config` file (if given) < flags < `SLUICE_*`
    /// variables from `env` (pass `std::env::vars()`). Unknown `SLUICE_*`
    /// variables are logged as warnings and ignored, since other Sluice tools share
    /// the prefix; anything else unknown or invalid is an error.
    pub fn load(
        cli: &Cli,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<BrokerConfig, ConfigError> {
        let mut layers = Layers::default();
        if let Some(path) = &cli.config {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            layers.add_yaml(&text, &path.display().to_string())?;
        }
        layers.add_flags(cli)?;
        layers.add_env(env);
        layers.finish()
    }

    /// The configuration from YAML text alone; `source_name` names it in errors.
    pub fn from_yaml_str(s: &str, source_name: &str) -> Result<BrokerConfig, ConfigError> {
        let mut layers = Layers::default();
        layers.add_yaml(s, source_name)?;
        layers.finish()
    }

    /// DescribeConfigs for the broker resource: every broker key, read-only
    /// (Sluice has no dynamic broker configs), with `STATIC_BROKER_CONFIG` if set
    /// and `DEFAULT_CONFIG` otherwise. `log.retention.ms` and `log.roll.ms` show
    /// the effective value even when it came from their `.minutes`/`.hours`
    /// synonyms; those synonyms have a value only when set.
    pub fn broker_entries(&self) -> Vec<ConfigEntry> {
        let defaults = BrokerConfig::default();
        let static_synonym = |name: &str| {
            self.set_keys.get(name).map(|set| {
                (
                    name.to_string(),
                    Some(set.value.clone()),
                    ConfigSource::StaticBrokerConfig,
                )
            })
        };
        let mut entries = Vec::new();
        for key in BROKER_KEYS {
            let mut synonyms: Vec<_> = static_synonym(key.name).into_iter().collect();
            if let Some(default) = key.field.get(&defaults) {
                synonyms.push((
                    key.name.to_string(),
                    Some(default),
                    ConfigSource::DefaultConfig,
                ));
            }
            entries.push(ConfigEntry {
                name: key.name.to_string(),
                value: key.field.get(self),
                source: source_of(!self.set_keys.contains_key(key.name)),
                read_only: true,
                sensitive: false,
                synonyms,
                doc: key.doc,
                config_type: key.config_type,
            });
        }
        for key in TOPIC_KEYS {
            let (primary, _) = key.broker[0];
            let group: Vec<_> = key
                .broker
                .iter()
                .filter_map(|(name, _)| static_synonym(name))
                .collect();
            let mut synonyms = group.clone();
            synonyms.push((
                primary.to_string(),
                key.field.get(&defaults.topic_defaults),
                ConfigSource::DefaultConfig,
            ));
            entries.push(ConfigEntry {
                name: primary.to_string(),
                value: key.field.get(&self.topic_defaults),
                source: source_of(group.is_empty()),
                read_only: true,
                sensitive: false,
                synonyms,
                doc: key.doc,
                config_type: key.config_type,
            });
            for (name, _) in &key.broker[1..] {
                let set = static_synonym(name);
                entries.push(ConfigEntry {
                    name: name.to_string(),
                    value: set.as_ref().and_then(|(_, value, _)| value.clone()),
                    source: source_of(set.is_none()),
                    read_only: true,
                    sensitive: false,
                    synonyms: set.into_iter().collect(),
                    doc: key.doc,
                    config_type: ConfigType::Int,
                });
            }
        }
        entries
    }
}

fn source_of(is_default: bool) -> ConfigSource {
    if is_default {
        ConfigSource::DefaultConfig
    } else {
        ConfigSource::StaticBrokerConfig
    }
}

/// The environment variable that sets a broker key: `log.retention.ms` ->
/// `SLUICE_LOG_RETENTION_MS`.
pub fn env_var_name(key: &str) -> String {
    format!("SLUICE_{}", key.to_ascii_uppercase().replace('.', "_"))
}

/// Explicitly set keys, merged layer by layer.
#[derive(Default)]
struct Layers(BTreeMap<&'static str, SetKey>);

impl Layers {
    fn add(&mut self, key: &'static str, value: String, origin: Origin) {
        // A higher layer setting any of log.retention.{ms,minutes,hours} replaces
        // what lower layers set for the group; within one layer Kafka's order
        // (ms over minutes over hours) decides.
        let rank = origin.rank();
        for (sibling, _) in synonym_group(key) {
            if self
                .0
                .get(sibling)
                .is_some_and(|set| set.origin.rank() < rank)
            {
                self.0.remove(sibling);
            }
        }
        let value = value.trim().to_string();
        self.0.insert(key, SetKey { value, origin });
    }

    fn add_yaml(&mut self, text: &str, source_name: &str) -> Result<(), ConfigError> {
        use serde_yaml::Value;
        let yaml_error = |message: String| ConfigError::Yaml {
            source_name: source_name.to_string(),
            message,
        };
        let mapping = match serde_yaml::from_str::<Value>(text) {
            Ok(Value::Mapping(mapping)) => mapping,
            Ok(Value::Null) => return Ok(()),
            Ok(_) => {
                return Err(yaml_error(
                    "expected `key: value` lines, e.g. `node.id: 1`".to_string(),
                ))
            }
            Err(e) => return Err(yaml_error(e.to_string())),
        };
        let origin = Origin::File(source_name.to_string());
        for (key, value) in mapping {
            let key = match key {
                Value::String(key) => key,
                other => yaml_text(&other),
            };
            let canonical = known_broker_key(&key).ok_or_else(|| ConfigError::UnknownKey {
                origin: origin.to_string(),
                suggestion: suggest_broker_key(&key),
                key: key.clone(),
            })?;
            let value = match value {
                // `key:` with no value leaves the default, which suits templates.
                Value::Null => continue,
                Value::String(s) => s,
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                other => {
                    return Err(ConfigError::InvalidValue {
                        key,
                        value: yaml_text(&other),
                        origin: origin.to_string(),
                        expected: expected_for(canonical),
                    })
                }
            };
            self.add(canonical, value, origin.clone());
        }
        Ok(())
    }

    fn add_flags(&mut self, cli: &Cli) -> Result<(), ConfigError> {
        if let Some(dir) = &cli.data_dir {
            let value = dir.to_str().ok_or_else(|| ConfigError::InvalidValue {
                key: "data.dir".to_string(),
                value: dir.display().to_string(),
                origin: Origin::Flag("--data-dir").to_string(),
                expected: "a UTF-8 path".to_string(),
            })?;
            self.add("data.dir", value.to_string(), Origin::Flag("--data-dir"));
        }
        if let Some(listen) = &cli.listen {
            self.add("listen", listen.clone(), Origin::Flag("--listen"));
        }
        if let Some(advertised) = &cli.advertised_listener {
            let origin = Origin::Flag("--advertised-listener");
            self.add("advertised.listener", advertised.clone(), origin);
        }
        if let Some(id) = cli.node_id {
            self.add("node.id", id.to_string(), Origin::Flag("--node-id"));
        }
        if let Some(listen) = &cli.controller_listen {
            let origin = Origin::Flag("--controller-listen");
            self.add("controller.listen", listen.clone(), origin);
        }
        if let Some(voters) = &cli.voters {
            let origin = Origin::Flag("--voters");
            self.add("controller.quorum.voters", voters.clone(), origin);
        }
        if let Some(rack) = &cli.rack {
            self.add("broker.rack", rack.clone(), Origin::Flag("--rack"));
        }
        Ok(())
    }

    fn add_env(&mut self, env: impl IntoIterator<Item = (String, String)>) {
        let by_var: BTreeMap<String, &'static str> = all_broker_keys()
            .map(|key| (env_var_name(key), key))
            .collect();
        for (var, value) in env {
            if !var.starts_with("SLUICE_") {
                continue;
            }
            match by_var.get(&var) {
                Some(key) => self.add(key, value, Origin::Env(var)),
                None => {
                    let suggestion = suggest(&var, by_var.keys().map(String::as_str));
                    tracing::warn!(
                        variable = %var,
                        "ignoring {var}: it sets no broker key ({})",
                        hint(suggestion.as_deref())
                    );
                }
            }
        }
    }

    fn finish(self) -> Result<BrokerConfig, ConfigError> {
        let invalid = |key: &str, set: &SetKey, expected: String| ConfigError::InvalidValue {
            key: key.to_string(),
            value: set.value.clone(),
            origin: set.origin.to_string(),
            expected,
        };
        let mut config = BrokerConfig::default();
        for key in BROKER_KEYS {
            if let Some(set) = self.0.get(key.name) {
                key.field
                    .apply(&mut config, &set.value, 1)
                    .map_err(|expected| invalid(key.name, set, expected))?;
            }
        }
        for key in TOPIC_KEYS {
            // Lowest precedence first, so that the winner is applied last.
            for (name, scale) in key.broker.iter().rev() {
                if let Some(set) = self.0.get(name) {
                    key.field
                        .apply(&mut config.topic_defaults, &set.value, *scale)
                        .map_err(|expected| invalid(name, set, expected))?;
                }
            }
        }
        config.set_keys = self
            .0
            .into_iter()
            .map(|(key, set)| (key.to_string(), set))
            .collect();
        config.validate()?;
        Ok(config)
    }
}

impl BrokerConfig {
    /// The checks that need several keys, once every layer is applied. Fills in
    /// `controller_listen` from this node's voter entry when it was not given.
    fn validate(&mut self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.to_string(),
            message,
        };
        if self.broker_heartbeat_interval_ms >= self.broker_session_timeout_ms {
            return Err(invalid(
                "broker.heartbeat.interval.ms",
                format!(
                    "{} must be smaller than `broker.session.timeout.ms` ({}), or the \
                     controller fences the broker between two heartbeats; lower the \
                     interval or raise the timeout",
                    self.broker_heartbeat_interval_ms, self.broker_session_timeout_ms
                ),
            ));
        }
        if self.replica_fetch_wait_max_ms > self.replica_lag_time_max_ms {
            return Err(invalid(
                "replica.fetch.wait.max.ms",
                format!(
                    "{} must not exceed `replica.lag.time.max.ms` ({}), or an idle \
                     follower's fetch outlasts the lag limit and it drops out of the ISR",
                    self.replica_fetch_wait_max_ms, self.replica_lag_time_max_ms
                ),
            ));
        }
        if self.voters.is_empty() {
            // A single-node cluster is its own controller; nobody dials it.
            return self.check_listeners_differ();
        }
        let own_entry = self.voters.get(&self.node_id).cloned();
        match (own_entry, &self.controller_listen) {
            (Some(entry), None) => self.controller_listen = Some(entry),
            (Some(entry), Some(listen)) => {
                let (_, port) =
                    parse_host_port(listen).map_err(|e| invalid("controller.listen", e))?;
                let (_, entry_port) =
                    parse_host_port(&entry).map_err(|e| invalid("controller.quorum.voters", e))?;
                if port == 0 {
                    return Err(invalid(
                        "controller.listen",
                        format!(
                            "port 0 is not allowed when `controller.quorum.voters` is set, \
                             because the other voters must know the port; use {entry_port}, \
                             the port of this node's entry `{}@{entry}`, or leave \
                             `controller.listen` unset to use that entry",
                            self.node_id
                        ),
                    ));
                }
                if port != entry_port {
                    return Err(invalid(
                        "controller.listen",
                        format!(
                            "`{listen}` has port {port}, but this node's entry in \
                             `controller.quorum.voters` is `{}@{entry}` with port \
                             {entry_port}; the other voters dial that port, so use the \
                             same port in both (or leave `controller.listen` unset)",
                            self.node_id
                        ),
                    ));
                }
            }
            (None, None) => {
                return Err(invalid(
                    "controller.listen",
                    format!(
                        "node.id {} is not in `controller.quorum.voters` ({}), so this \
                         broker is an observer of the controller quorum and needs its own \
                         `controller.listen` (--controller-listen HOST:PORT); or add it to \
                         the voters",
                        self.node_id,
                        voters_text(&self.voters)
                    ),
                ))
            }
            (None, Some(listen)) => {
                let (_, port) =
                    parse_host_port(listen).map_err(|e| invalid("controller.listen", e))?;
                if port == 0 {
                    return Err(invalid(
                        "controller.listen",
                        "port 0 is not allowed when `controller.quorum.voters` is set, \
                         because the controller must know the port; give a fixed port, \
                         e.g. `127.0.0.1:9093`"
                            .to_string(),
                    ));
                }
            }
        }
        self.check_listeners_differ()
    }

    /// `listen` and `controller.listen` cannot bind the same port.
    fn check_listeners_differ(&self) -> Result<(), ConfigError> {
        let Some(controller) = &self.controller_listen else {
            return Ok(());
        };
        let (Ok((host, port)), Ok((controller_host, controller_port))) =
            (parse_host_port(&self.listen), parse_host_port(controller))
        else {
            return Ok(());
        };
        let same_host = host.eq_ignore_ascii_case(&controller_host)
            || is_unspecified(&host)
            || is_unspecified(&controller_host);
        if port == 0 || port != controller_port || !same_host {
            return Ok(());
        }
        let listen = &self.listen;
        Err(if self.set_keys.contains_key("controller.listen") {
            ConfigError::Invalid {
                key: "controller.listen".to_string(),
                message: format!(
                    "`{controller}` binds the same port as `listen` (`{listen}`); give the \
                     controller a port of its own, e.g. 9093 next to 9092"
                ),
            }
        } else {
            ConfigError::Invalid {
                key: "controller.quorum.voters".to_string(),
                message: format!(
                    "this node's entry `{}@{controller}` makes the controller bind the same \
                     port as `listen` (`{listen}`); give the controller a port of its own, \
                     e.g. 9093 next to 9092",
                    self.node_id
                ),
            }
        })
    }
}

fn yaml_text(value: &serde_yaml::Value) -> String {
    serde_yaml::to_string(value)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Every broker-level key: broker settings, then topic defaults with synonyms.
fn all_broker_keys() -> impl Iterator<Item = &'static str> {
    BROKER_KEYS.iter().map(|key| key.name).chain(
        TOPIC_KEYS
            .iter()
            .flat_map(|key| key.broker.iter().map(|(name, _)| *name)),
    )
}

fn known_broker_key(name: &str) -> Option<&'static str> {
    all_broker_keys().find(|key| *key == name)
}

/// `log.retention.{ms,minutes,hours}` for any of them, and so on; empty for keys
/// without synonyms.
fn synonym_group(key: &str) -> &'static [(&'static str, i64)] {
    TOPIC_KEYS
        .iter()
        .map(|topic_key| topic_key.broker)
        .find(|group| group.len() > 1 && group.iter().any(|(name, _)| *name == key))
        .unwrap_or(&[])
}

fn expected_for(key: &str) -> String {
    if let Some(broker_key) = BROKER_KEYS.iter().find(|k| k.name == key) {
        return broker_key.field.expected(1);
    }
    TOPIC_KEYS
        .iter()
        .find_map(|topic_key| {
            let (_, scale) = topic_key.broker.iter().find(|(name, _)| *name == key)?;
            Some(topic_key.field.expected(*scale))
        })
        .unwrap_or_else(|| "a single value".to_string())
}

/// Kafka names for settings Sluice spells differently (and one name Sluice's own
/// early docs used).
const KAFKA_ALIASES: &[(&str, &str)] = &[
    ("broker.id", "node.id"),
    ("log.dirs", "data.dir"),
    ("log.dir", "data.dir"),
    ("listeners", "listen"),
    ("advertised.listeners", "advertised.listener"),
    (
        "metadata.election.timeout.ms",
        "controller.quorum.election.timeout.ms",
    ),
];

fn suggest_broker_key(name: &str) -> Option<String> {
    if let Some((_, key)) = KAFKA_ALIASES.iter().find(|(alias, _)| *alias == name) {
        return Some(key.to_string());
    }
    // A topic config used at broker level: `retention.ms` -> `log.retention.ms`.
    if let Some(key) = TOPIC_KEYS.iter().find(|key| key.name == name) {
        return Some(key.broker[0].0.to_string());
    }
    suggest(name, all_broker_keys())
}

/// The candidate closest to `name` by edit distance, if it is close enough to be
/// a plausible typo.
fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    let limit = (name.len() / 3).max(2);
    candidates
        .map(|candidate| (edit_distance(name, candidate), candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.to_string())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// Splits `HOST:PORT` (`[v6]:PORT` for IPv6); the error says what was expected.
fn parse_host_port(raw: &str) -> Result<(String, u16), String> {
    let form = || "HOST:PORT, e.g. `127.0.0.1:9092` or `[::1]:9092`".to_string();
    let (host, port) = raw.rsplit_once(':').ok_or_else(form)?;
    let host = match host.strip_prefix('[') {
        Some(inner) => inner.strip_suffix(']').ok_or_else(form)?,
        None if host.contains(':') => {
            return Err("HOST:PORT with an IPv6 host in brackets, e.g. `[::1]:9092`".to_string())
        }
        None => host,
    };
    if host.is_empty() || host.contains(char::is_whitespace) || host.contains(['[', ']']) {
        return Err(form());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(form());
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| "HOST:PORT with a port from 0 to 65535".to_string())?;
    Ok((host.to_string(), port))
}

const VOTERS_SHAPE: &str =
    "ID@HOST:PORT entries separated by commas, e.g. `1@127.0.0.1:9093,2@127.0.0.1:9193`";

/// Parses `controller.quorum.voters`: `ID@HOST:PORT` entries separated by commas,
/// spaces around entries ignored; an empty value means no voters. Peers dial these
/// addresses, so port 0 and `0.0.0.0`/`::` are refused. The error is what was
/// expected, naming the bad entry.
fn parse_voters(raw: &str) -> Result<BTreeMap<i32, String>, String> {
    let bad = |problem: String| format!("{VOTERS_SHAPE}, but {problem}");
    let mut voters = BTreeMap::new();
    // Entry as written, by id and by address, for the duplicate messages.
    let mut by_id: BTreeMap<i32, &str> = BTreeMap::new();
    let mut by_address: BTreeMap<String, &str> = BTreeMap::new();
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(voters);
    }
    for entry in raw.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(bad(
                "an entry is empty (two commas in a row, or one at an end)".to_string(),
            ));
        }
        let not_shape = || bad(format!("entry `{entry}` is not ID@HOST:PORT"));
        let (id, address) = entry.split_once('@').ok_or_else(not_shape)?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
            return Err(not_shape());
        }
        let id = id
            .parse::<i32>()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| {
                bad(format!(
                    "entry `{entry}` has id `{id}`; ids are node ids, from 0 to 2147483647"
                ))
            })?;
        let (host, port) = parse_host_port(address)
            .map_err(|expected| bad(format!("in entry `{entry}` `{address}` is not {expected}")))?;
        if port == 0 {
            return Err(bad(format!(
                "entry `{entry}` has port 0; the other voters dial this address, so give \
                 the port the controller listens on"
            )));
        }
        if is_unspecified(&host) {
            return Err(bad(format!(
                "entry `{entry}` has host `{host}`, which only means \"every interface\"; \
                 give an address the other voters can reach"
            )));
        }
        if let Some(first) = by_id.insert(id, entry) {
            return Err(bad(format!(
                "entries `{first}` and `{entry}` have the same id {id}"
            )));
        }
        let address = join_host_port(&host, port);
        if let Some(first) = by_address.insert(address.to_ascii_lowercase(), entry) {
            return Err(bad(format!(
                "entries `{first}` and `{entry}` have the same address `{address}`"
            )));
        }
        voters.insert(id, address);
    }
    Ok(voters)
}

/// `1@h:9093,2@h:9193`, the form [`parse_voters`] reads.
fn voters_text(voters: &BTreeMap<i32, String>) -> String {
    voters
        .iter()
        .map(|(id, address)| format!("{id}@{address}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn is_unspecified(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_unspecified())
}

/// Where a DescribeConfigs value comes from (Kafka's `config_source`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigSource {
    TopicConfig,
    DynamicBrokerConfig,
    DynamicDefaultBrokerConfig,
    StaticBrokerConfig,
    DefaultConfig,
}

impl ConfigSource {
    /// The id in DescribeConfigs responses (v1+).
    pub fn kafka_id(self) -> i8 {
        match self {
            ConfigSource::TopicConfig => 1,
            ConfigSource::DynamicBrokerConfig => 2,
            ConfigSource::DynamicDefaultBrokerConfig => 3,
            ConfigSource::StaticBrokerConfig => 4,
            ConfigSource::DefaultConfig => 5,
        }
    }
}

/// A config's type as DescribeConfigs v3+ reports it (Kafka's `config_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
    Class,
    Password,
}

impl ConfigType {
    pub fn kafka_id(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }
}

/// One config in a DescribeConfigs response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    pub source: ConfigSource,
    pub read_only: bool,
    pub sensitive: bool,
    /// Where the value could come from, highest precedence first (Kafka's
    /// `synonyms`, returned when the request sets `include_synonyms`).
    pub synonyms: Vec<ConfigSynonym>,
    pub doc: &'static str,
    pub config_type: ConfigType,
}

/// A synonym in a DescribeConfigs response: name, value, source.
pub type ConfigSynonym = (String, Option<String>, ConfigSource);

/// How one key is parsed, checked, stored and read back. The tables of broker and
/// topic keys are lists of these, so every path shares one parser per key.
enum Field<T: 'static> {
    /// An integer in `min..=max`; `unit` ends up in error messages.
    Int {
        min: i64,
        max: i64,
        unit: &'static str,
        get: fn(&T) -> i64,
        set: fn(&mut T, i64),
    },
    /// `true` or `false`, any case (Kafka accepts any case).
    Bool {
        get: fn(&T) -> bool,
        set: fn(&mut T, bool),
    },
    /// One of `allowed`, exactly; `why` explains a restriction Kafka lacks.
    OneOf {
        allowed: &'static [&'static str],
        why: &'static str,
        get: fn(&T) -> String,
        set: fn(&mut T, &str),
    },
    /// A non-empty string described by `what`.
    Text {
        what: &'static str,
        get: fn(&T) -> Option<String>,
        set: fn(&mut T, &str),
    },
    /// HOST:PORT. `advertised` addresses are given to clients, so their host
    /// cannot be 0.0.0.0 or ::.
    Address {
        advertised: bool,
        get: fn(&T) -> Option<String>,
        set: fn(&mut T, String, u16),
    },
    /// `ID@HOST:PORT,...` (see [`parse_voters`]); empty means no voters.
    Voters {
        get: fn(&T) -> &BTreeMap<i32, String>,
        set: fn(&mut T, BTreeMap<i32, String>),
    },
}

impl<T> Field<T> {
    /// Parses `raw` (surrounding whitespace ignored) and stores it. `scale`
    /// converts a synonym's unit to the field's (hours to ms); -1 stays -1. The
    /// error is what was expected.
    fn apply(&self, target: &mut T, raw: &str, scale: i64) -> Result<(), String> {
        let raw = raw.trim();
        match self {
            Field::Int { min, max, set, .. } => {
                let (min, max) = int_bounds(*min, *max, scale);
                let value = raw
                    .parse::<i64>()
                    .ok()
                    .filter(|v| (min..=max).contains(v))
                    .ok_or_else(|| self.expected(scale))?;
                set(target, if value < 0 { value } else { value * scale });
            }
            Field::Bool { set, .. } => {
                if raw.eq_ignore_ascii_case("true") {
                    set(target, true);
                } else if raw.eq_ignore_ascii_case("false") {
                    set(target, false);
                } else {
                    return Err(self.expected(scale));
                }
            }
            Field::OneOf { allowed, set, .. } => {
                if !allowed.contains(&raw) {
                    return Err(self.expected(scale));
                }
                set(target, raw);
            }
            Field::Text { set, .. } => {
                if raw.is_empty() {
                    return Err(self.expected(scale));
                }
                set(target, raw);
            }
            Field::Address {
                advertised, set, ..
            } => {
                let (host, port) = parse_host_port(raw)?;
                if *advertised && is_unspecified(&host) {
                    return Err(format!(
                        "a HOST:PORT clients can connect to; `{host}` only means \
                         \"every interface\" in `listen`"
                    ));
                }
                set(target, host, port);
            }
            Field::Voters { set, .. } => set(target, parse_voters(raw)?),
        }
        Ok(())
    }

    fn expected(&self, scale: i64) -> String {
        match self {
            Field::Int { min, max, unit, .. } => {
                let (min, max) = int_bounds(*min, *max, scale);
                let range = if max == i64::MAX {
                    format!("an integer >= {min}")
                } else {
                    format!("an integer from {min} to {max}")
                };
                if scale != 1 || unit.is_empty() {
                    range
                } else {
                    format!("{range} ({unit})")
                }
            }
            Field::Bool { .. } => "`true` or `false`".to_string(),
            Field::OneOf { allowed, why, .. } => {
                let list = allowed
                    .iter()
                    .map(|a| format!("`{a}`"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let list = if allowed.len() > 1 {
                    format!("one of {list}")
                } else {
                    list
                };
                if why.is_empty() {
                    list
                } else {
                    format!("{list}: {why}")
                }
            }
            Field::Text { what, .. } => what.to_string(),
            Field::Address { .. } => "HOST:PORT, e.g. `127.0.0.1:9092` or `[::1]:9092`".to_string(),
            Field::Voters { .. } => VOTERS_SHAPE.to_string(),
        }
    }

    fn get(&self, target: &T) -> Option<String> {
        match self {
            Field::Int { get, .. } => Some(get(target).to_string()),
            Field::Bool { get, .. } => Some(get(target).to_string()),
            Field::OneOf { get, .. } => Some(get(target)),
            Field::Text { get, .. } | Field::Address { get, .. } => get(target),
            Field::Voters { get, .. } => {
                let voters = get(target);
                (!voters.is_empty()).then(|| voters_text(voters))
            }
        }
    }
}

/// The accepted range of an integer key, or of its synonym in a unit `scale`
/// times larger; those synonyms (`log.retention.hours`, ...) are Kafka `int`s.
fn int_bounds(min: i64, max: i64, scale: i64) -> (i64, i64) {
    if scale == 1 {
        (min, max)
    } else {
        (min, (max / scale).min(i32::MAX.into()))
    }
}

/// A broker setting that is not a topic default.
struct BrokerKey {
    name: &'static str,
    config_type: ConfigType,
    doc: &'static str,
    field: Field<BrokerConfig>,
}

// The setters' `as` casts are lossless: `Field::apply` has already checked the
// value against `min..=max`, which fit the field's type.
static BROKER_KEYS: &[BrokerKey] = &[
    BrokerKey {
        name: "node.id",
        config_type: ConfigType::Int,
        doc: "This broker's id, as clients see it in metadata.",
        field: Field::Int {
            min: 0,
            max: i32::MAX as i64,
            unit: "",
            get: |c| c.node_id.into(),
            set: |c, v| c.node_id = v as i32,
        },
    },
    BrokerKey {
        name: "data.dir",
        config_type: ConfigType::String,
        doc: "Directory holding the topics' logs and the broker's metadata.",
        field: Field::Text {
            what: "a directory path",
            get: |c| Some(c.data_dir.display().to_string()),
            set: |c, v| c.data_dir = PathBuf::from(v),
        },
    },
    BrokerKey {
        name: "listen",
        config_type: ConfigType::String,
        doc: "HOST:PORT to accept Kafka clients on; port 0 picks a free port.",
        field: Field::Address {
            advertised: false,
            get: |c| Some(c.listen.clone()),
            set: |c, host, port| c.listen = join_host_port(&host, port),
        },
    },
    BrokerKey {
        name: "advertised.listener",
        config_type: ConfigType::String,
        doc: "HOST:PORT clients are told to connect to; unset means the address \
              the listener bound, and port 0 means the bound port.",
        field: Field::Address {
            advertised: true,
            get: |c| {
                c.advertised_listener
                    .as_ref()
                    .map(|(host, port)| join_host_port(host, *port))
            },
            set: |c, host, port| c.advertised_listener = Some((host, port)),
        },
    },
    BrokerKey {
        name: "num.partitions",
        config_type: ConfigType::Int,
        doc: "Partitions of an automatically created topic, and of a CreateTopics \
              request that asks for the default (-1).",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "partitions",
            get: |c| c.num_partitions.into(),
            set: |c, v| c.num_partitions = v as i32,
        },
    },
    BrokerKey {
        name: "default.replication.factor",
        config_type: ConfigType::Int,
        doc: "Replication factor of automatically created topics.",
        field: Field::Int {
            min: 1,
            max: i16::MAX as i64,
            unit: "replicas",
            get: |c| c.default_replication_factor.into(),
            set: |c, v| c.default_replication_factor = v as i16,
        },
    },
    BrokerKey {
        name: "auto.create.topics.enable",
        config_type: ConfigType::Boolean,
        doc: "Whether metadata requests and produces for an unknown topic create it.",
        field: Field::Bool {
            get: |c| c.auto_create_topics_enable,
            set: |c, v| c.auto_create_topics_enable = v,
        },
    },
    BrokerKey {
        name: "socket.request.max.bytes",
        config_type: ConfigType::Int,
        doc: "Largest request the broker reads; a bigger one closes the connection.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "bytes",
            get: |c| c.socket_request_max_bytes as i64,
            set: |c, v| c.socket_request_max_bytes = v as usize,
        },
    },
    BrokerKey {
        name: "log.retention.check.interval.ms",
        config_type: ConfigType::Long,
        doc: "How often retention looks for segments to delete.",
        field: Field::Int {
            min: 1,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.log_retention_check_interval_ms as i64,
            set: |c, v| c.log_retention_check_interval_ms = v as u64,
        },
    },
    BrokerKey {
        name: "log.flush.offset.checkpoint.interval.ms",
        config_type: ConfigType::Int,
        doc: "How often each partition's recovery point is written to disk.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.offset_checkpoint_interval_ms as i64,
            set: |c, v| c.offset_checkpoint_interval_ms = v as u64,
        },
    },
    BrokerKey {
        name: "log.flush.acks.all",
        config_type: ConfigType::Boolean,
        doc: "Sluice-specific. true: an acks=all produce is answered only after its \
              batches are fdatasync'ed. false: Kafka's behaviour, acks=all does not \
              wait for an fsync.",
        field: Field::Bool {
            get: |c| c.flush_acks_all,
            set: |c, v| c.flush_acks_all = v,
        },
    },
    BrokerKey {
        name: "shutdown.timeout.ms",
        config_type: ConfigType::Long,
        doc: "Sluice-specific. On SIGTERM, how long in-flight requests may run \
              before they are aborted.",
        field: Field::Int {
            min: 0,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.shutdown_timeout_ms as i64,
            set: |c, v| c.shutdown_timeout_ms = v as u64,
        },
    },
    BrokerKey {
        name: "group.initial.rebalance.delay.ms",
        config_type: ConfigType::Int,
        doc: "How long a new consumer group waits for more members before its first \
              rebalance.",
        field: Field::Int {
            min: 0,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.group_initial_rebalance_delay_ms as i64,
            set: |c, v| c.group_initial_rebalance_delay_ms = v as u64,
        },
    },
    BrokerKey {
        name: "offsets.topic.num.partitions",
        config_type: ConfigType::Int,
        doc: "Partitions of the internal __consumer_offsets topic.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "partitions",
            get: |c| c.offsets_topic_num_partitions.into(),
            set: |c, v| c.offsets_topic_num_partitions = v as i32,
        },
    },
    BrokerKey {
        name: "offsets.retention.minutes",
        config_type: ConfigType::Int,
        doc: "How long committed offsets of an empty consumer group are kept.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "minutes",
            get: |c| c.offsets_retention_minutes,
            set: |c, v| c.offsets_retention_minutes = v,
        },
    },
    BrokerKey {
        name: "producer.id.expiration.ms",
        config_type: ConfigType::Int,
        doc: "How long a partition keeps an idempotent producer's sequence numbers \
              (for duplicate detection) after its last write.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.producer_id_expiration_ms,
            set: |c, v| c.producer_id_expiration_ms = v,
        },
    },
    BrokerKey {
        name: "transaction.state.log.num.partitions",
        config_type: ConfigType::Int,
        doc: "Partitions of the internal __transaction_state topic (created at the \
              first transactional producer).",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "partitions",
            get: |c| c.transaction_state_log_num_partitions.into(),
            set: |c, v| c.transaction_state_log_num_partitions = v as i32,
        },
    },
    BrokerKey {
        name: "transaction.state.log.replication.factor",
        config_type: ConfigType::Short,
        doc: "Replication factor of the internal __transaction_state topic (capped at \
              the number of brokers).",
        field: Field::Int {
            min: 1,
            max: i16::MAX as i64,
            unit: "replicas",
            get: |c| c.transaction_state_log_replication_factor.into(),
            set: |c, v| c.transaction_state_log_replication_factor = v as i16,
        },
    },
    BrokerKey {
        name: "transaction.state.log.min.isr",
        config_type: ConfigType::Int,
        doc: "min.insync.replicas of the internal __transaction_state topic.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "replicas",
            get: |c| c.transaction_state_log_min_isr.into(),
            set: |c, v| c.transaction_state_log_min_isr = v as i32,
        },
    },
    BrokerKey {
        name: "transaction.max.timeout.ms",
        config_type: ConfigType::Int,
        doc: "The longest transaction.timeout.ms a producer may ask for.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.transaction_max_timeout_ms,
            set: |c, v| c.transaction_max_timeout_ms = v,
        },
    },
    BrokerKey {
        name: "transactional.id.expiration.ms",
        config_type: ConfigType::Int,
        doc: "How long the coordinator keeps a transactional id that has no \
              transaction going.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.transactional_id_expiration_ms,
            set: |c, v| c.transactional_id_expiration_ms = v,
        },
    },
    BrokerKey {
        name: "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        config_type: ConfigType::Int,
        doc: "How often the coordinator looks for transactions past their timeout \
              (to abort them) and expired transactional ids.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.transaction_abort_timed_out_cleanup_interval_ms,
            set: |c, v| c.transaction_abort_timed_out_cleanup_interval_ms = v,
        },
    },
    BrokerKey {
        name: "offsets.topic.replication.factor",
        config_type: ConfigType::Short,
        doc: "Replication factor of the internal __consumer_offsets topic.",
        field: Field::Int {
            min: 1,
            max: i16::MAX as i64,
            unit: "replicas",
            get: |c| c.offsets_topic_replication_factor.into(),
            set: |c, v| c.offsets_topic_replication_factor = v as i16,
        },
    },
    BrokerKey {
        name: "broker.rack",
        config_type: ConfigType::String,
        doc: "Rack (or zone) of this broker; replicas of a partition are spread \
              over racks.",
        field: Field::Text {
            what: "a rack name",
            get: |c| c.rack.clone(),
            set: |c, v| c.rack = Some(v.to_string()),
        },
    },
    BrokerKey {
        name: "controller.listen",
        config_type: ConfigType::String,
        doc: "HOST:PORT the controller quorum listens on; unset means this node's \
              entry in controller.quorum.voters.",
        field: Field::Address {
            advertised: false,
            get: |c| c.controller_listen.clone(),
            set: |c, host, port| c.controller_listen = Some(join_host_port(&host, port)),
        },
    },
    BrokerKey {
        name: "controller.quorum.voters",
        config_type: ConfigType::List,
        doc: "The controllers, as ID@HOST:PORT entries separated by commas; unset \
              means a single-node cluster that is its own controller.",
        field: Field::Voters {
            get: |c| &c.voters,
            set: |c, v| c.voters = v,
        },
    },
    BrokerKey {
        name: "controller.quorum.election.timeout.ms",
        config_type: ConfigType::Int,
        doc: "How long a controller waits without hearing from a leader before it \
              starts an election.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.controller_election_timeout_ms as i64,
            set: |c, v| c.controller_election_timeout_ms = v as u64,
        },
    },
    BrokerKey {
        name: "broker.session.timeout.ms",
        config_type: ConfigType::Int,
        doc: "How long the controller waits for a broker's heartbeat before it fences \
              the broker and moves its leaderships.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.broker_session_timeout_ms as i64,
            set: |c, v| c.broker_session_timeout_ms = v as u64,
        },
    },
    BrokerKey {
        name: "broker.heartbeat.interval.ms",
        config_type: ConfigType::Int,
        doc: "How often a broker heartbeats to the controller; smaller than \
              broker.session.timeout.ms.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.broker_heartbeat_interval_ms as i64,
            set: |c, v| c.broker_heartbeat_interval_ms = v as u64,
        },
    },
    BrokerKey {
        name: "replica.lag.time.max.ms",
        config_type: ConfigType::Long,
        doc: "A follower that has not caught up with the leader for this long is \
              removed from the ISR.",
        field: Field::Int {
            min: 1,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.replica_lag_time_max_ms as i64,
            set: |c, v| c.replica_lag_time_max_ms = v as u64,
        },
    },
    BrokerKey {
        name: "replica.fetch.wait.max.ms",
        config_type: ConfigType::Int,
        doc: "How long a follower's fetch waits at the leader for new data; at most \
              replica.lag.time.max.ms.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "milliseconds",
            get: |c| c.replica_fetch_wait_max_ms as i64,
            set: |c, v| c.replica_fetch_wait_max_ms = v as u64,
        },
    },
    BrokerKey {
        name: "replica.fetch.max.bytes",
        config_type: ConfigType::Int,
        doc: "Bytes a follower asks for per partition in one fetch; a bigger first \
              batch is still returned whole.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "bytes",
            get: |c| c.replica_fetch_max_bytes.into(),
            set: |c, v| c.replica_fetch_max_bytes = v as i32,
        },
    },
    BrokerKey {
        name: "replica.fetch.response.max.bytes",
        config_type: ConfigType::Int,
        doc: "Bytes a follower asks for in one fetch over all partitions; a bigger \
              first batch is still returned whole.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "bytes",
            get: |c| c.replica_fetch_response_max_bytes.into(),
            set: |c, v| c.replica_fetch_response_max_bytes = v as i32,
        },
    },
    BrokerKey {
        name: "auto.leader.rebalance.enable",
        config_type: ConfigType::Boolean,
        doc: "Whether the controller moves leadership back to each partition's \
              preferred replica when the leaders are unbalanced.",
        field: Field::Bool {
            get: |c| c.auto_leader_rebalance_enable,
            set: |c, v| c.auto_leader_rebalance_enable = v,
        },
    },
    BrokerKey {
        name: "leader.imbalance.check.interval.seconds",
        config_type: ConfigType::Long,
        doc: "How often the controller checks whether leaders are unbalanced.",
        field: Field::Int {
            min: 1,
            max: i64::MAX,
            unit: "seconds",
            get: |c| c.leader_imbalance_check_interval_seconds as i64,
            set: |c, v| c.leader_imbalance_check_interval_seconds = v as u64,
        },
    },
    BrokerKey {
        name: "controlled.shutdown.enable",
        config_type: ConfigType::Boolean,
        doc: "Whether SIGTERM first asks the controller to move this broker's \
              leaderships to other replicas.",
        field: Field::Bool {
            get: |c| c.controlled_shutdown_enable,
            set: |c, v| c.controlled_shutdown_enable = v,
        },
    },
    BrokerKey {
        name: "controlled.shutdown.timeout.ms",
        config_type: ConfigType::Long,
        doc: "Sluice-specific. On SIGTERM, how long to wait for the controller to \
              move this broker's leaderships away before shutting down anyway.",
        field: Field::Int {
            min: 0,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.controlled_shutdown_timeout_ms as i64,
            set: |c, v| c.controlled_shutdown_timeout_ms = v as u64,
        },
    },
];

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;
    use clap::Parser;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn yaml_err(text: &str) -> String {
        BrokerConfig::from_yaml_str(text, "sluice.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn defaults_are_kafkas() {
        let c = BrokerConfig::default();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.data_dir, PathBuf::from("./sluice-data"));
        assert_eq!(c.listen, "127.0.0.1:9092");
        assert_eq!(c.advertised_listener, None);
        assert_eq!(c.socket_request_max_bytes, 104_857_600);
        assert!(c.auto_create_topics_enable);
        assert_eq!(c.num_partitions, 1);
        assert_eq!(c.default_replication_factor, 1);
        assert_eq!(c.log_retention_check_interval_ms, 300_000);
        assert_eq!(c.offset_checkpoint_interval_ms, 60_000);
        assert!(c.flush_acks_all);
        assert_eq!(c.shutdown_timeout_ms, 10_000);
        assert_eq!(c.group_initial_rebalance_delay_ms, 3_000);
        assert_eq!(c.offsets_topic_num_partitions, 50);
        assert_eq!(c.offsets_retention_minutes, 10_080);
        assert_eq!(c.controller_listen, None);
        assert!(c.voters.is_empty());
        assert_eq!(c.rack, None);
        assert_eq!(c.broker_session_timeout_ms, 9_000);
        assert_eq!(c.broker_heartbeat_interval_ms, 2_000);
        assert_eq!(c.replica_lag_time_max_ms, 30_000);
        assert_eq!(c.replica_fetch_wait_max_ms, 500);
        assert_eq!(c.replica_fetch_max_bytes, 1_048_576);
        assert_eq!(c.replica_fetch_response_max_bytes, 10_485_760);
        assert_eq!(c.offsets_topic_replication_factor, 3);
        assert!(c.auto_leader_rebalance_enable);
        assert_eq!(c.leader_imbalance_check_interval_seconds, 300);
        assert!(c.controlled_shutdown_enable);
        assert_eq!(c.controlled_shutdown_timeout_ms, 30_000);
        assert_eq!(c.controller_election_timeout_ms, 1_000);
        let t = &c.topic_defaults;
        assert_eq!(t.retention_ms, 604_800_000);
        assert_eq!(t.retention_bytes, -1);
        assert_eq!(t.segment_bytes, 1_073_741_824);
        assert_eq!(t.segment_ms, 604_800_000);
        assert_eq!(t.segment_index_bytes, 10_485_760);
        assert_eq!(t.index_interval_bytes, 4096);
        assert_eq!(t.flush_messages, i64::MAX);
        assert_eq!(t.flush_ms, i64::MAX);
        assert_eq!(t.cleanup_policy, "delete");
        assert_eq!(t.max_message_bytes, 1_048_588);
        assert_eq!(t.min_insync_replicas, 1);
        assert_eq!(t.message_timestamp_type, TimestampType::CreateTime);
        assert!(!t.unclean_leader_election_enable);
        assert_eq!(t.compression_type, "producer");
        assert_eq!(t.message_timestamp_before_max_ms, i64::MAX);
        assert_eq!(t.message_timestamp_after_max_ms, i64::MAX);
        assert_eq!(t.delete_retention_ms, 86_400_000);
        assert_eq!(t.file_delete_delay_ms, 60_000);

        assert_eq!(BrokerConfig::from_yaml_str("", "empty.yaml").unwrap(), c);
        assert_eq!(BrokerConfig::load(&Cli::default(), Vec::new()).unwrap(), c);
    }

    #[test]
    fn every_key_parses_from_yaml() {
        let text = r#"
node.id: 7
data.dir: /var/lib/sluice
listen: "[::1]:0"
advertised.listener: broker7.example.com:19092
num.partitions: 6
default.replication.factor: 3
auto.create.topics.enable: false
socket.request.max.bytes: 2000000
log.retention.check.interval.ms: 1000
log.flush.offset.checkpoint.interval.ms: 2000
log.flush.acks.all: false
shutdown.timeout.ms: 500
group.initial.rebalance.delay.ms: 0
offsets.topic.num.partitions: 3
offsets.retention.minutes: 60
offsets.topic.replication.factor: 2
producer.id.expiration.ms: 600000
transaction.state.log.num.partitions: 7
transaction.state.log.replication.factor: 2
transaction.state.log.min.isr: 1
transaction.max.timeout.ms: 60000
transactional.id.expiration.ms: 3600000
transaction.abort.timed.out.transaction.cleanup.interval.ms: 500
broker.rack: eu-west-1a
controller.listen: "[::1]:9093"
controller.quorum.voters: 7@[::1]:9093,8@broker8.example.com:9093
controller.quorum.election.timeout.ms: 1500
broker.session.timeout.ms: 6000
broker.heartbeat.interval.ms: 1000
replica.lag.time.max.ms: 20000
replica.fetch.wait.max.ms: 250
replica.fetch.max.bytes: 2097152
replica.fetch.response.max.bytes: 4194304
auto.leader.rebalance.enable: false
leader.imbalance.check.interval.seconds: 60
controlled.shutdown.enable: false
controlled.shutdown.timeout.ms: 5000
log.retention.ms: 3600000
log.retention.bytes: 1000000
log.segment.bytes: 65536
log.roll.ms: 60000
log.index.size.max.bytes: 8192
log.index.interval.bytes: 100
log.flush.interval.messages: 10
log.flush.interval.ms: 20
log.cleanup.policy: delete
message.max.bytes: 500000
min.insync.replicas: 2
log.message.timestamp.type: LogAppendTime
unclean.leader.election.enable: true
compression.type: producer
log.message.timestamp.before.max.ms: 1000
log.message.timestamp.after.max.ms: 2000
log.cleaner.delete.retention.ms: 3000
log.segment.delete.delay.ms: 4000
"#;
        let c = BrokerConfig::from_yaml_str(text, "sluice.yaml").unwrap();
        assert_eq!(c.node_id, 7);
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/sluice"));
        assert_eq!(c.listen, "[::1]:0");
        assert_eq!(
            c.advertised_listener,
            Some(("broker7.example.com".to_string(), 19092))
        );
        assert_eq!(c.num_partitions, 6);
        assert_eq!(c.default_replication_factor, 3);
        assert!(!c.auto_create_topics_enable);
        assert_eq!(c.socket_request_max_bytes, 2_000_000);
        assert_eq!(c.log_retention_check_interval_ms, 1000);
        assert_eq!(c.offset_checkpoint_interval_ms, 2000);
        assert!(!c.flush_acks_all);
        assert_eq!(c.shutdown_timeout_ms, 500);
        assert_eq!(c.group_initial_rebalance_delay_ms, 0);
        assert_eq!(c.offsets_topic_num_partitions, 3);
        assert_eq!(c.offsets_retention_minutes, 60);
        assert_eq!(c.offsets_topic_replication_factor, 2);
        assert_eq!(c.producer_id_expiration_ms, 600_000);
        assert_eq!(c.transaction_state_log_num_partitions, 7);
        assert_eq!(c.transaction_state_log_replication_factor, 2);
        assert_eq!(c.transaction_state_log_min_isr, 1);
        assert_eq!(c.transaction_max_timeout_ms, 60_000);
        assert_eq!(c.transactional_id_expiration_ms, 3_600_000);
        assert_eq!(c.transaction_abort_timed_out_cleanup_interval_ms, 500);
        assert_eq!(c.rack.as_deref(), Some("eu-west-1a"));
        assert_eq!(c.controller_listen.as_deref(), Some("[::1]:9093"));
        assert_eq!(
            c.voters,
            BTreeMap::from([
                (7, "[::1]:9093".to_string()),
                (8, "broker8.example.com:9093".to_string())
            ])
        );
        assert_eq!(c.controller_election_timeout_ms, 1500);
        assert_eq!(c.broker_session_timeout_ms, 6000);
        assert_eq!(c.broker_heartbeat_interval_ms, 1000);
        assert_eq!(c.replica_lag_time_max_ms, 20_000);
        assert_eq!(c.replica_fetch_wait_max_ms, 250);
        assert_eq!(c.replica_fetch_max_bytes, 2_097_152);
        assert_eq!(c.replica_fetch_response_max_bytes, 4_194_304);
        assert!(!c.auto_leader_rebalance_enable);
        assert_eq!(c.leader_imbalance_check_interval_seconds, 60);
        assert!(!c.controlled_shutdown_enable);
        assert_eq!(c.controlled_shutdown_timeout_ms, 5000);
        let t = &c.topic_defaults;
        assert_eq!(t.retention_ms, 3_600_000);
        assert_eq!(t.retention_bytes, 1_000_000);
        assert_eq!(t.segment_bytes, 65536);
        assert_eq!(t.segment_ms, 60_000);
        assert_eq!(t.segment_index_bytes, 8192);
        assert_eq!(t.index_interval_bytes, 100);
        assert_eq!(t.flush_messages, 10);
        assert_eq!(t.flush_ms, 20);
        assert_eq!(t.cleanup_policy, "delete");
        assert_eq!(t.max_message_bytes, 500_000);
        assert_eq!(t.min_insync_replicas, 2);
        assert_eq!(t.message_timestamp_type, TimestampType::LogAppendTime);
        assert!(t.unclean_leader_election_enable);
        assert_eq!(t.compression_type, "producer");
        assert_eq!(t.message_timestamp_before_max_ms, 1000);
        assert_eq!(t.message_timestamp_after_max_ms, 2000);
        assert_eq!(t.delete_retention_ms, 3000);
        assert_eq!(t.file_delete_delay_ms, 4000);
        // Every key of the file was recorded as set (one line per key).
        let keys = text.lines().filter(|l| !l.is_empty()).count();
        assert_eq!(c.set_keys.len(), keys);
        assert_eq!(
            keys,
            all_broker_keys().count() - 3,
            "all but .minutes/.hours"
        );
        assert_eq!(
            c.set_keys["node.id"],
            SetKey {
                value: "7".into(),
                origin: Origin::File("sluice.yaml".into())
            }
        );
    }

    #[test]
    fn yaml_values_may_be_strings_and_null_keeps_the_default() {
        let c = BrokerConfig::from_yaml_str(
            "num.partitions: \"3\"\nauto.create.topics.enable: 'FALSE'\nnode.id: ' 4 '\nadvertised.listener:\n",
            "sluice.yaml",
        )
        .unwrap();
        assert_eq!(c.num_partitions, 3);
        assert!(!c.auto_create_topics_enable);
        assert_eq!(c.node_id, 4);
        assert_eq!(c.advertised_listener, None);
        assert!(!c.set_keys.contains_key("advertised.listener"));
    }

    #[test]
    fn flag_beats_file_and_env_beats_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.yaml");
        std::fs::write(
            &path,
            "node.id: 2\ndata.dir: /from/file\nlisten: 127.0.0.1:1000\nnum.partitions: 4\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "sluice-broker",
            "--config",
            path.to_str().unwrap(),
            "--node-id",
            "3",
            "--data-dir",
            "/from/flag",
        ])
        .unwrap();
        let c = BrokerConfig::load(
            &cli,
            env(&[
                ("SLUICE_NODE_ID", "5"),
                ("SLUICE_LOG_RETENTION_MS", "1234"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(c.node_id, 5, "env beats flag");
        assert_eq!(c.data_dir, PathBuf::from("/from/flag"), "flag beats file");
        assert_eq!(c.listen, "127.0.0.1:1000", "file beats default");
        assert_eq!(c.num_partitions, 4);
        assert_eq!(c.topic_defaults.retention_ms, 1234);
        assert_eq!(
            c.set_keys["node.id"].origin,
            Origin::Env("SLUICE_NODE_ID".into())
        );
        assert_eq!(c.set_keys["data.dir"].origin, Origin::Flag("--data-dir"));
        assert_eq!(
            c.set_keys["listen"].origin,
            Origin::File(path.display().to_string())
        );
    }

    #[test]
    fn cli_has_the_documented_shape() {
        let cli = Cli::try_parse_from([
            "sluice-broker",
            "--config",
            "a.yaml",
            "--data-dir",
            "d",
            "--listen",
            "0.0.0.0:9092",
            "--advertised-listener",
            "h:1",
            "--node-id",
            "9",
            "--controller-listen",
            "0.0.0.0:9093",
            "--voters",
            "9@h:9093",
            "--rack",
            "r1",
        ])
        .unwrap();
        assert_eq!(
            cli,
            Cli {
                config: Some("a.yaml".into()),
                data_dir: Some("d".into()),
                listen: Some("0.0.0.0:9092".into()),
                advertised_listener: Some("h:1".into()),
                node_id: Some(9),
                controller_listen: Some("0.0.0.0:9093".into()),
                voters: Some("9@h:9093".into()),
                rack: Some("r1".into()),
            }
        );
        assert_eq!(
            Cli::try_parse_from(["sluice-broker"]).unwrap(),
            Cli::default()
        );
        assert!(Cli::try_parse_from(["sluice-broker", "--node-id", "x"]).is_err());
    }

    #[test]
    fn missing_config_file_is_an_error_naming_it() {
        let cli = Cli {
            config: Some("/nonexistent/sluice.yaml".into()),
            ..Cli::default()
        };
        let err = BrokerConfig::load(&cli, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/sluice.yaml"), "{err}");
    }

    #[test]
    fn unknown_key_names_the_key_and_suggests_the_closest() {
        assert_eq!(
            yaml_err("log.retention.msec: 5\n"),
            "unknown key `log.retention.msec` in sluice.yaml: did you mean `log.retention.ms`?"
        );
        assert!(yaml_err("log.dirs: /x\n").ends_with("did you mean `data.dir`?"));
        assert!(yaml_err("retention.ms: 5\n").ends_with("did you mean `log.retention.ms`?"));
        assert!(yaml_err("num.partition: 5\n").ends_with("did you mean `num.partitions`?"));
        assert_eq!(
            yaml_err("zookeeper.connect: x\n"),
            "unknown key `zookeeper.connect` in sluice.yaml: see docs/configuration.md for \
             the keys Sluice knows"
        );
    }

    #[test]
    fn bad_value_names_key_value_origin_and_expectation() {
        assert_eq!(
            yaml_err("num.partitions: many\n"),
            "invalid value `many` for `num.partitions` in sluice.yaml: expected an integer \
             from 1 to 2147483647 (partitions)"
        );
        assert!(yaml_err("auto.create.topics.enable: 1\n").ends_with("expected `true` or `false`"));
        assert!(yaml_err("log.retention.hours: 1.5\n").contains("`1.5`"));
        assert!(yaml_err("log.retention.hours: 2147483648\n")
            .ends_with("expected an integer from -1 to 2147483647"));
        let err = yaml_err("log.segment.bytes: [1, 2]\n");
        assert!(
            err.contains("`log.segment.bytes`") && err.contains("from 14"),
            "{err}"
        );

        let err = BrokerConfig::load(&Cli::default(), env(&[("SLUICE_NODE_ID", "-3")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid value `-3` for `node.id` from environment variable SLUICE_NODE_ID: \
             expected an integer from 0 to 2147483647"
        );
        let cli = Cli {
            listen: Some("localhost".into()),
            ..Cli::default()
        };
        let err = BrokerConfig::load(&cli, Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "invalid value `localhost` for `listen` from flag --listen: expected HOST:PORT"
            ),
            "{err}"
        );
    }

    #[test]
    fn out_of_range_values_are_rejected_naming_the_key() {
        for (text, key) in [
            ("log.segment.bytes: 13", "log.segment.bytes"),
            ("num.partitions: 0", "num.partitions"),
            (
                "default.replication.factor: 40000",
                "default.replication.factor",
            ),
            ("listen: 127.0.0.1", "listen"),
            ("listen: ::1:9092", "listen"),
            ("listen: 127.0.0.1:70000", "listen"),
            ("advertised.listener: 0.0.0.0:9092", "advertised.listener"),
            ("log.cleanup.policy: compact", "log.cleanup.policy"),
            ("compression.type: zstd", "compression.type"),
            ("log.retention.ms: -2", "log.retention.ms"),
            ("log.roll.hours: 0", "log.roll.hours"),
            ("data.dir: ''", "data.dir"),
            ("broker.rack: ''", "broker.rack"),
            ("controller.listen: localhost", "controller.listen"),
            ("broker.session.timeout.ms: 0", "broker.session.timeout.ms"),
            (
                "broker.heartbeat.interval.ms: 0",
                "broker.heartbeat.interval.ms",
            ),
            ("replica.lag.time.max.ms: 0", "replica.lag.time.max.ms"),
            ("replica.fetch.wait.max.ms: 0", "replica.fetch.wait.max.ms"),
            ("replica.fetch.max.bytes: 0", "replica.fetch.max.bytes"),
            (
                "replica.fetch.response.max.bytes: 2147483648",
                "replica.fetch.response.max.bytes",
            ),
            (
                "offsets.topic.replication.factor: 0",
                "offsets.topic.replication.factor",
            ),
            (
                "leader.imbalance.check.interval.seconds: 0",
                "leader.imbalance.check.interval.seconds",
            ),
            (
                "controlled.shutdown.timeout.ms: -1",
                "controlled.shutdown.timeout.ms",
            ),
            (
                "controller.quorum.election.timeout.ms: 0",
                "controller.quorum.election.timeout.ms",
            ),
            (
                "auto.leader.rebalance.enable: yes",
                "auto.leader.rebalance.enable",
            ),
            (
                "controlled.shutdown.enable: 0",
                "controlled.shutdown.enable",
            ),
        ] {
            let err = yaml_err(text);
            assert!(err.contains(&format!("`{key}`")), "{text}: {err}");
        }
    }

    #[test]
    fn advertised_listener_may_leave_the_port_to_the_listener() {
        let c = BrokerConfig::from_yaml_str(
            "listen: 0.0.0.0:0\nadvertised.listener: kafka.local:0\n",
            "sluice.yaml",
        )
        .unwrap();
        assert_eq!(c.listen, "0.0.0.0:0");
        assert_eq!(c.advertised_listener, Some(("kafka.local".into(), 0)));
        let err = yaml_err("advertised.listener: '[::]:9092'\n");
        assert!(err.contains("`::` only means \"every interface\""), "{err}");
    }

    #[test]
    fn retention_ms_beats_minutes_beats_hours() {
        let retention = |text: &str| {
            BrokerConfig::from_yaml_str(text, "t")
                .unwrap()
                .topic_defaults
                .retention_ms
        };
        assert_eq!(retention("log.retention.hours: 2"), 7_200_000);
        assert_eq!(retention("log.retention.hours: -1"), -1);
        assert_eq!(
            retention("log.retention.hours: 2\nlog.retention.minutes: 3"),
            180_000
        );
        assert_eq!(
            retention("log.retention.minutes: 3\nlog.retention.hours: 2\nlog.retention.ms: 5"),
            5
        );
        let roll = BrokerConfig::from_yaml_str("log.roll.hours: 1", "t").unwrap();
        assert_eq!(roll.topic_defaults.segment_ms, 3_600_000);
        let roll = BrokerConfig::from_yaml_str("log.roll.hours: 1\nlog.roll.ms: 10", "t").unwrap();
        assert_eq!(roll.topic_defaults.segment_ms, 10);
        // A bad value in a losing synonym is still an error.
        assert!(
            yaml_err("log.retention.ms: 5\nlog.retention.hours: x").contains("log.retention.hours")
        );
    }

    #[test]
    fn higher_layer_retention_synonym_replaces_lower_layers_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sluice.yaml");
        std::fs::write(&path, "log.retention.ms: 5\nlog.retention.minutes: 7\n").unwrap();
        let cli = Cli {
            config: Some(path),
            ..Cli::default()
        };
        let c = BrokerConfig::load(&cli, env(&[("SLUICE_LOG_RETENTION_HOURS", "1")])).unwrap();
        assert_eq!(c.topic_defaults.retention_ms, 3_600_000);
        assert!(!c.set_keys.contains_key("log.retention.ms"));
        assert!(!c.set_keys.contains_key("log.retention.minutes"));
    }

    #[test]
    fn unknown_sluice_variable_is_ignored() {
        let c = BrokerConfig::load(
            &Cli::default(),
            env(&[("SLUICE_BOOTSTRAP_SERVERS", "x"), ("SLUICE_NODEID", "x")]),
        )
        .unwrap();
        assert_eq!(c, BrokerConfig::default());
    }

    #[test]
    fn env_names_are_unique_and_derived_from_keys() {
        assert_eq!(env_var_name("log.retention.ms"), "SLUICE_LOG_RETENTION_MS");
        assert_eq!(env_var_name("listen"), "SLUICE_LISTEN");
        let names: std::collections::BTreeSet<_> = all_broker_keys().map(env_var_name).collect();
        assert_eq!(names.len(), all_broker_keys().count());
    }

    #[test]
    fn broker_entries_cover_every_key_with_its_source() {
        let c = BrokerConfig::from_yaml_str("log.retention.hours: 1\nnum.partitions: 3\n", "t")
            .unwrap();
        let entries = c.broker_entries();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, all_broker_keys().collect::<Vec<_>>());
        let find = |name: &str| entries.iter().find(|e| e.name == name).unwrap();

        let partitions = find("num.partitions");
        assert_eq!(partitions.value.as_deref(), Some("3"));
        assert_eq!(partitions.source, ConfigSource::StaticBrokerConfig);
        assert!(partitions.read_only);
        assert_eq!(partitions.synonyms.len(), 2);

        let node = find("node.id");
        assert_eq!(node.value.as_deref(), Some("1"));
        assert_eq!(node.source, ConfigSource::DefaultConfig);

        assert_eq!(find("advertised.listener").value, None);

        let ms = find("log.retention.ms");
        assert_eq!(ms.value.as_deref(), Some("3600000"));
        assert_eq!(ms.source, ConfigSource::StaticBrokerConfig);
        let hours = find("log.retention.hours");
        assert_eq!(hours.value.as_deref(), Some("1"));
        assert_eq!(hours.source, ConfigSource::StaticBrokerConfig);
        let minutes = find("log.retention.minutes");
        assert_eq!(minutes.value, None);
        assert_eq!(minutes.source, ConfigSource::DefaultConfig);
    }

    #[test]
    fn kafka_ids_match_the_protocol() {
        assert_eq!(ConfigSource::TopicConfig.kafka_id(), 1);
        assert_eq!(ConfigSource::DynamicBrokerConfig.kafka_id(), 2);
        assert_eq!(ConfigSource::DynamicDefaultBrokerConfig.kafka_id(), 3);
        assert_eq!(ConfigSource::StaticBrokerConfig.kafka_id(), 4);
        assert_eq!(ConfigSource::DefaultConfig.kafka_id(), 5);
        assert_eq!(ConfigType::Boolean.kafka_id(), 1);
        assert_eq!(ConfigType::Long.kafka_id(), 5);
        assert_eq!(ConfigType::List.kafka_id(), 7);
        assert_eq!(ConfigType::Password.kafka_id(), 9);
    }

    #[test]
    fn every_default_passes_its_own_validation() {
        let text: String = BrokerConfig::default()
            .broker_entries()
            .iter()
            .filter_map(|e| Some(format!("{}: '{}'\n", e.name, e.value.as_ref()?)))
            .collect();
        let c = BrokerConfig::from_yaml_str(&text, "defaults.yaml").unwrap();
        assert_eq!(
            BrokerConfig {
                set_keys: BTreeMap::new(),
                ..c
            },
            BrokerConfig::default()
        );
    }

    #[test]
    fn configuration_doc_mentions_every_key_and_variable() {
        let doc = include_str!("../../../docs/configuration.md");
        let topic_keys = TOPIC_KEYS.iter().map(|key| key.name);
        for key in all_broker_keys().chain(topic_keys) {
            assert!(doc.contains(&format!("`{key}`")), "docs lack `{key}`");
        }
        for key in all_broker_keys() {
            let var = env_var_name(key);
            assert!(doc.contains(&var), "docs lack {var}");
        }
        for flag in [
            "--config",
            "--data-dir",
            "--listen",
            "--advertised-listener",
            "--node-id",
            "--controller-listen",
            "--voters",
            "--rack",
        ] {
            assert!(doc.contains(flag), "docs lack {flag}");
        }
    }

    fn cluster_err(text: &str) -> String {
        let err = BrokerConfig::from_yaml_str(text, "sluice.yaml").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err:?}");
        err.to_string()
    }

    #[test]
    fn cluster_flags_land_in_their_fields() {
        let cli = Cli::try_parse_from([
            "sluice-broker",
            "--node-id",
            "2",
            "--controller-listen",
            "0.0.0.0:9193",
            "--voters",
            "1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293",
            "--rack",
            "rack-b",
        ])
        .unwrap();
        let c = BrokerConfig::load(&cli, Vec::new()).unwrap();
        assert_eq!(c.controller_listen.as_deref(), Some("0.0.0.0:9193"));
        assert_eq!(c.voters.len(), 3);
        assert_eq!(c.voters[&3], "127.0.0.1:9293");
        assert_eq!(c.rack.as_deref(), Some("rack-b"));
        assert_eq!(
            c.set_keys["controller.quorum.voters"].origin,
            Origin::Flag("--voters")
        );
        assert_eq!(c.set_keys["broker.rack"].origin, Origin::Flag("--rack"));
        assert_eq!(
            c.set_keys["controller.listen"].origin,
            Origin::Flag("--controller-listen")
        );
    }

    #[test]
    fn voters_accept_ipv6_hostnames_spaces_and_empty() {
        let voters =
            parse_voters(" 0@[::1]:9093 , 12@Broker.Example.com:1,3@10.0.0.3:65535 ").unwrap();
        assert_eq!(
            voters,
            BTreeMap::from([
                (0, "[::1]:9093".to_string()),
                (3, "10.0.0.3:65535".to_string()),
                (12, "Broker.Example.com:1".to_string()),
            ])
        );
        assert_eq!(
            voters_text(&voters),
            "0@[::1]:9093,3@10.0.0.3:65535,12@Broker.Example.com:1"
        );
        assert_eq!(parse_voters("").unwrap(), BTreeMap::new());
        assert_eq!(parse_voters("  ").unwrap(), BTreeMap::new());
    }

    #[test]
    fn each_bad_voters_entry_is_named_with_the_expected_shape() {
        for (value, names) in [
            ("x@1", "entry `x@1` is not ID@HOST:PORT"),
            ("1@h:9093,x@1", "entry `x@1` is not ID@HOST:PORT"),
            (
                "127.0.0.1:9093",
                "entry `127.0.0.1:9093` is not ID@HOST:PORT",
            ),
            ("@h:9093", "entry `@h:9093` is not ID@HOST:PORT"),
            ("1.5@h:9093", "entry `1.5@h:9093` is not ID@HOST:PORT"),
            ("-1@h:9093", "entry `-1@h:9093` has id `-1`"),
            (
                "2147483648@h:9093",
                "entry `2147483648@h:9093` has id `2147483648`",
            ),
            ("1@h", "in entry `1@h` `h` is not HOST:PORT"),
            ("1@h:", "in entry `1@h:` `h:` is not HOST:PORT"),
            (
                "1@h:99999",
                "in entry `1@h:99999` `h:99999` is not HOST:PORT with a port",
            ),
            (
                "1@::1:9093",
                "in entry `1@::1:9093` `::1:9093` is not HOST:PORT with an IPv6 host in brackets",
            ),
            ("1@h:0", "entry `1@h:0` has port 0"),
            (
                "1@0.0.0.0:9093",
                "entry `1@0.0.0.0:9093` has host `0.0.0.0`",
            ),
            ("1@[::]:9093", "entry `1@[::]:9093` has host `::`"),
            (
                "1@a:9093,1@b:9093",
                "entries `1@a:9093` and `1@b:9093` have the same id 1",
            ),
            (
                "1@a:9093,2@A:9093",
                "entries `1@a:9093` and `2@A:9093` have the same address `A:9093`",
            ),
            ("1@a:9093,,2@b:9093", "an entry is empty"),
            ("1@a:9093,", "an entry is empty"),
        ] {
            let err = yaml_err(&format!("controller.quorum.voters: '{value}'\n"));
            assert!(
                err.starts_with(&format!(
                    "invalid value `{value}` for `controller.quorum.voters` in sluice.yaml: \
                     expected ID@HOST:PORT entries separated by commas, e.g. \
                     `1@127.0.0.1:9093,2@127.0.0.1:9193`, but "
                )),
                "{value}: {err}"
            );
            assert!(err.contains(names), "{value}: {err}");
        }
        // A YAML list is not the comma-separated string.
        let err = yaml_err("controller.quorum.voters: [1@a:9093]\n");
        assert!(err.ends_with("expected ID@HOST:PORT entries separated by commas, e.g. `1@127.0.0.1:9093,2@127.0.0.1:9193`"), "{err}");
    }

    #[test]
    fn voter_without_controller_listen_listens_on_its_own_entry() {
        let c = BrokerConfig::from_yaml_str(
            "node.id: 2\ncontroller.quorum.voters: 1@h1:9093,2@h2:9193\n",
            "sluice.yaml",
        )
        .unwrap();
        assert_eq!(c.controller_listen.as_deref(), Some("h2:9193"));
        // Derived, not set: DescribeConfigs shows the value as a default.
        assert!(!c.set_keys.contains_key("controller.listen"));
    }

    #[test]
    fn voter_controller_listen_must_use_its_entrys_port() {
        let ok = BrokerConfig::from_yaml_str(
            "node.id: 1\ncontroller.listen: 0.0.0.0:9093\ncontroller.quorum.voters: 1@h1:9093\n",
            "sluice.yaml",
        )
        .unwrap();
        assert_eq!(ok.controller_listen.as_deref(), Some("0.0.0.0:9093"));

        let err = cluster_err(
            "node.id: 1\ncontroller.listen: 0.0.0.0:9094\ncontroller.quorum.voters: 1@h1:9093\n",
        );
        assert_eq!(
            err,
            "`controller.listen`: `0.0.0.0:9094` has port 9094, but this node's entry in \
             `controller.quorum.voters` is `1@h1:9093` with port 9093; the other voters dial \
             that port, so use the same port in both (or leave `controller.listen` unset)"
        );
        let err = cluster_err(
            "node.id: 1\ncontroller.listen: 0.0.0.0:0\ncontroller.quorum.voters: 1@h1:9093\n",
        );
        assert!(
            err.starts_with("`controller.listen`: port 0 is not allowed"),
            "{err}"
        );
        assert!(err.contains("use 9093"), "{err}");
    }

    #[test]
    fn observer_needs_a_fixed_controller_listen() {
        let err = cluster_err("node.id: 4\ncontroller.quorum.voters: 1@h1:9093,2@h2:9093\n");
        assert_eq!(
            err,
            "`controller.listen`: node.id 4 is not in `controller.quorum.voters` \
             (1@h1:9093,2@h2:9093), so this broker is an observer of the controller quorum \
             and needs its own `controller.listen` (--controller-listen HOST:PORT); or add \
             it to the voters"
        );
        let err = cluster_err(
            "node.id: 4\ncontroller.listen: 0.0.0.0:0\ncontroller.quorum.voters: 1@h1:9093\n",
        );
        assert!(
            err.starts_with("`controller.listen`: port 0 is not allowed"),
            "{err}"
        );
        let c = BrokerConfig::from_yaml_str(
            "node.id: 4\ncontroller.listen: h4:9093\ncontroller.quorum.voters: 1@h1:9093\n",
            "sluice.yaml",
        )
        .unwrap();
        assert_eq!(c.controller_listen.as_deref(), Some("h4:9093"));
    }

    #[test]
    fn single_node_cluster_needs_no_controller_listener() {
        let c = BrokerConfig::from_yaml_str("node.id: 4\n", "t").unwrap();
        assert_eq!(c.controller_listen, None);
        let c = BrokerConfig::from_yaml_str("controller.listen: 127.0.0.1:0\n", "t").unwrap();
        assert_eq!(c.controller_listen.as_deref(), Some("127.0.0.1:0"));
    }

    #[test]
    fn controller_cannot_share_the_client_port() {
        let err = cluster_err("listen: 0.0.0.0:9092\ncontroller.listen: 127.0.0.1:9092\n");
        assert!(
            err.starts_with(
                "`controller.listen`: `127.0.0.1:9092` binds the same port as `listen`"
            ),
            "{err}"
        );
        let err = cluster_err("node.id: 1\ncontroller.quorum.voters: 1@127.0.0.1:9092\n");
        assert!(
            err.starts_with("`controller.quorum.voters`: this node's entry `1@127.0.0.1:9092`"),
            "{err}"
        );
        // Other hosts, or port 0 on both, are fine.
        BrokerConfig::from_yaml_str(
            "listen: 10.0.0.1:9092\ncontroller.listen: 10.0.0.2:9092\n",
            "t",
        )
        .unwrap();
        BrokerConfig::from_yaml_str("listen: 127.0.0.1:0\ncontroller.listen: 127.0.0.1:0\n", "t")
            .unwrap();
    }

    #[test]
    fn heartbeat_must_be_shorter_than_the_session() {
        let err = cluster_err("broker.heartbeat.interval.ms: 9000\n");
        assert_eq!(
            err,
            "`broker.heartbeat.interval.ms`: 9000 must be smaller than \
             `broker.session.timeout.ms` (9000), or the controller fences the broker between \
             two heartbeats; lower the interval or raise the timeout"
        );
        let err = cluster_err("broker.session.timeout.ms: 1000\n");
        assert!(err.contains("(1000)"), "{err}");
        BrokerConfig::from_yaml_str("broker.session.timeout.ms: 2001\n", "t").unwrap();
    }

    #[test]
    fn replica_fetch_wait_cannot_exceed_the_lag_limit() {
        let err = cluster_err("replica.lag.time.max.ms: 400\n");
        assert!(
            err.starts_with(
                "`replica.fetch.wait.max.ms`: 500 must not exceed `replica.lag.time.max.ms` (400)"
            ),
            "{err}"
        );
        BrokerConfig::from_yaml_str("replica.lag.time.max.ms: 500\n", "t").unwrap();
    }

    #[test]
    fn voters_come_from_the_environment_too() {
        let cli = Cli {
            node_id: Some(3),
            voters: Some("1@a:9093".into()),
            ..Cli::default()
        };
        let c = BrokerConfig::load(
            &cli,
            env(&[("SLUICE_CONTROLLER_QUORUM_VOTERS", "1@a:9093,3@c:9093")]),
        )
        .unwrap();
        assert_eq!(c.voters.len(), 2, "env beats flag");
        assert_eq!(c.controller_listen.as_deref(), Some("c:9093"));
        assert_eq!(
            c.set_keys["controller.quorum.voters"].origin,
            Origin::Env("SLUICE_CONTROLLER_QUORUM_VOTERS".into())
        );
        // An empty variable turns a voters list from the file back into a single node.
        let c = BrokerConfig::load(&cli, env(&[("SLUICE_CONTROLLER_QUORUM_VOTERS", "")])).unwrap();
        assert!(c.voters.is_empty());

        let err = BrokerConfig::load(&cli, env(&[("SLUICE_CONTROLLER_QUORUM_VOTERS", "3@c")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("from environment variable SLUICE_CONTROLLER_QUORUM_VOTERS")
                && err.contains("entry `3@c`"),
            "{err}"
        );
    }

    #[test]
    fn metadata_election_timeout_suggests_the_kafka_key() {
        assert!(yaml_err("metadata.election.timeout.ms: 1000\n")
            .ends_with("did you mean `controller.quorum.election.timeout.ms`?"));
    }

    #[test]
    fn cluster_example_in_the_docs_starts_three_brokers() {
        let doc = include_str!("../../../docs/configuration.md");
        let commands: Vec<String> = doc
            .replace("\\\n", " ")
            .lines()
            .filter(|line| line.starts_with("sluice-broker --node-id"))
            .map(str::to_string)
            .collect();
        assert_eq!(commands.len(), 3, "{commands:?}");
        let mut controllers = Vec::new();
        for command in &commands {
            let cli = Cli::try_parse_from(command.split_whitespace()).unwrap();
            let c = BrokerConfig::load(&cli, Vec::new()).unwrap();
            assert_eq!(c.voters.len(), 3, "{command}");
            controllers.push(c.controller_listen.unwrap());
        }
        assert_eq!(
            controllers,
            ["127.0.0.1:9093", "127.0.0.1:9193", "127.0.0.1:9293"]
        );
    }
}
