"""Every example under examples/python runs to completion against the test etcd, and the
long-running ones (registration, web app) shut down gracefully on SIGTERM / SIGINT."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

import etcd_recipes
from etcd_recipes.testing import EtcdCluster

from waiting import EVENTUALLY, tail

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "python"

pytestmark = pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"examples not found at {EXAMPLES}")

# example -> (arguments, lines (regular expressions) its output must contain)
CASES: dict[str, tuple[list[str], list[str]]] = {
    "lock.py": ([], [r"^worker-\d holds the lock \(fencing token \d+\), counter -> 1$", r"^final counter: 4$"]),
    "config_manager.py": ([], [r"^connection: CONNECTED$", r"^feature = off$", r"^limits = Limits\(rps=100, burst=1\)$",
                               r"^timeout = 2.5$", r"^changed app/feature: b'off' -> b'on'", r"^feature = on$",
                               r"^snapshot at revision \d+: \['app/feature', 'app/limits'\]$"]),
    "registration.py": (
        ["--id", "api-7"],
        [r"^registered \S*demo-api/api-7 -> 127.0.0.1:8080 \(lease [0-9a-f]+\)$", r"^served for 2 s",
         r"^deregistered api-7 \(state: closed\)$", r"^demo-api instances now: \[\]$"],
    ),
    "discovery.py": (
        [],
        [r"^demo-api: \(none\)", r"^\s+up api-1 10.0.0.1:8080 \{'zone': 'a'\}", r"^\s+up api-3 ",
         r"^\s*updated api-1 10.0.0.1:8080 \{'draining': True, 'zone': 'a'\}", r"^\s+down api-3",
         r"next request goes to 10.0.0.\d:8080", r"^done: demo-api has 0 instances$"],
    ),
    "election.py": (
        [],
        [r"^observer: no leader$", r"^node-a is the leader \(fencing token \d+\)$", r"^node-b waiting: True$",
         r"^current value: node-a:ready$", r"^node-a resigned$", r"^node-a can no longer proclaim: NOT_LEADER$",
         r"^node-b is the leader", r"^observer: leader is node-b", r"^node-b resigned$", r"^done$"],
    ),
    "leader.py": (
        [],
        [r"^scheduler-\d leads \(fencing token \d+\)$", r"^scheduler-\d stopped leading: returned$",
         r"^scheduler-\d: work cancelled, event set: True$", r"^scheduler-\d stopped leading: lost \(",
         r"^terms so far: 5; 3 schedulers led$", r"^latch is leader: True", r"^latch closed; leader now: None$", r"^done$"],
    ),
    "webapp.py": (
        [],
        [r"^startup complete: web-\d+ registered at 127.0.0.1:\d+$", r"^GET /config -> 200 \{'greeting': 'hello'\}$",
         r"^POST /report -> 200 \{'report': 3, 'fencing_token': \d+\}$", r"^web-\d+ is the leader$",
         r"^GET /peers -> 200 \{'peers': \['web-\d+'\], 'leader': True\}$", r"^GET /nope -> 404",
         r"^shutdown complete$"],
    ),
    "workqueue.py": (
        [],
        [r"^worker-\d made a thumbnail of a.png \(attempt 1\)$", r"^worker-\d made a thumbnail of later.png \(attempt 1\)$",
         r"^worker-\d failed on poison.png \(attempt 2\)$", r"^dead letters: \[\('poison.png', 2\)\]$",
         r"^requeued: 1$", r"^poison.png is back \(attempt 1\)$", r"^visible items left: 0$"],
    ),
    "counter.py": (
        [],
        [r"^visits: 100$", r"^reset from 100: True$", r"^reset from 100 again: False$", r"^after 5 more: 5$"],
    ),
    "semaphore.py": ([], [r"^6 downloads done, at most [12] at a time$", r"^both permits taken: LOCK_TIMEOUT$"]),
    "rwlock.py": (
        [],
        [r"^two readers hold the lock together$", r"^a writer has to wait: LOCK_TIMEOUT$",
         r"^the writer updated the catalog \(fencing token \d+\)$", r"^a reader sees version 2$"],
    ),
    "barrier.py": (
        [],
        [r"^gate held: True$", r"^a wait with a short timeout gives up: LOCK_TIMEOUT$", r"^still waiting at the gate: 3$",
         r"^worker-3 passes the gate$", r"^gate held now: False$", r"^all 3 entered; they started within \d+ ms",
         r"^a fourth party is turned away, the barrier is full: LOCK_TIMEOUT$", r"^party-1 left$",
         r"^all 3 left together: done$"],
    ),
    "queue_example.py": (
        [],
        [r"^enqueued 6 jobs; length: 6$", r"^consumer-\d took job-1$",
         r"^each job went to exactly one consumer: 6 taken, 6 distinct, length now 0$",
         r"^a waiting consumer woke up with job-7$", r"^dequeue on an empty queue gives up: LOCK_TIMEOUT$",
         r"^dequeued in order: page on-call, patch openssl, rotate logs, resize images, weekly digest$"],
    ),
    "sync_flask_app.py": (
        [],
        [r"^serving on http://127.0.0.1:\d+$", r"^GET /config -> \{'greeting': 'hello'\}$",
         r"^12 reports from 4 threads: numbers 1..12 each once: True; fencing tokens increasing: True$",
         r"^GET /leader -> True$", r"^shutdown complete$"],
    ),
    "sync_management_command.py": (
        [],
        [r"^host-b: another host is rebuilding; giving up after 0.3 s$",
         r"^host-a rebuilt the index in batches of 250 \(fencing token \d+\)$",
         r"^host-a led one term and scheduled 3 rebuilds in batches of 250$",
         r"^index built by host-a, scheduled by host-a$"],
    ),
    "sync_quickstart.py": (
        [], [r"^visits: 20$", r"^busy: LOCK_TIMEOUT$", r"^changed: app/feature-x b'on' now: on$"],
    ),
    "sync_celery_worker.py": (
        [],
        [r"^sent 'welcome' to ada@example.com$", r"^resized a.png to 256px$", r"^resized b.png to 256px$",
         r"^worker-\d: resize raised ValueError\('not an image'\) \(delivery 3\); retry$",
         r"^dead letters: \[\('broken.png', 3\)\]$", r"^visible items left: 0$"],
    ),
    "picking.py": (
        [],
        [r"^registered 3 instances on lease [0-9a-f]+$", r"^round robin: pay-1, pay-2, pay-3, pay-1, pay-2, pay-3$",
         r"^weighted: pay-2 \(weight 3\) got the most picks: True$", r"^zone b first: \['pay-3'\]$",
         r"^sticky: \['pay-1'\]$", r"^pay-1 after 2 errors: down=True, picks \['pay-2', 'pay-3'\]$",
         r"^pay-1 is back after its down period$", r"^a pick filtered to zone a: pay-\d$",
         r"^pay-2 draining: listed 3, available \['pay-1', 'pay-3'\]$",
         r"^session closed: pay has 0 instances; pay-1 is closed$"],
    ),
    "health_app.py": (
        [],
        [r"^lifespan: lifespan.startup.complete$", r"^GET /healthz -> 200$",
         r"^GET /readyz -> 200 \{'ready': True, 'sessions_alive': 2, 'views_current': 1, 'registrations': \['registered",
         r"^GET /metrics -> 200, \d+ lines$",
         r"^after the lease was revoked: GET /readyz -> 503 \['session [0-9a-f]+ lost: ",
         r"^metrics: etcd_recipes_session_losses_total 1$", r"^lifespan: lifespan.shutdown.complete$"],
    ),
    "quickstart.py": (
        [],
        [r"^lock held, fencing token \d+$", r"^leader: b'node-1' True$",
         r"^instances: \[\('api-1', '10.0.0.1:8080', \{'zone': 'a'\}\)\]$", r"^pick: Instance\(id=\"api-1\"",
         r"^feature-x: on limits: \{'rps': 100\}$", r"^busy: LOCK_TIMEOUT$"],
    ),
}


def example_env(etcd: EtcdCluster, namespace: str) -> dict[str, str]:
    return dict(os.environ, ETCD_ENDPOINTS=",".join(etcd.endpoints), ETCD_NAMESPACE=namespace, PYTHONUNBUFFERED="1")


def test_every_example_is_tested() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_runs(etcd: EtcdCluster, name: str) -> None:
    args, expected = CASES[name]
    ns = f"ex-{uuid.uuid4().hex[:8]}/"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, str(EXAMPLES / name), *args], cwd=EXAMPLES, env=example_env(etcd, ns),
                       capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - t0
    assert p.returncode == 0, f"rc={p.returncode}\nstdout:\n{tail(p.stdout)}\nstderr:\n{tail(p.stderr)}"
    for pattern in expected:
        assert re.search(pattern, p.stdout, re.M), f"no line matching {pattern!r} in:\n{tail(p.stdout)}"
    assert "Traceback" not in p.stderr and "panicked" not in p.stderr, tail(p.stderr)
    # No example waits out a TTL (5-10 s each) or a lock timeout; they take 1-3 s. The
    # bound is loose for a loaded machine (interpreter start-up included).
    assert elapsed < 30, f"{name} took {elapsed:.1f} s"


def read_line_matching(p: subprocess.Popen[str], pattern: str, timeout: float = 60) -> re.Match[str]:
    """Read `p`'s stdout (written unbuffered) until a line matches; fail after `timeout` s."""
    assert p.stdout is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = p.stdout

    def pump() -> None:
        for line in stdout:
            lines.put(line)
            if re.search(pattern, line):
                return  # leave the rest to communicate()
        lines.put("")

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            break
        if not line:
            break
        seen.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    p.kill()
    pytest.fail(f"no line matching {pattern!r} within {timeout} s; got:\n{tail(''.join(seen))}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_registration_deregisters_on_signal(etcd: EtcdCluster, sig: signal.Signals) -> None:
    ns = f"ex-{uuid.uuid4().hex[:8]}/"
    p = subprocess.Popen([sys.executable, str(EXAMPLES / "registration.py"), "--id", "api-sig", "--serve-for", "0"],
                         cwd=EXAMPLES, env=example_env(etcd, ns), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        read_line_matching(p, r"^registered \S*demo-api/api-sig")
        async with await etcd_recipes.Client.connect(etcd.endpoints, namespace=ns) as client:
            assert [i.id for i in await client.list_instances("demo-api")] == ["api-sig"]
            p.send_signal(sig)
            out, err = p.communicate(timeout=60)
            assert p.returncode == 0, f"rc={p.returncode}\n{tail(out)}\n{tail(err)}"
            assert f"received {sig.name}: shutting down" in out and "deregistered api-sig" in out, tail(out)
            # Gone now, not one TTL (10 s) later: the example deregistered before exiting.
            assert await client.list_instances("demo-api") == []
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_webapp_serves_http_until_sigterm(etcd: EtcdCluster) -> None:
    ns = f"ex-{uuid.uuid4().hex[:8]}/"
    p = subprocess.Popen([sys.executable, str(EXAMPLES / "webapp.py"), "--serve", "0"], cwd=EXAMPLES,
                         env=example_env(etcd, ns), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = read_line_matching(p, r"^serving on (http://127.0.0.1:\d+)").group(1)
        with urllib.request.urlopen(url + "/config", timeout=EVENTUALLY) as r:
            assert r.status == 200 and json.loads(r.read()) == {"greeting": "hello"}
        req = urllib.request.Request(url + "/report", method="POST")
        with urllib.request.urlopen(req, timeout=EVENTUALLY) as r:
            assert json.loads(r.read())["report"] == 1
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, f"rc={p.returncode}\n{tail(out)}\n{tail(err)}"
        assert "shutting down" in out and "shutdown complete" in out, tail(out)
        assert "Traceback" not in err, tail(err)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_sync_flask_app_serves_until_ctrl_c(etcd: EtcdCluster) -> None:
    """The Flask app on the blocking face serves requests from Werkzeug's threads; Ctrl-C
    ends it cleanly: the latch resigned, nothing of it left in etcd."""
    from etcd_recipes import sync

    ns = f"ex-{uuid.uuid4().hex[:8]}/"
    p = subprocess.Popen([sys.executable, str(EXAMPLES / "sync_flask_app.py"), "--serve", "0"], cwd=EXAMPLES,
                         env=example_env(etcd, ns), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = read_line_matching(p, r"^serving on (http://127.0.0.1:\d+)").group(1)
        with urllib.request.urlopen(url + "/config", timeout=EVENTUALLY) as r:
            assert r.status == 200 and json.loads(r.read()) == {"greeting": "hello"}
        req = urllib.request.Request(url + "/report", method="POST")
        with urllib.request.urlopen(req, timeout=EVENTUALLY) as r:
            assert json.loads(r.read())["report"] == 1
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, f"rc={p.returncode}\n{tail(out)}\n{tail(err)}"
        assert "shutting down" in out and "shutdown complete" in out, tail(out)
        assert "Traceback" not in err, tail(err)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    with sync.Client.connect(etcd.endpoints, namespace=ns) as client, \
            client.config("demo-flask/", prefix=True) as left:
        assert sorted(left.keys()) == ["demo-flask/reports", "demo-flask/settings/greeting"]
