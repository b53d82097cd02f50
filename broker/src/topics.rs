//! The topic registry: which topics exist, their ids, partition counts and
//! config overrides, persisted under `<data-dir>/.topics/<name>.yaml`.
//!
//! Order of operations keeps a crash harmless: a topic's partition
//! directories are created before its metadata file is written, and the
//! metadata file is removed before its directories are. At start-up,
//! partition directories that belong to no metadata file are leftovers of a
//! crash and are removed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::commitlog;
use crate::config::{ConfigError, TopicConfig};
use crate::partition::Partition;

const META_DIR: &str = ".topics";

/// Longest topic name Kafka accepts.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("topic '{0}' already exists")]
    AlreadyExists(String),
    #[error("topic '{name}' collides with existing topic '{existing}': '.' and '_' are interchangeable in metric names, use one or the other")]
    Collides { name: String, existing: String },
    #[error("unknown topic '{0}'")]
    UnknownTopic(String),
    #[error("invalid topic name '{name}': {reason}")]
    InvalidName { name: String, reason: String },
    #[error("invalid partition count {count}: {reason}")]
    InvalidPartitions { count: i32, reason: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("log error: {0}")]
    Log(#[from] commitlog::Error),
    #[error("cannot write topic metadata {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("topic metadata file {path} is unreadable: {reason}")]
    BadMetadata { path: PathBuf, reason: String },
}

/// Checks a topic name the way Kafka does.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason: reason.to_string(),
        })
    };
    if name.is_empty() {
        return bad("topic name is empty");
    }
    if name == "." || name == ".." {
        return bad("topic name cannot be '.' or '..'");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return bad(&format!(
            "topic name is {} characters long, the maximum is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(&format!(
            "character {c:?} is not allowed; use ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn collision_key(name: &str) -> String {
    name.replace('.', "_")
}

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    name: String,
    id: String,
    partitions: i32,
    #[serde(default)]
    configs: BTreeMap<String, String>,
}

/// A topic hosted by this broker.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    partitions: RwLock<Vec<Arc<Partition>>>,
    overrides: RwLock<BTreeMap<String, String>>,
    config: RwLock<TopicConfig>,
}

impl Topic {
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(index).ok()?;
        self.partitions.read().get(index).cloned()
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
    }

    pub fn partition_count(&self) -> i32 {
        i32::try_from(self.partitions.read().len()).unwrap_or(i32::MAX)
    }

    pub fn overrides(&self) -> BTreeMap<String, String> {
        self.overrides.read().clone()
    }

    pub fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    pub fn is_internal(&self) -> bool {
        self.name.starts_with("__")
    }

    fn meta(&self) -> TopicMeta {
        TopicMeta {
            name: self.name.to_string(),
            id: self.id.to_string(),
            partitions: self.partition_count(),
            configs: self.overrides(),
        }
    }
}

/// Every topic of this broker.
pub struct TopicRegistry {
    data_dir: PathBuf,
    defaults: TopicConfig,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Serialises create/delete/alter so metadata files and the map agree.
    admin: Mutex<()>,
}

impl TopicRegistry {
    /// Loads every topic's metadata and opens (recovering) its partitions.
    pub fn open(data_dir: &Path, defaults: TopicConfig) -> Result<TopicRegistry, Error> {
        let meta_dir = data_dir.join(META_DIR);
        std::fs::create_dir_all(&meta_dir).map_err(|source| Error::Io {
            path: meta_dir.clone(),
            source,
        })?;
        let mut topics = HashMap::new();
        let entries = std::fs::read_dir(&meta_dir).map_err(|source| Error::Io {
            path: meta_dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
                // Temp files of an interrupted metadata write.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
            let meta: TopicMeta = serde_yaml::from_str(&text).map_err(|e| Error::BadMetadata {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let id = Uuid::parse_str(&meta.id).map_err(|e| Error::BadMetadata {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let config = TopicConfig::resolve(&defaults, &meta.configs)?;
            let name: Arc<str> = Arc::from(meta.name.as_str());
            let mut partitions = Vec::new();
            for p in 0..meta.partitions {
                partitions.push(Arc::new(Partition::open(
                    data_dir,
                    name.clone(),
                    p,
                    config.log_config(),
                )?));
            }
            topics.insert(
                name.clone(),
                Arc::new(Topic {
                    name,
                    id,
                    partitions: RwLock::new(partitions),
                    overrides: RwLock::new(meta.configs),
                    config: RwLock::new(config),
                }),
            );
        }
        remove_orphan_partition_dirs(data_dir, &topics);
        Ok(TopicRegistry {
            data_dir: data_dir.to_path_buf(),
            defaults,
            topics: RwLock::new(topics),
            admin: Mutex::new(()),
        })
    }

    pub fn defaults(&self) -> &TopicConfig {
        &self.defaults
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    fn require(&self, name: &str) -> Result<Arc<Topic>, Error> {
        self.get(name)
            .ok_or_else(|| Error::UnknownTopic(name.to_string()))
    }

    pub fn get_by_id(&self, id: Uuid) -> Option<Arc<Topic>> {
        self.topics.read().values().find(|t| t.id == id).cloned()
    }

    /// All topics, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Checks a creation without performing it (CreateTopics validate_only).
    pub fn validate_create(
        &self,
        name: &str,
        partitions: i32,
        configs: &BTreeMap<String, String>,
    ) -> Result<TopicConfig, Error> {
        validate_name(name)?;
        if partitions < 1 {
            return Err(Error::InvalidPartitions {
                count: partitions,
                reason: "a topic needs at least one partition".into(),
            });
        }
        let topics = self.topics.read();
        if topics.contains_key(name) {
            return Err(Error::AlreadyExists(name.to_string()));
        }
        let key = collision_key(name);
        if let Some(existing) = topics.keys().find(|t| collision_key(t) == key) {
            return Err(Error::Collides {
                name: name.to_string(),
                existing: existing.to_string(),
            });
        }
        for (k, v) in configs {
            crate::config::validate_topic_override(k, v)?;
        }
        Ok(TopicConfig::resolve(&self.defaults, configs)?)
    }

    /// Creates a topic with its partitions and persists it.
    pub fn create(
        &self,
        name: &str,
        partitions: i32,
        configs: BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, Error> {
        let _admin = self.admin.lock();
        let config = self.validate_create(name, partitions, &configs)?;
        let name: Arc<str> = Arc::from(name);
        let mut parts = Vec::new();
        for p in 0..partitions {
            parts.push(Arc::new(Partition::open(
                &self.data_dir,
                name.clone(),
                p,
                config.log_config(),
            )?));
        }
        let topic = Arc::new(Topic {
            name: name.clone(),
            id: Uuid::new_v4(),
            partitions: RwLock::new(parts),
            overrides: RwLock::new(configs),
            config: RwLock::new(config),
        });
        self.persist(&topic)?;
        self.topics.write().insert(name, topic.clone());
        tracing::info!(topic = %topic.name, partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete(&self, name: &str) -> Result<(), Error> {
        let _admin = self.admin.lock();
        let topic = self.require(name)?;
        let path = self.meta_path(name);
        std::fs::remove_file(&path).map_err(|source| Error::Io { path, source })?;
        sync_dir(&self.data_dir.join(META_DIR));
        self.topics.write().remove(name);
        for p in topic.partitions() {
            if let Err(e) = p.delete() {
                tracing::warn!(dir = %p.dir().display(), error = %e, "could not remove partition directory; it will be removed at next start");
            }
        }
        tracing::info!(topic = name, "deleted topic");
        Ok(())
    }

    /// Grows a topic to `count` partitions.
    pub fn create_partitions(
        &self,
        name: &str,
        count: i32,
        validate_only: bool,
    ) -> Result<(), Error> {
        let _admin = self.admin.lock();
        let topic = self.require(name)?;
        let current = topic.partition_count();
        if count <= current {
            return Err(Error::InvalidPartitions {
                count,
                reason: format!(
                    "partitions can only grow: topic {name} has {current}, the request asks for {count}"
                ),
            });
        }
        if validate_only {
            return Ok(());
        }
        let config = topic.config();
        let mut added = Vec::new();
        for p in current..count {
            added.push(Arc::new(Partition::open(
                &self.data_dir,
                topic.name.clone(),
                p,
                config.log_config(),
            )?));
        }
        topic.partitions.write().extend(added);
        self.persist(&topic)?;
        tracing::info!(topic = name, from = current, to = count, "added partitions");
        Ok(())
    }

    /// Replaces a topic's config overrides (validated first).
    pub fn set_overrides(
        &self,
        name: &str,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<(), Error> {
        let _admin = self.admin.lock();
        let topic = self.require(name)?;
        for (k, v) in &overrides {
            crate::config::validate_topic_override(k, v)?;
        }
        let config = TopicConfig::resolve(&self.defaults, &overrides)?;
        if validate_only {
            return Ok(());
        }
        *topic.overrides.write() = overrides;
        let log_config = config.log_config();
        *topic.config.write() = config;
        for p in topic.partitions() {
            p.with_log(|log| log.set_config(log_config.clone()));
        }
        self.persist(&topic)?;
        Ok(())
    }

    /// Takes every topic out of the registry (shutdown).
    pub fn drain(&self) -> Vec<Arc<Topic>> {
        self.topics.write().drain().map(|(_, t)| t).collect()
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.data_dir.join(META_DIR).join(format!("{name}.yaml"))
    }

    fn persist(&self, topic: &Topic) -> Result<(), Error> {
        let path = self.meta_path(&topic.name);
        let text = serde_yaml::to_string(&topic.meta()).map_err(|e| Error::BadMetadata {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        write_atomically(&path, text.as_bytes()).map_err(|source| Error::Io { path, source })
    }
}

/// Writes `path` via a temp file, fsync and rename, then fsyncs the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir);
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Removes partition directories that no topic owns: leftovers of a crash
/// during create or delete.
fn remove_orphan_partition_dirs(data_dir: &Path, topics: &HashMap<Arc<str>, Arc<Topic>>) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !entry.path().is_dir() || name.starts_with('.') {
            continue;
        }
        if name.ends_with("-delete") {
            let _ = std::fs::remove_dir_all(entry.path());
            continue;
        }
        // Only directories shaped like a partition's are ever touched, so a
        // data dir pointed at the wrong place loses nothing.
        let Some((topic, p)) = name.rsplit_once('-') else {
            continue;
        };
        let Ok(p) = p.parse::<i32>() else {
            continue;
        };
        if validate_name(topic).is_err() || !looks_like_partition_dir(&entry.path()) {
            continue;
        }
        let owned = topics.get(topic).is_some_and(|t| p < t.partition_count());
        if !owned {
            tracing::warn!(dir = %entry.path().display(), "removing partition directory that belongs to no topic (left by an interrupted create or delete)");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn looks_like_partition_dir(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().all(|e| {
        let n = e.file_name();
        let n = n.to_string_lossy();
        n.ends_with(".log")
            || n.ends_with(".index")
            || n.ends_with(".timeindex")
            || n.ends_with(".deleted")
            || n.contains("checkpoint")
            || n.starts_with("recovery-point")
            || n.starts_with("log-start-offset")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_are_validated_like_kafka() {
        assert!(validate_name("orders").is_ok());
        assert!(validate_name("a.b_c-D9").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name(".").is_err());
        assert!(validate_name("..").is_err());
        assert!(validate_name("has space").is_err());
        assert!(validate_name("slash/no").is_err());
        assert!(validate_name(&"x".repeat(249)).is_ok());
        assert!(validate_name(&"x".repeat(250)).is_err());
    }
}
