"""The bench card side by side: Rust, Go, Python and Node, ours and the peers, against one
etcd this driver starts. Run through scripts/bench (which builds and installs what it needs).

    python bench/run.py [WORKLOADS...] [--rounds N] [--json FILE] [--sides S1,S2]
    python bench/run.py --report FILE       the table again from a run's --json FILE

Every side runs in its own process, one workload at a time; the order of the sides rotates
from round to round. Prints one table (median, [min-max] over the rounds, ok, ratio to the
reference the card's targets name as the median of the per-round ratios, target met or not) and
the summary as JSON lines.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TARGET = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
WORKLOADS = ["K1", "K2", "K3", "L1", "L2", "E1", "E2", "D1", "D2", "D2V", "C1", "C2", "S1", "R1", "Q1", "W1", "F1"]
ALL = set(WORKLOADS)
TIMEOUT = 600
E2_TTL_MS = 2000  # E2's candidates' TTL
F1_FAULT_S = 10  # F1: how long one member stays SIGSTOPped


@dataclass
class Side:
    lang: str
    name: str  # the side's own label (a runner may print more than one, e.g. C2's plain map)
    cmd: list[str]
    works: set[str]
    env: dict[str, str] = field(default_factory=dict)
    per_call: bool = False  # the Go program takes its workload as a lower-case command


def sides(py: str) -> list[Side]:
    rust = os.path.join(TARGET, "release", "bench")
    go = os.path.join(TARGET, "go", "bin", "bench")
    node = "node"
    return [
        Side("rust", "raw-etcd-client", [rust, "--side", "raw"], ALL - {"C2"}),
        Side("rust", "ours", [rust, "--side", "ours"], ALL),
        Side("go", "go-etcd-concurrency", [go], ALL - {"D1", "D2", "D2V", "C1", "C2"}, per_call=True),
        Side("python", "ours", [py, os.path.join(HERE, "py_ours.py")], ALL),
        Side("python", "python-etcd3", [py, os.path.join(HERE, "py_peers.py"), "--side", "etcd3"], ALL,
             {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}),
        Side("python", "aetcd", [py, os.path.join(HERE, "py_peers.py"), "--side", "aetcd"], ALL),
        Side("python", "etcd-client-py", [py, os.path.join(HERE, "py_peers.py"), "--side", "etcd-client-py"], ALL),
        Side("node", "ours", [node, os.path.join(HERE, "node_ours.mjs")], ALL),
        Side("node", "npm-etcd3", [node, os.path.join(HERE, "node_etcd3.mjs")], ALL),
        # F1's "no worse than etcdctl": `etcdctl put` in a loop, a process per op.
        Side("etcdctl", "etcdctl-put", [py, os.path.join(HERE, "py_peers.py"), "--side", "etcdctl"], {"F1"}),
    ]


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_side(side: Side, w: str, endpoints: list[str], fault=None) -> list[dict]:
    """One workload on one side: its JSON lines, or one error line. F1 (`fault` set) goes
    through run_fault: the side prints `ready`, the driver pauses a member and tells it."""
    if side.per_call:
        cmd = side.cmd + [f"--endpoints={','.join(endpoints)}", w.lower(), f"--name=bench-go-{os.getpid()}/{w.lower()}"]
        if w == "K2":
            cmd[-1] = "--name=bench/k2"
    else:
        cmd = side.cmd + ["--endpoints", ",".join(endpoints), w]
    env = {**os.environ, **side.env}
    try:
        if fault is not None:
            p = run_fault(cmd, env, fault)
        else:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, env=env, cwd=HERE)
    except subprocess.TimeoutExpired:
        return [{"side": side.name, "lang": side.lang, "workload": w, "value": None, "ok": False, "error": f"timeout {TIMEOUT}s"}]
    lines = [json.loads(x) for x in p.stdout.splitlines() if x.startswith("{")]
    lines = [x for x in lines if x.get("workload") == w or x.get("event") == "error"]
    if p.returncode != 0 or not lines or any("event" in x for x in lines):
        errs = [x for x in p.stderr.splitlines() if "Error" in x or "error" in x] or p.stderr.strip().splitlines() or [""]
        err = errs[-1].strip()[:300] or json.dumps(lines)[:300]
        return [{"side": side.name, "lang": side.lang, "workload": w, "value": None, "ok": False, "error": f"exit {p.returncode}: {err}"}]
    return lines


class Fault:
    """F1's 3-member cluster: which member leads, SIGSTOP/SIGCONT it, wait for health."""

    def __init__(self) -> None:
        from etcd_recipes.testing import EtcdCluster

        self.etcd = EtcdCluster.start(3)
        self.endpoints = self.etcd.endpoints
        self.ctl = self.etcd.etcdctl_path

    def _ctl(self, *args: str, timeout: float = 10) -> subprocess.CompletedProcess:
        return subprocess.run([self.ctl, f"--endpoints={','.join(self.endpoints)}", *args], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "ETCDCTL_API": "3"})

    def leader(self) -> int:
        """The index of the member every member names as leader."""
        st = json.loads(self._ctl("endpoint", "status", "-w", "json").stdout)
        ids = [x["Status"]["header"]["member_id"] for x in st]
        leaders = {x["Status"]["leader"] for x in st}
        if len(leaders) != 1 or next(iter(leaders)) not in ids:
            raise RuntimeError(f"F1: no agreed leader: {st}")
        return ids.index(next(iter(leaders)))

    def healthy(self, timeout: float = 60) -> None:
        """Until every member answers a linearizable read and they agree on a leader."""
        end = time.monotonic() + timeout
        while True:
            try:
                if self._ctl("endpoint", "health", "--command-timeout=2s").returncode == 0:
                    self.leader()
                    return
            except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError, KeyError):
                pass
            if time.monotonic() > end:
                raise RuntimeError("F1: the cluster did not become healthy again")
            time.sleep(0.1)

    def close(self) -> None:
        self.etcd.close()


def run_fault(cmd: list[str], env: dict, fault: Fault) -> subprocess.CompletedProcess:
    """F1 on one side: start it; once it prints `ready` (its loops run), SIGSTOP the leader
    member and write `fault`; after F1_FAULT_S s SIGCONT it and write `end`; collect."""
    fault.healthy()
    victim = fault.leader()
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=env, cwd=HERE)
    out, paused = [], False
    try:
        deadline = time.monotonic() + 60
        for line in p.stdout:
            out.append(line)
            if line.strip() == "ready":
                break
            if time.monotonic() > deadline:
                break
        if p.poll() is None and out and out[-1].strip() == "ready":
            fault.etcd.pause(victim)
            paused = True
            p.stdin.write("fault\n")
            p.stdin.flush()
            time.sleep(F1_FAULT_S)  # the fault's length is the workload's
            fault.etcd.resume(victim)
            paused = False
            p.stdin.write("end\n")
            p.stdin.flush()
        rest, err = p.communicate(timeout=TIMEOUT)
    except BaseException:
        p.kill()
        raise
    finally:
        if paused:
            fault.etcd.resume(victim)
    return subprocess.CompletedProcess(cmd, p.returncode, "".join(out) + rest, err)


async def write_keys(endpoints: list[str], n: int, key: str, value: bytes) -> None:
    """Keys a workload reads on every side, written once, untimed: K2 reads `bench/k2/<i>`
    (256-byte values), D2V views the 10,000 instances `bench-d2v/i<i>`."""
    import etcd_recipes

    c = await etcd_recipes.Client.connect(endpoints)
    it = iter(range(n))

    async def worker() -> None:
        for i in it:
            await c.put(key.format(i), value)

    await asyncio.gather(*(worker() for _ in range(64)))
    await c.close()


# --- summary: reference, ratio and target per row -------------------------------------

def reference(w: str, lang: str) -> tuple[str, str] | None:
    """(lang, side) of the row a workload's ratio is taken against."""
    if w in ("K1", "K2", "K3"):
        return ("rust", "raw-etcd-client")
    if w == "L1" or w == "L2":
        return ("rust", "raw-etcd-client-lock-rpc")
    if w in ("E1", "D1", "D2", "D2V", "C1"):
        return ("rust", "ours")
    if w == "C2":
        return (lang, {"python": "dict", "node": "map", "rust": "rwlock-hashmap"}.get(lang, ""))
    if w == "S1":
        return ("go", "go-etcd-concurrency")
    if w in ("R1", "Q1"):
        return ("go", "go-etcd-recipes")
    if w == "F1":
        return ("etcdctl", "etcdctl-put")
    return None


def target(w: str, lang: str, side: str, value: float, ratio: float | None, row: dict | None = None) -> tuple[str, bool | None]:
    """The card's target for our rows: (text, met)."""
    if side != "ours":
        return "", None
    r = ratio if ratio is not None else float("nan")
    text, met = _target(w, lang, value, r, row or {})
    if met is not None and ratio is None and "x " in text:
        return text + " (no reference row)", None
    return text, met


def _target(w: str, lang: str, value: float, r: float, row: dict) -> tuple[str, bool | None]:
    if w in ("K1", "K2"):
        want = 0.9 if lang == "rust" else 0.85
        return f">= {want}x raw", r >= want
    if w == "K3":
        return "<= 1.15x raw", r <= 1.15
    if w == "L1":
        return ">= 1.0x Lock RPC", r >= 1.0
    if w == "L2":
        return ">= 300/s", value >= 300
    if w == "E1":
        if lang == "rust":
            return "<= 3 ms", value <= 3
        return "<= 1.3x Rust core, <= 3 ms", r <= 1.3 and value <= 3
    if w in ("D1", "C1"):
        return ("", None) if lang == "rust" else ("<= 1.3x Rust core", r <= 1.3)
    if w == "D2":
        return "<= 0.5 s", value <= 0.5
    if w == "D2V":
        return "< 0.1 s", value < 0.1
    if w == "E2":
        return f"<= TTL + 0.3 s ({(E2_TTL_MS + 300) / 1e3:g} s), never before expiry", value <= E2_TTL_MS + 300 and row.get("ok") is True
    if w in ("S1", "R1", "Q1"):
        return ">= 1.0x Go", r >= 1.0
    if w == "W1":
        return "no item lost", row.get("ok") is True
    if w == "F1":
        p = [row.get(k) for k in ("value", "after_p99_ms", "lock_p99_ms", "lock_after_p99_ms")]
        met = (None not in p and p[0] <= 1500 and p[2] <= 1500 and p[1] <= 200 and p[3] <= 200
               and row.get("sessions_lost") == 0 and r <= 1.0)
        return "p99 <= 1.5 s at start, <= 0.2 s after (puts, lock cycles), no session lost, <= etcdctl", met
    if w == "C2":
        if lang == "rust":
            return ">= 20 M/s", value >= 20e6
        want = 0.8 if lang == "python" else 0.5
        return f">= {want}x plain {'dict' if lang == 'python' else 'Map'}", r >= want
    return "", None


def by_round(lines: list[dict]) -> dict[int, float]:
    """A side's figure per round (lines without a round, from older --json files: none)."""
    return {x["round"]: x["value"] for x in lines if x.get("value") is not None and isinstance(x.get("round"), int)}


def summarise(results: dict, order: list[str]) -> list[dict]:
    rows = []
    for w in order:
        keys = [k for k in results if k[0] == w]
        meds = {}
        for k in keys:
            vals = [x["value"] for x in results[k] if x.get("value") is not None]
            if vals:
                meds[(k[1], k[2])] = statistics.median(vals)
        for k in keys:
            lines = results[k]
            vals = [x["value"] for x in lines if x.get("value") is not None]
            row = {"workload": w, "lang": k[1], "side": k[2], "unit": next((x.get("unit") for x in lines if x.get("unit")), "")}
            na = next((x["na"] for x in lines if x.get("na")), None)
            err = next((x["error"] for x in lines if x.get("error")), None)
            if na or not vals:
                row.update(value=None, ok=None if na else False, na=na or f"FAILED: {err or 'no figure'}")
                rows.append(row)
                continue
            med = statistics.median(vals)
            row.update(value=med, min=min(vals), max=max(vals), rounds=vals, ok=all(x.get("ok") is True for x in lines))
            if err:
                row["error"] = err
            for extra in ("load_s", "counter", "resign_ms", "note", "after_p99_ms", "lock_p99_ms", "lock_after_p99_ms", "errors"):
                got = [x[extra] for x in lines if x.get(extra) is not None]
                if got:
                    row[extra] = statistics.median(got) if isinstance(got[0], (int, float)) else got[0]
            for worst in ("max_ms", "sessions_lost", "led_before_expiry", "most_inside", "overlaps", "duplicates",
                          "acked_twice", "dead_lettered", "killed_item_acked"):
                got = [x[worst] for x in lines if isinstance(x.get(worst), (int, float))]
                if got:
                    row[worst] = max(got)
            ref = reference(w, k[1])
            if ref and ref in meds and ref != (k[1], k[2]):
                # The median of the per-round ratios: the sides of one round ran back to back,
                # so a round's ratio cancels most of the box's drift between rounds. The ratio
                # of the two medians is kept beside it.
                mine, theirs = by_round(lines), by_round(results[(w, *ref)])
                paired = [mine[r] / theirs[r] for r in mine if theirs.get(r)]
                row["ratio"] = statistics.median(paired) if paired else med / meds[ref]
                row["ratio_of_medians"] = med / meds[ref]
                row["ratio_to"] = f"{ref[0]} {ref[1]}"
            text, met = target(w, k[1], k[2], med, row.get("ratio"), row)
            if text:
                row.update(target=text, met=met)
            rows.append(row)
    return rows


def rounded(row: dict) -> dict:
    """Four significant digits for the JSON lines."""
    def r4(x):
        if isinstance(x, float):
            return float(f"{x:.4g}")
        if isinstance(x, list):
            return [r4(y) for y in x]
        return x

    return {k: r4(v) for k, v in row.items()}


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("ms", "s"):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


LANG_ORDER = {"rust": 0, "go": 1, "python": 2, "node": 3, "etcdctl": 4}


def table(rows: list[dict]) -> str:
    out = ["| workload | lang | side | median | [min - max] | unit | ok | ratio | target |",
           "|---|---|---|---:|---|---|---|---:|---|"]
    rows = sorted(rows, key=lambda r: (WORKLOADS.index(r["workload"]), LANG_ORDER.get(r["lang"], 9), r["side"] != "ours", r["side"]))
    for r in rows:
        if r.get("value") is None:
            out.append(f"| {r['workload']} | {r['lang']} | {r['side']} | n/a | {r.get('na', '')} | | | | |")
            continue
        unit = r["unit"] + (f" (load {r['load_s']:.3f} s)" if "load_s" in r else "")
        unit += f" (resign {r['resign_ms']:.2f} ms)" if "resign_ms" in r else ""
        unit += f" (max {r['max_ms']:.0f} ms)" if "max_ms" in r else ""
        if r["workload"] == "F1":
            f = lambda k: "-" if r.get(k) is None else f"{r[k]:.0f}"  # noqa: E731
            unit += (f" at start; after {f('after_p99_ms')}; lock cycles {f('lock_p99_ms')} / {f('lock_after_p99_ms')};"
                     f" errors {f('errors')}" + (f"; sessions lost {r['sessions_lost']}" if "sessions_lost" in r else ""))
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        met = "" if "target" not in r else f"{r['target']}: {({True: 'met', False: 'MISSED'}).get(r['met'], '-')}"
        ok = "ok" if r["ok"] else "FAIL" + (f" ({r['error']})" if r.get("error") else "")
        if "counter" in r:
            ok += f" (counter {r['counter']})"
        for k, label in (("most_inside", "most inside"), ("overlaps", "overlaps"), ("duplicates", "duplicates"),
                         ("dead_lettered", "dead-lettered"), ("acked_twice", "acked twice"), ("led_before_expiry", "led before expiry")):
            if k in r:
                ok += f" ({label} {r[k]})"
        out.append(f"| {r['workload']} | {r['lang']} | {r['side']} | {fmt(r['value'], r['unit'])} | "
                   f"[{fmt(r['min'], r['unit'])} - {fmt(r['max'], r['unit'])}] | {unit} | {ok} | {ratio} | {met} |")
    return "\n".join(out)


def parse(argv: list[str]) -> tuple[list[str], int, str | None, set[str] | None]:
    work, rounds, out, only = [], 3, None, None
    while argv:
        a = argv.pop(0)
        if a == "--rounds":
            rounds = int(argv.pop(0))
        elif a == "--json":
            out = argv.pop(0)
        elif a == "--sides":
            only = set(argv.pop(0).split(","))
        elif a.upper() in ALL:
            work.append(a.upper())
        else:
            raise SystemExit(f"bench: unknown argument {a} (workloads: {' '.join(WORKLOADS)})")
    return [w for w in WORKLOADS if w in work] or WORKLOADS, rounds, out, only


def report(head: str, results: dict, work: list[str], out=None) -> None:
    rows = summarise(results, work)
    print(head)
    print()
    print(table(rows))
    print()
    for r in map(rounded, rows):
        print(json.dumps(r))
        if out:
            out.write(json.dumps({"summary": True, **r}) + "\n")


def from_file(path: str) -> None:
    """`--report FILE`: the table and summary again from a run's JSON lines (a whole run or
    the part written before it stopped)."""
    head, results = "", {}
    for line in map(json.loads, open(path)):
        if "run" in line:
            head = line["run"]
        elif "workload" in line and not line.get("summary"):
            results.setdefault((line["workload"], line["lang"], line["side"]), []).append(line)
    report(head, results, [w for w in WORKLOADS if any(k[0] == w for k in results)])


def main() -> None:
    if sys.argv[1:2] == ["--report"]:
        return from_file(sys.argv[2])
    from etcd_recipes.testing import EtcdCluster, etcd_binary_version

    work, rounds, path, only = parse(sys.argv[1:])
    all_sides = [s for s in sides(sys.executable) if only is None or f"{s.lang}:{s.name}" in only or s.lang in only]
    etcd = EtcdCluster.start(1)
    eps = etcd.endpoints
    fault = None
    started = datetime.datetime.now(datetime.timezone.utc)
    head = (f"{started:%Y-%m-%d %H:%M} UTC, etcd {etcd_binary_version()} (one member; F1: three), {rounds} rounds, "
            f"{os.cpu_count()} CPUs, {platform.machine()}")
    log(f"{head}; at {','.join(eps)}; workloads {' '.join(work)}; {len(all_sides)} sides")
    out = open(path, "w", buffering=1) if path else None  # line by line: a stopped run can still be reported
    if out:
        out.write(json.dumps({"run": head}) + "\n")
    results: dict[tuple[str, str, str], list[dict]] = {}
    try:
        for w in work:
            if w == "K2":
                asyncio.run(write_keys(eps, 20_000, "bench/k2/{}", b"x" * 256))
            if w == "D2V":
                asyncio.run(write_keys(eps, 10_000, "bench-d2v/i{}", b'{"Op":0,"Addr":"127.0.0.1:1","Metadata":null}'))
            if w == "F1":
                etcd.close()  # F1 runs on a 3-member cluster of its own
                fault = Fault()
                eps = fault.endpoints
                log(f"F1: 3 members at {','.join(eps)}; the leader is SIGSTOPped for {F1_FAULT_S} s per side")
                for side in all_sides:
                    if side.lang == "etcdctl":
                        side.env["BENCH_ETCDCTL"] = fault.ctl
            runners = [s for s in all_sides if w in s.works]
            for rnd in range(rounds):
                k = rnd % len(runners)
                for side in runners[k:] + runners[:k]:
                    t = time.monotonic()
                    for line in run_side(side, w, eps, fault if w == "F1" else None):
                        line.setdefault("lang", side.lang)
                        line["round"] = rnd
                        results.setdefault((w, line["lang"], line["side"]), []).append(line)
                        if out:
                            out.write(json.dumps(line) + "\n")
                        shown = line.get("na") or line.get("error") or (
                            f"{line['value']:.6g} {line.get('unit', '')} ok={line.get('ok')}" if line.get("value") is not None
                            else f"no figure: {json.dumps(line)[:300]}")
                        log(f"{w} round {rnd + 1}/{rounds} {line['lang']} {line['side']}: {shown} ({time.monotonic() - t:.1f} s)")
                    if any(x.get("na") for x in results.get((w, side.lang, side.name), [])):
                        runners = [s for s in runners if s is not side]  # n/a does not change between rounds
    finally:
        etcd.close()
        if fault:
            fault.close()
    load = os.getloadavg()[0]
    report(f"{head}, load average {load:.1f} at the end", results, work, out)
    if out:
        out.close()


if __name__ == "__main__":
    main()
