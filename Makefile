# Thin wrappers; the scripts under scripts/ and .ci/ hold the logic.
.PHONY: run build test bench bench-pages bench-litellm fmt fmt-check clippy openapi openapi-check core-deps-check module-cycles-check lint ci

# Serves with the default configuration (embedded SQLite under ./data); the environment passes through.
run:
	cargo build --release -p byok-server
	exec ./target/release/byok-gateway serve

build:
	cargo build --workspace

test:
	bash scripts/test.sh

# Benchmarks (release builds; numbers go to docs/benchmarks.md and bench/results/).
# BENCH_SECS, BENCH_ROUNDS, BENCH_USERS, BENCH_SOAK_SECS, BENCH_PAGE_REQUESTS shorten or lengthen the runs.
bench:
	bash scripts/bench.sh

# The console's pages only (the last part of make bench).
bench-pages:
	bash scripts/bench.sh pages

bench-litellm:
	bash scripts/bench-litellm.sh

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

# Written through a temp file so a failed run leaves the committed spec untouched.
openapi:
	@tmp=$$(mktemp) && trap 'rm -f "$$tmp"' EXIT && \
	cargo run -q -p byok-server --bin byok-gateway -- openapi > "$$tmp" && \
	cat "$$tmp" > openapi/openapi.json && echo "wrote openapi/openapi.json"

openapi-check:
	@tmp=$$(mktemp) && trap 'rm -f "$$tmp"' EXIT && \
	cargo run -q -p byok-server --bin byok-gateway -- openapi > "$$tmp" && \
	if diff -u openapi/openapi.json "$$tmp"; then echo "openapi/openapi.json is up to date"; \
	else echo "openapi/openapi.json is stale: run make openapi" >&2; exit 1; fi

core-deps-check:
	bash scripts/check-core-deps.sh

# No import cycle between the modules (files) of any crate (docs/architecture.md, "Module rules").
module-cycles-check:
	python3 scripts/check-module-cycles.py

lint: fmt-check clippy core-deps-check module-cycles-check openapi-check

ci:
	bash .ci/run
