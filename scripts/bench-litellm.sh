#!/usr/bin/env bash
# make bench-litellm: scenarios 1-2 (passthrough, concurrency 1 and 64) through LiteLLM's proxy,
# the BYOK gateway and directly against the same stub, side by side on this machine.
# Installs litellm[proxy]==1.83.9 into .bench-venv (about 2 minutes the first time).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${BENCH_SECS:=10}"
LITELLM_VERSION=1.83.9
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if [ ! -x .bench-venv/bin/litellm ] || [ "$(cat .bench-venv/.version 2>/dev/null)" != "$LITELLM_VERSION" ]; then
  echo "==> installing litellm[proxy]==$LITELLM_VERSION into .bench-venv"
  python3 -m venv .bench-venv
  .bench-venv/bin/pip install -q "litellm[proxy]==$LITELLM_VERSION"
  echo "$LITELLM_VERSION" > .bench-venv/.version
fi
cargo build --release -p byok-server -p byok-bench --bin byok-gateway --bin byok-bench
bench="$target/release/byok-bench"
gw="$target/release/byok-gateway"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() { for _ in $(seq 1 300); do curl -fsS -o /dev/null "$1" 2>/dev/null && return 0; sleep 0.5; done; echo "no answer from $1" >&2; exit 1; }

stub_port=$(free_port)
"$bench" stub --port "$stub_port" > "$work/stub.log" 2>&1 & pids+=($!)
sleep 0.5

# LiteLLM, one model pointed at the stub (no database, no auth: its lightest set-up).
lite_port=$(free_port)
cat > "$work/litellm.yaml" <<YAML
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: http://127.0.0.1:$stub_port/v1
      api_key: sk-bench-stub
litellm_settings:
  drop_params: true
  telemetry: false
YAML
.bench-venv/bin/litellm --config "$work/litellm.yaml" --host 127.0.0.1 --port "$lite_port" > "$work/litellm.log" 2>&1 & pids+=($!)

# The gateway, with a user whose OpenAI key points at the same stub.
export BYOK_DATA_DIR="$work/gw" DATABASE_URL="sqlite://$work/gw/bench.db" RUST_LOG=info
export BYOK_PROVIDER_OPENAI_BASE_URL="http://127.0.0.1:$stub_port/v1"
gw_port=$(free_port)
mkdir -p "$work/gw"
token=$("$gw" user create --email bench@example.com --tier starter 2>/dev/null | grep -o 'byok_[A-Za-z0-9_-]*' | head -1)
BYOK_BIND="127.0.0.1:$gw_port" "$gw" serve > "$work/gw.log" 2>&1 & pids+=($!)
wait_http "http://127.0.0.1:$gw_port/healthz"
curl -fsS -o /dev/null -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"provider":"openai","key":"sk-benchabcdefghijklmnopqrstuvwxyz012345"}' "http://127.0.0.1:$gw_port/api/v1/byok/keys/add"
wait_http "http://127.0.0.1:$lite_port/health/liveliness"

printf '%s' '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}' > "$work/direct.json"
printf '%s' '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":32}' > "$work/gw.json"

results="bench/results/litellm-$(date +%s).json"
mkdir -p bench/results
echo "{" > "$results"
first=1
for c in 1 64; do
  for side in direct gateway litellm; do
    case $side in
      direct) addr="127.0.0.1:$stub_port"; body="$work/direct.json"; tok=x ;;
      gateway) addr="127.0.0.1:$gw_port"; body="$work/gw.json"; tok="$token" ;;
      litellm) addr="127.0.0.1:$lite_port"; body="$work/direct.json"; tok=x ;;
    esac
    echo "==> c=$c $side" >&2
    out=$("$bench" load --addr "$addr" --path /v1/chat/completions --body "$body" --token "$tok" \
      --concurrency "$c" --duration-secs "$BENCH_SECS")
    [ $first -eq 1 ] || echo "," >> "$results"
    first=0
    printf '"c%s_%s": %s\n' "$c" "$side" "$out" >> "$results"
  done
done
echo "}" >> "$results"

python3 - "$results" "$BENCH_SECS" <<'PY'
import json, sys, re, platform, os
r = json.load(open(sys.argv[1])); secs = sys.argv[2]
def row(c):
    d, g, l = r[f"c{c}_direct"], r[f"c{c}_gateway"], r[f"c{c}_litellm"]
    return (f"| passthrough, c={c} | {g['throughput_rps']:.0f} req/s, p50 {g['p50_us']} µs, p99 {g['p99_us']} µs "
            f"| {l['throughput_rps']:.0f} req/s, p50 {l['p50_us']} µs, p99 {l['p99_us']} µs "
            f"| {d['throughput_rps']:.0f} req/s | {g['throughput_rps']/max(l['throughput_rps'],1e-9):.1f}× | "
            f"{l['errors']} / {g['errors']} |")
table = ("| scenario | BYOK gateway | LiteLLM 1.83.9 proxy | direct to stub | gateway / LiteLLM throughput | errors (LiteLLM / gateway) |\n"
         "|---|---|---|---|---|---|\n" + row(1) + "\n" + row(64) + "\n")
section = (f"<!-- litellm:start -->\nCommand: `make bench-litellm` ({secs} s per run). Raw output: `{sys.argv[1]}`.\n\n"
           + table + "<!-- litellm:end -->")
doc = open("docs/benchmarks.md").read()
a, b = doc.find("<!-- litellm:start -->"), doc.find("<!-- litellm:end -->")
doc = doc[:a] + section + doc[b + len("<!-- litellm:end -->"):] if a >= 0 and b > a else doc + "\n" + section + "\n"
open("docs/benchmarks.md", "w").write(doc)
print(table)
PY
