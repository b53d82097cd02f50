//! What the client's calls fail with: a Kafka error code from a broker
//! ([`ApiError`]) or a failure to talk to one ([`ClientError`]).

use std::fmt;

use kafka_protocol::error::{ParseResponseErrorCode, ResponseError};

/// A Kafka error code with its name and the broker's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: i16,
    /// Kafka's name of the code, e.g. `UNKNOWN_TOPIC_OR_PARTITION`.
    pub name: String,
    pub message: Option<String>,
}

impl ApiError {
    /// The error for `code`, or `None` for 0 (no error).
    pub fn from_code(code: i16, message: Option<String>) -> Option<ApiError> {
        let err = code.err()?;
        Some(ApiError {
            code,
            name: error_name(err),
            message: message.filter(|m| !m.is_empty()),
        })
    }

    /// `Ok(())` for 0, the error otherwise.
    pub fn check(code: i16, message: Option<String>) -> Result<(), ApiError> {
        match ApiError::from_code(code, message) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// An error the client makes up itself (no broker sent it), with a
    /// message saying why.
    pub fn local(err: ResponseError, message: impl Into<String>) -> ApiError {
        ApiError {
            code: err.code(),
            name: error_name(err),
            message: Some(message.into()),
        }
    }

    /// Whether this is `err`.
    pub fn is(&self, err: ResponseError) -> bool {
        self.code == err.code()
    }

    /// Errors after which the request should go elsewhere: the partition's
    /// leader or the group's coordinator moved, and fresh metadata tells
    /// where to.
    pub fn needs_refresh(&self) -> bool {
        is_refresh_code(self.code)
    }
}

/// Codes answered when a request reached the wrong (or a not yet ready)
/// leader or coordinator.
pub(crate) fn is_refresh_code(code: i16) -> bool {
    use ResponseError as E;
    [
        E::NotLeaderOrFollower,
        E::LeaderNotAvailable,
        E::NotCoordinator,
        E::CoordinatorNotAvailable,
        E::CoordinatorLoadInProgress,
        E::FencedLeaderEpoch,
        E::UnknownLeaderEpoch,
    ]
    .iter()
    .any(|e| e.code() == code)
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{}: {m}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

impl std::error::Error for ApiError {}

/// Kafka's name of an error: the crate's variant name in SCREAMING_SNAKE
/// case (`UnknownTopicOrPartition` -> `UNKNOWN_TOPIC_OR_PARTITION`).
fn error_name(err: ResponseError) -> String {
    if let ResponseError::Unknown(code) = err {
        return format!("UNKNOWN_ERROR_CODE_{code}");
    }
    let camel = format!("{err:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("bootstrap list '{0}' has no host:port")]
    EmptyBootstrap(String),
    /// Every bootstrap (or known) broker failed; one reason per address.
    #[error("no broker reachable: {}", .0.join("; "))]
    NoBrokerReachable(Vec<String>),
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("connection to {addr} failed: {reason}")]
    Io { addr: String, reason: String },
    #[error("{addr} did not answer within {ms} ms")]
    Timeout { addr: String, ms: u64 },
    #[error("bad response from {addr}: {reason}")]
    Protocol { addr: String, reason: String },
    #[error(
        "{addr} supports {api} v{broker_min}-{broker_max}, this client v{client_min}-{client_max}"
    )]
    UnsupportedVersion {
        addr: String,
        api: String,
        broker_min: i16,
        broker_max: i16,
        client_min: i16,
        client_max: i16,
    },
    #[error("{addr} does not support {api}")]
    UnsupportedApi { addr: String, api: String },
    #[error("broker {0} is not in the cluster's metadata")]
    UnknownBroker(i32),
    #[error("{0}")]
    Api(ApiError),
    /// A request the client cannot make, e.g. a partition outside the topic.
    #[error("{0}")]
    Invalid(String),
}

impl ClientError {
    /// The broker's error, if that is what this is.
    pub fn api(&self) -> Option<&ApiError> {
        match self {
            ClientError::Api(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the connection (not the request) failed: the connection is
    /// dropped and the next request reconnects.
    pub(crate) fn is_transport(&self) -> bool {
        matches!(
            self,
            ClientError::Connect { .. }
                | ClientError::Io { .. }
                | ClientError::Timeout { .. }
                | ClientError::Protocol { .. }
        )
    }

    /// Whether a metadata refresh and one retry may help.
    pub(crate) fn retriable(&self) -> bool {
        match self {
            ClientError::Api(e) => e.needs_refresh(),
            ClientError::UnknownBroker(_) => true,
            e => e.is_transport(),
        }
    }
}

impl From<ApiError> for ClientError {
    fn from(e: ApiError) -> Self {
        ClientError::Api(e)
    }
}

impl From<super::Error> for ClientError {
    fn from(e: super::Error) -> Self {
        use super::Error as E;
        match e {
            E::Connect { addr, source } => ClientError::Connect {
                addr,
                reason: source.to_string(),
            },
            E::Io { addr, source } => ClientError::Io {
                addr,
                reason: source.to_string(),
            },
            E::Timeout { addr, ms } => ClientError::Timeout { addr, ms },
            E::Protocol { addr, reason } => ClientError::Protocol { addr, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka() {
        let e = ApiError::from_code(3, Some("no topic x".into())).expect("an error");
        assert_eq!(e.name, "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(e.to_string(), "UNKNOWN_TOPIC_OR_PARTITION: no topic x");
        assert_eq!(
            ApiError::from_code(6, None).map(|e| e.to_string()),
            Some("NOT_LEADER_OR_FOLLOWER".to_string())
        );
        assert_eq!(
            ApiError::from_code(-1, None).map(|e| e.name),
            Some("UNKNOWN_SERVER_ERROR".to_string())
        );
        assert_eq!(
            ApiError::from_code(9999, None).map(|e| e.name),
            Some("UNKNOWN_ERROR_CODE_9999".to_string())
        );
        assert!(ApiError::from_code(0, Some("fine".into())).is_none());
    }
}
