//! Sluice console: the `sluice` binary's library.
//!
//! - `cli`: command-line parsing and validation (console flags and admin subcommands).
//! - `app`: the console state, `Action` in, `Command` out (`update`); no I/O.
//! - `keys`: the key table that drives both `update` and the footer/help.
//! - `model`: view-model structs and derived figures (messages, lag, catch-up).
//! - `reset`: the offset-reset planner, re-exported from `sluice_broker::admin::reset`.
//! - `format`: bytes/JSON/hex, sizes, times and durations as text and back.
//! - `ui`: drawing, a pure function of `&App` into a ratatui `Frame`.
//! - `runtime`: terminal guard and the event loop; I/O runs in tokio tasks whose
//!   results come back as actions on a channel.
//!
//! - `io`: the `Command` executor over `sluice_broker::client`.
//! - `commands`: the scripting subcommands (`topics`, `groups`, `produce`, `consume`).
//! - `offsets_cmd`: `sluice offsets reset|undo` over `sluice_broker::admin::reset`.
//! - `replay_cmd`: `sluice replay` (flags, progress, Ctrl-C, summary) over
//!   `sluice_broker::admin::replay`.
//! - `bundled`: the in-process broker `sluice` starts without `--bootstrap`.

pub mod app;
pub mod bundled;
pub mod cli;
pub mod commands;
pub mod format;
pub mod io;
pub mod keys;
pub mod model;
pub mod offsets_cmd;
pub mod replay_cmd;
pub mod reset;
pub mod runtime;
pub mod ui;

#[cfg(test)]
mod fixtures;
