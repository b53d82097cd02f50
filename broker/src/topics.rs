//! The replicas this broker hosts, by topic. Which topics exist, their
//! partitions and configs are the metadata image's (see `crate::cluster`);
//! this registry holds the local replicas the image assigns here.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;

use crate::commitlog;
use crate::config::{ConfigError, TopicConfig};
use crate::partition::Partition;

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

/// A topic with at least one replica on this broker.
pub struct Topic {
    pub name: Arc<str>,
    pub id: Uuid,
    /// The replicas hosted here, by partition index.
    partitions: RwLock<BTreeMap<i32, Arc<Partition>>>,
    overrides: RwLock<BTreeMap<String, String>>,
    config: RwLock<TopicConfig>,
}

impl Topic {
    /// The local replica of partition `index`, if this broker hosts one.
    pub fn partition(&self, index: i32) -> Option<Arc<Partition>> {
        self.partitions.read().get(&index).cloned()
    }

    /// Every local replica, by index.
    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
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
}

/// The replicas this broker hosts, grouped by topic. What it hosts is
/// decided by the metadata image (see `crate::replication::reconcile`);
/// this registry only opens, finds and removes them.
pub struct TopicRegistry {
    data_dir: PathBuf,
    defaults: TopicConfig,
    topics: RwLock<HashMap<Arc<str>, Arc<Topic>>>,
    /// Serialises opening and removing replicas.
    admin: Mutex<()>,
}

/// The file in a partition directory naming the topic id it belongs to, so
/// a directory left from a deleted topic is never mistaken for a new topic
/// of the same name (Kafka's `partition.metadata`).
const PARTITION_METADATA: &str = "partition.metadata";

impl TopicRegistry {
    /// An empty registry over `data_dir`; leftovers of interrupted deletes
    /// are removed.
    pub fn open(data_dir: &Path, defaults: TopicConfig) -> Result<TopicRegistry, Error> {
        std::fs::create_dir_all(data_dir).map_err(|source| Error::Io {
            path: data_dir.to_path_buf(),
            source,
        })?;
        remove_deleted_dirs(data_dir);
        Ok(TopicRegistry {
            data_dir: data_dir.to_path_buf(),
            defaults,
            topics: RwLock::new(HashMap::new()),
            admin: Mutex::new(()),
        })
    }

    pub fn defaults(&self) -> &TopicConfig {
        &self.defaults
    }

    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// The local replica of `topic`-`index`.
    pub fn partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        self.get(topic).and_then(|t| t.partition(index))
    }

    /// All topics, sorted by name.
    pub fn all(&self) -> Vec<Arc<Topic>> {
        let mut all: Vec<_> = self.topics.read().values().cloned().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Every local replica.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.all().iter().flat_map(|t| t.partitions()).collect()
    }

    /// Makes sure the topic exists locally with this id and config; a local
    /// topic of the same name but another id (deleted and re-created while
    /// this broker was away) is removed with its data first.
    pub fn ensure_topic(
        &self,
        name: &str,
        id: Uuid,
        overrides: &BTreeMap<String, String>,
    ) -> Result<Arc<Topic>, Error> {
        let _admin = self.admin.lock();
        if let Some(t) = self.get(name) {
            if t.id == id {
                if *t.overrides.read() != *overrides {
                    let config = TopicConfig::resolve(&self.defaults, overrides)?;
                    let log_config = config.log_config();
                    *t.overrides.write() = overrides.clone();
                    *t.config.write() = config;
                    for p in t.partitions() {
                        p.with_log(|log| log.set_config(log_config.clone()));
                    }
                }
                return Ok(t);
            }
            self.remove_topic_locked(name);
        }
        let config = TopicConfig::resolve(&self.defaults, overrides)?;
        let topic = Arc::new(Topic {
            name: Arc::from(name),
            id,
            partitions: RwLock::new(BTreeMap::new()),
            overrides: RwLock::new(overrides.clone()),
            config: RwLock::new(config),
        });
        self.topics
            .write()
            .insert(topic.name.clone(), topic.clone());
        Ok(topic)
    }

    /// Opens (recovering, or creating empty) the local replica of
    /// `topic`-`index`. A directory that belongs to another topic id is
    /// discarded.
    pub fn ensure_partition(
        &self,
        topic: &Arc<Topic>,
        index: i32,
    ) -> Result<Arc<Partition>, Error> {
        let _admin = self.admin.lock();
        if let Some(p) = topic.partition(index) {
            return Ok(p);
        }
        let dir = self.data_dir.join(format!("{}-{index}", topic.name));
        let marker = dir.join(PARTITION_METADATA);
        let expected = format!("version: 0\ntopic_id: {}\n", topic.id);
        match std::fs::read_to_string(&marker) {
            Ok(text) if text == expected => {}
            Ok(_) => {
                tracing::warn!(dir = %dir.display(), "partition directory belongs to an earlier topic of the same name; discarding it");
                discard_dir(&dir);
            }
            Err(_) if dir.exists() => {
                // Written before topic ids were recorded: adopt it.
            }
            Err(_) => {}
        }
        let p = Arc::new(Partition::open(
            &self.data_dir,
            topic.name.clone(),
            index,
            topic.config().log_config(),
        )?);
        if std::fs::read_to_string(&marker).ok().as_deref() != Some(expected.as_str()) {
            write_atomically(&marker, expected.as_bytes()).map_err(|source| Error::Io {
                path: marker.clone(),
                source,
            })?;
        }
        topic.partitions.write().insert(index, p.clone());
        Ok(p)
    }

    /// Removes the local replica of `topic`-`index` and its data.
    pub fn remove_partition(&self, topic: &str, index: i32) {
        let _admin = self.admin.lock();
        let Some(t) = self.get(topic) else { return };
        let removed = t.partitions.write().remove(&index);
        if let Some(p) = removed {
            if let Err(e) = p.delete() {
                tracing::warn!(dir = %p.dir().display(), error = %e, "could not remove partition directory; it will be removed at next start");
            }
        }
        if t.partitions.read().is_empty() {
            self.topics.write().remove(topic);
        }
    }

    /// Removes a topic and the data of its local replicas.
    pub fn remove_topic(&self, name: &str) {
        let _admin = self.admin.lock();
        self.remove_topic_locked(name);
    }

    fn remove_topic_locked(&self, name: &str) {
        let Some(topic) = self.topics.write().remove(name) else {
            return;
        };
        for p in topic.partitions() {
            if let Err(e) = p.delete() {
                tracing::warn!(dir = %p.dir().display(), error = %e, "could not remove partition directory; it will be removed at next start");
            }
        }
        tracing::info!(topic = name, "removed local replicas of deleted topic");
    }

    /// Removes partition directories this broker no longer hosts: replicas
    /// of topics deleted, or moved to other brokers, while it was down. Only
    /// directories carrying a `partition.metadata` file are touched, so a
    /// data dir pointed at the wrong place loses nothing. Call once the
    /// registry reflects a current metadata image.
    /// `assigned` says whether the current image still assigns a replica
    /// here (kept even if it failed to open).
    pub fn remove_unhosted_dirs(&self, assigned: impl Fn(&str, i32) -> bool) {
        let _admin = self.admin.lock();
        let Ok(entries) = std::fs::read_dir(&self.data_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            let Some((topic, index)) = name.rsplit_once('-') else {
                continue;
            };
            let Ok(index) = index.parse::<i32>() else {
                continue;
            };
            if !path.join(PARTITION_METADATA).is_file() {
                continue;
            }
            let hosted = self
                .get(topic)
                .is_some_and(|t| t.partition(index).is_some());
            if !hosted && !assigned(topic, index) {
                tracing::info!(dir = %path.display(), "removing a replica this broker no longer hosts");
                discard_dir(&path);
            }
        }
    }

    /// Takes every topic out of the registry (shutdown).
    pub fn drain(&self) -> Vec<Arc<Topic>> {
        self.topics.write().drain().map(|(_, t)| t).collect()
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

/// Removes directories renamed aside by an interrupted delete.
fn remove_deleted_dirs(data_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if entry.path().is_dir() && name.ends_with("-delete") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Renames a directory aside and removes it.
fn discard_dir(dir: &Path) {
    let aside = dir.with_file_name(format!(
        "{}.{}-delete",
        dir.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        Uuid::new_v4().simple()
    ));
    if std::fs::rename(dir, &aside).is_ok() {
        let _ = std::fs::remove_dir_all(&aside);
    }
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
