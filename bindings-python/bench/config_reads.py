"""Local config reads from Python: ConfigView.get vs a plain dict fed by a watch.

Prints one JSON line. Starts its own etcd unless ETCD_ENDPOINTS is set.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

import etcd_recipes
from etcd_recipes.testing import EtcdCluster

N = 2_000_000


async def main() -> None:
    cluster = None
    endpoints = os.environ.get("ETCD_ENDPOINTS")
    if not endpoints:
        cluster = EtcdCluster.start(1)
        eps: list[str] = cluster.endpoints
    else:
        eps = endpoints.split(",")
    client = await etcd_recipes.Client.connect(eps, namespace="bench/")
    await client.put("cfg/feature", "on")
    cfg = await client.config("cfg/", prefix=True)
    plain: dict[str, bytes] = dict(cfg.snapshot())  # what a hand-rolled watch would feed
    get, key = cfg.get, "cfg/feature"
    t0 = time.perf_counter()
    for _ in range(N):
        get(key)
    view_s = time.perf_counter() - t0
    dget = plain.get
    t0 = time.perf_counter()
    for _ in range(N):
        dget(key)
    dict_s = time.perf_counter() - t0
    assert cfg.get(key) == b"on"
    print(json.dumps({
        "bench": "python_config_local_reads",
        "reads": N,
        "config_view_reads_per_s": round(N / view_s),
        "plain_dict_reads_per_s": round(N / dict_s),
        "ratio_vs_dict": round(view_s / dict_s, 2),
        "target_reads_per_s": 1_000_000,
    }))
    cfg.close()
    await client.close()
    if cluster is not None:
        cluster.close()


if __name__ == "__main__":
    asyncio.run(main())
