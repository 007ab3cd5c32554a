//! Usage recording off the hot path: a bounded channel and a batching writer task that keeps
//! what the database cannot take (bounded memory, then a spool file) and writes it after
//! recovery.
//!
//! A record's way: the handler calls [`UsageRecorder::record`] (`try_send`: the request never
//! waits) → the channel (`QUEUE`) → the writer task, which every `FLUSH_EVERY` moves the channel
//! into its buffer and writes the buffer in batches of `BATCH`. A batch that fails stays in the
//! buffer and is retried with back-off (`RETRY_FIRST` doubling to `RETRY_MAX`, and at once when
//! the database health check sees the database back). Beyond `BYOK_USAGE_MEMORY_RECORDS`
//! buffered records the oldest go to the spool file (see [`spool`]), up to
//! `BYOK_USAGE_SPOOL_MAX_MB`; only beyond that are records dropped (and counted). Once the
//! buffer is written the spool is replayed and emptied; a spool left by an earlier process is
//! replayed after start. At shutdown, what cannot be written within `STOP_BUDGET` is spooled.
//!
//! Every record carries the id made when its request was served, and the store skips ids it
//! already has: a batch whose commit was not acknowledged (or a spool replayed twice) is
//! written again safely, and stored once.

pub mod spool;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use byok_core::ports::{UsageRepository, UsageSink};
use byok_core::{StoreError, UsageRecord};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::db_health::DbHealth;

/// Records waiting in the channel; beyond this the newest are dropped (and counted).
const QUEUE: usize = 65_536;
const BATCH: usize = 512;
/// How often the queue is drained (the most a record waits before it is written).
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// Back-off after a failed write: first wait, and the longest.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Spool batches replayed per tick (the channel is drained in between).
const REPLAY_BATCHES_PER_TICK: usize = 16;
/// At shutdown: how long the buffer may take to reach the database before it is spooled.
const STOP_BUDGET: Duration = Duration::from_secs(5);

/// Where and how much the writer keeps while the database cannot take records.
#[derive(Debug, Clone)]
pub struct UsageOptions {
    /// Unwritten records kept in memory (`BYOK_USAGE_MEMORY_RECORDS`).
    pub memory_records: usize,
    /// `$BYOK_DATA_DIR/usage-spool.jsonl`.
    pub spool_path: PathBuf,
    /// Largest spool file (`BYOK_USAGE_SPOOL_MAX_MB`).
    pub spool_max_bytes: u64,
}

impl UsageOptions {
    pub fn in_dir(data_dir: &std::path::Path) -> Self {
        Self {
            memory_records: 50_000,
            spool_path: spool::path_in(data_dir),
            spool_max_bytes: 1 << 30,
        }
    }
}

/// The writer's counters (exported as metrics).
#[derive(Debug, Default)]
pub struct UsageStats {
    /// Records in memory waiting to be written (gauge).
    pub buffered: AtomicU64,
    /// Records appended to the spool file since start.
    pub spooled: AtomicU64,
    /// Records written from the spool file since start.
    pub replayed: AtomicU64,
    /// The spool file's size in bytes (gauge).
    pub spool_bytes: AtomicU64,
    /// Records lost after the channel: the spool was full or could not be written, a spooled
    /// line could not be read, or the database refused a record that others around it passed.
    pub lost: AtomicU64,
    /// Failed write attempts since start.
    pub write_failures: AtomicU64,
}

/// The sink handlers use: `try_send`, never waiting.
#[derive(Debug)]
pub struct UsageRecorder {
    tx: mpsc::Sender<UsageRecord>,
    dropped: AtomicU64,
    stats: Arc<UsageStats>,
}

impl UsageSink for UsageRecorder {
    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed) + self.stats.lost.load(Ordering::Relaxed)
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
    stats: Arc<UsageStats>,
    replay: Arc<AtomicBool>,
}

impl UsageWriter {
    /// Writes what is queued and stops the writer; what the database does not take within
    /// `STOP_BUDGET` goes to the spool file. Gives up after `deadline` (records still in memory
    /// are then lost, and the log says so).
    pub async fn flush_and_stop(&self, deadline: Duration) {
        let Some(task) = self.task.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        self.stop.notify_one();
        if tokio::time::timeout(deadline, task).await.is_err() {
            tracing::warn!("usage records not all written before the shutdown deadline");
        }
    }

    pub fn stats(&self) -> &UsageStats {
        &self.stats
    }

    /// Replays a spool file left by an earlier process (serving processes only: a CLI run
    /// leaves it to the server).
    pub fn replay_spool(&self) {
        self.replay.store(true, Ordering::Relaxed);
    }
}

/// Starts the writer on the current runtime. It drains the queue every `FLUSH_EVERY`, and a
/// last time when [`UsageWriter::flush_and_stop`] is called (graceful shutdown).
///
/// The writer drains the queue on a timer instead of waiting on it: a waiting receiver would be
/// woken by every request (a cross-thread wake-up per LLM call); this way a request's only cost
/// is the queue push, and records reach the database within `FLUSH_EVERY`.
pub fn start(
    repo: Arc<dyn UsageRepository>,
    options: UsageOptions,
    health: Arc<DbHealth>,
) -> (Arc<UsageRecorder>, Arc<UsageWriter>) {
    let (tx, rx) = mpsc::channel::<UsageRecord>(QUEUE);
    let stop = Arc::new(tokio::sync::Notify::new());
    let stats = Arc::new(UsageStats::default());
    let replay = Arc::new(AtomicBool::new(false));
    stats
        .spool_bytes
        .store(spool::size(&options.spool_path), Ordering::Relaxed);
    let writer = Writer {
        spool_lock: None,
        lock_tried: None,
        repo,
        rx,
        buffer: VecDeque::new(),
        options,
        stats: stats.clone(),
        replay: replay.clone(),
        spool_offset: 0,
        retry_at: None,
        backoff: RETRY_FIRST,
        announced: false,
    };
    let handle = tokio::spawn(writer.run(stop.clone(), health));
    (
        Arc::new(UsageRecorder {
            tx,
            dropped: AtomicU64::new(0),
            stats: stats.clone(),
        }),
        Arc::new(UsageWriter {
            stop,
            task: std::sync::Mutex::new(Some(handle)),
            stats,
            replay,
        }),
    )
}

struct Writer {
    /// The lock that makes the spool this process's, taken when first needed; while another
    /// process holds it, no spool (memory only), and it is tried again every `LOCK_RETRY`.
    spool_lock: Option<std::fs::File>,
    lock_tried: Option<Instant>,
    repo: Arc<dyn UsageRepository>,
    rx: mpsc::Receiver<UsageRecord>,
    /// Records taken from the channel and not yet written, oldest first.
    buffer: VecDeque<UsageRecord>,
    options: UsageOptions,
    stats: Arc<UsageStats>,
    replay: Arc<AtomicBool>,
    /// Where the spool replay goes on (the file's start after a restart: records replayed
    /// twice are skipped by the store).
    spool_offset: u64,
    /// Set while writes fail: no write before then.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Whether the current failure was logged.
    announced: bool,
}

/// How a write went.
enum Written {
    /// Stored (or skipped as already stored; or refused for good, counted as lost).
    Done,
    /// Not stored: keep the records and retry later.
    Retry,
}

impl Writer {
    async fn run(mut self, stop: Arc<tokio::sync::Notify>, health: Arc<DbHealth>) {
        let mut tick = tokio::time::interval(FLUSH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let last = tokio::select! {
                _ = tick.tick() => false,
                () = stop.notified() => true,
                () = health.back() => {
                    self.retry_at = None;
                    false
                }
            };
            let closed = self.drain();
            if last || closed {
                self.finish().await;
                break;
            }
            self.write_buffer().await;
            self.overflow().await;
            self.replay_spool().await;
        }
    }

    /// Moves the channel into the buffer; true when every sender is gone.
    fn drain(&mut self) -> bool {
        let closed = loop {
            match self.rx.try_recv() {
                Ok(r) => self.buffer.push_back(r),
                Err(mpsc::error::TryRecvError::Empty) => break false,
                Err(mpsc::error::TryRecvError::Disconnected) => break true,
            }
        };
        self.gauge();
        closed
    }

    fn gauge(&self) {
        self.stats
            .buffered
            .store(self.buffer.len() as u64, Ordering::Relaxed);
    }

    fn due(&self) -> bool {
        self.retry_at.is_none_or(|at| Instant::now() >= at)
    }

    /// Writes the buffer in batches, unless a failure's back-off runs.
    async fn write_buffer(&mut self) {
        while !self.buffer.is_empty() && self.due() {
            let n = self.buffer.len().min(BATCH);
            let batch: Vec<UsageRecord> = self.buffer.iter().take(n).cloned().collect();
            match self.write(&batch).await {
                Written::Done => {
                    self.buffer.drain(..n);
                }
                Written::Retry => break,
            }
        }
        self.gauge();
    }

    /// Beyond the memory bound, the oldest records go to the spool file.
    async fn overflow(&mut self) {
        if self.buffer.len() <= self.options.memory_records {
            return;
        }
        let excess = self.buffer.len() - self.options.memory_records;
        let moved: Vec<UsageRecord> = self.buffer.drain(..excess).collect();
        self.gauge();
        self.spool(moved).await;
    }

    /// Whether this process has the spool: the first call takes its lock (another process
    /// sharing the data directory would wipe or skip this one's records).
    fn has_spool(&mut self) -> bool {
        const LOCK_RETRY: Duration = Duration::from_secs(10);
        if self.spool_lock.is_none() && self.lock_tried.is_none_or(|t| t.elapsed() >= LOCK_RETRY) {
            let first = self.lock_tried.is_none();
            self.lock_tried = Some(Instant::now());
            self.spool_lock = spool::take(&self.options.spool_path);
            if self.spool_lock.is_none() && first {
                tracing::error!(
                    path = %self.options.spool_path.display(),
                    "another process holds the usage spool of this data directory (or it \
                     cannot be opened): records the database cannot take are kept in memory \
                     only; give each process its own BYOK_DATA_DIR"
                );
            }
        }
        self.spool_lock.is_some()
    }

    async fn spool(&mut self, records: Vec<UsageRecord>) {
        if records.is_empty() {
            return;
        }
        let path = self.options.spool_path.clone();
        let max = self.options.spool_max_bytes;
        let n = records.len() as u64;
        let appended = if !self.has_spool() {
            spool::Appended {
                lost: n,
                ..spool::Appended::default()
            }
        } else {
            tokio::task::spawn_blocking(move || spool::append(&path, max, &records))
                .await
                .unwrap_or(spool::Appended {
                    lost: n,
                    ..spool::Appended::default()
                })
        };
        self.stats
            .spooled
            .fetch_add(appended.written, Ordering::Relaxed);
        self.stats
            .spool_bytes
            .store(appended.size, Ordering::Relaxed);
        if appended.lost > 0 {
            let before = self.stats.lost.fetch_add(appended.lost, Ordering::Relaxed);
            let after = before + appended.lost;
            // Logged when the count passes a power of two, not on every tick.
            if before == 0 || after.ilog2() > before.ilog2() {
                tracing::error!(
                    lost = after,
                    max_bytes = max,
                    "the usage spool file is full or cannot be written; usage records dropped"
                );
            }
        }
    }

    /// Replays the spool file once the buffer is written.
    async fn replay_spool(&mut self) {
        if !self.replay.load(Ordering::Relaxed)
            || !self.has_spool()
            || !self.buffer.is_empty()
            || !self.due()
            || self.stats.spool_bytes.load(Ordering::Relaxed) == 0
        {
            return;
        }
        for _ in 0..REPLAY_BATCHES_PER_TICK {
            let path = self.options.spool_path.clone();
            let from = self.spool_offset;
            let chunk =
                match tokio::task::spawn_blocking(move || spool::read(&path, from, BATCH)).await {
                    Ok(Ok(chunk)) => chunk,
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "cannot read the usage spool file");
                        self.failed_for(RETRY_MAX);
                        return;
                    }
                    Err(_) => return,
                };
            if chunk.unreadable > 0 {
                self.stats
                    .lost
                    .fetch_add(chunk.unreadable, Ordering::Relaxed);
                tracing::warn!(
                    lines = chunk.unreadable,
                    "skipped unreadable lines of the usage spool file"
                );
            }
            if chunk.records.is_empty() {
                self.spool_replayed(chunk.next).await;
                return;
            }
            match self.write(&chunk.records).await {
                Written::Done => {
                    self.spool_offset = chunk.next;
                    self.stats
                        .replayed
                        .fetch_add(chunk.records.len() as u64, Ordering::Relaxed);
                }
                Written::Retry => return,
            }
        }
    }

    /// Everything up to `upto` is written: empty the file.
    async fn spool_replayed(&mut self, upto: u64) {
        let path = self.options.spool_path.clone();
        match tokio::task::spawn_blocking(move || spool::finish(&path, upto)).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    replayed = self.stats.replayed.load(Ordering::Relaxed),
                    "the usage spool file is written to the database and emptied"
                );
                self.spool_offset = 0;
                self.stats.spool_bytes.store(0, Ordering::Relaxed);
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot empty the usage spool file");
                self.failed_for(RETRY_MAX);
            }
            Err(_) => {}
        }
    }

    /// Writes `records`. A batch the database refuses while it answers (not a connection
    /// failure) is written record by record, so one record it can never take does not hold up
    /// the rest: such a record is dropped (and counted) only when others were written.
    async fn write(&mut self, records: &[UsageRecord]) -> Written {
        let error = match self.repo.insert_usage(records).await {
            Ok(()) => {
                self.succeeded();
                return Written::Done;
            }
            Err(e) => e,
        };
        if matches!(error, StoreError::Unavailable(_)) || records.len() == 1 {
            self.failed(&error, records.len());
            return Written::Retry;
        }
        let mut refused = Vec::new();
        let mut stored = 0usize;
        for r in records {
            match self.repo.insert_usage(std::slice::from_ref(r)).await {
                Ok(()) => stored += 1,
                Err(StoreError::Unavailable(_)) => {
                    self.failed(&error, records.len());
                    return Written::Retry;
                }
                Err(e) => refused.push((r.id, e)),
            }
        }
        if stored == 0 {
            self.failed(&error, records.len());
            return Written::Retry;
        }
        for (id, e) in &refused {
            tracing::error!(error = %e, record_id = %id, "the database refused a usage record; dropped");
        }
        self.stats
            .lost
            .fetch_add(refused.len() as u64, Ordering::Relaxed);
        self.succeeded();
        Written::Done
    }

    fn succeeded(&mut self) {
        if self.announced {
            tracing::info!("usage records are written again");
        }
        self.announced = false;
        self.retry_at = None;
        self.backoff = RETRY_FIRST;
    }

    fn failed(&mut self, error: &StoreError, records: usize) {
        self.stats.write_failures.fetch_add(1, Ordering::Relaxed);
        if !self.announced {
            self.announced = true;
            tracing::warn!(
                error = %crate::error::error_chain(error),
                records,
                memory_records = self.options.memory_records,
                spool = %self.options.spool_path.display(),
                "could not write usage records; they are kept (in memory, then in the spool \
                 file) and written when the database answers"
            );
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(RETRY_MAX);
        self.failed_for(wait);
    }

    fn failed_for(&mut self, wait: Duration) {
        self.retry_at = Some(Instant::now() + wait);
    }

    /// Shutdown: write what the database takes within `STOP_BUDGET`, spool the rest.
    async fn finish(&mut self) {
        if !self.buffer.is_empty() && self.retry_at.is_none() {
            let _ = tokio::time::timeout(STOP_BUDGET, self.write_buffer()).await;
        }
        if !self.buffer.is_empty() {
            let rest: Vec<UsageRecord> = self.buffer.drain(..).collect();
            let n = rest.len();
            self.spool(rest).await;
            tracing::info!(
                records = n,
                spool = %self.options.spool_path.display(),
                "usage records the database did not take before shutdown are in the spool file"
            );
        }
        self.gauge();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;
    use byok_core::{CredentialKind, ProviderId, UsageSummary, UserId};
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// A store that can be switched off, and that may apply a batch yet report a failure (a
    /// lost commit acknowledgement).
    #[derive(Default)]
    struct Flaky {
        rows: Mutex<Vec<UsageRecord>>,
        down: AtomicBool,
        lose_ack: AtomicBool,
    }

    #[async_trait]
    impl UsageRepository for Flaky {
        async fn insert_usage(&self, records: &[UsageRecord]) -> Result<(), StoreError> {
            if self.down.load(Ordering::Relaxed) {
                return Err(StoreError::Unavailable("down".into()));
            }
            let mut rows = self.rows.lock().unwrap();
            let seen: HashSet<_> = rows.iter().map(|r| r.id).collect();
            rows.extend(records.iter().filter(|r| !seen.contains(&r.id)).cloned());
            if self.lose_ack.swap(false, Ordering::Relaxed) {
                return Err(StoreError::Unavailable("ack lost".into()));
            }
            Ok(())
        }
        async fn usage_summary(&self, _: UserId) -> Result<UsageSummary, StoreError> {
            Ok(UsageSummary::default())
        }
        async fn usage_daily(
            &self,
            _: UserId,
            _: chrono::NaiveDate,
        ) -> Result<Vec<byok_core::DailyUsage>, StoreError> {
            Ok(Vec::new())
        }
    }

    fn rec() -> UsageRecord {
        UsageRecord {
            id: uuid::Uuid::now_v7(),
            user_id: UserId::new_random(),
            provider: ProviderId::Openai,
            model: "m".into(),
            credential: CredentialKind::System,
            status: 200,
            input_tokens: 1,
            output_tokens: 1,
            latency_ms: 1,
            at: chrono::Utc::now(),
            fallback: false,
        }
    }

    async fn until(mut check: impl FnMut() -> bool) {
        for _ in 0..400 {
            if check() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test]
    async fn an_outage_loses_nothing_and_doubles_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Flaky::default());
        let options = UsageOptions {
            memory_records: 10,
            ..UsageOptions::in_dir(dir.path())
        };
        let spool_path = options.spool_path.clone();
        let (sink, writer) = start(store.clone(), options, Arc::new(DbHealth::new()));
        writer.replay_spool();
        store.down.store(true, Ordering::Relaxed);
        let sent: Vec<UsageRecord> = (0..100).map(|_| rec()).collect();
        for r in &sent {
            sink.record(r.clone());
        }
        until(|| writer.stats().spooled.load(Ordering::Relaxed) >= 90).await;
        assert!(spool::size(&spool_path) > 0);
        assert!(store.rows.lock().unwrap().is_empty());
        // Back, but the first commit's acknowledgement is lost: written again, stored once.
        store.lose_ack.store(true, Ordering::Relaxed);
        store.down.store(false, Ordering::Relaxed);
        until(|| store.rows.lock().unwrap().len() == 100 && spool::size(&spool_path) == 0).await;
        writer.flush_and_stop(Duration::from_secs(5)).await;
        let rows = store.rows.lock().unwrap();
        let ids: HashSet<_> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids.len(), 100);
        assert!(sent.iter().all(|r| ids.contains(&r.id)));
        assert_eq!(sink.dropped(), 0);
    }

    #[tokio::test]
    async fn shutdown_during_an_outage_spools_and_the_next_start_replays() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Flaky::default());
        store.down.store(true, Ordering::Relaxed);
        let options = UsageOptions::in_dir(dir.path());
        let (sink, writer) = start(store.clone(), options.clone(), Arc::new(DbHealth::new()));
        for _ in 0..7 {
            sink.record(rec());
        }
        writer.flush_and_stop(Duration::from_secs(10)).await;
        assert_eq!(
            spool::read(&options.spool_path, 0, 100)
                .unwrap()
                .records
                .len(),
            7
        );
        store.down.store(false, Ordering::Relaxed);
        let (_sink, writer) = start(store.clone(), options.clone(), Arc::new(DbHealth::new()));
        writer.replay_spool();
        until(|| store.rows.lock().unwrap().len() == 7).await;
        until(|| spool::size(&options.spool_path) == 0).await;
        writer.flush_and_stop(Duration::from_secs(5)).await;
    }
}
