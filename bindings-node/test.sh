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

# The examples link the local package (examples/node/node_modules/etcd-recipes).
(cd ../examples/node && if [ -f package-lock.json ]; then npm ci --no-audit --no-fund; else npm install --no-audit --no-fund; fi)

# The TypeScript example and the package's own types must type-check under --strict.
npx tsc --strict --noEmit -p tsconfig.json

node --test --test-concurrency=1 test/
