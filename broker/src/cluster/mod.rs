//! The cluster: the metadata quorum and the controller.
//!
//! - [`image`]: the metadata image and the records that change it.
//! - [`messages`]: broker-to-controller requests (registration, heartbeats,
//!   admin changes, ISR changes).
//! - [`quorum`]: the replicated metadata log on openraft: storage, the
//!   controller port's transport, and the image every broker keeps.
//! - [`controller`]: what the active controller decides: placement,
//!   fencing, elections, ISR changes.

pub mod controller;
pub mod decide;
pub mod image;
pub mod messages;
pub mod placement;
pub mod quorum;
