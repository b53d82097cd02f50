//! External clients (kcat, python3) run as processes with a deadline, their
//! output captured for assertions and for the failure message.

use std::fmt;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::wait::wait_for;

/// What a finished command printed.
#[derive(Debug)]
pub struct CmdOutput {
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CmdOutput {
    /// Fails with the full output unless the command exited 0.
    pub fn require_success(self) -> Result<Self> {
        if self.status.success() {
            Ok(self)
        } else {
            bail!("command failed: {self}")
        }
    }
}

impl fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.command, self.status, self.stdout, self.stderr
        )
    }
}

/// Finds `name` on `PATH`, or explains how to get it.
pub fn find_program(name: &str, hint: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("`{name}` not found on PATH: {hint}")
}

/// Runs `cmd`, writing `stdin` to it, and waits at most `timeout`; on timeout
/// the process is killed and the error carries what it printed so far.
pub fn run(cmd: &mut Command, stdin: Option<&[u8]>, timeout: Duration) -> Result<CmdOutput> {
    let command = format!("{cmd:?}");
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().with_context(|| format!("spawning {command}"))?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().context("stdin not piped")?;
        let input = input.to_vec();
        // Closing the pipe (drop) is the end-of-input signal.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = reader(child.stdout.take());
    let err = reader(child.stderr.take());
    let waited = wait_for(timeout, &format!("`{command}` to finish"), || {
        Ok(child.try_wait()?)
    });
    let status = match waited {
        Ok(status) => status,
        Err(e) => {
            let _ = child.kill();
            let status = child.wait()?;
            let partial = CmdOutput {
                command,
                status,
                stdout: out.join().unwrap_or_default(),
                stderr: err.join().unwrap_or_default(),
            };
            return Err(e.context(format!("killed: {partial}")));
        }
    };
    Ok(CmdOutput {
        command,
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

fn reader<R: Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}
