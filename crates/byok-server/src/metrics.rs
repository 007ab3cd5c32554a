//! Prometheus metrics (`GET /metrics`, text exposition format 0.0.4).
//!
//! Labels are bounded sets only: route patterns (never raw paths), methods, status codes,
//! provider ids, credential kinds, server types and outcomes. No user id, email, token, model
//! name or key ever becomes a label. Counters on the hot path are atomics behind a label lookup;
//! the aggregate gauges (BYOK adoption, keys per provider) are computed at scrape time from the
//! database and reused for `ADOPTION_EVERY`, so a scrape every few seconds costs at most three
//! aggregate queries per `ADOPTION_EVERY`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use byok_core::ports::StatsRepository;
use byok_core::services::{CacheStats, StaleKind};
use byok_store::{Database, PoolStatus};

use crate::usage::UsageStats;

/// What a scrape reads from the running service (the caller, which owns the state, gathers it).
#[derive(Debug)]
pub struct Readings<'a> {
    pub pool: PoolStatus,
    pub token_cache: CacheStats,
    pub credential_cache: CacheStats,
    pub database_up: bool,
    pub stale_served: [(StaleKind, u64); 4],
    pub usage: &'a UsageStats,
    pub usage_dropped: u64,
    /// Requests counted locally because Redis did not answer, when Redis is configured.
    pub rate_limit_fallbacks: Option<u64>,
    /// Asked for the adoption counts when they are older than `ADOPTION_EVERY`.
    pub db: &'a Database,
}

/// How long the adoption counts read from the database are reused.
const ADOPTION_EVERY: Duration = Duration::from_secs(30);

/// Latency buckets in seconds: 0.5 ms to 10 min (LLM calls run long; the gateway's own part is
/// sub-millisecond).
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0,
];

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route pattern, method and status.
    pub http_requests: IntCounterVec,
    /// HTTP latency (until the response head) by route pattern and method.
    pub http_seconds: HistogramVec,
    /// LLM calls by provider, credential kind (`user`/`system`), stream and status.
    pub llm_requests: IntCounterVec,
    /// Whole LLM call duration (a stream: until its end) by provider and credential kind.
    pub llm_seconds: HistogramVec,
    /// Time until the provider's response head, by provider.
    pub upstream_seconds: HistogramVec,
    /// Requests that fell back from the user's key to the system default.
    pub fallbacks: IntCounter,
    /// Key tests by provider and result (`valid`/`invalid`/`error`).
    pub key_tests: IntCounterVec,
    /// Execution-server connection tests by result.
    pub server_tests: IntCounterVec,
    /// Commands run on execution servers by outcome.
    pub server_execs: IntCounterVec,
    /// Requests refused by a rate limit, by scope (`user`/`token`/`exec`).
    pub rate_limited: IntCounterVec,
    cache_requests: IntCounterVec,
    adoption: IntGaugeVec,
    keys_by_provider: IntGaugeVec,
    db_pool: IntGaugeVec,
    database_up: IntGauge,
    stale_served: IntCounterVec,
    usage_buffered: IntGauge,
    usage_spool_bytes: IntGauge,
    usage_spooled: IntCounter,
    usage_replayed: IntCounter,
    usage_write_failures: IntCounter,
    usage_dropped: IntGauge,
    rate_limit_fallbacks: IntCounter,
    adoption_at: Mutex<Option<Instant>>,
    /// One scrape at a time: counters copied from the core are set as deltas, and the adoption
    /// queries run once per `ADOPTION_EVERY` however many scrapers arrive together.
    rendering: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

type Made<T> = Result<T, prometheus::Error>;

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Made<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Made<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(BUCKETS.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn int_gauge(r: &Registry, name: &str, help: &str) -> Made<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn int_counter(r: &Registry, name: &str, help: &str) -> Made<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(r: &Registry, name: &str, help: &str, labels: &[&str]) -> Made<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

impl Metrics {
    /// Registers every metric (fails only on an invalid definition: a programming error the
    /// unit test below catches).
    pub fn new() -> Made<Self> {
        let r = Registry::new();
        let fallbacks = IntCounter::new(
            "byok_fallbacks_total",
            "LLM requests retried with the system default after the user's key failed",
        )?;
        r.register(Box::new(fallbacks.clone()))?;
        Ok(Self {
            http_requests: counter(
                &r,
                "byok_http_requests_total",
                "HTTP requests by route pattern, method and status",
                &["route", "method", "status"],
            )?,
            http_seconds: histogram(
                &r,
                "byok_http_request_duration_seconds",
                "Time until the response head, by route pattern and method",
                &["route", "method"],
            )?,
            llm_requests: counter(
                &r,
                "byok_llm_requests_total",
                "LLM calls by provider, credential kind (user = BYOK, system = default), stream and status",
                &["provider", "credential", "stream", "status"],
            )?,
            llm_seconds: histogram(
                &r,
                "byok_llm_request_duration_seconds",
                "Whole LLM call (streams until their end) by provider and credential kind",
                &["provider", "credential"],
            )?,
            upstream_seconds: histogram(
                &r,
                "byok_upstream_response_seconds",
                "Time until the provider's response head, by provider",
                &["provider"],
            )?,
            fallbacks,
            key_tests: counter(
                &r,
                "byok_key_tests_total",
                "Provider key tests by provider and result",
                &["provider", "result"],
            )?,
            server_tests: counter(
                &r,
                "byok_execution_server_tests_total",
                "Execution-server connection tests by result (success, failed, error)",
                &["result"],
            )?,
            server_execs: counter(
                &r,
                "byok_execution_server_execs_total",
                "Commands run on execution servers by outcome (completed, timed_out, rate_limited, error)",
                &["outcome"],
            )?,
            rate_limited: counter(
                &r,
                "byok_rate_limited_total",
                "Requests refused by a rate limit, by scope",
                &["scope"],
            )?,
            cache_requests: counter(
                &r,
                "byok_cache_requests_total",
                "Lookups in the in-memory caches (token checks, resolved credentials) by result",
                &["cache", "result"],
            )?,
            adoption: gauge(
                &r,
                "byok_users",
                "Users eligible for BYOK (tier starter and above) and users with at least one enabled key",
                &["kind"],
            )?,
            keys_by_provider: gauge(
                &r,
                "byok_keys",
                "Enabled stored provider keys by provider",
                &["provider"],
            )?,
            db_pool: gauge(
                &r,
                "byok_db_pool_connections",
                "Database pool: open, idle, maximum and waiting callers",
                &["state"],
            )?,
            database_up: int_gauge(
                &r,
                "byok_database_up",
                "1 when the database answers this process's health check, 0 while it does not",
            )?,
            stale_served: counter(
                &r,
                "byok_stale_served_total",
                "Cached values used because the database could not be read (stale-if-error), by cache",
                &["cache"],
            )?,
            usage_buffered: int_gauge(
                &r,
                "byok_usage_records_buffered",
                "Usage records in memory waiting for the database",
            )?,
            usage_spool_bytes: int_gauge(
                &r,
                "byok_usage_spool_bytes",
                "Size of the usage spool file (records waiting for the database on disk)",
            )?,
            usage_spooled: int_counter(
                &r,
                "byok_usage_records_spooled_total",
                "Usage records written to the spool file because the database could not take them",
            )?,
            usage_replayed: int_counter(
                &r,
                "byok_usage_records_replayed_total",
                "Usage records written to the database from the spool file",
            )?,
            usage_write_failures: int_counter(
                &r,
                "byok_usage_write_failures_total",
                "Failed attempts to write a batch of usage records (retried)",
            )?,
            usage_dropped: int_gauge(
                &r,
                "byok_usage_records_dropped",
                "Usage records dropped since start: the write queue was full, or the spool file \
                 was full or could not be written",
            )?,
            rate_limit_fallbacks: {
                let c = IntCounter::new(
                    "byok_rate_limit_fallbacks_total",
                    "Requests counted by this replica alone because Redis did not answer",
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            registry: r,
            adoption_at: Mutex::new(None),
            rendering: tokio::sync::Mutex::new(()),
        })
    }

    /// Records one HTTP request (from the request middleware).
    pub fn observe_http(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut buf = itoa::Buffer::new();
        self.http_requests
            .with_label_values(&[route, method, buf.format(status)])
            .inc();
        self.http_seconds
            .with_label_values(&[route, method])
            .observe(elapsed.as_secs_f64());
    }

    /// Records one finished LLM call.
    pub fn observe_llm(
        &self,
        provider: &str,
        credential: &str,
        stream: bool,
        status: u16,
        elapsed: Duration,
    ) {
        let mut buf = itoa::Buffer::new();
        self.llm_requests
            .with_label_values(&[
                provider,
                credential,
                if stream { "true" } else { "false" },
                buf.format(status),
            ])
            .inc();
        self.llm_seconds
            .with_label_values(&[provider, credential])
            .observe(elapsed.as_secs_f64());
    }

    /// The exposition text. Reads the pool state and cache counters now and the adoption counts
    /// from the database when older than `ADOPTION_EVERY`.
    pub async fn render(&self, r: Readings<'_>) -> String {
        let _one_at_a_time = self.rendering.lock().await;
        let pool = r.pool;
        for (label, v) in [
            ("open", pool.size),
            ("idle", pool.available),
            ("max", pool.max_size),
            ("waiting", pool.waiting),
        ] {
            self.db_pool
                .with_label_values(&[label])
                .set(i64::try_from(v).unwrap_or(i64::MAX));
        }
        for (cache, stats) in [("token", r.token_cache), ("credential", r.credential_cache)] {
            // Counters are monotonic in the core; the exported value follows them.
            for (result, n) in [("hit", stats.hits), ("miss", stats.misses)] {
                let c = self.cache_requests.with_label_values(&[cache, result]);
                c.inc_by(n.saturating_sub(c.get()));
            }
        }
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.database_up.set(i64::from(r.database_up));
        for (kind, count) in r.stale_served {
            let c = self.stale_served.with_label_values(&[kind.as_str()]);
            c.inc_by(count.saturating_sub(c.get()));
        }
        let usage = r.usage;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        self.usage_buffered.set(n(load(&usage.buffered)));
        self.usage_spool_bytes.set(n(load(&usage.spool_bytes)));
        for (c, v) in [
            (&self.usage_spooled, load(&usage.spooled)),
            (&self.usage_replayed, load(&usage.replayed)),
            (&self.usage_write_failures, load(&usage.write_failures)),
        ] {
            c.inc_by(v.saturating_sub(c.get()));
        }
        self.usage_dropped.set(n(r.usage_dropped));
        if let Some(fallbacks) = r.rate_limit_fallbacks {
            let c = &self.rate_limit_fallbacks;
            c.inc_by(fallbacks.saturating_sub(c.get()));
        }
        let due = self
            .adoption_at
            .lock()
            .map(|at| at.is_none_or(|t| t.elapsed() >= ADOPTION_EVERY))
            .unwrap_or(true);
        if due {
            // Claimed before the queries: a failing database is asked again only after
            // `ADOPTION_EVERY`, not by every scrape.
            if let Ok(mut at) = self.adoption_at.lock() {
                *at = Some(Instant::now());
            }
            match r.db.adoption_stats().await {
                Ok(s) => {
                    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
                    self.adoption
                        .with_label_values(&["eligible"])
                        .set(n(s.eligible_users));
                    self.adoption
                        .with_label_values(&["with_keys"])
                        .set(n(s.users_with_keys));
                    self.keys_by_provider.reset();
                    for (provider, count) in &s.keys_by_provider {
                        // Provider ids come from the catalogue (a closed set) via validation.
                        self.keys_by_provider
                            .with_label_values(&[provider.as_str()])
                            .set(n(*count));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "metrics: adoption counts unavailable"),
            }
        }
        let mut out = Vec::with_capacity(16 * 1024);
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "metrics: encoding failed");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_are_valid_and_render() {
        let m = Metrics::new().unwrap();
        m.observe_http("/v1/messages", "POST", 200, Duration::from_millis(3));
        m.observe_llm("openai", "user", false, 200, Duration::from_millis(40));
        m.fallbacks.inc();
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&m.registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains(
            "byok_http_requests_total{method=\"POST\",route=\"/v1/messages\",status=\"200\"} 1"
        ));
        assert!(text.contains("byok_fallbacks_total 1"));
        assert!(text.contains("byok_llm_request_duration_seconds_bucket"));
    }
}
