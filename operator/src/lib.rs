//! Sluice's Kubernetes operator: `Topic`, `OffsetReset` and `Replay`
//! resources (`crd`), read from the API server (`controller`) or from a
//! folder of YAML (`manifest`, `cli`), planned by a pure function (`plan`)
//! and carried out over `sluice_broker::client` (`exec`). Several
//! replicas of `run` elect one leader on a Lease (`lease`).

pub mod cli;
pub mod controller;
pub mod crd;
pub mod exec;
pub mod lease;
pub mod manifest;
pub mod metrics;
pub mod oneshot;
pub mod plan;
mod replay_run;
