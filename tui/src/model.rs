//! The console's own view-model: plain data the views draw from.
//!
//! The I/O layer turns what the Kafka client returns into these structs; nothing here
//! knows about the wire. Derived figures (messages per topic, lag, catch-up estimates)
//! are computed here so that they are tested once and every view agrees on them.

use std::collections::VecDeque;

/// A broker as the cluster view lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRow {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// How many partitions this broker currently leads.
    pub partitions_led: usize,
}

impl BrokerRow {
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

/// The cluster view: brokers and partition health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClusterOverview {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerRow>,
    pub topic_count: usize,
    pub partition_count: usize,
    pub under_replicated: usize,
    pub offline: usize,
}

/// A group consuming a partition, with its lag there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerLag {
    pub group: String,
    pub committed: i64,
    pub lag: i64,
}

/// One partition of a topic, as the topic detail view lists it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PartitionRow {
    pub index: i32,
    /// -1 when the partition has no leader.
    pub leader: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// Replicas the metadata reports as offline.
    pub offline_replicas: Vec<i32>,
    /// Log start offset, when ListOffsets answered for it.
    pub start: Option<i64>,
    /// Log end offset (high watermark), when ListOffsets answered for it.
    pub end: Option<i64>,
    /// Groups with a committed offset on this partition.
    pub consumers: Vec<ConsumerLag>,
}

impl PartitionRow {
    pub fn under_replicated(&self) -> bool {
        self.isr.len() < self.replicas.len()
    }

    pub fn offline(&self) -> bool {
        self.leader < 0
    }

    /// Messages currently retained: end - start.
    pub fn messages(&self) -> Option<i64> {
        match (self.start, self.end) {
            (Some(s), Some(e)) => Some((e - s).max(0)),
            _ => None,
        }
    }
}

/// One topic in the topics list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicRow {
    pub name: String,
    pub internal: bool,
    pub partitions: usize,
    pub replication_factor: usize,
    /// Sum of end - start over partitions; `None` when any partition's offsets are unknown.
    pub messages: Option<i64>,
    /// Bytes on disk when the cluster reports log dir sizes.
    pub size: Option<u64>,
    pub under_replicated: bool,
    /// An error the metadata reported for this topic.
    pub error: Option<String>,
}

impl TopicRow {
    /// Builds the row from the topic's partitions so the figures match the detail view.
    pub fn from_partitions(
        name: &str,
        internal: bool,
        partitions: &[PartitionRow],
        size: Option<u64>,
    ) -> TopicRow {
        let messages = partitions
            .iter()
            .map(PartitionRow::messages)
            .try_fold(0i64, |acc, m| m.map(|m| acc + m));
        TopicRow {
            name: name.to_string(),
            internal,
            partitions: partitions.len(),
            replication_factor: partitions
                .iter()
                .map(|p| p.replicas.len())
                .max()
                .unwrap_or(0),
            messages,
            size,
            under_replicated: partitions.iter().any(PartitionRow::under_replicated),
            error: None,
        }
    }
}

/// A topic config entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRow {
    pub name: String,
    pub value: Option<String>,
    pub source: String,
    pub read_only: bool,
    pub sensitive: bool,
}

impl ConfigRow {
    pub fn shown_value(&self) -> &str {
        if self.sensitive {
            "(sensitive)"
        } else {
            self.value.as_deref().unwrap_or("(null)")
        }
    }
}

/// The topic detail view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TopicDetail {
    pub name: String,
    pub partitions: Vec<PartitionRow>,
    /// Loaded separately (DescribeConfigs); `None` until then.
    pub configs: Option<Vec<ConfigRow>>,
}

impl TopicDetail {
    pub fn row(&self) -> TopicRow {
        TopicRow::from_partitions(&self.name, false, &self.partitions, None)
    }
}

/// A record as the message browser shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageRow {
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

/// One consumer group in the groups list.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupRow {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub members: Option<usize>,
    /// Sum of lag over the group's committed partitions, when known.
    pub total_lag: Option<i64>,
}

/// A member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberRow {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub assignment: Vec<(String, Vec<i32>)>,
}

impl MemberRow {
    /// "orders[0,1] payments[2]".
    pub fn assignment_text(&self) -> String {
        self.assignment
            .iter()
            .map(|(t, ps)| {
                let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                format!("{t}[{}]", ps.join(","))
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A partition a group has a committed offset on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupPartitionRow {
    pub topic: String,
    pub partition: i32,
    pub committed: Option<i64>,
    pub end: Option<i64>,
    /// Timestamp (ms) of the message at the committed offset, i.e. the oldest one the
    /// group has not consumed yet; `None` when there is none or it was not looked up.
    pub oldest_unconsumed_ts: Option<i64>,
}

impl GroupPartitionRow {
    pub fn lag(&self) -> Option<i64> {
        match (self.committed, self.end) {
            (Some(c), Some(e)) => Some((e - c).max(0)),
            _ => None,
        }
    }
}

/// The group detail view.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupDetail {
    pub group_id: String,
    pub state: String,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberRow>,
    pub partitions: Vec<GroupPartitionRow>,
}

impl GroupDetail {
    pub fn total_lag(&self) -> i64 {
        self.partitions
            .iter()
            .filter_map(GroupPartitionRow::lag)
            .sum()
    }

    /// Lag in time: the age of the oldest unconsumed message over all partitions with
    /// lag, in milliseconds at `now_ms`.
    pub fn lag_age_ms(&self, now_ms: i64) -> Option<i64> {
        self.partitions
            .iter()
            .filter(|p| p.lag().unwrap_or(0) > 0)
            .filter_map(|p| p.oldest_unconsumed_ts)
            .min()
            .map(|ts| (now_ms - ts).max(0))
    }

    /// Groups with members are the ones an offset reset must refuse.
    pub fn has_active_members(&self) -> bool {
        !self.members.is_empty()
    }
}

/// Total lag of one group sampled over time while the console runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LagHistory {
    capacity: usize,
    samples: VecDeque<(i64, i64)>,
}

impl Default for LagHistory {
    fn default() -> Self {
        LagHistory::new(120)
    }
}

impl LagHistory {
    pub fn new(capacity: usize) -> LagHistory {
        LagHistory {
            capacity: capacity.max(2),
            samples: VecDeque::new(),
        }
    }

    /// Records `(time_ms, total_lag)`; a sample at the same time replaces the last.
    pub fn push(&mut self, time_ms: i64, lag: i64) {
        if let Some(last) = self.samples.back_mut() {
            if last.0 == time_ms {
                last.1 = lag;
                return;
            }
        }
        if self.samples.len() == self.capacity {
            self.samples.pop_front();
        }
        self.samples.push_back((time_ms, lag));
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn latest(&self) -> Option<i64> {
        self.samples.back().map(|s| s.1)
    }

    /// Lag values oldest first, for a sparkline.
    pub fn sparkline(&self) -> Vec<u64> {
        self.samples
            .iter()
            .map(|&(_, l)| u64::try_from(l).unwrap_or(0))
            .collect()
    }

    /// Messages per second the lag shrinks by over the kept window (negative: growing).
    pub fn drain_rate(&self) -> Option<f64> {
        let (t0, l0) = *self.samples.front()?;
        let (t1, l1) = *self.samples.back()?;
        if t1 <= t0 {
            return None;
        }
        Some((l0 - l1) as f64 * 1000.0 / (t1 - t0) as f64)
    }

    /// Estimated time to catch up at the observed rate; `CatchUp::Never` while lag grows.
    pub fn catch_up(&self) -> CatchUp {
        let Some(lag) = self.latest() else {
            return CatchUp::Unknown;
        };
        if lag == 0 {
            return CatchUp::CaughtUp;
        }
        match self.drain_rate() {
            None => CatchUp::Unknown,
            Some(r) if r <= 0.0 => CatchUp::Never,
            Some(r) => CatchUp::In((lag as f64 / r * 1000.0).ceil() as i64),
        }
    }
}

/// Estimated catch-up time of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CatchUp {
    CaughtUp,
    /// Milliseconds until the lag reaches zero at the current drain rate.
    In(i64),
    /// The lag is not shrinking.
    Never,
    /// Not enough samples yet.
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(index: i32, start: i64, end: i64, replicas: &[i32], isr: &[i32]) -> PartitionRow {
        PartitionRow {
            index,
            leader: replicas[0],
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            start: Some(start),
            end: Some(end),
            ..PartitionRow::default()
        }
    }

    #[test]
    fn topic_messages_sum_end_minus_start_over_partitions() {
        let parts = [
            part(0, 10, 110, &[1, 2], &[1, 2]),
            part(1, 0, 5, &[2, 1], &[2]),
        ];
        let row = TopicRow::from_partitions("orders", false, &parts, Some(4096));
        assert_eq!(row.messages, Some(105));
        assert_eq!(row.partitions, 2);
        assert_eq!(row.replication_factor, 2);
        assert!(row.under_replicated);
        assert_eq!(row.size, Some(4096));
    }

    #[test]
    fn topic_messages_unknown_when_a_partition_has_no_offsets() {
        let mut p1 = part(1, 0, 5, &[1], &[1]);
        p1.end = None;
        let row = TopicRow::from_partitions("t", false, &[part(0, 0, 3, &[1], &[1]), p1], None);
        assert_eq!(row.messages, None);
        assert!(!row.under_replicated);
    }

    #[test]
    fn group_lag_and_lag_age_use_only_partitions_behind() {
        let g = GroupDetail {
            partitions: vec![
                GroupPartitionRow {
                    topic: "t".into(),
                    partition: 0,
                    committed: Some(5),
                    end: Some(15),
                    oldest_unconsumed_ts: Some(1_000),
                },
                GroupPartitionRow {
                    topic: "t".into(),
                    partition: 1,
                    committed: Some(7),
                    end: Some(7),
                    oldest_unconsumed_ts: Some(10),
                },
            ],
            ..GroupDetail::default()
        };
        assert_eq!(g.total_lag(), 10);
        assert_eq!(g.lag_age_ms(61_000), Some(60_000));
    }

    #[test]
    fn lag_history_is_a_ring_buffer() {
        let mut h = LagHistory::new(3);
        for (t, l) in [(0, 9), (1000, 8), (2000, 7), (3000, 6)] {
            h.push(t, l);
        }
        assert_eq!(h.sparkline(), vec![8, 7, 6]);
        h.push(3000, 5);
        assert_eq!(h.sparkline(), vec![8, 7, 5]);
    }

    #[test]
    fn catch_up_estimate_follows_the_drain_rate() {
        let mut h = LagHistory::new(10);
        h.push(0, 1000);
        assert_eq!(h.catch_up(), CatchUp::Unknown);
        h.push(10_000, 900); // 10 msg/s
        assert_eq!(h.catch_up(), CatchUp::In(90_000));
        h.push(20_000, 950);
        assert_eq!(h.catch_up(), CatchUp::In(380_000)); // 50 over 20s = 2.5/s
        h.push(30_000, 1200);
        assert_eq!(h.catch_up(), CatchUp::Never);
        h.push(40_000, 0);
        assert_eq!(h.catch_up(), CatchUp::CaughtUp);
    }

    #[test]
    fn member_assignment_text() {
        let m = MemberRow {
            assignment: vec![("orders".into(), vec![0, 1]), ("pay".into(), vec![2])],
            ..MemberRow::default()
        };
        assert_eq!(m.assignment_text(), "orders[0,1] pay[2]");
    }
}
