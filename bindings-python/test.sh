#!/usr/bin/env bash
# Build the extension (release) into $VENV and run the Python suite and mypy --strict.
# Usage: VENV=/abs/path/.venv bash bindings-python/test.sh
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
: "${VENV:?set VENV to an absolute path of a venv with requirements-dev.txt installed}"
export VIRTUAL_ENV="$VENV"
export PATH="$VENV/bin:$PATH"
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

echo "== python: build (maturin develop --release)"
(cd "$here" && "$VENV/bin/maturin" develop --release --quiet)

echo "== python: build the Rust lock example and the etcd-recipes CLI (interop and inspector tests)"
(cd "$root" && cargo build -q -p etcd-recipes-examples --bin lock && cargo build -q -p etcd-recipes-cli)

echo "== python: pytest ($("$VENV/bin/python" -c 'import etcd_recipes.testing as t; print("etcd", t.etcd_binary_version())'))"
status=0
(cd "$here" && "$VENV/bin/python" -m pytest tests -q -p no:cacheprovider) || status=1

echo "== python: mypy --strict"
(cd "$root" && "$VENV/bin/mypy" --strict --no-incremental examples/python bindings-python/tests) || status=1

exit $status
