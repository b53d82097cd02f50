//! One client connection: framing, dispatch, and in-order responses.
//!
//! The reader handles requests one after another, so everything a request
//! changes (appends, topic creation) happens in the order the client sent
//! them. A handler may hand back a response that is not ready yet (a produce
//! waiting for fsync, a fetch waiting for data); the reader goes on with the
//! next request while the writer sends responses strictly in request order.
//! That pipelining is what lets one producer connection keep the disk busy.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::handler::{self, Reply};

/// Responses not yet written before the reader stops reading more requests.
const MAX_IN_FLIGHT: usize = 64;

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        while let Some(reply) = rx.recv().await {
            let frame = match reply {
                Reply::Now(frame) => frame,
                Reply::Later(fut) => fut.await,
                Reply::Nothing => continue,
            };
            if let Err(e) = write.write_all(&frame).await {
                tracing::debug!(%peer, error = %e, "write failed; closing connection");
                return;
            }
        }
        let _ = write.shutdown().await;
    });

    let mut reader = BufReader::with_capacity(64 * 1024, read);
    let max = broker.config.socket_request_max_bytes;
    loop {
        let len = tokio::select! {
            _ = cancel.cancelled() => break,
            len = reader.read_i32() => match len {
                Ok(len) => len,
                Err(_) => break, // closed by the client
            },
        };
        // Checked before allocating: the length prefix is the client's word.
        let Ok(len) = usize::try_from(len) else {
            tracing::warn!(%peer, len, "negative frame length; closing connection");
            break;
        };
        if len > max {
            tracing::warn!(%peer, len, max, "frame exceeds socket.request.max.bytes; closing connection");
            break;
        }
        let mut buf = BytesMut::zeroed(len);
        if reader.read_exact(&mut buf).await.is_err() {
            break;
        }
        match handler::dispatch(&broker, buf.freeze()).await {
            Ok(reply) => {
                if tx.send(reply).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(%peer, error = %e, "malformed request; closing connection");
                break;
            }
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// Reads the correlation id of a frame without decoding the header.
pub fn correlation_id(frame: &[u8]) -> Option<i32> {
    let mut b = frame.get(4..8)?;
    Some(b.get_i32())
}
