//! The console's pages under a full account: how long each takes to answer and how much it
//! weighs, for a signed-in operator holding a key for every provider, 50 execution servers,
//! 21 gateway tokens and 30 days of usage, in a database of 100 users with keys and usage.
//!
//! The 30 days of usage go in as the gateway's own usage spool file (the documented JSON-lines
//! format, `$BYOK_DATA_DIR/usage-spool.jsonl`), which the gateway replays at start through its
//! usage writer: the records and the daily totals the pages read are written exactly as served
//! requests write them. Everything else is made through the JSON API.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Conn;
use crate::suite::{cli, created, machine, serve, write_raw, write_section};

/// Settings of the pages scenario.
#[derive(Debug, Clone)]
pub struct PagesOptions {
    pub gateway: PathBuf,
    /// Timed requests per page (after a warm-up of a tenth as many).
    pub requests: usize,
    /// Users in the database (each with a key); the first is the one signed in.
    pub users: usize,
    /// Execution servers of the signed-in user.
    pub servers: usize,
    /// Days of usage of the signed-in user.
    pub days: u32,
    /// Usage records per day of the signed-in user (each other user: a fortieth).
    pub per_day: u32,
    pub out_dir: PathBuf,
    pub doc: PathBuf,
    pub command: String,
}

/// Providers of the seeded usage, with a model each.
const USAGE_MIX: [(&str, &str); 6] = [
    ("openai", "gpt-4o-mini"),
    ("anthropic", "claude-sonnet-4-5"),
    ("openrouter", "meta-llama/llama-3.3-70b-instruct"),
    ("groq", "llama-3.1-8b-instant"),
    ("together", "mistralai/Mixtral-8x7B-Instruct-v0.1"),
    ("ollama", "llama3.2"),
];

/// A key per provider for the signed-in user (`custom` and `ollama` need an endpoint).
const KEYS: [(&str, &str); 11] = [
    ("openai", "sk-pages-openai-0123456789abcdefghijklmnop"),
    ("anthropic", "sk-ant-pages-0123456789abcdefghijklmnop"),
    ("huggingface", "hf_pages0123456789abcdefghijklmnop"),
    ("cohere", "pages-cohere-0123456789abcdefghijklmnop"),
    ("together", "pages-together-0123456789abcdefghijklmnop"),
    ("perplexity", "pplx-pages-0123456789abcdefghijklmnop"),
    ("groq", "gsk_pages0123456789abcdefghijklmnop"),
    ("openrouter", "sk-or-v1-pages0123456789abcdefghijklmnop"),
    ("ollama", "pages-ollama-0123456789abcdefghijklmnop"),
    ("ollama_cloud", "pages-ollama-cloud-0123456789abcdefghijk"),
    ("custom", "pages-custom-0123456789abcdefghijklmnop"),
];

/// Writes the usage spool the gateway replays at start: for each `(user id, per day)`, that
/// many records a day spread evenly over the last `days` days, 70 % on the user's own key, one
/// in 40 an upstream error.
fn write_spool(dir: &Path, users: &[(String, u32)], days: u32) -> Result<u64, String> {
    let path = dir.join("usage-spool.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = file.set_permissions(std::fs::Permissions::from_mode(0o600));
    }
    let span = chrono::TimeDelta::days(i64::from(days)).num_milliseconds();
    let now = chrono::Utc::now();
    let mut out = std::io::BufWriter::new(&mut file);
    let mut id = 0u64;
    for (user_id, per_day) in users {
        let total = u64::from(days) * u64::from(*per_day);
        for k in 0..total {
            let back = span * k as i64 / total.max(1) as i64;
            let at = now - chrono::TimeDelta::milliseconds(back);
            let (provider, model) = USAGE_MIX[(k % USAGE_MIX.len() as u64) as usize];
            let system = k % 10 < 3;
            let failed = k % 40 == 7;
            let line = json!({
                "id": format!("00000000-0000-4000-8000-{id:012x}"),
                "user_id": user_id,
                "provider": provider,
                "model": model,
                "credential": if system { "system" } else { "user" },
                "status": if failed { 502 } else { 200 },
                "input_tokens": if failed { 0 } else { 200 + k % 1800 },
                "output_tokens": if failed { 0 } else { 50 + k % 700 },
                "latency_ms": 300 + k % 2000,
                "at": at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "fallback": system && k % 20 == 1,
            });
            writeln!(out, "{line}").map_err(|e| e.to_string())?;
            id += 1;
        }
    }
    out.flush().map_err(|e| e.to_string())?;
    Ok(id)
}

/// A counter's value in the `/metrics` text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// Waits until the gateway has replayed and emptied the spool file.
async fn spool_replayed(dir: &Path) -> Result<Duration, String> {
    let path = dir.join("usage-spool.jsonl");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(600) {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if len == 0 {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("the usage spool was not replayed within 10 minutes".into())
}

fn expect(status: u16, want: u16, what: &str) -> Result<(), String> {
    if status == want {
        Ok(())
    } else {
        Err(format!("{what} answered {status}, expected {want}"))
    }
}

/// Timings of one page.
struct PageTiming {
    path: String,
    bytes: usize,
    micros: Vec<u64>,
}

impl PageTiming {
    fn pct(&self, p: f64) -> u64 {
        let i = ((self.micros.len().saturating_sub(1)) as f64 * p).round() as usize;
        self.micros.get(i).copied().unwrap_or(0)
    }

    fn to_json(&self) -> Value {
        json!({
            "path": self.path, "bytes": self.bytes, "requests": self.micros.len(),
            "p50_us": self.pct(0.5), "p90_us": self.pct(0.9), "p99_us": self.pct(0.99),
            "max_us": self.micros.last().copied().unwrap_or(0),
        })
    }
}

async fn time_page(
    conn: &mut Conn,
    path: &str,
    cookie: &str,
    requests: usize,
) -> Result<PageTiming, String> {
    let headers = [("cookie", cookie), ("accept", "text/html")];
    let mut bytes = 0;
    for _ in 0..(requests / 10).max(1) {
        let a = conn.send("GET", path, &headers, "").await?;
        expect(a.status, 200, path)?;
        bytes = a.body.len();
    }
    let mut micros = Vec::with_capacity(requests);
    for _ in 0..requests.max(1) {
        let t = Instant::now();
        let a = conn.send("GET", path, &headers, "").await?;
        micros.push(t.elapsed().as_micros() as u64);
        expect(a.status, 200, path)?;
    }
    micros.sort_unstable();
    Ok(PageTiming {
        path: path.to_string(),
        bytes,
        micros,
    })
}

/// Runs the scenario and writes its results.
pub async fn pages(opts: PagesOptions) -> Result<(), String> {
    let dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    // Providers are never called here; their base URLs point at a closed port.
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 9));
    let gw = |args: &[&str]| cli(&opts.gateway, dir.path(), nowhere, args);
    gw(&["migrate"])?;
    let email = "console@pages.example";
    let (user_id, token) = created(&gw(&[
        "user",
        "create",
        "--email",
        email,
        "--tier",
        "professional",
    ])?)?;
    gw(&["user", "set-role", "--email", email, "--role", "operator"])?;
    let mut others = Vec::new();
    let mut usage = vec![(user_id, opts.per_day)];
    for i in 1..opts.users.max(1) {
        let (id, t) = created(&gw(&[
            "user",
            "create",
            "--email",
            &format!("user{i}@pages.example"),
            "--tier",
            "starter",
        ])?)?;
        others.push(t);
        // The others' traffic, for the service-wide figures: a fortieth of the signed-in one's.
        usage.push((id, (opts.per_day / 40).max(1)));
    }
    let records = write_spool(dir.path(), &usage, opts.days)?;
    eprintln!(
        "pages: {} users, {records} usage records over {} days",
        opts.users, opts.days
    );

    let proc = serve(&opts.gateway, dir.path(), nowhere)?;
    let replay = spool_replayed(dir.path()).await?;
    let mut api = Conn::open(proc.addr).await?;
    // A line the gateway could not read is dropped, not replayed: count what arrived.
    let metrics = api.send("GET", "/metrics", &[], "").await?;
    let text = String::from_utf8_lossy(&metrics.body);
    let replayed = metric(&text, "byok_usage_records_replayed_total").unwrap_or(0);
    if replayed != records {
        return Err(format!(
            "the gateway replayed {replayed} of {records} usage records"
        ));
    }
    eprintln!(
        "pages: {replayed} usage records replayed in {:.1} s",
        replay.as_secs_f64()
    );

    let mut keys = 0;
    for (provider, key) in KEYS {
        let mut body = json!({"provider": provider, "key": key, "label": "bench"});
        if matches!(provider, "ollama" | "custom") {
            body["endpoint"] = json!("https://llm.pages.example/v1");
        }
        let a = api
            .post_json("/api/v1/byok/keys/add", &token, &body.to_string())
            .await?;
        if a.status == 200 {
            keys += 1;
        } else {
            eprintln!("pages: the {provider} key was refused ({})", a.status);
        }
    }
    for (i, t) in others.iter().enumerate() {
        let key = format!("sk-pages{i:06}abcdefghijklmnopqrstuvwxyz0123");
        let a = api
            .post_json(
                "/api/v1/byok/keys/add",
                t,
                &json!({"provider": "openai", "key": key}).to_string(),
            )
            .await?;
        expect(a.status, 200, "adding a key")?;
        keys += 1;
    }
    let mut first_server = None;
    for i in 0..opts.servers {
        let body = json!({
            "name": format!("build host {i:02}"),
            "server_type": "ssh",
            "connection_config": {
                "host": format!("build{i:02}.pages.example"), "port": 22,
                "username": "agent", "auth_method": "password",
                "password": "pages-bench-password",
            },
            "workspace_path": "/home/agent/work",
            "is_default": i == 0,
        });
        let a = api
            .post_json("/api/v1/execution-servers", &token, &body.to_string())
            .await?;
        expect(a.status, 201, "creating a server")?;
        if first_server.is_none() {
            first_server = a.json()?["id"].as_str().map(str::to_owned);
        }
    }
    let server = first_server.ok_or("no server id")?;
    // Tokens besides the one `user create` made.
    for i in 0..20 {
        let a = api
            .post_json(
                "/api/v1/tokens",
                &token,
                &json!({"name": format!("ci job {i}")}).to_string(),
            )
            .await?;
        expect(a.status, 201, "creating a token")?;
    }

    // Sign in with the gateway token, as the sign-in page's form does.
    let origin = format!("http://{}", proc.addr);
    let signed = api
        .send(
            "POST",
            "/login",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("origin", &origin),
            ],
            &format!("token={token}&next=%2Fkeys"),
        )
        .await?;
    expect(signed.status, 303, "signing in")?;
    let cookie = signed
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("byok_session="))
        .and_then(|v| v.split(';').next())
        .ok_or("no session cookie")?
        .to_string();

    let paths = [
        "/keys".to_string(),
        "/servers".to_string(),
        format!("/servers/{server}/edit"),
        format!("/servers/{server}/run"),
        "/tokens".to_string(),
        "/usage".to_string(),
        "/try".to_string(),
        "/admin".to_string(),
    ];
    let mut timings = Vec::new();
    for path in &paths {
        let t = time_page(&mut api, path, &cookie, opts.requests).await?;
        eprintln!(
            "pages: {path}: p50 {} µs, p99 {} µs, {} bytes",
            t.pct(0.5),
            t.pct(0.99),
            t.bytes
        );
        timings.push(t);
    }
    drop(proc);

    let raw = json!({
        "machine": machine(),
        "command": opts.command,
        "users": opts.users, "keys": keys, "servers": opts.servers, "tokens": 21,
        "usage_records": records, "days": opts.days,
        "replay_secs": replay.as_secs_f64(),
        "pages": timings.iter().map(PageTiming::to_json).collect::<Vec<_>>(),
    });
    let raw_path = write_raw(&opts.out_dir, "pages", &raw)?;
    let ms = |us: u64| format!("{:.1} ms", us as f64 / 1000.0);
    let mut table = String::from(
        "| page | p50 | p90 | p99 | max | size | target |\n|---|---|---|---|---|---|---|\n",
    );
    for t in &timings {
        table.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {:.1} KB | < 50 ms, ≤ 150 KB |\n",
            t.path.replace(&server, "{id}"),
            ms(t.pct(0.5)),
            ms(t.pct(0.9)),
            ms(t.pct(0.99)),
            ms(t.micros.last().copied().unwrap_or(0)),
            t.bytes as f64 / 1000.0,
        ));
    }
    let section = format!(
        "Machine: {}.\n\nCommand: `{}`: {} timed requests per page, one after another on one \
         keep-alive connection, signed in as an operator with {keys} keys in the database (a key \
         for every provider of theirs, one for each of {} other users), {} execution servers, 21 \
         gateway tokens and {records} usage records over {} days ({} a day theirs, a fortieth \
         of that for each other user). Raw output: `{}`.\n\n{table}",
        machine(),
        "make bench-pages",
        opts.requests,
        opts.users.saturating_sub(1),
        opts.servers,
        opts.days,
        opts.per_day,
        raw_path.display()
    );
    write_section(&opts.doc, "pages", &section)?;
    println!("{table}");
    println!("raw: {}", raw_path.display());
    Ok(())
}
