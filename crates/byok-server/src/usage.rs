//! Usage recording off the hot path: a bounded channel and a batching writer task.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use byok_core::UsageRecord;
use byok_core::ports::{UsageRepository, UsageSink};
use tokio::sync::mpsc;

/// Records waiting to be written; beyond this the newest are dropped (and counted).
const QUEUE: usize = 65_536;
const BATCH: usize = 512;
/// How often the queue is drained (the most a record waits before it is written).
const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The sink handlers use: `try_send`, never waiting.
#[derive(Debug)]
pub struct UsageRecorder {
    tx: mpsc::Sender<UsageRecord>,
    dropped: AtomicU64,
}

impl UsageSink for UsageRecorder {
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn record(&self, record: UsageRecord) {
        if self.tx.try_send(record).is_err() {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(dropped = n, "usage queue full; usage records dropped");
            }
        }
    }
}

/// The writer task, for a last flush at shutdown.
#[derive(Debug)]
pub struct UsageWriter {
    stop: Arc<tokio::sync::Notify>,
    task: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl UsageWriter {
    /// Writes what is queued and stops the writer; gives up after `deadline` (the records
    /// still queued are then lost, and counted in the log line).
    pub async fn flush_and_stop(&self, deadline: Duration) {
        let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        self.stop.notify_one();
        if tokio::time::timeout(deadline, task).await.is_err() {
            tracing::warn!("usage records not all written before the shutdown deadline");
        }
    }
}

/// Starts the writer on the current runtime. It drains the queue every `FLUSH_EVERY`, and a
/// last time when [`UsageWriter::flush_and_stop`] is called (graceful shutdown).
///
/// The writer drains the queue on a timer instead of waiting on it: a waiting receiver would be
/// woken by every request (a cross-thread wake-up per LLM call); this way a request's only cost
/// is the queue push, and records reach the database within `FLUSH_EVERY`.
pub fn start(repo: Arc<dyn UsageRepository>) -> (Arc<UsageRecorder>, Arc<UsageWriter>) {
    let (tx, mut rx) = mpsc::channel::<UsageRecord>(QUEUE);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stopped = stop.clone();
    let handle = tokio::spawn(async move {
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                () = stopped.notified() => true,
            };
            let closed = loop {
                match rx.try_recv() {
                    Ok(r) => {
                        batch.push(r);
                        if batch.len() >= BATCH {
                            write(repo.as_ref(), &mut batch).await;
                        }
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break false,
                    Err(mpsc::error::TryRecvError::Disconnected) => break true,
                }
            };
            write(repo.as_ref(), &mut batch).await;
            if closed || last {
                break;
            }
        }
    });
    (
        Arc::new(UsageRecorder {
            tx,
            dropped: AtomicU64::new(0),
        }),
        Arc::new(UsageWriter {
            stop,
            task: std::sync::Mutex::new(Some(handle)),
        }),
    )
}

async fn write(repo: &dyn UsageRepository, batch: &mut Vec<UsageRecord>) {
    if batch.is_empty() {
        return;
    }
    if let Err(e) = repo.insert_usage(batch).await {
        tracing::warn!(error = %e, records = batch.len(), "could not write usage records");
    }
    batch.clear();
}
