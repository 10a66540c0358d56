#!/usr/bin/env bash
# Nemesis worker (etcdctl): the same protocol as worker.py, with `etcdctl lock` holding the
# lock around a guarded transaction (`create(lock key) = its create revision`).
# Usage: worker-etcdctl.sh ENDPOINTS NAME SECONDS   (ETCDCTL: the etcdctl binary)
set -u
eps="$1"; name="$2"; seconds="$3"
ctl="${ETCDCTL:-etcdctl}"
export ETCDCTL_API=3 NEMESIS_EPS="$eps" NEMESIS_NAME="$name" NEMESIS_CTL="$ctl"
stop=0
trap 'stop=1' TERM
end=$(( $(date +%s) + ${seconds%.*} ))
while [ "$stop" = 0 ] && [ "$(date +%s)" -lt "$end" ]; do
  t0=$(date +%s%N)
  out="$("$ctl" --endpoints="$eps" --command-timeout=10s lock --ttl=3 nemesis/lock -- bash -c '
    set -u
    ctl() { "$NEMESIS_CTL" --endpoints="$NEMESIS_EPS" --command-timeout=5s "$@"; }
    rev=$(ctl get "$ETCD_LOCK_KEY" -w json | sed -n "s/.*\"create_revision\":\([0-9]*\).*/\1/p")
    [ -n "$rev" ] || { echo "r=error k=LOCK_KEY_GONE"; exit 0; }
    cur=$(ctl get nemesis/counter --print-value-only); cur=${cur:-0 0}
    n=${cur%% *}; token=${cur##* }
    v=""; [ "$rev" -le "$token" ] && v=1
    res=$(printf "create(\"%s\") = \"%s\"\n\nput nemesis/counter \"%s %s\"\n\n\n" "$ETCD_LOCK_KEY" "$rev" "$((n + 1))" "$rev" | ctl txn 2>&1)
    case "$res" in
      SUCCESS*) r=ok ;;
      FAILURE*) r=fenced ;;
      *) r=unknown ;;
    esac
    echo "r=$r n=$((n + 1)) t=$rev v=$v"
  ' 2>/dev/null)"
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  r=$(sed -n 's/.*r=\([a-z]*\).*/\1/p' <<<"$out"); r=${r:-error}
  n=$(sed -n 's/.* n=\([0-9]*\).*/\1/p' <<<"$out"); t=$(sed -n 's/.* t=\([0-9]*\).*/\1/p' <<<"$out")
  v=$(sed -n 's/.* v=\([0-9]*\).*/\1/p' <<<"$out")
  extra=""; [ -n "$n" ] && extra=", \"n\": $n, \"t\": $t"
  [ -n "$v" ] && extra="$extra, \"violation\": \"token $t not above stored\""
  [ "$r" = error ] && extra="$extra, \"k\": \"ETCDCTL\""
  echo "{\"w\": \"$name\", \"r\": \"$r\"$extra, \"ms\": $ms}"
done
