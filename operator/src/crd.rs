//! The custom resources (group `sluice.dev`, version `v1alpha1`): `Topic`,
//! `OffsetReset` and `Replay`. The CRD YAML in `manifests/crds/` is generated
//! from these types (`sluice-operator crds`); never edit it by hand.

use std::collections::BTreeMap;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "sluice.dev";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "sluice.dev/v1alpha1";

/// `sluice.dev/managed: "false"`: the operator leaves the topic alone.
pub const ANNOTATION_MANAGED: &str = "sluice.dev/managed";
/// `sluice.dev/paused: "true"`: the operator stops reconciling the resource.
pub const ANNOTATION_PAUSED: &str = "sluice.dev/paused";

/// A Kafka topic the operator keeps in the state its spec describes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Topic",
    namespaced,
    status = "TopicStatus",
    shortname = "stopic",
    category = "sluice",
    printcolumn = r#"{"name":"Topic","type":"string","jsonPath":".status.topicName"}"#,
    printcolumn = r#"{"name":"Partitions","type":"integer","jsonPath":".status.partitions"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("!has(oldSelf.partitions) || (has(self.partitions) && self.partitions >= oldSelf.partitions)").message("partitions can only grow (Kafka cannot remove partitions)"),
    validation = Rule::new("has(self.topicName) == has(oldSelf.topicName) && (!has(self.topicName) || self.topicName == oldSelf.topicName)").message("topicName cannot change: create a new Topic instead")
)]
pub struct TopicSpec {
    /// The Kafka topic's name; defaults to metadata.name. Lets topic names
    /// that Kubernetes names cannot hold (`_`, capitals) exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 249))]
    pub topic_name: Option<String>,
    /// Number of partitions; the broker's default when unset. Can only grow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= 1").message("partitions must be at least 1"))]
    pub partitions: Option<i32>,
    /// Replication factor; the broker's default when unset. A change moves
    /// replicas (a partition reassignment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    #[x_kube(validation = Rule::new("self >= 1").message("replicas must be at least 1"))]
    pub replicas: Option<i32>,
    /// Kafka topic configs (`retention.ms`, `cleanup.policy`, ...). Values may
    /// be strings, integers or booleans. Keys not listed are left alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(schema_with = "config_schema")]
    pub config: BTreeMap<String, serde_json::Value>,
    /// What deleting this resource does to the topic: `Delete` (default)
    /// deletes it, `Retain` leaves it on the cluster.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    #[default]
    Delete,
    Retain,
}

fn config_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Kafka topic configs; values are strings, integers or booleans.",
        "additionalProperties": {
            "x-kubernetes-preserve-unknown-fields": true
        }
    })
}

/// What the operator last saw and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicStatus {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The Kafka topic this resource manages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// The topic's effective configs set on the topic itself (not broker
    /// defaults), as the cluster reports them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: BTreeMap<String, String>,
    /// The last 10 config values found changed outside the operator and
    /// put back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<DriftEntry>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DriftEntry {
    pub key: String,
    /// The value found on the cluster (none: the key was removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub found: Option<String>,
    /// The value put back.
    pub restored: String,
    pub at: String,
}

/// A status condition (the shape of Kubernetes' own `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready` (Topic), `Complete` (OffsetReset, Replay), `Conflict`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A one-shot reset of a consumer group's committed offsets, as
/// `sluice offsets reset`: the status shows the plan, then Applied or Failed.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "OffsetReset",
    namespaced,
    status = "OffsetResetStatus",
    category = "sluice",
    printcolumn = r#"{"name":"Group","type":"string","jsonPath":".spec.group"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("has(self.topics) != (has(self.allTopics) && self.allTopics)").message("name the topics (topics) or set allTopics: true, not both"),
    validation = Rule::new("self == oldSelf || !has(oldSelf.dryRun) || oldSelf.dryRun").message("an OffsetReset that was not a dry run cannot change: create a new one")
)]
pub struct OffsetResetSpec {
    /// The consumer group whose committed offsets move.
    #[schemars(length(min = 1))]
    pub group: String,
    /// Topics (and optionally partitions) to reset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<TopicPartitions>>,
    /// Every topic the group has committed offsets for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub all_topics: Option<bool>,
    /// Exactly one strategy.
    pub strategy: ResetStrategy,
    /// Plan only: the status shows the plan; nothing is committed.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopicPartitions {
    #[schemars(length(min = 1))]
    pub topic: String,
    /// Partitions to reset; all of the topic's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<i32>>,
}

/// One of the `sluice offsets reset` strategies.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("[has(self.toEarliest), has(self.toLatest), has(self.toOffset), has(self.shiftBy), has(self.toDatetime), has(self.byDuration), has(self.toCurrent)].filter(x, x).size() == 1").message("set exactly one strategy: toEarliest, toLatest, toOffset, shiftBy, toDatetime, byDuration or toCurrent")
)]
pub struct ResetStrategy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_earliest: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_latest: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_offset: Option<i64>,
    /// Move by N (negative: back, re-read; positive: forward, skip).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shift_by: Option<i64>,
    /// RFC 3339 time (`2026-11-21T10:00:00Z`) or epoch milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_datetime: Option<String>,
    /// How long ago: `PT1H`, `1h30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_current: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetResetStatus {
    /// `Planned` (dry run), `Applied` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per partition: current -> new offset and the messages re-read
    /// (positive) or skipped (negative).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plan: Vec<OffsetPlanRow>,
    /// The offsets before the reset, for undo (an OffsetReset with
    /// toOffset per partition, or `sluice offsets undo`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_offsets: Vec<PartitionOffset>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OffsetPlanRow {
    pub topic: String,
    pub partition: i32,
    /// No committed offset when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<i64>,
    pub new: i64,
    /// Messages re-read (positive) or skipped (negative).
    pub messages: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// A one-shot copy of a range of records from one topic to another, as
/// `sluice replay`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "sluice.dev",
    version = "v1alpha1",
    kind = "Replay",
    namespaced,
    status = "ReplayStatus",
    category = "sluice",
    printcolumn = r#"{"name":"From","type":"string","jsonPath":".spec.source.topic"}"#,
    printcolumn = r#"{"name":"To","type":"string","jsonPath":".spec.destination.topic"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Copied","type":"integer","jsonPath":".status.recordsCopied"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self == oldSelf").message("a Replay cannot change once created: create a new one"))]
pub struct ReplaySpec {
    pub source: ReplaySource,
    pub destination: ReplayDestination,
    /// Records per second at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub rate: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplaySource {
    #[schemars(length(min = 1))]
    pub topic: String,
    /// Partitions to copy; all when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<i32>>,
    /// `earliest`, an offset (`1200`) or `@TIME` (`@2026-11-21T10:00:00Z`).
    #[serde(default = "earliest")]
    pub start: String,
    /// Exclusive: `latest`, an offset or `@TIME`.
    #[serde(default = "latest")]
    pub end: String,
}

fn earliest() -> String {
    "earliest".to_string()
}

fn latest() -> String {
    "latest".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayDestination {
    #[schemars(length(min = 1))]
    pub topic: String,
    /// Another cluster's bootstrap servers; the operator's own cluster
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    /// `same` (partition N to N, the default), `key` (by the key's hash, as
    /// Kafka's default partitioner) or `round-robin`.
    #[serde(default)]
    pub partitioning: ReplayPartitioning,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ReplayPartitioning {
    #[default]
    #[serde(rename = "same")]
    Same,
    #[serde(rename = "key")]
    Key,
    #[serde(rename = "round-robin")]
    RoundRobin,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayStatus {
    /// `Running`, `Completed` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per source partition: the next offset to copy and the end
    /// (exclusive); a restarted operator resumes from here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<ReplayPartitionStatus>,
    #[serde(default)]
    pub records_copied: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplayPartitionStatus {
    pub partition: i32,
    pub next: i64,
    pub end: i64,
    pub copied: u64,
}

/// The three CRDs, in the order `manifests/crds/` lists them.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![Topic::crd(), OffsetReset::crd(), Replay::crd()]
}

/// The CRDs as one multi-document YAML stream, as `sluice-operator crds`
/// prints it and `manifests/crds/` holds it.
pub fn render_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_yaml::Error> {
    let mut out = String::from("# Generated by `sluice-operator crds`; do not edit.\n");
    out.push_str(&serde_yaml::to_string(crd)?);
    Ok(out)
}
