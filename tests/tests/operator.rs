//! The operator end to end, with real parts only: `sluice-operator` processes,
//! real `sluice-broker` processes, and (for `run`) a real kube-apiserver +
//! etcd on loopback driven with kubectl (tests/k8s/).
//!
//! Without Kubernetes (`apply` / `diff`):
//! - a folder of Topic manifests is created, grown and re-configured; `diff`
//!   exits 2 while changes are pending and 0 once in sync; a shrink is refused
//!   with a message naming the fix and changes nothing;
//! - `--prune` deletes only undeclared, non-internal topics and config keys
//!   set on a topic that its manifest does not mention;
//! - Strimzi `KafkaTopic` manifests apply to the same state as ours;
//! - bad manifests are reported by file, resource and field, and nothing is
//!   applied.
//!
//! In a cluster (`run`):
//! - a Topic applied with kubectl is created on the broker and reports
//!   Ready=True; growing it adds partitions; a shrink gets Ready=False with
//!   PartitionsCannotShrink and a Warning Event; a config changed with another
//!   tool is put back and listed in status.drift; deleting it deletes the
//!   topic (Delete) or keeps it (Retain); a second Topic claiming the same
//!   name gets a Conflict condition and deleting it leaves the topic;
//!   `sluice.dev/managed: "false"` leaves a topic alone;
//! - an OffsetReset plans (dry run), then applies, and one against a group
//!   with live members fails naming them; a Replay copies a range to
//!   completion;
//! - an operator killed with -9 in the middle of a replay, and while a Topic
//!   was added, picks up both when it starts again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use sluice_broker::client::{Client, ClientConfig, ConfigOp, Isolation, NewTopic, ProduceRecord};
use sluice_tests::cluster::{Cluster as Brokers, ClusterOptions};
use sluice_tests::cmd::{self, CmdOutput};
use sluice_tests::group::{wait_balanced, Member, MemberConfig, MemberKind};
use sluice_tests::k8s::{repo_root, workspace_binary, ApiServer, OperatorProcess};
use sluice_tests::{wait_for, wait_until, BrokerProcess};

const CONVERGE: Duration = Duration::from_secs(60);

fn rt() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

fn client(rt: &tokio::runtime::Runtime, bootstrap: &str) -> Result<Client> {
    Ok(rt.block_on(Client::connect(bootstrap, ClientConfig::default()))?)
}

/// A topic as the broker has it: partitions, replication factor and the
/// configs set on the topic itself.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TopicState {
    partitions: usize,
    replicas: usize,
    overrides: BTreeMap<String, String>,
}

fn topics(rt: &tokio::runtime::Runtime, c: &Client) -> Result<BTreeMap<String, TopicState>> {
    rt.block_on(async {
        let md = c.metadata(None).await?;
        let mut out = BTreeMap::new();
        for t in md.topics {
            if t.error.is_some() || t.name.starts_with("__") {
                continue;
            }
            let configs = c.describe_topic_configs(&t.name).await?;
            out.insert(
                t.name.clone(),
                TopicState {
                    partitions: t.partitions.len(),
                    replicas: t.partitions.first().map_or(0, |p| p.replicas.len()),
                    overrides: configs
                        .into_iter()
                        .filter(|e| e.source == "topic")
                        .filter_map(|e| e.value.map(|v| (e.name, v)))
                        .collect(),
                },
            );
        }
        Ok(out)
    })
}

/// `sluice-operator ARGS`, finished.
fn operator(args: &[&str]) -> Result<CmdOutput> {
    cmd::run(
        Command::new(workspace_binary("sluice-operator")?).args(args),
        None,
        Duration::from_secs(120),
    )
}

fn apply(dir: &Path, bootstrap: &str, extra: &[&str]) -> Result<CmdOutput> {
    let d = dir.to_string_lossy().to_string();
    let mut args = vec!["apply", "-f", &d, "--bootstrap", bootstrap];
    args.extend_from_slice(extra);
    operator(&args)
}

fn diff(dir: &Path, bootstrap: &str) -> Result<CmdOutput> {
    let d = dir.to_string_lossy().to_string();
    operator(&["diff", "-f", &d, "--bootstrap", bootstrap])
}

fn code(out: &CmdOutput) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn rf_yaml(name: &str, partitions: i32, replicas: i32) -> String {
    format!(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: {name}\nspec:\n  partitions: {partitions}\n  replicas: {replicas}\n"
    )
}

fn topic_yaml(name: &str, partitions: i32, config: &[(&str, &str)]) -> String {
    let mut y = rf_yaml(name, partitions, 1);
    if !config.is_empty() {
        y.push_str("  config:\n");
        for (k, v) in config {
            y.push_str(&format!("    {k}: {v}\n"));
        }
    }
    y
}

#[test]
fn apply_and_diff_converge_a_folder_and_refuse_a_shrink() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let rt = rt()?;
    let c = client(&rt, &b)?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("orders.yaml"),
        topic_yaml("orders", 3, &[("retention.ms", "3600000")]),
    )?;
    std::fs::create_dir(dir.path().join("team-b"))?;
    std::fs::write(
        dir.path().join("team-b/payments.yml"),
        topic_yaml("payments", 2, &[("retention.bytes", "1048576")]),
    )?;

    let d = diff(dir.path(), &b)?;
    ensure!(code(&d) == 2, "diff with pending changes must exit 2: {d}");
    ensure!(
        d.stdout.contains("create topic orders with 3 partitions"),
        "{d}"
    );
    ensure!(topics(&rt, &c)?.is_empty(), "diff changed the cluster");

    apply(dir.path(), &b, &[])?.require_success()?;
    let t = topics(&rt, &c)?;
    ensure!(
        t["orders"].partitions == 3 && t["orders"].overrides["retention.ms"] == "3600000",
        "{t:?}"
    );
    ensure!(
        t["payments"].overrides["retention.bytes"] == "1048576",
        "{t:?}"
    );
    let d = diff(dir.path(), &b)?;
    ensure!(code(&d) == 0, "diff in sync must exit 0: {d}");
    ensure!(d.stdout.contains("2 in sync, 0 change(s) planned"), "{d}");

    // Grow and re-configure.
    std::fs::write(
        dir.path().join("orders.yaml"),
        topic_yaml(
            "orders",
            6,
            &[
                ("retention.ms", "7200000"),
                ("max.message.bytes", "2000000"),
            ],
        ),
    )?;
    let d = diff(dir.path(), &b)?;
    ensure!(code(&d) == 2, "{d}");
    ensure!(d.stdout.contains("add partitions to orders: 3 -> 6"), "{d}");
    ensure!(
        d.stdout.contains("~ retention.ms: 3600000 -> 7200000"),
        "{d}"
    );
    apply(dir.path(), &b, &[])?.require_success()?;
    let t = topics(&rt, &c)?;
    ensure!(t["orders"].partitions == 6, "{t:?}");
    ensure!(t["orders"].overrides["retention.ms"] == "7200000", "{t:?}");
    ensure!(
        t["orders"].overrides["max.message.bytes"] == "2000000",
        "{t:?}"
    );

    // Shrinking is refused, names the fix, and changes nothing.
    std::fs::write(dir.path().join("orders.yaml"), topic_yaml("orders", 2, &[]))?;
    let before = topics(&rt, &c)?;
    let out = apply(dir.path(), &b, &[])?;
    ensure!(code(&out) == 1, "a refused shrink must fail: {out}");
    ensure!(
        out.stdout
            .contains("partitions can only grow: topic orders has 6, the spec asks for 2"),
        "{out}"
    );
    ensure!(
        topics(&rt, &c)? == before,
        "a refused apply changed the cluster"
    );
    // Config keys the manifest no longer mentions are left alone.
    ensure!(before["orders"].overrides.contains_key("retention.ms"));
    Ok(())
}

#[test]
fn prune_deletes_only_undeclared_topics_and_configs() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let rt = rt()?;
    let c = client(&rt, &b)?;
    rt.block_on(async {
        let mk = |name: &str| NewTopic {
            name: name.into(),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
        };
        c.create_topics(vec![mk("orders"), mk("stray"), mk("legacy")], false)
            .await?;
        // A group commit creates the internal __consumer_offsets topic.
        c.commit_offsets("g", &BTreeMap::from([(("orders".to_string(), 0), 0)]))
            .await?;
        anyhow::Ok(())
    })?;
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("topics.yaml"),
        format!(
            "{}---\napiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: legacy\n  annotations:\n    sluice.dev/managed: \"false\"\nspec: {{}}\n",
            topic_yaml("orders", 1, &[("cleanup.policy", "delete")])
        ),
    )?;
    let d = diff(dir.path(), &b)?;
    ensure!(code(&d) == 0, "without --prune nothing is to be done: {d}");
    ensure!(
        !d.stdout.contains("delete topic"),
        "without --prune nothing is deleted: {d}"
    );
    let out = apply(dir.path(), &b, &["--prune"])?.require_success()?;
    ensure!(out.stdout.contains("delete topic stray"), "{out}");
    ensure!(out.stdout.contains("- retention.ms (was 1000"), "{out}");
    let t = topics(&rt, &c)?;
    ensure!(!t.contains_key("stray"), "stray was not pruned: {t:?}");
    ensure!(
        t.contains_key("legacy"),
        "an unmanaged topic was pruned: {t:?}"
    );
    ensure!(t["legacy"].overrides.contains_key("retention.ms"), "{t:?}");
    ensure!(!t["orders"].overrides.contains_key("retention.ms"), "{t:?}");
    let md = rt.block_on(c.metadata(None))?;
    ensure!(
        md.topics.iter().any(|t| t.name == "__consumer_offsets"),
        "an internal topic was pruned"
    );
    Ok(())
}

#[test]
fn strimzi_kafka_topics_apply_like_the_topic_examples() -> Result<()> {
    let ours = BrokerProcess::start()?;
    let strimzi = BrokerProcess::start()?;
    let examples = repo_root().join("manifests/examples");
    let strimzi_dir = repo_root().join("manifests/examples-strimzi");
    // The whole examples folder: its OffsetReset and Replay are checked and
    // left for the in-cluster operator.
    let out = apply(&examples, &ours.bootstrap(), &[])?.require_success()?;
    ensure!(
        out.stdout.contains("not run here: OffsetReset is one-shot"),
        "{out}"
    );
    apply(&strimzi_dir, &strimzi.bootstrap(), &[])?.require_success()?;
    let rt = rt()?;
    let a = topics(&rt, &client(&rt, &ours.bootstrap())?)?;
    let s = topics(&rt, &client(&rt, &strimzi.bootstrap())?)?;
    ensure!(!s.is_empty(), "the Strimzi folder created nothing");
    for (name, state) in &s {
        ensure!(
            a.get(name) == Some(state),
            "{name}: Strimzi gave {state:?}, the Topic example {:?}",
            a.get(name)
        );
    }
    // Re-applying either is a no-op.
    let d = diff(&strimzi_dir, &strimzi.bootstrap())?;
    ensure!(code(&d) == 0, "{d}");
    Ok(())
}

#[test]
fn bad_manifests_name_file_resource_and_field_and_apply_nothing() -> Result<()> {
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("good.yaml"), topic_yaml("good", 1, &[]))?;
    std::fs::write(
        dir.path().join("bad.yaml"),
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: orders\nspec:\n  partitions: six\n",
    )?;
    std::fs::write(
        dir.path().join("typo.yaml"),
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: payments\nspec:\n  partitons: 3\n",
    )?;
    std::fs::write(dir.path().join("broken.yaml"), "kind: [\n")?;
    let out = apply(dir.path(), &b, &[])?;
    ensure!(code(&out) == 1, "{out}");
    for want in [
        "bad.yaml: Topic default/orders: spec.partitions:",
        "typo.yaml: Topic default/payments: spec.partitons: unknown field",
        "broken.yaml: document 1 is not valid YAML",
        "nothing applied: 3 problem(s)",
    ] {
        ensure!(out.stdout.contains(want), "missing {want:?} in {out}");
    }
    let rt = rt()?;
    ensure!(
        topics(&rt, &client(&rt, &b)?)?.is_empty(),
        "a folder with problems applied something"
    );
    let out = operator(&["apply", "-f", "/nonexistent/dir", "--bootstrap", &b])?;
    ensure!(
        code(&out) == 1 && out.stdout.contains("cannot read"),
        "{out}"
    );
    Ok(())
}

/// How long a replication-factor change may take to settle on three brokers.
const REASSIGN_SETTLE: Duration = Duration::from_secs(60);

/// Leader and replicas of each partition once every reassignment of
/// `topic` has finished with `rf` replicas, all in the ISR.
fn settled_replicas(
    brokers: &Brokers,
    topic: &str,
    rf: usize,
) -> Result<BTreeMap<i32, (i32, Vec<i32>)>> {
    let mut last = Vec::new();
    let settled = wait_for(
        REASSIGN_SETTLE,
        &format!("every partition of {topic} to have {rf} replicas, all in sync"),
        || {
            last = brokers.partitions(topic)?;
            let done = !last.is_empty()
                && last.iter().all(|p| {
                    let mut replicas = p.replicas.clone();
                    replicas.sort_unstable();
                    p.replicas.len() == rf && p.isr == replicas && p.leader >= 0
                });
            Ok(done.then(|| {
                last.iter()
                    .map(|p| (p.partition, (p.leader, p.replicas.clone())))
                    .collect()
            }))
        },
    );
    settled.with_context(|| format!("partitions of {topic}: {last:?}"))
}

#[test]
fn replication_factor_changes_reassign_replicas_across_three_brokers() -> Result<()> {
    const TOPIC: &str = "ledger";
    const PARTITIONS: i32 = 3;
    const RECORDS: usize = 60;
    let brokers = Brokers::start(3, ClusterOptions::default())?;
    let b = brokers.bootstrap_all();
    let rt = rt()?;
    let c = client(&rt, &b)?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("ledger.yaml");
    std::fs::write(&manifest, rf_yaml(TOPIC, PARTITIONS, 1))?;
    apply(dir.path(), &b, &[])?.require_success()?;
    let one = settled_replicas(&brokers, TOPIC, 1)?;
    produce(&rt, &c, TOPIC, PARTITIONS, RECORDS)?;
    let written = keys(&rt, &c, TOPIC)?;
    ensure!(
        written.len() == RECORDS,
        "wrote {} of {RECORDS}",
        written.len()
    );

    // 1 -> 3: every broker gets a replica, the leader stays where it was,
    // and the new replicas hold the same records as the leader.
    std::fs::write(&manifest, rf_yaml(TOPIC, PARTITIONS, 3))?;
    let d = diff(dir.path(), &b)?;
    ensure!(code(&d) == 2, "{d}");
    ensure!(
        d.stdout
            .contains("change the replication factor of ledger: 1 -> 3"),
        "{d}"
    );
    apply(dir.path(), &b, &[])?.require_success()?;
    let three = settled_replicas(&brokers, TOPIC, 3)?;
    for (p, (leader, replicas)) in &three {
        let (old_leader, _) = one[p];
        ensure!(
            *leader == old_leader && replicas.first() == Some(&old_leader),
            "partition {p}: led by {old_leader} before, now {leader} with replicas {replicas:?}"
        );
        let log = brokers.replica_log(old_leader, TOPIC, *p)?;
        brokers.wait_for_replicas_on_to_match(replicas, TOPIC, *p, &log, REASSIGN_SETTLE)?;
    }
    let d = diff(dir.path(), &b)?;
    ensure!(
        code(&d) == 0,
        "diff after the reassignment must be in sync: {d}"
    );

    // More replicas than brokers: refused, named, nothing changed.
    std::fs::write(&manifest, rf_yaml(TOPIC, PARTITIONS, 4))?;
    let out = apply(dir.path(), &b, &[])?;
    ensure!(code(&out) == 1, "{out}");
    ensure!(
        out.stdout
            .contains("topic ledger asks for 4 replicas but the cluster has 3 broker(s)"),
        "{out}"
    );
    ensure!(
        settled_replicas(&brokers, TOPIC, 3)? == three,
        "a refused apply moved replicas"
    );

    // 3 -> 2: one replica of each partition goes, never the leader's, and
    // each broker keeps two.
    std::fs::write(&manifest, rf_yaml(TOPIC, PARTITIONS, 2))?;
    apply(dir.path(), &b, &[])?.require_success()?;
    let two = settled_replicas(&brokers, TOPIC, 2)?;
    for (p, (leader, replicas)) in &two {
        ensure!(
            *leader == one[p].0,
            "partition {p}: led by {} before, now {leader} ({replicas:?})",
            one[p].0
        );
    }
    let mut per_broker: BTreeMap<i32, usize> = BTreeMap::new();
    for (_, replicas) in two.values() {
        for r in replicas {
            *per_broker.entry(*r).or_default() += 1;
        }
    }
    ensure!(
        per_broker.values().all(|n| *n == 2),
        "replicas per broker after 3 -> 2: {per_broker:?} ({two:?})"
    );
    println!("(leader, replicas) by partition: RF 1 {one:?}, RF 3 {three:?}, RF 2 {two:?}");
    let d = diff(dir.path(), &b)?;
    ensure!(code(&d) == 0, "{d}");
    let read = keys(&rt, &c, TOPIC)?;
    ensure!(
        read.iter().collect::<BTreeSet<_>>() == written.iter().collect::<BTreeSet<_>>()
            && read.len() == RECORDS,
        "after two reassignments the topic holds {} records, want the {RECORDS} written",
        read.len()
    );
    Ok(())
}

// ----- in a cluster -----

struct Cluster {
    api: ApiServer,
    broker: BrokerProcess,
    operator: OperatorProcess,
    rt: tokio::runtime::Runtime,
    kafka: Client,
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let api = ApiServer::start()?;
        api.install_crds()?;
        let broker = BrokerProcess::start()?;
        let operator = OperatorProcess::start(&api, &broker.bootstrap())?;
        let rt = rt()?;
        let kafka = client(&rt, &broker.bootstrap())?;
        Ok(Cluster {
            api,
            broker,
            operator,
            rt,
            kafka,
        })
    }

    fn topics(&self) -> Result<BTreeMap<String, TopicState>> {
        topics(&self.rt, &self.kafka)
    }

    /// Waits until `kind/name`'s status satisfies `cond`; returns it.
    fn wait_status(
        &self,
        kind: &str,
        name: &str,
        what: &str,
        cond: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        wait_for(CONVERGE, what, || {
            let obj = self.api.get(kind, name)?;
            Ok(obj.map(|o| o["status"].clone()).filter(|s| cond(s)))
        })
        .with_context(|| {
            format!(
                "{kind}/{name} is now {:?}\n--- operator log ---\n{}",
                self.api
                    .get(kind, name)
                    .ok()
                    .flatten()
                    .map(|o| o["status"].clone()),
                self.operator.log_tail()
            )
        })
    }

    fn events(&self) -> Result<Vec<(String, String, String)>> {
        let out = self
            .api
            .kubectl(&["get", "events.events.k8s.io", "-o", "json"])?
            .require_success()?;
        let v: serde_json::Value = serde_json::from_str(&out.stdout)?;
        Ok(v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e["regarding"]["name"].as_str().unwrap_or("").to_string(),
                    e["type"].as_str().unwrap_or("").to_string(),
                    e["reason"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }
}

fn ready(s: &serde_json::Value) -> Option<(&str, &str)> {
    s["conditions"].as_array()?.iter().find_map(|c| {
        (c["type"] == "Ready").then(|| {
            (
                c["status"].as_str().unwrap_or(""),
                c["reason"].as_str().unwrap_or(""),
            )
        })
    })
}

#[test]
fn topic_resources_are_created_grown_guarded_reverted_and_deleted_through_kubectl() -> Result<()> {
    let k = Cluster::start()?;
    k.api
        .apply(&topic_yaml("orders", 3, &[("retention.ms", "3600000")]))?;
    let s = k.wait_status("topic", "orders", "orders Ready=True", |s| {
        ready(s) == Some(("True", "InSync"))
    })?;
    ensure!(s["partitions"] == 3 && s["topicId"].is_string(), "{s}");
    let t = k.topics()?;
    ensure!(
        t["orders"].partitions == 3 && t["orders"].overrides["retention.ms"] == "3600000",
        "{t:?}"
    );

    // Grow.
    k.api
        .kubectl(&[
            "patch",
            "topic",
            "orders",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"partitions":6}}"#,
        ])?
        .require_success()?;
    k.wait_status("topic", "orders", "6 partitions in status", |s| {
        s["partitions"] == 6
    })?;
    ensure!(k.topics()?["orders"].partitions == 6);

    // Shrink: refused with a condition and a Warning event.
    k.api
        .kubectl(&[
            "patch",
            "topic",
            "orders",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"partitions":2}}"#,
        ])?
        .require_success()?;
    let s = k.wait_status("topic", "orders", "the shrink refused", |s| {
        ready(s) == Some(("False", "PartitionsCannotShrink"))
    })?;
    ensure!(s.to_string().contains("partitions can only grow"), "{s}");
    wait_until(CONVERGE, "a PartitionsCannotShrink Warning event", || {
        k.events().is_ok_and(|e| {
            e.iter()
                .any(|(n, t, r)| n == "orders" && t == "Warning" && r == "PartitionsCannotShrink")
        })
    })?;
    ensure!(k.topics()?["orders"].partitions == 6);
    k.api
        .kubectl(&[
            "patch",
            "topic",
            "orders",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"partitions":6}}"#,
        ])?
        .require_success()?;
    k.wait_status("topic", "orders", "back in sync", |s| {
        ready(s) == Some(("True", "InSync"))
    })?;

    // Drift made with another tool is put back and reported.
    k.rt.block_on(k.kafka.alter_topic_configs(
        "orders",
        &[ConfigOp::Set("retention.ms".into(), "5".into())],
    ))?;
    let s = k.wait_status("topic", "orders", "drift reverted", |s| {
        s["drift"].as_array().is_some_and(|d| {
            d.iter()
                .any(|e| e["key"] == "retention.ms" && e["found"] == "5")
        })
    })?;
    ensure!(s["config"]["retention.ms"] == "3600000", "{s}");
    wait_until(CONVERGE, "retention.ms back on the broker", || {
        k.topics().is_ok_and(|t| {
            t["orders"]
                .overrides
                .get("retention.ms")
                .map(String::as_str)
                == Some("3600000")
        })
    })?;

    // A second claim on the same Kafka topic is a conflict, and deleting it
    // leaves the topic.
    k.api.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: orders-copy\nspec:\n  topicName: orders\n  partitions: 12\n",
    )?;
    k.wait_status("topic", "orders-copy", "a Conflict condition", |s| {
        ready(s) == Some(("False", "Conflict"))
    })?;
    k.api
        .kubectl(&["delete", "topic", "orders-copy", "--wait=true"])?
        .require_success()?;
    ensure!(
        k.topics()?["orders"].partitions == 6,
        "the losing claim changed the topic"
    );

    // Unmanaged: left alone.
    k.rt.block_on(k.kafka.create_topics(
        vec![NewTopic {
            name: "legacy".into(),
            partitions: 4,
            replication_factor: 1,
            configs: BTreeMap::new(),
        }],
        false,
    ))?;
    k.api.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: legacy\n  annotations:\n    sluice.dev/managed: \"false\"\nspec:\n  partitions: 1\n",
    )?;
    k.wait_status("topic", "legacy", "Unmanaged", |s| {
        ready(s).is_some_and(|r| r.1 == "Unmanaged")
    })?;
    k.api
        .kubectl(&["delete", "topic", "legacy", "--wait=true"])?
        .require_success()?;
    ensure!(
        k.topics()?["legacy"].partitions == 4,
        "an unmanaged topic was touched"
    );

    // Retain keeps the topic; Delete deletes it.
    k.api.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: Topic\nmetadata:\n  name: kept\nspec:\n  partitions: 1\n  deletionPolicy: Retain\n",
    )?;
    k.wait_status("topic", "kept", "kept Ready", |s| {
        ready(s) == Some(("True", "InSync"))
    })?;
    k.api
        .kubectl(&["delete", "topic", "kept", "--wait=true"])?
        .require_success()?;
    ensure!(k.topics()?.contains_key("kept"), "Retain deleted the topic");
    k.api
        .kubectl(&["delete", "topic", "orders", "--wait=true"])?
        .require_success()?;
    wait_until(CONVERGE, "orders deleted from the broker", || {
        k.topics().is_ok_and(|t| !t.contains_key("orders"))
    })?;

    let m = k.operator.metrics()?;
    ensure!(
        m.contains("sluice_operator_reconciles_total{kind=\"Topic\"}"),
        "{m}"
    );
    ensure!(
        m.contains("sluice_operator_reconcile_failures_total{kind=\"Topic\",reason=\"PartitionsCannotShrink\"}"),
        "{m}"
    );
    let _ = &k.broker;
    Ok(())
}

/// Writes `n` records with keys `k0..` round-robin over the topic's partitions.
fn produce(
    rt: &tokio::runtime::Runtime,
    kafka: &Client,
    topic: &str,
    partitions: i32,
    n: usize,
) -> Result<()> {
    rt.block_on(async {
        for i in 0..n {
            kafka
                .produce(
                    topic,
                    Some(i32::try_from(i)? % partitions),
                    ProduceRecord {
                        key: Some(format!("k{i}").into_bytes()),
                        value: Some(format!("v{i}").into_bytes()),
                        headers: Vec::new(),
                        timestamp: None,
                    },
                )
                .await?;
        }
        anyhow::Ok(())
    })
}

fn create(k: &Cluster, topic: &str, partitions: i32) -> Result<()> {
    for (name, r) in k.rt.block_on(k.kafka.create_topics(
        vec![NewTopic {
            name: topic.into(),
            partitions,
            replication_factor: 1,
            configs: BTreeMap::new(),
        }],
        false,
    ))? {
        r.map_err(|e| anyhow::anyhow!("creating {name}: {e}"))?;
    }
    Ok(())
}

/// Every key in `topic`.
fn keys(rt: &tokio::runtime::Runtime, kafka: &Client, topic: &str) -> Result<Vec<String>> {
    rt.block_on(async {
        let md = kafka.metadata(Some(&[topic.to_string()])).await?;
        let t = md.topic(topic).context("no such topic")?;
        let mut out = Vec::new();
        for p in &t.partitions {
            let mut offset = 0;
            loop {
                let f = kafka
                    .fetch(topic, p.index, offset, 1 << 20, Isolation::ReadUncommitted)
                    .await?;
                if f.records.is_empty() {
                    break;
                }
                for r in &f.records {
                    out.push(
                        String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).to_string(),
                    );
                    offset = r.offset + 1;
                }
            }
        }
        anyhow::Ok(out)
    })
}

#[test]
fn offset_reset_and_replay_resources_run_to_completion() -> Result<()> {
    let k = Cluster::start()?;
    create(&k, "orders", 2)?;
    create(&k, "orders.dlq", 2)?;
    produce(&k.rt, &k.kafka, "orders", 2, 40)?;
    produce(&k.rt, &k.kafka, "orders.dlq", 2, 30)?;
    // The group has consumed everything.
    k.rt.block_on(k.kafka.commit_offsets(
        "billing",
        &BTreeMap::from([
            (("orders".to_string(), 0), 20),
            (("orders".to_string(), 1), 20),
        ]),
    ))?;

    let reset = |dry: bool| {
        format!(
            "apiVersion: sluice.dev/v1alpha1\nkind: OffsetReset\nmetadata:\n  name: rewind\nspec:\n  group: billing\n  topics:\n  - topic: orders\n  strategy:\n    shiftBy: -5\n  dryRun: {dry}\n"
        )
    };
    k.api.apply(&reset(true))?;
    let s = k.wait_status("offsetreset", "rewind", "the dry-run plan", |s| {
        s["phase"] == "Planned"
    })?;
    let plan = s["plan"].as_array().context("plan")?;
    ensure!(plan.len() == 2, "{s}");
    ensure!(
        plan.iter()
            .all(|r| r["current"] == 20 && r["new"] == 15 && r["messages"] == 5),
        "{s}"
    );
    let committed = k.rt.block_on(k.kafka.committed_offsets("billing"))?;
    ensure!(
        committed[&("orders".to_string(), 0)] == 20,
        "the dry run committed"
    );

    k.api.apply(&reset(false))?;
    let s = k.wait_status("offsetreset", "rewind", "Applied", |s| {
        s["phase"] == "Applied"
    })?;
    ensure!(
        s["previousOffsets"]
            .as_array()
            .is_some_and(|p| p.iter().all(|o| o["offset"] == 20)),
        "{s}"
    );
    let committed = k.rt.block_on(k.kafka.committed_offsets("billing"))?;
    ensure!(
        committed[&("orders".to_string(), 0)] == 15 && committed[&("orders".to_string(), 1)] == 15,
        "{committed:?}"
    );
    // Applied once: another reconcile does not shift again.
    std::thread::sleep(Duration::from_millis(1500));
    let again = k.rt.block_on(k.kafka.committed_offsets("billing"))?;
    ensure!(again == committed, "the reset ran twice: {again:?}");

    // A group with a live member is refused, naming it.
    let member_cfg = MemberConfig::new(
        MemberKind::Rdkafka,
        &k.broker.bootstrap(),
        "live",
        "orders",
        "live-member",
    );
    let mut member = Member::spawn(
        &member_cfg,
        Path::new(env!("CARGO_BIN_EXE_sluice-group-bench")),
        Path::new("unused"),
    )?;
    wait_balanced(&[&member], 2, Duration::from_secs(60))?;
    k.api.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: OffsetReset\nmetadata:\n  name: live\nspec:\n  group: live\n  allTopics: true\n  strategy:\n    toEarliest: true\n",
    )?;
    let s = k.wait_status("offsetreset", "live", "Failed", |s| s["phase"] == "Failed")?;
    ensure!(s["reason"] == "GroupActive", "{s}");
    ensure!(
        s["message"].as_str().unwrap_or("").contains("live-member"),
        "{s}"
    );
    member.close()?;

    k.api.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: Replay\nmetadata:\n  name: redrive\nspec:\n  source:\n    topic: orders.dlq\n    start: earliest\n    end: latest\n  destination:\n    topic: orders\n",
    )?;
    let s = k.wait_status("replay", "redrive", "Completed", |s| {
        s["phase"] == "Completed"
    })?;
    ensure!(s["recordsCopied"] == 30, "{s}");
    let got: BTreeSet<String> = keys(&k.rt, &k.kafka, "orders")?.into_iter().collect();
    ensure!(
        (0..30).all(|i| got.contains(&format!("k{i}"))),
        "replayed keys missing"
    );
    ensure!(
        keys(&k.rt, &k.kafka, "orders")?.len() == 70,
        "the replay copied a wrong number of records"
    );
    Ok(())
}

#[test]
fn operator_killed_mid_replay_resumes_and_catches_up_when_restarted() -> Result<()> {
    let mut k = Cluster::start()?;
    create(&k, "source", 1)?;
    create(&k, "copy", 1)?;
    produce(&k.rt, &k.kafka, "source", 1, 200)?;
    k.api.apply(
        "apiVersion: sluice.dev/v1alpha1\nkind: Replay\nmetadata:\n  name: slow\nspec:\n  source:\n    topic: source\n  destination:\n    topic: copy\n  rate: 40\n",
    )?;
    k.wait_status("replay", "slow", "progress recorded", |s| {
        s["phase"] == "Running" && s["recordsCopied"].as_u64().is_some_and(|n| n >= 40)
    })?;
    k.operator.kill9()?;
    let copied_at_kill = keys(&k.rt, &k.kafka, "copy")?.len();
    ensure!(
        copied_at_kill < 200,
        "the replay finished before the kill; slow it down"
    );
    // While the operator is down, a Topic is added.
    k.api.apply(&topic_yaml("added-while-down", 2, &[]))?;
    k.operator.restart()?;
    let s = k.wait_status("replay", "slow", "Completed after the restart", |s| {
        s["phase"] == "Completed"
    })?;
    let copied = keys(&k.rt, &k.kafka, "copy")?;
    let distinct: BTreeSet<&String> = copied.iter().collect();
    ensure!(
        distinct.len() == 200,
        "records missing after the restart: {} of 200",
        distinct.len()
    );
    // At most the progress not yet written to the status is copied twice.
    let dupes = copied.len() - 200;
    ensure!(
        dupes <= 80,
        "{dupes} duplicates after a restart; status was {s}"
    );
    k.wait_status("topic", "added-while-down", "the missed Topic", |s| {
        ready(s) == Some(("True", "InSync"))
    })?;
    ensure!(k.topics()?["added-while-down"].partitions == 2);

    // A clean stop exits 0.
    let status = k.operator.stop()?;
    ensure!(status.success(), "SIGTERM exit: {status}");
    Ok(())
}

/// `run --leader-elect` with a short Lease, as identity `name`.
fn candidate(api: &ApiServer, bootstrap: &str, name: &str) -> Result<OperatorProcess> {
    OperatorProcess::start_with(
        api,
        bootstrap,
        &[
            "--leader-elect",
            "--lease-namespace",
            "default",
            "--lease-duration",
            "3s",
            "--identity",
            name,
        ],
    )
}

/// The value of an unlabelled metric line `name VALUE`, 0 when absent.
fn metric(op: &OperatorProcess, name: &str) -> Result<f64> {
    let text = op.metrics()?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0))
}

fn lease_holder(api: &ApiServer) -> Result<Option<(String, i64)>> {
    Ok(api.get("lease", "sluice-operator")?.and_then(|l| {
        let holder = l["spec"]["holderIdentity"].as_str()?.to_string();
        Some((holder, l["spec"]["leaseTransitions"].as_i64().unwrap_or(0)))
    }))
}

fn wait_holder(api: &ApiServer, who: &str) -> Result<i64> {
    wait_for(CONVERGE, &format!("{who} to hold the leader lease"), || {
        Ok(lease_holder(api)?.and_then(|(h, transitions)| (h == who).then_some(transitions)))
    })
}

#[test]
fn two_operators_elect_one_leader_and_hand_over_on_kill_and_on_sigterm() -> Result<()> {
    let api = ApiServer::start()?;
    api.install_crds()?;
    let broker = BrokerProcess::start()?;
    let b = broker.bootstrap();
    let rt = rt()?;
    let kafka = client(&rt, &b)?;
    let exists = |t: &str| -> Result<bool> { Ok(topics(&rt, &kafka)?.contains_key(t)) };

    let mut a = candidate(&api, &b, "op-a")?;
    wait_holder(&api, "op-a")?;
    let mut standby = candidate(&api, &b, "op-b")?;
    api.apply(&topic_yaml("alpha", 2, &[]))?;
    wait_until(CONVERGE, "topic alpha to be created", || {
        exists("alpha").unwrap_or(false)
    })?;
    wait_until(CONVERGE, "op-a to report itself leader", || {
        metric(&a, "sluice_operator_leader").is_ok_and(|v| v == 1.0)
    })?;
    // The standby is up (its metrics answer) but does nothing.
    ensure!(
        metric(&standby, "sluice_operator_leader")? == 0.0,
        "the standby reports itself leader"
    );
    // The leader's metrics show the series the standby must not have.
    let reconciled = "sluice_operator_reconciles_total{";
    let leader_metrics = a.metrics()?;
    ensure!(
        leader_metrics.contains(reconciled),
        "the leader reports no reconciles:\n{leader_metrics}"
    );
    let standby_reconciles = standby.metrics()?;
    ensure!(
        !standby_reconciles.contains(reconciled),
        "the standby reconciled:\n{standby_reconciles}"
    );
    ensure!(lease_holder(&api)?.map(|(h, _)| h) == Some("op-a".into()));

    // kill -9 the leader: the standby takes over once the Lease expires
    // and reconciles what was applied meanwhile.
    a.kill9()?;
    let killed = std::time::Instant::now();
    api.apply(&topic_yaml("beta", 1, &[]))?;
    let transitions = wait_holder(&api, "op-b")?;
    wait_until(CONVERGE, "topic beta to be created by op-b", || {
        exists("beta").unwrap_or(false)
    })?;
    let took_over = killed.elapsed();
    ensure!(
        transitions >= 1,
        "leaseTransitions {transitions} after a takeover"
    );
    ensure!(metric(&standby, "sluice_operator_leader")? == 1.0);

    // The old leader comes back as a standby.
    a = candidate(&api, &b, "op-a")?;
    wait_until(CONVERGE, "op-a to answer /metrics", || a.metrics().is_ok())?;
    std::thread::sleep(Duration::from_secs(4));
    ensure!(
        lease_holder(&api)?.map(|(h, _)| h) == Some("op-b".into()),
        "the restarted op-a took the Lease from a live leader"
    );
    ensure!(metric(&a, "sluice_operator_leader")? == 0.0);

    // SIGTERM: the leader exits cleanly and gives the Lease up, so op-a
    // takes over without waiting for it to expire.
    let status = standby.stop()?;
    ensure!(status.success(), "op-b exited with {status}");
    let stopped = std::time::Instant::now();
    api.apply(&topic_yaml("gamma", 1, &[]))?;
    wait_holder(&api, "op-a")?;
    wait_until(CONVERGE, "topic gamma to be created by op-a", || {
        exists("gamma").unwrap_or(false)
    })?;
    let handed_over = stopped.elapsed();
    ensure!(a.exited()?.is_none(), "op-a exited:\n{}", a.log_tail());

    // A leader frozen past its Lease (SIGSTOP: a long GC-like pause, a
    // partitioned node) finds on waking that another took over, and exits
    // non-zero instead of reconciling beside it.
    a.signal("STOP")?;
    let mut op_b = candidate(&api, &b, "op-b")?;
    wait_holder(&api, "op-b")?;
    a.signal("CONT")?;
    let status = wait_for(CONVERGE, "the frozen op-a to exit", || a.exited())?;
    ensure!(
        !status.success() && a.log_tail().contains("lost the leader lease"),
        "op-a woke after losing the Lease and exited with {status}:\n{}",
        a.log_tail()
    );
    ensure!(lease_holder(&api)?.map(|(h, _)| h) == Some("op-b".into()));
    println!(
        "takeover after kill -9: {:.1} s (Lease 3 s); after SIGTERM: {:.1} s; a leader frozen past its Lease exited with {status}",
        took_over.as_secs_f64(),
        handed_over.as_secs_f64()
    );
    let status = op_b.stop()?;
    ensure!(status.success(), "op-b exited with {status}");
    Ok(())
}
