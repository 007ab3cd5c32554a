#!/usr/bin/env bash
# `make test`: everything the test suites need, then every suite.
#
#   1. installs what is missing (Debian, as root): PostgreSQL, python3-venv, curl, Node.js/npm,
#      openssh-server, podman/runc/busybox, redis-server, kubectl, perl/make, a C compiler,
#      Chromium with its chromedriver (the console's browser tests) and a font;
#   2. a Python venv in .venv with the pinned tools the tests drive (cryptography, schemathesis,
#      the official anthropic and openai SDKs, prometheus-client's exposition parser, and
#      openapi-python-client);
#   3. Claude Code (npm, pinned) for the end-to-end client test, and axe-core (npm, pinned in
#      tests/axe/package.json) for the console's accessibility checks in Chromium;
#   4. podman's Docker-API service with a busybox image, and a throwaway PostgreSQL cluster on a free port, unless TEST_DATABASE_URL is already set;
#   5. cargo test (all targets, then doctests);
#   6. against the real binary, serving an embedded SQLite database: a Python client generated
#      from openapi/openapi.json (unedited) drives every management flow, then schemathesis.
#
# Everything started here is stopped and removed on exit, whatever the outcome.
set -euo pipefail

PY_REQUIREMENTS=(
  "cryptography==50.0.2"
  "schemathesis==4.32.5"
  "anthropic==2.10.0"
  "openai==3.51.0"
  "prometheus-client==0.26.0"
  "openapi-python-client==0.29.1"
)
# The generated-client check (client generation, install, the flows) should take well under a minute.
GENERATED_CLIENT_TIMEOUT=${GENERATED_CLIENT_TIMEOUT:-60}
# Claude Code, driven against the gateway by the end-to-end tests (npm; a native binary).
CLAUDE_CODE_VERSION="2.1.328"
# Per-operation example budget for schemathesis; the phase should stay well under 3 minutes.
SCHEMATHESIS_MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-30}
# Hard ceiling for the schemathesis run, in seconds.
SCHEMATHESIS_TIMEOUT=${SCHEMATHESIS_TIMEOUT:-240}

PG_DIR=""
PG_BIN=""
SERVER_PID=""
SERVER_DIR=""
PODMAN_DIR=""
PODMAN_PID=""

log() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }
is_root() { [ "$(id -u)" -eq 0 ]; }

cleanup() {
  local rc=$?
  set +e
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  [ -n "$SERVER_DIR" ] && rm -rf "$SERVER_DIR"
  if [ -n "$PODMAN_PID" ] && kill -0 "$PODMAN_PID" 2>/dev/null; then
    kill "$PODMAN_PID" 2>/dev/null
    wait "$PODMAN_PID" 2>/dev/null
  fi
  [ -n "$PODMAN_DIR" ] && rm -rf "$PODMAN_DIR"
  if [ -n "$PG_DIR" ]; then
    if [ -f "$PG_DIR/data/postmaster.pid" ]; then
      as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1
    fi
    rm -rf "$PG_DIR"
  fi
  exit "$rc"
}

# Run a command as the postgres user when we are root (initdb refuses to run as root).
as_postgres() {
  if is_root; then
    su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

have_pg_binaries() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

install_missing() {
  local missing=()
  # Even with TEST_DATABASE_URL set: byok-store's pg_tls test starts a TLS cluster of its own.
  if ! have_pg_binaries; then
    missing+=(postgresql)
  fi
  # `python3 -m venv --help` succeeds on Debian without python3-venv (venv is in the stdlib
  # package, ensurepip is not), so ask for ensurepip, which creating a venv needs.
  if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    missing+=(python3-venv)
  fi
  command -v curl >/dev/null 2>&1 || missing+=(curl)
  command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
  # A real sshd on loopback for the SSH backend's tests (the tests start and stop it).
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  # A Docker-API engine for the Docker backend's tests: podman with runc, and a busybox image.
  command -v podman >/dev/null 2>&1 || missing+=(podman)
  command -v runc >/dev/null 2>&1 || [ -x /usr/sbin/runc ] || missing+=(runc)
  command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
  command -v ssh-keygen >/dev/null 2>&1 || missing+=(openssh-client)
  # The sandbox of the local execution backend (and util-linux's prlimit, always there).
  [ -x /usr/bin/bwrap ] || missing+=(bubblewrap)
  # pgrep: the sandbox and database-freeze tests find processes with it.
  command -v pgrep >/dev/null 2>&1 || missing+=(procps)
  # ssh2 builds its own OpenSSL (vendored): it needs perl and make.
  command -v perl >/dev/null 2>&1 || missing+=(perl)
  command -v make >/dev/null 2>&1 || missing+=(make)
  # A real Redis for the shared rate-limit tests (each test starts its own on a free port).
  command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
  # `kubectl kustomize` renders deploy/kubernetes for the manifest test.
  command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
  # rustc links through `cc`, and libsqlite3-sys (bundled) and ring compile C.
  command -v cc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
  # The console in a real browser (tests/integration/console.rs): Debian's Chromium and its
  # WebDriver (same version, both from Debian), and a font to render the pages with.
  [ -x /usr/lib/chromium/chromium ] || [ -x /usr/bin/chromium ] || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  compgen -G '/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf' >/dev/null || missing+=(fonts-dejavu-core)

  [ ${#missing[@]} -eq 0 ] && return 0
  if is_root && command -v apt-get >/dev/null 2>&1; then
    log "installing: ${missing[*]}"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
  else
    die "missing system packages: ${missing[*]} (on Debian: apt-get install ${missing[*]})"
  fi
}

setup_venv() {
  local want stamp=.venv/.byok-requirements
  want=$(printf '%s\n' "${PY_REQUIREMENTS[@]}")
  if [ -d .venv ] && ! .venv/bin/python -c '' >/dev/null 2>&1; then
    log "recreating broken .venv"
    rm -rf .venv
  fi
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  log "setting up .venv (${PY_REQUIREMENTS[*]})"
  [ -d .venv ] || python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check "${PY_REQUIREMENTS[@]}"
  printf '%s\n' "$want" >"$stamp"
}

setup_claude_code() {
  local dir=.tools/claude-code
  local stamp="$dir/.version"
  if [ -x "$dir/node_modules/.bin/claude" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$CLAUDE_CODE_VERSION" ]; then
    return 0
  fi
  log "installing Claude Code $CLAUDE_CODE_VERSION into $dir (npm)"
  mkdir -p "$dir"
  npm install --prefix "$dir" --no-audit --no-fund --loglevel=error \
    "@anthropic-ai/claude-code@$CLAUDE_CODE_VERSION" >/dev/null
  [ -x "$dir/node_modules/.bin/claude" ] || die "Claude Code did not install into $dir"
  printf '%s\n' "$CLAUDE_CODE_VERSION" >"$stamp"
}

# An independent OIDC server for the Keycloak tests (npm's oauth2-mock-server, version pinned in
# tests/oidc/package.json), installed next to its start script.
setup_oidc_server() {
  local dir=tests/oidc
  if [ -d "$dir/node_modules/oauth2-mock-server" ]; then
    return 0
  fi
  log "installing oauth2-mock-server into $dir (npm)"
  npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error >/dev/null
  [ -d "$dir/node_modules/oauth2-mock-server" ] || die "oauth2-mock-server did not install into $dir"
}

# axe-core (version pinned in tests/axe/package.json), which the console's browser tests inject
# into every page.
setup_axe() {
  local dir=tests/axe
  if [ -f "$dir/node_modules/axe-core/axe.min.js" ] \
    && grep -q "\"version\": \"$(sed -n 's/.*"axe-core": "\(.*\)".*/\1/p' "$dir/package.json")\"" \
      "$dir/node_modules/axe-core/package.json"; then
    return 0
  fi
  log "installing axe-core into $dir (npm)"
  npm install --prefix "$dir" --no-audit --no-fund --no-save --loglevel=error >/dev/null
  [ -f "$dir/node_modules/axe-core/axe.min.js" ] || die "axe-core did not install into $dir"
}

# podman's API service on a socket of our own, with runc and cgroupfs (crun fails in this kind
# of sandbox), and a local image built from busybox (no registry is reachable).
start_podman() {
  PODMAN_DIR=$(mktemp -d "${TMPDIR:-/tmp}/byok-podman.XXXXXX")
  cat >"$PODMAN_DIR/containers.conf" <<'CONF'
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
  if ! podman image exists localtest:latest 2>/dev/null; then
    log "building the busybox test image localtest:latest"
    local root="$PODMAN_DIR/rootfs" applet
    mkdir -p "$root/bin" "$root/tmp" "$root/work"
    cp "$(command -v busybox)" "$root/bin/busybox"
    for applet in sh echo cat uname sleep head id pwd env true false ls grep; do
      ln -sf busybox "$root/bin/$applet"
    done
    tar -C "$root" -cf "$PODMAN_DIR/rootfs.tar" .
    podman import "$PODMAN_DIR/rootfs.tar" localtest:latest >/dev/null
  fi
  log "starting podman system service"
  podman system service --time=0 "unix://$PODMAN_DIR/podman.sock" >"$PODMAN_DIR/service.log" 2>&1 &
  PODMAN_PID=$!
  local deadline=$((SECONDS + 30))
  until curl -sf --unix-socket "$PODMAN_DIR/podman.sock" http://d/_ping >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 20 "$PODMAN_DIR/service.log" >&2 || true
      die "podman system service did not start"
    fi
    sleep 0.25
  done
  export BYOK_TEST_PODMAN_SOCK="$PODMAN_DIR/podman.sock"
}

start_postgres() {
  if [ -n "${TEST_DATABASE_URL:-}" ]; then
    log "using TEST_DATABASE_URL from the environment"
    return 0
  fi
  PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  [ -x "$PG_BIN/initdb" ] || die "no PostgreSQL binaries under /usr/lib/postgresql"
  PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/byok-pg.XXXXXX")
  if is_root; then
    chown postgres "$PG_DIR"
  fi
  local port
  port=$(free_port)
  log "starting a throwaway PostgreSQL ($PG_BIN) on 127.0.0.1:$port"
  as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust --no-sync -E UTF8 \
    --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log" >&2; die "initdb failed"; }
  as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w \
    -o "-p $port -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" \
    start >/dev/null \
    || { tail -n 30 "$PG_DIR/log" >&2 || true; die "PostgreSQL did not start"; }
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

run_cargo_tests() {
  export BYOK_TEST_PYTHON="$PWD/.venv/bin/python"
  export BYOK_TEST_CLAUDE="$PWD/.tools/claude-code/node_modules/.bin/claude"
  if [ -d ../shared/fernet-spec ]; then
    FERNET_SPEC_DIR=$(cd ../shared/fernet-spec && pwd)
    export FERNET_SPEC_DIR
  fi
  export RUST_BACKTRACE=1
  # The browser tests never skip under make test (a missing Chromium fails them).
  unset BYOK_TEST_SKIP_BROWSER
  # The end-to-end tests start the real binary: build it first (a plain `cargo test` builds
  # byok-server's binary only in test mode).
  log "cargo build -p byok-server --bin byok-gateway"
  cargo build -p byok-server --bin byok-gateway
  local target_dir="${CARGO_TARGET_DIR:-target}"
  case "$target_dir" in /*) ;; *) target_dir="$PWD/$target_dir" ;; esac
  export BYOK_GATEWAY_BIN="$target_dir/debug/byok-gateway"
  log "cargo test --workspace --all-targets"
  cargo test --workspace --all-targets
  log "cargo test --workspace --doc"
  cargo test --workspace --doc
  # byok-core's README example resolves a credential with the fakes of its test-util feature.
  log "cargo test -p byok-core --doc --features test-util"
  cargo test -p byok-core --doc --features test-util
}

# A client generated by openapi-python-client from the committed document, without edits, installed
# into the venv, drives keys, tokens and execution servers (tests/python/generated_client_check.py):
# a required field the handler does not need, an undeclared status or a mistyped field fails it.
# Runs inside run_schemathesis, against its server ($base, $bin, $server_env, $SERVER_DIR).
run_generated_client_check() {
  local gen="$SERVER_DIR/generated-client" started=$SECONDS token
  log "generated client (openapi-python-client) against $base"
  mkdir -p "$gen"
  # No post-hooks: they would run ruff, which the venv does not have (the code is not edited).
  printf 'post_hooks: []\n' >"$gen/config.yml"
  (
    cd "$gen"
    timeout "$GENERATED_CLIENT_TIMEOUT" "$root/.venv/bin/openapi-python-client" generate \
      --path "$root/openapi/openapi.json" --meta setup --config "$gen/config.yml" \
      --output-path "$gen/client" --fail-on-warning </dev/null
  ) || die "openapi-python-client could not generate a client from openapi/openapi.json"
  # Out with the client of an earlier run (same name and version), in with this one; its
  # dependencies (httpx, attrs) are normally in the venv already.
  "$root/.venv/bin/pip" uninstall -y -q byok-gateway-client >/dev/null 2>&1 || true
  timeout "$GENERATED_CLIENT_TIMEOUT" "$root/.venv/bin/pip" install -q --disable-pip-version-check \
    "$gen/client" </dev/null || die "the generated client did not install"

  token=$(env "${server_env[@]}" "$bin" user create --email generated-client@example.com \
    --tier professional | awk '$1 == "token:" && t == "" { t = $2 } END { print t }')
  [ -n "$token" ] || die "'byok-gateway user create' printed no 'token: ...' line"
  timeout "$GENERATED_CLIENT_TIMEOUT" "$root/.venv/bin/python" \
    "$root/tests/python/generated_client_check.py" "$base" "$token" </dev/null \
    || { tail -n 40 "$SERVER_DIR/server.log" >&2 || true; die "the generated-client check failed"; }
  log "generated client: passed in $((SECONDS - started)) s"
}

run_schemathesis() {
  log "cargo build -p byok-server"
  cargo build -p byok-server
  local bin="${CARGO_TARGET_DIR:-target}/debug/byok-gateway"
  [ -x "$bin" ] || die "$bin was not built"

  SERVER_DIR=$(mktemp -d "${TMPDIR:-/tmp}/byok-schemathesis.XXXXXX")
  local port base root=$PWD
  port=$(free_port)
  base="http://127.0.0.1:$port"
  local -a server_env=(
    "BYOK_DATA_DIR=$SERVER_DIR"
    "BYOK_BIND=127.0.0.1:$port"
    "DATABASE_URL=sqlite://$SERVER_DIR/byok.db"
    "RUST_LOG=warn"
    # Key tests call out to providers (unreachable here): keep each probe well inside
    # schemathesis' --request-timeout so a slow probe is not reported as a network error.
    "BYOK_PROBE_TIMEOUT_SECS=2"
  )
  # No provider is reachable from a test machine: send every key probe to a closed port.
  local id
  for id in OPENAI ANTHROPIC HUGGINGFACE COHERE TOGETHER PERPLEXITY GROQ OPENROUTER OLLAMA; do
    server_env+=("BYOK_PROVIDER_${id}_BASE_URL=http://127.0.0.1:9")
  done

  log "starting byok-gateway serve on $base"
  env "${server_env[@]}" "$bin" serve >"$SERVER_DIR/server.log" 2>&1 &
  SERVER_PID=$!

  local deadline=$((SECONDS + 30))
  until curl -sf "$base/healthz" >/dev/null 2>&1; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      tail -n 40 "$SERVER_DIR/server.log" >&2 || true
      die "byok-gateway exited before becoming healthy"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      tail -n 40 "$SERVER_DIR/server.log" >&2 || true
      die "byok-gateway was not healthy on $base/healthz after 30 s"
    fi
    sleep 0.25
  done

  local token
  token=$(env "${server_env[@]}" "$bin" user create --email schemathesis@example.com \
    --tier professional | awk '$1 == "token:" && t == "" { t = $2 } END { print t }')
  [ -n "$token" ] || die "'byok-gateway user create' printed no 'token: ...' line"

  run_generated_client_check

  # Only the "no 5xx" property: every other check is left to the Rust suites. The execution
  # servers' test/exec/trust-host-key operations connect to hosts the fuzzer makes up, where a
  # 502 (unreachable) is the right answer; the Rust suites cover them against real sshd and
  # podman.
  log "schemathesis (not_a_server_error, max $SCHEMATHESIS_MAX_EXAMPLES examples per operation)"
  local rc=0
  # Run from the scratch dir: schemathesis and hypothesis write .schemathesis/ and .hypothesis/
  # caches into the working directory. One worker: with several, hypothesis intermittently hits
  # "AST constructor recursion depth mismatch" (a CPython ast race) and reports a Runtime Error.
  (
    cd "$SERVER_DIR"
    timeout "$SCHEMATHESIS_TIMEOUT" "$root/.venv/bin/schemathesis" run "$root/openapi/openapi.json" \
      --url "$base" \
      --header "Authorization: Bearer $token" \
      --checks not_a_server_error \
      --exclude-path-regex '^/api/v1/execution-servers/\{id\}/(test|exec|trust-host-key)$' \
      --max-examples "$SCHEMATHESIS_MAX_EXAMPLES" \
      --workers 1 \
      --request-timeout 10 \
      --generation-database none \
      --no-color \
      </dev/null
  ) || rc=$?

  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
  if [ "$rc" -ne 0 ]; then
    if [ "$rc" -eq 124 ]; then
      echo "schemathesis did not finish within ${SCHEMATHESIS_TIMEOUT} s" >&2
    fi
    echo "--- server log (tail) ---" >&2
    tail -n 40 "$SERVER_DIR/server.log" >&2 || true
    die "schemathesis failed (exit $rc)"
  fi
}

main() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  trap cleanup EXIT

  install_missing
  command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install Rust with rustup (https://rustup.rs), then re-run make test"
  setup_venv
  setup_claude_code
  setup_oidc_server
  setup_axe
  start_podman
  start_postgres
  run_cargo_tests
  run_schemathesis

  echo "make test: all suites passed"
}

# Sourcing the file (for a look at one step) defines the functions without running anything.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  main "$@"
fi
