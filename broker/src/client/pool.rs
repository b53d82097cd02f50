//! The [`Client`] handle: bootstrap, one pooled connection per broker
//! address with the versions negotiated on it, the metadata cache that routes
//! requests to leaders, coordinators and the controller, and the generic
//! send-with-version-negotiation every call goes through.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, FindCoordinatorRequest, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::{Request, StrBytes};
use parking_lot::{Mutex, RwLock};

use super::error::{ApiError, ClientError};
use super::types::{BrokerInfo, ClientConfig, ClusterMetadata, PartitionInfo, TopicInfo};
use super::Connection;

/// The versions this client can encode and decode correctly, per API: the
/// intersection with a broker's ApiVersions range is used, at its highest.
/// Upper bounds stop below versions whose request shape this client does not
/// fill in (topic ids in Produce v13 / Fetch v13, grouped OffsetFetch v8).
const CLIENT_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeLogDirs, 1, 4),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
];

/// The software name and version sent in ApiVersions v3+.
const SOFTWARE_NAME: &str = "sluice-client";

pub(crate) fn api_name(key: i16) -> String {
    match ApiKey::try_from(key) {
        Ok(k) => format!("{k:?}"),
        Err(()) => format!("API {key}"),
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A Kafka client: cheap to clone, every clone shares the connections and
/// the metadata cache.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    bootstrap: String,
    bootstrap_addrs: Vec<String>,
    pub(crate) config: ClientConfig,
    /// One connection per broker address.
    conns: Mutex<HashMap<String, Arc<Slot>>>,
    cache: RwLock<Cache>,
    /// Round robin for records without a key.
    pub(crate) rotate: AtomicU32,
}

#[derive(Default)]
struct Slot {
    conn: tokio::sync::Mutex<Option<Negotiated>>,
}

/// A connection and the version ranges its broker announced.
struct Negotiated {
    conn: Connection,
    versions: HashMap<i16, (i16, i16)>,
}

#[derive(Default)]
struct Cache {
    /// Broker id -> `host:port`.
    brokers: BTreeMap<i32, String>,
    controller: i32,
    /// (topic, partition) -> leader id.
    leaders: HashMap<(String, i32), i32>,
    /// Topic -> partition count.
    partitions: HashMap<String, i32>,
    /// The address that answered last; tried first for "any broker".
    last_good: Option<String>,
}

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// Any reachable broker.
    Any,
    /// The controller when known, else any broker (which forwards).
    Controller,
    Broker(i32),
    Addr(String),
}

impl Client {
    /// Connects to the first reachable address of `bootstrap`
    /// (`host:port[,host:port...]`), negotiates versions with it and loads
    /// the cluster's metadata.
    pub async fn connect(bootstrap: &str, config: ClientConfig) -> Result<Client, ClientError> {
        let addrs: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        if addrs.is_empty() {
            return Err(ClientError::EmptyBootstrap(bootstrap.to_string()));
        }
        let client = Client {
            inner: Arc::new(Inner {
                bootstrap: bootstrap.to_string(),
                bootstrap_addrs: addrs,
                config,
                conns: Mutex::new(HashMap::new()),
                cache: RwLock::new(Cache {
                    controller: -1,
                    ..Cache::default()
                }),
                rotate: AtomicU32::new(0),
            }),
        };
        client.metadata(None).await?;
        Ok(client)
    }

    /// The bootstrap list this client was created with.
    pub fn bootstrap(&self) -> &str {
        &self.inner.bootstrap
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    /// Fresh metadata for all topics (`None`) or the given ones; also
    /// refreshes the cache that routes requests.
    pub async fn metadata(
        &self,
        topics: Option<&[String]>,
    ) -> Result<ClusterMetadata, ClientError> {
        let (resp, version) = self
            .send_versioned(&Target::Any, |v| metadata_request(v, topics))
            .await?;
        let md = cluster_metadata(resp, version);
        self.update_cache(&md, topics.is_none());
        Ok(md)
    }

    fn update_cache(&self, md: &ClusterMetadata, all_topics: bool) {
        let mut c = self.inner.cache.write();
        if !md.brokers.is_empty() {
            c.brokers = md.brokers.iter().map(|b| (b.id, b.addr())).collect();
        }
        c.controller = md.controller_id;
        if all_topics {
            c.leaders.clear();
            c.partitions.clear();
        }
        for t in &md.topics {
            c.leaders.retain(|(name, _), _| *name != t.name);
            c.partitions.remove(&t.name);
            if t.error.is_some() && t.partitions.is_empty() {
                continue;
            }
            c.partitions.insert(
                t.name.clone(),
                i32::try_from(t.partitions.len()).unwrap_or(i32::MAX),
            );
            for p in &t.partitions {
                c.leaders.insert((t.name.clone(), p.index), p.leader);
            }
        }
    }

    /// Ids and addresses of the brokers in the cached metadata.
    pub(crate) fn known_brokers(&self) -> Vec<(i32, String)> {
        let c = self.inner.cache.read();
        c.brokers.iter().map(|(id, a)| (*id, a.clone())).collect()
    }

    /// Topics and partition counts in the cache.
    pub(crate) fn cached_topics(&self) -> Vec<(String, i32)> {
        let c = self.inner.cache.read();
        c.partitions.iter().map(|(t, n)| (t.clone(), *n)).collect()
    }

    /// The cached leader of a partition; `None` when the cache does not know
    /// the topic.
    fn cached_leader(&self, topic: &str, partition: i32) -> Option<Result<i32, ApiError>> {
        let c = self.inner.cache.read();
        let count = *c.partitions.get(topic)?;
        Some(match c.leaders.get(&(topic.to_string(), partition)) {
            Some(&l) if l >= 0 => Ok(l),
            Some(_) => Err(ApiError::local(
                ResponseError::LeaderNotAvailable,
                format!("{topic}-{partition} has no leader"),
            )),
            None => Err(ApiError::local(
                ResponseError::UnknownTopicOrPartition,
                format!("topic {topic} has {count} partitions, no partition {partition}"),
            )),
        })
    }

    /// The leader of `topic`-`partition`, from the cache or, when the cache
    /// does not know the topic or `refresh` is set, from fresh metadata.
    pub(crate) async fn leader(
        &self,
        topic: &str,
        partition: i32,
        refresh: bool,
    ) -> Result<i32, ClientError> {
        if !refresh {
            if let Some(r) = self.cached_leader(topic, partition) {
                return r.map_err(ClientError::Api);
            }
        }
        let md = self.metadata(Some(&[topic.to_string()])).await?;
        if let Some(e) = md.topic(topic).and_then(|t| t.error.clone()) {
            return Err(ClientError::Api(e));
        }
        match self.cached_leader(topic, partition) {
            Some(r) => r.map_err(ClientError::Api),
            None => Err(ClientError::Api(ApiError::local(
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic '{topic}'"),
            ))),
        }
    }

    /// The partition count of a topic (cached, or from fresh metadata).
    pub(crate) async fn partition_count(&self, topic: &str) -> Result<i32, ClientError> {
        if let Some(&n) = self.inner.cache.read().partitions.get(topic) {
            return Ok(n);
        }
        let md = self.metadata(Some(&[topic.to_string()])).await?;
        match md.topic(topic) {
            Some(t) if t.error.is_none() || !t.partitions.is_empty() => {
                Ok(i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))
            }
            Some(t) => Err(ClientError::Api(t.error.clone().unwrap_or_else(|| {
                ApiError::local(ResponseError::UnknownTopicOrPartition, topic)
            }))),
            None => Err(ClientError::Api(ApiError::local(
                ResponseError::UnknownTopicOrPartition,
                format!("unknown topic '{topic}'"),
            ))),
        }
    }

    /// The address of a group's coordinator (FindCoordinator).
    pub(crate) async fn coordinator(&self, group: &str) -> Result<String, ClientError> {
        let (resp, version) = self
            .send_versioned(&Target::Any, |v| {
                let key = StrBytes::from_string(group.to_string());
                if v >= 4 {
                    FindCoordinatorRequest::default()
                        .with_key_type(0)
                        .with_coordinator_keys(vec![key])
                } else if v >= 1 {
                    FindCoordinatorRequest::default()
                        .with_key(key)
                        .with_key_type(0)
                } else {
                    FindCoordinatorRequest::default().with_key(key)
                }
            })
            .await?;
        let (code, message, host, port) = if version >= 4 {
            let Some(c) = resp.coordinators.into_iter().next() else {
                return Err(ClientError::Protocol {
                    addr: "FindCoordinator".into(),
                    reason: format!("no coordinator listed for group '{group}'"),
                });
            };
            (c.error_code, c.error_message, c.host, c.port)
        } else {
            (resp.error_code, resp.error_message, resp.host, resp.port)
        };
        ApiError::check(code, message.map(|m| m.to_string()))?;
        Ok(format!("{host}:{port}"))
    }

    /// Sends a request built for the negotiated version; see
    /// [`send_versioned`](Self::send_versioned).
    pub(crate) async fn send<R, F>(
        &self,
        target: &Target,
        build: F,
    ) -> Result<R::Response, ClientError>
    where
        R: Request,
        F: Fn(i16) -> R,
    {
        Ok(self.send_versioned(target, build).await?.0)
    }

    /// Sends the request `build(version)` to `target`, `version` being the
    /// highest both this client and that broker support, and returns the
    /// response with the version used. "Any broker" tries the last broker
    /// that answered, then every known one, then the bootstrap list.
    pub(crate) async fn send_versioned<R, F>(
        &self,
        target: &Target,
        build: F,
    ) -> Result<(R::Response, i16), ClientError>
    where
        R: Request,
        F: Fn(i16) -> R,
    {
        let addrs = self.addresses(target)?;
        let mut failures = Vec::new();
        for addr in &addrs {
            match self.send_to(addr, &build).await {
                Ok(r) => {
                    self.inner.cache.write().last_good = Some(addr.clone());
                    return Ok(r);
                }
                Err(e) if e.is_transport() && addrs.len() > 1 => {
                    let mut c = self.inner.cache.write();
                    if c.last_good.as_deref() == Some(addr.as_str()) {
                        c.last_good = None;
                    }
                    failures.push(e.to_string());
                }
                Err(e) => return Err(e),
            }
        }
        Err(ClientError::NoBrokerReachable(failures))
    }

    fn addresses(&self, target: &Target) -> Result<Vec<String>, ClientError> {
        let c = self.inner.cache.read();
        let any = || {
            let mut v: Vec<String> = Vec::new();
            let candidates = c
                .last_good
                .iter()
                .chain(c.brokers.values())
                .chain(self.inner.bootstrap_addrs.iter());
            for a in candidates {
                if !v.contains(a) {
                    v.push(a.clone());
                }
            }
            v
        };
        Ok(match target {
            Target::Any => any(),
            Target::Controller => match c.brokers.get(&c.controller) {
                Some(a) => {
                    let mut v = vec![a.clone()];
                    v.extend(any().into_iter().filter(|x| x != a));
                    v
                }
                None => any(),
            },
            Target::Broker(id) => vec![c
                .brokers
                .get(id)
                .cloned()
                .ok_or(ClientError::UnknownBroker(*id))?],
            Target::Addr(a) => vec![a.clone()],
        })
    }

    async fn send_to<R, F>(&self, addr: &str, build: &F) -> Result<(R::Response, i16), ClientError>
    where
        R: Request,
        F: Fn(i16) -> R,
    {
        let slot = self
            .inner
            .conns
            .lock()
            .entry(addr.to_string())
            .or_default()
            .clone();
        let mut guard = slot.conn.lock().await;
        if guard.is_none() {
            *guard = Some(self.open(addr).await?);
        }
        let Some(n) = guard.as_mut() else {
            return Err(ClientError::Io {
                addr: addr.to_string(),
                reason: "connection lost".into(),
            });
        };
        let version = pick_version(addr, R::KEY, &n.versions)?;
        let req = build(version);
        match n
            .conn
            .send(version, &req, self.inner.config.request_timeout)
            .await
        {
            Ok(resp) => Ok((resp, version)),
            Err(e) => {
                // The connection's state is unknown (a late response may
                // still arrive): the next request reconnects.
                *guard = None;
                Err(e.into())
            }
        }
    }

    /// Connects and negotiates versions: ApiVersions v3, or v0 when the
    /// broker does not take v3.
    async fn open(&self, addr: &str) -> Result<Negotiated, ClientError> {
        let cfg = &self.inner.config;
        let mut conn = Connection::connect(addr, &cfg.client_id, cfg.connect_timeout).await?;
        let v3 = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str(SOFTWARE_NAME))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let resp = match conn.send(3, &v3, cfg.request_timeout).await {
            Ok(r) if r.error_code == 0 => r,
            Ok(_) | Err(super::Error::Protocol { .. }) => {
                // An older broker answers v3 in v0 with UNSUPPORTED_VERSION
                // (or not at all in a form v3 decodes): ask in v0 afresh.
                conn = Connection::connect(addr, &cfg.client_id, cfg.connect_timeout).await?;
                let r = conn
                    .send(0, &ApiVersionsRequest::default(), cfg.request_timeout)
                    .await?;
                ApiError::check(r.error_code, None)?;
                r
            }
            Err(e) => return Err(e.into()),
        };
        let versions = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        Ok(Negotiated { conn, versions })
    }

    /// Runs `op` against the leader of `topic`-`partition`; when it fails in
    /// a way fresh metadata may fix (leader moved, broker gone), refreshes
    /// the topic's metadata and tries once more.
    pub(crate) async fn with_leader<T, Fut>(
        &self,
        topic: &str,
        partition: i32,
        op: impl Fn(i32) -> Fut,
    ) -> Result<T, ClientError>
    where
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let leader = self.leader(topic, partition, false).await?;
        match op(leader).await {
            Err(e) if e.retriable() => {
                tracing::debug!(topic, partition, leader, error = %e, "refreshing metadata and retrying");
                let leader = self.leader(topic, partition, true).await?;
                op(leader).await
            }
            r => r,
        }
    }

    /// Runs `op` against `group`'s coordinator, finding it again and
    /// retrying once when the coordinator moved or was not ready.
    pub(crate) async fn with_coordinator<T, Fut>(
        &self,
        group: &str,
        op: impl Fn(String) -> Fut,
    ) -> Result<T, ClientError>
    where
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let first = async {
            let addr = self.coordinator(group).await?;
            op(addr).await
        };
        match first.await {
            Err(e) if e.retriable() => {
                tracing::debug!(group, error = %e, "finding the coordinator again");
                let _ = self.metadata(None).await;
                let addr = self.coordinator(group).await?;
                op(addr).await
            }
            r => r,
        }
    }

    /// The server-side timeout to put in requests that have one: a little
    /// below the client's own, so the broker's answer arrives first.
    pub(crate) fn server_timeout_ms(&self) -> i32 {
        let t = ms(self.inner.config.request_timeout);
        let margin = (t / 4).min(1_000);
        i32::try_from(t - margin).unwrap_or(i32::MAX)
    }
}

fn pick_version(
    addr: &str,
    key: i16,
    broker: &HashMap<i16, (i16, i16)>,
) -> Result<i16, ClientError> {
    let api = api_name(key);
    let (cmin, cmax) = CLIENT_VERSIONS
        .iter()
        .find(|(k, _, _)| *k as i16 == key)
        .map(|&(_, lo, hi)| (lo, hi))
        .unwrap_or((0, 0));
    let Some(&(bmin, bmax)) = broker.get(&key) else {
        return Err(ClientError::UnsupportedApi {
            addr: addr.to_string(),
            api,
        });
    };
    let v = cmax.min(bmax);
    if v < cmin.max(bmin) {
        return Err(ClientError::UnsupportedVersion {
            addr: addr.to_string(),
            api,
            broker_min: bmin,
            broker_max: bmax,
            client_min: cmin,
            client_max: cmax,
        });
    }
    Ok(v)
}

pub(crate) fn topic_name(t: &str) -> TopicName {
    TopicName(StrBytes::from_string(t.to_string()))
}

fn metadata_request(version: i16, topics: Option<&[String]>) -> MetadataRequest {
    let topics = match topics {
        // v0 has no null: an empty list means every topic.
        None if version == 0 => Some(Vec::new()),
        None => None,
        Some(ts) => Some(
            ts.iter()
                .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                .collect(),
        ),
    };
    let mut req = MetadataRequest::default().with_topics(topics);
    if version >= 4 {
        req = req.with_allow_auto_topic_creation(false);
    }
    req
}

fn cluster_metadata(resp: MetadataResponse, version: i16) -> ClusterMetadata {
    let brokers = resp
        .brokers
        .into_iter()
        .map(|b| BrokerInfo {
            id: b.node_id.0,
            host: b.host.to_string(),
            port: b.port,
            rack: b.rack.map(|r| r.to_string()),
        })
        .collect();
    let mut topics: Vec<TopicInfo> = resp
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    index: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: if version >= 7 { p.leader_epoch } else { -1 },
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                    error: ApiError::from_code(p.error_code, None),
                })
                .collect();
            partitions.sort_by_key(|p| p.index);
            TopicInfo {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                id: (!t.topic_id.is_nil()).then_some(t.topic_id),
                internal: t.is_internal,
                error: ApiError::from_code(t.error_code, None),
                partitions,
            }
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    ClusterMetadata {
        cluster_id: resp.cluster_id.map(|c| c.to_string()),
        controller_id: if version >= 1 {
            resp.controller_id.0
        } else {
            -1
        },
        brokers,
        topics,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn highest_common_version_is_picked() {
        let key = ApiKey::Metadata as i16;
        let broker: HashMap<i16, (i16, i16)> = [(key, (0, 13))].into();
        assert_eq!(pick_version("b:1", key, &broker).ok(), Some(12));
        let broker: HashMap<i16, (i16, i16)> = [(key, (0, 5))].into();
        assert_eq!(pick_version("b:1", key, &broker).ok(), Some(5));
        let fetch = ApiKey::Fetch as i16;
        let broker: HashMap<i16, (i16, i16)> = [(fetch, (13, 17))].into();
        let err = pick_version("b:1", fetch, &broker).expect_err("no overlap");
        assert!(
            err.to_string().contains("b:1 supports Fetch v13-17"),
            "{err}"
        );
        let err =
            pick_version("b:1", ApiKey::DescribeLogDirs as i16, &broker).expect_err("not offered");
        assert!(matches!(err, ClientError::UnsupportedApi { .. }), "{err}");
    }
}
