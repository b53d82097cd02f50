//! Partition replication: turning the metadata image into local roles
//! (leader, follower), the follower fetchers, and the leader's ISR upkeep.
//!
//! - [`reconcile`]: image in, local replicas opened, given their roles,
//!   removed when no longer assigned here, and fetchers told what to follow.
//! - [`fetcher`]: one task per leader broker pulling with Fetch.
//! - ISR changes are asked of the controller (`AlterIsr`) by
//!   [`Replication::run_isr`]: followers that stop catching up for
//!   `replica.lag.time.max.ms` leave, caught-up ones join.

pub mod fetcher;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::broker::{now_ms, Broker};
use crate::cluster::image::{MetadataImage, PartitionState, NO_LEADER};
use crate::cluster::messages::{ControllerRequest, ControllerResponse};
use fetcher::{FetchSet, Followed};

struct Fetcher {
    set: watch::Sender<FetchSet>,
    cancel: CancellationToken,
}

/// The replication side of one broker.
pub struct Replication {
    settings: Arc<fetcher::Settings>,
    fetchers: Mutex<HashMap<i32, Fetcher>>,
    /// Pokes the ISR task when a follower may join.
    isr_wakeup: Notify,
    cancel: CancellationToken,
}

impl Replication {
    pub fn new(settings: fetcher::Settings, cancel: CancellationToken) -> Replication {
        Replication {
            settings: Arc::new(settings),
            fetchers: Mutex::new(HashMap::new()),
            isr_wakeup: Notify::new(),
            cancel,
        }
    }

    /// A follower caught up: look at ISR changes now rather than at the
    /// next tick.
    pub fn poke_isr(&self) {
        self.isr_wakeup.notify_one();
    }

    /// Stops every fetcher (shutdown).
    pub fn stop_fetchers(&self) {
        for (_, f) in self.fetchers.lock().drain() {
            f.cancel.cancel();
        }
    }

    /// Leader side: sends wanted ISR changes to the controller, every
    /// quarter of `replica.lag.time.max.ms` or when poked.
    pub async fn run_isr(broker: Arc<Broker>, cancel: CancellationToken) {
        let lag = i64::try_from(broker.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        let every =
            Duration::from_millis((broker.config.replica_lag_time_max_ms / 4).clamp(50, 1000));
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = broker.replication.isr_wakeup.notified() => {}
            }
            let now = now_ms();
            for p in broker.topics.all_partitions() {
                let Some(change) = p.wanted_isr_change(now, lag) else {
                    continue;
                };
                let b = broker.clone();
                tokio::spawn(async move {
                    let st = p.replica_state();
                    tracing::info!(topic = p.topic(), partition = p.index(), from = ?st.isr, to = ?change.isr, "asking the controller to change the ISR");
                    let req = ControllerRequest::AlterIsr {
                        topic: p.topic().to_string(),
                        partition: p.index(),
                        leader: b.node_id(),
                        leader_epoch: change.leader_epoch,
                        partition_epoch: change.partition_epoch,
                        isr: change.isr,
                    };
                    match b.controller_call(req).await {
                        ControllerResponse::Partition(state) => {
                            p.isr_change_done(Some(&state), now_ms());
                        }
                        other => {
                            tracing::info!(topic = p.topic(), partition = p.index(), answer = ?other, "ISR change refused");
                            p.isr_change_done(None, now_ms());
                        }
                    }
                });
            }
        }
    }

    fn set_fetchers(&self, broker: &Arc<Broker>, wanted: BTreeMap<i32, FetchSet>) {
        let mut fetchers = self.fetchers.lock();
        fetchers.retain(|leader, f| {
            let keep = wanted.contains_key(leader);
            if !keep {
                f.cancel.cancel();
            }
            keep
        });
        for (leader, set) in wanted {
            match fetchers.get(&leader) {
                Some(f) => {
                    f.set.send_replace(set);
                }
                None => {
                    let (tx, rx) = watch::channel(set);
                    let cancel = self.cancel.child_token();
                    tokio::spawn(fetcher::run(
                        leader,
                        rx,
                        self.settings.clone(),
                        broker.flusher.clone(),
                        cancel.clone(),
                    ));
                    fetchers.insert(leader, Fetcher { set: tx, cancel });
                }
            }
        }
    }
}

/// Makes the local replicas match `image`: opens assigned replicas, gives
/// them their roles, starts or updates fetchers, moves the group coordinator
/// with `__consumer_offsets` leadership, and removes replicas (and data) no
/// longer assigned here. Blocking (opening a log recovers it).
pub fn reconcile(broker: &Arc<Broker>, image: &MetadataImage) {
    let me = broker.node_id();
    let now = now_ms();
    let current_incarnation = image
        .brokers
        .get(&me)
        .is_some_and(|b| b.incarnation == broker.incarnation && !b.fenced);
    let mut fetch_sets: BTreeMap<i32, FetchSet> = BTreeMap::new();
    for t in image.topics.values() {
        let hosted: Vec<usize> = t
            .partitions
            .iter()
            .enumerate()
            .filter(|(_, p)| p.replicas.contains(&me))
            .map(|(i, _)| i)
            .collect();
        if hosted.is_empty() {
            if broker.topics.get(&t.name).is_some() {
                broker.topics.remove_topic(&t.name);
            }
            continue;
        }
        let local = match broker.topics.ensure_topic(&t.name, t.id, &t.configs) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(topic = %t.name, error = %e, "cannot host topic");
                continue;
            }
        };
        for (i, st) in t.partitions.iter().enumerate() {
            let index = i32::try_from(i).unwrap_or(i32::MAX);
            if !st.replicas.contains(&me) {
                if local.partition(index).is_some() {
                    broker.resign_coordinator(&t.name, index, st.leader_epoch);
                    broker.topics.remove_partition(&t.name, index);
                }
                continue;
            }
            let p = match broker.topics.ensure_partition(&local, index) {
                Ok(p) => p,
                Err(e) => {
                    tracing::error!(topic = %t.name, partition = index, error = %e, "cannot open replica");
                    continue;
                }
            };
            if st.leader == me && !current_incarnation {
                // The image still describes an earlier run of this broker
                // (restarted, not yet registered again): leading on that
                // word would accept writes in a stale epoch. Wait for the
                // controller to re-establish leadership.
                p.become_follower(&PartitionState {
                    leader: NO_LEADER,
                    ..st.clone()
                });
            } else if st.leader == me {
                p.become_leader(st, now);
                broker.elect_coordinator(&t.name, index, &p, st.leader_epoch);
            } else {
                p.become_follower(st);
                broker.resign_coordinator(&t.name, index, st.leader_epoch);
                if let Some(leader) = image.brokers.get(&st.leader).filter(|b| !b.fenced) {
                    let set = fetch_sets.entry(st.leader).or_insert_with(|| FetchSet {
                        leader_addr: format!("{}:{}", leader.host, leader.port),
                        partitions: BTreeMap::new(),
                    });
                    set.partitions.insert(
                        (local.name.clone(), index),
                        Followed {
                            partition: p.clone(),
                            leader_epoch: st.leader_epoch,
                        },
                    );
                }
            }
        }
    }
    for local in broker.topics.all() {
        match image.topic(&local.name) {
            Some(t) if t.id == local.id => {}
            _ => broker.topics.remove_topic(&local.name),
        }
    }
    broker.replication.set_fetchers(broker, fetch_sets);
}
