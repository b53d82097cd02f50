//! Offset resets: plan, preview, apply and undo.
