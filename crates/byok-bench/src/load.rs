//! The load generator: closed loop (N workers, one keep-alive connection each) or open loop
//! (a fixed rate; latency counted from each request's scheduled start, so a stall shows up
//! instead of being hidden by the generator waiting).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpStream;

/// One load run.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    pub addr: SocketAddr,
    pub path: String,
    pub body: Bytes,
    /// Bearer tokens, used round-robin (one request, one token).
    pub tokens: Arc<Vec<String>>,
    pub concurrency: usize,
    /// `Some(r)`: open loop at `r` requests per second.
    pub rate: Option<f64>,
    pub duration: Duration,
    /// Streaming: count chunks, time the first byte, require `end_marker` in the last bytes.
    pub end_marker: Option<&'static str>,
}

/// What one request did.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    total_us: u64,
    ttfb_us: u64,
    chunks: u32,
    ok: bool,
    complete: bool,
}

/// The summary of a run.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub requests: u64,
    pub errors: u64,
    pub incomplete_streams: u64,
    pub seconds: f64,
    pub latencies_us: Vec<u64>,
    pub ttfb_us: Vec<u64>,
    pub chunks: u64,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Report {
    pub fn throughput(&self) -> f64 {
        if self.seconds > 0.0 {
            self.requests as f64 / self.seconds
        } else {
            0.0
        }
    }

    /// p50/p90/p99/max of the total latency (µs).
    pub fn latency(&self, p: f64) -> u64 {
        pct(&self.latencies_us, p)
    }

    pub fn ttfb(&self, p: f64) -> u64 {
        pct(&self.ttfb_us, p)
    }

    pub fn to_json(&self) -> Value {
        json!({
            "requests": self.requests, "errors": self.errors,
            "incomplete_streams": self.incomplete_streams,
            "seconds": self.seconds, "throughput_rps": self.throughput(),
            "p50_us": self.latency(0.5), "p90_us": self.latency(0.9),
            "p99_us": self.latency(0.99), "max_us": self.latency(1.0),
            "ttfb_p50_us": self.ttfb(0.5), "ttfb_p99_us": self.ttfb(0.99),
            "chunks": self.chunks,
        })
    }

    fn absorb(&mut self, s: Sample) {
        self.requests += 1;
        if !s.ok {
            self.errors += 1;
            return;
        }
        if !s.complete {
            self.incomplete_streams += 1;
        }
        self.latencies_us.push(s.total_us);
        self.ttfb_us.push(s.ttfb_us);
        self.chunks += u64::from(s.chunks);
    }
}

type Sender = http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> std::io::Result<Sender> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn one(sender: &mut Sender, spec: &LoadSpec, token: &str, start: Instant) -> Sample {
    let req = Request::post(spec.path.as_str())
        .header("host", "bench")
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(spec.body.clone()));
    let Ok(req) = req else {
        return Sample::default();
    };
    if sender.ready().await.is_err() {
        return Sample::default();
    }
    let Ok(resp) = sender.send_request(req).await else {
        return Sample::default();
    };
    let ok_status = resp.status().is_success();
    let mut body = resp.into_body();
    let mut s = Sample {
        ok: ok_status,
        ..Sample::default()
    };
    let mut tail: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            s.ok = false;
            break;
        };
        if let Ok(data) = frame.into_data() {
            if s.chunks == 0 {
                s.ttfb_us = start.elapsed().as_micros() as u64;
            }
            s.chunks += 1;
            tail.extend_from_slice(&data);
            if tail.len() > 512 {
                tail.drain(..tail.len() - 512);
            }
        }
    }
    s.total_us = start.elapsed().as_micros() as u64;
    s.complete = match spec.end_marker {
        Some(m) => String::from_utf8_lossy(&tail).contains(m),
        None => true,
    };
    s
}

/// Runs the load and returns its report.
pub async fn run(spec: LoadSpec) -> Report {
    let spec = Arc::new(spec);
    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut report = Report::default();
    match spec.rate {
        None => {
            let mut workers = Vec::new();
            for w in 0..spec.concurrency.max(1) {
                let spec = spec.clone();
                workers.push(tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut sender = connect(spec.addr).await.ok();
                    let mut i = w;
                    while Instant::now() < deadline {
                        let Some(s) = sender.as_mut() else {
                            samples.push(Sample::default());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            sender = connect(spec.addr).await.ok();
                            continue;
                        };
                        let token = &spec.tokens[i % spec.tokens.len()];
                        i += spec.concurrency;
                        let sample = one(s, &spec, token, Instant::now()).await;
                        if !sample.ok {
                            sender = connect(spec.addr).await.ok();
                        }
                        samples.push(sample);
                    }
                    samples
                }));
            }
            for w in workers {
                for s in w.await.unwrap_or_default() {
                    report.absorb(s);
                }
            }
        }
        Some(rate) => {
            // A pool of connections, each used by one request at a time.
            let (tx, rx) = tokio::sync::mpsc::channel::<Sender>(spec.concurrency.max(1));
            for _ in 0..spec.concurrency.max(1) {
                if let Ok(s) = connect(spec.addr).await {
                    let _ = tx.send(s).await;
                }
            }
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let mut handles = Vec::new();
            let mut n: u64 = 0;
            loop {
                let scheduled = started + interval.mul_f64(n as f64);
                if scheduled >= deadline {
                    break;
                }
                tokio::time::sleep_until(scheduled.into()).await;
                let (spec, rx, tx) = (spec.clone(), rx.clone(), tx.clone());
                let token = spec.tokens[(n as usize) % spec.tokens.len()].clone();
                handles.push(tokio::spawn(async move {
                    let sender = rx.lock().await.recv().await;
                    let Some(mut sender) = sender else {
                        return Sample::default();
                    };
                    let sample = one(&mut sender, &spec, &token, scheduled).await;
                    if sample.ok {
                        let _ = tx.send(sender).await;
                    } else if let Ok(fresh) = connect(spec.addr).await {
                        let _ = tx.send(fresh).await;
                    }
                    sample
                }));
                n += 1;
            }
            for h in handles {
                report.absorb(h.await.unwrap_or_default());
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report.latencies_us.sort_unstable();
    report.ttfb_us.sort_unstable();
    report
}
