//! The scenario suite: the gateway against direct-to-stub calls, alternating, on one machine.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::json;

use crate::client::Conn;
use crate::load::{LoadSpec, Report, run};

/// Suite settings.
#[derive(Debug, Clone)]
pub struct SuiteOptions {
    pub gateway: PathBuf,
    pub secs: u64,
    pub rounds: usize,
    pub users: usize,
    pub soak_secs: u64,
    pub out_dir: PathBuf,
    pub doc: PathBuf,
    pub command: String,
}

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) addr: SocketAddr,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_and_read_addr(mut cmd: Command, prefix: &str) -> Result<Proc, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else {
            break;
        };
        if let Some(rest) = line.strip_prefix(prefix) {
            let addr = rest.trim().trim_start_matches("http://");
            let addr: SocketAddr = addr.parse().map_err(|_| format!("bad address {addr}"))?;
            // Keep draining stdout so the child never blocks on a full pipe.
            std::thread::spawn(move || for _ in lines.by_ref() {});
            return Ok(Proc { child, addr });
        }
    }
    let _ = child.kill();
    Err(format!("no '{prefix}' line"))
}

fn stub(chunks: usize, interval_us: u64) -> Result<Proc, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(me);
    cmd.args([
        "stub",
        "--port",
        "0",
        "--chunks",
        &chunks.to_string(),
        "--chunk-interval-us",
        &interval_us.to_string(),
    ]);
    spawn_and_read_addr(cmd, "stub listening on ")
}

/// Resident memory of a process, KiB: (current, peak).
pub(crate) fn rss(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

struct Gateway {
    proc: Proc,
    _dir: tempfile::TempDir,
    tokens: Vec<String>,
}

fn gateway_env(cmd: &mut Command, dir: &Path, stub: SocketAddr) {
    let base = format!("http://{stub}/v1");
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("BYOK_DATA_DIR", dir)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}", dir.join("bench.db").display()),
        )
        .env("BYOK_BIND", "127.0.0.1:0")
        .env("BYOK_PROVIDER_OPENAI_BASE_URL", &base)
        .env("BYOK_PROVIDER_ANTHROPIC_BASE_URL", format!("http://{stub}"))
        .env("BYOK_PROVIDER_OPENROUTER_BASE_URL", &base)
        .env("RUST_LOG", "info")
        // As deployed (Dockerfile, Kubernetes ConfigMap): two glibc malloc arenas.
        .env("MALLOC_ARENA_MAX", "2");
}

pub(crate) fn cli(
    gateway: &Path,
    dir: &Path,
    stub: SocketAddr,
    args: &[&str],
) -> Result<String, String> {
    let mut cmd = Command::new(gateway);
    gateway_env(&mut cmd, dir, stub);
    let out = cmd
        .args(args)
        .stderr(Stdio::null())
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!("{args:?} failed"));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts `gateway serve` on `dir` (its log in `dir/gateway.log`) and waits for its address.
pub(crate) fn serve(gateway: &Path, dir: &Path, stub: SocketAddr) -> Result<Proc, String> {
    let mut cmd = Command::new(gateway);
    gateway_env(&mut cmd, dir, stub);
    cmd.arg("serve").stderr(
        std::fs::File::create(dir.join("gateway.log"))
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
    );
    spawn_and_read_addr(cmd, "BYOK gateway listening on ")
}

/// `created user EMAIL (id UUID, tier T)` and `token: byok_…` from `user create`: the id and
/// the token.
pub(crate) fn created(out: &str) -> Result<(String, String), String> {
    let id = out
        .split("(id ")
        .nth(1)
        .and_then(|r| r.split([',', ')']).next())
        .ok_or("no user id printed")?
        .to_string();
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("byok_"))
        .ok_or("no token printed")?
        .to_string();
    Ok((id, token))
}

async fn start_gateway(opts: &SuiteOptions, stub: SocketAddr) -> Result<Gateway, String> {
    let dir = tempfile::TempDir::new().map_err(|e| e.to_string())?;
    cli(&opts.gateway, dir.path(), stub, &["migrate"])?;
    let mut tokens = Vec::new();
    for i in 0..opts.users.max(1) {
        let out = cli(
            &opts.gateway,
            dir.path(),
            stub,
            &[
                "user",
                "create",
                "--email",
                &format!("u{i}@bench.example"),
                "--tier",
                "starter",
            ],
        )?;
        tokens.push(created(&out)?.1);
    }
    let proc = serve(&opts.gateway, dir.path(), stub)?;
    let mut http = Conn::open(proc.addr).await?;
    for (i, t) in tokens.iter().enumerate() {
        let key = format!("sk-bench{i:06}abcdefghijklmnopqrstuvwxyz0123");
        let status = http
            .post_json(
                "/api/v1/byok/keys/add",
                t,
                &json!({"provider": "openai", "key": key}).to_string(),
            )
            .await?
            .status;
        if status != 200 {
            return Err(format!("adding a key answered {status}"));
        }
    }
    Ok(Gateway {
        proc,
        _dir: dir,
        tokens,
    })
}

const OPENAI_BODY: &str = r#"{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}"#;
const DIRECT_OPENAI_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}"#;
const ANTHROPIC_BODY: &str = r#"{"model":"openai/gpt-4o-mini","max_tokens":32,"messages":[{"role":"user","content":"Say hello in five words."}]}"#;
const STREAM_BODY: &str = r#"{"model":"openai/gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to twenty."}],"max_tokens":64}"#;
const DIRECT_STREAM_BODY: &str = r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Count to twenty."}],"max_tokens":64}"#;

#[derive(Clone)]
struct Side {
    addr: SocketAddr,
    path: &'static str,
    body: &'static str,
    tokens: Arc<Vec<String>>,
}

/// Runs `gateway` and `direct` alternately `rounds` times and merges each side's samples.
async fn alternate(
    gateway: &Side,
    direct: &Side,
    concurrency: usize,
    secs: u64,
    rounds: usize,
    end_marker: Option<&'static str>,
) -> (Report, Report) {
    let spec = |s: &Side| LoadSpec {
        addr: s.addr,
        path: s.path.to_string(),
        body: Bytes::from_static(s.body.as_bytes()),
        tokens: s.tokens.clone(),
        concurrency,
        rate: None,
        duration: Duration::from_secs(secs),
        end_marker,
    };
    let (mut g, mut d) = (Report::default(), Report::default());
    for _ in 0..rounds.max(1) {
        merge(&mut g, run(spec(gateway)).await);
        merge(&mut d, run(spec(direct)).await);
    }
    g.latencies_us.sort_unstable();
    g.ttfb_us.sort_unstable();
    d.latencies_us.sort_unstable();
    d.ttfb_us.sort_unstable();
    (g, d)
}

fn merge(into: &mut Report, r: Report) {
    into.requests += r.requests;
    into.errors += r.errors;
    into.incomplete_streams += r.incomplete_streams;
    into.seconds += r.seconds;
    into.chunks += r.chunks;
    into.latencies_us.extend(r.latencies_us);
    into.ttfb_us.extend(r.ttfb_us);
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    format!(
        "{cores} cores ({cpu}), {} GiB RAM; stub, load generator and gateway on the same cores",
        mem_kib / 1024 / 1024
    )
}

fn us(v: u64) -> String {
    format!("{v} µs")
}

fn added(g: u64, d: u64) -> String {
    format!("{} µs", g as i64 - d as i64)
}

/// Runs every scenario; writes the raw JSON and the Markdown table.
pub async fn suite(opts: SuiteOptions) -> Result<(), String> {
    let fast = stub(1, 0)?;
    let streaming = stub(20, 2_000)?;
    eprintln!("stubs on {} and {}", fast.addr, streaming.addr);
    let gw = start_gateway(&opts, fast.addr).await?;
    let pid = gw.proc.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (idle_rss, _) = rss(pid);
    eprintln!(
        "gateway on {} (pid {pid}), {} users, idle RSS {idle_rss} KiB",
        gw.proc.addr,
        gw.tokens.len()
    );
    let one_token = Arc::new(vec![gw.tokens[0].clone()]);
    let all_tokens = Arc::new(gw.tokens.clone());
    let none = Arc::new(vec!["unused".to_string()]);
    let g_side = |path, body, tokens: &Arc<Vec<String>>| Side {
        addr: gw.proc.addr,
        path,
        body,
        tokens: tokens.clone(),
    };
    let d_side = |addr, path, body| Side {
        addr,
        path,
        body,
        tokens: none.clone(),
    };
    let (secs, rounds) = (opts.secs, opts.rounds);

    eprintln!("1/6 passthrough, concurrency 1");
    let (s1g, s1d) = alternate(
        &g_side("/v1/chat/completions", OPENAI_BODY, &one_token),
        &d_side(fast.addr, "/v1/chat/completions", DIRECT_OPENAI_BODY),
        1,
        secs,
        rounds,
        None,
    )
    .await;
    eprintln!("2/6 passthrough, concurrency 64");
    let (s2g, s2d) = alternate(
        &g_side("/v1/chat/completions", OPENAI_BODY, &one_token),
        &d_side(fast.addr, "/v1/chat/completions", DIRECT_OPENAI_BODY),
        64,
        secs,
        rounds,
        None,
    )
    .await;
    eprintln!("3/6 translated (Anthropic in, OpenAI upstream), concurrency 1");
    let (s3g, s3d) = alternate(
        &g_side("/v1/messages", ANTHROPIC_BODY, &one_token),
        &d_side(fast.addr, "/v1/chat/completions", DIRECT_OPENAI_BODY),
        1,
        secs,
        rounds,
        None,
    )
    .await;
    eprintln!(
        "5/6 BYOK hot path: {} users, concurrency 64",
        gw.tokens.len()
    );
    let (s5g, _) = alternate(
        &g_side("/v1/chat/completions", OPENAI_BODY, &all_tokens),
        &d_side(fast.addr, "/v1/chat/completions", DIRECT_OPENAI_BODY),
        64,
        secs,
        1,
        None,
    )
    .await;
    let (_, peak_nonstream) = rss(pid);

    // Streaming runs against a gateway pointed at the streaming stub.
    drop(gw);
    let gws = start_gateway(
        &SuiteOptions {
            users: 1,
            ..opts.clone()
        },
        streaming.addr,
    )
    .await?;
    let spid = gws.proc.child.id();
    let stream_token = Arc::new(vec![gws.tokens[0].clone()]);
    eprintln!("4/6 streaming, 256 concurrent streams of 20 chunks");
    let (s4g, s4d) = alternate(
        &Side {
            addr: gws.proc.addr,
            path: "/v1/chat/completions",
            body: STREAM_BODY,
            tokens: stream_token.clone(),
        },
        &d_side(streaming.addr, "/v1/chat/completions", DIRECT_STREAM_BODY),
        256,
        secs,
        rounds,
        Some("[DONE]"),
    )
    .await;
    let (_, peak_stream) = rss(spid);
    drop(gws);

    eprintln!(
        "6/6 memory: a soak of {} s at concurrency 16",
        opts.soak_secs
    );
    let gw = start_gateway(
        &SuiteOptions {
            users: 1,
            ..opts.clone()
        },
        fast.addr,
    )
    .await?;
    let pid = gw.proc.child.id();
    let token = Arc::new(vec![gw.tokens[0].clone()]);
    let warm = LoadSpec {
        addr: gw.proc.addr,
        path: "/v1/chat/completions".into(),
        body: Bytes::from_static(OPENAI_BODY.as_bytes()),
        tokens: token,
        concurrency: 16,
        rate: None,
        duration: Duration::from_secs(10),
        end_marker: None,
    };
    let _ = run(warm.clone()).await;
    let (soak_start, _) = rss(pid);
    let soak = run(LoadSpec {
        duration: Duration::from_secs(opts.soak_secs),
        ..warm
    })
    .await;
    let (soak_end, _) = rss(pid);
    drop(gw);

    let per_chunk = |g: &Report, d: &Report| {
        let chunks = (g.chunks as f64 / g.requests.max(1) as f64).max(1.0);
        (g.latency(0.5) as f64 - d.latency(0.5) as f64) / chunks
    };
    let raw = json!({
        "machine": machine(),
        "command": opts.command,
        "secs_per_run": secs, "rounds": rounds,
        "s1": {"gateway": s1g.to_json(), "direct": s1d.to_json()},
        "s2": {"gateway": s2g.to_json(), "direct": s2d.to_json()},
        "s3": {"gateway": s3g.to_json(), "direct": s3d.to_json()},
        "s4": {"gateway": s4g.to_json(), "direct": s4d.to_json(),
               "per_chunk_overhead_us": per_chunk(&s4g, &s4d)},
        "s5": {"gateway": s5g.to_json(), "users": opts.users},
        "s6": {"idle_rss_kib": idle_rss, "peak_rss_nonstream_kib": peak_nonstream,
               "peak_rss_stream_kib": peak_stream, "soak_secs": opts.soak_secs,
               "soak_start_rss_kib": soak_start, "soak_end_rss_kib": soak_end,
               "soak": soak.to_json()},
    });
    let raw_path = write_raw(&opts.out_dir, "bench", &raw)?;

    let ratio = s2g.throughput() / s2d.throughput().max(1e-9);
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);
    let table = format!(
        "| scenario | gateway | direct to stub | result | target |\n|---|---|---|---|---|\n\
         | 1. passthrough, c=1: p50 / p99 | {} / {} | {} / {} | added p50 {}, p99 {} | p99 ≤ 200 µs added |\n\
         | 2. passthrough, c=64: throughput | {:.0} req/s (p99 {}) | {:.0} req/s | ratio {:.2} | ≥ 0.50 |\n\
         | 3. translated (Anthropic in, OpenAI up), c=1: p50 / p99 | {} / {} | {} / {} | added p50 {}, p99 {} | p99 ≤ 300 µs added |\n\
         | 4. streaming, 256 streams × 20 chunks: TTFB p50 / p99 | {} / {} | {} / {} | added TTFB p99 {}; per chunk {:.1} µs; streams lost {} of {} | TTFB p99 ≤ 300 µs added, none lost |\n\
         | 5. BYOK, {} users with their own keys, c=64 | {:.0} req/s, p50 {}, p99 {} | – | errors {} | – |\n\
         | 6. memory: idle / peak (non-stream, stream) / soak start → end ({} s) | {} / {}, {} / {} → {} | – | – | ≤ 50 MB idle, ≤ 150 MB load, flat |\n",
        us(s1g.latency(0.5)),
        us(s1g.latency(0.99)),
        us(s1d.latency(0.5)),
        us(s1d.latency(0.99)),
        added(s1g.latency(0.5), s1d.latency(0.5)),
        added(s1g.latency(0.99), s1d.latency(0.99)),
        s2g.throughput(),
        us(s2g.latency(0.99)),
        s2d.throughput(),
        ratio,
        us(s3g.latency(0.5)),
        us(s3g.latency(0.99)),
        us(s3d.latency(0.5)),
        us(s3d.latency(0.99)),
        added(s3g.latency(0.5), s3d.latency(0.5)),
        added(s3g.latency(0.99), s3d.latency(0.99)),
        us(s4g.ttfb(0.5)),
        us(s4g.ttfb(0.99)),
        us(s4d.ttfb(0.5)),
        us(s4d.ttfb(0.99)),
        added(s4g.ttfb(0.99), s4d.ttfb(0.99)),
        per_chunk(&s4g, &s4d),
        s4g.incomplete_streams + s4g.errors,
        s4g.requests,
        opts.users,
        s5g.throughput(),
        us(s5g.latency(0.5)),
        us(s5g.latency(0.99)),
        s5g.errors,
        opts.soak_secs,
        mib(idle_rss),
        mib(peak_nonstream),
        mib(peak_stream),
        mib(soak_start),
        mib(soak_end),
    );
    let section = format!(
        "Machine: {}.\n\nCommand: `{}` ({} s per run, {} alternating rounds per scenario). Raw output: `{}`.\n\n{table}",
        machine(),
        opts.command,
        secs,
        rounds,
        raw_path.display()
    );
    write_section(&opts.doc, "results", &section)?;
    println!("{table}");
    println!("raw: {}", raw_path.display());
    Ok(())
}

/// Replaces what lies between `<!-- {name}:start -->` and `<!-- {name}:end -->` in `doc`
/// (appending the marked section when the markers are missing).
pub(crate) fn write_section(doc: &Path, name: &str, section: &str) -> Result<(), String> {
    let (start, end) = (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    );
    let marked = format!("{start}\n{section}{end}");
    let text = std::fs::read_to_string(doc).unwrap_or_default();
    let updated = match (text.find(&start), text.find(&end)) {
        (Some(a), Some(b)) if b > a => {
            format!("{}{marked}{}", &text[..a], &text[b + end.len()..])
        }
        _ => format!("{text}\n{marked}\n"),
    };
    std::fs::write(doc, updated).map_err(|e| format!("{}: {e}", doc.display()))
}

/// Writes a run's raw figures to `{out_dir}/{prefix}-{unix time}.json`; returns the path.
pub(crate) fn write_raw(
    out_dir: &Path,
    prefix: &str,
    raw: &serde_json::Value,
) -> Result<PathBuf, String> {
    std::fs::create_dir_all(out_dir).map_err(|e| e.to_string())?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let path = out_dir.join(format!("{prefix}-{stamp}.json"));
    let text = serde_json::to_string_pretty(raw).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}
