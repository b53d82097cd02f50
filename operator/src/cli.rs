//! `sluice-operator apply` and `diff`: the planner and executor on a folder
//! of manifests, without Kubernetes.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use sluice_broker::client::{Client, ClientConfig};

use crate::exec;
use crate::manifest::{self, Loaded};
use crate::plan::{self, Options, Plan};

/// How an apply or diff ended, for the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to do, or everything done.
    Clean,
    /// `diff`: changes are pending.
    Pending,
    /// Bad manifests, a refusal, a failed action or an unreachable cluster.
    Failed,
}

impl Outcome {
    pub fn code(self) -> u8 {
        match self {
            Outcome::Clean => 0,
            Outcome::Failed => 1,
            Outcome::Pending => 2,
        }
    }
}

pub struct Request {
    pub paths: Vec<PathBuf>,
    pub bootstrap: String,
    pub prune: bool,
    /// `apply --dry-run` and `diff`: plan only.
    pub dry_run: bool,
    pub diff: bool,
}

/// Runs an apply or diff, writing the plan and results to `out`.
pub async fn run(req: &Request, out: &mut String) -> Outcome {
    let loaded = match manifest::load(&req.paths) {
        Ok(l) => l,
        Err(problems) => {
            let _ = writeln!(
                out,
                "nothing applied: {} problem(s) in the manifests:",
                problems.len()
            );
            for p in problems {
                let _ = writeln!(out, "  {p}");
            }
            return Outcome::Failed;
        }
    };
    let client = match Client::connect(
        &req.bootstrap,
        ClientConfig {
            client_id: "sluice-operator".to_string(),
            request_timeout: Duration::from_secs(60),
            ..ClientConfig::default()
        },
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(out, "cannot reach the cluster at {}: {e}", req.bootstrap);
            return Outcome::Failed;
        }
    };
    let names: Vec<String> = loaded.topics.iter().map(|t| t.name.clone()).collect();
    let observed = match exec::observe(&client, &names).await {
        Ok(o) => o,
        Err(e) => {
            let _ = writeln!(out, "cannot read the cluster at {}: {e}", req.bootstrap);
            return Outcome::Failed;
        }
    };
    let plan = plan::plan(&loaded.topics, &observed, Options { prune: req.prune });
    render(&loaded, &plan, out);
    let refused = plan.refusals().count() > 0;
    if req.dry_run || req.diff {
        return if refused {
            Outcome::Failed
        } else if req.diff && plan.has_changes() {
            Outcome::Pending
        } else {
            Outcome::Clean
        };
    }
    let steps: Vec<&plan::Step> = plan.steps().collect();
    let mut failed = 0;
    if !steps.is_empty() {
        let results = exec::execute(&client, &steps).await;
        for r in &results {
            if let Err(e) = &r.result {
                failed += 1;
                let _ = writeln!(out, "FAILED {}: {e}", r.step.action.topic());
            }
        }
        let _ = writeln!(
            out,
            "applied {} of {} change(s)",
            results.len() - failed,
            results.len()
        );
    }
    if failed > 0 || refused {
        Outcome::Failed
    } else {
        Outcome::Clean
    }
}

/// The plan as people read it: one block per topic that changes or is
/// refused, a count of those already in sync.
pub fn render(loaded: &Loaded, plan: &Plan, out: &mut String) {
    let mut in_sync = 0;
    for t in &plan.topics {
        if let Some(why) = &t.skipped {
            let _ = writeln!(out, "~ {} ({}): skipped: {why}", t.topic, t.source);
            continue;
        }
        if t.is_noop() {
            in_sync += 1;
            continue;
        }
        let _ = writeln!(out, "{} ({}):", t.topic, t.source);
        for s in &t.steps {
            let _ = writeln!(out, "  {}", s.action);
            let _ = writeln!(out, "    because {}", s.reason);
        }
        for r in &t.refusals {
            let _ = writeln!(out, "  REFUSED ({}): {r}", r.reason());
        }
    }
    for s in &plan.prune {
        let _ = writeln!(
            out,
            "{}:\n  {}\n    because {}",
            s.action.topic(),
            s.action,
            s.reason
        );
    }
    for (source, _) in &loaded.offset_resets {
        let _ = writeln!(
            out,
            "~ {source}: not run here: OffsetReset is one-shot and runs in-cluster; from a shell use `sluice offsets reset`"
        );
    }
    for (source, _) in &loaded.replays {
        let _ = writeln!(
            out,
            "~ {source}: not run here: Replay is one-shot and runs in-cluster; from a shell use `sluice replay`"
        );
    }
    let changes = plan.steps().count();
    let refusals = plan.refusals().count();
    let _ = writeln!(
        out,
        "{} topic(s) declared: {in_sync} in sync, {changes} change(s) planned, {refusals} refused",
        plan.topics.len()
    );
}
