//! Replica placement: which brokers hold the replicas of new partitions.
//!
//! Like Kafka's rack-aware assignment: brokers are ordered so that racks
//! alternate, partition `p`'s first replica (its preferred leader) is the
//! broker at `start + p` in that order, and its followers are the next
//! brokers, shifted per round so that followers spread too. Leaders of a
//! topic's partitions are therefore spread evenly, and with racks every
//! partition's replicas land on as many racks as possible.

use std::collections::BTreeMap;

use super::image::BrokerRegistration;

/// Brokers in placement order: racks interleaved (rack A's first broker,
/// rack B's first, ..., rack A's second, ...), brokers without a rack last
/// within their own group.
fn placement_order(brokers: &[&BrokerRegistration]) -> Vec<i32> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<i32>> = BTreeMap::new();
    for b in brokers {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut order = Vec::with_capacity(brokers.len());
    let mut round = 0;
    while order.len() < brokers.len() {
        for ids in by_rack.values() {
            if let Some(id) = ids.get(round) {
                order.push(*id);
            }
        }
        round += 1;
    }
    order
}

/// Replica lists for partitions `first..first + count` of a topic with
/// replication factor `rf` over `brokers`. `start` offsets the first leader,
/// so topics created one after another do not all start on the same broker.
/// The caller checks `rf <= brokers.len()`.
pub fn assign(
    brokers: &[&BrokerRegistration],
    first: i32,
    count: i32,
    rf: usize,
    start: usize,
) -> Vec<Vec<i32>> {
    let order = placement_order(brokers);
    let n = order.len();
    if n == 0 || rf == 0 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for p in first..first.saturating_add(count) {
        let p = usize::try_from(p).unwrap_or(0);
        let leader = (start + p) % n;
        // The shift between the leader and its first follower changes every
        // n partitions, as in Kafka, so followers do not pile up behind the
        // same leaders.
        let shift = if n > 1 { 1 + (p / n) % (n - 1) } else { 0 };
        let rack_of = |id: i32| {
            brokers
                .iter()
                .find(|b| b.id == id)
                .and_then(|b| b.rack.as_deref())
        };
        let racks = {
            let mut r: Vec<Option<&str>> = brokers.iter().map(|b| b.rack.as_deref()).collect();
            r.sort_unstable();
            r.dedup();
            r.len()
        };
        let mut replicas = vec![order[leader]];
        // First pass: a broker on a rack not yet used, while racks remain;
        // second pass: any broker not yet chosen.
        for rack_aware in [true, false] {
            for k in 0..n {
                if replicas.len() >= rf {
                    break;
                }
                let id = order[(leader + shift + k) % n];
                if replicas.contains(&id) {
                    continue;
                }
                let used: Vec<Option<&str>> = replicas.iter().map(|r| rack_of(*r)).collect();
                if rack_aware && used.len() < racks && used.contains(&rack_of(id)) {
                    continue;
                }
                replicas.push(id);
            }
        }
        out.push(replicas);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(id: i32, rack: Option<&str>) -> BrokerRegistration {
        BrokerRegistration {
            id,
            host: "h".into(),
            port: 1,
            rack: rack.map(str::to_string),
            controller_addr: None,
            incarnation: uuid::Uuid::nil(),
            fenced: false,
            in_controlled_shutdown: false,
        }
    }

    #[test]
    fn leaders_and_replicas_spread_evenly() {
        let bs: Vec<_> = (1..=3).map(|i| broker(i, None)).collect();
        let refs: Vec<_> = bs.iter().collect();
        let a = assign(&refs, 0, 6, 3, 0);
        assert_eq!(a.len(), 6);
        for r in &a {
            let mut s = r.clone();
            s.sort_unstable();
            s.dedup();
            assert_eq!(s.len(), 3, "distinct replicas: {r:?}");
        }
        for id in 1..=3 {
            assert_eq!(a.iter().filter(|r| r[0] == id).count(), 2, "{a:?}");
        }
    }

    #[test]
    fn replicas_cover_every_rack() {
        let bs = [
            broker(1, Some("a")),
            broker(2, Some("a")),
            broker(3, Some("b")),
            broker(4, Some("b")),
            broker(5, Some("c")),
            broker(6, Some("c")),
        ];
        let refs: Vec<_> = bs.iter().collect();
        let rack = |id: i32| bs.iter().find(|b| b.id == id).and_then(|b| b.rack.clone());
        for r in assign(&refs, 0, 12, 3, 0) {
            let mut racks: Vec<_> = r.iter().map(|id| rack(*id)).collect();
            racks.sort();
            racks.dedup();
            assert_eq!(racks.len(), 3, "replicas {r:?} on racks {racks:?}");
        }
    }

    #[test]
    fn start_offsets_the_first_leader() {
        let bs: Vec<_> = (1..=3).map(|i| broker(i, None)).collect();
        let refs: Vec<_> = bs.iter().collect();
        assert_eq!(assign(&refs, 0, 1, 1, 2), vec![vec![3]]);
    }
}
