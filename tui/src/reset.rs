//! The offset-reset planner the console's reset dialog uses. It lives in
//! [`sluice_broker::admin::reset`], shared with `sluice offsets` and the
//! operator; re-exported here so the console's modules name it as before.

pub use sluice_broker::admin::reset::*;
