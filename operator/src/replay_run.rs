//! Running a `Replay` resource: the copy runs in a task of its own while
//! its progress is written to the status about once a second. The status
//! holds each partition's next offset, so an operator that restarts (or a
//! copy that fails part way) continues from there.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use sluice_broker::admin::replay::{self, ExecOptions, Progress, ResumeState};
use sluice_broker::client::{
    Client as KafkaClient, ClientConfig, IdempotentProducer, ProducerConfig,
};
use tokio::sync::watch;

use crate::controller::{condition, publish_event, write_status, Ctx, Error};
use crate::crd::{Replay, ReplayPartitionStatus, ReplayStatus};
use crate::oneshot;

const STATUS_EVERY: Duration = Duration::from_secs(1);

pub async fn reconcile(r: Arc<Replay>, ctx: &Arc<Ctx>) -> Result<Action, Error> {
    let uid = r.uid().unwrap_or_default();
    let generation = r.metadata.generation;
    let prev = r.status.clone().unwrap_or_default();
    if prev.observed_generation == generation
        && matches!(prev.phase.as_deref(), Some("Completed") | Some("Failed"))
    {
        return Ok(Action::await_change());
    }
    {
        let mut running = ctx.replays.lock().await;
        if let Some(h) = running.get(&uid) {
            if !h.is_finished() {
                return Ok(Action::requeue(Duration::from_secs(30)));
            }
            running.remove(&uid);
        }
    }
    if ctx.stop.is_cancelled() {
        return Ok(Action::await_change());
    }
    let ns = r.namespace().unwrap_or_else(|| "default".to_string());
    let api: Api<Replay> = Api::namespaced(ctx.kube.clone(), &ns);
    let name = r.name_any();
    let failed = |reason: &str, message: String| ReplayStatus {
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
        ..prev.clone()
    };
    let mut spec = match oneshot::check_replay(&r.spec) {
        Ok(s) => s,
        Err((field, msg)) => {
            let m = format!("{field}: {msg}");
            ctx.metrics.failed("Replay", "InvalidSpec");
            publish_event(
                ctx,
                r.as_ref(),
                EventType::Warning,
                "InvalidSpec",
                "Plan",
                m.clone(),
            )
            .await;
            write(&api, &name, &failed("InvalidSpec", m)).await?;
            return Ok(Action::await_change());
        }
    };
    let resuming = prev.observed_generation == generation && !prev.partitions.is_empty();
    if resuming {
        spec.resume = Some(ResumeState {
            topic: spec.source_topic.clone(),
            partitions: prev
                .partitions
                .iter()
                .map(|p| (p.partition, (p.next, p.end)))
                .collect(),
        });
    }
    let dest = match &r.spec.destination.bootstrap {
        Some(b) => KafkaClient::connect(
            b,
            ClientConfig {
                client_id: "sluice-operator-replay".into(),
                ..ClientConfig::default()
            },
        )
        .await
        .map_err(|e| Error::Other(format!("cannot reach the destination cluster {b}: {e}")))?,
        None => ctx.kafka.clone(),
    };
    let observed = replay::observe(&ctx.kafka, &dest, &spec).await?;
    let plan = match replay::plan(&spec, &observed) {
        Ok(p) => p,
        Err(e) => {
            ctx.metrics.failed("Replay", "PlanFailed");
            publish_event(
                ctx,
                r.as_ref(),
                EventType::Warning,
                "PlanFailed",
                "Plan",
                e.to_string(),
            )
            .await;
            write(&api, &name, &failed("PlanFailed", e.to_string())).await?;
            return Ok(Action::await_change());
        }
    };
    let copied_before: BTreeMap<i32, u64> = if resuming {
        prev.partitions
            .iter()
            .map(|p| (p.partition, p.copied))
            .collect()
    } else {
        BTreeMap::new()
    };
    let base = ReplayStatus {
        phase: Some("Running".into()),
        reason: Some(if resuming { "Resumed" } else { "Started" }.into()),
        message: Some(format!(
            "copying {} offset(s) from {} to {}",
            plan.total_offsets(),
            plan.source_topic,
            plan.dest_topic
        )),
        observed_generation: generation,
        conditions: vec![condition(
            &prev.conditions,
            "Complete",
            false,
            "Running",
            "copying".into(),
            generation,
        )],
        partitions: plan
            .ranges
            .iter()
            .map(|rg| ReplayPartitionStatus {
                partition: rg.partition,
                next: rg.start,
                end: rg.end,
                copied: copied_before.get(&rg.partition).copied().unwrap_or(0),
            })
            .collect(),
        records_copied: copied_before.values().sum(),
        started_at: prev
            .started_at
            .clone()
            .filter(|_| resuming)
            .or_else(|| Some(now())),
        completed_at: None,
    };
    // Record the ranges before copying: a restart resumes from them.
    write(&api, &name, &base).await?;
    publish_event(
        ctx,
        r.as_ref(),
        EventType::Normal,
        if resuming { "Resumed" } else { "Started" },
        "Replay",
        base.message.clone().unwrap_or_default(),
    )
    .await;

    let ctx2 = ctx.clone();
    let replay_obj = r.clone();
    let rate = r.spec.rate.map(|n| n as f64);
    let handle = tokio::spawn(async move {
        let ctx = ctx2;
        let (tx, mut rx) = watch::channel::<Option<Progress>>(None);
        let writer = {
            let api = api.clone();
            let name = name.clone();
            let base = base.clone();
            let copied_before = copied_before.clone();
            tokio::spawn(async move {
                while rx.changed().await.is_ok() {
                    let p = rx.borrow_and_update().clone();
                    if let Some(p) = p {
                        let st = with_progress(&base, &p, &copied_before);
                        if let Err(e) = write(&api, &name, &st).await {
                            tracing::warn!("replay {name}: cannot write progress: {e}");
                        }
                    }
                    tokio::time::sleep(STATUS_EVERY).await;
                }
            })
        };
        let mut producer = match IdempotentProducer::new(dest, ProducerConfig::default()).await {
            Ok(p) => p,
            Err(e) => {
                writer.abort();
                let mut st = base.clone();
                st.message = Some(format!("cannot start the producer: {e}; retrying"));
                let _ = write(&api, &name, &st).await;
                return;
            }
        };
        let cancel = ctx.stop.child_token();
        let opts = ExecOptions {
            rate,
            ..ExecOptions::default()
        };
        let result = replay::execute(
            &plan,
            &ctx.kafka,
            Some(&mut producer),
            &opts,
            &cancel,
            |p| {
                let _ = tx.send(Some(p.clone()));
            },
        )
        .await;
        drop(tx);
        let _ = writer.await;
        let st = match result {
            Ok(outcome) if !outcome.cancelled => {
                let mut st = with_progress(&base, &outcome.progress, &copied_before);
                st.phase = Some("Completed".into());
                st.reason = Some("Completed".into());
                let msg = format!(
                    "copied {} record(s) from {} to {}",
                    st.records_copied, plan.source_topic, plan.dest_topic
                );
                st.message = Some(msg.clone());
                st.conditions = vec![condition(
                    &base.conditions,
                    "Complete",
                    true,
                    "Completed",
                    msg.clone(),
                    base.observed_generation,
                )];
                st.completed_at = Some(now());
                publish_event(
                    &ctx,
                    replay_obj.as_ref(),
                    EventType::Normal,
                    "Completed",
                    "Replay",
                    msg,
                )
                .await;
                st
            }
            Ok(outcome) => {
                let mut st = with_progress(&base, &outcome.progress, &copied_before);
                st.message = Some("stopped: the operator is shutting down; the copy resumes from here when it starts again".into());
                st
            }
            Err(replay::ReplayError::Interrupted { reason, resume }) => {
                let mut st = base.clone();
                for p in &mut st.partitions {
                    if let Some((next, _)) = resume.partitions.get(&p.partition) {
                        p.next = *next;
                    }
                }
                ctx.metrics.failed("Replay", "Interrupted");
                st.message = Some(format!("interrupted: {reason}; resuming"));
                st
            }
            Err(e) => {
                ctx.metrics.failed("Replay", "CopyFailed");
                publish_event(
                    &ctx,
                    replay_obj.as_ref(),
                    EventType::Warning,
                    "CopyFailed",
                    "Replay",
                    e.to_string(),
                )
                .await;
                let mut st = base.clone();
                st.message = Some(format!(
                    "copy failed: {e}; retrying from the last acknowledged offsets"
                ));
                st
            }
        };
        if let Err(e) = write(&api, &name, &st).await {
            tracing::warn!("replay {name}: cannot write the final status: {e}");
        }
    });
    ctx.replays.lock().await.insert(uid, handle);
    Ok(Action::requeue(Duration::from_secs(30)))
}

fn with_progress(base: &ReplayStatus, p: &Progress, before: &BTreeMap<i32, u64>) -> ReplayStatus {
    let mut st = base.clone();
    for part in &mut st.partitions {
        if let Some(pp) = p.partitions.get(&part.partition) {
            part.next = pp.next;
            part.copied = before.get(&part.partition).copied().unwrap_or(0) + pp.records;
        }
    }
    st.records_copied = st.partitions.iter().map(|p| p.copied).sum();
    st
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn write(api: &Api<Replay>, name: &str, st: &ReplayStatus) -> Result<(), Error> {
    write_status(
        api,
        name,
        "Replay",
        serde_json::to_value(st).map_err(|e| Error::Other(e.to_string()))?,
    )
    .await
}
