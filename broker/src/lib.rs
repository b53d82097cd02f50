//! Sluice broker: a Kafka-wire-compatible streaming broker.
//!
//! Module map:
//! - [`alloc`]: a global allocator that keeps malformed requests from
//!   aborting the process.
//! - [`broker`]: the state one broker shares between connections, its start-up,
//!   registration and heartbeats, controlled shutdown.
//! - [`cluster`]: the metadata image and its records, the controller's
//!   decisions, and the openraft metadata quorum on the controller port.
//! - [`replication`]: metadata image to local replica roles, follower
//!   fetchers, ISR changes.
//! - [`client`]: an async Kafka client: replication's connections, and the
//!   pooled, version-negotiating, metadata-routed client of the console and
//!   the operator.
//! - [`config`]: broker configuration (YAML file, CLI flags, `SLUICE_*` env) and
//!   the topic-level configs with their broker-level defaults.
//! - [`coordinator`]: the classic consumer-group coordinator and its storage in
//!   `__consumer_offsets`.
//! - [`commitlog`]: the on-disk log of one partition (segments, indexes, recovery,
//!   retention).
//! - [`partition`]: one partition replica: its log, role (leader, follower),
//!   high watermark, follower progress and waiters.
//! - [`topics`]: the replicas this broker hosts, by topic.
//! - [`flusher`]: group commit: one fsync covers every batch that arrived meanwhile.
//! - [`server`], [`connection`]: accept loop, framing, graceful shutdown.
//! - [`handler`]: one file per Kafka API; Kafka error codes are chosen there only.

pub mod admin;
pub mod alloc;
pub mod broker;
pub mod client;
pub mod cluster;
pub mod commitlog;
pub mod config;
pub mod connection;
pub mod coordinator;
pub mod flusher;
pub mod handler;
pub mod partition;
pub mod replication;
pub mod server;
pub mod topics;
