"""Shared by the examples: connect to ETCD_ENDPOINTS, or start a throwaway etcd.

``ETCD_ENDPOINTS``: comma-separated ``host:port`` list (unset: start a local etcd
for the duration of the example; needs the ``etcd`` binary on PATH or ``$ETCD_BIN``).
``ETCD_NAMESPACE``: optional key prefix for everything the example touches.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import etcd_recipes
from etcd_recipes import sync
from etcd_recipes.testing import EtcdCluster


@asynccontextmanager
async def connect() -> AsyncIterator[etcd_recipes.Client]:
    endpoints = os.environ.get("ETCD_ENDPOINTS", "")
    cluster = None if endpoints else EtcdCluster.start(1)
    eps = endpoints.split(",") if endpoints else cluster.endpoints if cluster else []
    namespace = os.environ.get("ETCD_NAMESPACE", "")
    try:
        async with await etcd_recipes.Client.connect(eps, namespace=namespace) as client:
            yield client
    finally:
        if cluster is not None:
            cluster.close()


@contextmanager
def connect_sync() -> Iterator[sync.Client]:
    """`connect()` for the blocking face (etcd_recipes.sync)."""
    endpoints = os.environ.get("ETCD_ENDPOINTS", "")
    cluster = None if endpoints else EtcdCluster.start(1)
    eps = endpoints.split(",") if endpoints else cluster.endpoints if cluster else []
    namespace = os.environ.get("ETCD_NAMESPACE", "")
    try:
        with sync.Client.connect(eps, namespace=namespace) as client:
            yield client
    finally:
        if cluster is not None:
            cluster.close()
