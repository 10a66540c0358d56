#!/usr/bin/env bash
# The release artifacts install and work without Rust.
#
# Builds dist/ (scripts/package), then, with cargo and rustc off the PATH:
#   - installs the abi3 wheel into a fresh venv (no package index) and runs the Python quick start;
#   - installs the npm tarball into a fresh npm project (offline) and runs the README's Node usage block;
# each against a throwaway etcd started by the installed package's own testing helper.
# Also checks the wheel's tags, the sdist's contents and the crate archive.
#   bash tests/release.sh              (ETCD_BIN picks the etcd binary; default /usr/bin/etcd)
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
export ETCD_BIN="${ETCD_BIN:-/usr/bin/etcd}"
passed=0; failed=0
ok() { passed=$((passed + 1)); echo "ok - $*"; }
bad() { failed=$((failed + 1)); echo "FAILED - $*"; }
check() { local what="$1"; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

bash "$root/scripts/package" python node crate || { echo "release: 0 passed, 1 failed"; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)"
wheel="$(ls dist/etcd_recipes-"$version"-*.whl 2>/dev/null | head -1)"
sdist="dist/etcd_recipes-$version.tar.gz"
tarball="dist/etcd-recipes-$version.tgz"
crate="dist/etcd-recipes-$version.crate"

# --- what the artifacts are ---------------------------------------------------------------
check "one wheel, tagged cp39-abi3 manylinux x86_64 ($(basename "${wheel:-none}"))" \
  bash -c '[[ "$(basename "$1")" =~ -cp39-abi3-manylinux_[0-9]+_[0-9]+_x86_64(\.manylinux[0-9_]+_x86_64)*\.whl$ ]]' _ "${wheel:-none}"
check "sdist carries the core sources, the lock file and the pyproject" bash -c '
  l="$(tar tzf "$1")" &&
  grep -q "/core/src/lock.rs$" <<<"$l" && grep -q "/Cargo.lock$" <<<"$l" && grep -q "/pyproject.toml$" <<<"$l"' _ "$sdist"
check "npm tarball carries the linux-x64-gnu addon and no install-time build" bash -c '
  l="$(tar tzf "$1")" &&
  grep -qx "package/etcd-recipes.linux-x64-gnu.node" <<<"$l" && grep -qx "package/native.js" <<<"$l" &&
  ! tar xzf "$1" -O package/package.json | grep -Eq "\"(prepare|install|postinstall|preinstall)\""' _ "$tarball"
check "crate archive carries the README and the sources" bash -c '
  l="$(tar tzf "$1")" && grep -q "/README.md$" <<<"$l" && grep -q "/src/lib.rs$" <<<"$l"' _ "$crate"

# --- a machine without Rust -----------------------------------------------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
norust=""
IFS=: read -ra dirs <<<"$PATH"
for d in "${dirs[@]}"; do
  [ -n "$d" ] && { [ -e "$d/cargo" ] || [ -e "$d/rustc" ] || [ -e "$d/rustup" ]; } && continue
  norust="${norust:+$norust:}$d"
done
run_norust() { env -u CARGO -u RUSTC -u RUSTUP_TOOLCHAIN CARGO_HOME="$tmp/no-cargo" RUSTUP_HOME="$tmp/no-rustup" PATH="$norust" "$@"; }
check "cargo and rustc are off the PATH for the installs" run_norust bash -c '! command -v cargo && ! command -v rustc'

# Python: a fresh venv, the wheel, no index.
py="$(command -v python3)"
if run_norust "$py" -m venv "$tmp/venv" >/dev/null && run_norust "$tmp/venv/bin/pip" install -q --no-index "$root/$wheel"; then
  ok "pip install of the wheel into a fresh venv, no index, no Rust"
  cat >"$tmp/py-quickstart.py" <<'PY'
import os, subprocess, sys
from etcd_recipes.testing import EtcdCluster
import etcd_recipes
assert "site-packages" in etcd_recipes.__file__, etcd_recipes.__file__
etcd = EtcdCluster.start(1)
try:
    p = subprocess.run([sys.executable, sys.argv[1]], env=dict(os.environ, ETCD_ENDPOINTS=",".join(etcd.endpoints)),
                       capture_output=True, text=True, timeout=120)
finally:
    etcd.close()
sys.stdout.write(p.stdout)
sys.stderr.write(p.stderr[-4000:])
sys.exit(p.returncode)
PY
  out="$(cd "$tmp" && run_norust "$tmp/venv/bin/python" py-quickstart.py "$root/examples/python/quickstart.py" 2>&1)"
  status=$?
  echo "$out" | tail -n 12 | sed 's/^/    /'
  check "Python quick start runs from the installed wheel" bash -c \
    '[ "$1" = 0 ] && grep -q "^lock held, fencing token" <<<"$2" && grep -q "^busy: LOCK_TIMEOUT" <<<"$2"' _ "$status" "$out"
else
  bad "pip install of the wheel into a fresh venv, no index, no Rust"
fi

# Node: a fresh npm project, the tarball, offline.
mkdir -p "$tmp/app"
if (cd "$tmp/app" && run_norust npm init -y >/dev/null &&
    run_norust npm install --offline --no-audit --no-fund --loglevel=error "$root/$tarball" >/dev/null); then
  ok "npm install of the tarball into a fresh project, offline, no Rust"
  # The README's usage block, verbatim.
  python3 - "$root/bindings-node/README.md" >"$tmp/app/usage.mjs" <<'PY'
import re, sys
blocks = re.findall(r"^```js\n(.*?)^```$", open(sys.argv[1]).read(), re.S | re.M)
sys.stdout.write(next(b for b in blocks if b.startswith("// usage.mjs")))
PY
  cat >"$tmp/app/run.mjs" <<'JS'
import { EtcdCluster } from 'etcd-recipes/testing'
import { execFileSync } from 'node:child_process'
const etcd = await EtcdCluster.start({ members: 1 })
let code = 0
try {
  const out = execFileSync(process.execPath, ['usage.mjs'], {
    env: { ...process.env, ETCD_ENDPOINTS: etcd.endpoints.join(',') }, encoding: 'utf8', timeout: 120000,
  })
  process.stdout.write(out)
} catch (e) {
  process.stdout.write(String(e.stdout ?? '')); process.stderr.write(String(e.stderr ?? '').slice(-4000)); code = 1
} finally {
  await etcd.close()
}
process.exit(code)
JS
  out="$(cd "$tmp/app" && run_norust node run.mjs 2>&1)"
  status=$?
  echo "$out" | tail -n 12 | sed 's/^/    /'
  check "Node usage block runs from the installed tarball" bash -c \
    '[ "$1" = 0 ] && grep -q "^leader: node-1 true" <<<"$2" && grep -q "^feature enabled: true" <<<"$2"' _ "$status" "$out"
  # The README's other blocks (the test harness) run as they are.
  python3 - "$root/bindings-node/README.md" "$tmp/app" <<'PY'
import re, sys
blocks = re.findall(r"^```js\n(.*?)^```$", open(sys.argv[1]).read(), re.S | re.M)
for i, b in enumerate(b for b in blocks if not b.startswith("// usage.mjs")):
    open(f"{sys.argv[2]}/block{i}.mjs", "w").write(b)
PY
  for b in "$tmp"/app/block*.mjs; do
    out="$(cd "$tmp/app" && run_norust timeout 120 node "$(basename "$b")" 2>&1)"
    status=$?
    if [ "$status" = 0 ]; then ok "Node README block $(basename "$b") runs from the installed tarball"
    else bad "Node README block $(basename "$b") runs from the installed tarball"; echo "$out" | tail -c 2000; fi
  done
else
  bad "npm install of the tarball into a fresh project, offline, no Rust"
fi

echo "release: $passed passed, $failed failed"
[ "$failed" = 0 ]
