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
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::handler::{self, Reply};

/// Frames above this size are read into their own allocation.
const LARGE_FRAME: usize = 64 * 1024;

/// Responses not yet written before the reader stops reading more requests.
const MAX_IN_FLIGHT: usize = 64;

pub async fn serve(
    broker: Arc<Broker>,
    stream: TcpStream,
    peer: SocketAddr,
    cancel: CancellationToken,
) {
    // Kafka's DescribeGroups shows members' hosts as `/ADDRESS`.
    let client_host: Arc<str> = Arc::from(format!("/{}", peer.ip()));
    let (read, write) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Reply>(MAX_IN_FLIGHT);
    let writer = tokio::spawn(async move {
        // Small responses are coalesced; the buffer is flushed whenever no
        // further reply is ready, so nothing waits on a later request.
        let mut write = BufWriter::with_capacity(64 * 1024, write);
        loop {
            let reply = match rx.try_recv() {
                Ok(reply) => reply,
                Err(mpsc::error::TryRecvError::Empty) => {
                    if write.flush().await.is_err() {
                        return;
                    }
                    match rx.recv().await {
                        Some(reply) => reply,
                        None => break,
                    }
                }
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            };
            let frame = match reply {
                Reply::Now(frame) => frame,
                Reply::Later(fut) => {
                    if write.flush().await.is_err() {
                        return;
                    }
                    fut.await
                }
                Reply::Nothing => continue,
            };
            if let Err(e) = write.write_all(&frame).await {
                tracing::debug!(%peer, error = %e, "write failed; closing connection");
                return;
            }
        }
        let _ = write.flush().await;
        let _ = write.shutdown().await;
    });

    // One buffer per connection: frames are split off it and handed to the
    // handlers; once they are dropped, `reserve` reuses the same allocation.
    let mut read = read;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let max = broker.config.socket_request_max_bytes;
    'conn: loop {
        while buf.len() >= 4 {
            let len = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
            // Checked before allocating: the length prefix is the client's word.
            let Ok(len) = usize::try_from(len) else {
                tracing::warn!(%peer, len, "negative frame length; closing connection");
                break 'conn;
            };
            if len > max {
                tracing::warn!(%peer, len, max, "frame exceeds socket.request.max.bytes; closing connection");
                break 'conn;
            }
            let frame = if buf.len() >= 4 + len {
                buf.advance(4);
                buf.split_to(len).freeze()
            } else if len > LARGE_FRAME {
                // A large frame gets an allocation of exactly its size, freed
                // after dispatch, instead of growing the shared buffer (which
                // would then keep reading ahead of the handlers).
                buf.advance(4);
                let mut frame = BytesMut::with_capacity(len);
                frame.extend_from_slice(&buf.split());
                while frame.len() < len {
                    let want = (len - frame.len()) as u64;
                    match (&mut read).take(want).read_buf(&mut frame).await {
                        Ok(0) | Err(_) => break 'conn,
                        Ok(_) => {}
                    }
                }
                frame.freeze()
            } else {
                buf.reserve(4 + len - buf.len());
                break;
            };
            match handler::dispatch(&broker, &client_host, frame).await {
                Ok(reply) => {
                    if tx.send(reply).await.is_err() {
                        break 'conn;
                    }
                }
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "malformed request; closing connection");
                    break 'conn;
                }
            }
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(64 * 1024);
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            n = read.read_buf(&mut buf) => match n {
                Ok(0) | Err(_) => break, // closed by the client
                Ok(_) => {}
            },
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
