//! Reading manifests: files or folders of YAML (several documents per file)
//! holding our `Topic`, `OffsetReset` and `Replay` resources and Strimzi's
//! `KafkaTopic`. Every problem is reported with its file, resource and field,
//! and a folder with any problem yields no resources at all, so nothing is
//! applied from a half-valid folder.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kube::api::ObjectMeta;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::crd::{
    OffsetReset, Replay, Topic, TopicSpec, ANNOTATION_MANAGED, ANNOTATION_PAUSED, API_VERSION,
};
use crate::plan::DesiredTopic;

/// One problem in one manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// `Topic default/orders`, when the document got that far.
    pub resource: Option<String>,
    /// `spec.partitions`.
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(r) = &self.resource {
            write!(f, ": {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// What a set of manifests declares.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub topics: Vec<DesiredTopic>,
    pub offset_resets: Vec<(String, OffsetReset)>,
    pub replays: Vec<(String, Replay)>,
    /// Documents of other kinds, named (`kustomization.yaml: Kustomization`).
    pub skipped: Vec<String>,
}

/// Strimzi's KafkaTopic (`kafka.strimzi.io/v1beta2`), the fields we read.
#[derive(Debug, Clone, Deserialize)]
pub struct KafkaTopic {
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: KafkaTopicSpec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaTopicSpec {
    #[serde(default)]
    pub topic_name: Option<String>,
    #[serde(default)]
    pub partitions: Option<i32>,
    #[serde(default)]
    pub replicas: Option<i32>,
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

const STRIMZI_GROUP: &str = "kafka.strimzi.io/";

/// Reads every `.yaml` / `.yml` file under `paths` (files or folders,
/// recursively, in name order).
pub fn load(paths: &[PathBuf]) -> Result<Loaded, Vec<Problem>> {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for p in paths {
        if let Err(e) = collect_files(p, &mut files) {
            problems.push(Problem {
                file: p.clone(),
                resource: None,
                field: None,
                message: format!("cannot read: {e}"),
            });
        }
    }
    if files.is_empty() && problems.is_empty() {
        problems.push(Problem {
            file: paths.first().cloned().unwrap_or_default(),
            resource: None,
            field: None,
            message: "no .yaml or .yml files found: pass a manifest file or a folder holding some"
                .to_string(),
        });
    }
    let mut loaded = Loaded::default();
    for f in &files {
        match std::fs::read_to_string(f) {
            Ok(text) => load_text(f, &text, &mut loaded, &mut problems),
            Err(e) => problems.push(Problem {
                file: f.clone(),
                resource: None,
                field: None,
                message: format!("cannot read: {e}"),
            }),
        }
    }
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(problems)
    }
}

fn collect_files(path: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let meta = std::fs::metadata(path)?;
    if meta.is_file() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            collect_files(&e, out)?;
        } else if matches!(
            e.extension().and_then(|x| x.to_str()),
            Some("yaml") | Some("yml")
        ) {
            out.push(e);
        }
    }
    Ok(())
}

/// Adds the documents of one file's text.
pub fn load_text(file: &Path, text: &str, loaded: &mut Loaded, problems: &mut Vec<Problem>) {
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = match serde_yaml::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                problems.push(Problem {
                    file: file.to_path_buf(),
                    resource: None,
                    field: None,
                    message: format!("document {} is not valid YAML: {e}", i + 1),
                });
                // The parser cannot go on past a syntax error.
                return;
            }
        };
        if value.is_null() {
            continue;
        }
        load_document(file, value, loaded, problems);
    }
}

fn str_at<'a>(v: &'a serde_yaml::Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(|x| x.as_str())
}

fn load_document(
    file: &Path,
    value: serde_yaml::Value,
    loaded: &mut Loaded,
    problems: &mut Vec<Problem>,
) {
    let api_version = str_at(&value, "apiVersion").unwrap_or("").to_string();
    let kind = str_at(&value, "kind").unwrap_or("").to_string();
    let meta = value.get("metadata");
    let name = meta
        .and_then(|m| str_at(m, "name"))
        .unwrap_or("")
        .to_string();
    let namespace = meta
        .and_then(|m| str_at(m, "namespace"))
        .unwrap_or("default")
        .to_string();
    let resource = format!("{kind} {namespace}/{name}");
    let problem = |field: Option<String>, message: String| Problem {
        file: file.to_path_buf(),
        resource: Some(resource.clone()),
        field,
        message,
    };
    let ours = api_version == API_VERSION;
    let strimzi = api_version.starts_with(STRIMZI_GROUP) && kind == "KafkaTopic";
    if api_version.is_empty() || kind.is_empty() {
        problems.push(Problem {
            file: file.to_path_buf(),
            resource: None,
            field: Some(
                if api_version.is_empty() {
                    "apiVersion"
                } else {
                    "kind"
                }
                .into(),
            ),
            message: "missing: every document needs apiVersion and kind".to_string(),
        });
        return;
    }
    if !(ours || strimzi) {
        if api_version.starts_with("sluice.dev/") {
            problems.push(problem(
                Some("apiVersion".into()),
                format!("unknown version {api_version:?}: write apiVersion: {API_VERSION}"),
            ));
        } else {
            loaded
                .skipped
                .push(format!("{}: {resource}", file.display()));
        }
        return;
    }
    if name.is_empty() {
        problems.push(problem(
            Some("metadata.name".into()),
            "missing: every resource needs a name".to_string(),
        ));
        return;
    }
    let source = format!("{}: {resource}", file.display());
    match (strimzi, kind.as_str()) {
        (true, _) => match parse::<KafkaTopic>(value) {
            Ok(k) => match from_strimzi(&k, &source) {
                Ok(d) => loaded.topics.push(d),
                Err(errs) => problems.extend(errs.into_iter().map(|(f, m)| problem(Some(f), m))),
            },
            Err((f, m)) => problems.push(problem(f, m)),
        },
        (false, "Topic") => match parse::<Topic>(value) {
            Ok(t) => match desired_topic(&t, &source) {
                Ok(d) => loaded.topics.push(d),
                Err(errs) => problems.extend(errs.into_iter().map(|(f, m)| problem(Some(f), m))),
            },
            Err((f, m)) => problems.push(problem(f, m)),
        },
        (false, "OffsetReset") => match parse::<OffsetReset>(value) {
            Ok(r) => match crate::oneshot::check_offset_reset(&r.spec) {
                Ok(_) => loaded.offset_resets.push((source, r)),
                Err((f, m)) => problems.push(problem(Some(f), m)),
            },
            Err((f, m)) => problems.push(problem(f, m)),
        },
        (false, "Replay") => match parse::<Replay>(value) {
            Ok(r) => match crate::oneshot::check_replay(&r.spec) {
                Ok(_) => loaded.replays.push((source, r)),
                Err((f, m)) => problems.push(problem(Some(f), m)),
            },
            Err((f, m)) => problems.push(problem(f, m)),
        },
        (false, other) => problems.push(problem(
            Some("kind".into()),
            format!("unknown kind {other:?} in {API_VERSION}: write Topic, OffsetReset or Replay"),
        )),
    }
}

/// Deserializes a document, naming the field that failed and refusing
/// unknown fields (a typo such as `partiton` would otherwise be dropped
/// silently).
fn parse<T: DeserializeOwned>(value: serde_yaml::Value) -> Result<T, (Option<String>, String)> {
    let mut unknown = Vec::new();
    let parsed: T = {
        let mut note = |path: serde_ignored::Path<'_>| unknown.push(path.to_string());
        let de = serde_ignored::Deserializer::new(value, &mut note);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let message = e.into_inner().to_string();
            // "missing field `spec`" names the field itself.
            let missing = message
                .strip_prefix("missing field `")
                .and_then(|m| m.strip_suffix('`'));
            let field = match (path.as_str(), missing) {
                (".", Some(m)) => Some(m.to_string()),
                (".", None) => None,
                (p, Some(m)) => Some(format!("{p}.{m}")),
                (p, None) => Some(p.to_string()),
            };
            (field, message)
        })?
    };
    // apiVersion and kind were read above; the types do not hold them.
    if let Some(first) = unknown
        .into_iter()
        .find(|p| p != "apiVersion" && p != "kind")
    {
        return Err((
            Some(first),
            "unknown field: check its spelling against docs/operator.md".to_string(),
        ));
    }
    Ok(parsed)
}

/// A `Topic` resource as the planner takes it, or every problem in its spec.
pub fn desired_topic(t: &Topic, source: &str) -> Result<DesiredTopic, Vec<(String, String)>> {
    let name = t
        .spec
        .topic_name
        .clone()
        .or_else(|| t.metadata.name.clone());
    let mut d = common(
        source,
        name,
        &t.spec.config,
        t.spec.partitions,
        t.spec.replicas,
        "spec.topicName",
    )?;
    d.deletion_policy = t.spec.deletion_policy;
    let ann = t.metadata.annotations.as_ref();
    d.managed = ann
        .and_then(|a| a.get(ANNOTATION_MANAGED))
        .map(String::as_str)
        != Some("false");
    d.paused = ann
        .and_then(|a| a.get(ANNOTATION_PAUSED))
        .map(String::as_str)
        == Some("true");
    d.last_applied = t.status.as_ref().map(|s| s.config.clone());
    Ok(d)
}

/// A Strimzi `KafkaTopic` as the planner takes it. Strimzi's
/// `strimzi.io/managed: "false"` and `strimzi.io/pause-reconciliation:
/// "true"` are honoured like ours.
pub fn from_strimzi(k: &KafkaTopic, source: &str) -> Result<DesiredTopic, Vec<(String, String)>> {
    let name = k
        .spec
        .topic_name
        .clone()
        .or_else(|| k.metadata.name.clone());
    let mut d = common(
        source,
        name,
        &k.spec.config,
        k.spec.partitions,
        k.spec.replicas,
        "spec.topicName",
    )?;
    let ann = k.metadata.annotations.as_ref();
    let get = |key: &str| ann.and_then(|a| a.get(key)).map(String::as_str);
    d.managed =
        get("strimzi.io/managed") != Some("false") && get(ANNOTATION_MANAGED) != Some("false");
    d.paused = get("strimzi.io/pause-reconciliation") == Some("true")
        || get(ANNOTATION_PAUSED) == Some("true");
    Ok(d)
}

fn common(
    source: &str,
    name: Option<String>,
    config: &BTreeMap<String, serde_json::Value>,
    partitions: Option<i32>,
    replicas: Option<i32>,
    name_field: &str,
) -> Result<DesiredTopic, Vec<(String, String)>> {
    let mut errs = Vec::new();
    let name = name.unwrap_or_default();
    if let Err(m) = check_topic_name(&name) {
        errs.push((name_field.to_string(), m));
    }
    if let Some(p) = partitions {
        if p < 1 {
            errs.push((
                "spec.partitions".to_string(),
                format!("{p} is not allowed: a topic needs at least 1 partition"),
            ));
        }
    }
    if let Some(r) = replicas {
        if r < 1 {
            errs.push((
                "spec.replicas".to_string(),
                format!("{r} is not allowed: a topic needs at least 1 replica"),
            ));
        }
    }
    let config = match config_strings(config) {
        Ok(c) => c,
        Err(e) => {
            errs.extend(e);
            BTreeMap::new()
        }
    };
    if !errs.is_empty() {
        return Err(errs);
    }
    let mut d = DesiredTopic::new(source, name);
    d.partitions = partitions;
    d.replicas = replicas;
    d.config = config;
    Ok(d)
}

/// Kafka's rule: 1-249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("missing: set spec.topicName or metadata.name".to_string());
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a valid Kafka topic name"));
    }
    if name.len() > 249 {
        return Err(format!(
            "{} characters is too long: Kafka topic names have at most 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{name:?} holds {c:?}: Kafka topic names use only letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Config values as Kafka strings: strings as they are, integers in
/// decimal, booleans as `true`/`false`. Anything else is refused.
pub fn config_strings(
    config: &BTreeMap<String, serde_json::Value>,
) -> Result<BTreeMap<String, String>, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    let mut errs = Vec::new();
    for (k, v) in config {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Bool(b) => b.to_string(),
            serde_json::Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
            serde_json::Value::Number(n) => {
                errs.push((
                    format!("spec.config.{k}"),
                    format!("{n} is not an integer: Kafka configs take whole numbers (quote it if the config takes a decimal, e.g. \"{n}\")"),
                ));
                continue;
            }
            other => {
                errs.push((
                    format!("spec.config.{k}"),
                    format!("{other} is not a string, integer or boolean"),
                ));
                continue;
            }
        };
        out.insert(k.clone(), s);
    }
    if errs.is_empty() {
        Ok(out)
    } else {
        Err(errs)
    }
}

/// The spec of a Topic resource as a desired topic, for callers that hold
/// only a spec and a name (tests, benchmarks).
pub fn topic_resource(namespace: &str, name: &str, spec: TopicSpec) -> Topic {
    let mut t = Topic::new(name, spec);
    t.metadata.namespace = Some(namespace.to_string());
    t
}

#[cfg(test)]
mod tests;
