#!/usr/bin/env bash
# Build tests/go/<name> offline against the Debian etcd Go sources; print the binary's path.
#   tests/go/build.sh peer   ->  <target>/go/bin/peer
# <target> is $CARGO_TARGET_DIR or target/ at the repository root. Same lock, paths and
# staleness rule as the Rust helper etcd_recipes::testing::go_program (core/src/testing.rs).
set -euo pipefail
name="${1:?usage: tests/go/build.sh <program>}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
src="$root/tests/go/$name"
gopath=/usr/share/gocode
die() { echo "tests/go/build.sh: $*" >&2; exit 1; }
[ -f "$src/main.go" ] || die "no Go program at tests/go/$name/main.go"
command -v go >/dev/null 2>&1 || die "go not found: run scripts/setup (Debian package golang-go)"
[ -f "$gopath/src/go.etcd.io/etcd/clientv3/concurrency/mutex.go" ] ||
  die "etcd Go sources missing under $gopath: run scripts/setup (Debian package golang-etcd-server-dev)"
target="${CARGO_TARGET_DIR:-$root/target}"
case "$target" in /*) ;; *) target="$root/$target" ;; esac
out="$target/go/bin/$name"
mkdir -p "$target/go/bin" "$target/go/cache"
exec 9>"$target/go/.lock"
flock 9
# Rebuild when the binary is missing or older than a file of the program's directory.
if [ ! -x "$out" ] || [ -n "$(find "$src" -type f -newer "$out" -print -quit)" ]; then
  (cd "$src" && env GOPATH="$gopath" GO111MODULE=off GOFLAGS= GOPROXY=off GOCACHE="$target/go/cache" \
    go build -o "$out.tmp" .) || die "go build of tests/go/$name failed"
  mv -f "$out.tmp" "$out"
fi
echo "$out"
