#!/usr/bin/env bash
# Build the Node package and run its test suite against a real etcd.
#   bash bindings-node/test.sh          (from anywhere; ETCD_BIN picks the etcd binary)
# Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")"

if [ -f package-lock.json ]; then
  npm ci --no-audit --no-fund
else
  npm install --no-audit --no-fund
fi

CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" npx napi build --platform --release --js native.js --dts native.d.ts

# native.d.ts (the package's types, generated from the Rust source) is committed: the
# build must reproduce it exactly, so that the published types cannot drift.
if git rev-parse --is-inside-work-tree >/dev/null 2>&1 && ! git diff --quiet HEAD -- native.d.ts; then
  git --no-pager diff --stat HEAD -- native.d.ts
  echo "native.d.ts differs from the committed one: commit the regenerated file" >&2
  exit 1
fi

# The inspector test runs the etcd-recipes CLI (target/debug/etcd-recipes).
(cd .. && CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}" cargo build -q -p etcd-recipes-cli)

# The examples link the local package (examples/node/node_modules/etcd-recipes).
(cd ../examples/node && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi)

# The TypeScript example and the package's own types must type-check under --strict.
npx tsc --strict --noEmit -p tsconfig.json

node --test --test-concurrency=1 test/
