//! Operations built on [`crate::client`] that work against any Kafka-compatible
//! cluster: planning, previewing, applying and undoing consumer-group offset
//! resets (`reset`), and copying a range of records between topics (`replay`).
//! The `sluice` CLI, the console and the operator all call these.

pub mod replay;
pub mod reset;
