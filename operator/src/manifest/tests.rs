use super::*;

fn load_str(text: &str) -> (Loaded, Vec<Problem>) {
    let mut loaded = Loaded::default();
    let mut problems = Vec::new();
    load_text(Path::new("topics.yaml"), text, &mut loaded, &mut problems);
    (loaded, problems)
}

#[test]
fn topics_from_several_documents_with_config_values_of_each_type() {
    let (l, p) = load_str(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Topic
metadata:
  name: orders
  namespace: shop
spec:
  partitions: 6
  replicas: 1
  config:
    retention.ms: 604800000
    cleanup.policy: compact
    unclean.leader.election.enable: false
---
apiVersion: sluice.dev/v1alpha1
kind: Topic
metadata:
  name: audit-log
spec:
  topicName: Audit_Log
  deletionPolicy: Retain
"#,
    );
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(l.topics.len(), 2);
    let orders = &l.topics[0];
    assert_eq!(orders.name, "orders");
    assert_eq!(orders.source, "topics.yaml: Topic shop/orders");
    assert_eq!(orders.partitions, Some(6));
    assert_eq!(orders.config["retention.ms"], "604800000");
    assert_eq!(orders.config["unclean.leader.election.enable"], "false");
    let audit = &l.topics[1];
    assert_eq!(audit.name, "Audit_Log");
    assert_eq!(audit.deletion_policy, crate::crd::DeletionPolicy::Retain);
    assert_eq!(audit.partitions, None);
}

#[test]
fn strimzi_kafka_topics_read_like_ours() {
    let (l, p) = load_str(
        r#"
apiVersion: kafka.strimzi.io/v1beta2
kind: KafkaTopic
metadata:
  name: payments
  labels:
    strimzi.io/cluster: my-cluster
spec:
  partitions: 3
  replicas: 1
  config:
    retention.ms: 7200000
---
apiVersion: kafka.strimzi.io/v1beta2
kind: KafkaTopic
metadata:
  name: legacy
  annotations:
    strimzi.io/managed: "false"
spec:
  partitions: 1
"#,
    );
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(l.topics[0].name, "payments");
    assert_eq!(l.topics[0].config["retention.ms"], "7200000");
    assert!(!l.topics[1].managed);
}

#[test]
fn other_kinds_are_skipped_and_annotations_read() {
    let (l, p) = load_str(
        r#"
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [topics.yaml]
---
apiVersion: sluice.dev/v1alpha1
kind: Topic
metadata:
  name: paused
  annotations:
    sluice.dev/paused: "true"
spec: {}
"#,
    );
    assert!(p.is_empty(), "{p:?}");
    assert_eq!(
        l.skipped,
        vec!["topics.yaml: Kustomization default/".to_string()]
    );
    assert!(l.topics[0].paused);
}

#[test]
fn problems_name_the_file_resource_and_field() {
    let (_, p) = load_str(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Topic
metadata:
  name: orders
spec:
  partitions: six
"#,
    );
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].resource.as_deref(), Some("Topic default/orders"));
    assert_eq!(p[0].field.as_deref(), Some("spec.partitions"));
    let text = p[0].to_string();
    assert!(
        text.starts_with("topics.yaml: Topic default/orders: spec.partitions: "),
        "{text}"
    );
}

#[test]
fn missing_spec_is_named() {
    let (_, p) =
        load_str("apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\n");
    assert_eq!(p[0].field.as_deref(), Some("spec"), "{p:?}");
}

#[test]
fn misspelt_field_is_refused_not_dropped() {
    let (_, p) = load_str(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {partitons: 3}\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].field.as_deref(), Some("spec.partitons"));
}

#[test]
fn invalid_values_are_each_reported() {
    let (_, p) = load_str(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec:
  topicName: "orders/v2"
  partitions: 0
  replicas: -1
  config:
    retention.ms: {nested: true}
    min.cleanable.dirty.ratio: 0.5
"#,
    );
    let fields: Vec<_> = p.iter().filter_map(|x| x.field.clone()).collect();
    assert_eq!(
        fields,
        vec![
            "spec.topicName",
            "spec.partitions",
            "spec.replicas",
            "spec.config.min.cleanable.dirty.ratio",
            "spec.config.retention.ms"
        ],
        "{p:?}"
    );
}

#[test]
fn broken_yaml_and_unknown_versions_are_problems() {
    let (_, p) = load_str("apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: [\n");
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("not valid YAML"), "{p:?}");
    let (_, p) = load_str("apiVersion: sluice.dev/v1\nkind: Topic\nmetadata: {name: a}\n");
    assert_eq!(p[0].field.as_deref(), Some("apiVersion"));
    assert!(p[0].message.contains("sluice.dev/v1alpha1"));
}

#[test]
fn one_shot_resources_are_checked() {
    let (l, p) = load_str(
        r#"
apiVersion: sluice.dev/v1alpha1
kind: OffsetReset
metadata: {name: rewind}
spec:
  group: billing
  allTopics: true
  strategy: {toEarliest: true, toLatest: true}
"#,
    );
    assert!(l.offset_resets.is_empty());
    assert_eq!(p[0].field.as_deref(), Some("spec.strategy"));
}

#[test]
fn topic_names_follow_kafka_rules() {
    assert!(check_topic_name("orders.v2_EU-1").is_ok());
    assert!(check_topic_name("..").is_err());
    assert!(check_topic_name(&"a".repeat(250)).is_err());
    assert!(check_topic_name("a b").is_err());
}

#[test]
fn a_folder_is_read_recursively_and_any_problem_applies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("team-a")).expect("mkdir");
    std::fs::write(
        dir.path().join("team-a/orders.yaml"),
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: orders}\nspec: {partitions: 3}\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("README.md"), "not yaml").expect("write");
    let loaded = load(&[dir.path().to_path_buf()]).expect("loads");
    assert_eq!(loaded.topics.len(), 1);
    std::fs::write(
        dir.path().join("bad.yml"),
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata: {name: bad}\nspec: {partitions: 0}\n",
    )
    .expect("write");
    let problems = load(&[dir.path().to_path_buf()]).expect_err("a problem");
    assert_eq!(problems.len(), 1);
    assert!(problems[0].file.ends_with("bad.yml"));
}
