//! `sluice-operator`: `run` (in cluster), `apply` / `diff` (a folder of
//! manifests, no Kubernetes needed) and `crds` (print the CRD YAML).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use sluice_broker::client::{Client, ClientConfig};
use sluice_operator::controller::{self, RunOptions};
use sluice_operator::lease::{self, Leadership, LeaseConfig};
use sluice_operator::metrics::{self, Metrics};
use sluice_operator::{cli, crd};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "sluice-operator",
    version,
    about = "Keeps Kafka topics in the state their YAML describes; runs offset resets and replays"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// Leader election, for running several replicas of `run`.
#[derive(clap::Args)]
struct Election {
    /// Reconcile only while holding a coordination.k8s.io Lease, so that
    /// several replicas can run and one of them works at a time.
    #[arg(long)]
    leader_elect: bool,
    /// Namespace of the Lease [default: the pod's (POD_NAMESPACE), else
    /// --namespace, else default].
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Name of the Lease.
    #[arg(long, default_value = "sluice-operator")]
    lease_name: String,
    /// How long a leader that stops renewing keeps the others waiting
    /// (at least 2s); it renews every fifth of this and gives up after two
    /// thirds of it without a renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: Duration,
    /// This process's name in the Lease [default: POD_NAME or the host
    /// name, then the process id].
    #[arg(long)]
    identity: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers in a Kubernetes cluster (KUBECONFIG or the pod's service account).
    Run {
        /// The Kafka cluster, host:port[,host:port].
        #[arg(long, env = "SLUICE_BOOTSTRAP")]
        bootstrap: String,
        /// Watch one namespace only [default: all].
        #[arg(long, env = "SLUICE_OPERATOR_NAMESPACE")]
        namespace: Option<String>,
        /// Serve Prometheus metrics and /healthz here.
        #[arg(
            long,
            env = "SLUICE_OPERATOR_METRICS_LISTEN",
            default_value = "0.0.0.0:9090"
        )]
        metrics_listen: SocketAddr,
        /// How often a topic in sync is checked again for drift (e.g. 30s, 5m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        requeue: Duration,
        /// Also remove topic-level configs that a Topic's spec does not mention.
        #[arg(long)]
        prune_configs: bool,
        #[command(flatten)]
        election: Election,
    },
    /// Make the cluster match a file or folder of manifests.
    Apply {
        /// Manifest file or folder (repeatable); Topic, OffsetReset, Replay and Strimzi KafkaTopic.
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "SLUICE_BOOTSTRAP")]
        bootstrap: String,
        /// Delete topics no manifest declares (never internal `__` topics), and
        /// topic-level configs a manifest does not mention.
        #[arg(long)]
        prune: bool,
        /// Print the plan, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print what apply would change; exit 0 when in sync, 2 when changes are pending, 1 on errors.
    Diff {
        #[arg(short = 'f', long = "filename", required = true)]
        paths: Vec<PathBuf>,
        #[arg(long, env = "SLUICE_BOOTSTRAP")]
        bootstrap: String,
        #[arg(long)]
        prune: bool,
    },
    /// Print the CRDs (what manifests/crds/ holds).
    Crds {
        /// Write one file per CRD into this folder instead of printing.
        #[arg(long)]
        out_dir: Option<PathBuf>,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    sluice_broker::admin::reset::duration::parse_duration(s)
        .map(|ms| Duration::from_millis(ms.max(0) as u64))
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async_main(args))
}

async fn async_main(args: Args) -> ExitCode {
    match args.command {
        Command::Crds { out_dir } => match crds(out_dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Apply {
            paths,
            bootstrap,
            prune,
            dry_run,
        } => {
            apply_or_diff(cli::Request {
                paths,
                bootstrap,
                prune,
                dry_run,
                diff: false,
            })
            .await
        }
        Command::Diff {
            paths,
            bootstrap,
            prune,
        } => {
            apply_or_diff(cli::Request {
                paths,
                bootstrap,
                prune,
                dry_run: true,
                diff: true,
            })
            .await
        }
        Command::Run {
            bootstrap,
            namespace,
            metrics_listen,
            requeue,
            prune_configs,
            election,
        } => match run(
            bootstrap,
            namespace,
            metrics_listen,
            RunOptions {
                requeue,
                prune_configs,
            },
            election,
        )
        .await
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

async fn apply_or_diff(req: cli::Request) -> ExitCode {
    let mut out = String::new();
    let outcome = cli::run(&req, &mut out).await;
    print!("{out}");
    ExitCode::from(outcome.code())
}

fn crds(out_dir: Option<PathBuf>) -> anyhow::Result<()> {
    for c in crd::all() {
        let text = crd::render_yaml(&c)?;
        match &out_dir {
            Some(dir) => {
                let name = c.metadata.name.clone().unwrap_or_default();
                std::fs::write(dir.join(format!("{name}.yaml")), text)?;
            }
            None => print!("---\n{text}"),
        }
    }
    Ok(())
}

async fn run(
    bootstrap: String,
    namespace: Option<String>,
    metrics_listen: SocketAddr,
    options: RunOptions,
    election: Election,
) -> anyhow::Result<()> {
    let lease = election
        .leader_elect
        .then(|| lease_config(&election, namespace.as_deref()))
        .transpose()?;
    let kube = kube::Client::try_default().await.map_err(|e| {
        anyhow::anyhow!("cannot reach Kubernetes: {e} (set KUBECONFIG or run in a pod)")
    })?;
    let kafka = Client::connect(
        &bootstrap,
        ClientConfig {
            client_id: "sluice-operator".into(),
            ..ClientConfig::default()
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("cannot reach the Kafka cluster at {bootstrap}: {e}"))?;
    let stop = CancellationToken::new();
    let metrics = Arc::new(Metrics::new());
    let listener = tokio::net::TcpListener::bind(metrics_listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {metrics_listen} for metrics: {e}"))?;
    tracing::info!("metrics on http://{}/metrics", listener.local_addr()?);
    tokio::spawn(metrics::serve(listener, metrics.clone(), stop.clone()));
    tokio::spawn(signals(stop.clone()));
    // A standby waits here, healthy, until it holds the Lease.
    let leadership = match lease {
        Some(config) => {
            let api = Api::<Lease>::namespaced(kube.clone(), &config.namespace);
            match lease::acquire(api, config, &stop).await {
                Some(l) => Some(l),
                None => return Ok(()),
            }
        }
        None => None,
    };
    // The controllers stop on a signal, or when the Lease is lost.
    let controllers = stop.child_token();
    if let Some(lost) = leadership.as_ref().map(Leadership::lost) {
        let controllers = controllers.clone();
        tokio::spawn(async move {
            lost.cancelled().await;
            controllers.cancel();
        });
    }
    metrics.set_leader(true);
    let ran = controller::run(
        kube,
        kafka,
        namespace,
        options,
        metrics.clone(),
        controllers,
    )
    .await;
    metrics.set_leader(false);
    if let Some(l) = leadership {
        if l.lost().is_cancelled() {
            ran?;
            anyhow::bail!(
                "lost the leader lease; exiting so that this process starts again as a candidate"
            );
        }
        l.release().await;
    }
    ran
}

fn lease_config(e: &Election, namespace: Option<&str>) -> anyhow::Result<LeaseConfig> {
    anyhow::ensure!(
        e.lease_duration >= Duration::from_secs(2),
        "--lease-duration {:?} is too short: use 2s or more (15s is the default)",
        e.lease_duration
    );
    Ok(LeaseConfig {
        namespace: e
            .lease_namespace
            .clone()
            .filter(|n| !n.is_empty())
            .or_else(|| namespace.map(str::to_string))
            .unwrap_or_else(|| "default".into()),
        name: e.lease_name.clone(),
        identity: e.identity.clone().unwrap_or_else(lease::default_identity),
        duration: e.lease_duration,
    })
}

/// SIGTERM or SIGINT: stop taking new work, let replays record where they are.
async fn signals(stop: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    stop.cancel();
}
