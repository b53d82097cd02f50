//! Replay: copies a range of records from one topic to another.
