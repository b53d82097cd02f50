//! Session and rebalance timers: tokio tasks that sleep, then re-check under
//! the groups lock that what they were started for is still current (the
//! member still carries the timer's id; the group is still in the same
//! rebalance). A stale timer just ends. Timers hold a weak reference, so
//! they never keep a closed coordinator alive, and end at once when the
//! coordinator gives up the group's partition of `__consumer_offsets`.

use std::sync::Arc;

use tokio::time::Instant;

use super::state::{ms, State};
use super::GroupCoordinator;

impl GroupCoordinator {
    /// Watches the session of `member_id`; it expires when no heartbeat,
    /// join or sync moved its deadline, unless it waits in a JoinGroup or
    /// SyncGroup (Kafka keeps those alive).
    pub(super) fn start_session_timer(
        &self,
        group_id: &str,
        member_id: &str,
        timer: u64,
        deadline: Instant,
    ) {
        let Some(cancel) = self.cancel_token(group_id) else {
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        let group_id = group_id.to_string();
        let member_id = member_id.to_string();
        tokio::spawn(async move {
            let mut wake = deadline;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => {}
                }
                let Some(shared) = weak.upgrade() else { return };
                let c = GroupCoordinator { shared };
                match c.check_session(&group_id, &member_id, timer) {
                    Some(next) => wake = next,
                    None => return,
                }
            }
        });
    }

    /// `Some(next wake-up)` while the session lives.
    fn check_session(&self, group_id: &str, member_id: &str, timer: u64) -> Option<Instant> {
        let mut groups = self.shared.groups.lock();
        let g = groups.get_mut(group_id)?;
        let m = g.member_mut(member_id).filter(|m| m.timer == timer)?;
        let now = Instant::now();
        if m.join_waiter.is_some() || m.sync_waiter.is_some() {
            return Some(now + ms(m.session_timeout_ms).max(std::time::Duration::from_millis(1)));
        }
        if now < m.deadline {
            return Some(m.deadline);
        }
        tracing::info!(group = %group_id, member = %member_id, "session timed out; removing member");
        self.remove_member(g, member_id);
        None
    }

    /// Ends the join phase of rebalance `rebalance` at `deadline`, or
    /// earlier once every member rejoined and `not_before` passed.
    pub(super) fn start_rebalance_timer(
        &self,
        group_id: &str,
        rebalance: u64,
        not_before: Instant,
        deadline: Instant,
    ) {
        let Some(cancel) = self.cancel_token(group_id) else {
            return;
        };
        let weak = Arc::downgrade(&self.shared);
        let group_id = group_id.to_string();
        tokio::spawn(async move {
            let mut wake = not_before;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep_until(wake) => {}
                }
                let Some(shared) = weak.upgrade() else { return };
                let c = GroupCoordinator { shared };
                let mut groups = c.shared.groups.lock();
                let Some(g) = groups.get_mut(&group_id) else {
                    return;
                };
                if g.rebalance != rebalance || g.state != State::PreparingRebalance {
                    return;
                }
                let now = Instant::now();
                if now < g.not_before {
                    wake = g.not_before;
                    continue;
                }
                if g.all_rejoined() || now >= deadline {
                    c.complete_join(g);
                    return;
                }
                wake = deadline;
            }
        });
    }
}
