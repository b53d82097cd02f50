use super::*;

fn desired(name: &str) -> DesiredTopic {
    let mut d = DesiredTopic::new(format!("topics.yaml: Topic default/{name}"), name);
    d.partitions = Some(3);
    d.replicas = Some(1);
    d
}

fn observed(name: &str, partitions: i32, replicas: &[i32]) -> ObservedTopic {
    ObservedTopic {
        name: name.to_string(),
        id: Some("id".to_string()),
        internal: false,
        partitions: (0..partitions)
            .map(|i| ObservedPartition {
                index: i,
                leader: replicas[0],
                replicas: replicas.to_vec(),
            })
            .collect(),
        config: [("retention.ms", "604800000"), ("cleanup.policy", "delete")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        overrides: BTreeSet::new(),
    }
}

fn cluster(brokers: &[i32], topics: Vec<ObservedTopic>) -> Observed {
    Observed {
        brokers: brokers.to_vec(),
        topics: topics.into_iter().map(|t| (t.name.clone(), t)).collect(),
    }
}

fn kinds(p: &Plan) -> Vec<(&'static str, String)> {
    p.steps()
        .map(|s| (s.action.kind(), s.action.topic().to_string()))
        .collect()
}

#[test]
fn missing_topic_is_created_with_its_spec() {
    let mut d = desired("orders");
    d.config.insert("retention.ms".into(), "3600000".into());
    let p = plan(&[d], &cluster(&[1], vec![]), Options::default());
    let steps: Vec<_> = p.steps().collect();
    assert_eq!(steps.len(), 1);
    assert_eq!(
        steps[0].action,
        Action::Create {
            topic: "orders".into(),
            partitions: 3,
            replicas: 1,
            config: [("retention.ms".to_string(), "3600000".to_string())].into(),
        }
    );
    assert_eq!(steps[0].reason, "the topic does not exist");
}

#[test]
fn unset_partitions_and_replicas_take_the_broker_defaults() {
    let d = DesiredTopic::new("x", "orders");
    let p = plan(&[d], &cluster(&[1], vec![]), Options::default());
    let Action::Create {
        partitions,
        replicas,
        ..
    } = &p.topics[0].steps[0].action
    else {
        panic!("expected a create, got {p:?}");
    };
    assert_eq!((*partitions, *replicas), (-1, -1));
    assert!(p.topics[0].steps[0]
        .action
        .to_string()
        .contains("the broker's default partitions"));
}

#[test]
fn matching_topic_is_a_noop() {
    let mut d = desired("orders");
    d.config.insert("retention.ms".into(), "604800000".into());
    let p = plan(
        &[d],
        &cluster(&[1], vec![observed("orders", 3, &[1])]),
        Options::default(),
    );
    assert!(!p.has_changes(), "{p:?}");
    assert!(p.topics[0].is_noop());
}

#[test]
fn more_partitions_are_added() {
    let mut d = desired("orders");
    d.partitions = Some(6);
    let p = plan(
        &[d],
        &cluster(&[1], vec![observed("orders", 3, &[1])]),
        Options::default(),
    );
    assert_eq!(
        p.topics[0].steps[0].action,
        Action::AddPartitions {
            topic: "orders".into(),
            from: 3,
            to: 6
        }
    );
    assert_eq!(
        p.topics[0].steps[0].reason,
        "the spec asks for 6 partitions, the topic has 3"
    );
}

#[test]
fn fewer_partitions_are_refused_with_a_message_naming_the_fix() {
    let mut d = desired("orders");
    d.partitions = Some(2);
    let p = plan(
        &[d],
        &cluster(&[1], vec![observed("orders", 6, &[1])]),
        Options::default(),
    );
    assert!(!p.has_changes());
    let (_, r) = p.refusals().next().expect("a refusal");
    assert_eq!(r.reason(), "PartitionsCannotShrink");
    assert!(
        r.to_string()
            .starts_with("partitions can only grow: topic orders has 6, the spec asks for 2"),
        "{r}"
    );
}

#[test]
fn shrink_refusal_still_plans_config_changes() {
    let mut d = desired("orders");
    d.partitions = Some(2);
    d.config.insert("retention.ms".into(), "1000".into());
    let p = plan(
        &[d],
        &cluster(&[1], vec![observed("orders", 6, &[1])]),
        Options::default(),
    );
    assert_eq!(kinds(&p), vec![("alter-config", "orders".to_string())]);
    assert_eq!(p.refusals().count(), 1);
}

#[test]
fn changed_config_is_set_and_unmentioned_keys_are_left_alone() {
    let mut d = desired("orders");
    d.config.insert("retention.ms".into(), "1000".into());
    let mut t = observed("orders", 3, &[1]);
    t.config.insert("segment.bytes".into(), "1048576".into());
    t.overrides.insert("segment.bytes".into());
    let p = plan(&[d], &cluster(&[1], vec![t]), Options::default());
    assert_eq!(
        p.topics[0].steps[0].action,
        Action::AlterConfig {
            topic: "orders".into(),
            set: [(
                "retention.ms".to_string(),
                (Some("604800000".to_string()), "1000".to_string())
            )]
            .into(),
            delete: BTreeMap::new(),
        }
    );
    assert_eq!(
        p.topics[0].steps[0].reason,
        "the spec sets retention.ms=1000"
    );
    assert!(p.topics[0].drift.is_empty());
}

#[test]
fn prune_removes_topic_level_configs_the_spec_does_not_mention() {
    let d = desired("orders");
    let mut t = observed("orders", 3, &[1]);
    t.config.insert("segment.bytes".into(), "1048576".into());
    t.overrides.insert("segment.bytes".into());
    let p = plan(&[d], &cluster(&[1], vec![t]), Options { prune: true });
    let Action::AlterConfig { set, delete, .. } = &p.topics[0].steps[0].action else {
        panic!("{p:?}");
    };
    assert!(set.is_empty());
    assert_eq!(
        delete,
        &BTreeMap::from([("segment.bytes".to_string(), "1048576".to_string())])
    );
    // Broker defaults (not set on the topic) are never pruned.
    assert!(!delete.contains_key("retention.ms"));
}

#[test]
fn value_changed_outside_the_operator_is_drift_and_put_back() {
    let mut d = desired("orders");
    d.config.insert("retention.ms".into(), "1000".into());
    d.last_applied = Some([("retention.ms".to_string(), "1000".to_string())].into());
    let mut t = observed("orders", 3, &[1]);
    t.config.insert("retention.ms".into(), "5".into());
    let p = plan(&[d], &cluster(&[1], vec![t]), Options::default());
    assert_eq!(
        p.topics[0].drift,
        BTreeMap::from([("retention.ms".to_string(), Some("5".to_string()))])
    );
    assert_eq!(kinds(&p), vec![("alter-config", "orders".to_string())]);
    assert_eq!(
        p.topics[0].steps[0].reason,
        "retention.ms was changed outside the operator to 5"
    );
}

#[test]
fn spec_change_is_not_drift() {
    let mut d = desired("orders");
    d.config.insert("retention.ms".into(), "2000".into());
    d.last_applied = Some([("retention.ms".to_string(), "1000".to_string())].into());
    let mut t = observed("orders", 3, &[1]);
    t.config.insert("retention.ms".into(), "1000".into());
    let p = plan(&[d], &cluster(&[1], vec![t]), Options::default());
    assert!(p.topics[0].drift.is_empty());
    assert_eq!(p.topics[0].steps.len(), 1);
}

#[test]
fn unmanaged_topic_is_left_alone() {
    let mut d = desired("orders");
    d.managed = false;
    d.partitions = Some(1);
    let p = plan(
        &[d],
        &cluster(&[1], vec![observed("orders", 6, &[1])]),
        Options { prune: true },
    );
    assert!(!p.has_changes());
    assert_eq!(p.refusals().count(), 0);
    assert!(p.topics[0]
        .skipped
        .as_deref()
        .unwrap_or("")
        .contains("managed"));
}

#[test]
fn unmanaged_manifest_protects_its_topic_from_prune() {
    let mut d = desired("legacy");
    d.managed = false;
    let p = plan(
        &[d],
        &cluster(&[1], vec![observed("legacy", 6, &[1])]),
        Options { prune: true },
    );
    assert!(p.prune.is_empty());
}

#[test]
fn paused_topic_plans_nothing() {
    let mut d = desired("orders");
    d.paused = true;
    let p = plan(&[d], &cluster(&[1], vec![]), Options::default());
    assert!(!p.has_changes());
    assert!(p.topics[0]
        .skipped
        .as_deref()
        .unwrap_or("")
        .contains("paused"));
}

#[test]
fn second_claim_on_a_topic_name_is_a_conflict() {
    let a = desired("orders");
    let mut b = desired("orders");
    b.source = "b.yaml: Topic team-b/orders".into();
    b.partitions = Some(12);
    let p = plan(&[a, b], &cluster(&[1], vec![]), Options::default());
    assert_eq!(kinds(&p), vec![("create", "orders".to_string())]);
    let (tp, r) = p.refusals().next().expect("a conflict");
    assert_eq!(tp.source, "b.yaml: Topic team-b/orders");
    assert_eq!(r.reason(), "Conflict");
    assert!(r.to_string().contains("topics.yaml: Topic default/orders"));
}

#[test]
fn prune_deletes_only_undeclared_non_internal_topics() {
    let d = desired("orders");
    let mut offsets = observed("__consumer_offsets", 50, &[1]);
    offsets.internal = true;
    let p = plan(
        &[d],
        &cluster(
            &[1],
            vec![
                observed("orders", 3, &[1]),
                observed("stale", 1, &[1]),
                offsets,
                observed("__sluice_internal", 1, &[1]),
            ],
        ),
        Options { prune: true },
    );
    assert_eq!(kinds(&p), vec![("delete", "stale".to_string())]);
    let without = plan(
        &[desired("orders")],
        &cluster(&[1], vec![observed("stale", 1, &[1])]),
        Options::default(),
    );
    assert_eq!(kinds(&without), vec![("create", "orders".to_string())]);
}

#[test]
fn more_replicas_than_brokers_is_refused() {
    let mut d = desired("orders");
    d.replicas = Some(3);
    let p = plan(&[d], &cluster(&[1], vec![]), Options::default());
    assert!(!p.has_changes());
    let (_, r) = p.refusals().next().expect("refusal");
    assert_eq!(r.reason(), "NotEnoughBrokers");
    assert!(r.to_string().contains("set replicas to 1 or fewer"), "{r}");
}

#[test]
fn replication_factor_change_is_a_reassignment_spreading_new_replicas() {
    let mut d = desired("orders");
    d.replicas = Some(2);
    let mut t = observed("orders", 3, &[1]);
    t.partitions[1].replicas = vec![2];
    t.partitions[1].leader = 2;
    t.partitions[2].replicas = vec![3];
    t.partitions[2].leader = 3;
    let p = plan(&[d], &cluster(&[1, 2, 3], vec![t]), Options::default());
    let Action::Reassign {
        from,
        to,
        assignments,
        ..
    } = &p.topics[0].steps[0].action
    else {
        panic!("{p:?}");
    };
    assert_eq!((*from, *to), (1, 2));
    // Leaders stay first; each broker ends with two replicas.
    assert_eq!(
        assignments,
        &BTreeMap::from([(0, vec![1, 2]), (1, vec![2, 3]), (2, vec![3, 1])])
    );
}

#[test]
fn fewer_replicas_never_drop_the_leader() {
    let mut t = observed("orders", 2, &[1, 2, 3]);
    t.partitions[1].leader = 3;
    let a = reassign(&t, 1, &[1, 2, 3]);
    assert_eq!(a, BTreeMap::from([(0, vec![1]), (1, vec![3])]));
}

#[test]
fn fewer_replicas_leave_every_broker_with_the_same_load() {
    // Three partitions on three brokers, each led by a different broker:
    // going from 3 replicas to 2 must leave each broker with two, not
    // drop the last replica of every list.
    let mut t = observed("ledger", 3, &[2, 3, 1]);
    t.partitions[0].leader = 2;
    t.partitions[1].replicas = vec![3, 2, 1];
    t.partitions[1].leader = 3;
    t.partitions[2].replicas = vec![1, 2, 3];
    t.partitions[2].leader = 1;
    let a = reassign(&t, 2, &[1, 2, 3]);
    assert_eq!(
        a,
        BTreeMap::from([(0, vec![2, 3]), (1, vec![3, 1]), (2, vec![1, 2])])
    );
}

#[test]
fn plan_text_shows_each_change() {
    let mut d = desired("orders");
    d.partitions = Some(6);
    d.config.insert("retention.ms".into(), "1000".into());
    let p = plan(
        &[d],
        &cluster(&[1], vec![observed("orders", 3, &[1])]),
        Options::default(),
    );
    let text: Vec<String> = p.steps().map(|s| s.action.to_string()).collect();
    assert_eq!(
        text,
        vec![
            "add partitions to orders: 3 -> 6".to_string(),
            "alter configs of orders\n    ~ retention.ms: 604800000 -> 1000".to_string(),
        ]
    );
}
