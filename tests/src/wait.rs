//! Polling with deadlines. A condition is checked, then re-checked with a short,
//! growing pause until it holds or the deadline passes; the pause only bounds
//! how often we ask, it never stands in for the condition itself.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

const FIRST_PAUSE: Duration = Duration::from_millis(5);
const MAX_PAUSE: Duration = Duration::from_millis(200);

/// Polls `cond` until it returns true; fails with `what` once `timeout` passes.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) -> Result<()> {
    wait_for(timeout, what, || Ok(cond().then_some(())))
}

/// Polls `probe` until it returns `Ok(Some(value))`. `Ok(None)` means "not yet";
/// an `Err` is remembered and reported if the deadline passes, so a probe that
/// keeps failing explains itself.
pub fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut probe: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    let mut pause = FIRST_PAUSE;
    let mut last_err = None;
    loop {
        match probe() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        let now = Instant::now();
        if now >= deadline {
            match last_err {
                Some(e) => {
                    bail!("timed out after {timeout:?} waiting for {what}; last error: {e:#}")
                }
                None => bail!("timed out after {timeout:?} waiting for {what}"),
            }
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_reports_what_it_waited_for() {
        let err = wait_until(Duration::from_millis(20), "the impossible", || false)
            .expect_err("a false condition must time out");
        assert!(err.to_string().contains("the impossible"), "{err}");
    }

    #[test]
    fn wait_for_returns_the_value_once_ready() {
        let mut calls = 0;
        let v = wait_for(Duration::from_secs(5), "third call", || {
            calls += 1;
            Ok((calls == 3).then_some(calls))
        })
        .expect("ready on the third call");
        assert_eq!(v, 3);
    }
}
