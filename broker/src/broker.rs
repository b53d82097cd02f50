//! The state one broker shares between its connections and background tasks.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::cluster::controller::{Controller, ControllerConfig};
use crate::cluster::decide::Settings;
use crate::cluster::image::{BrokerRegistration, MetadataImage};
use crate::cluster::messages::{ControllerError, ControllerRequest, ControllerResponse, NewTopic};
use crate::cluster::quorum::{Quorum, QuorumConfig};
use crate::config::BrokerConfig;
use crate::coordinator::txn::{TxnCoordinator, TxnSettings};
use crate::coordinator::{GroupCoordinator, OFFSETS_TOPIC, TXN_TOPIC};
use crate::flusher::Flusher;
use crate::partition::Partition;
use crate::replication::{fetcher, Replication};
use crate::topics::{self, TopicRegistry};

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
    #[error("cannot start the metadata quorum: {0}")]
    Quorum(String),
}

/// How long a starting broker waits, at least, to be ready (registered,
/// `__consumer_offsets` placed and its groups loaded) before it serves
/// anyway.
pub const READY_TIMEOUT_MS: u64 = 30_000;

/// How long a broker waits for the controller to answer an admin request.
const CONTROLLER_TIMEOUT: Duration = Duration::from_secs(30);

/// One broker: its config, identity, local replicas, the metadata quorum
/// member and controller it runs, and the group coordinator.
pub struct Broker {
    pub config: BrokerConfig,
    /// From `meta.properties`; the cluster's id once the image has one.
    pub cluster_id: String,
    pub advertised_host: String,
    pub advertised_port: u16,
    pub topics: TopicRegistry,
    pub flusher: Flusher,
    /// The classic group coordinator, backed by `__consumer_offsets`.
    pub groups: GroupCoordinator,
    /// The transaction coordinator, backed by `__transaction_state`.
    pub txns: TxnCoordinator,
    pub quorum: Quorum,
    pub controller: Controller,
    pub replication: Replication,
    /// Changes at every start, so the controller tells restarts apart.
    pub incarnation: Uuid,
    registered: watch::Sender<bool>,
    /// The metadata-log index whose image the local replicas reflect.
    reconciled: watch::Sender<u64>,
    shutting_down: AtomicBool,
    cancel: CancellationToken,
    /// The block of producer ids this broker hands out: `(next, end)`.
    producer_ids: tokio::sync::Mutex<(i64, i64)>,
}

impl Broker {
    /// Opens the data dir, starts this node's member of the metadata quorum
    /// (restoring the last metadata image it knew), the controller and the
    /// flusher, and hosts the replicas the image assigns here. Must run
    /// inside a tokio runtime.
    pub async fn start(
        config: BrokerConfig,
        advertised_host: String,
        advertised_port: u16,
        controller_listener: Option<TcpListener>,
    ) -> Result<Arc<Broker>, StartError> {
        let dir = config.data_dir.clone();
        std::fs::create_dir_all(&dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let cluster_id = load_or_create_meta_properties(&dir, config.node_id)?;
        let topics = TopicRegistry::open(&dir, config.topic_defaults.clone())?;
        let flusher = Flusher::start();
        let voters: BTreeMap<i32, String> = if config.voters.is_empty() {
            // A single-node cluster: its own only voter, no network needed.
            [(
                config.node_id,
                config.controller_listen.clone().unwrap_or_default(),
            )]
            .into()
        } else {
            config.voters.clone()
        };
        let controller = Controller::new(ControllerConfig {
            settings: Settings {
                num_partitions: config.num_partitions,
                default_replication_factor: config.default_replication_factor,
                topic_defaults: config.topic_defaults.clone(),
            },
            cluster_id: cluster_id.clone(),
            voters: voters.clone(),
            session_timeout: Duration::from_millis(config.broker_session_timeout_ms),
            rebalance_interval: config.auto_leader_rebalance_enable.then(|| {
                Duration::from_secs(config.leader_imbalance_check_interval_seconds.max(1))
            }),
            offsets_partitions: config.offsets_topic_num_partitions.max(1),
            offsets_replication_factor: config.offsets_topic_replication_factor.max(1),
        });
        // A single voter has nobody to wait for: elect itself at once.
        let election = if voters.len() == 1 {
            100
        } else {
            config.controller_election_timeout_ms.max(100)
        };
        let quorum = Quorum::start(
            QuorumConfig {
                node_id: config.node_id,
                dir: dir.join("__cluster_metadata"),
                voters,
                heartbeat_interval_ms: (election / 5).max(20),
                election_timeout_min_ms: election,
            },
            controller_listener,
            Arc::new(controller.clone()),
        )
        .await
        .map_err(|e| StartError::Quorum(e.to_string()))?;
        controller.attach(quorum.clone());
        let image = quorum.image();
        let offsets_partitions = image
            .topic(OFFSETS_TOPIC)
            .map(|t| i32::try_from(t.partitions.len()).unwrap_or(1))
            .unwrap_or(config.offsets_topic_num_partitions.max(1));
        let groups = GroupCoordinator::new(
            offsets_partitions,
            flusher.clone(),
            config.group_initial_rebalance_delay_ms,
            config.offsets_retention_minutes,
            config.topic_defaults.min_insync_replicas,
            Duration::from_millis(5_000),
        );
        let txn_partitions = image
            .topic(TXN_TOPIC)
            .map(|t| i32::try_from(t.partitions.len()).unwrap_or(1))
            .unwrap_or(config.transaction_state_log_num_partitions.max(1));
        let txns = TxnCoordinator::new(
            TxnSettings {
                num_partitions: txn_partitions,
                max_timeout_ms: config.transaction_max_timeout_ms,
                id_expiration_ms: config.transactional_id_expiration_ms,
                min_insync: config.transaction_state_log_min_isr,
                write_timeout: Duration::from_millis(5_000),
            },
            flusher.clone(),
        );
        let cancel = CancellationToken::new();
        let replication = Replication::new(
            fetcher::Settings {
                node_id: config.node_id,
                wait_max_ms: i32::try_from(config.replica_fetch_wait_max_ms).unwrap_or(500),
                partition_max_bytes: config.replica_fetch_max_bytes,
                response_max_bytes: config.replica_fetch_response_max_bytes,
                flush: config.flush_acks_all,
                request_timeout: Duration::from_secs(10),
            },
            cancel.child_token(),
        );
        let (registered, _) = watch::channel(false);
        let (reconciled, _) = watch::channel(0);
        let broker = Arc::new(Broker {
            config,
            cluster_id,
            advertised_host,
            advertised_port,
            topics,
            flusher,
            groups,
            txns,
            quorum,
            controller,
            replication,
            incarnation: Uuid::new_v4(),
            registered,
            reconciled,
            shutting_down: AtomicBool::new(false),
            cancel,
            producer_ids: tokio::sync::Mutex::new((0, 0)),
        });
        broker.txns.attach(Arc::downgrade(&broker));
        let b = broker.clone();
        let index = image.applied_index;
        let _ =
            tokio::task::spawn_blocking(move || crate::replication::reconcile(&b, &image)).await;
        broker.reconciled.send_replace(index);
        broker.clone().spawn_cluster_tasks();
        Ok(broker)
    }

    pub fn node_id(&self) -> i32 {
        self.config.node_id
    }

    /// The metadata image this broker serves from.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    /// The cluster id clients see.
    pub fn cluster_id(&self) -> String {
        self.image()
            .cluster_id
            .clone()
            .unwrap_or_else(|| self.cluster_id.clone())
    }

    /// Sends a request to the active controller (wherever it runs).
    pub async fn controller_call(&self, req: ControllerRequest) -> ControllerResponse {
        self.quorum.call_controller(req, CONTROLLER_TIMEOUT).await
    }

    /// Waits until this broker has applied metadata-log entry `index` to
    /// its image and its local replicas (so its own answers, and its
    /// replicas' roles, reflect a change the controller made).
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut rx = self.reconciled.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|i| *i >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits until the controller has registered this broker, up to `timeout`.
    pub async fn wait_registered(&self, timeout: Duration) -> bool {
        let mut rx = self.registered.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|r| *r))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Waits (up to `timeout`) until this broker is ready to serve groups
    /// too: registered, `__consumer_offsets` created and applied locally,
    /// and the group partitions it leads loaded. A broker that cannot get
    /// there (no quorum) serves anyway when the time is up.
    pub async fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        if !self.wait_registered(timeout).await {
            return false;
        }
        let mut rx = self.quorum.watch();
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Ok(Ok(image)) =
            tokio::time::timeout(left, rx.wait_for(|img| img.topic(OFFSETS_TOPIC).is_some()))
                .await
                .map(|r| r.map(|img| img.clone()))
        else {
            return false;
        };
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if !self.wait_applied(image.applied_index, left).await {
            return false;
        }
        let me = self.node_id();
        let led: Vec<i32> = image
            .partitions()
            .filter(|(t, _, p)| *t == OFFSETS_TOPIC && p.leader == me)
            .map(|(_, i, _)| i)
            .collect();
        for index in led {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if tokio::time::timeout(left, self.groups.wait_loaded(index))
                .await
                .is_err()
            {
                return false;
            }
        }
        true
    }

    /// A producer id no other producer of the cluster has had: from this
    /// broker's block, asking the controller for a new block when it is used
    /// up (so ids survive restarts and controller failover).
    pub async fn new_producer_id(&self) -> Result<i64, ControllerError> {
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            match self
                .controller_call(ControllerRequest::AllocateProducerIds {
                    broker: self.node_id(),
                })
                .await
            {
                ControllerResponse::ProducerIds { start, len } => *ids = (start, start + len),
                ControllerResponse::Error(e) => return Err(e),
                other => {
                    return Err(ControllerError::Quorum(format!(
                        "unexpected answer to AllocateProducerIds: {other:?}"
                    )))
                }
            }
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }

    /// This broker became leader of `topic`-`index`: the coordinator backed
    /// by that topic (if any) takes its partition over.
    pub fn elect_coordinator(&self, topic: &str, index: i32, p: &Arc<Partition>, epoch: i32) {
        match topic {
            OFFSETS_TOPIC => self.groups.elect(index, p.clone(), epoch),
            TXN_TOPIC => self.txns.elect(index, p.clone(), epoch),
            _ => {}
        }
    }

    /// This broker no longer leads `topic`-`index`.
    pub fn resign_coordinator(&self, topic: &str, index: i32, epoch: i32) {
        match topic {
            OFFSETS_TOPIC => self.groups.resign(index, epoch),
            TXN_TOPIC => self.txns.resign(index, epoch),
            _ => {}
        }
    }

    /// Creates `__transaction_state` if it does not exist yet (Kafka creates
    /// it when the first transactional producer looks for its
    /// coordinator): `transaction.state.log.num.partitions` partitions,
    /// replication factor `transaction.state.log.replication.factor`
    /// capped at the live brokers. Returns once this broker's image has it,
    /// or after a few seconds (the caller answers "not available, retry").
    pub async fn ensure_txn_topic(&self) {
        let image = self.image();
        if image.topic(TXN_TOPIC).is_some() {
            return;
        }
        let live = image.usable_brokers().len().max(1);
        let rf = usize::try_from(self.config.transaction_state_log_replication_factor)
            .unwrap_or(1)
            .clamp(1, live);
        let min_isr = usize::try_from(self.config.transaction_state_log_min_isr)
            .unwrap_or(1)
            .clamp(1, rf);
        let topic = NewTopic {
            name: TXN_TOPIC.to_string(),
            partitions: self.config.transaction_state_log_num_partitions.max(1),
            replication_factor: i16::try_from(rf).unwrap_or(1),
            assignments: None,
            configs: [
                ("retention.ms".to_string(), "-1".to_string()),
                ("min.insync.replicas".to_string(), min_isr.to_string()),
            ]
            .into(),
        };
        let resp = self
            .quorum
            .call_controller(
                ControllerRequest::CreateTopics {
                    topics: vec![topic],
                    validate_only: false,
                },
                Duration::from_secs(5),
            )
            .await;
        if let ControllerResponse::Outcomes { applied_index, .. } = resp {
            self.wait_applied(applied_index, Duration::from_secs(5))
                .await;
        }
    }

    /// Creates topics with the broker defaults (auto-creation); topics that
    /// exist meanwhile are fine. Returns once this broker's image has them.
    pub async fn auto_create(&self, names: Vec<String>) {
        if names.is_empty() || !self.config.auto_create_topics_enable {
            return;
        }
        let topics = names
            .into_iter()
            .map(|name| NewTopic {
                name,
                partitions: -1,
                replication_factor: -1,
                assignments: None,
                configs: BTreeMap::new(),
            })
            .collect();
        // Short: a Metadata request waits on this, and clients give up on
        // requests long before CONTROLLER_TIMEOUT.
        let resp = self
            .quorum
            .call_controller(
                ControllerRequest::CreateTopics {
                    topics,
                    validate_only: false,
                },
                Duration::from_secs(5),
            )
            .await;
        if let ControllerResponse::Outcomes { applied_index, .. } = resp {
            self.wait_applied(applied_index, Duration::from_secs(5))
                .await;
        }
    }

    fn spawn_cluster_tasks(self: Arc<Self>) {
        let cancel = self.cancel.clone();
        tokio::spawn(self.controller.clone().run(cancel.clone()));
        tokio::spawn(self.clone().follow_metadata(cancel.clone()));
        tokio::spawn(self.clone().membership(cancel.clone()));
        tokio::spawn(Replication::run_isr(self.clone(), cancel));
    }

    /// Applies every new metadata image to the local replicas.
    async fn follow_metadata(self: Arc<Self>, cancel: CancellationToken) {
        let mut rx = self.quorum.watch();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = rx.changed() => if changed.is_err() { return },
            }
            let image = rx.borrow_and_update().clone();
            let index = image.applied_index;
            let b = self.clone();
            if tokio::task::spawn_blocking(move || crate::replication::reconcile(&b, &image))
                .await
                .is_err()
            {
                tracing::error!("applying the metadata image failed");
            }
            self.reconciled.send_replace(index);
        }
    }

    fn registration(&self) -> BrokerRegistration {
        BrokerRegistration {
            id: self.node_id(),
            host: self.advertised_host.clone(),
            port: self.advertised_port,
            rack: self.config.rack.clone(),
            controller_addr: self.config.controller_listen.clone(),
            incarnation: self.incarnation,
            fenced: false,
            in_controlled_shutdown: false,
        }
    }

    /// Registers with the controller, then heartbeats; registers again when
    /// the controller fenced this incarnation.
    async fn membership(self: Arc<Self>, cancel: CancellationToken) {
        let every = Duration::from_millis(self.config.broker_heartbeat_interval_ms.max(10));
        let mut registered = false;
        loop {
            if self.shutting_down.load(Ordering::Acquire) {
                // Controlled shutdown heartbeats from now on.
                return;
            }
            let timeout = every.max(Duration::from_millis(500));
            if !registered {
                let resp = self
                    .quorum
                    .call_controller(ControllerRequest::Register(self.registration()), timeout)
                    .await;
                match resp {
                    ControllerResponse::Registered => {
                        registered = true;
                        // Ready once the local replicas reflect the
                        // registration (leadership is only taken then).
                        let me = self.node_id();
                        let mut rx = self.quorum.watch();
                        let seen = tokio::time::timeout(
                            Duration::from_secs(5),
                            rx.wait_for(|img| {
                                img.brokers
                                    .get(&me)
                                    .is_some_and(|b| b.incarnation == self.incarnation)
                            }),
                        )
                        .await
                        .ok()
                        .and_then(|r| r.ok().map(|img| img.applied_index));
                        if let Some(index) = seen {
                            if self.wait_applied(index, Duration::from_secs(5)).await {
                                let b = self.clone();
                                let _ = tokio::task::spawn_blocking(move || {
                                    let image = b.image();
                                    b.topics.remove_unhosted_dirs(|t, i| {
                                        image
                                            .partition(t, i)
                                            .is_some_and(|p| p.replicas.contains(&me))
                                    })
                                })
                                .await;
                            }
                        }
                        self.registered.send_replace(true);
                        tracing::info!(node = self.node_id(), "registered with the controller");
                    }
                    other => tracing::debug!(answer = ?other, "registration not accepted yet"),
                }
            } else {
                let resp = self
                    .quorum
                    .call_controller(
                        ControllerRequest::Heartbeat {
                            id: self.node_id(),
                            incarnation: self.incarnation,
                            want_shutdown: false,
                        },
                        timeout,
                    )
                    .await;
                if let ControllerResponse::Heartbeat { fenced: true, .. } = resp {
                    tracing::warn!("the controller fenced this broker; registering again");
                    registered = false;
                }
            }
            let pause = if registered {
                every
            } else {
                every.min(Duration::from_millis(200))
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Controlled shutdown: asks the controller to move leadership away from
    /// this broker and take it out of the ISRs, and waits (up to
    /// `controlled.shutdown.timeout.ms`) until it has.
    pub async fn controlled_shutdown(&self) {
        self.shutting_down.store(true, Ordering::Release);
        if !self.config.controlled_shutdown_enable || !*self.registered.borrow() {
            return;
        }
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(self.config.controlled_shutdown_timeout_ms);
        tracing::info!("controlled shutdown: handing off leadership");
        while tokio::time::Instant::now() < deadline {
            let resp = self
                .quorum
                .call_controller(
                    ControllerRequest::Heartbeat {
                        id: self.node_id(),
                        incarnation: self.incarnation,
                        want_shutdown: true,
                    },
                    Duration::from_secs(2),
                )
                .await;
            if let ControllerResponse::Heartbeat {
                shutdown_ready: true,
                ..
            } = resp
            {
                // Wait until our own image shows it, so in-flight produces
                // are answered NOT_LEADER_OR_FOLLOWER rather than cut off.
                let me = self.node_id();
                let mut rx = self.quorum.watch();
                let _ = tokio::time::timeout(
                    Duration::from_secs(2),
                    rx.wait_for(|img| crate::cluster::decide::movable_leaderships(img, me) == 0),
                )
                .await;
                tracing::info!("controlled shutdown: leadership handed off");
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tracing::warn!("controlled shutdown did not finish within controlled.shutdown.timeout.ms; stopping anyway");
    }

    /// Stops the cluster tasks, fetchers and the quorum member.
    pub async fn stop_cluster(&self) {
        self.cancel.cancel();
        self.replication.stop_fetchers();
        self.quorum.shutdown().await;
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
        let mut txn_cleanup = tokio::time::interval(Duration::from_millis(
            u64::try_from(self.config.transaction_abort_timed_out_cleanup_interval_ms)
                .unwrap_or(10_000)
                .max(1),
        ));
        for t in [
            &mut retention,
            &mut checkpoint,
            &mut flush_tick,
            &mut txn_cleanup,
        ] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = txn_cleanup.tick() => self.txns.abort_timed_out(),
                _ = retention.tick() => {
                    self.groups.expire_offsets(now_ms());
                    let expiration = self.config.producer_id_expiration_ms;
                    for p in self.topics.all_partitions() {
                        let gone = p.with_log(|log| log.expire_producers(now_ms(), expiration));
                        if gone > 0 {
                            tracing::debug!(partition = %p.dir().display(), producers = gone, "expired idle producer ids");
                        }
                    }
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
                if let Err(e) = p.with_log(|log| {
                    log.checkpoint()?;
                    log.take_producer_snapshot()
                }) {
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
