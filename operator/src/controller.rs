//! `sluice-operator run`: the in-cluster controllers for `Topic`,
//! `OffsetReset` and `Replay`, on kube-rs's `Controller`. Each reconcile
//! reads the Kafka cluster, asks the planner, carries the plan out, then
//! writes the status by server-side apply and tells people what happened
//! with Kubernetes Events.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use sluice_broker::client::Client as KafkaClient;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use crate::crd::{Condition, DriftEntry, OffsetReset, Replay, Topic, TopicStatus, API_VERSION};
use crate::exec;
use crate::manifest;
use crate::metrics::Metrics;
use crate::oneshot;
use crate::plan::{self, Options};

pub const FINALIZER: &str = "sluice.dev/topic-protection";
pub const MANAGER: &str = "sluice-operator";
/// Drift entries kept in a Topic's status.
const DRIFT_KEPT: usize = 10;

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// How often a Topic in sync is checked again (drift).
    pub requeue: Duration,
    /// Remove topic-level configs a Topic's spec does not mention.
    pub prune_configs: bool,
}

/// What every reconcile shares.
pub struct Ctx {
    pub kube: kube::Client,
    pub kafka: KafkaClient,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub options: RunOptions,
    /// The Topic controller's cache, for finding other claims on a name.
    pub topics: Store<Topic>,
    /// Replays copying in this process, by uid.
    pub replays: Mutex<HashMap<String, tokio::task::JoinHandle<()>>>,
    pub stop: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Exec(#[from] exec::ExecError),
    #[error("{0}")]
    Reset(#[from] sluice_broker::admin::reset::ResetError),
    #[error("{0}")]
    Replay(#[from] sluice_broker::admin::replay::ReplayError),
    #[error("{0}")]
    Other(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl Error {
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubernetesApi",
            Error::Exec(e) => e.reason(),
            Error::Reset(_) => "ResetFailed",
            Error::Replay(_) => "ReplayFailed",
            Error::Other(_) => "Failed",
            Error::Finalizer(_) => "Finalizer",
        }
    }
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A condition, keeping the previous transition time if the status did not
/// change.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(now_rfc3339);
    Condition {
        type_: type_.to_string(),
        status,
        reason: reason.to_string(),
        message,
        last_transition_time,
        observed_generation: generation,
    }
}

pub(crate) async fn write_status<K>(
    api: &Api<K>,
    name: &str,
    kind: &str,
    status: serde_json::Value,
) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = json!({ "apiVersion": API_VERSION, "kind": kind, "status": status });
    api.patch_status(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

pub(crate) async fn publish_event<K: Resource<DynamicType = ()>>(
    ctx: &Ctx,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let ev = KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(note),
        action: action.to_string(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &obj.object_ref(&())).await {
        tracing::warn!("cannot publish event {reason}: {e}");
    }
}

fn source_of<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{} {}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

// ----- Topic -----

/// The resource that manages `name`: the oldest claim (then by
/// namespace/name).
fn owner_of(store: &Store<Topic>, name: &str) -> Option<Arc<Topic>> {
    store
        .state()
        .into_iter()
        .filter(|t| {
            t.metadata.deletion_timestamp.is_none() || t.finalizers().iter().any(|f| f == FINALIZER)
        })
        .filter(|t| topic_name(t) == name)
        .min_by(|a, b| {
            let key = |t: &Topic| {
                (
                    t.metadata.creation_timestamp.clone().map(|c| c.0),
                    t.namespace().unwrap_or_default(),
                    t.name_any(),
                )
            };
            key(a).cmp(&key(b))
        })
}

pub fn topic_name(t: &Topic) -> String {
    t.spec.topic_name.clone().unwrap_or_else(|| t.name_any())
}

async fn reconcile_topic(topic: Arc<Topic>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let ns = topic.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<Topic> = Api::namespaced(ctx.kube.clone(), &ns);
    // Conflicts are judged from the cache: wait until it holds every Topic
    // (the first list), or a newer claim could win at start-up.
    ctx.topics
        .wait_until_ready()
        .await
        .map_err(|e| Error::Other(format!("topic cache: {e}")))?;
    let result = finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            Finalizer::Apply(t) => apply_topic(&api, &t, &ctx).await,
            Finalizer::Cleanup(t) => cleanup_topic(&t, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    });
    ctx.metrics.reconciled("Topic", started.elapsed());
    result
}

async fn apply_topic(api: &Api<Topic>, t: &Topic, ctx: &Ctx) -> Result<Action, Error> {
    let name = t.name_any();
    let generation = t.metadata.generation;
    let prev = t.status.clone().unwrap_or_default();
    let mut status = TopicStatus {
        observed_generation: generation,
        topic_name: Some(topic_name(t)),
        drift: prev.drift.clone(),
        ..prev.clone()
    };
    let desired = match manifest::desired_topic(t, &source_of(t)) {
        Ok(d) => d,
        Err(errs) => {
            let msg = errs
                .iter()
                .map(|(f, m)| format!("{f}: {m}"))
                .collect::<Vec<_>>()
                .join("; ");
            return refuse_topic(api, t, ctx, status, &prev, "InvalidSpec", msg).await;
        }
    };
    if let Some(owner) = owner_of(&ctx.topics, &desired.name) {
        if owner.uid() != t.uid() {
            let msg = format!(
                "topic {} is already managed by {}: only the older resource manages it; delete this one or set spec.topicName",
                desired.name,
                source_of(owner.as_ref())
            );
            status.conditions = vec![
                condition(
                    &prev.conditions,
                    "Ready",
                    false,
                    "Conflict",
                    msg.clone(),
                    generation,
                ),
                condition(
                    &prev.conditions,
                    "Conflict",
                    true,
                    "Conflict",
                    msg.clone(),
                    generation,
                ),
            ];
            return refuse_with(api, t, ctx, status, "Conflict", msg).await;
        }
    }
    let skip = if !desired.managed {
        Some((
            "Unmanaged",
            "sluice.dev/managed is \"false\": the topic is left alone",
        ))
    } else if desired.paused {
        Some((
            "Paused",
            "sluice.dev/paused is \"true\": reconciliation is paused",
        ))
    } else {
        None
    };
    if let Some(why) = skip {
        status.conditions = vec![condition(
            &prev.conditions,
            "Ready",
            true,
            why.0,
            why.1.to_string(),
            generation,
        )];
        write_status(
            api,
            &name,
            "Topic",
            serde_json::to_value(&status).map_err(|e| Error::Other(e.to_string()))?,
        )
        .await?;
        return Ok(Action::await_change());
    }

    let observed = exec::observe_topics(&ctx.kafka, std::slice::from_ref(&desired.name)).await?;
    let tp = plan::plan_topic(
        &desired,
        observed.topics.get(&desired.name),
        &observed.brokers,
        Options {
            prune: ctx.options.prune_configs,
        },
    );
    let steps: Vec<&plan::Step> = tp.steps.iter().collect();
    let results = exec::execute(&ctx.kafka, &steps).await;
    let mut failures = Vec::new();
    for r in &results {
        match &r.result {
            Ok(()) => {
                let (reason, note) = match &r.step.action {
                    plan::Action::Create { .. } => ("Created", r.step.action.to_string()),
                    plan::Action::AddPartitions { .. } => {
                        ("PartitionsAdded", r.step.action.to_string())
                    }
                    plan::Action::AlterConfig { .. } if !tp.drift.is_empty() => (
                        "DriftReverted",
                        format!("{} ({})", r.step.action, r.step.reason),
                    ),
                    plan::Action::AlterConfig { .. } => {
                        ("ConfigUpdated", r.step.action.to_string())
                    }
                    plan::Action::Reassign { .. } => ("ReplicasMoving", r.step.action.to_string()),
                    plan::Action::Delete { .. } => ("Deleted", r.step.action.to_string()),
                };
                let kind = if reason == "DriftReverted" {
                    EventType::Warning
                } else {
                    EventType::Normal
                };
                publish_event(ctx, t, kind, reason, r.step.action.kind(), note).await;
            }
            Err(e) => {
                ctx.metrics.failed("Topic", e.reason());
                failures.push(e.to_string());
            }
        }
    }
    let now = now_rfc3339();
    for (key, found) in &tp.drift {
        if let Some(v) = desired.config.get(key) {
            status.drift.push(DriftEntry {
                key: key.clone(),
                found: found.clone(),
                restored: v.clone(),
                at: now.clone(),
            });
        }
    }
    let excess = status.drift.len().saturating_sub(DRIFT_KEPT);
    status.drift.drain(..excess);

    // What the cluster holds now.
    let after = exec::observe_topics(&ctx.kafka, std::slice::from_ref(&desired.name)).await?;
    if let Some(o) = after.topics.get(&desired.name) {
        status.topic_id = o.id.clone();
        status.partitions = Some(o.partition_count());
        status.replicas = Some(o.replication_factor());
        status.config = o.override_values();
    }
    let ready = match (tp.refusals.first(), failures.is_empty()) {
        (Some(r), _) => {
            ctx.metrics.failed("Topic", r.reason());
            publish_event(
                ctx,
                t,
                EventType::Warning,
                r.reason(),
                "Refuse",
                r.to_string(),
            )
            .await;
            condition(
                &prev.conditions,
                "Ready",
                false,
                r.reason(),
                r.to_string(),
                generation,
            )
        }
        (None, false) => condition(
            &prev.conditions,
            "Ready",
            false,
            "ApplyFailed",
            failures.join("; "),
            generation,
        ),
        (None, true) => condition(
            &prev.conditions,
            "Ready",
            true,
            "InSync",
            format!("topic {} matches the spec", desired.name),
            generation,
        ),
    };
    let ok = ready.status == "True";
    status.conditions = vec![ready];
    write_status(
        api,
        &name,
        "Topic",
        serde_json::to_value(&status).map_err(|e| Error::Other(e.to_string()))?,
    )
    .await?;
    if ok || !tp.refusals.is_empty() {
        Ok(Action::requeue(ctx.options.requeue))
    } else {
        Ok(Action::requeue(Duration::from_secs(5)))
    }
}

async fn refuse_topic(
    api: &Api<Topic>,
    t: &Topic,
    ctx: &Ctx,
    mut status: TopicStatus,
    prev: &TopicStatus,
    reason: &str,
    msg: String,
) -> Result<Action, Error> {
    status.conditions = vec![condition(
        &prev.conditions,
        "Ready",
        false,
        reason,
        msg.clone(),
        t.metadata.generation,
    )];
    refuse_with(api, t, ctx, status, reason, msg).await
}

async fn refuse_with(
    api: &Api<Topic>,
    t: &Topic,
    ctx: &Ctx,
    status: TopicStatus,
    reason: &str,
    msg: String,
) -> Result<Action, Error> {
    ctx.metrics.failed("Topic", reason);
    publish_event(ctx, t, EventType::Warning, reason, "Refuse", msg).await;
    write_status(
        api,
        &t.name_any(),
        "Topic",
        serde_json::to_value(&status).map_err(|e| Error::Other(e.to_string()))?,
    )
    .await?;
    Ok(Action::requeue(ctx.options.requeue))
}

async fn cleanup_topic(t: &Topic, ctx: &Ctx) -> Result<Action, Error> {
    let name = topic_name(t);
    let desired = manifest::desired_topic(t, &source_of(t)).ok();
    let owner = owner_of(&ctx.topics, &name);
    let is_owner = owner.is_none_or(|o| o.uid() == t.uid());
    let keep = match &desired {
        None => Some("its spec is invalid"),
        Some(d) if !d.managed => Some("sluice.dev/managed is \"false\""),
        Some(d) if d.deletion_policy == crate::crd::DeletionPolicy::Retain => {
            Some("deletionPolicy is Retain")
        }
        Some(_) if !is_owner => Some("another Topic resource manages it"),
        Some(_) => None,
    };
    if let Some(why) = keep {
        tracing::info!("Topic {}: topic {name} kept: {why}", source_of(t));
        return Ok(Action::await_change());
    }
    let results = ctx
        .kafka
        .delete_topics(std::slice::from_ref(&name))
        .await
        .map_err(exec::ExecError::from)?;
    for (_, r) in results {
        match r {
            Ok(()) => {}
            Err(e) if e.name == "UNKNOWN_TOPIC_OR_PARTITION" => {}
            Err(e) => return Err(Error::Other(format!("delete topic {name}: {e}"))),
        }
    }
    publish_event(
        ctx,
        t,
        EventType::Normal,
        "Deleted",
        "Delete",
        format!("topic {name} deleted (deletionPolicy Delete)"),
    )
    .await;
    Ok(Action::await_change())
}

fn error_policy<K>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Ctx>) -> Action {
    move |_obj, err, ctx| {
        ctx.metrics.failed(kind, err.reason());
        tracing::warn!("{kind} reconcile failed: {err}");
        Action::requeue(Duration::from_secs(5))
    }
}

/// What a controller stream yields, logged (the error policy has already
/// counted and requeued failures).
fn log_outcome<T, E: std::fmt::Display>(
    kind: &'static str,
) -> impl FnMut(Result<T, E>) -> std::future::Ready<()> {
    move |r| {
        if let Err(e) = r {
            tracing::debug!("{kind} controller: {e}");
        }
        std::future::ready(())
    }
}

// ----- OffsetReset -----

async fn reconcile_reset(r: Arc<OffsetReset>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let out = run_reset(&r, &ctx).await;
    ctx.metrics.reconciled("OffsetReset", started.elapsed());
    out
}

async fn run_reset(r: &OffsetReset, ctx: &Ctx) -> Result<Action, Error> {
    use crate::crd::OffsetResetStatus;
    use sluice_broker::admin::reset::{self, ResetError, Strategy};
    let ns = r.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<OffsetReset> = Api::namespaced(ctx.kube.clone(), &ns);
    let name = r.name_any();
    let generation = r.metadata.generation;
    let prev = r.status.clone().unwrap_or_default();
    let done_for_this_generation = prev.observed_generation == generation
        && matches!(prev.phase.as_deref(), Some("Applied") | Some("Failed"))
        || (prev.observed_generation == generation
            && prev.phase.as_deref() == Some("Planned")
            && r.spec.dry_run);
    if done_for_this_generation {
        return Ok(Action::await_change());
    }
    let write = |status: OffsetResetStatus| {
        let api = api.clone();
        let name = name.clone();
        async move {
            write_status(
                &api,
                &name,
                "OffsetReset",
                serde_json::to_value(&status).map_err(|e| Error::Other(e.to_string()))?,
            )
            .await
        }
    };
    let fail =
        |reason: &str, message: String, plan: Vec<crate::crd::OffsetPlanRow>| OffsetResetStatus {
            phase: Some("Failed".into()),
            reason: Some(reason.to_string()),
            message: Some(message.clone()),
            observed_generation: generation,
            conditions: vec![condition(
                &prev.conditions,
                "Complete",
                false,
                reason,
                message,
                generation,
            )],
            plan,
            previous_offsets: Vec::new(),
            applied_at: None,
        };
    let (scope, strategy) = match oneshot::check_offset_reset(&r.spec) {
        Ok(x) => x,
        Err((field, msg)) => {
            let m = format!("{field}: {msg}");
            ctx.metrics.failed("OffsetReset", "InvalidSpec");
            publish_event(ctx, r, EventType::Warning, "InvalidSpec", "Plan", m.clone()).await;
            write(fail("InvalidSpec", m, Vec::new())).await?;
            return Ok(Action::await_change());
        }
    };
    // A reset interrupted between its commit and its status (the operator
    // restarted): the recorded plan is re-applied exactly, never re-planned
    // (a shiftBy planned again would move twice).
    let strategy = if prev.phase.as_deref() == Some("Applying")
        && prev.observed_generation == generation
    {
        let committed = ctx
            .kafka
            .committed_offsets(&r.spec.group)
            .await
            .map_err(exec::ExecError::from)?;
        let done = prev
            .plan
            .iter()
            .all(|row| committed.get(&(row.topic.clone(), row.partition)) == Some(&row.new));
        if done {
            let status = OffsetResetStatus {
                phase: Some("Applied".into()),
                reason: Some("Applied".into()),
                message: Some("the offsets were committed before the operator restarted".into()),
                conditions: vec![condition(
                    &prev.conditions,
                    "Complete",
                    true,
                    "Applied",
                    "offsets committed".into(),
                    generation,
                )],
                applied_at: Some(now_rfc3339()),
                ..prev.clone()
            };
            write(status).await?;
            return Ok(Action::await_change());
        }
        Strategy::FromFile(
            prev.plan
                .iter()
                .map(|row| ((row.topic.clone(), row.partition), row.new))
                .collect(),
        )
    } else {
        strategy
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let prepared = match reset::prepare(&ctx.kafka, &r.spec.group, &scope, strategy, now_ms).await {
        Ok(p) => p,
        Err(e @ ResetError::Client(_)) => return Err(e.into()),
        Err(e) => {
            let reason = reset_reason(&e);
            ctx.metrics.failed("OffsetReset", reason);
            publish_event(ctx, r, EventType::Warning, reason, "Plan", e.to_string()).await;
            write(fail(reason, e.to_string(), Vec::new())).await?;
            return Ok(Action::await_change());
        }
    };
    let rows = oneshot::plan_rows(&prepared.plan);
    let previous = oneshot::offsets_list(&prepared.plan.previous_offsets());
    let summary = format!(
        "{} partition(s): {} message(s) re-read, {} skipped",
        rows.len(),
        prepared.plan.total_reread(),
        prepared.plan.total_skipped()
    );
    if r.spec.dry_run {
        write(OffsetResetStatus {
            phase: Some("Planned".into()),
            reason: Some("DryRun".into()),
            message: Some(format!("dry run: {summary}; set dryRun: false to apply")),
            observed_generation: generation,
            conditions: vec![condition(
                &prev.conditions,
                "Complete",
                false,
                "DryRun",
                summary.clone(),
                generation,
            )],
            plan: rows,
            previous_offsets: previous,
            applied_at: None,
        })
        .await?;
        return Ok(Action::await_change());
    }
    write(OffsetResetStatus {
        phase: Some("Applying".into()),
        reason: Some("Applying".into()),
        message: Some(summary.clone()),
        observed_generation: generation,
        conditions: vec![condition(
            &prev.conditions,
            "Complete",
            false,
            "Applying",
            summary.clone(),
            generation,
        )],
        plan: rows.clone(),
        previous_offsets: if prev.previous_offsets.is_empty() {
            previous.clone()
        } else {
            prev.previous_offsets.clone()
        },
        applied_at: None,
    })
    .await?;
    match reset::apply(&ctx.kafka, &prepared, None).await {
        Ok(_) => {
            publish_event(
                ctx,
                r,
                EventType::Normal,
                "Applied",
                "Reset",
                format!("group {}: {summary}", r.spec.group),
            )
            .await;
            write(OffsetResetStatus {
                phase: Some("Applied".into()),
                reason: Some("Applied".into()),
                message: Some(summary.clone()),
                observed_generation: generation,
                conditions: vec![condition(
                    &prev.conditions,
                    "Complete",
                    true,
                    "Applied",
                    summary,
                    generation,
                )],
                plan: rows,
                previous_offsets: if prev.previous_offsets.is_empty() {
                    previous
                } else {
                    prev.previous_offsets.clone()
                },
                applied_at: Some(now_rfc3339()),
            })
            .await?;
            Ok(Action::await_change())
        }
        Err(e @ ResetError::Client(_)) => Err(e.into()),
        Err(e) => {
            let reason = reset_reason(&e);
            ctx.metrics.failed("OffsetReset", reason);
            publish_event(ctx, r, EventType::Warning, reason, "Reset", e.to_string()).await;
            let mut st = fail(reason, e.to_string(), rows);
            st.previous_offsets = previous;
            write(st).await?;
            Ok(Action::await_change())
        }
    }
}

fn reset_reason(e: &sluice_broker::admin::reset::ResetError) -> &'static str {
    use sluice_broker::admin::reset::ResetError as E;
    match e {
        E::Active { .. } => "GroupActive",
        E::UnknownGroup(_) => "UnknownGroup",
        E::Stale { .. } => "OffsetsMoved",
        E::CommitFailed { .. } => "CommitFailed",
        _ => "ResetFailed",
    }
}

// ----- Replay -----

async fn reconcile_replay(r: Arc<Replay>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let started = Instant::now();
    let out = crate::replay_run::reconcile(r, &ctx).await;
    ctx.metrics.reconciled("Replay", started.elapsed());
    out
}

/// Runs the three controllers until SIGTERM/SIGINT or `stop`.
pub async fn run(
    kube: kube::Client,
    kafka: KafkaClient,
    namespace: Option<String>,
    options: RunOptions,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let (topics_api, resets_api, replays_api): (Api<Topic>, Api<OffsetReset>, Api<Replay>) =
        match &namespace {
            Some(ns) => (
                Api::namespaced(kube.clone(), ns),
                Api::namespaced(kube.clone(), ns),
                Api::namespaced(kube.clone(), ns),
            ),
            None => (
                Api::all(kube.clone()),
                Api::all(kube.clone()),
                Api::all(kube.clone()),
            ),
        };
    // Fail fast with a clear message when the CRDs are missing.
    for (what, r) in [
        (
            "topics.sluice.dev",
            topics_api
                .list(&ListParams::default().limit(1))
                .await
                .map(|_| ()),
        ),
        (
            "offsetresets.sluice.dev",
            resets_api
                .list(&ListParams::default().limit(1))
                .await
                .map(|_| ()),
        ),
        (
            "replays.sluice.dev",
            replays_api
                .list(&ListParams::default().limit(1))
                .await
                .map(|_| ()),
        ),
    ] {
        r.map_err(|e| {
            anyhow::anyhow!(
                "cannot list {what}: {e} (are the CRDs installed? kubectl apply -k manifests/crds)"
            )
        })?;
    }
    let topic_controller = Controller::new(topics_api, watcher::Config::default());
    let ctx = Arc::new(Ctx {
        recorder: Recorder::new(
            kube.clone(),
            Reporter {
                controller: MANAGER.to_string(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        kube,
        kafka,
        metrics,
        options,
        topics: topic_controller.store(),
        replays: Mutex::new(HashMap::new()),
        stop: stop.clone(),
    });
    // Each controller stops taking work when `stop` is cancelled.
    let on_stop = || stop.clone().cancelled_owned();
    let topics = topic_controller
        .graceful_shutdown_on(on_stop())
        .run(reconcile_topic, error_policy::<Topic>("Topic"), ctx.clone())
        .for_each(log_outcome("Topic"));
    let resets = Controller::new(resets_api, watcher::Config::default())
        .graceful_shutdown_on(on_stop())
        .run(
            reconcile_reset,
            error_policy::<OffsetReset>("OffsetReset"),
            ctx.clone(),
        )
        .for_each(log_outcome("OffsetReset"));
    let replays = Controller::new(replays_api, watcher::Config::default())
        .graceful_shutdown_on(on_stop())
        .run(
            reconcile_replay,
            error_policy::<Replay>("Replay"),
            ctx.clone(),
        )
        .for_each(log_outcome("Replay"));
    tracing::info!("sluice-operator: controllers running");
    tokio::join!(topics, resets, replays);
    // Let running replays finish their write in flight and record where
    // they stopped.
    let handles: Vec<_> = ctx.replays.lock().await.drain().map(|(_, h)| h).collect();
    for h in handles {
        let _ = h.await;
    }
    tracing::info!("sluice-operator: stopped");
    Ok(())
}
