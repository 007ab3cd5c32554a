#!/usr/bin/env bash
# make bench: release builds of the gateway and the harness, then every scenario of
# docs/benchmarks.md (gateway vs direct-to-stub, alternating), then the console's pages
# (byok-bench pages). Results: bench/results/*.json and the tables in docs/benchmarks.md.
# `bench.sh pages` (make bench-pages) runs the pages only. Never part of make test: numbers are
# measured, not asserted.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BENCH_SECS:=10}" "${BENCH_ROUNDS:=3}" "${BENCH_USERS:=1000}" "${BENCH_SOAK_SECS:=600}"
: "${BENCH_PAGE_REQUESTS:=200}"
cargo build --release -p byok-server -p byok-bench --bin byok-gateway --bin byok-bench
target=${CARGO_TARGET_DIR:-target}
if [ "${1:-}" != pages ]; then
  "$target/release/byok-bench" suite \
    --gateway "$target/release/byok-gateway" \
    --secs "$BENCH_SECS" --rounds "$BENCH_ROUNDS" --users "$BENCH_USERS" \
    --soak-secs "$BENCH_SOAK_SECS" \
    --out-dir bench/results --doc docs/benchmarks.md
fi
exec "$target/release/byok-bench" pages --gateway "$target/release/byok-gateway" \
  --requests "$BENCH_PAGE_REQUESTS" --out-dir bench/results --doc docs/benchmarks.md
