//! The controller port's accept loop. One task per connection; each request
//! is handled in its own task so a slow controller request does not hold up
//! the Raft heartbeats that share the connection. A malformed frame closes
//! the connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, Raft, RaftMetrics};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::node::{is_leader_in, leader_in};
use super::wire::{self, Request, Response, Rpc, RpcReply};
use super::{ControllerService, NodeId, TypeConfig};

/// How long requests already read may finish once the connection stops.
const DRAIN: Duration = Duration::from_secs(2);
/// Requests one connection may have in flight before reading stops.
const MAX_INFLIGHT: usize = 256;

pub(crate) struct Handler {
    pub node_id: NodeId,
    pub raft: Raft<TypeConfig>,
    pub service: Arc<dyn ControllerService>,
    pub metrics: watch::Receiver<RaftMetrics<NodeId, BasicNode>>,
}

impl Handler {
    async fn handle(&self, req: Request) -> RpcReply {
        if req.to != self.node_id {
            return RpcReply::WrongNode(self.node_id);
        }
        match req.rpc {
            Rpc::AppendEntries(rpc) => RpcReply::AppendEntries(self.raft.append_entries(rpc).await),
            Rpc::Vote(rpc) => RpcReply::Vote(self.raft.vote(rpc).await),
            Rpc::InstallSnapshot(rpc) => {
                RpcReply::InstallSnapshot(self.raft.install_snapshot(rpc).await)
            }
            Rpc::Controller(req) => {
                let (leads, leader) = {
                    let m = self.metrics.borrow();
                    (is_leader_in(&m, self.node_id), leader_in(&m))
                };
                if leads {
                    RpcReply::Controller(self.service.handle(req).await)
                } else {
                    RpcReply::NotLeader(leader)
                }
            }
        }
    }
}

/// Serves `listener` until `cancel`, then waits for the connections to end.
pub(crate) async fn serve(listener: TcpListener, handler: Arc<Handler>, cancel: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                connections.spawn(connection(stream, peer, handler.clone(), cancel.clone()));
            }
            Err(e) => {
                // Out of file descriptors, typically: pause rather than spin.
                tracing::warn!(error = %e, "controller port: accept failed");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
        }
    }
    // Stop listening before waiting, so peers see the port closed at once.
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    cancel: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    let mut writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            if write.write_all(&frame).await.is_err() {
                break;
            }
        }
    });
    let mut inflight = JoinSet::new();
    loop {
        while inflight.try_join_next().is_some() {}
        if inflight.len() >= MAX_INFLIGHT {
            // A peer that sends without reading replies is slowed down here
            // rather than growing the task set without bound.
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = inflight.join_next() => continue,
            }
        }
        let frame = tokio::select! {
            _ = cancel.cancelled() => break,
            frame = wire::read_frame::<Request, _>(&mut reader) => frame,
        };
        let req = match frame {
            Ok(Some(req)) => req,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "controller port: closing the connection");
                break;
            }
        };
        let handler = handler.clone();
        let tx = tx.clone();
        inflight.spawn(async move {
            let id = req.id;
            let reply = handler.handle(req).await;
            match wire::encode(&Response { id, reply }) {
                Ok(frame) => {
                    let _ = tx.send(frame).await;
                }
                // The caller times out; nothing else can be done for it.
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "controller port: cannot encode a reply")
                }
            }
        });
    }
    let _ = tokio::time::timeout(DRAIN, async {
        while inflight.join_next().await.is_some() {}
    })
    .await;
    inflight.shutdown().await;
    drop(tx);
    if tokio::time::timeout(DRAIN, &mut writer).await.is_err() {
        writer.abort();
    }
}
