//! Consumer groups: listing (every broker), describing, committed offsets,
//! admin commits and deletes (each group's coordinator).

use std::collections::BTreeMap;

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest,
    OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;

use super::error::{ApiError, ClientError};
use super::pool::{topic_name, Client, Target};
use super::types::{GroupDescription, GroupListing, MemberInfo};

fn group_id(g: &str) -> GroupId {
    GroupId(StrBytes::from_string(g.to_string()))
}

impl Client {
    /// ListGroups on every broker, merged and sorted by group id.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, ClientError> {
        self.metadata(None).await?;
        let mut all: BTreeMap<String, GroupListing> = BTreeMap::new();
        for (id, _) in self.known_brokers() {
            let (resp, version) = self
                .send_versioned(&Target::Broker(id), |_| ListGroupsRequest::default())
                .await?;
            ApiError::check(resp.error_code, None)?;
            for g in resp.groups {
                let listing = GroupListing {
                    group_id: g.group_id.0.to_string(),
                    protocol_type: g.protocol_type.to_string(),
                    state: if version >= 4 {
                        g.group_state.to_string()
                    } else {
                        String::new()
                    },
                };
                all.insert(listing.group_id.clone(), listing);
            }
        }
        Ok(all.into_values().collect())
    }

    /// DescribeGroups, each group asked of its coordinator; consumer groups'
    /// member assignments decoded. A group whose coordinator cannot be
    /// found is described with that error.
    pub async fn describe_groups(
        &self,
        ids: &[String],
    ) -> Result<Vec<GroupDescription>, ClientError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let described = self
                .with_coordinator(id, |addr| async move {
                    let resp = self
                        .send(&Target::Addr(addr), |_| {
                            DescribeGroupsRequest::default().with_groups(vec![group_id(id)])
                        })
                        .await?;
                    let g = resp
                        .groups
                        .into_iter()
                        .find(|g| g.group_id.0.as_str() == id.as_str())
                        .ok_or_else(|| ClientError::Protocol {
                            addr: "DescribeGroups".into(),
                            reason: format!("no entry for group '{id}'"),
                        })?;
                    let error =
                        ApiError::from_code(g.error_code, g.error_message.map(|m| m.to_string()));
                    if let Some(e) = error.as_ref().filter(|e| e.needs_refresh()) {
                        return Err(ClientError::Api(e.clone()));
                    }
                    let consumer = g.protocol_type.as_str() == "consumer";
                    Ok(GroupDescription {
                        group_id: id.clone(),
                        state: g.group_state.to_string(),
                        protocol_type: g.protocol_type.to_string(),
                        protocol: g.protocol_data.to_string(),
                        error,
                        members: g
                            .members
                            .into_iter()
                            .map(|m| MemberInfo {
                                member_id: m.member_id.to_string(),
                                instance_id: m.group_instance_id.map(|i| i.to_string()),
                                client_id: m.client_id.to_string(),
                                host: m.client_host.to_string(),
                                assignment: if consumer {
                                    decode_assignment(m.member_assignment).unwrap_or_default()
                                } else {
                                    Vec::new()
                                },
                            })
                            .collect(),
                    })
                })
                .await;
            match described {
                Ok(d) => out.push(d),
                Err(ClientError::Api(e)) => out.push(GroupDescription {
                    group_id: id.clone(),
                    state: String::new(),
                    protocol_type: String::new(),
                    protocol: String::new(),
                    error: Some(e),
                    members: Vec::new(),
                }),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Every committed offset of `group` (OffsetFetch for all topics);
    /// partitions without a commit are left out.
    pub async fn committed_offsets(
        &self,
        group: &str,
    ) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
        // OffsetFetch v1 cannot ask for "all topics": it lists the cached ones.
        let all: Vec<(String, Vec<i32>)> = self
            .cached_topics()
            .into_iter()
            .filter(|(t, _)| !t.starts_with("__"))
            .map(|(t, n)| (t, (0..n).collect()))
            .collect();
        let all = &all;
        self.with_coordinator(group, |addr| async move {
            let (resp, version) = self
                .send_versioned(&Target::Addr(addr), |v| {
                    let req = OffsetFetchRequest::default().with_group_id(group_id(group));
                    if v >= 2 {
                        req.with_topics(None)
                    } else {
                        req.with_topics(Some(
                            all.iter()
                                .map(|(t, ps)| {
                                    OffsetFetchRequestTopic::default()
                                        .with_name(topic_name(t))
                                        .with_partition_indexes(ps.clone())
                                })
                                .collect(),
                        ))
                    }
                })
                .await?;
            if version >= 2 {
                ApiError::check(resp.error_code, None)?;
            }
            let mut out = BTreeMap::new();
            for t in resp.topics {
                for p in t.partitions {
                    if let Some(e) = ApiError::from_code(p.error_code, None) {
                        if e.needs_refresh() {
                            return Err(ClientError::Api(e));
                        }
                        continue;
                    }
                    if p.committed_offset >= 0 {
                        out.insert(
                            (t.name.0.to_string(), p.partition_index),
                            p.committed_offset,
                        );
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// An admin commit (generation -1, no member id), as offset-reset tools
    /// do: the coordinator takes it only while the group has no members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        offsets: &BTreeMap<(String, i32), i64>,
    ) -> Result<BTreeMap<(String, i32), Result<(), ApiError>>, ClientError> {
        self.with_coordinator(group, |addr| async move {
            let resp = self
                .send(&Target::Addr(addr), |v| {
                    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
                    for ((t, p), off) in offsets {
                        let part = OffsetCommitRequestPartition::default()
                            .with_partition_index(*p)
                            .with_committed_offset(*off)
                            .with_committed_metadata(Some(StrBytes::from_static_str("")));
                        match topics.last_mut() {
                            Some(last) if last.name.0.as_str() == t => last.partitions.push(part),
                            _ => topics.push(
                                OffsetCommitRequestTopic::default()
                                    .with_name(topic_name(t))
                                    .with_partitions(vec![part]),
                            ),
                        }
                    }
                    let mut req = OffsetCommitRequest::default()
                        .with_group_id(group_id(group))
                        .with_generation_id_or_member_epoch(-1)
                        .with_member_id(StrBytes::from_static_str(""))
                        .with_topics(topics);
                    if v <= 4 {
                        req = req.with_retention_time_ms(-1);
                    }
                    req
                })
                .await?;
            let mut out = BTreeMap::new();
            for t in resp.topics {
                for p in t.partitions {
                    let r = ApiError::check(p.error_code, None);
                    if let Err(e) = &r {
                        if e.is(ResponseError::NotCoordinator)
                            || e.is(ResponseError::CoordinatorLoadInProgress)
                            || e.is(ResponseError::CoordinatorNotAvailable)
                        {
                            return Err(ClientError::Api(e.clone()));
                        }
                    }
                    out.insert((t.name.0.to_string(), p.partition_index), r);
                }
            }
            for tp in offsets.keys() {
                out.entry(tp.clone()).or_insert_with(|| {
                    Err(ApiError::local(
                        ResponseError::UnknownServerError,
                        format!("the coordinator did not answer for {}-{}", tp.0, tp.1),
                    ))
                });
            }
            Ok(out)
        })
        .await
    }

    /// DeleteGroups, each at its coordinator; one outcome per group, in the
    /// request's order (NON_EMPTY_GROUP while a group has members).
    pub async fn delete_groups(
        &self,
        ids: &[String],
    ) -> Result<Vec<(String, Result<(), ApiError>)>, ClientError> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let r = self
                .with_coordinator(id, |addr| async move {
                    let resp = self
                        .send(&Target::Addr(addr), |_| {
                            DeleteGroupsRequest::default().with_groups_names(vec![group_id(id)])
                        })
                        .await?;
                    let r = resp
                        .results
                        .into_iter()
                        .find(|r| r.group_id.0.as_str() == id.as_str())
                        .map(|r| ApiError::check(r.error_code, None))
                        .unwrap_or_else(|| {
                            Err(ApiError::local(
                                ResponseError::UnknownServerError,
                                format!("the coordinator did not answer for group '{id}'"),
                            ))
                        });
                    match r {
                        Err(e) if e.needs_refresh() => Err(ClientError::Api(e)),
                        r => Ok(r),
                    }
                })
                .await;
            match r {
                Ok(r) => out.push((id.clone(), r)),
                Err(ClientError::Api(e)) => out.push((id.clone(), Err(e))),
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Decodes a consumer protocol assignment (ConsumerProtocolAssignment, any
/// version): version, [topic, [partition]], user data (ignored). `None` when
/// the bytes are not one.
pub fn decode_assignment(mut b: Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if b.is_empty() {
        return Some(Vec::new());
    }
    let version = get_i16(&mut b)?;
    if version < 0 {
        return None;
    }
    let n = get_i32(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..n.max(0) {
        let len = usize::try_from(get_i16(&mut b)?).ok()?;
        if b.remaining() < len {
            return None;
        }
        let topic = String::from_utf8(b.split_to(len).to_vec()).ok()?;
        let count = get_i32(&mut b)?;
        let mut parts = Vec::new();
        for _ in 0..count.max(0) {
            parts.push(get_i32(&mut b)?);
        }
        out.push((topic, parts));
    }
    Some(out)
}

fn get_i16(b: &mut Bytes) -> Option<i16> {
    (b.remaining() >= 2).then(|| b.get_i16())
}

fn get_i32(b: &mut Bytes) -> Option<i32> {
    (b.remaining() >= 4).then(|| b.get_i32())
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;

    #[test]
    fn consumer_assignment_decodes_and_odd_bytes_do_not_panic() {
        let mut b = BytesMut::new();
        b.put_i16(1);
        b.put_i32(2);
        for (t, ps) in [("orders", vec![0, 2]), ("audit", vec![1])] {
            b.put_i16(t.len() as i16);
            b.put_slice(t.as_bytes());
            b.put_i32(ps.len() as i32);
            for p in ps {
                b.put_i32(p);
            }
        }
        b.put_i32(-1); // null user data
        let good = b.freeze();
        assert_eq!(
            decode_assignment(good.clone()),
            Some(vec![
                ("orders".to_string(), vec![0, 2]),
                ("audit".to_string(), vec![1])
            ])
        );
        for cut in 1..good.len() - 4 {
            assert_eq!(decode_assignment(good.slice(..cut)), None, "cut at {cut}");
        }
        let mut huge = BytesMut::new();
        huge.put_i16(0);
        huge.put_i32(i32::MAX);
        assert_eq!(decode_assignment(huge.freeze()), None);
    }
}
