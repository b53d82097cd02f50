//! The client side of the controller port: one TCP connection per peer,
//! reused by every Raft RPC and controller request to it, reconnected after
//! an error. Replies are matched to requests by id, so a slow request does
//! not hold up the heartbeats behind it.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Timeout,
    Unreachable,
};
use openraft::network::{Backoff, RPCOption, RPCTypes, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use parking_lot::Mutex;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::wire::{self, Request, Response, Rpc, RpcReply, WireError};
use super::{NodeId, TypeConfig};

#[derive(Debug, thiserror::Error)]
pub(crate) enum CallError {
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    #[error("the connection to {0} was lost")]
    Closed(String),
    #[error("no reply from {addr} within {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("{addr} answered with {reply}")]
    Unexpected { addr: String, reply: String },
    #[error("the metadata quorum is shutting down")]
    ShutDown,
}

/// Requests waiting for their reply on one connection; `None` once the
/// connection is closed, so no request can wait on a dead connection.
struct Pending(Mutex<Option<HashMap<u64, oneshot::Sender<RpcReply>>>>);

impl Pending {
    fn insert(&self, id: u64, tx: oneshot::Sender<RpcReply>) -> bool {
        match self.0.lock().as_mut() {
            Some(map) => {
                map.insert(id, tx);
                true
            }
            None => false,
        }
    }

    fn remove(&self, id: u64) {
        if let Some(map) = self.0.lock().as_mut() {
            map.remove(&id);
        }
    }

    fn resolve(&self, id: u64, reply: RpcReply) {
        let tx = self.0.lock().as_mut().and_then(|map| map.remove(&id));
        if let Some(tx) = tx {
            // The caller may have given up (timed out); nothing to do then.
            let _ = tx.send(reply);
        }
    }

    /// Wakes every waiting request with an error.
    fn close(&self) {
        self.0.lock().take();
    }

    fn is_open(&self) -> bool {
        self.0.lock().is_some()
    }
}

struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Pending>,
    reader: tokio::task::AbortHandle,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// One remote node's controller port.
pub(crate) struct Peer {
    id: NodeId,
    addr: String,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    cancel: CancellationToken,
}

impl Peer {
    pub(crate) fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `rpc` and waits for its reply, all within `timeout`.
    pub(crate) async fn call(&self, rpc: Rpc, timeout: Duration) -> Result<RpcReply, CallError> {
        if self.cancel.is_cancelled() {
            return Err(CallError::ShutDown);
        }
        let deadline = Instant::now() + timeout;
        let timed_out = || CallError::Timeout {
            addr: self.addr.clone(),
            timeout,
        };
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = wire::encode(&Request {
            id,
            to: self.id,
            rpc,
        })?;
        let conn = tokio::time::timeout_at(deadline, self.connection())
            .await
            .map_err(|_| timed_out())??;
        let (tx, rx) = oneshot::channel();
        if !conn.pending.insert(id, tx) {
            self.forget(&conn).await;
            return Err(CallError::Closed(self.addr.clone()));
        }
        let written = tokio::time::timeout_at(deadline, async {
            conn.writer.lock().await.write_all(&frame).await
        })
        .await;
        if !matches!(written, Ok(Ok(()))) {
            // A half-written frame leaves the stream unusable.
            conn.pending.remove(id);
            self.forget(&conn).await;
            return Err(match written {
                Err(_) => timed_out(),
                Ok(_) => CallError::Closed(self.addr.clone()),
            });
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => {
                self.forget(&conn).await;
                Err(CallError::Closed(self.addr.clone()))
            }
            Err(_) => {
                conn.pending.remove(id);
                Err(timed_out())
            }
        }
    }

    async fn connection(&self) -> Result<Arc<Conn>, CallError> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| c.pending.is_open()) {
            return Ok(conn.clone());
        }
        *slot = None;
        let stream = TcpStream::connect(&self.addr)
            .await
            .map_err(|source| CallError::Connect {
                addr: self.addr.clone(),
                source,
            })?;
        // Small request/response frames: do not wait to coalesce them.
        let _ = stream.set_nodelay(true);
        let (read, write) = stream.into_split();
        let pending = Arc::new(Pending(Mutex::new(Some(HashMap::new()))));
        let reader = tokio::spawn(read_replies(
            read,
            pending.clone(),
            self.cancel.clone(),
            self.addr.clone(),
        ))
        .abort_handle();
        let conn = Arc::new(Conn {
            writer: tokio::sync::Mutex::new(write),
            pending,
            reader,
        });
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops `conn` so the next call reconnects.
    async fn forget(&self, conn: &Arc<Conn>) {
        conn.pending.close();
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }
}

async fn read_replies(
    read: OwnedReadHalf,
    pending: Arc<Pending>,
    cancel: CancellationToken,
    addr: String,
) {
    let mut reader = BufReader::new(read);
    loop {
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            frame = wire::read_frame::<Response, _>(&mut reader) => frame,
        };
        match frame {
            Ok(Some(response)) => pending.resolve(response.id, response.reply),
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%addr, error = %e, "dropping the connection to a controller port");
                break;
            }
        }
    }
    pending.close();
}

/// The connections of this node to the others, by node id.
pub(crate) struct Peers {
    from: NodeId,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    cancel: CancellationToken,
}

impl Peers {
    pub(crate) fn new(from: NodeId, cancel: CancellationToken) -> Arc<Peers> {
        Arc::new(Peers {
            from,
            peers: Mutex::new(HashMap::new()),
            cancel,
        })
    }

    /// The peer `id` at `addr`; a node that moved gets a new connection.
    pub(crate) fn peer(&self, id: NodeId, addr: &str) -> Arc<Peer> {
        let mut peers = self.peers.lock();
        if let Some(peer) = peers.get(&id).filter(|p| p.addr == addr) {
            return peer.clone();
        }
        let peer = Arc::new(Peer {
            id,
            addr: addr.to_string(),
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            cancel: self.cancel.clone(),
        });
        peers.insert(id, peer.clone());
        peer
    }

    /// Closes every connection (at shutdown).
    pub(crate) fn clear(&self) {
        self.peers.lock().clear();
    }
}

/// Hands openraft a [`Network`] per replication target.
pub(crate) struct NetworkFactory {
    pub peers: Arc<Peers>,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            from: self.peers.from,
            target,
            peer: self.peers.peer(target, &node.addr),
        }
    }
}

pub(crate) struct Network {
    from: NodeId,
    target: NodeId,
    peer: Arc<Peer>,
}

impl Network {
    fn rpc_error<E: std::error::Error>(
        &self,
        action: RPCTypes,
        timeout: Duration,
        e: CallError,
    ) -> RPCError<NodeId, BasicNode, E> {
        match e {
            CallError::Connect { .. } | CallError::ShutDown => {
                RPCError::Unreachable(Unreachable::new(&e))
            }
            CallError::Timeout { .. } => RPCError::Timeout(Timeout {
                action,
                id: self.from,
                target: self.target,
                timeout,
            }),
            _ => RPCError::Network(NetworkError::new(&e)),
        }
    }

    fn unexpected<E: std::error::Error>(&self, reply: RpcReply) -> RPCError<NodeId, BasicNode, E> {
        let e = CallError::Unexpected {
            addr: self.peer.addr().to_string(),
            reply: format!("{reply:?}"),
        };
        match reply {
            // Another node lives at that address now: back off as if the
            // target were down.
            RpcReply::WrongNode(_) => RPCError::Unreachable(Unreachable::new(&e)),
            _ => RPCError::Network(NetworkError::new(&e)),
        }
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len() as u64;
        match self
            .peer
            .call(Rpc::AppendEntries(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcReply::AppendEntries(Ok(resp))) => Ok(resp),
            Ok(RpcReply::AppendEntries(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(CallError::Wire(WireError::TooLarge(_))) if entries > 1 => Err(
                RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(entries / 2)),
            ),
            Err(e) => Err(self.rpc_error(RPCTypes::AppendEntries, option.hard_ttl(), e)),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self
            .peer
            .call(Rpc::InstallSnapshot(rpc), option.hard_ttl())
            .await
        {
            Ok(RpcReply::InstallSnapshot(Ok(resp))) => Ok(resp),
            Ok(RpcReply::InstallSnapshot(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.rpc_error(RPCTypes::InstallSnapshot, option.hard_ttl(), e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.peer.call(Rpc::Vote(rpc), option.hard_ttl()).await {
            Ok(RpcReply::Vote(Ok(resp))) => Ok(resp),
            Ok(RpcReply::Vote(Err(e))) => {
                Err(RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(self.rpc_error(RPCTypes::Vote, option.hard_ttl(), e)),
        }
    }

    fn backoff(&self) -> Backoff {
        // A restarted peer is retried soon after it is back; the default
        // (500 ms) is longer than an election timeout.
        Backoff::new(std::iter::repeat(Duration::from_millis(200)))
    }
}
