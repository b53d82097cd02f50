//! End-to-end test helpers for Sluice: real broker processes, real clients.
//!
//! Module map:
//! - [`broker`]: [`BrokerProcess`], the `sluice-broker` binary started on
//!   `127.0.0.1:0` with a temporary data directory; stop (SIGTERM), kill -9,
//!   restart on the same data directory, stderr kept in a file and shown when a
//!   test fails.
//! - [`cluster`]: [`cluster::Cluster`], N brokers sharing one controller
//!   quorum: kill -9, stop, restart, pause (SIGSTOP) and resume any of them;
//!   leaders and ISRs from metadata; each replica's log read from its data dir.
//! - [`chaos`]: what the replication suites share: a seeded nemesis RNG,
//!   a producer context recording every delivery report and fatal error.
//! - [`wait`]: polling with deadlines (`wait_until`, `wait_for`); tests never
//!   synchronise with fixed sleeps.
//! - [`kafka`]: rdkafka producer / consumer / admin configuration for a
//!   bootstrap address, topic creation, reading partitions back by offset.
//! - [`raw`]: a blocking Kafka wire client over `TcpStream` for malformed-frame
//!   and byte-level tests, encoding real requests with `kafka-protocol`.
//! - [`batch`]: a record batch v2 builder with a correct CRC32C, and the
//!   byte offsets tests use to corrupt one on purpose.
//! - [`cmd`]: running external clients (kcat, python3) with a deadline.
//! - [`member`]: the child side of a consumer-group member process (rdkafka),
//!   reporting rebalances, messages and commits as lines on stdout.
//! - [`k8s`]: a real kube-apiserver + etcd on loopback (tests/k8s/) with
//!   kubectl, and the `sluice-operator` process under test.
//! - [`group`]: the parent side: [`group::Member`] processes (rdkafka or
//!   kafka-python) that can be closed or killed, waits for a balanced
//!   assignment, OffsetFetch / generation -1 commits, ListGroups and
//!   DescribeGroups.

pub mod batch;
pub mod broker;
pub mod chaos;
pub mod cluster;
pub mod cmd;
pub mod group;
pub mod k8s;
pub mod kafka;
pub mod member;
pub mod raw;
pub mod wait;

pub use broker::{BrokerOptions, BrokerProcess};
pub use wait::{wait_for, wait_until};

/// A topic name unique within this process, so tests sharing a broker never
/// collide.
pub fn unique_topic(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
}

/// The `sluice` binary (crate sluice-tui), built next to the test
/// executables (`cargo build --release -p sluice-tui`; scripts/test.sh does).
pub fn sluice_binary() -> anyhow::Result<std::path::PathBuf> {
    use anyhow::Context;
    let exe = std::env::current_exe().context("locating the test executable")?;
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join("sluice"))
        .find(|c| c.is_file())
        .with_context(|| {
            format!(
                "sluice binary not found near {}: build it first (`cargo build --release -p sluice-tui`; scripts/test.sh does)",
                exe.display()
            )
        })
}
