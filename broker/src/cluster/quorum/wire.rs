//! The controller port's frames: a 4-byte big-endian length, then the JSON
//! of a [`Request`] or a [`Response`]. Requests carry an id so one
//! connection can have several in flight and replies arrive in any order.

use std::io;

use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{NodeId, TypeConfig};
use crate::cluster::messages::{ControllerRequest, ControllerResponse};

/// Larger frames are refused before anything is allocated for them. Far
/// above what the metadata log needs: openraft splits snapshots into chunks
/// and a too-large AppendEntries is retried with fewer entries.
pub(crate) const MAX_FRAME: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub(crate) enum WireError {
    #[error(transparent)]
    Io(#[from] io::Error),
    #[error("a frame of {0} bytes is over the {MAX_FRAME}-byte limit")]
    TooLarge(usize),
    #[error("a malformed frame: {0}")]
    Malformed(#[from] serde_json::Error),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Request {
    pub id: u64,
    /// The node the sender means to reach, so a node that moved to another
    /// address is not mistaken for the one that used to be there.
    pub to: NodeId,
    pub rpc: Rpc,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Rpc {
    AppendEntries(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<NodeId>),
    InstallSnapshot(InstallSnapshotRequest<TypeConfig>),
    Controller(ControllerRequest),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Response {
    pub id: u64,
    pub reply: RpcReply,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum RpcReply {
    AppendEntries(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    InstallSnapshot(
        Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>,
    ),
    Controller(ControllerResponse),
    /// A controller request reached a node that is not the active
    /// controller; it names the leader when it knows it.
    NotLeader(Option<i32>),
    /// The request was meant for another node; this is the node that answered.
    WrongNode(NodeId),
}

/// One frame, length prefix included.
pub(crate) fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, msg)?;
    let len = buf.len() - 4;
    let prefix = u32::try_from(len)
        .ok()
        .filter(|_| len <= MAX_FRAME)
        .ok_or(WireError::TooLarge(len))?;
    buf[..4].copy_from_slice(&prefix.to_be_bytes());
    Ok(buf)
}

/// Reads one frame; `None` when the peer closed the connection between frames.
pub(crate) async fn read_frame<T, R>(reader: &mut R) -> Result<Option<T>, WireError>
where
    T: DeserializeOwned,
    R: AsyncRead + Unpin,
{
    let mut prefix = [0u8; 4];
    match reader.read_exact(&mut prefix).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf).await?;
    Ok(Some(serde_json::from_slice(&buf)?))
}
