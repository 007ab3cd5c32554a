#![doc = include_str!("../README.md")]

mod client;
mod load;
mod pages;
mod stub;
mod suite;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "byok-bench", about = "Benchmark harness of the BYOK gateway")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the provider stub until killed; prints `stub listening on ADDR`.
    Stub {
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Content deltas per streamed answer.
        #[arg(long, default_value_t = 20)]
        chunks: usize,
        #[arg(long, default_value_t = 0)]
        chunk_interval_us: u64,
    },
    /// Put load on one URL path and print the report as JSON.
    Load {
        /// `host:port` of the target.
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long, default_value = "/v1/chat/completions")]
        path: String,
        /// A file holding the request body.
        #[arg(long)]
        body: PathBuf,
        #[arg(long, default_value = "bench")]
        token: String,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Open loop at this many requests per second (connections: `--concurrency`).
        #[arg(long)]
        rate: Option<f64>,
        #[arg(long, default_value_t = 10)]
        duration_secs: u64,
        /// Streams must end with this marker (e.g. `[DONE]`).
        #[arg(long)]
        end_marker: Option<String>,
    },
    /// Run every scenario (gateway vs direct, alternating) and write the results.
    Suite {
        /// The gateway binary (a release build).
        #[arg(long, default_value = "target/release/byok-gateway")]
        gateway: PathBuf,
        #[arg(long, default_value_t = 10)]
        secs: u64,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 1000)]
        users: usize,
        #[arg(long, default_value_t = 600)]
        soak_secs: u64,
        #[arg(long, default_value = "bench/results")]
        out_dir: PathBuf,
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
    },
    /// Time the console's pages for a full account and write the results.
    Pages {
        /// The gateway binary (a release build).
        #[arg(long, default_value = "target/release/byok-gateway")]
        gateway: PathBuf,
        /// Timed requests per page.
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Users in the database, each with a key (the first is signed in).
        #[arg(long, default_value_t = 100)]
        users: usize,
        /// Execution servers of the signed-in user.
        #[arg(long, default_value_t = 50)]
        servers: usize,
        /// Days of usage of the signed-in user.
        #[arg(long, default_value_t = 30)]
        days: u32,
        /// Usage records per day.
        #[arg(long, default_value_t = 2000)]
        per_day: u32,
        #[arg(long, default_value = "bench/results")]
        out_dir: PathBuf,
        #[arg(long, default_value = "docs/benchmarks.md")]
        doc: PathBuf,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome: Result<(), String> = rt.block_on(async move {
        match cli.command {
            Cmd::Stub {
                port,
                latency_ms,
                chunks,
                chunk_interval_us,
            } => {
                let addr = stub::start(
                    SocketAddr::from(([127, 0, 0, 1], port)),
                    stub::StubOptions {
                        latency: Duration::from_millis(latency_ms),
                        chunks,
                        chunk_interval: Duration::from_micros(chunk_interval_us),
                    },
                )
                .await
                .map_err(|e| e.to_string())?;
                println!("stub listening on {addr}");
                std::future::pending::<()>().await;
                Ok(())
            }
            Cmd::Load {
                addr,
                path,
                body,
                token,
                concurrency,
                rate,
                duration_secs,
                end_marker,
            } => {
                let body = std::fs::read(&body).map_err(|e| format!("{}: {e}", body.display()))?;
                let marker: Option<&'static str> =
                    end_marker.map(|m| &*Box::leak(m.into_boxed_str()));
                let report = load::run(load::LoadSpec {
                    addr,
                    path,
                    body: body.into(),
                    tokens: Arc::new(vec![token]),
                    concurrency,
                    rate,
                    duration: Duration::from_secs(duration_secs),
                    end_marker: marker,
                })
                .await;
                println!("{}", report.to_json());
                Ok(())
            }
            Cmd::Suite {
                gateway,
                secs,
                rounds,
                users,
                soak_secs,
                out_dir,
                doc,
            } => {
                let command = std::env::args().collect::<Vec<_>>().join(" ");
                suite::suite(suite::SuiteOptions {
                    gateway,
                    secs,
                    rounds,
                    users,
                    soak_secs,
                    out_dir,
                    doc,
                    command,
                })
                .await
            }
            Cmd::Pages {
                gateway,
                requests,
                users,
                servers,
                days,
                per_day,
                out_dir,
                doc,
            } => {
                let command = std::env::args().collect::<Vec<_>>().join(" ");
                pages::pages(pages::PagesOptions {
                    gateway,
                    requests,
                    users,
                    servers,
                    days,
                    per_day,
                    out_dir,
                    doc,
                    command,
                })
                .await
            }
        }
    });
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
