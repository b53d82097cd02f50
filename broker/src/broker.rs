//! The state one broker shares between its connections and background tasks.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::BrokerConfig;
use crate::coordinator::{GroupCoordinator, OFFSETS_TOPIC};
use crate::flusher::Flusher;
use crate::topics::{self, Topic, TopicRegistry};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot use data dir {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    MetaProperties(String),
    #[error(transparent)]
    Topics(#[from] topics::Error),
}

/// One broker: its config, identity, topics and group-commit flusher.
pub struct Broker {
    pub config: BrokerConfig,
    pub cluster_id: String,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub topics: TopicRegistry,
    pub flusher: Flusher,
    /// The classic group coordinator, backed by `__consumer_offsets`.
    pub groups: GroupCoordinator,
}

impl Broker {
    /// Opens the data dir (recovering every partition) and starts the flusher.
    /// Must run inside a tokio runtime.
    pub fn open(
        config: BrokerConfig,
        advertised_host: String,
        advertised_port: u16,
    ) -> Result<Arc<Broker>, StartError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let cluster_id = load_or_create_meta_properties(&dir, config.node_id)?;
        let topics = TopicRegistry::open(&dir, config.topic_defaults.clone())?;
        let flusher = Flusher::start();
        let offsets_topic = match topics.get(OFFSETS_TOPIC) {
            Some(t) => t,
            None => topics.create(
                OFFSETS_TOPIC,
                config.offsets_topic_num_partitions.max(1),
                [("retention.ms".to_string(), "-1".to_string())].into(),
            )?,
        };
        let groups = GroupCoordinator::open(
            offsets_topic.partitions(),
            flusher.clone(),
            config.group_initial_rebalance_delay_ms,
            config.offsets_retention_minutes,
        );
        Ok(Arc::new(Broker {
            config,
            cluster_id,
            advertised_host,
            advertised_port,
            topics,
            flusher,
            groups,
        }))
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// Looks a topic up, creating it with broker defaults when
    /// `auto.create.topics.enable` is on and the caller allows it.
    pub fn topic(
        &self,
        name: &str,
        auto_create: bool,
    ) -> Result<Option<Arc<Topic>>, topics::Error> {
        if let Some(t) = self.topics.get(name) {
            return Ok(Some(t));
        }
        if !(auto_create && self.config.auto_create_topics_enable) {
            return Ok(None);
        }
        match self
            .topics
            .create(name, self.config.num_partitions, Default::default())
        {
            Ok(t) => Ok(Some(t)),
            // Another connection created it meanwhile.
            Err(topics::Error::AlreadyExists(_)) => Ok(self.topics.get(name)),
            Err(e) => Err(e),
        }
    }

    /// Background work: retention and segment roll by time, recovery-point
    /// checkpoints, and `flush.ms`. Returns when `cancel` fires.
    pub async fn run_background(self: Arc<Self>, cancel: CancellationToken) {
        let retention_every =
            Duration::from_millis(self.config.log_retention_check_interval_ms.max(1));
        let checkpoint_every =
            Duration::from_millis(self.config.offset_checkpoint_interval_ms.max(1));
        let mut retention = tokio::time::interval(retention_every);
        let mut checkpoint = tokio::time::interval(checkpoint_every);
        let mut flush_tick = tokio::time::interval(Duration::from_millis(100));
        for t in [&mut retention, &mut checkpoint, &mut flush_tick] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = retention.tick() => {
                    self.groups.expire_offsets(now_ms());
                    let b = self.clone();
                    let _ = tokio::task::spawn_blocking(move || b.apply_retention()).await;
                }
                _ = checkpoint.tick() => {
                    let b = self.clone();
                    let _ = tokio::task::spawn_blocking(move || b.checkpoint_all()).await;
                }
                _ = flush_tick.tick() => self.flush_by_time(),
            }
        }
    }

    fn apply_retention(&self) {
        let now = now_ms();
        for topic in self.topics.all() {
            for p in topic.partitions() {
                match p.with_log(|log| log.retain(now)) {
                    Ok(report) => {
                        if report.deleted_segments > 0 {
                            tracing::info!(partition = %p.dir().display(), segments = report.deleted_segments, bytes = report.deleted_bytes, "retention deleted segments");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(partition = %p.dir().display(), error = %e, "retention failed")
                    }
                }
            }
        }
    }

    fn checkpoint_all(&self) {
        for topic in self.topics.all() {
            for p in topic.partitions() {
                if let Err(e) = p.with_log(|log| log.checkpoint()) {
                    tracing::warn!(partition = %p.dir().display(), error = %e, "recovery checkpoint failed");
                }
            }
        }
    }

    fn flush_by_time(&self) {
        let now = now_ms();
        for topic in self.topics.all() {
            let flush_ms = topic.config().flush_ms;
            if flush_ms == i64::MAX {
                continue;
            }
            for p in topic.partitions() {
                let due = p.with_log(|log| {
                    log.unflushed_messages() > 0
                        && now.saturating_sub(log.last_flush_ms()) >= flush_ms
                });
                if due {
                    self.flusher.flush_in_background(p);
                }
            }
        }
    }

    /// Flushes and closes every log (clean shutdown).
    pub fn close(&self) {
        for topic in self.topics.drain() {
            for p in topic.partitions() {
                let dir = p.dir().to_path_buf();
                if let Err(e) = p.close() {
                    tracing::error!(partition = %dir.display(), error = %e, "closing log failed");
                }
            }
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Kafka-style `meta.properties`: the cluster id, fixed at first start, and
/// the node id, which must not change under an existing data dir.
fn load_or_create_meta_properties(dir: &Path, node_id: i32) -> Result<String, StartError> {
    let path = dir.join("meta.properties");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let get = |key: &str| {
                text.lines()
                    .filter_map(|l| l.split_once('='))
                    .find(|(k, _)| k.trim() == key)
                    .map(|(_, v)| v.trim().to_string())
            };
            let cluster_id = get("cluster.id").ok_or_else(|| {
                StartError::MetaProperties(format!("{} has no cluster.id", path.display()))
            })?;
            if let Some(stored) = get("node.id") {
                if stored != node_id.to_string() {
                    return Err(StartError::MetaProperties(format!(
                        "data dir {} belongs to node {stored}, but this broker is node {node_id}: start with --node-id {stored} or use another --data-dir",
                        dir.display()
                    )));
                }
            }
            Ok(cluster_id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cluster_id = new_cluster_id();
            let text = format!("version=1\ncluster.id={cluster_id}\nnode.id={node_id}\n");
            topics::write_atomically(&path, text.as_bytes())
                .map_err(|source| StartError::DataDir { path, source })?;
            Ok(cluster_id)
        }
        Err(source) => Err(StartError::DataDir { path, source }),
    }
}

/// A cluster id shaped like Kafka's: a random UUID in URL-safe base64.
fn new_cluster_id() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    let mut bits: u128 = u128::from_be_bytes(bytes);
    let mut out = String::with_capacity(22);
    for _ in 0..22 {
        out.push(ALPHABET[(bits >> 122) as usize & 63] as char);
        bits <<= 6;
    }
    out
}
