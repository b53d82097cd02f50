//! Leader election on a `coordination.k8s.io/v1` Lease, so that several
//! replicas of `sluice-operator run` can be deployed and only one of them
//! reconciles at a time (`run --leader-elect`).
//!
//! The rules are client-go's:
//! - A candidate takes the Lease when nobody holds it, or when its record
//!   has not changed for the Lease's duration as measured on the
//!   candidate's own clock (so clock skew between pods does not matter).
//! - Every write carries the `resourceVersion` it read; of two candidates
//!   racing for the same Lease, the API server lets one write through and
//!   answers 409 Conflict to the other.
//! - The leader renews every `retry` period. When it has not managed to
//!   renew for `renew_deadline` (shorter than the duration, so it stops
//!   before anyone else may start), or finds another holder, it has lost the
//!   Lease: the controllers stop and the process exits non-zero, to be
//!   restarted as a candidate.
//! - On a clean shutdown the leader gives the Lease up (empty holder), so
//!   a standby takes over at once instead of after the duration.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio_util::sync::CancellationToken;

/// Where the Lease lives and how it is held.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// This process, as written in `spec.holderIdentity`.
    pub identity: String,
    /// How long an unrenewed Lease keeps others out (`leaseDurationSeconds`).
    pub duration: Duration,
}

impl LeaseConfig {
    /// The leader gives up when it could not renew for this long.
    pub fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// How often the leader renews and a candidate tries.
    pub fn retry(&self) -> Duration {
        (self.duration / 5).max(Duration::from_millis(200))
    }

    fn duration_secs(&self) -> i32 {
        i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }
}

/// The identity used when none is given: the pod's name (`POD_NAME`, from
/// the downward API) or the host name, and the process id.
pub fn default_identity() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "sluice-operator".into());
    format!("{host}-{}", std::process::id())
}

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    /// This process holds the Lease now.
    Held,
    /// Someone else does (their identity, when the Lease names one).
    Other(Option<String>),
}

/// The last version of the Lease seen, and when (on our clock) it was
/// first seen: a holder that stops renewing leaves the version unchanged.
struct Observed {
    version: Option<String>,
    since: Instant,
}

struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Observed,
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl Elector {
    fn new(api: Api<Lease>, config: LeaseConfig) -> Elector {
        Elector {
            api,
            config,
            observed: Observed {
                version: None,
                since: Instant::now(),
            },
        }
    }

    /// One try to take or renew the Lease. Conflicts (another writer got
    /// there first) are `Other`; other API errors are returned.
    async fn try_acquire_or_renew(&mut self) -> Result<Attempt, kube::Error> {
        let me = self.config.identity.clone();
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me),
                    lease_duration_seconds: Some(self.config.duration_secs()),
                    acquire_time: Some(now()),
                    renew_time: Some(now()),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Held),
                Err(e) if is_conflict(&e) => Ok(Attempt::Other(None)),
                Err(e) => Err(e),
            };
        };
        if lease.metadata.resource_version != self.observed.version {
            self.observed = Observed {
                version: lease.metadata.resource_version.clone(),
                since: Instant::now(),
            };
        }
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() != Some(me.as_str()) {
            let held_for = spec
                .lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map_or(self.config.duration, Duration::from_secs);
            if holder.is_some() && self.observed.since.elapsed() < held_for {
                return Ok(Attempt::Other(holder));
            }
            // Free, or its holder stopped renewing: take it over.
            spec.holder_identity = Some(me);
            spec.acquire_time = Some(now());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now());
        spec.lease_duration_seconds = Some(self.config.duration_secs());
        // `lease` still carries the resourceVersion read above: the write
        // fails with 409 if anyone wrote in between.
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.observed = Observed {
                    version: written.metadata.resource_version,
                    since: Instant::now(),
                };
                Ok(Attempt::Held)
            }
            Err(e) if is_conflict(&e) => Ok(Attempt::Other(None)),
            Err(e) => Err(e),
        }
    }

    /// [`try_acquire_or_renew`](Self::try_acquire_or_renew) given at most
    /// `limit`: an API call that hangs counts as a failed attempt.
    async fn attempt_within(&mut self, limit: Duration) -> Result<Attempt, kube::Error> {
        tokio::time::timeout(limit, self.try_acquire_or_renew())
            .await
            .unwrap_or_else(|_| Err(kube::Error::Service("timed out".into())))
    }

    /// Empties the holder so a standby takes over at once. Only if we
    /// still hold it; failures are logged, the Lease then simply expires.
    async fn release(&mut self) {
        let mut lease = match self.api.get_opt(&self.config.name).await {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the leader lease to release it");
                return;
            }
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(now());
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => tracing::info!(lease = %self.config.name, "released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "cannot release the leader lease"),
        }
    }
}

/// Leadership once won: renewed in the background until released or lost.
pub struct Leadership {
    lost: CancellationToken,
    release: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Fires when the Lease is lost (not when it is released).
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Stops renewing and gives the Lease up.
    pub async fn release(self) {
        self.release.cancel();
        let _ = self.task.await;
    }
}

/// Waits until this process holds the Lease, then keeps renewing it in
/// the background. `None` when `stop` fires first.
pub async fn acquire(
    api: Api<Lease>,
    config: LeaseConfig,
    stop: &CancellationToken,
) -> Option<Leadership> {
    let mut elector = Elector::new(api, config);
    let mut last_other = None;
    loop {
        let limit = elector.config.duration;
        match elector.attempt_within(limit).await {
            Ok(Attempt::Held) => break,
            Ok(Attempt::Other(holder)) => {
                if holder.is_some() && holder != last_other {
                    tracing::info!(
                        lease = %elector.config.name,
                        holder = holder.as_deref().unwrap_or_default(),
                        "another operator holds the leader lease; standing by"
                    );
                    last_other = holder;
                }
            }
            Err(e) => {
                tracing::warn!(lease = %elector.config.name, error = %e, "cannot read or write the leader lease")
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return None,
            _ = tokio::time::sleep(elector.config.retry()) => {}
        }
    }
    tracing::info!(
        lease = %format!("{}/{}", elector.config.namespace, elector.config.name),
        identity = %elector.config.identity,
        "became the leader"
    );
    let lost = CancellationToken::new();
    let release = CancellationToken::new();
    let task = tokio::spawn(renew(elector, lost.clone(), release.clone()));
    Some(Leadership {
        lost,
        release,
        task,
    })
}

async fn renew(mut elector: Elector, lost: CancellationToken, release: CancellationToken) {
    let mut renewed = Instant::now();
    loop {
        tokio::select! {
            _ = release.cancelled() => {
                elector.release().await;
                return;
            }
            _ = tokio::time::sleep(elector.config.retry()) => {}
        }
        // An API call that hangs must not keep a leader past its deadline.
        let left = elector
            .config
            .renew_deadline()
            .saturating_sub(renewed.elapsed());
        match elector.attempt_within(left).await {
            Ok(Attempt::Held) => renewed = Instant::now(),
            Ok(Attempt::Other(Some(holder))) => {
                tracing::error!(%holder, "the leader lease was taken over");
                lost.cancel();
                return;
            }
            // A write raced ours: read again next time round.
            Ok(Attempt::Other(None)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot renew the leader lease");
            }
        }
        if renewed.elapsed() >= elector.config.renew_deadline() {
            tracing::error!(
                deadline = ?elector.config.renew_deadline(),
                "could not renew the leader lease in time"
            );
            lost.cancel();
            return;
        }
    }
}
