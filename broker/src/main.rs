//! `sluice-broker`: parses the configuration, sets up logging and runs the
//! library's server until SIGTERM or SIGINT.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sluice_broker::alloc::GuardedAlloc;
use sluice_broker::broker::{Broker, READY_TIMEOUT_MS};
use sluice_broker::config::{BrokerConfig, Cli};
use sluice_broker::server;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

#[global_allocator]
static ALLOC: GuardedAlloc = GuardedAlloc;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config = match BrokerConfig::load(&cli, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice-broker: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice-broker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice-broker: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: BrokerConfig) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let bound = listener.local_addr()?;
    let (host, port) = server::advertised_address(&config, bound);
    let data_dir = config.data_dir.clone();
    let controller = server::bind_controller(&config).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen on the controller address {}: {e}",
            config.controller_listen.as_deref().unwrap_or_default()
        )
    })?;
    let broker = Broker::start(config, host, port, controller).await?;
    if !broker
        .wait_ready(Duration::from_millis(
            broker
                .config
                .broker_session_timeout_ms
                .max(READY_TIMEOUT_MS),
        ))
        .await
    {
        tracing::warn!("not ready within 30 s (registered with the controller, and __consumer_offsets placed, which needs offsets.topic.replication.factor live brokers); serving anyway");
    }
    tracing::info!(node = broker.node_id(), data_dir = %data_dir.display(), advertised = %format!("{}:{}", broker.advertised_host, broker.advertised_port), "broker started");
    println!("sluice-broker listening on {bound}");
    std::io::stdout().flush()?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received"),
            _ = int.recv() => tracing::info!("SIGINT received"),
        }
    };
    server::serve(broker, listener, shutdown).await;
    Ok(())
}
