//! A real Kubernetes API server for the operator suite, and the
//! `sluice-operator` process under test.
//!
//! [`ApiServer`] starts etcd and kube-apiserver on loopback with
//! `tests/k8s/apiserver.sh` (binaries built once by
//! `tests/k8s/build-kube-apiserver.sh`; scripts/test.sh does) and stops them
//! on drop. [`kubectl`] runs kubectl against it. [`OperatorProcess`] runs
//! `sluice-operator run` against it and a broker, and can be killed and
//! started again.

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use tempfile::TempDir;

use crate::cmd::{self, CmdOutput};

/// The repository root (tests/ is one level down).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// A binary built next to the test executables.
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the test executable")?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .find(|c| c.is_file())
        .with_context(|| {
            format!(
                "{name} not found near {}: build it first (`cargo build --release --workspace --bins`; scripts/test.sh does)",
                exe.display()
            )
        })
}

/// Three consecutive free loopback ports (the API server's, etcd's client
/// and peer ports).
fn free_port_triple() -> Result<u16> {
    for _ in 0..200 {
        let first = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if first > 65000 {
            continue;
        }
        let held: Result<Vec<TcpListener>, _> = (first..first + 3)
            .map(|p| TcpListener::bind(("127.0.0.1", p)))
            .collect();
        if held.is_ok() {
            return Ok(first);
        }
    }
    bail!("no three consecutive free ports on 127.0.0.1")
}

/// etcd + kube-apiserver on loopback; stopped on drop.
pub struct ApiServer {
    dir: TempDir,
    pub kubeconfig: PathBuf,
}

impl ApiServer {
    pub fn start() -> Result<ApiServer> {
        let dir = tempfile::Builder::new().prefix("sluice-k8s-").tempdir()?;
        let script = repo_root().join("tests/k8s/apiserver.sh");
        let mut last = None;
        for _ in 0..3 {
            let port = free_port_triple()?;
            let out = cmd::run(
                Command::new("bash")
                    .arg(&script)
                    .arg("up")
                    .arg(dir.path())
                    .arg(port.to_string()),
                None,
                Duration::from_secs(180),
            )?;
            if out.status.success() {
                let kubeconfig = PathBuf::from(out.stdout.trim());
                return Ok(ApiServer { dir, kubeconfig });
            }
            // A port taken between the check and the start: try others.
            last = Some(out);
        }
        bail!(
            "kube-apiserver did not start (is it built? tests/k8s/build-kube-apiserver.sh): {}",
            last.map(|o| o.to_string()).unwrap_or_default()
        )
    }

    /// The API server's log tail, for failure messages.
    pub fn log_tail(&self) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("apiserver.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// `kubectl ARGS` against this server.
    pub fn kubectl(&self, args: &[&str]) -> Result<CmdOutput> {
        self.kubectl_stdin(args, None)
    }

    /// `kubectl ARGS` with `stdin` (for `apply -f -`).
    pub fn kubectl_stdin(&self, args: &[&str], stdin: Option<&str>) -> Result<CmdOutput> {
        let kubectl = cmd::find_program(
            "kubectl",
            "install it (apt-get install kubernetes-client); scripts/test.sh does",
        )?;
        cmd::run(
            Command::new(kubectl)
                .env("KUBECONFIG", &self.kubeconfig)
                .args(args),
            stdin.map(str::as_bytes),
            Duration::from_secs(60),
        )
    }

    /// `kubectl apply -f -` of `yaml`, which must succeed.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        self.kubectl_stdin(&["apply", "--validate=false", "-f", "-"], Some(yaml))?
            .require_success()?;
        Ok(())
    }

    /// `kubectl get KIND NAME -o json`, or `None` when it does not exist.
    pub fn get(&self, kind: &str, name: &str) -> Result<Option<serde_json::Value>> {
        let out = self.kubectl(&["get", kind, name, "-o", "json"])?;
        if !out.status.success() {
            if out.stderr.contains("NotFound") || out.stderr.contains("not found") {
                return Ok(None);
            }
            bail!("kubectl get {kind} {name}: {out}");
        }
        Ok(Some(serde_json::from_str(&out.stdout)?))
    }

    /// Installs the CRDs from manifests/crds.
    pub fn install_crds(&self) -> Result<()> {
        let dir = repo_root().join("manifests/crds");
        let dir = dir.to_string_lossy().to_string();
        // The v1.20 server does not know x-kubernetes-validations (CEL);
        // kubectl's client-side validation would refuse the field.
        self.kubectl(&["apply", "--validate=false", "-k", &dir])?
            .require_success()?;
        for crd in [
            "topics.sluice.dev",
            "offsetresets.sluice.dev",
            "replays.sluice.dev",
        ] {
            self.kubectl(&[
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                &format!("crd/{crd}"),
            ])?
            .require_success()?;
        }
        Ok(())
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let script = repo_root().join("tests/k8s/apiserver.sh");
        let _ = Command::new("bash")
            .arg(script)
            .arg("down")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `sluice-operator run` against an API server and a broker.
pub struct OperatorProcess {
    child: Option<Child>,
    args: Vec<String>,
    kubeconfig: PathBuf,
    log: PathBuf,
    _dir: TempDir,
    pub metrics_addr: String,
}

impl OperatorProcess {
    /// Starts the operator with `--requeue 2s` so drift is seen quickly.
    pub fn start(api: &ApiServer, bootstrap: &str) -> Result<OperatorProcess> {
        Self::start_with(api, bootstrap, &[])
    }

    /// Like [`start`](Self::start), with more arguments for `run`.
    pub fn start_with(api: &ApiServer, bootstrap: &str, extra: &[&str]) -> Result<OperatorProcess> {
        let dir = tempfile::Builder::new()
            .prefix("sluice-operator-")
            .tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let metrics_addr = format!("127.0.0.1:{port}");
        let mut op = OperatorProcess {
            child: None,
            args: vec![
                "run".into(),
                "--bootstrap".into(),
                bootstrap.into(),
                "--metrics-listen".into(),
                metrics_addr.clone(),
                "--requeue".into(),
                "2s".into(),
            ],
            kubeconfig: api.kubeconfig.clone(),
            log: dir.path().join("operator.log"),
            _dir: dir,
            metrics_addr,
        };
        op.args.extend(extra.iter().map(|a| a.to_string()));
        op.spawn()?;
        Ok(op)
    }

    /// Sends `kill -SIGNAL` (STOP, CONT, ...) to the running operator.
    pub fn signal(&self, signal: &str) -> Result<()> {
        let c = self.child.as_ref().context("the operator is not running")?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(c.id().to_string())
            .status()?;
        ensure!(status.success(), "kill -{signal} failed: {status}");
        Ok(())
    }

    /// The exit status, once the process has exited by itself.
    pub fn exited(&mut self) -> Result<Option<std::process::ExitStatus>> {
        match self.child.as_mut() {
            Some(c) => Ok(c.try_wait()?),
            None => Ok(None),
        }
    }

    fn spawn(&mut self) -> Result<()> {
        let log = File::options().create(true).append(true).open(&self.log)?;
        let child = Command::new(workspace_binary("sluice-operator")?)
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting sluice-operator")?;
        self.child = Some(child);
        Ok(())
    }

    /// kill -9: no chance to record anything.
    pub fn kill9(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("the operator is not running")
        };
        let pid = i32::try_from(c.id())?;
        Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()?;
        let status = crate::wait_for(Duration::from_secs(30), "the operator to exit", || {
            Ok(c.try_wait()?)
        })?;
        Ok(status)
    }

    pub fn restart(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.kill9()?;
        }
        self.spawn()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// GET /metrics.
    pub fn metrics(&self) -> Result<String> {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(&self.metrics_addr)?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")?;
        let mut body = String::new();
        s.read_to_string(&mut body)?;
        Ok(body)
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
        if std::thread::panicking() {
            eprintln!("--- sluice-operator log ---\n{}", self.log_tail());
        }
    }
}
