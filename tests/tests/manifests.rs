//! The YAML under `manifests/`: every document parses as the kind it claims
//! (Kubernetes' own types, ours, Strimzi's), every kustomization lists the
//! files of its folder exactly once, and the resources that name each other
//! agree: the ClusterRole and the Lease Role with what the operator does,
//! the service account, the brokers' Services, disruption budget and
//! command line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser as _;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_yaml::Value;
use sluice_broker::config::{BrokerConfig, Cli};
use sluice_operator::crd::{OffsetReset, Replay, Topic};
use sluice_operator::manifest::KafkaTopic;

const KUSTOMIZE_API_VERSION: &str = "kustomize.config.k8s.io/v1beta1";
const STRIMZI_API_VERSION: &str = "kafka.strimzi.io/v1beta2";

/// One document of one file, parsed into the type its apiVersion and kind
/// name.
struct Doc {
    /// Relative to the repository root, for messages.
    file: PathBuf,
    /// 1-based within the file.
    index: usize,
    object: Object,
}

enum Object {
    Namespace(Box<Namespace>),
    ServiceAccount(Box<ServiceAccount>),
    ClusterRole(Box<ClusterRole>),
    ClusterRoleBinding(Box<ClusterRoleBinding>),
    Role(Box<Role>),
    RoleBinding(Box<RoleBinding>),
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    Service(Box<Service>),
    ConfigMap(Box<ConfigMap>),
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    CustomResourceDefinition(Box<CustomResourceDefinition>),
    Topic(Box<Topic>),
    OffsetReset(Box<OffsetReset>),
    Replay(Box<Replay>),
    KafkaTopic(Box<KafkaTopic>),
    Kustomization(Box<Kustomization>),
}

/// The parts of a kustomization these manifests use.
struct Kustomization {
    resources: Vec<String>,
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn relative(path: &Path) -> PathBuf {
    path.strip_prefix(repo_root())
        .map(Path::to_path_buf)
        .unwrap_or_else(|_| path.to_path_buf())
}

/// Every `.yaml` / `.yml` file under `dir`, in name order.
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if matches!(
            path.extension().and_then(|x| x.to_str()),
            Some("yaml") | Some("yml")
        ) {
            out.push(path);
        }
    }
}

/// Reads and parses everything under `manifests/`: the documents that
/// parsed, and one message per problem.
fn read_manifests() -> (Vec<Doc>, Vec<String>) {
    let mut files = Vec::new();
    yaml_files(&repo_root().join("manifests"), &mut files);
    let mut docs = Vec::new();
    let mut problems = Vec::new();
    for path in &files {
        let file = relative(path);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                problems.push(format!("{}: cannot read: {e}", file.display()));
                continue;
            }
        };
        let mut operator_docs = 0;
        for (i, de) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let index = i + 1;
            let value = match <Value as serde::Deserialize>::deserialize(de) {
                Ok(v) => v,
                Err(e) => {
                    problems.push(format!(
                        "{} document {index}: not valid YAML: {e}",
                        file.display()
                    ));
                    break;
                }
            };
            // An empty document (a leading or trailing `---`).
            if value.is_null() {
                continue;
            }
            match parse_document(&file, value) {
                Ok(object) => {
                    if matches!(
                        object,
                        Object::Topic(_)
                            | Object::OffsetReset(_)
                            | Object::Replay(_)
                            | Object::KafkaTopic(_)
                    ) {
                        operator_docs += 1;
                    }
                    docs.push(Doc {
                        file: file.clone(),
                        index,
                        object,
                    })
                }
                Err(e) => problems.push(format!("{} document {index}: {e}", file.display())),
            }
        }
        // Our resources must also pass the operator's own loader, which
        // checks more than the types do (topic names, strategies, ...).
        if operator_docs > 0 {
            match sluice_operator::manifest::load(std::slice::from_ref(path)) {
                Ok(l) => {
                    let loaded = l.topics.len() + l.offset_resets.len() + l.replays.len();
                    if loaded != operator_docs {
                        problems.push(format!(
                            "{}: sluice_operator::manifest::load found {loaded} resource(s), \
                             the file holds {operator_docs}",
                            file.display()
                        ));
                    }
                }
                Err(errs) => problems.extend(errs.into_iter().map(|p| {
                    // Named relative to the repository, like the other problems.
                    let mut at = file.display().to_string();
                    for part in [p.resource, p.field].into_iter().flatten() {
                        at.push_str(": ");
                        at.push_str(&part);
                    }
                    format!("{at}: {} (sluice_operator::manifest::load)", p.message)
                })),
            }
        }
    }
    (docs, problems)
}

/// Everything under `manifests/`, for the tests of how the pieces fit;
/// fails at once if anything does not parse.
fn manifests() -> Vec<Doc> {
    let (docs, problems) = read_manifests();
    assert!(
        problems.is_empty(),
        "manifests do not parse:\n  {}",
        problems.join("\n  ")
    );
    docs
}

fn is<T: k8s_openapi::Resource>(api_version: &str, kind: &str) -> bool {
    api_version == T::API_VERSION && kind == T::KIND
}

fn parse_document(file: &Path, value: Value) -> Result<Object, String> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let (v, k) = (api_version.as_str(), kind.as_str());
    let object = if is::<Namespace>(v, k) {
        Object::Namespace(builtin(value)?)
    } else if is::<ServiceAccount>(v, k) {
        Object::ServiceAccount(builtin(value)?)
    } else if is::<ClusterRole>(v, k) {
        Object::ClusterRole(builtin(value)?)
    } else if is::<ClusterRoleBinding>(v, k) {
        Object::ClusterRoleBinding(builtin(value)?)
    } else if is::<Role>(v, k) {
        Object::Role(builtin(value)?)
    } else if is::<RoleBinding>(v, k) {
        Object::RoleBinding(builtin(value)?)
    } else if is::<Deployment>(v, k) {
        Object::Deployment(builtin(value)?)
    } else if is::<StatefulSet>(v, k) {
        Object::StatefulSet(builtin(value)?)
    } else if is::<Service>(v, k) {
        Object::Service(builtin(value)?)
    } else if is::<ConfigMap>(v, k) {
        Object::ConfigMap(builtin(value)?)
    } else if is::<PodDisruptionBudget>(v, k) {
        Object::PodDisruptionBudget(builtin(value)?)
    } else if is::<CustomResourceDefinition>(v, k) {
        Object::CustomResourceDefinition(builtin(value)?)
    } else if v == sluice_operator::crd::API_VERSION && k == "Topic" {
        Object::Topic(typed(value)?)
    } else if v == sluice_operator::crd::API_VERSION && k == "OffsetReset" {
        Object::OffsetReset(typed(value)?)
    } else if v == sluice_operator::crd::API_VERSION && k == "Replay" {
        Object::Replay(typed(value)?)
    } else if v == STRIMZI_API_VERSION && k == "KafkaTopic" {
        Object::KafkaTopic(typed(value)?)
    } else if v == KUSTOMIZE_API_VERSION && k == "Kustomization" {
        if file.file_name().and_then(|n| n.to_str()) != Some("kustomization.yaml") {
            return Err("a Kustomization must be in a file named kustomization.yaml".to_string());
        }
        Object::Kustomization(Box::new(kustomization(&value)?))
    } else {
        return Err(format!(
            "unknown kind {k:?} of apiVersion {v:?}: add it to tests/tests/manifests.rs \
             with the type it should parse as"
        ));
    };
    Ok(object)
}

fn typed<T: DeserializeOwned>(value: Value) -> Result<Box<T>, String> {
    serde_yaml::from_value(value)
        .map(Box::new)
        .map_err(|e| format!("does not parse as its kind: {e}"))
}

/// A Kubernetes type. k8s-openapi ignores fields it does not know, so a
/// misspelt field (`publishNotReadyAdresses`) would pass unnoticed; a field
/// that does not survive parsing and writing back is reported instead.
fn builtin<T: DeserializeOwned + Serialize>(value: Value) -> Result<Box<T>, String> {
    let parsed: Box<T> = typed(value.clone())?;
    let back = serde_yaml::to_value(&*parsed).map_err(|e| format!("cannot write back: {e}"))?;
    let mut dropped = Vec::new();
    dropped_fields(&value, &back, "", &mut dropped);
    if dropped.is_empty() {
        Ok(parsed)
    } else {
        Err(format!(
            "unknown field(s) {} (misspelt, or not in this apiVersion)",
            dropped.join(", ")
        ))
    }
}

/// Paths of the mapping keys in `original` that `parsed` lacks.
fn dropped_fields(original: &Value, parsed: &Value, path: &str, out: &mut Vec<String>) {
    match (original, parsed) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (key, v) in a {
                let name = key
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{key:?}"));
                let here = if path.is_empty() {
                    name
                } else {
                    format!("{path}.{name}")
                };
                match b.get(key) {
                    Some(w) => dropped_fields(v, w, &here, out),
                    None if v.is_null() => {}
                    None => out.push(here),
                }
            }
        }
        (Value::Sequence(a), Value::Sequence(b)) => {
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                dropped_fields(v, w, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn kustomization(value: &Value) -> Result<Kustomization, String> {
    let Some(map) = value.as_mapping() else {
        return Err("not a mapping".to_string());
    };
    let known = ["apiVersion", "kind", "namespace", "resources"];
    for key in map.keys() {
        let key = key.as_str().unwrap_or_default();
        if !known.contains(&key) {
            return Err(format!(
                "field {key:?}: these manifests use only {known:?}; teach \
                 tests/tests/manifests.rs the new one"
            ));
        }
    }
    let resources = match value.get("resources") {
        None => Vec::new(),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| format!("resources: {i:?} is not a path"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("resources: {other:?} is not a list")),
    };
    Ok(Kustomization { resources })
}

macro_rules! all_of {
    ($docs:expr, $variant:ident) => {
        $docs
            .iter()
            .filter_map(|d| match &d.object {
                Object::$variant(o) => Some(&**o),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
}

fn exactly_one<'a, T>(found: Vec<&'a T>, what: &str) -> &'a T {
    assert_eq!(
        found.len(),
        1,
        "expected exactly one {what} under manifests/, found {}",
        found.len()
    );
    found[0]
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or_default()
}

fn namespace(meta: &ObjectMeta) -> &str {
    meta.namespace.as_deref().unwrap_or_default()
}

fn pod_spec(template_spec: Option<&PodSpec>, what: &str) -> PodSpec {
    template_spec
        .cloned()
        .unwrap_or_else(|| panic!("{what} has no pod spec"))
}

fn only_container(spec: &PodSpec, what: &str) -> Container {
    assert_eq!(spec.containers.len(), 1, "{what}: one container expected");
    spec.containers[0].clone()
}

fn container_port(c: &Container, port_name: &str) -> i32 {
    c.ports
        .iter()
        .flatten()
        .find(|p| p.name.as_deref() == Some(port_name))
        .unwrap_or_else(|| panic!("container {} has no port named {port_name}", c.name))
        .container_port
}

/// `selector` picks pods labelled `labels` (matchLabels only; these
/// manifests use no expressions).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    assert!(
        selector.match_expressions.is_none(),
        "matchExpressions are not checked by this test"
    );
    let wanted = selector.match_labels.clone().unwrap_or_default();
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The stable DNS name of pod `ordinal` of a StatefulSet.
fn pod_host(sts: &StatefulSet, ordinal: i32) -> String {
    let spec = sts.spec.as_ref().expect("StatefulSet spec");
    format!(
        "{}-{ordinal}.{}.{}.svc.cluster.local",
        name(&sts.metadata),
        spec.service_name.as_deref().unwrap_or_default(),
        namespace(&sts.metadata)
    )
}

#[test]
fn every_manifest_parses_as_the_kind_it_claims() {
    let (docs, problems) = read_manifests();
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
    // The walk found the folders at all (a wrong root would pass vacuously).
    let files: BTreeSet<_> = docs.iter().map(|d| d.file.clone()).collect();
    for dir in ["crds", "operator", "broker", "examples", "examples-strimzi"] {
        let dir = Path::new("manifests").join(dir);
        assert!(
            files.iter().any(|f| f.parent() == Some(dir.as_path())),
            "no manifest parsed in {}",
            dir.display()
        );
    }
    // Every resource has a name.
    for d in &docs {
        let meta = match &d.object {
            Object::Namespace(o) => Some(&o.metadata),
            Object::ServiceAccount(o) => Some(&o.metadata),
            Object::ClusterRole(o) => Some(&o.metadata),
            Object::ClusterRoleBinding(o) => Some(&o.metadata),
            Object::Role(o) => Some(&o.metadata),
            Object::RoleBinding(o) => Some(&o.metadata),
            Object::Deployment(o) => Some(&o.metadata),
            Object::StatefulSet(o) => Some(&o.metadata),
            Object::Service(o) => Some(&o.metadata),
            Object::ConfigMap(o) => Some(&o.metadata),
            Object::PodDisruptionBudget(o) => Some(&o.metadata),
            Object::CustomResourceDefinition(o) => Some(&o.metadata),
            Object::Topic(o) => Some(&o.metadata),
            Object::OffsetReset(o) => Some(&o.metadata),
            Object::Replay(o) => Some(&o.metadata),
            Object::KafkaTopic(o) => Some(&o.metadata),
            Object::Kustomization(_) => None,
        };
        if let Some(meta) = meta {
            assert!(
                !name(meta).is_empty(),
                "{} document {}: metadata.name is missing",
                d.file.display(),
                d.index
            );
        }
    }
}

/// The files a kustomization reaches, following nested folders.
fn reached(kustomization_file: &Path, out: &mut Vec<PathBuf>, problems: &mut Vec<String>) {
    let text = std::fs::read_to_string(kustomization_file).expect("kustomization readable");
    let value: Value = serde_yaml::from_str(&text).expect("kustomization parses");
    let k = kustomization(&value).expect("kustomization shape");
    let dir = kustomization_file.parent().expect("has a folder");
    for r in &k.resources {
        let target = dir.join(r);
        if target.is_file() {
            out.push(target.canonicalize().expect("canonical path"));
        } else if target.join("kustomization.yaml").is_file() {
            reached(&target.join("kustomization.yaml"), out, problems);
        } else {
            problems.push(format!(
                "{}: resource {r:?} is neither a file nor a folder with a kustomization.yaml",
                relative(kustomization_file).display()
            ));
        }
    }
}

#[test]
fn every_kustomization_lists_its_files_once_and_all_that_exist() {
    let docs = manifests();
    let kustomizations: Vec<&Doc> = docs
        .iter()
        .filter(|d| matches!(d.object, Object::Kustomization(_)))
        .collect();
    assert!(
        kustomizations.len() >= 5,
        "expected a kustomization in manifests/ and in crds, operator, broker and examples; found {}",
        kustomizations.len()
    );
    let mut problems = Vec::new();
    for d in kustomizations {
        let file = repo_root().join(&d.file);
        let mut files = Vec::new();
        reached(&file, &mut files, &mut problems);
        // kustomize refuses a resource reached twice (e.g. crds listed next
        // to a folder that lists ../crds).
        let mut seen = BTreeSet::new();
        for f in &files {
            if !seen.insert(f) {
                problems.push(format!(
                    "{}: {} is reached twice",
                    d.file.display(),
                    relative(f).display()
                ));
            }
        }
        // A manifest next to a kustomization but not listed in it would
        // silently not be applied.
        let dir = file.parent().expect("has a folder");
        let Object::Kustomization(k) = &d.object else {
            unreachable!()
        };
        for entry in std::fs::read_dir(dir).expect("folder readable") {
            let path = entry.expect("entry").path();
            let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let is_yaml = file_name.ends_with(".yaml") || file_name.ends_with(".yml");
            if path.is_file()
                && is_yaml
                && file_name != "kustomization.yaml"
                && !k.resources.iter().any(|r| r == file_name)
            {
                problems.push(format!(
                    "{}: {file_name} is in the folder but not listed",
                    d.file.display()
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every (API group, resource, verb) that `rules` grant.
fn granted(rules: Option<&[PolicyRule]>) -> BTreeSet<(String, String, String)> {
    let mut granted = BTreeSet::new();
    for rule in rules.unwrap_or_default() {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "the operator's rules name resource types only"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    granted.insert((group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    granted
}

/// Whether `subjects` name the service account `sa`.
fn binds(subjects: Option<&[Subject]>, sa: &ServiceAccount) -> bool {
    subjects.unwrap_or_default().iter().any(|s| {
        s.kind == "ServiceAccount"
            && s.name == name(&sa.metadata)
            && s.namespace.as_deref() == Some(namespace(&sa.metadata))
    })
}

#[test]
fn cluster_role_grants_exactly_what_the_operator_uses() {
    let docs = manifests();
    let role = exactly_one(all_of!(docs, ClusterRole), "ClusterRole");
    let granted = granted(role.rules.as_deref());
    // What the operator does: watch its three resources (and patch Topics'
    // finalizers), write their status by server-side apply, and record
    // Events. Derived from the CRDs, so a new resource type shows up here.
    let mut needed = BTreeSet::new();
    let mut add = |group: &str, resource: &str, verbs: &[&str]| {
        for verb in verbs {
            needed.insert((group.to_string(), resource.to_string(), verb.to_string()));
        }
    };
    let crds = sluice_operator::crd::all();
    assert_eq!(crds.len(), 3, "Topic, OffsetReset and Replay");
    for crd in &crds {
        let group = crd.spec.group.as_str();
        let plural = crd.spec.names.plural.as_str();
        add(group, plural, &["get", "list", "watch", "patch", "update"]);
        add(
            group,
            &format!("{plural}/status"),
            &["get", "patch", "update"],
        );
        if crd.spec.names.kind == "Topic" {
            add(group, &format!("{plural}/finalizers"), &["update", "patch"]);
        }
    }
    add("events.k8s.io", "events", &["create", "patch"]);
    let extra: Vec<_> = granted.difference(&needed).collect();
    let missing: Vec<_> = needed.difference(&granted).collect();
    assert!(
        extra.is_empty() && missing.is_empty(),
        "ClusterRole {}: granted but not needed {extra:?}; needed but not granted {missing:?}",
        name(&role.metadata)
    );
}

#[test]
fn operator_runs_as_the_service_account_its_role_is_bound_to() {
    let docs = manifests();
    let sa = exactly_one(all_of!(docs, ServiceAccount), "ServiceAccount");
    let role = exactly_one(all_of!(docs, ClusterRole), "ClusterRole");
    let binding = exactly_one(all_of!(docs, ClusterRoleBinding), "ClusterRoleBinding");
    let deployment = exactly_one(all_of!(docs, Deployment), "Deployment");
    let spec = deployment.spec.as_ref().expect("Deployment spec");
    let pod = pod_spec(spec.template.spec.as_ref(), "the operator's Deployment");
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(name(&sa.metadata)),
        "the Deployment's serviceAccountName"
    );
    assert_eq!(
        namespace(&deployment.metadata),
        namespace(&sa.metadata),
        "a pod can only use a service account of its own namespace"
    );
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(binding.role_ref.api_group, "rbac.authorization.k8s.io");
    assert_eq!(binding.role_ref.name, name(&role.metadata));
    assert!(
        binds(binding.subjects.as_deref(), sa),
        "ClusterRoleBinding {} does not bind ServiceAccount {}/{}: {:?}",
        name(&binding.metadata),
        namespace(&sa.metadata),
        name(&sa.metadata),
        binding.subjects
    );
    let ns = exactly_one(all_of!(docs, Namespace), "Namespace");
    assert_eq!(name(&ns.metadata), namespace(&sa.metadata));
}

#[test]
fn leader_election_role_grants_only_leases_in_the_operator_namespace() {
    let docs = manifests();
    let sa = exactly_one(all_of!(docs, ServiceAccount), "ServiceAccount");
    let role = exactly_one(all_of!(docs, Role), "Role");
    let binding = exactly_one(all_of!(docs, RoleBinding), "RoleBinding");
    // What src/lease.rs does: get the Lease, create it, replace it.
    let needed: BTreeSet<_> = ["get", "create", "update"]
        .iter()
        .map(|v| {
            (
                "coordination.k8s.io".to_string(),
                "leases".to_string(),
                v.to_string(),
            )
        })
        .collect();
    assert_eq!(
        granted(role.rules.as_deref()),
        needed,
        "Role {}",
        name(&role.metadata)
    );
    assert_eq!(namespace(&role.metadata), namespace(&sa.metadata));
    assert_eq!(namespace(&binding.metadata), namespace(&role.metadata));
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, name(&role.metadata));
    assert!(
        binds(binding.subjects.as_deref(), sa),
        "RoleBinding {} does not bind the operator's service account: {:?}",
        name(&binding.metadata),
        binding.subjects
    );
}

#[test]
fn operator_deployment_matches_the_operator_command_line() {
    let docs = manifests();
    let deployment = exactly_one(all_of!(docs, Deployment), "Deployment");
    let spec = deployment.spec.as_ref().expect("Deployment spec");
    assert!(
        selects(
            &spec.selector,
            &spec
                .template
                .metadata
                .clone()
                .unwrap_or_default()
                .labels
                .unwrap_or_default()
        ),
        "the Deployment's selector must match its pod labels"
    );
    let pod = pod_spec(spec.template.spec.as_ref(), "the operator's Deployment");
    let c = only_container(&pod, "the operator's Deployment");
    assert_eq!(
        c.command.as_deref(),
        Some(&["sluice-operator".to_string(), "run".to_string()][..])
    );
    let metrics = container_port(&c, "metrics");
    let args = c.args.clone().unwrap_or_default();
    let listen = args
        .iter()
        .position(|a| a == "--metrics-listen")
        .and_then(|i| args.get(i + 1))
        .expect("--metrics-listen in args");
    assert_eq!(listen, &format!("0.0.0.0:{metrics}"));
    // More than one replica only with leader election, and the Lease in
    // the pod's namespace (where the Role allows it).
    let replicas = spec.replicas.unwrap_or(1);
    assert!(
        replicas == 1 || args.iter().any(|a| a == "--leader-elect"),
        "{replicas} operator replicas without --leader-elect would all reconcile"
    );
    for (what, probe) in [
        ("liveness", c.liveness_probe.as_ref()),
        ("readiness", c.readiness_probe.as_ref()),
    ] {
        let get = probe
            .and_then(|p| p.http_get.as_ref())
            .unwrap_or_else(|| panic!("{what} probe is an httpGet"));
        assert_eq!(get.path.as_deref(), Some("/healthz"), "{what} probe path");
        assert!(
            get.port == IntOrString::String("metrics".into())
                || get.port == IntOrString::Int(metrics),
            "{what} probe port {:?} is not the metrics port",
            get.port
        );
    }
    let env = c.env.clone().unwrap_or_default();
    // The downward API field an environment variable is set from.
    let field = |name: &str| {
        env.iter()
            .find(|e| e.name == name)
            .and_then(|e| e.value_from.as_ref())
            .and_then(|v| v.field_ref.as_ref())
            .map(|f| f.field_path.clone())
    };
    assert_eq!(
        field("POD_NAME").as_deref(),
        Some("metadata.name"),
        "POD_NAME from the downward API"
    );
    let pod_namespace = field("POD_NAMESPACE");
    assert!(
        !args.iter().any(|a| a == "--leader-elect")
            || args.iter().any(|a| a == "--lease-namespace")
            || pod_namespace.as_deref() == Some("metadata.namespace"),
        "with --leader-elect the Lease namespace comes from POD_NAMESPACE (downward API) or --lease-namespace"
    );
    let sc = c.security_context.clone().unwrap_or_default();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        sc.capabilities.and_then(|c| c.drop),
        Some(vec!["ALL".to_string()])
    );
    let run_as_non_root = sc.run_as_non_root.or_else(|| {
        pod.security_context
            .as_ref()
            .and_then(|p| p.run_as_non_root)
    });
    assert_eq!(run_as_non_root, Some(true));
    let resources = c.resources.clone().unwrap_or_default();
    assert!(resources.requests.is_some() && resources.limits.is_some());
}

#[test]
fn operator_bootstraps_from_every_broker_pod() {
    let docs = manifests();
    let deployment = exactly_one(all_of!(docs, Deployment), "Deployment");
    let sts = exactly_one(all_of!(docs, StatefulSet), "StatefulSet");
    let spec = deployment.spec.as_ref().expect("Deployment spec");
    let c = only_container(
        &pod_spec(spec.template.spec.as_ref(), "the operator's Deployment"),
        "the operator's Deployment",
    );
    let bootstrap = c
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "SLUICE_BOOTSTRAP")
        .and_then(|e| e.value.clone())
        .expect("SLUICE_BOOTSTRAP set");
    let sts_spec = sts.spec.as_ref().expect("StatefulSet spec");
    let broker = only_container(
        &pod_spec(sts_spec.template.spec.as_ref(), "the brokers' StatefulSet"),
        "the brokers' StatefulSet",
    );
    let kafka = container_port(&broker, "kafka");
    let expected: Vec<String> = (0..sts_spec.replicas.unwrap_or(1))
        .map(|i| format!("{}:{kafka}", pod_host(sts, i)))
        .collect();
    assert_eq!(bootstrap, expected.join(","));
}

#[test]
fn broker_statefulset_is_served_by_its_headless_service() {
    let docs = manifests();
    let sts = exactly_one(all_of!(docs, StatefulSet), "StatefulSet");
    let spec = sts.spec.as_ref().expect("StatefulSet spec");
    let labels = spec
        .template
        .metadata
        .clone()
        .unwrap_or_default()
        .labels
        .unwrap_or_default();
    assert!(
        selects(&spec.selector, &labels),
        "the StatefulSet's selector must match its pod labels"
    );
    assert_eq!(spec.replicas, Some(3));
    assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
    let services = all_of!(docs, Service);
    let service_name = spec.service_name.as_deref().expect("serviceName");
    let headless = exactly_one(
        services
            .iter()
            .copied()
            .filter(|s| name(&s.metadata) == service_name)
            .collect(),
        &format!("Service {service_name}"),
    );
    let hs = headless.spec.as_ref().expect("Service spec");
    assert_eq!(hs.cluster_ip.as_deref(), Some("None"), "headless");
    assert_eq!(
        hs.publish_not_ready_addresses,
        Some(true),
        "voters must find each other before any of them is ready"
    );
    let broker = only_container(
        &pod_spec(spec.template.spec.as_ref(), "the brokers' StatefulSet"),
        "the brokers' StatefulSet",
    );
    let port_of = |svc: &Service, port_name: &str| {
        svc.spec
            .iter()
            .flat_map(|s| s.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(port_name))
            .map(|p| p.port)
    };
    for port_name in ["kafka", "controller"] {
        assert_eq!(
            port_of(headless, port_name),
            Some(container_port(&broker, port_name)),
            "headless Service port {port_name}"
        );
    }
    let client = exactly_one(
        services
            .iter()
            .copied()
            .filter(|s| name(&s.metadata) != service_name)
            .collect(),
        "client Service",
    );
    assert_eq!(name(&client.metadata), "sluice");
    assert_eq!(
        port_of(client, "kafka"),
        Some(container_port(&broker, "kafka"))
    );
    for svc in [headless, client] {
        let selector = svc
            .spec
            .as_ref()
            .and_then(|s| s.selector.clone())
            .unwrap_or_default();
        assert!(
            !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
            "Service {} does not select the broker pods",
            name(&svc.metadata)
        );
        assert_eq!(namespace(&svc.metadata), namespace(&sts.metadata));
    }
}

#[test]
fn broker_disruption_budget_selects_the_broker_pods_and_keeps_the_isr() {
    let docs = manifests();
    let sts = exactly_one(all_of!(docs, StatefulSet), "StatefulSet");
    let pdb = exactly_one(all_of!(docs, PodDisruptionBudget), "PodDisruptionBudget");
    let spec = sts.spec.as_ref().expect("StatefulSet spec");
    let labels = spec
        .template
        .metadata
        .clone()
        .unwrap_or_default()
        .labels
        .unwrap_or_default();
    let pdb_spec = pdb.spec.as_ref().expect("PDB spec");
    assert!(
        selects(pdb_spec.selector.as_ref().expect("PDB selector"), &labels),
        "PodDisruptionBudget {} does not select the StatefulSet's pods {labels:?}",
        name(&pdb.metadata)
    );
    assert_eq!(pdb_spec.max_unavailable, Some(IntOrString::Int(1)));
    assert_eq!(namespace(&pdb.metadata), namespace(&sts.metadata));
    // With one broker down, every partition with the default replication
    // factor still has min.insync.replicas copies, and the quorum a majority.
    let cm = exactly_one(all_of!(docs, ConfigMap), "ConfigMap");
    let text = cm
        .data
        .as_ref()
        .and_then(|d| d.values().next())
        .expect("ConfigMap holds the broker config");
    let config = BrokerConfig::from_yaml_str(text, "the broker ConfigMap")
        .unwrap_or_else(|e| panic!("broker ConfigMap: {e}"));
    assert_eq!(config.default_replication_factor, 3);
    assert_eq!(config.topic_defaults.min_insync_replicas, 2);
    let down = 1;
    assert!(
        i32::from(config.default_replication_factor) - down
            >= config.topic_defaults.min_insync_replicas
    );
    let voters = spec.replicas.unwrap_or(1);
    assert!(voters - down > voters / 2, "the quorum keeps a majority");
}

#[test]
fn broker_command_gives_every_pod_a_valid_config() {
    let docs = manifests();
    let sts = exactly_one(all_of!(docs, StatefulSet), "StatefulSet");
    let cm = exactly_one(all_of!(docs, ConfigMap), "ConfigMap");
    let spec = sts.spec.as_ref().expect("StatefulSet spec");
    let pod = pod_spec(spec.template.spec.as_ref(), "the brokers' StatefulSet");
    let c = only_container(&pod, "the brokers' StatefulSet");
    let command = c.command.clone().unwrap_or_default();
    assert!(
        command.len() == 3 && command[0] == "sh" && command[1] == "-c",
        "the broker's command is `sh -c SCRIPT`: {command:?}"
    );
    let script = &command[2];
    let mount_of = |volume: &str| {
        c.volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == volume)
            .map(|m| PathBuf::from(&m.mount_path))
            .unwrap_or_else(|| panic!("volume {volume} is not mounted"))
    };
    // The config file lives in the ConfigMap's volume...
    let config_volume = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.config_map.as_ref().map(|c| c.name.as_str()) == Some(name(&cm.metadata)))
        .expect("a volume of the broker ConfigMap");
    let config_dir = mount_of(&config_volume.name);
    // ...and the data on the volume claim template's volume.
    let claims = spec.volume_claim_templates.clone().unwrap_or_default();
    assert_eq!(claims.len(), 1);
    let data_dir = mount_of(name(&claims[0].metadata));

    let tmp = tempfile::tempdir().expect("temp dir");
    for (key, text) in cm.data.iter().flatten() {
        std::fs::write(tmp.path().join(key), text).expect("write config");
    }
    // Run the script as the pod would, with `sluice-broker` replaced by a
    // stub that prints its arguments.
    let bin = tmp.path().join("bin");
    std::fs::create_dir(&bin).expect("bin dir");
    let stub = bin.join("sluice-broker");
    std::fs::write(&stub, "#!/bin/sh\nprintf '%s\\0' \"$@\"\n").expect("stub");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let replicas = spec.replicas.unwrap_or(1);
    let kafka = container_port(&c, "kafka");
    let controller = container_port(&c, "controller");
    for ordinal in 0..replicas {
        let pod_name = format!("{}-{ordinal}", name(&sts.metadata));
        let mut env: Vec<(String, String)> = Vec::new();
        for e in c.env.iter().flatten() {
            let value = match (
                &e.value,
                e.value_from.as_ref().and_then(|v| v.field_ref.as_ref()),
            ) {
                (Some(v), _) => v.clone(),
                (None, Some(f)) if f.field_path == "metadata.namespace" => {
                    namespace(&sts.metadata).to_string()
                }
                (None, Some(f)) if f.field_path == "metadata.name" => pod_name.clone(),
                _ => panic!("env {} has a source this test does not know", e.name),
            };
            env.push((e.name.clone(), value));
        }
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .env_clear()
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env("HOSTNAME", &pod_name)
            .envs(env.iter().cloned())
            .output()
            .expect("run sh");
        assert!(
            out.status.success(),
            "{pod_name}: the script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut args: Vec<String> = String::from_utf8(out.stdout)
            .expect("utf-8 arguments")
            .split_terminator('\0')
            .map(str::to_string)
            .collect();
        // The file is read from where the ConfigMap is mounted.
        let i = args
            .iter()
            .position(|a| a == "--config")
            .expect("--config passed");
        let in_pod = PathBuf::from(&args[i + 1]);
        let key = in_pod.strip_prefix(&config_dir).unwrap_or_else(|_| {
            panic!(
                "--config {} is not in the ConfigMap's mount {}",
                in_pod.display(),
                config_dir.display()
            )
        });
        args[i + 1] = tmp.path().join(key).display().to_string();
        let cli = Cli::try_parse_from(std::iter::once("sluice-broker".to_string()).chain(args))
            .unwrap_or_else(|e| panic!("{pod_name}: sluice-broker would refuse its flags: {e}"));
        let config = BrokerConfig::load(&cli, env)
            .unwrap_or_else(|e| panic!("{pod_name}: sluice-broker would refuse its config: {e}"));
        // The pod's ordinal is its node id (0 is a valid node.id).
        assert_eq!(config.node_id, ordinal, "{pod_name}: node id");
        assert_eq!(config.data_dir, data_dir, "{pod_name}: data on the volume");
        assert_eq!(
            config.advertised_listener,
            Some((pod_host(sts, ordinal), kafka as u16)),
            "{pod_name}: clients are sent to the pod's stable name"
        );
        assert_eq!(config.listen, format!("0.0.0.0:{kafka}"));
        assert_eq!(
            config.controller_listen.as_deref(),
            Some(format!("0.0.0.0:{controller}").as_str())
        );
        let voters: BTreeMap<i32, String> = (0..replicas)
            .map(|i| (i, format!("{}:{controller}", pod_host(sts, i))))
            .collect();
        assert_eq!(config.voters, voters, "{pod_name}: every pod is a voter");
    }
}

#[test]
fn strimzi_examples_declare_the_same_topics_as_ours() {
    let examples = repo_root().join("manifests/examples");
    let ours = sluice_operator::manifest::load(&[examples.join("topics.yaml")])
        .expect("topics.yaml loads");
    let strimzi =
        sluice_operator::manifest::load(&[repo_root().join("manifests/examples-strimzi")])
            .expect("examples-strimzi/ loads");
    assert_eq!(strimzi.topics.len(), 2);
    for s in &strimzi.topics {
        let o = ours
            .topics
            .iter()
            .find(|o| o.name == s.name)
            .unwrap_or_else(|| panic!("topics.yaml has no topic {}", s.name));
        assert_eq!(
            (o.partitions, o.replicas, &o.config),
            (s.partitions, s.replicas, &s.config),
            "topic {}: Topic and KafkaTopic differ",
            s.name
        );
    }
    // Every example applies on a single-node broker.
    for t in ours.topics.iter().chain(&strimzi.topics) {
        assert_eq!(t.replicas, Some(1), "{}: replicas", t.source);
    }
}
