//! An async Kafka client over the same `kafka-protocol` types the broker
//! serves, for any Kafka cluster (nothing here assumes Sluice).
//!
//! Two levels:
//! - [`Connection`]: one connection, request/response in order, the version
//!   chosen by the caller. Replication and transaction markers use it.
//! - [`Client`]: what the console and the operator use. Module map:
//!   - [`pool`]: the [`Client`] handle: bootstrap, one pooled connection per
//!     broker with versions negotiated through ApiVersions, the metadata
//!     cache routing requests to leaders, coordinators and the controller,
//!     one retry after a metadata refresh when a leader or coordinator moved.
//!   - [`data`]: ListOffsets, Produce, Fetch.
//!   - [`admin`]: topics, partitions, configs, log dir sizes.
//!   - [`groups`]: list, describe, committed offsets, admin commits, delete.
//!   - [`producer`]: the idempotent producer (producer id, sequence numbers,
//!     retries of the same batch that the leader deduplicates).
//!   - [`records`]: record batch v2 encoding and decoding (compressed
//!     batches, control batches, aborted transactions), murmur2.
//!   - [`types`], [`error`]: the data calls take and return; [`ApiError`]
//!     (a Kafka error code) and [`ClientError`].

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub mod admin;
pub mod data;
pub mod error;
pub mod groups;
pub mod pool;
pub mod producer;
pub mod records;
pub mod types;

pub use error::{ApiError, ClientError};
pub use pool::Client;
pub use producer::{IdempotentProducer, PartitionRecords, ProducerConfig, ProducerError};
pub use types::{
    BrokerInfo, ClientConfig, ClusterMetadata, ConfigEntry, ConfigOp, FetchedRecords,
    GroupDescription, GroupListing, Isolation, ListedOffset, MemberInfo, NewTopic, OffsetSpec,
    PartitionInfo, ProduceRecord, Record, TopicInfo,
};

/// Largest response accepted (a fetch response is bounded by its request's
/// max_bytes plus overhead).
const MAX_RESPONSE: usize = 256 << 20;

/// Why a [`Connection`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("connection to {addr} failed: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("bad response from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
}

/// One connection to a broker.
pub struct Connection {
    addr: String,
    client_id: StrBytes,
    reader: BufReader<OwnedReadHalf>,
    writer: BufWriter<OwnedWriteHalf>,
    next_correlation: i32,
}

impl Connection {
    pub async fn connect(
        addr: &str,
        client_id: &str,
        timeout: Duration,
    ) -> Result<Connection, Error> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| Error::Timeout {
                addr: addr.to_string(),
                ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            })?
            .map_err(|source| Error::Connect {
                addr: addr.to_string(),
                source,
            })?;
        let _ = stream.set_nodelay(true);
        let (r, w) = stream.into_split();
        Ok(Connection {
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            reader: BufReader::with_capacity(64 * 1024, r),
            writer: BufWriter::new(w),
            next_correlation: 1,
        })
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn protocol(&self, reason: impl std::fmt::Display) -> Error {
        Error::Protocol {
            addr: self.addr.clone(),
            reason: reason.to_string(),
        }
    }

    fn io(&self, source: std::io::Error) -> Error {
        Error::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    /// Sends `req` at `version` and waits up to `timeout` for its response.
    /// After an error the connection must be dropped.
    pub async fn send<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, Error> {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        match tokio::time::timeout(timeout, self.round_trip(version, req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                addr: self.addr.clone(),
                ms,
            }),
        }
    }

    async fn round_trip<R: Request>(
        &mut self,
        version: i16,
        req: &R,
    ) -> Result<R::Response, Error> {
        let correlation_id = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let header_version = R::header_version(version);
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        header
            .encode(&mut buf, header_version)
            .map_err(|e| self.protocol(e))?;
        req.encode(&mut buf, version)
            .map_err(|e| self.protocol(e))?;
        let len = i32::try_from(buf.len() - 4).map_err(|e| self.protocol(e))?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        self.writer.write_all(&buf).await.map_err(|e| self.io(e))?;
        self.writer.flush().await.map_err(|e| self.io(e))?;

        let len = self.reader.read_i32().await.map_err(|e| self.io(e))?;
        let len = usize::try_from(len)
            .ok()
            .filter(|l| *l >= 4 && *l <= MAX_RESPONSE)
            .ok_or_else(|| self.protocol(format!("response length {len}")))?;
        let mut body = vec![0u8; len];
        self.reader
            .read_exact(&mut body)
            .await
            .map_err(|e| self.io(e))?;
        let mut body = Bytes::from(body);
        let rh = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(|e| self.protocol(e))?;
        if rh.correlation_id != correlation_id {
            return Err(self.protocol(format!(
                "correlation id {} for request {correlation_id}",
                rh.correlation_id
            )));
        }
        let resp = R::Response::decode(&mut body, version).map_err(|e| self.protocol(e))?;
        if body.has_remaining() {
            tracing::trace!(addr = %self.addr, left = body.remaining(), "response has trailing bytes");
        }
        Ok(resp)
    }
}
