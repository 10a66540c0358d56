"""A Flask app on the blocking face (etcd_recipes.sync): no event loop in sight.

Flask (through Werkzeug's threaded server) serves each request in a thread of its own;
every request thread shares the one ``sync.Client`` and the recipe objects made at
startup. Endpoints:

* ``GET /config``: the app's settings, read from a watched config view (local, no network);
* ``POST /report``: a job that must not run twice at once: under a distributed lock, a
  read-modify-write of a counter in etcd, written with a fenced put;
* ``GET /leader``: whether this instance is the leader (a leader latch).

    python sync_flask_app.py               # start, call its endpoints from 4 threads, stop
    python sync_flask_app.py --serve 8080  # serve on 127.0.0.1:8080 until Ctrl-C
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import threading
import urllib.request
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from _common import connect_sync
from etcd_recipes import sync

APP = "demo-flask"


def create_app(client: sync.Client, instance_id: str, config: sync.ConfigView, latch: sync.LeaderLatch) -> Flask:
    app = Flask(__name__)
    report_lock = client.lock(f"{APP}/report", ttl=5, timeout=10.0)

    @app.get("/config")
    def get_config() -> dict[str, Any]:
        return {k.rsplit("/", 1)[1]: config.get_json(k) for k in config.keys()}

    @app.post("/report")
    def report() -> dict[str, Any]:
        # `with` on a Lock shared by every request thread: each thread holds its own turn.
        with report_lock as guard:
            n = int(client.get_string(f"{APP}/reports") or "0")  # read-modify-write, safe under the lock
            guard.put(f"{APP}/reports", str(n + 1))  # applied only while we still hold the lock
            return {"report": n + 1, "fencing_token": guard.fencing_token}

    @app.get("/leader")
    def leader() -> dict[str, Any]:
        return {"instance": instance_id, "leader": latch.is_leader}

    return app


def call(url: str, method: str = "GET") -> Any:
    with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=30) as r:
        return json.loads(r.read())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--serve", type=int, default=None, help="serve on this port until Ctrl-C")
    args = parser.parse_args()
    instance_id = f"web-{os.getpid()}"
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with connect_sync() as client:
        client.put(f"{APP}/settings/greeting", json.dumps("hello"))
        with client.config(f"{APP}/settings/", prefix=True) as config, \
                client.leader_latch(f"{APP}/leader", instance_id, ttl=5) as latch:
            server = make_server("127.0.0.1", args.serve or 0, create_app(client, instance_id, config, latch),
                                 threaded=True)
            base = f"http://127.0.0.1:{server.server_port}"
            print(f"serving on {base}", flush=True)
            if args.serve is not None:
                server.serve_forever()  # Werkzeug's returns on Ctrl-C
                print("shutting down")
            else:
                demo(base, server, latch)
    print("shutdown complete")


def demo(base: str, server: BaseWSGIServer, latch: sync.LeaderLatch) -> None:
    """Call the endpoints, the reports from 4 threads at once, while a thread serves."""
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    try:
        print(f"GET /config -> {call(base + '/config')}")
        results: list[dict[str, Any]] = []

        def reporter() -> None:
            for _ in range(3):
                results.append(call(base + "/report", "POST"))

        threads = [threading.Thread(target=reporter) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        numbers = sorted(r["report"] for r in results)
        tokens = [r["fencing_token"] for r in sorted(results, key=lambda r: r["report"])]
        print(f"{len(results)} reports from 4 threads: numbers 1..{numbers[-1]} each once: "
              f"{numbers == list(range(1, 13))}; fencing tokens increasing: {tokens == sorted(set(tokens))}")
        latch.await_leader(timeout=10.0)
        print(f"GET /leader -> {call(base + '/leader')['leader']}")
    finally:
        server.shutdown()
        serving.join()


if __name__ == "__main__":
    main()
