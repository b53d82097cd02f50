//! A blocking Kafka wire client for byte-level tests: frames are a 4-byte
//! big-endian length plus payload; requests are encoded with `kafka-protocol`,
//! and anything else (garbage, huge length prefixes, unknown API keys) can be
//! written as raw bytes.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    fetch_request::{FetchPartition, FetchTopic},
    fetch_response::PartitionData,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    list_offsets_response::ListOffsetsPartitionResponse,
    produce_request::{PartitionProduceData, TopicProduceData},
    produce_response::PartitionProduceResponse,
    ApiVersionsRequest, ApiVersionsResponse, FetchRequest, ListOffsetsRequest, ProduceRequest,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};

/// How long a single read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Produce v13+ and Fetch v13+ address topics by id only; these tests use names.
pub const MAX_PRODUCE_VERSION: i16 = 12;
/// See [`MAX_PRODUCE_VERSION`].
pub const MAX_FETCH_VERSION: i16 = 12;

/// One TCP connection speaking the Kafka framing.
pub struct RawConnection {
    stream: TcpStream,
    next_correlation: i32,
    ranges: Option<HashMap<i16, (i16, i16)>>,
}

impl RawConnection {
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.set_nodelay(true)?;
        Ok(RawConnection {
            stream,
            next_correlation: 1,
            ranges: None,
        })
    }

    /// Writes bytes as they are (no length prefix added).
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .context("writing to the broker")?;
        self.stream.flush()?;
        Ok(())
    }

    /// Writes `payload` with its 4-byte length prefix.
    pub fn write_frame(&mut self, payload: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(4 + payload.len());
        frame.extend_from_slice(&(payload.len() as i32).to_be_bytes());
        frame.extend_from_slice(payload);
        self.write_raw(&frame)
    }

    /// Reads one response frame (without its length prefix).
    pub fn read_frame(&mut self) -> Result<Bytes> {
        let mut len = [0u8; 4];
        self.stream
            .read_exact(&mut len)
            .context("reading a response length (connection closed or timed out?)")?;
        let len = i32::from_be_bytes(len);
        if !(0..=256 << 20).contains(&len) {
            bail!("implausible response length {len}");
        }
        let mut body = vec![0u8; len as usize];
        self.stream
            .read_exact(&mut body)
            .with_context(|| format!("reading a {len}-byte response body"))?;
        Ok(Bytes::from(body))
    }

    /// Succeeds once the broker closes the connection (EOF or reset) within
    /// `timeout`; fails if it stays open or sends data instead.
    pub fn expect_closed(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        let mut received = 0usize;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "connection still open after {timeout:?} ({received} bytes received meanwhile)"
                );
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => received += n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::BrokenPipe
                    ) =>
                {
                    break
                }
                Err(e) => return Err(e).context("waiting for the broker to close the connection"),
            }
        }
        self.stream.set_read_timeout(Some(IO_TIMEOUT))?;
        if received > 0 {
            bail!("broker sent {received} bytes before closing the connection; expected a plain close");
        }
        Ok(())
    }

    /// The next correlation id.
    pub fn correlation(&mut self) -> i32 {
        let c = self.next_correlation;
        self.next_correlation += 1;
        c
    }

    /// Sends one request (header + body) and returns its correlation id.
    pub fn send<R: Request>(&mut self, version: i16, req: &R) -> Result<i32> {
        let correlation = self.correlation();
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(StrBytes::from_static_str("sluice-tests-raw")));
        let mut buf = BytesMut::new();
        header
            .encode(&mut buf, R::header_version(version))
            .context("encoding the request header")?;
        req.encode(&mut buf, version)
            .with_context(|| format!("encoding api {} v{version}", R::KEY))?;
        self.write_frame(&buf)?;
        Ok(correlation)
    }

    /// Reads and decodes the response to a request sent with [`send`](Self::send).
    /// Fails on a correlation id mismatch or on bytes left over after decoding.
    pub fn recv<R: Request>(&mut self, version: i16, correlation: i32) -> Result<R::Response> {
        let mut frame = self.read_frame()?;
        let header = ResponseHeader::decode(&mut frame, R::Response::header_version(version))
            .context("decoding the response header")?;
        if header.correlation_id != correlation {
            bail!(
                "response correlation id {} does not match request {correlation}",
                header.correlation_id
            );
        }
        let resp = R::Response::decode(&mut frame, version)
            .with_context(|| format!("decoding the response to api {} v{version}", R::KEY))?;
        if !frame.is_empty() {
            bail!(
                "{} bytes left over after decoding the response to api {} v{version}",
                frame.len(),
                R::KEY
            );
        }
        Ok(resp)
    }

    /// Sends a request and waits for its response.
    pub fn request<R: Request>(&mut self, version: i16, req: &R) -> Result<R::Response> {
        let correlation = self.send(version, req)?;
        self.recv::<R>(version, correlation)
    }

    /// ApiVersions v0; remembers the broker's ranges for [`version_for`](Self::version_for).
    pub fn api_versions(&mut self) -> Result<ApiVersionsResponse> {
        let resp = self.request(0, &ApiVersionsRequest::default())?;
        if resp.error_code != 0 {
            bail!(
                "ApiVersions v0 answered with error code {}",
                resp.error_code
            );
        }
        self.ranges = Some(
            resp.api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect(),
        );
        Ok(resp)
    }

    /// The highest version of `R` that both the broker and `kafka-protocol`
    /// support, capped at `cap`.
    pub fn version_for<R: Request>(&mut self, cap: i16) -> Result<i16> {
        if self.ranges.is_none() {
            self.api_versions()?;
        }
        let ranges = self.ranges.as_ref().context("no ApiVersions ranges")?;
        let Some(&(min, max)) = ranges.get(&R::KEY) else {
            bail!("broker does not advertise api key {}", R::KEY);
        };
        let hi = max.min(R::VERSIONS.max).min(cap);
        let lo = min.max(R::VERSIONS.min);
        if hi < lo {
            bail!(
                "no common version for api {}: broker {min}..={max}, client {}..={}, cap {cap}",
                R::KEY,
                R::VERSIONS.min,
                R::VERSIONS.max
            );
        }
        Ok(hi)
    }

    /// Produces one record set to one partition; returns that partition's result.
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        records: Bytes,
        acks: i16,
    ) -> Result<PartitionProduceResponse> {
        let version = self.version_for::<ProduceRequest>(MAX_PRODUCE_VERSION)?;
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(topic_name(topic))
                .with_partition_data(vec![PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records))])]);
        let resp = self.request(version, &req)?;
        let p = resp
            .responses
            .into_iter()
            .find(|t| t.name.0.as_str() == topic)
            .and_then(|t| {
                t.partition_responses
                    .into_iter()
                    .find(|p| p.index == partition)
            })
            .with_context(|| {
                format!("Produce v{version} response has no entry for {topic}/{partition}")
            })?;
        Ok(p)
    }

    /// ListOffsets for one partition (`timestamp` -1 latest, -2 earliest).
    pub fn list_offset(
        &mut self,
        topic: &str,
        partition: i32,
        timestamp: i64,
    ) -> Result<ListOffsetsPartitionResponse> {
        let version = self.version_for::<ListOffsetsRequest>(i16::MAX)?;
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic_name(topic))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(partition)
                    .with_timestamp(timestamp)])]);
        let resp = self.request(version, &req)?;
        resp.topics
            .into_iter()
            .find(|t| t.name.0.as_str() == topic)
            .and_then(|t| {
                t.partitions
                    .into_iter()
                    .find(|p| p.partition_index == partition)
            })
            .with_context(|| {
                format!("ListOffsets v{version} response has no entry for {topic}/{partition}")
            })
    }

    /// One Fetch for one partition from `offset`.
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_bytes: i32,
    ) -> Result<PartitionData> {
        let version = self.version_for::<FetchRequest>(MAX_FETCH_VERSION)?;
        let req = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(100)
            .with_min_bytes(1)
            .with_max_bytes(max_bytes)
            .with_topics(vec![FetchTopic::default()
                .with_topic(topic_name(topic))
                .with_partitions(vec![FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_log_start_offset(-1)
                    .with_partition_max_bytes(max_bytes)])]);
        let resp = self.request(version, &req)?;
        if resp.error_code != 0 {
            bail!("Fetch v{version} top-level error code {}", resp.error_code);
        }
        resp.responses
            .into_iter()
            .find(|t| t.topic.0.as_str() == topic)
            .and_then(|t| {
                t.partitions
                    .into_iter()
                    .find(|p| p.partition_index == partition)
            })
            .with_context(|| {
                format!("Fetch v{version} response has no entry for {topic}/{partition}")
            })
    }
}

/// A request header v1 written by hand, for API keys `kafka-protocol` does not know.
pub fn raw_header(api_key: i16, api_version: i16, correlation: i32, client_id: &str) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_i16(api_key);
    buf.put_i16(api_version);
    buf.put_i32(correlation);
    buf.put_i16(client_id.len() as i16);
    buf.extend_from_slice(client_id.as_bytes());
    buf
}

/// The correlation id at the start of a response frame.
pub fn response_correlation(frame: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(frame.get(..4)?.try_into().ok()?))
}

pub fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Whether the broker advertises the version range `min..=max` for `R`.
pub fn advertised<R: Message + Request>(resp: &ApiVersionsResponse) -> Option<(i16, i16)> {
    resp.api_keys
        .iter()
        .find(|k| k.api_key == R::KEY)
        .map(|k| (k.min_version, k.max_version))
}

/// The range the broker advertises for `api_key`.
pub fn advertised_key(resp: &ApiVersionsResponse, api_key: i16) -> Option<(i16, i16)> {
    resp.api_keys
        .iter()
        .find(|k| k.api_key == api_key)
        .map(|k| (k.min_version, k.max_version))
}
