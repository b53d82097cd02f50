//! Coordinators: the classic consumer-group coordinator ([`group`]).
//! Transactions have no coordinator yet.

pub mod group;

pub use group::{GroupCoordinator, GroupError, OFFSETS_TOPIC};
