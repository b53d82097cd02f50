//! The active controller: the metadata quorum's leader. It serialises every
//! request, decides with the functions of [`super::decide`] on a current
//! image, and writes the outcome to the metadata log. It also watches broker
//! liveness (heartbeats), creates `__consumer_offsets` once enough brokers
//! are up, finishes reassignments and moves leadership back to preferred
//! replicas.
//!
//! Heartbeat times live only in the active controller's memory: a new
//! controller gives every broker a full session before fencing it.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::decide::{self, Settings};
use super::image::{MetadataImage, MetadataRecord};
use super::messages::{ControllerError, ControllerRequest, ControllerResponse, NewTopic};
use super::quorum::{ControllerService, Quorum};
use crate::coordinator::OFFSETS_TOPIC;

/// Producer ids handed to a broker at a time (Kafka's block size).
pub const PRODUCER_ID_BLOCK: i64 = 1000;

/// What the controller needs besides the decision settings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub settings: Settings,
    pub cluster_id: String,
    pub voters: BTreeMap<i32, String>,
    pub session_timeout: Duration,
    /// `None`: automatic preferred-leader election is off.
    pub rebalance_interval: Option<Duration>,
    pub offsets_partitions: i32,
    pub offsets_replication_factor: i16,
}

struct State {
    heartbeats: HashMap<i32, Instant>,
    leading: bool,
    last_rebalance: Instant,
}

struct Inner {
    config: ControllerConfig,
    quorum: OnceLock<Quorum>,
    state: tokio::sync::Mutex<State>,
}

/// Cheap to clone; every clone is the same controller.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

impl ControllerService for Controller {
    fn handle(
        &self,
        req: ControllerRequest,
    ) -> Pin<Box<dyn Future<Output = ControllerResponse> + Send + 'static>> {
        let this = self.clone();
        Box::pin(async move { this.serve(req).await })
    }
}

fn error(e: ControllerError) -> ControllerResponse {
    ControllerResponse::Error(e)
}

impl Controller {
    pub fn new(config: ControllerConfig) -> Controller {
        Controller {
            inner: Arc::new(Inner {
                config,
                quorum: OnceLock::new(),
                state: tokio::sync::Mutex::new(State {
                    heartbeats: HashMap::new(),
                    leading: false,
                    last_rebalance: Instant::now(),
                }),
            }),
        }
    }

    /// Connects the controller to its quorum (which needs the controller as
    /// its service, hence the two steps).
    pub fn attach(&self, quorum: Quorum) {
        let _ = self.inner.quorum.set(quorum);
    }

    fn quorum(&self) -> Result<&Quorum, ControllerError> {
        self.inner
            .quorum
            .get()
            .ok_or_else(|| ControllerError::NoController("the quorum is starting".into()))
    }

    fn settings(&self) -> &Settings {
        &self.inner.config.settings
    }

    /// Locks the controller state for one decision, after making sure this
    /// node leads and has applied everything committed before.
    async fn begin(
        &self,
    ) -> Result<(tokio::sync::MutexGuard<'_, State>, Arc<MetadataImage>), ControllerError> {
        let quorum = self.quorum()?;
        if !quorum.is_leader() {
            return Err(ControllerError::NotController);
        }
        let mut state = self.inner.state.lock().await;
        quorum
            .ensure_current()
            .await
            .map_err(|_| ControllerError::NotController)?;
        let image = quorum.image();
        if !state.leading {
            // A new term: every registered broker gets a full session.
            state.leading = true;
            let now = Instant::now();
            state.heartbeats = image.brokers.keys().map(|id| (*id, now)).collect();
            state.last_rebalance = now;
            tracing::info!(node = ?quorum.leader(), "became the active controller");
        }
        Ok((state, image))
    }

    async fn write(&self, records: Vec<MetadataRecord>) -> Result<u64, ControllerError> {
        self.write_image(records)
            .await
            .map(|image| image.applied_index)
    }

    /// Writes `records` as one entry; the image once it is applied.
    async fn write_image(
        &self,
        records: Vec<MetadataRecord>,
    ) -> Result<Arc<MetadataImage>, ControllerError> {
        let quorum = self.quorum()?;
        if records.is_empty() {
            return Ok(quorum.image());
        }
        quorum
            .propose(records)
            .await
            .map_err(|e| ControllerError::Quorum(e.to_string()))
    }

    async fn serve(&self, req: ControllerRequest) -> ControllerResponse {
        let (mut state, image) = match self.begin().await {
            Ok(x) => x,
            Err(e) => return error(e),
        };
        let settings = self.settings().clone();
        match req {
            ControllerRequest::Register(reg) => {
                let id = reg.id;
                let mut records = Vec::new();
                if let Some(old) = image.brokers.get(&id) {
                    if old.incarnation != reg.incarnation {
                        // The old process is gone: whatever it led or had in
                        // sync must be re-established by the new one.
                        records.extend(decide::evict_broker(&image, id, &settings));
                    }
                }
                let mut reg = reg;
                reg.fenced = false;
                reg.in_controlled_shutdown = false;
                let learner = reg
                    .controller_addr
                    .clone()
                    .filter(|_| !self.inner.config.voters.contains_key(&id));
                records.push(MetadataRecord::RegisterBroker(reg));
                let after = decide::applied(&image, &records);
                records.extend(decide::elect_offline(&after, &settings));
                state.heartbeats.insert(id, Instant::now());
                tracing::info!(broker = id, "broker registered");
                if let Err(e) = self.write(records).await {
                    return error(e);
                }
                drop(state);
                if let (Some(addr), Ok(q)) = (learner, self.quorum()) {
                    if let Err(e) = q.add_learner(id, addr).await {
                        tracing::warn!(broker = id, error = %e, "cannot add the broker as a metadata learner");
                    }
                }
                ControllerResponse::Registered
            }
            ControllerRequest::Heartbeat {
                id,
                incarnation,
                want_shutdown,
            } => {
                let Some(reg) = image.brokers.get(&id) else {
                    return ControllerResponse::Heartbeat {
                        fenced: true,
                        shutdown_ready: false,
                    };
                };
                if reg.incarnation != incarnation {
                    return ControllerResponse::Heartbeat {
                        fenced: true,
                        shutdown_ready: false,
                    };
                }
                state.heartbeats.insert(id, Instant::now());
                let mut records = Vec::new();
                if reg.fenced && !want_shutdown {
                    // Back after a pause longer than its session.
                    tracing::info!(
                        broker = id,
                        "fenced broker is heartbeating again; unfencing it"
                    );
                    records.push(MetadataRecord::UnfenceBroker { id });
                    let after = decide::applied(&image, &records);
                    records.extend(decide::elect_offline(&after, &settings));
                }
                if want_shutdown && !reg.in_controlled_shutdown {
                    tracing::info!(broker = id, "controlled shutdown: moving leadership away");
                    records.extend(decide::controlled_shutdown(&image, id, &settings));
                }
                let after = decide::applied(&image, &records);
                let shutdown_ready = want_shutdown && decide::movable_leaderships(&after, id) == 0;
                if let Err(e) = self.write(records).await {
                    return error(e);
                }
                ControllerResponse::Heartbeat {
                    fenced: false,
                    shutdown_ready,
                }
            }
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => {
                let mut outcomes = Vec::new();
                let mut records = Vec::new();
                let mut working = (*image).clone();
                for t in &topics {
                    match decide::create_topic(&working, t, &settings) {
                        Ok(r) => {
                            if !validate_only {
                                working.apply(working.applied_index, &r);
                                records.push(r);
                            }
                            outcomes.push(Ok(()));
                        }
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                self.outcomes(records, outcomes).await
            }
            ControllerRequest::DeleteTopics { names } => {
                let mut outcomes = Vec::new();
                let mut records = Vec::new();
                let mut working = (*image).clone();
                for n in &names {
                    match decide::delete_topic(&working, n) {
                        Ok(r) => {
                            working.apply(working.applied_index, &r);
                            records.push(r);
                            outcomes.push(Ok(()));
                        }
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                self.outcomes(records, outcomes).await
            }
            ControllerRequest::CreatePartitions {
                topic,
                count,
                assignments,
                validate_only,
            } => match decide::create_partitions(&image, &topic, count, assignments.as_deref()) {
                Ok(r) => {
                    let records = if validate_only { Vec::new() } else { vec![r] };
                    self.outcomes(records, vec![Ok(())]).await
                }
                Err(e) => self.outcomes(Vec::new(), vec![Err(e)]).await,
            },
            ControllerRequest::SetTopicConfigs {
                topic,
                configs,
                validate_only,
            } => match decide::set_topic_configs(&image, &topic, &configs, &settings) {
                Ok(r) => {
                    let records = if validate_only { Vec::new() } else { vec![r] };
                    self.outcomes(records, vec![Ok(())]).await
                }
                Err(e) => self.outcomes(Vec::new(), vec![Err(e)]).await,
            },
            ControllerRequest::AlterIsr {
                topic,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                match decide::alter_isr(
                    &image,
                    &topic,
                    partition,
                    leader,
                    leader_epoch,
                    partition_epoch,
                    &isr,
                ) {
                    Ok((records, state)) => match self.write_image(records).await {
                        // The image refuses a change computed from an older
                        // partition epoch than its own; the leader must not
                        // take a state that was not applied.
                        Ok(after) => match after.partition(&topic, partition) {
                            Some(applied) if *applied == state => {
                                ControllerResponse::Partition(state)
                            }
                            Some(applied) => error(ControllerError::StaleEpoch(format!(
                                "{topic}-{partition} moved to partition epoch {} meanwhile",
                                applied.partition_epoch
                            ))),
                            None => error(ControllerError::UnknownPartition(topic, partition)),
                        },
                        Err(e) => error(e),
                    },
                    Err(e) => error(e),
                }
            }
            ControllerRequest::ElectLeaders {
                partitions,
                unclean,
            } => {
                let targets: Vec<(String, i32)> = match partitions {
                    Some(p) => p,
                    None => image
                        .partitions()
                        .map(|(t, i, _)| (t.to_string(), i))
                        .collect(),
                };
                let mut outcomes = Vec::new();
                let mut records = Vec::new();
                let mut working = (*image).clone();
                for (t, p) in &targets {
                    match decide::elect_leader(&working, t, *p, unclean) {
                        Ok(rs) => {
                            for r in &rs {
                                working.apply(working.applied_index, r);
                            }
                            records.extend(rs);
                            outcomes.push(Ok(()));
                        }
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                self.outcomes(records, outcomes).await
            }
            ControllerRequest::AllocateProducerIds { broker } => {
                let start = image.next_producer_id.max(0);
                let record = MetadataRecord::AllocateProducerIds {
                    broker,
                    start,
                    len: PRODUCER_ID_BLOCK,
                };
                match self.write(vec![record]).await {
                    Ok(_) => ControllerResponse::ProducerIds {
                        start,
                        len: PRODUCER_ID_BLOCK,
                    },
                    Err(e) => error(e),
                }
            }
            ControllerRequest::AlterReassignments { reassignments } => {
                let mut outcomes = Vec::new();
                let mut records = Vec::new();
                let mut working = (*image).clone();
                for (t, p, target) in &reassignments {
                    match decide::reassign(&working, t, *p, target.as_deref()) {
                        Ok(rs) => {
                            for r in &rs {
                                working.apply(working.applied_index, r);
                            }
                            records.extend(rs);
                            outcomes.push(Ok(()));
                        }
                        Err(e) => outcomes.push(Err(e)),
                    }
                }
                self.outcomes(records, outcomes).await
            }
        }
    }

    async fn outcomes(
        &self,
        records: Vec<MetadataRecord>,
        outcomes: Vec<Result<(), ControllerError>>,
    ) -> ControllerResponse {
        match self.write(records).await {
            Ok(applied_index) => ControllerResponse::Outcomes {
                outcomes,
                applied_index,
            },
            Err(e) => error(e),
        }
    }

    /// The controller's periodic work while it leads: fencing, internal
    /// topic creation, reassignment progress, preferred leaders.
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(quorum) = self.quorum() else { continue };
            if !quorum.is_leader() {
                self.inner.state.lock().await.leading = false;
                continue;
            }
            if let Err(e) = self.tick().await {
                tracing::debug!(error = %e, "controller tick failed");
            }
        }
    }

    async fn tick(&self) -> Result<(), ControllerError> {
        let (mut state, image) = self.begin().await?;
        let config = &self.inner.config;
        let settings = &config.settings;
        let mut records = Vec::new();
        if image.cluster_id.is_none() {
            records.push(MetadataRecord::InitCluster {
                cluster_id: config.cluster_id.clone(),
            });
        }
        let now = Instant::now();
        let mut working = decide::applied(&image, &records);
        for (id, reg) in &image.brokers {
            if reg.fenced {
                continue;
            }
            let last = *state.heartbeats.entry(*id).or_insert(now);
            if now.duration_since(last) > config.session_timeout {
                tracing::warn!(
                    broker = id,
                    timeout_ms = config.session_timeout.as_millis() as u64,
                    "broker session expired; fencing it"
                );
                let mut rs = vec![MetadataRecord::FenceBroker { id: *id }];
                let after = decide::applied(&working, &rs);
                rs.extend(decide::evict_broker(&after, *id, settings));
                working = decide::applied(&working, &rs);
                records.extend(rs);
            }
        }
        // Partitions left without a leader get one as soon as a candidate
        // exists (a replica came back, or unclean election was enabled).
        let rs = decide::elect_offline(&working, settings);
        working = decide::applied(&working, &rs);
        records.extend(rs);
        let rs = decide::progress_reassignments(&working);
        working = decide::applied(&working, &rs);
        records.extend(rs);
        if let Some(every) = config.rebalance_interval {
            if now.duration_since(state.last_rebalance) >= every {
                state.last_rebalance = now;
                let rs = decide::rebalance_preferred(&working);
                if !rs.is_empty() {
                    tracing::info!(
                        partitions = rs.len(),
                        "moving leadership back to preferred replicas"
                    );
                }
                working = decide::applied(&working, &rs);
                records.extend(rs);
            }
        }
        if working.topic(OFFSETS_TOPIC).is_none() {
            let needed = usize::try_from(config.offsets_replication_factor)
                .unwrap_or(1)
                .min(config.voters.len().max(1));
            if working.usable_brokers().len() >= needed {
                let t = NewTopic {
                    name: OFFSETS_TOPIC.to_string(),
                    partitions: config.offsets_partitions,
                    replication_factor: i16::try_from(needed).unwrap_or(1),
                    assignments: None,
                    configs: [("retention.ms".to_string(), "-1".to_string())].into(),
                };
                match decide::create_topic(&working, &t, settings) {
                    Ok(r) => records.push(r),
                    Err(e) => tracing::warn!(error = %e, "cannot create {OFFSETS_TOPIC}"),
                }
            }
        }
        // Written with the state still locked: a decision taken meanwhile
        // on the image without these records would overwrite them (or they
        // it), as partition changes replace a partition's state whole.
        let written = self.write(records).await.map(|_| ());
        drop(state);
        written
    }
}
