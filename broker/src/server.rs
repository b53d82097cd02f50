//! The accept loop and graceful shutdown.
//!
//! `run` takes a bound listener and a shutdown future, so tests bind port 0.
//! On shutdown it stops accepting, lets connections finish the requests they
//! have read (up to `shutdown.timeout.ms`), then flushes and closes every log.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::{Broker, StartError, READY_TIMEOUT_MS};
use crate::config::BrokerConfig;
use crate::connection;

/// The address clients are told to connect to: the configured advertised
/// listener, else the bound address (with a wildcard host replaced by this
/// machine's host name).
pub fn advertised_address(config: &BrokerConfig, bound: SocketAddr) -> (String, u16) {
    if let Some((host, port)) = &config.advertised_listener {
        let port = if *port == 0 { bound.port() } else { *port };
        return (host.clone(), port);
    }
    let host = if bound.ip().is_unspecified() {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".into())
    } else {
        bound.ip().to_string()
    };
    (host, bound.port())
}

/// Binds the controller port when this broker has one.
pub async fn bind_controller(config: &BrokerConfig) -> std::io::Result<Option<TcpListener>> {
    match &config.controller_listen {
        Some(addr) if !config.voters.is_empty() => TcpListener::bind(addr).await.map(Some),
        _ => Ok(None),
    }
}

/// Raises the soft limit on open files to the hard limit: each segment
/// keeps one file open (its `.log`; the indexes are mapped, not open) and
/// each client connection one socket, so a thousand partitions exceed the
/// usual soft limit of 1024 long before the hard one. Logs the limit either
/// way.
#[allow(unsafe_code)]
fn raise_open_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    tracing::info!(
        limit = lim.rlim_cur,
        "open files limit: segments plus client connections must stay below it \
         (each segment keeps 1 file open, its .log, as its indexes are mapped \
         without a descriptor; each connection is 1 socket)"
    );
}

/// Opens the broker on `config.data_dir` and serves `listener` until
/// `shutdown` completes.
pub async fn run(
    config: BrokerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), StartError> {
    let bound = listener
        .local_addr()
        .map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let (host, port) = advertised_address(&config, bound);
    raise_open_files_limit();
    let controller = bind_controller(&config)
        .await
        .map_err(|e| StartError::Quorum(format!("cannot listen on the controller address: {e}")))?;
    let broker = Broker::start(config, host, port, controller).await?;
    broker
        .wait_ready(Duration::from_millis(
            broker
                .config
                .broker_session_timeout_ms
                .max(READY_TIMEOUT_MS),
        ))
        .await;
    serve(broker, listener, shutdown).await;
    Ok(())
}

/// Serves an opened broker; closes its logs before returning.
pub async fn serve(broker: Arc<Broker>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();
    let background = tokio::spawn(broker.clone().run_background(cancel.clone()));
    tokio::pin!(shutdown);
    // Controlled shutdown runs while connections are still accepted: clients
    // keep being served until leadership has moved, then re-route.
    let handoff = async {
        (&mut shutdown).await;
        broker.controlled_shutdown().await;
    };
    tokio::pin!(handoff);
    loop {
        tokio::select! {
            _ = &mut handoff => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    tracker.spawn(connection::serve(broker.clone(), stream, peer, cancel.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::info!("shutting down: no new connections, finishing in-flight requests");
    drop(listener);
    cancel.cancel();
    tracker.close();
    let deadline = Duration::from_millis(broker.config.shutdown_timeout_ms);
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "in-flight requests did not finish within shutdown.timeout.ms; closing anyway"
        );
    }
    let _ = background.await;
    broker.stop_cluster().await;
    let b = broker.clone();
    let _ = tokio::task::spawn_blocking(move || b.close()).await;
    tracing::info!("logs flushed and closed");
}
