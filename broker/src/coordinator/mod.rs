//! Coordinators: the classic consumer-group coordinator ([`group`]) and the
//! transaction coordinator ([`txn`]).

pub mod group;
pub mod txn;

pub use group::{GroupCoordinator, GroupError, OFFSETS_TOPIC};
pub use txn::{TxnCoordinator, TxnError, TXN_TOPIC};
