#!/usr/bin/env bash
# byok-core holds the domain rules and must stay free of I/O frameworks: fail if any of them
# is among its normal (non-dev, non-build) dependencies, direct or transitive.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

FORBIDDEN=(
  actix-web actix-http diesel diesel-async reqwest hyper tokio-postgres ssh2 bollard kube tokio
)

# One line per package in byok-core's normal-dependency graph, on every target platform,
# e.g. "serde v1.0.228" or "byok-core v0.1.0 (/path)"; keep the names.
tree=$(cargo tree -p byok-core -e normal --target all --prefix none --format '{p}')
deps=$(printf '%s\n' "$tree" | awk 'NF { print $1 }' | sort -u)
[ -n "$deps" ] || { echo "check-core-deps: cargo tree printed nothing for byok-core" >&2; exit 1; }

echo "check-core-deps: byok-core has $(printf '%s\n' "$deps" | grep -cvx 'byok-core') normal dependencies"
echo "check-core-deps: checked for: ${FORBIDDEN[*]}"
found=()
for name in "${FORBIDDEN[@]}"; do
  if printf '%s\n' "$deps" | grep -qxF -- "$name"; then
    found+=("$name")
  fi
done

if [ ${#found[@]} -gt 0 ]; then
  echo "check-core-deps: FAIL: byok-core depends on: ${found[*]}" >&2
  for name in "${found[@]}"; do
    echo "--- how byok-core reaches $name:" >&2
    cargo tree -p byok-core -e normal --target all -i "$name" >&2 || true
  done
  exit 1
fi
echo "check-core-deps: OK: none of them is a dependency of byok-core"
