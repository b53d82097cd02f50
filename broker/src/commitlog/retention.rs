//! Retention: which old segments to delete (a pure plan over the segments) and
//! deleting them.

use super::segment::Segment;
use super::{io_at, Error, Log};

/// Why a segment was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeletionReason {
    /// Wholly below the log start offset (DeleteRecords).
    LogStartOffset,
    /// Its newest record is older than `retention_ms`.
    RetentionMs,
    /// The log is larger than `retention_bytes` even without it.
    RetentionBytes,
}

/// One deleted segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedSegment {
    pub base_offset: i64,
    /// Offset following its last batch.
    pub end_offset: i64,
    pub size_bytes: u64,
    pub reason: DeletionReason,
}

/// What [`Log::retain`] did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    /// The active segment was rolled because `segment_ms` elapsed.
    pub rolled: bool,
    /// How many segments were deleted.
    pub deleted_segments: usize,
    /// Bytes of batches deleted (log files only).
    pub deleted_bytes: u64,
    /// The deleted segments, oldest first.
    pub deleted: Vec<DeletedSegment>,
    /// The log start offset afterwards.
    pub log_start_offset: i64,
}

/// Per non-active segment, oldest first, what retention needs to know.
pub(crate) struct SegmentFacts {
    pub(crate) size: u64,
    /// Largest timestamp, or the file's modification time without one.
    pub(crate) retention_timestamp: i64,
    /// The next segment starts at or below the log start offset.
    pub(crate) below_log_start: bool,
}

/// The plan: the longest prefix of old segments each of which is wholly below
/// the log start offset, past `retention_ms`, or not needed to stay within
/// `retention_bytes` (Kafka's three rules). The active segment is never in
/// `facts`.
pub(crate) fn plan(
    facts: &[SegmentFacts],
    total_size: u64,
    retention_ms: i64,
    retention_bytes: i64,
    now_ms: i64,
) -> Vec<DeletionReason> {
    let mut remaining = total_size;
    let mut reasons = Vec::new();
    for f in facts {
        let reason = if f.below_log_start {
            DeletionReason::LogStartOffset
        } else if retention_ms >= 0 && now_ms.saturating_sub(f.retention_timestamp) > retention_ms {
            DeletionReason::RetentionMs
        } else if retention_bytes >= 0 && remaining.saturating_sub(f.size) >= retention_bytes as u64
        {
            DeletionReason::RetentionBytes
        } else {
            break;
        };
        remaining = remaining.saturating_sub(f.size);
        reasons.push(reason);
    }
    reasons
}

impl Log {
    /// Rolls the active segment if `segment_ms` elapsed and it is not empty, then
    /// deletes old segments by log start offset, `retention_ms` and
    /// `retention_bytes`, moving the log start offset past them.
    pub fn retain(&mut self, now_ms: i64) -> Result<RetentionReport, Error> {
        self.check_writable()?;
        let mut report = RetentionReport::default();
        if self
            .active()
            .time_to_roll(self.config.segment_ms, now_ms, now_ms)
        {
            self.roll(now_ms)?;
            report.rolled = true;
        }

        let old = &self.segments[..self.segments.len() - 1];
        let mut facts = Vec::with_capacity(old.len());
        for (i, seg) in old.iter().enumerate() {
            facts.push(SegmentFacts {
                size: seg.size(),
                retention_timestamp: seg.retention_timestamp().map_err(io_at(seg.log_path()))?,
                below_log_start: self.segments[i + 1].base_offset() <= self.log_start_offset,
            });
        }
        let reasons = plan(
            &facts,
            self.size_bytes(),
            self.config.retention_ms,
            self.config.retention_bytes,
            now_ms,
        );
        let deleting = reasons.len();
        for (seg, reason) in self.segments.drain(..deleting).zip(reasons) {
            report.deleted_segments += 1;
            report.deleted_bytes += seg.size();
            report.deleted.push(describe(&seg, reason));
            tracing::info!(segment = %seg.log_path().display(), ?reason, "deleting segment");
            seg.delete();
        }
        if deleting > 0 {
            self.delete_old_producer_snapshots();
        }
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        report.log_start_offset = self.log_start_offset;
        let truncated = self.epochs.truncate_from_start(self.log_start_offset);
        self.poison_on_io(truncated)?;
        Ok(report)
    }
}

fn describe(seg: &Segment, reason: DeletionReason) -> DeletedSegment {
    DeletedSegment {
        base_offset: seg.base_offset(),
        end_offset: seg.next_offset(),
        size_bytes: seg.size(),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(list: &[(u64, i64, bool)]) -> Vec<SegmentFacts> {
        list.iter()
            .map(|&(size, ts, below)| SegmentFacts {
                size,
                retention_timestamp: ts,
                below_log_start: below,
            })
            .collect()
    }

    #[test]
    fn plan_deletes_the_oldest_prefix_by_time() {
        let f = facts(&[(10, 100, false), (10, 200, false), (10, 900, false)]);
        let plan = plan(&f, 40, 500, -1, 1_000);
        assert_eq!(
            plan,
            vec![DeletionReason::RetentionMs, DeletionReason::RetentionMs]
        );
    }

    #[test]
    fn plan_stops_at_the_first_segment_to_keep() {
        let f = facts(&[(10, 900, false), (10, 100, false)]);
        assert!(plan(&f, 30, 500, -1, 1_000).is_empty());
    }

    #[test]
    fn plan_deletes_by_size_while_the_rest_still_exceeds_the_limit() {
        // Total 40 (3 old of 10 + active 10), limit 15: deleting two leaves 20,
        // deleting a third would leave 10 < 15.
        let f = facts(&[(10, 0, false), (10, 0, false), (10, 0, false)]);
        assert_eq!(plan(&f, 40, -1, 15, 1_000).len(), 2);
        assert_eq!(plan(&f, 40, -1, 10, 1_000).len(), 3);
        assert!(plan(&f, 40, -1, -1, 1_000).is_empty());
    }

    #[test]
    fn plan_deletes_segments_below_the_log_start_first() {
        let f = facts(&[(10, 900, true), (10, 900, false)]);
        assert_eq!(
            plan(&f, 30, 500, -1, 1_000),
            vec![DeletionReason::LogStartOffset]
        );
    }
}
