//! Usage recording off the hot path: a bounded channel and a batching writer task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use byok_core::UsageRecord;
use byok_core::ports::{UsageRepository, UsageSink};
use tokio::sync::mpsc;

/// Records waiting to be written; beyond this the newest are dropped (and counted).
const QUEUE: usize = 10_000;
const BATCH: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The sink handlers use: `try_send`, never waiting.
#[derive(Debug)]
pub struct UsageRecorder {
    tx: mpsc::Sender<UsageRecord>,
    dropped: AtomicU64,
}

impl UsageSink for UsageRecorder {
    fn record(&self, record: UsageRecord) {
        if self.tx.try_send(record).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "usage queue full; usage records dropped");
            }
        }
    }
}

/// Starts the writer on the current runtime; it ends (after a last flush) when every
/// recorder handle is dropped.
pub fn start(repo: Arc<dyn UsageRepository>) -> (Arc<UsageRecorder>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<UsageRecord>(QUEUE);
    let handle = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            let first = rx.recv().await;
            let Some(first) = first else { break };
            batch.push(first);
            let deadline = tokio::time::sleep(FLUSH_EVERY);
            tokio::pin!(deadline);
            while batch.len() < BATCH {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => batch.push(r),
                        None => break,
                    },
                    () = &mut deadline => break,
                }
            }
            if let Err(e) = repo.insert_usage(&batch).await {
                tracing::warn!(error = %e, records = batch.len(), "could not write usage records");
            }
            batch.clear();
        }
    });
    (
        Arc::new(UsageRecorder {
            tx,
            dropped: AtomicU64::new(0),
        }),
        handle,
    )
}
