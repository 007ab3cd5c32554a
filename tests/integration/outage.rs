//! A database outage (security review, issue 13, item 12): PostgreSQL (a cluster of the test's
//! own) stopped mid-traffic and started again.
//!
//! While it is down: LLM requests of users and tokens seen before keep being served from cached
//! identities and credentials (stale-if-error, the caches' TTLs set to 1 s so they expire many
//! times over), `/readyz` answers 200 naming the database unreachable, a management write
//! answers 503 `database_unavailable` and leaves nothing behind, tokens revoked before the
//! outage stay refused (401), an unknown token cannot be checked (503). Afterwards every served
//! request has exactly one usage row. A small memory bound sends usage records to the spool file
//! during the outage; a gateway stopped during a second outage leaves its records there, and the
//! next process replays them once the database is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use byok_tests::canary;
use byok_tests::llm::LlmStandIn;
use byok_tests::pg::PgCluster;
use byok_tests::server::{Env, Resp, TestServer};
use reqwest::StatusCode;
use serde_json::json;

/// How long each outage lasts: well past the token and credential caches' 1 s TTLs.
const OUTAGE: Duration = Duration::from_secs(12);

async fn chat(s: &TestServer, token: &str) -> Resp {
    s.send(
        s.http
            .post(format!("{}/v1/chat/completions", s.base))
            .bearer_auth(token)
            .json(&json!({"model": "openai/gpt-4o-mini",
                          "messages": [{"role": "user", "content": "Hi"}]})),
    )
    .await
}

/// LLM requests sent steadily by two callers: a BYOK user (their own OpenAI key) and a free
/// user (the system default). Counts the 200s; anything else is a failure.
struct Traffic {
    served: AtomicU64,
    /// The slowest answer, in milliseconds.
    slowest_ms: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
    stop: AtomicBool,
}

impl Traffic {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            served: AtomicU64::new(0),
            slowest_ms: AtomicU64::new(0),
            failures: std::sync::Mutex::default(),
            stop: AtomicBool::new(false),
        })
    }

    fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }

    /// Sends until [`Self::halt`]; returns the task.
    fn run(
        self: &Arc<Self>,
        s: Arc<TestServer>,
        byok: String,
        free: String,
    ) -> tokio::task::JoinHandle<()> {
        self.stop.store(false, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            while !me.stop.load(Ordering::SeqCst) {
                for (token, credential) in [(&byok, "user"), (&free, "system")] {
                    let sent = Instant::now();
                    let r = chat(&s, token).await;
                    let ms = u64::try_from(sent.elapsed().as_millis()).unwrap();
                    me.slowest_ms.fetch_max(ms, Ordering::SeqCst);
                    let served_by = r
                        .headers
                        .get("x-byok-credential")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default();
                    if r.status == StatusCode::OK {
                        me.served.fetch_add(1, Ordering::SeqCst);
                        if served_by != credential {
                            me.fail(format!("served by {served_by:?}, not {credential}"));
                        }
                    } else {
                        me.fail(format!("{}: {}", r.status, r.text));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    }

    fn slowest(&self) -> Duration {
        Duration::from_millis(self.slowest_ms.swap(0, Ordering::SeqCst))
    }

    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }

    async fn halt(&self, task: tokio::task::JoinHandle<()>) {
        self.stop.store(true, Ordering::SeqCst);
        task.await.unwrap();
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "LLM requests failed ({} of them), first: {:?}",
            failures.len(),
            failures.first()
        );
    }
}

/// (rows, distinct record ids, rows without an id) in `usage_records`.
fn usage_rows(pg: &PgCluster) -> (u64, u64, u64) {
    let out = pg.psql(
        "SELECT count(*), count(DISTINCT record_id), count(*) - count(record_id) \
         FROM usage_records",
    );
    let v: Vec<u64> = out.split('|').map(|n| n.parse().unwrap()).collect();
    (v[0], v[1], v[2])
}

/// Waits until `usage_records` holds `want` rows (the writer retries with back-off of at most
/// 5 s and is woken when the database is seen back); then checks none is doubled.
async fn until_usage(pg: &PgCluster, want: u64) -> Duration {
    let start = Instant::now();
    loop {
        let (rows, distinct, without_id) = usage_rows(pg);
        assert!(
            rows <= want,
            "more usage rows ({rows}) than served requests ({want})"
        );
        if rows == want {
            assert_eq!(distinct, rows, "a usage record was stored twice");
            assert_eq!(without_id, 0);
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "usage rows: {rows}, served requests: {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("metric {name} not found"))
}

async fn metrics(s: &TestServer) -> String {
    s.call(reqwest::Method::GET, "/metrics", None, None)
        .await
        .text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_keeps_llm_traffic_and_every_usage_record() {
    let pg = PgCluster::start();
    let llm = LlmStandIn::start().await;
    let data = tempfile::tempdir().unwrap();
    let spool = data.path().join("usage-spool.jsonl");
    let mut env = Env::new(data.path(), &pg.url())
        .set("RUST_LOG", "info")
        .set("DEFAULT_LLM_API_KEY", canary::SYSTEM)
        .set("BYOK_AUTH_CACHE_TTL_SECS", "1")
        .set("BYOK_CREDENTIAL_CACHE_TTL_SECS", "1")
        .set("BYOK_STALE_IF_ERROR_SECS", "120")
        // A handful in memory: the rest of an outage's records go to the spool file.
        .set("BYOK_USAGE_MEMORY_RECORDS", "5")
        .set("BYOK_SHUTDOWN_TIMEOUT_SECS", "5");
    for id in ["OPENAI", "OPENROUTER"] {
        env = env.set(&format!("BYOK_PROVIDER_{id}_BASE_URL"), &llm.base);
    }
    let byok = env.create_user("byok@example.com", "starter");
    let free = env.create_user("free@example.com", "free");
    let s = Arc::new(TestServer::start(env.clone()));
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &byok,
            json!({"provider": "openai", "key": canary::OPENAI}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Two tokens revoked before the outage, both seen by this process while valid.
    let mut revoked = Vec::new();
    for name in ["revoked-1", "revoked-2"] {
        let r = s.post("/api/v1/tokens", &byok, json!({"name": name})).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let token = r.json["token"].as_str().unwrap().to_string();
        assert_eq!(
            s.get("/api/v1/byok/keys", &token).await.status,
            StatusCode::OK
        );
        let id = r.json["id"].as_str().unwrap();
        let r = s.delete(&format!("/api/v1/tokens/{id}"), &byok).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        revoked.push(token);
    }

    // Steady traffic, then PostgreSQL stopped under it.
    let traffic = Traffic::new();
    let task = traffic.run(s.clone(), byok.clone(), free.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = traffic.served();
    pg.stop();
    let down = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;

    let r = s.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        (r.json["status"].as_str(), r.json["database"].as_str()),
        (Some("degraded"), Some("unreachable")),
        "{}",
        r.text
    );
    // A management write: 503 with its code, nothing half-written (checked after recovery).
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &byok,
            json!({"provider": "groq", "key": canary::GROQ}),
        )
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.json["code"], "database_unavailable");
    for token in &revoked {
        let r = chat(&s, token).await;
        assert_eq!(
            r.status,
            StatusCode::UNAUTHORIZED,
            "a token revoked before the outage stays refused: {}",
            r.text
        );
    }
    // A token this process never saw cannot be checked: 503 (retry), not 401 (which would
    // tell a client holding a valid token, issued elsewhere, that it is invalid).
    let unknown = format!("byok_{}", "Z".repeat(43));
    let r = chat(&s, &unknown).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(
        r.json["error"]["code"], "database_unavailable",
        "{}",
        r.text
    );
    assert_eq!(
        r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5"),
        "a 503 database_unavailable says when to retry"
    );

    let m = metrics(&s).await;
    assert_eq!(metric(&m, "byok_database_up"), 0.0);
    for cache in ["token", "credential", "settings"] {
        let n = metric(&m, &format!("byok_stale_served_total{{cache=\"{cache}\"}}"));
        assert!(n > 0.0, "no stale {cache} answers: {n}");
    }
    assert!(metric(&m, "byok_usage_records_spooled_total") > 0.0);
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(&spool).expect("the spool file exists during the outage");
        assert!(meta.len() > 0);
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }

    tokio::time::sleep(OUTAGE.saturating_sub(down.elapsed())).await;
    let during = traffic.served() - before;
    pg.start_again();
    let up = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic.halt(task).await;
    let served = traffic.served();
    until_usage(&pg, served).await;
    println!(
        "outage 1: {during} LLM requests served during the {} s outage, {served} in all; \
         {served} usage rows, stored {:.1} s after PostgreSQL was back (traffic went on for 2 s \
         of that)",
        OUTAGE.as_secs(),
        up.elapsed().as_secs_f32(),
    );
    assert!(
        during > 100,
        "too little traffic during the outage: {during}"
    );
    assert_eq!(
        llm.count() as u64,
        served,
        "every 200 came from one upstream call"
    );
    let r = s.call(reqwest::Method::GET, "/readyz", None, None).await;
    assert_eq!(
        (r.status, r.json["database"].as_str()),
        (StatusCode::OK, Some("ok"))
    );
    // The spool is emptied right after its last batch is written (the rows can be counted
    // a moment before): wait for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut m = metrics(&s).await;
    while metric(&m, "byok_usage_spool_bytes") > 0.0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        m = metrics(&s).await;
    }
    assert_eq!(metric(&m, "byok_database_up"), 1.0);
    assert_eq!(metric(&m, "byok_usage_spool_bytes"), 0.0);
    assert!(metric(&m, "byok_usage_records_replayed_total") > 0.0);
    assert_eq!(metric(&m, "byok_usage_records_dropped"), 0.0);
    let keys = s.get("/api/v1/byok/keys", &byok).await;
    assert_eq!(keys.status, StatusCode::OK);
    assert!(
        !keys.text.contains("groq"),
        "the write refused during the outage left nothing: {}",
        keys.text
    );

    // A second outage, and the gateway stopped (SIGTERM) during it: what it could not write is
    // in the spool file when it exits; a new process cannot start without the database, and
    // the next one started after recovery replays the file.
    let task = traffic.run(s.clone(), byok.clone(), free.clone());
    tokio::time::sleep(Duration::from_secs(1)).await;
    pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    traffic.halt(task).await;
    let served = traffic.served();
    let mut s = Arc::into_inner(s).expect("the traffic task is done");
    s.terminate();
    let status = s
        .wait_exit(Duration::from_secs(20))
        .expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    let spooled = std::fs::metadata(&spool).unwrap().len();
    assert!(spooled > 0);
    assert!(
        TestServer::try_start(env.clone()).is_err(),
        "start-up needs the database (migrations)"
    );
    pg.start_again();
    let started = Instant::now();
    let s2 = TestServer::start(env.clone());
    until_usage(&pg, served).await;
    println!(
        "outage 2: {served} usage rows in all after the next process replayed {spooled} spooled \
         bytes, {:.1} s after it was started",
        started.elapsed().as_secs_f32()
    );
    let start = Instant::now();
    while std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0) > 0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the spool is not emptied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let logs = s.finish();
    assert!(logs.contains("could not write usage records"), "{logs}");
    let logs = s2.finish();
    assert!(logs.contains("the usage spool file is written"), "{logs}");
}

/// A database that hangs instead of refusing (every process of the cluster stopped with
/// SIGSTOP: connections are accepted by the kernel and never answered, as behind a partition
/// or during a failover that drops packets). Reads, `last_used_at` writes and usage inserts are
/// bounded (`DbOptions`), so LLM requests keep being served from the stale caches with every
/// answer within seconds, and the usage writer does not hang: after the thaw every served
/// request has exactly one usage row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_database_keeps_llm_traffic_fast_and_every_usage_record() {
    /// A correctness bound (no request waits for TCP's retransmission timeout), not a benchmark.
    const MAX_LATENCY: Duration = Duration::from_secs(10);
    const FREEZE: Duration = Duration::from_secs(20);
    let pg = PgCluster::start();
    let llm = LlmStandIn::start().await;
    let data = tempfile::tempdir().unwrap();
    let mut env = Env::new(data.path(), &pg.url())
        .set("RUST_LOG", "info")
        .set("DEFAULT_LLM_API_KEY", canary::SYSTEM)
        // Several TTLs fit in the freeze; each expired entry costs one bounded read per TTL.
        .set("BYOK_AUTH_CACHE_TTL_SECS", "4")
        .set("BYOK_CREDENTIAL_CACHE_TTL_SECS", "4")
        .set("BYOK_STALE_IF_ERROR_SECS", "120")
        .set("BYOK_SHUTDOWN_TIMEOUT_SECS", "5");
    for id in ["OPENAI", "OPENROUTER"] {
        env = env.set(&format!("BYOK_PROVIDER_{id}_BASE_URL"), &llm.base);
    }
    let byok = env.create_user("byok@example.com", "starter");
    let free = env.create_user("free@example.com", "free");
    let s = Arc::new(TestServer::start(env.clone()));
    let r = s
        .post(
            "/api/v1/byok/keys/add",
            &byok,
            json!({"provider": "openai", "key": canary::OPENAI}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    let traffic = Traffic::new();
    let task = traffic.run(s.clone(), byok.clone(), free.clone());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = traffic.served();
    let slowest_before = traffic.slowest();
    pg.freeze();
    let frozen = Instant::now();
    tokio::time::sleep(FREEZE).await;
    let during = traffic.served() - before;
    let slowest_during = traffic.slowest();
    let m = metrics(&s).await;
    pg.thaw();
    tokio::time::sleep(Duration::from_secs(2)).await;
    traffic.halt(task).await;
    let served = traffic.served();
    let stored_after = until_usage(&pg, served).await;
    println!(
        "freeze: {during} LLM requests served during the {} s freeze (slowest {} ms; before it \
         {} ms), {served} in all; {served} usage rows, {:.1} s after the thaw + 2 s of traffic",
        FREEZE.as_secs(),
        slowest_during.as_millis(),
        slowest_before.as_millis(),
        stored_after.as_secs_f32(),
    );
    assert!(frozen.elapsed() >= FREEZE);
    assert!(
        slowest_during < MAX_LATENCY,
        "a request took {slowest_during:?} while the database hung"
    );
    assert!(
        during > 20,
        "too little traffic during the freeze: {during}"
    );
    assert_eq!(metric(&m, "byok_database_up"), 0.0);
    for cache in ["token", "credential", "settings"] {
        let n = metric(&m, &format!("byok_stale_served_total{{cache=\"{cache}\"}}"));
        assert!(n > 0.0, "no stale {cache} answers: {n}");
    }
    assert_eq!(llm.count() as u64, served);
    let m = metrics(&s).await;
    assert_eq!(metric(&m, "byok_usage_records_dropped"), 0.0);
    drop(s);
}
