//! The real `sluice-broker` binary as a child process.
//!
//! The binary is found through `SLUICE_BROKER_BIN` or next to the running test
//! executable (`target/<profile>/sluice-broker`), so it must be built in the
//! same profile as the tests (`scripts/test.sh` builds it first).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use crate::wait::wait_for;

/// How long a broker may take to print its listening line.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a broker may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

const LISTENING: &str = "sluice-broker listening on ";
const LOG_TAIL_LINES: usize = 80;

/// Extra settings for a broker start.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    /// Written to `broker.yaml` in the broker's temp dir and passed as `--config`.
    pub config_yaml: Option<String>,
    /// Appended to the command line as is.
    pub extra_args: Vec<String>,
}

/// A running (or stopped) `sluice-broker` with its own data directory.
///
/// Dropping it kills the process and prints the tail of its log; the test
/// harness shows that output only for failing tests.
pub struct BrokerProcess {
    bin: PathBuf,
    dir: TempDir,
    data_dir: PathBuf,
    log_path: PathBuf,
    config_path: Option<PathBuf>,
    opts: BrokerOptions,
    child: Option<Child>,
    addr: SocketAddr,
    starts: u32,
}

/// Finds the broker binary: `SLUICE_BROKER_BIN`, else `sluice-broker` in the
/// directory of the current executable or its parent (test executables live in
/// `target/<profile>/deps/`).
pub fn broker_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SLUICE_BROKER_BIN") {
        let path = PathBuf::from(path);
        if path.is_file() {
            return Ok(path);
        }
        bail!("SLUICE_BROKER_BIN={} is not a file", path.display());
    }
    let exe = std::env::current_exe().context("locating the test executable")?;
    let mut dir = exe.parent();
    for _ in 0..2 {
        let Some(d) = dir else { break };
        let candidate = d.join("sluice-broker");
        if candidate.is_file() {
            return Ok(candidate);
        }
        dir = d.parent();
    }
    bail!(
        "sluice-broker binary not found near {}: build it in the same profile first \
         (`cargo build --release -p sluice-broker`; scripts/test.sh does this) or set SLUICE_BROKER_BIN",
        exe.display()
    )
}

impl BrokerProcess {
    /// Starts a broker on `127.0.0.1:0` with a fresh data directory.
    pub fn start() -> Result<Self> {
        Self::start_with(BrokerOptions::default())
    }

    /// Starts a broker with a config file and/or extra arguments.
    pub fn start_with(opts: BrokerOptions) -> Result<Self> {
        let bin = broker_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("sluice-test-")
            .tempdir()
            .context("creating the broker temp dir")?;
        let data_dir = dir.path().join("data");
        std::fs::create_dir_all(&data_dir)?;
        let log_path = dir.path().join("broker.log");
        File::create(&log_path).context("creating the broker log")?;
        let config_path = match &opts.config_yaml {
            Some(yaml) => {
                let path = dir.path().join("broker.yaml");
                std::fs::write(&path, yaml)?;
                Some(path)
            }
            None => None,
        };
        let mut broker = BrokerProcess {
            bin,
            dir,
            data_dir,
            log_path,
            config_path,
            opts,
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            starts: 0,
        };
        broker.spawn(0)?;
        Ok(broker)
    }

    /// `host:port` for clients.
    pub fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// The address the broker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The file holding the broker's stderr (and stdout after the listening line).
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The OS process id, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status. Fails if
    /// the broker is not gone within [`STOP_TIMEOUT`] (it is then killed).
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("stop: the broker is not running");
        };
        let pid = child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .context("running kill -TERM")?;
        if !status.success() {
            // Already exited: reap it below.
            self.note(&format!("kill -TERM {pid} returned {status}"));
        }
        let waited = wait_for(STOP_TIMEOUT, "the broker to exit after SIGTERM", || {
            Ok(child.try_wait()?)
        });
        match waited {
            Ok(status) => {
                self.note(&format!("broker exited after SIGTERM: {status}"));
                Ok(status)
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e.context(self.log_tail(LOG_TAIL_LINES)))
            }
        }
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            bail!("kill9: the broker is not running");
        };
        child.kill().context("sending SIGKILL")?;
        let status = child.wait()?;
        self.note(&format!("broker killed with SIGKILL: {status}"));
        Ok(())
    }

    /// Starts the broker again on the same data directory. Stops it first
    /// (SIGTERM, must exit 0) if it is still running. Reuses the port when it
    /// can, so clients holding the old bootstrap address reconnect; otherwise
    /// takes a new one (check [`bootstrap`](Self::bootstrap) afterwards).
    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            let status = self.stop()?;
            if !status.success() {
                bail!("broker exited with {status} on SIGTERM before restart");
            }
        }
        let port = self.addr.port();
        match self.spawn(port) {
            Ok(()) => Ok(()),
            Err(first) => {
                self.note(&format!(
                    "restart on port {port} failed ({first:#}); trying a new port"
                ));
                self.spawn(0)
            }
        }
    }

    /// The last `lines` lines of the broker log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        let from = all.len().saturating_sub(lines);
        format!(
            "--- tail of {} ({} of {} lines) ---\n{}\n--- end of broker log ---",
            self.log_path.display(),
            all.len() - from,
            all.len(),
            all[from..].join("\n")
        )
    }

    fn note(&self, line: &str) {
        if let Ok(mut f) = OpenOptions::new().append(true).open(&self.log_path) {
            let _ = writeln!(f, "==== [sluice-tests] {line}");
        }
    }

    fn spawn(&mut self, port: u16) -> Result<()> {
        self.starts += 1;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(&self.data_dir);
        if let Some(config) = &self.config_path {
            cmd.arg("--config").arg(config);
        }
        cmd.args(&self.opts.extra_args);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        // Plain text in the log file, no colour escapes.
        cmd.env("NO_COLOR", "1");
        self.note(&format!("start #{}: {cmd:?}", self.starts));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .context("opening the broker log")?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))?;
        let stdout = child.stdout.take().context("broker stdout not piped")?;
        let log_for_stdout = OpenOptions::new().append(true).open(&self.log_path)?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || pump_stdout(stdout, log_for_stdout, tx));
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                self.addr = addr;
                self.child = Some(child);
                Ok(())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(anyhow!(
                    "broker did not print '{LISTENING}HOST:PORT' within {START_TIMEOUT:?}\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                Err(anyhow!(
                    "broker exited ({status}) before listening\n{}",
                    self.log_tail(LOG_TAIL_LINES)
                ))
            }
        }
    }
}

/// Reads the broker's stdout: reports the listening address once, copies every
/// line to the log, and keeps draining so the broker never blocks on a full pipe.
fn pump_stdout(stdout: std::process::ChildStdout, mut log: File, tx: mpsc::Sender<SocketAddr>) {
    let mut tx = Some(tx);
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        let _ = writeln!(log, "[stdout] {line}");
        if let Some(pos) = line.find(LISTENING) {
            let rest = line[pos + LISTENING.len()..].trim();
            if let (Ok(addr), Some(tx)) = (rest.parse::<SocketAddr>(), tx.take()) {
                let _ = tx.send(addr);
            }
        }
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Captured by the test harness and shown only when the test fails.
        eprintln!(
            "broker data dir was {} ({} start(s))\n{}",
            self.dir.path().display(),
            self.starts,
            self.log_tail(LOG_TAIL_LINES)
        );
    }
}
