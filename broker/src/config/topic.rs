//! Topic-level configs (`retention.ms`, `segment.bytes`, ...) and the broker keys
//! that set their defaults (`log.retention.ms`, `log.segment.bytes`, ...).
//!
//! Everything here comes from [`TOPIC_KEYS`]: parsing the broker file, validating
//! topic overrides, resolving a topic's effective config and DescribeConfigs, so a
//! key cannot be accepted by one path and unknown to another.

use std::collections::BTreeMap;

use super::{suggest, BrokerConfig, ConfigEntry, ConfigError, ConfigSource, ConfigType, Field};

/// Which timestamp a record batch keeps (`message.timestamp.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimestampType {
    /// The producer's timestamp is kept.
    CreateTime,
    /// The broker stamps each batch with its append time.
    LogAppendTime,
}

impl TimestampType {
    /// Kafka's name for the value.
    pub fn as_str(self) -> &'static str {
        match self {
            TimestampType::CreateTime => "CreateTime",
            TimestampType::LogAppendTime => "LogAppendTime",
        }
    }
}

/// The effective config of one topic: broker defaults with the topic's overrides.
#[derive(Clone, Debug, PartialEq)]
pub struct TopicConfig {
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub segment_index_bytes: u64,
    pub index_interval_bytes: u64,
    pub flush_messages: i64,
    pub flush_ms: i64,
    pub cleanup_policy: String,
    pub max_message_bytes: i32,
    pub min_insync_replicas: i32,
    pub message_timestamp_type: TimestampType,
    pub unclean_leader_election_enable: bool,
    pub compression_type: String,
    pub message_timestamp_before_max_ms: i64,
    pub message_timestamp_after_max_ms: i64,
    pub delete_retention_ms: i64,
    pub file_delete_delay_ms: i64,
}

/// Kafka's defaults.
impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: 604_800_000,
            retention_bytes: -1,
            segment_bytes: 1_073_741_824,
            segment_ms: 604_800_000,
            segment_index_bytes: 10_485_760,
            index_interval_bytes: 4096,
            flush_messages: i64::MAX,
            flush_ms: i64::MAX,
            cleanup_policy: "delete".to_string(),
            max_message_bytes: 1_048_588,
            min_insync_replicas: 1,
            message_timestamp_type: TimestampType::CreateTime,
            unclean_leader_election_enable: false,
            compression_type: "producer".to_string(),
            message_timestamp_before_max_ms: i64::MAX,
            message_timestamp_after_max_ms: i64::MAX,
            delete_retention_ms: 86_400_000,
            file_delete_delay_ms: 60_000,
        }
    }
}

impl TopicConfig {
    /// The effective config of a topic: `defaults` (the broker's
    /// [`BrokerConfig::topic_defaults`]) with the topic's `overrides` applied.
    pub fn resolve(
        defaults: &TopicConfig,
        overrides: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, ConfigError> {
        let mut config = defaults.clone();
        for (name, value) in overrides {
            apply_override(&mut config, name, value)?;
        }
        Ok(config)
    }

    /// The part of the config the commit log needs.
    pub fn log_config(&self) -> crate::commitlog::LogConfig {
        crate::commitlog::LogConfig {
            segment_bytes: self.segment_bytes,
            segment_ms: self.segment_ms,
            segment_index_bytes: self.segment_index_bytes,
            index_interval_bytes: self.index_interval_bytes,
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
        }
    }
}

/// Checks one topic config override (CreateTopics, AlterConfigs,
/// IncrementalAlterConfigs): the key must be a topic config Sluice knows and the
/// value must parse and be in range.
pub fn validate_topic_override(name: &str, value: &str) -> Result<(), ConfigError> {
    apply_override(&mut TopicConfig::default(), name, value)
}

/// DescribeConfigs for a topic, with Kafka's semantics: each known topic config
/// once, its value and where it comes from (`TopicConfig` if overridden,
/// `StaticBrokerConfig` if the broker default was set in the file, a flag or the
/// environment, else `DefaultConfig`), and its synonyms in precedence order (the
/// override, the broker keys that were set, then the built-in default). Overrides
/// with unknown names are left out.
pub fn describe_topic(
    broker: &BrokerConfig,
    overrides: &BTreeMap<String, String>,
) -> Vec<ConfigEntry> {
    let builtin = TopicConfig::default();
    TOPIC_KEYS
        .iter()
        .map(|key| {
            let mut synonyms = Vec::new();
            let mut value = key.field.get(&broker.topic_defaults);
            let mut source = ConfigSource::DefaultConfig;
            if let Some(raw) = overrides.get(key.name) {
                let mut config = broker.topic_defaults.clone();
                // Overrides were validated when stored; show a bad one as written.
                value = match key.field.apply(&mut config, raw, 1) {
                    Ok(()) => key.field.get(&config),
                    Err(_) => Some(raw.clone()),
                };
                source = ConfigSource::TopicConfig;
                synonyms.push((key.name.to_string(), value.clone(), source));
            }
            for (broker_name, _) in key.broker {
                if let Some(set) = broker.set_keys.get(*broker_name) {
                    if source == ConfigSource::DefaultConfig {
                        source = ConfigSource::StaticBrokerConfig;
                    }
                    synonyms.push((
                        broker_name.to_string(),
                        Some(set.value.clone()),
                        ConfigSource::StaticBrokerConfig,
                    ));
                }
            }
            synonyms.push((
                key.broker[0].0.to_string(),
                key.field.get(&builtin),
                ConfigSource::DefaultConfig,
            ));
            ConfigEntry {
                name: key.name.to_string(),
                value,
                source,
                read_only: false,
                sensitive: false,
                synonyms,
                doc: key.doc,
                config_type: key.config_type,
            }
        })
        .collect()
}

fn apply_override(config: &mut TopicConfig, name: &str, value: &str) -> Result<(), ConfigError> {
    let key = TOPIC_KEYS
        .iter()
        .find(|key| key.name == name)
        .ok_or_else(|| ConfigError::UnknownTopicConfig {
            key: name.to_string(),
            suggestion: suggest_topic_key(name),
        })?;
    key.field
        .apply(config, value, 1)
        .map_err(|expected| ConfigError::InvalidValue {
            key: name.to_string(),
            value: value.to_string(),
            origin: "in the topic config".to_string(),
            expected,
        })
}

/// The topic config someone most likely meant by `name`; a broker key
/// (`log.retention.ms`) maps to its topic config (`retention.ms`).
fn suggest_topic_key(name: &str) -> Option<String> {
    if let Some(key) = TOPIC_KEYS.iter().find(|key| {
        key.broker
            .iter()
            .any(|(broker_name, _)| *broker_name == name)
    }) {
        return Some(key.name.to_string());
    }
    suggest(name, TOPIC_KEYS.iter().map(|key| key.name))
}

/// One topic config and the broker keys that set its default.
pub(super) struct TopicKey {
    /// The topic-level name (`retention.ms`).
    pub(super) name: &'static str,
    /// Broker keys setting the default, highest precedence first, each with the
    /// factor converting its unit to the topic key's (hours -> ms). The first is
    /// the one that carries the built-in default.
    pub(super) broker: &'static [(&'static str, i64)],
    pub(super) config_type: ConfigType,
    pub(super) doc: &'static str,
    pub(super) field: Field<TopicConfig>,
}

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;

// The setters' `as` casts are lossless: `Field::apply` has already checked the
// value against `min..=max`, which fit the field's type.
pub(super) static TOPIC_KEYS: &[TopicKey] = &[
    TopicKey {
        name: "retention.ms",
        broker: &[
            ("log.retention.ms", 1),
            ("log.retention.minutes", MINUTE_MS),
            ("log.retention.hours", HOUR_MS),
        ],
        config_type: ConfigType::Long,
        doc: "How long a closed segment is kept before retention deletes it, judged by \
              the newest timestamp in it. -1 keeps data forever.",
        field: Field::Int {
            min: -1,
            max: i64::MAX,
            unit: "milliseconds; -1 means no time limit",
            get: |c| c.retention_ms,
            set: |c, v| c.retention_ms = v,
        },
    },
    TopicKey {
        name: "retention.bytes",
        broker: &[("log.retention.bytes", 1)],
        config_type: ConfigType::Long,
        doc: "Size a partition may reach before retention deletes its oldest closed \
              segments. -1 means no size limit.",
        field: Field::Int {
            min: -1,
            max: i64::MAX,
            unit: "bytes; -1 means no size limit",
            get: |c| c.retention_bytes,
            set: |c, v| c.retention_bytes = v,
        },
    },
    TopicKey {
        name: "segment.bytes",
        broker: &[("log.segment.bytes", 1)],
        config_type: ConfigType::Int,
        doc: "Size at which the active segment is closed and a new one started.",
        field: Field::Int {
            min: 14,
            max: i32::MAX as i64,
            unit: "bytes; 14 is Kafka's minimum",
            get: |c| c.segment_bytes as i64,
            set: |c, v| c.segment_bytes = v as u64,
        },
    },
    TopicKey {
        name: "segment.ms",
        broker: &[("log.roll.ms", 1), ("log.roll.hours", HOUR_MS)],
        config_type: ConfigType::Long,
        doc: "Age at which the active segment is closed even if it is not full, so \
              that retention can delete it.",
        field: Field::Int {
            min: 1,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.segment_ms,
            set: |c, v| c.segment_ms = v,
        },
    },
    TopicKey {
        name: "segment.index.bytes",
        broker: &[("log.index.size.max.bytes", 1)],
        config_type: ConfigType::Int,
        doc: "Maximum size of a segment's offset index; the segment is closed when \
              its index is full.",
        field: Field::Int {
            min: 4,
            max: i32::MAX as i64,
            unit: "bytes",
            get: |c| c.segment_index_bytes as i64,
            set: |c, v| c.segment_index_bytes = v as u64,
        },
    },
    TopicKey {
        name: "index.interval.bytes",
        broker: &[("log.index.interval.bytes", 1)],
        config_type: ConfigType::Int,
        doc: "Bytes of record batches between two offset index entries.",
        field: Field::Int {
            min: 0,
            max: i32::MAX as i64,
            unit: "bytes",
            get: |c| c.index_interval_bytes as i64,
            set: |c, v| c.index_interval_bytes = v as u64,
        },
    },
    TopicKey {
        name: "flush.messages",
        broker: &[("log.flush.interval.messages", 1)],
        config_type: ConfigType::Long,
        doc: "Force an fsync of the log after this many messages have been appended.",
        field: Field::Int {
            min: 1,
            max: i64::MAX,
            unit: "messages",
            get: |c| c.flush_messages,
            set: |c, v| c.flush_messages = v,
        },
    },
    TopicKey {
        name: "flush.ms",
        broker: &[("log.flush.interval.ms", 1)],
        config_type: ConfigType::Long,
        doc: "Force an fsync of the log when unflushed data is this old.",
        field: Field::Int {
            min: 0,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.flush_ms,
            set: |c, v| c.flush_ms = v,
        },
    },
    TopicKey {
        name: "cleanup.policy",
        broker: &[("log.cleanup.policy", 1)],
        config_type: ConfigType::List,
        doc: "What happens to old segments. Only `delete` (retention by time and \
              size) is supported; compaction is not implemented yet.",
        field: Field::OneOf {
            allowed: &["delete"],
            why: "log compaction (`compact`) is not implemented yet",
            get: |c| c.cleanup_policy.clone(),
            set: |c, v| c.cleanup_policy = v.to_string(),
        },
    },
    TopicKey {
        name: "max.message.bytes",
        broker: &[("message.max.bytes", 1)],
        config_type: ConfigType::Int,
        doc: "Largest record batch (as sent, after compression) the broker accepts.",
        field: Field::Int {
            min: 0,
            max: i32::MAX as i64,
            unit: "bytes",
            get: |c| c.max_message_bytes.into(),
            set: |c, v| c.max_message_bytes = v as i32,
        },
    },
    TopicKey {
        name: "min.insync.replicas",
        broker: &[("min.insync.replicas", 1)],
        config_type: ConfigType::Int,
        doc: "Replicas that must have a batch before an acks=all produce succeeds.",
        field: Field::Int {
            min: 1,
            max: i32::MAX as i64,
            unit: "replicas",
            get: |c| c.min_insync_replicas.into(),
            set: |c, v| c.min_insync_replicas = v as i32,
        },
    },
    TopicKey {
        name: "message.timestamp.type",
        broker: &[("log.message.timestamp.type", 1)],
        config_type: ConfigType::String,
        doc: "Whether batches keep the producer's timestamp (CreateTime) or get the \
              broker's append time (LogAppendTime).",
        field: Field::OneOf {
            allowed: &["CreateTime", "LogAppendTime"],
            why: "",
            get: |c| c.message_timestamp_type.as_str().to_string(),
            set: |c, v| {
                c.message_timestamp_type = if v == "LogAppendTime" {
                    TimestampType::LogAppendTime
                } else {
                    TimestampType::CreateTime
                }
            },
        },
    },
    TopicKey {
        name: "unclean.leader.election.enable",
        broker: &[("unclean.leader.election.enable", 1)],
        config_type: ConfigType::Boolean,
        doc: "Whether a replica outside the ISR may become leader, losing data.",
        field: Field::Bool {
            get: |c| c.unclean_leader_election_enable,
            set: |c, v| c.unclean_leader_election_enable = v,
        },
    },
    TopicKey {
        name: "compression.type",
        broker: &[("compression.type", 1)],
        config_type: ConfigType::String,
        doc: "Only `producer`: batches are stored as the producer compressed them.",
        field: Field::OneOf {
            allowed: &["producer"],
            why: "Sluice stores record batches exactly as the producer compressed them \
                  and never re-encodes them",
            get: |c| c.compression_type.clone(),
            set: |c, v| c.compression_type = v.to_string(),
        },
    },
    TopicKey {
        name: "message.timestamp.before.max.ms",
        broker: &[("log.message.timestamp.before.max.ms", 1)],
        config_type: ConfigType::Long,
        doc: "How far a CreateTime timestamp may lie before the broker's clock.",
        field: Field::Int {
            min: 0,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.message_timestamp_before_max_ms,
            set: |c, v| c.message_timestamp_before_max_ms = v,
        },
    },
    TopicKey {
        name: "message.timestamp.after.max.ms",
        broker: &[("log.message.timestamp.after.max.ms", 1)],
        config_type: ConfigType::Long,
        doc: "How far a CreateTime timestamp may lie after the broker's clock.",
        field: Field::Int {
            min: 0,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.message_timestamp_after_max_ms,
            set: |c, v| c.message_timestamp_after_max_ms = v,
        },
    },
    TopicKey {
        name: "delete.retention.ms",
        broker: &[("log.cleaner.delete.retention.ms", 1)],
        config_type: ConfigType::Long,
        doc: "How long tombstones are kept by compaction. Accepted for compatibility; \
              unused until compaction exists.",
        field: Field::Int {
            min: 0,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.delete_retention_ms,
            set: |c, v| c.delete_retention_ms = v,
        },
    },
    TopicKey {
        name: "file.delete.delay.ms",
        broker: &[("log.segment.delete.delay.ms", 1)],
        config_type: ConfigType::Long,
        doc: "How long a segment removed by retention lingers on disk before its \
              files are deleted.",
        field: Field::Int {
            min: 0,
            max: i64::MAX,
            unit: "milliseconds",
            get: |c| c.file_delete_delay_ms,
            set: |c, v| c.file_delete_delay_ms = v,
        },
    },
];

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;

    fn overrides(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn resolve_applies_overrides_over_broker_defaults() {
        let broker = BrokerConfig::from_yaml_str(
            "log.retention.bytes: 5000\nlog.segment.bytes: 2048\n",
            "t",
        )
        .unwrap();
        let topic = TopicConfig::resolve(
            &broker.topic_defaults,
            &overrides(&[
                ("retention.ms", "-1"),
                ("segment.bytes", "4096"),
                ("message.timestamp.type", "LogAppendTime"),
                ("unclean.leader.election.enable", "TRUE"),
            ]),
        )
        .unwrap();
        assert_eq!(topic.retention_ms, -1);
        assert_eq!(topic.segment_bytes, 4096);
        assert_eq!(topic.retention_bytes, 5000, "broker default kept");
        assert_eq!(topic.message_timestamp_type, TimestampType::LogAppendTime);
        assert!(topic.unclean_leader_election_enable);
        assert_eq!(topic.segment_ms, TopicConfig::default().segment_ms);
    }

    #[test]
    fn resolve_rejects_unknown_and_bad_overrides() {
        let defaults = TopicConfig::default();
        let err = TopicConfig::resolve(&defaults, &overrides(&[("retention.msec", "1")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`retention.msec`") && err.contains("`retention.ms`"),
            "{err}"
        );
        let err = TopicConfig::resolve(&defaults, &overrides(&[("segment.ms", "0")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("`segment.ms`") && err.contains("`0`"), "{err}");
    }

    #[test]
    fn validate_topic_override_accepts_good_values() {
        for (name, value) in [
            ("retention.ms", "-1"),
            ("retention.ms", "0"),
            ("retention.bytes", "-1"),
            ("segment.bytes", "14"),
            ("cleanup.policy", "delete"),
            ("compression.type", "producer"),
            ("message.timestamp.type", "CreateTime"),
            ("unclean.leader.election.enable", "false"),
            ("max.message.bytes", " 2000000 "),
            ("file.delete.delay.ms", "0"),
        ] {
            validate_topic_override(name, value).unwrap();
        }
    }

    #[test]
    fn validate_topic_override_rejects_bad_values_naming_key_and_form() {
        let cases = [
            ("retention.ms", "-2", "an integer >= -1"),
            ("retention.ms", "1h", "an integer >= -1"),
            ("segment.bytes", "13", "14 is Kafka's minimum"),
            ("segment.bytes", "4294967296", "from 14 to 2147483647"),
            ("min.insync.replicas", "0", "an integer from 1"),
            ("flush.messages", "0", ">= 1"),
            ("unclean.leader.election.enable", "yes", "`true` or `false`"),
            (
                "message.timestamp.type",
                "createtime",
                "`CreateTime`, `LogAppendTime`",
            ),
            ("compression.type", "gzip", "never re-encodes"),
            ("compression.type", "uncompressed", "never re-encodes"),
            (
                "cleanup.policy",
                "compact",
                "compaction (`compact`) is not implemented",
            ),
        ];
        for (name, value, expected) in cases {
            let err = validate_topic_override(name, value).unwrap_err();
            assert!(matches!(err, ConfigError::InvalidValue { .. }), "{err:?}");
            let msg = err.to_string();
            assert!(msg.contains(&format!("`{name}`")), "{msg}");
            assert!(msg.contains(&format!("`{value}`")), "{msg}");
            assert!(msg.contains(expected), "{msg} should contain {expected}");
        }
    }

    #[test]
    fn validate_topic_override_maps_broker_key_to_topic_key() {
        let err = validate_topic_override("log.retention.ms", "1000").unwrap_err();
        assert!(matches!(err, ConfigError::UnknownTopicConfig { .. }));
        assert_eq!(
            err.to_string(),
            "unknown topic config `log.retention.ms`: did you mean `retention.ms`?"
        );
        let err = validate_topic_override("frobnicate", "1")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("unknown topic config `frobnicate`"),
            "{err}"
        );
    }

    fn entry<'a>(entries: &'a [ConfigEntry], name: &str) -> &'a ConfigEntry {
        entries.iter().find(|e| e.name == name).unwrap()
    }

    #[test]
    fn describe_topic_reports_default_static_and_topic_sources() {
        let broker = BrokerConfig::from_yaml_str(
            "log.retention.hours: 2\nlog.segment.bytes: 2048\n",
            "sluice.yaml",
        )
        .unwrap();
        let entries = describe_topic(&broker, &overrides(&[("segment.bytes", "4096")]));
        assert_eq!(entries.len(), TOPIC_KEYS.len());

        let retention = entry(&entries, "retention.ms");
        assert_eq!(retention.value.as_deref(), Some("7200000"));
        assert_eq!(retention.source, ConfigSource::StaticBrokerConfig);
        assert_eq!(retention.config_type, ConfigType::Long);
        assert!(!retention.read_only);
        assert_eq!(
            retention.synonyms,
            vec![
                (
                    "log.retention.hours".into(),
                    Some("2".into()),
                    ConfigSource::StaticBrokerConfig
                ),
                (
                    "log.retention.ms".into(),
                    Some("604800000".into()),
                    ConfigSource::DefaultConfig
                ),
            ]
        );

        let segment = entry(&entries, "segment.bytes");
        assert_eq!(segment.value.as_deref(), Some("4096"));
        assert_eq!(segment.source, ConfigSource::TopicConfig);
        let sources: Vec<_> = segment
            .synonyms
            .iter()
            .map(|(name, value, source)| (name.as_str(), value.as_deref(), *source))
            .collect();
        assert_eq!(
            sources,
            vec![
                ("segment.bytes", Some("4096"), ConfigSource::TopicConfig),
                (
                    "log.segment.bytes",
                    Some("2048"),
                    ConfigSource::StaticBrokerConfig
                ),
                (
                    "log.segment.bytes",
                    Some("1073741824"),
                    ConfigSource::DefaultConfig
                ),
            ]
        );

        let policy = entry(&entries, "cleanup.policy");
        assert_eq!(policy.value.as_deref(), Some("delete"));
        assert_eq!(policy.source, ConfigSource::DefaultConfig);
        assert_eq!(policy.config_type, ConfigType::List);
        assert_eq!(policy.synonyms.len(), 1);
    }

    #[test]
    fn every_default_passes_its_own_validation() {
        let defaults = TopicConfig::default();
        for key in TOPIC_KEYS {
            let value = key.field.get(&defaults).unwrap();
            validate_topic_override(key.name, &value).unwrap();
        }
    }
}
