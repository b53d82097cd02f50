//! The bundled broker: `sluice` without `--bootstrap` runs a single-node
//! Sluice broker inside this process, on 127.0.0.1 with a free port and its
//! data in `--data-dir` (`./sluice-data` by default), and opens the console
//! on it. Stopping it closes its logs cleanly, as SIGTERM does for
//! `sluice-broker`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use sluice_broker::config::BrokerConfig;
use sluice_broker::server;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Where the bundled broker keeps its data unless `--data-dir` says otherwise.
pub const DEFAULT_DATA_DIR: &str = "./sluice-data";

/// A running bundled broker.
pub struct Bundled {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), sluice_broker::broker::StartError>>,
}

/// Starts the broker on `data_dir`; returns once it listens (it finishes
/// starting in the background; the console retries until it answers).
pub async fn start(data_dir: &Path) -> anyhow::Result<Bundled> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on 127.0.0.1: {e}"))?;
    let addr = listener.local_addr()?;
    let config = BrokerConfig {
        data_dir: data_dir.to_path_buf(),
        listen: addr.to_string(),
        ..BrokerConfig::default()
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server::run(config, listener, async move {
        let _ = stopped.await;
    }));
    Ok(Bundled {
        addr,
        data_dir: data_dir.to_path_buf(),
        stop,
        task,
    })
}

impl Bundled {
    /// Stops the broker: in-flight requests finish, logs are flushed and
    /// closed.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(
                "the bundled broker on {} failed: {e}",
                self.data_dir.display()
            )),
            Err(e) => Err(anyhow::anyhow!("the bundled broker task failed: {e}")),
        }
    }
}
