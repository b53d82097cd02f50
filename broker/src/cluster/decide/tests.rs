use std::collections::BTreeMap;

use super::*;
use crate::cluster::image::BrokerRegistration;

fn settings() -> Settings {
    Settings {
        num_partitions: 1,
        default_replication_factor: 1,
        topic_defaults: TopicConfig::default(),
    }
}

fn broker(id: i32) -> BrokerRegistration {
    BrokerRegistration {
        id,
        host: "127.0.0.1".into(),
        port: 9000,
        rack: None,
        controller_addr: None,
        incarnation: uuid::Uuid::nil(),
        fenced: false,
        in_controlled_shutdown: false,
    }
}

/// Three live brokers and topic `t` with `partitions` partitions, RF 3.
fn cluster(partitions: i32) -> MetadataImage {
    let mut img = MetadataImage::default();
    for id in 1..=3 {
        img.apply(0, &MetadataRecord::RegisterBroker(broker(id)));
    }
    let t = NewTopic {
        name: "t".into(),
        partitions,
        replication_factor: 3,
        assignments: None,
        configs: BTreeMap::new(),
    };
    let rec = create_topic(&img, &t, &settings()).expect("create");
    img.apply(1, &rec);
    img
}

fn apply(img: &mut MetadataImage, records: &[MetadataRecord]) {
    for r in records {
        img.apply(img.applied_index + 1, r);
    }
}

#[test]
fn replication_factor_above_live_brokers_is_refused() {
    let img = cluster(1);
    let t = NewTopic {
        name: "big".into(),
        partitions: 1,
        replication_factor: 4,
        assignments: None,
        configs: BTreeMap::new(),
    };
    assert!(matches!(
        create_topic(&img, &t, &settings()),
        Err(ControllerError::InvalidReplicationFactor(_))
    ));
}

#[test]
fn fencing_the_leader_elects_an_in_sync_replica_and_bumps_the_epoch() {
    let mut img = cluster(3);
    let before = img.partition("t", 0).cloned().expect("p");
    let leader = before.leader;
    let mut rs = vec![MetadataRecord::FenceBroker { id: leader }];
    let after = applied(&img, &rs);
    rs.extend(evict_broker(&after, leader, &settings()));
    apply(&mut img, &rs);
    let p = img.partition("t", 0).expect("p");
    assert_ne!(p.leader, leader);
    assert!(p.leader > 0);
    assert_eq!(p.leader_epoch, before.leader_epoch + 1);
    assert!(!p.isr.contains(&leader));
    assert_eq!(p.isr.len(), 2);
}

#[test]
fn the_last_in_sync_replica_is_kept_and_leads_again_when_it_returns() {
    let mut img = cluster(1);
    // Fence two followers, then the leader.
    let p0 = img.partition("t", 0).cloned().expect("p");
    let order: Vec<i32> = p0.replicas.iter().rev().copied().collect();
    for id in &order {
        let mut rs = vec![MetadataRecord::FenceBroker { id: *id }];
        let after = applied(&img, &rs);
        rs.extend(evict_broker(&after, *id, &settings()));
        apply(&mut img, &rs);
    }
    let p = img.partition("t", 0).cloned().expect("p");
    assert_eq!(p.leader, NO_LEADER);
    assert_eq!(p.isr, vec![order[2]], "the last ISR member stays");
    // A follower that was not in sync returns: no clean leader.
    apply(&mut img, &[MetadataRecord::UnfenceBroker { id: order[0] }]);
    assert!(elect_offline(&img, &settings()).is_empty());
    // The last in-sync replica returns and leads.
    apply(&mut img, &[MetadataRecord::UnfenceBroker { id: order[2] }]);
    let rs = elect_offline(&img, &settings());
    apply(&mut img, &rs);
    assert_eq!(img.partition("t", 0).map(|p| p.leader), Some(order[2]));
}

#[test]
fn unclean_election_takes_any_live_replica_when_enabled() {
    let mut img = cluster(1);
    let p0 = img.partition("t", 0).cloned().expect("p");
    let mut configs = BTreeMap::new();
    configs.insert(
        "unclean.leader.election.enable".to_string(),
        "true".to_string(),
    );
    apply(
        &mut img,
        &[MetadataRecord::SetTopicConfigs {
            topic: "t".into(),
            configs,
        }],
    );
    for id in p0.replicas.iter().rev() {
        let mut rs = vec![MetadataRecord::FenceBroker { id: *id }];
        let after = applied(&img, &rs);
        rs.extend(evict_broker(&after, *id, &settings()));
        apply(&mut img, &rs);
    }
    let stale = p0.replicas[2];
    apply(&mut img, &[MetadataRecord::UnfenceBroker { id: stale }]);
    let rs = elect_offline(&img, &settings());
    apply(&mut img, &rs);
    let p = img.partition("t", 0).expect("p");
    assert_eq!(p.leader, stale);
    assert_eq!(p.isr, vec![stale]);
}

#[test]
fn isr_changes_must_come_from_the_current_leader_and_epochs() {
    let img = cluster(1);
    let p = img.partition("t", 0).cloned().expect("p");
    let follower = p.replicas[1];
    let shrunk: Vec<i32> = p.isr.iter().copied().filter(|r| *r != follower).collect();
    assert!(matches!(
        alter_isr(
            &img,
            "t",
            0,
            follower,
            p.leader_epoch,
            p.partition_epoch,
            &shrunk
        ),
        Err(ControllerError::NotLeader(_))
    ));
    assert!(matches!(
        alter_isr(
            &img,
            "t",
            0,
            p.leader,
            p.leader_epoch,
            p.partition_epoch - 1,
            &shrunk
        ),
        Err(ControllerError::StaleEpoch(_))
    ));
    let (records, state) = alter_isr(
        &img,
        "t",
        0,
        p.leader,
        p.leader_epoch,
        p.partition_epoch,
        &shrunk,
    )
    .expect("ok");
    assert_eq!(records.len(), 1);
    assert_eq!(state.isr, shrunk);
    assert_eq!(state.partition_epoch, p.partition_epoch + 1);
    assert_eq!(state.leader_epoch, p.leader_epoch);
}

#[test]
fn controlled_shutdown_moves_leadership_and_leaves_isrs() {
    let mut img = cluster(6);
    let rs = controlled_shutdown(&img, 1, &settings());
    apply(&mut img, &rs);
    assert_eq!(movable_leaderships(&img, 1), 0);
    for (_, _, p) in img.partitions() {
        assert_ne!(p.leader, 1);
        assert!(!p.isr.contains(&1));
    }
    // Once back (registered again), preferred leaders are restored.
    apply(&mut img, &[MetadataRecord::RegisterBroker(broker(1))]);
    let mut p = img.partition("t", 0).cloned().expect("p");
    p.isr.push(1);
    p.partition_epoch += 1;
    apply(
        &mut img,
        &[MetadataRecord::ChangePartition {
            topic: "t".into(),
            partition: 0,
            state: p,
        }],
    );
    let rs = rebalance_preferred(&img);
    apply(&mut img, &rs);
    let p = img.partition("t", 0).expect("p");
    assert_eq!(p.leader, p.preferred_leader());
}

#[test]
fn reassignment_adds_then_drops_replicas_once_in_sync() {
    let mut img = cluster(1);
    apply(&mut img, &[MetadataRecord::RegisterBroker(broker(4))]);
    let p = img.partition("t", 0).cloned().expect("p");
    let target = vec![p.replicas[0], p.replicas[1], 4];
    let rs = reassign(&img, "t", 0, Some(&target)).expect("start");
    apply(&mut img, &rs);
    let moving = img.partition("t", 0).cloned().expect("p");
    assert_eq!(moving.adding, vec![4]);
    assert_eq!(moving.removing, vec![p.replicas[2]]);
    assert_eq!(moving.replicas.len(), 4);
    let mut isr = moving.isr.clone();
    isr.push(4);
    let (rs, state) = alter_isr(
        &img,
        "t",
        0,
        moving.leader,
        moving.leader_epoch,
        moving.partition_epoch,
        &isr,
    )
    .expect("expand");
    apply(&mut img, &rs);
    assert!(state.adding.is_empty() && state.removing.is_empty());
    assert_eq!(
        img.partition("t", 0).map(|p| p.replicas.clone()),
        Some(target)
    );
    assert!(matches!(
        reassign(&img, "t", 0, None),
        Err(ControllerError::NoReassignmentInProgress)
    ));
}

#[test]
fn partitions_only_grow_and_new_ones_are_placed() {
    let mut img = cluster(2);
    assert!(matches!(
        create_partitions(&img, "t", 2, None),
        Err(ControllerError::InvalidPartitions(_))
    ));
    let r = create_partitions(&img, "t", 5, None).expect("grow");
    apply(&mut img, &[r]);
    let t = img.topic("t").expect("t");
    assert_eq!(t.partitions.len(), 5);
    assert!(t.partitions.iter().all(|p| p.replicas.len() == 3));
}

#[test]
fn preferred_election_reports_when_not_needed() {
    let img = cluster(1);
    assert!(matches!(
        elect_leader(&img, "t", 0, false),
        Err(ControllerError::ElectionNotNeeded)
    ));
}
