//! Group commit: a single task fsyncs on behalf of every waiting producer.
//!
//! Producers with acks=all append under the partition lock, then ask the
//! flusher to make their partition durable. The flusher takes every request
//! queued meanwhile, collects each partition's unsynced files once, runs the
//! fdatasyncs on a blocking thread without holding any partition lock, and
//! answers all of them. While one pass runs the next group gathers, so one
//! fsync covers every batch that arrived meanwhile, across partitions.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::partition::Partition;

/// Why a flush failed; the log is poisoned and refuses further writes.
#[derive(Clone, Debug, thiserror::Error)]
#[error("fsync failed: {0}")]
pub struct FlushError(pub Arc<str>);

struct Request {
    partition: Arc<Partition>,
    done: Option<oneshot::Sender<Result<(), FlushError>>>,
}

/// Handle to the group-commit task.
#[derive(Clone)]
pub struct Flusher {
    tx: mpsc::UnboundedSender<Request>,
}

impl Flusher {
    /// Starts the flusher task on the current runtime. It ends when every
    /// handle is dropped.
    pub fn start() -> Flusher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(rx));
        Flusher { tx }
    }

    /// Makes everything appended to `partition` so far durable. The request
    /// is queued at once; the returned future waits for its group commit.
    pub fn flush(
        &self,
        partition: Arc<Partition>,
    ) -> impl std::future::Future<Output = Result<(), FlushError>> + Send + 'static {
        let (done, wait) = oneshot::channel();
        let sent = self.tx.send(Request {
            partition,
            done: Some(done),
        });
        async move {
            sent.map_err(|_| FlushError("broker is shutting down".into()))?;
            wait.await
                .map_err(|_| FlushError("broker is shutting down".into()))?
        }
    }

    /// Schedules a flush without waiting for it (flush.messages / flush.ms).
    pub fn flush_in_background(&self, partition: Arc<Partition>) {
        let _ = self.tx.send(Request {
            partition,
            done: None,
        });
    }
}

async fn run(mut rx: mpsc::UnboundedReceiver<Request>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while let Ok(r) = rx.try_recv() {
            group.push(r);
        }
        // One sync per partition, however many producers wait on it.
        let mut unique: HashMap<usize, Arc<Partition>> = HashMap::new();
        for r in &group {
            unique
                .entry(Arc::as_ptr(&r.partition) as usize)
                .or_insert_with(|| r.partition.clone());
        }
        let targets: Vec<_> = unique
            .into_values()
            .map(|p| {
                let target = p.with_log(|log| log.sync_target());
                (p, target)
            })
            .collect();
        // One blocking task per partition, run concurrently: ext4 folds
        // concurrent fdatasyncs into one journal commit, so a group costs
        // about one disk flush rather than one per partition.
        let tasks: Vec<_> = targets
            .into_iter()
            .map(|(p, target)| {
                tokio::task::spawn_blocking(move || {
                    let result = target.sync();
                    (p, target, result)
                })
            })
            .collect();
        let mut synced = Ok(Vec::with_capacity(tasks.len()));
        for t in tasks {
            match (t.await, &mut synced) {
                (Ok(r), Ok(done)) => done.push(r),
                (Err(e), Ok(_)) => synced = Err(e),
                (_, Err(_)) => {}
            }
        }
        let mut outcome: HashMap<usize, Result<(), FlushError>> = HashMap::new();
        match synced {
            Ok(synced) => {
                for (p, target, result) in synced {
                    let r = match result {
                        Ok(()) => {
                            p.with_log(|log| log.mark_flushed(target.end_offset()));
                            Ok(())
                        }
                        Err(e) => {
                            tracing::error!(partition = %p.dir().display(), error = %e, "fsync failed; the partition refuses further writes");
                            let msg: Arc<str> = Arc::from(e.to_string());
                            p.with_log(|log| log.poison(e));
                            Err(FlushError(msg))
                        }
                    };
                    outcome.insert(Arc::as_ptr(&p) as usize, r);
                }
            }
            Err(e) => {
                let msg: Arc<str> = Arc::from(format!("flush thread failed: {e}"));
                for r in &group {
                    outcome.insert(
                        Arc::as_ptr(&r.partition) as usize,
                        Err(FlushError(msg.clone())),
                    );
                }
            }
        }
        for r in group {
            if let Some(done) = r.done {
                let result = outcome
                    .get(&(Arc::as_ptr(&r.partition) as usize))
                    .cloned()
                    .unwrap_or(Ok(()));
                let _ = done.send(result);
            }
        }
    }
}
